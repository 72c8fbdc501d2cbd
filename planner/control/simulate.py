"""A simulated day: observe → forecast → plan → rollout → replay, for the control loop and the static peak plan.

The day's requests come from ``planner.control.day`` (a diurnal curve over the fleet's stated peak rates,
bursts, traces stretched over it) and are observed through a ``TraceTraffic``. Every period the loop decides
(``ControlLoop.decide``), the move is ordered into waves (``planner.control.moves``) and laid out in time
(start-up, drain), and the replicas the next period's plan adds start ahead, to be Ready when it begins; the
period's $ is what the waves and the early starts keep paid. On ``sample_s`` seconds of each stretch with
a different Ready set — while new replicas load (the old plan serves) and once the move is done — the
replay serves the period's actual requests against the Ready replicas, and against the static plan sized
for the stated peak. Attainment is the share of replayed requests that met both TTFT and TPOT targets.

What this checks and what it does not: the replay steps replicas with the planner's own performance model,
so it checks queueing under bursts, the forecast's misses and the loop's decisions and rollouts, not step
times (a model error moves both plans alike). Each replayed stretch starts with empty queues.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from planner.catalog import fleet_catalog
from planner.control.day import DaySpec, day_arrivals, history_rates, rate_curve
from planner.control.loop import ControlLoop, Decision, LoopSettings
from planner.control.moves import Rollout, drain_usd, order_moves, routed, serves, timeline
from planner.control.report import DayReport, HourRow, StepRow, summarise
from planner.io.profiles import fleet_perf_model
from planner.io.traces import Trace
from planner.model.candidates import column_key
from planner.observe import RateSeries, ServiceRequests, TraceTraffic
from planner.pipeline import InfeasibleFleet, PlanInputs, assemble_plan, build_inputs
from planner.replay import Arrivals, PerfStepTimes, ReplayOptions
from planner.replay.engine import Sim
from planner.replay.state import Replica
from planner.schema import FleetSpec, Plan, Traffic
from planner.solve import Problem, SolveOptions, explain_infeasible, solve
from planner.solve.formulation.transition import Transition
from planner.solve.problem import column_price
from planner.tolerance import planner_engine

WARM_S = 3600.0  # the hour before the day whose requests give the length mix the loop plans for


@dataclass(frozen=True)
class DayInputs:
    """A DAY file read: the day, its fleet (stated rates = the day's peak) and the traces it names."""

    day: DaySpec
    fleet: FleetSpec
    traces: Mapping[str, Trace] = field(default_factory=dict)


def loop_settings(day: DaySpec) -> LoopSettings:
    """The loop's settings from the DAY file."""
    c = day.loop
    tr = Transition(period_s=c.period_s, startup_s=c.startup_s, start_usd=c.start_usd, drain_s=c.drain_s,
                    dwell_periods=c.dwell_periods, hysteresis=c.hysteresis)
    return LoopSettings(transition=tr, horizon_periods=c.horizon_periods, quantile=c.quantile,
                        solve=SolveOptions(time_limit_s=c.solve_time_s, relative_gap=c.relative_gap),
                        history_days=day.history_days)


def generate_traffic(inputs: DayInputs, period_s: float) -> tuple[TraceTraffic, dict[str, np.ndarray], float]:
    """The day's requests (and the warm hour's, at negative times) and the history days' rates as a source;
    the true mean rate per period per service; the day's peak/trough of the summed rate per hour."""
    day = inputs.day
    span = day.hours * 3600.0
    requests: dict[str, ServiceRequests] = {}
    history: dict[str, RateSeries] = {}
    actual: dict[str, np.ndarray] = {}
    total_hourly = np.zeros(max(1, int(math.ceil(span / 3600.0))))
    for i, s in enumerate(inputs.fleet.services):
        rng = np.random.default_rng(day.seed * 1009 + 7919 * i)
        peak = s.traffic.rate_rps
        curve = rate_curve(peak, day, WARM_S + span, rng, offset_s=86400.0 - WARM_S)
        src = day.services.get(s.id)
        trace = inputs.traces.get(s.id)
        times, ins, outs = day_arrivals(
            curve, rng, trace_s=trace.arrival_s if trace is not None else None,
            trace_lengths=(trace.input_tokens, trace.output_tokens) if trace is not None else None,
            buckets=s.traffic.length_buckets() if trace is None else (),
            burst_cv=src.burst_cv if src is not None else 1.0)
        requests[s.id] = ServiceRequests(times - WARM_S, ins, outs)
        # The history ends where the warm hour starts (the curve's 23:00), so its days start there too: a
        # history on another clock teaches the forecast a season shifted against the day it forecasts.
        hist = history_rates(peak, day, period_s, rng, offset_s=86400.0 - WARM_S)
        history[s.id] = RateSeries(-WARM_S - hist.shape[0] * period_s, period_s, hist) if hist.size else \
            RateSeries(-WARM_S, period_s, hist)
        steps = int(round(span / period_s))
        actual[s.id] = curve.mean_rates(WARM_S, period_s, steps)
        hourly = curve.mean_rates(WARM_S, 3600.0, total_hourly.shape[0])
        total_hourly += hourly
    ratio = float(total_hourly.max() / max(total_hourly.min(), 1e-12))
    return TraceTraffic(requests, history), actual, ratio


def planning_fleet(fleet: FleetSpec, source: TraceTraffic, traces: Mapping[str, Trace]) -> FleetSpec:
    """The fleet the loop plans: trace-driven services take the length mix observed in the warm hour."""
    services = []
    for s in fleet.services:
        if s.id in traces or s.traffic.trace_file is not None:
            mix = list(source.window(s.id, -WARM_S, 0.0).buckets)
            if mix:
                s = s.model_copy(update={"traffic": Traffic(rate_rps=s.traffic.rate_rps, buckets=mix)})
        services.append(s)
    return fleet.model_copy(update={"services": services})


class _TracedSim(Sim):
    """The replay, also noting which replica group prefilled and which decoded each request (the labels a
    replica group's metrics carry in a cluster)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.decoded_by: dict[int, int] = {}
        self.prefilled_by: dict[int, int] = {}

    def _leave(self, rep: Replica, rid: int) -> None:
        self.decoded_by[rid] = rep.group
        super()._leave(rep, rid)

    def _to_decode(self, rid: int, src: Replica, now: float) -> None:
        self.prefilled_by[rid] = src.group
        super()._to_decode(rid, src, now)


@dataclass
class _Replayer:
    """Replays windows of the day's requests against plans, counting requests and those within the SLO."""

    fleet: FleetSpec
    source: TraceTraffic
    times: PerfStepTimes = field(init=False)
    engine: ReplayOptions = field(init=False)

    def __post_init__(self) -> None:
        self.catalog = fleet_catalog(self.fleet)
        self.times = PerfStepTimes(fleet_perf_model(self.fleet), self.fleet, self.catalog)
        self.engine = planner_engine(self.fleet)

    def window(self, plan: Plan, start_s: float, end_s: float, record: bool = False) -> dict[str, tuple[int, int]]:
        """Per service: (requests, requests within both targets) of ``[start_s, end_s)`` against ``plan``;
        ``record`` stores each request's latencies in the source (what the loop observes)."""
        workload: dict[str, Arrivals] = {}
        spans: dict[str, slice] = {}
        for svc, reqs in self.source.requests.items():
            sel = reqs.span(start_s, end_s)
            if sel.stop > sel.start:
                spans[svc] = sel
                workload[svc] = Arrivals(reqs.arrival_s[sel] - start_s, reqs.input_tokens[sel],
                                         reqs.output_tokens[sel])
        if not workload:
            return {}
        sim = _TracedSim(plan, self.fleet, self.catalog, self.times, workload, self.engine)
        sim.run()
        r = sim.req
        svc_of = np.asarray(r.service, dtype=np.int64)
        arrival, first, finish = (np.asarray(x, dtype=float) for x in (r.arrival, r.first_token, r.finish))
        out_tokens = np.asarray(r.output, dtype=float)
        done = finish >= 0
        ttft = np.where(done, (first - arrival) * 1e3, np.inf)
        tpot = np.where(done, np.where(out_tokens > 1, (finish - first) * 1e3 / np.maximum(out_tokens - 1, 1), 0.0),
                        np.inf)
        keys = [column_key(g.service, g.pool, g.configuration, g.memory_pool) for g in sim.groups]
        decoded = np.asarray([keys[sim.decoded_by[i]] if i in sim.decoded_by else "" for i in range(len(finish))],
                             dtype=object)
        prefilled = np.asarray([keys[sim.prefilled_by[i]] if i in sim.prefilled_by else decoded[i]
                                for i in range(len(finish))], dtype=object)
        out: dict[str, tuple[int, int]] = {}
        slos = {s.id: s.slo for s in self.fleet.services}
        for si, svc_obj in enumerate(sim.services):
            mine = svc_of == si  # in arrival order, as the service's requests are
            slo = slos[svc_obj.id]
            ok = (ttft[mine] <= slo.ttft_ms) & (tpot[mine] <= slo.tpot_ms)
            out[svc_obj.id] = (int(mine.sum()), int(ok.sum()))
            if record:
                self.source.record(svc_obj.id, spans[svc_obj.id], ttft[mine], tpot[mine], list(decoded[mine]),
                                   list(prefilled[mine]))
        return out


def _add(into: dict[str, list[int]], counts: Mapping[str, tuple[int, int]]) -> None:
    for svc, (n, ok) in counts.items():
        cell = into.setdefault(svc, [0, 0])
        cell[0] += n
        cell[1] += ok


def _paid_usd(problem: Problem, replicas: Mapping[str, int], seconds: float) -> float:
    pools = {p.id: p for p in problem.pools}
    cols = {c.key: c for c in problem.columns}
    return sum(column_price(cols[k], pools) * n for k, n in replicas.items() if k in cols) * seconds / 3600.0


def _short_waves(loop: ControlLoop, rollout: Rollout, need_rps: Mapping[str, float]) -> int:
    """Stop waves after which the Ready replicas do not carry the new plan's demand (0 when make-before-break
    held: ``order_moves`` stops only what the Ready set can spare; checked here on its own)."""
    need = loop.problem_at(need_rps, restrict=False)
    return sum(1 for w in rollout.waves if w.kind == "stop" and not serves(need, w.ready))


def static_peak_plan(fleet: FleetSpec, inputs: PlanInputs) -> Plan:
    """The plan a fleet file gives without a loop: sized once for the stated (peak) rates."""
    o = fleet.planner
    opts = SolveOptions(backend=o.solver, time_limit_s=o.time_limit_s, relative_gap=o.relative_gap)
    sol = solve(inputs.problem, opts)
    if sol.status not in ("optimal", "feasible"):
        raise InfeasibleFleet(explain_infeasible(inputs.problem, opts))
    return assemble_plan(fleet, inputs, sol, opts, fleet_catalog(fleet), [], [], None, "")


@dataclass
class _Day:
    """The simulation's state between periods."""

    day: DaySpec
    loop: ControlLoop
    static: Plan
    replayer: _Replayer
    actual: Mapping[str, np.ndarray]
    prev: Decision
    prev_plan: Plan

    def period(self, k: int, now: float, count: bool) -> StepRow | None:
        """Decide, roll out and replay one period; ``count``: also replay the static plan and report it."""
        loop, settings = self.loop, self.loop.settings
        period = settings.transition.period_s
        decision = loop.decide(self.replayer.source, now)
        limits = loop.problem_at(decision.planned_rps, restrict=False)
        rollout = order_moves(limits, limits, decision.before, decision.after)
        segments = timeline(rollout, settings.transition.startup_s, period, decision.ahead, decision.ahead_s)
        plan_after = loop.plan_of(decision.solution, decision.planned_rps)
        counts_loop: dict[str, list[int]] = {}
        counts_static: dict[str, list[int]] = {}
        for seg in segments:
            end = min(seg.end_s, seg.start_s + self.day.sample_s)
            if end <= seg.start_s:
                continue
            if seg.ready == decision.after:
                plan = plan_after
            elif seg.ready == self.prev.after:
                plan = self.prev_plan
            else:
                plan = _plan_for(loop, seg.ready, decision, self.prev)
            _add(counts_loop, self.replayer.window(plan, now + seg.start_s, now + end, record=True))
            if count:
                _add(counts_static, self.replayer.window(self.static, now + seg.start_s, now + end))
        self.prev, self.prev_plan = decision, plan_after
        if not count:
            return None
        usd = sum(_paid_usd(limits, s.paid, s.end_s - s.start_s) for s in segments)
        usd += drain_usd(limits, rollout, settings.transition.drain_s)
        return StepRow(
            step=k, start_s=now, loop_usd=usd, static_usd=self.static.cost_usd_per_hour * period / 3600.0,
            loop_usd_per_hour=decision.solution.cost_usd_per_hour or 0.0,
            started=rollout.started + sum(decision.ahead.values()),
            stopped=rollout.stopped, waves=len(rollout.waves), blocked=rollout.blocked,
            short_waves=_short_waves(loop, rollout, decision.planned_rps),
            moved=sorted(decision.moved), fallback=decision.fallback,
            solve_s=decision.horizon.seconds if decision.horizon else 0.0,
            actual_rps={svc: float(a[k]) for svc, a in self.actual.items()},
            forecast_rps={svc: float(f.median_rps[0]) for svc, f in decision.forecasts.items()},
            upper_rps={svc: float(f.upper_rps[0]) for svc, f in decision.forecasts.items()},
            planned_rps=dict(decision.planned_rps), factors=dict(decision.factors),
            loop_counts={svc: (c[0], c[1]) for svc, c in counts_loop.items()},
            static_counts={svc: (c[0], c[1]) for svc, c in counts_static.items()})


def simulate_day(inputs: DayInputs, progress: Callable[[str], None] | None = None) -> DayReport:
    """Run the loop and the static peak plan through the day; the report holds both side by side.

    The loop starts an hour before the day (the warm hour: what it learns then — capacity factors, what runs — it
    keeps, as a loop running since yesterday would); only the day itself is counted."""
    day = inputs.day
    settings = loop_settings(day)
    period = settings.transition.period_s
    source, actual, ratio = generate_traffic(inputs, period)
    fleet = planning_fleet(inputs.fleet, source, inputs.traces)
    plan_inputs = build_inputs(fleet)
    static = static_peak_plan(fleet, plan_inputs)
    loop = ControlLoop(fleet, plan_inputs, settings)
    replayer = _Replayer(fleet, source)
    boot = loop.boot(source, -WARM_S)
    sim = _Day(day, loop, static, replayer, actual, boot, loop.plan_of(boot.solution, boot.planned_rps))
    for now in np.arange(-WARM_S + period, 0.0 - 1e-6, period):
        sim.period(-1, float(now), count=False)
    steps = int(round(day.hours * 3600.0 / period))
    rows: list[StepRow] = []
    for k in range(steps):
        row = sim.period(k, k * period, count=True)
        assert row is not None
        rows.append(row)
        if progress is not None and ((k + 1) * period) % 3600.0 < 1e-6:
            progress(_progress_line(rows, k, period, steps))
    percentiles = {s.id: s.slo.percentile for s in fleet.services}
    return summarise(inputs.fleet.name, day, static, rows, ratio, period, percentiles)


def _plan_for(loop: ControlLoop, ready: Mapping[str, int], decision: Decision, prev: Decision | None) -> Plan:
    """The plan of a Ready set between two plans: routed by an LP at the smaller of their demands (scaled
    down until it carries them, so its shares exist)."""
    rates = {svc: min(r, prev.planned_rps.get(svc, r)) if prev is not None else r
             for svc, r in decision.planned_rps.items()}
    for _ in range(12):
        sol = routed(loop.problem_at(rates, restrict=False), ready)
        if sol is not None:
            return loop.plan_of(sol, rates)
        rates = {svc: 0.8 * r for svc, r in rates.items()}
    raise RuntimeError("no routing for a Ready set between two plans")


def _progress_line(rows: list[StepRow], k: int, period: float, steps: int) -> str:
    hour = int(round((k + 1) * period / 3600.0))
    last = [r for r in rows if r.start_s >= (hour - 1) * 3600.0 - 1e-6]
    n = sum(c[0] for r in last for c in r.loop_counts.values())
    ok = sum(c[1] for r in last for c in r.loop_counts.values())
    ns = sum(c[0] for r in last for c in r.static_counts.values())
    oks = sum(c[1] for r in last for c in r.static_counts.values())
    return (f"hour {hour}/{int(round(steps * period / 3600.0))}: loop ${sum(r.loop_usd for r in last):.2f} "
            f"(static ${sum(r.static_usd for r in last):.2f}), attainment {100 * ok / max(n, 1):.1f}% "
            f"(static {100 * oks / max(ns, 1):.1f}%), started {sum(r.started for r in last)}, "
            f"stopped {sum(r.stopped for r in last)}")


__all__ = ["DayInputs", "DayReport", "HourRow", "StepRow", "generate_traffic", "loop_settings", "simulate_day"]
