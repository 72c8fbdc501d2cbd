"""Calibration values: the shares of peak each device reaches, each engine's per-step overheads and collective
kernels, the measured collectives of each fabric, and the model's held-out error.

Efficiencies (mfu, mbu, attention mfu, kernel floor, link efficiency and all-reduce α) are per device;
overheads (host scheduling, kernel launches, sampling: ``ms_per_layer·L + step_ms``) per (engine, device, TP);
measured collectives per fabric (``planner.model.collectives.LinkProfile``); held-out errors per (engine,
device, phase). The shipped values (``planner/data/calibration.yaml``, loaded by ``planner.io.profiles``) are
fitted by ``planner.model.fit`` on public profiles (``benchmarks/calibrate.py``); an engine profile a fleet
names (``planner.perf_profile``, written by ``medley perf calibrate``) overlays them.

Engines (:class:`EngineProfile`): ``vllm`` (current releases: CUDA graphs, custom all-reduce), ``vllm-2023``
(the vLLM of mid-2023 that DistServe profiled: NCCL only, several times today's host overhead) and
``splitwise-2023`` (the engine of Splitwise's characterisation: host-bound steps, flat in batch, growing
with TP). An engine without a fitted overhead for a device falls back to its ``base`` engine's.

Who borrows what, when a device has no fit of its own:

* ``SILICON``: the same chip with other memory (A100 40/80 GB, H100/H200) shares kernel factors *and*
  overheads: the kernels and the host are the same, only the memory bandwidth (the catalog's) differs, so
  the slower-memory card is never faster;
* ``FAMILY``: a related chip (GA102: A10G and L40S from A40) lends its kernel factors only;
* ``HOST_PEER``: a device in the same kind of server (8-GPU HGX/OAM boards; cloud PCIe VMs) lends its
  overheads, which belong to the engine and the host rather than to the GPU;
* else a REFERENCE §1 seed, else a generic seed read off the data sheet (:func:`generic_seed`: slot-powered
  ≤ 75 W cards reach only their sustained-clock share of the boost-clock tensor peak). Each value's
  ``source`` says which.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any

import numpy as np

from planner.model.collectives import AR_BASE_US, CollectiveCurve, Collectives, EngineCollectives, LinkProfile
from planner.model.perf import DEFAULT_ENGINE
from planner.schema import DeviceType


@dataclass(frozen=True)
class DeviceEfficiency:
    """Fitted (or seeded) shares of peak a device reaches, with where they come from."""

    mfu: float  # dense GEMM share of peak BF16 FLOPS
    mbu: float  # share of peak memory bandwidth
    attn_mfu: float  # prefill (flash) attention share of peak FLOPS
    kernel_floor_us: float  # no kernel finishes faster (launch + tail)
    link_efficiency: float = 0.7  # share of link bandwidth an all-reduce reaches (fabrics without a measurement)
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


@dataclass(frozen=True)
class EngineProfile:
    """A serving engine as the model sees it: its collective kernels and whose overheads fill its gaps."""

    name: str
    collectives: EngineCollectives = field(default_factory=EngineCollectives)
    base: str | None = None  # engine whose fitted overheads apply where this one has none
    description: str = ""
    host_overhead: str = "step"  # step: one graph launch a step (CUDA graphs); layer: launches every kernel
    max_num_seqs: int = 256  # the engine's batch cap per replica (vLLM --max-num-seqs default)


@dataclass(frozen=True)
class ErrorBand:
    """The model's absolute relative error (%) on points it was not fitted on, and what it was scored on."""

    median_pct: float
    p90_pct: float
    points: int
    scored_on: str


ENGINE_SEEDS: dict[str, EngineProfile] = {
    "vllm": EngineProfile("vllm", EngineCollectives(custom_allreduce=True), None,
                          "vLLM 0.4 and later: CUDA graphs, custom all-reduce (custom_all_reduce.py: world "
                          "sizes 2/4/6/8, up to 8 MiB, NVLink or two P2P PCIe GPUs)"),
    # The two 2023 engines fill each other's gaps before today's vLLM does: both ran their host work step by
    # step without CUDA graphs, several times today's cost.
    "vllm-2023": EngineProfile("vllm-2023", EngineCollectives(custom_allreduce=False), "splitwise-2023",
                               "vLLM of mid-2023 as DistServe profiled it: no CUDA graphs, NCCL only", "layer"),
    "splitwise-2023": EngineProfile("splitwise-2023", EngineCollectives(custom_allreduce=False), "vllm-2023",
                                    "the engine of Splitwise's 2023 characterisation on DGX-A100/H100: NCCL only, "
                                    "host-bound steps (flat in batch, growing with TP)", "layer"),
}

# Seeds from REFERENCE §1 (Vidur operator profiles for A100/H100/A40, Helix vLLM profiles for L4/T4);
# devices without any data get GENERIC_SEED and say so.
SEED_EFFICIENCY: dict[str, DeviceEfficiency] = {
    "a100-80gb": DeviceEfficiency(0.72, 0.80, 0.55, 6.0, 0.7, source="seed: REFERENCE §1 (Vidur A100 GEMMs)"),
    "h100-sxm": DeviceEfficiency(0.70, 0.80, 0.50, 5.0, 0.7, source="seed: REFERENCE §1 (Vidur H100 GEMMs)"),
    "a40": DeviceEfficiency(0.75, 0.85, 0.55, 6.0, 0.6, source="seed: REFERENCE §1 (Vidur A40 GEMMs)"),
    "l4": DeviceEfficiency(0.37, 0.81, 0.30, 6.0, 0.6, source="seed: REFERENCE §1 (Helix L4)"),
    "t4": DeviceEfficiency(0.42, 0.73, 0.30, 8.0, 0.6, source="seed: REFERENCE §1 (Helix T4)"),
    # Public MI300X measurements reach ~45% of the 1307 TFLOPS BF16 peak in GEMMs and ~81% of the 5.3 TB/s
    # peak bandwidth (SemiAnalysis, "MI300X vs H100 vs H200 Benchmark Part 1", 2024-12, and the 2025
    # summaries of it); attention keeps H100's attention/GEMM ratio (0.50/0.70).
    "mi300x": DeviceEfficiency(0.45, 0.81, 0.32, 6.0, 0.6,
                               source="seed: SemiAnalysis MI300X benchmarks (45% of peak GEMM FLOPS, 81% of peak "
                                      "bandwidth)"),
}
GENERIC_SEED = DeviceEfficiency(0.60, 0.75, 0.45, 6.0, 0.6, source="seed: generic (no profile for this device)")
# Cards powered from the PCIe slot alone (≤ 75 W: T4, L4) cannot hold their boost clock through sustained
# tensor-core work, and their data-sheet TFLOPS are quoted at boost. Their sustained clock sits near the
# middle of the data sheets' base–boost range: T4 (585 + 1590) / 2 / 1590 = 0.68, L4 (795 + 2040) / 2 / 2040
# = 0.69. Memory bandwidth does not throttle with the SM clock.
SLOT_POWER_WATTS = 75.0
SLOT_POWERED_CLOCK_SHARE = 0.68
# An engine with no fitted overhead anywhere in its chain (only when scoring with sources held out: the shipped
# vllm has fits) is taken to hide its host work behind the GPU, as CUDA graphs and asynchronous scheduling do.
DEFAULT_OVERHEAD = StepOverhead(0.0, 0.0, 0.0, 0.0, "seed: no host overhead (no fit for this engine)")
SILICON: dict[str, str] = {"a100-40gb": "a100-80gb", "h200-sxm": "h100-sxm"}  # same chip, other memory
FAMILY: dict[str, str] = {"l40s": "a40", "a10g": "a40", "h20": "h100-sxm"}  # related chip: kernel factors
HOST_PEER: dict[str, str] = {"h100-sxm": "a100-80gb", "a100-80gb": "h100-sxm", "mi300x": "h100-sxm",
                             "gaudi3": "h100-sxm", "h20": "h100-sxm", "a10g": "l4", "l40s": "l4", "a40": "l4",
                             "t4": "l4", "l4": "t4"}
PCIE_CLASS = "pcie"  # the measured fabric of PCIe-only nodes (no NVLink), whatever the card


@cache
def silicon_group(device_id: str) -> tuple[str, ...]:
    """The device and the devices of the same chip (itself first)."""
    chip = SILICON.get(device_id, device_id)
    return (device_id, *sorted(d for d in {chip, *(k for k, v in SILICON.items() if v == chip)} if d != device_id))


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
    """The seed of a device without fitted factors: its (or its chip's, or family's) REFERENCE §1 seed when
    ``reference_seeds``, else the generic seed read off its data sheet."""
    if reference_seeds:
        for key in (*silicon_group(device_id), FAMILY.get(device_id)):
            if key is not None and key in SEED_EFFICIENCY:
                return SEED_EFFICIENCY[key]
    return generic_seed(device)


def _nearest_tp(tps: list[int], tp: int) -> int:
    return min(tps, key=lambda x: (abs(math.log2(x) - math.log2(tp)), -x))


@dataclass(frozen=True)
class Calibration:
    """Efficiency per device, overhead per (engine, device, TP), measured fabrics, engines and error bands;
    lookups fall back as the module docstring says."""

    devices: Mapping[str, DeviceEfficiency] = field(default_factory=dict)
    overheads: Mapping[tuple[str, str, int], StepOverhead] = field(default_factory=dict)
    engine: str = DEFAULT_ENGINE
    source: str = "seeds"
    reference_seeds: bool = True  # False: uncovered devices get the generic seed (honest hold-out scoring)
    links: Mapping[str, LinkProfile] = field(default_factory=dict)
    engines: Mapping[str, EngineProfile] = field(default_factory=lambda: dict(ENGINE_SEEDS))
    errors: Mapping[tuple[str, str, str], ErrorBand] = field(default_factory=dict)
    _memo: dict[tuple[str, str, int], StepOverhead] = field(default_factory=dict, init=False, compare=False,
                                                            repr=False)

    # -- efficiencies and fabrics -------------------------------------------------------------------------

    def efficiency(self, device_id: str, device: DeviceType | None = None) -> DeviceEfficiency:
        """Fitted factors of a device, else of its chip, else of its family, else the seed (scaled by the
        device's data sheet when ``device`` is given, see :func:`generic_seed`)."""
        for key in (*silicon_group(device_id), FAMILY.get(device_id)):
            if key is not None and key in self.devices:
                return self.devices[key]
        return seed_efficiency(device_id, device, self.reference_seeds)

    def link_profile(self, device: DeviceType) -> LinkProfile | None:
        """The measured fabric of a device: its own or its chip's (NVLink boards), the PCIe class for
        PCIe-only devices; None where nothing was measured."""
        for key in silicon_group(device.id):
            if key in self.links:
                return self.links[key]
        if device.link_kind == "pcie":
            return self.links.get(PCIE_CLASS)
        return None

    def engine_profile(self, name: str | None = None) -> EngineProfile:
        """The engine ``name`` (default: this calibration's), or a plain one of that name."""
        key = name or self.engine
        return self.engines.get(key) or EngineProfile(key, base=DEFAULT_ENGINE)

    def collectives(self, device: DeviceType) -> Collectives:
        """Collective times of ``device`` under this calibration's engine."""
        eff = self.efficiency(device.id, device)
        return Collectives(device, eff.link_efficiency, eff.ar_base_us, self.engine_profile().collectives,
                           self.link_profile(device))

    # -- overheads ------------------------------------------------------------------------------------------

    def engine_chain(self) -> list[str]:
        """This engine, then its base engines, ending with the default engine."""
        chain: list[str] = []
        name: str | None = self.engine
        while name is not None and name not in chain:
            chain.append(name)
            name = self.engine_profile(name).base
        if DEFAULT_ENGINE not in chain:
            chain.append(DEFAULT_ENGINE)
        return chain

    def overhead(self, device_id: str, tp: int) -> StepOverhead:
        """Overhead for (engine, device, tp): see :meth:`_overhead` for the order of fallbacks."""
        key = (self.engine, device_id, tp)
        hit = self._memo.get(key)
        if hit is None:
            hit = self._memo[key] = self._overhead(device_id, tp)
        return hit

    def _fitted(self, engines: list[str], devices: Sequence[str], tp: int) -> StepOverhead | None:
        """Exact TP over the devices, then the nearest fitted TP (the same machine at another TP says more
        about its host than another machine at this TP), engine by engine."""
        for eng in engines:
            for dev in devices:
                if (eng, dev, tp) in self.overheads:
                    return self.overheads[(eng, dev, tp)]
            fitted = [(k[2], k[1]) for k in self.overheads if k[0] == eng and k[1] in devices]
            if fitted:
                best = _nearest_tp([t for t, _ in fitted], tp)
                dev = next(d for d in devices if (eng, d, best) in self.overheads)
                return self.overheads[(eng, dev, best)]
        return None

    def _host_peers(self, device_id: str) -> Iterator[tuple[str, ...]]:
        seen = set(silicon_group(device_id))
        peer = HOST_PEER.get(SILICON.get(device_id, device_id))
        while peer is not None and peer not in seen:
            group = silicon_group(peer)
            seen.update(group)
            yield group
            peer = HOST_PEER.get(peer)

    def _overhead(self, device_id: str, tp: int) -> StepOverhead:
        """The engine chain's fit for the device's chip; then for its host peers; then the median of the
        engine's fitted overheads (same TP first); then the generic seed."""
        engines = self.engine_chain()
        hit = self._fitted(engines, silicon_group(device_id), tp)
        if hit is not None:
            return hit
        for group in self._host_peers(device_id):
            hit = self._fitted(engines, group, tp)
            if hit is not None:
                return replace(hit, source=f"{hit.source} (host peer of {device_id})")
        for eng in engines:
            same_tp = [v for k, v in self.overheads.items() if k[0] == eng and k[2] == tp]
            pool = same_tp or [v for k, v in self.overheads.items() if k[0] == eng]
            if pool:
                pre, dec, pre_s, dec_s = (float(np.median([getattr(o, f) for o in pool])) for f in
                                          ("prefill_ms_per_layer", "decode_ms_per_layer", "prefill_step_ms",
                                           "decode_step_ms"))
                return StepOverhead(pre, dec, pre_s, dec_s,
                                    f"median of fitted overheads (no fit for {device_id} tp{tp})")
        return DEFAULT_OVERHEAD

    # -- errors and overlays --------------------------------------------------------------------------------

    def error_band(self, device_id: str, phase: str, engine: str | None = None) -> ErrorBand | None:
        """Held-out error of (engine, device or its chip, phase) along the engine chain; for a device no source
        scored, the widest band the engine chain has for that phase (a device without data is no better
        known than the worst one with data), saying so; None when the chain has no band for the phase."""
        chain = [engine] if engine else self.engine_chain()
        for eng in chain:
            for dev in silicon_group(device_id):
                band = self.errors.get((eng, dev, phase))
                if band is not None:
                    return band
        for eng in chain:
            bands = [v for k, v in self.errors.items() if k[0] == eng and k[2] == phase]
            if bands:
                widest = max(bands, key=lambda b: (b.p90_pct, b.median_pct))
                return replace(widest, scored_on=f"no held-out data for {device_id}: the widest {eng} {phase} "
                                                 f"band ({widest.scored_on})")
        return None

    def overlay(self, other: Calibration) -> Calibration:
        """This calibration with ``other``'s values on top (an engine profile over the shipped factors);
        the engine becomes ``other``'s."""
        return Calibration(devices={**self.devices, **other.devices}, overheads={**self.overheads, **other.overheads},
                           engine=other.engine, source=f"{other.source} over {self.source}",
                           reference_seeds=self.reference_seeds, links={**self.links, **other.links},
                           engines={**self.engines, **other.engines}, errors={**self.errors, **other.errors})

    def to_mapping(self) -> dict[str, Any]:
        """Plain data for ``calibration.yaml`` or an engine profile file."""
        from planner.model.calibration_mapping import calibration_to_mapping

        return calibration_to_mapping(self)

    @staticmethod
    def from_mapping(data: Mapping[str, Any]) -> Calibration:
        """Parse what :meth:`to_mapping` wrote (``ValueError('field: reason')`` on bad values)."""
        from planner.model.calibration_mapping import calibration_from_mapping

        return calibration_from_mapping(data)


__all__ = ["AR_BASE_US", "Calibration", "CollectiveCurve", "DeviceEfficiency", "ENGINE_SEEDS", "EngineProfile",
           "ErrorBand", "GENERIC_SEED", "LinkProfile", "StepOverhead", "generic_seed", "seed_efficiency"]
