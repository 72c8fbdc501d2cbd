r"""Single-device-type baselines: what the fleet would cost on one device type, as operators often run it.

Both lift availability, zone spread, power budgets and churn (``unlimited``), so with device billing nothing
couples the services and each baseline is a sum over services:

* **single type** on device type t: unified replicas of one TP/PP per service. One shape serving every bucket
  needs N = max(min_s, ⌈Σ_b λ_b/(h·cap_b)⌉) replicas (its pools unlimited, the cheapest pool takes them all),
  so the cost per service is a closed form, min over the shapes and pools of π·N.
* **homogeneous** on device type t: any TP/PP and role (no offload), a MILP per service over t's columns.
  Services' LP bounds and greedy plans rank the types first (Σ LP ≤ cost ≤ Σ greedy); only types whose bound
  is below the best cost found are solved exactly, cheapest bound first, each service from its greedy plan.

With node billing the services share nodes, so each type's restriction is solved as one MILP instead. Each
stage stops at the deadline; a baseline whose types were not all settled says how far it may be off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from planner.clock import Deadline
from planner.solve.bounds import bucket_floor
from planner.solve.incumbent import checked_greedy_plan
from planner.solve.problem import Problem, SolveOptions
from planner.solve.prune import prune_roomy_pools
from planner.solve.strategies.services import service_problems
from planner.solve.strategies.whole import WholeStrategy
from planner.solve.table import UNIFIED

_INF = math.inf


@dataclass(frozen=True)
class Shape:
    """What a baseline needs to know of a column: its device type, TP, PP and whether it offloads."""

    device: str
    tp: int
    pp: int
    offload: bool


@dataclass(frozen=True)
class TypePlan:
    """A baseline's answer on one device type: its cost, a bound on it (None: not proven), its replicas."""

    device: str
    cost: float
    bound: float | None
    replicas: dict[str, int]

    @property
    def gap(self) -> float | None:
        """How far the cost may be above the baseline's true cost on this type (None: unknown)."""
        return None if self.bound is None else max(0.0, (self.cost - self.bound) / max(abs(self.cost), 1e-9))


def unlimited(problem: Problem) -> Problem:
    """The same demand with unlimited availability, no zone spread and no power budgets (what one type costs)."""
    return replace(problem, pools=tuple(replace(p, max_nodes=None) for p in problem.pools), power_budgets=(),
                   demands=tuple(replace(d, spread_zones=1) for d in problem.demands),
                   current_replicas={}, churn_usd_per_replica_change=0.0)


def _device_billed(problem: Problem) -> bool:
    return all(p.billing == "device" for p in problem.pools)


def _restricted(problem: Problem, keep: np.ndarray) -> Problem:
    t = problem.table
    return replace(problem, columns=tuple(t.columns[j] for j in np.nonzero(keep)[0]))


def single_type(problem: Problem, shapes: Mapping[str, Shape], options: SolveOptions,
                deadline: Deadline) -> TypePlan | None:
    """The cheapest single-type plan (see module docstring) over every device type; None where no type serves
    every service (or the deadline came first)."""
    base = unlimited(problem)
    t = base.table
    shape = [shapes[c.key] for c in t.columns]
    tp_pp = np.asarray([s.tp * 1_000 + s.pp for s in shape], dtype=np.int64)
    unified = (t.role == UNIFIED) & np.asarray([not s.offload for s in shape], dtype=bool)
    best: TypePlan | None = None
    for dev in sorted({s.device for s in shape}):
        if deadline.expired():
            break
        on_dev = unified & np.asarray([s.device == dev for s in shape], dtype=bool)
        found = _single(base, dev, on_dev, tp_pp)
        if found is None:
            continue
        plan, chosen = found
        if not _device_billed(base):  # nodes shared between services: solve the chosen shapes together
            plan = _solve_whole(_restricted(base, chosen), dev, options, deadline) or plan
        if best is None or plan.cost < best.cost:
            best = plan
    return best


def _single(base: Problem, dev: str, on_dev: np.ndarray, tp_pp: np.ndarray) -> tuple[TypePlan, np.ndarray] | None:
    """Each service on its cheapest unified shape of ``dev`` (first TP/PP on ties, cheapest pool), and the
    columns of the chosen shapes; None where a service has no such shape."""
    t = base.table
    replicas: dict[str, int] = {}
    cost = 0.0
    chosen = np.zeros(len(t.columns), dtype=bool)
    for i, d in enumerate(base.demands):
        cols = t.by_service[i]
        live = t.rates[i] > 0
        caps = t.caps[cols][:, live]
        full = on_dev[cols] & np.all(caps > 0, axis=1)
        if not full.any():
            return None
        busy = (t.rates[i, live] / np.where(caps > 0, caps, 1.0)).sum(axis=1)
        n = np.maximum(d.min_replicas, np.ceil(busy / base.headroom - 1e-9))
        price = np.where(full, n * t.price[cols], _INF)
        low = price <= price.min() + 1e-9 * max(1.0, float(price.min()))
        shape = int(tp_pp[cols][low].min())
        j = int(np.argmin(np.where(low & (tp_pp[cols] == shape), price, _INF)))
        chosen[cols[full & (tp_pp[cols] == shape)]] = True
        cost += float(price[j])
        if n[j] > 0:
            replicas[t.columns[cols[j]].key] = int(n[j])
    return TypePlan(dev, cost, cost, replicas), chosen


def _solve_whole(problem: Problem, device: str, options: SolveOptions, deadline: Deadline) -> TypePlan | None:
    """One type's restriction solved as one MILP (node billing couples the services)."""
    sol = WholeStrategy(replace(options, progress=None, decompose="off")).solve(
        problem, deadline, checked_greedy_plan(problem, deadline))
    if sol.objective is None:
        return None
    return TypePlan(device, sol.objective, sol.best_bound, dict(sol.replicas))


def homogeneous(problem: Problem, shapes: Mapping[str, Shape], options: SolveOptions,
                deadline: Deadline) -> TypePlan | None:
    """The cheapest plan on one device type with any TP/PP and role (no offload), see module docstring."""
    base = unlimited(problem)
    t = base.table
    shape = [shapes[c.key] for c in t.columns]
    no_offload = np.asarray([not s.offload for s in shape], dtype=bool)
    ranked: list[tuple[float, str, np.ndarray]] = []
    for dev in sorted({s.device for s in shape}):
        mask = no_offload & np.asarray([s.device == dev for s in shape], dtype=bool)
        floor = sum(bucket_floor(base, i, mask) for i in range(len(base.demands)))
        if math.isfinite(floor):
            ranked.append((floor, dev, mask))
    ranked.sort(key=lambda r: (r[0], r[1]))
    best: TypePlan | None = None
    lower = _INF  # the least any type could cost: its bound once solved, its LP floor until then
    for floor, dev, mask in ranked:
        if best is not None and floor >= best.cost * (1 - options.relative_gap):
            lower = min(lower, floor)
            break
        if deadline.expired():
            lower = min(lower, floor)
            break
        plan = _one_type(_restricted(base, mask), dev, options, deadline)
        if plan is None:
            continue
        lower = min(lower, plan.bound if plan.bound is not None else floor)
        if best is None or plan.cost < best.cost:
            best = plan
    if best is None:
        return None
    return replace(best, bound=min(best.cost, lower) if math.isfinite(lower) else None)


def _one_type(problem: Problem, device: str, options: SolveOptions, deadline: Deadline) -> TypePlan | None:
    """One type's homogeneous plan: per service from its greedy plan (device billing), else one MILP (node
    billing, or tier rows, which tie the services together through the commitment and spot losses)."""
    if not _device_billed(problem) or problem.tiers is not None:
        return _solve_whole(problem, device, options, deadline)
    opts = replace(options, progress=None, decompose="off", pricing="off", highs_restart=False,
                   highs_heuristics=False)
    subs, _ = service_problems(problem)
    cost, bound = 0.0, 0.0
    replicas: dict[str, int] = {}
    for sub in subs:
        sub = prune_roomy_pools(sub)
        start = checked_greedy_plan(sub)
        if start is None or start.objective is None:
            return None
        sol = start
        if not deadline.expired():
            found = WholeStrategy(opts).solve(sub, deadline, start)
            if found.objective is not None and found.objective <= start.objective:
                sol = found
            elif found.best_bound is not None:
                sol = replace(start, best_bound=found.best_bound)
        assert sol.objective is not None
        cost += sol.objective
        bound = bound + sol.best_bound if sol.best_bound is not None else -_INF
        replicas.update(sol.replicas)
    return TypePlan(device, cost, bound if math.isfinite(bound) else None, replicas)
