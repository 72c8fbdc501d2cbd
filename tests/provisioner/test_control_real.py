"""The control loop's rollout and canary against the real control plane (stand-in kubelet): a move between
two plans never leaves the service with less Ready serving capacity than it needs, a dropped workload is
drained (its pods leave the Services) before it is deleted, and a canary that regresses is rolled back."""

from __future__ import annotations

import time

import pytest
from kube_cluster import KubeCluster
from kube_real import (
    SimplePlanner,
    admin,
    cleanup,
    make_namespace,
    mark_pods_ready,
    seed_fleet,
    service_spec,
    wait_until,
)
from test_canary import FakeMetrics

from provisioner.canary import Canary, CanaryPolicy
from provisioner.cluster import ObjectRef, RetryPolicy, kube_client
from provisioner.controller import Reconciler
from provisioner.events import EventRecorder
from provisioner.render import SERVING_LABEL
from provisioner.rollout import DRAINING_ANNOTATION, WORKLOAD_KINDS, ready_capacity

pytestmark = pytest.mark.integration


def _controller(cluster: KubeCluster):
    return kube_client(cluster.kubeconfig_of("medley-system", "medley-controller"),
                       RetryPolicy(attempts=5, initial_s=0.05, max_s=0.5))


def _serving_capacity(client, ns: str) -> float:
    workloads = [w for kind in WORKLOAD_KINDS[:1] for w in client.list(kind, namespace=ns)]
    return sum(v for (svc, phase), v in ready_capacity(workloads).items() if phase == "decode")


def test_a_move_keeps_ready_capacity_and_drains_before_it_deletes(medley_cluster: KubeCluster) -> None:
    test, ns = "dc-loop", "dc-loop"
    make_namespace(medley_cluster, ns, for_pods=True)
    try:
        seed_fleet(admin(medley_cluster), test, ns, rate=10)
        client = _controller(medley_cluster)
        rec = Reconciler(client, planner=SimplePlanner(), drain_s=2.0)
        rec.reconcile(test)
        old = ObjectRef("Deployment", ns, "chat-dc-loop-h100-h100-sxm-tp1-unified")
        new = ObjectRef("Deployment", ns, "chat-dc-loop-l4-l4-tp1-unified")
        started = time.monotonic()
        while time.monotonic() - started < 20 and (client.get(old) or {}).get("status", {}).get("readyReplicas") != 2:
            mark_pods_ready(medley_cluster, ns)
            rec.reconcile(test)
            time.sleep(0.2)
        need = 10.0
        owner = admin(medley_cluster)
        owner.replace({**owner.get(ObjectRef("LLMService", ns, "chat")), "spec": service_spec(20.0)})
        need_after = 20.0
        drained_since = deleted_at = None
        unlabelled_before_delete = False
        capacities = []
        started = time.monotonic()
        while time.monotonic() - started < 40:
            rec.reconcile(test)
            mark_pods_ready(medley_cluster, ns)
            capacities.append(_serving_capacity(client, ns))
            live_old = client.get(old)
            if live_old is not None and DRAINING_ANNOTATION in live_old["metadata"].get("annotations", {}):
                # The controller's own stamp (Unix seconds): when this loop sees it depends on how slow the
                # API server answers, and the drain time counts from the stamp.
                drained_since = float(live_old["metadata"]["annotations"][DRAINING_ANNOTATION])
                group = live_old["metadata"]["labels"]["medley.dev/group"]
                pods = admin(medley_cluster).list("Pod", f"medley.dev/group={group}", namespace=ns)
                unlabelled_before_delete = bool(pods) and all(SERVING_LABEL not in p["metadata"].get("labels", {})
                                                               for p in pods)
            if live_old is None:
                deleted_at = time.time()
                break
            time.sleep(0.3)
        assert deleted_at is not None, "the old workload was never deleted"
        assert drained_since is not None and unlabelled_before_delete
        assert deleted_at - drained_since >= 2.0  # deleted only after the drain time
        assert (client.get(new) or {}).get("status", {}).get("readyReplicas") == 8
        # make before break: the ready capacity never fell below what either plan needed
        assert min(capacities) >= min(need, need_after) - 1e-6, capacities
    finally:
        cleanup(medley_cluster, test, [ns])


def test_a_canary_that_regresses_is_rolled_back_on_the_real_cluster(medley_cluster: KubeCluster) -> None:
    test, ns = "dc-canary", "dc-canary"
    make_namespace(medley_cluster, ns, for_pods=True)
    try:
        seed_fleet(admin(medley_cluster), test, ns, rate=10)
        client = _controller(medley_cluster)
        now = [0.0]
        metrics = FakeMetrics(l4=(0.6, 0.99))
        rec = Reconciler(client, planner=SimplePlanner(), events=EventRecorder(client),
                         canary=Canary(metrics, CanaryPolicy(slice=0.25, observe_s=60), clock=lambda: now[0]))
        rec.reconcile(test)
        owner = admin(medley_cluster)
        owner.replace({**owner.get(ObjectRef("LLMService", ns, "chat")), "spec": service_spec(20.0)})
        rec.reconcile(test)
        status = client.get(ObjectRef("FleetPlan", "", test))["status"]
        assert status["canary"]["state"] == "Running"
        canary = ObjectRef("Deployment", ns, "chat-dc-canary-l4-l4-tp1-unified")
        assert client.get(canary)["spec"]["replicas"] == 2  # a quarter of the new mix's 8
        now[0] = 120.0
        rec.reconcile(test)
        status = client.get(ObjectRef("FleetPlan", "", test))["status"]
        assert status["canary"]["state"] == "RolledBack" and "TTFT" in status["canary"]["reason"]
        wait_until(lambda: mark_pods_ready(medley_cluster, ns) >= 0 and rec.reconcile(test) is not None
                   and client.get(canary) is None, 30, "the canary workload removed")
        assert client.get(ObjectRef("FleetPlan", "", test))["status"]["canary"]["state"] == "RolledBack"
        assert client.get(ObjectRef("Deployment", ns, "chat-dc-canary-h100-h100-sxm-tp1-unified")) is not None
        events = {e["reason"] for e in admin(medley_cluster).list("Event", namespace="default")
                  if e["involvedObject"]["name"] == test}
        assert {"CanaryStarted", "CanaryRolledBack"} <= events
    finally:
        cleanup(medley_cluster, test, [ns])
