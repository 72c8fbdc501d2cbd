"""Plan → Kubernetes manifests: a pure function of the plan, the fleet and rendering options.

Per replica group (service, pool, configuration) the renderer writes the serving engine's workloads, a
``PodDisruptionBudget`` and a ``Service`` that selects the group's serving pods; per service one entry point
(``workloads.entry``: a Service, or the vLLM Router in front of prefill and decode).

* **Where pods land** (``workloads.nodes``): every pod requires its pool's device (GPU feature discovery's
  ``nvidia.com/gpu.product`` and vendor equivalents), zone and region as node affinity, plus the pool's own
  ``node_selector``; pods are pinned to node names only when those are real (the pool's node list).
* **Which pods** (``workloads.layout``): a replica is one pod per node its stages occupy; a replica of several
  pods is a ``LeaderWorkerSet`` (leader + workers, Ray across them), of one pod a ``Deployment``. Replicas laid
  out alike (and, when pinned, on the same nodes) share one workload: a *shard*, named ``<group>-<digest>``
  when a group has several or is pinned.
* **What runs** (``workloads.engine``, ``workloads.sizing``, ``workloads.pods``): the engine's command with
  parallelism, ``--max-model-len``, ``--max-num-seqs``, GPU memory share, served model name and KV-transfer
  role; model cache and ``/dev/shm`` volumes; startup/readiness/liveness probes on ``/health``; preStop and
  termination grace for draining. An attention-offload decode group renders only with an offload engine
  (``RenderOptions.offload_engine``), with its memory-device workers in the memory pool.

Teams map to namespaces: a service runs in the namespace named after its team (``Service.team``,
lower-cased, other characters than ``[a-z0-9-]`` turned into ``-``), optionally prefixed by
``RenderOptions.namespace_prefix``. An ``LLMService`` custom resource gets its team from its namespace,
so both directions agree.

The plan id is a label of each object's metadata but not of the pod template: a new plan that keeps a
group unchanged restarts no pod.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from planner.catalog import Catalog, fleet_catalog
from planner.demand import MissingDemand
from planner.roles import ROLES
from planner.schema import FleetSpec, Plan, Pool, ReplicaGroup, Role, Service
from provisioner.capacity import capacity_per_replica_rps, required_rps
from provisioner.workloads.engine import MODEL_SOURCES, EngineCall, engine_command, fill, kv_role
from provisioner.workloads.entry import EntryError, disaggregated, pdb, service_entry, service_object
from provisioner.workloads.labels import (
    CAPACITY_ANNOTATION,
    COMPONENT_LABEL,
    CONFIGURATION_ANNOTATION,
    DECODE_LABEL,
    FLEET_LABEL,
    GROUP_LABEL,
    MANAGED_BY,
    MEDLEY,
    PLAN_LABEL,
    PREFILL_LABEL,
    REQUIRED_ANNOTATION,
    ROLE_LABEL,
    SERVICE_LABEL,
    SERVING_LABEL,
    SHARD_LABEL,
    TRUE,
    dns_label,
    label_value,
)
from provisioner.workloads.layout import LayoutError, Shard, lws_size, shards
from provisioner.workloads.nodes import NodeSelectionError, node_affinity, real_nodes
from provisioner.workloads.options import ModelCache, OffloadEngine, RenderOptions
from provisioner.workloads.pods import engine_container, pod_spec
from provisioner.workloads.sizing import Sizing, group_sizing

__all__ = [
    "CAPACITY_ANNOTATION", "COMPONENT_LABEL", "DECODE_LABEL", "FLEET_LABEL", "GROUP_LABEL", "MANAGED_BY",
    "MEDLEY", "PLAN_LABEL", "PREFILL_LABEL", "REQUIRED_ANNOTATION", "ROLE_LABEL", "SERVICE_LABEL",
    "SERVING_LABEL", "SHARD_LABEL", "Manifest", "ModelCache", "OffloadEngine", "Owner", "RenderError",
    "RenderOptions", "dns_label", "group_name", "label_value", "render_group", "render_plan", "team_namespace",
]

Manifest = dict[str, Any]

DEVICE_RESOURCES = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu", "intel": "habana.ai/gaudi"}


class RenderError(ValueError):
    """The plan cannot be rendered (an unknown pool, device or vendor); the message names the field."""


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


def _resource_name(device_id: str, catalog: Catalog, options: RenderOptions) -> str:
    if device_id in options.resource_names:
        return options.resource_names[device_id]
    try:
        vendor = catalog.device(device_id).vendor
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


def _meta(name: str, namespace: str, labels: dict[str, str], owner: Owner | None,
          annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if annotations:
        meta["annotations"] = annotations
    if owner is not None:
        meta["ownerReferences"] = [owner.reference()]
    return meta


def _quote(arg: str) -> str:
    return arg if all(c.isalnum() or c in "_./:=+-" for c in arg) and arg else "'" + arg.replace("'", "'\\''") + "'"


@dataclass(frozen=True)
class _Group:
    """What every workload of one replica group shares."""

    group: ReplicaGroup
    service: Service
    pool: Pool
    name: str
    namespace: str
    resource: str
    image: str
    model_source: str
    kv: str | None  # KV-transfer role, None when the service does not split prefill from decode
    labels: dict[str, str]  # object labels (with fleet and plan)
    pod_labels: dict[str, str]  # serving pods' labels
    annotations: dict[str, str]
    sizing: Sizing
    options: RenderOptions
    owner: Owner | None
    mem_pool: Pool | None = None
    mem_resource: str | None = None

    def pins(self, nodes: set[str], pool: Pool) -> list[str]:
        """Node names pods are pinned to: the placed ones, else the pool's ready nodes when it lists any."""
        if nodes:
            return sorted(nodes)
        if pool.nodes is None:
            return []
        ready = sorted(n.name for n in pool.nodes if n.state == "ready")
        if not ready:
            raise RenderError(f"pools[{pool.id}].nodes: no ready node to run group {self.name}")
        return ready

    def pod(self, container: dict[str, Any], nodes: set[str], pool: Pool, resource: str,
            selector: dict[str, str], spread: bool) -> dict[str, Any]:
        """A pod spec in ``pool`` (pinned to ``nodes`` when given)."""
        affinity = node_affinity(pool, self.pins(nodes, pool), self.options.device_labels)
        spec = pod_spec([container], affinity=affinity, resource=resource, selector=selector,
                        spread=spread and not nodes, options=self.options)
        if pool.node_selector:
            spec["nodeSelector"] = dict(pool.node_selector)
        return spec

    def values(self, attention: list[str]) -> dict[str, object]:
        """Placeholders of an offload engine's command templates."""
        cfg = self.group.configuration
        return {"model": self.model_source, "served_model_name": self.service.model, "port": self.options.port,
                "tp": cfg.tp, "pp": cfg.pp, "memory_devices": cfg.memory_devices,
                "attention_service": ",".join(f"{a}.{self.namespace}.svc" for a in attention),
                "max_model_len": self.sizing.max_model_len or "", "max_num_seqs": self.sizing.max_num_seqs or ""}

    def command(self, multi_node: bool, attention: list[str]) -> list[str]:
        """The engine's command line for one replica of this group."""
        offload = self.options.offload_engine
        if self.group.configuration.role is Role.DECODE_OFFLOAD and offload is not None:
            cmd = fill(offload.decode_command, self.values(attention))
        else:
            cmd = engine_command(EngineCall(
                service=self.service, cfg=self.group.configuration, model_source=self.model_source,
                sizing=self.sizing, port=self.options.port,
                gpu_memory_utilization=self.options.gpu_memory_utilization, kv_role=self.kv,
                kv_connector=self.options.kv_connector, multi_node=multi_node))
        role = self.group.configuration.role.value
        return [*cmd, *self.options.role_args.get(role, []), *self.options.extra_args]


def _deployment(g: _Group, name: str, replicas: int, selector: dict[str, str], pod_labels: dict[str, str],
                spec: dict[str, Any], labels: dict[str, str], annotations: dict[str, str] | None) -> Manifest:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(name, g.namespace, labels, g.owner, annotations),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": dict(selector)},
            # make-before-break inside one workload too: a new pod is Ready before an old one goes
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {"metadata": {"labels": pod_labels}, "spec": spec},
        },
    }


def _not_serving(labels: dict[str, str], component: str) -> dict[str, str]:
    out = {k: v for k, v in labels.items() if k not in (SERVING_LABEL, PREFILL_LABEL, DECODE_LABEL)}
    out[COMPONENT_LABEL] = component
    return out


def _engine_workload(g: _Group, shard: Shard, name: str, selector: dict[str, str],
                     attention: list[str]) -> Manifest:
    """The Deployment (one pod per replica) or LeaderWorkerSet (several) of one shard."""
    pod_labels = {**g.pod_labels, **selector}
    image = g.image
    if g.group.configuration.role is Role.DECODE_OFFLOAD and g.options.offload_engine is not None:
        image = g.options.offload_engine.image
    if len(shard.pods) == 1:
        part = shard.pods[0]
        container = engine_container("engine", g.command(False, attention), image, g.resource, part.devices,
                                     g.options, serving=True, kv_transfer=g.kv is not None)
        spec = g.pod(container, {part.node} if part.node else set(), g.pool, g.resource, selector,
                     spread=shard.replicas > 1)
        return _deployment(g, name, shard.replicas, selector, pod_labels, spec, g.labels, g.annotations)
    size, leader_devices, worker_devices = lws_size(shard, g.name)
    if attention:
        raise RenderError(f"replica_groups: {g.name}: attention offload with stages on several nodes is not rendered")
    head = "ray start --head --port=6379 && exec " + " ".join(_quote(c) for c in g.command(True, attention))
    leader = engine_container("engine", ["sh", "-c", head], image, g.resource, leader_devices, g.options,
                              serving=True, kv_transfer=g.kv is not None)
    worker = engine_container("worker", ["sh", "-c", "ray start --address=$(LWS_LEADER_ADDRESS):6379 --block"],
                              image, g.resource, worker_devices, g.options, serving=False)
    leader_nodes = {shard.pods[0].node} if shard.pods[0].node else set()
    worker_nodes = {p.node for p in shard.pods[1:] if p.node}
    return {
        "apiVersion": "leaderworkerset.x-k8s.io/v1", "kind": "LeaderWorkerSet",
        "metadata": _meta(name, g.namespace, g.labels, g.owner, g.annotations),
        "spec": {
            "replicas": shard.replicas,
            "rolloutStrategy": {"type": "RollingUpdate",
                                "rollingUpdateConfiguration": {"maxSurge": 1, "maxUnavailable": 0}},
            "leaderWorkerTemplate": {
                "size": size,
                "leaderTemplate": {"metadata": {"labels": pod_labels},
                                   "spec": g.pod(leader, leader_nodes, g.pool, g.resource, selector, True)},
                "workerTemplate": {"metadata": {"labels": _not_serving(pod_labels, "worker")},
                                   "spec": g.pod(worker, worker_nodes, g.pool, g.resource, selector, True)},
            },
        },
    }


def _attention(g: _Group, shard: Shard, names: list[str], selector: dict[str, str]) -> list[Manifest]:
    """Memory-device workers of an attention-offload shard: a Deployment and a Service per pod of a replica."""
    offload = g.options.offload_engine
    assert offload is not None and g.mem_pool is not None and g.mem_resource is not None
    out: list[Manifest] = []
    for attn, part in zip(names, shard.memory, strict=True):
        sel = {**selector, COMPONENT_LABEL: "attention", SHARD_LABEL: attn}
        labels = {**_not_serving(g.pod_labels, "attention"), **sel}
        container = engine_container("attention", fill(offload.attention_command, g.values(names)), offload.image,
                                     g.mem_resource, part.devices, g.options, serving=False)
        container["ports"] = [{"name": "http", "containerPort": g.options.port, "protocol": "TCP"}]
        container["readinessProbe"] = {"tcpSocket": {"port": "http"}, "periodSeconds": 5}
        spec = g.pod(container, {part.node} if part.node else set(), g.mem_pool, g.mem_resource, sel, True)
        out.append(_deployment(g, attn, shard.replicas, sel, labels, spec,
                               {**g.labels, COMPONENT_LABEL: "attention"}, None))
        out.append(service_object(attn, lambda n, extra: _meta(n, g.namespace, {**g.labels, **extra}, g.owner),
                                  sel, g.options.port))
    return out


def _group(group: ReplicaGroup, plan: Plan, fleet: FleetSpec, catalog: Catalog, options: RenderOptions,
           owner: Owner | None) -> _Group:
    """Everything the workloads of one group share (raises RenderError naming what is wrong)."""
    services = {s.id: s for s in fleet.services}
    if group.service not in services:
        raise RenderError(f"replica_groups.service: unknown service {group.service!r}")
    service = services[group.service]
    cfg = group.configuration
    pool = _pool(fleet, group.pool, "pool")
    resource = _resource_name(cfg.device, catalog, options)
    name = group_name(group)
    base = label_value(service.id)
    mem_pool = mem_resource = memory_device = None
    if cfg.role is Role.DECODE_OFFLOAD:
        if options.offload_engine is None:
            raise RenderError(f"services[{service.id}]: decode+offload needs an engine that runs attention on "
                              "memory devices (upstream vLLM cannot); set RenderOptions.offload_engine")
        if not cfg.memory_device or not cfg.memory_devices:
            raise RenderError(f"replica_groups.configuration: {name}: decode+offload without memory devices")
        mem_pool = _pool(fleet, group.memory_pool or group.pool, "memory_pool")
        mem_resource = _resource_name(cfg.memory_device, catalog, options)
        memory_device = catalog.device(cfg.memory_device)
    image = options.images.get(service.engine)
    if image is None:
        raise RenderError(f"services.engine: no image configured for engine {service.engine!r}")
    peers = [g for g in plan.replica_groups if g.service == service.id]
    phases = ROLES[cfg.role].phases
    selector = {SERVICE_LABEL: base, GROUP_LABEL: name}
    pod_labels = {MANAGED_BY: MEDLEY, **selector, ROLE_LABEL: label_value(cfg.role.value),
                  COMPONENT_LABEL: "engine", SERVING_LABEL: TRUE,
                  **({PREFILL_LABEL: TRUE} if "prefill" in phases else {}),
                  **({DECODE_LABEL: TRUE} if "decode" in phases else {})}
    labels = {**{k: v for k, v in pod_labels.items() if k not in (SERVING_LABEL, PREFILL_LABEL, DECODE_LABEL,
                                                                   COMPONENT_LABEL)},
              FLEET_LABEL: label_value(fleet.name), PLAN_LABEL: label_value(plan.id or "unnamed")}
    try:
        capacity = capacity_per_replica_rps(group, service, plan)
    except MissingDemand as exc:
        raise RenderError(str(exc)) from None
    need = required_rps(service, plan.replica_groups)
    annotations = {
        CAPACITY_ANNOTATION: json.dumps({k: round(v, 6) for k, v in sorted(capacity.items())}),
        REQUIRED_ANNOTATION: json.dumps({k: round(v, 6) for k, v in need.items()}),
        CONFIGURATION_ANNOTATION: cfg.label(),
    }
    try:
        model = catalog.model(service.model)
        sizing = group_sizing(group, service, plan, model, catalog.device(cfg.device), memory_device,
                              fleet.planner.perf_engine, fleet.planner.max_num_seqs)
    except KeyError as exc:
        raise RenderError(f"services[{service.id}].model: {exc.args[0]}") from None
    source = options.model_uris.get(service.model) or MODEL_SOURCES.get(service.model, service.model)
    return _Group(group=group, service=service, pool=pool, name=name, namespace=team_namespace(service.team, options),
                  resource=resource, image=image, model_source=source, kv=kv_role(cfg, disaggregated(peers)),
                  labels=labels, pod_labels=pod_labels, annotations=annotations, sizing=sizing, options=options,
                  owner=owner, mem_pool=mem_pool, mem_resource=mem_resource)


def render_group(group: ReplicaGroup, plan: Plan, fleet: FleetSpec, options: RenderOptions,
                 owner: Owner | None = None, catalog: Catalog | None = None) -> list[Manifest]:
    """The workloads, PodDisruptionBudget and Service of one replica group."""
    g = _group(group, plan, fleet, catalog or fleet_catalog(fleet), options, owner)
    memory_per_node = g.mem_pool.devices_per_node if g.mem_pool else 1
    layout = shards(group, g.pool.devices_per_node, memory_per_node, real_nodes(g.pool),
                    real_nodes(g.mem_pool) if g.mem_pool else frozenset())
    many = len(layout) > 1 or any(s.pinned for s in layout)
    out: list[Manifest] = []
    for shard in layout:
        name = dns_label(f"{g.name}-{shard.key}", 52) if many else g.name
        selector = {SERVICE_LABEL: g.pod_labels[SERVICE_LABEL], GROUP_LABEL: g.name}
        if many:
            selector[SHARD_LABEL] = shard.key
        attention = [dns_label(f"{name}-attn{k if len(shard.memory) > 1 else ''}", 52)
                     for k in range(len(shard.memory))] if g.mem_pool else []
        out.append(_engine_workload(g, shard, name, {**selector, COMPONENT_LABEL: "engine"}, attention))
        if attention:
            out.extend(_attention(g, shard, attention, selector))

    def meta(name: str, extra: dict[str, str]) -> dict[str, Any]:
        return _meta(name, g.namespace, {**g.labels, **extra}, owner)

    group_selector = {SERVICE_LABEL: g.pod_labels[SERVICE_LABEL], GROUP_LABEL: g.name}
    out.append(pdb(g.name, meta, group_selector, options))
    out.append(service_object(g.name, meta, {**group_selector, SERVING_LABEL: TRUE}, options.port))
    return out


def render_plan(plan: Plan, fleet: FleetSpec, options: RenderOptions | None = None,
                owner: Owner | None = None) -> list[Manifest]:
    """Every manifest of the plan, sorted by kind, namespace and name (groups with 0 replicas omitted)."""
    opts = options or RenderOptions()
    catalog = fleet_catalog(fleet)
    out: list[Manifest] = []
    seen: set[str] = set()
    try:
        for group in plan.replica_groups:
            if group.replicas == 0:
                continue
            name = group_name(group)
            if name in seen:
                raise RenderError(f"replica_groups: two groups render to the same name {name!r}")
            seen.add(name)
            out.extend(render_group(group, plan, fleet, opts, owner, catalog))
        for service in fleet.services:
            groups = [g for g in plan.replica_groups if g.service == service.id]
            namespace = team_namespace(service.team, opts)
            labels = {MANAGED_BY: MEDLEY, SERVICE_LABEL: label_value(service.id),
                      FLEET_LABEL: label_value(fleet.name), PLAN_LABEL: label_value(plan.id or "unnamed")}

            def meta(name: str, extra: dict[str, str], ns: str = namespace,
                     base: dict[str, str] = labels) -> dict[str, Any]:
                return _meta(name, ns, {**base, **extra}, owner)

            out.extend(service_entry(service, groups, namespace, label_value(service.id), meta, opts))
    except (NodeSelectionError, LayoutError, EntryError) as exc:
        raise RenderError(str(exc)) from None
    except (KeyError, ValueError) as exc:
        if isinstance(exc, RenderError):
            raise
        raise RenderError(str(exc.args[0] if exc.args else exc)) from None
    return sorted(out, key=lambda m: (m["kind"], m["metadata"]["namespace"], m["metadata"]["name"]))
