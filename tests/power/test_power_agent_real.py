"""The node agent against the real control plane with its own service account (the RBAC of
k8s/power-agent-daemonset.yaml): it writes its Node only when a value changes, and may only get and patch."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kube_cluster import KubeCluster
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from test_power_actuators import FakeNvml

from power.actuators import (
    APPLIED_ANNOTATION,
    INTENT_ANNOTATION,
    KubernetesNodeClient,
    NvmlActuator,
    decode_targets,
    encode_targets,
)
from power.agent import STATUS_ANNOTATION, AgentMetrics, NodeAgent
from power.policy import CapTarget

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
NODE = "dc-power-agent-node"


@pytest.fixture
def agent_node(kube_cluster: KubeCluster, tmp_path: Path) -> Iterator[tuple[k8s.CoreV1Api, k8s.CoreV1Api]]:
    """A fake node nothing schedules onto, and (admin, agent) clients; the agent's RBAC without the DaemonSet."""
    if not kube_cluster.throwaway:
        pytest.skip("this test adds a node: it runs only on the throwaway control plane")
    docs = [d for d in yaml.safe_load_all((ROOT / "k8s/power-agent-daemonset.yaml").read_text()) if d]
    rbac = tmp_path / "agent-rbac.yaml"
    rbac.write_text(yaml.safe_dump_all([d for d in docs if d["kind"] != "DaemonSet"]))
    subprocess.run(["kubectl", "--kubeconfig", kube_cluster.kubeconfig, "apply", "-f", str(ROOT / "k8s/namespace.yaml"),
                    "-f", str(rbac)], check=True, capture_output=True, timeout=60)
    kube_cluster.add_node(NODE, taints=["medley.dev/test=power:NoSchedule"])
    admin = k8s.CoreV1Api(k8s_config.new_client_from_config(config_file=kube_cluster.kubeconfig))
    agent = k8s.CoreV1Api(k8s_config.new_client_from_config(
        config_file=kube_cluster.kubeconfig_of("medley-system", "medley-power-agent")))
    try:
        yield admin, agent
    finally:
        admin.delete_node(NODE)


def test_the_agent_writes_its_node_only_on_change_with_get_and_patch_only(
        agent_node: tuple[k8s.CoreV1Api, k8s.CoreV1Api]) -> None:
    admin, as_agent = agent_node
    admin.patch_node(NODE, {"metadata": {"annotations": {
        INTENT_ANNOTATION: encode_targets({"0": CapTarget(1110, None)})}}})
    metrics = AgentMetrics()
    agent = NodeAgent(NODE, KubernetesNodeClient(as_agent), NvmlActuator(FakeNvml()), metrics=metrics)
    first = agent.step()
    assert first.wrote and first.changed == 1 and first.error is None
    version = admin.read_node(NODE).metadata.resource_version
    annotations = admin.read_node(NODE).metadata.annotations
    assert decode_targets(annotations[APPLIED_ANNOTATION]) == {"0": CapTarget(1110, None)}
    assert annotations[STATUS_ANNOTATION].endswith(" ok")
    for _ in range(5):  # steady: no write at all
        assert not agent.step().wrote
    assert admin.read_node(NODE).metadata.resource_version == version
    assert sum(s.value for m in metrics.registry.collect() for s in m.samples
               if s.name == "medley_power_agent_node_writes_total") == 1
    assert agent.ready()[0]

    for forbidden in (lambda: as_agent.list_node(), lambda: as_agent.delete_node(NODE),
                      lambda: as_agent.patch_node_status(NODE, {"status": {"capacity": {"nvidia.com/gpu": "9"}}})):
        with pytest.raises(k8s.ApiException) as refused:
            forbidden()
        assert refused.value.status == 403
