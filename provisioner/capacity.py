"""Serving capacity of replica groups and what each service needs: the numbers make-before-break guards.

A replica group serves ``served_rps = rate · Σ_b share_b · phase_share_{g,b}`` of its service in each phase
(prefill, decode); ``share_b`` is the bucket's share of the service's requests as the plan stores it
(``planner.demand``). At utilisation ``u`` one of its ``n`` replicas can carry ``served_rps / (n · u)``. A
service needs its offered rate in every phase its plan serves. The renderer writes both numbers on each
workload (annotations), so the applier can judge ready capacity from the live objects alone.
"""

from __future__ import annotations

from planner.demand import planned_shares
from planner.roles import PHASES, ROLES
from planner.schema import Plan, ReplicaGroup, Role, Service

__all__ = ["PHASES", "role_phases"]


def role_phases(role: Role) -> tuple[str, ...]:
    """The request phases a replica of this role runs."""
    return ROLES[role].phases


def served_rps(group: ReplicaGroup, service: Service, plan: Plan) -> dict[str, float]:
    """Requests/s of ``service`` the group serves per phase (equal split by replicas when loads are absent).

    Raises ``planner.demand.MissingDemand`` for a trace-file service whose plan stores no demand.
    """
    out: dict[str, float] = {}
    groups = plan.replica_groups
    shares = planned_shares(plan, service) if group.load else {}
    rate = service.traffic.rate_rps
    for phase in role_phases(group.configuration.role):
        if group.load:
            weight = 0.0
            for load in group.load:
                bucket_share = shares.get((load.input_tokens, load.output_tokens), 1.0 / len(group.load))
                weight += bucket_share * (load.prefill_share if phase == "prefill" else load.decode_share)
            out[phase] = rate * weight
        else:
            peers = [g for g in groups if g.service == group.service and phase in role_phases(g.configuration.role)]
            total = sum(g.replicas for g in peers)
            out[phase] = rate * group.replicas / total if total else 0.0
    return out


def capacity_per_replica_rps(group: ReplicaGroup, service: Service, plan: Plan) -> dict[str, float]:
    """Requests/s one Ready replica of the group can carry per phase at full utilisation."""
    if group.replicas == 0:
        return {phase: 0.0 for phase in role_phases(group.configuration.role)}
    utilisation = group.utilisation if group.utilisation > 0 else 1.0
    return {p: rps / (group.replicas * utilisation) for p, rps in served_rps(group, service, plan).items()}


def required_rps(service: Service, groups: list[ReplicaGroup]) -> dict[str, float]:
    """Requests/s the service needs per phase its plan serves (its offered rate)."""
    phases = {p for g in groups if g.service == service.id and g.replicas > 0
              for p in role_phases(g.configuration.role)}
    return {p: service.traffic.rate_rps for p in sorted(phases)}
