"""Each constraint family's violation check catches a plan that breaks its rows, and only such plans."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import HealthCheck, given, settings
from test_milp_properties import problems
from test_milp_properties import violations as words_violations

from planner.schema import Role
from planner.solve import (
    Column,
    Demand,
    PoolSupply,
    PowerBudget,
    Problem,
    Solution,
    SolveOptions,
    solve,
    violations,
)
from planner.solve.formulation import (
    FAMILIES,
    buckets,
    build,
    capacity,
    churn,
    cover,
    min_replicas,
    objective,
    pool,
    power,
    spread,
)
from planner.solve.formulation import work as work_family

EXACT = SolveOptions(relative_gap=0.0, time_limit_s=20)


def _fleet() -> tuple[Problem, Solution]:
    """Two zones, a capped pool in a power domain, a running replica that costs churn to move; solved."""
    pools = (PoolSupply("east", "east", "row", 2, 3, 1.0, nameplate_watts_per_node=500.0),
             PoolSupply("west", "west", None, 2, None, 1.5))
    cols = (Column("e", "svc", Role.UNIFIED, "east", 1, (2.0, 1.0), idle_watts=50.0, active_watts=200.0),
            Column("w", "svc", Role.UNIFIED, "west", 1, (2.0, 1.0), idle_watts=50.0, active_watts=200.0))
    problem = Problem(pools, cols, (Demand("svc", (3.0, 1.0), min_replicas=2, spread_zones=2),),
                      (PowerBudget("row", 2000.0, 1.5, 1.0),), headroom=0.9, current_replicas={"w": 3},
                      churn_usd_per_replica_change=0.25)
    sol = solve(problem, EXACT)
    assert sol.status == "optimal"
    return problem, sol


def test_a_solved_plan_breaks_no_family() -> None:
    problem, sol = _fleet()
    assert violations(problem, sol) == []
    assert [f.name for f in FAMILIES] == ["objective", "churn", "capacity", "cover", "handoff", "buckets",
                                          "min_replicas", "spread", "zone_roles", "simplicity", "work", "pool",
                                          "power", "tiers"]


def test_cover_catches_a_bucket_not_shared_out() -> None:
    problem, sol = _fleet()
    broken = replace(sol, prefill_share={k: v / 2 for k, v in sol.prefill_share.items()})
    assert cover.violations(problem, broken) and not cover.violations(problem, sol)


def test_capacity_catches_load_above_headroom_and_a_share_without_replica() -> None:
    problem, sol = _fleet()
    fewer = replace(sol, replicas={k: 1 for k in sol.replicas})
    assert any("over capacity" in v for v in capacity.violations(problem, fewer))
    key = next(iter(sol.replicas))
    lonely = replace(sol, replicas={k: n for k, n in sol.replicas.items() if k != key})
    assert any("with 0 replicas" in v for v in capacity.violations(problem, lonely))


def test_buckets_and_work_catch_too_few_replicas() -> None:
    # 3 req/s on one column doing 2 req/s: 1.5 replicas of work, so whole plans need 2.
    pools = (PoolSupply("p", "z", None, 8, None, 1.0),)
    problem = Problem(pools, (Column("c", "s", Role.UNIFIED, "p", 1, (2.0,)),), (Demand("s", (3.0,), min_replicas=0),))
    sol = solve(problem, EXACT)
    assert sol.replicas == {"c": 2} and violations(problem, sol) == []
    one = replace(sol, replicas={"c": 1})
    assert buckets.violations(problem, one) and work_family.violations(problem, one)


def test_pool_catches_more_nodes_than_the_pool_has() -> None:
    problem, sol = _fleet()
    crowded = replace(sol, replicas={**sol.replicas, "e": 7})
    assert pool.violations(problem, crowded) == ["pool east needs 4 nodes > 3"]


def test_power_catches_expected_and_nameplate_overruns() -> None:
    problem, sol = _fleet()
    tight = replace(problem, power_budgets=(PowerBudget("row", 100.0, 1.0, 1.0),))
    found = power.violations(tight, sol)
    assert any("expected" in v for v in found) and any("nameplate" in v for v in found)


def test_min_replicas_and_spread_catch_a_plan_in_one_zone() -> None:
    problem, sol = _fleet()
    east_only = replace(sol, replicas={"e": 1})
    assert min_replicas.violations(problem, east_only) == ["svc min replicas: 1 < 2"]
    assert spread.violations(problem, east_only) == ["svc spread over 1 zones < 2"]


def test_objective_and_churn_catch_a_misreported_cost() -> None:
    problem, sol = _fleet()
    assert sol.objective is not None and sol.cost_usd_per_hour is not None
    assert objective.violations(problem, replace(sol, cost_usd_per_hour=sol.cost_usd_per_hour + 1.0))
    # The objective without the churn term: the churn family notices the missing χ·|n − current|.
    moved = churn.churn_usd_per_hour(problem, sol.replicas)
    assert moved > 0
    assert churn.violations(problem, replace(sol, objective=sol.objective - moved))
    assert objective.violations(problem, replace(sol, replicas={**sol.replicas, "e": -1}))


def test_elastic_slacks_belong_to_the_families_that_word_them() -> None:
    problem, _ = _fleet()
    built = build(problem, elastic=True)
    kinds = {name.split("[", 1)[0] for name in built.slack}
    worded = {kind for f in FAMILIES for kind in f.slacks if f.shortfall is not None}
    assert kinds == {"min_replicas", "spread", "pool", "power_expected", "power_nameplate"} and kinds <= worded


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problems())
def test_families_catch_whatever_the_words_check_catches(problem: Problem) -> None:
    """Against the check written from the problem's words: a solved plan passes both, and a plan with a
    replica taken away fails the families wherever it fails the words."""
    sol = solve(problem, EXACT)
    if sol.objective is None:
        return
    assert violations(problem, sol) == [] == words_violations(problem, sol)
    for key in sol.replicas:
        fewer = replace(sol, replicas={**sol.replicas, key: sol.replicas[key] - 1})
        if words_violations(problem, fewer):
            assert violations(problem, fewer), key
