"""Placement reads the bucket mix the plan stores: the same capacities wherever the process runs, the
fleet's buckets for plans stored before demand existed, and a clear refusal for a trace-file service."""

from __future__ import annotations

from pathlib import Path

import pytest

from planner.catalog import builtin_catalog
from planner.demand import MissingDemand
from planner.io.traces import bucket_trace
from planner.place import phase_capacity, place
from planner.schema import (
    SLO,
    BucketLoad,
    Configuration,
    FleetSpec,
    LengthBucket,
    Node,
    Plan,
    Pool,
    ReplicaGroup,
    Service,
    ServiceDemand,
    SolverReport,
    Traffic,
)

CAT = builtin_catalog()
SHORT, LONG = (100, 10), (3000, 200)


def write_trace(folder: Path) -> Path:
    """Nine short requests to one long one."""
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    for i in range(10):
        inp, out = LONG if i == 9 else SHORT
        rows.append(f"2023-11-16 18:15:{10 + i:02d}.0000000,{inp},{out}")
    (folder / "traces").mkdir(parents=True, exist_ok=True)
    path = folder / "traces" / "chat.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def fleet(traffic: Traffic) -> FleetSpec:
    nodes = [Node(name=f"n{i}", rack=f"r{i}") for i in range(4)]
    return FleetSpec(pools=[Pool(id="gpu", device="h100-sxm", max_nodes=4, nodes=nodes)],
                     services=[Service(id="chat", model="llama-2-7b", traffic=traffic,
                                       slo=SLO(ttft_ms=500, tpot_ms=80))])


def group(bucket: tuple[int, int]) -> ReplicaGroup:
    """Two TP2 replicas at half utilisation serving all of one bucket."""
    return ReplicaGroup(service="chat", pool="gpu", replicas=2, cost_usd_per_hour=1.0, expected_watts=0.0,
                        utilisation=0.5, configuration=Configuration(device="h100-sxm", tp=2),
                        load=[BucketLoad(input_tokens=bucket[0], output_tokens=bucket[1], prefill_share=1.0,
                                         decode_share=1.0)])


def plan(demand: list[LengthBucket] | None) -> Plan:
    stored = [] if demand is None else [ServiceDemand(service="chat", rate_rps=1.0, buckets=demand)]
    return Plan(fleet="t", replica_groups=[group(SHORT), group(LONG)], cost_usd_per_hour=0.0,
                solver=SolverReport(backend="t", status="optimal"), demand=stored)


def test_same_capacities_from_two_working_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "fleet"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(parents=True)
    buckets = bucket_trace(write_trace(home)).buckets  # what the planner stored, read once at the edge
    f = fleet(Traffic(rate_rps=1.0, trace_file="traces/chat.csv"))
    p = plan(buckets)
    seen = []
    for folder in (home, elsewhere):  # the relative trace resolves only in the first
        monkeypatch.chdir(folder)
        res = place(p, f, CAT, tolerate="node", workers=1)
        seen.append((phase_capacity(p, f), res.status, res.tolerance_losses, res.explanations))
    assert seen[0] == seen[1]
    caps = seen[0][0][("chat", False)]
    headroom = f.planner.headroom
    # the short bucket carries 90% of the requests: its replicas are worth nine times the long bucket's
    assert caps == {0: pytest.approx(headroom * 0.9), 1: pytest.approx(headroom * 0.1)}


def test_plans_without_demand_fall_back_to_the_fleet_buckets() -> None:
    buckets = [LengthBucket(input_tokens=SHORT[0], output_tokens=SHORT[1], share=0.9),
               LengthBucket(input_tokens=LONG[0], output_tokens=LONG[1], share=0.1)]
    f = fleet(Traffic(rate_rps=1.0, buckets=buckets))
    stored = phase_capacity(plan(buckets), f)
    assert phase_capacity(plan(None), f) == stored
    assert stored[("chat", False)][0] == pytest.approx(9 * stored[("chat", False)][1])
    # the stored demand wins over the fleet's buckets when both are there
    even = [b.model_copy(update={"share": 0.5}) for b in buckets]
    assert phase_capacity(plan(even), f)[("chat", False)][0] == pytest.approx(stored[("chat", False)][0] / 0.9 * 0.5)


def test_trace_file_service_without_stored_demand_is_refused_by_name(tmp_path: Path) -> None:
    f = fleet(Traffic(rate_rps=1.0, trace_file=str(write_trace(tmp_path))))
    with pytest.raises(MissingDemand, match=r"services\[chat\]\.traffic\.trace_file: the plan stores no demand"):
        phase_capacity(plan(None), f)
    with pytest.raises(MissingDemand, match="chat"):
        place(plan(None), f, CAT, workers=1)
