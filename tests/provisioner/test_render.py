"""Renderer: manifests per replica group, device requests, node selection, labels; all pass strict validation."""

from __future__ import annotations

import json

import kubernetes_validate
import pytest
from kube_double import group, make_fleet, make_plan

from planner.schema import Role
from provisioner.render import (
    MANAGED_BY,
    PLAN_LABEL,
    SERVICE_LABEL,
    Owner,
    RenderError,
    RenderOptions,
    dns_label,
    render_plan,
    team_namespace,
)

VERSIONS = ("1.30", "1.37")


def _plan():
    return make_plan("plan-1", [
        group("chat", "h100-a", "h100-sxm", 1, 2, nodes=["node-1", "node-2"]),
        group("chat", "l4-b", "l4", 2, 3, role=Role.PREFILL),
        group("code", "h100-a", "h100-sxm", 8, 1),
    ])


def test_each_group_gets_a_workload_pdb_and_service_in_its_team_namespace():
    manifests = render_plan(_plan(), make_fleet(), owner=Owner("medley.dev/v1alpha1", "FleetPlan", "f", "u-1"))
    kinds = sorted(m["kind"] for m in manifests)
    assert kinds == ["Deployment"] * 3 + ["PodDisruptionBudget"] * 3 + ["Service"] * 3
    for m in manifests:
        labels = m["metadata"]["labels"]
        assert labels[MANAGED_BY] == "medley" and labels[PLAN_LABEL] == "plan-1"
        assert m["metadata"]["ownerReferences"][0]["uid"] == "u-1"
        assert m["metadata"]["namespace"] == {"chat": "assistants", "code": "devtools"}[labels[SERVICE_LABEL]]


def test_deployment_requests_devices_runs_vllm_with_parallelism_and_selects_pool_and_placed_nodes():
    manifests = render_plan(_plan(), make_fleet())
    chat = next(m for m in manifests if m["kind"] == "Deployment" and "h100" in m["metadata"]["name"]
                and m["metadata"]["labels"][SERVICE_LABEL] == "chat")
    pod = chat["spec"]["template"]["spec"]
    engine = pod["containers"][0]
    assert engine["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    cmd = engine["command"]
    assert cmd[:3] == ["vllm", "serve", "llama-3-8b"]
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "1"
    assert pod["nodeSelector"] == {"node.kubernetes.io/instance-type": "a3-highgpu-8g"}
    expr = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert expr[0]["matchExpressions"][0]["values"] == ["node-1", "node-2"]
    assert chat["spec"]["replicas"] == 2
    # the plan id labels the object, never the pod template (a new plan must not restart unchanged pods)
    assert PLAN_LABEL not in chat["spec"]["template"]["metadata"]["labels"]
    prefill = next(m for m in manifests if m["kind"] == "Deployment" and "prefill" in m["metadata"]["name"])
    assert "kv_producer" in " ".join(prefill["spec"]["template"]["spec"]["containers"][0]["command"])


def test_vendor_maps_to_extended_resource_and_unknown_device_is_a_named_error():
    fleet = make_fleet()
    fleet = fleet.model_copy(update={"pools": [*fleet.pools, fleet.pools[0].model_copy(
        update={"id": "mi300", "device": "mi300x"})]})
    manifests = render_plan(make_plan("p", [group("chat", "mi300", "mi300x", 1, 1)]), fleet)
    dep = next(m for m in manifests if m["kind"] == "Deployment")
    assert "amd.com/gpu" in dep["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    with pytest.raises(RenderError, match="configuration.device"):
        render_plan(make_plan("p", [group("chat", "h100-a", "no-such-gpu", 1, 1)]), make_fleet())
    with pytest.raises(RenderError, match="replica_groups.pool"):
        render_plan(make_plan("p", [group("chat", "nowhere", "h100-sxm", 1, 1)]), make_fleet())


def test_pipeline_across_nodes_renders_a_leaderworkerset():
    manifests = render_plan(make_plan("p", [group("code", "l4-b", "l4", 4, 2, pp=2)]), make_fleet())
    lws = next(m for m in manifests if m["kind"] == "LeaderWorkerSet")
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 2
    assert lws["spec"]["replicas"] == 2
    leader = lws["spec"]["leaderWorkerTemplate"]["leaderTemplate"]["spec"]["containers"][0]
    assert "--pipeline-parallel-size 2" in leader["command"][-1]
    assert "--distributed-executor-backend ray" in leader["command"][-1]


def test_attention_offload_gets_memory_device_workers_in_the_memory_pool():
    from planner.schema import Configuration, ReplicaGroup

    cfg = Configuration(device="h100-sxm", tp=1, role=Role.DECODE_OFFLOAD, memory_device="l4", memory_devices=2)
    grp = ReplicaGroup(service="chat", pool="h100-a", memory_pool="l4-b", configuration=cfg, replicas=2,
                       cost_usd_per_hour=1, expected_watts=1)
    deps = [m for m in render_plan(make_plan("p", [grp]), make_fleet()) if m["kind"] == "Deployment"]
    attention = next(d for d in deps if d["metadata"]["name"].endswith("-attn"))
    pod = attention["spec"]["template"]["spec"]
    assert pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert "nodeSelector" not in pod  # the l4 pool has no selector; the h100 pool's is not copied
    assert attention["spec"]["replicas"] == 2 and len(deps) == 2


def test_options_change_image_and_args_and_capacity_annotations_are_numbers():
    opts = RenderOptions(images={"vllm": "registry.local/vllm:1"}, extra_args=["--max-model-len", "8192"],
                         model_uris={"llama-3-8b": "meta-llama/Meta-Llama-3-8B"})
    manifests = render_plan(_plan(), make_fleet(), opts)
    dep = next(m for m in manifests if m["kind"] == "Deployment")
    engine = dep["spec"]["template"]["spec"]["containers"][0]
    assert engine["image"] == "registry.local/vllm:1" and engine["command"][-2:] == ["--max-model-len", "8192"]
    chat = [m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["labels"][SERVICE_LABEL] == "chat"]
    # unified h100 replicas and prefill l4 replicas together carry the service's prefill rate at 80% use
    total = sum(json.loads(m["metadata"]["annotations"]["medley.dev/capacity-rps-per-replica"])["prefill"]
                * m["spec"]["replicas"] for m in chat)
    assert total == pytest.approx(10.0 / 0.8)


def test_names_are_dns_labels():
    assert dns_label("9Chat_v2.x") == "m-9chat-v2-x"
    assert len(dns_label("a" * 100, 52)) == 52
    assert team_namespace("Search Team") == "search-team"


@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_core_manifest_passes_strict_validation(version):
    plan = make_plan("p", [*_plan().replica_groups, group("code", "l4-b", "l4", 4, 1, pp=2)])
    for manifest in render_plan(plan, make_fleet(), owner=Owner("medley.dev/v1alpha1", "FleetPlan", "f", "u")):
        if manifest["kind"] == "LeaderWorkerSet":
            continue  # not a core kind: kubernetes-validate ships no schema for it
        kubernetes_validate.validate(manifest, version, strict=True)
