"""Scenarios: named lists of what-if expressions, as a scenarios file writes them.

A scenarios file is a YAML list of ``{name, set: [expression, ...]}`` (or ``{scenarios: [...]}``); errors name
the file and line. ``file_reader`` is the one place that reads the files an ``add-…=FILE`` expression names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError

from planner.schema import Value
from planner.whatif.expressions import Reader, ScenarioError


class Scenario(Value):
    """A named list of expressions applied together."""

    name: str
    set: list[str] = Field(min_length=1)


def file_reader(*base_dirs: Path) -> Reader:
    """A reader of YAML files named as given, else relative to each of ``base_dirs`` in turn."""

    def read(name: str) -> Any:
        path = Path(name)
        if not path.is_absolute() and not path.exists():
            path = next((d / path for d in base_dirs if (d / path).exists()), path)
        return yaml.safe_load(path.read_text(encoding="utf-8"))

    return read


def load_scenarios(text: str, file: str = "<scenarios>") -> list[Scenario]:
    """Scenarios file: a list of ``{name, set: [expr, ...]}`` (or ``{scenarios: [...]}``)."""
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ScenarioError(file, f"not valid YAML: {getattr(exc, 'problem', exc)}",
                            where=f"{file}:{(mark.line + 1) if mark else 1}:") from None
    if isinstance(data, dict) and "scenarios" in data:
        data = data["scenarios"]
        root = _child(root, "scenarios")
    if not isinstance(data, list) or not data:
        raise ScenarioError(file, "a scenarios file is a list of {name, set: [expressions]}", where=f"{file}:1:")
    out = []
    seen: set[str] = set()
    for i, item in enumerate(data):
        node = _child(root, i)
        line = node.start_mark.line + 1 if node is not None else 1
        if isinstance(item, dict) and isinstance(item.get("set"), str):
            item = {**item, "set": [item["set"]]}
        try:
            sc = Scenario.model_validate(item)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err.get("loc", ())) or "(item)"
            raise ScenarioError(str(item.get("name", i)) if isinstance(item, dict) else str(i),
                                f"{loc}: {err.get('msg', 'invalid')}", where=f"{file}:{line}:") from None
        if sc.name in seen:
            raise ScenarioError(sc.name, "duplicate scenario name", where=f"{file}:{line}:")
        seen.add(sc.name)
        out.append(sc)
    return out


def scenario_line(text: str, expr: str) -> int:
    """1-based line of the first line of a scenarios file that holds ``expr`` (for error messages)."""
    for n, line in enumerate(text.splitlines(), 1):
        if expr in line:
            return n
    return 1


def _child(node: yaml.Node | None, key: str | int) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode) and isinstance(key, str):
        return next((v for k, v in node.value if k.value == key), None)
    if isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
        child: yaml.Node = node.value[key]
        return child
    return None

