"""The test control plane itself: it starts, binds a GPU pod to the fake node that has the GPUs, and stops."""

from __future__ import annotations

import time

import pytest
from kube_cluster import KubeCluster, wait_for_service_account_token
from kubernetes import client, config

pytestmark = pytest.mark.integration


def test_scheduler_binds_a_gpu_pod_to_the_fake_gpu_node(kube_cluster: KubeCluster) -> None:
    kube_cluster.add_node("kct-cpu-only")
    kube_cluster.add_node("kct-gpu", {"nvidia.com/gpu.product": "NVIDIA-L4"}, gpus=2)
    api = client.CoreV1Api(config.new_client_from_config(config_file=kube_cluster.kubeconfig))
    api.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="kct-selftest")))
    wait_for_service_account_token(api, "kct-selftest")
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="gpu"),
        spec=client.V1PodSpec(termination_grace_period_seconds=0, containers=[client.V1Container(
            name="c", image="x", resources=client.V1ResourceRequirements(limits={"nvidia.com/gpu": "2"}))]))
    api.create_namespaced_pod("kct-selftest", pod)
    deadline = time.monotonic() + 30
    node = None
    while time.monotonic() < deadline and not node:
        node = api.read_namespaced_pod("gpu", "kct-selftest").spec.node_name
        time.sleep(0.2)
    assert node == "kct-gpu"
    api.delete_namespace("kct-selftest")
    for n in ("kct-cpu-only", "kct-gpu"):
        api.delete_node(n)
