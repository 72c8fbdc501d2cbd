"""Rollout ordering, pure: desired manifests + live objects → what to create, change, hold and remove.

Make-before-break in two phases. *Make*: create new objects, apply changes and scale-ups; a workload the
plan shrinks or drops keeps its live replica count for now. *Break*: once every workload made in phase
one reports its desired replicas Ready, shrink and remove the old ones — each step only if the service's
ready capacity afterwards (``Σ readyReplicas · capacity per replica``, from the workloads' annotations)
still covers what it needs, per phase (prefill, decode).

Drain before delete: with a drain time, a workload the plan drops is first taken out of service — its pods
lose the ``medley.dev/serving`` label, so no Service routes new requests to them, and the workload is
stamped ``medley.dev/draining-since`` — and deleted only once ``drain_s`` has passed (``drain_state``), so
requests in flight finish instead of being cut at SIGTERM. Its Service and PodDisruptionBudget go after it.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from provisioner.capacity import PHASES
from provisioner.cluster import FIELD_MANAGER, ObjectRef
from provisioner.render import (
    CAPACITY_ANNOTATION,
    COMPONENT_LABEL,
    GROUP_LABEL,
    MANAGED_BY,
    MEDLEY,
    REQUIRED_ANNOTATION,
    SERVICE_LABEL,
)

Manifest = dict[str, Any]
WORKLOAD_KINDS = ("Deployment", "LeaderWorkerSet")
DRAINING_ANNOTATION = "medley.dev/draining-since"  # Unix seconds at which the workload left service


def contains(desired: Any, live: Any) -> bool:
    """Whether ``live`` already holds every field ``desired`` sets (the server may add defaults)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and contains(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(desired) == len(live) and all(
            contains(d, x) for d, x in zip(desired, live, strict=True))
    if isinstance(desired, str | int | float) and isinstance(live, str | int | float) and not isinstance(desired, bool):
        return str(desired) == str(live) if isinstance(desired, str) or isinstance(live, str) else desired == live
    return bool(desired == live)


def is_medleys(obj: Manifest) -> bool:
    """Whether Medley owns a live object: its label says so and Medley's field manager applied it.

    The label alone is not enough: an object someone else created with ``managed-by: medley`` (by hand,
    or copied from a rendered manifest) was never applied by Medley and is neither changed nor pruned.
    """
    meta = obj.get("metadata", {})
    if meta.get("labels", {}).get(MANAGED_BY) != MEDLEY:
        return False
    return any(f.get("manager") == FIELD_MANAGER and f.get("operation") == "Apply"
               for f in meta.get("managedFields", []))


def replicas(obj: Manifest) -> int:
    return int(obj.get("spec", {}).get("replicas", 1))


def ready_replicas(obj: Manifest) -> int:
    """Ready replicas a live workload reports, counting only a status of its current generation."""
    status = obj.get("status", {})
    generation = obj.get("metadata", {}).get("generation")
    if generation is not None and status.get("observedGeneration", generation) < generation:
        return min(int(status.get("readyReplicas", 0)), int(status.get("updatedReplicas", 0)))
    return int(status.get("readyReplicas", 0))


def is_ready(obj: Manifest) -> bool:
    """A workload whose desired replicas are all Ready."""
    return ready_replicas(obj) >= replicas(obj)


def _annotation(obj: Manifest, key: str) -> dict[str, float]:
    text = obj.get("metadata", {}).get("annotations", {}).get(key)
    if not text:
        return {}
    value = json.loads(text)
    return {str(k): float(v) for k, v in value.items()} if isinstance(value, dict) else {}


def service_of(obj: Manifest) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('labels', {}).get(SERVICE_LABEL, '')}"


def ready_capacity(workloads: list[Manifest],
                   ready: dict[ObjectRef, int] | None = None) -> dict[tuple[str, str], float]:
    """Ready requests/s per (service, phase) of live workloads (``ready`` overrides their ready counts)."""
    out: dict[tuple[str, str], float] = {}
    for obj in workloads:
        n = ready_replicas(obj) if ready is None else ready.get(ObjectRef.of(obj), ready_replicas(obj))
        for phase, per_replica in _annotation(obj, CAPACITY_ANNOTATION).items():
            key = (service_of(obj), phase)
            out[key] = out.get(key, 0.0) + n * per_replica
    return out


def requirements(workloads: list[Manifest]) -> dict[tuple[str, str], float]:
    """Requests/s each (service, phase) needs, as the desired workloads state it."""
    out: dict[tuple[str, str], float] = {}
    for obj in workloads:
        for phase, rps in _annotation(obj, REQUIRED_ANNOTATION).items():
            if phase in PHASES:
                out[(service_of(obj), phase)] = max(out.get((service_of(obj), phase), 0.0), rps)
    return out


@dataclass(frozen=True)
class Change:
    """One object's intended change: ``create``, ``update``, ``hold`` (shrink later), ``prune`` or ``skip``."""

    action: str
    ref: ObjectRef
    desired: Manifest | None = None
    live: Manifest | None = None
    reason: str = ""


@dataclass(frozen=True)
class ChangeSet:
    """Everything one apply would do, in the order it would do it."""

    make: tuple[Change, ...] = ()
    shrink: tuple[Change, ...] = ()
    prune: tuple[Change, ...] = ()
    unchanged: tuple[ObjectRef, ...] = ()
    skipped: tuple[Change, ...] = ()
    held_manifests: dict[ObjectRef, Manifest] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not (self.make or self.shrink or self.prune)


def plan_changes(desired: list[Manifest], live_managed: list[Manifest],
                 live_by_ref: dict[ObjectRef, Manifest | None]) -> ChangeSet:
    """Compare desired manifests with the live objects; ``live_by_ref`` holds the live twin of each desired one."""
    make: list[Change] = []
    shrink: list[Change] = []
    unchanged: list[ObjectRef] = []
    skipped: list[Change] = []
    held: dict[ObjectRef, Manifest] = {}
    wanted = {ObjectRef.of(m) for m in desired}
    for manifest in desired:
        ref = ObjectRef.of(manifest)
        live = live_by_ref.get(ref)
        if live is None:
            make.append(Change("create", ref, manifest))
            continue
        if not is_medleys(live):
            skipped.append(Change("skip", ref, manifest, live, "exists and is managed by someone else"))
            continue
        if manifest["kind"] in WORKLOAD_KINDS and replicas(manifest) < replicas(live):
            keep = json.loads(json.dumps(manifest))
            keep["spec"]["replicas"] = replicas(live)
            # its capacity claim belongs to today's replicas until it shrinks
            live_claim = live.get("metadata", {}).get("annotations", {}).get(CAPACITY_ANNOTATION)
            if live_claim is not None:
                keep["metadata"].setdefault("annotations", {})[CAPACITY_ANNOTATION] = live_claim
            held[ref] = keep
            if not contains(keep, live):
                make.append(Change("update", ref, keep, live, "applied at today's replicas until the rest is Ready"))
            shrink.append(Change("shrink", ref, manifest, live))
            continue
        if contains(manifest, live):
            unchanged.append(ref)
        else:
            make.append(Change("update", ref, manifest, live))
    prune = [Change("prune", ObjectRef.of(obj), None, obj) for obj in live_managed
             if ObjectRef.of(obj) not in wanted and is_medleys(obj)]
    prune.sort(key=lambda c: c.ref)
    return ChangeSet(tuple(make), tuple(shrink), tuple(prune), tuple(sorted(unchanged)), tuple(skipped), held)


def break_steps(changes: ChangeSet, live_workloads: list[Manifest], desired: list[Manifest]) -> tuple[
        list[Change], list[Change]]:
    """Which shrink/prune steps keep every service's ready capacity at its need: (allowed, held back)."""
    need = requirements([m for m in desired if m["kind"] in WORKLOAD_KINDS])
    ready = {ObjectRef.of(w): ready_replicas(w) for w in live_workloads}
    by_ref = {ObjectRef.of(w): w for w in live_workloads}
    allowed: list[Change] = []
    held: list[Change] = []
    held_groups: set[str] = set()

    def group_of(c: Change) -> str:
        obj = c.live or c.desired or {}
        return str(obj.get("metadata", {}).get("labels", {}).get(GROUP_LABEL, ""))

    def is_attention(c: Change) -> bool:
        obj = c.live or c.desired or {}
        return bool(obj.get("metadata", {}).get("labels", {}).get(COMPONENT_LABEL) == "attention")

    # Compute workloads first; their attention-offload workers, Service and PDB after them, and kept
    # while the compute replicas are held (they route to and protect those replicas).
    order = sorted([*changes.shrink, *changes.prune],
                   key=lambda c: (c.ref.kind not in WORKLOAD_KINDS, is_attention(c)))
    for change in order:
        if (is_attention(change) or change.ref.kind not in WORKLOAD_KINDS) and group_of(change) in held_groups:
            held.append(Change(change.action, change.ref, change.desired, change.live,
                               "its serving replicas are held"))
            continue
        if change.ref.kind not in WORKLOAD_KINDS or change.ref not in by_ref:
            allowed.append(change)
            continue
        after = dict(ready)
        target = replicas(change.desired) if change.desired is not None else 0
        after[change.ref] = min(ready[change.ref], target)
        capacity = ready_capacity(list(by_ref.values()), after)
        obj = by_ref[change.ref]
        short = [f"{svc} {phase}: {capacity.get((svc, phase), 0.0):.2f} < {rps:.2f} req/s"
                 for (svc, phase), rps in need.items()
                 if svc == service_of(obj) and capacity.get((svc, phase), 0.0) < rps - 1e-9]
        if short:
            held_groups.add(group_of(change))
            held.append(Change(change.action, change.ref, change.desired, change.live,
                               "ready capacity would fall short: " + "; ".join(short)))
        else:
            allowed.append(change)
            ready = after
    return allowed, held


def drain_state(obj: Manifest, now_s: float, drain_s: float) -> str:
    """``serving`` (not yet taken out of service), ``draining`` (for less than ``drain_s``) or ``drained``."""
    if drain_s <= 0:
        return "drained"
    since = obj.get("metadata", {}).get("annotations", {}).get(DRAINING_ANNOTATION)
    if since is None:
        return "serving"
    try:
        started = float(since)
    except ValueError:
        return "serving"
    return "drained" if now_s - started >= drain_s else "draining"


def drain_order(allowed: list[Change], now_s: float, drain_s: float) -> tuple[list[Change], list[Change],
                                                                              list[Change]]:
    """Split allowed break steps: (to take out of service now, to delete now, to hold while they drain).

    A pruned workload is deleted only once drained; the Service and PDB of a group wait for its workloads."""
    start: list[Change] = []
    delete: list[Change] = []
    hold: list[Change] = []
    waiting_groups: set[str] = set()
    for change in allowed:
        if change.action != "prune" or change.ref.kind not in WORKLOAD_KINDS or change.live is None:
            continue
        state = drain_state(change.live, now_s, drain_s)
        group = str(change.live.get("metadata", {}).get("labels", {}).get(GROUP_LABEL, ""))
        if state == "drained":
            delete.append(change)
            continue
        waiting_groups.add(group)
        (start if state == "serving" else hold).append(
            Change(change.action, change.ref, change.desired, change.live, f"draining for {drain_s:g} s"))
    for change in allowed:
        if change.action == "prune" and change.ref.kind in WORKLOAD_KINDS and change.live is not None:
            continue
        obj = change.live or change.desired or {}
        group = str(obj.get("metadata", {}).get("labels", {}).get(GROUP_LABEL, ""))
        if change.action == "prune" and group in waiting_groups:
            hold.append(Change(change.action, change.ref, change.desired, change.live, "its workload is draining"))
        else:
            delete.append(change)
    return start, delete, hold


def _yaml(obj: Manifest | None) -> list[str]:
    return [] if obj is None else yaml.safe_dump(obj, sort_keys=True, width=100).splitlines(keepends=True)


def _project(live: Manifest, desired: Manifest) -> Any:
    """The part of a live object that the desired manifest speaks about (so defaults stay out of diffs)."""
    if isinstance(desired, dict) and isinstance(live, dict):
        return {k: _project(live[k], v) for k, v in desired.items() if k in live}
    if isinstance(desired, list) and isinstance(live, list) and len(desired) == len(live):
        return [_project(x, d) for x, d in zip(live, desired, strict=True)]
    return live


def render_diff(changes: ChangeSet) -> str:
    """A readable diff: one header per object, then a unified diff of the fields that change."""
    lines: list[str] = []
    for change in changes.make:
        head = "+ create" if change.action == "create" else "~ update"
        lines.append(f"{head} {change.ref}" + (f"  ({change.reason})" if change.reason else "") + "\n")
        before = _yaml(_project(change.live, change.desired)) if change.live and change.desired else []
        lines.extend("    " + d for d in difflib.unified_diff(before, _yaml(change.desired), "live", "plan", n=2)
                     if not d.startswith(("---", "+++")))
    for change in changes.shrink:
        assert change.desired is not None and change.live is not None
        lines.append(f"~ scale {change.ref}: {replicas(change.live)} → {replicas(change.desired)} replicas "
                     "(after the new replicas are Ready)\n")
    for change in changes.prune:
        lines.append(f"- prune {change.ref}\n")
    for change in changes.skipped:
        lines.append(f"! skip {change.ref}: {change.reason}\n")
    if not lines:
        lines.append("no changes\n")
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)
