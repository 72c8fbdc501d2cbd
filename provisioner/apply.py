"""The applier: makes the cluster match rendered manifests, make-before-break, through a ClusterClient.

``Applier.apply`` lists what Medley runs for the fleet, asks ``rollout.plan_changes`` what differs, and
then (0) with ``preflight`` (all or nothing: the CLI, the REST API) checks the namespaces the manifests name
(creates them when ``create_namespaces``, else refuses before writing anything) and has the server dry-run
every write (``dryRun=All``), so an admission error also refuses the whole apply before anything is written;
(1) server-side applies creations, changes and scale-ups, holding shrinking workloads at today's replicas;
(2) waits, boundedly, for those workloads to be Ready; (3) shrinks and prunes only the steps
``rollout.break_steps`` allows, a pruned workload drained first when ``drain_s`` is set (``rollout.drain_order``:
its pods leave the Services, and it is deleted on a later pass once the drain time has passed).

Each object's write stands alone: one that fails is reported (``ApplyResult.failed``) and the others go on;
an ``ObjectBackoff`` shared across passes (the controller's) skips a failing object until its backoff
(2 s, doubling, at most 5 min) is over. Unchanged objects get no write, so applying twice changes nothing;
objects of another manager are reported and never written; only objects Medley applied and labelled as
its own for this fleet are pruned. A rollout not finished within the wait is reported as progressing and
picked up by the next call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from kubernetes.client.exceptions import ApiException
from pydantic import BaseModel, Field

from planner.schema import FleetSpec, Plan
from provisioner.cluster import ClusterClient, ObjectRef, error_line
from provisioner.render import (
    FLEET_LABEL,
    MANAGED_BY,
    MEDLEY,
    SERVING_LABEL,
    RenderOptions,
    label_value,
    render_plan,
)
from provisioner.rollout import (
    DRAINING_ANNOTATION,
    WORKLOAD_KINDS,
    Change,
    ChangeSet,
    break_steps,
    drain_order,
    is_ready,
    plan_changes,
    render_diff,
)

Manifest = dict[str, Any]
MANAGED_KINDS = ("Deployment", "LeaderWorkerSet", "PodDisruptionBudget", "Service")


class ApplyRefused(Exception):
    """Nothing was written: a namespace is missing, or the server refused an object in a dry run."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class ObjectFailure:
    """One object whose write failed in this pass (the others went on)."""

    ref: ObjectRef
    action: str
    message: str

    def __str__(self) -> str:
        return f"{self.ref}: {self.message}"


@dataclass
class ObjectBackoff:
    """Per-object backoff across passes: after ``n`` failures an object waits ``initial_s · 2^(n-1)`` (capped)."""

    initial_s: float = 2.0
    max_s: float = 300.0
    clock: Callable[[], float] = time.monotonic
    _state: dict[ObjectRef, tuple[int, float]] = field(default_factory=dict)

    def due(self, ref: ObjectRef) -> bool:
        """Whether ``ref`` may be tried now."""
        state = self._state.get(ref)
        return state is None or self.clock() >= state[1]

    def failed(self, ref: ObjectRef) -> float:
        """Record a failure; returns the seconds until the next try."""
        failures = self._state.get(ref, (0, 0.0))[0] + 1
        delay = min(self.max_s, self.initial_s * 2.0 ** (failures - 1))
        self._state[ref] = (failures, self.clock() + delay)
        return delay

    def succeeded(self, ref: ObjectRef) -> None:
        """Forget an object's failures."""
        self._state.pop(ref, None)

    def waiting(self) -> list[ObjectRef]:
        """Objects still backing off."""
        now = self.clock()
        return sorted(ref for ref, (_, until) in self._state.items() if until > now)


@dataclass(frozen=True)
class ApplyResult:
    """What one apply did (or, in a dry run, would do)."""

    diff: str
    created: tuple[ObjectRef, ...] = ()
    updated: tuple[ObjectRef, ...] = ()
    shrunk: tuple[ObjectRef, ...] = ()
    pruned: tuple[ObjectRef, ...] = ()
    held: tuple[Change, ...] = ()
    skipped: tuple[Change, ...] = ()
    not_ready: tuple[ObjectRef, ...] = ()
    dry_run: bool = False
    failed: tuple[ObjectFailure, ...] = ()
    backing_off: tuple[ObjectRef, ...] = ()
    namespaces_created: tuple[str, ...] = ()

    @property
    def complete(self) -> bool:
        """The cluster matches the plan and every workload is Ready."""
        return not (self.held or self.not_ready or self.skipped or self.failed or self.backing_off
                    or self.dry_run)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.shrunk or self.pruned or self.namespaces_created)


def _namespaced(manifest: Manifest) -> str:
    return str(manifest["metadata"].get("namespace") or "")


def _missing(namespace: str) -> ObjectFailure:
    return ObjectFailure(ObjectRef("Namespace", "", namespace), "create",
                         "does not exist; create it first (or let Medley create it)")


@dataclass
class Applier:
    """Applies manifests of one fleet; ``sleep`` and ``clock`` are injected so tests control time."""

    client: ClusterClient
    fleet: str
    ready_timeout_s: float = 900.0
    poll_s: float = 5.0
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic
    on_poll: Callable[[], None] | None = None
    kinds: tuple[str, ...] = MANAGED_KINDS
    create_namespaces: bool = False
    # all or nothing (the CLI, the API): refuse before writing when a namespace is missing or the server's dry
    # run refuses an object. Off (the controller): each object's write fails or succeeds on its own.
    preflight: bool = True
    backoff: ObjectBackoff | None = None
    keep: Callable[[Manifest], bool] | None = None  # live objects to leave exactly as they are
    drain_s: float = 0.0  # a dropped workload serves out its requests this long before it is deleted (rollout)
    wall: Callable[[], float] = time.time  # Unix seconds, for the drain stamps other passes read
    _kinds_missing: set[str] = field(default_factory=set)

    def selector(self) -> str:
        return f"{MANAGED_BY}={MEDLEY},{FLEET_LABEL}={label_value(self.fleet)}"

    def live_managed(self) -> list[Manifest]:
        """Objects labelled as Medley's for this fleet, across namespaces (less those to keep)."""
        out: list[Manifest] = []
        for kind in self.kinds:
            if kind in self._kinds_missing:
                continue
            try:
                out.extend(self.client.list(kind, self.selector()))
            except ApiException as exc:  # a cluster without LeaderWorkerSet: nothing of that kind to prune
                if kind == "LeaderWorkerSet" and exc.status == 404:
                    self._kinds_missing.add(kind)
                    continue
                raise
        return [o for o in out if self.keep is None or not self.keep(o)]

    def changes(self, desired: list[Manifest]) -> ChangeSet:
        """What applying ``desired`` would change."""
        managed = self.live_managed()
        by_ref: dict[ObjectRef, Manifest | None] = {ObjectRef.of(o): o for o in managed}
        for manifest in desired:
            ref = ObjectRef.of(manifest)
            if ref not in by_ref:  # maybe someone else's object under the same name
                by_ref[ref] = self.client.get(ref)
        return plan_changes(desired, managed, by_ref)

    def missing_namespaces(self, desired: list[Manifest]) -> list[str]:
        """Namespaces the manifests name that do not exist."""
        wanted = sorted({_namespaced(m) for m in desired} - {""})
        return [ns for ns in wanted if self.client.get(ObjectRef("Namespace", "", ns)) is None]

    def apply(self, desired: list[Manifest], *, dry_run: bool = False) -> ApplyResult:
        """Make the cluster match ``desired`` (or only report the diff when ``dry_run``).

        Raises ApplyRefused, having written nothing, when a namespace is missing and may not be created,
        or (with ``preflight``) when the server refuses an object in a dry run.
        """
        missing = self.missing_namespaces(desired) if self.preflight or self.create_namespaces or dry_run else []
        changes = self.changes(desired)
        if dry_run:
            return self._dry_run(changes, missing)
        if missing and not self.create_namespaces:
            raise ApplyRefused([str(_missing(ns)) for ns in missing])
        created_ns = tuple(self._create_namespace(ns) for ns in missing)
        if self.preflight:
            problems = self._server_check(changes, set())
            if problems:
                raise ApplyRefused([str(p) for p in problems])
        diff = ("".join(f"+ create Namespace {ns}\n" for ns in created_ns) + render_diff(changes)
                if created_ns else render_diff(changes))
        created, updated, failed, waiting = self._make(changes)
        # Wait for the workloads this plan wants (new, changed or unchanged) to be Ready.
        wanted = [ObjectRef.of(m) for m in desired if m["kind"] in WORKLOAD_KINDS]
        not_ready = self._wait_ready(wanted)
        common: dict[str, Any] = {"skipped": changes.skipped, "namespaces_created": created_ns}
        if not_ready or failed or waiting:
            why = "waiting for new replicas to be Ready" if not_ready else "a write of this rollout failed"
            held = tuple(Change(c.action, c.ref, c.desired, c.live, why) for c in (*changes.shrink, *changes.prune))
            return ApplyResult(diff, tuple(created), tuple(updated), held=held, not_ready=tuple(not_ready),
                               failed=tuple(failed), backing_off=tuple(waiting), **common)

        live_workloads = [o for o in self.live_managed() if o["kind"] in WORKLOAD_KINDS]
        allowed, held_back = break_steps(changes, live_workloads, desired)
        now = self.wall()
        start, allowed, draining = drain_order(allowed, now, self.drain_s)
        for change in start:
            self._start_drain(change, now, failed)
        held_back = [*held_back, *draining, *start]
        shrunk: list[ObjectRef] = []
        pruned: list[ObjectRef] = []
        for change in allowed:
            done = self._write_one(change, failed, waiting)
            if done:
                (shrunk if change.action == "shrink" else pruned).append(change.ref)
        return ApplyResult(diff, tuple(created), tuple(updated), tuple(shrunk), tuple(pruned),
                           held=tuple(held_back), failed=tuple(failed), backing_off=tuple(waiting), **common)

    def _dry_run(self, changes: ChangeSet, missing: list[str]) -> ApplyResult:
        """The diff, with every write checked by the server (``dryRun=All``); nothing is written."""
        failed = [] if self.create_namespaces else [_missing(ns) for ns in missing]
        failed += self._server_check(changes, set(missing))
        diff = "".join(f"+ create Namespace {ns}\n" for ns in missing) if self.create_namespaces else ""
        diff += render_diff(changes) + "".join(f"! refused {f.ref}: {f.message}\n" for f in failed)
        return ApplyResult(diff=diff, skipped=changes.skipped, dry_run=True, failed=tuple(failed))

    def _server_check(self, changes: ChangeSet, new_namespaces: set[str]) -> list[ObjectFailure]:
        """What the server refuses when it dry-runs each write (objects in ``new_namespaces`` unchecked)."""
        problems: list[ObjectFailure] = []
        for change in (*changes.make, *changes.shrink):
            if change.desired is None or change.ref.namespace in new_namespaces:
                continue
            try:
                self.client.apply(change.desired, dry_run=True)
            except Exception as exc:  # noqa: BLE001 - every refusal is reported, none is raised
                problems.append(ObjectFailure(change.ref, change.action, error_line(exc)))
        return problems

    def _start_drain(self, change: Change, now: float, failed: list[ObjectFailure]) -> None:
        """Take a workload out of service: its pods lose the serving label, it gets the drain stamp."""
        assert change.live is not None
        meta = change.live["metadata"]
        selector = (change.live.get("spec", {}).get("selector") or {}).get("matchLabels") or {}
        try:
            if selector:
                labels = ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
                for pod in self.client.list("Pod", labels, namespace=meta.get("namespace", "")):
                    self.client.patch(ObjectRef.of(pod), {"metadata": {"labels": {SERVING_LABEL: None}}})
            self.client.patch(change.ref, {"metadata": {"annotations": {DRAINING_ANNOTATION: f"{now:.3f}"}}})
        except Exception as exc:  # noqa: BLE001 - reported; the next pass tries again
            failed.append(ObjectFailure(change.ref, "drain", error_line(exc)))

    def _create_namespace(self, name: str) -> str:
        self.client.apply({"apiVersion": "v1", "kind": "Namespace",
                           "metadata": {"name": name, "labels": {MANAGED_BY: MEDLEY}}})
        return name

    def _make(self, changes: ChangeSet) -> tuple[list[ObjectRef], list[ObjectRef], list[ObjectFailure],
                                                 list[ObjectRef]]:
        created: list[ObjectRef] = []
        updated: list[ObjectRef] = []
        failed: list[ObjectFailure] = []
        waiting: list[ObjectRef] = []
        for change in changes.make:
            if self._write_one(change, failed, waiting):
                (created if change.action == "create" else updated).append(change.ref)
        return created, updated, failed, waiting

    def _write_one(self, change: Change, failed: list[ObjectFailure], waiting: list[ObjectRef]) -> bool:
        """One object's write (apply or delete); a failure is recorded and backs the object off."""
        if self.backoff is not None and not self.backoff.due(change.ref):
            waiting.append(change.ref)
            return False
        try:
            if change.action == "prune":
                self.client.delete(change.ref)
            else:
                assert change.desired is not None
                self.client.apply(change.desired)
        except Exception as exc:  # noqa: BLE001 - one object's failure must not stop the others
            failed.append(ObjectFailure(change.ref, change.action, error_line(exc)))
            if self.backoff is not None:
                self.backoff.failed(change.ref)
            return False
        if self.backoff is not None:
            self.backoff.succeeded(change.ref)
        return True

    def _wait_ready(self, refs: list[ObjectRef]) -> list[ObjectRef]:
        """Poll until every workload is Ready or the timeout passes; returns those still not Ready."""
        deadline = self.clock() + self.ready_timeout_s
        while True:
            pending = []
            for ref in refs:
                obj = self.client.get(ref)
                if obj is None or not is_ready(obj):
                    pending.append(ref)
            if not pending or self.clock() >= deadline:
                return pending
            if self.on_poll is not None:
                self.on_poll()
            self.sleep(self.poll_s)


ApplyState = Literal["applied", "in_progress", "recorded"]


class ApplyOutcome(BaseModel):
    """What applying a plan did, as the REST API records it: ``applied`` only when the cluster matches the
    plan and every workload is Ready; ``in_progress`` when written but not yet Ready (apply again to go on);
    ``recorded`` when no cluster was touched."""

    state: ApplyState
    created: list[str] = Field(default_factory=list)
    updated: list[str] = Field(default_factory=list)
    scaled_down: list[str] = Field(default_factory=list)
    pruned: list[str] = Field(default_factory=list)
    held: list[str] = Field(default_factory=list)
    skipped: list[str] = Field(default_factory=list)
    not_ready: list[str] = Field(default_factory=list)
    failed: list[str] = Field(default_factory=list)
    namespaces_created: list[str] = Field(default_factory=list)
    diff: str = ""
    detail: str = ""

    @staticmethod
    def of(result: ApplyResult) -> ApplyOutcome:
        """The outcome of one Applier pass."""
        return ApplyOutcome(
            state="applied" if result.complete else "in_progress",
            created=[str(r) for r in result.created], updated=[str(r) for r in result.updated],
            scaled_down=[str(r) for r in result.shrunk], pruned=[str(r) for r in result.pruned],
            held=[f"{c.ref}: {c.reason}" for c in result.held],
            skipped=[f"{c.ref}: {c.reason}" for c in result.skipped],
            not_ready=[str(r) for r in result.not_ready],
            failed=[str(f) for f in result.failed] + [f"{r}: backing off after failures"
                                                      for r in result.backing_off],
            namespaces_created=list(result.namespaces_created), diff=result.diff)


@dataclass
class PlanProvisioner:
    """Applies a Plan (the REST API's ``Provisioner``): renders it for its fleet, then applies, all or nothing
    as far as the server's checks go (missing namespaces and dry-run refusals raise ApplyRefused)."""

    client: ClusterClient
    fleet_for: Callable[[Plan], FleetSpec]
    options: RenderOptions = field(default_factory=RenderOptions)
    ready_timeout_s: float = 0.0
    create_namespaces: bool = False

    def apply(self, plan: Plan) -> ApplyOutcome:
        """Apply without waiting long; ``applied`` once everything is Ready (call again to go on)."""
        fleet = self.fleet_for(plan)
        manifests = render_plan(plan, fleet, self.options)
        applier = Applier(self.client, fleet.name, ready_timeout_s=self.ready_timeout_s,
                          create_namespaces=self.create_namespaces)
        return ApplyOutcome.of(applier.apply(manifests))
