"""The one entry: pick how to solve a fleet (``choose_strategy``) and solve it by a deadline (``solve``)."""

from __future__ import annotations

from dataclasses import replace

from planner.clock import Deadline
from planner.solve.backends import backend_for
from planner.solve.problem import Problem, Solution, SolveOptions, share_variables, uncovered_buckets
from planner.solve.strategies.base import Strategy
from planner.solve.strategies.by_service import ByServiceStrategy
from planner.solve.strategies.services import decomposable, roomy
from planner.solve.strategies.whole import WholeStrategy

# Fleets with at least this many share variables are solved service by service where that is exact.
DECOMPOSE_MIN_SHARE_VARIABLES = 5_000


def choose_strategy(problem: Problem, options: SolveOptions) -> Strategy:
    """By service where the fleet falls apart into services (and, in auto mode, is large with roomy pools);
    otherwise the whole model (which prices columns in on large models; never with tier rows)."""
    backend = backend_for(options.backend)
    share_vars = share_variables(problem)
    if problem.tiers is not None:  # the tier rows tie services together and own variables pricing does not know
        return WholeStrategy(replace(options, pricing="off"), backend, share_vars)
    split = options.decompose == "on" or (
        options.decompose == "auto" and share_vars >= DECOMPOSE_MIN_SHARE_VARIABLES and roomy(problem))
    if split and decomposable(problem) and not uncovered_buckets(problem):
        return ByServiceStrategy(options, backend)
    return WholeStrategy(options, backend, share_vars)


def solve(problem: Problem, options: SolveOptions | None = None, *, deadline: Deadline | None = None) -> Solution:
    """Solve the fleet MILP with the chosen backend by ``deadline`` (default: options.time_limit_s from now);
    status, bound and gap as the solver reports them."""
    opts = options or SolveOptions()
    return choose_strategy(problem, opts).solve(problem, deadline or Deadline.after(opts.time_limit_s))
