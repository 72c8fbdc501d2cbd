"""Plans land on the planned devices: the shipped examples planned by the real planner, rendered, applied to the
real control plane (kube-apiserver, controller-manager and scheduler v1.20.2) with fake GPU nodes of five
device types in two zones carrying GPU-feature-discovery labels, and every pod checked on the node the real
scheduler bound it to.

* Unplaced plans: each pod's node has the group's device (``nvidia.com/gpu.product``) and its pool's zone.
* ``medley inventory`` of the cluster (the fleet's pools filled with its nodes), ``plan --place`` on that, the
  render: each pod is on exactly the node placement chose.

The control plane has no LeaderWorkerSet controller (its CRD is installed from the vendored copy, so the API
server validates the objects): the test creates each LeaderWorkerSet's pods from its leader and worker
templates as that controller would, and the scheduler places them. Rendered with ``drain_seconds=0`` so that
deleted pods go at once (no kubelet confirms a graceful deletion here).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
from crd_schema import vendored_crd
from kube_cluster import KubeCluster, wait_for_service_account_token
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from typer.testing import CliRunner

from planner.catalog import fleet_catalog
from planner.io.fleetfile import load_fleet
from planner.pipeline import plan_fleet
from planner.schema import FleetSpec, Plan
from planner.tolerance import plan_and_place
from provisioner.cli import inventory_command
from provisioner.cluster import KubeClusterClient
from provisioner.inventory import served_pdb_version
from provisioner.render import (
    GROUP_LABEL,
    MANAGED_BY,
    OffloadEngine,
    RenderOptions,
    group_name,
    render_plan,
    team_namespace,
)
from provisioner.workloads.nodes import DEVICE_LABELS, GPU_PRODUCT_LABEL, ZONE_LABEL

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = {"quickstart": "quickstart", "distserve": "distserve-opt13b", "lamina": "lamina-llama3-70b",
            "melange": "melange-mixed"}
SET_LABEL = "medley.test/set"
OFFLOAD = OffloadEngine(image="registry.example/attention-offload:1",
                        decode_command=["offload-serve", "{model}", "--attention", "{attention_service}"],
                        attention_command=["offload-attention", "--devices", "{memory_devices}"])
# (device, count per zone); quickstart's H100 pool also selects on the instance type
NODES = {"h100-sxm": 3, "h20": 2, "a100-80gb": 4, "l4": 3, "a10g": 9}
# node sets for the placed plans: (device, zone, indexes); each plan gets nodes no other plan uses
SETS = {
    "quickstart": [("h100-sxm", "zone-a", (0, 1)), ("h20", "zone-a", (0,)), ("a100-80gb", "zone-b", (0, 1)),
                   ("l4", "zone-a", (0, 1)), ("l4", "zone-b", (0, 1)), ("a10g", "zone-b", (0, 1, 2, 3))],
    "lamina": [("h100-sxm", "zone-b", (0, 1, 2)), ("h20", "zone-b", (0, 1))],
    "distserve": [("a100-80gb", "zone-a", (0, 1, 2, 3))],
    "melange": [("l4", "zone-a", (2,)), ("l4", "zone-b", (2,)), ("a10g", "zone-a", (0, 1)),
                ("a100-80gb", "zone-b", (2, 3)), ("h100-sxm", "zone-a", (2,))],
}


def _fleets() -> dict[str, FleetSpec]:
    """The examples, renamed so that their objects' fleet label is this test's own."""
    return {k: load_fleet(ROOT / "examples" / f"{f}.yaml").model_copy(update={"name": f"landing-{k}"})
            for k, f in EXAMPLES.items()}


def _namespaces(prefix: str, key: str, fleet: FleetSpec) -> set[str]:
    return {team_namespace(s.team, RenderOptions(namespace_prefix=f"{prefix}{key}-")) for s in fleet.services}


def _node_name(device: str, zone: str, i: int) -> str:
    return f"land-{device}-{zone}-{i}"


def _fake_node(core: client.CoreV1Api, name: str, labels: dict[str, str], gpus: int) -> None:
    """A Ready node with GPUs the scheduler binds to (as the test control plane's ``add-node`` makes one)."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    res = {"cpu": "96", "memory": "1Ti", "pods": "110", "ephemeral-storage": "500Gi", "nvidia.com/gpu": str(gpus)}
    core.create_node({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {**labels, "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                              "kubernetes.io/arch": "amd64"}},
        "status": {"capacity": res, "allocatable": res, "conditions": [
            {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "fake node",
             "lastHeartbeatTime": now, "lastTransitionTime": now}]}})
    core.patch_node(name, {"spec": {"taints": []}})  # admission added not-ready; no node controller removes it


def _without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _without_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_without_descriptions(v) for v in node]
    return node


@pytest.fixture(scope="module")
def cluster(kube_cluster: KubeCluster) -> Iterator[tuple[Any, str]]:
    """The control plane with the landing nodes and the LeaderWorkerSet CRD; nodes removed afterwards."""
    if not kube_cluster.throwaway:
        pytest.skip("adds fake nodes: runs only on the throwaway test control plane")
    api = config.new_client_from_config(config_file=kube_cluster.kubeconfig)
    core = client.CoreV1Api(api)
    namespaces = sorted(ns for key, fleet in _fleets().items() for prefix in ("u-", "p-")
                        for ns in _namespaces(prefix, key, fleet))
    for ns in namespaces:  # early: their service-account tokens come while the nodes are made
        core.create_namespace({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    sets = {(d, z, i): s for s, parts in SETS.items() for d, z, idx in parts for i in idx}
    specs = []
    for device, count in NODES.items():
        for zone in ("zone-a", "zone-b"):
            for i in range(count):
                labels = {GPU_PRODUCT_LABEL: DEVICE_LABELS[device].values[0], ZONE_LABEL: zone}
                if device == "h100-sxm":
                    labels["node.kubernetes.io/instance-type"] = "a3-highgpu-8g"
                if (device, zone, i) in sets:
                    labels[SET_LABEL] = sets[(device, zone, i)]
                specs.append((_node_name(device, zone, i), labels))
    names = [name for name, _ in specs]
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda spec: _fake_node(core, spec[0], spec[1], 8), specs))
    # the vendored CRD without its descriptions (a third of its size): the same schema, installed faster
    crd = _without_descriptions(vendored_crd("LeaderWorkerSet"))
    ext = client.ApiextensionsV1Api(api)
    try:
        ext.create_custom_resource_definition(crd)
    except ApiException as exc:
        if exc.status != 409:
            raise
    deadline = time.monotonic() + 30
    while not any(c.type == "Established" and c.status == "True" for c in
                  ext.read_custom_resource_definition(crd["metadata"]["name"]).status.conditions or []):
        assert time.monotonic() < deadline, "LeaderWorkerSet CRD not Established"
        time.sleep(0.2)
    try:
        yield api, kube_cluster.kubeconfig
    finally:
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(core.delete_node, names))
            list(pool.map(core.delete_namespace, namespaces))


def _plans(placed: bool, fleets: dict[str, FleetSpec]) -> dict[str, Plan]:
    out = {}
    for key, fleet in fleets.items():
        catalog = fleet_catalog(fleet)

        def planner(f: FleetSpec, current: Plan | None, catalog: Any = catalog) -> Plan:
            return plan_fleet(f, current=current, catalog=catalog, baselines=False, marginals=False)

        out[key] = plan_and_place(fleet, catalog, planner=planner) if placed else planner(fleet, None)
    return out


def _materialise_lws(core: client.CoreV1Api, lws: dict[str, Any]) -> None:
    """The pods the LeaderWorkerSet controller would make: leader ``<name>-<i>``, workers ``<name>-<i>-<j>``."""
    name, ns = lws["metadata"]["name"], lws["metadata"]["namespace"]
    lwt = lws["spec"]["leaderWorkerTemplate"]
    for i in range(lws["spec"]["replicas"]):
        for j in range(lwt["size"]):
            template = copy.deepcopy(lwt["leaderTemplate" if j == 0 else "workerTemplate"])
            labels = {**template["metadata"]["labels"], "leaderworkerset.sigs.k8s.io/name": name,
                      "leaderworkerset.sigs.k8s.io/group-index": str(i),
                      "leaderworkerset.sigs.k8s.io/worker-index": str(j)}
            pod_name = f"{name}-{i}" if j == 0 else f"{name}-{i}-{j}"
            core.create_namespaced_pod(ns, {"apiVersion": "v1", "kind": "Pod",
                                            "metadata": {"name": pod_name, "labels": labels},
                                            "spec": template["spec"]})


def _apply(api: Any, manifests: list[dict[str, Any]]) -> int:
    """Namespaces first, then every object (server-side apply); returns the pods the objects should make."""
    core = client.CoreV1Api(api)
    for ns in sorted({m["metadata"]["namespace"] for m in manifests}):  # made by the fixture
        wait_for_service_account_token(core, ns)
    kube = KubeClusterClient(api)

    def one(manifest: dict[str, Any]) -> int:
        kube.apply(manifest)
        if manifest["kind"] == "Deployment":
            return int(manifest["spec"]["replicas"])
        if manifest["kind"] == "LeaderWorkerSet":
            _materialise_lws(core, manifest)
            return int(manifest["spec"]["replicas"] * manifest["spec"]["leaderWorkerTemplate"]["size"])
        return 0

    with ThreadPoolExecutor(max_workers=8) as pool:
        return sum(pool.map(one, manifests))


def _bound(core: client.CoreV1Api, prefix: str, expected: int, timeout_s: float = 60) -> list[Any]:
    """Medley's pods in namespaces starting with ``prefix`` once ``expected`` of them are bound to nodes."""
    deadline = time.monotonic() + timeout_s
    while True:
        pods = [p for p in core.list_pod_for_all_namespaces(label_selector=f"{MANAGED_BY}=medley").items
                if p.metadata.namespace.startswith(prefix)]
        bound = [p for p in pods if p.spec.node_name]
        if len(bound) >= expected or time.monotonic() > deadline:
            pending = sorted(f"{p.metadata.namespace}/{p.metadata.name}" for p in pods if not p.spec.node_name)
            assert len(pods) == expected and not pending, (len(pods), expected, pending[:5])
            return bound
        time.sleep(0.25)


def _where(plan: Plan, fleet: FleetSpec, pod: Any) -> tuple[str, str]:
    """(device, zone) a pod must land on: its group's pool (the memory pool for attention workers)."""
    labels = pod.metadata.labels
    group = next(g for g in plan.replica_groups if group_name(g) == labels[GROUP_LABEL])
    attention = labels.get("medley.dev/component") == "attention"
    pool_id = (group.memory_pool or group.pool) if attention else group.pool
    pool = next(p for p in fleet.pools if p.id == pool_id)
    device = group.configuration.memory_device if attention else group.configuration.device
    return str(device), pool.zone


def _check_landing(api: Any, prefix: str, plans: dict[str, Plan], fleets: dict[str, FleetSpec],
                   expected: int, *, exact: bool) -> dict[str, int]:
    core = client.CoreV1Api(api)
    nodes = {n.metadata.name: n.metadata.labels for n in core.list_node().items}
    landed: dict[str, int] = {}
    for pod in _bound(core, prefix, expected):
        key = pod.metadata.namespace[len(prefix):].split("-", 1)[0]
        if GROUP_LABEL not in pod.metadata.labels:  # a router: CPU only, anywhere
            continue
        device, zone = _where(plans[key], fleets[key], pod)
        node = nodes[pod.spec.node_name]
        assert node[GPU_PRODUCT_LABEL] in DEVICE_LABELS[device].values, (pod.metadata.name, device, node)
        if zone != "default":
            assert node[ZONE_LABEL] == zone, (pod.metadata.name, zone, pod.spec.node_name)
        if exact:  # pinned to the node placement chose, and bound there
            term = pod.spec.affinity.node_affinity.required_during_scheduling_ignored_during_execution
            fields = term.node_selector_terms[0].match_fields
            assert fields and pod.spec.node_name in fields[0].values
            assert node.get(SET_LABEL) == key
        landed[key] = landed.get(key, 0) + 1
    return landed


def _remove(api: Any, manifests: list[dict[str, Any]], prefix: str) -> None:
    """Delete the workloads and the pods made for LeaderWorkerSets; wait until their pods are gone."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    for m in manifests:
        if m["kind"] == "Deployment":
            apps.delete_namespaced_deployment(m["metadata"]["name"], m["metadata"]["namespace"],
                                              propagation_policy="Background")
    for ns in sorted({m["metadata"]["namespace"] for m in manifests}):
        core.delete_collection_namespaced_pod(ns, label_selector="leaderworkerset.sigs.k8s.io/name",
                                              grace_period_seconds=0)
    deadline = time.monotonic() + 60
    while [p for p in core.list_pod_for_all_namespaces(label_selector=f"{MANAGED_BY}=medley").items
           if p.metadata.namespace.startswith(prefix)]:
        assert time.monotonic() < deadline, "pods of the first plans were not removed"
        time.sleep(0.25)


def _render_all(plans: dict[str, Plan], fleets: dict[str, FleetSpec], prefix: str,
                pdb: str) -> list[dict[str, Any]]:
    out = []
    for key, plan in plans.items():
        opts = RenderOptions(namespace_prefix=f"{prefix}{key}-", drain_seconds=0, prestop_seconds=0,
                             offload_engine=OFFLOAD, pdb_api_version=pdb)
        out += render_plan(plan, fleets[key], opts)
    return out


def test_every_example_plan_lands_on_its_devices_and_zones_then_exactly_where_inventory_placement_put_it(
        cluster: tuple[Any, str], tmp_path: Path):
    api, kubeconfig = cluster
    pdb = served_pdb_version(api)
    assert pdb == "policy/v1beta1"  # the test control plane is Kubernetes 1.20
    fleets = _fleets()

    # 1. plans without node lists: device and zone by node affinity, the scheduler picks the nodes
    plans = _plans(False, fleets)
    manifests = _render_all(plans, fleets, "u-", pdb)
    expected = _apply(api, manifests)
    landed = _check_landing(api, "u-", plans, fleets, expected, exact=False)
    assert set(landed) == set(EXAMPLES) and sum(landed.values()) > 20
    _remove(api, manifests, "u-")

    # 2. `medley inventory` fills each fleet's pools with its node set, placement pins, pods land there
    app = typer.Typer()
    app.command()(inventory_command)
    placed_fleets = {}
    for key, fleet in fleets.items():
        out = tmp_path / f"{key}-inventory.yaml"
        result = CliRunner().invoke(app, ["--fleet", str(ROOT / "examples" / f"{EXAMPLES[key]}.yaml"),
                                          "--kubeconfig", kubeconfig, "--selector", f"{SET_LABEL}={key}",
                                          "-o", str(out)])
        assert result.exit_code == 0, result.output
        placed_fleets[key] = load_fleet(out).model_copy(update={"name": fleet.name})
        assert all(p.nodes for p in placed_fleets[key].pools)
    plans = _plans(True, placed_fleets)
    for plan in plans.values():
        assert all(g.nodes for g in plan.replica_groups if g.replicas)
    manifests = _render_all(plans, placed_fleets, "p-", pdb)
    expected = _apply(api, manifests)
    placed = _check_landing(api, "p-", plans, placed_fleets, expected, exact=True)
    assert set(placed) == set(EXAMPLES)
    _remove(api, manifests, "p-")
