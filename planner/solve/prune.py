"""Reductions that keep the optimum: columns another column beats on every count, and a service's columns in
pools a same-shaped, no dearer column in a roomy pool beats."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import replace

import numpy as np

from planner.roles import DECODE_ONLY_ROLES, SERVING_ROLES
from planner.schema import Role
from planner.solve.problem import Column, Problem, column_price, plan_cost_usd_per_hour, pool_usage


def _dominates(a: np.ndarray, b: np.ndarray, a_first: bool) -> bool:
    """a's (devices, memory devices, idle, active, −capacity…) is no worse than b's everywhere."""
    if not bool(np.all(a <= b)):
        return False
    return a_first or bool(np.any(a < b))


def _handoff_cost(c: Column) -> float:
    """A column's KV hand-off rate as a cost: a prefill needs decodes at least as fast (higher is worse), a
    decode takes prefills no faster than itself (higher is better); 0 for unified columns."""
    if c.role is Role.PREFILL:
        return c.handoff_gbitps
    return -c.handoff_gbitps if c.role in DECODE_ONLY_ROLES else 0.0


def prune_dominated(problem: Problem) -> tuple[Problem, int]:
    """Drop columns another column of the same service, role and pools beats on every count (hand-off rate
    included); return how many."""
    groups: dict[tuple[str, Role, str, str | None], list[int]] = {}
    for i, c in enumerate(problem.columns):
        groups.setdefault((c.service, c.role, c.pool, c.memory_pool), []).append(i)
    keep = [True] * len(problem.columns)
    for members in groups.values():
        if len(members) < 2:
            continue
        vec = np.asarray(
            [
                [float(problem.columns[i].devices), float(problem.columns[i].memory_devices),
                 problem.columns[i].idle_watts, problem.columns[i].active_watts, _handoff_cost(problem.columns[i]),
                 *(-np.asarray(problem.columns[i].capacity_rps, dtype=float)).tolist()]
                for i in members
            ]
        )
        for jb, b in enumerate(members):
            cb = problem.columns[b]
            # Columns in the running plan stay, so the churn term sees them; a column drawing less busy than
            # idle breaks the power argument behind dominance, so it stays too.
            if problem.current_replicas.get(cb.key, 0) > 0 or cb.active_watts < cb.idle_watts:
                continue
            for ja, a in enumerate(members):
                if a == b or not keep[a]:
                    continue
                if _dominates(vec[ja], vec[jb], a < b):
                    keep[b] = False
                    break
    columns = tuple(c for c, k in zip(problem.columns, keep, strict=True) if k)
    return replace(problem, columns=columns), len(problem.columns) - len(columns)


def _cheapest_alone(problem: Problem, roles: Collection[Role]) -> tuple[float, Column, int] | None:
    """The column of these roles that carries the one demand alone most cheaply, and its replicas."""
    d = problem.demands[0]
    pools = {p.id: p for p in problem.pools}
    lam = np.asarray(d.bucket_rates_rps, dtype=float)
    live = lam > 0
    best: tuple[float, Column, int] | None = None
    for c in problem.columns:
        cap = np.asarray(c.capacity_rps, dtype=float)
        if c.role not in roles or np.any(live & (cap <= 0)):
            continue
        n = max(1, math.ceil(float(np.sum(lam[live] / cap[live])) / problem.headroom + 1e-9))
        if best is None or n * column_price(c, pools) < best[0]:
            best = (n * column_price(c, pools), c, n)
    return best


def alone_plan_cost(problem: Problem) -> float | None:
    """$/hour of a plan of one service that fits its pools: per phase the column that carries the phase alone
    most cheaply (unified alone or prefill plus decode), replicas raised to the minimum. None where that plan
    breaks a row this check does not model (spread, power, churn) or overruns a pool."""
    if (len(problem.demands) != 1 or problem.power_budgets or problem.current_replicas
            or problem.churn_usd_per_replica_change > 0 or problem.demands[0].spread_zones > 1):
        return None
    d = problem.demands[0]
    uni = _cheapest_alone(problem, (Role.UNIFIED,))
    pre, dec = _cheapest_alone(problem, (Role.PREFILL,)), _cheapest_alone(problem, DECODE_ONLY_ROLES)
    options = [[uni]] if uni is not None else []
    zone = {p.id: p.zone for p in problem.pools}
    if pre is not None and dec is not None and dec[1].handoff_gbitps >= pre[1].handoff_gbitps and (
            d.cross_zone_handoff or zone[pre[1].pool] == zone[dec[1].pool]):  # a plan only if they can hand off
        options.append([pre, dec])
    best_cost: float | None = None
    for parts in options:
        replicas = {c.key: n for _, c, n in parts}
        serving = [c.key for _, c, _ in parts if c.role in SERVING_ROLES]
        short = d.min_replicas - sum(replicas[k] for k in serving)
        if short > 0 and serving:
            replicas[serving[0]] += short
        used = pool_usage(problem, replicas)
        if any(p.max_nodes is not None and used[p.id] > p.max_nodes * p.devices_per_node for p in problem.pools):
            continue
        cost = plan_cost_usd_per_hour(problem, replicas)
        if best_cost is None or cost < best_cost:
            best_cost = cost
    return best_cost


def prune_roomy_pools(problem: Problem) -> Problem:
    """Drop a service's columns that a column of the same shape in a roomier, no dearer pool beats.

    For one service (no power budgets, spread, churn; device billing), a column c' is dropped when a column c
    of the same role, devices and memory devices serves every bucket at least as fast, costs no more per
    replica (ties: the earlier column stays) and whose pools can never fill: any plan costing at most U (a
    plan that fits, so U ≥ the optimum) uses at most U/π_p devices of pool p. Moving every replica of c' in
    an optimal plan to c then keeps it feasible and no dearer, so the optimum, and any bound on it, stays.
    """
    if len(problem.demands) != 1 or any(p.billing != "device" or p.usd_per_device_hour < 0 for p in problem.pools):
        return problem
    upper = alone_plan_cost(problem)
    if upper is None:
        return problem
    pools = {p.id: p for p in problem.pools}

    def roomy(pool_id: str | None) -> bool:
        if pool_id is None:
            return True
        p = pools[pool_id]
        if p.max_nodes is None:
            return True
        return p.usd_per_device_hour > 0 and upper / p.usd_per_device_hour <= p.max_nodes * p.devices_per_node

    zone = {p.id: p.zone for p in problem.pools}
    groups: dict[tuple[Role, int, int, tuple[str, float] | None, str | None], list[int]] = {}
    for i, c in enumerate(problem.columns):
        # Moving replicas between pools must keep the hand-off (zone, NIC rate) and the configuration count.
        pairing = (zone[c.pool], c.handoff_gbitps) if c.role is not Role.UNIFIED else None
        label = c.label if problem.demands[0].max_configurations is not None else None
        groups.setdefault((c.role, c.devices, c.memory_devices, pairing, label), []).append(i)
    keep = [True] * len(problem.columns)
    for members in groups.values():
        if len(members) < 2:
            continue
        caps = np.asarray([problem.columns[i].capacity_rps for i in members], dtype=float)
        prices = np.asarray([column_price(problem.columns[i], pools) for i in members])
        winners = [j for j, i in enumerate(members)
                   if roomy(problem.columns[i].pool) and roomy(problem.columns[i].memory_pool)]
        for jb, b in enumerate(members):
            for ja in winners:
                a = members[ja]
                if a == b or not keep[a]:
                    continue
                if prices[ja] > prices[jb] or (prices[ja] == prices[jb] and a > b):
                    continue
                if np.all(caps[ja] >= caps[jb]):
                    keep[b] = False
                    break
    if all(keep):
        return problem
    return replace(problem, columns=tuple(c for c, k in zip(problem.columns, keep, strict=True) if k))
