"""The order of a move between two plans, pure: waves of starts and stops that keep, at every step, the
pools' devices and the power domains' nameplate within their limits and each service served.

Make-before-break per service: a *start wave* starts every new replica that fits next to what runs (old
replicas included, since they serve until the new ones are Ready); a *stop wave* then drains and stops old
replicas, each only while the Ready replicas left still carry the demand the new plan is sized for (an LP
over the fleet model with the replica counts fixed: cover, capacity, minimum replicas and zone spread).
When a pool is too full to hold both, the waves alternate — start what fits, stop what the new replicas
free, start again — and when no wave can move without leaving a service short, the rollout stops there and
says why (``Rollout.blocked``): it never breaks before it makes.

``timeline`` turns the waves into time: a start wave lasts the model's start-up (its replicas are paid, not
yet Ready), a stop wave takes its replicas out of service at once and pays them while they drain; replicas
started ahead for the next period's plan (``fit_starts`` keeps them within the same limits) are paid from
the moment they start and join the Ready set at the next period.
"""

from __future__ import annotations

from array import array
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Literal

from planner.solve import Problem, Solution, SolveOptions, pool_usage
from planner.solve.backends import RawResult, backend_for
from planner.solve.formulation import Built, build
from planner.solve.problem import column_price, nodes_used
from planner.solve.strategies.base import solution_of

MAX_WAVES = 16


@dataclass(frozen=True)
class Wave:
    """One step of a rollout: replicas started or stopped, and the Ready replicas once it is done."""

    kind: Literal["start", "stop"]
    replicas: dict[str, int]
    ready: dict[str, int]
    running: dict[str, int]  # replicas paid during the wave (Ready, loading or draining)


@dataclass(frozen=True)
class Rollout:
    """The waves from one plan to another; ``blocked`` says why the rest could not be made safely."""

    before: dict[str, int]
    after: dict[str, int]
    waves: tuple[Wave, ...]
    blocked: str = ""

    @property
    def started(self) -> int:
        return sum(sum(w.replicas.values()) for w in self.waves if w.kind == "start")

    @property
    def stopped(self) -> int:
        return sum(sum(w.replicas.values()) for w in self.waves if w.kind == "stop")


def plus(a: Mapping[str, int], b: Mapping[str, int], sign: int = 1) -> dict[str, int]:
    """Replica counts ``a`` with ``b`` added (``sign`` −1: taken away), keeping only the positive ones."""
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + sign * v
    return {k: v for k, v in out.items() if v > 0}


def within_limits(problem: Problem, replicas: Mapping[str, int]) -> list[str]:
    """How ``replicas`` (all running at once) break a pool's node limit or a domain's nameplate (empty: no way)."""
    known = {c.key for c in problem.columns}
    used = pool_usage(problem, {k: v for k, v in replicas.items() if k in known})
    out = []
    for p in problem.pools:
        if p.max_nodes is not None and used[p.id] > p.max_nodes * p.devices_per_node:
            out.append(f"pool {p.id}: {used[p.id]} devices > {p.max_nodes * p.devices_per_node}")
    nodes = nodes_used(problem, used)
    for k in problem.power_budgets:
        watts = sum(p.nameplate_watts_per_node * nodes[p.id] for p in problem.pools if p.power_domain == k.id)
        if watts > k.oversubscription_ratio * k.budget_watts + 1e-6:
            limit = k.oversubscription_ratio * k.budget_watts
            out.append(f"power domain {k.id}: nameplate {watts:.0f} W > {limit:.0f} W")
    return out


def _fixed(problem: Problem, replicas: Mapping[str, int]) -> tuple[Problem, Built, RawResult]:
    """The fleet model as an LP with the replica counts fixed at ``replicas``."""
    sub = replace(problem, columns=tuple(c for c in problem.columns if replicas.get(c.key, 0) > 0),
                  current_replicas={}, churn_usd_per_replica_change=0.0)
    f = build(sub, link=False)
    for key, var in f.n.items():
        f.m.col_lb[var] = f.m.col_ub[var] = float(replicas.get(key, 0))
    f.m.integer = array("b", bytes(len(f.m.integer)))
    return sub, f, backend_for("highs").solve(f.m, SolveOptions(time_limit_s=10.0))


def serves(problem: Problem, replicas: Mapping[str, int]) -> bool:
    """Whether these replica counts carry the problem's demand (cover, capacity, minimum replicas, spread)."""
    return _fixed(problem, replicas)[2].status in ("optimal", "feasible")


def routed(problem: Problem, replicas: Mapping[str, int]) -> Solution | None:
    """These replica counts with the load split that carries the problem's demand (None: they cannot)."""
    sub, f, raw = _fixed(problem, replicas)
    if raw.status not in ("optimal", "feasible") or raw.values is None:
        return None
    return solution_of(sub, f, raw, "highs", 0.0, {})


def _largest(ok: Callable[[int], bool], top: int) -> int:
    """Largest i in [0, top] with ok(i) (ok monotone: true up to some i); 0 when none above 0."""
    lo, hi = 0, top
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def fit_starts(limits: Problem, running: Mapping[str, int], wanted: Mapping[str, int]) -> dict[str, int]:
    """The most of ``wanted`` (column by column, in service order) that can start next to ``running`` within the
    pools' node limits and the power domains' nameplate."""
    service = {c.key: c.service for c in limits.columns}
    started: dict[str, int] = {}
    for k in sorted((k for k, v in wanted.items() if v > 0), key=lambda k: (service.get(k, ""), k)):
        def fits(i: int, k: str = k) -> bool:
            return not within_limits(limits, plus(running, plus(started, {k: i})))
        n = _largest(fits, wanted[k])
        if n:
            started[k] = n
    return started


def order_moves(limits: Problem, need: Problem, before: Mapping[str, int], after: Mapping[str, int]) -> Rollout:
    """Waves from ``before`` to ``after``: pools and power of ``limits`` kept at every step, and every stop
    only while the Ready replicas left carry ``need`` (the demand the new plan is sized for)."""
    ready = {k: v for k, v in before.items() if v > 0}
    target = {k: v for k, v in after.items() if v > 0}
    prices = {c.key: column_price(c, {p.id: p for p in limits.pools}) for c in limits.columns}
    waves: list[Wave] = []
    blocked = ""
    for _ in range(MAX_WAVES):
        to_start = {k: target[k] - ready.get(k, 0) for k in target if target[k] > ready.get(k, 0)}
        to_stop = {k: ready[k] - target.get(k, 0) for k in ready if ready[k] > target.get(k, 0)}
        if not to_start and not to_stop:
            break
        started = fit_starts(limits, ready, to_start)
        if started:
            waves.append(Wave("start", started, plus(ready, started), plus(ready, started)))
            ready = plus(ready, started)
        stopped: dict[str, int] = {}
        for k in sorted(to_stop, key=lambda k: (-prices.get(k, 0.0), k)):
            def still_serves(i: int, k: str = k, ready: dict[str, int] = ready,
                             stopped: dict[str, int] = stopped) -> bool:
                return serves(need, plus(ready, plus(stopped, {k: i}), -1))
            n = _largest(still_serves, to_stop[k])
            if n:
                stopped[k] = n
        if stopped:
            waves.append(Wave("stop", stopped, plus(ready, stopped, -1), dict(ready)))
            ready = plus(ready, stopped, -1)
        if not started and not stopped:
            short = list(to_start)
            blocked = ("no room to start " + ", ".join(short) + " next to the running replicas, and none of "
                       + ", ".join(to_stop) + " can stop without leaving its service short") if short else (
                "stopping " + ", ".join(to_stop) + " would leave a service short of its demand")
            break
    return Rollout(dict(before), dict(target), tuple(waves), blocked)


@dataclass(frozen=True)
class Segment:
    """A stretch of a period: from ``start_s`` to ``end_s`` (seconds into it), these replicas are Ready and
    these are paid."""

    start_s: float
    end_s: float
    ready: dict[str, int]
    paid: dict[str, int]


def timeline(rollout: Rollout, startup_s: float, period_s: float, ahead: Mapping[str, int] | None = None,
             ahead_s: float | None = None) -> list[Segment]:
    """The period's segments: a start wave keeps the Ready set and pays its new replicas for ``startup_s``;
    a stop wave changes the Ready set at once (its draining is paid apart, ``drain_usd``); ``ahead``, replicas
    for the next plan, are paid from ``ahead_s`` into the period (or once the waves are done, if later)."""
    segments: list[Segment] = []
    at = 0.0
    ready = dict(rollout.before)
    for wave in rollout.waves:
        if wave.kind == "start":
            end = min(period_s, at + startup_s)
            if end > at:
                segments.append(Segment(at, end, ready, plus(ready, wave.replicas)))
            at += startup_s
        ready = wave.ready
    extra = {k: v for k, v in (ahead or {}).items() if v > 0}
    split = max(at, ahead_s if ahead_s is not None else period_s) if extra else period_s
    if at < min(split, period_s):
        segments.append(Segment(at, min(split, period_s), ready, dict(ready)))
    if split < period_s:
        segments.append(Segment(split, period_s, ready, plus(ready, extra)))
    return segments


def drain_usd(limits: Problem, rollout: Rollout, drain_s: float) -> float:
    """$ paid for the stopped replicas while they drain."""
    pools = {p.id: p for p in limits.pools}
    price = {c.key: column_price(c, pools) for c in limits.columns}
    return sum(price.get(k, 0.0) * n * drain_s / 3600.0 for w in rollout.waves if w.kind == "stop"
               for k, n in w.replicas.items())
