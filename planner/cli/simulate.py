"""``medley simulate DAY.yaml``: a day of traffic through the control loop and the static peak plan.

Progress goes to stderr, one line per simulated hour (also when stderr is not a terminal); the hour table,
the day's totals and one JSON line go to stdout (``--format json``: the whole report instead). ``--plot``
draws forecast against actual, $ per hour and attainment per hour into a PNG.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path

import typer
from rich.table import Table

from planner.cli.common import fail, get_console
from planner.control.report import DayReport


class SimulateFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


def day_figure(report: DayReport) -> object:
    """Forecast against actual per service, $ per hour and attainment per hour, loop beside static."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4.2), layout="constrained")
    ax_rate, ax_usd, ax_att = fig.subplots(1, 3)
    fig.suptitle(f"{report.fleet}: control loop against the static peak plan")
    hours = [r.start_s / 3600.0 for r in report.steps]
    for svc in report.slo_percentile:
        line = ax_rate.plot(hours, [r.actual_rps.get(svc, 0.0) for r in report.steps], label=f"{svc} actual")[0]
        ax_rate.plot(hours, [r.upper_rps.get(svc, 0.0) for r in report.steps], linestyle="--",
                     color=line.get_color(), label=f"{svc} forecast (upper)")
    ax_rate.set_xlabel("hour")
    ax_rate.set_ylabel("req/s")
    ax_rate.set_yscale("log")
    ax_rate.legend(fontsize=7)
    h = [row.hour for row in report.hour_rows]
    ax_usd.step(h, [row.static_usd for row in report.hour_rows], where="post", label="static peak plan")
    ax_usd.step(h, [row.loop_usd for row in report.hour_rows], where="post", label="control loop")
    ax_usd.set_xlabel("hour")
    ax_usd.set_ylabel("$ per hour")
    ax_usd.legend(fontsize=8)
    ax_att.plot(h, [100 * row.static_attainment for row in report.hour_rows], marker="o", label="static peak plan")
    ax_att.plot(h, [100 * row.loop_attainment for row in report.hour_rows], marker="o", label="control loop")
    ax_att.axhline(min(report.slo_percentile.values(), default=90.0), color="grey", linestyle=":",
                   label="SLO percentile")
    ax_att.set_xlabel("hour")
    ax_att.set_ylabel("requests within SLO (%)")
    ax_att.legend(fontsize=8)
    return fig


def _table(report: DayReport) -> Table:
    t = Table(title=f"{report.fleet}: a {report.hours:g}-hour day, control loop beside the static peak plan")
    for col in ("hour", "static $", "loop $", "static att", "loop att", "started", "stopped", "moves",
                "requests"):
        t.add_column(col, justify="right")
    for h in report.hour_rows:
        t.add_row(str(h.hour), f"{h.static_usd:.2f}", f"{h.loop_usd:.2f}", f"{100 * h.static_attainment:.2f}%",
                  f"{100 * h.loop_attainment:.2f}%", str(h.started), str(h.stopped), str(h.moves), str(h.requests))
    t.add_row("day", f"{report.static_usd:.2f}", f"{report.loop_usd:.2f}", f"{100 * report.static_attainment:.2f}%",
              f"{100 * report.loop_attainment:.2f}%", str(report.started), str(report.stopped), "", "")
    return t


def simulate_command(
    day_file: str = typer.Argument(..., metavar="DAY.yaml"),
    plot: str = typer.Option(None, "--plot", metavar="FILE.png", help="draw forecast, $ and attainment per hour"),
    hours: float = typer.Option(None, "--hours", min=0.25, max=24.0, help="simulate only the first hours"),
    fmt: SimulateFormat = typer.Option(SimulateFormat.TABLE, "--format", "-f", help="table or json"),
) -> None:
    """Replay a day of traffic through observe → forecast → plan → rollout → replay, beside the static plan."""
    from planner.control.simulate import DayInputs, simulate_day
    from planner.io.dayfile import DayError, load_day
    from planner.pipeline import InfeasibleFleet

    if plot and Path(plot).suffix.lower() != ".png":
        fail(f"--plot {plot}: write a .png file")
    try:
        inputs = load_day(day_file)
    except DayError as exc:
        fail(str(exc))
    if hours is not None:
        inputs = DayInputs(inputs.day.model_copy(update={"hours": hours}), inputs.fleet, inputs.traces)
    try:
        report = simulate_day(inputs, progress=lambda line: print(line, file=sys.stderr, flush=True))
    except InfeasibleFleet as exc:
        fail(f"{day_file}: fleet: {exc}")
    if plot:
        day_figure(report).savefig(plot, dpi=110)  # type: ignore[attr-defined]
    if fmt is SimulateFormat.JSON:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
        return
    console = get_console()
    console.print(_table(report))
    console.print(f"static peak plan ${report.static_usd_per_hour:.2f}/h; the loop {100 * report.saving:.1f}% "
                  f"cheaper at {100 * report.attainment_ratio:.2f}% of its attainment; worst hour "
                  f"{100 * report.loop_worst_hour_attainment:.2f}%; stop waves leaving a service short: "
                  f"{report.short_waves}; forecast coverage "
                  + ", ".join(f"{k} {100 * v:.0f}%" for k, v in report.forecast_coverage.items()))
    console.print("the replay uses the planner's own performance model: it checks queueing and the loop's "
                  "decisions, not step times", style="dim")
    sys.stdout.write(json.dumps(report.summary()) + "\n")
