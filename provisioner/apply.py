"""The applier: makes the cluster match rendered manifests, make-before-break, through a ClusterClient.

``Applier.apply`` lists what Medley runs for the fleet, asks ``rollout.plan_changes`` what differs, and
then (1) server-side applies creations, changes and scale-ups, holding shrinking workloads at today's
replicas; (2) waits, boundedly, for those workloads to be Ready; (3) shrinks and prunes only the steps
``rollout.break_steps`` allows. Unchanged objects get no write, so applying twice changes nothing; objects
of another manager are reported and never written; only objects labelled as Medley's for this fleet are
pruned. A rollout not finished within the wait is reported as progressing and picked up by the next call.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from planner.schema import FleetSpec, Plan
from provisioner.cluster import ClusterClient, ObjectRef
from provisioner.render import FLEET_LABEL, MANAGED_BY, MEDLEY, RenderOptions, label_value, render_plan
from provisioner.rollout import (
    WORKLOAD_KINDS,
    Change,
    ChangeSet,
    break_steps,
    is_ready,
    plan_changes,
    render_diff,
)

Manifest = dict[str, Any]
MANAGED_KINDS = ("Deployment", "LeaderWorkerSet", "PodDisruptionBudget", "Service")


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

    @property
    def complete(self) -> bool:
        """The cluster matches the plan and every workload is Ready."""
        return not (self.held or self.not_ready or self.skipped) and not self.dry_run

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.shrunk or self.pruned)


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
    _kinds_missing: set[str] = field(default_factory=set)

    def selector(self) -> str:
        return f"{MANAGED_BY}={MEDLEY},{FLEET_LABEL}={label_value(self.fleet)}"

    def live_managed(self) -> list[Manifest]:
        """Objects labelled as Medley's for this fleet, across namespaces."""
        out: list[Manifest] = []
        for kind in self.kinds:
            if kind in self._kinds_missing:
                continue
            try:
                out.extend(self.client.list(kind, self.selector()))
            except Exception as exc:  # a cluster without LeaderWorkerSet: nothing of that kind to prune
                if kind == "LeaderWorkerSet" and getattr(exc, "status", None) == 404:
                    self._kinds_missing.add(kind)
                    continue
                raise
        return out

    def changes(self, desired: list[Manifest]) -> ChangeSet:
        """What applying ``desired`` would change."""
        managed = self.live_managed()
        by_ref: dict[ObjectRef, Manifest | None] = {ObjectRef.of(o): o for o in managed}
        for manifest in desired:
            ref = ObjectRef.of(manifest)
            if ref not in by_ref:  # maybe someone else's object under the same name
                by_ref[ref] = self.client.get(ref)
        return plan_changes(desired, managed, by_ref)

    def apply(self, desired: list[Manifest], *, dry_run: bool = False) -> ApplyResult:
        """Make the cluster match ``desired`` (or only report the diff when ``dry_run``)."""
        changes = self.changes(desired)
        diff = render_diff(changes)
        if dry_run:
            return ApplyResult(diff=diff, skipped=changes.skipped, dry_run=True)
        created: list[ObjectRef] = []
        updated: list[ObjectRef] = []
        for change in changes.make:
            assert change.desired is not None
            self.client.apply(change.desired)
            (created if change.action == "create" else updated).append(change.ref)

        # Wait for the workloads this plan wants (new, changed or unchanged) to be Ready.
        wanted = [ObjectRef.of(m) for m in desired if m["kind"] in WORKLOAD_KINDS]
        not_ready = self._wait_ready(wanted)
        if not_ready:
            held = tuple(Change(c.action, c.ref, c.desired, c.live, "waiting for new replicas to be Ready")
                         for c in (*changes.shrink, *changes.prune))
            return ApplyResult(diff, tuple(created), tuple(updated), held=held, skipped=changes.skipped,
                               not_ready=tuple(not_ready))

        live_workloads = [o for o in self.live_managed() if o["kind"] in WORKLOAD_KINDS]
        allowed, held_back = break_steps(changes, live_workloads, desired)
        shrunk: list[ObjectRef] = []
        pruned: list[ObjectRef] = []
        for change in allowed:
            if change.action == "shrink":
                assert change.desired is not None
                self.client.apply(change.desired)
                shrunk.append(change.ref)
            else:
                self.client.delete(change.ref)
                pruned.append(change.ref)
        return ApplyResult(diff, tuple(created), tuple(updated), tuple(shrunk), tuple(pruned),
                           held=tuple(held_back), skipped=changes.skipped)

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


@dataclass
class PlanProvisioner:
    """Applies a Plan (the REST API's ``Provisioner`` protocol): renders it for its fleet, then applies."""

    client: ClusterClient
    fleet_for: Callable[[Plan], FleetSpec]
    options: RenderOptions = field(default_factory=RenderOptions)
    ready_timeout_s: float = 0.0

    def apply(self, plan: Plan) -> dict[str, Any]:
        """Apply without waiting long; ``state`` is ``complete`` or ``in_progress`` (call again to go on)."""
        fleet = self.fleet_for(plan)
        manifests = render_plan(plan, fleet, self.options)
        result = Applier(self.client, fleet.name, ready_timeout_s=self.ready_timeout_s).apply(manifests)
        return {
            "state": "complete" if result.complete else "in_progress",
            "created": [str(r) for r in result.created], "updated": [str(r) for r in result.updated],
            "scaled_down": [str(r) for r in result.shrunk], "pruned": [str(r) for r in result.pruned],
            "held": [f"{c.ref}: {c.reason}" for c in result.held],
            "skipped": [f"{c.ref}: {c.reason}" for c in result.skipped],
            "not_ready": [str(r) for r in result.not_ready],
            "diff": result.diff,
        }
