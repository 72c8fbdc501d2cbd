"""``medley whatif``: scenarios and sweeps against a fleet's plan, as tables, JSON, Markdown and plots.

The planning is :func:`planner.whatif.run_scenarios` / :func:`planner.whatif.run_sweep` (the REST API calls the
same); this module reads files, shows progress on stderr, renders the report and draws sweep plots.
"""

from __future__ import annotations

import html
import json
import sys
from collections.abc import Sequence
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from planner.cli.common import Progress as Lines
from planner.cli.common import fail, png_or_svg, writable_file
from planner.io.fleetfile import FleetError, load_fleet
from planner.pipeline import InfeasibleFleet
from planner.whatif import (
    Scenario,
    ScenarioError,
    ScenarioResult,
    SweepReport,
    WhatIfReport,
    default_planner,
    default_verifier,
    file_reader,
    load_scenarios,
    parse_sweep,
    run_scenarios,
    run_sweep,
    scenario_line,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Progress lines (off a terminal, and for the commitment search) start once planning has run this long, so a
# quick answer stays clean.
PROGRESS_AFTER_S = 1.0


class WhatIfFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    MARKDOWN = "markdown"


# ---------------------------------------------------------------------------------------------- tables

Rows = tuple[list[str], list[list[str]]]


def _money(x: float | None) -> str:
    return "-" if x is None else f"{x:,.2f}"


def _delta(x: float | None) -> str:
    return "" if x is None else f"{x:+,.2f}"


def _mix(d: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in d.items()) or "-"


def _attain(r: ScenarioResult) -> str:
    if r.verified is None:
        return ""
    parts = [f"{a.service} {a.attainment:.1%}" + ("" if a.meets_slo else " MISS") for a in r.attainment]
    return ("ok: " if r.verified else "NOT verified: ") + ", ".join(parts)


def scenario_rows(report: WhatIfReport) -> Rows:
    """One row per scenario, baseline first: cost, Δ, devices, roles, power, attainment or the reason."""
    head = ["scenario", "$/h", "Δ $/h", "devices", "roles", "kW", "SLO attainment" if report.verified else "notes"]
    rows = []
    for r in [report.baseline, *report.scenarios]:
        if not r.feasible:
            rows.append([r.name, "infeasible", "", "", "", "", r.reason or ""])
            continue
        notes = _attain(r) if report.verified else "; ".join(r.binding)
        rows.append([r.name, _money(r.cost_usd_per_hour), _delta(r.cost_delta_usd_per_hour) or "",
                     _mix(r.devices_by_type), _mix(r.replicas_by_role),
                     f"{(r.expected_watts or 0) / 1e3:.1f}", notes])
    return head, rows


def replica_rows(report: WhatIfReport) -> Rows:
    """Replicas per service: baseline, then each scenario as ``N (±d)``."""
    results = [report.baseline, *report.scenarios]
    services = sorted({s for r in results for s in r.replicas_by_service})
    base = report.baseline.replicas_by_service
    head = ["service", *[r.name for r in results]]
    rows = []
    for s in services:
        row = [s]
        for i, r in enumerate(results):
            if not r.feasible:
                row.append("-")
                continue
            n = r.replicas_by_service.get(s, 0)
            d = n - base.get(s, 0)
            row.append(str(n) if i == 0 or d == 0 else f"{n} ({d:+d})")
        rows.append(row)
    return head, rows


def change_rows(report: WhatIfReport) -> Rows:
    """What each scenario changes: replicas per (service, pool, configuration) before → after."""
    rows = [[r.name, c.service, f"{c.configuration} @{c.pool}", f"{c.before} → {c.after}"]
            for r in report.scenarios if r.feasible for c in r.replica_changes]
    return ["scenario", "service", "configuration", "replicas"], rows


def config_rows(report: WhatIfReport) -> Rows:
    """Parallelism and roles per service for every scenario."""
    results = [r for r in [report.baseline, *report.scenarios] if r.feasible]
    services = sorted({s for r in results for s in r.configurations})
    return ["service", *[r.name for r in results]], [
        [s, *["\n".join(r.configurations.get(s, [])) or "-" for r in results]] for s in services]


def sweep_rows(report: SweepReport) -> Rows:
    """The curve: one row per swept value."""
    verified = any(p.result.verified is not None for p in report.points)
    risky = any(p.result.spot_risk is not None for p in report.points)
    head = [report.label, "$/h", "$/M tokens", "devices", "roles", "kW", *(["spot risk"] if risky else []),
            "attainment" if verified else "notes"]
    rows = []
    for p in report.points:
        r = p.result
        if not r.feasible:
            rows.append([f"{p.value:g}", "infeasible", "", "", "", "", *([""] if risky else []), r.reason or ""])
            continue
        risk = [f"{r.spot_risk:.2g}" if r.spot_risk is not None else "-"] if risky else []
        rows.append([f"{p.value:g}", _money(r.cost_usd_per_hour), _money(r.usd_per_million_tokens),
                     _mix(r.devices_by_type), _mix(r.replicas_by_role), f"{(r.expected_watts or 0) / 1e3:.1f}",
                     *risk, _attain(r) if verified else "; ".join(r.binding)])
    return head, rows


def _rich(title: str, rows: Rows) -> Table:
    head, body = rows
    t = Table(title=Text(title, style="bold"))  # Text: ids in brackets are not rich markup
    for i, col in enumerate(head):
        t.add_column(Text(col), justify="right" if col in ("$/h", "Δ $/h", "kW", "$/M tokens") or (
            i > 0 and title.startswith("Replicas")) else "left")
    for row in body:
        t.add_row(*(Text(c) for c in row))
    return t


def markdown_table(title: str, rows: Rows) -> str:
    """A GitHub-flavoured Markdown table under a heading."""
    head, body = rows

    def cell(x: str) -> str:
        return x.replace("|", "\\|").replace("\n", "<br>")

    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def report_sections(report: WhatIfReport | SweepReport) -> list[tuple[str, Rows]]:
    """The titled tables a report renders to."""
    if isinstance(report, SweepReport):
        out = [(f"Sweep {report.sweep} on {report.fleet}", sweep_rows(report))]
        if report.slo_field is not None:
            front = report.frontier()
            out.append(("Cost/SLO frontier", ([report.label, "$/h"],
                                              [[f"{p.value:g}", _money(p.result.cost_usd_per_hour)] for p in front])))
        return out
    return [(f"What-if on {report.fleet}", scenario_rows(report)), ("Replicas per service", replica_rows(report)),
            ("Parallelism and roles", config_rows(report)), ("Replica changes against the baseline",
                                                             change_rows(report))]


# ---------------------------------------------------------------------------------------------- plots


def _feasible(report: SweepReport) -> list[tuple[float, ScenarioResult]]:
    return [(p.value, p.result) for p in report.points if p.result.cost_usd_per_hour is not None]


def sweep_figure(report: SweepReport) -> Figure:
    """Cost against the swept value, the device mix as stacked bars, and the cost/SLO frontier for SLO sweeps."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    from matplotlib.figure import Figure

    risky = any(p.result.spot_risk is not None for p in report.points)
    panels = 2 + (report.slo_field is not None) + risky
    fig = Figure(figsize=(5.2 * panels, 4.2), layout="constrained")
    axes = fig.subplots(1, panels)
    if risky:
        _risk_panel(axes[-1], report)
    fig.suptitle(f"{report.fleet}: {report.sweep}")
    pts = _feasible(report)
    xs = [x for x, _ in pts]
    labels = [f"{p.value:g}" for p in report.points]

    ax = axes[0]
    ax.plot(xs, [r.cost_usd_per_hour for _, r in pts], marker="o", label="cost $/h")
    bad = [p.value for p in report.points if not p.result.feasible]
    if bad:
        top = max((r.cost_usd_per_hour or 0.0 for _, r in pts), default=1.0)
        ax.scatter(bad, [top] * len(bad), marker="x", color="tab:red", label="infeasible", zorder=3)
    if report.geometric:
        ax.set_xscale("log", base=2)
        # Ticks at the swept values, written as typed (0.5, 1, 2) rather than as powers of two.
        ax.set_xticks([p.value for p in report.points], labels=labels)
        ax.minorticks_off()
    ax.set_xlabel(report.label)
    ax.set_ylabel("$ per hour")
    ax.set_title("cost")
    ax.grid(True, alpha=0.3)
    if bad:
        ax.legend(loc="best")

    ax = axes[1]
    devices = sorted({d for p in report.points for d in p.result.devices_by_type})
    bottom = [0.0] * len(report.points)
    for dev in devices:
        counts = [float(p.result.devices_by_type.get(dev, 0)) for p in report.points]
        ax.bar(labels, counts, bottom=bottom, label=dev)
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    ax.set_xlabel(report.label)
    ax.set_ylabel("devices")
    ax.set_title("device mix")
    if devices:  # below the axes, so no bar is hidden
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=min(len(devices), 4), fontsize="small",
                  frameon=False)

    if report.slo_field is not None:
        ax = axes[2]
        ax.plot(xs, [r.cost_usd_per_hour for _, r in pts], marker="o", linestyle=":", color="0.6",
                label="all points")
        front = report.frontier()
        ax.step([p.value for p in front], [p.result.cost_usd_per_hour for p in front], where="post", marker="s",
                color="tab:green", label="frontier")
        for p in front:
            if p.result.attainment:  # replayed: the worst service's attainment at each frontier point
                worst = min(a.attainment for a in p.result.attainment)
                ax.annotate(f"{worst:.1%}", (p.value, p.result.cost_usd_per_hour or 0.0), fontsize="x-small",
                            textcoords="offset points", xytext=(4, 4))
        ax.set_xlabel(f"{report.label} target")
        ax.set_ylabel("$ per hour")
        ax.set_title("cost/SLO frontier")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper right")
    return fig


def _risk_panel(ax: Any, report: SweepReport) -> None:
    """Spot sweeps: the largest probability that reclaims within one recovery window leave a service short."""
    pts = [(p.value, p.result.spot_risk or 0.0) for p in report.points if p.result.spot_risk is not None]
    ax.plot([x for x, _ in pts], [r for _, r in pts], marker="o", color="tab:purple")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    ax.set_ylim(bottom=0.0)
    ax.set_xlabel(report.label)
    ax.set_ylabel("P(short) per recovery window")
    ax.set_title("SLO risk from spot reclaims")
    ax.grid(True, alpha=0.3)


def series(report: SweepReport) -> dict[str, Any]:
    """The plotted numbers: swept values, cost, and devices per type (infeasible points as null)."""
    devices = sorted({d for p in report.points for d in p.result.devices_by_type})
    return {"label": report.label, "values": [p.value for p in report.points],
            "cost_usd_per_hour": [p.result.cost_usd_per_hour for p in report.points],
            "spot_risk": [p.result.spot_risk for p in report.points],
            "devices": {d: [p.result.devices_by_type.get(d, 0) for p in report.points] for d in devices},
            "frontier": [p.value for p in report.frontier()] if report.slo_field is not None else None}


def write_plot(report: SweepReport, path: Path) -> None:
    """PNG, or self-contained HTML (inline SVG and the series as JSON; nothing fetched from the network)."""
    svg = png_or_svg(sweep_figure(report), path)
    if svg is None:
        return
    head, body = sweep_rows(report)
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body) + "</table>"
    data = json.dumps(series(report)).replace("</", "<\\/")
    title = html.escape(f"{report.fleet}: {report.sweep}")
    path.write_text(
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}</style></head><body>"
        f"<h1>{title}</h1>\n{svg}\n{table}\n"
        f"<script type='application/json' id='series'>{data}</script>\n</body></html>\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- command


def _scenarios(flags: Sequence[str], scenarios_file: str | None) -> tuple[list[Scenario], dict[str, str]]:
    """Scenarios from flags (each flag one scenario named by its text) and a file; where each came from."""
    out = [Scenario(name=f, set=[f]) for f in flags]
    where = {f: "--scenario" for f in flags}
    if scenarios_file:
        try:
            text = Path(scenarios_file).read_text(encoding="utf-8")
        except OSError as exc:
            fail(f"{scenarios_file}:0: (file): cannot read: {exc.strerror or exc}")
        try:
            loaded = load_scenarios(text, scenarios_file)
        except ScenarioError as exc:
            fail(exc.line())
        for sc in loaded:
            if sc.name in where:
                fail(f"{scenarios_file}: {sc.name!r}: duplicate scenario name")
            where[sc.name] = scenarios_file
            out.append(sc)
    return out, where


def whatif_command(
    fleet_file: str = typer.Argument(..., metavar="FLEET.yaml"),
    scenario: list[str] = typer.Option([], "--scenario", "-s", metavar="EXPR",
                                       help="one scenario (repeatable); join changes with ';', e.g. "
                                            "'rate*=2; price[h100-sxm]=2.5'; with --sweep, changes made at "
                                            "every point"),
    scenarios_file: str = typer.Option(None, "--scenarios", metavar="FILE.yaml",
                                       help="a list of {name, set: [EXPR, ...]}"),
    sweep: str = typer.Option(None, "--sweep", metavar="EXPR=LO..HIxF|LO..HI+S",
                              help="plan at each value, e.g. rate*=1..8x2, price[h100-sxm]=1..4+0.5"),
    plot: str = typer.Option(None, "--plot", metavar="FILE.png|FILE.html", help="with --sweep: draw the curve"),
    verify: bool = typer.Option(False, "--verify", help="also replay a Poisson trace against each plan"),
    verify_duration_s: float = typer.Option(120.0, "--verify-duration-s", min=1.0,
                                            help="length of the replayed trace"),
    fmt: WhatIfFormat = typer.Option(WhatIfFormat.TABLE, "--format", "-f", help="table, json or markdown"),
    commitment: bool = typer.Option(False, "--commitment", help="find the savings-plan commitment that minimises "
                                    "the expected bill over a year of hourly demand"),
    forecast: str = typer.Option(None, "--forecast", metavar="HOURLY.csv",
                                 help="with --commitment: hourly demand (a 'scale' column, or req/s per service); "
                                      "default: a diurnal/weekly year"),
    levels: int = typer.Option(6, "--levels", min=1, max=48, help="with --commitment: load levels planned"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress on stderr"),
) -> None:
    """Plan what-if scenarios side by side with the baseline, or find the best commitment (--commitment).

    Scenarios change traffic, prices, pools, SLOs, services, power, the commitment or the spot share."""
    if commitment:
        _commitment(fleet_file, forecast, levels, plot, fmt, bool(scenario or scenarios_file or sweep), quiet)
        return
    if forecast:
        fail(f"--forecast {forecast}: a forecast is for --commitment")
    if not scenario and not scenarios_file and not sweep:
        fail("whatif: give --scenario EXPR, --scenarios FILE.yaml, --sweep EXPR=RANGE or --commitment")
    if sweep and scenarios_file:
        fail(f"--scenarios {scenarios_file}: a sweep takes its fixed changes from --scenario, not a file")
    if plot and not sweep:
        fail(f"--plot {plot}: plots draw a sweep; add --sweep")
    if plot and Path(plot).suffix.lower() not in (".png", ".html"):
        fail(f"--plot {plot}: write a .png or an .html file")
    if plot:
        writable_file(plot, f"--plot {plot}")  # before minutes of planning, not after
    try:
        fleet = load_fleet(fleet_file)
    except FleetError as exc:
        fail(str(exc))
    base_dir = Path(fleet_file).parent
    # Files named in expressions are found beside the scenarios file, then beside the fleet file.
    read = file_reader(*([Path(scenarios_file).parent] if scenarios_file else []), base_dir)
    planner = default_planner(base_dir)
    verifier = default_verifier(verify_duration_s, base_dir=base_dir) if verify else None
    err = Console(stderr=True)
    # A bar on a terminal; elsewhere (CI logs, pipes) a line per plan once planning has run a second.
    lines = Lines(enabled=not quiet and not err.is_terminal, after_s=PROGRESS_AFTER_S)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True, disable=quiet or not err.is_terminal) as bar:
        task = bar.add_task("planning", total=None)

        def progress(done: int, total: int, name: str) -> None:
            bar.update(task, completed=done, total=total, description=f"planning {name}")
            lines(f"[{done}/{total}] " + ("all planned" if done == total else f"planning {name}"))

        report: WhatIfReport | SweepReport
        try:
            if sweep:
                sw = parse_sweep(sweep)
                report = run_sweep(fleet, sw, verify=verify, base=scenario, read=read, planner=planner,
                                   verifier=verifier, progress=progress)
            else:
                scs, where = _scenarios(scenario, scenarios_file)
                report = run_scenarios(fleet, scs, verify=verify, read=read, planner=planner, verifier=verifier,
                                       progress=progress)
        except ScenarioError as exc:
            fail(_where(exc, sweep, scenario, scenarios_file))
    if plot:
        assert isinstance(report, SweepReport)
        write_plot(report, Path(plot))
        err.print(f"wrote {plot}")
    if fmt is WhatIfFormat.JSON:
        sys.stdout.write(json.dumps(report.model_dump(mode="json"), indent=2) + "\n")
    elif fmt is WhatIfFormat.MARKDOWN:
        sys.stdout.write("\n".join(markdown_table(t, rows) for t, rows in report_sections(report)))
    else:
        out = Console(width=None if sys.stdout.isatty() else 160)
        for title, rows in report_sections(report):
            if rows[1]:
                out.print(_rich(title, rows))


def _commitment(fleet_file: str, forecast: str | None, levels: int, plot: str | None, fmt: WhatIfFormat,
                others: bool, quiet: bool = False) -> None:
    """``--commitment``: read the fleet and the forecast, search, render."""
    from planner.cli.commitment import curve_rows, level_rows, summary_line, write_commitment_plot
    from planner.whatif.commitment import commitment_whatif, diurnal_weekly, parse_hourly

    if others:
        fail("--commitment: give it alone (not with --scenario, --scenarios or --sweep)")
    if plot and Path(plot).suffix.lower() not in (".png", ".html"):
        fail(f"--plot {plot}: write a .png or an .html file")
    try:
        fleet = load_fleet(fleet_file)
    except FleetError as exc:
        fail(str(exc))
    if forecast:
        try:
            factors = parse_hourly(Path(forecast).read_text(encoding="utf-8"), fleet)
        except OSError as exc:
            fail(f"{forecast}:0: (file): cannot read: {exc.strerror or exc}")
        except ValueError as exc:
            fail(f"{forecast}:{exc}")
        source = forecast
    else:
        factors = diurnal_weekly([s.id for s in fleet.services])
        source = "diurnal/weekly generator"
    try:
        lines = Lines(enabled=not quiet, after_s=PROGRESS_AFTER_S)  # a line per plan once the search has run a while
        report = commitment_whatif(fleet, factors, default_planner(Path(fleet_file).parent), levels=levels,
                                   forecast=source, progress=lambda done, total, what: lines(f"planning {what}"))
    except InfeasibleFleet as exc:
        fail(f"{fleet_file}: infeasible: {exc}")
    if plot:
        write_commitment_plot(report, Path(plot))
        Console(stderr=True).print(f"wrote {plot}")
    if fmt is WhatIfFormat.JSON:
        sys.stdout.write(json.dumps(report.model_dump(mode="json"), indent=2) + "\n")
        return
    sections = [("Load levels (plans without a commitment)", level_rows(report)),
                ("Expected bill against the commitment", curve_rows(report))]
    if fmt is WhatIfFormat.MARKDOWN:
        sys.stdout.write("\n".join(markdown_table(t, rows) for t, rows in sections) + "\n" + summary_line(report)
                         + "\n")
        return
    out = Console(width=None if sys.stdout.isatty() else 160)
    for title, rows in sections:
        out.print(_rich(title, rows))
    out.print(Text(summary_line(report)))


def _where(exc: ScenarioError, sweep: str | None, flags: Sequence[str], scenarios_file: str | None) -> str:
    """The error prefixed by the flag or file position its expression came from."""
    if exc.where:
        return exc.line()
    if sweep and exc.expr == sweep:
        return exc.located("--sweep").line()
    if any(exc.expr in f for f in flags):
        return exc.located("--scenario").line()
    if scenarios_file:
        text = Path(scenarios_file).read_text(encoding="utf-8")
        return exc.located(f"{scenarios_file}:{scenario_line(text, exc.expr)}:").line()
    return exc.line()
