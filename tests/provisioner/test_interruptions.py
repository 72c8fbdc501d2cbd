"""Spot reclaims: which nodes count as reclaimed, the fleet without them, and the controller planning and placing
around them with the fewest moves (against the Kubernetes API double)."""

from __future__ import annotations

import math

import pytest
from kube_double import DoubleServer, make_plan

from planner.schema import BucketLoad, Configuration, FleetSpec, Plan, Pool, ReplicaGroup, Role
from provisioner.cluster import ObjectRef
from provisioner.controller import Reconciler
from provisioner.crds import API_VERSION
from provisioner.interruptions import fleet_without, reclaim_digest, reclaimed_nodes, watched_nodes
from provisioner.inventory import ClusterNode

SPOT = {"spot": {"discount": 0.5, "interruption_probability": 0.1}}


def _pool(pid: str, zone: str, nodes: int, spot: bool) -> dict:
    return {"device": "l4", "devices_per_node": 4, "max_nodes": nodes, "zone": zone,
            "price_usd_per_device_hour": 0.8, **({"tiers": SPOT} if spot else {}),
            "nodes": [{"name": f"{pid}-{i}", "zone": zone} for i in range(nodes)]}


def _fleet() -> FleetSpec:
    pools = [Pool.model_validate({"id": pid, **_pool(pid, zone, 2, spot)})
             for pid, zone, spot in (("od", "a", False), ("spot-a", "a", True), ("spot-b", "b", True))]
    return FleetSpec.model_validate({"name": "f", "pools": [p.model_dump() for p in pools], "services": []})


def _node(name: str, ready: bool = True, taints: tuple[tuple[str, str], ...] = ()) -> ClusterNode:
    return ClusterNode(name=name, labels={}, allocatable={"nvidia.com/gpu": "4"}, ready=ready, taints=taints)


def test_gone_unready_and_reclaim_tainted_spot_nodes_are_reclaimed() -> None:
    fleet = _fleet()
    assert set(watched_nodes(fleet)) == {"spot-a-0", "spot-a-1", "spot-b-0", "spot-b-1"}
    nodes = [_node("od-0", ready=False), _node("od-1"), _node("spot-a-0", ready=False),
             _node("spot-b-0", taints=(("karpenter.sh/disrupted", "NoSchedule"),)),
             _node("spot-b-1", taints=(("kubernetes.azure.com/scalesetpriority", "NoSchedule"),))]
    # spot-a-1 is gone; spot-b-1's standing spot taint is no reclaim; on-demand nodes are not watched
    assert reclaimed_nodes(fleet, nodes) == ("spot-a-0", "spot-a-1", "spot-b-0")
    reduced = fleet_without(fleet, ["spot-a-1"])
    pool = next(p for p in reduced.pools if p.id == "spot-a")
    assert pool.max_nodes == 1 and [n.state for n in pool.nodes or []] == ["ready", "failed"]
    assert reclaim_digest("abc123", []) == "abc123"
    assert reclaim_digest("abc123", ["x"]) != reclaim_digest("abc123", ["y"])


class SpreadPlanner:
    """One L4 replica per 2 req/s, on spot pools first (one replica per node), the rest on demand."""

    def __init__(self) -> None:
        self.fleets: list[FleetSpec] = []

    def __call__(self, fleet: FleetSpec, *, current: Plan | None = None) -> Plan:
        self.fleets.append(fleet)
        groups = []
        for s in fleet.services:
            need = max(s.min_replicas, math.ceil(s.traffic.rate_rps / 2))
            b = s.traffic.length_buckets()[0]
            for pool in sorted(fleet.pools, key=lambda p: (not p.is_spot, p.id)):
                n = min(need, pool.max_nodes)
                if n <= 0:
                    continue
                need -= n
                groups.append(ReplicaGroup(
                    service=s.id, pool=pool.id, replicas=n, cost_usd_per_hour=n, expected_watts=70.0 * n,
                    utilisation=0.5, configuration=Configuration(device="l4", tp=4, role=Role.UNIFIED),
                    load=[BucketLoad(input_tokens=b.input_tokens, output_tokens=b.output_tokens, prefill_share=1,
                                     decode_share=1)]))
        return make_plan(f"plan-{len(self.fleets)}", groups).model_copy(update={"fleet": fleet.name})


def _cr(kind: str, name: str, spec: dict, namespace: str = "") -> dict:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


def _k8s_node(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {}},
            "spec": {}, "status": {"allocatable": {"nvidia.com/gpu": "4"},
                                   "conditions": [{"type": "Ready", "status": "True"}]}}


@pytest.mark.integration
def test_the_controller_plans_around_reclaimed_spot_nodes_with_the_fewest_moves(api: DoubleServer) -> None:
    client = api.client()
    for pid, zone, spot in (("od", "a", False), ("spot-a", "a", True), ("spot-b", "b", True)):
        client.create(_cr("GPUPool", pid, _pool(pid, zone, 2, spot)))
        for i in range(2):
            client.create(_k8s_node(f"{pid}-{i}"))
    client.create(_cr("LLMService", "chat", {"model": "llama-3-8b", "traffic": {"rate_rps": 6, "buckets": [
        {"input_tokens": 512, "output_tokens": 128, "share": 1.0}]}, "slo": {"ttft_ms": 1000, "tpot_ms": 60}},
        "assistants"))
    client.create(_cr("FleetPlan", "medley", {"mode": "auto"}))
    planner = SpreadPlanner()
    rec = Reconciler(client, planner=planner)
    first = rec.reconcile("medley")
    assert first is not None and first.plan is not None and len(planner.fleets) == 1
    assert {g.pool: g.replicas for g in first.plan.replica_groups} == {"spot-a": 2, "spot-b": 1}

    client.delete(ObjectRef("Node", "", "spot-a-1"))  # the cloud reclaimed it
    second = rec.reconcile("medley")
    assert second is not None and second.plan is not None and second.replanned
    reduced = planner.fleets[-1]
    assert next(p for p in reduced.pools if p.id == "spot-a").max_nodes == 1
    nodes = {g.pool: sorted(set(g.nodes)) for g in second.plan.replica_groups}
    assert {g.pool: g.replicas for g in second.plan.replica_groups} == {"spot-a": 1, "spot-b": 2}
    assert nodes == {"spot-a": ["spot-a-0"], "spot-b": ["spot-b-0", "spot-b-1"]}  # placed on the nodes left

    calls = len(planner.fleets)
    third = rec.reconcile("medley")  # the same loss again: the plan around it is kept
    assert third is not None and not third.replanned and len(planner.fleets) == calls

    client.patch(ObjectRef("Node", "", "spot-b-0"), {"spec": {"taints": [
        {"key": "aws-node-termination-handler/spot-itn", "effect": "NoSchedule"}]}})  # a reclaim notice
    fourth = rec.reconcile("medley")
    assert fourth is not None and fourth.replanned and fourth.plan is not None
    after = {g.pool: sorted(set(g.nodes)) for g in fourth.plan.replica_groups}
    # the replicas whose nodes survive keep them; only the reclaimed one starts anew, on demand
    assert after == {"spot-a": ["spot-a-0"], "spot-b": ["spot-b-1"], "od": ["od-0"]} or \
        after == {"spot-a": ["spot-a-0"], "spot-b": ["spot-b-1"], "od": ["od-1"]}
