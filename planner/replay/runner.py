"""Run a replay (``replay``) and search the largest rate a plan sustains (``max_rate_meeting_slo``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from planner.catalog import Catalog
from planner.replay.engine import Sim
from planner.replay.report import ReplayReport
from planner.replay.state import ReplayOptions
from planner.replay.steptimes import StepTimes
from planner.replay.workload import Arrivals
from planner.schema import FleetSpec, Plan


def replay(
    plan: Plan,
    fleet: FleetSpec,
    catalog: Catalog,
    times: StepTimes,
    workload: Mapping[str, Arrivals],
    options: ReplayOptions | None = None,
) -> ReplayReport:
    """Replay arrivals per service against the plan's replica groups and report what they saw."""
    sim = Sim(plan, fleet, catalog, times, workload, options or ReplayOptions())
    sim.run()
    return sim.report()


def max_rate_meeting_slo(
    attains: Callable[[float], bool], lo_rps: float, hi_rps: float, *, tolerance_rps: float = 0.05
) -> float:
    """Largest rate in ``[lo, hi]`` for which ``attains(rate)`` holds, by bisection (monotone assumed)."""
    if not attains(lo_rps):
        return 0.0
    while hi_rps - lo_rps > tolerance_rps:
        mid = 0.5 * (lo_rps + hi_rps)
        if attains(mid):
            lo_rps = mid
        else:
            hi_rps = mid
    return lo_rps
