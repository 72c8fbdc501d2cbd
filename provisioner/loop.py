"""The controller's loop: one leader at a time (a ``coordination.k8s.io/v1`` Lease), debounced change notices,
a periodic resync, and a prompt, clean stop.

``LeaseElector`` takes and renews the Lease with optimistic concurrency (a replace guarded by the Lease's
``resourceVersion``) and gives it up on shutdown (``holderIdentity`` emptied), so a standby takes over at
its next tick instead of after the Lease expires. It is written against ``ClusterClient`` rather than
``kubernetes.leaderelection``, whose elector runs its own blocking loop, cannot be stepped by a test clock
and does not release on shutdown.

``ControllerLoop.run`` ticks every ``tick_s`` (waiting on the stop event, so a stop is seen at once):
renew the Lease; reconcile when a change settled (``Debouncer``) or the resync is due. While a pass runs, a
keeper thread renews the Lease beside it (every third of its duration), so a slow pass never lets a standby
in while it still writes; a pass stuck past ``max_pass_s`` stops being renewed. Its ``healthy`` and
``ready`` answer the liveness and readiness probes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from provisioner.cluster import ClusterClient, ConflictError, ObjectRef, RetryPolicy, error_line
from provisioner.probes import ControllerMetrics

log = logging.getLogger(__name__)


@dataclass
class LeaseElector:
    """Leader election on a ``coordination.k8s.io/v1`` Lease with optimistic concurrency."""

    client: ClusterClient
    name: str
    namespace: str
    identity: str
    duration_s: int = 15
    clock: Callable[[], float] = time.time
    last_contact: float | None = None  # ``clock()`` of the last answer from the API server
    unreachable: bool = False  # the last attempt got no answer (said once per outage in the log)

    @staticmethod
    def _stamp(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    @staticmethod
    def _parse(text: str | None) -> float:
        if not text:
            return 0.0
        whole, _, fraction = text.replace("Z", "").partition(".")
        seconds = datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).timestamp()
        digits = "".join(ch for ch in fraction if ch.isdigit())[:6]
        return seconds + (int(digits) / 10 ** len(digits) if digits else 0.0)

    def _ref(self) -> ObjectRef:
        return ObjectRef("Lease", self.namespace, self.name)

    def try_acquire(self) -> bool:
        """Take or renew the lease; False when another live holder has it or the write lost a race."""
        now = self.clock()
        try:
            lease = self.client.get(self._ref())
            self.last_contact = now
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
            self._answered()
            return False  # another replica wrote first; it leads this round
        except Exception as exc:  # noqa: BLE001 - the API is unreachable: without a renewed lease, acting is unsafe
            if not self.unreachable:
                log.warning("no answer from the API server for Lease %s/%s (%s); not acting until it answers, "
                            "retrying every tick", self.namespace, self.name, error_line(exc))
            self.unreachable = True
            return False
        finally:
            if self.last_contact == now:
                self._answered()

    def _answered(self) -> None:
        if self.unreachable:
            log.info("the API server answers again")
        self.unreachable = False

    def release(self) -> bool:
        """Give the lease up (on shutdown) so another replica takes over at once; True when it was released."""
        try:
            lease = self.client.get(self._ref())
            if lease and (lease.get("spec") or {}).get("holderIdentity") == self.identity:
                spec = {**lease["spec"], "holderIdentity": "", "leaseDurationSeconds": 1}
                self.client.replace({**lease, "spec": spec})
                return True
        except Exception as exc:  # noqa: BLE001 - expiry hands it over anyway
            log.warning("could not release Lease %s/%s: %s", self.namespace, self.name, exc)
        return False


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


class Reconciles(Protocol):
    """What the loop drives: one reconcile pass of a FleetPlan."""

    def reconcile(self, name: str) -> Any: ...


@dataclass
class ControllerLoop:
    """Leader-elected, debounced, periodically resynced reconcile loop for one FleetPlan."""

    reconciler: Reconciles
    elector: LeaseElector
    fleetplan: str
    debouncer: Debouncer = field(default_factory=Debouncer)
    resync_s: float = 30.0
    tick_s: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] | None = None  # tests: instead of waiting on the stop event
    metrics: ControllerMetrics | None = None
    last_pass: float | None = None
    last_tick: float | None = None
    leading: bool = False
    stale_after_s: float = 300.0  # no tick for this long (a pass stuck): not healthy
    renew_s: float | None = None  # Lease renewals while a pass runs (default: a third of its duration, ≤ tick)
    max_pass_s: float = 300.0  # a pass running longer stops renewing: a standby may take the Lease over
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _lease_lock: threading.Lock = field(default_factory=threading.Lock)  # one elector call at a time
    _stopping: threading.Event = field(default_factory=threading.Event)

    def note_change(self) -> None:
        """A watched object changed (thread-safe: kopf's handlers call it)."""
        with self._lock:
            self.debouncer.note(self.clock())

    def step(self) -> Any:
        """One tick: renew the lease; reconcile when a change settled or the resync is due."""
        self.last_tick = self.clock()
        with self._lease_lock:
            self.leading = not self._stopping.is_set() and self.elector.try_acquire()
        if self.metrics is not None:
            self.metrics.lease_holder.labels(self.elector.identity).set(1 if self.leading else 0)
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
        return self._reconcile_holding()

    def _reconcile_holding(self) -> Any:
        """One pass, with the Lease renewed beside it so a slow pass never outlives it (up to ``max_pass_s``)."""
        done = threading.Event()
        started = self.clock()
        every = self.renew_s or max(0.05, min(self.tick_s, self.elector.duration_s / 3))

        def keep() -> None:
            while not done.wait(every):
                if self.clock() - started > self.max_pass_s:
                    log.warning("a pass has run %.0f s; no longer renewing the Lease for it", self.max_pass_s)
                    return
                with self._lease_lock:
                    if self._stopping.is_set() or done.is_set():
                        return
                    renewed = self.elector.try_acquire()
                if not renewed:
                    self.leading = False
                    log.warning("lost the Lease while a pass was running")
                    return

        keeper = threading.Thread(target=keep, name="medley-lease-keeper", daemon=True)
        keeper.start()
        try:
            return self.reconciler.reconcile(self.fleetplan)
        finally:
            done.set()

    def run(self, stop: threading.Event, max_steps: int | None = None) -> None:
        """Step until ``stop`` is set (or ``max_steps``); releases the lease on the way out."""
        steps = 0
        try:
            while not stop.is_set() and (max_steps is None or steps < max_steps):
                try:
                    self.step()
                except Exception:  # one failed pass must not end the controller; the next tick retries
                    log.exception("reconcile pass failed")
                    if self.metrics is not None:
                        self.metrics.errors.labels("pass").inc()
                steps += 1
                if self.sleep is not None:
                    self.sleep(self.tick_s)
                else:
                    stop.wait(self.tick_s)
        finally:
            self.stop()

    def stop(self) -> None:
        """Give the Lease up if this replica holds it (idempotent); no renewal follows."""
        self._stopping.set()
        with self._lease_lock:
            if self.leading:
                self.leading = not self.elector.release()
            if self.metrics is not None:
                self.metrics.lease_holder.labels(self.elector.identity).set(0)

    def healthy(self) -> tuple[bool, str]:
        """Liveness: the loop has ticked within ``stale_after_s``."""
        if self.last_tick is None:
            return True, "starting"
        idle = self.clock() - self.last_tick
        return (idle < self.stale_after_s), f"last tick {idle:.0f} s ago"

    def ready(self) -> tuple[bool, str]:
        """Readiness: the API server answered the elector recently (leader or standby)."""
        contact = self.elector.last_contact
        if contact is None:
            return False, "no answer from the API server yet"
        age = self.elector.clock() - contact
        role = "leader" if self.leading else "standby"
        return age < max(30.0, 10 * self.tick_s), f"{role}; API server answered {age:.0f} s ago"


def lease_retry() -> RetryPolicy:
    """Retries for the elector's calls: short, since the next tick tries again, and a release at shutdown
    must finish within a few seconds."""
    return RetryPolicy(attempts=3, initial_s=0.1, max_s=0.5, request_timeout_s=2.0)
