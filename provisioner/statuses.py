"""Status of every kind the controller owns: conditions and what the plan gives each object.

``FleetPlan`` gets its conditions from the reconciler; here the others: an ``LLMService`` shows its planned,
desired and Ready replicas (from the workloads Medley runs for it) and whether its spec is valid; a
``GPUPool`` the devices and nodes the plan takes from it; a ``PowerDomain`` the watts the plan expects of it
against its budget. A status is written only when it changed, so the controller's own writes do not wake it
up again.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from planner.schema import Plan
from provisioner.cluster import ClusterClient, ObjectRef
from provisioner.render import COMPONENT_LABEL, SERVICE_LABEL, RenderOptions, label_value, team_namespace
from provisioner.rollout import contains, ready_replicas, replicas

Resource = dict[str, Any]


@dataclass(frozen=True)
class Condition:
    """One status condition (``type`` Planned, Progressing, Ready, Degraded, Valid or WithinBudget)."""

    type: str
    status: bool
    reason: str
    message: str = ""


def merge_conditions(old: list[dict[str, Any]], new: list[Condition], now: str,
                     generation: int | None) -> list[dict[str, Any]]:
    """Conditions as the status stores them; ``lastTransitionTime`` moves only when the status flips."""
    before = {c.get("type"): c for c in old}
    out = []
    for cond in new:
        status = "True" if cond.status else "False"
        prev = before.get(cond.type)
        since = prev.get("lastTransitionTime", now) if prev and prev.get("status") == status else now
        entry: dict[str, Any] = {"type": cond.type, "status": status, "reason": cond.reason,
                                 "message": cond.message[:1000], "lastTransitionTime": since}
        if generation is not None:
            entry["observedGeneration"] = generation
        out.append(entry)
    return out


def without_nulls(value: Any) -> Any:
    """``value`` without null fields: a merge patch deletes them, so a status compared after writing has none."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


@dataclass
class StatusWriter:
    """Writes the statuses of LLMServices, GPUPools and PowerDomains after a pass."""

    client: ClusterClient
    now: Callable[[], str]
    options: RenderOptions

    def _write(self, ref: ObjectRef, obj: Resource, status: dict[str, Any], conditions: list[Condition]) -> None:
        meta = obj["metadata"]
        old = obj.get("status") or {}
        new = {**status, "conditions": merge_conditions(old.get("conditions", []), conditions, self.now(),
                                                          meta.get("generation"))}
        if meta.get("generation") is not None:
            new["observedGeneration"] = meta["generation"]
        new = without_nulls(new)
        if not contains(new, old):
            self.client.patch_status(ref, new)

    def services(self, services: list[Resource], plan: Plan | None, invalid: dict[str, str],
                 workloads: list[Resource]) -> None:
        """Each LLMService's planned, desired and Ready replicas, or why its spec is not valid."""
        for svc in services:
            meta = svc["metadata"]
            namespace = team_namespace(meta.get("namespace", "default"), self.options)
            mine = [w for w in workloads if w["metadata"].get("namespace") == namespace
                    and w["metadata"].get("labels", {}).get(SERVICE_LABEL) == label_value(meta["name"])
                    and w["metadata"].get("labels", {}).get(COMPONENT_LABEL) != "attention"]
            want = sum(replicas(w) for w in mine)
            ready = sum(min(ready_replicas(w), replicas(w)) for w in mine)
            planned = sum(g.replicas for g in plan.replica_groups if g.service == meta["name"]) if plan else 0
            status = {"plannedReplicas": planned, "replicas": want, "readyReplicas": ready}
            if meta["name"] in invalid:
                why = invalid[meta["name"]] + "; its running replicas are kept as the last plan had them"
                conditions = [Condition("Ready", False, "InvalidSpec", why), Condition("Degraded", True,
                                                                                       "InvalidSpec", why)]
            else:
                ok = planned > 0 and ready >= planned
                reason = "Serving" if ok else ("Provisioning" if planned else "NotPlanned")
                conditions = [Condition("Ready", ok, reason, f"{ready}/{planned} planned replicas Ready"),
                              Condition("Degraded", False, "AsPlanned")]
            self._write(ObjectRef("LLMService", meta.get("namespace", ""), meta["name"]), svc, status, conditions)

    def pools(self, pools: list[Resource], plan: Plan | None, problem: tuple[str, str] | None) -> None:
        """Each GPUPool's planned devices and nodes; ``problem`` (where, message) marks the invalid one."""
        for pool in pools:
            name = pool["metadata"]["name"]
            per_node = max(1, int((pool.get("spec") or {}).get("devices_per_node", 8) or 8))
            devices = _pool_devices(plan, name)
            status: dict[str, Any] = {"plannedDevices": devices,
                                      "plannedNodes": (plan.nodes_by_pool.get(name) if plan else None)
                                      or math.ceil(devices / per_node)}
            if plan is not None and plan.id:
                status["planId"] = plan.id
            if problem is not None and problem[0] == f"GPUPool/{name}":
                valid = Condition("Valid", False, "InvalidSpec", problem[1])
            else:
                valid = Condition("Valid", True, "InUse" if devices else "Unused",
                                  f"the plan uses {devices} devices" if devices else "the plan uses none")
            self._write(ObjectRef("GPUPool", "", name), pool, status, [valid])

    def domains(self, domains: list[Resource], plan: Plan | None, pools: list[Resource],
                problem: tuple[str, str] | None) -> None:
        """Each PowerDomain's expected watts under the plan against its budget."""
        for domain in domains:
            name = domain["metadata"]["name"]
            budget = float((domain.get("spec") or {}).get("budget_watts", 0) or 0)
            watts = _domain_watts(plan, name, pools)
            status: dict[str, Any] = {"plannedWatts": round(watts, 1)}
            if plan is not None and plan.id:
                status["planId"] = plan.id
            if problem is not None and problem[0] == f"PowerDomain/{name}":
                conditions = [Condition("Valid", False, "InvalidSpec", problem[1])]
            else:
                within = watts <= budget or budget <= 0
                conditions = [Condition("Valid", True, "Valid"), Condition(
                    "WithinBudget", within, "WithinBudget" if within else "OverBudget",
                    f"the plan expects {watts:.0f} W of {budget:.0f} W")]
            self._write(ObjectRef("PowerDomain", "", name), domain, status, conditions)


def _pool_devices(plan: Plan | None, pool: str) -> int:
    if plan is None:
        return 0
    if pool in plan.devices_by_pool:
        return int(plan.devices_by_pool[pool])
    total = 0
    for g in plan.replica_groups:
        if g.pool == pool:
            total += g.replicas * g.configuration.devices
        if g.configuration.memory_devices and (g.memory_pool or g.pool) == pool:
            total += g.replicas * g.configuration.memory_devices
    return total


def _domain_watts(plan: Plan | None, domain: str, pools: list[Resource]) -> float:
    if plan is None:
        return 0.0
    if domain in plan.watts_by_power_domain:
        return float(plan.watts_by_power_domain[domain])
    members = {p["metadata"]["name"] for p in pools if (p.get("spec") or {}).get("power_domain") == domain}
    return sum(g.expected_watts for g in plan.replica_groups if g.pool in members)
