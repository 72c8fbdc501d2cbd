"""Performance model: how fast one replica runs a prefill or a decode step, and whether it fits memory.

This module is the model's front door: what a performance model answers (:class:`PerfModel`), the replica
shape it is asked about (:class:`ReplicaShape`, validated by :func:`check_shape`), and the model the planner
uses unless told otherwise (``planner.io.profiles.default_perf_model``: the roofline with the shipped
calibration, built at the edge where files are read). The parts:

* ``planner.model.roofline``: operator times and :class:`~planner.model.roofline.RooflinePerfModel`
  (prefill, decode, attention offload);
* ``planner.model.collectives``: all-reduce, gather, pipeline send and offload network times by fabric
  (measured curves, the engine's kernel choice);
* ``planner.model.memory``: weights, KV cache and reserve against device memory;
* ``planner.model.calibration``: fitted or seeded efficiencies, engines and their per-step overheads, measured
  fabrics and held-out error bands (values only; ``calibration_mapping`` turns them into plain data);
* ``planner.model.measured``: measured step tables that override the model where they cover a point;
* ``planner.model.fit``: the least-squares fit of a calibration to measured times (``benchmarks/calibrate.py``
  runs it on public profiles and writes ``planner/data/calibration.yaml``, which ``planner.io.profiles``
  loads; ``medley perf calibrate`` runs it on a user's own measurements and writes an engine profile).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from planner.schema import DeviceKind, DeviceType, ModelSpec

if TYPE_CHECKING:
    from planner.model.memory import MemoryFit

FloatArray = npt.NDArray[np.float64]
ArrayLike = float | FloatArray

ACTIVATION_BYTES = 2.0  # activations in BF16/FP16
DEFAULT_ENGINE = "vllm"  # whose per-step overheads apply unless a fleet names another engine


@dataclass(frozen=True)
class ReplicaShape:
    """One replica's hardware shape: model, device, parallelism, and attention-offload partners."""

    model: ModelSpec
    device: DeviceType
    tp: int
    pp: int = 1
    memory_device: DeviceType | None = None
    memory_devices: int = 0

    @property
    def devices(self) -> int:
        """Compute devices of one replica (``tp·pp``; memory devices not counted)."""
        return self.tp * self.pp

    @property
    def offload(self) -> bool:
        """Whether attention and the KV cache run on memory devices."""
        return self.memory_device is not None and self.memory_devices > 0


@runtime_checkable
class PerfModel(Protocol):
    """What the capacity model and the planner need from a performance model."""

    def prefill_ms(self, shape: ReplicaShape, batch: int, prompt_tokens: int) -> float: ...

    def decode_step_ms(self, shape: ReplicaShape, batch: int, context_tokens: int) -> float: ...

    def memory(self, shape: ReplicaShape) -> MemoryFit: ...


def check_shape(shape: ReplicaShape) -> None:
    """Raise ``ValueError('field: reason')`` when the parallelism does not divide the model."""
    m = shape.model
    if shape.tp < 1:
        raise ValueError(f"tp: must be at least 1 (got {shape.tp})")
    if shape.pp < 1:
        raise ValueError(f"pp: must be at least 1 (got {shape.pp})")
    if m.num_heads % shape.tp:
        raise ValueError(f"tp: {shape.tp} does not divide num_heads {m.num_heads}")
    if m.ffn_hidden_size % shape.tp:
        raise ValueError(f"tp: {shape.tp} does not divide ffn_hidden_size {m.ffn_hidden_size}")
    if m.num_layers % shape.pp:
        raise ValueError(f"pp: {shape.pp} does not divide num_layers {m.num_layers}")
    if shape.device.kind is not DeviceKind.ACCELERATOR:
        raise ValueError(f"device: {shape.device.id} is a memory device; it cannot run the dense layers")
    if shape.memory_devices < 0:
        raise ValueError(f"memory_devices: must not be negative (got {shape.memory_devices})")
    if shape.memory_devices > 0 and shape.memory_device is None:
        raise ValueError("memory_device: needed when memory_devices > 0")
    if shape.offload:
        if shape.pp != 1:
            raise ValueError("pp: attention offload runs with pp 1")
        if m.num_kv_heads % shape.memory_devices and shape.memory_devices % m.num_kv_heads:
            raise ValueError(f"memory_devices: {shape.memory_devices} does not split "
                             f"num_kv_heads {m.num_kv_heads}")


def check_counts(batch: int, tokens: int, what: str) -> None:
    """Raise ``ValueError('field: reason')`` for a batch below one or a negative (prompt: empty) length."""
    if batch < 1:
        raise ValueError(f"batch: must be at least 1 (got {batch})")
    if tokens < 0 or (what == "prompt_tokens" and tokens < 1):
        raise ValueError(f"{what}: must be positive (got {tokens})")
