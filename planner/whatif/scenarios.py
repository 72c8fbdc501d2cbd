"""What-if planning: scenario expressions that change a fleet, run through the planner against the baseline.

A scenario is a list of expressions; each names one change to the fleet::

    rate*=2                       every service's request rate doubles (also ``=``, ``+=``)
    rate[chat]=10                 one service's rate
    price[h100-sxm]=2.5           $/device-hour of every pool of a device type (or ``price[POOL]``)
    remove-pool=h100-a            a pool is lost (``remove-zone=zone-b`` loses every pool in a zone)
    pool[h20-a].max_nodes=16      a pool field: max_nodes, devices_per_node, price_usd_per_device_hour,
                                  node_overhead_watts
    slo[chat].tpot_ms=50          an SLO field: ttft_ms, tpot_ms, percentile (``slo.tpot_ms`` for all)
    power[row-a].budget_watts=4e4 a power domain field: budget_watts, oversubscription_ratio
    add-service=svc.yaml          a service (mapping) or services (list) from a file; ``add-model=`` and
                                  ``add-pool=`` alike (an existing id is replaced)
    remove-service=code

Parsing is syntax only (:func:`parse_expression`); :func:`apply_changes` checks names against the fleet and
returns a new fleet, so a scenario is a function ``FleetSpec → FleetSpec``. A sweep puts a range where the
value goes: ``rate=1..64x2`` (geometric), ``slo[chat].tpot_ms=40..120+20`` (arithmetic), ``rate*=1,2,3``.
:func:`run_scenarios` and :func:`run_sweep` are what the CLI and the REST API call.
"""

from __future__ import annotations

import difflib
import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError

from planner.io.fleetfile import check_fleet
from planner.schema import FleetSpec, ModelSpec, Plan, Pool, PowerDomain, Service, Value

Op = Literal["=", "*=", "+="]
ChangeKind = Literal["rate", "price", "pool", "slo", "power", "remove-pool", "remove-zone", "remove-service",
                     "add-service", "add-model", "add-pool"]

POOL_FIELDS = ("max_nodes", "devices_per_node", "price_usd_per_device_hour", "node_overhead_watts")
SLO_FIELDS = ("ttft_ms", "tpot_ms", "percentile")
POWER_FIELDS = ("budget_watts", "oversubscription_ratio")
_INT_FIELDS = {"max_nodes", "devices_per_node"}
_MAX_SWEEP_POINTS = 200

# Reads a file named in an expression (add-service=FILE); injected so the core does no I/O of its own.
Reader = Callable[[str], Any]
Progress = Callable[[int, int, str], None]
_Doc = TypeVar("_Doc", Service, Pool, ModelSpec)


class ScenarioError(ValueError):
    """An expression that cannot be used: the expression, the offending part (start, end) and why."""

    def __init__(self, expr: str, reason: str, start: int = 0, end: int | None = None, where: str = "") -> None:
        self.expr = expr
        self.reason = reason
        self.start = start
        self.end = len(expr) if end is None else end
        self.where = where
        super().__init__(self.line())

    def line(self) -> str:
        """One line: ``WHERE 'EXPR': reason``."""
        prefix = f"{self.where} " if self.where else ""
        return f"{prefix}{self.expr!r}: {self.reason}"

    def caret(self) -> str:
        """The expression with a caret line under the offending part."""
        width = max(self.end - self.start, 1)
        return f"{self.expr}\n{' ' * self.start}{'^' * width}"

    def located(self, where: str) -> ScenarioError:
        """The same error, said to come from ``where`` (a flag or a file position)."""
        return ScenarioError(self.expr, self.reason, self.start, self.end, where)


class Change(Value):
    """One parsed expression: what it changes, how, and where its parts stand in the text."""

    text: str
    kind: ChangeKind
    target: str | None = None  # the id in brackets, or the id after remove-…=
    field: str | None = None
    op: Op = "="
    value: float | None = None
    document: Any = None  # the loaded file of add-service / add-model
    target_span: tuple[int, int] = (0, 0)
    value_span: tuple[int, int] = (0, 0)


class Scenario(Value):
    """A named list of expressions applied together."""

    name: str
    set: list[str] = Field(min_length=1)


# ---------------------------------------------------------------------------------------------- parsing

_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_EXPR_RE = re.compile(
    r"^\s*(?P<head>[a-z][a-z-]*)(?:\[(?P<target>[^\]]*)\])?(?:\.(?P<field>[a-z_]+))?\s*"
    r"(?P<op>\*=|\+=|=)\s*(?P<value>.*?)\s*$")
_HEADS = ("rate", "price", "pool", "slo", "power", "remove-pool", "remove-zone", "remove-service", "add-service",
          "add-model", "add-pool")


def split_expressions(text: str) -> list[str]:
    """``a; b`` → ``['a', 'b']`` (empty parts dropped)."""
    return [p.strip() for p in text.split(";") if p.strip()]


def parse_expression(expr: str, read: Reader | None = None) -> Change:
    """Parse one expression (syntax only); ``read`` loads the files add-service/add-model name."""
    m = _EXPR_RE.match(expr)
    if not m:
        raise ScenarioError(expr, "expected NAME[ID].FIELD OP VALUE with OP one of =, *=, += "
                                  "(e.g. rate[chat]*=2, price[h100-sxm]=2.5)")
    head = m.group("head")
    if head not in _HEADS:
        raise ScenarioError(expr, f"unknown change {head!r}" + _hint(head, _HEADS) + "; known: "
                            + ", ".join(_HEADS), *m.span("head"))
    target = m.group("target")
    field = m.group("field")
    op: Op = m.group("op")  # type: ignore[assignment]  # the regex allows only these three
    raw = m.group("value")
    vspan = m.span("value")
    tspan = m.span("target") if target is not None else m.span("head")
    if head in ("remove-pool", "remove-zone", "remove-service", "add-service", "add-model", "add-pool"):
        if target is not None or field is not None or op != "=":
            raise ScenarioError(expr, f"write {head}=ID", m.start("head"), m.start("value"))
        if not raw:
            raise ScenarioError(expr, f"{head} needs a value", *vspan)
        if head.startswith("add-"):
            if read is None:
                raise ScenarioError(expr, "files cannot be read here; send the document itself", *vspan)
            try:
                doc = read(raw)
            except (OSError, yaml.YAMLError) as exc:
                reason = getattr(exc, "strerror", None) or str(exc).splitlines()[0]
                raise ScenarioError(expr, f"cannot read {raw}: {reason}", *vspan) from None
            return Change(text=expr, kind=head, target=raw, document=doc, target_span=vspan,
                          value_span=vspan)
        return Change(text=expr, kind=head, target=raw, target_span=vspan, value_span=vspan)
    fields = {"rate": (), "price": (), "pool": POOL_FIELDS, "slo": SLO_FIELDS, "power": POWER_FIELDS}[head]
    if head in ("rate", "price"):
        if field is not None:
            raise ScenarioError(expr, f"{head} takes no field: write {head}[ID]{op}VALUE", *m.span("field"))
    else:
        if field is None:
            raise ScenarioError(expr, f"{head} needs a field: {head}[ID].FIELD (one of {', '.join(fields)})",
                                m.end("head"), m.start("op"))
        if field not in fields:
            raise ScenarioError(expr, f"unknown {head} field {field!r}" + _hint(field, fields)
                                + f"; known: {', '.join(fields)}", *m.span("field"))
    if head in ("pool", "power") and not target:
        raise ScenarioError(expr, f"{head} needs an id: {head}[ID].{field}", m.end("head"), m.start("op"))
    if target is not None and not target:
        raise ScenarioError(expr, "empty id in brackets", *m.span("target"))
    value = _number(expr, raw, vspan)
    return Change(text=expr, kind=head, target=target, field=field, op=op, value=value,
                  target_span=tspan, value_span=vspan)


def _number(expr: str, raw: str, span: tuple[int, int]) -> float:
    if not re.fullmatch(_NUM, raw):
        what = "a value is missing" if not raw else f"expected a number, got {raw!r}"
        if raw and re.search(r"\.\.|,", raw):
            what += " (ranges belong in --sweep)"
        raise ScenarioError(expr, what, *span)
    v = float(raw)
    if not math.isfinite(v):
        raise ScenarioError(expr, "the value must be finite", *span)
    return v


def _hint(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ---------------------------------------------------------------------------------------------- applying


def _combine(old: float, op: Op, value: float) -> float:
    if op == "*=":
        return old * value
    if op == "+=":
        return old + value
    return value


def _validated(model: type[BaseModel], current: BaseModel, update: Mapping[str, Any], change: Change) -> Any:
    """``current`` with ``update`` applied and validated, errors pointing at the value."""
    try:
        return model.model_validate({**current.model_dump(), **update})
    except ValidationError as exc:
        err = exc.errors()[0]
        msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
        raise ScenarioError(change.text, f"{change.field or change.kind}: {msg}", *change.value_span) from None


def _field_value(change: Change, old: float) -> float | int:
    assert change.value is not None
    new = _combine(old, change.op, change.value)
    if change.field in _INT_FIELDS:
        if not math.isclose(new, round(new), abs_tol=1e-9):
            raise ScenarioError(change.text, f"{change.field} must be a whole number, got {new:g}",
                                *change.value_span)
        return int(round(new))
    return new


def _pick(change: Change, known: Sequence[str], what: str) -> str:
    target = change.target or ""
    if target not in known:
        raise ScenarioError(change.text, f"unknown {what} {target!r}" + _hint(target, known), *change.target_span)
    return target


def apply_change(fleet: FleetSpec, change: Change, catalog_prices: Mapping[str, float] | None = None) -> FleetSpec:
    """The fleet with one change made; raises :class:`ScenarioError` for names the fleet does not have."""
    services = list(fleet.services)
    pools = list(fleet.pools)
    domains = list(fleet.power_domains)
    models = list(fleet.models)
    svc_ids = [s.id for s in services]
    kind = change.kind
    if kind == "rate":
        chosen = set(svc_ids) if change.target is None else {_pick(change, svc_ids, "service")}
        out = []
        for s in services:
            if s.id in chosen:
                assert change.value is not None
                rate = _combine(s.traffic.rate_rps, change.op, change.value)
                traffic = _validated(type(s.traffic), s.traffic, {"rate_rps": rate},
                                     change.model_copy(update={"field": "rate_rps"}))
                s = s.model_copy(update={"traffic": traffic})
            out.append(s)
        services = out
    elif kind == "price":
        devices = sorted({p.device for p in pools})
        pool_ids = [p.id for p in pools]
        target = change.target
        if target is not None and target not in pool_ids and target not in devices:
            raise ScenarioError(change.text, f"no pool or pool device {target!r}"
                                + _hint(target, [*devices, *pool_ids]), *change.target_span)
        out_pools = []
        for p in pools:
            if target is None or p.id == target or (target not in pool_ids and p.device == target):
                old = p.price_usd_per_device_hour
                if old is None:
                    old = (catalog_prices or {}).get(p.id)
                if old is None and change.op != "=":
                    raise ScenarioError(change.text, f"pool {p.id} has no price of its own to scale; set it "
                                                     f"with price[{p.id}]=VALUE", *change.target_span)
                new = _field_value(change.model_copy(update={"field": "price_usd_per_device_hour"}), old or 0.0)
                p = _validated(Pool, p, {"price_usd_per_device_hour": new},
                               change.model_copy(update={"field": "price_usd_per_device_hour"}))
            out_pools.append(p)
        pools = out_pools
    elif kind == "pool":
        target = _pick(change, [p.id for p in pools], "pool")
        assert change.field is not None
        out_pools = []
        for p in pools:
            if p.id == target:
                old = getattr(p, change.field)
                if old is None:
                    old = (catalog_prices or {}).get(p.id) if change.field == "price_usd_per_device_hour" else None
                if old is None and change.op != "=":
                    raise ScenarioError(change.text, f"pool {p.id} has no {change.field} to change; use =",
                                        *change.value_span)
                p = _validated(Pool, p, {change.field: _field_value(change, float(old or 0.0))}, change)
            out_pools.append(p)
        pools = out_pools
    elif kind == "slo":
        chosen = set(svc_ids) if change.target is None else {_pick(change, svc_ids, "service")}
        assert change.field is not None
        out = []
        for s in services:
            if s.id in chosen:
                slo = _validated(type(s.slo), s.slo,
                                 {change.field: _field_value(change, float(getattr(s.slo, change.field)))}, change)
                s = s.model_copy(update={"slo": slo})
            out.append(s)
        services = out
    elif kind == "power":
        target = _pick(change, [d.id for d in domains], "power domain")
        assert change.field is not None
        domains = [_validated(PowerDomain, d, {change.field: _field_value(change, float(getattr(d, change.field)))},
                              change) if d.id == target else d for d in domains]
    elif kind in ("remove-pool", "remove-zone"):
        if kind == "remove-pool":
            gone = {_pick(change, [p.id for p in pools], "pool")}
        else:
            zone = _pick(change, sorted({p.zone for p in pools}), "zone")
            gone = {p.id for p in pools if p.zone == zone}
        pools = [p for p in pools if p.id not in gone]
        # A service limited to lost pools keeps an empty list: the planner then reports it cannot be served.
        services = [s.model_copy(update={"allowed_pools": [x for x in s.allowed_pools if x not in gone]})
                    if s.allowed_pools is not None else s for s in services]
    elif kind == "remove-service":
        target = _pick(change, svc_ids, "service")
        services = [s for s in services if s.id != target]
    elif kind == "add-service":
        for added in _documents(change, Service):
            services = [s for s in services if s.id != added.id] + [added]
    elif kind == "add-pool":
        for added_pool in _documents(change, Pool):
            pools = [p for p in pools if p.id != added_pool.id] + [added_pool]
    else:  # add-model
        for model in _documents(change, ModelSpec):
            models = [m for m in models if m.id != model.id] + [model]
    return fleet.model_copy(update={"services": services, "pools": pools, "power_domains": domains,
                                    "models": models})


def _documents(change: Change, model: type[_Doc]) -> list[_Doc]:
    """The mapping (or list of mappings) an add-… file holds, validated as ``model``."""
    docs = change.document if isinstance(change.document, list) else [change.document]
    out = []
    for doc in docs:
        if isinstance(doc, dict) and isinstance(doc.get("services"), list):
            raise ScenarioError(change.text, "the file holds a fleet; give one mapping or a list of them",
                                *change.value_span)
        try:
            out.append(model.model_validate(doc))
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = ".".join(str(x) for x in err.get("loc", ())) or "(document)"
            raise ScenarioError(change.text, f"{loc}: {err.get('msg', 'invalid')}", *change.value_span) from None
    return out


def pool_prices(fleet: FleetSpec) -> dict[str, float]:
    """$/device-hour of every pool whose price the catalog knows (price books resolved)."""
    from planner.catalog import fleet_catalog

    cat = fleet_catalog(fleet)
    out: dict[str, float] = {}
    for p in fleet.pools:
        try:
            out[p.id] = cat.pool_price(p)
        except KeyError:
            continue
    return out


def apply_changes(fleet: FleetSpec, changes: Sequence[Change]) -> FleetSpec:
    """The fleet with every change made in order (a scenario as a function of the fleet)."""
    for change in changes:
        fleet = apply_change(fleet, change, pool_prices(fleet))
    return fleet


def parse_scenario(exprs: Sequence[str], read: Reader | None = None) -> list[Change]:
    """Parse a scenario's expressions (each may hold several joined by ``;``)."""
    return [parse_expression(e, read) for text in exprs for e in split_expressions(text)]


def compile_scenario(fleet: FleetSpec, scenario: Scenario, read: Reader | None = None) -> Callable[[FleetSpec],
                                                                                                      FleetSpec]:
    """Parse and check a scenario against ``fleet`` now; return it as a function of the fleet."""
    changes = parse_scenario(scenario.set, read)
    apply_changes(fleet, changes)  # names are checked once here, so a bad scenario fails before any solve
    return partial(apply_changes, changes=changes)


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


# ---------------------------------------------------------------------------------------------- sweeps


class Sweep(Value):
    """An expression with a range where its value goes: the values to try, in order."""

    text: str
    prefix: str  # the expression up to and including its operator
    values: list[float] = Field(min_length=1)
    geometric: bool = False

    def expression(self, value: float) -> str:
        """The expression for one point of the sweep."""
        return f"{self.prefix}{value:g}"

    @property
    def label(self) -> str:
        """The swept quantity, as written (``rate``, ``slo[chat].tpot_ms``)."""
        return re.sub(r"\s*(\*=|\+=|=)\s*$", "", self.prefix) + (" ×" if self.prefix.rstrip().endswith("*=") else "")


_RANGE_RE = re.compile(rf"^(?P<lo>{_NUM})\.\.(?P<hi>{_NUM})(?P<kind>[x+])(?P<step>{_NUM})$")


def parse_sweep(text: str) -> Sweep:
    """``rate=1..64x2`` (geometric), ``slo[chat].tpot_ms=40..120+20`` (arithmetic), ``rate*=1,2,4`` (list)."""
    m = re.match(r"^(?P<prefix>.*?(?:\*=|\+=|=))\s*(?P<range>.*?)\s*$", text)
    if not m:
        raise ScenarioError(text, "expected EXPR=LO..HIxFACTOR, EXPR=LO..HI+STEP or EXPR=A,B,C")
    prefix, raw = m.group("prefix"), m.group("range")
    rspan = m.span("range")
    try:
        parse_expression(prefix + "1")  # the part before the range must be a valid expression
    except ScenarioError as exc:
        raise ScenarioError(text, exc.reason, min(exc.start, len(prefix)), min(exc.end, len(prefix))) from None
    r = _RANGE_RE.match(raw)
    geometric = False
    if r:
        lo, hi, step = float(r.group("lo")), float(r.group("hi")), float(r.group("step"))
        geometric = r.group("kind") == "x"
        if hi < lo:
            raise ScenarioError(text, f"the range runs backwards ({lo:g} > {hi:g})", *rspan)
        if geometric and (step <= 1 or lo <= 0):
            raise ScenarioError(text, "a geometric range needs LO > 0 and a factor above 1", *rspan)
        if not geometric and step <= 0:
            raise ScenarioError(text, "an arithmetic range needs a step above 0", *rspan)
        values: list[float] = []
        v = lo
        # A small tolerance so 0.1-steps reach their end point despite rounding.
        while v <= hi * (1 + 1e-9) + 1e-12 and len(values) <= _MAX_SWEEP_POINTS:
            values.append(round(v, 10))
            v = v * step if geometric else lo + len(values) * step
    elif re.fullmatch(rf"{_NUM}(?:\s*,\s*{_NUM})*", raw):
        values = [float(x) for x in raw.split(",")]
    else:
        raise ScenarioError(text, f"expected a range LO..HIxFACTOR, LO..HI+STEP or a list A,B,C, got {raw!r}",
                            *rspan)
    if len(values) > _MAX_SWEEP_POINTS:
        raise ScenarioError(text, f"more than {_MAX_SWEEP_POINTS} points; widen the step", *rspan)
    return Sweep(text=text, prefix=prefix, values=values, geometric=geometric)


# ---------------------------------------------------------------------------------------------- results


class ReplicaChange(Value):
    """Replicas of one (service, pool, configuration) before and after a scenario."""

    service: str
    pool: str
    configuration: str
    before: int
    after: int


class ServiceAttainment(Value):
    service: str
    attainment: float
    meets_slo: bool


class ScenarioResult(Value):
    """One planned scenario as it stands beside the baseline."""

    name: str
    expressions: list[str] = Field(default_factory=list)
    feasible: bool
    reason: str | None = None  # why no plan, when infeasible
    plan_id: str | None = None
    cost_usd_per_hour: float | None = None
    cost_delta_usd_per_hour: float | None = None
    usd_per_million_tokens: float | None = None
    devices_by_type: dict[str, int] = Field(default_factory=dict)
    replicas_by_service: dict[str, int] = Field(default_factory=dict)
    configurations: dict[str, list[str]] = Field(default_factory=dict, description="'N× label @pool' per service")
    replicas_by_role: dict[str, int] = Field(default_factory=dict)
    expected_watts: float | None = Field(default=None, description="devices at planned load plus used servers")
    watts_by_power_domain: dict[str, float] = Field(default_factory=dict)
    binding: list[str] = Field(default_factory=list)
    verified: bool | None = None  # None when not replayed
    attainment: list[ServiceAttainment] = Field(default_factory=list)
    replica_changes: list[ReplicaChange] = Field(default_factory=list)


class WhatIfReport(Value):
    """The baseline and each scenario, side by side."""

    fleet: str
    verified: bool = False
    baseline: ScenarioResult
    scenarios: list[ScenarioResult]


class SweepPoint(Value):
    value: float
    result: ScenarioResult


class SweepReport(Value):
    """A scenario swept over values: the curve of cost, devices and (when replayed) attainment."""

    fleet: str
    sweep: str
    label: str
    geometric: bool
    slo_field: str | None = None  # set when an SLO target is swept (the cost/SLO frontier applies)
    baseline: ScenarioResult
    points: list[SweepPoint]

    def frontier(self) -> list[SweepPoint]:
        """Feasible points no other point beats on both cost and tightness of the swept SLO target."""
        # Lower latency targets are tighter; a higher percentile is tighter.
        feasible = sorted((p for p in self.points if p.result.cost_usd_per_hour is not None), key=lambda p: p.value,
                          reverse=self.slo_field == "percentile")
        out: list[SweepPoint] = []
        best = math.inf
        for p in feasible:  # tightest target first: keep a point only if it is cheaper than every tighter one
            cost = p.result.cost_usd_per_hour
            assert cost is not None
            if cost < best - 1e-9:
                out.append(p)
                best = cost
        return out


# ---------------------------------------------------------------------------------------------- running

Planner = Callable[[FleetSpec, Plan | None], Plan]
Verifier = Callable[[Plan, FleetSpec], Any]


def _config_key(service: str, pool: str, memory_pool: str | None, label: str) -> tuple[str, str, str]:
    return service, pool + (f"+{memory_pool}" if memory_pool else ""), label


def replica_counts(plan: Plan) -> dict[tuple[str, str, str], int]:
    """Replicas per (service, pool, configuration label)."""
    out: dict[tuple[str, str, str], int] = defaultdict(int)
    for g in plan.replica_groups:
        out[_config_key(g.service, g.pool, g.memory_pool, g.configuration.label())] += g.replicas
    return dict(out)


def replica_diff(before: Plan | None, after: Plan | None) -> list[ReplicaChange]:
    """Configurations whose replica count differs between two plans (a missing plan counts as none)."""
    a = replica_counts(before) if before is not None else {}
    b = replica_counts(after) if after is not None else {}
    return [ReplicaChange(service=k[0], pool=k[1], configuration=k[2], before=a.get(k, 0), after=b.get(k, 0))
            for k in sorted(set(a) | set(b)) if a.get(k, 0) != b.get(k, 0)]


def summarise(name: str, exprs: Sequence[str], fleet: FleetSpec, plan: Plan, baseline: Plan | None,
              replay: Any = None) -> ScenarioResult:
    """A feasible scenario's row: cost, devices, configurations, roles, power, attainment, diff."""
    replicas: dict[str, int] = defaultdict(int)
    configs: dict[str, list[str]] = defaultdict(list)
    roles: dict[str, int] = defaultdict(int)
    for g in plan.replica_groups:
        replicas[g.service] += g.replicas
        configs[g.service].append(f"{g.replicas}× {g.configuration.label()} @{g.pool}"
                                  + (f"+{g.memory_pool}" if g.memory_pool else ""))
        roles[g.configuration.role.value] += g.replicas
    overhead = {p.id: p.node_overhead_watts for p in fleet.pools}
    watts = sum(g.expected_watts for g in plan.replica_groups) + sum(
        n * overhead.get(pool, 0.0) for pool, n in plan.nodes_by_pool.items())
    attainment = []
    verified = None
    if replay is not None:
        attainment = [ServiceAttainment(service=s.service, attainment=round(s.attainment, 4), meets_slo=s.meets_slo)
                      for s in replay.services]
        verified = bool(replay.verified)
    base_cost = baseline.cost_usd_per_hour if baseline is not None else None
    return ScenarioResult(
        name=name, expressions=list(exprs), feasible=True, plan_id=plan.id,
        cost_usd_per_hour=plan.cost_usd_per_hour,
        cost_delta_usd_per_hour=round(plan.cost_usd_per_hour - base_cost, 4) if base_cost is not None else None,
        usd_per_million_tokens=plan.usd_per_million_tokens, devices_by_type=dict(plan.devices_by_type),
        replicas_by_service=dict(sorted(replicas.items())), configurations=dict(sorted(configs.items())),
        replicas_by_role=dict(sorted(roles.items())), expected_watts=round(watts, 1),
        watts_by_power_domain=dict(plan.watts_by_power_domain),
        binding=_binding(plan),
        verified=verified, attainment=attainment,
        replica_changes=replica_diff(baseline, plan) if baseline is not None else [])


def _binding(plan: Plan) -> list[str]:
    """Binding constraints, once each (the plan and its marginal values may both name a pool)."""
    seen: set[str] = set()
    out = []
    for f in plan.findings:
        key = re.sub(r"\[(.*)\]$", r":\1", f.constraint)
        if f.kind == "binding" and key not in seen:
            seen.add(key)
            out.append(f.message)
    return out


def infeasible(name: str, exprs: Sequence[str], reason: str, baseline: Plan | None) -> ScenarioResult:
    """An infeasible scenario's row: the reason, and every baseline replica as removed."""
    return ScenarioResult(name=name, expressions=list(exprs), feasible=False, reason=reason,
                          replica_changes=replica_diff(baseline, None) if baseline is not None else [])


def default_planner(base_dir: Path | None = None) -> Planner:
    """``plan_fleet`` without baselines (what-ifs compare with the fleet's own plan, not single types)."""
    from planner.pipeline import plan_fleet

    def plan(fleet: FleetSpec, current: Plan | None) -> Plan:
        return plan_fleet(fleet, current=current, baselines=False, base_dir=base_dir)

    return plan


def default_verifier(duration_s: float = 120.0, seed: int = 0, base_dir: Path | None = None) -> Verifier:
    """Replay a Poisson trace of ``duration_s`` seconds at each service's rate against the plan."""
    from planner.replay import TraceSource
    from planner.tolerance import verify_plan

    def verify(plan: Plan, fleet: FleetSpec) -> Any:
        return verify_plan(plan, fleet, TraceSource(kind="poisson", duration_s=duration_s, seed=seed), base_dir)

    return verify


def run_one(name: str, exprs: Sequence[str], fleet: FleetSpec, baseline: Plan | None, planner: Planner,
            verifier: Verifier | None) -> tuple[ScenarioResult, Plan | None]:
    """Plan (and replay) one already-modified fleet; infeasibility becomes a row, not an exception."""
    from planner.pipeline import InfeasibleFleet

    problems = check_fleet(fleet)
    if problems:
        loc, why = problems[0]
        return infeasible(name, exprs, f"{_loc(fleet, loc)}: {why}", baseline), None
    try:
        plan = planner(fleet, baseline)
    except InfeasibleFleet as exc:
        reason = exc.findings[0].message if exc.findings else str(exc)
        return infeasible(name, exprs, reason, baseline), None
    replay = verifier(plan, fleet) if verifier is not None else None
    return summarise(name, exprs, fleet, plan, baseline, replay), plan


def _loc(fleet: FleetSpec, loc: Sequence[str | int]) -> str:
    """``services[chat].allowed_pools`` from a check_fleet location."""
    out = ""
    for i, part in enumerate(loc):
        if isinstance(part, int) and i > 0 and loc[i - 1] in ("services", "pools"):
            items = fleet.services if loc[i - 1] == "services" else fleet.pools
            out += f"[{items[part].id}]" if part < len(items) else f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def run_scenarios(fleet: FleetSpec, scenarios: Sequence[Scenario], *, verify: bool = False,
                  read: Reader | None = None, planner: Planner | None = None, verifier: Verifier | None = None,
                  progress: Progress | None = None) -> WhatIfReport:
    """Plan the baseline and every scenario (replayed with ``verify``); raises ScenarioError before solving."""
    transforms = [compile_scenario(fleet, sc, read) for sc in scenarios]
    plan = planner or default_planner()
    check = (verifier or default_verifier()) if verify else None
    total = len(scenarios) + 1
    if progress is not None:
        progress(0, total, "baseline")
    base_row, base_plan = run_one("baseline", [], fleet, None, plan, check)
    rows = []
    for i, (sc, transform) in enumerate(zip(scenarios, transforms, strict=True), 1):
        if progress is not None:
            progress(i, total, sc.name)
        row, _ = run_one(sc.name, sc.set, transform(fleet), base_plan, plan, check)
        rows.append(row)
    if progress is not None:
        progress(total, total, "done")
    return WhatIfReport(fleet=fleet.name, verified=verify, baseline=base_row, scenarios=rows)


def run_sweep(fleet: FleetSpec, sweep: Sweep | str, *, verify: bool = False, base: Sequence[str] = (),
              read: Reader | None = None, planner: Planner | None = None, verifier: Verifier | None = None,
              progress: Progress | None = None) -> SweepReport:
    """Plan the fleet at every value of the sweep (after the ``base`` expressions), against the baseline."""
    sw = parse_sweep(sweep) if isinstance(sweep, str) else sweep
    scenarios = [Scenario(name=f"{v:g}", set=[*base, sw.expression(v)]) for v in sw.values]
    try:
        report = run_scenarios(fleet, scenarios, verify=verify, read=read, planner=planner, verifier=verifier,
                               progress=progress)
    except ScenarioError as exc:
        point = next((sw.expression(v) for v in sw.values if exc.expr == sw.expression(v)), None)
        if point is None:
            raise
        # Point at the sweep as written: a name before the range, or the range itself for a bad value.
        start, end = (exc.start, exc.end) if exc.start < len(sw.prefix) else (len(sw.prefix), len(sw.text))
        raise ScenarioError(sw.text, exc.reason + (f" (at {point})" if start >= len(sw.prefix) else ""),
                            start, end) from None
    head = parse_expression(sw.expression(sw.values[0]))
    return SweepReport(fleet=fleet.name, sweep=sw.text, label=sw.label, geometric=sw.geometric,
                       slo_field=head.field if head.kind == "slo" else None, baseline=report.baseline,
                       points=[SweepPoint(value=v, result=r) for v, r in zip(sw.values, report.scenarios,
                                                                              strict=True)])
