"""Reading fleet files: YAML → ``FleetSpec`` with errors that point at ``FILE:LINE: field: reason``.

Two passes: pydantic validates shapes and units; :func:`check_fleet` then checks what only the catalog knows
(unknown devices and models, prices, pools that cannot hold a model, TP sizes the model's heads do not divide).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from planner.catalog import Catalog, fleet_catalog
from planner.io.files import OPEN, FileAccess, FileRefused
from planner.io.semantics import file_problems, option_problems, service_problems
from planner.io.strict import YamlProblem, load_yaml, validate_strict
from planner.model.memory import replica_free_gib
from planner.model.roofline import RooflinePerfModel
from planner.schema import DeviceType, FleetSpec, ModelSpec, Pool
from planner.tiers.prices import tier_problems


@dataclass(frozen=True)
class FleetIssue:
    """One problem in a fleet file: where it is and why."""

    file: str
    line: int
    field: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.reason}"


class FleetError(ValueError):
    """A fleet file that cannot be used; ``issues`` lists every problem found, first one first."""

    def __init__(self, issues: Sequence[FleetIssue]):
        self.issues = list(issues)
        super().__init__(str(self.issues[0]) if self.issues else "invalid fleet")


# ---------------------------------------------------------------------------------------------- locating


def _line_of(root: yaml.Node | None, loc: Sequence[str | int]) -> int:
    """1-based line of the deepest YAML node along ``loc`` (a missing key points at its parent)."""
    if root is None:
        return 1
    node: yaml.Node = root
    line = node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            nxt = None
            for key_node, value_node in node.value:
                if key_node.value == part:
                    line = key_node.start_mark.line + 1
                    nxt = value_node
                    break
            if nxt is None:
                return line
            node = nxt
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _field_name(data: Any, loc: Sequence[str | int]) -> str:
    """``services[chat].slo.ttft_ms``: list items named by their id where they have one."""
    out = ""
    cur = data
    for part in loc:
        if isinstance(part, int):
            ident = cur[part].get("id") if isinstance(cur, list) and part < len(cur) and isinstance(
                cur[part], dict) else None
            out += f"[{ident}]" if ident else f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
        try:
            cur = cur[part]
        except (KeyError, IndexError, TypeError):
            cur = None
    return out or "(file)"


_UNIT_RE = re.compile(r"^\s*-?[0-9.]+\s*([a-zA-Z%/]+)\s*$")


def _model_fields(loc: Sequence[str | int]) -> list[str]:
    """Field names valid at ``loc`` (for did-you-mean hints on unknown fields)."""
    model: type[BaseModel] | None = FleetSpec
    for part in loc[:-1]:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part) or next(
            (f for f in model.model_fields.values() if f.alias == part), None)
        if field is None:
            return []
        model = _inner_model(field.annotation)
    if model is None:
        return []
    return [f.alias or name for name, f in model.model_fields.items()]


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _reason(err: dict[str, Any]) -> str:
    kind = err.get("type", "")
    loc = err.get("loc", ())
    value = err.get("input")
    if kind == "extra_forbidden":
        name = str(loc[-1]) if loc else "?"
        close = difflib.get_close_matches(name, _model_fields(loc), n=1)
        return "unknown field" + (f" (did you mean {close[0]!r}?)" if close else "")
    if kind == "missing":
        return "required field is missing"
    if kind in ("int_type", "float_type", "string_type", "bool_type") and isinstance(value, (bool, int, float, str)):
        want = {"int_type": "an integer", "float_type": "a number", "string_type": "text",
                "bool_type": "true or false"}[kind]
        shown = json.dumps(value)
        m = _UNIT_RE.match(value) if isinstance(value, str) else None
        if m and kind != "string_type":
            name = str(loc[-1]) if loc else ""
            unit = name.rsplit("_", 1)[-1] if "_" in name else "the unit in the field name"
            return f"expected a plain number in {unit}, got {value!r} (the unit is in the field name)"
        return f"expected {want}, got {shown}"
    if kind in ("float_parsing", "int_parsing", "float_type", "int_type") and isinstance(value, str):
        m = _UNIT_RE.match(value)
        if m:
            name = str(loc[-1]) if loc else ""
            unit = name.rsplit("_", 1)[-1] if "_" in name else "the unit in the field name"
            return f"expected a plain number in {unit}, got {value!r} (the unit is in the field name)"
    msg = str(err.get("msg", "invalid value"))
    msg = msg.removeprefix("Value error, ")
    return msg


# ---------------------------------------------------------------------------------------------- loading


def parse_fleet(text: str, file: str = "<fleet>", *, access: FileAccess = OPEN,
                base_dir: Path | None = None) -> FleetSpec:
    """Parse and validate fleet YAML text (strict: no duplicate keys, types as written); raises
    :class:`FleetError` with file and line. ``access`` governs the files the fleet names."""
    try:
        data, root = load_yaml(text)
    except YamlProblem as exc:
        raise FleetError([FleetIssue(file, exc.line, exc.field, exc.reason)]) from None
    if not isinstance(data, dict):
        raise FleetError([FleetIssue(file, 1, "(file)", "a fleet file is a YAML mapping with pools and services")])
    try:
        fleet = validate_strict(FleetSpec, data)
    except ValidationError as exc:
        issues = []
        # An unknown field usually explains the "missing" error beside it, so it goes first.
        errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
        for err in errors:
            loc = tuple(err.get("loc", ()))
            # A model-level validator reports "field: reason" at the model's location.
            reason = _reason(dict(err))
            m = re.match(r"^([a-z_][a-z0-9_]*): (.*)$", reason)
            if m and err.get("type") == "value_error":
                loc = (*loc, m.group(1))
                reason = m.group(2)
            issues.append(FleetIssue(file, _line_of(root, loc), _field_name(data, loc), reason))
        raise FleetError(issues) from None
    problems = check_fleet(fleet, access=access, base_dir=base_dir)
    if problems:
        raise FleetError([FleetIssue(file, _line_of(root, loc), _field_name(data, loc), why)
                          for loc, why in problems])
    return fleet


def load_fleet(path: str | Path, *, access: FileAccess = OPEN) -> FleetSpec:
    """Read a fleet file (UTF-8, a regular file, bounded); raises :class:`FleetError` (unreadable files too).

    Trace files the fleet names are checked relative to the fleet file's folder."""
    try:
        text = OPEN.read_text(path)
    except FileRefused as exc:
        raise FleetError([FleetIssue(str(path), 1, "(file)", exc.reason)]) from None
    return parse_fleet(text, str(path), access=access, base_dir=Path(path).parent)


# ---------------------------------------------------------------------------------------------- semantics


def max_replica_memory_gib(model: ModelSpec, device: DeviceType, devices: int) -> float:
    """Usable memory of ``devices`` devices for weights and KV: the performance model's memory budget."""
    return replica_free_gib(device, devices)


MAX_POOL_NODES = 1_000_000


def pool_problems(pool: Pool, cat: Catalog) -> list[tuple[str, str]]:
    """What the catalog says is wrong with one pool: (field, reason) for its device and its price."""
    if pool.device not in cat.devices:
        return [("device", f"unknown device {pool.device!r}" + _hint(pool.device, cat.devices))]
    out: list[tuple[str, str]] = []
    if pool.max_nodes > MAX_POOL_NODES:
        out.append(("max_nodes", f"{pool.max_nodes} is more than {MAX_POOL_NODES:,} nodes: not a pool"))
    if not pool.zone.strip():
        out.append(("zone", "must not be empty (replicas are spread over zones by this name)"))
    dev = cat.devices[pool.device]
    if pool.devices_per_node > dev.max_devices_per_node:
        out.append(("devices_per_node", f"{pool.devices_per_node} exceeds {dev.id}'s {dev.max_devices_per_node} "
                    "per node"))
    if pool.price_usd_per_device_hour is None:
        if pool.price_book is None:
            out.append(("price_usd_per_device_hour",
                        "give a price or a price_book (known: " + ", ".join(sorted(cat.price_books)) + ")"))
        elif pool.price_book not in cat.price_books:
            out.append(("price_book", f"unknown price book {pool.price_book!r}" + _hint(pool.price_book,
                                                                                       cat.price_books)))
        elif pool.device not in cat.price_books[pool.price_book].usd_per_device_hour:
            out.append(("price_book", f"price book {pool.price_book!r} has no price for {pool.device!r}"))
    if not out:
        out.extend(tier_problems(pool, cat))
    return out


def check_fleet(fleet: FleetSpec, catalog: Catalog | None = None, *, access: FileAccess = OPEN,
                base_dir: Path | None = None) -> list[tuple[tuple[str | int, ...], str]]:
    """Problems only the catalog and the performance model reveal, each as (location in the file, reason).

    ``access`` says which files the fleet may name (:mod:`planner.io.files`); the semantic checks are in
    :mod:`planner.io.semantics`."""
    cat = catalog or fleet_catalog(fleet)
    out: list[tuple[tuple[str | int, ...], str]] = []
    pool_ids = {p.id for p in fleet.pools}
    domain_ids = {d.id for d in fleet.power_domains}
    for i, pool in enumerate(fleet.pools):
        out.extend((("pools", i, field), why) for field, why in pool_problems(pool, cat))
        if pool.power_domain is not None and pool.power_domain not in domain_ids:
            out.append((("pools", i, "power_domain"), f"unknown power domain {pool.power_domain!r}"
                        + _hint(pool.power_domain, domain_ids)))
    out += option_problems(fleet)
    files = file_problems(fleet, access, base_dir)
    out += files
    perf = None
    if not any(loc == ("planner", "perf_profile") for loc, _ in files):
        perf = _perf_model(fleet, out)
    max_tp = max(fleet.planner.tp_options)
    max_pp = max(fleet.planner.pp_options)
    for i, svc in enumerate(fleet.services):
        if svc.model not in cat.models:
            out.append((("services", i, "model"), f"unknown model {svc.model!r}" + _hint(svc.model, cat.models)))
            continue
        model = cat.models[svc.model]
        for name in svc.allowed_pools or []:
            if name not in pool_ids:
                out.append((("services", i, "allowed_pools"), f"unknown pool {name!r}" + _hint(name, pool_ids)))
        pools = [p for p in fleet.pools if (svc.allowed_pools is None or p.id in svc.allowed_pools)
                 and p.device in cat.devices and cat.devices[p.device].kind == "accelerator"]
        need_gib = model.weight_bytes_total / 2**30
        best = 0.0
        for p in pools:
            dev = cat.devices[p.device]
            span = min(max_tp * max_pp, p.devices_per_node * max(p.max_nodes, 1))
            best = max(best, max_replica_memory_gib(model, dev, span))
        if pools and best < need_gib:
            out.append((("services", i, "model"),
                        f"{model.id} needs {need_gib:.0f} GiB of weights; the largest replica its pools allow "
                        f"holds {best:.0f} GiB: it fits no device"))
        if not pools:
            out.append((("services", i, "allowed_pools"), "no accelerator pool is allowed for this service"))
        if svc.spread_zones > 1:
            zones = {p.zone for p in pools}
            if len(zones) < svc.spread_zones:
                out.append((("services", i, "spread_zones"),
                            f"asks for {svc.spread_zones} zones but its pools span {len(zones)}"))
    out += service_problems(fleet, cat, perf)
    return out


def _perf_model(fleet: FleetSpec, out: list[tuple[tuple[str | int, ...], str]]) -> RooflinePerfModel | None:
    """The fleet's performance model (its engine profile read), or None with the reason added to ``out``."""
    from planner.io.profiles import calibration_for, known_engines

    try:
        cal = calibration_for(None, Path(fleet.planner.perf_profile) if fleet.planner.perf_profile else None)
    except ValueError as exc:
        out.append((("planner", "perf_profile"), str(exc)))
        return None
    engines = known_engines(cal)
    engine = fleet.planner.perf_engine
    if (fleet.planner.perf_profile is None or "perf_engine" in fleet.planner.model_fields_set) \
            and engine not in engines:
        out.append((("planner", "perf_engine"), f"unknown engine {engine!r} (calibrated: "
                    + ", ".join(sorted(engines)) + ")"))
        return None
    explicit = fleet.planner.perf_profile is None or "perf_engine" in fleet.planner.model_fields_set
    return RooflinePerfModel(replace(cal, engine=engine) if explicit else cal)


def _hint(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
