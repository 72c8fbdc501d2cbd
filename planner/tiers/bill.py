"""A tiered plan's bill: marginal and sunk $/h, devices per tier, each service's spot risk, and findings.

``Plan.cost_usd_per_hour`` stays the marginal $/h the MILP minimised; ``PlanBilling`` adds what is paid whatever
the plan does (every reserved node, the commitment) and the risk spot reclaims leave (``planner.tiers.risk``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from planner.catalog import Catalog
from planner.schema import Finding, FleetSpec, Plan, PlanBilling
from planner.solve import Problem, pool_usage
from planner.solve.problem import billed_devices
from planner.solve.tiers import credit_split
from planner.tiers.prices import tier_prices
from planner.tiers.risk import residual


def spot_risks(problem: Problem, replicas: Mapping[str, int]) -> dict[str, float]:
    """Per service on spot: the probability that reclaims in one recovery window leave it short (its uncovered
    losses)."""
    t = problem.tiers
    if t is None:
        return {}
    used: dict[str, set[str]] = defaultdict(set)
    for c in problem.columns:
        if replicas.get(c.key, 0) > 0:
            used[c.service].update(p for p in (c.pool, c.memory_pool) if p is not None and p in t.spot_pools)
    covered: dict[str, list[tuple[str, ...]]] = defaultdict(list)
    for loss in t.losses:
        covered[loss.service].append(loss.pools)
    return {s: residual(t.spot_pools, pools, covered[s]) for s, pools in sorted(used.items()) if pools}


def reserved_usd_per_hour(fleet: FleetSpec, catalog: Catalog) -> float:
    """What every reserved node of the fleet costs per hour, used or not (sunk)."""
    out = 0.0
    for pool in fleet.pools:
        if pool.tiers is not None and pool.tiers.reserved_nodes:
            rate = tier_prices(pool, catalog, False).reserved_rate or 0.0
            out += rate * pool.tiers.reserved_nodes * pool.devices_per_node
    return out


def billing(problem: Problem, replicas: Mapping[str, int], fleet: FleetSpec, catalog: Catalog,
            marginal_usd_per_hour: float) -> PlanBilling:
    """The bill of a replica assignment on a tiered problem (see module)."""
    t = problem.tiers
    assert t is not None
    prices = {p.id: p.usd_per_device_hour for p in problem.pools}
    billed = billed_devices(problem, pool_usage(problem, replicas))
    split = credit_split(t, prices, billed)
    sunk = reserved_usd_per_hour(fleet, catalog)
    reserved = sum(split.reserved.values())
    committed = sum(split.committed.values())
    on_spot = float(sum(n for p, n in billed.items() if p in t.spot_pools))
    on_demand = float(sum(billed.values())) - reserved - committed - on_spot
    total = marginal_usd_per_hour + sunk + t.commitment_usd_per_hour
    return PlanBilling(
        marginal_usd_per_hour=round(marginal_usd_per_hour, 4), reserved_usd_per_hour=round(sunk, 4),
        commitment_usd_per_hour=t.commitment_usd_per_hour,
        commitment_used_usd_per_hour=round(split.commitment_used_usd_per_hour, 4), total_usd_per_hour=round(total, 4),
        devices_by_tier={k: round(v, 3) for k, v in (("reserved", reserved), ("committed", committed),
                                                      ("on_demand", on_demand), ("spot", on_spot)) if v > 1e-9},
        spot_risk=spot_risks(problem, replicas))


def billing_findings(bill: PlanBilling, fleet: FleetSpec) -> list[Finding]:
    """Notes in words: the bill by tier, and each spot service's risk against its target."""
    parts = [f"marginal ${bill.marginal_usd_per_hour:.2f}/h"]
    if bill.reserved_usd_per_hour:
        parts.append(f"reserved nodes ${bill.reserved_usd_per_hour:.2f}/h (sunk)")
    if bill.commitment_usd_per_hour:
        parts.append(f"commitment ${bill.commitment_usd_per_hour:.2f}/h (${bill.commitment_used_usd_per_hour:.2f}/h "
                     "of it used)")
    devices = ", ".join(f"{k} {v:g}" for k, v in bill.devices_by_tier.items())
    out = [Finding(kind="note", constraint="tiers", value=bill.total_usd_per_hour,
                   message=f"bill ${bill.total_usd_per_hour:.2f}/h: " + " + ".join(parts)
                   + (f"; devices by tier: {devices}" if devices else ""))]
    targets = {s.id: s.spot_risk for s in fleet.services}
    for service, risk in bill.spot_risk.items():
        out.append(Finding(kind="note", constraint=f"spot_risk[{service}]", value=risk,
                           message=f"service {service}: survives losing any one of its spot pools; reclaims leave "
                                   f"it short with probability {risk:.2g} per recovery window (target "
                                   f"{targets.get(service, 0.0):.2g})"))
    return out


def with_billing(plan: Plan, problem: Problem, replicas: Mapping[str, int], fleet: FleetSpec,
                 catalog: Catalog) -> Plan:
    """The plan with its bill and the tier findings (unchanged for a problem without tiers)."""
    if problem.tiers is None:
        return plan
    bill = billing(problem, replicas, fleet, catalog, plan.cost_usd_per_hour)
    return plan.model_copy(update={"billing": bill, "findings": [*plan.findings, *billing_findings(bill, fleet)]})
