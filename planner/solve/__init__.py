from planner.solve.milp import (
    Backend,
    Column,
    Demand,
    PoolSupply,
    PowerBudget,
    Problem,
    Solution,
    SolveOptions,
    explain_infeasible,
    marginal_values,
    prune_dominated,
    solve,
)

__all__ = [
    "Backend",
    "Column",
    "Demand",
    "PoolSupply",
    "PowerBudget",
    "Problem",
    "Solution",
    "SolveOptions",
    "explain_infeasible",
    "marginal_values",
    "prune_dominated",
    "solve",
]
