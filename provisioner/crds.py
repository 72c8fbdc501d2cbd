"""CustomResourceDefinitions of group ``medley.dev``, generated from the planner's pydantic schema.

The planner's models are the one vocabulary: ``GPUPool.spec`` is a ``Pool`` without its id (the object's
name is the id), ``LLMService.spec`` a ``Service`` without id and team (name and namespace stand for
them), ``PowerDomain.spec`` a ``PowerDomain`` without id, and ``FleetPlan.status.plan`` a ``Plan``.
Pydantic's JSON Schema is rewritten into a *structural* OpenAPI v3 schema as Kubernetes requires it:
``$ref`` inlined, ``Optional[X]`` turned into ``X`` with ``nullable``, numeric exclusive bounds in the
OpenAPI 3.0 boolean form, no ``additionalProperties: false`` (the API server prunes unknown fields).

Regenerate the files in ``k8s/crds`` with ``python -m provisioner.crds k8s/crds``.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from planner.schema import Plan, PlannerOptions, Pool, PowerDomain, Service

GROUP = "medley.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Keywords a structural schema keeps from pydantic's output; the rest (title, examples …) is dropped.
_KEEP = {
    "type", "properties", "items", "additionalProperties", "required", "enum", "pattern", "minimum",
    "maximum", "minLength", "maxLength", "minItems", "maxItems", "description", "format",
}


def _resolve(node: Any, defs: dict[str, Any]) -> Any:
    """Inline ``$ref`` and merge ``allOf`` of one element (pydantic's way to attach a description)."""
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return _resolve({**target, **extra}, defs)
        if "allOf" in node and len(node["allOf"]) == 1:
            inner = _resolve(node["allOf"][0], defs)
            return {**inner, **{k: _resolve(v, defs) for k, v in node.items() if k != "allOf"}}
        return {k: _resolve(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(x, defs) for x in node]
    return node


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    """One pydantic JSON Schema node (refs resolved) as a structural OpenAPI v3 node."""
    node = dict(node)
    nullable = False
    if "anyOf" in node:
        options = node.pop("anyOf")
        variants = [v for v in options if v.get("type") != "null"]
        nullable = len(variants) < len(options)
        if len(variants) != 1:
            raise ValueError(f"cannot express union {variants!r} structurally")
        node = {**variants[0], **node}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    out: dict[str, Any] = {}
    if "exclusiveMinimum" in node:
        out["minimum"], out["exclusiveMinimum"] = node.pop("exclusiveMinimum"), True
    if "exclusiveMaximum" in node:
        out["maximum"], out["exclusiveMaximum"] = node.pop("exclusiveMaximum"), True
    for key, value in node.items():
        if key not in _KEEP:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value)
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _structural(value)
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string" if all(isinstance(v, str) for v in out["enum"]) else "integer"
    if "type" not in out:
        raise ValueError(f"schema node without a type: {node!r}")
    if out["type"] == "object" and "properties" not in out and "additionalProperties" not in out:
        raise ValueError(f"object without properties: {node!r}")
    if nullable:
        out["nullable"] = True
    return out


def openapi_schema(model: type[BaseModel], *, drop: tuple[str, ...] = ()) -> dict[str, Any]:
    """Structural OpenAPI v3 schema of a planner model, without the fields in ``drop``."""
    raw = model.model_json_schema(mode="validation", by_alias=True)
    resolved = _resolve({k: v for k, v in raw.items() if k != "$defs"}, raw.get("$defs", {}))
    for name in drop:
        resolved.get("properties", {}).pop(name, None)
    schema = _structural(resolved)
    if "required" in schema:
        schema["required"] = [r for r in schema["required"] if r not in drop]
        if not schema["required"]:
            del schema["required"]
    return schema


_CONDITION = {
    "type": "object",
    "required": ["type", "status"],
    "properties": {
        "type": {"type": "string",
                 "description": "Planned, Progressing, Ready, Degraded (FleetPlan, LLMService), Valid, WithinBudget"},
        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
        "reason": {"type": "string"},
        "message": {"type": "string"},
        "lastTransitionTime": {"type": "string", "format": "date-time"},
        "observedGeneration": {"type": "integer"},
    },
}


def _status(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {
        "observedGeneration": {"type": "integer"},
        "conditions": {
            "type": "array", "items": _CONDITION,
            "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"],
        },
    }
    props.update(extra or {})
    return {"type": "object", "properties": props}


def _crd(kind: str, plural: str, scope: str, spec: dict[str, Any], status: dict[str, Any],
         columns: list[dict[str, Any]], short: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}", "labels": {"app.kubernetes.io/part-of": "medley"}},
        "spec": {
            "group": GROUP,
            "scope": scope,
            "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List",
                      "shortNames": short, "categories": ["medley"]},
            "versions": [{
                "name": VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": [
                    *columns, {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}],
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "required": ["spec"],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec,
                        "status": status,
                    },
                }},
            }],
        },
    }


def fleetplan_spec_schema() -> dict[str, Any]:
    """``FleetPlan.spec``: the mode, the plan id a person approved, and the planner's options."""
    return {
        "type": "object",
        "required": ["mode"],
        "properties": {
            "mode": {"type": "string", "enum": ["auto", "approve", "dry-run"], "default": "approve",
                     "description": "auto: plan and apply; approve: apply a plan once its id is approved; "
                                    "dry-run: plan and report the diff only"},
            "approvedPlanId": {"type": "string", "description": "in approve mode, the plan id to apply"},
            "selector": {"type": "object", "description": (
                "which GPUPools, LLMServices and PowerDomains belong to this fleet (default: all of them)"),
                "properties": {"matchLabels": {"type": "object", "additionalProperties": {"type": "string"}}}},
            "planner": openapi_schema(PlannerOptions),
        },
    }


def custom_resource_definitions() -> dict[str, dict[str, Any]]:
    """File name → CRD manifest for GPUPool, LLMService, PowerDomain and FleetPlan."""
    ready = {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'}
    return {
        "gpupools.yaml": _crd(
            "GPUPool", "gpupools", "Cluster", openapi_schema(Pool, drop=("id",)), _status({
                "plannedDevices": {"type": "integer", "description": "devices the current plan takes from the pool"},
                "plannedNodes": {"type": "integer", "description": "whole nodes the current plan takes"},
                "planId": {"type": "string"}}),
            [{"name": "Device", "type": "string", "jsonPath": ".spec.device"},
             {"name": "Per-Node", "type": "integer", "jsonPath": ".spec.devices_per_node"},
             {"name": "Max-Nodes", "type": "integer", "jsonPath": ".spec.max_nodes"},
             {"name": "Planned-Nodes", "type": "integer", "jsonPath": ".status.plannedNodes"},
             {"name": "Zone", "type": "string", "jsonPath": ".spec.zone"}],
            ["gpool"]),
        "llmservices.yaml": _crd(
            "LLMService", "llmservices", "Namespaced", openapi_schema(Service, drop=("id", "team")),
            _status({"plannedReplicas": {"type": "integer", "description": "replicas the current plan gives it"},
                     "replicas": {"type": "integer", "description": "replicas its workloads ask for now"},
                     "readyReplicas": {"type": "integer"}}),
            [{"name": "Model", "type": "string", "jsonPath": ".spec.model"},
             {"name": "Rate-RPS", "type": "number", "jsonPath": ".spec.traffic.rate_rps"},
             {"name": "TTFT-ms", "type": "number", "jsonPath": ".spec.slo.ttft_ms"},
             {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"}, ready],
            ["llmsvc"]),
        "powerdomains.yaml": _crd(
            "PowerDomain", "powerdomains", "Cluster", openapi_schema(PowerDomain, drop=("id",)), _status({
                "plannedWatts": {"type": "number", "description": "watts the current plan expects of the domain"},
                "planId": {"type": "string"}}),
            [{"name": "Budget-W", "type": "number", "jsonPath": ".spec.budget_watts"},
             {"name": "Planned-W", "type": "number", "jsonPath": ".status.plannedWatts"}],
            ["pdom"]),
        "fleetplans.yaml": _crd(
            "FleetPlan", "fleetplans", "Cluster", fleetplan_spec_schema(),
            _status({
                "plan": openapi_schema(Plan, drop=("fleet_snapshot",)),
                "planId": {"type": "string"},
                "appliedPlanId": {"type": "string"},
                "inputsDigest": {"type": "string", "description": "digest of the specs the plan was made from"},
                "diff": {"type": "string", "description": "what applying the plan would change"},
                "canary": {"type": "object", "description": "a device-mix change on trial (provisioner.canary)",
                           "properties": {
                               "state": {"type": "string", "enum": ["Running", "Promoted", "RolledBack"]},
                               "targetPlanId": {"type": "string"}, "canaryPlanId": {"type": "string"},
                               "services": {"type": "array", "items": {"type": "string"}},
                               "startedAt": {"type": "number"}, "decidedAt": {"type": "number"},
                               "reason": {"type": "string"},
                               "basePlan": openapi_schema(Plan, drop=("fleet_snapshot",))}},
            }),
            [{"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
             {"name": "Plan", "type": "string", "jsonPath": ".status.planId"},
             {"name": "Applied", "type": "string", "jsonPath": ".status.appliedPlanId"},
             {"name": "Cost-USD-h", "type": "number", "jsonPath": ".status.plan.cost_usd_per_hour"}, ready],
            ["fplan"]),
    }


def render_yaml(manifest: dict[str, Any]) -> str:
    """A manifest as the YAML text written to ``k8s/``."""
    header = "# Generated by `python -m provisioner.crds k8s/crds` from planner/schema.py; do not edit.\n"
    return header + yaml.safe_dump(manifest, sort_keys=False, width=110)


def write_crds(directory: Path) -> list[Path]:
    """Write every CRD into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, manifest in custom_resource_definitions().items():
        path = directory / name
        path.write_text(render_yaml(manifest), encoding="utf-8")
        paths.append(path)
    return paths


if __name__ == "__main__":  # pragma: no cover - a developer's regeneration command
    for written in write_crds(Path(sys.argv[1] if len(sys.argv) > 1 else "k8s/crds")):
        print(written)
