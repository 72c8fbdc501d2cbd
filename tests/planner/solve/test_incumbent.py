"""The greedy plan: a plan of the problem whenever it finds one, never below the optimum, inside tight pools,
and a start the solvers take."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from test_milp_properties import EXACT, FAST, problems, violations

from planner.schema import Role
from planner.solve import Column, Demand, PoolSupply, Problem, solve
from planner.solve.formulation import build
from planner.solve.formulation import handoff as handoff_family
from planner.solve.formulation.matrix import Arrays
from planner.solve.incumbent import checked_greedy_plan, greedy_plan, plan_violations, restrict, start_vector
from planner.solve.strategies.services import service_problems


def _unlimited(problem: Problem) -> Problem:
    return replace(problem, pools=tuple(replace(p, max_nodes=None) for p in problem.pools), power_budgets=())


@FAST
@given(problems())
def test_a_greedy_plan_meets_every_row_and_is_never_below_the_optimum(problem: Problem) -> None:
    # the checked plan (the greedy does not model zone roles or hand-off pairing; the check rules those out)
    plan = checked_greedy_plan(problem)
    if plan is None:
        return
    assert violations(problem, plan) == []
    assert plan_violations(problem, plan) == []
    best = solve(problem, EXACT)
    assert best.objective is not None  # the greedy plan is a plan, so the fleet has one
    assert plan.objective is not None and plan.objective >= best.objective - 1e-6 * max(1.0, best.objective)
    assert plan.best_bound is None and plan.status == "feasible"


@FAST
@given(problems())
def test_without_limits_the_greedy_always_finds_a_plan(problem: Problem) -> None:
    # Every drawn service's first column serves every bucket: with unlimited pools and no power budgets a plan
    # exists unless zone spread asks for a zone no serving column reaches.
    free = _unlimited(problem)
    zones = {p.id: p.zone for p in free.pools}
    reach = {d.service: len({zones[c.pool] for c in free.columns if c.service == d.service
                             and c.role is not Role.PREFILL}) for d in free.demands}
    if any(d.spread_zones > reach[d.service] for d in free.demands):
        return
    assert greedy_plan(free) is not None


@FAST
@given(problems())
def test_the_solvers_take_the_greedy_plan_as_their_start(problem: Problem) -> None:
    # the checked plan: the greedy does not model every family (hand-off pairing), the check rules such plans out
    plan = checked_greedy_plan(problem)
    if plan is None:
        return
    built = build(problem, link=True, bucket_rows=True, work_rows=True)
    x = start_vector(problem, built, plan)
    a = Arrays.of(built.m)
    activity = np.bincount(a.nz_row, weights=a.nz_val * x[a.nz_col], minlength=len(a.row_lb))
    assert (activity >= a.row_lb - 1e-6).all() and (activity <= a.row_ub + 1e-6).all()
    assert (x >= a.col_lb - 1e-9).all() and (x <= a.col_ub + 1e-9).all()
    assert abs(float(a.cost @ x + a.offset) - plan.objective) < 1e-6
    started = solve(problem, EXACT, start=plan)
    assert started.objective is not None and started.objective <= plan.objective + 1e-9


def test_a_tight_cheap_pool_sends_the_rest_to_the_dear_one() -> None:
    pools = (PoolSupply("cheap", "a", None, 2, 1, 1.0), PoolSupply("dear", "a", None, 2, None, 3.0))
    cols = tuple(Column(f"s{i}-{p.id}", f"s{i}", Role.UNIFIED, p.id, 1, (1.0,)) for i in range(3) for p in pools)
    problem = Problem(pools, cols, tuple(Demand(f"s{i}", (0.9,)) for i in range(3)))
    plan = greedy_plan(problem)
    assert plan is not None and violations(problem, plan) == []
    assert sum(n for k, n in plan.replicas.items() if k.endswith("cheap")) == 2  # the cheap pool holds two
    assert plan.objective == solve(problem, EXACT).objective == 2 * 1.0 + 3.0


def test_a_plan_the_greedy_cannot_meet_is_not_used() -> None:
    # Two zones asked for but the only serving columns sit in one zone: no plan at all.
    pools = (PoolSupply("p", "a", None, 1, None, 1.0), PoolSupply("q", "b", None, 1, None, 1.0))
    cols = (Column("s-pre", "s", Role.PREFILL, "q", 1, (2.0,)), Column("s-uni", "s", Role.UNIFIED, "p", 1, (2.0,)))
    problem = Problem(pools, cols, (Demand("s", (1.0,), spread_zones=2),))
    assert greedy_plan(problem) is None and checked_greedy_plan(problem) is None
    assert solve(problem, EXACT).status == "infeasible"


@FAST
@given(problems(), st.data())
def test_the_greedy_pairs_each_prefill_with_a_decode_that_can_take_its_hand_off(problem: Problem,
                                                                                data: st.DataObject) -> None:
    # NIC rates drawn per prefill and decode column: a plan may pair only in one zone, decode no slower.
    rates = st.sampled_from([25.0, 100.0, 400.0])
    cols = tuple(c if c.role is Role.UNIFIED else replace(c, handoff_gbitps=data.draw(rates)) for c in problem.columns)
    problem = replace(problem, columns=cols)
    plan = greedy_plan(problem)
    if plan is None:
        return
    assert handoff_family.violations(problem, plan) == []


def test_the_greedy_hands_off_to_a_decode_no_slower_than_the_prefill() -> None:
    # The cheapest decode receives at 25 Gbit/s, slower than the prefill sends: the greedy pairs the prefill with
    # the dearer 400 Gbit/s decode (5 + 2 $/h) rather than fall back to the unified column (3 replicas: 9 $/h).
    pools = (PoolSupply("p", "a", None, 1, None, 1.0),)
    cols = (Column("uni", "s", Role.UNIFIED, "p", 3, (1.0,)),
            Column("pre", "s", Role.PREFILL, "p", 5, (3.0,), handoff_gbitps=100.0),
            Column("dec-slow", "s", Role.DECODE, "p", 1, (3.0,), handoff_gbitps=25.0),
            Column("dec-fast", "s", Role.DECODE, "p", 2, (3.0,), handoff_gbitps=400.0))
    problem = Problem(pools, cols, (Demand("s", (2.5,)),))
    plan = checked_greedy_plan(problem)
    assert plan is not None and violations(problem, plan) == []
    assert {k: n for k, n in plan.replicas.items() if n} == {"pre": 1, "dec-fast": 1}
    assert plan.objective == solve(problem, EXACT).objective == 7.0


@FAST
@given(problems(), st.data())
def test_a_services_part_of_a_plan_is_a_plan_of_that_service(problem: Problem, data: st.DataObject) -> None:
    plan = greedy_plan(_unlimited(problem))
    if plan is None or len(problem.demands) < 2:
        return
    parts, _ = service_problems(_unlimited(problem))
    part = data.draw(st.sampled_from(parts))
    mine = restrict(plan, part, part)
    assert mine is not None and violations(part, mine) == []
    assert set(mine.replicas) <= {c.key for c in part.columns}
