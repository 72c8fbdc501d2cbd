"""Which fleet a plan was made for: the fleet's digest and snapshot stored in the plan, and the checks that
refuse a plan used with another fleet.

``fleet_digest`` is the SHA-256 of the fleet's canonical JSON (every field, defaults written out, keys
sorted), so the same fleet written differently has the same digest and any change to what planning reads
gives another. ``plan_fleet_problem`` says in one line why a plan does not belong to a fleet (``verify``,
``apply``, the REST API's apply): another digest (naming the first field that differs, from the snapshot),
or, for plans made before digests were stored, another fleet name or a pool or service the fleet does not
have. ``current_plan_problem`` is the looser check for the running plan a new plan is priced against
(``plan --current``): the fleet may have changed since, but it must be the same fleet.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from planner.schema import FleetSpec, Plan


def fleet_snapshot(fleet: FleetSpec) -> dict[str, Any]:
    """The fleet as canonical JSON data (aliases, defaults written out)."""
    return fleet.model_dump(mode="json", by_alias=True)


def fleet_digest(fleet: FleetSpec, snapshot: dict[str, Any] | None = None) -> str:
    """SHA-256 of the fleet's canonical JSON (sorted keys, no whitespace); ``snapshot``: its
    ``fleet_snapshot`` where the caller has it already (a large fleet's takes a while to make)."""
    data = fleet_snapshot(fleet) if snapshot is None else snapshot
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The first path at which two JSON values differ (lists by id where items have one), or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            where = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                return f"{where}: {'only in the plan' if key in a else 'not in the plan'}'s fleet"
            found = first_difference(a[key], b[key], where)
            if found is not None:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        ids_a = [x.get("id") for x in a if isinstance(x, dict)]
        ids_b = [x.get("id") for x in b if isinstance(x, dict)]
        if len(ids_a) == len(a) and len(ids_b) == len(b) and None not in ids_a + ids_b:
            if ids_a != ids_b:
                gone = sorted(str(x) for x in set(ids_a) - set(ids_b))
                new = sorted(str(x) for x in set(ids_b) - set(ids_a))
                what = (f"{', '.join(map(str, gone))} only in the plan's fleet" if gone else
                        f"{', '.join(map(str, new))} not in the plan's fleet" if new else "another order")
                return f"{path}: {what}"
            for x, y in zip(a, b, strict=True):
                found = first_difference(x, y, f"{path}[{x['id']}]")
                if found is not None:
                    return found
            return None
        if len(a) != len(b):
            return f"{path}: {len(a)} items in the plan's fleet, {len(b)} here"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found is not None:
                return found
        return None
    if a != b:
        return f"{path}: {json.dumps(a)[:60]} in the plan's fleet, {json.dumps(b)[:60]} here"
    return None


def plan_fleet_problem(plan: Plan, fleet: FleetSpec) -> str | None:
    """Why ``plan`` was not made for ``fleet`` (one line), or None when it was."""
    if plan.fleet_digest:
        digest = fleet_digest(fleet)
        if plan.fleet_digest == digest:
            return None
        where = first_difference(plan.fleet_snapshot, fleet_snapshot(fleet)) if plan.fleet_snapshot else None
        return (f"the plan was made for another fleet ({plan.fleet!r} with digest {plan.fleet_digest[7:19]}; this "
                f"fleet's is {digest[7:19]}" + (f"; first difference: {where}" if where else "") + "); plan "
                "this fleet again, or give the fleet the plan was made for")
    if plan.fleet != fleet.name:
        return f"the plan was made for fleet {plan.fleet!r}, not {fleet.name!r}"
    pools = {p.id for p in fleet.pools}
    services = {s.id for s in fleet.services}
    for g in plan.replica_groups:
        for pool in (g.pool, g.memory_pool):
            if pool is not None and pool not in pools:
                return f"the plan places {g.service} on pool {pool!r}, which this fleet does not have"
        if g.service not in services:
            return f"the plan serves {g.service!r}, which this fleet does not have"
    return None


def current_plan_problem(plan: Plan, fleet: FleetSpec) -> str | None:
    """Why ``plan`` cannot be the running plan of ``fleet`` (another fleet altogether), or None."""
    if plan.fleet != fleet.name:
        return f"the plan was made for fleet {plan.fleet!r}, not {fleet.name!r}"
    served = {g.service for g in plan.replica_groups}
    if served and not served & {s.id for s in fleet.services}:
        return "the plan serves none of this fleet's services: " + ", ".join(sorted(served))
    return None
