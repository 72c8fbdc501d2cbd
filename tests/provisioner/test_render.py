"""Renderer: workloads per replica group, node affinity, engine arguments, entry points, offload; everything
passes strict validation (core kinds) or its CRD's schema (LeaderWorkerSet)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from crd_schema import validate_custom_resource
from kube_double import group, make_fleet, make_plan

from planner.schema import Configuration, FleetSpec, Node, ReplicaGroup, Role
from provisioner.render import (
    COMPONENT_LABEL,
    MANAGED_BY,
    PLAN_LABEL,
    SERVICE_LABEL,
    SERVING_LABEL,
    OffloadEngine,
    Owner,
    RenderError,
    RenderOptions,
    dns_label,
    render_plan,
    team_namespace,
)

VERSIONS = ("1.30", "1.37")
OFFLOAD = OffloadEngine(image="registry.local/offload:1", decode_command=["serve", "{model}", "--attn",
                                                                          "{attention_service}", "--tp", "{tp}"],
                        attention_command=["attention-worker", "--devices", "{memory_devices}"])


def _plan():
    return make_plan("plan-1", [
        group("chat", "h100-a", "h100-sxm", 1, 2, nodes=["node-1", "node-2"]),
        group("chat", "l4-b", "l4", 2, 3, role=Role.PREFILL),
        group("chat", "l4-b", "l4", 1, 2, role=Role.DECODE),
        group("code", "h100-a", "h100-sxm", 8, 1),
    ])


def _by(manifests: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(m for m in manifests if m["kind"] == kind and m["metadata"]["name"] == name)


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def _pods(manifests: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(workload name, pod template) of every workload; a LeaderWorkerSet gives its leader and worker."""
    out = []
    for m in manifests:
        if m["kind"] == "Deployment":
            out.append((m["metadata"]["name"], m["spec"]["template"]))
        elif m["kind"] == "LeaderWorkerSet":
            lwt = m["spec"]["leaderWorkerTemplate"]
            out += [(m["metadata"]["name"], lwt["leaderTemplate"]), (m["metadata"]["name"], lwt["workerTemplate"])]
    return out


def _terms(pod: dict[str, Any]) -> dict[str, list[str]]:
    term = pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"]
    assert len(term) == 1
    out = {e["key"]: e["values"] for e in term[0].get("matchExpressions", [])}
    out.update({f["key"]: f["values"] for f in term[0].get("matchFields", [])})
    return out


def _arg(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_groups_get_workload_pdb_and_service_and_each_service_one_entry_point():
    manifests = render_plan(_plan(), make_fleet(), owner=Owner("medley.dev/v1alpha1", "FleetPlan", "f", "u-1"))
    kinds = sorted(m["kind"] for m in manifests)
    # 4 groups: workload + PDB + Service; chat (prefill/decode): router Deployment + PDB, Services chat,
    # chat-prefill, chat-decode; code (unified): Service code
    assert kinds == ["Deployment"] * 5 + ["PodDisruptionBudget"] * 5 + ["Service"] * 8
    for m in manifests:
        labels = m["metadata"]["labels"]
        assert labels[MANAGED_BY] == "medley" and labels[PLAN_LABEL] == "plan-1"
        assert m["metadata"]["ownerReferences"][0]["uid"] == "u-1"
        assert m["metadata"]["namespace"] == {"chat": "assistants", "code": "devtools"}[labels[SERVICE_LABEL]]
    code = _by(manifests, "Service", "code")
    assert code["spec"]["selector"] == {SERVICE_LABEL: "code", SERVING_LABEL: "true"}


def test_pods_require_device_zone_and_selector_and_never_pin_invented_nodes():
    manifests = render_plan(_plan(), make_fleet())
    chat = _by(manifests, "Deployment", "chat-h100-a-h100-sxm-tp1-unified")
    pod = chat["spec"]["template"]
    assert pod["spec"]["nodeSelector"] == {"node.kubernetes.io/instance-type": "a3-highgpu-8g"}
    # node-1/node-2 came from placement over a pool without a node list: invented, so not pinned
    assert _terms(pod) == {"nvidia.com/gpu.product": ["NVIDIA-H100-80GB-HBM3"],
                           "topology.kubernetes.io/zone": ["zone-a"]}
    prefill = _by(manifests, "Deployment", "chat-l4-b-l4-tp2-prefill")["spec"]["template"]
    assert _terms(prefill) == {"nvidia.com/gpu.product": ["NVIDIA-L4"], "topology.kubernetes.io/zone": ["zone-b"]}
    assert "nodeSelector" not in prefill["spec"]
    assert PLAN_LABEL not in pod["metadata"]["labels"]  # a new plan must not restart unchanged pods


def _fleet_with_nodes() -> FleetSpec:
    fleet = make_fleet()
    nodes = [Node(name=f"h100-{i}", devices=8) for i in range(3)] + [Node(name="h100-9", state="cordoned")]
    return fleet.model_copy(update={"pools": [fleet.pools[0].model_copy(update={"nodes": nodes}), fleet.pools[1]]})


def test_real_nodes_are_pinned_per_shard_and_unknown_ones_refused():
    fleet = _fleet_with_nodes()
    plan = make_plan("p", [group("chat", "h100-a", "h100-sxm", 4, 3, nodes=["h100-0"] * 8 + ["h100-1"] * 4),
                           group("code", "h100-a", "h100-sxm", 8, 1)])
    manifests = render_plan(plan, fleet)
    chat = sorted((m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["name"].startswith("chat-h")),
                  key=lambda m: m["spec"]["replicas"])
    assert [m["spec"]["replicas"] for m in chat] == [1, 2]  # one workload per node: the placement is exact
    assert [_terms(m["spec"]["template"])["metadata.name"] for m in chat] == [["h100-1"], ["h100-0"]]
    assert len({m["spec"]["selector"]["matchLabels"]["medley.dev/shard"] for m in chat}) == 2
    # an unplaced group in a pool with a node list may use its ready nodes only
    code = _by(manifests, "Deployment", "code-h100-a-h100-sxm-tp8-unified")["spec"]["template"]
    assert _terms(code)["metadata.name"] == ["h100-0", "h100-1", "h100-2"]
    bad = make_plan("p", [group("chat", "h100-a", "h100-sxm", 8, 1, nodes=["h100-a-0001"] * 8)])
    with pytest.raises(RenderError, match="h100-a-0001 not in the node list of pool 'h100-a'"):
        render_plan(bad, fleet)


def test_placement_split_renders_leaderworkerset_with_pods_as_placed_and_leader_only_service():
    plan = make_plan("p", [group("code", "h100-a", "h100-sxm", 1, 1, pp=4, nodes=["n1", "n1", "n2", "n2"])])
    manifests = render_plan(plan, make_fleet())
    lws = next(m for m in manifests if m["kind"] == "LeaderWorkerSet")
    lwt = lws["spec"]["leaderWorkerTemplate"]
    assert lwt["size"] == 2  # PP4 placed 2+2: two 2-device pods, not one 4-device pod
    leader, worker = lwt["leaderTemplate"], lwt["workerTemplate"]
    for pod in (leader, worker):
        assert pod["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
        assert pod["spec"]["containers"][0]["resources"]["requests"]["memory"] == "64Gi"  # 32Gi × 2 devices
    assert "--pipeline-parallel-size 4" in leader["spec"]["containers"][0]["command"][-1]
    assert "--distributed-executor-backend ray" in leader["spec"]["containers"][0]["command"][-1]
    for service in (m for m in manifests if m["kind"] == "Service"):
        selector = service["spec"]["selector"]
        assert _selects(selector, leader["metadata"]["labels"])
        assert not _selects(selector, worker["metadata"]["labels"])  # Ray workers serve nothing
    unplaced = render_plan(make_plan("p", [group("code", "l4-b", "l4", 4, 2, pp=2)]), make_fleet())
    assert next(m for m in unplaced if m["kind"] == "LeaderWorkerSet")["spec"]["leaderWorkerTemplate"]["size"] == 2


def test_vllm_arguments_come_from_the_plan():
    manifests = render_plan(_plan(), make_fleet())
    cmd = _by(manifests, "Deployment", "chat-l4-b-l4-tp1-decode")["spec"]["template"]["spec"]["containers"][0][
        "command"]
    assert cmd[:3] == ["vllm", "serve", "meta-llama/Meta-Llama-3-8B-Instruct"]
    assert _arg(cmd, "--served-model-name") == "llama-3-8b"
    assert _arg(cmd, "--tensor-parallel-size") == "1" and _arg(cmd, "--pipeline-parallel-size") == "1"
    assert _arg(cmd, "--max-model-len") == "768"  # 512 + 128 tokens, rounded up to 256
    assert 1 < int(_arg(cmd, "--max-num-seqs")) <= 1024  # the percentile batch the capacity model sized
    assert _arg(cmd, "--gpu-memory-utilization") == "0.9"
    assert json.loads(_arg(cmd, "--kv-transfer-config")) == {"kv_connector": "NixlConnector",
                                                            "kv_role": "kv_consumer"}
    prefill = _by(manifests, "Deployment", "chat-l4-b-l4-tp2-prefill")["spec"]["template"]["spec"]["containers"][0]
    assert json.loads(_arg(prefill["command"], "--kv-transfer-config"))["kv_role"] == "kv_producer"
    assert _arg(prefill["command"], "--max-num-seqs") == "1"  # one prompt per pipeline stage
    assert {"name": "VLLM_NIXL_SIDE_CHANNEL_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in \
        prefill["env"]
    # a unified group of a prefill/decode service takes either side; of a unified-only service, neither
    unified = _by(manifests, "Deployment", "chat-h100-a-h100-sxm-tp1-unified")["spec"]["template"]
    assert json.loads(_arg(unified["spec"]["containers"][0]["command"], "--kv-transfer-config"))["kv_role"] == \
        "kv_both"
    assert unified["metadata"]["labels"]["medley.dev/prefill"] == unified["metadata"]["labels"]["medley.dev/decode"]
    code = _by(manifests, "Deployment", "code-h100-a-h100-sxm-tp8-unified")["spec"]["template"]["spec"]
    assert "--kv-transfer-config" not in code["containers"][0]["command"]


def test_prefill_decode_service_has_one_router_entry_point_over_phase_services():
    manifests = render_plan(_plan(), make_fleet())
    router = _by(manifests, "Deployment", "chat-router")
    args = router["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--vllm-pd-disaggregation" in args
    assert _arg(args, "--prefill") == "http://chat-prefill.assistants.svc:8000"
    assert _arg(args, "--decode") == "http://chat-decode.assistants.svc:8000"
    entry = _by(manifests, "Service", "chat")
    assert _selects(entry["spec"]["selector"], router["spec"]["template"]["metadata"]["labels"])
    pods = dict((n, p["metadata"]["labels"]) for n, p in _pods(manifests))
    prefill_svc = _by(manifests, "Service", "chat-prefill")["spec"]["selector"]
    decode_svc = _by(manifests, "Service", "chat-decode")["spec"]["selector"]
    assert {n for n, lb in pods.items() if _selects(prefill_svc, lb)} == {
        "chat-l4-b-l4-tp2-prefill", "chat-h100-a-h100-sxm-tp1-unified"}
    assert {n for n, lb in pods.items() if _selects(decode_svc, lb)} == {
        "chat-l4-b-l4-tp1-decode", "chat-h100-a-h100-sxm-tp1-unified"}
    assert {n for n, lb in pods.items() if _selects(entry["spec"]["selector"], lb)} == {"chat-router"}
    fleet = make_fleet()
    sglang = fleet.model_copy(update={"services": [fleet.services[0].model_copy(update={"engine": "sglang"}),
                                                   fleet.services[1]]})
    with pytest.raises(RenderError, match=r"services\[chat\].engine: prefill/decode disaggregation"):
        render_plan(_plan(), sglang)


def _offload_plan():
    cfg = Configuration(device="h100-sxm", tp=1, role=Role.DECODE_OFFLOAD, memory_device="l4", memory_devices=2)
    grp = ReplicaGroup(service="chat", pool="h100-a", memory_pool="l4-b", configuration=cfg, replicas=2,
                       cost_usd_per_hour=1, expected_watts=1)
    return make_plan("p", [grp, group("chat", "l4-b", "l4", 1, 1, role=Role.PREFILL)])


def test_attention_offload_is_refused_without_an_engine_that_can():
    with pytest.raises(RenderError, match=r"^services\[chat\]: decode\+offload needs an engine"):
        render_plan(_offload_plan(), make_fleet())


def test_attention_offload_with_an_offload_engine_puts_workers_in_the_memory_pool():
    manifests = render_plan(_offload_plan(), make_fleet(), RenderOptions(offload_engine=OFFLOAD))
    name = "chat-h100-a-h100-sxm-tp1-decode-offload-2xl4"
    attention = _by(manifests, "Deployment", f"{name}-attn")
    pod = attention["spec"]["template"]
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert pod["spec"]["containers"][0]["command"] == ["attention-worker", "--devices", "2"]
    assert pod["spec"]["containers"][0]["image"] == "registry.local/offload:1"
    assert _terms(pod)["nvidia.com/gpu.product"] == ["NVIDIA-L4"] and "nodeSelector" not in pod["spec"]
    decode = _by(manifests, "Deployment", name)["spec"]["template"]
    assert decode["spec"]["containers"][0]["command"] == [
        "serve", "meta-llama/Meta-Llama-3-8B-Instruct", "--attn", f"{name}-attn.assistants.svc", "--tp", "1"]
    group_service = _by(manifests, "Service", name)["spec"]["selector"]
    assert _selects(group_service, decode["metadata"]["labels"])
    assert not _selects(group_service, pod["metadata"]["labels"])  # the attention workers serve nothing
    assert pod["metadata"]["labels"][COMPONENT_LABEL] == "attention"


def test_unknown_placeholder_in_an_offload_template_is_a_named_error():
    bad = OFFLOAD.model_copy(update={"attention_command": ["attn", "{gpus}"]})
    with pytest.raises(RenderError, match=r"offload_engine: unknown placeholder \{gpus\}"):
        render_plan(_offload_plan(), make_fleet(), RenderOptions(offload_engine=bad))


def test_drain_probes_volumes_and_pdb_version():
    opts = RenderOptions(pdb_api_version="policy/v1beta1", drain_seconds=90, prestop_seconds=15,
                         model_cache={"volume": "persistentVolumeClaim", "claim_name": "weights"}, shm_size="8Gi")
    manifests = render_plan(_plan(), make_fleet(), opts)
    assert {m["apiVersion"] for m in manifests if m["kind"] == "PodDisruptionBudget"} == {"policy/v1beta1"}
    pod = _by(manifests, "Deployment", "code-h100-a-h100-sxm-tp8-unified")["spec"]["template"]["spec"]
    engine = pod["containers"][0]
    assert pod["terminationGracePeriodSeconds"] == 90
    assert engine["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "15"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert engine[probe]["httpGet"] == {"path": "/health", "port": "http"}
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "weights"}} in pod["volumes"]
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]
    assert engine["resources"]["requests"] == {"nvidia.com/gpu": "8", "cpu": "32", "memory": "256Gi"}


def test_device_labels_unknown_devices_and_pool_overrides():
    fleet = make_fleet()
    gaudi = fleet.pools[1].model_copy(update={"id": "gaudi", "device": "gaudi3", "devices_per_node": 8})
    with_gaudi = fleet.model_copy(update={"pools": [*fleet.pools, gaudi]})
    plan = make_plan("p", [group("code", "gaudi", "gaudi3", 8, 1)])
    with pytest.raises(RenderError, match=r"pools\[gaudi\].device: no node label is known for device 'gaudi3'"):
        render_plan(plan, with_gaudi)
    opts = RenderOptions(device_labels={"gaudi3": {"key": "example.com/accelerator", "values": ["gaudi3"]}})
    pod = next(p for _, p in _pods(render_plan(plan, with_gaudi, opts)))
    assert _terms(pod)["example.com/accelerator"] == ["gaudi3"]
    assert pod["spec"]["containers"][0]["resources"]["limits"] == {"habana.ai/gaudi": "8"}
    # a pool that names the product label itself chooses the product (e.g. the PCIe card)
    pcie = fleet.pools[0].model_copy(update={"node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-PCIe"}})
    pod = next(p for _, p in _pods(render_plan(make_plan("p", [group("code", "h100-a", "h100-sxm", 8, 1)]),
                                               fleet.model_copy(update={"pools": [pcie, fleet.pools[1]]}))))
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.product": "NVIDIA-H100-PCIe"}
    assert "nvidia.com/gpu.product" not in _terms(pod)


def test_vendor_maps_to_extended_resource_and_unknown_pool_is_a_named_error():
    fleet = make_fleet()
    fleet = fleet.model_copy(update={"pools": [*fleet.pools, fleet.pools[0].model_copy(
        update={"id": "mi300", "device": "mi300x", "node_selector": {}})]})
    manifests = render_plan(make_plan("p", [group("chat", "mi300", "mi300x", 1, 1)]), fleet)
    pod = next(p for _, p in _pods(manifests))
    assert "amd.com/gpu" in pod["spec"]["containers"][0]["resources"]["limits"]
    assert _terms(pod)["amd.com/gpu.device-id"] == ["74a1"]
    with pytest.raises(RenderError, match="configuration.device"):
        render_plan(make_plan("p", [group("chat", "h100-a", "no-such-gpu", 1, 1)]), make_fleet())
    with pytest.raises(RenderError, match="replica_groups.pool"):
        render_plan(make_plan("p", [group("chat", "nowhere", "h100-sxm", 1, 1)]), make_fleet())


def test_options_change_image_and_args_and_capacity_annotations_are_numbers():
    opts = RenderOptions(images={"vllm": "registry.local/vllm:1"}, extra_args=["--enable-prefix-caching"],
                         model_uris={"llama-3-8b": "/models/llama-3-8b"})
    manifests = render_plan(_plan(), make_fleet(), opts)
    dep = _by(manifests, "Deployment", "chat-h100-a-h100-sxm-tp1-unified")
    engine = dep["spec"]["template"]["spec"]["containers"][0]
    assert engine["image"] == "registry.local/vllm:1" and engine["command"][-1] == "--enable-prefix-caching"
    assert engine["command"][2] == "/models/llama-3-8b"
    chat = [m for m in manifests if m["kind"] == "Deployment" and m["metadata"]["labels"][SERVICE_LABEL] == "chat"
            and "medley.dev/capacity-rps-per-replica" in m["metadata"].get("annotations", {})]
    # unified h100 replicas and prefill l4 replicas together carry the service's prefill rate at 80% use
    total = sum(json.loads(m["metadata"]["annotations"]["medley.dev/capacity-rps-per-replica"]).get("prefill", 0)
                * m["spec"]["replicas"] for m in chat)
    assert total == pytest.approx(10.0 / 0.8)


def test_names_are_dns_labels():
    assert dns_label("9Chat_v2.x") == "m-9chat-v2-x"
    assert len(dns_label("a" * 100, 52)) == 52
    assert team_namespace("Search Team") == "search-team"


def _everything() -> list[dict[str, Any]]:
    pinned = group("chat", "h100-a", "h100-sxm", 1, 2, nodes=["h100-0", "h100-1"])
    plan = make_plan("p", [pinned, *_plan().replica_groups[1:], group("code", "l4-b", "l4", 4, 1, pp=2),
                           *_offload_plan().replica_groups[:1]])
    return render_plan(plan, _fleet_with_nodes(), RenderOptions(offload_engine=OFFLOAD),
                       owner=Owner("medley.dev/v1alpha1", "FleetPlan", "f", "u"))


@pytest.mark.parametrize("version", VERSIONS)
def test_every_rendered_core_manifest_passes_strict_validation(version):
    manifests = _everything()
    assert {m["kind"] for m in manifests} >= {"Deployment", "LeaderWorkerSet", "PodDisruptionBudget", "Service"}
    for manifest in manifests:
        if manifest["kind"] != "LeaderWorkerSet":
            kubernetes_validate.validate(manifest, version, strict=True)


def test_leaderworkersets_pass_their_crd_schema_and_a_bad_field_fails():
    lws = [m for m in _everything() if m["kind"] == "LeaderWorkerSet"]
    assert lws
    for manifest in lws:
        validate_custom_resource(manifest)
    broken = json.loads(json.dumps(lws[0]))
    broken["spec"]["leaderWorkerTemplate"]["workerTemplate"]["spec"]["containers"][0]["resourcez"] = {}
    with pytest.raises(jsonschema.ValidationError, match="resourcez"):
        validate_custom_resource(broken)


def test_policy_v1beta1_pdb_has_the_v1_shape():
    """kubernetes-validate ships no 1.20 schemas; a v1beta1 PDB carries exactly the fields policy/v1 defines."""
    for manifest in render_plan(_plan(), make_fleet(), RenderOptions(pdb_api_version="policy/v1beta1")):
        if manifest["kind"] == "PodDisruptionBudget":
            kubernetes_validate.validate({**manifest, "apiVersion": "policy/v1"}, "1.30", strict=True)
