"""``medley catalog devices|models|prices``: the shipped catalog as tables, JSON or YAML."""

from __future__ import annotations

import typer
from rich.table import Table

from planner.catalog import builtin_catalog
from planner.cli.common import FormatOption, OutputFormat, emit

catalog_app = typer.Typer(help="The shipped catalog: devices, models, price books.", no_args_is_help=True)


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
    t = Table(title="Price books ($ per device-hour by tier; sources and dates: --format yaml)")
    tiers = ("reserved", "committed", "spot")
    for col in ("book", "provider", "as of", "device", "$/h", *tiers):
        t.add_column(col, justify="right" if col in ("$/h", *tiers) else "left")
    for b in books:
        for dev, price in b.usd_per_device_hour.items():
            off = []
            for name in tiers:
                tier = b.tier(name)
                rate = tier.usd_per_device_hour.get(dev) if tier is not None else None
                if rate is None and tier is not None and dev in tier.discount:
                    rate = price * (1 - tier.discount[dev])
                off.append("" if rate is None else f"{rate:.3f}")
            t.add_row(b.id, b.provider, b.as_of, dev, f"{price:.3f}", *off)
    emit([b.model_dump(mode="json") for b in books], fmt, t)
