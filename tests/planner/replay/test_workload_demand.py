"""The replay's workload: lengths from the plan's stored demand, traces handed in already loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from planner.demand import MissingDemand
from planner.io.traces import load_trace
from planner.replay import TraceSource, build_workload
from planner.schema import (
    SLO,
    Configuration,
    FleetSpec,
    LengthBucket,
    Plan,
    Pool,
    ReplicaGroup,
    Service,
    ServiceDemand,
    SolverReport,
    Traffic,
)
from planner.tolerance import verify_plan

FLEET_BUCKETS = [LengthBucket(input_tokens=512, output_tokens=64, share=1.0)]
STORED = [LengthBucket(input_tokens=200, output_tokens=20, share=0.5),
          LengthBucket(input_tokens=900, output_tokens=90, share=0.5)]
POISSON = TraceSource(kind="poisson", duration_s=200, seed=5)


def fleet(traffic: Traffic) -> FleetSpec:
    return FleetSpec(pools=[Pool(id="a100", device="a100-80gb", max_nodes=2)],
                     services=[Service(id="chat", model="llama-2-7b", traffic=traffic,
                                       slo=SLO(ttft_ms=2000, tpot_ms=200))])


def plan(demand: list[LengthBucket] | None = None) -> Plan:
    return Plan(fleet="t", cost_usd_per_hour=3.67, solver=SolverReport(backend="t", status="optimal"),
                replica_groups=[ReplicaGroup(service="chat", pool="a100", replicas=2, expected_watts=0.0,
                                             cost_usd_per_hour=3.67,
                                             configuration=Configuration(device="a100-80gb", tp=1))],
                demand=[] if demand is None else [ServiceDemand(service="chat", rate_rps=2.0, buckets=demand)])


def lengths(arr_in: np.ndarray, arr_out: np.ndarray) -> set[tuple[int, int]]:
    return {(int(i), int(o)) for i, o in zip(arr_in.tolist(), arr_out.tolist(), strict=True)}


def test_synthetic_lengths_come_from_the_stored_demand() -> None:
    f = fleet(Traffic(rate_rps=2.0, buckets=FLEET_BUCKETS))
    stored = build_workload(f, POISSON, plan=plan(STORED))["chat"]
    assert lengths(stored.input_tokens, stored.output_tokens) == {(200, 20), (900, 90)}
    old = build_workload(f, POISSON, plan=plan())["chat"]  # stored before demand: the fleet's buckets
    assert lengths(old.input_tokens, old.output_tokens) == {(512, 64)}
    assert np.array_equal(old.arrival_s, stored.arrival_s)  # same process, only the lengths differ


def test_trace_file_service_needs_its_trace_or_stored_demand(tmp_path: Path) -> None:
    path = tmp_path / "chat.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46,333,33\n"
                    "2023-11-16 18:15:47,444,44\n", encoding="utf-8")
    f = fleet(Traffic(rate_rps=2.0, trace_file="chat.csv"))
    with pytest.raises(MissingDemand, match=r"services\[chat\]"):
        build_workload(f, POISSON, plan=plan())
    own = build_workload(f, POISSON, plan=plan(), service_traces={"chat": load_trace(path)})["chat"]
    assert lengths(own.input_tokens, own.output_tokens) == {(333, 33), (444, 44)}
    with pytest.raises(ValueError, match="trace: a file source needs its trace loaded"):
        build_workload(f, TraceSource(kind="file", path=path))
    # the edge loads the service's trace relative to the fleet file's folder
    report = verify_plan(plan(), f, TraceSource(kind="poisson", duration_s=30, seed=1), tmp_path)
    assert report.services[0].requests > 0 and report.services[0].completed == report.services[0].requests
