"""One entry point per service, and Services that select only serving pods.

A service whose plan runs only unified replicas is one ``Service`` named after it, selecting its serving
pods (LeaderWorkerSet leaders and Deployment pods; never Ray workers or attention-offload workers).

A service whose plan splits prefill from decode is fronted by the vLLM Router (``vllm-project/router``), a
``Deployment`` ``<service>-router`` behind the ``Service`` ``<service>``. For each request the router sends the
prompt to a prefill replica (``max_tokens=1``, asking for a remote decode), takes the ``kv_transfer_params``
it returns and sends the request on to a decode replica, which pulls the KV cache from the prefill replica
over NIXL. It reaches the two phases through the Services ``<service>-prefill`` and ``<service>-decode``
(serving pods that run each phase; unified replicas of such a service run with ``kv_both`` and are in both).

Why a router Deployment and not a Gateway API Inference Extension ``InferencePool``: an InferencePool needs a
Gateway implementation with the extension installed and an endpoint picker, and the upstream picker does not
carry out vLLM's prefill→decode hand-off (llm-d's adds a sidecar on every decode pod for it). The router does
the hand-off itself, needs no CRD or gateway, and the Service gives every service one stable address. It is
given the phase Services rather than its own pod discovery so that it needs no RBAC in team namespaces; the
cost is that its cache-aware prefill policy sees Service addresses, not pods. To let it discover pods, replace
``RenderOptions.router_args`` with ``--service-discovery --prefill-selector medley.dev/service=S
medley.dev/prefill=true …`` and grant its ServiceAccount ``list``/``watch`` on pods.

Only vLLM's hand-off is rendered: SGLang and TensorRT-LLM services whose plan disaggregates are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from planner.roles import ROLES
from planner.schema import ReplicaGroup, Service
from provisioner.workloads.labels import (
    COMPONENT_LABEL,
    DECODE_LABEL,
    MANAGED_BY,
    MEDLEY,
    PREFILL_LABEL,
    SERVICE_LABEL,
    SERVING_LABEL,
    TRUE,
    dns_label,
)
from provisioner.workloads.options import RenderOptions
from provisioner.workloads.pods import scaled

Manifest = dict[str, Any]
Meta = Callable[[str, dict[str, str]], dict[str, Any]]  # (name, extra labels) → metadata


class EntryError(ValueError):
    """A service whose entry point cannot be rendered; the message names the service."""


def disaggregated(groups: list[ReplicaGroup]) -> bool:
    """Whether a service's plan splits prefill from decode."""
    return any(ROLES[g.configuration.role].disaggregated for g in groups if g.replicas > 0)


def service_object(name: str, meta: Meta, selector: dict[str, str], port: int) -> Manifest:
    """A ClusterIP Service on the ``http`` port."""
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(name, {}),
            "spec": {"type": "ClusterIP", "selector": dict(selector),
                     "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]}}


def pdb(name: str, meta: Meta, selector: dict[str, str], options: RenderOptions) -> Manifest:
    """At most one pod of ``selector`` disrupted at a time (``policy/v1`` or ``policy/v1beta1``)."""
    return {"apiVersion": options.pdb_api_version, "kind": "PodDisruptionBudget", "metadata": meta(name, {}),
            "spec": {"maxUnavailable": 1, "selector": {"matchLabels": dict(selector)}}}


def _router(service: Service, namespace: str, base: str, meta: Meta, options: RenderOptions) -> list[Manifest]:
    labels = {MANAGED_BY: MEDLEY, SERVICE_LABEL: base, COMPONENT_LABEL: "router"}
    port = options.port

    def url(phase: str) -> str:
        return f"http://{service_name(service)}-{phase}.{namespace}.svc:{port}"

    container: dict[str, Any] = {
        "name": "router", "image": options.router_image,
        "args": ["--vllm-pd-disaggregation", "--prefill", url("prefill"), "--decode", url("decode"),
                 "--host", "0.0.0.0", "--port", str(port), *options.router_args],
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 15, "failureThreshold": 4},
        "resources": {"requests": {"cpu": "1", "memory": "1Gi"}, "limits": {"memory": scaled("2Gi", 1)}},
    }
    if options.prestop_seconds:
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(options.prestop_seconds)]}}}
    name = f"{service_name(service)}-router"
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta(name, {COMPONENT_LABEL: "router"}),
        "spec": {"replicas": options.router_replicas, "selector": {"matchLabels": labels},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                 "template": {"metadata": {"labels": dict(labels)}, "spec": {
                     "containers": [container], "terminationGracePeriodSeconds": options.drain_seconds,
                     "topologySpreadConstraints": [{
                         "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                         "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": labels}}]}}},
    }
    return [deployment, pdb(name, meta, labels, options), service_object(service_name(service), meta, labels, port)]


def service_name(service: Service) -> str:
    """The name of a service's entry-point Service (its id as a DNS label)."""
    return dns_label(service.id, limit=45)


def service_entry(service: Service, groups: list[ReplicaGroup], namespace: str, base: str, meta: Meta,
                  options: RenderOptions) -> list[Manifest]:
    """The service's entry point: one Service (unified), or router + phase Services (prefill/decode)."""
    if not any(g.replicas > 0 for g in groups):
        return []
    name = service_name(service)
    if not disaggregated(groups):
        return [service_object(name, meta, {SERVICE_LABEL: base, SERVING_LABEL: TRUE}, options.port)]
    if service.engine != "vllm":
        raise EntryError(f"services[{service.id}].engine: prefill/decode disaggregation is rendered for vllm "
                         f"only (the vLLM Router hand-off), not {service.engine}")
    return [
        service_object(f"{name}-prefill", meta, {SERVICE_LABEL: base, PREFILL_LABEL: TRUE}, options.port),
        service_object(f"{name}-decode", meta, {SERVICE_LABEL: base, DECODE_LABEL: TRUE}, options.port),
        *_router(service, namespace, base, meta, options),
    ]
