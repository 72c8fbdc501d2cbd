"""Fleets as sets of services: when dropping the shared rows leaves one model per service, the per-service
problems, the guess whether shared rows bind, and one runner that solves service problems in threads by a
deadline (solving by service and the Lagrangian pricing both use it)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar

import numpy as np

from planner.clock import Deadline
from planner.solve.formulation.work import phase_members
from planner.solve.problem import Column, Problem

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


def _likely_plan(problem: Problem, service: str, members: list[Column]) -> tuple[Column, int] | None:
    """The column that carries a phase alone most cheaply, with the replicas that takes."""
    pools = {p.id: p for p in problem.pools}
    lam = np.asarray({d.service: d for d in problem.demands}[service].bucket_rates_rps, dtype=float)
    best: tuple[float, Column, int] | None = None
    for c in members:
        cap = np.asarray(c.capacity_rps, dtype=float)
        if np.any((lam > 0) & (cap <= 0)):
            continue
        live = lam > 0
        replicas = max(1, math.ceil(float(np.sum(lam[live] / cap[live])) / problem.headroom - 1e-9))
        price = replicas * (c.devices * pools[c.pool].usd_per_device_hour + c.memory_devices * (
            pools[c.memory_pool].usd_per_device_hour if c.memory_pool else 0.0))
        if best is None or price < best[0]:
            best = (price, c, replicas)
    return None if best is None else (best[1], best[2])


def roomy(problem: Problem) -> bool:
    """Whether each service's likely plan (per phase, the column that carries it alone most cheaply, with
    the replicas that takes) leaves every pool and power budget at most ROOMY_SHARE full. A guess, used
    only to pick the method; exactness never depends on it."""
    pools = {p.id: p for p in problem.pools}
    devices: dict[str, float] = {p.id: 0.0 for p in problem.pools}
    watts: dict[str, float] = {k.id: 0.0 for k in problem.power_budgets}
    for (service, _), members in phase_members(problem).items():
        likely = _likely_plan(problem, service, members)
        if likely is None:
            continue
        c, replicas = likely
        devices[c.pool] += replicas * c.devices
        if c.memory_pool:
            devices[c.memory_pool] += replicas * c.memory_devices
        dom = pools[c.pool].power_domain
        if dom is not None:
            watts[dom] = watts.get(dom, 0.0) + replicas * max(c.active_watts, c.idle_watts)
    for p in problem.pools:
        if p.max_nodes is not None and devices[p.id] > ROOMY_SHARE * p.max_nodes * p.devices_per_node:
            return False
    return all(watts[k.id] <= ROOMY_SHARE * k.expected_share * k.budget_watts for k in problem.power_budgets)


def service_problems(problem: Problem) -> tuple[list[Problem], float]:
    """One problem per service (its columns, its running replicas) and the churn of running keys no column has."""
    cols: dict[str, list[Column]] = {}
    for c in problem.columns:
        cols.setdefault(c.service, []).append(c)
    out = []
    for d in problem.demands:
        mine = tuple(cols.get(d.service, ()))
        keys = {c.key for c in mine}
        out.append(replace(problem, columns=mine, demands=(d,),
                           current_replicas={k: v for k, v in problem.current_replicas.items() if k in keys}))
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
