"""kopf wiring: the watches that tell the controller loop something changed.

kopf keeps the watch streams (reconnects, resource versions, backoff); its handlers here do one thing,
``loop.note_change()``. Planning and applying stay in ``ControllerLoop`` (debounced, leader-elected with
our Lease, so kopf runs ``standalone`` without its own peering). Events of Medley's custom resources and
of the workloads Medley manages (drift: someone edited one) all count as changes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import kopf

from provisioner.controller import ControllerLoop
from provisioner.crds import GROUP, VERSION
from provisioner.render import MANAGED_BY, MEDLEY

WATCHED: tuple[tuple[str, str, str], ...] = (
    (GROUP, VERSION, "gpupools"),
    (GROUP, VERSION, "llmservices"),
    (GROUP, VERSION, "powerdomains"),
    (GROUP, VERSION, "fleetplans"),
)
MANAGED: tuple[tuple[str, str, str], ...] = (
    ("apps", "v1", "deployments"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("", "v1", "services"),
)


def build_registry(loop: ControllerLoop, login: Callable[..., Any] | None = None) -> kopf.OperatorRegistry:
    """A kopf registry whose event handlers notify ``loop`` of changes (``login``: kopf's, by default)."""
    registry = kopf.OperatorRegistry()
    if login is not None:
        kopf.on.login(registry=registry)(login)

    def changed(**_: Any) -> None:
        loop.note_change()

    for group, version, plural in WATCHED:
        kopf.on.event(group, version, plural, registry=registry, id=f"notice-{plural}")(changed)
    for group, version, plural in MANAGED:
        kopf.on.event(group, version, plural, labels={MANAGED_BY: MEDLEY}, registry=registry,
                      id=f"drift-{plural}")(changed)
    return registry


def run_operator(loop: ControllerLoop, stop: threading.Event) -> None:
    """Run kopf's watches and the controller loop (in a thread) until ``stop`` is set or kopf exits."""
    worker = threading.Thread(target=loop.run, args=(stop,), name="medley-reconcile", daemon=True)
    worker.start()
    try:
        kopf.run(registry=build_registry(loop), standalone=True, clusterwide=True, stop_flag=stop)
    finally:
        stop.set()
        worker.join(timeout=30)
