"""Pods of a serving workload: containers with devices, probes on the engine's ``/health``, graceful drain,
the model cache and ``/dev/shm`` volumes, tolerations and node affinity.

Drain: a pod being removed first leaves its Services' endpoints; ``preStop`` waits ``prestop_seconds`` so
that routers and kube-proxy stop sending to it, then the engine gets SIGTERM and finishes the requests it
holds within ``terminationGracePeriodSeconds`` (``drain_seconds``, the preStop wait included).
"""

from __future__ import annotations

import math
import re
from typing import Any

from provisioner.workloads.options import RenderOptions

HEALTH_PATH = "/health"
PROBE_PERIOD_S = 10


def scaled(quantity: str, factor: int) -> str:
    """A resource quantity times ``factor`` (``32Gi`` × 4 = ``128Gi``; ``500m`` × 3 = ``1500m``)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", quantity.strip())
    if match is None:
        raise ValueError(f"not a resource quantity: {quantity!r}")
    value = float(match.group(1)) * max(1, factor)
    return f"{value:g}{match.group(2)}"


def probes(options: RenderOptions) -> dict[str, Any]:
    """Startup (model loading), readiness and liveness probes on the engine's health endpoint."""
    def get() -> dict[str, Any]:
        return {"path": HEALTH_PATH, "port": "http"}

    return {
        "startupProbe": {"httpGet": get(), "periodSeconds": PROBE_PERIOD_S,
                         "failureThreshold": math.ceil(options.startup_seconds / PROBE_PERIOD_S)},
        "readinessProbe": {"httpGet": get(), "periodSeconds": 5, "failureThreshold": 3, "timeoutSeconds": 3},
        "livenessProbe": {"httpGet": get(), "periodSeconds": 15, "failureThreshold": 4, "timeoutSeconds": 5},
    }


def _env(options: RenderOptions, kv_transfer: bool) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [{"name": "HF_HOME", "value": options.model_cache.mount_path}]
    if options.hf_token_secret:
        env.append({"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {
            "name": options.hf_token_secret, "key": "token", "optional": True}}})
    if kv_transfer:  # NIXL's side channel: the decode side reaches the prefill side at the pod's own address
        env.append({"name": "VLLM_NIXL_SIDE_CHANNEL_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    return env


def engine_container(name: str, command: list[str], image: str, resource: str, devices: int,
                     options: RenderOptions, *, serving: bool, kv_transfer: bool = False) -> dict[str, Any]:
    """One engine container: ``devices`` of ``resource``, CPU and host memory per device, volumes, probes."""
    limits = {resource: str(devices)}
    container: dict[str, Any] = {
        "name": name,
        "image": image,
        "command": command,
        "env": _env(options, kv_transfer),
        "resources": {"requests": {**limits, "cpu": scaled(options.cpu_per_device, devices),
                                   "memory": scaled(options.memory_per_device, devices)},
                      "limits": limits},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                         {"name": "models", "mountPath": options.model_cache.mount_path}],
    }
    if serving:
        container["ports"] = [{"name": "http", "containerPort": options.port, "protocol": "TCP"}]
        container.update(probes(options))
        if options.prestop_seconds:
            container["lifecycle"] = {"preStop": {"exec": {"command": ["sleep", str(options.prestop_seconds)]}}}
    return container


def volumes(options: RenderOptions) -> list[dict[str, Any]]:
    """``/dev/shm`` (memory-backed, for NCCL and the engine's workers) and the model cache."""
    cache = options.model_cache
    if cache.volume == "persistentVolumeClaim":
        if not cache.claim_name:
            raise ValueError("model_cache.claim_name: required with volume persistentVolumeClaim")
        models: dict[str, Any] = {"persistentVolumeClaim": {"claimName": cache.claim_name}}
    elif cache.volume == "hostPath":
        if not cache.host_path:
            raise ValueError("model_cache.host_path: required with volume hostPath")
        models = {"hostPath": {"path": cache.host_path, "type": "DirectoryOrCreate"}}
    else:
        models = {"emptyDir": {"sizeLimit": cache.size_limit}}
    return [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": options.shm_size}},
            {"name": "models", **models}]


def pod_spec(containers: list[dict[str, Any]], *, affinity: dict[str, Any], resource: str,
             selector: dict[str, str], spread: bool, options: RenderOptions) -> dict[str, Any]:
    """A pod spec: the containers, device toleration, affinity, drain period, volumes, soft host spread."""
    spec: dict[str, Any] = {
        "containers": containers,
        "tolerations": [{"key": resource, "operator": "Exists"}, *options.tolerations],
        "terminationGracePeriodSeconds": options.drain_seconds,
        "volumes": volumes(options),
    }
    if affinity:
        spec["affinity"] = affinity
    if spread:  # replicas of one workload on different nodes where the scheduler can (never forced)
        spec["topologySpreadConstraints"] = [
            {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
             "labelSelector": {"matchLabels": dict(selector)}}]
    return spec
