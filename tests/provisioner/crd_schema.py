"""Custom resources checked against their CRD's schema the way an API server does: types, enums and required
fields (JSON Schema), and no field the schema does not know (the server would prune it silently)."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parent / "crds"


@cache
def vendored_crd(kind: str) -> dict[str, Any]:
    """The vendored CRD of ``kind`` (parsed once)."""
    for path in sorted(CRDS.glob("*.yaml")):
        crd = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        if crd["spec"]["names"]["kind"] == kind:
            return dict(crd)
    raise KeyError(kind)


def _to_jsonschema(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _to_jsonschema(v) for k, v in node.items() if not k.startswith("x-kubernetes") and k != "nullable"}
        if node.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        if node.get("nullable") and "type" in out:
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(node, list):
        return [_to_jsonschema(v) for v in node]
    return node


def unknown_fields(obj: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Paths of fields in ``obj`` that a structural schema would prune."""
    out: list[str] = []
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return out
    if isinstance(obj, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key, value in obj.items():
            if props is not None and key in props:
                out += unknown_fields(value, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                out += unknown_fields(value, extra, f"{path}.{key}")
            elif props is not None and not (path == "" and key in ("apiVersion", "kind", "metadata")):
                out.append(f"{path}.{key}")
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(obj):
            out += unknown_fields(item, schema["items"], f"{path}[{i}]")
    return out


def validate_custom_resource(obj: dict[str, Any]) -> None:
    """Raise when ``obj`` breaks its vendored CRD's schema or carries fields the schema does not know."""
    crd = vendored_crd(obj["kind"])
    version = next(v for v in crd["spec"]["versions"] if f"{crd['spec']['group']}/{v['name']}" == obj["apiVersion"])
    schema = version["schema"]["openAPIV3Schema"]
    jsonschema.Draft4Validator(_to_jsonschema(schema)).validate(obj)
    unknown = unknown_fields(obj, schema)
    if unknown:
        raise jsonschema.ValidationError(f"unknown fields: {', '.join(unknown[:5])}")
