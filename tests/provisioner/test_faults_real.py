"""The controller against the real API server behind a proxy that fails a fifth of the calls: it converges,
make-before-break included, and touches no object it does not own, not even one that carries its labels."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
from fault_proxy import FaultProxy
from kube_cluster import KubeCluster
from kube_real import (
    NOWHERE,
    SimplePlanner,
    admin,
    cleanup,
    make_namespace,
    mark_pods_ready,
    seed_fleet,
    service_spec,
)

from provisioner.apply import ObjectBackoff
from provisioner.cluster import ObjectRef, RetryPolicy, kube_client
from provisioner.controller import Reconciler
from provisioner.events import EventRecorder

pytestmark = pytest.mark.integration


def _theirs(ns: str) -> list[dict]:
    """A Helm-managed Deployment, and a Service labelled as Medley's for this fleet that Medley never applied."""
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "team-cache", "namespace": ns, "labels": {"app.kubernetes.io/managed-by": "helm"}},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "cache"}}, "template": {
            "metadata": {"labels": {"app": "cache"}}, "spec": {
                "nodeSelector": NOWHERE, "terminationGracePeriodSeconds": 0,
                "containers": [{"name": "c", "image": "redis:7"}]}}}}
    impostor = {"apiVersion": "v1", "kind": "Service", "metadata": {
        "name": "copied-by-hand", "namespace": ns, "labels": {
            "app.kubernetes.io/managed-by": "medley", "medley.dev/fleet": "dc-faults"}},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "chat"}}}
    return [deployment, impostor]


def test_converges_with_a_fifth_of_the_api_calls_failing(medley_cluster: KubeCluster, tmp_path: Path) -> None:
    test, ns = "dc-faults", "dc-faults"
    make_namespace(medley_cluster, ns, for_pods=True)
    owner = admin(medley_cluster)
    try:
        seed_fleet(owner, test, ns, rate=10)
        foreign = [owner.create(obj) for obj in _theirs(ns)]
        assert medley_cluster.state is not None
        with FaultProxy(owner.api.configuration.host, medley_cluster.state / "pki", rate=0.2, seed=11) as proxy:
            kubeconfig = proxy.kubeconfig(Path(medley_cluster.kubeconfig_of("medley-system", "medley-controller")),
                                          tmp_path / "through-proxy.kubeconfig")
            client = kube_client(str(kubeconfig), RetryPolicy(attempts=6, initial_s=0.05, max_s=0.4,
                                                              request_timeout_s=10))
            planner = SimplePlanner()
            rec = Reconciler(client, planner=planner, events=EventRecorder(client),
                             backoff=ObjectBackoff(initial_s=0.2, max_s=1.0))

            def converge() -> int:
                for passes in range(1, 25):  # bounded: a pass that loses to a fault is redone by the next
                    with contextlib.suppress(Exception):  # retries spent on one call: the loop logs it, goes on
                        rec.reconcile(test)
                    mark_pods_ready(medley_cluster, ns)  # the kubelet's part, straight to the API server
                    status = owner.get(ObjectRef("FleetPlan", "", test)).get("status", {})
                    ready = {c["type"]: c["status"] for c in status.get("conditions", [])}.get("Ready")
                    if ready == "True" and status.get("planId") == f"{test}-{planner.calls}":
                        return passes
                raise AssertionError(f"did not converge in 24 passes; faults {dict(proxy.faults)}")

            started = time.monotonic()
            first = converge()
            owner.replace({**owner.get(ObjectRef("LLMService", ns, "chat")), "spec": service_spec(20.0)})
            second = converge()  # L4 replicas made and Ready before the H100 ones go
            took = time.monotonic() - started
            injected = sum(proxy.faults.values())
        print(f"converged in {first} + {second} passes, {took:.1f} s; {injected} of {proxy.requests} calls "
              f"failed: {dict(proxy.faults)}")
        assert planner.calls == 2
        assert injected >= 10 and {"500", "reset", "lost"} <= set(proxy.faults)
        assert owner.get(ObjectRef("Deployment", ns, "chat-dc-faults-h100-h100-sxm-tp1-unified")) is None
        l4 = owner.get(ObjectRef("Deployment", ns, "chat-dc-faults-l4-l4-tp1-unified"))
        assert l4 is not None and l4["spec"]["replicas"] == 8
        for before in foreign:  # neither changed nor pruned (their own controllers may write their status)
            after = owner.get(ObjectRef.of(before))
            assert after is not None and after["spec"] == before["spec"]
            assert after["metadata"]["labels"] == before["metadata"]["labels"]
            assert "medley" not in {f["manager"] for f in after["metadata"].get("managedFields", [])}
    finally:
        cleanup(medley_cluster, test, [ns])
