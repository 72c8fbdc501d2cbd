"""Reductions that keep the optimum: columns another column beats on every count, a service's columns in
pools a same-shaped, no dearer column in a roomy pool beats, and a service's prefill and decode columns in a
zone whose every such column another zone's roomy pools beat.

All three are found by sorting, not by comparing every pair: within a group, columns are ordered by a key
that a dominating column never exceeds (the sum of its normalised counts, or its price), so each column need
only be checked against the columns before it in its group, one offset at a time over all groups at once (and
one count at a time, on the pairs the counts so far leave).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from planner.roles import DECODE_ONLY_ROLES, SERVING_ROLES
from planner.schema import Role
from planner.solve.problem import Problem, plan_cost_usd_per_hour, pool_usage
from planner.solve.table import DECODE, PREFILL, UNIFIED, with_columns


def dominated(groups: np.ndarray, key: np.ndarray, worse: np.ndarray, can_win: np.ndarray | None = None,
              exempt: np.ndarray | None = None) -> np.ndarray:
    """Which rows another row of their group beats: a beats b when every entry of ``worse`` (lower is better)
    is at most b's and either one is lower or a comes first; only ``can_win`` rows beat, ``exempt`` rows stay.

    ``key`` must not be larger for a row that beats another (a positive weighting of ``worse`` is such a key).
    """
    n = len(groups)
    out = np.zeros(n, dtype=bool)
    if n < 2:
        return out
    order = np.lexsort((np.arange(n), key, groups))
    g = groups[order]
    columns = worse[order].T  # one (strided) array per entry of ``worse``
    win = np.ones(n, dtype=bool) if can_win is None else can_win[order]
    starts = np.r_[0, np.nonzero(g[1:] != g[:-1])[0] + 1]
    sizes = np.diff(np.r_[starts, n])
    place = np.arange(n) - np.repeat(starts, sizes)  # each row's place in its group
    beaten = np.zeros(n, dtype=bool)
    for k in range(1, int(sizes.max())):
        b = np.nonzero(place >= k)[0]  # the rows k places after one of their group
        a = b - k
        same = win[a] & ~beaten[b]
        if not same.any():
            continue
        b, a = b[same], a[same]
        for entry in columns:  # entry by entry, on the pairs every entry so far keeps
            le = entry[a] <= entry[b]
            b, a = b[le], a[le]
        # Equal rows: the one first in the problem's order wins (the sort put it first among equal keys).
        beaten[b] = True
    out[order] = beaten
    if exempt is not None:
        out &= ~exempt
    return out


# Enum members hash in Python; these tables go by the member's identity. Roles 0–3 for the dominance groups;
# the sign of a role's hand-off rate as a cost: a prefill needs decodes at least as fast (higher is worse), a
# decode takes prefills no faster than itself (higher is better); unified columns hand nothing off.
_GROUP_ROLES = (Role.UNIFIED, Role.PREFILL, Role.DECODE, Role.DECODE_OFFLOAD)
_ROLE_GROUP = {id(r): i for i, r in enumerate(_GROUP_ROLES)}
_HANDOFF_SIGN = np.array([1 if r is Role.PREFILL else -1 if r in DECODE_ONLY_ROLES else 0 for r in _GROUP_ROLES])


def _handoff_costs(sign: np.ndarray, gbitps: np.ndarray) -> np.ndarray:
    """Columns' KV hand-off rates as a cost (``_HANDOFF_SIGN``; 0 for unified columns)."""
    return np.where(sign > 0, gbitps, np.where(sign < 0, -gbitps, 0.0))


def prune_dominated(problem: Problem) -> tuple[Problem, int]:
    """Drop columns another column of the same service, role and pools beats on every count (hand-off rate
    included); return how many."""
    t = problem.table
    cols = t.columns
    if len(cols) < 2:
        return problem, 0
    roles = np.array([_ROLE_GROUP[id(c.role)] for c in cols], dtype=np.int64)
    groups = ((t.service * 4 + roles) * (len(problem.pools) + 1) + t.pool) * (len(problem.pools) + 1) + (
        t.memory_pool + 1)
    handoff = _handoff_costs(_HANDOFF_SIGN[roles], t.handoff)
    worse = np.column_stack([t.devices, t.memory_devices, t.idle_watts, t.active_watts, handoff, -t.caps])
    scale = np.maximum(np.abs(worse).max(axis=0), 1e-12)
    # Columns in the running plan stay, so the churn term sees them; a column drawing less busy than idle breaks
    # the power argument behind dominance, so it stays too.
    current = problem.current_replicas
    exempt = (np.array([current.get(c.key, 0) > 0 for c in cols], dtype=bool) if current
              else np.zeros(len(cols), dtype=bool))
    exempt |= t.active_watts < t.idle_watts
    drop = dominated(groups, (worse / scale).sum(axis=1), worse, exempt=exempt)
    if not drop.any():
        return problem, 0
    if len(cols) == len(problem.columns):
        return with_columns(problem, np.nonzero(~drop)[0]), int(drop.sum())
    dropped = {cols[j].key for j in np.nonzero(drop)[0]}
    columns = tuple(c for c in problem.columns if c.key not in dropped)
    return replace(problem, columns=columns), len(problem.columns) - len(columns)


def _cheapest_alone(problem: Problem, roles: tuple[int, ...]) -> tuple[float, int, int] | None:
    """The column (table index) of these role codes that carries the one demand alone most cheaply, its cost
    and its replicas."""
    t = problem.table
    live = t.rates[0] > 0
    caps = t.caps[:, live]
    mask = np.isin(t.role, roles) & np.all(caps > 0, axis=1)
    if not mask.any():
        return None
    busy = (t.rates[0, live] / np.where(caps > 0, caps, 1.0)).sum(axis=1)
    n = np.maximum(1, np.ceil(busy / problem.headroom + 1e-9))
    cost = np.where(mask, n * t.price, np.inf)
    j = int(np.argmin(cost))
    return float(cost[j]), j, int(n[j])


def alone_plan_cost(problem: Problem) -> float | None:
    """$/hour of a plan of one service that fits its pools: per phase the column that carries the phase alone
    most cheaply (unified alone or prefill plus decode), replicas raised to the minimum. None where that plan
    breaks a row this check does not model (spread, power, churn) or overruns a pool."""
    if (len(problem.demands) != 1 or problem.power_budgets or problem.current_replicas
            or problem.churn_usd_per_replica_change > 0 or problem.demands[0].spread_zones > 1):
        return None
    t = problem.table
    d = problem.demands[0]
    uni = _cheapest_alone(problem, (UNIFIED,))
    pre, dec = _cheapest_alone(problem, (PREFILL,)), _cheapest_alone(problem, (DECODE,))
    options = [[uni]] if uni is not None else []
    zone = {p.id: p.zone for p in problem.pools}
    pc, dc = (t.columns[pre[1]], t.columns[dec[1]]) if pre is not None and dec is not None else (None, None)
    if pre is not None and dec is not None and pc is not None and dc is not None and (
            dc.handoff_gbitps >= pc.handoff_gbitps
            and (d.cross_zone_handoff or zone[pc.pool] == zone[dc.pool])):  # a plan only if they can hand off
        options.append([pre, dec])
    best_cost: float | None = None
    for parts in options:
        replicas = {t.columns[j].key: n for _, j, n in parts}
        serving = [t.columns[j].key for _, j, _ in parts if t.columns[j].role in SERVING_ROLES]
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
    """Drop a service's columns that a column of the same shape in a roomier, no dearer pool beats, and the
    prefill and decode columns of a zone another zone beats as a whole (``_dominated_zones``).

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
    t = problem.table
    if len(t.columns) < 2:
        return problem
    room = np.asarray([p.max_nodes is None or (p.usd_per_device_hour > 0 and upper / p.usd_per_device_hour
                                               <= p.max_nodes * p.devices_per_node) for p in problem.pools]
                      + [True])  # the last entry: no memory pool
    roomy = room[t.pool] & room[t.memory_pool]
    zone = {p.id: p.zone for p in problem.pools}
    by_label = problem.demands[0].max_configurations is not None
    ids: dict[tuple[object, ...], int] = {}
    # Moving replicas between pools must keep the hand-off (zone, NIC rate) and the configuration count.
    groups = np.fromiter(
        (ids.setdefault((c.role, c.devices, c.memory_devices,
                         (zone[c.pool], c.handoff_gbitps) if c.role is not Role.UNIFIED else None,
                         c.label if by_label else None), len(ids)) for c in t.columns),
        dtype=np.int64, count=len(t.columns))
    worse = np.column_stack([t.price, -t.caps])
    drop = dominated(groups, t.price, worse, can_win=roomy)
    if not problem.demands[0].cross_zone_handoff:
        drop |= _dominated_zones(problem, roomy, drop, worse, by_label)
    if not drop.any():
        return problem
    if len(t.columns) == len(problem.columns):
        return with_columns(problem, np.nonzero(~drop)[0])
    dropped = {t.columns[j].key for j in np.nonzero(drop)[0]}
    return replace(problem, columns=tuple(c for c in problem.columns if c.key not in dropped))


def _dominated_zones(problem: Problem, roomy: np.ndarray, drop: np.ndarray, worse: np.ndarray,
                     by_label: bool) -> np.ndarray:
    """The prefill and decode columns of each zone another zone beats as a whole (one service, hand-offs
    within a zone, none of prune_roomy_pools' exclusions; ``worse`` its price and caps per column).

    Zone g' is beaten by zone g when each of g''s prefill and decode columns has a twin in g of the same role,
    devices, memory devices, hand-off rate and (under a configuration limit) label, in roomy pools, no dearer
    per replica and at least as fast on every bucket. Moving every replica and share of g''s columns to their
    twins in g then keeps every row: the hand-off rows of g gain the same shares on both sides (and at each
    NIC rate), capacity and link rows hold on the faster twin, the pools never fill, and the plan costs no
    more; so the optimum stays. Pruning column by column cannot drop them, since a prefill replica moved
    alone would leave its decodes in the other zone. Of two equal zones the one listed first stays.
    """
    t = problem.table
    split = (t.role != UNIFIED) & ~drop
    out = np.zeros(len(t.columns), dtype=bool)
    if not split.any():
        return out
    zone_of = np.asarray([p.zone for p in problem.pools])[t.pool]
    zones = list(dict.fromkeys(zone_of[split].tolist()))
    if len(zones) < 2:
        return out
    ids: dict[tuple[object, ...], int] = {}
    shape = np.fromiter((ids.setdefault((c.role, c.devices, c.memory_devices, c.handoff_gbitps,
                                         c.label if by_label else None), len(ids)) for c in t.columns),
                        dtype=np.int64, count=len(t.columns))
    for loser in reversed(zones):
        lose = np.nonzero(split & (zone_of == loser))[0]
        for winner in zones:
            if winner == loser:
                continue
            win = np.nonzero(split & (zone_of == winner) & roomy)[0]
            rows = np.r_[win, lose]  # the winner's columns first: of equal twins they win
            beaten = dominated(shape[rows], t.price[rows], worse[rows],
                               can_win=np.r_[np.ones(len(win), dtype=bool), np.zeros(len(lose), dtype=bool)])
            if beaten[len(win):].all():
                out[lose] = True
                split[lose] = False
                break
    return out


__all__ = ["DECODE_ONLY_ROLES", "alone_plan_cost", "dominated", "prune_dominated", "prune_roomy_pools"]
