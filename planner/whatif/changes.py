"""Applying what-if changes: a parsed expression checked against a fleet and made, giving a new fleet.

A scenario is thus a function ``FleetSpec → FleetSpec`` (:func:`compile_scenario`); names the fleet does not
have raise :class:`ScenarioError` pointing at the offending part of the expression.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from planner.schema import FleetSpec, ModelSpec, Pool, PowerDomain, Service
from planner.whatif.expressions import Change, ChangeKind, Op, Reader, ScenarioError, did_you_mean, parse_scenario
from planner.whatif.scenarios import Scenario

_INT_FIELDS = {"max_nodes", "devices_per_node"}
_Doc = TypeVar("_Doc", Service, Pool, ModelSpec)
Prices = Mapping[str, float]  # $/device-hour of the pools whose price the catalog knows


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
        raise ScenarioError(change.text, f"unknown {what} {target!r}" + did_you_mean(target, known),
                            *change.target_span)
    return target



def _rate(fleet: FleetSpec, change: Change, prices: Prices) -> FleetSpec:
    svc_ids = [s.id for s in fleet.services]
    chosen = set(svc_ids) if change.target is None else {_pick(change, svc_ids, "service")}
    out = []
    for s in fleet.services:
        if s.id in chosen:
            assert change.value is not None
            rate = _combine(s.traffic.rate_rps, change.op, change.value)
            traffic = _validated(type(s.traffic), s.traffic, {"rate_rps": rate},
                                 change.model_copy(update={"field": "rate_rps"}))
            s = s.model_copy(update={"traffic": traffic})
        out.append(s)
    return fleet.model_copy(update={"services": out})


def _price(fleet: FleetSpec, change: Change, prices: Prices) -> FleetSpec:
    devices = sorted({p.device for p in fleet.pools})
    pool_ids = [p.id for p in fleet.pools]
    target = change.target
    if target is not None and target not in pool_ids and target not in devices:
        raise ScenarioError(change.text, f"no pool or pool device {target!r}"
                            + did_you_mean(target, [*devices, *pool_ids]), *change.target_span)
    priced = change.model_copy(update={"field": "price_usd_per_device_hour"})
    out = []
    for p in fleet.pools:
        if target is None or p.id == target or (target not in pool_ids and p.device == target):
            old = p.price_usd_per_device_hour
            if old is None:
                old = prices.get(p.id)
            if old is None and change.op != "=":
                raise ScenarioError(change.text, f"pool {p.id} has no price of its own to scale; set it "
                                                 f"with price[{p.id}]=VALUE", *change.target_span)
            p = _validated(Pool, p, {"price_usd_per_device_hour": _field_value(priced, old or 0.0)}, priced)
        out.append(p)
    return fleet.model_copy(update={"pools": out})


def _pool_field(fleet: FleetSpec, change: Change, prices: Prices) -> FleetSpec:
    target = _pick(change, [p.id for p in fleet.pools], "pool")
    assert change.field is not None
    out = []
    for p in fleet.pools:
        if p.id == target:
            old = getattr(p, change.field)
            if old is None:
                old = prices.get(p.id) if change.field == "price_usd_per_device_hour" else None
            if old is None and change.op != "=":
                raise ScenarioError(change.text, f"pool {p.id} has no {change.field} to change; use =",
                                    *change.value_span)
            p = _validated(Pool, p, {change.field: _field_value(change, float(old or 0.0))}, change)
        out.append(p)
    return fleet.model_copy(update={"pools": out})


def _slo(fleet: FleetSpec, change: Change, prices: Prices) -> FleetSpec:
    svc_ids = [s.id for s in fleet.services]
    chosen = set(svc_ids) if change.target is None else {_pick(change, svc_ids, "service")}
    assert change.field is not None
    out = []
    for s in fleet.services:
        if s.id in chosen:
            slo = _validated(type(s.slo), s.slo,
                             {change.field: _field_value(change, float(getattr(s.slo, change.field)))}, change)
            s = s.model_copy(update={"slo": slo})
        out.append(s)
    return fleet.model_copy(update={"services": out})


def _power(fleet: FleetSpec, change: Change, prices: Prices) -> FleetSpec:
    target = _pick(change, [d.id for d in fleet.power_domains], "power domain")
    assert change.field is not None
    domains = [_validated(PowerDomain, d, {change.field: _field_value(change, float(getattr(d, change.field)))},
                          change) if d.id == target else d for d in fleet.power_domains]
    return fleet.model_copy(update={"power_domains": domains})


def _remove_pools(fleet: FleetSpec, change: Change, prices: Prices) -> FleetSpec:
    if change.kind == "remove-pool":
        gone = {_pick(change, [p.id for p in fleet.pools], "pool")}
    else:
        zone = _pick(change, sorted({p.zone for p in fleet.pools}), "zone")
        gone = {p.id for p in fleet.pools if p.zone == zone}
    pools = [p for p in fleet.pools if p.id not in gone]
    # A service limited to lost pools keeps an empty list: the planner then reports it cannot be served.
    services = [s.model_copy(update={"allowed_pools": [x for x in s.allowed_pools if x not in gone]})
                if s.allowed_pools is not None else s for s in fleet.services]
    return fleet.model_copy(update={"services": services, "pools": pools})


def _remove_service(fleet: FleetSpec, change: Change, prices: Prices) -> FleetSpec:
    target = _pick(change, [s.id for s in fleet.services], "service")
    return fleet.model_copy(update={"services": [s for s in fleet.services if s.id != target]})


def _add_services(fleet: FleetSpec, change: Change, prices: Prices) -> FleetSpec:
    services = list(fleet.services)
    for added in _documents(change, Service):
        services = [s for s in services if s.id != added.id] + [added]
    return fleet.model_copy(update={"services": services})


def _add_pools(fleet: FleetSpec, change: Change, prices: Prices) -> FleetSpec:
    pools = list(fleet.pools)
    for added in _documents(change, Pool):
        pools = [p for p in pools if p.id != added.id] + [added]
    return fleet.model_copy(update={"pools": pools})


def _add_models(fleet: FleetSpec, change: Change, prices: Prices) -> FleetSpec:
    models = list(fleet.models)
    for added in _documents(change, ModelSpec):
        models = [m for m in models if m.id != added.id] + [added]
    return fleet.model_copy(update={"models": models})


def _commit(fleet: FleetSpec, change: Change, prices: Prices) -> FleetSpec:
    field = change.model_copy(update={"field": "commitment_usd_per_hour"})
    value = _field_value(field, fleet.planner.commitment_usd_per_hour)
    planner = _validated(type(fleet.planner), fleet.planner, {"commitment_usd_per_hour": value}, field)
    return fleet.model_copy(update={"planner": planner})


def _spot_share(fleet: FleetSpec, change: Change, prices: Prices) -> FleetSpec:
    svc_ids = [s.id for s in fleet.services]
    chosen = set(svc_ids) if change.target is None else {_pick(change, svc_ids, "service")}
    field = change.model_copy(update={"field": "max_spot_share"})
    out = [_validated(Service, s, {"max_spot_share": _field_value(field, s.max_spot_share)}, field)
           if s.id in chosen else s for s in fleet.services]
    return fleet.model_copy(update={"services": out})


_APPLY: dict[ChangeKind, Callable[[FleetSpec, Change, Prices], FleetSpec]] = {
    "rate": _rate, "price": _price, "pool": _pool_field, "slo": _slo, "power": _power,
    "remove-pool": _remove_pools, "remove-zone": _remove_pools, "remove-service": _remove_service,
    "add-service": _add_services, "add-pool": _add_pools, "add-model": _add_models, "commit": _commit,
    "spot_share": _spot_share,
}


def apply_change(fleet: FleetSpec, change: Change, catalog_prices: Prices | None = None) -> FleetSpec:
    """The fleet with one change made; raises :class:`ScenarioError` for names the fleet does not have."""
    return _APPLY[change.kind](fleet, change, catalog_prices or {})


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


def compile_scenario(fleet: FleetSpec, scenario: Scenario, read: Reader | None = None) -> Callable[[FleetSpec],
                                                                                                      FleetSpec]:
    """Parse and check a scenario against ``fleet`` now; return it as a function of the fleet."""
    changes = parse_scenario(scenario.set, read)
    apply_changes(fleet, changes)  # names are checked once here, so a bad scenario fails before any solve
    return partial(apply_changes, changes=changes)
