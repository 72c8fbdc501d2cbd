r"""The fleet MILP: which configurations, how many replicas, and who serves which length bucket.

Works on abstract columns (one candidate configuration of one service in one pool, with its per-bucket
capacity and power already computed), so it is pure math over values: no I/O, no clocks.

Sets
  P  pools p (zone_p, domain_p, devices_per_node D_p, max_nodes M_p, price π_p, billing)
  C  columns c (service s_c, role r_c, pool p_c, devices d_c, memory pool q_c, memory devices m_c)
  S  services s with buckets b, rate λ_{s,b} (req/s); B_s^+ = {b : λ_{s,b} > 0}
  K  power domains k (budget W_k, oversubscription ratio ρ_k, expected share σ_k)
  U_s = {c : s_c = s, r_c = unified};  Pf_s = {c : r_c = prefill};  Dc_s = {c : r_c ∈ {decode, decode+offload}}
  Serve_s = U_s ∪ Dc_s (replicas that answer requests: they count for min replicas and zone spread)
  cap_{c,b}  req/s one replica of c sustains on bucket b within the SLO (0: no variable for (c,b))

Variables (names as in the code)
  n[c]      ∈ Z≥0          replicas of column c
  x[c,b]    ∈ [0,1]        share of bucket b of s_c served by c: for a unified column it covers both
                           phases; for a prefill column it is x^P, for a decode column x^D
  N[p]      ∈ Z, 0..M_p    nodes used in pool p (only where a pool row is needed)
  z[s,g]    ∈ {0,1}        service s has a serving replica in zone g (only when spread_s > 1)
  δ[c]      ≥ 0            |n[c] − current_c| (only for columns with current_c > 0 and churn cost χ > 0)

Constraints
  cover_prefill[s,b]:  Σ_{c∈U_s} x[c,b] + Σ_{c∈Pf_s} x[c,b] = 1           ∀ s, b ∈ B_s^+
  cover_decode[s,b]:   Σ_{c∈U_s} x[c,b] + Σ_{c∈Dc_s} x[c,b] = 1           ∀ s, b ∈ B_s^+
                       (one row when s has no disaggregated columns: the two are the same)
  capacity[c]:         busy[c] := Σ_b λ_{s_c,b}/cap_{c,b} · x[c,b] ≤ h · n[c]   (h = headroom)
  link[c,b]:           x[c,b] ≤ n[c]   (implied: n is integer and x ≤ 1; lifts the LP bound, used in pricing)
  bucket_prefill[s,b]: Σ_{c∈U_s∪Pf_s} h·cap_{c,b} n[c] ≥ λ_{s,b}   (implied by cover + capacity; the solver
  bucket_decode[s,b]:  Σ_{c∈U_s∪Dc_s} h·cap_{c,b} n[c] ≥ λ_{s,b}    derives knapsack-cover cuts from them)
  pool[p]:             Σ_{c: p_c=p} d_c n[c] + Σ_{c: q_c=p} m_c n[c] ≤ D_p N[p]
  power_expected[k]:   Σ_{c: domain(p_c)=k} (idle_c n[c] + (active_c − idle_c) busy[c])
                       + Σ_{p∈k} node_idle_p N[p] ≤ σ_k W_k
  power_nameplate[k]:  Σ_{p∈k} nameplate_p N[p] ≤ ρ_k W_k
  min_replicas[s]:     Σ_{c∈Serve_s} n[c] ≥ min_s
  spread_zone[s,g]:    z[s,g] ≤ Σ_{c∈Serve_s, zone(p_c)=g} n[c];   spread[s]: Σ_g z[s,g] ≥ spread_s
  churn[c]:            δ[c] ≥ n[c] − current_c;  δ[c] ≥ current_c − n[c]
  work[s,φ,r]:         Σ_{c∈A_φ} min(⌈β⌉, ⌊ρ_c⌋ + min(1, (ρ_c − ⌊ρ_c⌋)/f)) n[c] ≥ ⌈β⌉   for phase φ with cover set
                       A_φ (U_s ∪ Pf_s, or U_s ∪ Dc_s) and a few reference columns r ∈ A_φ that serve every
                       bucket: u_b = 1/cap_{r,b}, ρ_c = max_b u_b cap_{c,b}, β = Σ_b λ_{s,b} u_b / h, f = β − ⌊β⌋.
                       Weighting cover and capacity rows by u gives Σ_c ρ_c n[c] ≥ β, valid for the LP; as n
                       is integer its mixed-integer rounding is valid too and cuts fractional replicas off
                       (a service needing 1.3 replicas' work of its best column pays for two). See _work_cuts.

Objective (USD per hour)
  min Σ_{p device-billed} π_p (Σ_{c: p_c=p} d_c n[c] + Σ_{c: q_c=p} m_c n[c]) + Σ_{p node-billed} π_p D_p N[p]
      + χ (Σ_{c: current_c=0} n[c] + Σ_{c: current_c>0} δ[c] + Σ_{current keys without a column} current)

Large models (≥ PRICING_MIN_SHARE_VARIABLES share variables) are solved by pricing columns in: the LP with
a few cheap columns per bucket, priced slacks on the shared rows, and left-out columns joining while their
reduced cost is negative; then the MILP on the priced columns, warm-started from a MILP on the LP's support.
The reported bound is max(L, min(B_R, L + min_{c left out} g_c)): B_R the restricted MILP's bound, L the
full LP bound and g_c the least a replica of c adds to L (see _solve_by_pricing); every plan either uses only
restricted columns or some left-out one, so it holds for the whole problem and the gap is honest.
Where the services share only pool and power rows but the pools bind (so solving by service, below, does not
apply), the pool rows are relaxed with the LP's duals μ as prices: each service's own MILP at prices π + μ
gives L(μ) = Σ_s (bound of s) − Σ_p μ_p D_p M_p, a bound for any μ ≥ 0 that counts each service's whole
replicas (on the synthetic 20-service fleet: 2294 against an LP bound of 2283). The LP may then stop before it
has priced every column (its value bounds nothing then), and the first restricted MILP takes the services'
plans with the LP's support: their columns fit together where each plan alone overruns a pool. See
_lagrangian_plans.

Fleets whose services share only pool and power rows (device billing; every power term non-negative) are
solved service by service (see _solve_by_service): without the shared rows the model falls apart into one
MILP per service, so Σ_s (bound of s) bounds the fleet, and the union of the services' plans, when it meets
the shared rows, is a fleet plan with an honest gap. When it does not, the whole model is solved and the sum
of the services' bounds still counts. Services run in parallel threads (HiGHS releases the GIL). Within one
service the pools rarely fill: a column that a same-shaped, no dearer column in a pool that no plan costing at
most U (a plan of the service that fits) can fill beats on every bucket is dropped (see _prune_roomy_pools),
which keeps the service's optimum and so its bound; and HiGHS runs without root restarts there.

The pool row counts devices, not packing: a replica's placement on whole nodes is the placer's job. A
decode+offload column's watts are booked to its compute pool's power domain. The CP-SAT backend has no
continuous variables, so shares are integers in units of 1/SHARE_UNITS_CPSAT (10⁻⁶) and every inequality row
holding shares is widened by Σ|coefficient|·10⁻⁶, the most that rounding the continuous optimum's shares can
move it. Precision: a CP-SAT plan meets capacity and power rows to within that widening (a load error of at
most 10⁻⁶ per unit of a bucket's load, in replicas), and its cost matches the continuous optimum.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np

from planner.roles import DECODE_ONLY_ROLES, DECODE_ROLES, PREFILL_ROLES, SERVING_ROLES
from planner.schema import Finding, Role

Billing = Literal["device", "node"]
Backend = Literal["highs", "cbc", "pulp-highs", "cpsat", "scip"]
Status = Literal["optimal", "feasible", "infeasible", "time_limit_no_solution", "error"]

SHARE_UNITS_CPSAT = 1_000_000
_INF = math.inf
_SERVING = SERVING_ROLES
_DECODING = DECODE_ONLY_ROLES


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
    label: str = ""


@dataclass(frozen=True)
class Demand:
    """A service's traffic per length bucket and its availability needs."""

    service: str
    bucket_rates_rps: tuple[float, ...]
    bucket_labels: tuple[str, ...] = ()
    min_replicas: int = 1
    spread_zones: int = 1
    tokens_per_s: float = 0.0


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


@dataclass(frozen=True)
class SolveOptions:
    """Backend and stopping rules."""

    backend: Backend = "highs"
    time_limit_s: float = 30.0
    relative_gap: float = 0.005
    threads: int = 2
    pricing: Literal["auto", "on", "off"] = "auto"  # price columns in on large models (see _solve_by_pricing)
    # The x ≤ n rows lift the LP bound (column pricing always uses them) but slow HiGHS's search for plans, so
    # by default the MILP itself runs without them; the per-bucket rows help it cut.
    link_rows: bool = False
    bucket_rows: bool = True
    # Solve each service on its own when the fleet allows it (see _solve_by_service): a single branch-and-bound
    # over twenty independent services proves its bound far more slowly than twenty small ones.
    decompose: Literal["auto", "on", "off"] = "auto"
    # Rounded work rows per service and phase (see _work_cuts): valid for integer plans, lift the LP bound.
    work_rows: bool = True
    # HiGHS restarts its root after fixing columns by reduced cost and runs the cut loop again. On one
    # service's model (few replicas, many shares) each restart costs a whole root for little bound, so
    # _solve_by_service turns it off; on the whole fleet the restarts pay.
    highs_restart: bool = True


@dataclass(frozen=True)
class Solution:
    """The solver's answer, with an honest status and gap."""

    status: Status
    backend: str
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


# ----------------------------------------------------------------------------------------------- model


@dataclass
class _Matrix:
    """A MILP in row form, filled by the builder and read by every backend."""

    col_lb: list[float] = field(default_factory=list)
    col_ub: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)
    integer: list[bool] = field(default_factory=list)
    row_lb: list[float] = field(default_factory=list)
    row_ub: list[float] = field(default_factory=list)
    row_names: list[str] = field(default_factory=list)
    nz_row: list[int] = field(default_factory=list)
    nz_col: list[int] = field(default_factory=list)
    nz_val: list[float] = field(default_factory=list)
    offset: float = 0.0

    def var(self, lb: float, ub: float, cost: float, integer: bool) -> int:
        self.col_lb.append(lb)
        self.col_ub.append(ub)
        self.cost.append(cost)
        self.integer.append(integer)
        return len(self.cost) - 1

    def vars(self, count: int, lb: float, ub: float) -> range:
        start = len(self.cost)
        self.col_lb.extend([lb] * count)
        self.col_ub.extend([ub] * count)
        self.cost.extend([0.0] * count)
        self.integer.extend([False] * count)
        return range(start, start + count)

    def row(self, name: str, cols: Sequence[int], vals: Sequence[float], lb: float, ub: float) -> int:
        r = len(self.row_lb)
        self.row_lb.append(lb)
        self.row_ub.append(ub)
        self.row_names.append(name)
        self.nz_row.extend([r] * len(cols))
        self.nz_col.extend(cols)
        self.nz_val.extend(vals)
        return r


@dataclass(frozen=True)
class _Arrays:
    """The same MILP as numpy arrays, for slicing and for HiGHS."""

    col_lb: np.ndarray
    col_ub: np.ndarray
    cost: np.ndarray
    integer: np.ndarray
    row_lb: np.ndarray
    row_ub: np.ndarray
    nz_row: np.ndarray
    nz_col: np.ndarray
    nz_val: np.ndarray
    offset: float

    @staticmethod
    def of(m: _Matrix | _Arrays) -> _Arrays:
        if isinstance(m, _Arrays):
            return m
        return _Arrays(
            np.asarray(m.col_lb, dtype=float), np.asarray(m.col_ub, dtype=float), np.asarray(m.cost, dtype=float),
            np.asarray(m.integer, dtype=bool), np.asarray(m.row_lb, dtype=float), np.asarray(m.row_ub, dtype=float),
            np.asarray(m.nz_row, dtype=np.int64), np.asarray(m.nz_col, dtype=np.int64),
            np.asarray(m.nz_val, dtype=float), m.offset,
        )

    def matrix(self) -> _Matrix:
        """Back to row form, for the backends that add variables one by one."""
        return _Matrix(
            self.col_lb.tolist(), self.col_ub.tolist(), self.cost.tolist(), self.integer.tolist(),
            self.row_lb.tolist(), self.row_ub.tolist(), [""] * len(self.row_lb), self.nz_row.tolist(),
            self.nz_col.tolist(), self.nz_val.tolist(), self.offset,
        )


@dataclass
class _Built:
    """The matrix plus where each problem quantity lives in it."""

    m: _Matrix
    n: dict[str, int]
    shares: dict[str, tuple[np.ndarray, range]]  # column key → (bucket indices, variable indices)
    nodes: dict[str, int]
    slack: dict[str, int]  # elastic mode: constraint name → slack variable
    pool_row: dict[str, int]
    power_rows: dict[str, tuple[int, int]]
    cap_row: dict[str, int] = field(default_factory=dict)  # column key → its capacity row
    loads: dict[str, np.ndarray] = field(default_factory=dict)  # column key → rate/capacity per share variable
    link_rows: dict[str, range] = field(default_factory=dict)  # column key → its x ≤ n rows
    churn_var: dict[str, int] = field(default_factory=dict)  # column key → |n − current| variable


def _pool_needs_nodes(pool: PoolSupply, domains: set[str]) -> bool:
    return pool.billing == "node" or pool.max_nodes is not None or (pool.power_domain in domains)


# Per service and phase, the work rows (see _work_cuts) are written for this many reference columns.
_WORK_REFERENCES = 2
_WORK_SAFETY = 1e-9


def _work_cuts(rates: np.ndarray, caps: np.ndarray, price: np.ndarray, headroom: float,
               references: int = _WORK_REFERENCES,
               groups: np.ndarray | None = None) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """Rounded work rows of one service's phase: (member indices, coefficients, right-hand side) each.

    caps is members × buckets (req/s, 0: cannot). With a reference column r, u_b = 1/cap_{r,b} (0 where r
    cannot serve b) prices a request of bucket b in r-replica-seconds, so the phase's work is
    W = Σ_b λ_b u_b and a replica of column c does at most ρ_c = max_b u_b cap_{c,b} of it per second:
    Σ_b λ_b u_b x_{c,b} = Σ_b (λ_b/cap_{c,b}) x_{c,b} · u_b cap_{c,b} ≤ ρ_c · h n_c by c's capacity row, and the
    cover row sums the left side over the phase's columns to W. So Σ_c ρ_c n_c ≥ β := W/h holds, and since n
    is integer so does its mixed-integer rounding with f = β − ⌊β⌋ > 0, coefficients capped at ⌈β⌉ (one replica
    with a coefficient that large meets the row alone):
        Σ_c min(⌈β⌉, ⌊ρ_c⌋ + min(1, (ρ_c − ⌊ρ_c⌋)/f)) n_c ≥ ⌈β⌉.
    (ρ is rounded up and β down by a relative 10⁻⁹ first, which only weakens the row before rounding.) The
    references are the columns that carry the whole phase alone most cheaply, that many from each group
    (groups: a label per member, e.g. its role; one group when None).
    """
    out: list[tuple[np.ndarray, np.ndarray, float]] = []
    live = rates > 0
    if not live.any() or caps.size == 0:
        return out
    lam = rates[live]
    cap = caps[:, live]
    full = np.all(cap > 0, axis=1)
    if not full.any():
        return out
    with np.errstate(divide="ignore"):
        alone = np.where(full, price * np.sum(lam / np.where(cap > 0, cap, 1.0), axis=1), _INF)
    labels = np.zeros(len(price), dtype=np.int64) if groups is None else groups
    refs: list[int] = []
    for g in np.unique(labels):
        ranked = [int(r) for r in np.argsort(np.where(labels == g, alone, _INF), kind="stable")[:references]]
        refs.extend(r for r in ranked if full[r] and labels[r] == g)
    for r in refs:
        u = 1.0 / cap[r]
        rho = np.max(cap * u, axis=1) * (1.0 + _WORK_SAFETY)
        beta = float(np.dot(lam, u)) / headroom * (1.0 - _WORK_SAFETY)
        f = beta - math.floor(beta)
        if f < 1e-3:
            continue
        rhs = float(math.ceil(beta))
        # A coefficient above the right-hand side can come down to it: with n integer, one such replica
        # meets the row either way.
        coef = np.minimum(rhs, np.floor(rho) + np.minimum(1.0, (rho - np.floor(rho)) / f))
        keep = np.nonzero(coef > 1e-12)[0]
        out.append((keep, coef[keep], rhs))
    return out


def _build(problem: Problem, elastic: bool = False, link: bool = True, bucket_rows: bool = False,
           work_rows: bool = False) -> _Built:
    """Assemble the matrix; in elastic mode every resource row gets a priced slack for explanations."""
    m = _Matrix()
    pools = {p.id: p for p in problem.pools}
    demands = {d.service: d for d in problem.demands}
    budgets = {k.id: k for k in problem.power_budgets}
    churn = problem.churn_usd_per_replica_change
    current = problem.current_replicas
    slack: dict[str, int] = {}
    # Elastic slacks cost far more than any real device, so they are used only where nothing else works.
    big = 1e3 * max([p.usd_per_device_hour * p.devices_per_node for p in problem.pools] + [1.0])

    n: dict[str, int] = {}
    shares: dict[str, tuple[np.ndarray, range]] = {}
    cap_row: dict[str, int] = {}
    loads: dict[str, np.ndarray] = {}
    link_rows: dict[str, range] = {}
    churn_var: dict[str, int] = {}
    cover_p: dict[tuple[str, int], tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    cover_d: dict[tuple[str, int], tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    knap_p: dict[tuple[str, int], tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    knap_d: dict[tuple[str, int], tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    disaggregated = {c.service for c in problem.columns if c.role is not Role.UNIFIED}
    pool_terms: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    power_terms: dict[str, tuple[list[int], list[float]]] = defaultdict(lambda: ([], []))
    serving: dict[str, list[tuple[int, str]]] = defaultdict(list)
    work: dict[tuple[str, str], list[tuple[int, np.ndarray, float, int]]] = defaultdict(list)

    for c in problem.columns:
        d = demands.get(c.service)
        pool = pools[c.pool]
        if d is None:
            continue
        price = pool.usd_per_device_hour * c.devices if pool.billing == "device" else 0.0
        if c.memory_pool is not None and c.memory_devices:
            mpool = pools[c.memory_pool]
            if mpool.billing == "device":
                price += mpool.usd_per_device_hour * c.memory_devices
        cur = current.get(c.key, 0)
        if churn > 0 and cur == 0:
            price += churn
        ub = _INF
        if pool.max_nodes is not None and not elastic:
            ub = math.floor(pool.max_nodes * pool.devices_per_node / c.devices)
        nv = m.var(0.0, ub, price, True)
        n[c.key] = nv
        if churn > 0 and cur > 0:
            dv = m.var(0.0, _INF, churn, False)
            churn_var[c.key] = dv
            m.row(f"churn_up[{c.key}]", [dv, nv], [1.0, -1.0], -float(cur), _INF)
            m.row(f"churn_down[{c.key}]", [dv, nv], [1.0, 1.0], float(cur), _INF)
        rates = np.asarray(d.bucket_rates_rps, dtype=float)
        caps = np.asarray(c.capacity_rps, dtype=float)
        if caps.shape != rates.shape:
            raise ValueError(f"column {c.key}: {caps.size} capacities for {rates.size} buckets")
        bk = np.nonzero((rates > 0) & (caps > 0))[0]
        xs = m.vars(len(bk), 0.0, 1.0)
        shares[c.key] = (bk, xs)
        load = rates[bk] / caps[bk]
        xs_list = list(xs)
        cap_row[c.key] = m.row(f"capacity[{c.key}]", [*xs_list, nv], [*load.tolist(), -problem.headroom], -_INF, 0.0)
        loads[c.key] = load
        # n is integer, so a column that carries any share of a bucket has a whole replica: x ≤ n. Implied by
        # the integer model, it lifts the LP bound where small buckets would otherwise ride on 0.1 of a replica.
        first_link = len(m.row_lb)
        for xv in xs_list if link else ():
            m.row("link", [xv, nv], [1.0, -1.0], -_INF, 0.0)
        link_rows[c.key] = range(first_link, len(m.row_lb))
        for b, xv in zip(bk.tolist(), xs_list, strict=True):
            if c.role in PREFILL_ROLES:
                cover_p[(c.service, b)][0].append(xv)
                knap_p[(c.service, b)][0].append(nv)
                knap_p[(c.service, b)][1].append(problem.headroom * float(caps[b]))
            if c.role in DECODE_ROLES:
                cover_d[(c.service, b)][0].append(xv)
                knap_d[(c.service, b)][0].append(nv)
                knap_d[(c.service, b)][1].append(problem.headroom * float(caps[b]))
        unified = int(c.role is Role.UNIFIED)
        if c.role in PREFILL_ROLES:
            work[(c.service, "prefill")].append((nv, caps, price, unified))
        if c.role in DECODE_ROLES and c.service in disaggregated:
            work[(c.service, "decode")].append((nv, caps, price, unified))
        pool_terms[c.pool][0].append(nv)
        pool_terms[c.pool][1].append(float(c.devices))
        if c.memory_pool is not None and c.memory_devices:
            pool_terms[c.memory_pool][0].append(nv)
            pool_terms[c.memory_pool][1].append(float(c.memory_devices))
        if pool.power_domain is not None:
            cols, vals = power_terms[pool.power_domain]
            cols.append(nv)
            vals.append(c.idle_watts)
            cols.extend(xs_list)
            vals.extend((load * (c.active_watts - c.idle_watts)).tolist())
        if c.role in _SERVING:
            serving[c.service].append((nv, pool.zone))

    if churn > 0:
        keys = {c.key for c in problem.columns}
        m.offset += churn * sum(v for k, v in current.items() if k not in keys)

    for d in problem.demands:
        for b, rate in enumerate(d.bucket_rates_rps):
            if rate <= 0:
                continue
            both = d.service not in disaggregated
            for name, cover in (("cover_prefill", cover_p), ("cover_decode", cover_d)):
                cols = cover[(d.service, b)][0] if (d.service, b) in cover else []
                m.row(f"{name}[{d.service},{b}]", cols, [1.0] * len(cols), 1.0, 1.0)
                if both:
                    break
            if bucket_rows:
                # Implied by coverage and capacity: the replicas able to serve a bucket carry its whole rate.
                # Written out, the solver derives knapsack-cover cuts from it.
                for name, knap in (("bucket_prefill", knap_p), ("bucket_decode", knap_d)):
                    cols, vals = knap.get((d.service, b), ([], []))
                    m.row(f"{name}[{d.service},{b}]", cols, vals, rate, _INF)
                    if both:
                        break
        srv = serving.get(d.service, [])
        if d.min_replicas > 0:
            cols = [v for v, _ in srv]
            vals = [1.0] * len(cols)
            if elastic:
                sv = m.var(0.0, _INF, big, False)
                slack[f"min_replicas[{d.service}]"] = sv
                cols, vals = [*cols, sv], [*vals, 1.0]
            m.row(f"min_replicas[{d.service}]", cols, vals, float(d.min_replicas), _INF)
        if d.spread_zones > 1:
            zones = sorted({p.zone for p in problem.pools})
            zvars = []
            for g in zones:
                zv = m.var(0.0, 1.0, 0.0, True)
                zvars.append(zv)
                zc = [v for v, zone in srv if zone == g]
                m.row(f"spread_zone[{d.service},{g}]", [zv, *zc], [1.0] + [-1.0] * len(zc), -_INF, 0.0)
            cols, vals = zvars, [1.0] * len(zvars)
            if elastic:
                sv = m.var(0.0, _INF, big, False)
                slack[f"spread[{d.service}]"] = sv
                cols, vals = [*cols, sv], [*vals, 1.0]
            m.row(f"spread[{d.service}]", cols, vals, float(d.spread_zones), _INF)

    for (service, phase), members in work.items() if work_rows else ():
        # Valid for every integer plan (see _work_cuts); they lift the LP bound where a service needs a few
        # whole replicas and the relaxation gets by with a fraction of one more.
        rates = np.asarray(demands[service].bucket_rates_rps, dtype=float)
        vars_ = np.asarray([v for v, _, _, _ in members], dtype=np.int64)
        caps = np.asarray([cp for _, cp, _, _ in members], dtype=float)
        prices = np.asarray([pr for _, _, pr, _ in members], dtype=float)
        groups = np.asarray([g for _, _, _, g in members], dtype=np.int64)
        cuts = _work_cuts(rates, caps, prices, problem.headroom, _WORK_REFERENCES, groups)
        for j, (keep, coef, rhs) in enumerate(cuts):
            m.row(f"work[{service},{phase},{j}]", vars_[keep].tolist(), coef.tolist(), rhs, _INF)

    nodes: dict[str, int] = {}
    pool_row: dict[str, int] = {}
    for p in problem.pools:
        if not _pool_needs_nodes(p, set(budgets)) or p.id not in pool_terms:
            continue
        ub = _INF if p.max_nodes is None else float(p.max_nodes)
        cost = p.usd_per_device_hour * p.devices_per_node if p.billing == "node" else 0.0
        if elastic and p.max_nodes is not None:
            nv = m.var(0.0, _INF, cost, True)
            sv = m.var(0.0, _INF, big, False)
            slack[f"pool[{p.id}]"] = sv
            m.row(f"pool_nodes[{p.id}]", [nv, sv], [1.0, -1.0], -_INF, float(p.max_nodes))
        else:
            nv = m.var(0.0, ub, cost, True)
        nodes[p.id] = nv
        cols, vals = pool_terms[p.id]
        pool_row[p.id] = m.row(f"pool[{p.id}]", [*cols, nv], [*vals, -float(p.devices_per_node)], -_INF, 0.0)

    power_rows: dict[str, tuple[int, int]] = {}
    for k in problem.power_budgets:
        cols, vals = list(power_terms[k.id][0]), list(power_terms[k.id][1])
        ncols = [nodes[p.id] for p in problem.pools if p.power_domain == k.id and p.id in nodes]
        nplate = [p.nameplate_watts_per_node for p in problem.pools if p.power_domain == k.id and p.id in nodes]
        nidle = [p.node_idle_watts for p in problem.pools if p.power_domain == k.id and p.id in nodes]
        cols += ncols
        vals += nidle
        ncols2, nvals2 = list(ncols), list(nplate)
        if elastic:
            # Slack in kW keeps the penalty comparable with a missing device.
            s1 = m.var(0.0, _INF, big, False)
            s2 = m.var(0.0, _INF, big, False)
            slack[f"power_expected[{k.id}]"] = s1
            slack[f"power_nameplate[{k.id}]"] = s2
            cols, vals = [*cols, s1], [*vals, -1000.0]
            ncols2, nvals2 = [*ncols2, s2], [*nvals2, -1000.0]
        r1 = m.row(f"power_expected[{k.id}]", cols, vals, -_INF, k.expected_share * k.budget_watts)
        r2 = m.row(f"power_nameplate[{k.id}]", ncols2, nvals2, -_INF, k.oversubscription_ratio * k.budget_watts)
        power_rows[k.id] = (r1, r2)
    return _Built(m, n, shares, nodes, slack, pool_row, power_rows, cap_row, loads, link_rows, churn_var)


# -------------------------------------------------------------------------------------------- backends


@dataclass(frozen=True)
class _RawResult:
    status: Status
    values: np.ndarray | None
    objective: float | None
    best_bound: float | None
    message: str = ""
    row_dual: np.ndarray | None = None


_QUIET_LOCK = threading.Lock()
_QUIET_STATE: dict[str, int] = {"depth": 0, "saved": -1, "devnull": -1}


@contextmanager
def _quiet_stdout() -> Iterator[None]:
    """Silence C-level stdout while a solver runs: HiGHS 1.12 prints debug lines there that would corrupt a
    JSON answer on our stdout. Process-wide while it lasts; reentrant, so solves may run in threads (the first
    one in redirects, the last one out restores)."""
    with _QUIET_LOCK:
        if _QUIET_STATE["depth"] == 0:
            sys.stdout.flush()
            try:
                saved = os.dup(1)
            except OSError:
                saved = -1
            if saved >= 0:
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                _QUIET_STATE["saved"], _QUIET_STATE["devnull"] = saved, devnull
        _QUIET_STATE["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_LOCK:
            _QUIET_STATE["depth"] -= 1
            if _QUIET_STATE["depth"] == 0 and _QUIET_STATE["saved"] >= 0:
                os.dup2(_QUIET_STATE["saved"], 1)
                os.close(_QUIET_STATE["saved"])
                os.close(_QUIET_STATE["devnull"])
                _QUIET_STATE["saved"] = _QUIET_STATE["devnull"] = -1


def _solve_highs(
    model: _Matrix | _Arrays, opts: SolveOptions, start: np.ndarray | None = None, stop_at: float | None = None
) -> _RawResult:
    import highspy

    m = _Arrays.of(model)
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("time_limit", float(opts.time_limit_s))
    h.setOptionValue("mip_rel_gap", float(opts.relative_gap))
    if not opts.highs_restart:
        h.setOptionValue("mip_allow_restart", False)
    lp = highspy.HighsLp()
    nc, nr = len(m.cost), len(m.row_lb)
    lp.num_col_ = nc
    lp.num_row_ = nr
    lp.col_cost_ = m.cost
    lp.col_lower_ = m.col_lb
    lp.col_upper_ = m.col_ub
    lp.row_lower_ = m.row_lb
    lp.row_upper_ = m.row_ub
    lp.offset_ = m.offset
    order = np.lexsort((m.nz_row, m.nz_col))
    starts = np.searchsorted(m.nz_col[order], np.arange(nc + 1)).astype(np.int32)
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = starts
    lp.a_matrix_.index_ = m.nz_row[order].astype(np.int32)
    lp.a_matrix_.value_ = m.nz_val[order]
    lp.a_matrix_.num_col_ = nc
    lp.a_matrix_.num_row_ = nr
    has_integer = bool(m.integer.any())
    if has_integer:
        kinds = (highspy.HighsVarType.kContinuous, highspy.HighsVarType.kInteger)
        lp.integrality_ = [kinds[i] for i in m.integer.tolist()]
    h.passModel(lp)
    if start is not None:
        sol = highspy.HighsSolution()
        sol.col_value = start.tolist()
        sol.value_valid = True
        h.setSolution(sol)
    if stop_at is not None:
        def interrupt(event: highspy.highs.HighsCallbackEvent) -> None:
            if event.data_out.mip_primal_bound <= stop_at:
                event.interrupt()

        h.cbMipInterrupt.subscribe(interrupt)
    with _quiet_stdout():
        h.run()
    ms = h.getModelStatus()
    info = h.getInfo()
    has_sol = info.primal_solution_status == 2  # kSolutionStatusFeasible
    values = np.asarray(h.getSolution().col_value, dtype=float) if has_sol else None
    obj = float(info.objective_function_value) if has_sol else None
    bound = float(info.mip_dual_bound) if has_integer else obj
    if bound is not None and not math.isfinite(bound):
        bound = None
    text = h.modelStatusToString(ms)
    if ms == highspy.HighsModelStatus.kOptimal:
        duals = None
        if not has_integer and info.dual_solution_status == 2:
            duals = np.asarray(h.getSolution().row_dual, dtype=float)
        return _RawResult("optimal", values, obj, bound, text, duals)
    if ms == highspy.HighsModelStatus.kInfeasible:
        return _RawResult("infeasible", None, None, None, text)
    if has_sol:
        return _RawResult("feasible", values, obj, bound, text)
    if ms in (highspy.HighsModelStatus.kTimeLimit, highspy.HighsModelStatus.kIterationLimit):
        return _RawResult("time_limit_no_solution", None, None, bound, text)
    return _RawResult("error", None, None, None, text)


def _solve_pulp(m: _Matrix, opts: SolveOptions, which: Literal["cbc", "highs"]) -> _RawResult:
    import pulp

    prob = pulp.LpProblem("fleet", pulp.LpMinimize)
    xs = [
        prob.add_variable(
            f"v{i}",
            lowBound=lb if math.isfinite(lb) else None,
            upBound=ub if math.isfinite(ub) else None,
            cat=pulp.LpInteger if integer else pulp.LpContinuous,
        )
        for i, (lb, ub, integer) in enumerate(zip(m.col_lb, m.col_ub, m.integer, strict=True))
    ]
    prob += pulp.LpAffineExpression([(xs[i], c) for i, c in enumerate(m.cost) if c != 0.0], constant=m.offset)
    by_row: list[list[tuple[pulp.LpVariable, float]]] = [[] for _ in m.row_lb]
    for r, c, v in zip(m.nz_row, m.nz_col, m.nz_val, strict=True):
        by_row[r].append((xs[c], v))
    for r, terms in enumerate(by_row):
        lb, ub = m.row_lb[r], m.row_ub[r]
        expr = pulp.LpAffineExpression(terms)
        if lb == ub:
            prob += pulp.LpConstraint(expr, pulp.LpConstraintEQ, f"r{r}", lb)
            continue
        if math.isfinite(lb):
            prob += pulp.LpConstraint(expr, pulp.LpConstraintGE, f"r{r}_lo", lb)
        if math.isfinite(ub):
            prob += pulp.LpConstraint(expr, pulp.LpConstraintLE, f"r{r}_up", ub)
    solver: pulp.LpSolver
    if which == "cbc":
        with warnings.catch_warnings():
            # PuLP 3 marks its bundled CBC as deprecated in favour of an installed one; the bundled one is what
            # ships with the wheel, so it is the one we can count on.
            warnings.simplefilter("ignore", DeprecationWarning)
            solver = pulp.PULP_CBC_CMD(
                msg=False, timeLimit=opts.time_limit_s, gapRel=opts.relative_gap, threads=opts.threads
            )
    else:
        solver = pulp.HiGHS(msg=False, timeLimit=opts.time_limit_s, gapRel=opts.relative_gap)
    try:
        with _quiet_stdout():
            prob.solve(solver)
    except pulp.PulpSolverError as exc:
        return _RawResult("error", None, None, None, str(exc))
    # PuLP's status says "Optimal" when CBC stops at its time limit with a solution; sol_status tells.
    if prob.status == pulp.LpStatusInfeasible or prob.sol_status == pulp.LpSolutionInfeasible:
        return _RawResult("infeasible", None, None, None, "infeasible")
    if prob.sol_status == pulp.LpSolutionOptimal:
        status: Status = "optimal"
    elif prob.sol_status == pulp.LpSolutionIntegerFeasible:
        status = "feasible"
    elif prob.sol_status == pulp.LpSolutionNoSolutionFound:
        return _RawResult("time_limit_no_solution", None, None, None, "no solution within the limit")
    else:
        return _RawResult("error", None, None, None, pulp.LpStatus[prob.status])
    values = np.asarray([x.varValue if x.varValue is not None else 0.0 for x in xs], dtype=float)
    obj = float(pulp.value(prob.objective))
    # PuLP exposes no best bound for CBC; an optimal status means proven within the requested gap.
    return _RawResult(status, values, obj, obj if status == "optimal" else None, pulp.LpStatus[prob.status])


def _solve_ortools(m: _Matrix, opts: SolveOptions, which: Literal["SCIP", "CP_SAT"]) -> _RawResult:
    from ortools.linear_solver import pywraplp

    solver = pywraplp.Solver.CreateSolver(which)
    if solver is None:
        return _RawResult("error", None, None, None, f"OR-Tools has no {which}")
    quantise = which == "CP_SAT"
    units = float(SHARE_UNITS_CPSAT)
    scale = np.ones(len(m.cost))
    xs = []
    for i, (lb, ub, integer) in enumerate(zip(m.col_lb, m.col_ub, m.integer, strict=True)):
        lo = lb if math.isfinite(lb) else -solver.infinity()
        hi = ub if math.isfinite(ub) else solver.infinity()
        if integer:
            xs.append(solver.IntVar(lo, hi, f"v{i}"))
        elif quantise:
            # CP-SAT takes no continuous variables: a share (or slack) counts units of 1/SHARE_UNITS_CPSAT.
            scale[i] = 1.0 / units
            hi_q = ub * units if math.isfinite(ub) else 1e9
            xs.append(solver.IntVar(math.floor(lb * units), math.ceil(hi_q), f"v{i}"))
        else:
            xs.append(solver.NumVar(lo, hi, f"v{i}"))
    row_lb, row_ub = list(m.row_lb), list(m.row_ub)
    if quantise:
        # Rounding each share to a unit moves a row by at most |coefficient|/units; widen inequality rows
        # by that much so the rounded continuous optimum stays feasible (coverage equalities stay exact).
        widen = np.zeros(len(row_lb))
        np.add.at(widen, np.asarray(m.nz_row, dtype=np.int64),
                  np.abs(np.asarray(m.nz_val)) * (scale[np.asarray(m.nz_col, dtype=np.int64)] < 1.0) / units)
        for r in range(len(row_lb)):
            if row_lb[r] != row_ub[r]:
                row_lb[r] -= widen[r]
                row_ub[r] += widen[r]
    rows = [solver.Constraint(
        lb if math.isfinite(lb) else -solver.infinity(), ub if math.isfinite(ub) else solver.infinity()
    ) for lb, ub in zip(row_lb, row_ub, strict=True)]
    for r, c, v in zip(m.nz_row, m.nz_col, m.nz_val, strict=True):
        rows[r].SetCoefficient(xs[c], v * scale[c])
    objective = solver.Objective()
    for i, price in enumerate(m.cost):
        if price != 0.0:
            objective.SetCoefficient(xs[i], price * scale[i])
    objective.SetOffset(m.offset)
    objective.SetMinimization()
    solver.SetTimeLimit(int(opts.time_limit_s * 1000))
    solver.SetNumThreads(max(1, opts.threads))
    params = pywraplp.MPSolverParameters()
    params.SetDoubleParam(pywraplp.MPSolverParameters.RELATIVE_MIP_GAP, opts.relative_gap)
    code = solver.Solve(params)
    if code == pywraplp.Solver.INFEASIBLE:
        return _RawResult("infeasible", None, None, None, "infeasible")
    if code in (pywraplp.Solver.OPTIMAL, pywraplp.Solver.FEASIBLE):
        values = np.asarray([x.solution_value() for x in xs], dtype=float) * scale
        obj = float(objective.Value())
        bound = float(objective.BestBound())
        status: Status = "optimal" if code == pywraplp.Solver.OPTIMAL else "feasible"
        return _RawResult(status, values, obj, bound if math.isfinite(bound) else None, str(code))
    if code == pywraplp.Solver.NOT_SOLVED:
        return _RawResult("time_limit_no_solution", None, None, None, "not solved within the limit")
    return _RawResult("error", None, None, None, f"OR-Tools result {code}")


def _run_backend(
    model: _Matrix | _Arrays, opts: SolveOptions, start: np.ndarray | None = None, stop_at: float | None = None
) -> _RawResult:
    if opts.backend == "highs":
        return _solve_highs(model, opts, start, stop_at)
    m = model.matrix() if isinstance(model, _Arrays) else model
    if opts.backend == "cbc":
        return _solve_pulp(m, opts, "cbc")
    if opts.backend == "pulp-highs":
        return _solve_pulp(m, opts, "highs")
    if opts.backend == "scip":
        return _solve_ortools(m, opts, "SCIP")
    if opts.backend == "cpsat":
        return _solve_ortools(m, opts, "CP_SAT")
    raise ValueError(f"unknown backend {opts.backend!r}")


# ------------------------------------------------------------------------------------- column pricing

# Above this many share variables, solve() prices columns in instead of handing the solver every one.
PRICING_MIN_SHARE_VARIABLES = 20_000
_PRICING_START_PER_BUCKET = 3
_PRICING_MAX_ROUNDS = 40
_PRICING_ADD_PER_SERVICE = 25
# With the services priced (see _lagrangian_plans), the LP may stop unfinished once it has settled or after
# this share of the time limit, and the services' own MILPs end by _LAGRANGE_SERVICES_UNTIL of it.
_LAGRANGE_LP_SHARE = 0.3
_LAGRANGE_LP_SETTLED = 0.01  # the LP has settled when a round lowers it by less than this share
_LAGRANGE_SERVICES_UNTIL = 0.65
_LAGRANGE_GRACE = 0.1  # more time for a service that had no bound by then
_SOFT_ROWS = ("pool[", "power_expected[", "power_nameplate[", "min_replicas[", "spread[", "work[")


def _submatrix(a: _Arrays, keep_col: np.ndarray, keep_row: np.ndarray, relax: bool) -> _Arrays:
    """The model restricted to the kept variables and rows (integrality dropped when relax)."""
    cols = np.nonzero(keep_col)[0]
    rows = np.nonzero(keep_row)[0]
    cmap = np.full(len(keep_col), -1, dtype=np.int64)
    cmap[cols] = np.arange(len(cols))
    rmap = np.full(len(keep_row), -1, dtype=np.int64)
    rmap[rows] = np.arange(len(rows))
    sel = keep_col[a.nz_col] & keep_row[a.nz_row]
    return _Arrays(
        a.col_lb[cols], a.col_ub[cols], a.cost[cols],
        np.zeros(len(cols), dtype=bool) if relax else a.integer[cols],
        a.row_lb[rows], a.row_ub[rows], rmap[a.nz_row[sel]], cmap[a.nz_col[sel]], a.nz_val[sel], a.offset,
    )


def _solve_by_pricing(problem: Problem, built: _Built, opts: SolveOptions,
                      lagrange: bool = False) -> _RawResult | None:
    """Price columns into a restricted model until no left-out column can lower the LP bound or the plan.

    LP phase: with the restricted LP's duals and reduced costs r, a left-out column c could lower the LP iff its
    gain g_c = max_{u≥0} r_n − h·u − Σ_b max(0, −r_x[b] − load_b·u) is negative (u, v free duals of its own
    capacity and link rows). Once no gain is negative, the restricted LP value L bounds the whole problem.
    MILP phase: a plan using c (n_c ≥ 1) costs at least L + g_c, so with an incumbent U every left-out column
    with g_c ≥ U − L is out of every better plan and the restricted MILP's bound holds for the whole problem
    (certified). Otherwise the columns with the lowest g_c join (a batch at a time, a better plan narrows the
    threshold), and the bound reported is max(L, min(B_R, L + min_{c left out} g_c)). None: no answer here,
    solve the full model.

    With ``lagrange`` (a fleet whose services share only pool and power rows, see _decomposable), the pool
    rows' duals μ price each service's own MILP (see _lagrangian_plans): L(μ) bounds the fleet whatever μ, so
    the LP may stop before it converges once the time share _LAGRANGE_LP_SHARE is spent (its value then
    bounds nothing, and neither do the gains), and the services' plans join the LP's support in the first
    restricted MILP, which then gets most of the time left.
    """
    t0 = time.perf_counter()
    m = built.m
    h = problem.headroom
    cols = [c for c in problem.columns if c.key in built.n]
    if not cols:
        return None
    arr = _Arrays.of(m)
    nvar, nrow = len(arr.cost), len(arr.row_lb)
    cost, nz_row, nz_col, nz_val = arr.cost, arr.nz_row, arr.nz_col, arr.nz_val
    n_of = np.asarray([built.n[c.key] for c in cols], dtype=np.int64)
    own_rows = [np.asarray([built.cap_row[c.key], *built.link_rows[c.key]], dtype=np.int64) for c in cols]
    owner = np.full(nvar, -1, dtype=np.int64)
    owner[n_of] = np.arange(len(cols))
    svc_id = {d.service: i for i, d in enumerate(problem.demands)}
    n_buckets = max(len(d.bucket_rates_rps) for d in problem.demands)
    share_var_l, share_owner_l, share_load_l, share_group_l, share_phase_l = [], [], [], [], []
    for j, c in enumerate(cols):
        bk, xs = built.shares[c.key]
        if not len(bk):
            continue
        idx = np.arange(xs.start, xs.stop, dtype=np.int64)
        owner[idx] = j
        share_var_l.append(idx)
        share_owner_l.append(np.full(len(idx), j, dtype=np.int64))
        share_load_l.append(built.loads[c.key])
        share_group_l.append(svc_id[c.service] * n_buckets + bk.astype(np.int64))
        phase = 0 if c.role is Role.UNIFIED else (1 if c.role is Role.PREFILL else 2)
        share_phase_l.append(np.full(len(idx), phase, dtype=np.int64))
    if not share_var_l:
        return None
    share_var = np.concatenate(share_var_l)
    share_owner = np.concatenate(share_owner_l)
    share_load = np.concatenate(share_load_l)
    share_group = np.concatenate(share_group_l)
    share_phase = np.concatenate(share_phase_l)
    price = cost[n_of]

    selected = np.zeros(len(cols), dtype=bool)
    # Start: per (service, bucket, phase) the few columns that carry it most cheaply, per service and zone the
    # cheapest serving column (minimum replicas, spread), and every column of the running plan.
    eff = price[share_owner] * share_load / h
    for phase_set in ((0, 1), (0, 2)):
        mask = np.isin(share_phase, phase_set)
        order = np.lexsort((eff[mask], share_group[mask]))
        grp = share_group[mask][order]
        first = np.r_[True, grp[1:] != grp[:-1]]
        starts = np.nonzero(first)[0]
        rank = np.arange(len(grp)) - np.repeat(starts, np.diff(np.r_[starts, len(grp)]))
        selected[share_owner[mask][order][rank < _PRICING_START_PER_BUCKET]] = True
    zone = {p.id: p.zone for p in problem.pools}
    cheapest: dict[tuple[str, str], int] = {}
    for j, c in enumerate(cols):
        if problem.current_replicas.get(c.key, 0) > 0:
            selected[j] = True
        if c.role in _SERVING:
            key = (c.service, zone[c.pool])
            if key not in cheapest or price[j] < price[cheapest[key]]:
                cheapest[key] = j
    selected[list(cheapest.values())] = True

    all_links = np.asarray([i for c in cols for i in built.link_rows[c.key]], dtype=np.int64)

    def masks(with_links: bool = True) -> tuple[np.ndarray, np.ndarray]:
        keep_col = (owner < 0) | selected[np.maximum(owner, 0)]
        keep_row = np.ones(nrow, dtype=bool)
        if not with_links:
            keep_row[all_links] = False
        left_out = np.nonzero(~selected)[0]
        if len(left_out):
            keep_row[np.concatenate([own_rows[j] for j in left_out])] = False
        return keep_col, keep_row

    def remaining(o: SolveOptions) -> SolveOptions:
        return replace(o, time_limit_s=max(0.1, opts.time_limit_s - (time.perf_counter() - t0)))

    # The first restricted models may lack the columns that fit the pools and power budgets; priced slacks on
    # those rows keep every restricted LP feasible, and their duals then point at the columns that fit.
    big = 1e4 * max(1.0, float(np.max(np.abs(cost))))
    soft = np.asarray([i for i, name in enumerate(m.row_names) if name.startswith(_SOFT_ROWS)], dtype=np.int64)
    soft_sign = np.where(np.isfinite(arr.row_ub[soft]), -1.0, 1.0)
    svc_of = np.asarray([svc_id[c.service] for c in cols], dtype=np.int64)
    r_n_idx = n_of

    def best_gain(r: np.ndarray) -> np.ndarray:
        """g_c = max_{u≥0} r_n − h·u − Σ_b max(0, −r_x[b] − load_b·u): the least a replica of c adds to L."""
        a = np.maximum(0.0, -r[share_var])
        bp = a / share_load
        order = np.lexsort((-bp, share_owner))
        own, a_s, l_s, bp_s = share_owner[order], a[order], share_load[order], bp[order]
        first = np.r_[True, own[1:] != own[:-1]]
        start = np.maximum.accumulate(np.where(first, np.arange(len(own)), 0))
        cum_a, cum_l = np.cumsum(a_s), np.cumsum(l_s)
        pre_a = cum_a - (cum_a[start] - a_s[start])
        pre_l = cum_l - (cum_l[start] - l_s[start])
        r_n = r[r_n_idx]
        f_k = r_n[own] - h * bp_s - (pre_a - pre_l * bp_s)
        g = r_n - np.bincount(share_owner, weights=a, minlength=len(cols))
        np.maximum.at(g, own, f_k)
        return g

    lp_bound: float | None = None
    lp_values = np.zeros(nvar)
    gain = np.zeros(len(cols))
    y = np.zeros(nrow)
    converged = False
    last_value: float | None = None
    for _ in range(_PRICING_MAX_ROUNDS):
        round_t0 = time.perf_counter()
        keep_col, keep_row = masks()
        sub = _submatrix(arr, keep_col, keep_row, relax=True)
        row_at = np.cumsum(keep_row) - 1
        n_real = len(sub.cost)
        k = len(soft)
        sub = replace(
            sub,
            col_lb=np.r_[sub.col_lb, np.zeros(k)], col_ub=np.r_[sub.col_ub, np.full(k, _INF)],
            cost=np.r_[sub.cost, np.full(k, big)], integer=np.r_[sub.integer, np.zeros(k, dtype=bool)],
            nz_row=np.r_[sub.nz_row, row_at[soft]], nz_col=np.r_[sub.nz_col, n_real + np.arange(k)],
            nz_val=np.r_[sub.nz_val, soft_sign],
        )
        res = _solve_highs(sub, remaining(opts))
        if res.status != "optimal" or res.row_dual is None or res.objective is None or res.values is None:
            return None
        slack_used = float(np.sum(res.values[n_real:]))
        lp_values = np.zeros(nvar)
        lp_values[keep_col] = res.values[:n_real]
        y = np.zeros(nrow)
        y[keep_row] = res.row_dual
        r = cost - np.bincount(nz_col, weights=nz_val * y[nz_row], minlength=nvar)
        gain = best_gain(r)
        lp_bound = res.objective
        tol = 1e-9 * max(1.0, abs(res.objective))
        cand = np.nonzero(~selected & (gain < -tol))[0]
        if not len(cand):
            if slack_used > 1e-7:
                return None  # no column can close the shortfall: the full model will say infeasible
            converged = True
            break
        now = time.perf_counter()
        # The first round without slack may still price the pools far off; from the second on, stop once the
        # value settles or another round would overrun the LP's share of the time.
        if lagrange and slack_used <= 1e-7 and last_value is not None and (
                last_value - res.objective <= _LAGRANGE_LP_SETTLED * abs(res.objective)
                or now + (now - round_t0) - t0 > _LAGRANGE_LP_SHARE * opts.time_limit_s):
            break
        last_value = res.objective if slack_used <= 1e-7 else None
        # The few most improving left-out columns per service join, so each round stays small.
        order = cand[np.lexsort((gain[cand], svc_of[cand]))]
        grp = svc_of[order]
        first = np.r_[True, grp[1:] != grp[:-1]]
        starts = np.nonzero(first)[0]
        rank = np.arange(len(grp)) - np.repeat(starts, np.diff(np.r_[starts, len(grp)]))
        selected[order[rank < _PRICING_ADD_PER_SERVICE]] = True
    else:
        return None
    assert lp_bound is not None

    bound_known = lp_bound if converged else -_INF
    lagrange_bound: float | None = None
    plan_cols: set[str] = set()
    if lagrange:
        prices = {p.id: max(0.0, -float(y[row])) for p in problem.pools if p.max_nodes is not None
                  for row in [built.pool_row.get(p.id)] if row is not None}
        lagrange_bound, plan_cols = _lagrangian_plans(
            problem, prices, opts, t0 + opts.time_limit_s * _LAGRANGE_SERVICES_UNTIL)
        if lagrange_bound is not None:
            bound_known = max(bound_known, lagrange_bound)
    # Stop as soon as a plan is within the gap of a bound that holds for the whole fleet (if there is one).
    stop_at = bound_known + opts.relative_gap * abs(bound_known) if math.isfinite(bound_known) else None

    best: _RawResult | None = None
    best_keep: np.ndarray | None = None
    best_sel = selected.copy()
    certified = False
    # A first plan from the columns the LP uses: small, so found fast, and a warm start for the real search.
    support = selected & (lp_values[n_of] > 1e-7)
    if plan_cols:
        # The services' own plans at the pool prices: with the LP's support, columns that fit together.
        in_plans = np.asarray([c.key in plan_cols for c in cols], dtype=bool)
        support |= in_plans
        selected |= in_plans
    keep_col = (owner < 0) | support[np.maximum(owner, 0)]
    keep_row = np.ones(nrow, dtype=bool)
    if not opts.link_rows:
        keep_row[all_links] = False
    left_out = np.nonzero(~support)[0]
    if len(left_out):
        keep_row[np.concatenate([own_rows[j] for j in left_out])] = False
    first_try = replace(remaining(opts), backend="highs")
    if plan_cols:
        # The fleet's plan comes from here: search until a plan is within the gap of L(μ) (stop_at), not of
        # this restricted model's own bound.
        first_try = replace(first_try, time_limit_s=first_try.time_limit_s * 0.9,
                            relative_gap=opts.relative_gap * 0.1)
    else:
        first_try = replace(first_try, time_limit_s=first_try.time_limit_s * 0.3)
    res = _solve_highs(_submatrix(arr, keep_col, keep_row, relax=False), first_try, None, stop_at)
    if res.values is not None and res.objective is not None:
        best, best_keep = res, keep_col
        best_sel = support.copy()
        # The columns that could beat this plan by more than the gap join now, so the first restricted MILP
        # is usually the last (solving it once without them, then again with them, costs twice).
        target = res.objective - opts.relative_gap * abs(res.objective)
        early = np.nonzero(~selected & (gain < target - lp_bound + 1e-9 * max(1.0, abs(res.objective))))[0]
        if not converged:
            early = early[:0]  # the gains of an unfinished LP rule nothing out
        cap = max(50, int(selected.sum()) // 4)
        if len(early) > cap:
            early = early[np.argsort(gain[early], kind="stable")[:cap]]
        selected[early] = True
    for _ in range(_PRICING_MAX_ROUNDS):
        if best is not None and best.objective is not None and stop_at is not None and best.objective <= stop_at:
            break  # within the gap of a bound that holds for the whole fleet
        if best is not None and not converged:
            break  # the gains of an unfinished LP cannot say which columns could do better
        keep_col, keep_row = masks(opts.link_rows)
        if best is not None and best.values is not None and best_keep is not None:
            full = np.zeros(nvar)
            full[best_keep] = best.values
        else:
            full = _round_up(problem, built, lp_values)
        start_at = full[keep_col]
        res = _run_backend(_submatrix(arr, keep_col, keep_row, relax=False), remaining(opts), start_at, stop_at)
        if res.values is None or res.objective is None:
            if best is None:
                return None if res.status == "infeasible" else res
            break
        best, best_keep = res, keep_col
        best_sel = selected.copy()
        # Only a column that could bring a plan below the incumbent by more than the gap need join.
        target = res.objective - opts.relative_gap * abs(res.objective)
        join = ~selected & (gain < target - lp_bound + 1e-9 * max(1.0, abs(res.objective)))
        if not converged:
            break  # the gains of an unfinished LP certify nothing: the plan stands against L(μ)
        if not join.any() or (res.best_bound is not None and _priced_bound(
                res.best_bound, lp_bound, gain[~selected]) >= target - 1e-9 * max(1.0, abs(res.objective))):
            # No left-out column can beat the plan by more than the gap (or the restricted bound with the
            # left-out columns' floors already proves the gap): the restricted bound holds for the fleet.
            certified = True
            break
        if time.perf_counter() - t0 > opts.time_limit_s * 0.9:
            break  # no time left to rule the other columns out: report against the LP bound
        cap = max(50, int(selected.sum()) // 4)
        idx = np.nonzero(join)[0]
        if len(idx) > cap:
            # Too many to add at once: the most promising join; a better plan then narrows the threshold.
            idx = idx[np.argsort(gain[idx], kind="stable")[:cap]]
        selected[idx] = True
    assert best is not None and best.values is not None and best.objective is not None and best_keep is not None
    values = np.zeros(nvar)
    values[best_keep] = best.values
    bound = bound_known
    if best.best_bound is not None and converged:
        bound = max(bound, _priced_bound(best.best_bound, lp_bound, gain[~best_sel]))
    if not math.isfinite(bound):
        # An unfinished LP and no bound from the services: a plan without a bound.
        return replace(best, status="feasible", values=values, best_bound=None,
                       message=f"{best.message}; no bound; priced {int(selected.sum())} of {len(cols)} columns")
    bound = min(bound, best.objective)
    gap = (best.objective - bound) / max(abs(best.objective), 1e-9)
    status: Status = "optimal" if gap <= opts.relative_gap + 1e-12 else "feasible"
    how = "restricted bound" if certified else ("priced bound" if bound > bound_known else (
        "Lagrangian bound" if lagrange_bound is not None and bound_known == lagrange_bound else "LP bound"))
    return replace(best, status=status, values=values, best_bound=bound,
                   message=f"{best.message}; {how}; priced {int(selected.sum())} of {len(cols)} columns")


def _lagrangian_plans(problem: Problem, prices: Mapping[str, float], opts: SolveOptions,
                      until: float) -> tuple[float | None, set[str]]:
    """L(μ) and the columns of the services' plans, each service planned alone with pool p's devices dearer
    by μ_p.

    Relaxing the pool rows with multipliers μ ≥ 0 (each service keeps its own pool and power rows, as in
    _solve_by_service) leaves one MILP per service over its columns at prices π_p + μ_p, and
    L(μ) = Σ_s (bound of s at those prices) − Σ_p μ_p·D_p·M_p bounds the fleet for any μ ≥ 0 on the pools with
    a node limit M_p (a pool without one keeps its price: its row cannot be relaxed); with a finished LP's
    duals it is at least the LP bound up to the services' own gaps, since each service's integer plan costs
    at least its LP. The services' plans rarely fit together (each sees the price, not the others), but
    their columns are the ones worth having in a restricted MILP. None when a service got no bound in time.
    """
    # A pool without a node limit has no row to relax (its nodes are free): it keeps its price.
    mu = {p.id: max(0.0, prices.get(p.id, 0.0)) for p in problem.pools if p.max_nodes is not None}
    priced = replace(problem, pools=tuple(replace(p, usd_per_device_hour=p.usd_per_device_hour + mu.get(p.id, 0.0))
                                          for p in problem.pools))
    subs, orphan = _service_problems(priced)
    subs = [_prune_roomy_pools(sp) for sp in subs]
    order = sorted(range(len(subs)), key=lambda i: _share_variables(subs[i]))
    workers = max(1, min(opts.threads, len(subs)))
    lock = threading.Lock()
    started = [0]

    def run(i: int, end: float) -> Solution | None:
        with lock:
            left = end - time.perf_counter()
            share = 2.0 * left * workers / max(1, len(subs) - started[0])
            started[0] += 1
        if left < 0.05:
            return None
        size = _share_variables(subs[i])
        sub = replace(opts, time_limit_s=max(0.05, min(left, share)), relative_gap=opts.relative_gap * 0.5,
                      pricing="on" if size >= _SERVICE_PRICING_MIN_SHARE_VARIABLES else "off", decompose="off",
                      highs_restart=False, backend="highs")
        return solve(subs[i], sub)

    with ThreadPoolExecutor(workers) as pool:
        found = dict(zip(order, pool.map(lambda i: run(i, until), order), strict=True))
        # A service that got no bound in its share tries once more, in the time the others left.
        late = [i for i in order if (sol := found[i]) is None or sol.best_bound is None]
        started[0] = len(subs) - len(late)
        for i, sol in zip(late, pool.map(lambda i: run(i, until + _LAGRANGE_GRACE * opts.time_limit_s), late),
                          strict=True):
            if sol is not None and (found[i] is None or sol.best_bound is not None):
                found[i] = sol
    sols = [found[i] for i in range(len(subs))]
    cols = {k for sol in sols if sol is not None for k, n in sol.replicas.items() if n > 0}
    if any(sol is None or sol.best_bound is None for sol in sols):
        return None, cols
    held = sum(mu[p.id] * p.devices_per_node * p.max_nodes for p in problem.pools if p.max_nodes is not None)
    return sum(sol.best_bound for sol in sols if sol is not None and sol.best_bound is not None) + orphan - held, cols


def _priced_bound(restricted: float, lp_bound: float, left_out_gains: np.ndarray) -> float:
    """A bound for the whole problem: a plan uses only the restricted MILP's columns (cost ≥ its bound) or
    some left-out column c (cost ≥ L + g_c)."""
    floor_others = lp_bound + float(left_out_gains.min()) if len(left_out_gains) else _INF
    return max(lp_bound, min(restricted, floor_others))


def _round_up(problem: Problem, built: _Built, lp: np.ndarray) -> np.ndarray:
    """A start for the MILP from an LP point: replicas and zone flags rounded up, nodes and churn to match."""
    m = built.m
    out = lp.copy()
    integer = np.asarray(m.integer, dtype=bool)
    out[integer] = np.ceil(lp[integer] - 1e-6)
    replicas = {k: int(out[i]) for k, i in built.n.items()}
    used = pool_usage(problem, replicas)
    for p in problem.pools:
        if p.id in built.nodes:
            out[built.nodes[p.id]] = math.ceil(used[p.id] / p.devices_per_node - 1e-9)
    for k, dv in built.churn_var.items():
        out[dv] = abs(replicas[k] - problem.current_replicas.get(k, 0))
    return out


# ------------------------------------------------------------------------------------------ public API


def uncovered_buckets(problem: Problem) -> list[tuple[str, int, str]]:
    """(service, bucket, phase) with positive rate that no column can serve within the SLO."""
    out = []
    for d in problem.demands:
        cols = [c for c in problem.columns if c.service == d.service]
        for b, rate in enumerate(d.bucket_rates_rps):
            if rate <= 0:
                continue
            uni = any(c.capacity_rps[b] > 0 for c in cols if c.role is Role.UNIFIED)
            pre = any(c.capacity_rps[b] > 0 for c in cols if c.role is Role.PREFILL)
            dec = any(c.capacity_rps[b] > 0 for c in cols if c.role in _DECODING)
            if not uni and not pre:
                out.append((d.service, b, "prefill"))
            if not uni and not dec:
                out.append((d.service, b, "decode"))
    return out


def pool_usage(problem: Problem, replicas: Mapping[str, int]) -> dict[str, int]:
    """Devices used per pool by a replica assignment (compute plus attention-offload memory devices)."""
    used: dict[str, int] = {p.id: 0 for p in problem.pools}
    for c in problem.columns:
        r = replicas.get(c.key, 0)
        used[c.pool] += r * c.devices
        if c.memory_pool is not None:
            used[c.memory_pool] += r * c.memory_devices
    return used


def plan_cost_usd_per_hour(problem: Problem, replicas: Mapping[str, int]) -> float:
    """$/hour of a replica assignment: devices for device billing, whole nodes for node billing."""
    used = pool_usage(problem, replicas)
    total = 0.0
    for p in problem.pools:
        if p.billing == "device":
            total += p.usd_per_device_hour * used[p.id]
        else:
            total += p.usd_per_device_hour * p.devices_per_node * math.ceil(used[p.id] / p.devices_per_node)
    return total


def _share_variables(problem: Problem) -> int:
    """How many share variables the model will have: (column, bucket) pairs with traffic and capacity."""
    rates = {d.service: np.asarray(d.bucket_rates_rps, dtype=float) > 0 for d in problem.demands}
    return sum(int(np.count_nonzero(rates[c.service] & (np.asarray(c.capacity_rps) > 0)))
               for c in problem.columns if c.service in rates)


def solve(problem: Problem, options: SolveOptions | None = None) -> Solution:
    """Solve the fleet MILP with the chosen backend; status, bound and gap as the solver reports them."""
    opts = options or SolveOptions()
    t0 = time.perf_counter()
    share_vars = _share_variables(problem)
    split = opts.decompose == "on" or (opts.decompose == "auto" and share_vars >= DECOMPOSE_MIN_SHARE_VARIABLES)
    lower: float | None = None
    start = t0
    backup: Solution | None = None
    if opts.decompose == "auto":
        split = split and _roomy(problem)
    if split and _decomposable(problem) and not uncovered_buckets(problem):
        by_service, lower, final = _solve_by_service(problem, opts, t0)
        if by_service is not None and final:
            return by_service
        backup = by_service  # the services' plans, repaired to fit together: kept if the whole solve does worse
        opts = replace(opts, time_limit_s=max(0.5, opts.time_limit_s - (time.perf_counter() - t0)))
        t0 = time.perf_counter()
    sol = replace(_solve_whole(problem, opts, t0, share_vars), solve_seconds=time.perf_counter() - start)
    if backup is not None and backup.objective is not None and (
            sol.objective is None or backup.objective < sol.objective):
        whole_bound = sol.best_bound if sol.objective is not None or sol.status == "time_limit_no_solution" else None
        sol = replace(backup, best_bound=whole_bound, solve_seconds=time.perf_counter() - start,
                      status="feasible", objective=backup.objective)
    if lower is not None and sol.objective is not None:
        # The services' own bounds hold for the whole fleet too (the coupled model only adds rows).
        bound = min(sol.objective, max(sol.best_bound if sol.best_bound is not None else -_INF, lower))
        gap = max(0.0, (sol.objective - bound) / max(abs(sol.objective), 1e-9))
        status: Status = "optimal" if gap <= opts.relative_gap + 1e-12 else sol.status
        sol = replace(sol, best_bound=bound, relative_gap=gap, status=status)
    return sol


def _solve_whole(problem: Problem, opts: SolveOptions, t0: float, share_vars: int) -> Solution:
    """One model for the whole fleet (column pricing on large ones)."""
    large = share_vars >= PRICING_MIN_SHARE_VARIABLES
    pricing = opts.pricing == "on" or (opts.pricing == "auto" and large)
    built = _build(problem, link=opts.link_rows or pricing, bucket_rows=opts.bucket_rows,
                   work_rows=opts.work_rows)
    m = built.m
    nvars, nrows = len(m.cost), len(m.row_lb)
    if uncovered_buckets(problem):
        return _empty("infeasible", opts, time.perf_counter() - t0, nvars, nrows, "a bucket has no column")
    raw: _RawResult | None = None
    if pricing:
        lagrange = opts.decompose != "off" and _decomposable(problem)
        left = replace(opts, time_limit_s=max(0.5, opts.time_limit_s - (time.perf_counter() - t0)))
        raw = _solve_by_pricing(problem, built, left, lagrange=lagrange)
    if raw is None:
        if pricing and not opts.link_rows:
            built = _build(problem, link=False, bucket_rows=opts.bucket_rows, work_rows=opts.work_rows)
            m = built.m
        raw = _run_backend(m, replace(opts, time_limit_s=max(0.5, opts.time_limit_s - (time.perf_counter() - t0))))
    seconds = time.perf_counter() - t0
    if raw.values is None:
        return _empty(raw.status, opts, seconds, nvars, nrows, raw.message)
    return _extract(problem, built, raw, opts, seconds)


# Fleets with at least this many share variables are solved service by service where that is exact.
DECOMPOSE_MIN_SHARE_VARIABLES = 5_000
# A service with at least this many share variables has its columns priced in (see _solve_by_pricing).
_SERVICE_PRICING_MIN_SHARE_VARIABLES = 2_000
# A service in the first pass may take this many even shares of the time left (most need a fraction).
_SERVICE_SHARES = 4.0
# When the services' plans overrun a pool, a repair (plans within this gap of their shrunk pools) makes a
# fallback plan before the whole fleet is solved with the time left.
_REPAIR_GAP = 0.02
# Auto mode solves by service only where the services' likely plans fill at most this share of any pool or
# power budget (see _roomy): where shared rows bind, the whole model's bound is far the stronger.
_ROOMY_SHARE = 0.5


def _decomposable(problem: Problem) -> bool:
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


def _roomy(problem: Problem) -> bool:
    """Whether each service's likely plan (per phase, the column that carries it alone most cheaply, with
    the replicas that takes) leaves every pool and power budget at most _ROOMY_SHARE full. A guess, used
    only to pick the method; exactness never depends on it."""
    pools = {p.id: p for p in problem.pools}
    demands = {d.service: d for d in problem.demands}
    disaggregated = {c.service for c in problem.columns if c.role is not Role.UNIFIED}
    phases: dict[tuple[str, str], list[Column]] = defaultdict(list)
    for c in problem.columns:
        if c.service not in demands:
            continue
        if c.role in PREFILL_ROLES:
            phases[(c.service, "prefill")].append(c)
        if c.role in DECODE_ROLES and c.service in disaggregated:
            phases[(c.service, "decode")].append(c)
    devices: dict[str, float] = defaultdict(float)
    watts: dict[str, float] = defaultdict(float)
    for (service, _), members in phases.items():
        lam = np.asarray(demands[service].bucket_rates_rps, dtype=float)
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
        if best is None:
            continue
        _, c, replicas = best
        devices[c.pool] += replicas * c.devices
        if c.memory_pool:
            devices[c.memory_pool] += replicas * c.memory_devices
        dom = pools[c.pool].power_domain
        if dom is not None:
            watts[dom] += replicas * max(c.active_watts, c.idle_watts)
    for p in problem.pools:
        if p.max_nodes is not None and devices[p.id] > _ROOMY_SHARE * p.max_nodes * p.devices_per_node:
            return False
    return all(watts[k.id] <= _ROOMY_SHARE * k.expected_share * k.budget_watts for k in problem.power_budgets)


def _service_problems(problem: Problem) -> tuple[list[Problem], float]:
    """One problem per service (its columns, its running replicas) and the churn of running keys no column has."""
    cols: dict[str, list[Column]] = defaultdict(list)
    for c in problem.columns:
        cols[c.service].append(c)
    out = []
    for d in problem.demands:
        mine = tuple(cols.get(d.service, ()))
        keys = {c.key for c in mine}
        out.append(replace(problem, columns=mine, demands=(d,),
                           current_replicas={k: v for k, v in problem.current_replicas.items() if k in keys}))
    all_keys = {c.key for c in problem.columns}
    orphan = sum(v for k, v in problem.current_replicas.items() if k not in all_keys)
    return out, problem.churn_usd_per_replica_change * orphan


def _column_price(c: Column, pools: Mapping[str, PoolSupply]) -> float:
    """$/hour of one replica of a column: its devices and memory devices at their pools' prices."""
    return c.devices * pools[c.pool].usd_per_device_hour + (
        c.memory_devices * pools[c.memory_pool].usd_per_device_hour if c.memory_pool else 0.0)


def _alone_plan_cost(problem: Problem) -> float | None:
    """$/hour of a plan of one service that fits its pools: per phase the column that carries the phase alone
    most cheaply (unified alone or prefill plus decode), replicas raised to the minimum. None where that plan
    breaks a row this check does not model (spread, power, churn) or overruns a pool."""
    if (len(problem.demands) != 1 or problem.power_budgets or problem.current_replicas
            or problem.churn_usd_per_replica_change > 0 or problem.demands[0].spread_zones > 1):
        return None
    d = problem.demands[0]
    pools = {p.id: p for p in problem.pools}
    lam = np.asarray(d.bucket_rates_rps, dtype=float)
    live = lam > 0

    def cheapest(roles: Collection[Role]) -> tuple[float, Column, int] | None:
        best: tuple[float, Column, int] | None = None
        for c in problem.columns:
            cap = np.asarray(c.capacity_rps, dtype=float)
            if c.role not in roles or np.any(live & (cap <= 0)):
                continue
            n = max(1, math.ceil(float(np.sum(lam[live] / cap[live])) / problem.headroom + 1e-9))
            if best is None or n * _column_price(c, pools) < best[0]:
                best = (n * _column_price(c, pools), c, n)
        return best

    uni = cheapest((Role.UNIFIED,))
    pre, dec = cheapest((Role.PREFILL,)), cheapest(_DECODING)
    options = [[uni]] if uni is not None else []
    if pre is not None and dec is not None:
        options.append([pre, dec])
    best_cost: float | None = None
    for parts in options:
        replicas = {c.key: n for _, c, n in parts}
        serving = [c.key for _, c, _ in parts if c.role in _SERVING]
        short = d.min_replicas - sum(replicas[k] for k in serving)
        if short > 0 and serving:
            replicas[serving[0]] += short
        used = pool_usage(problem, replicas)
        if any(p.max_nodes is not None and used[p.id] > p.max_nodes * p.devices_per_node for p in problem.pools):
            continue
        cost = plan_cost_usd_per_hour(problem, replicas)
        if best_cost is None or cost < best_cost:
            best_cost = cost
    return best_cost


def _prune_roomy_pools(problem: Problem) -> Problem:
    """Drop a service's columns that a column of the same shape in a roomier, no dearer pool beats.

    For one service (no power budgets, spread, churn; device billing), a column c' is dropped when a column c
    of the same role, devices and memory devices serves every bucket at least as fast, costs no more per
    replica (ties: the earlier column stays) and whose pools can never fill: any plan costing at most U (a
    plan that fits, so U ≥ the optimum) uses at most U/π_p devices of pool p. Moving every replica of c' in
    an optimal plan to c then keeps it feasible and no dearer, so the optimum, and any bound on it, stays.
    """
    if len(problem.demands) != 1 or any(p.billing != "device" or p.usd_per_device_hour < 0 for p in problem.pools):
        return problem
    upper = _alone_plan_cost(problem)
    if upper is None:
        return problem
    pools = {p.id: p for p in problem.pools}

    def roomy(pool_id: str | None) -> bool:
        if pool_id is None:
            return True
        p = pools[pool_id]
        if p.max_nodes is None:
            return True
        return p.usd_per_device_hour > 0 and upper / p.usd_per_device_hour <= p.max_nodes * p.devices_per_node

    groups: dict[tuple[Role, int, int], list[int]] = defaultdict(list)
    for i, c in enumerate(problem.columns):
        groups[(c.role, c.devices, c.memory_devices)].append(i)
    keep = [True] * len(problem.columns)
    for members in groups.values():
        if len(members) < 2:
            continue
        caps = np.asarray([problem.columns[i].capacity_rps for i in members], dtype=float)
        prices = np.asarray([_column_price(problem.columns[i], pools) for i in members])
        winners = [j for j, i in enumerate(members)
                   if roomy(problem.columns[i].pool) and roomy(problem.columns[i].memory_pool)]
        for jb, b in enumerate(members):
            for ja in winners:
                a = members[ja]
                if a == b or not keep[a]:
                    continue
                if prices[ja] > prices[jb] or (prices[ja] == prices[jb] and a > b):
                    continue
                if np.all(caps[ja] >= caps[jb]):
                    keep[b] = False
                    break
    if all(keep):
        return problem
    return replace(problem, columns=tuple(c for c, k in zip(problem.columns, keep, strict=True) if k))


def _overused(problem: Problem, replicas: Mapping[str, int],
              shares: Mapping[tuple[str, int], float]) -> tuple[set[str], set[str]]:
    """The pools and power domains whose shared rows a replica assignment breaks (empty: it fits)."""
    used = pool_usage(problem, replicas)
    nodes = {p.id: math.ceil(used[p.id] / p.devices_per_node - 1e-9) for p in problem.pools}
    pools = {p.id for p in problem.pools if p.max_nodes is not None and nodes[p.id] > p.max_nodes}
    domains = set()
    watts = expected_watts(problem, replicas, shares, nodes)
    for k in problem.power_budgets:
        tol = 1e-7 * max(1.0, k.budget_watts)
        plate = sum(p.nameplate_watts_per_node * nodes[p.id] for p in problem.pools if p.power_domain == k.id)
        if (watts.get(k.id, 0.0) > k.expected_share * k.budget_watts + tol
                or plate > k.oversubscription_ratio * k.budget_watts + tol):
            domains.add(k.id)
    return pools, domains


def _solve_by_service(problem: Problem, opts: SolveOptions,
                      t0: float) -> tuple[Solution | None, float | None, bool]:
    """Solve each service alone; the union of their plans is the fleet's when it fits the shared rows.

    Dropping the pool and power rows that couple services leaves one independent MILP per service (each keeps
    its own pool and power rows, a relaxation of the fleet's: the other services' terms are non-negative). So
    L = Σ_s L_s, the sum of the services' proven bounds, bounds the whole fleet, and when the union of the
    services' plans meets the shared rows it is a fleet plan of cost U = Σ_s U_s, within (U − L)/U of optimal.
    Time: small services first, in parallel threads, each allowed a few even shares of what is left (easy ones
    use a fraction); then the services with the widest absolute gap are solved again with the rest while the
    fleet's gap exceeds the target (a rerun keeps the better plan and the higher bound, both valid).
    When the union overruns a pool, the services on it are planned again one by one within what the others
    leave (a repair: a plan, with no bound of its own). Returns (solution, L, final): final is False after a
    repair or when no plan came out, and the caller then solves the whole fleet with the time left, keeping
    the cheaper plan and the higher of its bound and L.
    """
    subs, orphan = _service_problems(problem)
    # Within one service the pools rarely fill, so a column that a cheaper one in a roomy pool beats can go
    # (not in a repair below: there the pools shrink and the argument no longer holds).
    whole_subs = subs
    subs = [_prune_roomy_pools(sp) for sp in subs]
    k = len(subs)
    # A little before the limit: a service's solve ends a moment after its own limit (the last LP, the copy).
    deadline = t0 + opts.time_limit_s * 0.96
    until = [deadline]  # when the current batch of services must end
    sizes = [_share_variables(sp) for sp in subs]

    def sub_opts(limit: float, size: int) -> SolveOptions:
        pricing = opts.pricing
        if pricing == "auto":
            pricing = "on" if size >= _SERVICE_PRICING_MIN_SHARE_VARIABLES else "off"
        limit = min(limit, until[0] - time.perf_counter() - 0.05)
        return replace(opts, time_limit_s=max(0.1, limit), pricing=pricing, decompose="off", highs_restart=False)

    best: list[Solution | None] = [None] * k
    bounds = [-_INF] * k
    runs = 0

    def run(i: int, limit: float) -> bool:
        nonlocal runs
        runs += 1
        sol = solve(subs[i], sub_opts(limit, sizes[i]))
        if sol.status == "infeasible":
            return False
        if sol.best_bound is not None:
            bounds[i] = max(bounds[i], sol.best_bound)
        old = best[i]
        if sol.objective is not None and (old is None or old.objective is None or sol.objective < old.objective):
            best[i] = sol
        return True

    # HiGHS lets go of the GIL while it solves, so services run side by side, one per thread.
    workers = max(1, min(opts.threads, k)) if opts.backend == "highs" else 1
    lock = threading.Lock()
    started = [0]

    def batch(todo: list[int], stop: Callable[[], bool]) -> list[bool]:
        """Run the services in todo, each with an even share of the time left to the ones not started."""
        def task(i: int) -> bool:
            with lock:
                if stop():
                    return True
                left = until[0] - time.perf_counter()
                # Easy services finish well within their share, so each may take a few shares.
                share = _SERVICE_SHARES * left * workers / max(1, len(todo) - started[0])
                started[0] += 1
            return run(i, min(left, share))

        started[0] = 0
        if workers == 1:
            return [task(i) for i in todo]
        with ThreadPoolExecutor(workers) as pool:
            return list(pool.map(task, todo))

    order = sorted(range(k), key=lambda i: sizes[i])
    for i, ok in zip(order, batch(order, lambda: False), strict=True):
        if not ok:
            return _empty("infeasible", opts, time.perf_counter() - t0, 0, 0,
                          f"service {problem.demands[i].service} alone has no plan"), None, True

    def gaps() -> list[float]:
        out = []
        for i in range(k):
            sol = best[i]
            if sol is None or sol.objective is None or not math.isfinite(bounds[i]):
                out.append(_INF)
            else:
                out.append(max(0.0, sol.objective - bounds[i]))
        return out

    def fleet_gap() -> float:
        g = gaps()
        if not all(math.isfinite(x) for x in g):
            return _INF
        total = sum(s.objective for s in best if s is not None and s.objective is not None) + orphan
        return sum(g) / max(abs(total), 1e-9)

    def refine() -> None:
        for _ in range(3):
            if fleet_gap() <= opts.relative_gap or until[0] - time.perf_counter() < 0.3:
                break
            g = gaps()
            todo = sorted((i for i in range(k) if g[i] > 1e-9 * max(1.0, abs(bounds[i]))), key=lambda i: -g[i])
            batch(todo, lambda: until[0] - time.perf_counter() < 0.3 or fleet_gap() <= opts.relative_gap)

    def lower_bound() -> float | None:
        return sum(bounds) + orphan if all(math.isfinite(b) for b in bounds) else None

    refine()

    def union(plans: Sequence[Solution | None]) -> tuple[dict[str, int], dict[tuple[str, int], float],
                                                          dict[tuple[str, int], float]]:
        replicas: dict[str, int] = {}
        pre: dict[tuple[str, int], float] = {}
        dec: dict[tuple[str, int], float] = {}
        for plan in plans:
            if plan is not None:
                replicas.update(plan.replicas)
                pre.update(plan.prefill_share)
                dec.update(plan.decode_share)
        return replicas, pre, dec

    if any(s is None or s.objective is None for s in best):
        return None, lower_bound(), False
    replicas, pre, dec = union(best)
    pools_over, domains_over = _overused(problem, replicas, pre | dec)
    until[0] = deadline
    repaired = bool(pools_over or domains_over)
    if repaired:
        # Repair: each service on an overrun pool is planned again, alone, within what the others leave of
        # the pools. Its plans are the fleet's; its bounds are not (the pools shrank), so they are not kept.
        if domains_over:
            return None, lower_bound(), False
        pool_of = {p.id: p for p in problem.pools}
        culprits = [i for i in range(k) if any(
            c.pool in pools_over or c.memory_pool in pools_over
            for c in subs[i].columns if replicas.get(c.key, 0) > 0)]
        # The services with the most devices on the overrun pools first; stop as soon as the plans fit.
        def overrun_devices(i: int) -> int:
            plan = best[i]
            return sum(n * (c.devices if c.pool in pools_over else c.memory_devices)
                       for c in subs[i].columns for n in [plan.replicas.get(c.key, 0) if plan else 0]
                       if c.pool in pools_over or c.memory_pool in pools_over)

        culprits.sort(key=lambda i: -overrun_devices(i))
        repair_until = deadline
        for j, i in enumerate(culprits):
            if not any(_overused(problem, *union(best)[0:1], union(best)[1] | union(best)[2])):
                break
            others = union([plan for q, plan in enumerate(best) if q != i])[0]
            used = pool_usage(problem, others)
            shrunk = tuple(
                p if p.max_nodes is None else
                replace(p, max_nodes=max(0, (p.max_nodes * p.devices_per_node - used[p.id]) // p.devices_per_node))
                for p in pool_of.values())
            left = repair_until - time.perf_counter()
            if left < 0.1:
                return None, lower_bound(), False
            sol = solve(replace(whole_subs[i], pools=shrunk),
                        replace(sub_opts(left / (len(culprits) - j), sizes[i]), relative_gap=_REPAIR_GAP))
            if sol.objective is None:
                return None, lower_bound(), False
            best[i] = sol
        replicas, pre, dec = union(best)
        if any(_overused(problem, replicas, pre | dec)):
            return None, lower_bound(), False
    else:
        first = list(best)
        refine()
        replicas, pre, dec = union(best)
        if any(_overused(problem, replicas, pre | dec)):
            best = first  # the refined plans no longer fit together; the first ones did (bounds stay refined)
            replicas, pre, dec = union(best)
    lower = lower_bound()
    sols = [s for s in best if s is not None]
    obj = sum(s.objective for s in sols if s.objective is not None) + orphan
    bound = min(obj, lower) if lower is not None else None
    gap = max(0.0, (obj - bound) / max(abs(obj), 1e-9)) if bound is not None else None
    proven = not repaired and all(s.status == "optimal" for s in sols)
    status: Status = "optimal" if proven or (gap is not None and gap <= opts.relative_gap + 1e-12) else "feasible"
    used = pool_usage(problem, replicas)
    nodes = {p.id: math.ceil(used[p.id] / p.devices_per_node - 1e-9) for p in problem.pools}
    seconds = time.perf_counter() - t0
    return Solution(
        status=status, backend=opts.backend, objective=obj, best_bound=bound, relative_gap=gap,
        solve_seconds=seconds, variables=sum(s.variables for s in sols),
        constraints=sum(s.constraints for s in sols), replicas=replicas, prefill_share=pre, decode_share=dec,
        nodes={p: n for p, n in nodes.items() if n > 0},
        expected_watts=expected_watts(problem, replicas, pre | dec, nodes),
        cost_usd_per_hour=plan_cost_usd_per_hour(problem, replicas),
        message=f"{sols[0].message.split('; ')[0]}; bound of the services; solved by service ({k} services, "
                f"{runs} runs{', repaired to fit the pools' if repaired else ''})",
    ), lower, not repaired


def _empty(status: Status, opts: SolveOptions, seconds: float, nvars: int, nrows: int, msg: str) -> Solution:
    return Solution(status, opts.backend, None, None, None, seconds, nvars, nrows, {}, {}, {}, {}, {}, None, msg)


def _extract(problem: Problem, built: _Built, raw: _RawResult, opts: SolveOptions, seconds: float) -> Solution:
    assert raw.values is not None
    v = raw.values
    replicas = {k: int(round(v[i])) for k, i in built.n.items()}
    pre: dict[tuple[str, int], float] = {}
    dec: dict[tuple[str, int], float] = {}
    for c in problem.columns:
        if c.key not in built.shares:
            continue
        bk, xs = built.shares[c.key]
        for b, xi in zip(bk.tolist(), xs, strict=True):
            share = float(min(1.0, max(0.0, v[xi])))
            if share <= 1e-9:
                continue
            if c.role in PREFILL_ROLES:
                pre[(c.key, b)] = share
            if c.role in DECODE_ROLES:
                dec[(c.key, b)] = share
    used = pool_usage(problem, replicas)
    nodes = {p.id: math.ceil(used[p.id] / p.devices_per_node - 1e-9) for p in problem.pools}
    watts = expected_watts(problem, replicas, pre | dec, nodes)
    obj = raw.objective
    bound = raw.best_bound
    gap = None
    if obj is not None and bound is not None:
        gap = max(0.0, (obj - bound) / max(abs(obj), 1e-9))
    return Solution(
        status=raw.status,
        backend=opts.backend,
        objective=obj,
        best_bound=bound,
        relative_gap=gap,
        solve_seconds=seconds,
        variables=len(built.m.cost),
        constraints=len(built.m.row_lb),
        replicas={k: r for k, r in replicas.items() if r > 0},
        prefill_share=pre,
        decode_share=dec,
        nodes={k: n for k, n in nodes.items() if n > 0},
        expected_watts=watts,
        cost_usd_per_hour=plan_cost_usd_per_hour(problem, replicas),
        message=raw.message,
    )


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
    for c in problem.columns:
        dom = pools[c.pool].power_domain
        if dom is None or dom not in out:
            continue
        busy = sum(
            rates[c.service][b] / c.capacity_rps[b] * shares.get((c.key, b), 0.0)
            for b in range(len(c.capacity_rps))
            if c.capacity_rps[b] > 0
        )
        out[dom] += replicas.get(c.key, 0) * c.idle_watts + busy * (c.active_watts - c.idle_watts)
    for p in problem.pools:
        if p.power_domain in out:
            out[p.power_domain] += p.node_idle_watts * nodes.get(p.id, 0)
    return out


# ------------------------------------------------------------------------------------------ reduction


def _dominates(a: np.ndarray, b: np.ndarray, a_first: bool) -> bool:
    """a's (devices, memory devices, idle, active, −capacity…) is no worse than b's everywhere."""
    if not bool(np.all(a <= b)):
        return False
    return a_first or bool(np.any(a < b))


def prune_dominated(problem: Problem) -> tuple[Problem, int]:
    """Drop columns another column of the same service, role and pools beats on every count; return how many."""
    groups: dict[tuple[str, Role, str, str | None], list[int]] = defaultdict(list)
    for i, c in enumerate(problem.columns):
        groups[(c.service, c.role, c.pool, c.memory_pool)].append(i)
    keep = [True] * len(problem.columns)
    for members in groups.values():
        if len(members) < 2:
            continue
        vec = np.asarray(
            [
                [float(problem.columns[i].devices), float(problem.columns[i].memory_devices),
                 problem.columns[i].idle_watts, problem.columns[i].active_watts,
                 *(-np.asarray(problem.columns[i].capacity_rps, dtype=float)).tolist()]
                for i in members
            ]
        )
        for jb, b in enumerate(members):
            cb = problem.columns[b]
            # Columns in the running plan stay, so the churn term sees them; a column drawing less busy than
            # idle breaks the power argument behind dominance, so it stays too.
            if problem.current_replicas.get(cb.key, 0) > 0 or cb.active_watts < cb.idle_watts:
                continue
            for ja, a in enumerate(members):
                if a == b or not keep[a]:
                    continue
                if _dominates(vec[ja], vec[jb], a < b):
                    keep[b] = False
                    break
    columns = tuple(c for c, k in zip(problem.columns, keep, strict=True) if k)
    return replace(problem, columns=columns), len(problem.columns) - len(columns)


# ------------------------------------------------------------------------------------------ explanation


def _bucket_name(d: Demand, b: int) -> str:
    return d.bucket_labels[b] if b < len(d.bucket_labels) else f"bucket {b}"


def _users(problem: Problem, replicas: Mapping[str, int], pool: str) -> str:
    """Words for which services use a pool in a replica assignment, biggest first."""
    by_service: dict[str, int] = defaultdict(int)
    for c in problem.columns:
        r = replicas.get(c.key, 0)
        if r and c.pool == pool:
            by_service[c.service] += r * c.devices
        if r and c.memory_pool == pool:
            by_service[c.service] += r * c.memory_devices
    parts = [f"{s} ({n} devices)" for s, n in sorted(by_service.items(), key=lambda kv: -kv[1])]
    return ", ".join(parts) if parts else "no service"


def _structural_findings(problem: Problem) -> list[Finding]:
    demands = {d.service: d for d in problem.demands}
    out = []
    for service, b, phase in uncovered_buckets(problem):
        d = demands[service]
        out.append(Finding(
            kind="infeasible", constraint=f"cover_{phase}[{service},{b}]",
            message=(f"service {service}: no configuration can serve the {phase} of {_bucket_name(d, b)} "
                     f"({d.bucket_rates_rps[b]:.3g} req/s) within the SLO"),
            value=d.bucket_rates_rps[b]))
    zones = {p.id: p.zone for p in problem.pools}
    for d in problem.demands:
        srv = [c for c in problem.columns if c.service == d.service and c.role in _SERVING]
        if d.min_replicas > 0 and not srv:
            out.append(Finding(kind="infeasible", constraint=f"min_replicas[{d.service}]",
                               message=f"service {d.service}: needs {d.min_replicas} serving replicas but "
                                       "has no serving configuration in any allowed pool",
                               value=float(d.min_replicas)))
        have = len({zones[c.pool] for c in srv})
        if d.spread_zones > have:
            out.append(Finding(kind="infeasible", constraint=f"spread[{d.service}]",
                               message=f"service {d.service}: must spread over {d.spread_zones} zones but its "
                                       f"configurations reach only {have}",
                               value=float(d.spread_zones - have)))
    return out


def explain_infeasible(problem: Problem, options: SolveOptions | None = None) -> list[Finding]:
    """Say which constraints make the fleet infeasible, in words with the numbers (elastic re-solve)."""
    opts = options or SolveOptions()
    findings = _structural_findings(problem)
    if any(f.constraint.startswith("cover_") for f in findings):
        return findings
    built = _build(problem, elastic=True)
    raw = _solve_highs(built.m, replace(opts, backend="highs"))
    if raw.values is None:
        return findings or [Finding(kind="infeasible", constraint="model",
                                    message=f"the relaxed fleet has no solution either ({raw.message})")]
    v = raw.values
    replicas = {k: int(round(v[i])) for k, i in built.n.items()}
    used = pool_usage(problem, replicas)
    pools = {p.id: p for p in problem.pools}
    demands = {d.service: d for d in problem.demands}
    budgets = {k.id: k for k in problem.power_budgets}
    for name, idx in built.slack.items():
        excess = float(v[idx])
        if excess <= 1e-6:
            continue
        kind, target = name.split("[", 1)
        target = target.rstrip("]")
        if kind == "pool":
            p = pools[target]
            assert p.max_nodes is not None
            need = math.ceil(used[target] / p.devices_per_node - 1e-9)
            short = need - p.max_nodes
            msg = (f"pool {target}: the fleet needs {need} nodes ({used[target]} devices) but only "
                   f"{p.max_nodes} are available; short {short} nodes ({short * p.devices_per_node} devices); "
                   f"wanted by {_users(problem, replicas, target)}")
            findings.append(Finding(kind="infeasible", constraint=name, message=msg, value=float(short)))
        elif kind in ("power_expected", "power_nameplate"):
            k = budgets[target]
            over_w = excess * 1000.0
            if kind == "power_expected":
                limit = k.expected_share * k.budget_watts
                what = "expected draw"
            else:
                limit = k.oversubscription_ratio * k.budget_watts
                what = "nameplate power of the nodes"
            members = [p.id for p in problem.pools if p.power_domain == target]
            msg = (f"power domain {target}: the {what} needs {limit + over_w:.0f} W but the limit is "
                   f"{limit:.0f} W; short {over_w:.0f} W; pools {', '.join(members)} serve "
                   + "; ".join(f"{p}: {_users(problem, replicas, p)}" for p in members))
            findings.append(Finding(kind="infeasible", constraint=name, message=msg, value=over_w))
        elif kind == "min_replicas":
            d = demands[target]
            msg = (f"service {target}: needs {d.min_replicas} serving replicas; short {excess:.0f} within the "
                   "available pools")
            findings.append(Finding(kind="infeasible", constraint=name, message=msg, value=excess))
        elif kind == "spread":
            d = demands[target]
            msg = (f"service {target}: must spread over {d.spread_zones} zones; short {excess:.0f} zones "
                   "within the available pools")
            findings.append(Finding(kind="infeasible", constraint=name, message=msg, value=excess))
    if not findings:
        findings.append(Finding(kind="infeasible", constraint="model",
                                message="no single constraint explains it: the solver found no plan in time"))
    return findings


def marginal_values(problem: Problem, solution: Solution, options: SolveOptions | None = None) -> list[Finding]:
    """Binding pools and power budgets, each with what one more node or kilowatt would save per hour."""
    opts = options or SolveOptions()
    if solution.objective is None:
        return []
    base = solution.objective
    out: list[Finding] = []
    for p in problem.pools:
        if p.max_nodes is None or solution.nodes.get(p.id, 0) < p.max_nodes:
            continue
        out.append(Finding(kind="binding", constraint=f"pool[{p.id}]",
                           message=f"pool {p.id}: all {p.max_nodes} nodes are used", value=float(p.max_nodes)))
        more = replace(p, max_nodes=p.max_nodes + 1)
        pools = tuple(more if q.id == p.id else q for q in problem.pools)
        alt = solve(replace(problem, pools=pools), opts)
        if alt.objective is not None:
            saving = max(0.0, base - alt.objective)
            words = f"saves ${saving:.2f}/h" if saving >= 0.005 else "would not lower the cost"
            out.append(Finding(kind="marginal", constraint=f"pool[{p.id}]",
                               message=f"one more node in pool {p.id} {words}", value=saving))
    for k in problem.power_budgets:
        used_w = solution.expected_watts.get(k.id, 0.0)
        limit = k.expected_share * k.budget_watts
        nameplate = sum(p.nameplate_watts_per_node * solution.nodes.get(p.id, 0)
                        for p in problem.pools if p.power_domain == k.id)
        near = used_w >= 0.99 * limit or nameplate >= 0.99 * k.oversubscription_ratio * k.budget_watts
        if not near:
            continue
        out.append(Finding(kind="binding", constraint=f"power[{k.id}]",
                           message=(f"power domain {k.id}: expected {used_w:.0f} W of {limit:.0f} W, nameplate "
                                    f"{nameplate:.0f} W of {k.oversubscription_ratio * k.budget_watts:.0f} W"),
                           value=used_w))
        bigger = replace(k, budget_watts=k.budget_watts + 1000.0)
        budgets = tuple(bigger if q.id == k.id else q for q in problem.power_budgets)
        alt = solve(replace(problem, power_budgets=budgets), opts)
        if alt.objective is not None:
            saving = max(0.0, base - alt.objective)
            words = f"saves ${saving:.2f}/h" if saving >= 0.005 else "would not lower the cost"
            out.append(Finding(kind="marginal", constraint=f"power[{k.id}]",
                               message=f"1 kW more budget in power domain {k.id} {words}", value=saving))
    return out
