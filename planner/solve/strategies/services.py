"""Fleets as sets of services: when dropping the shared rows leaves one model per service, the per-service
problems, the guess whether shared rows bind, and one runner that solves service problems in threads by a
deadline (solving by service and the Lagrangian pricing both use it)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from planner.clock import Deadline
from planner.solve.problem import Problem
from planner.solve.table import DECODE, PREFILL, UNIFIED, with_columns

T = TypeVar("T")

# Auto mode solves by service only where the services' likely plans fill at most this share of any pool or
# power budget (see roomy): where shared rows bind, the whole model's bound is far the stronger.
ROOMY_SHARE = 0.5


def decomposable(problem: Problem) -> bool:
    """Whether dropping the rows shared by services leaves a relaxation whose parts are the services.

    Needs device billing (a node-billed pool's ceil(Σ devices / D) is not a sum over services), one demand per
    service, and every power term non-negative (so a service alone never draws more than the fleet).
    """
    services = [d.service for d in problem.demands]
    if len(services) < 2 or len(set(services)) != len(services):
        return False
    if any(p.billing != "device" for p in problem.pools):
        return False
    negative = any(c.idle_watts < 0 or c.active_watts < c.idle_watts for c in problem.columns) or any(
        p.node_idle_watts < 0 or p.nameplate_watts_per_node < 0 for p in problem.pools)
    return not (problem.power_budgets and negative)


def _likely_columns(problem: Problem) -> list[tuple[int, int]]:
    """Per (service, phase) the column (table index) that carries the phase alone most cheaply, with the
    replicas that takes (A_prefill, and A_decode for disaggregated services; see work.phase_members)."""
    t = problem.table
    out: list[tuple[int, int]] = []
    live = t.rates[t.service] > 0
    serves_all = np.all((t.caps > 0) | ~live, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        busy = np.where(live & (t.caps > 0), t.rates[t.service] / np.where(t.caps > 0, t.caps, 1.0), 0.0).sum(axis=1)
    replicas = np.maximum(1, np.ceil(busy / problem.headroom - 1e-9))
    price = np.where(serves_all, replicas * t.price, np.inf)
    for cols in t.by_service:
        role = t.role[cols]
        phases = [role != DECODE] + ([role != PREFILL] if (role != UNIFIED).any() else [])
        for members in phases:
            if not members.any():
                continue
            cost = np.where(members, price[cols], np.inf)
            j = int(np.argmin(cost))
            if np.isfinite(cost[j]):
                out.append((int(cols[j]), int(replicas[cols[j]])))
    return out


def roomy(problem: Problem) -> bool:
    """Whether each service's likely plan (per phase, the column that carries it alone most cheaply, with
    the replicas that takes) leaves every pool and power budget at most ROOMY_SHARE full. A guess, used
    only to pick the method; exactness never depends on it."""
    t = problem.table
    devices = np.zeros(len(problem.pools) + 1)
    domain = {k.id: i for i, k in enumerate(problem.power_budgets)}
    watts = np.zeros(len(problem.power_budgets) + 1)
    pool_domain = np.asarray([domain.get(p.power_domain or "", -1) for p in problem.pools] + [-1])
    for j, replicas in _likely_columns(problem):
        devices[t.pool[j]] += replicas * t.devices[j]
        devices[t.memory_pool[j]] += replicas * t.memory_devices[j]  # index −1: the spare last entry
        watts[pool_domain[t.pool[j]]] += replicas * max(t.active_watts[j], t.idle_watts[j])
    for i, p in enumerate(problem.pools):
        if p.max_nodes is not None and devices[i] > ROOMY_SHARE * p.max_nodes * p.devices_per_node:
            return False
    return all(watts[i] <= ROOMY_SHARE * k.expected_share * k.budget_watts
               for i, k in enumerate(problem.power_budgets))


def service_problem(problem: Problem, i: int) -> Problem:
    """Service i's problem (index in problem.demands): its columns and its running replicas."""
    t = problem.table
    rows = t.by_service[i]
    keys = {t.columns[j].key for j in rows}
    return with_columns(problem, rows, (problem.demands[i],), current_replicas={
        k: v for k, v in problem.current_replicas.items() if k in keys})


def service_problems(problem: Problem) -> tuple[list[Problem], float]:
    """One problem per service (its columns, its running replicas) and the churn of running keys no column has."""
    out = [service_problem(problem, i) for i in range(len(problem.demands))]
    all_keys = {c.key for c in problem.columns}
    orphan = sum(v for k, v in problem.current_replicas.items() if k not in all_keys)
    return out, problem.churn_usd_per_replica_change * orphan


class ServiceRunner:
    """Solve service problems in threads by a deadline: each task, when it starts, gets ``shares`` even shares
    of the time left to the tasks not started yet (easy services finish well within theirs)."""

    def __init__(self, workers: int, shares: float, min_left_s: float = -math.inf) -> None:
        self.workers = max(1, workers)
        self.shares = shares
        self.min_left_s = min_left_s  # a task starting with less time than this left does not run

    def run(self, todo: Sequence[int], task: Callable[[int, float], T], until: Deadline,
            stop: Callable[[], bool] | None = None) -> list[T | None]:
        """task(i, seconds) for each i in todo; None for a task skipped (stop() said so, or no time left)."""
        lock = threading.Lock()
        started = 0

        def one(i: int) -> T | None:
            nonlocal started
            with lock:
                if stop is not None and stop():
                    return None
                left = until.end - until.now()
                share = self.shares * left * self.workers / max(1, len(todo) - started)
                started += 1
            if left < self.min_left_s:
                return None
            return task(i, min(left, share))

        if self.workers == 1:
            return [one(i) for i in todo]
        with ThreadPoolExecutor(self.workers) as pool:
            return list(pool.map(one, todo))
