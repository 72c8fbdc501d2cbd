"""Fitting a :class:`~planner.model.calibration.Calibration` to measured times: pure math over values.

Measurements come in groups (:class:`Group`): the times of one (source, device, model, TP, kind, phase) over
a range of batches and tokens. Kinds: ``dense`` (the sum of a layer's dense operators, no overhead, no
communication), ``allreduce`` (NCCL all-reduce of ``tokens`` bytes), ``layer`` (an engine timed one layer per
step: the step's fixed cost shows in full in each time), ``step`` (whole engine steps).

Per device (devices of the same silicon, e.g. A100 40/80 GB, pooled): mfu, mbu, kernel floor, all-reduce link
efficiency and α on operator data, then attention efficiency on engine data; per (engine, device, TP):
overhead ms per layer for prefill and decode, each fitted on its own phase's data (a phase without data takes
the other's). Each stage minimises, with a soft-L1 loss, ::

    Σ_groups Σ_points (log(predicted / measured) / √n_group)²  +  Σ_params (w·(log θ − log θ_seed))²

in log parameters within physical bounds; the pull ``w`` toward the seed keeps parameters without data put.
:func:`leave_one_out` fits on all sources but one and scores the one left out.

No files are read here: ``benchmarks/calibration_data.py`` loads the public profiles into groups, and
``benchmarks/calibrate.py`` fits them and writes the shipped ``planner/data/calibration.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import least_squares

from planner.model.calibration import Calibration, DeviceEfficiency, StepOverhead, seed_efficiency
from planner.model.collectives import all_reduce_ms
from planner.model.perf import DEFAULT_ENGINE, ReplicaShape
from planner.model.roofline import RooflinePerfModel, decode_attention_ms, dense_layer_ms, prefill_attention_ms
from planner.schema import DeviceType, ModelSpec

FloatArray = npt.NDArray[np.float64]
PRIOR_WEIGHT = 0.05  # pull toward the seed (in log units) so parameters without data stay put
ATTN_PRIOR_WEIGHT = 0.5
ENGINE_ONLY_PRIOR_WEIGHT = 0.5  # engine times alone confound kernel speed with host overhead: stay near seed
SILICON = {"a100-40gb": "a100-80gb", "h200-sxm": "h100-sxm"}  # same chip, different memory: shared kernels
KERNEL_KINDS = ("dense", "allreduce")
ENGINE_KINDS = ("layer", "step")


@dataclass(frozen=True)
class Group:
    """Measured times of one (source, device, model, TP, kind, phase) over a range of batches/tokens."""

    source: str
    label: str  # device as the source names it (e.g. l4x2; a "-tpN" suffix is dropped when scoring)
    device_type: DeviceType
    model: ModelSpec
    tp: int
    kind: str  # dense (operator sums), allreduce (NCCL), layer (per-layer engine times), step (engine steps)
    phase: str  # prefill | decode
    batch: FloatArray
    tokens: FloatArray  # prefill: tokens per sequence (dense/allreduce: tokens or bytes); decode: context
    measured_ms: FloatArray
    engine: str = DEFAULT_ENGINE  # whose host overhead the times carry

    @property
    def device(self) -> str:
        """The device's catalog id."""
        return self.device_type.id


# ---------------------------------------------------------------------------------------------- predicting


def predict(group: Group, cal: Calibration) -> FloatArray:
    """The model's time for each point of a group under a calibration."""
    dev = group.device_type
    eff = cal.efficiency(group.device, dev)
    if cal.engine != group.engine:
        cal = replace(cal, engine=group.engine)
    if group.kind == "dense":  # operator times exclude the all-reduces
        return np.asarray(dense_layer_ms(group.model, dev, eff, group.tp, group.tokens, include_comm=False),
                          dtype=float)
    if group.kind == "allreduce":
        return np.asarray(all_reduce_ms(group.tokens, group.tp, dev, eff.link_efficiency, eff.ar_base_us),
                          dtype=float)
    shape = ReplicaShape(model=group.model, device=dev, tp=group.tp)
    if group.kind == "layer":
        ovh = cal.overhead(group.device, group.tp)
        # One layer timed per step: a step's fixed cost shows in full in each per-layer time.
        if group.phase == "prefill":
            tokens = group.batch * group.tokens
            t = dense_layer_ms(group.model, dev, eff, group.tp, tokens) + prefill_attention_ms(
                group.model, dev, eff, group.tp, tokens, tokens * group.tokens)
            return np.asarray(t + ovh.prefill_step_ms, dtype=float)
        t = dense_layer_ms(group.model, dev, eff, group.tp, group.batch) + decode_attention_ms(
            group.model, dev, eff, group.tp, group.batch, group.batch * group.tokens)
        return np.asarray(t + ovh.decode_step_ms, dtype=float)
    perf = RooflinePerfModel(cal)
    if group.phase == "prefill":
        return np.asarray(perf.prefill_ms_array(shape, group.batch, group.tokens), dtype=float)
    return np.asarray(perf.decode_step_ms_array(shape, group.batch, group.tokens), dtype=float)


def abs_pct_errors(groups: Iterable[Group], cal: Calibration,
                   by_phase: bool = False) -> dict[tuple[str, str], FloatArray]:
    """Absolute % errors per (source, device label), or per (source, phase) with ``by_phase``."""
    out: dict[tuple[str, str], list[float]] = {}
    for g in groups:
        err = np.abs(predict(g, cal) - g.measured_ms) / g.measured_ms * 100
        label = g.label.split("-tp")[0]
        if by_phase:
            label = g.phase if g.kind in ENGINE_KINDS else "kernels"
        out.setdefault((g.source, label), []).extend(err.tolist())
    return {k: np.array(v) for k, v in out.items()}


def summarise(errors: Mapping[tuple[str, str], FloatArray]) -> list[dict[str, Any]]:
    """Median and p90 absolute % error per (source, device)."""
    rows = []
    for (src, dev), e in sorted(errors.items()):
        rows.append({"source": src, "device": dev, "points": len(e), "median_pct": float(np.median(e)),
                     "p90_pct": float(np.percentile(e, 90))})
    return rows


# ---------------------------------------------------------------------------------------------- fitting


_EFF_FIELDS = ("mfu", "mbu", "attn_mfu", "kernel_floor_us", "link_efficiency", "ar_base_us")
_KERNEL_FIELDS = ("mfu", "mbu", "kernel_floor_us", "link_efficiency", "ar_base_us")
# Physical limits: no kernel reaches its data-sheet peak (≈ 0.9 at best); attention below 0.1 is a fit
# trading off against the overhead, not a property of the device.
_BOUNDS = {"mfu": (0.05, 0.9), "mbu": (0.05, 0.92), "attn_mfu": (0.1, 0.9), "kernel_floor_us": (0.5, 60.0),
           "link_efficiency": (0.05, 1.0), "ar_base_us": (1.0, 200.0)}
OverheadKey = tuple[str, str, int]


def _least_squares(groups: Sequence[Group], x0: list[float], lo: list[float], hi: list[float],
                   build: Callable[[FloatArray], Calibration], prior_n: int,
                   prior_weight: float | Sequence[float]) -> FloatArray:
    """Minimise log errors (each group weighted by √points) plus a pull of the first ``prior_n`` params."""
    anchor = np.array(x0[:prior_n])
    weights = np.broadcast_to(np.asarray(prior_weight, dtype=float), (prior_n,))

    def residuals(theta: FloatArray) -> FloatArray:
        cal = build(theta)
        parts = [np.log(np.maximum(predict(g, cal), 1e-9) / g.measured_ms) / math.sqrt(len(g.measured_ms))
                 for g in groups]
        return np.concatenate([*parts, weights * (theta[:prior_n] - anchor)])

    sol = least_squares(residuals, np.array(x0), bounds=(np.array(lo), np.array(hi)), loss="soft_l1",
                        f_scale=0.1, max_nfev=300)
    return np.asarray(sol.x, dtype=float)


def _with(base: DeviceEfficiency, fields: Sequence[str], vals: FloatArray) -> DeviceEfficiency:
    values: dict[str, Any] = {f: float(v) for f, v in zip(fields, vals, strict=True)}
    return replace(base, **values)


def _log_box(eff: DeviceEfficiency, fields: Sequence[str]) -> tuple[list[float], list[float], list[float]]:
    """Start, lower and upper bounds of ``fields`` in log units."""
    return ([math.log(getattr(eff, f)) for f in fields], [math.log(_BOUNDS[f][0]) for f in fields],
            [math.log(_BOUNDS[f][1]) for f in fields])


def _fit_kernels(seed: DeviceEfficiency, kernel: Sequence[Group], members: Sequence[str]) -> DeviceEfficiency:
    """Stage 1, operator data: mfu, mbu, kernel floor (and link efficiency, α with all-reduce data)."""
    fields = _KERNEL_FIELDS if any(g.kind == "allreduce" for g in kernel) else _KERNEL_FIELDS[:3]
    x0, lo, hi = _log_box(seed, fields)
    theta = _least_squares(kernel, x0, lo, hi,
                           lambda th: Calibration(devices=dict.fromkeys(members, _with(seed, fields, np.exp(th)))),
                           len(fields), PRIOR_WEIGHT)
    return _with(seed, fields, np.exp(theta))


def _fit_engine(eff: DeviceEfficiency, engine: Sequence[Group], members: Sequence[str],
                with_kernels: bool) -> Calibration:
    """Stage 2, engine data: overheads per (engine, device, TP, phase), attention efficiency, and the kernel
    factors too when the device had no operator data."""
    keys_pre = sorted({(g.engine, g.device, g.tp) for g in engine if g.phase == "prefill"})
    keys_dec = sorted({(g.engine, g.device, g.tp) for g in engine if g.phase == "decode"})
    keys = sorted(set(keys_pre) | set(keys_dec))
    # Per-layer profiles measure a per-step cost; per-step profiles a per-layer one.
    per_step = {(g.engine, g.device, g.tp) for g in engine if g.kind == "layer"}
    efields: tuple[str, ...] = ("attn_mfu",) if with_kernels else _EFF_FIELDS
    if not any(g.phase == "prefill" for g in engine):
        efields = tuple(f for f in efields if f != "attn_mfu")
    x0, lo, hi = _log_box(eff, efields)
    index: dict[tuple[str, str, int, str], int] = {}
    for key in keys:
        for phase, have in (("prefill", keys_pre), ("decode", keys_dec)):
            if key in have:
                index[(*key, phase)] = len(x0)
                x0.append(math.log(0.1))  # ms per layer (per step for per-layer profiles)
                lo.append(math.log(1e-4))
                hi.append(math.log(50.0))

    def build(theta: FloatArray) -> Calibration:
        vals = np.exp(theta)
        ovh = {}
        for eng, dev, tp in keys:
            i_p, i_d = index.get((eng, dev, tp, "prefill")), index.get((eng, dev, tp, "decode"))
            first = i_p if i_p is not None else i_d
            assert first is not None
            pre = float(vals[first])
            dec = float(vals[i_d]) if i_d is not None else pre  # a phase without data takes the other's
            if (eng, dev, tp) in per_step:
                ovh[(eng, dev, tp)] = StepOverhead(0.0, 0.0, pre, dec, "fit")
            else:
                ovh[(eng, dev, tp)] = StepOverhead(pre, dec, 0.0, 0.0, "fit")
        return Calibration(devices=dict.fromkeys(members, _with(eff, efields, vals[: len(efields)])),
                           overheads=ovh, engine=DEFAULT_ENGINE)

    # Attention is fitted on engine data only, whose quadratic terms differ between engine versions
    # (DistServe's vLLM ran without flash attention): keep it near the seed.
    weights = [ATTN_PRIOR_WEIGHT if f == "attn_mfu" else
               (PRIOR_WEIGHT if with_kernels else ENGINE_ONLY_PRIOR_WEIGHT) for f in efields]
    return build(_least_squares(engine, x0, lo, hi, build, len(efields), weights))


def fit_device(device: str, groups: Sequence[Group], reference_seeds: bool = True, sources: str = "",
               members: Sequence[str] = ()) -> tuple[DeviceEfficiency, dict[OverheadKey, StepOverhead]]:
    """Fit one device in two stages: kernel factors on operator data, then overheads on engine data.

    Stage 1 (operator profiles: dense layers, all-reduces): mfu, mbu, kernel floor, link efficiency.
    Stage 2 (engine profiles: per-layer or per-step vLLM times): overhead ms per layer per (TP, phase) and
    attention efficiency; when the device has no operator data, its kernel factors too, held closer to
    the seed, since engine times alone cannot tell a slow kernel from a slow host. ``members`` are the
    catalog devices of the same silicon (A100 40/80 GB) that share the kernel factors; each keeps its own
    memory bandwidth from the catalog and its own overheads. Starts from the device's seed (the generic one,
    read off the data sheet of the groups' device, without ``reference_seeds``).
    """
    members = list(members) or [device]
    sheet = next((g.device_type for g in groups if g.device == device), groups[0].device_type if groups else None)
    eff = seed_efficiency(device, sheet, reference_seeds)
    kernel = [g for g in groups if g.kind in KERNEL_KINDS]
    engine = [g for g in groups if g.kind in ENGINE_KINDS]
    if kernel:
        eff = _fit_kernels(eff, kernel, members)
    overheads: dict[OverheadKey, StepOverhead] = {}
    if engine:
        cal = _fit_engine(eff, engine, members, with_kernels=bool(kernel))
        eff = cal.devices[members[0]]
        overheads = {k: replace(v, source=f"fitted on {sources}") for k, v in cal.overheads.items()}
    points = sum(len(g.measured_ms) for g in groups)
    eff = replace(eff, source=f"fitted on {sources} ({len(groups)} groups, {points} points)")
    return eff, overheads


def fit(groups: Sequence[Group], reference_seeds: bool = True, source: str = "") -> Calibration:
    """Fit every device the groups cover; devices are independent (no shared parameters). ``source``
    describes the data (default: the groups' source names)."""
    by_chip: dict[str, list[Group]] = {}
    for g in groups:
        by_chip.setdefault(SILICON.get(g.device, g.device), []).append(g)
    devices: dict[str, DeviceEfficiency] = {}
    overheads: dict[OverheadKey, StepOverhead] = {}
    for chip, gs in sorted(by_chip.items()):
        names = "+".join(sorted({g.source for g in gs}))
        members = sorted({g.device for g in gs})
        eff, ovh = fit_device(chip, gs, reference_seeds, names, members)
        for dev in members:
            devices[dev] = eff
        overheads.update(ovh)
    used = "+".join(sorted({g.source for g in groups}))
    return Calibration(devices=devices, overheads=overheads, engine=DEFAULT_ENGINE,
                       source=source or f"fit on {used}", reference_seeds=reference_seeds)


def leave_one_out(data: Mapping[str, Sequence[Group]], held_out: Sequence[str], reference_seeds: bool = False,
                  by_phase: bool = False) -> dict[tuple[str, str], FloatArray]:
    """For each source in ``held_out``: fit on all the others, score it.

    Devices the training sources do not cover get the generic seed (``reference_seeds=False``, the honest
    score when the REFERENCE seeds were read off the held-out data) or the REFERENCE seed (what the shipped
    model does for a device without data). Sources not in ``held_out`` always train.
    """
    out: dict[tuple[str, str], FloatArray] = {}
    for held in held_out:
        train = [g for s, gs in data.items() if s != held for g in gs]
        cal = fit(train, reference_seeds=reference_seeds)
        out.update(abs_pct_errors(data[held], cal, by_phase))
    return out
