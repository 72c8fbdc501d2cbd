"""Inventory: Nodes → pools with node lists (device from labels, GPUs, zone, rack, cordons, taints)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from planner.io.fleetfile import parse_fleet
from planner.place.inventory import fleet_inventory
from provisioner.inventory import ClusterNode, fill_fleet, pdb_version_for, pools_from_nodes
from provisioner.workloads.nodes import DeviceLabel


def _node(name: str, product: str | None, zone: str | None, gpus: int = 8, *, rack: str | None = None,
          ready: bool = True, unschedulable: bool = False, taints: list[dict[str, str]] | None = None,
          extra: dict[str, str] | None = None) -> dict[str, Any]:
    labels = {"kubernetes.io/hostname": name, **(extra or {})}
    if product:
        labels["nvidia.com/gpu.product"] = product
    if zone:
        labels["topology.kubernetes.io/zone"] = zone
    if rack:
        labels["topology.kubernetes.io/rack"] = rack
    alloc = {"cpu": "96", "memory": "1Ti", **({"nvidia.com/gpu": str(gpus)} if gpus else {})}
    return {"metadata": {"name": name, "labels": labels},
            "spec": {"unschedulable": unschedulable, "taints": taints or []},
            "status": {"allocatable": alloc, "conditions": [{"type": "Ready", "status": str(ready)}]}}


NODES = [ClusterNode.of(n) for n in [
    _node("h100-1", "NVIDIA-H100-80GB-HBM3", "zone-a", rack="r1"),
    _node("h100-2", "NVIDIA-H100-80GB-HBM3", "zone-a", rack="r2", unschedulable=True),
    _node("h100-3", "NVIDIA-H100-80GB-HBM3", "zone-a", gpus=4),
    _node("l4-1", "NVIDIA-L4", "zone-b", taints=[{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]),
    _node("l4-2", "NVIDIA-L4", "zone-b", taints=[{"key": "dedicated", "effect": "NoSchedule"}]),
    _node("l4-3", "NVIDIA-L4", "zone-b", ready=False),
    _node("cpu-1", None, "zone-a", gpus=0),
    _node("mystery", "NVIDIA-B200", "zone-a"),
]]


def test_nodes_become_pools_by_device_and_zone_with_states_and_racks():
    result = pools_from_nodes(NODES)
    pools = {p.id: p for p in result.pools}
    assert set(pools) == {"h100-sxm-zone-a", "l4-zone-b"}
    h100 = pools["h100-sxm-zone-a"]
    assert (h100.device, h100.zone, h100.devices_per_node, h100.max_nodes) == ("h100-sxm", "zone-a", 8, 2)
    assert [(n.name, n.state, n.rack, n.devices) for n in h100.nodes or []] == [
        ("h100-1", "ready", "r1", None), ("h100-2", "cordoned", "r2", None), ("h100-3", "ready", None, 4)]
    l4 = {n.name: n.state for n in pools["l4-zone-b"].nodes or []}
    # the GPU taint is tolerated by every rendered pod; another hard taint is not; NotReady is failed
    assert l4 == {"l4-1": "ready", "l4-2": "cordoned", "l4-3": "failed"}
    assert pools["l4-zone-b"].max_nodes == 1
    assert any("mystery" in n and "no known device label" in n for n in result.notes)
    assert any("l4-2" in n and "dedicated:NoSchedule" in n for n in result.notes)
    tolerated = {n.name: n.state for n in pools_from_nodes(NODES, tolerated=["dedicated"]).pools[1].nodes or []}
    assert tolerated["l4-2"] == "ready"
    more = pools_from_nodes(NODES, device_labels={"b200": DeviceLabel(key="nvidia.com/gpu.product",
                                                                       values=("NVIDIA-B200",))})
    assert "b200-zone-a" in {p.id for p in more.pools}


FLEET = """
apiVersion: medley.dev/v1alpha1
kind: Fleet
name: inv
pools:
  - {id: h100-a, device: h100-sxm, devices_per_node: 8, max_nodes: 5, zone: zone-a, price_usd_per_device_hour: 10,
     node_selector: {node.kubernetes.io/instance-type: a3}}
  - {id: l4-b, device: l4, devices_per_node: 8, max_nodes: 5, zone: zone-b, price_usd_per_device_hour: 1}
  - {id: a100-b, device: a100-80gb, devices_per_node: 8, max_nodes: 2, zone: zone-b, price_usd_per_device_hour: 4}
services:
  - id: chat
    model: llama-3-8b
    traffic: {rate_rps: 1, buckets: [{input_tokens: 256, output_tokens: 64, share: 1.0}]}
    slo: {ttft_ms: 1000, tpot_ms: 100}
"""


def test_fill_fleet_gives_each_pool_its_matching_nodes_and_placement_reads_them():
    raw = yaml.safe_load(FLEET)
    fleet = parse_fleet(FLEET, "inv.yaml")
    nodes = [ClusterNode.of(_node("h100-x", "NVIDIA-H100-80GB-HBM3", "zone-a", extra={
                 "node.kubernetes.io/instance-type": "a3"})),
             ClusterNode.of(_node("h100-other", "NVIDIA-H100-80GB-HBM3", "zone-a")),  # not the pool's selector
             ClusterNode.of(_node("h100-b", "NVIDIA-H100-80GB-HBM3", "zone-b", extra={
                 "node.kubernetes.io/instance-type": "a3"})),  # not the pool's zone
             *[n for n in NODES if n.name.startswith("l4")]]
    result = fill_fleet(raw, fleet, nodes)
    assert result.fleet is not None
    filled = parse_fleet(yaml.safe_dump(result.fleet), "filled.yaml")
    pools = {p.id: p for p in filled.pools}
    assert [n.name for n in pools["h100-a"].nodes or []] == ["h100-x"] and pools["h100-a"].max_nodes == 1
    assert [n.name for n in pools["l4-b"].nodes or []] == ["l4-1", "l4-2", "l4-3"] and pools["l4-b"].max_nodes == 1
    assert pools["a100-b"].nodes == [] and pools["a100-b"].max_nodes == 0
    assert pools["h100-a"].price_usd_per_device_hour == 10  # everything else of the fleet file stays
    assert any("h100-other" in n and "no pool" in n for n in result.notes)
    assert any("h100-b" in n for n in result.notes)
    assert any("pool a100-b: no node" in n for n in result.notes)
    usable = {n.name for n in fleet_inventory(filled).nodes if n.usable}
    assert usable == {"h100-x", "l4-1"}  # placement uses ready nodes only


@pytest.mark.parametrize(("version", "pdb"), [("1.20", "policy/v1beta1"), ("v1.21.3", "policy/v1"),
                                              ("1.33", "policy/v1")])
def test_pdb_version_by_kubernetes_version(version: str, pdb: str):
    assert pdb_version_for(version) == pdb


def test_bad_kubernetes_version_is_one_line():
    with pytest.raises(ValueError, match="--kube-version: 'latest' is not MAJOR.MINOR"):
        pdb_version_for("latest")
