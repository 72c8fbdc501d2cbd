"""What a simulated day reports: per period, per hour and for the day, the control loop beside the static
peak plan — $, SLO attainment (replayed requests within both TTFT and TPOT targets), replicas started and
stopped, forecast against actual, and whether any rollout step left a service short."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pydantic import Field

from planner.control.day import DaySpec
from planner.schema import Plan, Value

Counts = tuple[int, int]  # (requests replayed, requests within the SLO)


class StepRow(Value):
    """One period of the day."""

    step: int
    start_s: float
    loop_usd: float
    static_usd: float
    loop_usd_per_hour: float  # the plan in force once the move is done
    started: int
    stopped: int
    waves: int
    blocked: str = ""
    short_waves: int = 0  # stop waves after which the Ready replicas did not carry the new plan's demand
    moved: list[str] = Field(default_factory=list)
    fallback: str = ""
    solve_s: float = 0.0
    actual_rps: dict[str, float] = Field(default_factory=dict)  # the day's true mean rate over the period
    forecast_rps: dict[str, float] = Field(default_factory=dict)  # the forecast's median for the period
    upper_rps: dict[str, float] = Field(default_factory=dict)  # the forecast's upper quantile
    planned_rps: dict[str, float] = Field(default_factory=dict)  # what the plan is sized for (carried)
    factors: dict[str, float] = Field(default_factory=dict)  # capacity factors below 1 (SLO feedback)
    loop_counts: dict[str, Counts] = Field(default_factory=dict)
    static_counts: dict[str, Counts] = Field(default_factory=dict)


class HourRow(Value):
    """One hour: the sums of its periods."""

    hour: int
    loop_usd: float
    static_usd: float
    requests: int
    loop_attainment: float
    static_attainment: float
    loop_service_attainment: dict[str, float]
    started: int
    stopped: int
    moves: int


class DayReport(Value):
    """The day, the loop beside the static peak plan."""

    fleet: str
    hours: float
    period_s: float
    peak_to_trough: float
    static_usd_per_hour: float
    static_usd: float
    loop_usd: float
    saving: float  # 1 − loop / static
    static_attainment: float
    loop_attainment: float
    attainment_ratio: float  # loop / static
    static_worst_hour_attainment: float
    loop_worst_hour_attainment: float
    slo_percentile: dict[str, float]
    loop_hours_below_slo: int  # (service, hour) pairs whose attainment is under the service's percentile
    static_hours_below_slo: int
    started: int
    stopped: int
    short_waves: int
    blocked_rollouts: int
    fallbacks: int
    forecast_coverage: dict[str, float]  # share of periods whose actual rate stayed at or under the upper bound
    mean_solve_s: float
    max_solve_s: float
    static_plan: Plan
    hour_rows: list[HourRow]
    steps: list[StepRow]

    def summary(self) -> dict[str, object]:
        """The figures of the JSON line that ends the benchmark and ``medley simulate``."""
        return {
            "static_usd": round(self.static_usd, 2), "loop_usd": round(self.loop_usd, 2),
            "saving": round(self.saving, 4), "static_attainment": round(self.static_attainment, 5),
            "loop_attainment": round(self.loop_attainment, 5),
            "attainment_ratio": round(self.attainment_ratio, 5),
            "loop_worst_hour_attainment": round(self.loop_worst_hour_attainment, 5),
            "static_worst_hour_attainment": round(self.static_worst_hour_attainment, 5),
            "loop_hours_below_slo": self.loop_hours_below_slo, "started": self.started, "stopped": self.stopped,
            "short_waves": self.short_waves, "blocked_rollouts": self.blocked_rollouts,
            "fallbacks": self.fallbacks, "peak_to_trough": round(self.peak_to_trough, 2),
            "forecast_coverage": {k: round(v, 3) for k, v in self.forecast_coverage.items()},
            "mean_solve_s": round(self.mean_solve_s, 2),
        }


def _share(cells: Sequence[dict[str, Counts]]) -> tuple[int, int]:
    n = sum(c[0] for cell in cells for c in cell.values())
    ok = sum(c[1] for cell in cells for c in cell.values())
    return n, ok


def _hours(rows: Sequence[StepRow], period_s: float, percentiles: dict[str, float]) -> tuple[list[HourRow], int,
                                                                                            int]:
    per_hour = max(1, int(round(3600.0 / period_s)))
    out = []
    below_loop = below_static = 0
    for h in range(math.ceil(len(rows) / per_hour)):
        chunk = rows[h * per_hour: (h + 1) * per_hour]
        n, ok = _share([r.loop_counts for r in chunk])
        ns, oks = _share([r.static_counts for r in chunk])
        by_service: dict[str, float] = {}
        for svc, pct in percentiles.items():
            sn = sum(r.loop_counts.get(svc, (0, 0))[0] for r in chunk)
            sok = sum(r.loop_counts.get(svc, (0, 0))[1] for r in chunk)
            stn = sum(r.static_counts.get(svc, (0, 0))[0] for r in chunk)
            stok = sum(r.static_counts.get(svc, (0, 0))[1] for r in chunk)
            if sn:
                by_service[svc] = sok / sn
                below_loop += int(sok / sn < pct / 100.0 - 1e-12)
            if stn:
                below_static += int(stok / stn < pct / 100.0 - 1e-12)
        out.append(HourRow(hour=h, loop_usd=sum(r.loop_usd for r in chunk), static_usd=sum(r.static_usd for r in chunk),
                           requests=n, loop_attainment=ok / n if n else 1.0, static_attainment=oks / ns if ns else 1.0,
                           loop_service_attainment=by_service, started=sum(r.started for r in chunk),
                           stopped=sum(r.stopped for r in chunk), moves=sum(len(r.moved) for r in chunk)))
    return out, below_loop, below_static


def summarise(fleet: str, day: DaySpec, static: Plan, rows: list[StepRow], ratio: float, period_s: float,
              percentiles: dict[str, float]) -> DayReport:
    """The day's report from its periods."""
    hours, below_loop, below_static = _hours(rows, period_s, percentiles)
    n, ok = _share([r.loop_counts for r in rows])
    ns, oks = _share([r.static_counts for r in rows])
    static_usd = sum(r.static_usd for r in rows)
    loop_usd = sum(r.loop_usd for r in rows)
    loop_att = ok / n if n else 1.0
    static_att = oks / ns if ns else 1.0
    coverage = {}
    for svc in percentiles:
        pairs = [(r.actual_rps[svc], r.upper_rps[svc]) for r in rows if svc in r.actual_rps and svc in r.upper_rps]
        coverage[svc] = sum(1 for a, u in pairs if a <= u + 1e-9) / len(pairs) if pairs else math.nan
    solves = [r.solve_s for r in rows] or [0.0]
    return DayReport(
        fleet=fleet, hours=day.hours, period_s=period_s, peak_to_trough=ratio,
        static_usd_per_hour=static.cost_usd_per_hour, static_usd=static_usd, loop_usd=loop_usd,
        saving=1.0 - loop_usd / static_usd if static_usd > 0 else 0.0, static_attainment=static_att,
        loop_attainment=loop_att, attainment_ratio=loop_att / static_att if static_att > 0 else 0.0,
        static_worst_hour_attainment=min((h.static_attainment for h in hours), default=1.0),
        loop_worst_hour_attainment=min((h.loop_attainment for h in hours), default=1.0),
        slo_percentile=percentiles, loop_hours_below_slo=below_loop, static_hours_below_slo=below_static,
        started=sum(r.started for r in rows), stopped=sum(r.stopped for r in rows),
        short_waves=sum(r.short_waves for r in rows), blocked_rollouts=sum(1 for r in rows if r.blocked),
        fallbacks=sum(1 for r in rows if r.fallback), forecast_coverage=coverage,
        mean_solve_s=sum(solves) / len(solves), max_solve_s=max(solves), static_plan=static, hour_rows=hours,
        steps=rows)
