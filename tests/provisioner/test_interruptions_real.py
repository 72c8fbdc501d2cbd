"""Spot reclaims against the real control plane, with the controller's own service account (so the Node rule
in k8s/rbac.yaml is exercised as shipped): a deleted spot node is planned around, once."""

from __future__ import annotations

import pytest
from kube_cluster import KubeCluster
from kube_real import admin, cleanup, cr, make_namespace, run_kubectl, service_spec
from test_interruptions import SpreadPlanner

from provisioner.cluster import RetryPolicy, kube_client
from provisioner.controller import Reconciler

pytestmark = pytest.mark.integration


def test_a_reclaimed_spot_node_is_planned_around(medley_cluster: KubeCluster) -> None:
    test, ns = "spot-reclaim", "spot-reclaim"
    make_namespace(medley_cluster, ns)
    names = [f"{test}-{p}-{i}" for p in ("a", "b") for i in range(2)]
    try:
        client = admin(medley_cluster)
        for pool, zone in (("a", "zone-a"), ("b", "zone-b")):
            nodes = [{"name": f"{test}-{pool}-{i}", "zone": zone} for i in range(2)]
            client.create(cr("GPUPool", f"{test}-{pool}", {
                "device": "l4", "devices_per_node": 4, "max_nodes": 2, "zone": zone, "price_usd_per_device_hour": 0.8,
                "tiers": {"spot": {"discount": 0.5, "interruption_probability": 0.1}}, "nodes": nodes}, test))
        client.create(cr("GPUPool", f"{test}-od", {"device": "l4", "devices_per_node": 4, "max_nodes": 2,
                                                    "price_usd_per_device_hour": 0.8}, test))
        for name in names:
            medley_cluster.add_node(name, {"topology.kubernetes.io/zone": "zone-a"}, gpus=4)
        client.create(cr("LLMService", "chat", service_spec(6.0), test, ns))
        client.create(cr("FleetPlan", test, {"mode": "dry-run", "selector": {"matchLabels": {
            "medley.dev/test": test}}}, test))
        controller = kube_client(medley_cluster.kubeconfig_of("medley-system", "medley-controller"),
                                 RetryPolicy(attempts=5, initial_s=0.05, max_s=0.5))
        planner = SpreadPlanner()
        rec = Reconciler(controller, planner=planner)
        first = rec.reconcile(test)
        assert first is not None and first.plan is not None and len(planner.fleets) == 1

        run_kubectl(medley_cluster, "delete", "node", f"{test}-a-1")
        second = rec.reconcile(test)
        assert second is not None and second.replanned and second.plan is not None
        assert all(f"{test}-a-1" not in g.nodes for g in second.plan.replica_groups)
        assert any(g.nodes for g in second.plan.replica_groups)  # placed on the nodes left
        assert not rec.reconcile(test).replanned  # the same loss: the plan around it stands
    finally:
        for name in names:
            run_kubectl(medley_cluster, "delete", "node", name, "--ignore-not-found")
        cleanup(medley_cluster, test, [ns])
