"""``medley controller`` processes against the real control plane: kopf's watches act on an approval within
seconds, SIGTERM ends a controller within 5 s and gives the Lease up, and the standby takes over."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from kube_cluster import KubeCluster
from kube_real import ROOT, admin, cleanup, make_namespace, seed_fleet, wait_until

from provisioner.cluster import ObjectRef

pytestmark = pytest.mark.integration
LEASE = ObjectRef("Lease", "medley-system", "medley-controller")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _controller(cluster: KubeCluster, fleetplan: str, identity: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # the command function itself, not the installed `medley` script, so this checkout's code is what runs
    cmd = [sys.executable, "-c", "import typer; from provisioner.cli import controller_command; "
           "typer.run(controller_command)", "--fleet-plan", fleetplan,
           "--kubeconfig", cluster.kubeconfig_of("medley-system", "medley-controller"), "--identity", identity,
           "--probe-port", str(port), "--resync", "600", "--debounce", "1", "--tick", "0.5"]
    return subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=ROOT)


def _holder(cluster: KubeCluster) -> str | None:
    lease = admin(cluster).get(LEASE)
    return None if lease is None else lease["spec"].get("holderIdentity")


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except OSError as exc:
        return getattr(exc, "code", 0), str(exc)


def test_watches_act_on_an_approval_sigterm_releases_the_lease_and_the_standby_takes_it(
        medley_cluster: KubeCluster, tmp_path: Path) -> None:
    test, ns = "dc-lease", "dc-lease"
    make_namespace(medley_cluster, ns)
    owner = admin(medley_cluster)
    owner.delete(LEASE)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        seed_fleet(owner, test, ns, mode="approve")
        port = _free_port()
        procs.append(_controller(medley_cluster, test, "replica-a", port, tmp_path / "a.log"))
        wait_until(lambda: _holder(medley_cluster) == "replica-a", 90, "replica-a leads")
        procs.append(_controller(medley_cluster, test, "replica-b", -1, tmp_path / "b.log"))
        fleetplan = ObjectRef("FleetPlan", "", test)
        wait_until(lambda: (owner.get(fleetplan).get("status") or {}).get("planId"), 60, "a plan in the status")
        time.sleep(2)  # replica-b's watches and lease loop are up by now; nothing is approved yet
        assert owner.list("Deployment", f"medley.dev/fleet={test}") == []

        plan_id = owner.get(fleetplan)["status"]["planId"]
        owner.patch(fleetplan, {"spec": {"approvedPlanId": plan_id}})
        latency = wait_until(lambda: owner.list("Deployment", f"medley.dev/fleet={test}"), 20, "the approval acts")
        assert latency < 8, latency  # the resync is 600 s: only a watch explains this

        status, metrics = _get(port, "/metrics")
        assert status == 200 and 'medley_controller_lease_holder{identity="replica-a"} 1.0' in metrics
        assert _get(port, "/readyz")[0] == 200 and _get(port, "/healthz")[0] == 200

        sent = time.monotonic()
        procs[0].send_signal(signal.SIGTERM)
        assert procs[0].wait(timeout=15) == 0
        exit_s = time.monotonic() - sent
        assert exit_s < 5, exit_s
        takeover_s = wait_until(lambda: _holder(medley_cluster) == "replica-b", 10, "replica-b takes the Lease")

        # the new leader repairs drift as soon as its watch sees it
        service = next(o for o in owner.list("Service", f"medley.dev/fleet={test}"))
        owner.delete(ObjectRef.of(service))
        repair_s = wait_until(lambda: owner.get(ObjectRef.of(service)) is not None, 20, "the Service recreated")

        sent = time.monotonic()
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(timeout=15) == 0
        assert time.monotonic() - sent < 5
        assert _holder(medley_cluster) == ""
        print(f"approval acted after {latency:.2f} s; SIGTERM to exit {exit_s:.2f} s; standby took the Lease "
              f"{takeover_s:.2f} s after; a deleted Service was back after {repair_s:.2f} s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
        cleanup(medley_cluster, test, [ns])
        for name in ("a", "b"):
            log = tmp_path / f"{name}.log"
            if log.exists():
                print(f"--- replica-{name} log (tail)\n" + log.read_text(errors="replace")[-3000:])
