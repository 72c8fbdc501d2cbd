"""What every constraint family shares: the model being built (``Built``) and the record a family files about
itself (``Family``: its violation check, the elastic slacks whose shortfall it words, and its marginal-value
probe). A family whose rows no plan can meet before any solve also words that (``structural``, per demand:
cover, min_replicas, spread)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from planner.roles import SERVING_ROLES
from planner.schema import Finding, Role
from planner.solve.formulation.matrix import Matrix
from planner.solve.problem import Column, Demand, PoolSupply, Problem, Solution

INF = math.inf
# A plan meets a row when it is off by no more than this (shares are continuous, solvers round).
TOLERANCE = 1e-5


@dataclass
class Built:
    """The matrix plus where each problem quantity lives in it, filled family by family (see build)."""

    problem: Problem
    elastic: bool = False  # every resource row gets a priced slack (for explanations)
    link: bool = True
    bucket_rows: bool = False
    work_rows: bool = False
    m: Matrix = field(default_factory=Matrix)
    n: dict[str, int] = field(default_factory=dict)  # column key → replicas variable
    shares: dict[str, tuple[np.ndarray, range]] = field(default_factory=dict)  # key → (buckets, variables)
    nodes: dict[str, int] = field(default_factory=dict)  # pool → nodes variable
    slack: dict[str, int] = field(default_factory=dict)  # elastic mode: constraint name → slack variable
    pool_row: dict[str, int] = field(default_factory=dict)
    power_rows: dict[str, tuple[int, int]] = field(default_factory=dict)  # domain → (expected, nameplate)
    cap_row: dict[str, int] = field(default_factory=dict)  # column key → its capacity row
    loads: dict[str, np.ndarray] = field(default_factory=dict)  # column key → rate/capacity per share variable
    link_rows: dict[str, range] = field(default_factory=dict)  # column key → its x ≤ n rows
    churn_var: dict[str, int] = field(default_factory=dict)  # column key → |n − current| variable
    zones: dict[tuple[str, str], int] = field(default_factory=dict)  # (service, zone) → z variable (spread)
    role_flags: dict[tuple[str, str], int] = field(default_factory=dict)  # (service, role class) → u (zone_roles)
    config_flags: dict[tuple[str, str], int] = field(default_factory=dict)  # (service, label) → y (simplicity)
    # (service, bucket, zone) → e, the share that hands off across zones (handoff, cross-zone services)
    crossing: dict[tuple[str, int, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.pools: dict[str, PoolSupply] = {p.id: p for p in self.problem.pools}
        self.demands: dict[str, Demand] = {d.service: d for d in self.problem.demands}
        # The columns that get variables (their service has a demand), in the problem's order.
        self.columns: list[Column] = [c for c in self.problem.columns if c.service in self.demands]
        self.columns_of: dict[str, list[Column]] = {d.service: [] for d in self.problem.demands}
        for c in self.columns:
            self.columns_of[c.service].append(c)
        self.disaggregated = {c.service for c in self.problem.columns if c.role is not Role.UNIFIED}
        # Elastic slacks cost far more than any real device, so they are used only where nothing else works.
        self.big = 1e3 * max([p.usd_per_device_hour * p.devices_per_node for p in self.problem.pools] + [1.0])

    def serving(self, service: str) -> list[tuple[int, str]]:
        """(replicas variable, zone) of the service's serving columns, in order."""
        return [(self.n[c.key], self.pools[c.pool].zone) for c in self.columns_of.get(service, [])
                if c.role in SERVING_ROLES]

    def elastic_slack(self, name: str) -> int:
        """A priced slack variable for row ``name`` (elastic mode)."""
        sv = self.m.var(0.0, INF, self.big, False)
        self.slack[name] = sv
        return sv


@dataclass(frozen=True)
class Probe:
    """A binding row of a plan, and the problem with that row loosened by one unit (for marginal values)."""

    binding: Finding
    relaxed: Problem
    constraint: str
    unit: str  # what one unit more is, in words ("one more node in pool a")
    service: str | None = None  # the one service the loosened row belongs to (None: rows shared by services)


Violations = Callable[[Problem, Solution], list[str]]
# (problem, slack kind, row target, slack value, replicas of the relaxed plan) → the finding in words
Shortfall = Callable[[Problem, str, str, float, Mapping[str, int]], Finding]
Probes = Callable[[Problem, Solution], list[Probe]]


@dataclass(frozen=True)
class Family:
    """One constraint family as the rest of the solver sees it, besides the rows it adds."""

    name: str
    violations: Violations  # how a plan breaks the family's rows, in words (empty: it does not)
    slacks: tuple[str, ...] = ()  # elastic slack kinds whose shortfall it explains
    shortfall: Shortfall | None = None
    probes: Probes | None = None  # binding rows of a plan with the problem one unit looser


def users(problem: Problem, replicas: Mapping[str, int], pool: str) -> str:
    """Words for which services use a pool in a replica assignment, biggest first."""
    by_service: dict[str, int] = {}
    for c in problem.columns:
        r = replicas.get(c.key, 0)
        if r and c.pool == pool:
            by_service[c.service] = by_service.get(c.service, 0) + r * c.devices
        if r and c.memory_pool == pool:
            by_service[c.service] = by_service.get(c.service, 0) + r * c.memory_devices
    parts = [f"{s} ({n} devices)" for s, n in sorted(by_service.items(), key=lambda kv: -kv[1])]
    return ", ".join(parts) if parts else "no service"


def busy(problem: Problem, solution: Solution) -> dict[str, float]:
    """Replicas' worth of load each column carries in a plan: Σ_b λ_b/cap_b · x_b."""
    rates = {d.service: d.bucket_rates_rps for d in problem.demands}
    shares = solution.prefill_share | solution.decode_share
    return {c.key: sum(rates[c.service][b] / c.capacity_rps[b] * shares.get((c.key, b), 0.0)
                       for b in range(len(c.capacity_rps)) if c.capacity_rps[b] > 0)
            for c in problem.columns if c.service in rates}
