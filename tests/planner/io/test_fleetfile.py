"""Bad fleet files: each gives exit code 2 and one line ``FILE:LINE: field: reason``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from planner.cli import app
from planner.io.fleetfile import FleetError, load_fleet, parse_fleet

GOOD = """\
name: t
power_domains:
  - {id: row, budget_watts: 20000}
pools:
  - id: h100
    device: h100-sxm
    devices_per_node: 8
    max_nodes: 2
    price_usd_per_device_hour: 4.0
    zone: a
    power_domain: row
  - {id: l4, device: l4, max_nodes: 2, price_book: aws-us-east-1-2026q1, zone: b}
services:
  - id: chat
    model: llama-3-8b
    traffic:
      rate_rps: 5
      buckets:
        - {input_tokens: 512, output_tokens: 128, share: 1.0}
    slo:
      ttft_ms: 500
      tpot_ms: 50
"""


def _edit(old: str, new: str) -> str:
    assert old in GOOD, old
    return GOOD.replace(old, new, 1)


def test_good_file_loads() -> None:
    fleet = parse_fleet(GOOD, "f.yaml")
    assert [p.id for p in fleet.pools] == ["h100", "l4"]
    assert fleet.services[0].slo.percentile == 90.0


# (edited text, expected line, expected field, a phrase of the reason)
BAD = [
    pytest.param(_edit("      ttft_ms: 500", "      ttft: 500"), 21, "services[chat].slo.ttft",
                 "did you mean 'ttft_ms'", id="unknown-field"),
    pytest.param(_edit("      ttft_ms: 500", "      ttft_ms: 0.5s"), 21, "services[chat].slo.ttft_ms",
                 "plain number in ms", id="wrong-unit"),
    pytest.param(_edit("rate_rps: 5", "rate_rps: -5"), 17, "services[chat].traffic.rate_rps",
                 "greater than or equal to 0", id="negative-rate"),
    pytest.param(_edit("model: llama-3-8b", "model: llama-9b"), 15, "services[chat].model",
                 "unknown model", id="unknown-model"),
    pytest.param(_edit("device: h100-sxm", "device: h100"), 6, "pools[h100].device",
                 "did you mean 'h100-sxm'", id="unknown-device"),
    pytest.param(_edit("price_book: aws-us-east-1-2026q1", "price_book: aws-2020"), 12, "pools[l4].price_book",
                 "unknown price book", id="unknown-price-book"),
    pytest.param(_edit("    price_usd_per_device_hour: 4.0\n", ""), 5, "pools[h100].price_usd_per_device_hour",
                 "give a price or a price_book", id="missing-price"),
    pytest.param(_edit("share: 1.0", "share: 0.5"), 18, "services[chat].traffic.buckets",
                 "must sum to 1", id="shares-not-one"),
    pytest.param(_edit("id: l4,", "id: h100,"), 4, "pools", "duplicate id 'h100'", id="duplicate-id"),
    pytest.param(_edit("      tpot_ms: 50", "      tpot_ms: 50\n      percentile: 120"), 23,
                 "services[chat].slo.percentile", "less than or equal to 100", id="percentile-range"),
    pytest.param(_edit("    power_domain: row", "    power_domain: rowz"), 11, "pools[h100].power_domain",
                 "unknown power domain", id="unknown-power-domain"),
    pytest.param(_edit("    model: llama-3-8b", "    model: llama-3-8b\n    allowed_pools: [h200]"), 16,
                 "services[chat].allowed_pools", "unknown pool 'h200'", id="unknown-allowed-pool"),
    pytest.param(_edit("    model: llama-3-8b", "    model: llama-3-8b\n    tp_options: [1, 3]"), 16,
                 "services[chat].tp_options", "tp 3 does not divide", id="tp-not-dividing-heads"),
    pytest.param(_edit("id: l4, device: l4, max_nodes: 2", "id: l4, device: t4, max_nodes: 1").replace(
        "    model: llama-3-8b", "    model: qwen-72b\n    allowed_pools: [l4]"), 15,
                 "services[chat].model", "fits no device", id="model-fits-no-device"),
    pytest.param(_edit("    model: llama-3-8b", "    model: llama-3-8b\n    spread_zones: 3"), 16,
                 "services[chat].spread_zones", "span 2", id="spread-more-than-zones"),
    pytest.param(_edit("budget_watts: 20000}", "budget_watts: 20000, thresholds: {t1_share: 0.95}}"), 3,
                 "power_domains[row].thresholds.t1_share", "must rise", id="thresholds-order"),
    pytest.param(_edit("    max_nodes: 2\n", ""), 5, "pools[h100].max_nodes", "required field is missing",
                 id="missing-field"),
    pytest.param(_edit("  - id: chat", "  - id: Chat Bot"), 14, "services[Chat Bot].id", "should match pattern",
                 id="bad-id"),
    pytest.param(GOOD + "  - {id: x: y}\n", 23, "(yaml)", "not valid YAML", id="invalid-yaml"),
    pytest.param(_edit("      buckets:", "      trace_file: x.csv\n      buckets:"), 19,
                 "services[chat].traffic.buckets", "exactly one of", id="two-distributions"),
]


@pytest.mark.parametrize(("text", "line", "field", "phrase"), BAD)
def test_bad_input_points_at_line_and_field(text: str, line: int, field: str, phrase: str) -> None:
    with pytest.raises(FleetError) as info:
        parse_fleet(text, "f.yaml")
    first = info.value.issues[0]
    assert (first.line, first.field) == (line, field), str(first)
    assert phrase in first.reason


@pytest.mark.parametrize(("text", "line", "field", "phrase"), BAD[:6])
def test_cli_validate_exits_2_with_one_line(tmp_path: Path, text: str, line: int, field: str, phrase: str) -> None:
    f = tmp_path / "fleet.yaml"
    f.write_text(text)
    result = CliRunner().invoke(app, ["validate", str(f)])
    assert result.exit_code == 2
    out = result.stderr.strip()
    assert "\n" not in out and "Traceback" not in out
    assert re.match(rf"^{re.escape(str(f))}:{line}: {re.escape(field)}: .*{re.escape(phrase)}", out), out


def test_missing_file_is_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "cannot read" in result.stderr


def test_shipped_examples_validate() -> None:
    for path in sorted(Path("examples").glob("*.yaml")):
        load_fleet(path)
