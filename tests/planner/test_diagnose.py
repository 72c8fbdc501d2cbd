"""Preflight: the constraint that binds, named before the solver runs, with numbers computed independently."""

from __future__ import annotations

import gc
import math

import pytest

from planner.catalog import fleet_catalog
from planner.diagnose import preflight
from planner.heap import planning_heap
from planner.io.fleetfile import parse_fleet
from planner.io.profiles import fleet_perf_model
from planner.pipeline import InfeasibleFleet, build_inputs, plan_fleet
from planner.schema import FleetSpec

FLEET = """\
name: small
pools:
  - {id: l4-a, device: l4, devices_per_node: 8, max_nodes: 1, zone: a, price_usd_per_device_hour: 0.8}
  - {id: a100-b, device: a100-80gb, devices_per_node: 8, max_nodes: 1, zone: b, price_usd_per_device_hour: 3.67}
services:
  - id: chat
    model: llama-2-7b
    traffic:
      rate_rps: RATE
      buckets:
        - {input_tokens: 512, output_tokens: 128, share: 0.7}
        - {input_tokens: 2048, output_tokens: 256, share: 0.3}
    slo: {ttft_ms: 1500, tpot_ms: 120}
"""


def _fleet(rate: float) -> FleetSpec:
    return parse_fleet(FLEET.replace("RATE", f"{rate:g}"), "small.yaml")


def _findings(fleet: FleetSpec) -> list:  # type: ignore[type-arg]
    inputs = build_inputs(fleet)
    return preflight(fleet, fleet_catalog(fleet), fleet_perf_model(fleet), inputs.problem, inputs.buckets)


def _devices_needed(fleet: FleetSpec) -> float:
    """The preflight's lower bound computed column by column: per bucket, its rate over the best capacity per
    device of any column, at the planner's headroom."""
    inputs = build_inputs(fleet)
    problem = inputs.problem
    svc = fleet.services[0]
    need = 0.0
    for b, bucket in enumerate(inputs.buckets[svc.id]):
        best = max(c.capacity_rps[b] / (c.devices + c.memory_devices) for c in problem.columns)
        need += svc.traffic.rate_rps * bucket.share / (best * problem.headroom)
    return need


def test_a_rate_no_pool_can_hold_is_named_with_its_device_count() -> None:
    fleet = _fleet(400)
    need = _devices_needed(fleet)
    assert need > 16  # the two pools hold 8 devices each
    [finding] = _findings(fleet)
    assert finding.constraint == "availability[chat]"
    assert finding.value == pytest.approx(need, rel=1e-9)
    assert "hold 16" in finding.message and "a100-b" in finding.message and "l4-a" in finding.message
    with pytest.raises(InfeasibleFleet) as info:
        plan_fleet(fleet, baselines=False, marginals=False)
    assert [f.constraint for f in info.value.findings] == ["availability[chat]"]


def test_a_rate_the_pools_hold_passes_preflight() -> None:
    fleet = _fleet(2)
    assert _devices_needed(fleet) < 16
    assert _findings(fleet) == []


def test_pools_without_nodes_are_named() -> None:
    fleet = parse_fleet(FLEET.replace("RATE", "2").replace("max_nodes: 1", "max_nodes: 0"), "small.yaml")
    with pytest.raises(InfeasibleFleet) as info:
        plan_fleet(fleet, baselines=False, marginals=False)
    [finding] = info.value.findings
    assert finding.constraint == "availability[chat]"
    assert "max_nodes 0" in finding.message


def test_planning_heap_pauses_then_freezes_and_leaves_the_collector_as_it_found_it() -> None:
    was = gc.isenabled()
    try:
        for enabled in (True, False):
            gc.enable() if enabled else gc.disable()
            with planning_heap() as built:
                assert not gc.isenabled()
                built()
                assert gc.get_freeze_count() > 0
                assert gc.isenabled() is enabled
            assert gc.get_freeze_count() == 0
            assert gc.isenabled() is enabled
    finally:
        gc.enable() if was else gc.disable()


def test_a_plan_leaves_nothing_frozen_and_its_cycles_collectable() -> None:
    plan = plan_fleet(_fleet(2), baselines=False, marginals=False)
    assert plan.replica_groups and math.isfinite(plan.cost_usd_per_hour)
    assert gc.get_freeze_count() == 0
