"""Running what-if scenarios and sweeps: the baseline and every changed fleet through one planner.

:func:`run_scenarios` and :func:`run_sweep` are what the CLI and the REST API call; the planner is a
:class:`planner.ports.Planner` and the replay a ``Verifier``, both injected (defaults: ``plan_fleet`` without
baselines, and a Poisson replay).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from planner.io.fleetfile import check_fleet
from planner.pipeline import InfeasibleFleet, fleet_planner
from planner.ports import Planner
from planner.schema import FleetSpec, Plan
from planner.whatif.changes import compile_scenario
from planner.whatif.expressions import Reader, ScenarioError, Sweep, parse_expression, parse_sweep
from planner.whatif.results import ScenarioResult, SweepPoint, SweepReport, WhatIfReport
from planner.whatif.scenarios import Scenario
from planner.whatif.summary import infeasible, summarise

Verifier = Callable[[Plan, FleetSpec], Any]
Progress = Callable[[int, int, str], None]


def default_planner(base_dir: Path | None = None) -> Planner:
    """``plan_fleet`` without baselines (what-ifs compare with the fleet's own plan, not single types)."""
    return fleet_planner(baselines=False, base_dir=base_dir)


def default_verifier(duration_s: float = 120.0, seed: int = 0, base_dir: Path | None = None) -> Verifier:
    """Replay a Poisson trace of ``duration_s`` seconds at each service's rate against the plan."""
    from planner.tolerance import trace_source, verify_plan  # placement and replay load only when asked for

    def verify(plan: Plan, fleet: FleetSpec) -> Any:
        return verify_plan(plan, fleet, trace_source("poisson", duration_s=duration_s, seed=seed), base_dir)

    return verify


def run_one(name: str, exprs: Sequence[str], fleet: FleetSpec, baseline: Plan | None, planner: Planner,
            verifier: Verifier | None) -> tuple[ScenarioResult, Plan | None]:
    """Plan (and replay) one already-modified fleet; infeasibility becomes a row, not an exception."""
    problems = check_fleet(fleet)
    if problems:
        loc, why = problems[0]
        return infeasible(name, exprs, f"{_loc(fleet, loc)}: {why}", baseline), None
    try:
        plan = planner(fleet, current=baseline)
    except InfeasibleFleet as exc:
        reason = exc.findings[0].message if exc.findings else str(exc)
        return infeasible(name, exprs, reason, baseline), None
    replay = verifier(plan, fleet) if verifier is not None else None
    return summarise(name, exprs, fleet, plan, baseline, replay), plan


def _loc(fleet: FleetSpec, loc: Sequence[str | int]) -> str:
    """``services[chat].allowed_pools`` from a check_fleet location."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int) and i > 0 and loc[i - 1] in ("services", "pools"):
            items = fleet.services if loc[i - 1] == "services" else fleet.pools
            out += f"[{items[part].id}]" if part < len(items) else f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def run_scenarios(fleet: FleetSpec, scenarios: Sequence[Scenario], *, verify: bool = False,
                  read: Reader | None = None, planner: Planner | None = None, verifier: Verifier | None = None,
                  progress: Progress | None = None) -> WhatIfReport:
    """Plan the baseline and every scenario (replayed with ``verify``); raises ScenarioError before solving."""
    transforms = [compile_scenario(fleet, sc, read) for sc in scenarios]
    plan = planner or default_planner()
    check = (verifier or default_verifier()) if verify else None
    total = len(scenarios) + 1
    if progress is not None:
        progress(0, total, "baseline")
    base_row, base_plan = run_one("baseline", [], fleet, None, plan, check)
    rows = []
    for i, (sc, transform) in enumerate(zip(scenarios, transforms, strict=True), 1):
        if progress is not None:
            progress(i, total, sc.name)
        row, _ = run_one(sc.name, sc.set, transform(fleet), base_plan, plan, check)
        rows.append(row)
    if progress is not None:
        progress(total, total, "done")
    return WhatIfReport(fleet=fleet.name, verified=verify, baseline=base_row, scenarios=rows)


def run_sweep(fleet: FleetSpec, sweep: Sweep | str, *, verify: bool = False, base: Sequence[str] = (),
              read: Reader | None = None, planner: Planner | None = None, verifier: Verifier | None = None,
              progress: Progress | None = None) -> SweepReport:
    """Plan the fleet at every value of the sweep (after the ``base`` expressions), against the baseline."""
    sw = parse_sweep(sweep) if isinstance(sweep, str) else sweep
    scenarios = [Scenario(name=f"{v:g}", set=[*base, sw.expression(v)]) for v in sw.values]
    try:
        report = run_scenarios(fleet, scenarios, verify=verify, read=read, planner=planner, verifier=verifier,
                               progress=progress)
    except ScenarioError as exc:
        point = next((sw.expression(v) for v in sw.values if exc.expr == sw.expression(v)), None)
        if point is None:
            raise
        # Point at the sweep as written: a name before the range, or the range itself for a bad value.
        start, end = (exc.start, exc.end) if exc.start < len(sw.prefix) else (len(sw.prefix), len(sw.text))
        raise ScenarioError(sw.text, exc.reason + (f" (at {point})" if start >= len(sw.prefix) else ""),
                            start, end) from None
    head = parse_expression(sw.expression(sw.values[0]))
    return SweepReport(fleet=fleet.name, sweep=sw.text, label=sw.label, geometric=sw.geometric,
                       slo_field=head.field if head.kind == "slo" else None, baseline=report.baseline,
                       points=[SweepPoint(value=v, result=r) for v, r in zip(sw.values, report.scenarios,
                                                                              strict=True)])
