"""Plans over a horizon of periods that price the moves between them (the transition family).

``solve_horizon`` stacks one fleet model per period — every constraint family with that period's demand,
its $/h weighted by the period's hours — links the copies with the transition rows (start-up and drain
paid, one move per dwell window, hysteresis on shrinking, make-before-break room in pools; the math is in
``planner.solve.formulation.transition``), and solves the whole on one backend by the deadline. The
control loop applies period 0 and solves again next period (receding horizon).

``carried_rates`` gives each period the demand it must carry while its successors' replicas load:
max(λ_t, …, λ_{t+C}), C = ``Transition.carried()`` = ⌈start-up / period⌉ − 1 (0 when a replica loads within a
period: the loop starts the next plan's replicas ahead, ``Transition.prestart_s``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from planner.clock import Deadline
from planner.solve.backends import RawResult, backend_for
from planner.solve.formulation import build, violations
from planner.solve.formulation.matrix import Matrix
from planner.solve.formulation.transition import (
    Stack,
    Transition,
    add_dwell,
    add_hysteresis,
    add_moves,
    add_swap_pools,
    hysteresis_reference,
    moves_of,
)
from planner.solve.formulation.work import phase_members
from planner.solve.problem import Problem, Solution, SolveOptions, Status, pool_usage
from planner.solve.strategies.base import solution_of

MIN_SOLVE_S = 0.5
HORIZON_GAP = 1e-4  # the stacked objective carries dwell prices; see solve_horizon


@dataclass(frozen=True)
class HorizonProblem:
    """One fleet model per period (same pools and columns, the period's demand), what runs now, and how many
    periods ago each service last moved (1: at the start of the period before this one)."""

    periods: tuple[Problem, ...]
    transition: Transition = field(default_factory=Transition)
    current: Mapping[str, int] = field(default_factory=dict)
    last_move_age: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class HorizonSolution:
    """The plan of every period, the replicas each period starts and stops, and the solver's account."""

    status: Status
    plans: tuple[Solution, ...]
    objective_usd: float | None
    best_bound_usd: float | None
    seconds: float
    variables: int
    constraints: int
    started: tuple[int, ...] = ()
    stopped: tuple[int, ...] = ()
    message: str = ""

    @property
    def first(self) -> Solution:
        """Period 0's plan: the one to apply now."""
        return self.plans[0]


def carried_rates(rates: Sequence[float], lookahead: int) -> list[float]:
    """max(λ_t, …, λ_{t+lookahead}) per period (the last periods carry what the horizon still shows)."""
    out = []
    for t in range(len(rates)):
        out.append(max(rates[t: t + lookahead + 1]))
    return out


def build_horizon(hp: HorizonProblem, options: SolveOptions) -> Stack:
    """The stacked model: per-period blocks (objective in $ over the period) and the transition rows."""
    tr = hp.transition
    hours = tr.period_s / 3600.0
    m = Matrix()
    stack = Stack(m, [], [], [], {}, {}, {}, {})
    for p in hp.periods:
        f = build(replace(p, current_replicas={}, churn_usd_per_replica_change=0.0), link=options.link_rows,
                  bucket_rows=options.bucket_rows, work_rows=options.work_rows)
        off, roff = len(m.cost), len(m.row_lb)
        stack.periods.append(f)
        stack.offsets.append(off)
        stack.row_offsets.append(roff)
        m.col_lb.extend(f.m.col_lb)
        m.col_ub.extend(f.m.col_ub)
        m.cost.extend(c * hours for c in f.m.cost)
        m.integer.extend(f.m.integer)
        m.row_lb.extend(f.m.row_lb)
        m.row_ub.extend(f.m.row_ub)
        m.row_names += [f"{name}@{len(stack.periods) - 1}" for name in f.m.row_names]
        m.nz_row.extend(r + roff for r in f.m.nz_row)
        m.nz_col.extend(c + off for c in f.m.nz_col)
        m.nz_val.extend(f.m.nz_val)
        m.offset += f.m.offset * hours
    add_moves(stack, hp.current, tr)
    add_dwell(stack, hp.last_move_age, tr)
    add_hysteresis(stack, tr)
    add_swap_pools(stack)
    return stack


def _period_solution(hp: HorizonProblem, stack: Stack, raw: RawResult, t: int, backend: str,
                     seconds: float) -> Solution:
    assert raw.values is not None
    f = stack.periods[t]
    block = raw.values[stack.offsets[t]: stack.offsets[t] + len(f.m.cost)]
    sol = solution_of(f.problem, f, RawResult(raw.status, block, None, None), backend, seconds, {})
    return replace(sol, objective=sol.cost_usd_per_hour)


def at_least(deadline: Deadline, seconds: float) -> Deadline:
    """The deadline, or ``seconds`` from now where that is later: each period's plan must be made, so its solve
    gets a minimum even when the loop's period is nearly spent."""
    return Deadline(max(deadline.end, deadline.now() + seconds), deadline.clock)


def solve_horizon(hp: HorizonProblem, options: SolveOptions, deadline: Deadline) -> HorizonSolution:
    """The cheapest sequence of plans (period $ plus move prices) by the deadline."""
    if not hp.periods:
        raise ValueError("periods: a horizon needs at least one period")
    start = deadline.now()
    stack = build_horizon(hp, options)
    # A relative gap on an objective that carries dwell prices ($1000 a move by default) lets plans through that
    # pay far more per hour than the gap says; the horizon model is small, so it is solved to (near) optimality
    # and the deadline bounds the time.
    exact = replace(options, relative_gap=min(options.relative_gap, HORIZON_GAP))
    raw = backend_for(options.backend).solve(stack.m, exact, at_least(deadline, MIN_SOLVE_S))
    seconds = deadline.now() - start
    nvars, nrows = len(stack.m.cost), len(stack.m.row_lb)
    if raw.values is None:
        return HorizonSolution(raw.status, (), None, None, seconds, nvars, nrows, message=raw.message)
    plans = tuple(_period_solution(hp, stack, raw, t, options.backend, seconds) for t in range(len(hp.periods)))
    started, stopped = [], []
    before: Mapping[str, int] = hp.current
    for sol in plans:
        up, down = moves_of(before, sol.replicas)
        started.append(up)
        stopped.append(down)
        before = sol.replicas
    return HorizonSolution(raw.status, plans, raw.objective, raw.best_bound, seconds, nvars, nrows,
                           tuple(started), tuple(stopped), raw.message)


def moved_services(problem: Problem, before: Mapping[str, int], after: Mapping[str, int]) -> set[str]:
    """Services whose replica counts differ between two assignments."""
    service = {c.key: c.service for c in problem.columns}
    return {service.get(k, k.split("|")[0]) for k in set(before) | set(after)
            if before.get(k, 0) != after.get(k, 0)}


def horizon_violations(hp: HorizonProblem, sol: HorizonSolution) -> list[str]:
    """How the plans break a period's fleet rows, the pools' make-before-break room or the hysteresis rule
    (empty: they keep them all). Moves inside a dwell window are priced, not forbidden: ``dwell_moves``."""
    out: list[str] = []
    tr = hp.transition
    before: Mapping[str, int] = hp.current
    for t, (problem, plan) in enumerate(zip(hp.periods, sol.plans, strict=True)):
        out += [f"period {t}: {v}" for v in violations(problem, plan)]
        both = {k: max(before.get(k, 0), plan.replicas.get(k, 0)) for k in set(before) | set(plan.replicas)}
        used = pool_usage(problem, both)
        for p in problem.pools:
            if p.max_nodes is not None and used[p.id] > p.max_nodes * p.devices_per_node:
                out.append(f"period {t}: pool {p.id} holds {used[p.id]} devices while replacing replicas "
                           f"> {p.max_nodes * p.devices_per_node}")
        out += _hysteresis_breaks(problem, before, plan.replicas, tr, t)
        before = plan.replicas
    return out


def _hysteresis_breaks(problem: Problem, before: Mapping[str, int], after: Mapping[str, int], tr: Transition,
                       t: int) -> list[str]:
    out = []
    shrunk = {c.service for c in problem.columns if after.get(c.key, 0) < before.get(c.key, 0)}
    for (svc, phase), members in phase_members(problem).items():
        ref = hysteresis_reference(problem, members) if svc in shrunk and tr.hysteresis > 0 else None
        if ref is None:
            continue
        rho, u = ref
        rates = np.asarray({d.service: d for d in problem.demands}[svc].bucket_rates_rps, dtype=float)
        beta = float(np.dot(rates, u)) / problem.headroom
        have = float(sum(r * after.get(c.key, 0) for r, c in zip(rho.tolist(), members, strict=True)))
        if have < beta * (1 + tr.hysteresis) - 1e-6:
            out.append(f"period {t}: {svc} {phase} shrinks with {have:.3g} work < {beta * (1 + tr.hysteresis):.3g}")
    return out


def dwell_moves(hp: HorizonProblem, sol: HorizonSolution) -> dict[str, int]:
    """Per service, its moves over the horizon beyond one per dwell window (counting the move before it)."""
    w = hp.transition.dwell_periods
    out: dict[str, int] = {}
    problem = hp.periods[0]
    times: dict[str, list[int]] = {d.service: [] for d in problem.demands}
    for svc, age in hp.last_move_age.items():
        if svc in times and age >= 0:
            times[svc].append(-age)  # age 0: the move into period 0 began ahead; period 0's changes complete it
    before: Mapping[str, int] = hp.current
    for t, plan in enumerate(sol.plans):
        for svc in moved_services(problem, before, plan.replicas):
            if t not in times.setdefault(svc, []):
                times[svc].append(t)
        before = plan.replicas
    for svc, ts in times.items():
        extra = sum(1 for i in range(1, len(ts)) if ts[i] - ts[i - 1] < w)
        if extra:
            out[svc] = extra
    return out
