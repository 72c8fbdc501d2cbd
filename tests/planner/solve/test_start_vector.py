"""A plan handed to a solver as its start sets every variable the model has, the simplicity family's
configuration flags included, so the solver accepts it (a start that breaks a row is thrown away)."""

from __future__ import annotations

import numpy as np

from planner.schema import Role
from planner.solve import Column, Demand, PoolSupply, Problem, SolveOptions
from planner.solve.backends import HighsBackend
from planner.solve.formulation import build
from planner.solve.formulation.matrix import Arrays
from planner.solve.incumbent import checked_greedy_plan, start_vector


def _limited() -> Problem:
    """Two services over four configurations each, at most two configurations per service."""
    pools = (PoolSupply("a", "z1", None, 4, 10, 2.0), PoolSupply("b", "z2", None, 4, 10, 3.0))
    cols = tuple(Column(f"{s}-{p.id}-tp{tp}", s, Role.UNIFIED, p.id, tp, (cap * tp, cap * tp / 2), label=f"tp{tp}")
                 for s, cap in (("chat", 1.0), ("code", 0.7)) for p in pools for tp in (1, 2, 4, 8)
                 if tp <= p.devices_per_node)
    demands = tuple(Demand(s, (3.0, 2.0), min_replicas=2, spread_zones=2, max_configurations=2)
                    for s in ("chat", "code"))
    return Problem(pools, cols, demands)


def test_a_start_under_a_configuration_limit_meets_every_row() -> None:
    problem = _limited()
    plan = checked_greedy_plan(problem)
    assert plan is not None and plan.objective is not None
    built = build(problem, bucket_rows=True, work_rows=True)
    assert built.config_flags  # the limit binds: the model has the configuration flags
    x = start_vector(problem, built, plan)
    a = Arrays.of(built.m)
    activity = np.bincount(a.nz_row, weights=a.nz_val * x[a.nz_col], minlength=len(a.row_lb))
    broken = [built.m.row_names[r] for r in np.nonzero((activity < a.row_lb - 1e-6) | (activity > a.row_ub + 1e-6))[0]]
    assert broken == []
    used = {c.label for c in problem.columns if plan.replicas.get(c.key, 0) > 0}
    assert {lab for (_, lab), i in built.config_flags.items() if x[i] > 0.5} == used


def test_highs_keeps_a_start_it_cannot_beat() -> None:
    # stopped at once, HiGHS answers with the start, which it took as its incumbent
    problem = _limited()
    plan = checked_greedy_plan(problem)
    assert plan is not None and plan.objective is not None
    built = build(problem, bucket_rows=True, work_rows=True)
    raw = HighsBackend().solve(built.m, SolveOptions(time_limit_s=0.0), start=start_vector(problem, built, plan))
    assert raw.objective is not None and raw.objective <= plan.objective + 1e-6
