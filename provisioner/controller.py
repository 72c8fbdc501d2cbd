"""The controller: custom resources → FleetSpec → plan → cluster, level-triggered, one leader at a time.

``Reconciler.reconcile`` does one full pass for a ``FleetPlan``: read GPUPools, LLMServices (a service's
team is its namespace) and PowerDomains; re-plan when their specs changed since the stored plan (the
digest of the inputs is kept in the status); render; then per ``spec.mode`` apply (``auto``), apply once
``spec.approvedPlanId`` names the plan (``approve``), or only report the diff (``dry-run``). The outcome
goes to ``FleetPlan.status`` as conditions ``Planned``, ``Progressing``, ``Ready``, ``Degraded`` with
reasons. Because every pass server-side applies what differs, a managed object edited by hand is put
back (drift repair).

``ControllerLoop`` wraps it: a ``coordination.k8s.io`` Lease elects the one replica that acts, change
notices (from kopf's watches, see ``provisioner.operator``) are debounced, and a periodic resync keeps it
level-triggered even when a notice is lost.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from planner.ports import Planner
from planner.schema import FleetSpec, Plan, PlannerOptions, Pool, PowerDomain, Service
from provisioner.apply import Applier, ApplyResult
from provisioner.cluster import ClusterClient, ConflictError, ObjectRef
from provisioner.crds import API_VERSION
from provisioner.render import (
    COMPONENT_LABEL,
    MANAGED_BY,
    MEDLEY,
    SERVICE_LABEL,
    Owner,
    RenderError,
    RenderOptions,
    label_value,
    render_plan,
)
from provisioner.rollout import contains, ready_replicas, replicas

log = logging.getLogger(__name__)
FLEETPLAN = "FleetPlan"
MODES = ("auto", "approve", "dry-run")


def default_planner(fleet: FleetSpec, *, current: Plan | None = None) -> Plan:
    """The planner's ``plan_fleet``, imported when first needed."""
    from planner.pipeline import plan_fleet

    return plan_fleet(fleet, current=current)


class SpecError(ValueError):
    """A custom resource does not make a valid fleet; the message is ``Kind/name: field: reason``."""


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in err.get("loc", ()))
    return f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid"))


def fleet_from_resources(fleetplan: dict[str, Any], pools: list[dict[str, Any]], services: list[dict[str, Any]],
                         domains: list[dict[str, Any]]) -> FleetSpec:
    """The FleetSpec the custom resources describe (ids from names, teams from namespaces)."""
    def build(model: Any, obj: dict[str, Any], extra: dict[str, Any]) -> Any:
        where = f"{obj.get('kind', model.__name__)}/{obj['metadata']['name']}"
        try:
            return model.model_validate({**obj.get("spec", {}), **extra})
        except ValidationError as exc:
            raise SpecError(f"{where}: spec.{_first_error(exc)}") from None

    spec = fleetplan.get("spec", {})
    try:
        options = PlannerOptions.model_validate(spec.get("planner", {}))
        fleet = FleetSpec(
            name=fleetplan["metadata"]["name"],
            pools=[build(Pool, p, {"id": p["metadata"]["name"]}) for p in pools],
            services=[build(Service, s, {"id": s["metadata"]["name"],
                                         "team": s["metadata"].get("namespace", "default")}) for s in services],
            power_domains=[build(PowerDomain, d, {"id": d["metadata"]["name"]}) for d in domains],
            planner=options,
        )
    except ValidationError as exc:
        raise SpecError(f"FleetPlan/{fleetplan['metadata']['name']}: {_first_error(exc)}") from None
    return fleet


def plan_is_fresh(plan: Plan, fleet: FleetSpec) -> bool:
    """Whether a stored plan still names only services and pools the fleet has."""
    services = {s.id for s in fleet.services}
    pools = {p.id for p in fleet.pools}
    return all(g.service in services and g.pool in pools for g in plan.replica_groups)


def inputs_digest(fleetplan: dict[str, Any], *groups: list[dict[str, Any]]) -> str:
    """A digest of what planning depends on: the specs (not statuses) of the resources."""
    specs = [fleetplan.get("spec", {}).get("planner", {})]
    for objs in groups:
        specs.extend(sorted(([o["metadata"].get("namespace", ""), o["metadata"]["name"], o.get("spec", {})]
                             for o in objs), key=lambda x: (x[0], x[1])))
    return hashlib.sha256(json.dumps(specs, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Condition:
    """One status condition (``type`` Planned, Progressing, Ready or Degraded)."""

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


@dataclass(frozen=True)
class Outcome:
    """What one reconcile pass decided, in condition form, and the apply result if any."""

    conditions: tuple[Condition, ...]
    plan: Plan | None = None
    result: ApplyResult | None = None
    digest: str = ""


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Reconciler:
    """One reconcile pass per call; the cluster, the planner and time are injected."""

    client: ClusterClient
    planner: Planner = default_planner
    options: RenderOptions = field(default_factory=RenderOptions)
    now: Callable[[], str] = _utc_now
    applier_factory: Callable[[ClusterClient, str], Applier] = field(
        default=lambda client, fleet: Applier(client, fleet, ready_timeout_s=0.0))

    def reconcile(self, name: str) -> Outcome | None:
        """Bring the cluster towards FleetPlan ``name``'s plan and record the outcome in its status."""
        fleetplan = self.client.get(ObjectRef(FLEETPLAN, "", name))
        if fleetplan is None:
            return None
        outcome = self._decide(fleetplan)
        self._write_status(fleetplan, outcome)
        self._write_service_statuses(outcome)
        return outcome

    def _decide(self, fleetplan: dict[str, Any]) -> Outcome:
        status = fleetplan.get("status") or {}
        spec = fleetplan.get("spec") or {}
        mode = spec.get("mode", "approve")
        pools = self.client.list("GPUPool")
        services = self.client.list("LLMService")
        domains = self.client.list("PowerDomain")
        digest = inputs_digest(fleetplan, pools, services, domains)
        try:
            fleet = fleet_from_resources(fleetplan, pools, services, domains)
        except SpecError as exc:
            return Outcome((Condition("Planned", False, "InvalidSpec", str(exc)),
                            Condition("Degraded", True, "InvalidSpec", str(exc))))
        current = Plan.model_validate(status["plan"]) if status.get("plan") else None
        if current is not None and status.get("inputsDigest") == digest and plan_is_fresh(current, fleet):
            plan = current
        else:
            try:
                plan = self.planner(fleet, current=current)
            except Exception as exc:  # the planner's InfeasibleFleet carries findings
                findings = getattr(exc, "findings", None)
                reason = "Infeasible" if findings is not None else "PlannerError"
                message = "; ".join(f.message for f in findings) if findings else str(exc)
                return Outcome((Condition("Planned", False, reason, message),
                                Condition("Degraded", True, reason, message)))
            if not plan.id:
                plan = plan.model_copy(update={"id": f"{fleet.name}-{digest[:10]}"})
        planned = Condition("Planned", True, "Planned", f"plan {plan.id}: ${plan.cost_usd_per_hour:.2f}/h")
        owner = Owner(API_VERSION, FLEETPLAN, fleetplan["metadata"]["name"], fleetplan["metadata"].get("uid", ""))
        try:
            manifests = render_plan(plan, fleet, self.options, owner if owner.uid else None)
        except RenderError as exc:
            return Outcome((planned, Condition("Degraded", True, "RenderFailed", str(exc))), plan, digest=digest)
        applier = self.applier_factory(self.client, fleet.name)
        apply_now = mode == "auto" or (mode == "approve" and spec.get("approvedPlanId") == plan.id)
        try:
            result = applier.apply(manifests, dry_run=not apply_now)
        except Exception as exc:  # retries are spent: report and let the next pass try again
            return Outcome((planned, Condition("Progressing", False, "ApplyFailed", str(exc)[:500]),
                            Condition("Degraded", True, "ApplyFailed", str(exc)[:500])), plan, digest=digest)
        return Outcome(self._apply_conditions(planned, mode, apply_now, result), plan, result, digest)

    @staticmethod
    def _apply_conditions(planned: Condition, mode: str, applied: bool, result: ApplyResult) -> tuple[Condition, ...]:
        if not applied:
            reason = "DryRun" if mode == "dry-run" else "AwaitingApproval"
            message = "diff in status.diff" + ("" if mode == "dry-run" else "; set spec.approvedPlanId to apply")
            return (planned, Condition("Progressing", False, reason, message),
                    Condition("Ready", False, reason, message), Condition("Degraded", False, "AsPlanned"))
        degraded = Condition("Degraded", False, "AsPlanned")
        if result.skipped:
            names = ", ".join(str(c.ref) for c in result.skipped)
            degraded = Condition("Degraded", True, "ForeignObjects", f"owned by another manager: {names}")
        if result.complete:
            return (planned, Condition("Progressing", False, "Complete", "the cluster matches the plan"),
                    Condition("Ready", True, "PlanApplied", "every workload of the plan is Ready"), degraded)
        if result.not_ready:
            why = "WaitingForReady", "not Ready yet: " + ", ".join(str(r) for r in result.not_ready)
        elif result.held:
            why = "HeldForCapacity", "; ".join(f"{c.ref}: {c.reason}" for c in result.held)
        else:
            why = "Blocked", "see Degraded"
        return (planned, Condition("Progressing", True, why[0], why[1][:1000]),
                Condition("Ready", False, why[0], why[1][:1000]), degraded)

    def _write_service_statuses(self, outcome: Outcome) -> None:
        """Each LLMService's planned and Ready replicas, from the workloads Medley runs for it."""
        if outcome.plan is None or outcome.result is None or outcome.result.dry_run:
            return
        workloads = [w for kind in ("Deployment", "LeaderWorkerSet") for w in self._list_quietly(kind)]
        for svc in self.client.list("LLMService"):
            meta = svc["metadata"]
            mine = [w for w in workloads if w["metadata"].get("namespace") == meta.get("namespace")
                    and w["metadata"].get("labels", {}).get(SERVICE_LABEL) == label_value(meta["name"])
                    and w["metadata"].get("labels", {}).get(COMPONENT_LABEL) != "attention"]
            want = sum(replicas(w) for w in mine)
            ready = sum(min(ready_replicas(w), replicas(w)) for w in mine)
            ok = want > 0 and ready >= want
            status = {"replicas": want, "readyReplicas": ready, "conditions": merge_conditions(
                (svc.get("status") or {}).get("conditions", []),
                [Condition("Ready", ok, "Serving" if ok else "Provisioning", f"{ready}/{want} replicas Ready")],
                self.now(), meta.get("generation"))}
            if not contains(status, svc.get("status") or {}):
                self.client.patch_status(ObjectRef("LLMService", meta.get("namespace", ""), meta["name"]), status)

    def _list_quietly(self, kind: str) -> list[dict[str, Any]]:
        try:
            return self.client.list(kind, f"{MANAGED_BY}={MEDLEY}")
        except Exception as exc:
            if getattr(exc, "status", None) == 404:  # no LeaderWorkerSet API in this cluster
                return []
            raise

    def _write_status(self, fleetplan: dict[str, Any], outcome: Outcome) -> None:
        old = fleetplan.get("status") or {}
        generation = fleetplan["metadata"].get("generation")
        new: dict[str, Any] = {
            "observedGeneration": generation,
            "conditions": merge_conditions(old.get("conditions", []), list(outcome.conditions), self.now(),
                                           generation),
        }
        if outcome.plan is not None:
            new["plan"] = outcome.plan.model_dump(mode="json")
            new["planId"] = outcome.plan.id
            new["inputsDigest"] = outcome.digest
        if outcome.result is not None:
            new["diff"] = outcome.result.diff[:16000]
            if outcome.result.complete:
                new["appliedPlanId"] = outcome.plan.id if outcome.plan else ""
        if generation is None:
            del new["observedGeneration"]
        # Only write when something changed, so our own status write does not wake us up forever.
        if not contains(new, old):
            self.client.patch_status(ObjectRef(FLEETPLAN, "", fleetplan["metadata"]["name"]), new)


@dataclass
class LeaseElector:
    """Leader election on a ``coordination.k8s.io/v1`` Lease with optimistic concurrency."""

    client: ClusterClient
    name: str
    namespace: str
    identity: str
    duration_s: int = 15
    clock: Callable[[], float] = time.time

    @staticmethod
    def _stamp(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    @staticmethod
    def _parse(text: str | None) -> float:
        if not text:
            return 0.0
        return datetime.strptime(text.replace("Z", "").split(".")[0], "%Y-%m-%dT%H:%M:%S").replace(
            tzinfo=UTC).timestamp()

    def try_acquire(self) -> bool:
        """Take or renew the lease; False when another live holder has it or the write lost a race."""
        now = self.clock()
        ref = ObjectRef("Lease", self.namespace, self.name)
        try:
            lease = self.client.get(ref)
            if lease is None:
                self.client.create({
                    "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration_s,
                             "acquireTime": self._stamp(now), "renewTime": self._stamp(now), "leaseTransitions": 0},
                })
                return True
            spec = dict(lease.get("spec") or {})
            holder = spec.get("holderIdentity")
            expired = self._parse(spec.get("renewTime")) + spec.get("leaseDurationSeconds", self.duration_s) < now
            if holder not in (None, "", self.identity) and not expired:
                return False
            if holder != self.identity:
                spec["acquireTime"] = self._stamp(now)
                spec["leaseTransitions"] = int(spec.get("leaseTransitions", 0)) + 1
            spec.update(holderIdentity=self.identity, renewTime=self._stamp(now), leaseDurationSeconds=self.duration_s)
            self.client.replace({**lease, "spec": spec})
            return True
        except ConflictError:
            return False  # another replica wrote first; it leads this round
        except Exception:  # the API is unreachable: without a renewed lease, acting is unsafe
            return False

    def release(self) -> None:
        """Give the lease up (on shutdown) so another replica takes over at once."""
        try:
            lease = self.client.get(ObjectRef("Lease", self.namespace, self.name))
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                spec = {**lease["spec"], "holderIdentity": ""}
                self.client.replace({**lease, "spec": spec})
        except Exception:
            pass  # expiry hands it over anyway


@dataclass
class Debouncer:
    """Coalesces bursts of change notices: due after ``quiet_s`` without news, or ``max_wait_s`` after the first."""

    quiet_s: float = 2.0
    max_wait_s: float = 30.0
    first: float | None = None
    last: float | None = None

    def note(self, now: float) -> None:
        if self.first is None:
            self.first = now
        self.last = now

    def due(self, now: float) -> bool:
        if self.first is None or self.last is None:
            return False
        return now - self.last >= self.quiet_s or now - self.first >= self.max_wait_s

    def clear(self) -> None:
        self.first = self.last = None


@dataclass
class ControllerLoop:
    """Leader-elected, debounced, periodically resynced reconcile loop for one FleetPlan."""

    reconciler: Reconciler
    elector: LeaseElector
    fleetplan: str
    debouncer: Debouncer = field(default_factory=Debouncer)
    resync_s: float = 30.0
    tick_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    last_pass: float | None = None
    leading: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def note_change(self) -> None:
        """A watched object changed (thread-safe: kopf's handlers call it)."""
        with self._lock:
            self.debouncer.note(self.clock())

    def step(self) -> Outcome | None:
        """One tick: renew the lease; reconcile when a change settled or the resync is due."""
        self.leading = self.elector.try_acquire()
        if not self.leading:
            return None
        now = self.clock()
        with self._lock:
            due = self.debouncer.due(now) or self.last_pass is None or now - self.last_pass >= self.resync_s
            if due:
                self.debouncer.clear()
        if not due:
            return None
        self.last_pass = now
        return self.reconciler.reconcile(self.fleetplan)

    def run(self, stop: threading.Event, max_steps: int | None = None) -> None:
        """Step until ``stop`` is set (or ``max_steps``); releases the lease on the way out."""
        steps = 0
        try:
            while not stop.is_set() and (max_steps is None or steps < max_steps):
                try:
                    self.step()
                except Exception:  # one failed pass must not end the controller; the next tick retries
                    log.exception("reconcile pass failed")
                steps += 1
                self.sleep(self.tick_s)
        finally:
            if self.leading:
                self.elector.release()
