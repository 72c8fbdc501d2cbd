"""Solving service by service: the union of the services' plans is the fleet's when it fits the shared rows.

Fleets whose services share only pool and power rows (device billing; every power term non-negative, see
services.decomposable) fall apart into one MILP per service once the shared rows are dropped. Each service keeps
its own pool and power rows, a relaxation of the fleet's (the other services' terms are non-negative), so
L = Σ_s L_s, the sum of the services' proven bounds, bounds the whole fleet, and when the union of the services'
plans meets the shared rows it is a fleet plan of cost U = Σ_s U_s, within (U − L)/U of optimal.

Time: the services whose start lies furthest above their floor per share variable first (where the pass cannot
reach every service, those it reaches close the most of the fleet's gap; 200 services at 30 s, alternating runs:
10.1% and 11.6%, against 13.2% and 12.3% small services first), in parallel threads (HiGHS releases the GIL), each
allowed a few even shares of what is left (easy ones use a fraction); then the services with the widest absolute
gap are solved again with the rest while the fleet's gap exceeds the target (a rerun keeps the better plan and the
higher bound, both valid). Within one service the pools rarely fill, so a column that a same-shaped, no dearer
column in a roomy pool beats is dropped first (prune.prune_roomy_pools), which keeps the service's optimum and its
bound; and HiGHS runs without root restarts there, and without its primal heuristics: each service starts from a
plan (its part of the start, or its own greedy plan) and its first small MILP on the LP's support mostly finds the
optimum, so what is left is the bound, which the heuristics do not move. (The 100 services of the 100 × 12 × 30
fleet, each alone on one core from no start: 47.0 s with them, 36.1 s without, the same optimum for every service.)
A repair, which must find a plan in shrunk pools, keeps them. A service with a configuration limit is solved
without it first: its binary rows are the hardest part of many a service's MILP, a plan within the limit is then
the service's, and only a plan that breaks it sends the service back to be solved with the limit.

When the union overruns a pool, a repair makes it fit (a plan, with no bound of its own): whole services move off
the overrun pools onto their own greedy plans elsewhere, those that cost least more per device they free first,
until the pools fit (a greedy plan per service, so it fits in a small reserve of the pass's time that the
services' solves leave where pools are bounded); then each service moved is planned again within what the others
leave while time is left. (100 × 12 × 30 with fixed pools at 30 s: one pool 41 devices over, 20 of 68 services
moved; 3.7% → 2.1%.) Where moving cannot make the pools fit, the services on them are planned again one by one
within what the others leave, most devices there first. Then, or when no plan came out, the whole fleet is
solved with the time left (strategies.whole), keeping the cheaper plan and the higher of its bound and L.

A start (a fleet plan, e.g. the greedy one) gives each service its part as the plan to beat and to start from;
a service that gets no plan of its own in time keeps its part. Before its first solve a service also plans
greedily alone with every role of its columns (a quick plan has unified replicas only) and starts from that
plan where it is cheaper. The pass keeps the cheapest union of the services' plans that fitted the shared rows
at any point (the start's parts fit together); while the newest plans overrun a pool, each service's new plan
takes its place in the kept union where it fits beside the others, so the plan reported keeps coming down.
When the services' final plans overrun a pool, the answer is that union, or the repaired one where it is
cheaper, with each service's newest plan swapped in where that still fits beside the others, largest saving
first: never dearer than a plan the pass already reported.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from planner.clock import Deadline
from planner.solve.backends import Backend, backend_for
from planner.solve.bounds import bucket_floor
from planner.solve.formulation.pool import overrun_pools
from planner.solve.formulation.power import overrun_domains
from planner.solve.formulation.simplicity import labels_of
from planner.solve.formulation.simplicity import violations as too_many_configurations
from planner.solve.incumbent import checked_greedy_plan, restrict
from planner.solve.problem import (
    Problem,
    Solution,
    SolveOptions,
    Status,
    empty_solution,
    expected_watts,
    nodes_used,
    plan_cost_usd_per_hour,
    pool_usage,
    share_variables,
    with_lower_bound,
)
from planner.solve.prune import prune_roomy_pools
from planner.solve.strategies.base import nested
from planner.solve.strategies.lagrange import SERVICE_PRICING_MIN_SHARE_VARIABLES
from planner.solve.strategies.services import ServiceRunner, service_problems
from planner.solve.strategies.whole import WholeStrategy
from planner.solve.table import with_columns

_INF = math.inf
# A service in the first pass may take this many even shares of the time left (most need a fraction).
_SERVICE_SHARES = 4.0
# Plans from a repair need only be within this gap of their shrunk pools.
_REPAIR_GAP = 0.02
# The services end a little before the deadline: a service's solve ends a moment after its own limit.
_SERVICES_SHARE = 0.96
# Where each service gets less than this many seconds (per worker) in the first pass, the first pass stops at
# _FIRST_PASS_GAP, so every service has a plan and a bound early; the refinement then closes the widest gaps.
# (Half the services of the 20-service synthetic fleet solve to optimal in under 0.35 s of one core.)
_FIRST_PASS_S = 0.5
_FIRST_PASS_GAP = 0.02
# A service of the first pass with a start and less than this left keeps its part of the start.
_LATE_S = 0.05
# Where pools are bounded, the services' solves leave time for a repair: this many seconds per service (what
# its greedy plan on the other pools takes: 17 ms a service of the 100 × 12 × 30 fleet), at most this share of
# the pass. The first pass always leaves it; the refinement only while the plans overrun a pool.
_REPAIR_S_PER_SERVICE = 0.02
_REPAIR_SHARE = 0.1

Shares = dict[tuple[str, int], float]


def overused(problem: Problem, replicas: dict[str, int], shares: Shares) -> tuple[set[str], set[str]]:
    """The pools and power domains whose shared rows a replica assignment breaks (empty: it fits)."""
    return overrun_pools(problem, replicas), overrun_domains(problem, replicas, shares)


def union(plans: Sequence[Solution | None]) -> tuple[dict[str, int], Shares, Shares]:
    """The replicas and shares of several services' plans together."""
    replicas: dict[str, int] = {}
    pre: Shares = {}
    dec: Shares = {}
    for plan in plans:
        if plan is not None:
            replicas.update(plan.replicas)
            pre.update(plan.prefill_share)
            dec.update(plan.decode_share)
    return replicas, pre, dec


@dataclass(frozen=True)
class _Outcome:
    """What the pass by service gives: a plan (or none), the services' bound L, whether it is final, and which
    backend ran each stage."""

    solution: Solution | None
    lower: float | None
    final: bool
    stages: dict[str, str]


def pruned_part(plan: Solution, whole: Problem, pruned: Problem | None = None) -> tuple[Problem, Solution | None]:
    """One service's problem pruned (``pruned``, else prune.prune_roomy_pools of ``whole``) and a fleet plan's
    part on it; where the plan runs columns the pruning dropped (dearer twins the fleet's tight pools needed),
    the service gets those back beside the pruned ones. Its columns then lie between the pruned and the whole
    set, so its optimum, and any bound on it, is still the service's. (100 × 12 × 30 with fixed pools: the quick
    plan runs a dropped column in 43 of the 100 services; with all their columns back, the services' MILPs
    have 46% more columns.)"""
    sub = prune_roomy_pools(whole) if pruned is None else pruned
    part = restrict(plan, sub, whole)
    if part is None and sub is not whole:
        running = {k for k, n in plan.replicas.items() if n > 0} | {c.key for c in sub.columns}
        rows = np.asarray([j for j, c in enumerate(whole.table.columns) if c.key in running], dtype=np.int64)
        sub = with_columns(whole, rows) if len(whole.table.columns) == len(whole.columns) else \
            replace(whole, columns=tuple(c for c in whole.columns if c.key in running))
        part = restrict(plan, sub, whole)
    if part is None:
        sub, part = whole, restrict(plan, whole, whole)
    return sub, part


def _without_limit(problem: Problem) -> Problem | None:
    """One service's problem without its configuration limit, where the limit adds rows (else None).

    Its n[c] ≤ M_c·y rows and binary y make the limit the hardest part of many a service's MILP, and most
    optimal plans stay within it anyway: solved without them, a plan within the limit is the service's (no
    dearer than any plan within it), and the bound holds either way."""
    d = problem.demands[0]
    if d.max_configurations is None or len(labels_of(problem, d.service)) <= d.max_configurations:
        return None
    return replace(problem, demands=(replace(d, max_configurations=None),))


class ByServiceStrategy:
    """Each service alone, repaired to fit the shared rows, with the whole fleet as fallback."""

    def __init__(self, options: SolveOptions, backend: Backend | None = None) -> None:
        self.options = options
        self.backend = backend or backend_for(options.backend)

    def solve(self, problem: Problem, deadline: Deadline, start: Solution | None = None) -> Solution:
        """The services' plans when they fit and are final; else the whole fleet, keeping the better of both."""
        t0 = deadline.now()
        out = _ServicePass(problem, self.options, self.backend, deadline, start).run()
        if out.solution is not None and out.final:
            return out.solution
        backup = out.solution  # the services' plans, repaired to fit together: kept if the whole does worse
        whole_start = backup if backup is not None else start
        sol = WholeStrategy(self.options, self.backend).solve(problem, deadline, whole_start)
        stages = {**out.stages, **sol.backends}
        sol = replace(sol, solve_seconds=deadline.now() - t0, backends=stages)
        if backup is not None and backup.objective is not None and (
                sol.objective is None or backup.objective < sol.objective):
            proved = sol.objective is not None or sol.status == "time_limit_no_solution"
            whole_bound = sol.best_bound if proved else None
            sol = replace(backup, best_bound=whole_bound, solve_seconds=deadline.now() - t0,
                          status="feasible", objective=backup.objective, backends=stages)
        if out.lower is not None:
            # The services' own bounds hold for the whole fleet too (the coupled model only adds rows).
            sol = with_lower_bound(sol, out.lower, self.options.relative_gap)
        return sol


class _ServicePass:
    """One pass over the services: their plans and bounds, refined and repaired by the deadline."""

    def __init__(self, problem: Problem, options: SolveOptions, backend: Backend, deadline: Deadline,
                 start: Solution | None = None) -> None:
        self.problem = problem
        self.opts = options
        self.backend = backend
        self.start = deadline.now()
        self.until = Deadline(self.start + (deadline.end - self.start) * _SERVICES_SHARE, deadline.clock)
        self.whole_subs, self.orphan = service_problems(problem)
        # Within one service the pools rarely fill, so a column that a cheaper one in a roomy pool beats can go
        # (not in a repair: there the pools shrink and the argument no longer holds).
        self.subs = [prune_roomy_pools(sp) for sp in self.whole_subs]
        self.k = len(self.subs)
        # Each service's part of the start: the plan to beat (pruned_part).
        self.best: list[Solution | None] = [None] * self.k
        for i in range(self.k if start is not None else 0):
            assert start is not None
            self.subs[i], self.best[i] = pruned_part(start, self.whole_subs[i], self.subs[i])
        self.sizes = [share_variables(sp) for sp in self.subs]
        # A service under a configuration limit is solved without it first (see _run_one).
        self.unlimited = [_without_limit(sp) for sp in self.subs]
        # The cheapest union of the services' plans that fitted the shared rows so far (the start's parts fit
        # together): where later plans overrun a pool, the answer is built from it, never worse than it.
        self.fitting: list[Solution | None] | None = None
        self.fitting_cost = _INF
        if start is not None:
            self._note()
        # Each service's bucket-by-bucket LP bound holds from the start; its own solves prove better ones.
        self.bounds = [bucket_floor(sp, 0) for sp in self.subs]
        self.pass_gap = options.relative_gap
        bounded = any(p.max_nodes is not None for p in problem.pools)
        self.reserve = min(_REPAIR_SHARE * (self.until.end - self.start), _REPAIR_S_PER_SERVICE * self.k) \
            if bounded and self.k > 1 else 0.0
        # When the services' solves end: the pass's end, less the time kept for a repair (see run).
        self.end = self.until.end
        self.runs = 0
        self.stages: dict[str, str] = {}
        self.lock = threading.Lock()
        # HiGHS lets go of the GIL while it solves, so services run side by side, one per thread.
        workers = min(options.threads, self.k) if backend.name == "highs" else 1
        self.runner = ServiceRunner(workers, _SERVICE_SHARES)

    def _sub(self, seconds: float, size: int, relative_gap: float | None = None,
             heuristics: bool = True) -> tuple[SolveOptions, Deadline]:
        """A service's options and deadline: ``seconds``, but not past the pass's end."""
        pricing = self.opts.pricing
        if pricing == "auto":
            pricing = "on" if size >= SERVICE_PRICING_MIN_SHARE_VARIABLES else "off"
        seconds = min(seconds, self.end - self.until.now() - 0.05)
        opts = replace(self.opts, pricing=pricing, decompose="off", highs_restart=False, progress=None,
                       highs_heuristics=heuristics and self.opts.highs_heuristics,
                       relative_gap=self.opts.relative_gap if relative_gap is None else relative_gap)
        return opts, Deadline.after(max(0.1, seconds), self.until.clock)

    def _solve(self, problem: Problem, size: int, seconds: float, prefix: str,
               relative_gap: float | None = None, start: Solution | None = None, heuristics: bool = True) -> Solution:
        opts, deadline = self._sub(seconds, size, relative_gap, heuristics)
        sol = WholeStrategy(opts, self.backend).solve(problem, deadline, start)
        with self.lock:
            self.stages.update(nested(prefix, sol.backends))
        return sol

    def _run_one(self, i: int, seconds: float) -> bool:
        """Solve service i again; keep the better plan and the higher bound. False: it has no plan at all."""
        with self.lock:
            self.runs += 1
        began = self.until.now()
        free = self.unlimited[i]
        sol = self._solve(self.subs[i] if free is None else free, self.sizes[i], seconds, "services",
                          relative_gap=self.pass_gap, start=self.best[i], heuristics=False)
        if free is not None and sol.objective is not None and too_many_configurations(self.subs[i], sol):
            # Its bound holds for the service (the limit only adds rows), its plan does not: solve again with
            # the limit, in what is left of the service's time, and from then on.
            with self.lock:
                self.unlimited[i] = None
                if sol.best_bound is not None:
                    self.bounds[i] = max(self.bounds[i], sol.best_bound)
            sol = self._solve(self.subs[i], self.sizes[i], seconds - (self.until.now() - began), "services",
                              relative_gap=self.pass_gap, start=self.best[i], heuristics=False)
        if sol.status == "infeasible" and self.best[i] is None:
            return False
        with self.lock:
            if sol.best_bound is not None:
                self.bounds[i] = max(self.bounds[i], sol.best_bound)
            old = self.best[i]
            if sol.objective is not None and (old is None or old.objective is None or sol.objective < old.objective):
                self.best[i] = sol
                self._note(i)
            self._report()
        return True

    def _first(self, i: int, seconds: float) -> bool:
        """Service i in the first pass; once the pass's time is up, a service with a part of the start keeps it
        (and its bucket bound) rather than run past the deadline."""
        if self.best[i] is not None and self.end - self.until.now() < _LATE_S:
            return True
        self._own_greedy(i)
        return self._run_one(i, seconds)

    def _own_greedy(self, i: int) -> None:
        """Service i's own greedy plan, every role of its columns in, where it beats the service's part of the
        start (a fleet's quick plan has unified replicas alone): a better plan to start from and to keep."""
        own = checked_greedy_plan(self.subs[i], self.until)
        with self.lock:
            old = self.best[i]
            if own is not None and own.objective is not None and (
                    old is None or old.objective is None or own.objective < old.objective - 1e-9):
                self.best[i] = own
                self._note(i)

    def _note(self, i: int | None = None) -> None:
        """Keep the services' plans as the cheapest that fit together where they are (under the lock while
        services run). Where they do not, service i's new plan takes its place in the kept plans if it fits
        beside them: where pools bind, the plan reported while the services run keeps coming down. (100 × 12 ×
        30 with fixed pools: the services' plans overrun a pool from the first ones on, and the reported plan
        stayed the quick one until the repair at the end.)"""
        if any(s is None or s.objective is None for s in self.best):
            return
        cost = sum(s.objective for s in self.best if s is not None and s.objective is not None)
        if cost < self.fitting_cost - 1e-9 and self._fits():
            self.fitting, self.fitting_cost = list(self.best), cost
            return
        if i is None or self.fitting is None:
            return
        new, old = self.best[i], self.fitting[i]
        if new is None or new.objective is None or old is None or old.objective is None \
                or new.objective >= old.objective - 1e-9:
            return
        trial = [*self.fitting[:i], new, *self.fitting[i + 1:]]
        if self._fits(trial):
            self.fitting, self.fitting_cost = trial, self.fitting_cost - (old.objective - new.objective)

    def _report(self) -> None:
        """The cheapest fleet plan the services' plans made so far (where any fitted) and the bound, to the
        progress record."""
        progress = self.opts.progress
        if progress is None:
            return
        plan = self.fitting_cost + self.orphan if self.fitting is not None else None
        progress.report(plan, self._lower_bound(), "services")

    def _batch(self, todo: list[int], stop: Callable[[], bool] | None = None) -> list[bool | None]:
        return self.runner.run(todo, self._run_one, self.until, stop)

    def _gaps(self) -> list[float]:
        out = []
        for i in range(self.k):
            sol = self.best[i]
            if sol is None or sol.objective is None or not math.isfinite(self.bounds[i]):
                out.append(_INF)
            else:
                out.append(max(0.0, sol.objective - self.bounds[i]))
        return out

    def _fleet_gap(self) -> float:
        g = self._gaps()
        if not all(math.isfinite(x) for x in g):
            return _INF
        total = sum(s.objective for s in self.best if s is not None and s.objective is not None) + self.orphan
        return sum(g) / max(abs(total), 1e-9)

    def _out_of_time(self) -> bool:
        return self.end - self.until.now() < 0.3

    def _refine(self) -> None:
        """Solve the services with the widest gaps again while the fleet's gap exceeds the target."""
        for _ in range(3):
            if self._fleet_gap() <= self.opts.relative_gap or self._out_of_time():
                break
            g = self._gaps()
            todo = sorted((i for i in range(self.k) if g[i] > 1e-9 * max(1.0, abs(self.bounds[i]))),
                          key=lambda i: -g[i])
            self._batch(todo, lambda: self._out_of_time() or self._fleet_gap() <= self.opts.relative_gap)

    def _lower_bound(self) -> float | None:
        return sum(self.bounds) + self.orphan if all(math.isfinite(b) for b in self.bounds) else None

    def _fits(self, plans: Sequence[Solution | None] | None = None) -> bool:
        """Whether the services' plans (``plans``, else their best) meet the shared rows together."""
        replicas, pre, dec = union(self.best if plans is None else plans)
        return not any(overused(self.problem, replicas, pre | dec))

    def _on(self, i: int, pools: set[str]) -> int:
        """The devices service i's plan runs on ``pools`` (memory devices included)."""
        plan = self.best[i]
        if plan is None:
            return 0
        return sum(n * ((c.devices if c.pool in pools else 0) + (c.memory_devices if c.memory_pool in pools else 0))
                   for c in self.whole_subs[i].columns for n in [plan.replicas.get(c.key, 0)] if n > 0)

    def _move_off(self, pools_over: set[str]) -> dict[int, float]:
        """Move whole services off the overrun pools onto their own greedy plans on the other pools, those that
        cost least more per device they free first, until the pools fit (a greedy plan per service: fast). The
        services moved, each with what its move costs more per hour (none where the moves do not make every
        shared row fit; then nothing changes)."""
        closed = tuple(replace(p, max_nodes=0) if p.id in pools_over else p for p in self.problem.pools)
        offers: list[tuple[float, int, Solution, float]] = []  # $/h more per device freed, service, plan, $/h more
        for i in range(self.k):
            plan, freed = self.best[i], self._on(i, pools_over)
            if plan is None or plan.objective is None or freed == 0:
                continue
            if self.until.end - self.until.now() < _LATE_S:
                break
            alt = checked_greedy_plan(replace(self.whole_subs[i], pools=closed), self.until)
            if alt is not None and alt.objective is not None:
                extra = alt.objective - plan.objective
                offers.append((extra / freed, i, alt, extra))
        trial = list(self.best)
        moved: dict[int, float] = {}
        for _, i, alt, extra in sorted(offers, key=lambda o: (o[0], o[1])):
            if not overrun_pools(self.problem, union(trial)[0]) & pools_over:
                break
            trial[i] = alt
            moved[i] = extra
        if not self._fits(trial):
            return {}
        self.best = trial
        self._note()
        return moved

    def _repair(self, pools_over: set[str]) -> bool:
        """Make the services' plans fit the pools they overrun. First whole services move off those pools
        (_move_off); then, while time is left, each service moved is planned again alone within what the others
        leave of the pools (a MILP from its greedy plan, kept where cheaper). Where moving is not enough, the
        services on the overrun pools, most devices there first, are planned that way instead until the plans
        fit. Its plans are the fleet's, its bounds are not (the pools shrank), so they are not kept. False: no
        fit."""
        moved = self._move_off(pools_over)
        if moved:  # the moves that cost most first: they have the most to win back
            targets = sorted(moved, key=lambda i: -moved[i])
        else:
            on = {i: self._on(i, pools_over) for i in range(self.k)}
            targets = sorted((i for i in range(self.k) if on[i] > 0), key=lambda i: -on[i])
        for j, i in enumerate(targets):
            if not moved and self._fits():
                break
            used = pool_usage(self.problem, union([plan for q, plan in enumerate(self.best) if q != i])[0])
            shrunk = tuple(
                p if p.max_nodes is None else
                replace(p, max_nodes=max(0, (p.max_nodes * p.devices_per_node - used[p.id]) // p.devices_per_node))
                for p in self.problem.pools)
            left = self.until.end - self.until.now()
            if left < 0.1:
                break
            sol = self._solve(replace(self.whole_subs[i], pools=shrunk), self.sizes[i], left / (len(targets) - j),
                              "repair", _REPAIR_GAP, start=self.best[i] if moved else None)
            old = self.best[i]
            if sol.objective is None:
                if moved:
                    continue
                break
            if not moved or old is None or old.objective is None or sol.objective < old.objective - 1e-9:
                self.best[i] = sol
                self._note()
        return self._fits()

    def _order(self) -> list[int]:
        """The first pass's order: most of the gap to its floor per share variable first (where the pass cannot
        reach every service, the ones it reaches close the most of the fleet's gap); services without a start,
        and ties, smallest first."""
        def worth(i: int) -> float:
            plan = self.best[i]
            if plan is None or plan.objective is None or not math.isfinite(self.bounds[i]):
                return _INF
            return (plan.objective - self.bounds[i]) / max(1, self.sizes[i])
        return sorted(range(self.k), key=lambda i: (-worth(i), self.sizes[i]))

    def run(self) -> _Outcome:
        """First pass, refinement, then a repair where the plans overrun a pool."""
        order = self._order()
        if (self.until.end - self.until.now()) * self.runner.workers / max(1, self.k) < _FIRST_PASS_S:
            self.pass_gap = max(self.opts.relative_gap, _FIRST_PASS_GAP)
        self.end = self.until.end - self.reserve
        first_pass = self.runner.run(order, self._first, Deadline(self.end, self.until.clock))
        self.pass_gap = self.opts.relative_gap
        for i, ok in zip(order, first_pass, strict=True):
            if ok is False:
                return _Outcome(empty_solution("infeasible", self.opts.backend, self.until.now() - self.start, 0, 0,
                                               f"service {self.problem.demands[i].service} alone has no plan",
                                               self.stages), None, True, self.stages)
        # The refinement keeps the time for a repair only while the plans overrun a pool.
        self.end = self.until.end - (self.reserve if overrun_pools(self.problem, union(self.best)[0]) else 0.0)
        self._refine()
        self.end = self.until.end
        if any(s is None or s.objective is None for s in self.best):
            return _Outcome(None, self._lower_bound(), False, self.stages)
        replicas, pre, dec = union(self.best)
        pools_over, domains_over = overused(self.problem, replicas, pre | dec)
        repaired = bool(pools_over or domains_over)
        if repaired:
            if not domains_over:
                self._repair(pools_over)
            # The cheapest plans that fitted together: the repaired ones, or earlier ones where those were cheaper.
            if not self._merge_fitting():
                return _Outcome(None, self._lower_bound(), False, self.stages)
        else:
            self._refine()
            if not self._fits():
                self._merge_fitting()  # the refined plans no longer fit together; earlier ones did (bounds stay)
        return _Outcome(self._solution(repaired), self._lower_bound(), not repaired, self.stages)

    def _merge_fitting(self) -> bool:
        """The cheapest plans that fitted together so far (_note; at the least the start's parts), each replaced
        by the service's newer plan where that is cheaper and still fits beside the others, largest saving
        first. False: no plans ever fitted together."""
        if self.fitting is None:
            return False
        base = self.fitting
        chosen = list(base)

        def saving(i: int) -> float:
            new, old = self.best[i], base[i]
            return 0.0 if new is None or new.objective is None or old is None or old.objective is None \
                else old.objective - new.objective

        for i in sorted(range(self.k), key=lambda i: -saving(i)):
            if saving(i) <= 0:
                break
            trial = [*chosen[:i], self.best[i], *chosen[i + 1:]]
            if self._fits(trial):
                chosen = trial
        self.best = chosen
        return True

    def _solution(self, repaired: bool) -> Solution:
        """The union of the services' plans as the fleet's, against the sum of their bounds."""
        replicas, pre, dec = union(self.best)
        lower = self._lower_bound()
        sols = [s for s in self.best if s is not None]
        obj = sum(s.objective for s in sols if s.objective is not None) + self.orphan
        bound = min(obj, lower) if lower is not None else None
        gap = max(0.0, (obj - bound) / max(abs(obj), 1e-9)) if bound is not None else None
        proven = not repaired and all(s.status == "optimal" for s in sols)
        status: Status = "optimal" if proven or (gap is not None and gap <= self.opts.relative_gap + 1e-12) \
            else "feasible"
        nodes = nodes_used(self.problem, pool_usage(self.problem, replicas))
        return Solution(
            status=status, backend=self.opts.backend, objective=obj, best_bound=bound, relative_gap=gap,
            solve_seconds=self.until.now() - self.start, variables=sum(s.variables for s in sols),
            constraints=sum(s.constraints for s in sols), replicas=replicas, prefill_share=pre, decode_share=dec,
            nodes={p: n for p, n in nodes.items() if n > 0},
            expected_watts=expected_watts(self.problem, replicas, pre | dec, nodes),
            cost_usd_per_hour=plan_cost_usd_per_hour(self.problem, replicas),
            message=f"{sols[0].message.split('; ')[0]}; bound of the services; solved by service ({self.k} services, "
                    f"{self.runs} runs{', repaired to fit the pools' if repaired else ''})",
            backends=dict(self.stages),
        )
