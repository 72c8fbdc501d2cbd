"""The bound a service has before any solve: never above its optimum."""

from __future__ import annotations

from hypothesis import given
from test_milp_properties import EXACT, FAST, problems

from planner.solve import Problem, solve
from planner.solve.bounds import bucket_floor, fleet_floor
from planner.solve.strategies.services import service_problems


@FAST
@given(problems())
def test_a_services_floor_is_never_above_its_optimum(problem: Problem) -> None:
    for part in service_problems(problem)[0]:
        best = solve(part, EXACT)
        floor = bucket_floor(part, 0)
        if best.objective is not None:
            assert floor <= best.objective + 1e-6 * max(1.0, best.objective)


@FAST
@given(problems())
def test_the_fleets_floor_is_never_above_its_optimum(problem: Problem) -> None:
    floor = fleet_floor(problem)
    if floor is None:
        assert problem.tiers is not None or any(p.billing != "device" for p in problem.pools) or any(
            bucket_floor(problem, i) == float("inf") for i in range(len(problem.demands)))
        return
    assert floor == sum(bucket_floor(problem, i) for i in range(len(problem.demands)))
    best = solve(problem, EXACT)
    if best.objective is not None:
        assert floor <= best.objective + 1e-6 * max(1.0, best.objective)
