"""The shipped what-if examples, end to end through the command, against golden JSON outputs.

Regenerate the golden files after an intended change to the planner or the examples with::

    UPDATE_GOLDEN=1 .venv/bin/python -m pytest tests/planner/whatif/test_whatif_golden.py

The files hold the whole ``--format json`` output (floats rounded to two decimals, plan ids left out). The
comparison covers what a plan's optimality fixes: each scenario's name, changes, feasibility, reason, cost and
cost change. Which of several equally cheap plans the solver returns (replicas, configurations, watts) may
differ from run to run, so those are shown in the files but not compared.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from planner.cli.whatif import sweep_figure, whatif_command
from planner.whatif import SweepReport, WhatIfReport

ROOT = Path(__file__).resolve().parents[3]
GOLDEN = Path(__file__).resolve().parent / "golden"
QUICKSTART = ROOT / "examples" / "quickstart.yaml"
SCENARIOS = ROOT / "examples" / "whatif" / "quickstart-scenarios.yaml"
RATE_SWEEP = "rate*=0.5..2x2"


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command("whatif")(whatif_command)

    @app.callback()
    def _root() -> None:
        """Root, so that ``whatif`` is a sub-command as under ``medley``."""

    return app


def _run(args: list[str]) -> dict[str, Any]:
    # Paths relative to the repository, so the output is the same wherever the checkout lies.
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        res = CliRunner().invoke(_cli(), ["whatif", *args, "--format", "json"])
    finally:
        os.chdir(cwd)
    assert res.exit_code == 0, res.stderr
    data: dict[str, Any] = json.loads(res.stdout)  # stdout is JSON only: progress and notes go to stderr
    return data


def _stable(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 2)
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k != "plan_id"}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


_COMPARED = ("name", "expressions", "feasible", "reason", "cost_usd_per_hour", "cost_delta_usd_per_hour")


def _fixed(data: dict[str, Any]) -> Any:
    """The part of a report that optimality fixes (see the module docstring)."""
    def row(r: dict[str, Any]) -> dict[str, Any]:
        return {k: r[k] for k in _COMPARED}

    if "points" in data:
        return {"sweep": data["sweep"], "baseline": row(data["baseline"]),
                "points": [{"value": p["value"], **row(p["result"])} for p in data["points"]]}
    return {"baseline": row(data["baseline"]), "scenarios": [row(r) for r in data["scenarios"]]}


def _check_golden(name: str, data: dict[str, Any]) -> None:
    path = GOLDEN / name
    got = _stable(data)
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(json.dumps(got, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    want = json.loads(path.read_text(encoding="utf-8"))
    assert _close(_fixed(got), _fixed(want)), (
        f"{name} differs; regenerate with UPDATE_GOLDEN=1 if the change is intended")


# A scenario is planned within the fleet's time limit; on a loaded machine the solver may stop there with a plan
# up to a few percent above the optimum (its reported gap), so costs are compared to within this share of the
# baseline's cost. Names, changes, feasibility and reasons are compared exactly.
COST_SLACK = 0.02
_COSTS = ("cost_usd_per_hour", "cost_delta_usd_per_hour")


def _close(got: Any, want: Any) -> bool:
    """``got`` equals ``want`` but for costs, which may differ by COST_SLACK of the baseline's cost."""
    scale = float(want["baseline"]["cost_usd_per_hour"] or 1.0)
    rows = [("baseline", got["baseline"], want["baseline"])]
    key = "points" if "points" in want else "scenarios"
    if len(got[key]) != len(want[key]) or got.get("sweep") != want.get("sweep"):
        return False
    rows += [(str(i), g, w) for i, (g, w) in enumerate(zip(got[key], want[key], strict=True))]
    for _, g, w in rows:
        if {k: v for k, v in g.items() if k not in _COSTS} != {k: v for k, v in w.items() if k not in _COSTS}:
            return False
        for k in _COSTS:
            if (g[k] is None) != (w[k] is None) or (g[k] is not None and abs(g[k] - w[k]) > COST_SLACK * scale):
                return False
    return True


@pytest.fixture(scope="module")
def scenarios() -> dict[str, Any]:
    return _run([str(QUICKSTART.relative_to(ROOT)), "--scenarios", str(SCENARIOS.relative_to(ROOT))])


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    png = tmp_path_factory.mktemp("plots") / "rate.png"
    data = _run([str(QUICKSTART.relative_to(ROOT)), "--sweep", RATE_SWEEP, "--verify", "--verify-duration-s", "60",
                 "--plot", str(png)])
    return data, png


def test_scenarios_golden(scenarios: dict[str, Any]) -> None:
    _check_golden("whatif-quickstart-scenarios.json", scenarios)


def test_rate_sweep_golden(sweep: tuple[dict[str, Any], Path]) -> None:
    _check_golden("whatif-quickstart-rate-sweep.json", sweep[0])


def test_every_shipped_scenario_is_reported(scenarios: dict[str, Any]) -> None:
    report = WhatIfReport.model_validate(scenarios)
    names = [s.name for s in report.scenarios]
    assert names == ["traffic-x2", "h100-at-2.50", "lose-zone-b", "lose-a100-b", "chat-tpot-40ms", "add-h20-pool-b",
                     "add-rag-service", "row-a-8kw"]
    by = {s.name: s for s in report.scenarios}
    assert by["lose-zone-b"].feasible is False and "spread_zones" in (by["lose-zone-b"].reason or "")
    assert by["add-rag-service"].replicas_by_service["rag"] > 0
    assert "h100-sxm" in by["h100-at-2.50"].devices_by_type
    assert by["row-a-8kw"].watts_by_power_domain["row-a"] <= 0.8 * 8000 + 1e-6


def test_removing_a_pool_never_lowers_cost(scenarios: dict[str, Any]) -> None:
    report = WhatIfReport.model_validate(scenarios)
    base = report.baseline.cost_usd_per_hour
    assert base is not None
    for s in report.scenarios:
        if any(e.startswith(("remove-pool=", "remove-zone=")) for e in s.expressions):
            assert not s.feasible or (s.cost_usd_per_hour or 0.0) >= base - 1e-6, s.name


def test_rate_sweep_cost_never_decreases(sweep: tuple[dict[str, Any], Path]) -> None:
    report = SweepReport.model_validate(sweep[0])
    assert [p.value for p in report.points] == [0.5, 1.0, 2.0]
    costs = [p.result.cost_usd_per_hour for p in report.points]
    seen_infeasible = False
    last = 0.0
    for c in costs:
        if c is None:
            seen_infeasible = True
            continue
        assert not seen_infeasible, "a higher rate became feasible again"
        assert c >= last - 1e-6
        last = c
    # The point at ×1 is the baseline fleet itself.
    assert report.points[1].result.cost_usd_per_hour == report.baseline.cost_usd_per_hour
    assert all(p.result.verified is not None for p in report.points)


def test_png_plot_has_the_series(sweep: tuple[dict[str, Any], Path]) -> None:
    data, png = sweep
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    assert width > 800 and height > 300
    report = SweepReport.model_validate(data)
    fig = sweep_figure(report)
    cost, mix = fig.axes[:2]
    assert np.asarray(cost.lines[0].get_ydata()).tolist() == [p.result.cost_usd_per_hour for p in report.points]
    devices = sorted({d for p in report.points for d in p.result.devices_by_type})
    assert [c.get_label() for c in mix.containers] == devices
    assert cost.get_xscale() == "log"  # a geometric sweep
