r"""Lagrangian pricing of the pool rows: each service planned alone with pool p's devices dearer by μ_p.

Relaxing the pool rows with multipliers μ ≥ 0 (each service keeps its own pool and power rows, as in solving
by service) leaves one MILP per service over its columns at prices π_p + μ_p, and
L(μ) = Σ_s (bound of s at those prices) − Σ_p μ_p·D_p·M_p bounds the fleet for any μ ≥ 0 on the pools with
a node limit M_p (a pool without one keeps its price: its row cannot be relaxed). With a finished LP's duals it
is at least the LP bound up to the services' own gaps, since each service's integer plan costs at least its
LP (on the synthetic 20-service fleet: 2294 against an LP bound of 2283). The services' plans rarely fit
together (each sees the price, not the others), but their columns are the ones worth having in a restricted
MILP (see pricing). The services' MILPs run on HiGHS, in threads (HiGHS releases the GIL).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from planner.clock import Deadline
from planner.solve.backends import Backend, HighsBackend
from planner.solve.problem import Problem, Solution, SolveOptions, share_variables
from planner.solve.prune import prune_roomy_pools
from planner.solve.strategies.base import nested
from planner.solve.strategies.services import ServiceRunner, service_problems
from planner.solve.strategies.whole import WholeStrategy

# A service with at least this many share variables has its columns priced in (see pricing).
SERVICE_PRICING_MIN_SHARE_VARIABLES = 2_000
# A service may take this many even shares of the time left when it starts (most need a fraction).
_SHARES = 2.0
_MIN_LEFT_S = 0.05  # a service starting with less time than this left is not solved (no bound)


@dataclass(frozen=True)
class ServicePlans:
    """L(μ) (None when a service got no bound in time), the columns of the services' plans, and which backend
    ran each stage of the services' solves."""

    bound: float | None
    columns: set[str]
    backends: dict[str, str] = field(default_factory=dict)


class LagrangeStrategy:
    """The services' own MILPs at pool prices π + μ, by a deadline."""

    def __init__(self, options: SolveOptions, backend: Backend | None = None) -> None:
        self.options = options
        self.backend = backend or HighsBackend()

    def plans(self, problem: Problem, prices: Mapping[str, float], until: Deadline,
              late: Deadline | None = None) -> ServicePlans:
        """L(μ) with μ = ``prices`` (per pool, $/device-hour), solving each service by ``until``; a service
        that got no bound by then tries once more by ``late``."""
        # A pool without a node limit has no row to relax (its nodes are free): it keeps its price.
        mu = {p.id: max(0.0, prices.get(p.id, 0.0)) for p in problem.pools if p.max_nodes is not None}
        priced = replace(problem, pools=tuple(
            replace(p, usd_per_device_hour=p.usd_per_device_hour + mu.get(p.id, 0.0)) for p in problem.pools))
        subs, orphan = service_problems(priced)
        subs = [prune_roomy_pools(sp) for sp in subs]
        order = sorted(range(len(subs)), key=lambda i: share_variables(subs[i]))
        runner = ServiceRunner(min(self.options.threads, len(subs)), _SHARES, _MIN_LEFT_S)

        def solve_one(i: int, seconds: float) -> Solution:
            size = share_variables(subs[i])
            # A service's plans and bounds are its own, not the fleet's: nothing goes to the fleet's progress.
            opts = replace(self.options, relative_gap=self.options.relative_gap * 0.5, decompose="off",
                           pricing="on" if size >= SERVICE_PRICING_MIN_SHARE_VARIABLES else "off",
                           highs_restart=False, backend=self.backend.name, progress=None)
            return WholeStrategy(opts, self.backend).solve(subs[i], Deadline.after(max(0.05, seconds), until.clock))

        found = dict(zip(order, runner.run(order, solve_one, until), strict=True))
        # A service that got no bound in its share tries once more, in the time the others left.
        retry = [i for i in order if (sol := found[i]) is None or sol.best_bound is None]
        for i, sol in zip(retry, runner.run(retry, solve_one, late or until), strict=True):
            if sol is not None and (found[i] is None or sol.best_bound is not None):
                found[i] = sol
        sols = [found[i] for i in range(len(subs))]
        cols = {k for sol in sols if sol is not None for k, n in sol.replicas.items() if n > 0}
        backends = {stage: name for sol in sols if sol is not None
                    for stage, name in nested("services", sol.backends).items()}
        if any(sol is None or sol.best_bound is None for sol in sols):
            return ServicePlans(None, cols, backends)
        held = sum(mu[p.id] * p.devices_per_node * p.max_nodes for p in problem.pools if p.max_nodes is not None)
        bound = sum(sol.best_bound for sol in sols if sol is not None and sol.best_bound is not None)
        return ServicePlans(bound + orphan - held, cols, backends)
