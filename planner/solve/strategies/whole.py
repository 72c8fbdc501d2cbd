"""One model for the whole fleet: built once and handed to the backend, or priced column by column when it
is large (see pricing).

Building a model costs time in proportion to its size before any solver runs, and a solver given a huge model
spends seconds setting it up before it first looks at its time limit; so with a start in hand, a model that
could not be built and solved in the time left (``BUILD_S_PER_SHARE_VARIABLE``) is not started, and the start
is handed back.
"""

from __future__ import annotations

from planner.clock import Deadline
from planner.solve.backends import Backend, RawResult, backend_for
from planner.solve.formulation import build
from planner.solve.incumbent import covers, start_vector
from planner.solve.problem import (
    Problem,
    Solution,
    SolveOptions,
    empty_solution,
    share_variables,
    uncovered_buckets,
)
from planner.solve.strategies.base import solution_of
from planner.solve.strategies.services import decomposable

# Above this many share variables, the whole model is solved by pricing columns in.
PRICING_MIN_SHARE_VARIABLES = 20_000
# Below this many seconds left, a solve that has a start hands the start back rather than begin.
MIN_SOLVE_S = 0.05
# Seconds per share variable to build the model, index it and hand it to a solver (measured on 2 cores with
# room to spare): with a start, a model that would take longer than the time left is not built.
BUILD_S_PER_SHARE_VARIABLE = 3e-5


# Below this many share variables a model is built and set up in a moment: the guard does not apply.
SMALL_MODEL_SHARE_VARIABLES = 50_000


def too_big(share_vars: int, deadline: Deadline) -> bool:
    """Whether building and setting up a model of this many share variables would overrun the deadline."""
    return share_vars > SMALL_MODEL_SHARE_VARIABLES and share_vars * BUILD_S_PER_SHARE_VARIABLE > deadline.remaining()


class WholeStrategy:
    """The whole fleet as one MILP on one backend (column pricing on large models)."""

    def __init__(self, options: SolveOptions, backend: Backend | None = None,
                 share_vars: int | None = None) -> None:
        self.options = options
        self.backend = backend or backend_for(options.backend)
        self.share_vars = share_vars

    def solve(self, problem: Problem, deadline: Deadline, start: Solution | None = None) -> Solution:
        """Build the model and solve it by the deadline, from ``start`` (a plan of the problem) if given."""
        # Imported here: the strategies recurse (whole → pricing → Lagrangian → whole, once per service).
        from planner.solve.strategies.pricing import PricingStrategy

        opts = self.options
        t0 = deadline.now()
        if start is not None and (start.objective is None or not covers(problem, start)):
            start = None
        share_vars = share_variables(problem) if self.share_vars is None else self.share_vars
        if uncovered_buckets(problem):
            return empty_solution("infeasible", opts.backend, deadline.now() - t0, 0, 0, "a bucket has no column")
        if start is not None and (deadline.remaining() < MIN_SOLVE_S or too_big(share_vars, deadline)):
            return empty_solution("time_limit_no_solution", opts.backend, deadline.now() - t0, 0, 0,
                                  f"no time left to build and solve the model ({share_vars} share variables)")
        pricing = opts.pricing == "on" or (opts.pricing == "auto" and share_vars >= PRICING_MIN_SHARE_VARIABLES)
        built = build(problem, link=opts.link_rows or pricing, bucket_rows=opts.bucket_rows,
                      work_rows=opts.work_rows)
        nvars, nrows = len(built.m.cost), len(built.m.row_lb)
        raw: RawResult | None = None
        stages: dict[str, str] = {}
        if pricing:
            lagrange = opts.decompose != "off" and decomposable(problem)
            priced = PricingStrategy(opts, self.backend, lagrange)
            raw = priced.solve(problem, built, deadline, start)
            stages.update(priced.stages)
        if raw is None:
            late = deadline.remaining() < MIN_SOLVE_S or (pricing and too_big(share_vars, deadline))
            if start is not None and late:
                return empty_solution("time_limit_no_solution", opts.backend, deadline.now() - t0, nvars, nrows,
                                      "no time left after pricing", stages)
            if pricing and not opts.link_rows:
                built = build(problem, link=False, bucket_rows=opts.bucket_rows, work_rows=opts.work_rows)
            first = start_vector(problem, built, start) if start is not None else None
            raw = self.backend.solve(built.m, opts, deadline, first)
            stages["milp"] = self.backend.name
        seconds = deadline.now() - t0
        if raw.values is None:
            return empty_solution(raw.status, opts.backend, seconds, nvars, nrows, raw.message, stages)
        return solution_of(problem, built, raw, opts.backend, seconds, stages)
