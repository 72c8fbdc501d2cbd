"""The fleet MILP, in parts: ``problem`` (the values), ``formulation`` (one module per constraint family and
the math), ``backends`` (the solvers behind one ``Backend`` Protocol), ``strategies`` (whole, column pricing,
Lagrangian pricing, by service; ``choose_strategy`` picks one), ``explain`` and ``prune``."""

from planner.solve.backends import Backend, backend_for
from planner.solve.explain import explain_infeasible, marginal_values
from planner.solve.formulation import violations
from planner.solve.problem import (
    BackendName,
    Column,
    Demand,
    PoolSupply,
    PowerBudget,
    Problem,
    Solution,
    SolveOptions,
    Status,
    expected_watts,
    plan_cost_usd_per_hour,
    pool_usage,
    uncovered_buckets,
)
from planner.solve.prune import prune_dominated, prune_roomy_pools
from planner.solve.strategies import choose_strategy, solve

__all__ = [
    "Backend",
    "BackendName",
    "Column",
    "Demand",
    "PoolSupply",
    "PowerBudget",
    "Problem",
    "Solution",
    "SolveOptions",
    "Status",
    "backend_for",
    "choose_strategy",
    "expected_watts",
    "explain_infeasible",
    "marginal_values",
    "plan_cost_usd_per_hour",
    "pool_usage",
    "prune_dominated",
    "prune_roomy_pools",
    "solve",
    "uncovered_buckets",
    "violations",
]
