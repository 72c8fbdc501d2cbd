"""Differences between two plans of a fleet, as a platform team reviews them."""

from __future__ import annotations

from pydantic import BaseModel, Field

from planner.schema import Plan, ReplicaGroup


class GroupChange(BaseModel):
    """Replicas of one (service, pool, configuration) before and after."""

    service: str
    pool: str
    configuration: str
    replicas_before: int
    replicas_after: int


class PlanDiff(BaseModel):
    """What changes when going from ``against`` to ``plan_id``."""

    plan_id: str
    against: str
    cost_usd_per_hour_before: float
    cost_usd_per_hour_after: float
    devices_by_type_delta: dict[str, int] = Field(default_factory=dict)
    services_added: list[str] = Field(default_factory=list)
    services_removed: list[str] = Field(default_factory=list)
    changes: list[GroupChange] = Field(default_factory=list, description="only groups whose replicas differ")


def _key(g: ReplicaGroup) -> tuple[str, str, str]:
    return (g.service, g.pool, g.configuration.label())


def diff_plans(new: Plan, old: Plan) -> PlanDiff:
    """Replica, device and cost changes from ``old`` to ``new``."""
    before: dict[tuple[str, str, str], int] = {}
    after: dict[tuple[str, str, str], int] = {}
    for g in old.replica_groups:
        before[_key(g)] = before.get(_key(g), 0) + g.replicas
    for g in new.replica_groups:
        after[_key(g)] = after.get(_key(g), 0) + g.replicas
    changes = [
        GroupChange(service=k[0], pool=k[1], configuration=k[2], replicas_before=before.get(k, 0),
                    replicas_after=after.get(k, 0))
        for k in sorted(set(before) | set(after)) if before.get(k, 0) != after.get(k, 0)
    ]
    types = set(old.devices_by_type) | set(new.devices_by_type)
    delta = {t: new.devices_by_type.get(t, 0) - old.devices_by_type.get(t, 0) for t in sorted(types)}
    old_services = {g.service for g in old.replica_groups}
    new_services = {g.service for g in new.replica_groups}
    return PlanDiff(
        plan_id=new.id, against=old.id, cost_usd_per_hour_before=old.cost_usd_per_hour,
        cost_usd_per_hour_after=new.cost_usd_per_hour, devices_by_type_delta={t: d for t, d in delta.items() if d},
        services_added=sorted(new_services - old_services), services_removed=sorted(old_services - new_services),
        changes=changes,
    )
