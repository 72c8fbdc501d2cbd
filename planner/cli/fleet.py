"""``medley validate``, ``capacity``, ``plan`` and ``verify``: a fleet file in, a plan or a replay out.

Every command parses its input into planner values, calls the core the REST API and the controller call
(``planner.pipeline``, ``planner.tolerance``) and renders the answer; no planning happens here. Bad input exits
with code 2 and one line ``FILE:LINE: field: reason`` on stderr (``common.fail``).
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import typer

from planner.cli.common import FormatOption, OutputFormat, Progress, emit, fail, get_console, writable_file
from planner.io.fleetfile import FleetError, load_fleet
from planner.schema import SolverName


def validate(fleet_file: str = typer.Argument(..., metavar="FLEET.yaml"), fmt: OutputFormat = FormatOption) -> None:
    """Check a fleet file: shapes, units, catalog, context lengths, TP, SLOs and trace files.

    What the catalog knows (devices, models, prices, fit), TP against nodes and heads, SLOs against the model's
    best case."""
    from pathlib import Path

    from planner.io.semantics import trace_problems

    try:
        fleet = load_fleet(fleet_file)
    except FleetError as exc:
        fail(str(exc))
    problems = trace_problems(fleet, Path(fleet_file).parent)
    if problems:
        fail(f"{fleet_file}: {problems[0]}")
    summary = {"file": fleet_file, "valid": True, "pools": len(fleet.pools), "services": len(fleet.services),
               "power_domains": len(fleet.power_domains)}
    if fmt is not OutputFormat.TABLE:
        emit(summary, fmt)
        return
    typer.echo(f"{fleet_file}: ok — {len(fleet.pools)} pools, {len(fleet.services)} services, "
               f"{len(fleet.power_domains)} power domains")


def capacity(
    fleet_file: str = typer.Argument(..., metavar="FLEET.yaml"),
    fmt: OutputFormat = FormatOption,
) -> None:
    """Max req/s one replica sustains under each service's SLO, per configuration and length bucket."""
    from pathlib import Path

    from planner.cli.perf import capacity_command
    from planner.pipeline import service_buckets

    try:
        fleet = load_fleet(fleet_file)
        buckets = service_buckets(fleet, Path(fleet_file).parent)
    except FleetError as exc:
        fail(str(exc))
    except (OSError, ValueError) as exc:
        fail(f"{fleet_file}: traffic.trace_file: {exc}")
    if fmt is OutputFormat.YAML:
        from planner.catalog import fleet_catalog
        from planner.cli.perf import capacity_rows
        from planner.io.profiles import fleet_perf_model

        perf = fleet_perf_model(fleet)
        emit(capacity_rows(fleet, fleet_catalog(fleet), perf, dict(buckets)), fmt)
    else:
        capacity_command(fleet, buckets=dict(buckets), fmt=fmt.value)


# ---------------------------------------------------------------------------------------------- plan


class ToleranceChoice(StrEnum):
    NONE = "none"
    NODE = "node"
    RACK = "rack"
    ZONE = "zone"


def _load_plan(path: str) -> Any:
    from pydantic import ValidationError

    from planner.io.files import OPEN, FileRefused
    from planner.schema import Plan

    try:
        return Plan.model_validate_json(OPEN.read_text(path))
    except FileRefused as exc:
        fail(f"{path}:1: (file): {exc.reason}")
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(file)"
        fail(f"{path}:1: {loc}: {err['msg']}")


def plan(
    fleet_file: str = typer.Argument(None, metavar="FLEET.yaml", help="fleet file (omit with --melange)"),
    current: str = typer.Option(None, "--current", help="the running plan (JSON): churn is priced against it"),
    solver: SolverName | None = typer.Option(None, "--solver", help="MILP backend (default: the fleet's, highs)"),
    fmt: OutputFormat = FormatOption,
    melange: str = typer.Option(None, "--melange", help="solve a Mélange problem file instead of a fleet"),
    out: str = typer.Option(None, "--out", "-o", help="also write the plan as JSON to this file"),
    baselines: bool = typer.Option(True, "--baselines/--no-baselines", help="compare with single-type plans"),
    place: bool = typer.Option(False, "--place", help="also put replicas on nodes (CP-SAT), re-planning on shortfall"),
    tolerate: ToleranceChoice = typer.Option(ToleranceChoice.NONE, "--tolerate",
                                             help="with --place: add the spare capacity to keep every SLO "
                                                  "after losing any one node/rack/zone, and show its cost"),
    failed: list[str] = typer.Option([], "--failed", help="with --place: nodes that are lost (repeatable)"),
    progress: bool | None = typer.Option(None, "--progress/--no-progress",
                                         help="show the plan's cost and bound on stderr as they improve "
                                              "(default: once planning has run a second)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress lines on stderr"),
) -> None:
    """Find the cheapest replicas, parallelism and roles that meet every SLO within pools and power."""
    from datetime import UTC, datetime
    from pathlib import Path

    from planner.clock import SYSTEM_CLOCK
    from planner.solve.progress import Progress as SolveProgress
    from planner.solve.progress import format_point

    if out:
        writable_file(out, "--out")
    if melange:
        _plan_melange(melange, solver or "highs", fmt)
        return
    if not fleet_file:
        fail("FLEET.yaml: (argument): give a fleet file or --melange CASE.json")
    from planner.fingerprint import current_plan_problem
    from planner.io.semantics import trace_problems
    from planner.pipeline import InfeasibleFleet, plan_fleet

    # shown once planning has run a second (always with --progress), so a quick answer or error stays one line
    say = Progress(enabled=not quiet and progress is not False, after_s=0.0 if progress else 1.0)
    try:
        fleet = load_fleet(fleet_file)
    except FleetError as exc:
        fail(str(exc))
    base_dir = Path(fleet_file).parent
    problems = trace_problems(fleet, base_dir)
    if problems:
        fail(f"{fleet_file}: {problems[0]}")
    cur = _load_plan(current) if current else None
    if cur is not None:
        wrong = current_plan_problem(cur, fleet)
        if wrong is not None:
            fail(f"--current {current}: {wrong}")
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    say(f"planning {len(fleet.services)} services over {len(fleet.pools)} pools")
    try:
        if place or failed or tolerate is not ToleranceChoice.NONE:
            result = _plan_and_place(fleet_file, fleet, current=cur, backend=solver, baselines=baselines,
                                     base_dir=base_dir, created_at=stamp, tolerate=tolerate.value, failed=failed)
        else:
            record = SolveProgress(SYSTEM_CLOCK, sink=(lambda p: say(format_point(p))) if say.enabled else None)
            result = plan_fleet(fleet, current=cur, backend=solver, baselines=baselines, base_dir=base_dir,
                                created_at=stamp, progress=record)
    except InfeasibleFleet as exc:
        fail(f"{fleet_file}: infeasible: {exc.findings[0].message if exc.findings else exc}")
    except KeyError as exc:
        fail(f"--failed: {exc.args[0] if exc.args else exc}" if failed else f"{fleet_file}: {exc}")
    except ValueError as exc:
        fail(f"{fleet_file}: {exc}")
    say(f"planned: ${result.cost_usd_per_hour:.2f}/h")
    data = result.model_dump(mode="json")
    if out:
        Path(out).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if fmt is not OutputFormat.TABLE:
        emit(data, fmt)
        return
    print_plan(result)


def _plan_and_place(fleet_file: str, fleet: Any, **options: Any) -> Any:
    """``plan --place`` (or ``--tolerate``, ``--failed``): plan and put replicas on nodes; placement and its
    solver are imported only here. Rounds of ``--tolerate`` say how they go on stderr (stdout stays the plan)."""
    from planner.tolerance import PlacementFailed, ToleranceUnreachable, plan_and_place_fleet

    try:
        return plan_and_place_fleet(fleet, progress=lambda line: typer.echo(line, err=True), **options)
    except PlacementFailed as exc:
        fail(f"{fleet_file}: placement failed: {exc}")
    except ToleranceUnreachable as exc:
        fail(f"{fleet_file}: {exc}")


def _plan_melange(path: str, solver: SolverName, fmt: OutputFormat) -> None:
    """``medley plan --melange CASE.json``: Mélange's problem, solved and shown with Mélange's semantics."""
    from pathlib import Path

    from planner.melange import solve_case

    try:
        answer = solve_case(path, backend=solver)
    except (OSError, ValueError, KeyError) as exc:
        fail(f"{path}:0: (file): {exc}")
    if fmt is not OutputFormat.TABLE:
        emit(answer, fmt)
        return
    from rich.table import Table

    console = get_console()
    t = Table(title=f"Mélange problem {Path(path).name}")
    for c in ("device", "count"):
        t.add_column(c)
    for dev, n in answer["allocation"].items():
        t.add_row(dev, str(n))
    console.print(t)
    cost = answer["cost_per_hour"]
    shown = f"cost ${cost:.2f}/h" if cost is not None else "no allocation"
    console.print(f"{shown}, {answer['status']}, {answer['solve_seconds']:.3f} s")


def print_plan(p: Any) -> None:
    """Human summary: replica groups (with the model's held-out error band, median/p90, and the utilisation
    the group would run at with steps that much slower), totals, baselines with the saving, and findings."""
    from rich.table import Table

    console = get_console()
    t = Table(title=f"Plan {p.id} for fleet {p.fleet}")
    numeric = ("replicas", "devices", "util", "error", "at p90", "$/h", "W")
    for col in ("service", "pool", "configuration", *numeric):
        t.add_column(col, justify="right" if col in numeric else "left")
    for g in p.replica_groups:
        devs = g.replicas * g.configuration.devices + g.replicas * g.configuration.memory_devices
        band = g.error_band
        med, p90 = (band.worst("median"), band.worst("p90")) if band is not None else (None, None)
        error = f"{med:.0f}/{p90:.0f}%" if med is not None and p90 is not None else "-"
        at90 = g.utilisation_at_p90_error
        t.add_row(g.service, g.pool + (f"+{g.memory_pool}" if g.memory_pool else ""), g.configuration.label(),
                  str(g.replicas), str(devs), f"{g.utilisation:.0%}", error,
                  "-" if at90 is None else ("miss" if at90 >= 9.99 else f"{at90:.0%}"),
                  f"{g.cost_usd_per_hour:.2f}", f"{g.expected_watts:.0f}")
    console.print(t)
    per_m = f", ${p.usd_per_million_tokens:.3f} per million tokens" if p.usd_per_million_tokens else ""
    console.print(f"[bold]${p.cost_usd_per_hour:.2f}/h[/bold]{per_m}; devices: "
                  + ", ".join(f"{k} {v}" for k, v in p.devices_by_type.items()))
    s = p.solver
    gap = f"{s.relative_gap:.2%}" if s.relative_gap is not None else "n/a"
    # Stages that ran on another backend than the one asked for (LP pricing needs HiGHS) are named.
    others = ", ".join(f"{stage} on {name}" for stage, name in sorted(s.backends.items()) if name != s.backend)
    solver = f"{s.backend} ({others})" if others else s.backend
    console.print(f"solver {solver}: {s.status}, gap {gap}, {s.solve_seconds:.2f} s, {s.variables} variables, "
                  f"{s.constraints} constraints, {s.candidates} candidates ({s.candidates_pruned} dominated pruned)")
    if p.baselines:
        bt = Table(title="Against single-device-type plans")
        for col in ("baseline", "$/h", "saving", "devices"):
            bt.add_column(col, justify="right" if col in ("$/h", "saving") else "left")
        for b in p.baselines:
            if b.cost_usd_per_hour is None:
                bt.add_row(b.name, "infeasible", "-", b.description)
                continue
            saving = 1 - p.cost_usd_per_hour / b.cost_usd_per_hour if b.cost_usd_per_hour > 0 else 0.0
            bt.add_row(b.name, f"{b.cost_usd_per_hour:.2f}", f"{saving:.1%}",
                       ", ".join(f"{k} {v}" for k, v in b.devices_by_type.items()))
        console.print(bt)
    for f in p.findings:
        console.print(f"• {f.message}")


# ---------------------------------------------------------------------------------------------- verify


class TraceKind(StrEnum):
    TABLE = "table"
    JSON = "json"


def verify(
    plan_file: str = typer.Argument(..., metavar="PLAN.json"),
    fleet_file: str = typer.Option(..., "--fleet", help="the fleet file the plan was made for"),
    trace: str = typer.Option("poisson", "--trace", help="a trace CSV (TIMESTAMP, ContextTokens, "
                              "GeneratedTokens), 'poisson' or 'bursty' (from the services' traffic)"),
    rate_scale: float = typer.Option(1.0, "--rate-scale", min=0.0, help="multiply every arrival rate"),
    fmt: TraceKind = typer.Option(TraceKind.TABLE, "--format", "-f", help="table or json"),
    duration_s: float = typer.Option(600.0, "--duration-s", min=1.0, help="length of a synthetic trace"),
    seed: int = typer.Option(0, "--seed", help="random seed of synthetic traces"),
    step_times: str | None = typer.Option(
        None, "--step-times", help="replay on these step times instead of the planner's model: a measured table "
        "(CSV, the format of planner/io/profiles.py) or an engine profile (YAML, medley perf calibrate)"),
) -> None:
    """Replay traffic against a plan; exit 0 only when every service meets its SLO (verified).

    On the planner's own model the replay checks queueing only; --step-times with measurements also checks the
    step times."""
    from pathlib import Path

    from planner.cli.verify import verify_command

    _load_plan(plan_file)  # a clear one-line error for a bad plan file before the replay starts
    try:
        code = verify_command(Path(plan_file), Path(fleet_file), trace, rate_scale=rate_scale, format=fmt.value,
                              duration_s=duration_s, seed=seed, step_times=Path(step_times) if step_times else None)
    except FleetError as exc:
        fail(str(exc))
    except (ValueError, KeyError) as exc:
        # errors that name their own file (the plan, a trace) stand as they are
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        fail(text if text.startswith((plan_file, "--trace", trace)) else f"{plan_file}: {text}")
    raise typer.Exit(code=code)
