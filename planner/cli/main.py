"""The ``medley`` command line: planning commands here; other packages plug in through entry points.

Every command parses its input into planner values, calls the core the REST API and the controller call
(``planner.pipeline``, ``planner.tolerance``, ``planner.whatif``) and renders the answer; no planning happens
here. Bad input exits with code 2 and one line ``FILE:LINE: field: reason`` on stderr (``common.fail``).
"""

from __future__ import annotations

import json
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any

import typer
from rich.table import Table

from planner.catalog import builtin_catalog
from planner.cli.common import OutputFormat, Progress, console, emit, fail, run_guarded, writable_file
from planner.cli.perf import perf_app
from planner.cli.whatif import whatif_command
from planner.io.fleetfile import FleetError, load_fleet
from planner.schema import SolverName

app = typer.Typer(
    name="medley",
    help="Plan, place, provision and power-cap LLM services on heterogeneous accelerators.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
catalog_app = typer.Typer(help="The shipped catalog: devices, models, price books.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")
app.add_typer(perf_app, name="perf")
app.command("whatif")(whatif_command)


_registered: set[str] = set()


def _register_plugins() -> None:
    """Mount sub-commands that other packages (power, provisioner, api) declare under ``medley.cli`` (once, so
    a process that runs several command lines does not mount them again)."""
    for ep in entry_points(group="medley.cli"):
        if ep.name in _registered:
            continue
        _registered.add(ep.name)
        sub = ep.load()
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=ep.name)
        else:
            app.command(name=ep.name)(sub)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: every error ends in one line and a non-zero exit (``--debug``: the trace)."""

    def entry(args: list[str]) -> Any:
        _register_plugins()
        return app(args=args, prog_name="medley", standalone_mode=False)

    run_guarded(entry, argv)


@app.command()
def version() -> None:
    """Print Medley's version."""
    from importlib.metadata import version as _v

    typer.echo(_v("medley"))


# ---------------------------------------------------------------------------------------------- catalog

FormatOption = typer.Option(OutputFormat.TABLE, "--format", "-f", help="table, json or yaml")


@catalog_app.command("devices")
def catalog_devices(fmt: OutputFormat = FormatOption) -> None:
    """Devices: kind, dense BF16 TFLOPS, memory, bandwidth, links, power, clocks, source."""
    devs = list(builtin_catalog().devices.values())
    t = Table(title="Devices")
    for col in ("id", "kind", "TFLOPS", "mem GiB", "mem TB/s", "link GB/s", "NIC Gb/s", "TDP W", "idle W",
                "clock MHz", "cap W", "as of"):
        t.add_column(col, justify="right" if col not in ("id", "kind", "as of") else "left")
    for d in devs:
        t.add_row(d.id, d.kind.value, f"{d.bf16_tflops:g}", f"{d.memory_gib:g}", f"{d.memory_tbps:g}",
                  f"{d.link_gbps:g}", f"{d.nic_gbitps:g}", f"{d.tdp_watts:g}", f"{d.idle_watts:g}",
                  f"{d.sm_clock_mhz_min:g}-{d.sm_clock_mhz_max:g}",
                  f"{d.power_cap_watts_min:g}-{d.power_cap_watts_max:g}", d.as_of)
    emit([d.model_dump(mode="json") for d in devs], fmt, t)


@catalog_app.command("models")
def catalog_models(fmt: OutputFormat = FormatOption) -> None:
    """Models: architecture numbers, parameter counts and KV bytes per token."""
    models = list(builtin_catalog().models.values())
    t = Table(title="Models")
    for col in ("id", "layers", "hidden", "heads", "kv heads", "ffn", "experts", "params B", "active B",
                "KV KiB/token"):
        t.add_column(col, justify="left" if col == "id" else "right")
    for m in models:
        t.add_row(m.id, str(m.num_layers), str(m.hidden_size), str(m.num_heads), str(m.num_kv_heads),
                  str(m.ffn_hidden_size), f"{m.experts_per_token}/{m.num_experts}" if m.num_experts > 1 else "-",
                  f"{m.total_params / 1e9:.2f}", f"{m.active_params / 1e9:.2f}",
                  f"{m.kv_bytes_per_token / 1024:g}")
    emit([m.model_dump(mode="json") | {"total_params": m.total_params, "active_params": m.active_params,
                                       "kv_bytes_per_token": m.kv_bytes_per_token} for m in models], fmt, t)


@catalog_app.command("prices")
def catalog_prices(fmt: OutputFormat = FormatOption) -> None:
    """Price books: $ per device-hour by device, with provider and date."""
    books = list(builtin_catalog().price_books.values())
    t = Table(title="Price books ($ per device-hour)")
    for col in ("book", "provider", "as of", "device", "$/h"):
        t.add_column(col, justify="right" if col == "$/h" else "left")
    for b in books:
        for dev, price in b.usd_per_device_hour.items():
            t.add_row(b.id, b.provider, b.as_of, dev, f"{price:.3f}")
    emit([b.model_dump(mode="json") for b in books], fmt, t)


# ---------------------------------------------------------------------------------------------- fleet


@app.command()
def validate(fleet_file: str = typer.Argument(..., metavar="FLEET.yaml"), fmt: OutputFormat = FormatOption) -> None:
    """Check a fleet file: shapes, units, what the catalog knows (devices, models, prices, fit), context
    lengths, TP against nodes and heads, SLOs against the model's best case, and its trace files."""
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


@app.command()
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


@app.command()
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
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress lines on stderr"),
) -> None:
    """Find the cheapest replicas, parallelism and roles that meet every SLO within pools and power."""
    from datetime import UTC, datetime
    from pathlib import Path

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
    from planner.tolerance import PlacementFailed, ToleranceUnreachable, plan_and_place_fleet

    progress = Progress(enabled=not quiet)
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
    progress(f"planning {len(fleet.services)} services over {len(fleet.pools)} pools")
    try:
        if place or failed or tolerate is not ToleranceChoice.NONE:
            # rounds of --tolerate say how they go on stderr (stdout stays the plan)
            result = plan_and_place_fleet(fleet, current=cur, backend=solver, baselines=baselines, base_dir=base_dir,
                                          created_at=stamp, tolerate=tolerate.value, failed=failed,
                                          progress=lambda line: typer.echo(line, err=True))
        else:
            result = plan_fleet(fleet, current=cur, backend=solver, baselines=baselines, base_dir=base_dir,
                                created_at=stamp, progress=progress)
    except PlacementFailed as exc:
        fail(f"{fleet_file}: placement failed: {exc}")
    except ToleranceUnreachable as exc:
        fail(f"{fleet_file}: {exc}")
    except InfeasibleFleet as exc:
        fail(f"{fleet_file}: infeasible: {exc.findings[0].message if exc.findings else exc}")
    except KeyError as exc:
        fail(f"--failed: {exc.args[0] if exc.args else exc}" if failed else f"{fleet_file}: {exc}")
    except ValueError as exc:
        fail(f"{fleet_file}: {exc}")
    progress(f"planned: ${result.cost_usd_per_hour:.2f}/h")
    data = result.model_dump(mode="json")
    if out:
        Path(out).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    if fmt is not OutputFormat.TABLE:
        emit(data, fmt)
        return
    print_plan(result)


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
    """Human summary: replica groups, totals, baselines with the saving, and findings."""
    t = Table(title=f"Plan {p.id} for fleet {p.fleet}")
    for col in ("service", "pool", "configuration", "replicas", "devices", "util", "$/h", "W"):
        t.add_column(col, justify="right" if col in ("replicas", "devices", "util", "$/h", "W") else "left")
    for g in p.replica_groups:
        devs = g.replicas * g.configuration.devices + g.replicas * g.configuration.memory_devices
        t.add_row(g.service, g.pool + (f"+{g.memory_pool}" if g.memory_pool else ""), g.configuration.label(),
                  str(g.replicas), str(devs), f"{g.utilisation:.0%}", f"{g.cost_usd_per_hour:.2f}",
                  f"{g.expected_watts:.0f}")
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


@app.command()
def verify(
    plan_file: str = typer.Argument(..., metavar="PLAN.json"),
    fleet_file: str = typer.Option(..., "--fleet", help="the fleet file the plan was made for"),
    trace: str = typer.Option("poisson", "--trace", help="a trace CSV (TIMESTAMP, ContextTokens, "
                              "GeneratedTokens), 'poisson' or 'bursty' (from the services' traffic)"),
    rate_scale: float = typer.Option(1.0, "--rate-scale", min=0.0, help="multiply every arrival rate"),
    fmt: TraceKind = typer.Option(TraceKind.TABLE, "--format", "-f", help="table or json"),
    duration_s: float = typer.Option(600.0, "--duration-s", min=1.0, help="length of a synthetic trace"),
    seed: int = typer.Option(0, "--seed", help="random seed of synthetic traces"),
) -> None:
    """Replay traffic against a plan; exit 0 only when every service meets its SLO (verified)."""
    from pathlib import Path

    from planner.cli.verify import verify_command

    _load_plan(plan_file)  # a clear one-line error for a bad plan file before the replay starts
    try:
        code = verify_command(Path(plan_file), Path(fleet_file), trace, rate_scale=rate_scale, format=fmt.value,
                              duration_s=duration_s, seed=seed)
    except FleetError as exc:
        fail(str(exc))
    except (ValueError, KeyError) as exc:
        # errors that name their own file (the plan, a trace) stand as they are
        text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        fail(text if text.startswith((plan_file, "--trace", trace)) else f"{plan_file}: {text}")
    raise typer.Exit(code=code)
