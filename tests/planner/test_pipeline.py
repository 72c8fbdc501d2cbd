"""End-to-end planning: fleet file → plan, infeasibility in words, churn against a running plan."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from planner.cli import app
from planner.io.fleetfile import load_fleet, parse_fleet
from planner.pipeline import InfeasibleFleet, plan_fleet, serving_replicas
from planner.schema import FleetSpec, Role

SMALL = """\
name: small
pools:
  - {id: l4-a, device: l4, devices_per_node: 8, max_nodes: 4, zone: a, price_usd_per_device_hour: 0.8}
  - {id: a100-b, device: a100-80gb, devices_per_node: 8, max_nodes: 2, zone: b, price_usd_per_device_hour: 3.67}
services:
  - id: chat
    model: llama-2-7b
    traffic:
      rate_rps: 6
      buckets:
        - {input_tokens: 512, output_tokens: 128, share: 0.7}
        - {input_tokens: 2048, output_tokens: 256, share: 0.3}
    slo: {ttft_ms: 1500, tpot_ms: 120}
"""


def _small(**edits: str) -> FleetSpec:
    text = SMALL
    for old, new in edits.items():
        text = text.replace(old, new)
    return parse_fleet(text, "small.yaml")


@pytest.fixture(scope="module")
def quickstart_plan() -> tuple[FleetSpec, object]:
    fleet = load_fleet("examples/quickstart.yaml")
    return fleet, plan_fleet(fleet)


def test_quickstart_plan_serves_every_bucket_within_limits(quickstart_plan: tuple[FleetSpec, object]) -> None:
    fleet, plan = quickstart_plan
    assert plan.solver.status == "optimal"
    assert plan.cost_usd_per_hour == pytest.approx(sum(g.cost_usd_per_hour for g in plan.replica_groups), rel=1e-6)
    for svc in fleet.services:
        groups = [g for g in plan.replica_groups if g.service == svc.id]
        for bucket in svc.traffic.length_buckets():
            key = (bucket.input_tokens, bucket.output_tokens)
            prefill = sum(ld.prefill_share for g in groups for ld in g.load
                          if (ld.input_tokens, ld.output_tokens) == key)
            decode = sum(ld.decode_share for g in groups for ld in g.load if (ld.input_tokens, ld.output_tokens) == key)
            assert prefill == pytest.approx(1.0, abs=1e-4) and decode == pytest.approx(1.0, abs=1e-4), (svc.id, key)
        assert serving_replicas(plan).get(svc.id, 0) >= svc.min_replicas
    for pool in fleet.pools:
        assert plan.nodes_by_pool.get(pool.id, 0) <= pool.max_nodes
    for dom in fleet.power_domains:
        assert plan.watts_by_power_domain.get(dom.id, 0.0) <= dom.budget_watts * dom.thresholds.t1_share + 1e-6
    assert all(0.0 <= g.utilisation <= fleet.planner.headroom + 1e-6 for g in plan.replica_groups)
    assert plan.baselines and plan.baselines[0].feasible


def test_chat_spreads_over_two_zones(quickstart_plan: tuple[FleetSpec, object]) -> None:
    fleet, plan = quickstart_plan
    zone = {p.id: p.zone for p in fleet.pools}
    serving = {zone[g.pool] for g in plan.replica_groups
               if g.service == "chat" and g.configuration.role is not Role.PREFILL}
    assert len(serving) >= 2


def test_replanning_against_itself_keeps_the_plan(quickstart_plan: tuple[FleetSpec, object]) -> None:
    fleet, plan = quickstart_plan
    fleet = fleet.model_copy(update={"planner": fleet.planner.model_copy(update={"churn_usd_per_replica_change": 5.0})})
    again = plan_fleet(fleet, current=plan, baselines=False)
    assert again.previous_plan_id == plan.id
    assert again.cost_usd_per_hour == pytest.approx(plan.cost_usd_per_hour, rel=1e-6)
    assert {(g.service, g.pool, g.configuration, g.replicas) for g in again.replica_groups} == \
        {(g.service, g.pool, g.configuration, g.replicas) for g in plan.replica_groups}


def test_more_traffic_never_costs_less() -> None:
    low = plan_fleet(_small(), baselines=False)
    high = plan_fleet(_small(**{"rate_rps: 6": "rate_rps: 12"}), baselines=False)
    assert high.cost_usd_per_hour >= low.cost_usd_per_hour - 1e-9


def test_too_few_devices_names_pool_service_and_shortfall() -> None:
    fleet = _small(**{"rate_rps: 6": "rate_rps: 400", "max_nodes: 4": "max_nodes: 1", "max_nodes: 2": "max_nodes: 1"})
    with pytest.raises(InfeasibleFleet) as info:
        plan_fleet(fleet, baselines=False)
    text = " ".join(f.message for f in info.value.findings)
    assert "chat" in text
    assert "l4-a" in text or "a100-b" in text
    assert any(ch.isdigit() for ch in text)


def test_cli_infeasible_exits_2_with_one_line(tmp_path: Path) -> None:
    f = tmp_path / "fleet.yaml"
    f.write_text(SMALL.replace("rate_rps: 6", "rate_rps: 400")
                 .replace("max_nodes: 4", "max_nodes: 1").replace("max_nodes: 2", "max_nodes: 1"))
    result = CliRunner().invoke(app, ["plan", str(f), "--no-baselines"])
    assert result.exit_code == 2
    line = result.stderr.strip()
    assert "\n" not in line and "infeasible" in line and "chat" in line


def test_cli_plan_json_round_trips(tmp_path: Path) -> None:
    f = tmp_path / "fleet.yaml"
    f.write_text(SMALL)
    out = tmp_path / "plan.json"
    result = CliRunner().invoke(app, ["plan", str(f), "--format", "json", "--no-baselines", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["solver"]["status"] == "optimal"
    assert json.loads(out.read_text())["id"] == data["id"]
    again = CliRunner().invoke(app, ["plan", str(f), "--format", "json", "--no-baselines", "--current", str(out)])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["previous_plan_id"] == data["id"]
