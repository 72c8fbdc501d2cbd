"""Which strategy a fleet gets, time read only through the Deadline (runs on a FakeClock), the one runner for
service problems, and the record of which backend ran each stage."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
from fake_backends import RecordingBackend

from planner.clock import Deadline, FakeClock
from planner.schema import Role
from planner.solve import Column, Demand, PoolSupply, Problem, SolveOptions, choose_strategy, solve, violations
from planner.solve.backends import BackendName, RawResult
from planner.solve.formulation import Arrays, Matrix
from planner.solve.incumbent import greedy_plan
from planner.solve.progress import Progress
from planner.solve.strategies import (
    ByServiceStrategy,
    LagrangeStrategy,
    ServiceRunner,
    WholeStrategy,
)

EXACT = SolveOptions(relative_gap=0.0, time_limit_s=20)


def _services(n: int, columns: int = 1, buckets: int = 1, max_nodes: int | None = None,
              billing: str = "device", rate: float = 1.0) -> Problem:
    """n services, each with ``columns`` unified columns per pool over ``buckets`` buckets, in two pools."""
    pools = tuple(PoolSupply(f"p{z}", f"zone{z}", None, 8, max_nodes, 1.0 + z, billing)  # type: ignore[arg-type]
                  for z in range(2))
    cols = tuple(Column(f"s{s}-p{z}-{j}", f"s{s}", Role.UNIFIED, f"p{z}", 1 + j % 2,
                        tuple(2.0 + 0.01 * j + 0.001 * b for b in range(buckets)))
                 for s in range(n) for z in range(2) for j in range(columns))
    demands = tuple(Demand(f"s{s}", tuple(rate + 0.1 * b for b in range(buckets)), min_replicas=1) for s in range(n))
    return Problem(pools, cols, demands)


def test_small_fleets_are_solved_whole() -> None:
    assert isinstance(choose_strategy(_services(2), SolveOptions()), WholeStrategy)


def test_decompose_on_splits_only_fleets_that_fall_apart_into_services() -> None:
    on = SolveOptions(decompose="on")
    assert isinstance(choose_strategy(_services(2), on), ByServiceStrategy)
    # Node billing couples the services through ceil(Σ devices / D): no split.
    assert isinstance(choose_strategy(_services(2, billing="node"), on), WholeStrategy)
    assert isinstance(choose_strategy(_services(1), on), WholeStrategy)


def test_auto_splits_large_fleets_only_where_the_pools_are_roomy() -> None:
    # 2 services × 2 pools × 30 columns × 50 buckets = 6000 share variables (the split starts at 5000).
    large = _services(2, columns=30, buckets=50)
    assert isinstance(choose_strategy(large, SolveOptions()), ByServiceStrategy)
    tight = _services(2, columns=30, buckets=50, max_nodes=1)
    assert isinstance(choose_strategy(tight, SolveOptions()), WholeStrategy)
    assert isinstance(choose_strategy(large, SolveOptions(decompose="off")), WholeStrategy)


def test_whole_gives_the_backend_what_the_deadline_leaves() -> None:
    clock = FakeClock()
    backend = RecordingBackend(clock, takes_s=3.0)
    sol = WholeStrategy(EXACT, backend).solve(_services(2), Deadline.after(7.0, clock))
    assert sol.status == "optimal" and backend.given_s == [7.0]
    assert sol.solve_seconds == 3.0  # the fake clock's time, not the wall's


def test_an_expired_deadline_hands_the_start_back_at_once() -> None:
    problem = _services(2)
    clock = FakeClock(t=100.0)
    backend = RecordingBackend(clock)
    sol = WholeStrategy(EXACT, backend).solve(problem, Deadline(50.0, clock), greedy_plan(problem))
    assert backend.given_s == [] and sol.objective is None  # nothing runs past the deadline
    answer = solve(problem, EXACT, deadline=Deadline(50.0, clock))
    assert answer.status == "feasible" and answer.best_bound is None and answer.objective is not None
    assert not violations(problem, answer) and answer.backends == {"incumbent": "greedy"}


def test_lagrange_solves_nothing_past_its_deadline() -> None:
    problem = _services(3)
    clock = FakeClock(t=10.0)
    backend = RecordingBackend(clock)
    late = LagrangeStrategy(EXACT, backend).plans(problem, {"p0": 0.5}, Deadline(9.0, clock))
    assert late.bound is None and late.columns == set() and backend.given_s == []
    found = LagrangeStrategy(EXACT, backend).plans(problem, {"p0": 0.5}, Deadline(20.0, clock))
    assert found.bound is not None and found.backends == {"services/milp": "highs"}
    assert len(backend.given_s) == 3


def test_by_service_refines_only_while_time_is_left() -> None:
    """With weak bounds the fleet's gap is wide, so the services are solved again while time is left; when
    each solve takes the whole budget on the fake clock, there is one run per service and no more. (Each service
    needs 1.5 replicas' work, so its own floor, 1.5 replicas' price, is below its optimum of two.)"""
    opts = SolveOptions(relative_gap=0.0, decompose="on", threads=1)
    clock = FakeClock()
    slow = RecordingBackend(clock, takes_s=100.0, weak=True)
    sol = ByServiceStrategy(opts, slow).solve(_services(3, rate=3.0), Deadline.after(10.0, clock))
    assert len(slow.given_s) == 3 and "(3 services, 3 runs)" in sol.message
    assert sol.status == "feasible" and sol.backends == {"services/milp": "highs"}
    fast = RecordingBackend(FakeClock(), weak=True)
    ByServiceStrategy(opts, fast).solve(_services(3, rate=3.0), Deadline.after(10.0, fast.clock))
    assert len(fast.given_s) > 3


def test_the_runner_shares_the_time_left_and_skips_what_cannot_start() -> None:
    clock = FakeClock()
    given: list[float] = []

    def task(i: int, seconds: float) -> int:
        given.append(seconds)
        clock.advance(seconds)
        return i

    runner = ServiceRunner(workers=1, shares=1.0, min_left_s=0.5)
    assert runner.run([0, 1, 2, 3], task, Deadline(10.0, clock)) == [0, 1, 2, 3]
    assert given == pytest.approx([2.5, 2.5, 2.5, 2.5])
    assert runner.run([4], task, Deadline(10.0, clock)) == [None]  # nothing left to start with
    assert ServiceRunner(1, 1.0).run([5], task, Deadline(20.0, clock), stop=lambda: True) == [None]


def test_each_stage_names_the_backend_that_ran_it() -> None:
    problem = _services(2, columns=3, buckets=2)
    assert solve(problem, EXACT).backends == {"milp": "highs"}
    priced = solve(problem, replace(EXACT, backend="cbc", pricing="on", decompose="off"))
    assert priced.backend == "cbc" and priced.status == "optimal"
    # The LPs and the first restricted MILP need HiGHS whatever was asked for.
    assert priced.backends["pricing-lp"] == "highs" and priced.backends["support-milp"] == "highs"
    assert set(priced.backends.values()) <= {"highs", "cbc"}
    split = solve(problem, replace(EXACT, decompose="on", backend="cbc"))
    assert split.backends == {"services/milp": "cbc"}


@dataclass
class SilentBackend:
    """A solver that finds nothing in its time (every call ends at its limit without a plan)."""

    calls: int = 0

    @property
    def name(self) -> BackendName:
        return "highs"

    def solve(self, model: Matrix | Arrays, options: SolveOptions, deadline: Deadline | None = None,
              start: np.ndarray | None = None, stop_at: float | None = None) -> RawResult:
        self.calls += 1
        return RawResult("time_limit_no_solution", None, None, None, "time limit")


def test_by_service_starts_each_service_from_its_own_greedy_plan_where_that_is_cheaper() -> None:
    # Each service: a dear unified column (3 devices) and a prefill + decode pair (1 device each) that can hand
    # off. A start of unified replicas alone (a fleet's quick plan) costs 2 × 3 $/h; each service's own greedy
    # plan, pairs in, 2 × 2 $/h, and it is kept even when no solve finds anything.
    pools = (PoolSupply("p", "a", None, 8, None, 1.0),)
    cols = tuple(c for s in ("s0", "s1") for c in (
        Column(f"{s}-uni", s, Role.UNIFIED, "p", 3, (1.0,)),
        Column(f"{s}-pre", s, Role.PREFILL, "p", 1, (1.0,), handoff_gbitps=100.0),
        Column(f"{s}-dec", s, Role.DECODE, "p", 1, (1.0,), handoff_gbitps=100.0)))
    problem = Problem(pools, cols, tuple(Demand(s, (0.8,)) for s in ("s0", "s1")))
    start = greedy_plan(problem, unified_only=True)
    assert start is not None and start.objective == 6.0
    backend = SilentBackend()
    sol = ByServiceStrategy(SolveOptions(decompose="on", threads=1), backend).solve(
        problem, Deadline.after(5.0), start)
    assert backend.calls > 0 and sol.objective == 4.0 and violations(problem, sol) == []
    assert {k for k, n in sol.replicas.items() if n} == {"s0-pre", "s0-dec", "s1-pre", "s1-dec"}


def test_by_service_solves_without_the_configuration_limit_first_and_keeps_only_plans_within_it() -> None:
    # s0's cheapest plan mixes two configurations (one per bucket, $2/h); with its limit of one it runs the
    # two-device all-rounder. s1's cheapest plan runs one configuration anyway. Each service is solved once
    # without its limit; only s0's plan breaks it, so s0 alone is solved again with the limit.
    pools = (PoolSupply("p", "a", None, 8, None, 1.0),)
    cols = tuple(c for s in ("s0", "s1") for c in (
        Column(f"{s}-a", s, Role.UNIFIED, "p", 1, (2.0, 0.1) if s == "s0" else (2.0, 2.0), label=f"{s}-a"),
        Column(f"{s}-b", s, Role.UNIFIED, "p", 1, (0.1, 2.0) if s == "s0" else (1.0, 1.0), label=f"{s}-b"),
        Column(f"{s}-c", s, Role.UNIFIED, "p", 2, (1.2, 1.2), label=f"{s}-c")))
    problem = Problem(pools, cols, tuple(Demand(s, (1.0, 1.0), max_configurations=1) for s in ("s0", "s1")))
    unlimited = solve(replace(problem, demands=tuple(replace(d, max_configurations=None) for d in problem.demands)),
                      replace(EXACT, decompose="off"))
    whole = solve(problem, replace(EXACT, decompose="off"))
    assert unlimited.objective is not None and whole.objective is not None and unlimited.objective < whole.objective
    clock = FakeClock()
    backend = RecordingBackend(clock)
    sol = ByServiceStrategy(replace(EXACT, decompose="on", threads=1), backend).solve(
        problem, Deadline.after(20.0, clock))
    assert sol.status == "optimal" and sol.objective == pytest.approx(whole.objective)
    assert violations(problem, sol) == [] and len(backend.given_s) == 3


def test_services_are_solved_without_primal_heuristics_and_a_repair_with_them() -> None:
    # Each service alone wants five one-device replicas in the cheap pool, which holds eight devices: the
    # services' plans (each started from its own greedy plan, so only the bound is left to prove) run without
    # HiGHS's primal heuristics; the repair, which must find a plan in shrunk pools, and the whole fleet run
    # with them. The answer is the whole model's optimum.
    problem = _services(2, rate=9.0, max_nodes=1)
    clock = FakeClock()
    backend = RecordingBackend(clock)
    sol = ByServiceStrategy(replace(EXACT, decompose="on", threads=1), backend).solve(
        problem, Deadline.after(20.0, clock))
    whole = solve(problem, replace(EXACT, decompose="off"))
    assert sol.status == "optimal" and sol.objective == pytest.approx(whole.objective)
    assert violations(problem, sol) == []
    assert sol.backends == {"services/milp": "highs", "repair/milp": "highs", "milp": "highs"}
    assert backend.heuristics == [False, False, True, True]


def test_the_first_pass_starts_with_the_service_whose_start_is_furthest_above_its_floor() -> None:
    # The start runs s0 in the cheap pool (its optimum) and s1 in the pool three times as dear. Each solve takes
    # the whole budget on the fake clock, so the pass reaches one service: s1, whose start has the most gap to
    # its floor per share variable; s0 keeps its part of the start.
    problem = _services(2, rate=3.0)
    dear_s1 = replace(problem, columns=tuple(c for c in problem.columns if not (c.service == "s1" and c.pool == "p0")))
    start = solve(dear_s1, EXACT)
    assert start.objective is not None and violations(problem, start) == []
    clock = FakeClock()
    backend = RecordingBackend(clock, takes_s=100.0)
    sol = ByServiceStrategy(replace(EXACT, decompose="on", threads=1), backend).solve(
        problem, Deadline.after(10.0, clock), start)
    assert len(backend.given_s) == 1 and sol.objective is not None and sol.objective < start.objective
    assert {k for k, n in sol.replicas.items() if n} == {k for k, n in start.replicas.items() if n and "s0" in k} | {
        k for k, n in solve(problem, EXACT).replicas.items() if n and "s1" in k}


def test_where_the_last_plans_overrun_a_pool_the_answer_is_the_cheapest_union_that_fitted() -> None:
    # p0 holds two devices at $1/device-hour. s1 and s2 run one device each ($1/h in p0, $3/h in p1), s0 two
    # ($2/h in p0, $5/h in p2) over three buckets (more share variables, so it goes last). The start runs
    # everything outside p0 ($11/h). s1 and s2 move into p0 first: their plans and s0's start fit ($7/h, the
    # optimum, reported as the incumbent). Then s0 moves into p0 too, and p0 overruns; the three solves have
    # used the whole budget, so nothing can be repaired. Each service's newest plan swapped into the start,
    # largest saving first, gives only $8/h (s0 in p0, s1 and s2 back in p1): the answer is the $7/h union.
    pools = (PoolSupply("p0", "a", None, 1, 2, 1.0), PoolSupply("p1", "a", None, 1, None, 3.0),
             PoolSupply("p2", "a", None, 2, None, 2.5))
    s0 = (Column("s0-p0", "s0", Role.UNIFIED, "p0", 2, (1.0, 1.0, 1.0)),
          Column("s0-p2", "s0", Role.UNIFIED, "p2", 2, (1.0, 1.0, 1.0)))
    small = tuple(Column(f"{s}-{p}", s, Role.UNIFIED, p, 1, (1.0,)) for s in ("s1", "s2") for p in ("p0", "p1"))
    demands = (Demand("s0", (0.3, 0.3, 0.3)), Demand("s1", (0.9,)), Demand("s2", (0.9,)))
    problem = Problem(pools, s0 + small, demands)
    outside = replace(problem, columns=tuple(c for c in problem.columns if c.pool != "p0"))
    start = solve(outside, EXACT)
    optimum = solve(problem, replace(EXACT, decompose="off"))
    assert start.objective == pytest.approx(11.0) and optimum.objective == pytest.approx(7.0)
    clock = FakeClock()
    backend = RecordingBackend(clock, takes_s=3.4)
    progress = Progress(clock)
    sol = ByServiceStrategy(replace(EXACT, decompose="on", threads=1, progress=progress), backend).solve(
        problem, Deadline.after(10.0, clock), start)
    assert len(backend.given_s) == 3  # the three services' first solves, then no time is left
    assert progress.incumbent == pytest.approx(7.0)
    assert sol.objective == pytest.approx(7.0) and violations(problem, sol) == []
    assert {k for k, n in sol.replicas.items() if n} == {"s0-p2", "s1-p0", "s2-p0"}


def test_where_the_plans_overrun_a_pool_each_new_plan_that_fits_beside_the_kept_ones_lowers_the_plan_reported() -> None:
    # p0 holds two devices at $1/device-hour. s0 runs two devices ($2/h in p0, $5/h in p2), s1 and s2 one each
    # ($1/h in p0, $3/h in p1); s0 and s2 over three buckets. The start runs everything outside p0 ($11/h). The
    # pass takes s1 (into p0: the plans fit, $9/h), then s0 (into p0: three devices, they no longer fit), then
    # s2 (into p0): s2's new plan fits beside the kept ones (s1 in p0, s0 outside), so $7/h is reported while
    # the services run, not the $9/h of the last union that fitted as a whole. No time is left for a repair.
    pools = (PoolSupply("p0", "a", None, 1, 2, 1.0), PoolSupply("p1", "a", None, 1, None, 3.0),
             PoolSupply("p2", "a", None, 2, None, 2.5))
    s0 = (Column("s0-p0", "s0", Role.UNIFIED, "p0", 2, (1.0, 1.0, 1.0)),
          Column("s0-p2", "s0", Role.UNIFIED, "p2", 2, (1.0, 1.0, 1.0)))
    s1 = tuple(Column(f"s1-{p}", "s1", Role.UNIFIED, p, 1, (1.0,)) for p in ("p0", "p1"))
    s2 = tuple(Column(f"s2-{p}", "s2", Role.UNIFIED, p, 1, (1.0, 1.0, 1.0)) for p in ("p0", "p1"))
    demands = (Demand("s0", (0.3, 0.3, 0.3)), Demand("s1", (0.9,)), Demand("s2", (0.3, 0.3, 0.3)))
    problem = Problem(pools, s0 + s1 + s2, demands)
    start = solve(replace(problem, columns=tuple(c for c in problem.columns if c.pool != "p0")), EXACT)
    assert start.objective == pytest.approx(11.0)
    clock = FakeClock()
    backend = RecordingBackend(clock, takes_s=3.4)
    progress = Progress(clock)
    sol = ByServiceStrategy(replace(EXACT, decompose="on", threads=1, progress=progress), backend).solve(
        problem, Deadline.after(10.0, clock), start)
    assert len(backend.given_s) == 3
    assert [round(p.incumbent or 0.0, 6) for p in progress.points] == [9.0, 7.0]
    assert sol.objective == pytest.approx(7.0) and violations(problem, sol) == []
    assert {k for k, n in sol.replicas.items() if n} == {"s0-p2", "s1-p0", "s2-p0"}


def test_a_repair_first_moves_off_the_service_that_costs_least_more_per_device_it_frees() -> None:
    # p0 holds four devices at $1/device-hour. Alone, s0 runs two replicas there and s1 four: six devices. Off
    # p0, s0 pays $1.10 a device (10 cents more for each it frees) and s1 $2 (a dollar more). The repair moves s0
    # off ($6.20/h, the optimum), where planning the service with the most devices on p0 first (s1, within the
    # two devices s0 leaves) would end at $8/h. Each solve takes 4.5 s of a 10 s budget on the fake clock: the
    # two services' solves, then one to improve on s0's move (it cannot), and no time for the whole fleet.
    pools = (PoolSupply("p0", "a", None, 1, 4, 1.0), PoolSupply("p1", "a", None, 1, None, 1.1),
             PoolSupply("p2", "a", None, 1, None, 2.0))
    cols = (Column("s0-p0", "s0", Role.UNIFIED, "p0", 1, (1.0,)), Column("s0-p1", "s0", Role.UNIFIED, "p1", 1, (1.0,)),
            Column("s1-p0", "s1", Role.UNIFIED, "p0", 1, (1.0,)), Column("s1-p2", "s1", Role.UNIFIED, "p2", 1, (1.0,)))
    problem = Problem(pools, cols, (Demand("s0", (1.9,)), Demand("s1", (3.9,))))
    optimum = solve(problem, replace(EXACT, decompose="off"))
    assert optimum.objective == pytest.approx(6.2)
    clock = FakeClock()
    backend = RecordingBackend(clock, takes_s=4.5)
    sol = ByServiceStrategy(replace(EXACT, decompose="on", threads=1), backend).solve(
        problem, Deadline.after(10.0, clock))
    assert sol.objective == pytest.approx(6.2) and violations(problem, sol) == []
    assert {k: n for k, n in sol.replicas.items() if n} == {"s0-p1": 2, "s1-p0": 4}
    assert backend.heuristics == [False, False, True] and sol.backends == {"services/milp": "highs",
                                                                           "repair/milp": "highs"}
