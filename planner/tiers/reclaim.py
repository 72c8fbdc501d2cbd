"""A plan as it runs right after spot pools are reclaimed, before any re-plan: their replicas are gone and each
service's load is routed over the replicas left, as the recourse the spot rows bought capacity for
(``planner.solve.reroute``). The replay of that plan says whether the spare capacity kept the SLO.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Sequence

from planner.model.configurations import column_key
from planner.pipeline import PlanInputs
from planner.schema import BucketLoad, Finding, FleetSpec, Plan, ReplicaGroup, Role
from planner.solve.reroute import Rerouted, reroute


def group_key(g: ReplicaGroup) -> str:
    """The MILP column a replica group came from."""
    return column_key(g.service, g.pool, g.configuration, g.memory_pool)


def spot_pools_used(plan: Plan, fleet: FleetSpec) -> list[str]:
    """The spot pools the plan's replicas sit in (compute or memory devices)."""
    spot = {p.id for p in fleet.pools if p.is_spot}
    return sorted({p for g in plan.replica_groups for p in (g.pool, g.memory_pool) if p in spot})


def _loads(g: ReplicaGroup, key: str, routed: Rerouted, buckets: Sequence[tuple[int, int]]) -> list[BucketLoad]:
    out = []
    for b, (i, o) in enumerate(buckets):
        pre = routed.prefill_share.get((key, b), 0.0)
        dec = routed.decode_share.get((key, b), 0.0)
        if pre > 1e-9 or dec > 1e-9:
            out.append(BucketLoad(input_tokens=i, output_tokens=o, prefill_share=round(min(pre, 1.0), 6),
                                  decode_share=round(min(dec, 1.0), 6)))
    return out


def after_reclaim(plan: Plan, inputs: PlanInputs, lost: Collection[str]) -> tuple[Plan, dict[str, float]]:
    """The plan without the replicas in ``lost`` pools, each affected service's load re-routed over the rest,
    and per affected service the peak load left (≤ 1: within the planner's headroom; inf: a bucket lost)."""
    lost = set(lost)
    problem = inputs.problem
    replicas: dict[str, int] = defaultdict(int)
    for g in plan.replica_groups:
        replicas[group_key(g)] += g.replicas
    hit = {g.service for g in plan.replica_groups if g.pool in lost or (g.memory_pool or "") in lost}
    routed = {s: reroute(problem, s, replicas, lost) for s in sorted(hit)}
    rates = {d.service: d.bucket_rates_rps for d in problem.demands}
    caps = {c.key: c.capacity_rps for c in problem.columns}
    groups: list[ReplicaGroup] = []
    for g in plan.replica_groups:
        if g.pool in lost or (g.memory_pool or "") in lost:
            continue
        r = routed.get(g.service)
        if r is None:
            groups.append(g)
            continue
        key = group_key(g)
        buckets = [(b.input_tokens, b.output_tokens) for b in inputs.buckets[g.service]]
        load = _loads(g, key, r, buckets)
        prefill = g.configuration.role is Role.PREFILL
        shares = r.prefill_share if prefill else r.decode_share
        busy = sum(rates[g.service][b] * x / caps[key][b] for (k, b), x in shares.items()
                   if k == key and caps[key][b] > 0)
        util = min(1.0, busy / (replicas[key] or 1))
        groups.append(g.model_copy(update={"load": load, "utilisation": round(util, 4), "nodes": []}))
    peaks = {s: r.peak for s, r in routed.items()}
    words = ", ".join(f"{s} at {p:.0%} of its allowed load" if p != float("inf") else f"{s} loses a bucket"
                      for s, p in peaks.items())
    note = Finding(kind="note", constraint="reclaim", value=max(peaks.values(), default=0.0),
                   message=f"spot pool(s) {', '.join(sorted(lost))} reclaimed: " + (words or "no replica there"))
    return plan.model_copy(update={"replica_groups": groups, "findings": [*plan.findings, note]}), peaks
