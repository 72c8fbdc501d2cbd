"""Tiered fleets end to end: untiered fleets plan as before, reserved and committed billing, spot that a service
forbids, a deeper spot discount, and the spot headroom kept in replay when any one spot pool is reclaimed."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from planner.catalog import fleet_catalog
from planner.io.fleetfile import FleetError, check_fleet, parse_fleet
from planner.pipeline import assemble_plan, build_inputs, plan_fleet
from planner.schema import FleetSpec, Plan
from planner.solve import SolveOptions, solve
from planner.tiers import has_tiers, with_tiers
from planner.tiers.reclaim import after_reclaim, spot_pools_used
from planner.tolerance import trace_source, verify_spot_reclaims

TIERED = """\
name: tiers
planner: {relative_gap: 0.01}
pools:
  - {id: l4-a, device: l4, devices_per_node: 8, max_nodes: 4, zone: a, price_book: aws-us-east-1-2026q1}
  - {id: l4-a-spot, device: l4, devices_per_node: 8, max_nodes: 4, zone: a, price_book: aws-us-east-1-2026q1,
     tiers: {spot: {}}}
  - {id: l4-b-spot, device: l4, devices_per_node: 8, max_nodes: 4, zone: b, price_book: aws-us-east-1-2026q1,
     tiers: {spot: {}}}
  - {id: a10g-b-spot, device: a10g, devices_per_node: 8, max_nodes: 4, zone: b, price_book: aws-us-east-1-2026q1,
     tiers: {spot: {}}}
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


def _fleet(text: str = TIERED, **edits: str) -> FleetSpec:
    for old, new in edits.items():
        text = text.replace(old, new)
    return parse_fleet(text, "tiers.yaml")


def _plan(fleet: FleetSpec) -> Plan:
    return plan_fleet(fleet, baselines=False, marginals=False)


@pytest.fixture(scope="module")
def spot_plan() -> tuple[FleetSpec, Plan]:
    fleet = _fleet()
    return fleet, _plan(fleet)


def test_a_fleet_without_tiers_plans_exactly_as_before() -> None:
    fleet = _fleet(**{",\n     tiers: {spot: {}}": ""})
    assert not has_tiers(fleet)
    inputs = build_inputs(fleet)
    assert inputs.problem.tiers is None
    assert with_tiers(inputs.problem, fleet, fleet_catalog(fleet)) is inputs.problem
    plan = _plan(fleet)
    assert plan.billing is None
    assert not any(f.constraint.startswith(("tiers", "spot_risk")) for f in plan.findings)


def test_spot_is_used_and_billed_with_its_risk(spot_plan: tuple[FleetSpec, Plan]) -> None:
    fleet, plan = spot_plan
    assert plan.billing is not None
    assert plan.billing.devices_by_tier.get("spot", 0) > 0
    assert spot_pools_used(plan, fleet)
    risk = plan.billing.spot_risk["chat"]
    assert 0 <= risk <= fleet.services[0].spot_risk
    assert plan.billing.total_usd_per_hour == pytest.approx(plan.cost_usd_per_hour)


def test_a_service_that_forbids_spot_never_gets_it(spot_plan: tuple[FleetSpec, Plan]) -> None:
    fleet = _fleet(**{"    slo: {ttft_ms": "    max_spot_share: 0\n    slo: {ttft_ms"})
    plan = _plan(fleet)
    spot = {p.id for p in fleet.pools if p.is_spot}
    assert not any(g.pool in spot for g in plan.replica_groups)
    assert plan.cost_usd_per_hour > spot_plan[1].cost_usd_per_hour  # spot was cheaper: forbidding it costs


def test_a_spot_share_cap_holds() -> None:
    fleet = _fleet(**{"    slo: {ttft_ms": "    max_spot_share: 0.5\n    slo: {ttft_ms"})
    plan = _plan(fleet)
    spot = {p.id for p in fleet.pools if p.is_spot}
    on_spot = sum(g.replicas * g.configuration.devices for g in plan.replica_groups if g.pool in spot)
    total = sum(g.replicas * g.configuration.devices for g in plan.replica_groups)
    assert on_spot <= 0.5 * total


def test_a_deeper_spot_discount_never_raises_the_cost() -> None:
    costs = []
    for discount in (0.2, 0.45, 0.7):
        fleet = _fleet(**{"tiers: {spot: {}}": f"tiers: {{spot: {{discount: {discount}}}}}",
                          "relative_gap: 0.01": "relative_gap: 0.0"})
        costs.append(_plan(fleet).cost_usd_per_hour)
    assert costs[0] >= costs[1] >= costs[2]
    assert costs[0] > costs[2]


def test_the_spot_headroom_keeps_the_slo_when_any_one_spot_pool_is_reclaimed(
        spot_plan: tuple[FleetSpec, Plan]) -> None:
    fleet, plan = spot_plan
    reports = verify_spot_reclaims(plan, fleet, trace_source("poisson", duration_s=120))
    assert set(reports) == set(spot_pools_used(plan, fleet)) and reports
    for pool, report in reports.items():
        assert all(s.meets_slo for s in report.services), pool
    inputs = build_inputs(fleet)
    for pool in reports:
        assert all(p <= 1 + 1e-6 for p in after_reclaim(plan, inputs, [pool])[1].values())


def test_without_the_spot_rows_a_reclaim_overloads_what_is_left() -> None:
    fleet = _fleet()
    inputs = build_inputs(fleet)
    assert inputs.problem.tiers is not None and inputs.problem.tiers.losses
    bare = replace(inputs.problem, tiers=replace(inputs.problem.tiers, losses=()))
    sol = solve(bare, SolveOptions(relative_gap=0.0, time_limit_s=20))
    plan = assemble_plan(fleet, replace(inputs, problem=bare), sol, SolveOptions(), fleet_catalog(fleet), [], [],
                         None, "")
    peaks = [max(after_reclaim(plan, inputs, [pool])[1].values()) for pool in spot_pools_used(plan, fleet)]
    assert max(peaks) > 1.0  # the check above could fail: a plan without spare capacity is caught


def test_reserved_nodes_and_a_commitment_are_billed() -> None:
    fleet = _fleet(**{"planner: {relative_gap: 0.01}": "planner: {relative_gap: 0.01, commitment_usd_per_hour: 1.0}",
                      "zone: a, price_book: aws-us-east-1-2026q1}":
                      "zone: a, price_book: aws-us-east-1-2026q1, tiers: {reserved_nodes: 1}}",
                      "    slo: {ttft_ms": "    max_spot_share: 0\n    slo: {ttft_ms"})
    plan = _plan(fleet)
    bill = plan.billing
    assert bill is not None
    reserved_rate = 0.80 * (1 - 0.349)  # the AWS book's 1-year reserved discount on L4
    assert bill.reserved_usd_per_hour == pytest.approx(8 * reserved_rate, rel=1e-6)
    assert bill.devices_by_tier["reserved"] == pytest.approx(min(8, sum(
        g.replicas * g.configuration.devices for g in plan.replica_groups)))
    assert bill.commitment_used_usd_per_hour <= 1.0 + 1e-9
    assert bill.total_usd_per_hour == pytest.approx(plan.cost_usd_per_hour + bill.reserved_usd_per_hour + 1.0,
                                                    abs=1e-3)
    assert any(f.constraint == "tiers" and "sunk" in f.message for f in plan.findings)


def test_tier_figures_a_book_lacks_are_named() -> None:
    text = TIERED.replace("{id: a10g-b-spot, device: a10g", "{id: a10g-b-spot, device: a100-80gb")
    problems = check_fleet(FleetSpec.model_validate(yaml.safe_load(text)))
    assert any(loc[:2] == ("pools", 3) and "interruption_probability" in why for loc, why in problems), problems
    with pytest.raises(FleetError, match="reserved_usd_per_device_hour"):
        parse_fleet(TIERED.replace("zone: a, price_book: aws-us-east-1-2026q1}",
                                   "zone: a, price_usd_per_device_hour: 0.9, tiers: {reserved_nodes: 1}}"),
                    "tiers.yaml")
