"""Strict parsing shared by every front door: YAML without duplicate keys, and types checked as written.

``load_yaml`` composes a document once (with libyaml's parser where PyYAML has it, ten times faster than the
pure-Python one) and constructs it with a loader that refuses a key given twice in one mapping (a second
``services:`` block is an error, not a replacement), keeps dates as the text written, and bounds what
aliases expand to. ``validate_strict`` validates data as JSON in pydantic's strict mode, so
``max_nodes: true`` is not 1 and ``rate_rps: "24"`` is not 24, while enums and literals still come from
their text. The command line (fleet files), the REST API (request bodies) and the controller (custom
resources) all validate through it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, TypeVar

import yaml
from pydantic import BaseModel
from yaml.constructor import ConstructorError

M = TypeVar("M", bound=BaseModel)
MAX_NODES = 2_000_000  # values a document may expand to (aliases included): a billion laughs stops here


class YamlProblem(ValueError):
    """YAML that is not accepted; ``line`` is 1-based, ``field`` the dotted key where known."""

    def __init__(self, line: int, field: str, reason: str) -> None:
        super().__init__(f"{line}: {field}: {reason}")
        self.line = line
        self.field = field
        self.reason = reason


# libyaml's parser with PyYAML's safe constructor and resolver (which the strict loader overrides below).
if TYPE_CHECKING:
    SafeLoader = yaml.SafeLoader
else:
    SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def safe_load(text: str) -> Any:
    """PyYAML's safe load on libyaml's parser where PyYAML has it: for the files Medley ships (catalog,
    calibration); what users write goes through ``load_yaml``."""
    return yaml.load(text, Loader=SafeLoader)


class _StrictLoader(SafeLoader):
    """Safe loader that refuses duplicate keys and leaves timestamps as strings."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, Hashable) and key in seen:
                raise ConstructorError(
                    None, None, f"duplicate key {key!r} (first at line {seen[key]}); a key may appear once "
                    "in a mapping", key_node.start_mark)
            if isinstance(key, Hashable):
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


# Dates stay the text written (the schema's date fields are strings), and numbers follow YAML 1.2, so
# ``1e3`` is a number as it is in JSON (YAML 1.1 wants ``1.0e+3`` and reads ``1e3`` as text).
_FLOAT = "tag:yaml.org,2002:float"
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in ("tag:yaml.org,2002:timestamp", _FLOAT)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    _FLOAT, re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                        |[-+]?\.(?:inf|Inf|INF)
                        |\.(?:nan|NaN|NAN))$""", re.X), list("-+0123456789."))


def load_yaml(text: str) -> tuple[Any, yaml.Node | None]:
    """The data of one YAML document and its node tree (for line numbers); :class:`YamlProblem` otherwise."""
    loader = _StrictLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        if problem == "found character that cannot start any token" and mark is not None:
            problem = f"found character {text[mark.index:mark.index + 1]!r} that cannot start any token"
        if "duplicate key" in problem:
            raise YamlProblem(line, "(yaml)", problem) from None
        raise YamlProblem(line, "(yaml)", f"not valid YAML: {problem}") from None
    finally:
        loader.dispose()
    _bounded(data)
    return data, root


def _bounded(data: Any) -> None:
    """Refuse documents whose values (aliases expanded) exceed ``MAX_NODES``."""
    count = 0
    stack = [data]
    while stack:
        item = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise YamlProblem(1, "(yaml)", f"expands to more than {MAX_NODES:,} values (aliases nested too deep)")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def non_finite(data: Any, path: tuple[str | int, ...] = ()) -> tuple[str | int, ...] | None:
    """Location of the first infinite or NaN number in ``data``, or None."""
    if isinstance(data, float) and not math.isfinite(data):
        return path
    if isinstance(data, dict):
        for k, v in data.items():
            found = non_finite(v, (*path, str(k)))
            if found is not None:
                return found
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found = non_finite(v, (*path, i))
            if found is not None:
                return found
    return None


def validate_strict(model: type[M], data: Any) -> M:
    """``model`` from plain data with types as written (JSON strict mode); raises pydantic's ValidationError.

    Infinite and NaN numbers pass through to the fields, whose own bounds refuse them.
    """
    text = json.dumps(data, allow_nan=True, default=_unsupported)
    return model.model_validate_json(text, strict=True)


def _unsupported(value: Any) -> Any:
    # YAML can still produce bytes (!!binary) or sets (!!set): neither is a value any field takes.
    return f"<{type(value).__name__}>"
