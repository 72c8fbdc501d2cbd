"""Fitting a :class:`~planner.model.calibration.Calibration` to measured times: pure math over values.

Measurements come in groups (:class:`Group`): the times of one (source, device, model, TP, kind, phase) over
a range of batches and tokens. Kinds: ``dense`` (the sum of a layer's dense operators, no overhead, no
communication), ``allreduce`` (NCCL all-reduce of ``tokens`` bytes: a check of the measured fabric curves,
nothing is fitted on it), ``layer`` (an engine timed one layer per step: the step's fixed cost shows in full
in each time), ``step`` (whole engine steps), ``latency`` (a whole batch served end to end: one prefill of
``tokens``-token prompts, then ``output_tokens − 1`` decode steps).

Per device (devices of the same silicon, e.g. A100 40/80 GB, pooled): mfu, mbu and kernel floor on operator
data, then attention efficiency on engine data of today's vLLM (older engines ran older kernels: their data
fit only their overheads); per (engine, device, TP): overhead ms per layer for prefill and decode, each
fitted on its own phase's data (a phase without data takes the other's). Collectives are
not fitted: they are the measured curves of each fabric (``Calibration.links``). Each stage minimises, with
a soft-L1 loss, ::

    Σ_groups Σ_points (log(predicted / measured) / √n_group)²  +  Σ_params (w·(log θ − log θ_seed))²

in log parameters within physical bounds; the pull ``w`` toward the seed keeps parameters without data put.
:func:`leave_one_out` fits on all sources but one and scores the one left out; :func:`fit_profile` fits a
user's own measurements (``medley perf calibrate``) over a base calibration, and :func:`split_held_out`
holds some of them out to score it.

No files are read here: ``benchmarks/calibration_data.py`` loads the public profiles into groups, and
``benchmarks/calibrate.py`` fits them and writes the shipped ``planner/data/calibration.yaml``;
``planner.io.profiles`` reads a user's measurements.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.optimize import least_squares

from planner.model.calibration import (
    SILICON,
    Calibration,
    DeviceEfficiency,
    EngineProfile,
    ErrorBand,
    StepOverhead,
    seed_efficiency,
)
from planner.model.collectives import EngineCollectives, LinkProfile
from planner.model.perf import DEFAULT_ENGINE, ReplicaShape
from planner.model.roofline import RooflinePerfModel, decode_attention_ms, dense_layer_ms, prefill_attention_ms
from planner.schema import DeviceType, ModelSpec

FloatArray = npt.NDArray[np.float64]
PRIOR_WEIGHT = 0.05  # pull toward the seed (in log units) so parameters without data stay put
ATTN_PRIOR_WEIGHT = 0.5
ENGINE_ONLY_PRIOR_WEIGHT = 0.5  # engine times alone confound kernel speed with host overhead: stay near seed
KERNEL_KINDS = ("dense", "allreduce")
ENGINE_KINDS = ("layer", "step", "latency")
PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class Group:
    """Measured times of one (source, device, model, TP, kind, phase) over a range of batches/tokens."""

    source: str
    label: str  # device as the source names it (e.g. l4x2; a "-tpN" suffix is dropped when scoring)
    device_type: DeviceType
    model: ModelSpec
    tp: int
    kind: str  # dense, allreduce, layer, step, latency (module docstring)
    phase: str  # prefill | decode (latency: prefill)
    batch: FloatArray
    tokens: FloatArray  # prefill/latency: prompt tokens per sequence (dense: tokens; allreduce: bytes); decode: context
    measured_ms: FloatArray
    engine: str = DEFAULT_ENGINE  # whose host overhead the times carry
    output_tokens: FloatArray | None = None  # latency: tokens generated per sequence

    @property
    def device(self) -> str:
        """The device's catalog id."""
        return self.device_type.id


# ---------------------------------------------------------------------------------------------- predicting


def _predict_layer(group: Group, cal: Calibration) -> FloatArray:
    """One layer timed per step: a step's fixed cost shows in full in each per-layer time."""
    dev, m, tp = group.device_type, group.model, group.tp
    eff, ovh, coll = cal.efficiency(dev.id, dev), cal.overhead(dev.id, tp), cal.collectives(dev)
    if group.phase == "prefill":
        tokens = group.batch * group.tokens
        t = dense_layer_ms(m, dev, eff, tp, tokens, coll=coll) + prefill_attention_ms(
            m, dev, eff, tp, tokens, tokens * group.tokens)
        return np.asarray(t + ovh.prefill_step_ms, dtype=float)
    t = dense_layer_ms(m, dev, eff, tp, group.batch, coll=coll) + decode_attention_ms(
        m, dev, eff, tp, group.batch, group.batch * group.tokens)
    return np.asarray(t + ovh.decode_step_ms, dtype=float)


def predict(group: Group, cal: Calibration) -> FloatArray:
    """The model's time for each point of a group under a calibration."""
    dev = group.device_type
    if cal.engine != group.engine:
        cal = replace(cal, engine=group.engine)
    if group.kind == "dense":  # operator times exclude the all-reduces
        eff = cal.efficiency(group.device, dev)
        return np.asarray(dense_layer_ms(group.model, dev, eff, group.tp, group.tokens, include_comm=False),
                          dtype=float)
    if group.kind == "allreduce":  # NCCL as measured, whatever kernel the engine would pick
        coll = replace(cal.collectives(dev), engine=EngineCollectives())
        return np.asarray(coll.all_reduce_ms(group.tokens, group.tp), dtype=float)
    if group.kind == "layer":
        return _predict_layer(group, cal)
    shape = ReplicaShape(model=group.model, device=dev, tp=group.tp)
    perf = RooflinePerfModel(cal)
    if group.kind == "latency":
        assert group.output_tokens is not None
        out = group.output_tokens
        steps = perf.decode_step_ms_array(shape, group.batch, group.tokens + out / 2.0)
        return np.asarray(perf.prefill_ms_array(shape, group.batch, group.tokens) + (out - 1.0) * steps, dtype=float)
    if group.phase == "prefill":
        return np.asarray(perf.prefill_ms_array(shape, group.batch, group.tokens), dtype=float)
    return np.asarray(perf.decode_step_ms_array(shape, group.batch, group.tokens), dtype=float)


def _label(g: Group, by: str) -> str:
    if by == "phase":
        return g.phase if g.kind in ENGINE_KINDS else ("allreduce" if g.kind == "allreduce" else "kernels")
    return g.label.split("-tp")[0]


def abs_pct_errors(groups: Iterable[Group], cal: Calibration,
                   by_phase: bool = False) -> dict[tuple[str, str], FloatArray]:
    """Absolute % errors per (source, device label), or per (source, phase) with ``by_phase``."""
    out: dict[tuple[str, str], list[float]] = {}
    for g in groups:
        err = np.abs(predict(g, cal) - g.measured_ms) / g.measured_ms * 100
        out.setdefault((g.source, _label(g, "phase" if by_phase else "device")), []).extend(err.tolist())
    return {k: np.array(v) for k, v in out.items()}


def errors_by_device_phase(groups: Iterable[Group], cal: Calibration) -> dict[tuple[str, str, str], FloatArray]:
    """Absolute % errors of engine-level points per (engine, catalog device, phase)."""
    out: dict[tuple[str, str, str], list[float]] = {}
    for g in groups:
        if g.kind not in ENGINE_KINDS:
            continue
        err = np.abs(predict(g, cal) - g.measured_ms) / g.measured_ms * 100
        phase = "prefill" if g.kind == "latency" else g.phase
        out.setdefault((g.engine, g.device, phase), []).extend(err.tolist())
    return {k: np.array(v) for k, v in out.items()}


def error_bands(errors: Mapping[tuple[str, str, str], FloatArray],
                scored_on: str) -> dict[tuple[str, str, str], ErrorBand]:
    """Median and p90 of each (engine, device, phase)'s held-out errors, as the calibration stores them."""
    return {k: ErrorBand(float(np.median(e)), float(np.percentile(e, 90)), len(e), scored_on)
            for k, e in sorted(errors.items()) if len(e)}


def summarise(errors: Mapping[tuple[str, str], FloatArray]) -> list[dict[str, Any]]:
    """Median and p90 absolute % error per (source, device)."""
    rows = []
    for (src, dev), e in sorted(errors.items()):
        rows.append({"source": src, "device": dev, "points": len(e), "median_pct": float(np.median(e)),
                     "p90_pct": float(np.percentile(e, 90))})
    return rows


# ---------------------------------------------------------------------------------------------- fitting


_EFF_FIELDS = ("mfu", "mbu", "attn_mfu", "kernel_floor_us")
_KERNEL_FIELDS = ("mfu", "mbu", "kernel_floor_us")
# Physical limits: no kernel reaches its data-sheet peak (≈ 0.9 at best); attention below 0.1 is a fit
# trading off against the overhead, not a property of the device.
_BOUNDS = {"mfu": (0.05, 0.9), "mbu": (0.05, 0.92), "attn_mfu": (0.1, 0.9), "kernel_floor_us": (0.5, 60.0)}
OverheadKey = tuple[str, str, int]


@dataclass(frozen=True)
class FitContext:
    """What every calibration built during a fit carries besides the fitted values."""

    links: Mapping[str, LinkProfile]
    base: Calibration | None = None  # values under the fitted ones (a user profile's shipped calibration)

    def engine(self, name: str) -> EngineProfile:
        """The engine ``name`` as the base calibration (or the shipped seeds) define it."""
        return (self.base or Calibration()).engine_profile(name)

    def calibration(self, devices: Mapping[str, DeviceEfficiency],
                    overheads: Mapping[OverheadKey, StepOverhead], engine: str = DEFAULT_ENGINE) -> Calibration:
        """A calibration of ``devices`` and ``overheads`` over the base's values, with the measured fabrics."""
        own = Calibration(devices=devices, overheads=overheads, engine=engine, links=self.links)
        return own if self.base is None else self.base.overlay(own)


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
    """Start, lower and upper bounds of ``fields`` in log units (the start clipped into the bounds)."""
    lo = [math.log(_BOUNDS[f][0]) for f in fields]
    hi = [math.log(_BOUNDS[f][1]) for f in fields]
    x0 = [min(max(math.log(getattr(eff, f)), a), b) for f, a, b in zip(fields, lo, hi, strict=True)]
    return x0, lo, hi


def _fit_kernels(seed: DeviceEfficiency, kernel: Sequence[Group], members: Sequence[str],
                 ctx: FitContext) -> DeviceEfficiency:
    """Stage 1, operator data: mfu, mbu and kernel floor."""
    x0, lo, hi = _log_box(seed, _KERNEL_FIELDS)
    theta = _least_squares(kernel, x0, lo, hi,
                           lambda th: ctx.calibration(dict.fromkeys(members, _with(seed, _KERNEL_FIELDS, np.exp(th))),
                                                      {}),
                           len(_KERNEL_FIELDS), PRIOR_WEIGHT)
    return _with(seed, _KERNEL_FIELDS, np.exp(theta))


def _overhead_index(engine: Sequence[Group], ctx: FitContext) -> tuple[list[OverheadKey],
                                                                       dict[tuple[str, str, int, str], int],
                                                                       set[OverheadKey]]:
    """The (engine, device, TP) keys with data, one parameter slot per (key, phase) with data, and the keys
    whose constant is a per-step cost: per-layer data (one layer per step shows the step's cost in full) and
    engines whose host work is per step (CUDA graphs: one launch a step, not one a kernel)."""
    phase_of = {(g.engine, g.device, g.tp, "prefill" if g.kind == "latency" else g.phase) for g in engine}
    keys = sorted({k[:3] for k in phase_of})
    index: dict[tuple[str, str, int, str], int] = {}
    for key in keys:
        for phase in PHASES:
            if (*key, phase) in phase_of:
                index[(*key, phase)] = len(index)
    per_step = {(g.engine, g.device, g.tp) for g in engine
                if g.kind == "layer" or ctx.engine(g.engine).host_overhead == "step"}
    return keys, index, per_step


def _fit_engine(eff: DeviceEfficiency, engine: Sequence[Group], members: Sequence[str], with_kernels: bool,
                ctx: FitContext, kernel_engines: frozenset[str] | None = None,
                engine_prior: float = ENGINE_ONLY_PRIOR_WEIGHT) -> Calibration:
    """Stage 2, engine data: overheads per (engine, device, TP, phase), attention efficiency, and the kernel
    factors too when the device had no operator data. Only data of ``kernel_engines`` (all when None) move
    kernel factors: an older engine ran older kernels (DistServe's vLLM had no flash attention)."""
    keys, index, per_step = _overhead_index(engine, ctx)
    efields: tuple[str, ...] = ("attn_mfu",) if with_kernels else _EFF_FIELDS
    kernel_data = [g for g in engine if kernel_engines is None or g.engine in kernel_engines]
    if not any(g.phase == "prefill" for g in kernel_data):
        efields = tuple(f for f in efields if f != "attn_mfu")
    if not kernel_data:
        efields = ()
    x0, lo, hi = _log_box(eff, efields)
    n_eff = len(x0)
    x0 += [math.log(0.1)] * len(index)  # ms per layer (per step for per-layer profiles)
    lo += [math.log(1e-4)] * len(index)
    hi += [math.log(50.0)] * len(index)

    def build(theta: FloatArray) -> Calibration:
        vals = np.exp(theta)
        ovh = {}
        for eng, dev, tp in keys:
            i_p, i_d = index.get((eng, dev, tp, "prefill")), index.get((eng, dev, tp, "decode"))
            first = i_p if i_p is not None else i_d
            assert first is not None
            pre = float(vals[n_eff + first])
            dec = float(vals[n_eff + i_d]) if i_d is not None else pre  # a phase without data takes the other's
            if (eng, dev, tp) in per_step:
                ovh[(eng, dev, tp)] = StepOverhead(0.0, 0.0, pre, dec, "fit")
            else:
                ovh[(eng, dev, tp)] = StepOverhead(pre, dec, 0.0, 0.0, "fit")
        return ctx.calibration(dict.fromkeys(members, _with(eff, efields, vals[:n_eff])), ovh)

    # Attention is fitted on engine data only, whose quadratic terms differ between engine versions
    # (DistServe's vLLM ran without flash attention): keep it near the seed.
    weights = [ATTN_PRIOR_WEIGHT if f == "attn_mfu" else
               (PRIOR_WEIGHT if with_kernels else engine_prior) for f in efields]
    return build(_least_squares(engine, x0, lo, hi, build, len(efields), weights))


def fit_device(device: str, groups: Sequence[Group], reference_seeds: bool = True, sources: str = "",
               members: Sequence[str] = (), links: Mapping[str, LinkProfile] | None = None,
               start: DeviceEfficiency | None = None, base: Calibration | None = None,
               kernel_engines: frozenset[str] | None = frozenset({DEFAULT_ENGINE}),
               engine_prior: float = ENGINE_ONLY_PRIOR_WEIGHT,
               ) -> tuple[DeviceEfficiency, dict[OverheadKey, StepOverhead]]:
    """Fit one device in two stages: kernel factors on operator data, then overheads on engine data.

    Stage 1 (operator profiles: dense layers): mfu, mbu, kernel floor. Stage 2 (engine profiles: per-layer or
    per-step times, end-to-end latencies): overhead ms per layer per (TP, phase) and attention efficiency;
    when the device has no operator data, its kernel factors too, held closer to the start, since engine
    times alone cannot tell a slow kernel from a slow host. ``members`` are the catalog devices of the same
    silicon (A100 40/80 GB) that share the factors; each keeps its own memory bandwidth from the catalog.
    Starts from ``start`` when given, else the device's seed (the generic one, read off the data sheet of
    the groups' device, without ``reference_seeds``). Engine data move kernel factors only when their engine
    is in ``kernel_engines`` (default: today's vLLM; all when None, as for a user's own engine).
    """
    members = list(members) or [device]
    ctx = FitContext(links or {}, base)
    sheet = next((g.device_type for g in groups if g.device == device), groups[0].device_type if groups else None)
    eff = start or seed_efficiency(device, sheet, reference_seeds)
    kernel = [g for g in groups if g.kind == "dense"]
    engine = [g for g in groups if g.kind in ENGINE_KINDS]
    if kernel:
        eff = _fit_kernels(eff, kernel, members, ctx)
    overheads: dict[OverheadKey, StepOverhead] = {}
    if engine:
        cal = _fit_engine(eff, engine, members, bool(kernel), ctx, kernel_engines, engine_prior)
        eff = cal.devices[members[0]]
        overheads = {k: replace(v, source=f"fitted on {sources}") for k, v in cal.overheads.items()
                     if k[1] in members and v.source == "fit"}
    points = sum(len(g.measured_ms) for g in groups if g.kind != "allreduce")
    eff = replace(eff, source=f"fitted on {sources} ({len(groups)} groups, {points} points)")
    return eff, overheads


def fit(groups: Sequence[Group], reference_seeds: bool = True, source: str = "",
        links: Mapping[str, LinkProfile] | None = None) -> Calibration:
    """Fit every device the groups cover; devices are independent (no shared parameters). ``links`` are the
    measured fabrics the predictions use; ``source`` describes the data (default: the groups' sources)."""
    by_chip: dict[str, list[Group]] = {}
    for g in groups:
        if g.kind != "allreduce":
            by_chip.setdefault(SILICON.get(g.device, g.device), []).append(g)
    devices: dict[str, DeviceEfficiency] = {}
    overheads: dict[OverheadKey, StepOverhead] = {}
    for chip, gs in sorted(by_chip.items()):
        names = "+".join(sorted({g.source for g in gs}))
        members = sorted({g.device for g in gs})
        eff, ovh = fit_device(chip, gs, reference_seeds, names, members, links)
        for dev in members:
            devices[dev] = eff
        overheads.update(ovh)
    used = "+".join(sorted({g.source for g in groups}))
    return Calibration(devices=devices, overheads=overheads, engine=DEFAULT_ENGINE,
                       source=source or f"fit on {used}", reference_seeds=reference_seeds, links=dict(links or {}))


def leave_one_out(data: Mapping[str, Sequence[Group]], held_out: Sequence[str], reference_seeds: bool = False,
                  by_phase: bool = False, links: Mapping[str, LinkProfile] | None = None,
                  ) -> dict[tuple[str, str], FloatArray]:
    """For each source in ``held_out``: fit on all the others, score it.

    Devices the training sources do not cover get the generic seed (``reference_seeds=False``, the honest
    score when the REFERENCE seeds were read off the held-out data) or the REFERENCE seed (what the shipped
    model does for a device without data). Sources not in ``held_out`` always train.
    """
    out: dict[tuple[str, str], FloatArray] = {}
    for held in held_out:
        train = [g for s, gs in data.items() if s != held for g in gs]
        cal = fit(train, reference_seeds=reference_seeds, links=links)
        out.update(abs_pct_errors(data[held], cal, by_phase))
    return out


def held_out_by_device_phase(data: Mapping[str, Sequence[Group]], held_out: Sequence[str],
                             links: Mapping[str, LinkProfile] | None = None,
                             ) -> dict[tuple[str, str, str], FloatArray]:
    """Leave-one-source-out errors of engine-level points per (engine, device, phase), generic seeds for
    devices the other sources do not cover."""
    out: dict[tuple[str, str, str], list[float]] = {}
    for held in held_out:
        train = [g for s, gs in data.items() if s != held for g in gs]
        cal = fit(train, reference_seeds=False, links=links)
        for k, e in errors_by_device_phase(data[held], cal).items():
            out.setdefault(k, []).extend(e.tolist())
    return {k: np.array(v) for k, v in out.items()}


# ---------------------------------------------------------------------------------------------- user profiles


def split_held_out(groups: Sequence[Group], train_max_batch: float = 5.0,
                   train_tp: int | None = None) -> tuple[list[Group], list[Group]]:
    """Points to fit on and points to score: fit on the smallest TP of each (model, device) (or ``train_tp``)
    with batches up to ``train_max_batch``; hold out the rest."""
    smallest: dict[tuple[str, str], int] = {}
    for g in groups:
        key = (g.model.id, g.device)
        smallest[key] = min(smallest.get(key, g.tp), g.tp)
    train: list[Group] = []
    test: list[Group] = []
    for g in groups:
        tp_ok = g.tp == (train_tp if train_tp is not None else smallest[(g.model.id, g.device)])
        keep = g.batch <= train_max_batch if tp_ok else np.zeros(len(g.batch), dtype=bool)
        for mask, out in ((keep, train), (~keep, test)):
            if mask.any():
                out.append(_subset(g, mask))
    return train, test


def _subset(g: Group, mask: npt.NDArray[np.bool_]) -> Group:
    return replace(g, batch=g.batch[mask], tokens=g.tokens[mask], measured_ms=g.measured_ms[mask],
                   output_tokens=None if g.output_tokens is None else g.output_tokens[mask])


def fit_profile(groups: Sequence[Group], base: Calibration, engine: EngineProfile, source: str) -> Calibration:
    """An engine profile from a user's measurements of ``engine``: per device (chip), kernel factors starting
    from ``base``'s and overheads per TP measured; returns only the fitted values and the engine (overlay it
    on ``base``)."""
    base = replace(base, engines={**base.engines, engine.name: engine})
    by_chip: dict[str, list[Group]] = {}
    for g in groups:
        by_chip.setdefault(SILICON.get(g.device, g.device), []).append(replace(g, engine=engine.name))
    devices: dict[str, DeviceEfficiency] = {}
    overheads: dict[OverheadKey, StepOverhead] = {}
    for chip, gs in sorted(by_chip.items()):
        members = sorted({g.device for g in gs})
        start = base.efficiency(members[0], gs[0].device_type)
        # The user's own engine on their own device: its data may move the kernel factors freely.
        eff, ovh = fit_device(chip, gs, True, source, members, base.links, start, base, kernel_engines=None,
                              engine_prior=PRIOR_WEIGHT)
        devices.update(dict.fromkeys(members, eff))
        overheads.update(ovh)
    return Calibration(devices=devices, overheads=overheads, engine=engine.name, source=source,
                       engines={engine.name: engine})


@dataclass(frozen=True)
class ProfileFit:
    """A fitted engine profile and how well a fit on part of the points predicted the rest."""

    profile: Calibration  # fitted on every point (overlay it on the base calibration)
    held_out: dict[tuple[str, int, str], FloatArray]  # |error| % per (device, TP, phase) of the held-out points
    train_points: int
    test_points: int

    def held_out_pct(self) -> FloatArray:
        """Every held-out point's absolute % error."""
        parts = list(self.held_out.values())
        return np.concatenate(parts) if parts else np.zeros(0)


def calibrate_profile(groups: Sequence[Group], base: Calibration, engine: EngineProfile, source: str,
                      train_max_batch: float = 5.0) -> ProfileFit:
    """Fit an engine profile on a user's measurements: first on the points :func:`split_held_out` keeps
    (the smallest TP, batches up to ``train_max_batch``) to score the points it holds out, then on all of
    them for the profile itself, which stores the held-out errors as its error bands."""
    train, test = split_held_out(groups, train_max_batch)
    held: dict[tuple[str, int, str], list[float]] = {}
    if train and test:
        trial = fit_profile(train, base, engine, f"{source} (held-in points)")
        scored = base.overlay(trial)
        for g in test:
            g = replace(g, engine=engine.name)
            err = np.abs(predict(g, scored) - g.measured_ms) / g.measured_ms * 100
            held.setdefault((g.device, g.tp, "prefill" if g.kind == "latency" else g.phase), []).extend(err.tolist())
    profile = fit_profile(groups, base, engine, source)
    by_phase: dict[tuple[str, str, str], list[float]] = {}
    for (dev, _, phase), e in held.items():
        by_phase.setdefault((engine.name, dev, phase), []).extend(e)
    bands = error_bands({k: np.array(v) for k, v in by_phase.items()},
                        f"{source}: fit on the smallest TP and batches ≤ {train_max_batch:g}, scored on the rest")
    return ProfileFit(replace(profile, errors=bands), {k: np.array(v) for k, v in held.items()},
                      sum(len(g.measured_ms) for g in train), sum(len(g.measured_ms) for g in test))
