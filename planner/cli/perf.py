"""``medley perf predict``, ``medley perf calibrate`` and the ``medley capacity`` table: the performance model
from the command line.

Bad input (unknown model or device, a TP that does not divide the heads, a negative batch, a bad measurement
row) exits with code 2 and one line on stderr, without a traceback.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from planner.catalog import Catalog, builtin_catalog
from planner.cli.common import fail
from planner.io.profiles import (
    calibration_for,
    fleet_perf_model,
    known_engines,
    read_calibration_points,
    shipped_calibration,
)
from planner.model.candidates import configuration_capacities, serves_some_bucket
from planner.model.configurations import fleet_configurations
from planner.model.perf import PerfModel, ReplicaShape, check_shape
from planner.model.roofline import RooflinePerfModel
from planner.schema import FleetSpec, LengthBucket

perf_app = typer.Typer(help="The performance model: prefill and decode times, memory fit.",
                       no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)


@perf_app.callback()
def _perf_group() -> None:
    """The performance model: prefill and decode times, memory fit."""


def predict_point(catalog: Catalog, perf: PerfModel, model: str, device: str, tp: int, pp: int, batch: int,
                  prompt_tokens: int, context_tokens: int | None) -> dict[str, Any]:
    """One prediction as a plain dict; ``ValueError``/``KeyError`` name the bad field."""
    if batch < 1:
        raise ValueError(f"batch: must be at least 1 (got {batch})")
    if prompt_tokens < 1:
        raise ValueError(f"prompt_tokens: must be at least 1 (got {prompt_tokens})")
    ctx = prompt_tokens if context_tokens is None else context_tokens
    if ctx < 0:
        raise ValueError(f"context_tokens: must not be negative (got {ctx})")
    try:
        m = catalog.model(model)
    except KeyError as exc:
        raise ValueError(f"model: {exc.args[0]}") from None
    try:
        d = catalog.device(device)
    except KeyError as exc:
        raise ValueError(f"device: {exc.args[0]}") from None
    shape = ReplicaShape(model=m, device=d, tp=tp, pp=pp)
    check_shape(shape)
    fit = perf.memory(shape)
    return {
        "model": model, "device": device, "tp": tp, "pp": pp, "batch": batch,
        "prompt_tokens": prompt_tokens, "context_tokens": ctx,
        "prefill_ms": round(perf.prefill_ms(shape, batch, prompt_tokens), 3),
        "decode_step_ms": round(perf.decode_step_ms(shape, batch, ctx), 3),
        "fits_memory": fit.fits,
        "weights_gib_per_device": round(fit.weights_gib_per_device, 3),
        "kv_capacity_tokens": fit.kv_capacity_tokens,
        "memory_note": fit.reason,
    }


def _points(path: Path, catalog: Catalog, perf: PerfModel) -> None:
    try:
        fh = path.open(newline="", encoding="utf-8")
    except OSError as exc:
        fail(f"{path}:0: (file): cannot read: {exc.strerror or exc}")
    with fh:
        reader = csv.DictReader(fh)
        need = ["model", "device", "tp", "pp", "batch", "prompt_tokens", "context_tokens"]
        missing = [c for c in need if c not in (reader.fieldnames or [])]
        if missing:
            fail(f"{path}:1: columns: missing {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            try:
                nums = {k: int(row[k]) for k in ("tp", "pp", "batch", "prompt_tokens")}
                ctx_text = (row.get("context_tokens") or "").strip()
                ctx = int(ctx_text) if ctx_text else None
            except (TypeError, ValueError):
                fail(f"{path}:{line}: row: tp, pp, batch, prompt_tokens, context_tokens must be integers")
            try:
                out = predict_point(catalog, perf, row["model"].strip(), row["device"].strip(), nums["tp"],
                                    nums["pp"], nums["batch"], nums["prompt_tokens"], ctx)
            except ValueError as exc:
                fail(f"{path}:{line}: {exc}")
            sys.stdout.write(json.dumps(out) + "\n")


@perf_app.command("predict")
def predict(
    model: str = typer.Option(None, "--model", help="model id from the catalog"),
    device: str = typer.Option(None, "--device", help="device id from the catalog"),
    tp: int = typer.Option(1, "--tp", help="tensor-parallel degree"),
    pp: int = typer.Option(1, "--pp", help="pipeline-parallel degree"),
    batch: int = typer.Option(1, "--batch", help="requests in the batch"),
    prompt_tokens: int = typer.Option(512, "--prompt-tokens", help="prompt tokens per request"),
    context_tokens: int = typer.Option(None, "--context-tokens", help="context per request in decode"),
    fmt: str = typer.Option("table", "--format", help="table or json"),
    points: Path = typer.Option(None, "--points", help="CSV of points; one JSON object per line out"),
    engine: str = typer.Option(None, "--engine", help="whose overheads and collective kernels: vllm (default), "
                               "vllm-2023, splitwise-2023, or an engine the profile defines"),
    profile: Path = typer.Option(None, "--profile", help="engine profile YAML (medley perf calibrate writes one)"),
) -> None:
    """Predict prefill time, decode step time and memory fit of one replica."""
    catalog = builtin_catalog()
    try:
        cal = calibration_for(engine, profile)
    except ValueError as exc:
        fail(f"--profile: {exc}")
    if cal.engine not in known_engines(cal):
        fail(f"--engine: must be one of {', '.join(sorted(known_engines(cal)))} (got {cal.engine!r})")
    perf = RooflinePerfModel(cal)
    if fmt not in ("table", "json"):
        fail(f"--format: must be table or json (got {fmt!r})")
    if points is not None:
        _points(points, catalog, perf)
        return
    if model is None or device is None:
        fail("--model: --model and --device are required (or give --points FILE.csv)")
    try:
        out = predict_point(catalog, perf, model, device, tp, pp, batch, prompt_tokens, context_tokens)
    except ValueError as exc:
        fail(str(exc))
    if fmt == "json":
        sys.stdout.write(json.dumps(out) + "\n")
        return
    table = Table(title=f"{model} on {device} tp{tp} pp{pp}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    for key in ("batch", "prompt_tokens", "context_tokens", "prefill_ms", "decode_step_ms", "fits_memory",
                "weights_gib_per_device", "kv_capacity_tokens", "memory_note"):
        table.add_row(key, str(out[key]))
    Console().print(table)


def _held_out_lines(held: Mapping[tuple[str, int, str], Any]) -> list[str]:
    lines = []
    for (device, tp, phase), e in sorted(held.items()):
        lines.append(f"  {device:10s} tp{tp:<2d} {phase:8s} {len(e):4d} points  median {float(np.median(e)):5.1f}%  "
                     f"p90 {float(np.percentile(e, 90)):5.1f}%")
    return lines


@perf_app.command("calibrate")
def calibrate(
    measured: Path = typer.Argument(..., help="CSV of measurements (format: planner/io/profiles.py; rows may name "
                                    "vllm bench JSON results in a file column)"),
    output: Path = typer.Option(..., "-o", "--output", help="engine profile YAML to write"),
    engine: str = typer.Option("vllm", "--engine", help="name of the engine measured (the profile defines it)"),
    base_engine: str = typer.Option("vllm", "--base-engine", help="shipped engine whose collective kernels it uses "
                                    "and whose overheads fill the TPs and devices not measured"),
    fleet_file: Path = typer.Option(None, "--fleet", help="fleet file whose own devices and models the CSV names"),
    train_max_batch: int = typer.Option(5, "--train-max-batch", help="held-in points: the smallest TP of each "
                                        "model and device, batches up to this; the rest are held out and scored"),
) -> None:
    """Fit an engine profile to your own measurements; print its error on the points it held out."""
    from dataclasses import replace

    from planner.catalog import fleet_catalog
    from planner.io.fleetfile import FleetError, load_fleet
    from planner.io.profiles import write_profile
    from planner.model.fit import calibrate_profile

    base = shipped_calibration()
    if base_engine not in known_engines(base):
        fail(f"--base-engine: must be one of {', '.join(sorted(known_engines(base)))} (got {base_engine!r})")
    if train_max_batch < 1:
        fail(f"--train-max-batch: must be at least 1 (got {train_max_batch})")
    catalog = builtin_catalog()
    if fleet_file is not None:
        try:
            catalog = fleet_catalog(load_fleet(fleet_file))
        except FleetError as exc:
            fail(str(exc))
    try:
        groups = read_calibration_points(measured, catalog, source=measured.name)
    except ValueError as exc:
        fail(str(exc))
    eng = replace(base.engine_profile(base_engine), name=engine, base=None if engine == base_engine else base_engine)
    result = calibrate_profile(groups, base, eng, f"medley perf calibrate {measured.name}", train_max_batch)
    held = result.held_out_pct()
    header = (f"Engine profile {engine!r} fitted by medley perf calibrate on {measured.name} "
              f"({result.train_points + result.test_points} points).\nName it in a fleet file: "
              f"planner: {{perf_profile: {output}}}")
    try:
        write_profile(result.profile, output, header)
    except OSError as exc:
        fail(f"--output: cannot write {output}: {exc.strerror or exc}")
    typer.echo(f"fitted {engine!r} on {result.train_points + result.test_points} points of {measured.name} "
               f"(base engine {base_engine})")
    if len(held):
        typer.echo(f"held out {result.test_points} points (fit on {result.train_points}: the smallest TP of each "
                   f"model and device, batches ≤ {train_max_batch}):")
        for line in _held_out_lines(result.held_out):
            typer.echo(line)
        typer.echo(f"held-out error: median {float(np.median(held)):.1f}%, p90 {float(np.percentile(held, 90)):.1f}%")
    else:
        typer.echo("held out no points: every measurement is at the smallest TP with batch "
                   f"≤ {train_max_batch} (measure larger batches or TPs to score the fit)")
    typer.echo(f"wrote {output}")


def capacity_rows(fleet: FleetSpec, catalog: Catalog, perf: PerfModel,
                  buckets: Mapping[str, Sequence[LengthBucket]]) -> list[dict[str, Any]]:
    """Max req/s per service × configuration × bucket: every configuration the planner considers (the
    configuration enumerator's), with ``candidate`` saying whether it serves a bucket within the SLO and so
    becomes a column of the plan."""
    rows: list[dict[str, Any]] = []
    for option in fleet_configurations(fleet, catalog, perf):
        svc, cfg = option.service, option.configuration
        caps = configuration_capacities(perf, option, buckets[svc.id])
        candidate = serves_some_bucket(caps)
        for b, c in zip(buckets[svc.id], caps, strict=True):
            rows.append({"service": svc.id, "pool": option.pool.id,
                         "memory_pool": option.memory_pool.id if option.memory_pool else None,
                         "configuration": cfg.label(), "devices": cfg.devices, "candidate": candidate,
                         "input_tokens": b.input_tokens, "output_tokens": b.output_tokens,
                         "share": round(b.share, 4), "rps": round(c.rps, 3), "limited_by": c.limited_by,
                         "batch": round(c.batch, 1), "ttft_ms": round(c.ttft_ms, 1),
                         "tpot_ms": round(c.tpot_ms, 1)})
    return rows


def capacity_command(fleet: FleetSpec, catalog: Catalog | None = None, perf: PerfModel | None = None,
                     buckets: Mapping[str, Sequence[LengthBucket]] | None = None,
                     fmt: str = "table") -> list[dict[str, Any]]:
    """Print (table or JSON) and return the capacity rows of a fleet; trace-file services need ``buckets``."""
    cat = catalog or builtin_catalog().with_fleet(fleet)
    model = perf or fleet_perf_model(fleet)
    if buckets is None:
        buckets = {s.id: s.traffic.length_buckets() for s in fleet.services}
    rows = capacity_rows(fleet, cat, model, buckets)
    if fmt == "json":
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return rows
    table = Table(title=f"max req/s per replica ({fleet.name}); candidate: serves a bucket within the SLO")
    left = ("service", "pool", "configuration", "candidate", "limited by")
    for col in ("service", "pool", "configuration", "candidate", "in", "out", "share", "req/s", "limited by",
                "TTFT ms", "TPOT ms"):
        table.add_column(col, justify="left" if col in left else "right")
    for r in rows:
        pool = r["pool"] + (f"+{r['memory_pool']}" if r["memory_pool"] else "")
        table.add_row(r["service"], pool, r["configuration"], "yes" if r["candidate"] else "no",
                      str(r["input_tokens"]), str(r["output_tokens"]), f"{r['share']:.3f}", f"{r['rps']:.2f}",
                      r["limited_by"], f"{r['ttft_ms']:.0f}", f"{r['tpot_ms']:.0f}")
    Console(width=None if sys.stdout.isatty() else 160).print(table)
    return rows
