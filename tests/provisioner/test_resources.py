"""Custom resources → FleetSpec: shared resources all-or-nothing, one bad LLMService kept to itself."""

from __future__ import annotations

import pytest
from kube_double import group, make_plan

from provisioner.resources import (
    SpecError,
    fleet_inputs,
    frozen_groups,
    plan_is_fresh,
    reserve_pools,
    selector_of,
    with_frozen,
)


def _cr(kind: str, name: str, spec: dict, namespace: str = "") -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"kind": kind, "metadata": meta, "spec": spec}


POOLS = [_cr("GPUPool", "h100-a", {"device": "h100-sxm", "devices_per_node": 8, "max_nodes": 4,
                                   "price_usd_per_device_hour": 10}),
         _cr("GPUPool", "l4-b", {"device": "l4", "devices_per_node": 4, "max_nodes": 8,
                                 "price_usd_per_device_hour": 1})]
FLEETPLAN = _cr("FleetPlan", "medley", {"mode": "auto"})


def _service(name: str, namespace: str, **spec: object) -> dict:
    base = {"model": "llama-3-8b", "traffic": {"rate_rps": 2, "buckets": [
        {"input_tokens": 512, "output_tokens": 128, "share": 1.0}]}, "slo": {"ttft_ms": 1000, "tpot_ms": 60}}
    return _cr("LLMService", name, {**base, **spec}, namespace)


def test_invalid_services_are_left_out_with_the_reason_and_the_rest_is_planned():
    services = [_service("chat", "assistants"), _service("code", "devtools", model="no-such-model"),
                _service("rag", "devtools", traffic={"rate_rps": -1, "buckets": []}),
                _service("sum", "writers", allowed_pools=["nowhere"])]
    inputs = fleet_inputs(FLEETPLAN, POOLS, services, [])
    assert [s.id for s in inputs.fleet.services] == ["chat"]
    assert inputs.invalid["code"] == "LLMService/devtools/code: spec.model: unknown model 'no-such-model'"
    assert inputs.invalid["rag"].startswith("LLMService/devtools/rag: spec.traffic.rate_rps")
    assert inputs.invalid["sum"].startswith("LLMService/writers/sum: spec.allowed_pools: unknown pool 'nowhere'")
    assert inputs.namespaces == {"chat": "assistants", "code": "devtools", "rag": "devtools", "sum": "writers"}


def test_an_invalid_pool_or_planner_option_invalidates_the_whole_fleet():
    with pytest.raises(SpecError, match="GPUPool/l4-b: spec.max_nodes") as bad_pool:
        fleet_inputs(FLEETPLAN, [POOLS[0], _cr("GPUPool", "l4-b", {"device": "l4", "max_nodes": -1})], [], [])
    assert bad_pool.value.where == "GPUPool/l4-b"
    with pytest.raises(SpecError, match="GPUPool/h100-b: spec.price_usd_per_device_hour: give a price"):
        fleet_inputs(FLEETPLAN, [_cr("GPUPool", "h100-b", {"device": "h100-sxm", "max_nodes": 1})], [], [])
    with pytest.raises(SpecError, match="FleetPlan/medley: spec.planner.headroom"):
        fleet_inputs(_cr("FleetPlan", "medley", {"mode": "auto", "planner": {"headroom": 7}}), POOLS, [], [])


def test_frozen_groups_keep_their_nodes_out_of_the_pools_and_stay_in_the_plan():
    current = make_plan("p1", [group("chat", "h100-a", "h100-sxm", 1, 2), group("code", "h100-a", "h100-sxm", 8, 2)])
    frozen = frozen_groups(current, {"code": "LLMService/devtools/code: spec.model: unknown"})
    assert [g.service for g in frozen] == ["code"]
    fleet = fleet_inputs(FLEETPLAN, POOLS, [_service("chat", "assistants")], []).fleet
    reserved = reserve_pools(fleet, frozen)
    assert {p.id: p.max_nodes for p in reserved.pools} == {"h100-a": 2, "l4-b": 8}  # 16 devices: 2 whole nodes
    new = make_plan("p2", [group("chat", "l4-b", "l4", 1, 3)])
    merged = with_frozen(new, frozen)
    assert [g.service for g in merged.replica_groups] == ["chat", "code"]
    assert merged.cost_usd_per_hour == new.cost_usd_per_hour + 1.0
    assert plan_is_fresh(merged, fleet, {"code"}) and not plan_is_fresh(merged, fleet)


def test_the_fleetplan_selector_names_its_resources():
    assert selector_of(FLEETPLAN) == ""
    scoped = _cr("FleetPlan", "f", {"mode": "auto", "selector": {"matchLabels": {"team": "a", "env": "prod"}}})
    assert selector_of(scoped) == "env=prod,team=a"


def test_the_controller_reads_no_file_a_resource_names(tmp_path):
    trace = tmp_path / "chat.csv"
    trace.write_text("ContextTokens,GeneratedTokens\n100,20\n")
    services = [_service("chat", "assistants"),
                *(_service(f"t{i}", "tenants", traffic={"rate_rps": 1, "trace_file": path})
                  for i, path in enumerate([str(trace), "/etc/passwd", "/dev/zero", "/nonexistent.csv"]))]
    inputs = fleet_inputs(FLEETPLAN, POOLS, services, [])
    assert [s.id for s in inputs.fleet.services] == ["chat"]
    reasons = {inputs.invalid[f"t{i}"].split(": ", 1)[1] for i in range(4)}
    assert reasons == {"spec.traffic: the controller reads no files: give traffic.buckets (POST the trace to the "
                       "API's /v1/traces for them)"}
    with pytest.raises(SpecError, match="reads no files"):
        fleet_inputs(_cr("FleetPlan", "medley", {"mode": "auto", "planner": {"perf_profile": str(trace)}}),
                     POOLS, services[:1], [])
