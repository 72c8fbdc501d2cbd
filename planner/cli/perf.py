"""``medley perf predict`` and the ``medley capacity`` table: the performance model from the command line.

Bad input (unknown model or device, a TP that does not divide the heads, a negative batch) exits with code
2 and one line on stderr, without a traceback.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from planner.catalog import Catalog, builtin_catalog
from planner.cli.common import fail
from planner.model.candidates import configuration_capacities, serves_some_bucket
from planner.model.configurations import fleet_configurations
from planner.model.perf import PerfModel, ReplicaShape, check_shape, default_perf_model
from planner.schema import FleetSpec, LengthBucket

ENGINES = ("vllm", "vllm-2023")
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
    engine: str = typer.Option("vllm", "--engine", help="whose fitted per-step overheads: vllm or vllm-2023"),
) -> None:
    """Predict prefill time, decode step time and memory fit of one replica."""
    catalog = builtin_catalog()
    if engine not in ENGINES:
        fail(f"--engine: must be one of {', '.join(ENGINES)} (got {engine!r})")
    perf = default_perf_model(engine)
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
    model = perf or default_perf_model(fleet.planner.perf_engine)
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
