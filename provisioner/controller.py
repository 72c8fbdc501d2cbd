"""The controller: custom resources → FleetSpec → plan → cluster, level-triggered.

``Reconciler.reconcile`` does one full pass for a ``FleetPlan``: read the GPUPools, LLMServices (a service's
team is its namespace) and PowerDomains that belong to it (``spec.selector``; all by default); re-plan when
their specs changed since the stored plan (the digest of the inputs is kept in the status); render; then per
``spec.mode`` apply (``auto``), apply once ``spec.approvedPlanId`` names the plan (``approve``), or only report
the diff (``dry-run``). The outcome goes to ``FleetPlan.status`` as conditions ``Planned``, ``Progressing``,
``Ready``, ``Degraded`` with reasons; every other kind it owns gets its status too (``provisioner.statuses``),
and what it does is recorded as Events on the objects it acts on (``provisioner.events``).

Conventions:
- Drift repair: every pass server-side applies, with ``force``, what differs from the plan, so a managed
  object edited by another field manager (``kubectl set image``), scaled to 0 or deleted is put back by the
  next pass. Each object's write stands alone, with its own backoff across passes.
- One invalid LLMService degrades only itself: it is left out of planning, its running workloads are kept as
  the last plan had them (their nodes held back from its pools) and its status says why.
- Finalizer ``medley.dev/keep-workloads`` on the FleetPlan: deleting the FleetPlan by mistake keeps the
  serving workloads (the controller removes their owner references, so garbage collection leaves them, then
  lets the FleetPlan go). To remove them with it, annotate it first with
  ``medley.dev/on-delete=delete-workloads``.
- It touches only objects it applied itself (``rollout.is_medleys``): another manager's object is reported,
  never written or pruned, even when it carries Medley's labels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from planner.ports import Planner
from planner.schema import FleetSpec, Plan
from provisioner.apply import Applier, ApplyResult, ObjectBackoff
from provisioner.canary import Canary
from provisioner.cluster import ClusterClient, ConflictError, ObjectRef
from provisioner.crds import API_VERSION
from provisioner.events import EventRecorder
from provisioner.interruptions import plan_around, reclaim_digest, spot_reclaim
from provisioner.probes import ControllerMetrics
from provisioner.render import (
    MANAGED_BY,
    MEDLEY,
    SERVICE_LABEL,
    Owner,
    RenderError,
    RenderOptions,
    label_value,
    render_plan,
    team_namespace,
)
from provisioner.resources import (
    FleetInputs,
    SpecError,
    fleet_inputs,
    frozen_groups,
    inputs_digest,
    plan_is_fresh,
    reserve_pools,
    selector_of,
    with_frozen,
)
from provisioner.rollout import contains, is_medleys
from provisioner.statuses import Condition, StatusWriter, merge_conditions, without_nulls

log = logging.getLogger(__name__)
FLEETPLAN = "FleetPlan"
MODES = ("auto", "approve", "dry-run")
FINALIZER = "medley.dev/keep-workloads"
ON_DELETE = "medley.dev/on-delete"  # "keep" (default) or "delete-workloads"


def default_planner(fleet: FleetSpec, *, current: Plan | None = None) -> Plan:
    """The planner's ``plan_fleet``, imported when first needed."""
    from planner.pipeline import plan_fleet

    return plan_fleet(fleet, current=current)


@dataclass(frozen=True)
class Outcome:
    """What one reconcile pass decided, in condition form, and the apply result if any."""

    conditions: tuple[Condition, ...]
    plan: Plan | None = None
    result: ApplyResult | None = None
    digest: str = ""
    replanned: bool = False
    inputs: FleetInputs | None = None
    problem: tuple[str, str] | None = None  # (Kind/name, message) of an invalid shared resource
    canary: dict[str, Any] | None = None  # status.canary (provisioner.canary)
    canary_event: tuple[str, str, str] | None = None
    applied_id: str = ""  # the plan the cluster was given (a canary's plan, or its base after a rollback)


def _canary_base(status: dict[str, Any], current: Plan | None) -> Plan | None:
    """What runs under a canary: its base plan while it runs or after a rollback, else the current plan."""
    canary = status.get("canary") or {}
    if canary.get("state") in ("Running", "RolledBack") and canary.get("basePlan"):
        return Plan.model_validate(canary["basePlan"])
    return current


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Reconciler:
    """One reconcile pass per call; the cluster, the planner and time are injected."""

    client: ClusterClient
    planner: Planner = default_planner
    options: RenderOptions = field(default_factory=RenderOptions)
    now: Callable[[], str] = _utc_now
    events: EventRecorder | None = None
    metrics: ControllerMetrics | None = None
    backoff: ObjectBackoff = field(default_factory=ObjectBackoff)
    canary: Canary | None = None  # canary device-mix changes in auto mode (provisioner.canary)
    drain_s: float = 0.0  # a dropped workload leaves the Services this long before it is deleted

    def reconcile(self, name: str) -> Outcome | None:
        """Bring the cluster towards FleetPlan ``name``'s plan and record the outcome in its status."""
        started = time.monotonic()
        fleetplan = self.client.get(ObjectRef(FLEETPLAN, "", name))
        if fleetplan is None:
            return None
        if fleetplan["metadata"].get("deletionTimestamp"):
            self._finalize(fleetplan)
            return None
        fleetplan = self._ensure_finalizer(fleetplan)
        selector = selector_of(fleetplan)
        pools = self.client.list("GPUPool", selector)
        services = self.client.list("LLMService", selector)
        domains = self.client.list("PowerDomain", selector)
        outcome = self._decide(fleetplan, pools, services, domains)
        self._write_status(fleetplan, outcome)
        self._write_statuses(outcome, pools, services, domains)
        self._record(fleetplan, outcome)
        if self.metrics is not None:
            self._count(outcome, time.monotonic() - started)
        return outcome

    # ------------------------------------------------------------------------------------------ deciding

    def _decide(self, fleetplan: dict[str, Any], pools: list[dict[str, Any]], services: list[dict[str, Any]],
                domains: list[dict[str, Any]]) -> Outcome:
        status = fleetplan.get("status") or {}
        spec = fleetplan.get("spec") or {}
        mode = spec.get("mode", "approve")
        digest = inputs_digest(fleetplan, pools, services, domains)
        try:
            inputs = fleet_inputs(fleetplan, pools, services, domains)
        except SpecError as exc:
            return Outcome((Condition("Planned", False, "InvalidSpec", str(exc)),
                            Condition("Degraded", True, "InvalidSpec", str(exc))), problem=(exc.where, str(exc)))
        fleet = inputs.fleet
        lost = spot_reclaim(self.client, fleet)  # reclaimed spot nodes: planned around once (provisioner.interruptions)
        digest = reclaim_digest(digest, lost)
        current = Plan.model_validate(status["plan"]) if status.get("plan") else None
        frozen = frozen_groups(current, inputs.invalid)
        replanned = False
        if current is not None and status.get("inputsDigest") == digest and plan_is_fresh(
                current, fleet, {g.service for g in frozen}):
            plan = current
        else:
            try:
                if lost:
                    plan = plan_around(reserve_pools(fleet, frozen), current, lost, self.planner)
                else:
                    plan = self.planner(reserve_pools(fleet, frozen), current=current)
            except Exception as exc:  # the planner's InfeasibleFleet carries findings
                findings = getattr(exc, "findings", None)
                reason = "Infeasible" if findings is not None else "PlannerError"
                message = "; ".join(f.message for f in findings) if findings else str(exc)
                return Outcome((Condition("Planned", False, reason, message),
                                Condition("Degraded", True, reason, message)), inputs=inputs)
            plan = with_frozen(plan, frozen)
            if not plan.id:
                plan = plan.model_copy(update={"id": f"{fleet.name}-{digest[:10]}"})
            replanned = True
        planned = Condition("Planned", True, "Planned", f"plan {plan.id}: ${plan.cost_usd_per_hour:.2f}/h")
        owner = Owner(API_VERSION, FLEETPLAN, fleetplan["metadata"]["name"], fleetplan["metadata"].get("uid", ""))
        applied, canary, canary_event = plan, None, None
        if self.canary is not None and mode == "auto":
            applied, canary, canary_event = self.canary.step(status.get("canary"), _canary_base(status, current),
                                                             plan, fleet)
        served = applied.model_copy(update={"replica_groups": [g for g in applied.replica_groups
                                                               if g.service not in inputs.invalid]})
        try:
            manifests = render_plan(served, fleet, self.options, owner if owner.uid else None)
        except RenderError as exc:
            return Outcome((planned, Condition("Degraded", True, "RenderFailed", str(exc))), plan, digest=digest,
                           replanned=replanned, inputs=inputs)
        apply_now = mode == "auto" or (mode == "approve" and spec.get("approvedPlanId") == plan.id)
        applier = Applier(self.client, fleet.name, ready_timeout_s=0.0, preflight=False, backoff=self.backoff,
                          keep=self._keeper(inputs), drain_s=self.drain_s)
        started = time.monotonic()
        try:
            result = applier.apply(manifests, dry_run=not apply_now)
        except Exception as exc:  # listing or reading failed after retries: report; the next pass tries again
            message = str(exc)[:500]
            return Outcome((planned, Condition("Progressing", False, "ApplyFailed", message),
                            Condition("Degraded", True, "ApplyFailed", message)), plan, digest=digest,
                           replanned=replanned, inputs=inputs)
        finally:
            if self.metrics is not None:
                self.metrics.apply_seconds.observe(time.monotonic() - started)
        conditions = self._apply_conditions(planned, mode, apply_now, result, inputs.invalid)
        return Outcome(conditions, plan, result, digest, replanned, inputs, canary=canary, canary_event=canary_event,
                       applied_id=applied.id)

    def _keeper(self, inputs: FleetInputs) -> Callable[[dict[str, Any]], bool] | None:
        """Live objects of invalid services: kept exactly as they are (neither changed nor pruned)."""
        if not inputs.invalid:
            return None
        held = {(team_namespace(inputs.namespaces.get(name, "default"), self.options), label_value(name))
                for name in inputs.invalid}

        def keep(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata", {})
            return (meta.get("namespace", ""), meta.get("labels", {}).get(SERVICE_LABEL, "")) in held
        return keep

    @staticmethod
    def _apply_conditions(planned: Condition, mode: str, applied: bool, result: ApplyResult,
                          invalid: dict[str, str]) -> tuple[Condition, ...]:
        degraded = Condition("Degraded", False, "AsPlanned")
        if result.skipped:
            names = ", ".join(str(c.ref) for c in result.skipped)
            degraded = Condition("Degraded", True, "ForeignObjects", f"owned by another manager: {names}")
        if invalid:
            degraded = Condition("Degraded", True, "InvalidServices", "; ".join(invalid.values())
                                 + "; their running replicas are kept as the last plan had them")
        if result.failed or result.backing_off:
            lines = [str(f) for f in result.failed] + [f"{r}: backing off" for r in result.backing_off]
            degraded = Condition("Degraded", True, "ObjectsFailing", "; ".join(lines))
        if not applied:
            reason = "DryRun" if mode == "dry-run" else "AwaitingApproval"
            message = "diff in status.diff" + ("" if mode == "dry-run" else "; set spec.approvedPlanId to apply")
            if result.failed:
                degraded = Condition("Degraded", True, "ServerRefused", "; ".join(str(f) for f in result.failed))
            return (planned, Condition("Progressing", False, reason, message),
                    Condition("Ready", False, reason, message), degraded)
        if result.complete:
            return (planned, Condition("Progressing", False, "Complete", "the cluster matches the plan"),
                    Condition("Ready", True, "PlanApplied", "every workload of the plan is Ready"), degraded)
        if result.failed or result.backing_off:
            why = "Retrying", f"{len(result.failed) + len(result.backing_off)} objects failing; see Degraded"
        elif result.not_ready:
            why = "WaitingForReady", "not Ready yet: " + ", ".join(str(r) for r in result.not_ready)
        elif result.held:
            why = "HeldForCapacity", "; ".join(f"{c.ref}: {c.reason}" for c in result.held)
        else:
            why = "Blocked", "see Degraded"
        return (planned, Condition("Progressing", True, why[0], why[1][:1000]),
                Condition("Ready", False, why[0], why[1][:1000]), degraded)

    # ------------------------------------------------------------------------------------------ writing

    def _write_status(self, fleetplan: dict[str, Any], outcome: Outcome) -> None:
        old = fleetplan.get("status") or {}
        generation = fleetplan["metadata"].get("generation")
        new: dict[str, Any] = {
            "observedGeneration": generation,
            "conditions": merge_conditions(old.get("conditions", []), list(outcome.conditions), self.now(),
                                           generation),
        }
        if outcome.plan is not None:
            new["plan"] = outcome.plan.model_dump(mode="json", exclude={"fleet_snapshot"})  # the CRD keeps the digest
            new["planId"] = outcome.plan.id
            new["inputsDigest"] = outcome.digest
        if outcome.canary is not None:
            new["canary"] = outcome.canary
        if outcome.result is not None:
            new["diff"] = outcome.result.diff[:16000]
            if outcome.result.complete:
                new["appliedPlanId"] = outcome.applied_id or (outcome.plan.id if outcome.plan else "")
        # Only write when something changed, so our own status write does not wake us up forever. A merge
        # patch deletes null fields, so they are left out of both the write and the comparison.
        new = without_nulls(new)
        if not contains(new, old):
            self.client.patch_status(ObjectRef(FLEETPLAN, "", fleetplan["metadata"]["name"]), new)

    def _write_statuses(self, outcome: Outcome, pools: list[dict[str, Any]], services: list[dict[str, Any]],
                        domains: list[dict[str, Any]]) -> None:
        writer = StatusWriter(self.client, self.now, self.options)
        try:
            writer.pools(pools, outcome.plan, outcome.problem)
            writer.domains(domains, outcome.plan, pools, outcome.problem)
            workloads = [w for kind in ("Deployment", "LeaderWorkerSet") for w in self._list_quietly(kind)]
            invalid = outcome.inputs.invalid if outcome.inputs else {}
            writer.services(services, outcome.plan, invalid, workloads)
        except Exception as exc:  # noqa: BLE001 - statuses are written again next pass
            log.warning("could not write statuses: %s", exc)
            if self.metrics is not None:
                self.metrics.errors.labels("status").inc()

    def _list_quietly(self, kind: str) -> list[dict[str, Any]]:
        try:
            return self.client.list(kind, f"{MANAGED_BY}={MEDLEY}")
        except Exception as exc:
            if getattr(exc, "status", None) == 404:  # no LeaderWorkerSet API in this cluster
                return []
            raise

    def _record(self, fleetplan: dict[str, Any], outcome: Outcome) -> None:
        """Events for what the pass did: on the FleetPlan, the objects written, the invalid services."""
        if self.events is None:
            return
        meta = fleetplan["metadata"]
        me = ObjectRef(FLEETPLAN, "", meta["name"])
        uid = meta.get("uid", "")
        conditions = {c.type: c for c in outcome.conditions}
        if outcome.replanned and outcome.plan is not None:
            self.events.record(me, "Normal", "Planned", conditions["Planned"].message, uid)
        if outcome.canary_event is not None:
            kind, reason, message = outcome.canary_event
            self.events.record(me, "Warning" if kind == "Warning" else "Normal", reason, message, uid)
        planned = conditions.get("Planned")
        if planned is not None and not planned.status:
            self.events.record(me, "Warning", planned.reason, planned.message, uid)
        result = outcome.result
        if result is not None and not result.dry_run:
            drift = not outcome.replanned
            for ref in result.created:
                self.events.record(ref, "Normal", "Recreated" if drift else "Created", f"applied for plan "
                                   f"{outcome.plan.id if outcome.plan else ''}")
            for ref in result.updated:
                self.events.record(ref, "Normal", "DriftRepaired" if drift else "Updated",
                                   "put back as the plan has it" if drift else "changed to the new plan")
            for ref in result.shrunk:
                self.events.record(ref, "Normal", "ScaledDown", "its replacement is Ready")
            for ref in result.pruned:
                self.events.record(ref, "Normal", "Pruned", "no longer in the plan")
            for failure in result.failed:
                self.events.record(failure.ref, "Warning", "ApplyFailed", failure.message)
            if result.changed:
                self.events.record(me, "Normal", "Applied", f"created {len(result.created)}, updated "
                                   f"{len(result.updated)}, scaled down {len(result.shrunk)}, pruned "
                                   f"{len(result.pruned)}", uid)
        inputs = outcome.inputs
        for name, message in (inputs.invalid if inputs else {}).items():
            namespace = inputs.namespaces.get(name, "default") if inputs else "default"
            self.events.record(ObjectRef("LLMService", namespace, name), "Warning", "InvalidSpec", message)

    def _count(self, outcome: Outcome, seconds: float) -> None:
        assert self.metrics is not None
        conditions = {c.type: c for c in outcome.conditions}
        ready, planned = conditions.get("Ready"), conditions.get("Planned")
        if planned is not None and not planned.status:
            result = "plan_failed"
        elif outcome.result is None:
            result = "apply_failed"
        else:
            result = "ready" if ready is not None and ready.status else "progressing"
        self.metrics.reconciles.labels(result).inc()
        self.metrics.reconcile_seconds.observe(seconds)
        self.metrics.last_pass.set(time.time())
        if planned is not None and not planned.status:
            self.metrics.errors.labels("plan").inc()
        if outcome.result is not None:
            r = outcome.result
            for action, refs in (("create", r.created), ("update", r.updated), ("shrink", r.shrunk),
                                 ("prune", r.pruned)):
                if refs:
                    self.metrics.writes.labels(action).inc(len(refs))
            if r.failed:
                self.metrics.errors.labels("object").inc(len(r.failed))
        self.metrics.objects_failing.set(len(self.backoff.waiting()))

    # ------------------------------------------------------------------------------------------ finalizer

    def _ensure_finalizer(self, fleetplan: dict[str, Any]) -> dict[str, Any]:
        meta = fleetplan["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER in finalizers:
            return fleetplan
        try:
            return self.client.patch(ObjectRef(FLEETPLAN, "", meta["name"]), {"metadata": {
                "finalizers": [*finalizers, FINALIZER], "resourceVersion": meta.get("resourceVersion")}})
        except ConflictError:
            return fleetplan  # changed meanwhile: the next pass adds it

    def _finalize(self, fleetplan: dict[str, Any]) -> None:
        """A FleetPlan being deleted: keep its workloads (default) or delete them, then let it go."""
        meta = fleetplan["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER not in finalizers:
            return
        me = ObjectRef(FLEETPLAN, "", meta["name"])
        uid = meta.get("uid", "")
        mine = [w for w in Applier(self.client, meta["name"]).live_managed() if is_medleys(w)]
        if (meta.get("annotations") or {}).get(ON_DELETE) == "delete-workloads":
            for obj in mine:
                self.client.delete(ObjectRef.of(obj))
            message = f"deleted {len(mine)} objects of the fleet, as {ON_DELETE}=delete-workloads asked"
        else:
            kept = 0
            for obj in mine:
                owners = obj["metadata"].get("ownerReferences") or []
                others = [o for o in owners if o.get("uid") != uid]
                if len(others) != len(owners):
                    self.client.patch(ObjectRef.of(obj), {"metadata": {"ownerReferences": others or None}})
                kept += 1
            message = (f"kept {kept} objects serving (owner references removed); to remove them: kubectl delete "
                       f"deploy,svc,pdb -A -l medley.dev/fleet={label_value(meta['name'])}")
        if self.events is not None:
            self.events.record(me, "Normal", "Finalized", message, uid)
        self.client.patch(me, {"metadata": {"finalizers": [f for f in finalizers if f != FINALIZER] or None,
                                            "resourceVersion": meta.get("resourceVersion")}})
        log.info("FleetPlan %s deleted: %s", meta["name"], message)

