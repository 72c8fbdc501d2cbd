"""The fleet MILP's vocabulary as values: pools, columns, demands, power budgets, options and the answer, with
the plain arithmetic every stage shares (devices a plan uses, its $/h, its expected watts)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import TYPE_CHECKING, Literal

import numpy as np

from planner.roles import DECODE_ONLY_ROLES
from planner.schema import Role, SolverName
from planner.solve.progress import Reporter

if TYPE_CHECKING:
    from planner.solve.table import ColumnTable
from planner.solve.tiers import Tiers, credit_split

Billing = Literal["device", "node"]
# The backends a caller can name: the fleet file's solvers plus HiGHS driven through PuLP (for cross-checks).
BackendName = Literal[SolverName, "pulp-highs"]
Status = Literal["optimal", "feasible", "infeasible", "time_limit_no_solution", "error"]


@dataclass(frozen=True)
class PoolSupply:
    """Where devices can be had: node shape, availability, price and power figures."""

    id: str
    zone: str
    power_domain: str | None
    devices_per_node: int
    max_nodes: int | None  # None: unlimited
    usd_per_device_hour: float
    billing: Billing = "device"
    nameplate_watts_per_node: float = 0.0  # devices × TDP + server overhead
    node_idle_watts: float = 0.0  # server overhead outside the devices, per used node


@dataclass(frozen=True)
class Column:
    """One candidate configuration of one service in one pool."""

    key: str
    service: str
    role: Role
    pool: str
    devices: int
    capacity_rps: tuple[float, ...]  # per bucket of the service: req/s one replica sustains (0 = cannot)
    idle_watts: float = 0.0  # per replica
    active_watts: float = 0.0  # per replica at full load
    memory_pool: str | None = None
    memory_devices: int = 0
    label: str = ""  # the configuration (device, TP, PP, role, memory devices): what the simplicity limit counts
    handoff_gbitps: float = 0.0  # prefill and decode-only columns: line rate at which a replica moves KV caches


@dataclass(frozen=True)
class Demand:
    """A service's traffic per length bucket and its availability needs."""

    service: str
    bucket_rates_rps: tuple[float, ...]
    bucket_labels: tuple[str, ...] = ()
    min_replicas: int = 1
    spread_zones: int = 1
    tokens_per_s: float = 0.0
    max_configurations: int | None = None  # at most this many configurations (column labels); None: no limit
    cross_zone_handoff: bool = False  # a prefill may hand its KV caches to a decode in another zone
    # $/hour of moving bucket b's KV caches across zones if all of them crossed (0: free or not allowed)
    handoff_usd_per_hour: tuple[float, ...] = ()


@dataclass(frozen=True)
class PowerBudget:
    """A power domain's budget over its member pools."""

    id: str
    budget_watts: float
    oversubscription_ratio: float = 1.0
    expected_share: float = 1.0


@dataclass(frozen=True)
class Problem:
    """Everything the MILP needs, as values."""

    pools: tuple[PoolSupply, ...]
    columns: tuple[Column, ...]
    demands: tuple[Demand, ...]
    power_budgets: tuple[PowerBudget, ...] = ()
    headroom: float = 1.0
    current_replicas: Mapping[str, int] = field(default_factory=dict)
    churn_usd_per_replica_change: float = 0.0
    tiers: Tiers | None = None  # reserved devices, commitment, spot losses (planner.solve.tiers)

    @cached_property
    def by_key(self) -> dict[str, Column]:
        """Each column by its key."""
        return {c.key: c for c in self.columns}

    @cached_property
    def by_service(self) -> dict[str, tuple[Column, ...]]:
        """Each service's columns, in column order (the checks that look at one service at a time read these
        rather than scan every column per service)."""
        out: dict[str, list[Column]] = {}
        for c in self.columns:
            out.setdefault(c.service, []).append(c)
        return {s: tuple(cols) for s, cols in out.items()}

    @cached_property
    def table(self) -> ColumnTable:
        """The columns as arrays (computed once per problem; see planner.solve.table)."""
        from planner.solve.table import ColumnTable

        return ColumnTable.of(self)


@dataclass(frozen=True)
class SolveOptions:
    """Backend and stopping rules."""

    backend: BackendName = "highs"
    # The whole solve's budget when the caller passes no deadline (see planner.solve.solve).
    time_limit_s: float = 30.0
    relative_gap: float = 0.005
    threads: int = 2
    pricing: Literal["auto", "on", "off"] = "auto"  # price columns in on large models (strategies.pricing)
    # The x ≤ n rows lift the LP bound (column pricing always uses them) but slow HiGHS's search for plans, so
    # by default the MILP itself runs without them; the per-bucket rows help it cut.
    link_rows: bool = False
    bucket_rows: bool = True
    # Solve each service on its own when the fleet allows it (strategies.by_service): a single branch-and-bound
    # over twenty independent services proves its bound far more slowly than twenty small ones.
    decompose: Literal["auto", "on", "off"] = "auto"
    # Rounded work rows per service and phase (formulation.work): valid for integer plans, lift the LP bound.
    work_rows: bool = True
    # HiGHS restarts its root after fixing columns by reduced cost and runs the cut loop again. Each restart
    # costs a whole root for little bound: without them the quickstart takes 0.50 s CPU instead of 0.91 s, the
    # synthetic 5- and 10-service fleets 4.8 s and 5.2 s instead of 8.0 s and 6.0 s (same plans), and the
    # 20-service one ends its 10 s at 1.27% instead of 1.66%; Mélange's cases are unchanged.
    highs_restart: bool = False
    # HiGHS's primal heuristics (feasibility jump, RINS, RENS, root reduced cost) look for plans. A solve that
    # starts from the plan to beat (a marginal-value probe starts from the answer, which still fits) or on a
    # small sub-model needs only the bound proved: without them the quickstart's probe takes half the CPU.
    highs_heuristics: bool = True
    # Where improvements to the plan and the bound are reported as they come (see planner.solve.progress).
    progress: Reporter | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Solution:
    """The solver's answer, with an honest status and gap, and which backend ran each stage."""

    status: Status
    backend: str  # the backend asked for
    objective: float | None
    best_bound: float | None
    relative_gap: float | None
    solve_seconds: float
    variables: int
    constraints: int
    replicas: dict[str, int]
    prefill_share: dict[tuple[str, int], float]
    decode_share: dict[tuple[str, int], float]
    nodes: dict[str, int]
    expected_watts: dict[str, float]
    cost_usd_per_hour: float | None
    message: str = ""
    # stage → backend that ran it ("milp", "pricing-lp", "services/milp", ...): some stages need HiGHS
    # (LP duals, its incumbent callback, threads) whatever backend was asked for.
    backends: dict[str, str] = field(default_factory=dict)


def empty_solution(status: Status, backend: str, seconds: float, variables: int, constraints: int,
                   message: str, backends: Mapping[str, str] | None = None) -> Solution:
    """An answer without a plan."""
    return Solution(status, backend, None, None, None, seconds, variables, constraints, {}, {}, {}, {}, {}, None,
                    message, dict(backends or {}))


def with_lower_bound(solution: Solution, bound: float, relative_gap: float) -> Solution:
    """``solution`` against the higher of its own bound and ``bound`` (another bound that holds for its problem),
    capped at its cost, with its gap to match; optimal once that gap is within ``relative_gap``."""
    if solution.objective is None:
        return solution
    own = solution.best_bound if solution.best_bound is not None else -math.inf
    best = min(solution.objective, max(own, bound))
    gap = max(0.0, (solution.objective - best) / max(abs(solution.objective), 1e-9))
    status: Status = "optimal" if gap <= relative_gap + 1e-12 else solution.status
    return replace(solution, best_bound=best, relative_gap=gap, status=status)


def uncovered_buckets(problem: Problem) -> list[tuple[str, int, str]]:
    """(service, bucket, phase) with positive rate that no column can serve within the SLO."""
    by_service: dict[str, list[Column]] = {d.service: [] for d in problem.demands}
    for c in problem.columns:
        if c.service in by_service:
            by_service[c.service].append(c)
    return [(d.service, b, phase) for d in problem.demands for b, phase in _uncovered(d, by_service[d.service])]


def demand_uncovered(problem: Problem, d: Demand) -> list[tuple[int, str]]:
    """(bucket, phase) of one demand with positive rate that no column can serve within the SLO."""
    return _uncovered(d, problem.by_service.get(d.service, ()))


def _uncovered(d: Demand, cols: Sequence[Column]) -> list[tuple[int, str]]:
    out = []
    for b, rate in enumerate(d.bucket_rates_rps):
        if rate <= 0:
            continue
        uni = any(c.capacity_rps[b] > 0 for c in cols if c.role is Role.UNIFIED)
        pre = any(c.capacity_rps[b] > 0 for c in cols if c.role is Role.PREFILL)
        dec = any(c.capacity_rps[b] > 0 for c in cols if c.role in DECODE_ONLY_ROLES)
        if not uni and not pre:
            out.append((b, "prefill"))
        if not uni and not dec:
            out.append((b, "decode"))
    return out


def pool_usage(problem: Problem, replicas: Mapping[str, int]) -> dict[str, int]:
    """Devices used per pool by a replica assignment (compute plus attention-offload memory devices)."""
    used: dict[str, int] = {p.id: 0 for p in problem.pools}
    columns = problem.by_key
    for key, r in replicas.items():
        c = columns.get(key)
        if c is None or not r:
            continue
        used[c.pool] += r * c.devices
        if c.memory_pool is not None:
            used[c.memory_pool] += r * c.memory_devices
    return used


def nodes_used(problem: Problem, used: Mapping[str, int]) -> dict[str, int]:
    """Whole nodes per pool that hold ``used`` devices."""
    return {p.id: math.ceil(used[p.id] / p.devices_per_node - 1e-9) for p in problem.pools}


def billed_devices(problem: Problem, used: Mapping[str, int]) -> dict[str, int]:
    """Devices each pool bills: those used (device billing) or its whole nodes' (node billing)."""
    return {p.id: used[p.id] if p.billing == "device" else
            p.devices_per_node * math.ceil(used[p.id] / p.devices_per_node) for p in problem.pools}


def plan_cost_usd_per_hour(problem: Problem, replicas: Mapping[str, int]) -> float:
    """$/hour of a replica assignment: devices for device billing, whole nodes for node billing, less what
    reserved devices and the commitment already pay (planner.solve.tiers)."""
    billed = billed_devices(problem, pool_usage(problem, replicas))
    prices = {p.id: p.usd_per_device_hour for p in problem.pools}
    total = sum(prices[p] * n for p, n in billed.items())
    if problem.tiers is not None:
        total -= credit_split(problem.tiers, prices, billed).usd_per_hour(prices)
    return total


def expected_watts(
    problem: Problem,
    replicas: Mapping[str, int],
    shares: Mapping[tuple[str, int], float],
    nodes: Mapping[str, int],
) -> dict[str, float]:
    """Expected watts per power domain: idle per replica, active above idle for the busy part, node idle."""
    pools = {p.id: p for p in problem.pools}
    rates = {d.service: d.bucket_rates_rps for d in problem.demands}
    out: dict[str, float] = {k.id: 0.0 for k in problem.power_budgets}
    if not out:
        return out
    columns = problem.by_key
    busy: dict[str, float] = {}
    for (key, b), x in shares.items():
        c = columns.get(key)
        if c is not None and c.service in rates and c.capacity_rps[b] > 0:
            busy[key] = busy.get(key, 0.0) + rates[c.service][b] / c.capacity_rps[b] * x
    for key in sorted(set(replicas) | set(busy)):
        c = columns.get(key)
        if c is None or c.service not in rates:
            continue
        dom = pools[c.pool].power_domain
        if dom is None or dom not in out:
            continue
        out[dom] += replicas.get(key, 0) * c.idle_watts + busy.get(key, 0.0) * (c.active_watts - c.idle_watts)
    for p in problem.pools:
        if p.power_domain in out:
            out[p.power_domain] += p.node_idle_watts * nodes.get(p.id, 0)
    return out


def share_variables(problem: Problem) -> int:
    """How many share variables the model will have: (column, bucket) pairs with traffic and capacity."""
    t = problem.table
    return int(np.count_nonzero((t.caps > 0) & (t.rates[t.service] > 0)))


def column_price(c: Column, pools: Mapping[str, PoolSupply]) -> float:
    """$/hour of one replica of a column: its devices and memory devices at their pools' prices."""
    return c.devices * pools[c.pool].usd_per_device_hour + (
        c.memory_devices * pools[c.memory_pool].usd_per_device_hour if c.memory_pool else 0.0)


def bucket_name(d: Demand, b: int) -> str:
    """A bucket's label, or its index in words."""
    return d.bucket_labels[b] if b < len(d.bucket_labels) else f"bucket {b}"
