"""Tier what-ifs: commit= and spot_share= change exactly what they name; the commitment search finds the known
optimum; hourly demand from the generator and from CSV files; the command's output and errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from planner.cli.whatif import whatif_command
from planner.io.fleetfile import parse_fleet
from planner.schema import FleetSpec, Plan, SolverReport
from planner.whatif import ScenarioError, apply_changes, parse_scenario, parse_sweep
from planner.whatif.commitment import (
    HOURS_PER_MONTH,
    commitment_whatif,
    diurnal_weekly,
    load_levels,
    parse_hourly,
)

FLEET = """\
name: one-pool
pools:
  - {id: l4-a, device: l4, devices_per_node: 8, max_nodes: 8, zone: a, price_book: aws-us-east-1-2026q1}
services:
  - id: chat
    model: llama-2-7b
    traffic:
      rate_rps: 20
      buckets: [{input_tokens: 512, output_tokens: 128, share: 1.0}]
    slo: {ttft_ms: 1500, tpot_ms: 120}
  - id: code
    model: llama-2-7b
    traffic:
      rate_rps: 4
      buckets: [{input_tokens: 1024, output_tokens: 64, share: 1.0}]
    slo: {ttft_ms: 2000, tpot_ms: 120}
"""


@pytest.fixture(scope="module")
def fleet() -> FleetSpec:
    return parse_fleet(FLEET, "one-pool.yaml")


def test_commit_and_spot_share_change_what_they_name(fleet: FleetSpec) -> None:
    after = apply_changes(fleet, parse_scenario(["commit=12.5; spot_share[code]=0.25"]))
    assert after.planner.commitment_usd_per_hour == 12.5
    assert [s.max_spot_share for s in after.services] == [1.0, 0.25]
    assert after.pools == fleet.pools and after.planner.headroom == fleet.planner.headroom
    assert apply_changes(after, parse_scenario(["commit*=2"])).planner.commitment_usd_per_hour == 25.0
    assert [s.max_spot_share for s in apply_changes(fleet, parse_scenario(["spot_share=0"])).services] == [0, 0]
    assert parse_sweep("spot_share=0..0.8+0.1").values == pytest.approx([i / 10 for i in range(9)])


@pytest.mark.parametrize(("expr", "words"), [
    ("commit[chat]=3", "commit is the fleet's"),
    ("commit=-1", "greater than or equal to 0"),
    ("spot_share=1.5", "less than or equal to 1"),
    ("spot_share[chta]=0.2", "did you mean 'chat'"),
])
def test_bad_tier_expressions_say_why(fleet: FleetSpec, expr: str, words: str) -> None:
    with pytest.raises(ScenarioError, match=words):
        apply_changes(fleet, parse_scenario([expr]))


def _fake_planner(fleet: FleetSpec, *, current: Plan | None = None) -> Plan:
    """One L4 device per req/s of chat, nothing else: the bill is then known in closed form."""
    devices = round(fleet.services[0].traffic.rate_rps)
    return Plan(fleet=fleet.name, replica_groups=[], cost_usd_per_hour=0.8 * devices,
                devices_by_pool={"l4-a": devices}, solver=SolverReport(backend="fake", status="optimal"))


def test_the_commitment_search_finds_the_known_optimum(fleet: FleetSpec) -> None:
    # half the hours at 10 devices, half at 20; L4 at $0.80 on demand draws r = 0.80 × (1 − 0.349) from the
    # commitment. B(C) = C + ½(8 − 0.8·min(10, C/r)) + ½(16 − 0.8·min(20, C/r)) falls until C = 10 r (slope
    # 1 − 0.8/r < 0), then rises (slope 1 − 0.4/r > 0): the best commitment is 10 r, B = 10 r + 4.
    r = 0.8 * (1 - 0.349)
    factors = np.asarray([[0.5, 1.0], [1.0, 1.0]])
    report = commitment_whatif(fleet, factors, _fake_planner, levels=2, replan=False)
    assert report.on_demand_usd_per_hour == pytest.approx(12.0)
    assert report.best_commitment_usd_per_hour == pytest.approx(10 * r, abs=1e-3)
    assert report.best_usd_per_hour == pytest.approx(10 * r + 4.0, abs=1e-3)
    assert report.monthly_saving_usd == pytest.approx((12.0 - 10 * r - 4.0) * HOURS_PER_MONTH, rel=1e-3)
    curve = [p.expected_usd_per_hour for p in report.curve]
    best = curve.index(min(curve))
    assert all(a >= b - 1e-9 for a, b in zip(curve[:best], curve[1:best + 1], strict=True))  # convex: down, then up
    assert all(a <= b + 1e-9 for a, b in zip(curve[best:], curve[best + 1:], strict=False))


def test_the_generator_is_diurnal_and_weekly() -> None:
    f = diurnal_weekly(["a", "b"])
    assert f.shape == (8760, 2) and np.allclose(f[:, 0], f[:, 1])
    assert f.max() == pytest.approx(1.0) and f[14, 0] == pytest.approx(1.0)  # Monday 14:00
    assert f[2, 0] == pytest.approx(1 - 0.35 * (1 - math.cos(2 * math.pi * -12 / 24)) / 2)
    assert f[5 * 24 + 14, 0] == pytest.approx(0.7)  # Saturday's peak
    assert 0.70 < f.mean() < 0.80


def test_levels_split_the_hours_and_plan_at_each_level_peak() -> None:
    factors = np.asarray([[0.2], [0.9], [0.5], [0.6]])
    levels = load_levels(factors, [10.0], 2)
    assert [w for _, w in levels] == [0.5, 0.5]
    assert [float(s[0]) for s, _ in levels] == [0.5, 0.9]


def test_hourly_csv_by_scale_or_by_service(fleet: FleetSpec) -> None:
    assert parse_hourly("hour,scale\n0,0.5\n1,1\n", fleet).tolist() == [[0.5, 0.5], [1.0, 1.0]]
    per_service = parse_hourly("chat,other\n10,3\n40,3\n", fleet)
    assert per_service.tolist() == [[0.5, 1.0], [2.0, 1.0]]  # code has no column: its own rate
    for text, words in (("", "no hours"), ("hour,x\n0,1\n", "'scale' column"), ("scale\n1\nnan\n", "3: scale"),
                        ("scale\n-1\n", "2: scale")):
        with pytest.raises(ValueError, match=words):
            parse_hourly(text, fleet)


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("whatif")(whatif_command)

    @app.callback()
    def _root() -> None:
        """Root."""

    return app


def test_the_command_finds_a_commitment_from_a_forecast_file(tmp_path: Path) -> None:
    (tmp_path / "fleet.yaml").write_text(FLEET, encoding="utf-8")
    (tmp_path / "hours.csv").write_text("hour,scale\n" + "".join(f"{h},{0.5 if h % 2 else 1.0}\n"
                                                                 for h in range(48)), encoding="utf-8")
    res = CliRunner().invoke(_cli(), ["whatif", str(tmp_path / "fleet.yaml"), "--commitment", "--forecast",
                                      str(tmp_path / "hours.csv"), "--levels", "2", "--format", "json",
                                      "--plot", str(tmp_path / "c.png")])
    assert res.exit_code == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["hours"] == 48 and len(report["levels"]) == 2
    assert report["best_commitment_usd_per_hour"] > 0
    assert report["best_usd_per_hour"] < report["on_demand_usd_per_hour"]
    assert report["best_replanned_usd_per_hour"] <= report["best_usd_per_hour"] + 1e-6
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = CliRunner().invoke(_cli(), ["whatif", str(tmp_path / "fleet.yaml"), "--forecast", "x.csv",
                                      "--scenario", "rate*=2"])
    assert bad.exit_code == 2 and "--forecast x.csv: a forecast is for --commitment" in bad.stderr


def test_the_search_says_each_plan_before_it_makes_it(fleet: FleetSpec) -> None:
    said: list[tuple[int, int, str]] = []
    factors = np.asarray([[0.5, 1.0], [1.0, 1.0]])
    report = commitment_whatif(fleet, factors, _fake_planner, levels=2,
                               progress=lambda done, total, what: said.append((done, total, what)))
    committed = f"with ${report.best_commitment_usd_per_hour:.2f}/h committed"
    assert said == [(0, 2, "load level 1 of 2"), (1, 2, "load level 2 of 2"),
                    (0, 2, f"load level 1 of 2 {committed}"), (1, 2, f"load level 2 of 2 {committed}")]


def test_the_command_says_its_plans_unless_quiet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import planner.cli.whatif as cli_whatif

    monkeypatch.setattr(cli_whatif, "PROGRESS_AFTER_S", 0.0)
    (tmp_path / "fleet.yaml").write_text(FLEET, encoding="utf-8")
    args = ["whatif", str(tmp_path / "fleet.yaml"), "--commitment", "--levels", "2", "--format", "json"]
    loud = CliRunner().invoke(_cli(), args)
    assert loud.exit_code == 0, loud.stderr
    assert [line.split(" (")[0] for line in loud.stderr.splitlines()][:2] == [
        "medley: planning load level 1 of 2", "medley: planning load level 2 of 2"]
    quiet = CliRunner().invoke(_cli(), [*args, "-q"])
    assert quiet.exit_code == 0 and quiet.stderr == ""
    assert json.loads(quiet.stdout)["best_commitment_usd_per_hour"] == pytest.approx(
        json.loads(loud.stdout)["best_commitment_usd_per_hour"])
