"""``medley verify``: replay a plan's traffic against it and say whether every service meets its SLO."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import typer

from planner.fingerprint import plan_fleet_problem
from planner.io.files import FileRefused
from planner.io.fleetfile import load_fleet
from planner.io.traces import TRACE_ACCESS
from planner.replay import ReplayReport
from planner.schema import Plan
from planner.tolerance import trace_source, verify_plan


def _table(report: ReplayReport) -> str:
    lines = [f"{'service':<20} {'reqs':>6} {'TTFT p50/p90/p99 ms':>24} {'TPOT p50/p90/p99 ms':>22} "
             f"{'attain':>7} {'SLO':>5}"]
    for s in report.services:
        ttft = f"{s.ttft_ms.p50:.0f}/{s.ttft_ms.p90:.0f}/{s.ttft_ms.p99:.0f}"
        tpot = f"{s.tpot_ms.p50:.1f}/{s.tpot_ms.p90:.1f}/{s.tpot_ms.p99:.1f}"
        lines.append(f"{s.service:<20} {s.requests:>6} {ttft:>24} {tpot:>22} {s.attainment:>7.3f} "
                     f"{'ok' if s.meets_slo else 'MISS':>5}")
    for g in report.groups:
        lines.append(f"  {g.service} {g.pool} {g.configuration} x{g.replicas}: utilisation {g.utilisation:.2f}")
    lines.append(f"step times: {report.step_times}; this replay checks {report.checks}")
    lines.append(f"cost ${report.cost_usd_per_hour:.2f}/h, {report.tokens_per_usd:,.0f} tokens/$, "
                 f"power mean {report.mean_power_watts / 1e3:.1f} kW peak {report.peak_power_watts / 1e3:.1f} kW")
    lines.append("verified" if report.verified else "NOT verified: a service misses its SLO")
    return "\n".join(lines)


def verify_command(
    plan_path: Path,
    fleet_path: Path,
    trace: str,
    rate_scale: float = 1.0,
    format: Literal["table", "json"] = "table",  # noqa: A002 - the CLI option's name
    duration_s: float = 600.0,
    seed: int = 0,
    step_times: Path | None = None,
) -> int:
    """``medley verify PLAN.json --trace FILE|poisson|bursty [--step-times TABLE.csv|PROFILE.yaml]``: print the
    replay; exit 0 only if verified.

    Raises ``ValueError`` naming ``--trace`` when it is neither a file nor a synthetic process, and one naming
    the plan when it was made for another fleet."""
    plan = Plan.model_validate_json(Path(plan_path).read_text(encoding="utf-8"))
    fleet = load_fleet(fleet_path)
    mismatch = plan_fleet_problem(plan, fleet)
    if mismatch is not None:
        raise ValueError(f"{plan_path}: {mismatch}")
    if trace not in ("poisson", "bursty"):
        try:
            TRACE_ACCESS.check(trace)
        except FileRefused as exc:
            raise ValueError(f"--trace {trace}: {exc.reason}, and not 'poisson' or 'bursty'") from None
    source = trace_source(trace, rate_scale=rate_scale, duration_s=duration_s, seed=seed)
    if step_times is not None and not Path(step_times).is_file():
        raise ValueError(f"--step-times: {step_times} is not a file")
    report = verify_plan(plan, fleet, source, base_dir=Path(fleet_path).parent, step_times=step_times)
    if format == "json":
        typer.echo(json.dumps(report.model_dump(mode="json")))
    else:
        typer.echo(_table(report))
    return 0 if report.verified else 1
