"""Performance model: how fast one replica runs a prefill or a decode step, and whether it fits memory.

Roofline per operator (REFERENCE §1), summed over the operators of a layer rather than one max over the
step::

    t_op   = max(FLOPs / (t·F_peak·mfu), bytes / (t·BW·mbu), kernel_floor)
    layer  = Σ_op t_op + 2·AR(N·h·b_a, t)                 (two all-reduces per layer under TP)
    step   = p·(L/p)·layer + lm_head + (p−1)·send(N·h·b_a) + overhead(engine, device, tp)
    AR(M,N)= α + 2(N−1)·λ + 2(N−1)/N · M / (BW_link·η_link)

Prefill attention costs ``2·h·Σs²/t`` FLOPs per layer (causal), decode attention reads the KV cache
``Σctx·2·n_kv·d·b_kv/t`` bytes per layer. The overhead (host scheduling, kernel launches, sampling) is a
fitted ``ms_per_layer·L + step_ms`` per (engine, device, TP): measured vLLM decode steps of Llama-2-70B stay
at 43–46 ms on A100 whatever the batch, which a constant-efficiency roofline cannot reproduce.

Efficiencies (mfu, mbu, kernel floor, link efficiency and all-reduce α) and overheads come from a
:class:`Calibration`; the shipped one (``planner/data/calibration.yaml``) is fitted by ``planner.model.fit``
on public profiles. Overheads belong to an engine: ``vllm`` (default; vLLM as profiled in 2024 papers) and
``vllm-2023`` (the mid-2023 vLLM DistServe profiled, whose host overhead per step was several times
larger). A device without fitted factors borrows those of the same silicon, else a REFERENCE §1 seed, else
a generic seed read off its data sheet (:func:`generic_seed`: slot-powered ≤ 75 W cards reach only their
sustained-clock share of the boost-clock tensor peak); each factor's ``source`` says which.

Attention offload (Lamina): ``a = tp·pp`` compute devices hold the weights and run the dense layers;
``b`` memory devices hold the KV cache and run attention, split by head. With two staggered micro-batches
``TBT ≈ max(t_dense(B; a), t_attn(B, ctx; b)) + t_net``.

Measured tables override the model where they cover a point (:class:`TablePerfModel`). CSV format, one row
per measurement, header required::

    model,device,tp,pp,phase,batch,tokens,time_ms
    llama-2-7b,a100-80gb,1,1,prefill,1,512,31.5
    llama-2-7b,a100-80gb,1,1,decode,16,1024,14.2

``model``/``device`` are catalog ids; ``phase`` is ``prefill`` (``tokens`` = prompt tokens per request,
``time_ms`` = time of the whole batch's prefill) or ``decode`` (``tokens`` = context tokens per request,
``time_ms`` = one decode step of the batch). A point is covered when the table holds its (model, device,
tp, pp, phase) and measured batches and tokens bracket it; the time is then interpolated (bilinear).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import yaml

from planner.schema import DeviceKind, DeviceType, ModelSpec

GIB = 1024**3
FloatArray = npt.NDArray[np.float64]
ArrayLike = float | FloatArray

ACTIVATION_BYTES = 2.0  # activations in BF16/FP16
GPU_MEMORY_UTILIZATION = 0.9  # vLLM default share of device memory it manages
RESERVE_GIB_PER_DEVICE = 1.5  # CUDA context, activations of the largest step
NCCL_RESERVE_GIB = 0.4  # NCCL buffers, only when the replica spans more than one device
ELEMENTWISE_KERNELS_PER_LAYER = 5  # 2 norms, 2 residual adds, rope
LINK_LATENCY_US = {"nvlink": 2.0, "infinity-fabric": 3.0, "pcie": 6.0, "ethernet": 10.0}
ROOF_SHARPNESS = 2  # exponent of the smooth roofline maximum (larger = sharper corner)
AR_BASE_US = 5.0  # α of the all-reduce cost
NET_LATENCY_US = 10.0  # one RDMA transfer between offload partners
NET_EFFICIENCY = 0.8  # share of NIC line rate a transfer reaches
OFFLOAD_EXPOSED_SHARE = 0.2  # share of offload transfers not hidden behind the other micro-batch (Lamina α)


# ---------------------------------------------------------------------------------------------- values


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
        return self.tp * self.pp

    @property
    def offload(self) -> bool:
        return self.memory_device is not None and self.memory_devices > 0


@dataclass(frozen=True)
class MemoryFit:
    """Memory of one replica: weights per device, KV-cache capacity, and whether the model fits."""

    weights_gib_per_device: float
    kv_capacity_tokens: int
    fits: bool
    reason: str = ""
    kv_free_bytes_per_device: float = 0.0


@runtime_checkable
class PerfModel(Protocol):
    """What the capacity model and the planner need from a performance model."""

    def prefill_ms(self, shape: ReplicaShape, batch: int, prompt_tokens: int) -> float: ...

    def decode_step_ms(self, shape: ReplicaShape, batch: int, context_tokens: int) -> float: ...

    def memory(self, shape: ReplicaShape) -> MemoryFit: ...


@dataclass(frozen=True)
class DeviceEfficiency:
    """Fitted (or seeded) shares of peak a device reaches, with where they come from."""

    mfu: float  # dense GEMM share of peak BF16 FLOPS
    mbu: float  # share of peak memory bandwidth
    attn_mfu: float  # prefill (flash) attention share of peak FLOPS
    kernel_floor_us: float  # no kernel finishes faster (launch + tail)
    link_efficiency: float = 0.7  # share of link bandwidth an all-reduce reaches
    ar_base_us: float = 5.0  # α: fixed cost of one all-reduce (launch, synchronisation)
    source: str = "seed"


@dataclass(frozen=True)
class StepOverhead:
    """Per-step time outside the kernels' roofline: host scheduling, launches, sampling."""

    prefill_ms_per_layer: float
    decode_ms_per_layer: float
    prefill_step_ms: float = 0.0  # once per step, whatever the depth (scheduling, sampling)
    decode_step_ms: float = 0.0
    source: str = "seed"


# Seeds from REFERENCE §1 (Vidur operator profiles for A100/H100/A40, Helix vLLM profiles for L4/T4);
# devices without any data get GENERIC_SEED and say so.
SEED_EFFICIENCY: dict[str, DeviceEfficiency] = {
    "a100-80gb": DeviceEfficiency(0.72, 0.80, 0.55, 6.0, 0.7, source="seed: REFERENCE §1 (Vidur A100 GEMMs)"),
    "h100-sxm": DeviceEfficiency(0.70, 0.80, 0.50, 5.0, 0.7, source="seed: REFERENCE §1 (Vidur H100 GEMMs)"),
    "a40": DeviceEfficiency(0.75, 0.85, 0.55, 6.0, 0.6, source="seed: REFERENCE §1 (Vidur A40 GEMMs)"),
    "l4": DeviceEfficiency(0.37, 0.81, 0.30, 6.0, 0.6, source="seed: REFERENCE §1 (Helix L4)"),
    "t4": DeviceEfficiency(0.42, 0.73, 0.30, 8.0, 0.6, source="seed: REFERENCE §1 (Helix T4)"),
}
GENERIC_SEED = DeviceEfficiency(0.60, 0.75, 0.45, 6.0, 0.6, source="seed: generic (no profile for this device)")
# Cards powered from the PCIe slot alone (≤ 75 W: T4, L4) cannot hold their boost clock through sustained
# tensor-core work, and their data-sheet TFLOPS are quoted at boost. Their sustained clock sits near the
# middle of the data sheets' base–boost range: T4 (585 + 1590) / 2 / 1590 = 0.68, L4 (795 + 2040) / 2 / 2040
# = 0.69. Memory bandwidth does not throttle with the SM clock.
SLOT_POWER_WATTS = 75.0
SLOT_POWERED_CLOCK_SHARE = 0.68
DEFAULT_ENGINE = "vllm"
DEFAULT_OVERHEAD = StepOverhead(0.15, 0.15, 1.0, 1.0, "seed: generic vLLM host overhead")
# Devices without fitted factors borrow those of the same silicon first.
FAMILY: dict[str, str] = {"a100-40gb": "a100-80gb", "a100-80gb": "a100-40gb", "h200-sxm": "h100-sxm",
                          "h20": "h100-sxm", "l40s": "a40", "a10g": "a40"}


def generic_seed(device: DeviceType | None) -> DeviceEfficiency:
    """Seed for a device without any profile, from its data sheet: slot-powered cards (≤ 75 W) reach only
    the share of their boost-clock tensor peak that their sustained clock allows."""
    if device is None or device.tdp_watts > SLOT_POWER_WATTS:
        return GENERIC_SEED
    return replace(GENERIC_SEED, mfu=GENERIC_SEED.mfu * SLOT_POWERED_CLOCK_SHARE,
                   attn_mfu=GENERIC_SEED.attn_mfu * SLOT_POWERED_CLOCK_SHARE,
                   source=f"seed: generic, slot-powered ({device.tdp_watts:.0f} W) clock share "
                          f"{SLOT_POWERED_CLOCK_SHARE} (no profile for this device)")


@dataclass(frozen=True)
class Calibration:
    """Efficiency per device and overhead per (engine, device, TP); lookups fall back to seeds."""

    devices: Mapping[str, DeviceEfficiency] = field(default_factory=dict)
    overheads: Mapping[tuple[str, str, int], StepOverhead] = field(default_factory=dict)
    engine: str = "vllm"
    source: str = "seeds"
    reference_seeds: bool = True  # False: uncovered devices get the generic seed (honest hold-out scoring)
    _memo: dict[tuple[str, str, int], StepOverhead] = field(default_factory=dict, compare=False, repr=False)

    def efficiency(self, device_id: str, device: DeviceType | None = None) -> DeviceEfficiency:
        """Fitted factors of a device, else of its family, else the REFERENCE seed, else the generic seed
        (scaled by the device's data sheet when ``device`` is given, see :func:`generic_seed`)."""
        for key in (device_id, FAMILY.get(device_id)):
            if key is not None and key in self.devices:
                return self.devices[key]
        if not self.reference_seeds:
            return generic_seed(device)
        for key in (device_id, FAMILY.get(device_id)):
            if key is not None and key in SEED_EFFICIENCY:
                return SEED_EFFICIENCY[key]
        return generic_seed(device)

    def overhead(self, device_id: str, tp: int) -> StepOverhead:
        """Overhead for (engine, device, tp): exact, else the device's nearest fitted TP, else the same for
        its family; then the same for the default engine; then the median of the engine's fitted ones."""
        key = (self.engine, device_id, tp)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self._overhead(device_id, tp)
        return hit

    def _overhead(self, device_id: str, tp: int) -> StepOverhead:
        fam = FAMILY.get(device_id)
        engines = [self.engine] + ([DEFAULT_ENGINE] if self.engine != DEFAULT_ENGINE else [])
        for eng in engines:
            # The same machine at another TP says more about its host than another machine at this TP.
            for dev in (device_id, fam):
                if dev is None:
                    continue
                if (eng, dev, tp) in self.overheads:
                    return self.overheads[(eng, dev, tp)]
                tps = [k[2] for k in self.overheads if k[0] == eng and k[1] == dev]
                if tps:
                    best = min(tps, key=lambda x: (abs(math.log2(x) - math.log2(tp)), -x))
                    return self.overheads[(eng, dev, best)]
        for eng in engines:
            same_tp = [v for k, v in self.overheads.items() if k[0] == eng and k[2] == tp]
            pool = same_tp or [v for k, v in self.overheads.items() if k[0] == eng]
            if pool:
                # Devices without a fit get the median of the fitted ones (host overhead depends little on
                # the GPU).
                pre = float(np.median([o.prefill_ms_per_layer for o in pool]))
                dec = float(np.median([o.decode_ms_per_layer for o in pool]))
                pre_s = float(np.median([o.prefill_step_ms for o in pool]))
                dec_s = float(np.median([o.decode_step_ms for o in pool]))
                return StepOverhead(pre, dec, pre_s, dec_s,
                                    f"median of fitted overheads (no fit for {device_id} tp{tp})")
        return DEFAULT_OVERHEAD

    def to_mapping(self) -> dict[str, Any]:
        """Plain data for ``calibration.yaml``."""
        return {
            "engine": self.engine,
            "source": self.source,
            "devices": {k: {"mfu": round(v.mfu, 4), "mbu": round(v.mbu, 4), "attn_mfu": round(v.attn_mfu, 4),
                            "kernel_floor_us": round(v.kernel_floor_us, 2),
                            "link_efficiency": round(v.link_efficiency, 4),
                            "ar_base_us": round(v.ar_base_us, 2), "source": v.source}
                        for k, v in sorted(self.devices.items())},
            "overheads": [{"engine": k[0], "device": k[1], "tp": k[2],
                           "prefill_ms_per_layer": round(v.prefill_ms_per_layer, 4),
                           "decode_ms_per_layer": round(v.decode_ms_per_layer, 4),
                           "prefill_step_ms": round(v.prefill_step_ms, 3),
                           "decode_step_ms": round(v.decode_step_ms, 3), "source": v.source}
                          for k, v in sorted(self.overheads.items())],
        }

    @staticmethod
    def from_mapping(data: Mapping[str, Any]) -> Calibration:
        """Parse what :meth:`to_mapping` wrote."""
        devices = {str(k): DeviceEfficiency(float(v["mfu"]), float(v["mbu"]), float(v["attn_mfu"]),
                                            float(v["kernel_floor_us"]), float(v.get("link_efficiency", 0.7)),
                                            float(v.get("ar_base_us", AR_BASE_US)), str(v.get("source", "")))
                   for k, v in (data.get("devices") or {}).items()}
        overheads = {(str(o["engine"]), str(o["device"]), int(o["tp"])):
                     StepOverhead(float(o["prefill_ms_per_layer"]), float(o["decode_ms_per_layer"]),
                                  float(o.get("prefill_step_ms", 0.0)), float(o.get("decode_step_ms", 0.0)),
                                  str(o.get("source", "")))
                     for o in (data.get("overheads") or [])}
        return Calibration(devices=devices, overheads=overheads, engine=str(data.get("engine", "vllm")),
                           source=str(data.get("source", "")))


@cache
def shipped_calibration() -> Calibration:
    """The fitted factors shipped in ``planner/data/calibration.yaml`` (seeds when the file is absent)."""
    res = resources.files("planner").joinpath("data", "calibration.yaml")
    if not res.is_file():
        return Calibration()
    return Calibration.from_mapping(yaml.safe_load(res.read_text(encoding="utf-8")) or {})


# ---------------------------------------------------------------------------------------------- checks


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


def _check_counts(batch: int, tokens: int, what: str) -> None:
    if batch < 1:
        raise ValueError(f"batch: must be at least 1 (got {batch})")
    if tokens < 0 or (what == "prompt_tokens" and tokens < 1):
        raise ValueError(f"{what}: must be positive (got {tokens})")


# ---------------------------------------------------------------------------------------------- formulas


def all_reduce_ms(message_bytes: ArrayLike, n: int, device: DeviceType, link_efficiency: float,
                  base_us: float = AR_BASE_US) -> ArrayLike:
    """Ring all-reduce ``α + 2(N−1)·λ + 2(N−1)/N · M / (BW_link·η)``; zero for one device."""
    if n <= 1:
        return 0.0 * message_bytes
    lat_us = base_us + 2 * (n - 1) * LINK_LATENCY_US.get(device.link_kind, 6.0)
    bw_bytes_per_ms = device.link_gbps * 1e6 * link_efficiency
    return lat_us / 1e3 + 2 * (n - 1) / n * message_bytes / bw_bytes_per_ms


def send_ms(message_bytes: ArrayLike, device: DeviceType, link_efficiency: float) -> ArrayLike:
    """Point-to-point transfer between pipeline stages: ``λ + M/BW``."""
    lat_us = AR_BASE_US + LINK_LATENCY_US.get(device.link_kind, 6.0)
    return lat_us / 1e3 + message_bytes / (device.link_gbps * 1e6 * link_efficiency)


def _op_ms(flops: ArrayLike, bytes_: ArrayLike, device: DeviceType, eff: DeviceEfficiency,
           mfu: float | None = None) -> ArrayLike:
    flops_per_ms = device.bf16_tflops * 1e9 * (eff.mfu if mfu is None else mfu)
    bytes_per_ms = device.memory_tbps * 1e9 * eff.mbu
    c, m = flops / flops_per_ms, bytes_ / bytes_per_ms
    # A smooth maximum: near the ridge point neither roof is reached (measured GEMMs bend, not kink).
    return np.maximum((c**ROOF_SHARPNESS + m**ROOF_SHARPNESS) ** (1.0 / ROOF_SHARPNESS), eff.kernel_floor_us / 1e3)


def experts_touched(model: ModelSpec, tokens: ArrayLike) -> ArrayLike:
    """Expected distinct experts a batch of ``tokens`` routes to (uniform routing)."""
    e, k = model.num_experts, model.experts_per_token
    if e == 1:
        return 1.0 + 0.0 * tokens
    return e * (1.0 - (1.0 - k / e) ** np.maximum(tokens, 0.0))


def dense_layer_ms(model: ModelSpec, device: DeviceType, eff: DeviceEfficiency, tp: int,
                   tokens: ArrayLike, include_comm: bool = True) -> ArrayLike:
    """One layer's projections, MLP and element-wise kernels for ``tokens`` tokens on one of ``tp`` devices."""
    h, d, f = model.hidden_size, model.head_dim, model.ffn_hidden_size
    n_h, n_kv = model.num_heads, max(model.num_kv_heads, tp)  # KV heads are replicated when tp > n_kv
    bw, ba = model.weight_bytes, ACTIVATION_BYTES
    n = tokens
    w_qkv = h * (n_h + 2 * n_kv) * d / tp
    w_out = n_h * d * h / tp
    t = _op_ms(2 * n * w_qkv, w_qkv * bw + n * (h + (n_h + 2 * n_kv) * d / tp) * ba, device, eff)
    t = t + _op_ms(2 * n * w_out, w_out * bw + n * (h + n_h * d / tp) * ba, device, eff)
    up_mats = 2 if model.gated_mlp else 1
    touched = experts_touched(model, n)
    k = model.experts_per_token if model.num_experts > 1 else 1
    w_up = up_mats * h * f / tp
    w_down = h * f / tp
    t = t + _op_ms(2 * n * k * w_up, touched * w_up * bw + n * k * (h + up_mats * f / tp) * ba, device, eff)
    t = t + _op_ms(0.0 * n, n * k * (up_mats + 1) * f / tp * ba, device, eff)  # activation
    t = t + _op_ms(2 * n * k * w_down, touched * w_down * bw + n * k * (f / tp + h) * ba, device, eff)
    elementwise_bytes = n * h * ba * 10.0 + n * (n_h + n_kv) * d / tp * ba * 2.0
    t = t + np.maximum(elementwise_bytes / (device.memory_tbps * 1e9 * eff.mbu),
                       ELEMENTWISE_KERNELS_PER_LAYER * eff.kernel_floor_us / 1e3)
    if tp > 1 and include_comm:
        t = t + 2 * all_reduce_ms(n * h * ba, tp, device, eff.link_efficiency, eff.ar_base_us)
    return t


def prefill_attention_ms(model: ModelSpec, device: DeviceType, eff: DeviceEfficiency, tp: int,
                         tokens: ArrayLike, sum_sq_tokens: ArrayLike) -> ArrayLike:
    """Causal prefill attention of one layer: ``2·h·Σs²/t`` FLOPs, Q/K/V/O traffic."""
    d = model.head_dim
    n_kv = max(model.num_kv_heads, tp)
    flops = 2.0 * model.hidden_size * sum_sq_tokens / tp
    bytes_ = tokens * (2 * model.num_heads + 2 * n_kv) * d / tp * ACTIVATION_BYTES
    return _op_ms(flops, bytes_, device, eff, mfu=eff.attn_mfu)


def decode_attention_ms(model: ModelSpec, device: DeviceType, eff: DeviceEfficiency, shards: int,
                        batch: ArrayLike, sum_context: ArrayLike) -> ArrayLike:
    """Decode attention of one layer split over ``shards`` devices: reads the KV cache of ``Σctx`` tokens."""
    d = model.head_dim
    n_kv = max(model.num_kv_heads, shards)
    kv_bytes = sum_context * 2 * n_kv * d / shards * model.kv_bytes
    flops = 4.0 * model.num_heads * d * sum_context / shards
    return _op_ms(flops, kv_bytes + batch * 2 * model.hidden_size / shards * ACTIVATION_BYTES, device, eff)


def lm_head_ms(model: ModelSpec, device: DeviceType, eff: DeviceEfficiency, tp: int,
               seqs: ArrayLike) -> ArrayLike:
    """Logits of the last token of each sequence (vocabulary split over ``tp``)."""
    w = model.vocab_size * model.hidden_size / tp
    return _op_ms(2 * seqs * w, w * model.weight_bytes + seqs * model.vocab_size / tp * 4, device, eff)


# ---------------------------------------------------------------------------------------------- models


class RooflinePerfModel:
    """Roofline per operator with fitted efficiencies and per-step overhead (see module docstring)."""

    def __init__(self, calibration: Calibration | None = None) -> None:
        self.calibration = calibration if calibration is not None else Calibration()

    # -- vectorised cores (numpy arrays of batch/tokens broadcast together) --------------------------

    def prefill_ms_array(self, shape: ReplicaShape, batch: ArrayLike, prompt_tokens: ArrayLike) -> ArrayLike:
        """Prefill time of ``batch`` requests of ``prompt_tokens`` each (arrays broadcast)."""
        m, dev, tp, pp = shape.model, shape.device, shape.tp, shape.pp
        eff = self.calibration.efficiency(dev.id, dev)
        ovh = self.calibration.overhead(dev.id, tp)
        tokens = batch * prompt_tokens
        layer = dense_layer_ms(m, dev, eff, tp, tokens) + prefill_attention_ms(
            m, dev, eff, tp, tokens, batch * prompt_tokens * prompt_tokens)
        t = m.num_layers * layer + lm_head_ms(m, dev, eff, tp, batch)
        if pp > 1:
            t = t + (pp - 1) * send_ms(tokens * m.hidden_size * ACTIVATION_BYTES, dev, eff.link_efficiency)
        return t + ovh.prefill_step_ms + m.num_layers * ovh.prefill_ms_per_layer

    def decode_step_ms_array(self, shape: ReplicaShape, batch: ArrayLike, context_tokens: ArrayLike) -> ArrayLike:
        """One decode step for ``batch`` requests of ``context_tokens`` each (arrays broadcast)."""
        m, dev, tp, pp = shape.model, shape.device, shape.tp, shape.pp
        eff = self.calibration.efficiency(dev.id, dev)
        ovh = self.calibration.overhead(dev.id, tp)
        sum_ctx = batch * context_tokens
        if shape.offload:
            assert shape.memory_device is not None
            mdev = shape.memory_device
            meff = self.calibration.efficiency(mdev.id, mdev)
            b = shape.memory_devices
            # Two staggered micro-batches of B/2 keep both sides busy (Lamina): the slower side sets the
            # pace, and each side runs twice per layer, so the compute devices read their weights twice.
            half = batch / 2.0
            dense_half = dense_layer_ms(m, dev, eff, tp, half)
            attn_half = decode_attention_ms(m, mdev, meff, b, half, sum_ctx / 2.0)
            t_dense = 2 * m.num_layers * dense_half + lm_head_ms(m, dev, eff, tp, batch)
            t_attn = 2 * m.num_layers * attn_half
            t = np.maximum(t_dense, t_attn) + offload_net_ms(shape, batch)
        else:
            dense = dense_layer_ms(m, dev, eff, tp, batch)
            attn = decode_attention_ms(m, dev, eff, tp, batch, sum_ctx)
            t = m.num_layers * (dense + attn) + lm_head_ms(m, dev, eff, tp, batch)
            if pp > 1:
                t = t + (pp - 1) * send_ms(batch * m.hidden_size * ACTIVATION_BYTES, dev, eff.link_efficiency)
        return t + ovh.decode_step_ms + m.num_layers * ovh.decode_ms_per_layer

    # -- the PerfModel protocol ------------------------------------------------------------------------

    def prefill_ms(self, shape: ReplicaShape, batch: int, prompt_tokens: int) -> float:
        """Time to prefill ``batch`` prompts of ``prompt_tokens`` tokens each, ms."""
        check_shape(shape)
        _check_counts(batch, prompt_tokens, "prompt_tokens")
        return float(self.prefill_ms_array(shape, float(batch), float(prompt_tokens)))

    def decode_step_ms(self, shape: ReplicaShape, batch: int, context_tokens: int) -> float:
        """Time of one decode step of ``batch`` requests holding ``context_tokens`` tokens each, ms."""
        check_shape(shape)
        _check_counts(batch, context_tokens, "context_tokens")
        return float(self.decode_step_ms_array(shape, float(batch), float(context_tokens)))

    def memory(self, shape: ReplicaShape) -> MemoryFit:
        """Weights per device, KV capacity in tokens, and whether one full-context request fits."""
        return memory_fit(shape)


def offload_net_ms(shape: ReplicaShape, batch: ArrayLike) -> ArrayLike:
    """Exposed network time of one offloaded decode step: a round trip per layer plus the unhidden bytes."""
    m = shape.model
    per_token = offload_bytes_per_token(m)
    nic_bytes_per_ms = shape.tp * shape.pp * shape.device.nic_gbitps / 8 * 1e6 * NET_EFFICIENCY
    return (m.num_layers * 2 * NET_LATENCY_US / 1e3
            + OFFLOAD_EXPOSED_SHARE * per_token * batch / nic_bytes_per_ms)


def offload_bytes_per_token(model: ModelSpec) -> float:
    """Bytes sent between compute and memory devices per token per step: ``(2 + 2/G)·e·h·L``."""
    group = model.num_heads // model.num_kv_heads
    return (2 + 2 / group) * ACTIVATION_BYTES * model.hidden_size * model.num_layers


def memory_fit(shape: ReplicaShape, gpu_memory_utilization: float = GPU_MEMORY_UTILIZATION) -> MemoryFit:
    """Weights + KV + reserve against device memory (REFERENCE §1); fits = one full-context request fits."""
    m, dev = shape.model, shape.device
    n = shape.tp * shape.pp
    weights = m.weight_bytes_total / n
    reserve = (RESERVE_GIB_PER_DEVICE + (NCCL_RESERVE_GIB if n > 1 else 0.0)) * GIB
    free = dev.memory_gib * GIB * gpu_memory_utilization - weights - reserve
    # KV heads are replicated when TP exceeds them; the per-device share never drops below one head.
    kv_per_token_per_device = m.kv_bytes_per_token / shape.pp * max(m.num_kv_heads, shape.tp) \
        / m.num_kv_heads / shape.tp
    if shape.offload:
        assert shape.memory_device is not None
        b = shape.memory_devices
        mfree = shape.memory_device.memory_gib * GIB * gpu_memory_utilization - RESERVE_GIB_PER_DEVICE * GIB
        kv_per_token_per_device = m.kv_bytes_per_token * max(m.num_kv_heads, b) / m.num_kv_heads / b
        kv_free = mfree
    else:
        kv_free = free
    weights_gib = weights / GIB
    if free < 0:
        return MemoryFit(weights_gib, 0, False,
                         f"weights {weights_gib:.1f} GiB per device exceed the "
                         f"{dev.memory_gib * gpu_memory_utilization:.1f} GiB usable on {dev.id} "
                         f"(with {reserve / GIB:.1f} GiB reserve)", free)
    tokens = int(max(kv_free, 0.0) // kv_per_token_per_device)
    if tokens < m.max_context_tokens:
        return MemoryFit(weights_gib, tokens, False,
                         f"KV cache holds {tokens} tokens, fewer than one {m.max_context_tokens}-token request",
                         kv_free)
    return MemoryFit(weights_gib, tokens, True, "", kv_free)


# ---------------------------------------------------------------------------------------------- tables


@dataclass(frozen=True)
class MeasuredPoint:
    """One row of a measured table."""

    model: str
    device: str
    tp: int
    pp: int
    phase: str
    batch: int
    tokens: int
    time_ms: float


def read_measured_csv(path: Path) -> list[MeasuredPoint]:
    """Read a measured table (format in the module docstring); ``ValueError('FILE:LINE: field: reason')``."""
    out: list[MeasuredPoint] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        need = {"model", "device", "tp", "pp", "phase", "batch", "tokens", "time_ms"}
        missing = need - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}:1: columns: missing {', '.join(sorted(missing))}")
        for i, row in enumerate(reader, start=2):
            try:
                p = MeasuredPoint(row["model"].strip(), row["device"].strip(), int(row["tp"]), int(row["pp"]),
                                  row["phase"].strip(), int(row["batch"]), int(row["tokens"]),
                                  float(row["time_ms"]))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{i}: row: {exc}") from None
            if p.phase not in ("prefill", "decode"):
                raise ValueError(f"{path}:{i}: phase: must be prefill or decode (got {p.phase!r})")
            if p.batch < 1 or p.tokens < 0 or p.tp < 1 or p.pp < 1 or not p.time_ms > 0:
                raise ValueError(f"{path}:{i}: row: batch/tp/pp must be ≥ 1, tokens ≥ 0, time_ms > 0")
            out.append(p)
    return out


def _interp_tokens(rows: list[tuple[int, float]], tokens: int) -> float | None:
    rows = sorted(rows)
    xs = [r[0] for r in rows]
    if not xs or tokens < xs[0] or tokens > xs[-1]:
        return None
    return float(np.interp(tokens, xs, [r[1] for r in rows]))


class TablePerfModel:
    """Measured times where a table covers the point, the fallback model elsewhere."""

    def __init__(self, tables: Iterable[MeasuredPoint], fallback: PerfModel) -> None:
        self.fallback = fallback
        grid: dict[tuple[str, str, int, int, str], dict[int, list[tuple[int, float]]]] = {}
        for p in tables:
            grid.setdefault((p.model, p.device, p.tp, p.pp, p.phase), {}).setdefault(p.batch, []).append(
                (p.tokens, p.time_ms))
        self._grid = grid

    def lookup(self, shape: ReplicaShape, phase: str, batch: int, tokens: int) -> float | None:
        """Interpolated measured time, or None when the table does not cover the point."""
        if shape.offload:
            return None
        by_batch = self._grid.get((shape.model.id, shape.device.id, shape.tp, shape.pp, phase))
        if not by_batch:
            return None
        batches = sorted(by_batch)
        if batch < batches[0] or batch > batches[-1]:
            return None
        lo = max(b for b in batches if b <= batch)
        hi = min(b for b in batches if b >= batch)
        t_lo = _interp_tokens(by_batch[lo], tokens)
        t_hi = _interp_tokens(by_batch[hi], tokens)
        if t_lo is None or t_hi is None:
            return None
        if hi == lo:
            return t_lo
        w = (batch - lo) / (hi - lo)
        return (1 - w) * t_lo + w * t_hi

    def prefill_ms(self, shape: ReplicaShape, batch: int, prompt_tokens: int) -> float:
        """Measured prefill time when covered, else the fallback's."""
        check_shape(shape)
        _check_counts(batch, prompt_tokens, "prompt_tokens")
        t = self.lookup(shape, "prefill", batch, prompt_tokens)
        return t if t is not None else self.fallback.prefill_ms(shape, batch, prompt_tokens)

    def decode_step_ms(self, shape: ReplicaShape, batch: int, context_tokens: int) -> float:
        """Measured decode step time when covered, else the fallback's."""
        check_shape(shape)
        _check_counts(batch, context_tokens, "context_tokens")
        t = self.lookup(shape, "decode", batch, context_tokens)
        return t if t is not None else self.fallback.decode_step_ms(shape, batch, context_tokens)

    def memory(self, shape: ReplicaShape) -> MemoryFit:
        """Memory is always the fallback's (tables hold times only)."""
        return self.fallback.memory(shape)


def default_perf_model(engine: str = DEFAULT_ENGINE) -> RooflinePerfModel:
    """The roofline with the shipped calibration; ``engine`` picks whose per-step overheads apply."""
    cal = shipped_calibration()
    return RooflinePerfModel(cal if cal.engine == engine else replace(cal, engine=engine))
