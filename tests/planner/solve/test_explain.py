"""Explanations come from the families: the elastic re-solve runs on the backend asked for, and the marginal
values loosen exactly the binding row."""

from __future__ import annotations

import pytest

from planner.schema import Role
from planner.solve import Column, Demand, PoolSupply, PowerBudget, Problem, SolveOptions, explain_infeasible, solve
from planner.solve.formulation import pool, power


def _short_pool() -> Problem:
    pools = (PoolSupply("h100-east", "east", None, 8, 2, 4.0),)
    cols = (Column("c", "chat", Role.UNIFIED, "h100-east", 4, (1.0,)),)
    return Problem(pools, cols, (Demand("chat", (6.0,)),))


@pytest.mark.parametrize("backend", ["highs", "cbc", "scip"])
def test_the_elastic_re_solve_names_the_short_pool_on_any_backend(backend: str) -> None:
    findings = explain_infeasible(_short_pool(), SolveOptions(backend=backend))  # type: ignore[arg-type]
    assert [(f.constraint, f.value) for f in findings] == [("pool[h100-east]", 1.0)]
    assert "needs 3 nodes" in findings[0].message


def test_probes_loosen_only_the_binding_row() -> None:
    pools = (PoolSupply("cheap", "z", "row", 1, 2, 1.0, nameplate_watts_per_node=100.0),
             PoolSupply("dear", "z", None, 1, None, 3.0))
    cols = (Column("cheap", "svc", Role.UNIFIED, "cheap", 1, (1.0,), 50.0, 100.0),
            Column("dear", "svc", Role.UNIFIED, "dear", 1, (1.0,)))
    problem = Problem(pools, cols, (Demand("svc", (4.0,)),), (PowerBudget("row", 200.0, 1.0, 1.0),))
    sol = solve(problem, SolveOptions(relative_gap=0.0))
    assert sol.nodes == {"cheap": 2, "dear": 2}
    (node,) = pool.probes(problem, sol)
    assert node.constraint == "pool[cheap]" and node.binding.kind == "binding"
    assert [p.max_nodes for p in node.relaxed.pools] == [3, None]
    (watts,) = power.probes(problem, sol)
    assert watts.constraint == "power[row]" and [k.budget_watts for k in watts.relaxed.power_budgets] == [1200.0]
