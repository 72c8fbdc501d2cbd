"""Medley's custom resources → the FleetSpec the planner takes, one bad LLMService kept to itself.

``fleet_inputs`` reads a ``FleetPlan`` with the ``GPUPool``, ``LLMService`` and ``PowerDomain`` objects that
belong to it (ids from names, teams from namespaces). Pools, power domains and the planner options are
shared by every team: one that is invalid makes the whole fleet invalid (``SpecError``). An LLMService that
is invalid — its spec does not validate, or the catalog does not know its model — is left out and named in
``FleetInputs.invalid``, so the other services are still planned; the controller keeps that service's
running workloads as the last plan had them (``frozen_groups``, ``reserve_pools``).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from planner.schema import FleetSpec, Plan, PlannerOptions, Pool, PowerDomain, ReplicaGroup, Service

Resource = dict[str, Any]


class SpecError(ValueError):
    """A custom resource does not make a valid fleet; the message is ``Kind/name: field: reason``."""

    def __init__(self, message: str, where: str = "") -> None:
        super().__init__(message)
        self.where = where  # "GPUPool/name", "PowerDomain/name" or "FleetPlan/name"


def first_error(exc: ValidationError) -> str:
    """A pydantic error in one line: ``field: reason``."""
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid"))


def _where(obj: Resource, kind: str) -> str:
    meta = obj["metadata"]
    namespace = meta.get("namespace")
    return f"{obj.get('kind', kind)}/{namespace + '/' if namespace else ''}{meta['name']}"


def selector_of(fleetplan: Resource) -> str:
    """The label selector (``k=v,…``) of ``spec.selector.matchLabels``: which resources belong to the fleet."""
    labels = ((fleetplan.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


@dataclass(frozen=True)
class FleetInputs:
    """The fleet the valid resources make, and the LLMServices left out (name → ``LLMService/ns/name: why``)."""

    fleet: FleetSpec
    invalid: dict[str, str] = field(default_factory=dict)
    namespaces: dict[str, str] = field(default_factory=dict)  # service name → its LLMService's namespace


def _shared(fleetplan: Resource, pools: list[Resource], domains: list[Resource]) -> tuple[
        list[Pool], list[PowerDomain], PlannerOptions]:
    def build(model: Any, obj: Resource) -> Any:
        try:
            return model.model_validate({**obj.get("spec", {}), "id": obj["metadata"]["name"]})
        except ValidationError as exc:
            where = _where(obj, model.__name__)
            raise SpecError(f"{where}: spec.{first_error(exc)}", where) from None

    where = f"FleetPlan/{fleetplan['metadata']['name']}"
    try:
        options = PlannerOptions.model_validate((fleetplan.get("spec") or {}).get("planner", {}))
    except ValidationError as exc:
        raise SpecError(f"{where}: spec.planner.{first_error(exc)}", where) from None
    return [build(Pool, p) for p in pools], [build(PowerDomain, d) for d in domains], options


def fleet_inputs(fleetplan: Resource, pools: list[Resource], services: list[Resource],
                 domains: list[Resource]) -> FleetInputs:
    """The fleet of the valid resources; raises SpecError when a shared resource (pool, domain) is invalid."""
    from planner.io.files import FileAccess
    from planner.io.fleetfile import check_fleet

    # The controller reads no file a resource names (a tenant could name any path on its host).
    no_files = FileAccess.within((), refusal="the controller reads no files: give traffic.buckets (POST the "
                                 "trace to the API's /v1/traces for them)")

    name = fleetplan["metadata"]["name"]
    pool_specs, domain_specs, options = _shared(fleetplan, pools, domains)
    invalid: dict[str, str] = {}
    kept: list[tuple[Resource, Service]] = []
    namespaces = {obj["metadata"]["name"]: obj["metadata"].get("namespace", "default") for obj in services}
    for obj in services:
        meta = obj["metadata"]
        try:
            kept.append((obj, Service.model_validate({**obj.get("spec", {}), "id": meta["name"],
                                                      "team": meta.get("namespace", "default")})))
        except ValidationError as exc:
            invalid[meta["name"]] = f"{_where(obj, 'LLMService')}: spec.{first_error(exc)}"
    while True:
        try:
            fleet = FleetSpec(name=name, pools=pool_specs, services=[s for _, s in kept],
                              power_domains=domain_specs, planner=options)
        except ValidationError as exc:
            index = _service_index(exc)
            if index is None:
                raise SpecError(f"FleetPlan/{name}: {first_error(exc)}", f"FleetPlan/{name}") from None
            obj, service = kept.pop(index)
            invalid[service.id] = f"{_where(obj, 'LLMService')}: {first_error(exc)}"
            continue
        bad = _catalog_problems(check_fleet(fleet, access=no_files), fleet)
        if not bad:
            break
        for index in sorted(bad, reverse=True):
            obj, service = kept.pop(index)
            invalid[service.id] = f"{_where(obj, 'LLMService')}: spec.{bad[index]}"
    return FleetInputs(fleet, invalid, namespaces)


def _service_index(exc: ValidationError) -> int | None:
    loc = exc.errors()[0].get("loc", ())
    return int(loc[1]) if len(loc) >= 2 and loc[0] == "services" and isinstance(loc[1], int) else None


def _catalog_problems(problems: list[tuple[tuple[str | int, ...], str]], fleet: FleetSpec) -> dict[int, str]:
    """Catalog problems by service index; one that is not a service's makes the whole fleet invalid."""
    out: dict[int, str] = {}
    for loc, why in problems:
        if len(loc) >= 3 and loc[0] == "services" and isinstance(loc[1], int):
            out.setdefault(loc[1], f"{loc[2]}: {why}")
            continue
        if len(loc) >= 3 and loc[0] == "pools" and isinstance(loc[1], int):
            where, field_path = f"GPUPool/{fleet.pools[loc[1]].id}", f"spec.{loc[2]}"
        else:
            where, field_path = f"FleetPlan/{fleet.name}", ".".join(str(p) for p in loc)
        raise SpecError(f"{where}: {field_path}: {why}", where)
    return out


def fleet_from_resources(fleetplan: Resource, pools: list[Resource], services: list[Resource],
                         domains: list[Resource]) -> FleetSpec:
    """The FleetSpec the custom resources describe; raises SpecError when any of them is invalid."""
    inputs = fleet_inputs(fleetplan, pools, services, domains)
    if inputs.invalid:
        raise SpecError(next(iter(inputs.invalid.values())))
    return inputs.fleet


def frozen_groups(current: Plan | None, invalid: dict[str, str]) -> list[ReplicaGroup]:
    """The replica groups of the last plan that belong to invalid services (kept running as they are)."""
    if current is None:
        return []
    return [g for g in current.replica_groups if g.service in invalid and g.replicas > 0]


def reserve_pools(fleet: FleetSpec, frozen: list[ReplicaGroup]) -> FleetSpec:
    """The fleet with the whole nodes the frozen groups occupy taken out of their pools' ``max_nodes``."""
    if not frozen:
        return fleet
    devices: dict[str, int] = {}
    for g in frozen:
        devices[g.pool] = devices.get(g.pool, 0) + g.replicas * g.configuration.devices
        if g.configuration.memory_devices:
            memory_pool = g.memory_pool or g.pool
            devices[memory_pool] = devices.get(memory_pool, 0) + g.replicas * g.configuration.memory_devices
    pools = [p.model_copy(update={"max_nodes": max(0, p.max_nodes - math.ceil(devices[p.id] / p.devices_per_node))})
             if p.id in devices else p for p in fleet.pools]
    return fleet.model_copy(update={"pools": pools})


def with_frozen(plan: Plan, frozen: list[ReplicaGroup]) -> Plan:
    """The plan plus the frozen groups (their cost counted), so the stored plan describes the whole fleet."""
    if not frozen:
        return plan
    kept = [g for g in plan.replica_groups if g.service not in {f.service for f in frozen}]
    extra = sum(g.cost_usd_per_hour for g in frozen)
    return plan.model_copy(update={"replica_groups": [*kept, *frozen],
                                   "cost_usd_per_hour": plan.cost_usd_per_hour + extra})


def plan_is_fresh(plan: Plan, fleet: FleetSpec, frozen_services: set[str] | None = None) -> bool:
    """Whether a stored plan still names only services and pools the fleet has (or services kept frozen)."""
    services = {s.id for s in fleet.services} | (frozen_services or set())
    pools = {p.id for p in fleet.pools}
    return all(g.service in services and g.pool in pools for g in plan.replica_groups)


def inputs_digest(fleetplan: Resource, *groups: list[Resource]) -> str:
    """A digest of what planning depends on: the specs (not statuses) of the resources."""
    specs = [fleetplan.get("spec", {}).get("planner", {})]
    for objs in groups:
        specs.extend(sorted(([o["metadata"].get("namespace", ""), o["metadata"]["name"], o.get("spec", {})]
                             for o in objs), key=lambda x: (x[0], x[1])))
    return hashlib.sha256(json.dumps(specs, sort_keys=True, default=str).encode()).hexdigest()[:16]
