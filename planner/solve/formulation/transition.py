r"""Transition family: what moving between plans costs, over a horizon of periods t = 0..T−1.

The horizon model (``planner.solve.horizon``) stacks one copy of the fleet model per period (every other
family, with period t's demand; its objective weighted by the period's hours Δ/3600) and links the copies
with these rows. ``cur_c`` is what runs now (n[c,−1]); each period's plan is in force for Δ seconds.

Variables
  up[c,t] ≥ 0, dn[c,t] ≥ 0   replicas of c started / stopped at the start of period t
  moved[s,t] ∈ {0,1}         service s changes any replica count at t
  shrunk[s,t] ∈ {0,1}        service s stops a replica at t (hysteresis applies)
  v[s,t] ≥ 0                 moves of s beyond one per dwell window (priced, so taken only when nothing else serves)

Rows
  start[c,t]:    up[c,t] − n[c,t] + n[c,t−1] ≥ 0          stop[c,t]: dn[c,t] + n[c,t] − n[c,t−1] ≥ 0
  moved[c,t]:    up[c,t] + dn[c,t] − M_c moved[s_c,t] ≤ 0, with n[c,t] ≤ M_c := max(cur_c, min(pool bound,
                 ⌈(1+η) Σ_b λ_{t,b}/(h cap_{c,b})⌉ + min_s + 1)) (no cheapest plan holds more of c than carry s alone)
  shrunk[c,t]:   dn[c,t] − M_c shrunk[s_c,t] ≤ 0
  dwell[s,t]:    Σ_{τ=max(0,t−W+1)..t} moved[s,τ] + [s moved a ≥ 1 periods ago and t + a < W] − v[s,t] ≤ 1;
                 a = 0 (the move into period 0 began last period: its replicas were started ahead) counts as
                 moved[s,0] = 1 for the later periods, and period 0's own changes complete that move
  hysteresis[s,φ,t]: Σ_{c∈A_φ} ρ_c n[c,t] − η β_t shrunk[s,t] ≥ β_t    (the work row of the work family with
                 one reference column r: u_b = 1/cap_{r,b}, ρ_c = max_b u_b cap_{c,b}, β_t = Σ_b λ_{t,b} u_b / h;
                 a period that shrinks s keeps η of its work spare, so noise around a size does not stop and
                 restart replicas)
  swap_pool[p,t]: Σ_{c: p_c=p} d_c (n[c,t] + dn[c,t]) + Σ_{c: q_c=p} m_c (n[c,t] + dn[c,t]) ≤ D_p M_p
                 (make-before-break: the old replicas run until the new ones are Ready, so the pool holds both)

Objective terms (USD)
  + Σ_{c,t} (π_c L/3600 + σ) up[c,t]    a new replica is paid while its model loads (L s) and costs σ to start
  + Σ_{c,t} π_c D/3600 dn[c,t]          a stopped replica is paid while it drains (D s)
  + Σ_{s,t} ω v[s,t]                    a move inside the dwell window
with π_c the replica's $/h. Start-up time also shapes when replicas start and what a period carries
(K = ⌈L/Δ⌉): the replicas plan t+1 adds start KΔ − L seconds into period t (ahead: Ready when they are
needed, not earlier), and period t's copy carries max(λ_t, …, λ_{t+K−1}) — for L ≤ Δ just λ_t; a start-up
longer than a period makes a plan also hold the periods its successors' replicas spend loading.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from planner.solve.formulation.base import INF, Built
from planner.solve.formulation.matrix import Matrix
from planner.solve.formulation.work import phase_members
from planner.solve.problem import Column, Problem, column_price


@dataclass(frozen=True)
class Transition:
    """What a move costs and how often a service may move (periods of ``period_s`` seconds)."""

    period_s: float = 900.0
    startup_s: float = 300.0  # model load until Ready (2–8 minutes for large models)
    start_usd: float = 0.0  # fixed price of one start (image pull, cache warm-up) besides the paid load time
    drain_s: float = 60.0  # a stopped replica finishes its requests for this long, paid
    dwell_periods: int = 4  # at most one move per service within this many periods
    hysteresis: float = 0.1  # a period that shrinks a service keeps this share of its work spare
    dwell_violation_usd: float = 1000.0  # price of each move beyond one per dwell window

    def lookahead(self) -> int:
        """K = ⌈L/Δ⌉: how many periods ahead a replica must start to be Ready when its plan is in force."""
        return math.ceil(self.startup_s / self.period_s - 1e-9) if self.startup_s > 0 else 0

    def carried(self) -> int:
        """K − 1 (at least 0): how many later periods a plan also carries while its successors' replicas load."""
        return max(self.lookahead() - 1, 0)

    def prestart_s(self) -> float:
        """KΔ − L: seconds into a period at which the replicas the next plan adds start, so that they are Ready
        at the start of period K (the next period when L ≤ Δ) and no earlier."""
        return self.lookahead() * self.period_s - self.startup_s if self.startup_s > 0 else self.period_s


@dataclass
class Stack:
    """The horizon model: one fleet model per period in one matrix, and where each period's variables are."""

    m: Matrix
    periods: list[Built]
    offsets: list[int]  # first variable of each period's block
    row_offsets: list[int]
    up: dict[tuple[str, int], int]
    dn: dict[tuple[str, int], int]
    moved: dict[tuple[str, int], int]
    shrunk: dict[tuple[str, int], int]

    def n(self, t: int, key: str) -> int:
        """Global index of n[c,t]."""
        return self.offsets[t] + self.periods[t].n[key]


def start_price(problem: Problem, c: Column, tr: Transition) -> float:
    """$ of one start of column c: its replica paid while the model loads, plus the fixed start price."""
    return column_price(c, {p.id: p for p in problem.pools}) * tr.startup_s / 3600.0 + tr.start_usd


def stop_price(problem: Problem, c: Column, tr: Transition) -> float:
    """$ of one stop of column c: its replica paid while it drains."""
    return column_price(c, {p.id: p for p in problem.pools}) * tr.drain_s / 3600.0


def replica_bound(f: Built, c: Column, current: int, tr: Transition) -> float:
    """Most replicas of c a cheapest plan can hold: what carries the service alone with the hysteresis margin,
    plus its minimum replicas (a tighter big-M than the pool's; never below what runs now)."""
    rates = np.asarray(f.demands[c.service].bucket_rates_rps, dtype=float)
    caps = np.asarray(c.capacity_rps, dtype=float)
    served = (caps > 0) & (rates > 0)
    need = float(np.sum(rates[served] / caps[served])) / f.problem.headroom if served.any() else 0.0
    alone = math.ceil(need * (1.0 + max(tr.hysteresis, 0.0)) + 1e-9) + f.demands[c.service].min_replicas + 1
    ub = f.m.col_ub[f.n[c.key]]
    return float(max(current, min(ub, float(alone)) if math.isfinite(ub) else alone, 1))


def add_moves(s: Stack, current: Mapping[str, int], tr: Transition) -> None:
    """up, dn, moved and shrunk with their rows, priced in the objective; n[c,t] bounded by M_{c,t}."""
    bounds: dict[tuple[str, int], float] = {}
    for t, f in enumerate(s.periods):
        for c in f.columns:
            nt = s.n(t, c.key)
            bounds[(c.key, t)] = replica_bound(f, c, int(current.get(c.key, 0)), tr)
            s.m.col_ub[nt] = min(s.m.col_ub[nt], bounds[(c.key, t)])
    for t, f in enumerate(s.periods):
        for svc in f.demands:
            s.moved[(svc, t)] = s.m.var(0.0, 1.0, 0.0, True)
            s.shrunk[(svc, t)] = s.m.var(0.0, 1.0, 0.0, True)
        for c in f.columns:
            cur = int(current.get(c.key, 0))
            nt = s.n(t, c.key)
            up = s.m.var(0.0, INF, start_price(f.problem, c, tr), False)
            dn = s.m.var(0.0, INF, stop_price(f.problem, c, tr), False)
            s.up[(c.key, t)], s.dn[(c.key, t)] = up, dn
            if t == 0:
                s.m.row(f"start[{c.key},0]", [up, nt], [1.0, -1.0], -float(cur), INF)
                s.m.row(f"stop[{c.key},0]", [dn, nt], [1.0, 1.0], float(cur), INF)
                big = max(bounds[(c.key, 0)], float(cur))
            else:
                prev = s.n(t - 1, c.key)
                s.m.row(f"start[{c.key},{t}]", [up, nt, prev], [1.0, -1.0, 1.0], 0.0, INF)
                s.m.row(f"stop[{c.key},{t}]", [dn, nt, prev], [1.0, 1.0, -1.0], 0.0, INF)
                big = max(bounds[(c.key, t)], bounds[(c.key, t - 1)])
            s.m.row(f"moved[{c.key},{t}]", [up, dn, s.moved[(c.service, t)]], [1.0, 1.0, -big], -INF, 0.0)
            s.m.row(f"shrunk[{c.key},{t}]", [dn, s.shrunk[(c.service, t)]], [1.0, -big], -INF, 0.0)


def add_dwell(s: Stack, last_move_age: Mapping[str, int], tr: Transition) -> None:
    """dwell[s,t]: one move per W periods, counting a move ``a`` periods before period 0 (priced slack v); a = 0:
    the move into period 0 was begun ahead, so it counts as period 0's move and period 0's changes are free."""
    w = tr.dwell_periods
    if w <= 1:
        return
    for svc in s.periods[0].demands:
        age = last_move_age.get(svc)
        for t in range(len(s.periods)):
            first = max(1 if age == 0 else 0, t - w + 1)
            members = [s.moved[(svc, tau)] for tau in range(first, t + 1)]
            before = 1.0 if age is not None and age >= 0 and t + age < w else 0.0
            v = s.m.var(0.0, INF, tr.dwell_violation_usd, False)
            s.m.row(f"dwell[{svc},{t}]", [*members, v], [1.0] * len(members) + [-1.0], -INF, 1.0 - before)


def hysteresis_reference(problem: Problem, members: Sequence[Column]) -> tuple[np.ndarray, np.ndarray] | None:
    """(ρ_c per member, u_b per bucket) for one service's phase, from the cheapest column that serves every
    bucket with traffic alone; None when no column does."""
    d = {x.service: x for x in problem.demands}[members[0].service]
    rates = np.asarray(d.bucket_rates_rps, dtype=float)
    live = rates > 0
    if not live.any():
        return None
    caps = np.asarray([c.capacity_rps for c in members], dtype=float)
    pools = {p.id: p for p in problem.pools}
    full = np.all(caps[:, live] > 0, axis=1)
    if not full.any():
        return None
    alone = [column_price(c, pools) * float(np.sum(rates[live] / caps[i, live])) if full[i] else INF
             for i, c in enumerate(members)]
    r = int(np.argmin(alone))
    u = np.where(live, 1.0 / np.where(caps[r] > 0, caps[r], 1.0), 0.0)
    rho = np.max(caps * u[None, :], axis=1)
    return rho, u


def add_hysteresis(s: Stack, tr: Transition) -> None:
    """hysteresis[s,φ,t]: a period that shrinks s keeps η of its work (in its reference column's units) spare."""
    if tr.hysteresis <= 0:
        return
    for t, f in enumerate(s.periods):
        for (svc, phase), members in phase_members(f.problem).items():
            ref = hysteresis_reference(f.problem, members)
            if ref is None:
                continue
            rho, u = ref
            rates = np.asarray(f.demands[svc].bucket_rates_rps, dtype=float)
            beta = float(np.dot(rates, u)) / f.problem.headroom
            if beta <= 0:
                continue
            cols = [s.n(t, c.key) for c in members] + [s.shrunk[(svc, t)]]
            vals = [*rho.tolist(), -tr.hysteresis * beta]
            s.m.row(f"hysteresis[{svc},{phase},{t}]", cols, vals, beta, INF)


def add_swap_pools(s: Stack) -> None:
    """swap_pool[p,t]: a pool with a node limit holds period t's replicas and those it is replacing."""
    for t, f in enumerate(s.periods):
        terms: dict[str, tuple[list[int], list[float]]] = {}
        for c in f.columns:
            for pool, count in ((c.pool, c.devices), (c.memory_pool, c.memory_devices)):
                if pool is None or not count:
                    continue
                cols, vals = terms.setdefault(pool, ([], []))
                cols += [s.n(t, c.key), s.dn[(c.key, t)]]
                vals += [float(count), float(count)]
        for p in f.problem.pools:
            if p.max_nodes is None or p.id not in terms:
                continue
            cols, vals = terms[p.id]
            s.m.row(f"swap_pool[{p.id},{t}]", cols, vals, -INF, float(p.max_nodes * p.devices_per_node))


def moves_of(before: Mapping[str, int], after: Mapping[str, int]) -> tuple[int, int]:
    """(replicas started, replicas stopped) going from ``before`` to ``after``."""
    keys = set(before) | set(after)
    started = sum(max(0, after.get(k, 0) - before.get(k, 0)) for k in keys)
    stopped = sum(max(0, before.get(k, 0) - after.get(k, 0)) for k in keys)
    return started, stopped
