"""What a plan says about itself besides its cost: the performance model's held-out error band for each group,
how busy each group would be if its steps were as slow as the 90th-percentile error, and findings in words
(whether the plan holds only if the model is right, what cross-zone KV hand-offs cost, why a pipeline was
chosen for a model that fits without one).

Pure functions of values (the calibration, the candidates, the catalog): the pipeline calls them while it
assembles a plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from planner.catalog import Catalog
from planner.model.calibration import Calibration
from planner.model.candidates import Candidate
from planner.model.capacity import ServingLimits, shapes_capacity_tables
from planner.model.perf import PerfModel, ReplicaShape
from planner.roles import ROLES
from planner.schema import BucketLoad, Finding, LengthBucket, ModelErrorBand, PlannerOptions, Role

UTILISATION_CAP = 9.99  # what a group reports when the slower steps miss the SLO outright


def group_error_band(cal: Calibration, device: str, role: Role) -> ModelErrorBand | None:
    """The calibration's held-out error for the phases a role runs on a device under the calibration's engine."""
    spec = ROLES[role]
    pre = cal.error_band(device, "prefill", cal.engine) if spec.prefill else None
    dec = cal.error_band(device, "decode", cal.engine) if spec.decode else None
    if pre is None and dec is None:
        return None
    scored = "; ".join(dict.fromkeys(b.scored_on for b in (pre, dec) if b is not None))
    return ModelErrorBand(prefill_median_pct=pre.median_pct if pre else None,
                          prefill_p90_pct=pre.p90_pct if pre else None,
                          decode_median_pct=dec.median_pct if dec else None,
                          decode_p90_pct=dec.p90_pct if dec else None, scored_on=scored)


def shape_of(c: Candidate, catalog: Catalog) -> ReplicaShape:
    """The replica shape behind a candidate."""
    cfg = c.configuration
    return ReplicaShape(model=catalog.model(c.service.model), device=catalog.device(cfg.device), tp=cfg.tp, pp=cfg.pp,
                        memory_device=catalog.device(cfg.memory_device) if cfg.memory_device else None,
                        memory_devices=cfg.memory_devices if cfg.memory_device else 0)


def _band_limits(c: Candidate, band: ModelErrorBand) -> ServingLimits:
    """The candidate's limits with every step slower by the band's p90 error."""
    return replace(c.limits, prefill_slowdown=1 + (band.prefill_p90_pct or 0.0) / 100,
                   decode_slowdown=1 + (band.decode_p90_pct or 0.0) / 100)


def _busy_at(c: Candidate, buckets: Sequence[LengthBucket], rates: Sequence[float], load: Sequence[BucketLoad],
             replicas: int, caps: Sequence[float]) -> float:
    """A group's utilisation on capacities ``caps`` per bucket (``UTILISATION_CAP`` where one it serves is 0)."""
    shares = {(ld.input_tokens, ld.output_tokens): ld for ld in load}
    busy = 0.0
    for b, rate, cap in zip(buckets, rates, caps, strict=True):
        ld = shares.get((b.input_tokens, b.output_tokens))
        share = 0.0 if ld is None else (ld.prefill_share if c.configuration.role is Role.PREFILL else ld.decode_share)
        if share <= 0:
            continue
        if cap <= 0:
            return UTILISATION_CAP
        busy += rate * share / cap
    return min(round(busy / replicas, 4), UTILISATION_CAP)


@dataclass(frozen=True)
class GroupLoad:
    """One replica group of a plan as its notes need it: its candidate, buckets, rates, load and replicas."""

    candidate: Candidate
    buckets: Sequence[LengthBucket]
    rates: Sequence[float]
    load: Sequence[BucketLoad]
    replicas: int


def groups_notes(perf: PerfModel, catalog: Catalog, cal: Calibration,
                 groups: Sequence[GroupLoad]) -> list[tuple[ModelErrorBand | None, float | None]]:
    """Each group's error band and its utilisation at the band's p90 (None without a band): the slowed capacity
    tables of all groups of one role and buckets computed together (one pass of array arithmetic each)."""
    bands = [group_error_band(cal, g.candidate.configuration.device, g.candidate.configuration.role) for g in groups]
    # A capacity table depends on the buckets' lengths, not their shares: services of one model share them.
    batches: dict[tuple[Role, tuple[tuple[int, int], ...]], list[int]] = {}
    for i, (g, band) in enumerate(zip(groups, bands, strict=True)):
        if band is not None and g.replicas > 0:
            lengths = tuple((b.input_tokens, b.output_tokens) for b in g.buckets)
            batches.setdefault((g.candidate.configuration.role, lengths), []).append(i)
    utils: list[float | None] = [None] * len(groups)
    for (role, _), members in batches.items():
        buckets = groups[members[0]].buckets
        wanted = []
        for i in members:
            c, band = groups[i].candidate, bands[i]
            assert band is not None
            wanted.append((shape_of(c, catalog), _band_limits(c, band), [c.service.slo]))
        for i, per_slo in zip(members, shapes_capacity_tables(perf, role, list(buckets), wanted), strict=True):
            g = groups[i]
            utils[i] = _busy_at(g.candidate, g.buckets, g.rates, g.load, g.replicas, per_slo[0].rates())
    return list(zip(bands, utils, strict=True))


def robustness_finding(opts: PlannerOptions, groups: Mapping[str, float | None], headroom: float) -> Finding:
    """Whether the plan holds if the model's steps are as slow as their p90 held-out error, in words."""
    over = {name: u for name, u in groups.items() if u is not None and u > 1.0}
    planned = {"none": "the model's step times", "p50": "step times slowed by the median held-out error",
               "p90": "step times slowed by the 90th-percentile held-out error"}[opts.robustness]
    if not over:
        return Finding(kind="note", constraint="robustness",
                       message=f"planned on {planned}; every group stays within its capacity if its steps are as "
                               f"slow as the p90 error band (at most {max((u or 0.0) for u in groups.values()):.0%} "
                               f"busy, headroom {headroom:.0%})", value=0.0)
    worst = ", ".join(f"{k} {u:.0%}" if u < UTILISATION_CAP else f"{k} misses its SLO" for k, u in
                      sorted(over.items(), key=lambda kv: -kv[1]))
    return Finding(kind="note", constraint="robustness",
                   message=(f"planned on {planned}; the plan holds only if the model is right: with steps as slow "
                            f"as the p90 error band these groups run over capacity: {worst} "
                            "(plan with planner.robustness: p90 to size for it)"), value=float(len(over)))


def pipeline_finding(service: str, label: str, cheaper_by: float, cost: float) -> Finding:
    """Why a pipeline stayed in the plan for a model that fits without one."""
    return Finding(kind="note", constraint=f"pipeline[{service}]",
                   message=(f"{service} runs {label}: the model fits without a pipeline, but every plan without "
                            f"such pipelines costs ${cheaper_by:.2f}/h more ({cheaper_by / max(cost, 1e-9):.1%}): a "
                            "pipeline's stages hold 1/p of the weights each, leaving more room for KV cache and "
                            "larger batches, or pack the pools' nodes better"), value=cheaper_by)


def pipeline_unchecked_finding(service: str, label: str) -> Finding:
    """A pipeline stayed in the plan for a model that fits without one, and no plan without it was found in time
    to compare."""
    return Finding(kind="note", constraint=f"pipeline[{service}]",
                   message=(f"{service} runs {label}: the model fits without a pipeline, but no plan without such "
                            "pipelines was found in the time left to compare; raise planner.time_limit_s"))


def cross_zone_finding(costs: Mapping[str, float]) -> list[Finding]:
    """What the KV bytes crossing zones cost, per service that allows it."""
    return [Finding(kind="note", constraint=f"handoff[{s}]",
                    message=f"{s}: KV caches handed across zones cost ${usd:.2f}/h (not in the devices' $/h)",
                    value=usd) for s, usd in sorted(costs.items()) if usd > 0.005]


def plan_findings(opts: PlannerOptions, headroom: float, group_util: Mapping[str, float | None],
                  cross_zone: Mapping[str, float]) -> list[Finding]:
    """The plan's own notes: robustness, then cross-zone hand-off costs."""
    return [robustness_finding(opts, group_util, headroom), *cross_zone_finding(cross_zone)]
