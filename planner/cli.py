"""The ``medley`` command line: planning commands here; other packages plug in through entry points.

Every command turns its input into planner values and calls the same functions the REST API and the
controller call. Bad input exits with code 2 and one line ``FILE:LINE: field: reason`` on stderr.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any, NoReturn

import typer
import yaml
from rich.console import Console
from rich.table import Table

from planner.catalog import builtin_catalog
from planner.fleetfile import FleetError, load_fleet

app = typer.Typer(
    name="medley",
    help="Plan, place, provision and power-cap LLM services on heterogeneous accelerators.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
catalog_app = typer.Typer(help="The shipped catalog: devices, models, price books.", no_args_is_help=True)
app.add_typer(catalog_app, name="catalog")

console = Console(width=None if sys.stdout.isatty() else 160)


class OutputFormat(StrEnum):
    TABLE = "table"
    JSON = "json"
    YAML = "yaml"


def fail(message: str, code: int = 2) -> NoReturn:
    """Print one line to stderr and exit (2 = bad input)."""
    typer.echo(message.splitlines()[0] if message else "error", err=True)
    raise typer.Exit(code=code)


def emit(data: Any, fmt: OutputFormat, table: Table | None = None) -> None:
    """Write ``data`` as JSON/YAML, or print ``table`` for the table format."""
    if fmt is OutputFormat.JSON:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    elif fmt is OutputFormat.YAML:
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))
    elif table is not None:
        console.print(table)


def _register_plugins() -> None:
    """Mount sub-commands that other packages (power, provisioner, api) declare under ``medley.cli``."""
    for ep in entry_points(group="medley.cli"):
        sub = ep.load()
        if isinstance(sub, typer.Typer):
            app.add_typer(sub, name=ep.name)
        else:
            app.command(name=ep.name)(sub)


def main() -> None:
    """Console-script entry point."""
    _register_plugins()
    app()


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
def validate(fleet_file: str = typer.Argument(..., metavar="FLEET.yaml")) -> None:
    """Check a fleet file: shapes, units, and what the catalog knows (devices, models, prices, fit)."""
    try:
        fleet = load_fleet(fleet_file)
    except FleetError as exc:
        fail(str(exc))
    typer.echo(f"{fleet_file}: ok — {len(fleet.pools)} pools, {len(fleet.services)} services, "
               f"{len(fleet.power_domains)} power domains")
