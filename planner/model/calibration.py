"""Calibration values: the shares of peak each device reaches and the per-step overheads of each engine.

Efficiencies (mfu, mbu, attention mfu, kernel floor, link efficiency and all-reduce α) are per device;
overheads (host scheduling, kernel launches, sampling: ``ms_per_layer·L + step_ms``) per (engine, device, TP).
The shipped values (``planner/data/calibration.yaml``, loaded by ``planner.io.profiles``) are fitted by
``planner.model.fit`` on public profiles (``benchmarks/calibrate.py``). Overheads belong to an engine:
``vllm`` (default; vLLM as profiled in 2024 papers) and ``vllm-2023`` (the mid-2023 vLLM DistServe profiled,
whose host overhead per step was several times larger).

A device without fitted factors borrows those of the same silicon, else a REFERENCE §1 seed, else a generic
seed read off its data sheet (:func:`generic_seed`: slot-powered ≤ 75 W cards reach only their
sustained-clock share of the boost-clock tensor peak); each factor's ``source`` says which.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from planner.model.collectives import AR_BASE_US
from planner.model.perf import DEFAULT_ENGINE
from planner.schema import DeviceType


@dataclass(frozen=True)
class DeviceEfficiency:
    """Fitted (or seeded) shares of peak a device reaches, with where they come from."""

    mfu: float  # dense GEMM share of peak BF16 FLOPS
    mbu: float  # share of peak memory bandwidth
    attn_mfu: float  # prefill (flash) attention share of peak FLOPS
    kernel_floor_us: float  # no kernel finishes faster (launch + tail)
    link_efficiency: float = 0.7  # share of link bandwidth an all-reduce reaches
    ar_base_us: float = AR_BASE_US  # α: fixed cost of one all-reduce (launch, synchronisation)
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


def seed_efficiency(device_id: str, device: DeviceType | None, reference_seeds: bool = True) -> DeviceEfficiency:
    """The seed of a device without fitted factors: its (or its family's) REFERENCE §1 seed when
    ``reference_seeds``, else the generic seed read off its data sheet."""
    if reference_seeds:
        for key in (device_id, FAMILY.get(device_id)):
            if key is not None and key in SEED_EFFICIENCY:
                return SEED_EFFICIENCY[key]
    return generic_seed(device)


@dataclass(frozen=True)
class Calibration:
    """Efficiency per device and overhead per (engine, device, TP); lookups fall back to seeds."""

    devices: Mapping[str, DeviceEfficiency] = field(default_factory=dict)
    overheads: Mapping[tuple[str, str, int], StepOverhead] = field(default_factory=dict)
    engine: str = DEFAULT_ENGINE
    source: str = "seeds"
    reference_seeds: bool = True  # False: uncovered devices get the generic seed (honest hold-out scoring)
    _memo: dict[tuple[str, str, int], StepOverhead] = field(default_factory=dict, compare=False, repr=False)

    def efficiency(self, device_id: str, device: DeviceType | None = None) -> DeviceEfficiency:
        """Fitted factors of a device, else of its family, else the REFERENCE seed, else the generic seed
        (scaled by the device's data sheet when ``device`` is given, see :func:`generic_seed`)."""
        for key in (device_id, FAMILY.get(device_id)):
            if key is not None and key in self.devices:
                return self.devices[key]
        return seed_efficiency(device_id, device, self.reference_seeds)

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
        return Calibration(devices=devices, overheads=overheads, engine=str(data.get("engine", DEFAULT_ENGINE)),
                           source=str(data.get("source", "")))
