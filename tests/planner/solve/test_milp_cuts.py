"""Validity of the rounded work rows and of solving service by service, checked against enumeration."""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_milp_properties import problems, violations

from planner.schema import Role
from planner.solve import Column, Demand, PoolSupply, Problem, SolveOptions, solve
from planner.solve.backends import HighsBackend
from planner.solve.formulation import Arrays, build, work_cuts

EXACT = SolveOptions(relative_gap=0.0, time_limit_s=20)
CASES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAX_REPLICAS = 3


@st.composite
def small_services(draw: st.DrawFn) -> Problem:
    """One or two services of up to four columns (all roles), few buckets, pools without limits."""
    pools = (PoolSupply("p0", "east", None, 8, None, draw(st.sampled_from([0.6, 1.0, 2.5]))),
             PoolSupply("p1", "west", None, 8, None, draw(st.sampled_from([0.8, 3.0]))))
    buckets = draw(st.integers(1, 3))
    services = ["a", "b"][: draw(st.integers(1, 2))]
    demands = tuple(Demand(s, tuple(draw(st.sampled_from([0.0, 0.4, 1.3, 3.0, 7.0])) for _ in range(buckets)),
                           min_replicas=draw(st.integers(0, 1)))
                    for s in services)
    cols = []
    for s in services:
        for j in range(draw(st.integers(1, 4 if len(services) == 1 else 2))):
            role = Role.UNIFIED if j == 0 else draw(st.sampled_from([Role.UNIFIED, Role.PREFILL, Role.DECODE]))
            levels = [0.9, 2.0, 4.5, 8.0] if j == 0 else [0.0, 0.9, 2.0, 4.5, 8.0, 15.0]
            cols.append(Column(
                key=f"{s}-{j}", service=s, role=role, pool=draw(st.sampled_from(["p0", "p1"])),
                devices=draw(st.sampled_from([1, 2])),
                capacity_rps=tuple(draw(st.sampled_from(levels)) for _ in range(buckets)),
            ))
    return Problem(pools=pools, columns=tuple(cols), demands=demands,
                   headroom=draw(st.sampled_from([0.7, 0.85, 1.0])))


def feasible_replica_vectors(problem: Problem) -> list[np.ndarray]:
    """Every replica vector with at most MAX_REPLICAS per column that some choice of shares makes a plan."""
    built = build(problem, link=False)
    base = Arrays.of(built.m)
    idx = [built.n[c.key] for c in problem.columns if c.key in built.n]
    out = []
    for counts in itertools.product(range(MAX_REPLICAS + 1), repeat=len(idx)):
        lb, ub = base.col_lb.copy(), base.col_ub.copy()
        lb[idx] = counts
        ub[idx] = counts
        res = HighsBackend().solve(replace(base, col_lb=lb, col_ub=ub), EXACT)
        if res.values is not None:
            out.append(np.asarray(counts, dtype=float))
    return out


@CASES
@given(small_services())
def test_work_rows_keep_every_integer_plan(problem: Problem) -> None:
    """No plan with whole replicas breaks a work row: the rows cut only fractional points."""
    built = build(problem, link=False, work_rows=True)
    m = built.m
    order = [built.n[c.key] for c in problem.columns if c.key in built.n]
    pos = {v: i for i, v in enumerate(order)}
    rows = [r for r, name in enumerate(m.row_names) if name.startswith("work[")]
    plans = feasible_replica_vectors(problem)
    nz_row, nz_col, nz_val = np.asarray(m.nz_row), np.asarray(m.nz_col), np.asarray(m.nz_val)
    for r in rows:
        sel = nz_row == r
        cols = [pos[int(c)] for c in nz_col[sel]]
        for n in plans:
            assert float(np.dot(nz_val[sel], n[cols])) >= m.row_lb[r] - 1e-9, (m.row_names[r], n.tolist())


@CASES
@given(small_services())
def test_work_rows_never_change_the_optimum(problem: Problem) -> None:
    with_rows = solve(problem, replace(EXACT, work_rows=True, decompose="off"))
    without = solve(problem, replace(EXACT, work_rows=False, decompose="off"))
    assert with_rows.status == without.status
    if without.objective is not None:
        assert with_rows.objective is not None
        assert abs(with_rows.objective - without.objective) <= 1e-6 * max(1.0, without.objective)
        assert violations(problem, with_rows) == []


def test_work_cut_rounds_a_fractional_replica_up() -> None:
    """One bucket needing 1.5 replicas of the only column: the row asks for 2 whole ones."""
    rates = np.asarray([3.0])
    caps = np.asarray([[2.0]])
    cuts = work_cuts(rates, caps, np.asarray([1.0]), 1.0)
    assert len(cuts) == 1
    keep, coef, rhs = cuts[0]
    assert rhs == 2.0 and keep.tolist() == [0] and abs(coef[0] - 1.0) < 1e-6


@CASES
@given(problems())
def test_solving_by_service_keeps_plans_valid_and_bounds_true(problem: Problem) -> None:
    exact = solve(problem, replace(EXACT, decompose="off"))
    split = solve(problem, replace(EXACT, decompose="on"))
    if exact.objective is None:
        assert split.objective is None
        return
    assert split.objective is not None and split.best_bound is not None
    assert violations(problem, split) == []
    assert split.objective >= exact.objective - 1e-6 * max(1.0, exact.objective)
    assert split.best_bound <= exact.objective + 1e-6 * max(1.0, exact.objective)
    if split.status == "optimal":
        assert split.objective <= exact.objective + 1e-6 * max(1.0, exact.objective)
