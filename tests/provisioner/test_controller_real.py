"""The controller against the real control plane (kube-apiserver 1.20 with its controllers and scheduler),
with the controller's own service account, so the RBAC in k8s/rbac.yaml is exercised as shipped."""

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
    run_kubectl,
    seed_fleet,
    service_spec,
    wait_until,
)

from provisioner.cluster import ObjectRef, RetryPolicy, kube_client
from provisioner.controller import Reconciler
from provisioner.events import EventRecorder

pytestmark = pytest.mark.integration


def _controller(cluster: KubeCluster):
    return kube_client(cluster.kubeconfig_of("medley-system", "medley-controller"),
                       RetryPolicy(attempts=5, initial_s=0.05, max_s=0.5))


def _conditions(client, name: str) -> dict[str, tuple[str, str]]:
    status = (client.get(ObjectRef("FleetPlan", "", name)) or {}).get("status", {})
    return {c["type"]: (c["status"], c["reason"]) for c in status.get("conditions", [])}


def test_drift_set_image_scale_to_zero_and_a_deleted_service_are_repaired_by_one_reconcile(
        medley_cluster: KubeCluster) -> None:
    test, ns = "dc-drift", "dc-drift"
    make_namespace(medley_cluster, ns)
    try:
        seed_fleet(admin(medley_cluster), test, ns)
        client = _controller(medley_cluster)
        rec = Reconciler(client, planner=SimplePlanner(), events=EventRecorder(client))
        first = rec.reconcile(test)
        assert first is not None and first.result is not None and len(first.result.created) == 4, first
        name = "chat-dc-drift-h100-h100-sxm-tp1-unified"
        deploy = ObjectRef("Deployment", ns, name)
        before = client.get(deploy)
        assert before is not None and before["spec"]["replicas"] == 2
        image = before["spec"]["template"]["spec"]["containers"][0]["image"]
        assert rec.reconcile(test).result.changed is False  # applying twice changes nothing on the real server

        run_kubectl(medley_cluster, "-n", ns, "set", "image", f"deploy/{name}", "engine=someone/else:latest")
        run_kubectl(medley_cluster, "-n", ns, "scale", f"deploy/{name}", "--replicas=0")
        run_kubectl(medley_cluster, "-n", ns, "delete", "service", name)
        started = time.monotonic()
        outcome = rec.reconcile(test)
        took = time.monotonic() - started
        assert outcome is not None and outcome.result is not None and not outcome.result.failed
        after = client.get(deploy)
        assert after["spec"]["template"]["spec"]["containers"][0]["image"] == image
        assert after["spec"]["replicas"] == 2
        assert client.get(ObjectRef("Service", ns, name)) is not None
        assert outcome.result.updated == (deploy,) and outcome.result.created == (ObjectRef("Service", ns, name),)
        reasons = {(e["involvedObject"]["kind"], e["reason"])
                   for e in admin(medley_cluster).list("Event", namespace=ns)}
        assert {("Deployment", "DriftRepaired"), ("Service", "Recreated")} <= reasons
        print(f"drift repaired by one reconcile in {took:.2f} s")
    finally:
        cleanup(medley_cluster, test, [ns])


def test_make_before_break_and_a_mistaken_fleetplan_delete_keeps_the_workloads(medley_cluster: KubeCluster) -> None:
    """Traffic grows: L4 replicas are made, the H100 ones go only once the L4 ones are Ready. Then the FleetPlan
    is deleted: garbage collection would take its workloads; the finalizer keeps them serving."""
    test, ns = "dc-mbb", "dc-mbb"
    make_namespace(medley_cluster, ns, for_pods=True)
    try:
        seed_fleet(admin(medley_cluster), test, ns, rate=10)
        client = _controller(medley_cluster)
        rec = Reconciler(client, planner=SimplePlanner())
        rec.reconcile(test)
        wait_until(lambda: mark_pods_ready(medley_cluster, ns) >= 2, 20, "H100 pods created")
        wait_until(lambda: rec.reconcile(test) and _conditions(client, test)["Ready"][0] == "True", 30,
                   "the first plan Ready")
        owner = admin(medley_cluster)  # the team changes its traffic
        owner.replace({**owner.get(ObjectRef("LLMService", ns, "chat")), "spec": service_spec(20.0)})
        rec.reconcile(test)
        old = ObjectRef("Deployment", ns, "chat-dc-mbb-h100-h100-sxm-tp1-unified")
        new = ObjectRef("Deployment", ns, "chat-dc-mbb-l4-l4-tp1-unified")
        assert client.get(new) is not None and client.get(old) is not None  # made, nothing broken yet
        assert _conditions(client, test)["Progressing"][1] == "WaitingForReady"
        wait_until(lambda: mark_pods_ready(medley_cluster, ns) >= 10, 20, "L4 pods created")
        wait_until(lambda: rec.reconcile(test) and client.get(old) is None, 30, "the H100 workload pruned")
        assert client.get(new)["status"].get("readyReplicas") == 8

        uid = client.get(ObjectRef("FleetPlan", "", test))["metadata"]["uid"]
        admin(medley_cluster).delete(ObjectRef("FleetPlan", "", test))  # by mistake
        assert rec.reconcile(test) is None
        assert admin(medley_cluster).get(ObjectRef("FleetPlan", "", test)) is None
        time.sleep(3)  # what the garbage collector would do, it does within this
        kept = client.get(new)
        assert kept is not None and not any(o["uid"] == uid for o in kept["metadata"].get("ownerReferences", []))
        assert client.get(ObjectRef("Service", ns, new.name)) is not None
    finally:
        cleanup(medley_cluster, test, [ns])
