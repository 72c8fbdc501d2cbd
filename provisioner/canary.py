"""Canary of a device-mix change: the new mix takes a slice of the traffic first, and the controller keeps it
or rolls it back by what the metrics show.

A new plan *changes a service's mix* when the set of (pool, configuration) it runs on differs from the plan
in force. Instead of rolling such a plan out at once, the controller applies the *canary plan*: the plan in
force, plus the new mix's groups of those services at ``slice`` of their replicas (at least one each). The
service's Service selects every serving pod, so the new mix takes about its share of the pods' traffic.
After ``observe_s`` it compares, per service, the canary groups with the old ones from the metrics
(``TrafficSource.attainment`` per replica group, labelled ``medley.dev/group``):

    regression  ⇔  new TTFT or TPOT share < old share − tolerance,
                   or new share < the SLO percentile while the old one meets it,
                   or new $ per request > old $ per request · (1 + cost_tolerance)

($ per request: the groups' $/h over the requests they served). No regression: the new plan is rolled out
(``Promoted``). A regression: the canary groups are removed, the plan in force stays, and the rejected plan
is not tried again until the inputs change (``RolledBack``). Either way the FleetPlan's ``status.canary``
says what happened and why, and an Event records it. Too few requests to judge (``min_requests`` per side)
extend the canary up to ``max_observe_s``, then the old plan stays (``RolledBack``: not enough evidence).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from planner.observe import Attainment, TrafficSource
from planner.schema import FleetSpec, Plan, ReplicaGroup, Service
from provisioner.render import group_name

Mix = frozenset[tuple[str, str]]


@dataclass(frozen=True)
class CanaryPolicy:
    """How large the slice is, how long it runs and what counts as a regression."""

    slice: float = 0.1
    observe_s: float = 600.0
    max_observe_s: float = 1800.0
    tolerance: float = 0.02
    cost_tolerance: float = 0.05
    min_requests: float = 50.0


def service_mix(plan: Plan, service: str) -> Mix:
    """The (pool, configuration) pairs a service runs on in a plan."""
    return frozenset((g.pool, g.configuration.label()) for g in plan.replica_groups
                     if g.service == service and g.replicas > 0)


def mix_changes(old: Plan, new: Plan) -> list[str]:
    """Services whose device mix the new plan changes (a service new to the fleet is not a change)."""
    services = {g.service for g in new.replica_groups}
    return sorted(s for s in services if service_mix(old, s) and service_mix(old, s) != service_mix(new, s))


def canary_plan(old: Plan, new: Plan, services: list[str], slice_share: float) -> Plan:
    """The plan in force plus, for each changed service, the new mix's groups at ``slice_share`` of their
    replicas (at least one)."""
    held = {(g.service, g.pool, g.configuration.label()) for g in old.replica_groups}
    extra: list[ReplicaGroup] = []
    for g in new.replica_groups:
        if g.service in services and (g.service, g.pool, g.configuration.label()) not in held and g.replicas > 0:
            n = max(1, math.ceil(g.replicas * slice_share - 1e-9))
            extra.append(g.model_copy(update={"replicas": n, "cost_usd_per_hour": g.cost_usd_per_hour / g.replicas * n,
                                              "expected_watts": g.expected_watts / g.replicas * n}))
    groups = [*old.replica_groups, *extra]
    return old.model_copy(update={"id": f"{new.id}-canary", "replica_groups": groups,
                                  "cost_usd_per_hour": sum(g.cost_usd_per_hour for g in groups)})


@dataclass(frozen=True)
class Side:
    """What one side (old or new mix) of a service showed: shares within the targets, requests, $/h."""

    attainment: Attainment
    usd_per_hour: float
    window_s: float

    @property
    def usd_per_request(self) -> float:
        per_hour = self.attainment.requests / self.window_s * 3600.0 if self.window_s > 0 else 0.0
        return self.usd_per_hour / per_hour if per_hour > 0 else math.inf


def _merge(parts: list[Attainment]) -> Attainment:
    total = sum(p.requests for p in parts)

    def share(pick: Callable[[Attainment], float | None]) -> float | None:
        known = [(pick(p), p.requests) for p in parts if pick(p) is not None and p.requests > 0]
        n = sum(w for _, w in known)
        return sum(float(v) * w for v, w in known if v is not None) / n if n else None

    return Attainment(share(lambda a: a.ttft), share(lambda a: a.tpot), total)


def regression(old: Side, new: Side, percentile: float, policy: CanaryPolicy) -> str:
    """Why the new side regressed against the old one (empty: it did not)."""
    reasons = []
    need = percentile / 100.0
    for name, o, n in (("TTFT", old.attainment.ttft, new.attainment.ttft),
                       ("TPOT", old.attainment.tpot, new.attainment.tpot)):
        if o is None or n is None:
            continue
        if n < o - policy.tolerance:
            reasons.append(f"{name} within target {100 * n:.1f}% < old mix {100 * o:.1f}%")
        elif n < need <= o:
            reasons.append(f"{name} within target {100 * n:.1f}% < SLO {percentile:g}% (old mix meets it)")
    if new.usd_per_request > old.usd_per_request * (1 + policy.cost_tolerance):
        reasons.append(f"${new.usd_per_request * 1e3:.3f} per 1k requests > old mix "
                       f"${old.usd_per_request * 1e3:.3f}")
    return "; ".join(reasons)


def sides(plan: Plan, service: Service, new_mix: Mix, traffic: TrafficSource, start_s: float,
          end_s: float) -> tuple[Side, Side]:
    """The old and the new mix's groups of a service in the canary plan, as the metrics saw them."""
    old: list[Attainment] = []
    new: list[Attainment] = []
    usd = [0.0, 0.0]
    for g in plan.replica_groups:
        if g.service != service.id or g.replicas <= 0:
            continue
        seen = traffic.attainment(service.id, start_s, end_s, service.slo, group=group_name(g))
        is_new = (g.pool, g.configuration.label()) in new_mix
        (new if is_new else old).append(seen)
        usd[int(is_new)] += g.cost_usd_per_hour
    window = max(end_s - start_s, 1e-9)
    return Side(_merge(old), usd[0], window), Side(_merge(new), usd[1], window)


@dataclass
class Canary:
    """Decides, each pass, which plan the cluster gets while a mix change is canaried (see the module)."""

    traffic: TrafficSource
    policy: CanaryPolicy = field(default_factory=CanaryPolicy)
    clock: Callable[[], float] = field(default=lambda: 0.0)

    def step(self, state: dict[str, Any] | None, base: Plan | None, target: Plan,
             fleet: FleetSpec) -> tuple[Plan, dict[str, Any] | None, tuple[str, str, str] | None]:
        """(plan to apply now, ``status.canary`` to write, Event (type, reason, message) or None)."""
        now = self.clock()
        state = dict(state or {})
        if state.get("targetPlanId") == target.id:
            if state.get("state") == "RolledBack":
                kept = Plan.model_validate(state["basePlan"])
                return kept, state, None
            if state.get("state") == "Promoted":
                return target, state, None
            if state.get("state") == "Running":
                return self._judge(state, target, fleet, now)
        if base is None or base.id == target.id:
            return target, state or None, None
        changed = mix_changes(base, target)
        if not changed:
            return target, state or None, None
        plan = canary_plan(base, target, changed, self.policy.slice)
        reason = f"new mix of {', '.join(changed)} takes a {100 * self.policy.slice:g}% slice"
        new_state: dict[str, Any] = {"state": "Running", "targetPlanId": target.id, "canaryPlanId": plan.id,
                                     "services": changed, "startedAt": now,
                                     "basePlan": base.model_dump(mode="json", exclude={"fleet_snapshot"}),
                                     "reason": reason}
        return plan, new_state, ("Normal", "CanaryStarted", reason)

    def _judge(self, state: dict[str, Any], target: Plan, fleet: FleetSpec,
               now: float) -> tuple[Plan, dict[str, Any], tuple[str, str, str] | None]:
        base = Plan.model_validate(state["basePlan"])
        plan = canary_plan(base, target, list(state["services"]), self.policy.slice)
        started = float(state["startedAt"])
        if now - started < self.policy.observe_s:
            return plan, state, None
        services = {s.id: s for s in fleet.services}
        verdicts: list[str] = []
        thin: list[str] = []
        lines: list[str] = []
        for svc in state["services"]:
            if svc not in services:
                continue
            old, new = sides(plan, services[svc], service_mix(target, svc), self.traffic, started, now)
            if min(old.attainment.requests, new.attainment.requests) < self.policy.min_requests:
                thin.append(svc)
                continue
            why = regression(old, new, services[svc].slo.percentile, self.policy)
            lines.append(f"{svc}: old TTFT/TPOT {_pct(old.attainment)}, new {_pct(new.attainment)}")
            if why:
                verdicts.append(f"{svc}: {why}")
        if thin and not verdicts and now - started < self.policy.max_observe_s:
            return plan, state, None
        if verdicts or thin:
            reason = "; ".join(verdicts) if verdicts else f"too few requests to judge {', '.join(thin)}"
            done = {**state, "state": "RolledBack", "reason": reason, "decidedAt": now}
            return base, done, ("Warning", "CanaryRolledBack", reason)
        reason = "no regression: " + "; ".join(lines)
        return target, {**state, "state": "Promoted", "reason": reason, "decidedAt": now}, (
            "Normal", "CanaryPromoted", reason)


def _pct(a: Attainment) -> str:
    return "/".join("-" if v is None else f"{100 * v:.1f}%" for v in (a.ttft, a.tpot))
