"""Plan → Kubernetes manifests: a pure function of the plan, the fleet and rendering options.

Per replica group (service, pool, configuration) the renderer writes the serving engine's workload — a
``Deployment`` when one replica fits on a node, a ``LeaderWorkerSet`` (one leader and workers per replica)
when pipeline stages span nodes — plus a ``PodDisruptionBudget`` and a ``Service``. An attention-offload
decode group gets a second Deployment for its memory devices in the memory pool.

Teams map to namespaces: a service runs in the namespace named after its team (``Service.team``,
lower-cased, other characters than ``[a-z0-9-]`` turned into ``-``), optionally prefixed by
``RenderOptions.namespace_prefix``. An ``LLMService`` custom resource gets its team from its namespace,
so both directions agree.

The plan id is a label of each object's metadata but not of the pod template: a new plan that keeps a
group unchanged restarts no pod.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from planner.catalog import fleet_catalog
from planner.demand import MissingDemand
from planner.roles import ROLES
from planner.schema import Configuration, FleetSpec, Plan, Pool, ReplicaGroup, Role, Service
from provisioner.capacity import capacity_per_replica_rps, required_rps

Manifest = dict[str, Any]

MANAGED_BY = "app.kubernetes.io/managed-by"
MEDLEY = "medley"
SERVICE_LABEL = "medley.dev/service"
PLAN_LABEL = "medley.dev/plan"
FLEET_LABEL = "medley.dev/fleet"
GROUP_LABEL = "medley.dev/group"
ROLE_LABEL = "medley.dev/role"
COMPONENT_LABEL = "medley.dev/component"
CAPACITY_ANNOTATION = "medley.dev/capacity-rps-per-replica"
REQUIRED_ANNOTATION = "medley.dev/required-rps"

DEVICE_RESOURCES = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu", "intel": "habana.ai/gaudi"}

_DEFAULT_IMAGES = {
    "vllm": "vllm/vllm-openai:v0.11.0",
    "sglang": "lmsysorg/sglang:v0.5.3",
    "trtllm": "nvcr.io/nvidia/tensorrt-llm/release:1.0.0",
}
# vLLM's disaggregated prefill: prefill replicas produce KV cache, decode replicas consume it.
_DEFAULT_ROLE_ARGS: dict[str, list[str]] = {
    role.value: ["--kv-transfer-config", f'{{"kv_connector":"NixlConnector","kv_role":"kv_{spec.kv_role}"}}']
    for role, spec in ROLES.items() if spec.kv_role is not None
}


class RenderError(ValueError):
    """The plan cannot be rendered (an unknown pool, device or vendor); the message names the field."""


class RenderOptions(BaseModel):
    """How plans become manifests: engine images and arguments, model URIs, namespaces, scheduling."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: dict[str, str] = Field(default_factory=lambda: dict(_DEFAULT_IMAGES))
    model_uris: dict[str, str] = Field(default_factory=dict, description="model id → what the engine loads")
    extra_args: list[str] = Field(default_factory=list, description="appended to every engine command")
    role_args: dict[str, list[str]] = Field(default_factory=lambda: {k: list(v) for k, v in _DEFAULT_ROLE_ARGS.items()})
    port: int = Field(default=8000, ge=1, le=65535)
    namespace_prefix: str = ""
    resource_names: dict[str, str] = Field(default_factory=dict, description="device id → extended resource")
    tolerations: list[dict[str, str]] = Field(default_factory=list)
    attention_args: list[str] = Field(default_factory=list, description=(
        "appended to the engine command of attention-offload memory-device workers; the engine must "
        "support attention offload (upstream vLLM does not)"))
    cpu_per_device: str = "4"
    memory_per_device: str = "32Gi"


@dataclass(frozen=True)
class Owner:
    """The object every rendered manifest belongs to (the FleetPlan) for garbage collection."""

    api_version: str
    kind: str
    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {"apiVersion": self.api_version, "kind": self.kind, "name": self.name, "uid": self.uid,
                "controller": True, "blockOwnerDeletion": False}


def dns_label(text: str, limit: int = 63) -> str:
    """A DNS-1035 label from ``text``: lower-case, ``-`` for others, starts with a letter, hashed if long."""
    clean = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-") or "x"
    if not clean[0].isalpha():
        clean = "m-" + clean
    if len(clean) > limit:
        digest = hashlib.sha256(text.encode()).hexdigest()[:8]
        clean = clean[: limit - 9].rstrip("-") + "-" + digest
    return clean


def label_value(text: str) -> str:
    """A valid label value (63 characters of ``[A-Za-z0-9._-]``, alphanumeric at both ends)."""
    clean = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-._")
    if len(clean) > 63:
        clean = clean[:54].rstrip("-._") + "-" + hashlib.sha256(text.encode()).hexdigest()[:8]
    return clean


def team_namespace(team: str, options: RenderOptions | None = None) -> str:
    """The namespace a team's services run in."""
    prefix = options.namespace_prefix if options else ""
    return dns_label(prefix + team)


def group_name(group: ReplicaGroup) -> str:
    """The workload name of a replica group: service, pool and configuration, at most 52 characters."""
    cfg = group.configuration
    parts = [group.service, group.pool, cfg.device, f"tp{cfg.tp}"]
    if cfg.pp > 1:
        parts.append(f"pp{cfg.pp}")
    parts.append(cfg.role.value.replace("+", "-"))
    if cfg.role is Role.DECODE_OFFLOAD:
        parts.append(f"{cfg.memory_devices}x{cfg.memory_device}")
    # 52 leaves room for the suffixes controllers append to pod names.
    return dns_label("-".join(parts), limit=52)


def engine_command(service: Service, cfg: Configuration, model_uri: str, options: RenderOptions) -> list[str]:
    """The serving engine's command line for one replica of ``cfg``."""
    port = str(options.port)
    if service.engine == "vllm":
        cmd = ["vllm", "serve", model_uri, "--host", "0.0.0.0", "--port", port,
               "--tensor-parallel-size", str(cfg.tp), "--pipeline-parallel-size", str(cfg.pp)]
    elif service.engine == "sglang":
        cmd = ["python3", "-m", "sglang.launch_server", "--model-path", model_uri, "--host", "0.0.0.0",
               "--port", port, "--tp-size", str(cfg.tp), "--pp-size", str(cfg.pp)]
        role = ROLES[cfg.role]
        if role.disaggregated:
            cmd += ["--disaggregation-mode", role.phases[0]]
        return cmd + list(options.extra_args)
    else:
        cmd = ["trtllm-serve", model_uri, "--host", "0.0.0.0", "--port", port,
               "--tp_size", str(cfg.tp), "--pp_size", str(cfg.pp)]
        return cmd + list(options.extra_args)
    return cmd + list(options.role_args.get(cfg.role.value, [])) + list(options.extra_args)


def _resource_name(device_id: str, fleet: FleetSpec, options: RenderOptions) -> str:
    if device_id in options.resource_names:
        return options.resource_names[device_id]
    try:
        vendor = fleet_catalog(fleet).device(device_id).vendor
    except KeyError as exc:
        raise RenderError(f"configuration.device: {exc.args[0]}") from None
    if vendor not in DEVICE_RESOURCES:
        raise RenderError(f"configuration.device: vendor {vendor!r} of {device_id!r} has no known "
                          "extended resource; set RenderOptions.resource_names")
    return DEVICE_RESOURCES[vendor]


def _pool(fleet: FleetSpec, pool_id: str, field: str) -> Pool:
    for pool in fleet.pools:
        if pool.id == pool_id:
            return pool
    raise RenderError(f"replica_groups.{field}: unknown pool {pool_id!r}")


def _affinity(nodes: list[str]) -> dict[str, Any]:
    terms: list[dict[str, Any]] = []
    placed = sorted(set(nodes))
    if placed:
        terms.append({"key": "kubernetes.io/hostname", "operator": "In", "values": placed})
    if not terms:
        return {}
    return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": terms}]}}}}


def _pod_spec(*, containers: list[dict[str, Any]], pool: Pool, nodes: list[str], resource: str,
              selector: dict[str, str], zones_required: bool, options: RenderOptions) -> dict[str, Any]:
    tolerations = [{"key": resource, "operator": "Exists", "effect": "NoSchedule"}, *options.tolerations]
    spec: dict[str, Any] = {
        "containers": containers,
        "tolerations": tolerations,
        "topologySpreadConstraints": [
            {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
             "whenUnsatisfiable": "DoNotSchedule" if zones_required else "ScheduleAnyway",
             "labelSelector": {"matchLabels": dict(selector)}},
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": dict(selector)}},
        ],
        "terminationGracePeriodSeconds": 60,
    }
    if pool.node_selector:
        spec["nodeSelector"] = dict(pool.node_selector)
    spec.update(_affinity(nodes))
    return spec


def _container(name: str, command: list[str], image: str, resource: str, devices: int,
               options: RenderOptions, probe: bool) -> dict[str, Any]:
    cpu = str(max(1, devices) * int(options.cpu_per_device)) if options.cpu_per_device.isdigit() \
        else options.cpu_per_device
    limits = {resource: str(devices)}
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": command,
        "ports": [{"name": "http", "containerPort": options.port, "protocol": "TCP"}],
        "resources": {"requests": {**limits, "cpu": cpu, "memory": options.memory_per_device}, "limits": limits},
    }
    if probe:
        container["readinessProbe"] = {"httpGet": {"path": "/health", "port": "http"},
                                       "periodSeconds": 10, "failureThreshold": 3}
        container["startupProbe"] = {"httpGet": {"path": "/health", "port": "http"},
                                     "periodSeconds": 10, "failureThreshold": 180}
    return container


def _meta(name: str, namespace: str, labels: dict[str, str], owner: Owner | None,
          annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        meta["annotations"] = annotations
    if owner is not None:
        meta["ownerReferences"] = [owner.reference()]
    return meta


def render_group(group: ReplicaGroup, plan: Plan, fleet: FleetSpec, options: RenderOptions,
                 owner: Owner | None = None) -> list[Manifest]:
    """The workload, PodDisruptionBudget and Service of one replica group."""
    services = {s.id: s for s in fleet.services}
    if group.service not in services:
        raise RenderError(f"replica_groups.service: unknown service {group.service!r}")
    service = services[group.service]
    cfg = group.configuration
    pool = _pool(fleet, group.pool, "pool")
    resource = _resource_name(cfg.device, fleet, options)
    name = group_name(group)
    namespace = team_namespace(service.team, options)
    selector = {SERVICE_LABEL: label_value(service.id), GROUP_LABEL: name}
    pod_labels = {MANAGED_BY: MEDLEY, **selector, ROLE_LABEL: label_value(cfg.role.value)}
    labels = {**pod_labels, FLEET_LABEL: label_value(fleet.name), PLAN_LABEL: label_value(plan.id or "unnamed")}
    try:
        capacity = capacity_per_replica_rps(group, service, plan)
    except MissingDemand as exc:
        raise RenderError(str(exc)) from None
    need = required_rps(service, plan.replica_groups)
    annotations = {
        CAPACITY_ANNOTATION: json.dumps({k: round(v, 6) for k, v in sorted(capacity.items())}),
        REQUIRED_ANNOTATION: json.dumps({k: round(v, 6) for k, v in need.items()}),
        "medley.dev/configuration": cfg.label(),
    }
    image = options.images.get(service.engine)
    if image is None:
        raise RenderError(f"services.engine: no image configured for engine {service.engine!r}")
    model_uri = options.model_uris.get(service.model, service.model)
    command = engine_command(service, cfg, model_uri, options)
    zones_required = service.spread_zones > 1
    per_node = pool.devices_per_node
    out: list[Manifest] = []

    if cfg.devices <= per_node:
        container = _container("engine", command, image, resource, cfg.devices, options, probe=True)
        pod = _pod_spec(containers=[container], pool=pool, nodes=group.nodes, resource=resource,
                        selector=selector, zones_required=zones_required, options=options)
        out.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": _meta(name, namespace, labels, owner, annotations),
            "spec": {
                "replicas": group.replicas,
                "selector": {"matchLabels": dict(selector)},
                # make-before-break inside one workload too: a new pod is Ready before an old one goes
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {"metadata": {"labels": pod_labels}, "spec": pod},
            },
        })
    else:
        if cfg.tp > per_node:
            raise RenderError(f"configuration.tp: {cfg.tp} devices exceed the {per_node} per node of pool {pool.id!r}")
        stages_per_node = max(1, per_node // cfg.tp)
        size = math.ceil(cfg.pp / stages_per_node)
        devices_per_pod = cfg.tp * min(cfg.pp, stages_per_node)
        # stages on several nodes: vLLM runs them through a Ray cluster the leader heads
        multi_node = [*command, "--distributed-executor-backend", "ray"] if service.engine == "vllm" else command
        leader = _container("engine", ["sh", "-c", "ray start --head --port=6379 && " + " ".join(
            _quote(c) for c in multi_node)], image, resource, devices_per_pod, options, probe=True)
        worker = _container("engine", ["sh", "-c", "ray start --address=$(LWS_LEADER_ADDRESS):6379 --block"],
                            image, resource, devices_per_pod, options, probe=False)
        pod_kwargs: dict[str, Any] = {"pool": pool, "nodes": group.nodes, "resource": resource,
                                      "selector": selector, "zones_required": zones_required, "options": options}
        out.append({
            "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
            "metadata": _meta(name, namespace, labels, owner, annotations),
            "spec": {
                "replicas": group.replicas,
                "rolloutStrategy": {"type": "RollingUpdate",
                                    "rollingUpdateConfiguration": {"maxSurge": 1, "maxUnavailable": 0}},
                "leaderWorkerTemplate": {
                    "size": size,
                    "leaderTemplate": {"metadata": {"labels": pod_labels},
                                       "spec": _pod_spec(containers=[leader], **pod_kwargs)},
                    "workerTemplate": {"metadata": {"labels": pod_labels},
                                       "spec": _pod_spec(containers=[worker], **pod_kwargs)},
                },
            },
        })

    if cfg.role is Role.DECODE_OFFLOAD and cfg.memory_device and cfg.memory_devices:
        mem_pool = _pool(fleet, group.memory_pool or group.pool, "memory_pool")
        mem_resource = _resource_name(cfg.memory_device, fleet, options)
        mem_selector = {SERVICE_LABEL: label_value(service.id), GROUP_LABEL: name, COMPONENT_LABEL: "attention"}
        mem_cmd = [*command, *options.attention_args]
        mem_container = _container("attention", mem_cmd, image, mem_resource, cfg.memory_devices, options,
                                   probe=True)
        out.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": _meta(dns_label(name + "-attn", 52), namespace,
                              {**labels, COMPONENT_LABEL: "attention"}, owner),
            "spec": {
                "replicas": group.replicas,
                "selector": {"matchLabels": mem_selector},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                "template": {"metadata": {"labels": {**pod_labels, COMPONENT_LABEL: "attention"}},
                             "spec": _pod_spec(containers=[mem_container], pool=mem_pool, nodes=[],
                                               resource=mem_resource, selector=mem_selector,
                                               zones_required=False, options=options)},
            },
        })

    out.append({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": _meta(name, namespace, labels, owner),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(selector)}},
    })
    out.append({
        "apiVersion": "v1", "kind": "Service",
        "metadata": _meta(name, namespace, labels, owner),
        "spec": {"type": "ClusterIP", "selector": dict(selector),
                 "ports": [{"name": "http", "port": options.port, "targetPort": "http", "protocol": "TCP"}]},
    })
    return out


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[A-Za-z0-9_./:=+-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def render_plan(plan: Plan, fleet: FleetSpec, options: RenderOptions | None = None,
                owner: Owner | None = None) -> list[Manifest]:
    """Every manifest of the plan, sorted by kind, namespace and name (groups with 0 replicas omitted)."""
    opts = options or RenderOptions()
    out: list[Manifest] = []
    seen: set[str] = set()
    for group in plan.replica_groups:
        if group.replicas == 0:
            continue
        name = group_name(group)
        if name in seen:
            raise RenderError(f"replica_groups: two groups render to the same name {name!r}")
        seen.add(name)
        out.extend(render_group(group, plan, fleet, opts, owner))
    return sorted(out, key=lambda m: (m["kind"], m["metadata"]["namespace"], m["metadata"]["name"]))
