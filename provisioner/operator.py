"""kopf wiring and the controller process: watches that tell the loop something changed, and a clean stop.

kopf keeps the watch streams (reconnects, resource versions, backoff); its handlers here do one thing,
``loop.note_change()``. Planning and applying stay in ``ControllerLoop`` (debounced, leader-elected with
our Lease, so kopf runs ``standalone`` without its own peering). Events of Medley's custom resources and
of the workloads Medley manages (drift: someone edited one) all count as changes.

kopf logs in with the same credentials as the controller's own client (``login_with``: the kubeconfig
given, or the in-cluster service account), so its watches start at once; without a login handler kopf
would wait for credentials forever and only the periodic resync would act.

``run_controller`` runs the reconcile loop and kopf each in a daemon thread and waits for the stop event
(set by SIGTERM/SIGINT in ``medley controller``). On stop, the loop sees the event at its next tick; the
Lease is given up within ``grace_s`` even when a pass is still running (the process exits right after, which
ends the pass), so a standby replica takes over at its next tick.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import kopf
from kubernetes import client as k8s

from provisioner.crds import GROUP, VERSION
from provisioner.loop import ControllerLoop
from provisioner.render import MANAGED_BY, MEDLEY

log = logging.getLogger(__name__)

WATCHED: tuple[tuple[str, str, str], ...] = (
    (GROUP, VERSION, "gpupools"),
    (GROUP, VERSION, "llmservices"),
    (GROUP, VERSION, "powerdomains"),
    (GROUP, VERSION, "fleetplans"),
)
# (group, plural): kopf watches the version the server prefers (PodDisruptionBudgets: policy/v1beta1 before 1.21)
MANAGED: tuple[tuple[str, str], ...] = (
    ("apps", "deployments"),
    ("policy", "poddisruptionbudgets"),
    ("", "services"),
)


def login_with(configuration: k8s.Configuration) -> Callable[..., kopf.ConnectionInfo]:
    """A kopf login handler that uses the official client's configuration (kubeconfig or in-cluster)."""

    def login(**_: Any) -> kopf.ConnectionInfo:
        # get_api_key_with_prefix calls the in-cluster refresh hook, so a rotated token is picked up on re-login
        header = (configuration.get_api_key_with_prefix("BearerToken")
                  or configuration.get_api_key_with_prefix("authorization"))
        parts = header.split(" ", 1) if header else []
        scheme, token = (parts[0], parts[1]) if len(parts) == 2 else (None, parts[0] if parts else None)
        return kopf.ConnectionInfo(
            server=configuration.host, ca_path=configuration.ssl_ca_cert, insecure=not configuration.verify_ssl,
            scheme=scheme, token=token, certificate_path=configuration.cert_file,
            private_key_path=configuration.key_file, username=configuration.username or None,
            password=configuration.password or None)
    return login


def build_registry(loop: ControllerLoop, login: Callable[..., Any]) -> kopf.OperatorRegistry:
    """A kopf registry whose event handlers notify ``loop`` of changes, logging in with ``login``."""
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(login)

    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings.posting.enabled = False  # Medley records its own Events; kopf's would only repeat its logs
        settings.watching.server_timeout = 300
        settings.networking.request_timeout = 30

    kopf.on.startup(registry=registry)(configure)

    def changed(**_: Any) -> None:
        loop.note_change()

    for group, version, plural in WATCHED:
        kopf.on.event(group, version, plural, registry=registry, id=f"notice-{plural}")(changed)
    for group, plural in MANAGED:
        kopf.on.event(group=group, plural=plural, labels={MANAGED_BY: MEDLEY}, registry=registry,
                      id=f"drift-{plural}")(changed)
    return registry


def _watch(registry: kopf.OperatorRegistry, stop: threading.Event, ready: threading.Event) -> None:
    try:
        asyncio.run(kopf.operator(registry=registry, standalone=True, clusterwide=True, stop_flag=stop,
                                  ready_flag=ready))
    except Exception:  # noqa: BLE001 - without watches the periodic resync still acts
        log.exception("kopf's watches stopped")


def run_controller(loop: ControllerLoop, stop: threading.Event, *, login: Callable[..., Any] | None,
                   grace_s: float = 3.0) -> float:
    """Run the loop (and kopf's watches when ``login`` is given) until ``stop``; returns seconds to stop.

    The Lease is released before this returns, whether or not a pass was still running.
    """
    worker = threading.Thread(target=loop.run, args=(stop,), name="medley-reconcile", daemon=True)
    worker.start()
    watcher = None
    if login is not None:
        watcher = threading.Thread(target=_watch, args=(build_registry(loop, login), stop, threading.Event()),
                                   name="medley-watch", daemon=True)
        watcher.start()
    while not stop.wait(0.5):
        if not worker.is_alive():  # the loop died: stop rather than run without acting
            log.error("the reconcile loop ended; stopping")
            stop.set()
    began = time.monotonic()
    worker.join(grace_s)
    if worker.is_alive():
        log.warning("a reconcile pass is still running; giving the Lease up anyway")
        loop.stop()
    if watcher is not None:
        watcher.join(max(0.0, grace_s - (time.monotonic() - began)))
    return time.monotonic() - began
