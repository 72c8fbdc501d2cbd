"""The capacity rule of failure domains: what one replica is worth and what a service's phases need.

A replica group carries ``Σ_b w_b·share_{g,b}`` of its phase's requests (``w_b`` the bucket's share of the
service's requests, read from the plan's stored demand by ``planner.demand``; ``share`` its decode share,
its prefill share for prefill groups). Serving groups (those that decode) make up the decode phase, prefill
groups the prefill phase.
"""

from __future__ import annotations

import math
from collections import defaultdict

from planner.demand import bucket_shares, planned_shares
from planner.roles import PREFILL_ROLES, SERVING_ROLES
from planner.schema import FleetSpec, Plan, PlannerOptions, Role

CAPACITY_SLACK = 1e-3  # rounding of utilisation and shares in a plan: capacity this close to the load covers it
PREFILL_ONLY_ROLES = PREFILL_ROLES - SERVING_ROLES  # replicas that count for the prefill phase

PhaseKey = tuple[str, bool]  # (service, prefill phase)
Bucket = tuple[int, int]  # (input tokens, output tokens)


def phase_of(role: Role) -> bool | None:
    """The phase a role's replicas count for: True prefill, False decode (serving), None neither."""
    if role in PREFILL_ONLY_ROLES:
        return True
    return False if role in SERVING_ROLES else None


def bucket_mix(plan: Plan, fleet: FleetSpec | None) -> dict[str, dict[Bucket, float]]:
    """Each service's request share per length bucket: the plan's stored demand, else the fleet's buckets.

    Services the plan stores no demand for and the fleet does not name are left out (their buckets then
    weigh alike); a trace-file service without stored demand raises ``planner.demand.MissingDemand``.
    """
    out = {d.service: bucket_shares(d.buckets) for d in plan.demand}
    for svc in fleet.services if fleet is not None else ():
        if svc.id not in out:
            out[svc.id] = planned_shares(plan, svc)
    return out


def phase_loads(plan: Plan, fleet: FleetSpec | None) -> dict[PhaseKey, dict[int, dict[Bucket, float]]]:
    """Per (service, prefill phase): group index → (input, output) bucket → share of the service's requests
    it carries in that phase (buckets weigh alike when the service's mix is unknown)."""
    shares = bucket_mix(plan, fleet)
    out: dict[PhaseKey, dict[int, dict[Bucket, float]]] = defaultdict(dict)
    for i, g in enumerate(plan.replica_groups):
        prefill = phase_of(g.configuration.role)
        if prefill is None:
            continue
        w = shares.get(g.service)
        by_bucket: dict[Bucket, float] = defaultdict(float)
        for b in g.load:
            key = (b.input_tokens, b.output_tokens)
            by_bucket[key] += (w.get(key, 0.0) if w is not None else 1.0) * (b.prefill_share if prefill
                                                                              else b.decode_share)
        out[(g.service, prefill)][i] = dict(by_bucket)
    return out


def phase_capacity(plan: Plan, fleet: FleetSpec | None = None) -> dict[PhaseKey, dict[int, float]]:
    """Per (service, prefill phase): group index → one replica's capacity as a share of the phase's load.

    A group carries ``Σ_b w_b·share_{g,b}`` of its phase's requests at ``utilisation`` of its ``replicas``'
    capacity, so one replica at the planner's headroom carries ``headroom·carried/(replicas·utilisation)``: a
    common unit across device types (one H100 TP8 replica may be worth many L4 replicas). The phase keeps its
    SLO after a loss while its surviving replicas sum to ≥ 1. Approximation: each replica is valued at its
    group's own bucket mix, while after a loss the planner could move buckets between groups (which may do
    better or worse). Replicas of a group with no utilisation count for nothing. A phase whose groups record
    no load (a hand-made plan) is judged by counting, as before capacities: each replica is worth ``1/need``,
    ``need = ⌈Σ replicas·utilisation⌉`` (at least one).
    """
    headroom = (fleet.planner if fleet is not None else PlannerOptions()).headroom
    out: dict[PhaseKey, dict[int, float]] = {}
    for key, by_group in phase_loads(plan, fleet).items():
        carried = {i: sum(by_bucket.values()) for i, by_bucket in by_group.items()}
        load = sum(carried.values())
        busy = {i: plan.replica_groups[i].replicas * plan.replica_groups[i].utilisation for i in by_group}
        if load <= 0:
            out[key] = dict.fromkeys(by_group, 1 / max(1, math.ceil(sum(busy.values()) - 1e-9)))
            continue
        out[key] = {i: headroom * c / load / busy[i] if busy[i] > 0 else 0.0 for i, c in carried.items()}
    return out


def phase_needs(plan: Plan, fleet: FleetSpec | None = None) -> dict[PhaseKey, list[tuple[float, frozenset[int]]]]:
    """Per (service, prefill phase): what its surviving replicas must hold after a loss, each as (share of the
    phase's load, groups whose ``phase_capacity`` counts): the whole load on all its groups first, then each
    length bucket's share on the groups planned to serve it (a group planned for short prompts need not meet
    a long prompt's TTFT, so a bucket moves only among its own groups; checking buckets one at a time is the
    approximation)."""
    out: dict[PhaseKey, list[tuple[float, frozenset[int]]]] = {}
    for key, by_group in phase_loads(plan, fleet).items():
        everyone = frozenset(by_group)
        out[key] = [(1.0, everyone)]
        load = sum(sum(by_bucket.values()) for by_bucket in by_group.values())
        if load <= 0:
            continue
        for bucket in sorted({b for by_bucket in by_group.values() for b in by_bucket}):
            serving = frozenset(i for i, by_bucket in by_group.items() if by_bucket.get(bucket, 0.0) > 0)
            share = sum(by_bucket.get(bucket, 0.0) for by_bucket in by_group.values()) / load
            if share > 0 and serving != everyone:
                out[key].append((share, serving))
    return out
