"""What a cluster offers: its GPU nodes as pools with node lists, and the API versions it serves.

``medley inventory`` reads Nodes and writes pools the planner and placement can use, so that a plan made with
``--place`` pins replicas to nodes that exist:

* a node's device comes from its labels (``workloads.nodes.DEVICE_LABELS``: GPU feature discovery's
  ``nvidia.com/gpu.product``, AMD's ``amd.com/gpu.device-id``; ``RenderOptions.device_labels`` adds more),
  its device count from its allocatable extended resource (``nvidia.com/gpu``, ``amd.com/gpu``,
  ``habana.ai/gaudi``), its zone and region from ``topology.kubernetes.io/zone``/``region``, its rack from the
  first of ``rack_labels`` it carries;
* its state: ``failed`` when its Ready condition is not True, ``cordoned`` when it is unschedulable or carries
  a NoSchedule/NoExecute taint the rendered pods do not tolerate (the device resource's own key, and
  ``tolerated``), else ``ready``.

Without a fleet, nodes of one device, zone and region make one pool ``<device>-<zone>`` (prices are left to
the user). With a fleet, each GPU node joins the first of the fleet's pools whose device, zone, region and
node selector it matches (the same test the rendered node affinity makes); a pool's ``max_nodes`` becomes at
most its ready nodes. Nodes no pool takes, and pools no node matches, are reported.

The reading lives here, at the edge (the planner never imports the Kubernetes client); ``pools_from_nodes``
and ``fill_fleet`` are pure.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from planner.schema import FleetSpec, Node, Pool
from provisioner.workloads.labels import dns_label
from provisioner.workloads.nodes import (
    REGION_LABEL,
    UNSET,
    ZONE_LABEL,
    DeviceLabel,
    NodeSelectionError,
    device_of_node,
    pool_matches_node,
)

GPU_RESOURCES = ("nvidia.com/gpu", "amd.com/gpu", "habana.ai/gaudi")
RACK_LABELS = ("topology.kubernetes.io/rack", "rack")
HARD_EFFECTS = ("NoSchedule", "NoExecute")


@dataclass(frozen=True)
class ClusterNode:
    """What inventory needs of one Node."""

    name: str
    labels: Mapping[str, str]
    allocatable: Mapping[str, str]
    unschedulable: bool = False
    taints: tuple[tuple[str, str], ...] = ()  # (key, effect)
    ready: bool = True

    @staticmethod
    def of(obj: Mapping[str, Any]) -> ClusterNode:
        """From a Node object as the API serves it (JSON)."""
        meta, spec, status = obj.get("metadata", {}), obj.get("spec") or {}, obj.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        return ClusterNode(name=meta["name"], labels=dict(meta.get("labels") or {}),
                           allocatable=dict(status.get("allocatable") or {}),
                           unschedulable=bool(spec.get("unschedulable")),
                           taints=tuple((t.get("key", ""), t.get("effect", "")) for t in spec.get("taints") or []),
                           ready=ready)

    def devices(self, resources: Sequence[str] = GPU_RESOURCES) -> tuple[str, int]:
        """(extended resource, allocatable count) of its accelerators; ("", 0) when it has none."""
        for resource in resources:
            try:
                count = int(str(self.allocatable.get(resource, "0")))
            except ValueError:
                continue
            if count > 0:
                return resource, count
        return "", 0

    def state(self, tolerated: Iterable[str] = ()) -> tuple[str, str]:
        """(``ready``|``cordoned``|``failed``, why) as placement should treat the node."""
        if not self.ready:
            return "failed", "not Ready"
        if self.unschedulable:
            return "cordoned", "cordoned"
        resource, _ = self.devices()
        allowed = {resource, *tolerated}
        for key, effect in self.taints:
            if effect in HARD_EFFECTS and key not in allowed:
                return "cordoned", f"taint {key}:{effect} is not tolerated"
        return "ready", ""

    def rack(self, rack_labels: Sequence[str]) -> str | None:
        return next((self.labels[k] for k in rack_labels if k in self.labels), None)


@dataclass
class InventoryResult:
    """Pools (or a fleet) with node lists, and one line per node or pool worth a look."""

    pools: list[Pool] = field(default_factory=list)
    fleet: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _node(n: ClusterNode, devices_per_node: int, rack_labels: Sequence[str], tolerated: Iterable[str]) -> Node:
    _, count = n.devices()
    state, _ = n.state(tolerated)
    return Node(name=n.name, zone=n.labels.get(ZONE_LABEL), rack=n.rack(rack_labels),
                devices=count if count != devices_per_node else None, state=state)


def _notes(nodes: Iterable[ClusterNode], tolerated: Iterable[str]) -> list[str]:
    out = []
    for n in nodes:
        state, why = n.state(tolerated)
        if state != "ready":
            out.append(f"node {n.name}: {state} ({why}); placement will not use it")
    return out


def pools_from_nodes(nodes: Iterable[ClusterNode], *, device_labels: Mapping[str, DeviceLabel] | None = None,
                     rack_labels: Sequence[str] = RACK_LABELS, tolerated: Iterable[str] = ()) -> InventoryResult:
    """GPU nodes grouped into pools by device, zone and region (without prices)."""
    tolerated = tuple(tolerated)
    groups: dict[tuple[str, str, str], list[ClusterNode]] = {}
    result = InventoryResult()
    for n in sorted(nodes, key=lambda n: n.name):
        resource, count = n.devices()
        if not count:
            continue
        device = device_of_node(n.labels, device_labels)
        if device is None:
            result.notes.append(f"node {n.name}: {count} {resource} but no known device label "
                                "(add it with RenderOptions.device_labels)")
            continue
        key = (device, n.labels.get(ZONE_LABEL, UNSET), n.labels.get(REGION_LABEL, UNSET))
        groups.setdefault(key, []).append(n)
    for (device, zone, region), members in sorted(groups.items()):
        per_node = max(n.devices()[1] for n in members)
        ready = sum(1 for n in members if n.state(tolerated)[0] == "ready")
        result.pools.append(Pool(
            id=dns_label(f"{device}-{zone}" if zone != UNSET else device), device=device, devices_per_node=per_node,
            max_nodes=ready, zone=zone, region=region,
            nodes=[_node(n, per_node, rack_labels, tolerated) for n in members]))
        result.notes.extend(_notes(members, tolerated))
    return result


def _matches(pool: Pool, node: ClusterNode, device_labels: Mapping[str, DeviceLabel] | None) -> bool:
    try:
        return pool_matches_node(pool, node.labels, device_labels)
    except NodeSelectionError:  # a device with no label: the pool's own selector decides (checked below)
        return bool(pool.node_selector) and all(node.labels.get(k) == v for k, v in pool.node_selector.items())


def fill_fleet(raw: Mapping[str, Any], fleet: FleetSpec, nodes: Iterable[ClusterNode], *,
               device_labels: Mapping[str, DeviceLabel] | None = None, rack_labels: Sequence[str] = RACK_LABELS,
               tolerated: Iterable[str] = ()) -> InventoryResult:
    """The fleet file (``raw``, as read) with each pool's ``nodes`` from the cluster and ``max_nodes`` capped."""
    tolerated = tuple(tolerated)
    taken: dict[str, list[ClusterNode]] = {p.id: [] for p in fleet.pools}
    result = InventoryResult()
    for n in sorted(nodes, key=lambda n: n.name):
        resource, count = n.devices()
        if not count:
            continue
        pool = next((p for p in fleet.pools if _matches(p, n, device_labels)), None)
        if pool is None:
            device = device_of_node(n.labels, device_labels) or f"unknown {resource}"
            result.notes.append(f"node {n.name} ({device}, zone {n.labels.get(ZONE_LABEL, '-')}): "
                                "no pool of the fleet matches it")
            continue
        taken[pool.id].append(n)
    out = copy.deepcopy(dict(raw))
    for pool, pool_raw in zip(fleet.pools, out.get("pools", []), strict=True):
        members = taken[pool.id]
        ready = sum(1 for n in members if n.state(tolerated)[0] == "ready")
        pool_raw["nodes"] = [_node(n, pool.devices_per_node, rack_labels, tolerated).model_dump(exclude_none=True)
                             for n in members]
        pool_raw["max_nodes"] = min(pool.max_nodes, ready)
        if not members:
            result.notes.append(f"pool {pool.id}: no node of the cluster matches it (device {pool.device}, "
                                f"zone {pool.zone}); it gets max_nodes 0")
        result.notes.extend(_notes(members, tolerated))
    result.fleet = out
    return result


# ---------------------------------------------------------------------------------------------- the edge


def read_nodes(api: Any, label_selector: str = "") -> list[ClusterNode]:
    """Every Node (matching ``label_selector``) through a ``kubernetes.client.ApiClient``."""
    from kubernetes import client

    listed = client.CoreV1Api(api).list_node(label_selector=label_selector)
    return [ClusterNode.of(api.sanitize_for_serialization(n)) for n in listed.items]


def served_pdb_version(api: Any) -> str:
    """``policy/v1`` where the cluster serves it (Kubernetes ≥ 1.21), else ``policy/v1beta1``."""
    from kubernetes import client

    group = client.PolicyApi(api).get_api_group()
    versions = {v.group_version for v in group.versions or []}
    return "policy/v1" if "policy/v1" in versions else "policy/v1beta1"


def pdb_version_for(kube_version: str) -> str:
    """The PodDisruptionBudget version of a Kubernetes ``MAJOR.MINOR`` (policy/v1 from 1.21)."""
    try:
        major, minor = (int(p) for p in kube_version.lstrip("v").split(".")[:2])
    except ValueError:
        raise ValueError(f"--kube-version: {kube_version!r} is not MAJOR.MINOR (e.g. 1.20)") from None
    return "policy/v1" if (major, minor) >= (1, 21) else "policy/v1beta1"
