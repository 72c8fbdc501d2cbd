"""Solving by service when shared pool and power rows bind: the bound stays a proven lower bound on the fleet
optimum and the plan meets every shared row (see planner.solve.strategies.by_service: repair, then the
whole-fleet fallback)."""

from __future__ import annotations

from dataclasses import replace

from fake_backends import RecordingBackend
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planner.clock import Deadline, FakeClock
from planner.schema import Role
from planner.solve import Column, Demand, PoolSupply, PowerBudget, Problem, SolveOptions, solve
from planner.solve.incumbent import greedy_plan
from planner.solve.progress import Progress
from planner.solve.strategies import ByServiceStrategy, LagrangeStrategy, overused

EXACT = SolveOptions(time_limit_s=20.0, relative_gap=0.0, decompose="off", pricing="off")
# Column pricing with the services priced by the pool duals (the path large fleets whose pools bind take).
PRICED = SolveOptions(time_limit_s=10.0, relative_gap=0.0, decompose="auto", pricing="on")
SPLIT = SolveOptions(time_limit_s=5.0, relative_gap=0.0, decompose="on", pricing="off")


@st.composite
def coupled(draw: st.DrawFn) -> Problem:
    """Two or three services on a cheap small pool and a dear large one, in one power domain that binds."""
    pools = (
        PoolSupply("cheap", "a", "row", 2, draw(st.integers(1, 2)), 1.0, nameplate_watts_per_node=100.0),
        PoolSupply("dear", "a", "row", 2, None, draw(st.sampled_from([1.5, 2.0, 3.0])),
                   nameplate_watts_per_node=100.0),
    )
    n_services = draw(st.integers(2, 3))
    columns, demands = [], []
    for s in range(n_services):
        rates = tuple(draw(st.lists(st.sampled_from([0.5, 1.0, 2.0]), min_size=2, max_size=2)))
        demands.append(Demand(f"s{s}", rates))
        for pool in ("cheap", "dear"):
            for devices in (1, 2):
                caps = tuple(draw(st.sampled_from([0.0, 1.0, 1.5])) * devices for _ in rates)
                if any(caps):
                    columns.append(Column(f"s{s}-{pool}-{devices}", f"s{s}", Role.UNIFIED, pool, devices,
                                          (caps[0] or float(devices), caps[1]),
                                          idle_watts=20.0 * devices, active_watts=50.0 * devices))
    budget = PowerBudget("row", draw(st.sampled_from([400.0, 600.0, 1000.0])), 1.5, 1.0)
    return Problem(pools, tuple(columns), tuple(demands), (budget,))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coupled())
def test_decomposed_bound_and_plan_are_honest(problem: Problem) -> None:
    exact = solve(problem, EXACT)
    split = solve(problem, SPLIT)
    if exact.status == "infeasible":
        assert split.objective is None or split.status != "optimal"
        return
    assert exact.status == "optimal" and exact.objective is not None
    assert split.objective is not None and split.best_bound is not None
    tol = 1e-6 * max(1.0, exact.objective)
    assert split.best_bound <= exact.objective + tol <= split.objective + 2 * tol
    assert split.cost_usd_per_hour is not None and abs(split.cost_usd_per_hour - split.objective) <= tol
    pools_over, domains_over = overused(problem, split.replicas, split.prefill_share | split.decode_share)
    assert not pools_over and not domains_over


def test_shared_pool_gap_is_closed_not_hidden() -> None:
    """Each service alone takes the one cheap device (1 $/h); together one must go to the dear pool (3 $/h):
    the optimum is 1 + 3 = 4, while the services' own bounds sum to 2. The answer must be the optimum with a
    bound above that sum (the repaired union has no bound of its own; the whole-fleet solve proves it)."""
    pools = (PoolSupply("cheap", "a", None, 1, 1, 1.0), PoolSupply("dear", "a", None, 1, None, 3.0))
    columns = tuple(Column(f"s{s}-{p}", f"s{s}", Role.UNIFIED, p, 1, (1.0,)) for s in range(2)
                    for p in ("cheap", "dear"))
    problem = Problem(pools, columns, (Demand("s0", (1.0,)), Demand("s1", (1.0,))))
    assert solve(problem, EXACT).objective == 4.0
    sol = solve(problem, SolveOptions(time_limit_s=5.0, relative_gap=0.0, decompose="on", pricing="off"))
    assert sol.objective is not None and abs(sol.objective - 4.0) < 1e-6
    assert sol.best_bound is not None and 2.0 + 1e-6 < sol.best_bound <= 4.0 + 1e-6
    assert not any(overused(problem, sol.replicas, sol.prefill_share | sol.decode_share))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coupled(), st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0, 5.0]), min_size=2, max_size=2))
def test_lagrangian_bound_holds_for_any_pool_prices(problem: Problem, prices: list[float]) -> None:
    """L(μ) = Σ_s (bound of s at π + μ) − Σ_p μ_p·D_p·M_p never exceeds the fleet optimum, whatever μ ≥ 0."""
    exact = solve(problem, EXACT)
    if exact.status == "infeasible":
        return
    assert exact.objective is not None
    mu = dict(zip(("cheap", "dear"), prices, strict=True))
    found = LagrangeStrategy(SolveOptions(relative_gap=0.0)).plans(problem, mu, until=Deadline.never())
    bound, cols = found.bound, found.columns
    assert bound is not None and bound <= exact.objective + 1e-6 * max(1.0, exact.objective)
    assert cols <= {c.key for c in problem.columns}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coupled())
def test_priced_services_plan_and_bound_are_honest(problem: Problem) -> None:
    """Column pricing with the services priced by the pool duals: the bound stays below the optimum, the plan
    above it, and the plan meets the shared rows."""
    exact = solve(problem, EXACT)
    sol = solve(problem, PRICED)
    if exact.status == "infeasible":
        assert sol.objective is None or sol.status != "optimal"
        return
    assert exact.objective is not None and sol.objective is not None
    tol = 1e-6 * max(1.0, exact.objective)
    assert sol.objective >= exact.objective - tol
    if sol.best_bound is not None:
        assert sol.best_bound <= exact.objective + tol
    assert not any(overused(problem, sol.replicas, sol.prefill_share | sol.decode_share))


def test_pool_price_lifts_the_bound_above_the_services_own() -> None:
    """Each service alone takes the cheap device; priced at μ = 2 (the dear pool's premium, the LP's dual on the
    cheap pool), each pays 3 alone, so L(μ) = 3 + 3 − 2·1 = 4: the optimum, where μ = 0 gives only 2."""
    pools = (PoolSupply("cheap", "a", None, 1, 1, 1.0), PoolSupply("dear", "a", None, 1, None, 3.0))
    columns = tuple(Column(f"s{s}-{p}", f"s{s}", Role.UNIFIED, p, 1, (1.0,)) for s in range(2)
                    for p in ("cheap", "dear"))
    problem = Problem(pools, columns, (Demand("s0", (1.0,)), Demand("s1", (1.0,))))
    opts = SolveOptions(relative_gap=0.0)
    low = LagrangeStrategy(opts).plans(problem, {"cheap": 0.0}, until=Deadline.never()).bound
    found = LagrangeStrategy(opts).plans(problem, {"cheap": 2.0}, until=Deadline.never())
    high, cols = found.bound, found.columns
    assert low is not None and abs(low - 2.0) < 1e-6
    assert high is not None and abs(high - 4.0) < 1e-6
    assert {"s0-cheap", "s1-cheap"} & cols or {"s0-dear", "s1-dear"} <= cols
    sol = solve(problem, PRICED)
    assert sol.objective is not None and abs(sol.objective - 4.0) < 1e-6
    assert sol.best_bound is not None and sol.best_bound >= 4.0 - 1e-6


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(coupled(), st.sampled_from([0.0, 0.7, 1.3, 2.6, 4.0]), st.booleans())
def test_a_pass_cut_short_answers_a_plan_that_fits_and_no_dearer_than_it_showed(
        problem: Problem, takes_s: float, with_start: bool) -> None:
    # Whatever stage the time runs out in, the answer meets every shared row, its bound is below the fleet's
    # optimum, and it is no dearer than the cheapest plan the progress record was shown.
    exact = solve(problem, EXACT)
    start = greedy_plan(problem) if with_start else None
    clock = FakeClock()
    progress = Progress(clock)
    sol = ByServiceStrategy(replace(SPLIT, threads=1, progress=progress), RecordingBackend(clock, takes_s)).solve(
        problem, Deadline.after(5.0, clock), start)
    if sol.objective is None:
        assert start is None or exact.objective is None
        return
    assert exact.objective is not None
    tol = 1e-6 * max(1.0, exact.objective)
    assert not any(overused(problem, sol.replicas, sol.prefill_share | sol.decode_share))
    assert sol.objective >= exact.objective - tol
    assert sol.best_bound is None or sol.best_bound <= exact.objective + tol
    assert progress.incumbent is None or sol.objective <= progress.incumbent + tol
