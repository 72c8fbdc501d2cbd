"""kopf wiring: every watched resource's events reach the controller loop as change notices."""

from __future__ import annotations

import asyncio
import threading
import time

import kopf
import pytest
from kube_double import DoubleServer

from provisioner.controller import Reconciler
from provisioner.loop import ControllerLoop, Debouncer, LeaseElector
from provisioner.operator import build_registry


def test_registry_watches_custom_resources_and_managed_workloads(api: DoubleServer):
    client = api.client()
    now = [0.0]
    loop = ControllerLoop(Reconciler(client), LeaseElector(client, "l", "medley-system", "me"), "medley",
                          Debouncer(quiet_s=1), clock=lambda: now[0])
    handlers = build_registry(loop, login=lambda **_: None)._watching.get_all_handlers()
    watched = {(h.selector.group, h.selector.plural or h.selector.any_name): h for h in handlers}
    assert set(watched) == {("medley.dev", "gpupools"), ("medley.dev", "llmservices"), ("medley.dev", "powerdomains"),
                            ("medley.dev", "fleetplans"), ("apps", "deployments"), ("policy", "poddisruptionbudgets"),
                            ("", "services")}
    assert watched[("apps", "deployments")].labels == {"app.kubernetes.io/managed-by": "medley"}
    watched[("medley.dev", "llmservices")].fn(event={"type": "MODIFIED"})
    assert loop.debouncer.first == 0.0
    now[0] = 1.5
    assert loop.debouncer.due(now[0])


def test_loop_run_is_bounded_and_releases_the_lease(api: DoubleServer):
    client = api.client()
    elector = LeaseElector(client, "medley-controller", "medley-system", "me")
    loop = ControllerLoop(Reconciler(client), elector, "absent-plan", sleep=lambda s: None)
    loop.run(threading.Event(), max_steps=3)
    lease = api.store()[("Lease", "medley-system", "medley-controller")]
    assert lease["spec"]["holderIdentity"] == ""


@pytest.mark.integration
def test_kopf_watches_against_the_double_notify_the_loop(api: DoubleServer):
    """kopf logs in, discovers Medley's resources, watches them, and a new LLMService wakes the loop."""
    client = api.client()
    loop = ControllerLoop(Reconciler(client), LeaseElector(client, "l", "medley-system", "me"), "medley")
    notices = threading.Event()
    loop.note_change = notices.set  # type: ignore[method-assign]
    registry = build_registry(loop, login=lambda **_: kopf.ConnectionInfo(server=api.url, insecure=True))
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=lambda: asyncio.run(kopf.operator(
        registry=registry, standalone=True, clusterwide=True, stop_flag=stop, ready_flag=ready)), daemon=True)
    thread.start()
    try:
        assert ready.wait(20), "kopf did not start"
        time.sleep(0.5)  # let the watch streams open
        notices.clear()
        client.create({"apiVersion": "medley.dev/v1alpha1", "kind": "LLMService",
                       "metadata": {"name": "chat", "namespace": "assistants"},
                       "spec": {"model": "llama-3-8b", "traffic": {"rate_rps": 1, "buckets": [
                           {"input_tokens": 1, "output_tokens": 1, "share": 1}]},
                                "slo": {"ttft_ms": 1, "tpot_ms": 1}}})
        assert notices.wait(10), "no change notice from kopf"
    finally:
        stop.set()
        thread.join(20)


def test_run_controller_stops_promptly_and_releases_the_lease(api: DoubleServer):
    """The stop event (SIGTERM's handler sets it) ends the loop within a tick and gives the Lease up."""
    from provisioner.operator import run_controller

    client = api.client()
    loop = ControllerLoop(Reconciler(client), LeaseElector(client, "medley-controller", "medley-system", "me"),
                          "absent-plan", tick_s=0.2)
    stop = threading.Event()
    timer = threading.Timer(1.0, stop.set)
    timer.start()
    took = run_controller(loop, stop, login=None)
    assert took < 1.0
    assert api.store()[("Lease", "medley-system", "medley-controller")]["spec"]["holderIdentity"] == ""
    assert loop.ready()[0] and loop.healthy()[0]


def test_a_stuck_pass_does_not_hold_the_lease_past_the_grace(api: DoubleServer):
    from provisioner.operator import run_controller

    client = api.client()
    entered, hold = threading.Event(), threading.Event()

    class Stuck:
        def reconcile(self, name: str) -> None:
            entered.set()
            hold.wait(30)  # a pass that will not finish (a long plan, a hung call)

    loop = ControllerLoop(Stuck(), LeaseElector(client, "medley-controller", "medley-system", "me"), "x",
                          tick_s=0.1)
    stop = threading.Event()
    threading.Thread(target=lambda: (entered.wait(10), stop.set()), daemon=True).start()
    started = time.monotonic()
    run_controller(loop, stop, login=None, grace_s=0.5)
    assert time.monotonic() - started < 3.0
    assert api.store()[("Lease", "medley-system", "medley-controller")]["spec"]["holderIdentity"] == ""
    hold.set()


def test_a_slow_pass_keeps_the_lease_renewed_so_the_standby_never_overlaps(api: DoubleServer):
    client = api.client()
    entered, release = threading.Event(), threading.Event()

    class Slow:
        def reconcile(self, name: str) -> None:
            entered.set()
            release.wait(10)  # longer than the Lease lasts

    leader = ControllerLoop(Slow(), LeaseElector(client, "medley-controller", "medley-system", "a", duration_s=2),
                            "x", tick_s=0.2)
    standby = LeaseElector(api.client(), "medley-controller", "medley-system", "b", duration_s=2)
    worker = threading.Thread(target=leader.step, daemon=True)
    worker.start()
    assert entered.wait(5)
    took = []
    deadline = time.monotonic() + 5.0  # more than two Lease durations while the pass runs
    while time.monotonic() < deadline:
        took.append(standby.try_acquire())
        time.sleep(0.2)
    release.set()
    worker.join(5)
    assert not any(took)
    assert api.store()[("Lease", "medley-system", "medley-controller")]["spec"]["holderIdentity"] == "a"
    leader.stop()
    assert standby.try_acquire()
