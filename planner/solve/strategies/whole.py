"""One model for the whole fleet: built once and handed to the backend, or priced column by column when it
is large (see pricing)."""

from __future__ import annotations

from planner.clock import Deadline
from planner.solve.backends import Backend, RawResult, backend_for
from planner.solve.formulation import build
from planner.solve.problem import (
    Problem,
    Solution,
    SolveOptions,
    empty_solution,
    share_variables,
    uncovered_buckets,
)
from planner.solve.strategies.base import at_least, solution_of
from planner.solve.strategies.services import decomposable

# Above this many share variables, the whole model is solved by pricing columns in.
PRICING_MIN_SHARE_VARIABLES = 20_000
# The least time the final solve gets, even past the deadline (a plan late beats none).
MIN_SOLVE_S = 0.5


class WholeStrategy:
    """The whole fleet as one MILP on one backend (column pricing on large models)."""

    def __init__(self, options: SolveOptions, backend: Backend | None = None,
                 share_vars: int | None = None) -> None:
        self.options = options
        self.backend = backend or backend_for(options.backend)
        self.share_vars = share_vars

    def solve(self, problem: Problem, deadline: Deadline) -> Solution:
        """Build the model and solve it by the deadline."""
        # Imported here: the strategies recurse (whole → pricing → Lagrangian → whole, once per service).
        from planner.solve.strategies.pricing import PricingStrategy

        opts = self.options
        start = deadline.now()
        share_vars = share_variables(problem) if self.share_vars is None else self.share_vars
        pricing = opts.pricing == "on" or (opts.pricing == "auto" and share_vars >= PRICING_MIN_SHARE_VARIABLES)
        built = build(problem, link=opts.link_rows or pricing, bucket_rows=opts.bucket_rows,
                      work_rows=opts.work_rows)
        nvars, nrows = len(built.m.cost), len(built.m.row_lb)
        if uncovered_buckets(problem):
            return empty_solution("infeasible", opts.backend, deadline.now() - start, nvars, nrows,
                                  "a bucket has no column")
        raw: RawResult | None = None
        stages: dict[str, str] = {}
        if pricing:
            lagrange = opts.decompose != "off" and decomposable(problem)
            priced = PricingStrategy(opts, self.backend, lagrange)
            raw = priced.solve(problem, built, at_least(deadline, MIN_SOLVE_S))
            stages.update(priced.stages)
        if raw is None:
            if pricing and not opts.link_rows:
                built = build(problem, link=False, bucket_rows=opts.bucket_rows, work_rows=opts.work_rows)
            raw = self.backend.solve(built.m, opts, at_least(deadline, MIN_SOLVE_S))
            stages["milp"] = self.backend.name
        seconds = deadline.now() - start
        if raw.values is None:
            return empty_solution(raw.status, opts.backend, seconds, nvars, nrows, raw.message, stages)
        return solution_of(problem, built, raw, opts.backend, seconds, stages)
