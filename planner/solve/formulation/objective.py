"""Objective family: each column's replicas variable n[c], priced at its devices' $/h (device billing), plus
the churn price χ of a replica that is not running yet (see churn); node-billed pools are priced on N[p] (pool).

    min Σ_{p device-billed} π_p (Σ_{c: p_c=p} d_c n[c] + Σ_{c: q_c=p} m_c n[c]) + Σ_{p node-billed} π_p D_p N[p]
        + χ (Σ_{c: current_c=0} n[c] + Σ_{c: current_c>0} δ[c] + Σ_{current keys without a column} current)
"""

from __future__ import annotations

import math

from planner.solve.formulation import churn
from planner.solve.formulation.base import INF, Built, Family
from planner.solve.problem import Column, Problem, Solution, plan_cost_usd_per_hour


def replica_price(f: Built, c: Column) -> float:
    """n[c]'s objective coefficient: device-billed devices and memory devices, and churn for a new column."""
    pool = f.pools[c.pool]
    price = pool.usd_per_device_hour * c.devices if pool.billing == "device" else 0.0
    if c.memory_pool is not None and c.memory_devices:
        mpool = f.pools[c.memory_pool]
        if mpool.billing == "device":
            price += mpool.usd_per_device_hour * c.memory_devices
    return price + churn.entry_price(f.problem, c)


def add_replicas(f: Built, c: Column) -> int:
    """n[c] ∈ Z≥0 at its price, at most what the pool's nodes hold (outside elastic mode)."""
    pool = f.pools[c.pool]
    ub = INF
    if pool.max_nodes is not None and not f.elastic:
        ub = math.floor(pool.max_nodes * pool.devices_per_node / c.devices)
    nv = f.m.var(0.0, ub, replica_price(f, c), True)
    f.n[c.key] = nv
    return nv


def violations(problem: Problem, solution: Solution) -> list[str]:
    """Replica counts are whole and non-negative, and the reported cost is the plan's $/h."""
    out = [f"{k}: {n} replicas" for k, n in solution.replicas.items() if n < 0 or int(n) != n]
    cost = plan_cost_usd_per_hour(problem, solution.replicas)
    if solution.cost_usd_per_hour is None or abs(cost - solution.cost_usd_per_hour) > 1e-6 * max(1.0, cost):
        out.append(f"reported cost {solution.cost_usd_per_hour} != {cost}")
    return out


FAMILY = Family("objective", violations)
