"""Dropping a service's columns that a same-shaped column in a roomy, no dearer pool beats keeps its optimum; so
does dropping columns another column beats on every count; and finding them by sorting finds what every pair
would."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from planner.schema import Role
from planner.solve import Column, Demand, PoolSupply, Problem, SolveOptions, prune_dominated, prune_roomy_pools, solve
from planner.solve.prune import dominated
from planner.solve.strategies.by_service import pruned_part

EXACT = SolveOptions(relative_gap=0.0, time_limit_s=20, decompose="off")
CASES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def twin_pools(draw: st.DrawFn) -> Problem:
    """One service over two device types, each in two zones at prices that differ a little; some pools small."""
    pools = []
    for dev, base in (("big", draw(st.sampled_from([2.0, 3.0]))), ("small", draw(st.sampled_from([0.6, 1.0])))):
        for zone, factor in (("a", 1.0), ("b", draw(st.sampled_from([1.0, 1.1, 0.9])))):
            pools.append(PoolSupply(f"{dev}-{zone}", zone, None, 2, draw(st.sampled_from([None, 1, 2, 8])),
                                    base * factor))
    buckets = draw(st.integers(1, 3))
    rates = tuple(draw(st.sampled_from([0.0, 0.5, 2.0, 6.0, 11.0])) for _ in range(buckets))
    if not any(rates):
        rates = (1.0, *rates[1:])
    cols = []
    for dev, speed in (("big", 6.0), ("small", 1.5)):
        for role in (Role.UNIFIED, Role.PREFILL, Role.DECODE):
            for devices in (1, 2):
                caps = tuple(speed * devices * draw(st.sampled_from([0.0, 0.5, 1.0])) for _ in range(buckets))
                if role is Role.UNIFIED and not any(caps):
                    caps = tuple(speed * devices for _ in range(buckets))
                nic = draw(st.sampled_from([100.0, 200.0])) if role is not Role.UNIFIED else 0.0
                for zone in ("a", "b"):
                    # The twin in the other zone is sometimes a little slower on one bucket, or missing.
                    twin = tuple(c * (draw(st.sampled_from([1.0, 1.0, 0.8])) if zone == "b" else 1.0) for c in caps)
                    if any(twin) and (zone == "a" or draw(st.integers(0, 5)) > 0):
                        cols.append(Column(f"{dev}-{zone}-{role.value}-{devices}", "s", role, f"{dev}-{zone}",
                                           devices, twin, label=f"{dev}-{role.value}-{devices}",
                                           handoff_gbitps=nic))
    demand = Demand("s", rates, min_replicas=draw(st.integers(0, 2)),
                    max_configurations=draw(st.sampled_from([None, 1, 2])))
    return Problem(tuple(pools), tuple(cols), (demand,), headroom=draw(st.sampled_from([0.8, 1.0])))


@CASES
@given(twin_pools())
def test_pruning_roomy_pools_keeps_the_optimum(problem: Problem) -> None:
    pruned = prune_roomy_pools(problem)
    full = solve(problem, EXACT)
    fewer = solve(pruned, EXACT)
    assert len(pruned.columns) <= len(problem.columns)
    assert full.status == fewer.status
    if full.objective is not None:
        assert fewer.objective is not None
        assert abs(full.objective - fewer.objective) <= 1e-6 * max(1.0, full.objective)


def test_pruning_drops_the_dearer_twin_only_where_the_cheap_pool_has_room() -> None:
    cols = tuple(Column(f"c-{z}", "s", Role.UNIFIED, f"p-{z}", 1, (2.0,)) for z in ("a", "b"))
    roomy = (PoolSupply("p-a", "a", None, 2, 4, 1.0), PoolSupply("p-b", "b", None, 2, 4, 1.1))
    problem = Problem(roomy, cols, (Demand("s", (3.0,)),))
    assert [c.key for c in prune_roomy_pools(problem).columns] == ["c-a"]
    # Three replicas' worth of demand but the cheap pool holds two devices: the dear twin must stay.
    tight = (replace(roomy[0], max_nodes=1), roomy[1])
    problem = Problem(tight, cols, (Demand("s", (5.0,)),))
    assert len(prune_roomy_pools(problem).columns) == 2
    assert solve(problem, EXACT).objective == solve(prune_roomy_pools(problem), EXACT).objective


def test_pruning_leaves_spread_and_running_plans_alone() -> None:
    cols = tuple(Column(f"c-{z}", "s", Role.UNIFIED, f"p-{z}", 1, (2.0,)) for z in ("a", "b"))
    pools = (PoolSupply("p-a", "a", None, 2, 4, 1.0), PoolSupply("p-b", "b", None, 2, 4, 1.1))
    spread = Problem(pools, cols, (Demand("s", (3.0,), spread_zones=2),))
    assert len(prune_roomy_pools(spread).columns) == 2
    running = Problem(pools, cols, (Demand("s", (3.0,)),), current_replicas={"c-b": 1},
                      churn_usd_per_replica_change=0.1)
    assert len(prune_roomy_pools(running).columns) == 2


def test_a_start_on_a_dropped_column_brings_back_that_column_alone() -> None:
    # Three zones at $1.0, $1.1 and $1.2 a device, each roomy: pruning keeps zone a's column. A start that runs
    # zone b's (a fleet plan whose tight pools needed it) gets zone b's back beside it, not zone c's, and the
    # service's optimum stays.
    pools = tuple(PoolSupply(f"p-{z}", z, None, 2, 4, price) for z, price in (("a", 1.0), ("b", 1.1), ("c", 1.2)))
    cols = tuple(Column(f"c-{z}", "s", Role.UNIFIED, f"p-{z}", 1, (2.0,)) for z in ("a", "b", "c"))
    problem = Problem(pools, cols, (Demand("s", (3.0,)),))
    assert [c.key for c in prune_roomy_pools(problem).columns] == ["c-a"]
    start = solve(replace(problem, columns=cols[1:2]), EXACT)
    sub, part = pruned_part(start, problem)
    assert [c.key for c in sub.columns] == ["c-a", "c-b"]
    assert part is not None and part.replicas == {"c-b": 2} and part.objective == pytest.approx(2.2)
    assert solve(sub, EXACT).objective == solve(problem, EXACT).objective == 2.0


@CASES
@given(twin_pools(), st.sampled_from(["a", "b"]))
def test_a_service_pruned_around_its_start_keeps_its_optimum(problem: Problem, zone: str) -> None:
    # The start: the service's plan in one zone's pools alone; its pruned problem has every column pruning
    # keeps and every column the start runs, and no more than the whole.
    start = solve(replace(problem, columns=tuple(c for c in problem.columns if c.pool.endswith(zone))), EXACT)
    assume(start.objective is not None)
    sub, part = pruned_part(start, problem)
    keys = {c.key for c in sub.columns}
    assert keys <= {c.key for c in problem.columns}
    assert {c.key for c in prune_roomy_pools(problem).columns} <= keys
    assert {k for k, n in start.replicas.items() if n} <= keys
    assert part is not None and part.objective == pytest.approx(start.objective)
    full, fewer = solve(problem, EXACT), solve(sub, EXACT)
    assert full.objective is not None and fewer.objective is not None
    assert abs(full.objective - fewer.objective) <= 1e-6 * max(1.0, full.objective)


def _split_service(decode_b: tuple[float, ...] = (2.0,), price_b: float = 1.1) -> Problem:
    """One service with a prefill and a decode column in each of two zones (each zone's pool roomy)."""
    pools = (PoolSupply("p-a", "a", None, 2, 8, 1.0), PoolSupply("p-b", "b", None, 2, 8, price_b))
    cols = (Column("pre-a", "s", Role.PREFILL, "p-a", 1, (4.0,), handoff_gbitps=100.0),
            Column("dec-a", "s", Role.DECODE, "p-a", 1, (2.0,), handoff_gbitps=100.0),
            Column("pre-b", "s", Role.PREFILL, "p-b", 1, (4.0,), handoff_gbitps=100.0),
            Column("dec-b", "s", Role.DECODE, "p-b", 1, decode_b, handoff_gbitps=100.0))
    return Problem(pools, cols, (Demand("s", (3.0,)),))


def test_pruning_drops_a_zone_whose_prefill_and_decode_another_zone_beats() -> None:
    # Column by column neither zone-b column can go (its hand-off partner is in zone b); as a zone it can.
    problem = _split_service()
    assert [c.key for c in prune_roomy_pools(problem).columns] == ["pre-a", "dec-a"]
    assert solve(problem, EXACT).objective == solve(prune_roomy_pools(problem), EXACT).objective == 3.0
    # Equal zones: the first one listed stays.
    assert [c.key for c in prune_roomy_pools(_split_service(price_b=1.0)).columns] == ["pre-a", "dec-a"]
    # Zone b's decode is faster than zone a's: zone a cannot take its place, so both zones stay.
    faster = _split_service(decode_b=(3.0,))
    assert len(prune_roomy_pools(faster).columns) == 4
    assert solve(faster, EXACT).objective == solve(prune_roomy_pools(faster), EXACT).objective
    # Hand-offs may cross zones: not this reduction's case.
    crossing = replace(problem, demands=(replace(problem.demands[0], cross_zone_handoff=True),))
    assert len(prune_roomy_pools(crossing).columns) == 4


def _pairwise(groups: list[int], worse: list[list[float]], can_win: list[bool]) -> list[bool]:
    """Which rows another row of their group beats, comparing every pair (the definition)."""
    out = []
    for b, wb in enumerate(worse):
        beaten = False
        for a, wa in enumerate(worse):
            if a == b or groups[a] != groups[b] or not can_win[a]:
                continue
            if all(x <= y for x, y in zip(wa, wb, strict=True)) and (a < b or any(
                    x < y for x, y in zip(wa, wb, strict=True))):
                beaten = True
                break
        out.append(beaten)
    return out


@CASES
@given(st.lists(st.tuples(st.integers(0, 2), st.lists(st.sampled_from([0.0, 1.0, 2.0]), min_size=3, max_size=3),
                          st.booleans()), min_size=0, max_size=12))
def test_dominance_by_sorting_finds_what_every_pair_finds(rows: list[tuple[int, list[float], bool]]) -> None:
    groups = [g for g, _, _ in rows]
    worse = [w for _, w, _ in rows]
    can_win = [c for _, _, c in rows]
    found = dominated(np.asarray(groups, dtype=np.int64), np.asarray([sum(w) for w in worse], dtype=float),
                      np.asarray(worse, dtype=float).reshape(len(rows), 3), np.asarray(can_win, dtype=bool))
    assert found.tolist() == _pairwise(groups, worse, can_win)


@CASES
@given(twin_pools())
def test_dropping_dominated_columns_keeps_the_optimum(problem: Problem) -> None:
    pruned, count = prune_dominated(problem)
    assert len(pruned.columns) == len(problem.columns) - count
    full, fewer = solve(problem, EXACT), solve(pruned, EXACT)
    assert full.status == fewer.status
    if full.objective is not None:
        assert fewer.objective is not None and abs(full.objective - fewer.objective) <= 1e-6 * max(1.0, full.objective)
