"""Preflight: the constraint that binds, named before the solver runs, with numbers computed independently."""

from __future__ import annotations

import gc
import math

import pytest
from test_pipeline import _small

from planner.catalog import fleet_catalog
from planner.diagnose import preflight
from planner.heap import planning_heap
from planner.io.profiles import fleet_perf_model
from planner.pipeline import InfeasibleFleet, build_inputs, plan_fleet
from planner.schema import Finding, FleetSpec


def _fleet(rate: float, max_nodes: int = 1) -> FleetSpec:
    """The pipeline tests' small fleet (an L4 pool and an A100 pool) at ``rate`` with ``max_nodes`` per pool."""
    return _small(**{"rate_rps: 6": f"rate_rps: {rate:g}", "max_nodes: 4": f"max_nodes: {max_nodes}",
                     "max_nodes: 2": f"max_nodes: {max_nodes}"})


def _findings(fleet: FleetSpec) -> list[Finding]:
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
    fleet = _fleet(2, max_nodes=0)
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
