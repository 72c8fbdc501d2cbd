"""Capacity annotations read the bucket mix the plan stores (the fleet's buckets for older plans); a
trace-file service without stored demand is refused with its name, never weighed as if buckets were alike."""

from __future__ import annotations

import pytest
from kube_double import make_fleet, make_plan

from planner.demand import MissingDemand
from planner.schema import BucketLoad, Configuration, FleetSpec, LengthBucket, ReplicaGroup, ServiceDemand, Traffic
from provisioner.capacity import capacity_per_replica_rps, served_rps
from provisioner.render import RenderError, render_plan

SHORT, LONG = (512, 128), (4096, 256)
MIX = [LengthBucket(input_tokens=SHORT[0], output_tokens=SHORT[1], share=0.8),
       LengthBucket(input_tokens=LONG[0], output_tokens=LONG[1], share=0.2)]


def short_group() -> ReplicaGroup:
    """Two chat replicas at 80% serving every short request and half of the long ones."""
    return ReplicaGroup(service="chat", pool="h100-a", replicas=2, cost_usd_per_hour=1.0, expected_watts=100,
                        utilisation=0.8, configuration=Configuration(device="h100-sxm", tp=1),
                        load=[BucketLoad(input_tokens=SHORT[0], output_tokens=SHORT[1], prefill_share=1.0,
                                         decode_share=1.0),
                              BucketLoad(input_tokens=LONG[0], output_tokens=LONG[1], prefill_share=0.5,
                                         decode_share=0.5)])


def with_chat_traffic(traffic: Traffic) -> FleetSpec:
    fleet = make_fleet()
    chat = fleet.services[0].model_copy(update={"traffic": traffic})
    return fleet.model_copy(update={"services": [chat, *fleet.services[1:]]})


def test_served_and_capacity_follow_the_stored_mix() -> None:
    fleet = with_chat_traffic(Traffic(rate_rps=10.0, trace_file="elsewhere/chat.csv"))
    plan = make_plan("p", [short_group()]).model_copy(update={
        "demand": [ServiceDemand(service="chat", rate_rps=10.0, buckets=MIX)]})
    chat = fleet.services[0]
    served = served_rps(plan.replica_groups[0], chat, plan)
    assert served == {"prefill": pytest.approx(10 * (0.8 + 0.2 * 0.5)), "decode": pytest.approx(9.0)}
    per_replica = capacity_per_replica_rps(plan.replica_groups[0], chat, plan)
    assert per_replica["decode"] == pytest.approx(9.0 / (2 * 0.8))
    assert render_plan(plan, fleet)  # renders without the trace file


def test_plans_without_demand_use_the_fleet_buckets() -> None:
    fleet = with_chat_traffic(Traffic(rate_rps=10.0, buckets=MIX))
    old = make_plan("p", [short_group()])
    new = old.model_copy(update={"demand": [ServiceDemand(service="chat", rate_rps=10.0, buckets=MIX)]})
    chat = fleet.services[0]
    assert served_rps(old.replica_groups[0], chat, old) == served_rps(new.replica_groups[0], chat, new)


def test_trace_file_service_without_stored_demand_is_refused() -> None:
    fleet = with_chat_traffic(Traffic(rate_rps=10.0, trace_file="chat.csv"))
    plan = make_plan("p", [short_group()])
    with pytest.raises(MissingDemand, match=r"services\[chat\]"):
        served_rps(plan.replica_groups[0], fleet.services[0], plan)
    with pytest.raises(RenderError, match=r"services\[chat\]\.traffic\.trace_file"):
        render_plan(plan, fleet)
