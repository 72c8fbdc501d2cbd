"""Churn family: δ[c] ≥ |n[c] − current_c| for running columns, priced at χ per replica changed.

    churn_up[c]:   δ[c] − n[c] ≥ −current_c        churn_down[c]: δ[c] + n[c] ≥ current_c
A column not running pays χ per replica on n[c] itself (objective); running keys without a column pay χ per
replica as a constant (the matrix offset).
"""

from __future__ import annotations

from collections.abc import Mapping

from planner.solve.formulation.base import INF, Built, Family
from planner.solve.problem import Column, Problem, Solution, plan_cost_usd_per_hour


def entry_price(problem: Problem, c: Column) -> float:
    """χ per replica of a column that is not running (its replicas are all new)."""
    churn = problem.churn_usd_per_replica_change
    return churn if churn > 0 and problem.current_replicas.get(c.key, 0) == 0 else 0.0


def add_churn(f: Built, c: Column) -> None:
    """δ[c] and its two rows, for a running column when changes cost."""
    churn = f.problem.churn_usd_per_replica_change
    cur = f.problem.current_replicas.get(c.key, 0)
    if churn <= 0 or cur <= 0:
        return
    nv = f.n[c.key]
    dv = f.m.var(0.0, INF, churn, False)
    f.churn_var[c.key] = dv
    f.m.row(f"churn_up[{c.key}]", [dv, nv], [1.0, -1.0], -float(cur), INF)
    f.m.row(f"churn_down[{c.key}]", [dv, nv], [1.0, 1.0], float(cur), INF)


def add_churn_offset(f: Built) -> None:
    """The churn of running keys that no column offers any more: they all go."""
    churn = f.problem.churn_usd_per_replica_change
    if churn > 0:
        keys = {c.key for c in f.problem.columns}
        f.m.offset += churn * sum(v for k, v in f.problem.current_replicas.items() if k not in keys)


def churn_usd_per_hour(problem: Problem, replicas: Mapping[str, int]) -> float:
    """χ · Σ |n − current| over every key planned or running."""
    keys = {c.key for c in problem.columns} | set(replicas) | set(problem.current_replicas)
    return problem.churn_usd_per_replica_change * sum(
        abs(replicas.get(k, 0) - problem.current_replicas.get(k, 0)) for k in keys)


def violations(problem: Problem, solution: Solution) -> list[str]:
    """The objective charges the plan's $/h plus χ per replica changed, no more and no less."""
    cost = plan_cost_usd_per_hour(problem, solution.replicas)
    moved = churn_usd_per_hour(problem, solution.replicas)
    if solution.objective is None or abs(cost + moved - solution.objective) > 1e-5 * max(1.0, cost):
        return [f"objective {solution.objective} != cost {cost} + churn {moved}"]
    return []


FAMILY = Family("churn", violations)
