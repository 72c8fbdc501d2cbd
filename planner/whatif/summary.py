"""Summarising a planned scenario: its row of cost, devices, configurations, roles, power and the diff.

Pure functions of plans and fleets (a replay report, when given, adds attainment).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from planner.schema import FleetSpec, Plan
from planner.whatif.results import ReplicaChange, ScenarioResult, ServiceAttainment


def _config_key(service: str, pool: str, memory_pool: str | None, label: str) -> tuple[str, str, str]:
    return service, pool + (f"+{memory_pool}" if memory_pool else ""), label


def replica_counts(plan: Plan) -> dict[tuple[str, str, str], int]:
    """Replicas per (service, pool, configuration label)."""
    out: dict[tuple[str, str, str], int] = defaultdict(int)
    for g in plan.replica_groups:
        out[_config_key(g.service, g.pool, g.memory_pool, g.configuration.label())] += g.replicas
    return dict(out)


def replica_diff(before: Plan | None, after: Plan | None) -> list[ReplicaChange]:
    """Configurations whose replica count differs between two plans (a missing plan counts as none)."""
    a = replica_counts(before) if before is not None else {}
    b = replica_counts(after) if after is not None else {}
    return [ReplicaChange(service=k[0], pool=k[1], configuration=k[2], before=a.get(k, 0), after=b.get(k, 0))
            for k in sorted(set(a) | set(b)) if a.get(k, 0) != b.get(k, 0)]


def summarise(name: str, exprs: Sequence[str], fleet: FleetSpec, plan: Plan, baseline: Plan | None,
              replay: Any = None) -> ScenarioResult:
    """A feasible scenario's row: cost, devices, configurations, roles, power, attainment, diff."""
    replicas: dict[str, int] = defaultdict(int)
    configs: dict[str, list[str]] = defaultdict(list)
    roles: dict[str, int] = defaultdict(int)
    for g in plan.replica_groups:
        replicas[g.service] += g.replicas
        configs[g.service].append(f"{g.replicas}× {g.configuration.label()} @{g.pool}"
                                  + (f"+{g.memory_pool}" if g.memory_pool else ""))
        roles[g.configuration.role.value] += g.replicas
    overhead = {p.id: p.node_overhead_watts for p in fleet.pools}
    watts = sum(g.expected_watts for g in plan.replica_groups) + sum(
        n * overhead.get(pool, 0.0) for pool, n in plan.nodes_by_pool.items())
    attainment = []
    verified = None
    if replay is not None:
        attainment = [ServiceAttainment(service=s.service, attainment=round(s.attainment, 4), meets_slo=s.meets_slo)
                      for s in replay.services]
        verified = bool(replay.verified)
    base_cost = bill_usd_per_hour(baseline) if baseline is not None else None
    cost = bill_usd_per_hour(plan)
    risk = max(plan.billing.spot_risk.values(), default=0.0) if plan.billing is not None else None
    return ScenarioResult(
        name=name, expressions=list(exprs), feasible=True, plan_id=plan.id,
        cost_usd_per_hour=cost, marginal_usd_per_hour=plan.cost_usd_per_hour if plan.billing else None,
        spot_risk=risk if plan.billing is not None and any(p.is_spot for p in fleet.pools) else None,
        cost_delta_usd_per_hour=round(cost - base_cost, 4) if base_cost is not None else None,
        usd_per_million_tokens=plan.usd_per_million_tokens, devices_by_type=dict(plan.devices_by_type),
        replicas_by_service=dict(sorted(replicas.items())), configurations=dict(sorted(configs.items())),
        replicas_by_role=dict(sorted(roles.items())), expected_watts=round(watts, 1),
        watts_by_power_domain=dict(plan.watts_by_power_domain),
        binding=_binding(plan),
        verified=verified, attainment=attainment,
        replica_changes=replica_diff(baseline, plan) if baseline is not None else [])


def bill_usd_per_hour(plan: Plan) -> float:
    """What the plan's hour costs: its $/h, plus reserved nodes and the commitment when the fleet has tiers."""
    return plan.billing.total_usd_per_hour if plan.billing is not None else plan.cost_usd_per_hour


def _binding(plan: Plan) -> list[str]:
    """Binding constraints, once each (the plan and its marginal values may both name a pool)."""
    seen: set[str] = set()
    out = []
    for f in plan.findings:
        key = re.sub(r"\[(.*)\]$", r":\1", f.constraint)
        if f.kind == "binding" and key not in seen:
            seen.add(key)
            out.append(f.message)
    return out


def infeasible(name: str, exprs: Sequence[str], reason: str, baseline: Plan | None) -> ScenarioResult:
    """An infeasible scenario's row: the reason, and every baseline replica as removed."""
    return ScenarioResult(name=name, expressions=list(exprs), feasible=False, reason=reason,
                          replica_changes=replica_diff(baseline, None) if baseline is not None else [])

