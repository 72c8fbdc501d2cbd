"""Kubernetes Events on the objects the controller acts on (``kubectl describe`` and ``kubectl get events``).

Core ``v1`` Events, which every cluster version serves. A repeat of the same reason and message on the
same object within ``repeat_window_s`` bumps the first event's ``count`` and ``lastTimestamp`` instead of
adding another (as the kubelet's recorder does). Events of cluster-scoped objects (FleetPlan, GPUPool,
PowerDomain) go to the ``default`` namespace, as kubectl looks for them there. Recording is best effort:
a failed write is logged and never fails a reconcile pass.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from provisioner.cluster import KINDS, ClusterClient, ObjectRef

log = logging.getLogger(__name__)
EventType = Literal["Normal", "Warning"]


def _stamp(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class EventRecorder:
    """Writes Events for one component (``source.component``) and instance (``reportingInstance``)."""

    client: ClusterClient
    component: str = "medley-controller"
    instance: str = ""
    repeat_window_s: float = 3600.0
    clock: Callable[[], float] = time.time
    _seen: dict[tuple[ObjectRef, str, str], tuple[str, str, int, float]] = field(default_factory=dict)

    def record(self, ref: ObjectRef, event_type: EventType, reason: str, message: str, uid: str = "") -> None:
        """One event on the object ``ref`` (``uid`` ties it to this incarnation of the object, when known)."""
        now = self.clock()
        if len(self._seen) > 2000:  # forget aggregations older than the window
            self._seen = {k: v for k, v in self._seen.items() if now - v[3] < self.repeat_window_s}
        message = message[:1000]
        key = (ref, reason, message)
        seen = self._seen.get(key)
        try:
            if seen is not None and now - seen[3] < self.repeat_window_s:
                name, namespace, count, first = seen
                self.client.patch(ObjectRef("Event", namespace, name), {"count": count + 1,
                                                                         "lastTimestamp": _stamp(now)})
                self._seen[key] = (name, namespace, count + 1, first)
                return
            namespace = ref.namespace or "default"
            name = f"{ref.name}.{secrets.token_hex(8)}"
            involved = {"apiVersion": KINDS[ref.kind].api_version if ref.kind in KINDS else "v1",
                        "kind": ref.kind, "name": ref.name}
            if ref.namespace:
                involved["namespace"] = ref.namespace
            if uid:
                involved["uid"] = uid
            self.client.create({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": name, "namespace": namespace},
                "involvedObject": involved, "type": event_type, "reason": reason, "message": message,
                "source": {"component": self.component}, "reportingComponent": f"medley.dev/{self.component}",
                "reportingInstance": self.instance or self.component,
                "firstTimestamp": _stamp(now), "lastTimestamp": _stamp(now), "count": 1,
            })
            self._seen[key] = (name, namespace, 1, now)
        except Exception as exc:  # noqa: BLE001 - events are best effort
            self._seen.pop(key, None)
            log.warning("could not record event %s on %s: %s", reason, ref, exc)
