"""The one entry: pick how to solve a fleet (``choose_strategy``) and solve it by a deadline (``solve``).

``solve`` first builds a plan at once (``incumbent.greedy_plan``) and hands it to the strategy as its start, so
a plan exists whatever the deadline; the answer is the better of the two, against the strategy's bound.
"""

from __future__ import annotations

from dataclasses import replace

from planner.clock import Deadline
from planner.solve.backends import backend_for
from planner.solve.incumbent import checked_greedy_plan
from planner.solve.problem import Problem, Solution, SolveOptions, Status, share_variables, uncovered_buckets
from planner.solve.progress import Progress
from planner.solve.strategies.base import Strategy
from planner.solve.strategies.by_service import ByServiceStrategy
from planner.solve.strategies.services import decomposable, roomy
from planner.solve.strategies.whole import WholeStrategy, too_big

# Fleets with at least this many share variables are solved service by service where that is exact.
DECOMPOSE_MIN_SHARE_VARIABLES = 5_000
# Where pools bind, the whole model (priced by the pool duals) proves far the stronger bound, but above this
# many share variables its LPs take longer than a planning command has: such fleets go service by service too.
WHOLE_MAX_SHARE_VARIABLES = 300_000


def choose_strategy(problem: Problem, options: SolveOptions, deadline: Deadline | None = None) -> Strategy:
    """By service where the fleet falls apart into services (and, in auto mode, is large with roomy pools, or
    too large for the whole model in the time there is); otherwise the whole model (which prices columns in on
    large models; never with tier rows)."""
    backend = backend_for(options.backend)
    share_vars = share_variables(problem)
    if problem.tiers is not None:  # the tier rows tie services together and own variables pricing does not know
        return WholeStrategy(replace(options, pricing="off"), backend, share_vars)
    large = share_vars > WHOLE_MAX_SHARE_VARIABLES or (deadline is not None and too_big(share_vars, deadline))
    split = options.decompose == "on" or (
        options.decompose == "auto" and share_vars >= DECOMPOSE_MIN_SHARE_VARIABLES and (large or roomy(problem)))
    if split and decomposable(problem) and not uncovered_buckets(problem):
        return ByServiceStrategy(options, backend)
    return WholeStrategy(options, backend, share_vars)


def solve(problem: Problem, options: SolveOptions | None = None, *, deadline: Deadline | None = None,
          start: Solution | None = None) -> Solution:
    """Solve the fleet MILP with the chosen backend by ``deadline`` (default: options.time_limit_s from now);
    status, bound and gap as the solver reports them. ``start`` is a plan to begin from; without one the
    greedy plan is."""
    opts = options or SolveOptions()
    until = deadline or Deadline.after(opts.time_limit_s)
    t0 = until.now()
    first = start if start is not None and start.objective is not None else None
    if first is None and not uncovered_buckets(problem):
        first = checked_greedy_plan(problem, until)
    if first is not None and opts.progress is not None:
        opts.progress.report(first.objective, None, "greedy" if start is None else "start")
    strategy = choose_strategy(problem, opts, until)
    sol = _better(strategy.solve(problem, until, first), first, opts, until.now() - t0)
    if opts.progress is not None:
        # The answer's own plan and bound hold for the whole problem: the record ends on them.
        opts.progress.report(sol.objective, sol.best_bound, "answer")
        if isinstance(opts.progress, Progress):
            opts.progress.close("answer")
    return sol


def _better(sol: Solution, first: Solution | None, opts: SolveOptions, seconds: float) -> Solution:
    """The strategy's answer, or the start where the strategy found nothing cheaper (against its bound)."""
    if first is None or first.objective is None or (
            sol.objective is not None and sol.objective <= first.objective + 1e-9 * max(1.0, abs(first.objective))):
        return replace(sol, solve_seconds=seconds)
    bound = sol.best_bound if sol.objective is not None or sol.status == "time_limit_no_solution" else None
    gap = None
    status: Status = "feasible"
    if bound is not None:
        bound = min(bound, first.objective)
        gap = max(0.0, (first.objective - bound) / max(abs(first.objective), 1e-9))
        status = "optimal" if gap <= opts.relative_gap + 1e-12 else "feasible"
    return replace(first, status=status, backend=sol.backend, best_bound=bound, relative_gap=gap,
                   solve_seconds=seconds, variables=sol.variables, constraints=sol.constraints,
                   message=f"{first.message}; the solver found nothing cheaper ({sol.message})",
                   backends={**sol.backends, **first.backends})
