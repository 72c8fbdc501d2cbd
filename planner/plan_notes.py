"""What a plan says about itself besides its cost: the performance model's held-out error band for each group,
how busy each group would be if its steps were as slow as the 90th-percentile error, and findings in words
(whether the plan holds only if the model is right, what cross-zone KV hand-offs cost, why a pipeline was
chosen for a model that fits without one).

Pure functions of values (the calibration, the candidates, the catalog): the pipeline calls them while it
assembles a plan.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from planner.catalog import Catalog
from planner.model.calibration import Calibration
from planner.model.candidates import Candidate
from planner.model.capacity import capacity_table
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


def utilisation_at_band(perf: PerfModel, catalog: Catalog, c: Candidate, band: ModelErrorBand | None,
                        buckets: Sequence[LengthBucket], rates: Sequence[float], load: Sequence[BucketLoad],
                        replicas: int) -> float | None:
    """The group's utilisation with every step slower by the band's p90 error (``UTILISATION_CAP`` where the
    slower steps cannot meet the SLO for a bucket it serves); None without a band."""
    if band is None or replicas <= 0:
        return None
    lim = replace(c.limits, prefill_slowdown=1 + (band.prefill_p90_pct or 0.0) / 100,
                  decode_slowdown=1 + (band.decode_p90_pct or 0.0) / 100)
    caps = capacity_table(perf, shape_of(c, catalog), c.configuration.role, list(buckets), c.service.slo, lim)
    shares = {(ld.input_tokens, ld.output_tokens): ld for ld in load}
    busy = 0.0
    for b, rate, cap in zip(buckets, rates, caps, strict=True):
        ld = shares.get((b.input_tokens, b.output_tokens))
        share = 0.0 if ld is None else (ld.prefill_share if c.configuration.role is Role.PREFILL else ld.decode_share)
        if share <= 0:
            continue
        if cap.rps <= 0:
            return UTILISATION_CAP
        busy += rate * share / cap.rps
    return min(round(busy / replicas, 4), UTILISATION_CAP)


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


def cross_zone_finding(costs: Mapping[str, float]) -> list[Finding]:
    """What the KV bytes crossing zones cost, per service that allows it."""
    return [Finding(kind="note", constraint=f"handoff[{s}]",
                    message=f"{s}: KV caches handed across zones cost ${usd:.2f}/h (not in the devices' $/h)",
                    value=usd) for s, usd in sorted(costs.items()) if usd > 0.005]


def group_notes(perf: PerfModel, catalog: Catalog, cal: Calibration, c: Candidate, buckets: Sequence[LengthBucket],
                rates: Sequence[float], load: Sequence[BucketLoad],
                replicas: int) -> tuple[ModelErrorBand | None, float | None]:
    """A group's error band and its utilisation at the band's p90."""
    band = group_error_band(cal, c.configuration.device, c.configuration.role)
    return band, utilisation_at_band(perf, catalog, c, band, buckets, rates, load, replicas)


def plan_findings(opts: PlannerOptions, headroom: float, group_util: Mapping[str, float | None],
                  cross_zone: Mapping[str, float]) -> list[Finding]:
    """The plan's own notes: robustness, then cross-zone hand-off costs."""
    return [robustness_finding(opts, group_util, headroom), *cross_zone_finding(cross_zone)]
