r"""Work family: rounded work rows per service and phase, valid for every integer plan.

    work[s,φ,r]: Σ_{c∈A_φ} min(⌈β⌉, ⌊ρ_c⌋ + min(1, (ρ_c − ⌊ρ_c⌋)/f)) n[c] ≥ ⌈β⌉
for phase φ with cover set A_φ (U_s ∪ Pf_s, or U_s ∪ Dc_s) and a few reference columns r ∈ A_φ that serve
every bucket: u_b = 1/cap_{r,b}, ρ_c = max_b u_b cap_{c,b}, β = Σ_b λ_{s,b} u_b / h, f = β − ⌊β⌋. Weighting
cover and capacity rows by u gives Σ_c ρ_c n[c] ≥ β, valid for the LP; as n is integer its mixed-integer
rounding is valid too and cuts fractional replicas off (a service needing 1.3 replicas' work of its best
column pays for two). See work_cuts.
"""

from __future__ import annotations

import math

import numpy as np

from planner.roles import DECODE_ROLES, PREFILL_ROLES
from planner.schema import Role
from planner.solve.formulation.base import INF, Built, Family
from planner.solve.problem import Column, Problem, Solution

# Per service and phase, the work rows are written for this many reference columns.
WORK_REFERENCES = 2
_WORK_SAFETY = 1e-9

WorkCut = tuple[np.ndarray, np.ndarray, float]  # (member indices, coefficients, right-hand side)


def work_cuts(rates: np.ndarray, caps: np.ndarray, price: np.ndarray, headroom: float,
              references: int = WORK_REFERENCES, groups: np.ndarray | None = None) -> list[WorkCut]:
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
    out: list[WorkCut] = []
    live = rates > 0
    if not live.any() or caps.size == 0:
        return out
    lam = rates[live]
    cap = caps[:, live]
    full = np.all(cap > 0, axis=1)
    if not full.any():
        return out
    with np.errstate(divide="ignore"):
        alone = np.where(full, price * np.sum(lam / np.where(cap > 0, cap, 1.0), axis=1), INF)
    labels = np.zeros(len(price), dtype=np.int64) if groups is None else groups
    refs: list[int] = []
    for g in np.unique(labels):
        ranked = [int(r) for r in np.argsort(np.where(labels == g, alone, INF), kind="stable")[:references]]
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


def phase_members(problem: Problem) -> dict[tuple[str, str], list[Column]]:
    """The columns that can carry each (service, phase): A_prefill, and A_decode for disaggregated services."""
    demanded = {d.service for d in problem.demands}
    disaggregated = {c.service for c in problem.columns if c.role is not Role.UNIFIED}
    out: dict[tuple[str, str], list[Column]] = {}
    for c in problem.columns:
        if c.service not in demanded:
            continue
        if c.role in PREFILL_ROLES:
            out.setdefault((c.service, "prefill"), []).append(c)
        if c.role in DECODE_ROLES and c.service in disaggregated:
            out.setdefault((c.service, "decode"), []).append(c)
    return out


def service_cuts(problem: Problem, service: str, members: list[Column], prices: np.ndarray) -> list[WorkCut]:
    """The work rows of one service's phase over its member columns at their replica prices."""
    rates = np.asarray({d.service: d for d in problem.demands}[service].bucket_rates_rps, dtype=float)
    caps = np.asarray([c.capacity_rps for c in members], dtype=float)
    groups = np.asarray([int(c.role is Role.UNIFIED) for c in members], dtype=np.int64)
    return work_cuts(rates, caps, prices, problem.headroom, WORK_REFERENCES, groups)


def add_work_rows(f: Built) -> None:
    """work[s,φ,j] for every service and phase (when f.work_rows)."""
    if not f.work_rows:
        return
    for (service, phase), members in phase_members(f.problem).items():
        # Valid for every integer plan (see work_cuts); they lift the LP bound where a service needs a few
        # whole replicas and the relaxation gets by with a fraction of one more.
        vars_ = np.asarray([f.n[c.key] for c in members], dtype=np.int64)
        prices = np.asarray([f.m.cost[f.n[c.key]] for c in members], dtype=float)
        for j, (keep, coef, rhs) in enumerate(service_cuts(f.problem, service, members, prices)):
            f.m.row(f"work[{service},{phase},{j}]", vars_[keep].tolist(), coef.tolist(), rhs, INF)


def violations(problem: Problem, solution: Solution) -> list[str]:
    """A plan with whole replicas that meets cover and capacity meets every work row (a failure is a bug)."""
    out = []
    pools = {p.id: p for p in problem.pools}
    for (service, phase), members in phase_members(problem).items():
        # The references depend on the prices only through their order; any prices give valid rows.
        prices = np.asarray([c.devices * pools[c.pool].usd_per_device_hour for c in members], dtype=float)
        n = np.asarray([solution.replicas.get(c.key, 0) for c in members], dtype=float)
        for j, (keep, coef, rhs) in enumerate(service_cuts(problem, service, members, prices)):
            have = float(np.dot(coef, n[keep]))
            if have < rhs - 1e-9:
                out.append(f"work[{service},{phase},{j}]: {have:.4g} < {rhs:g}")
    return out


FAMILY = Family("work", violations)
