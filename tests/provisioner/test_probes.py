"""The probe server: /metrics from the registry, /healthz and /readyz from the process's own checks."""

from __future__ import annotations

import urllib.error
import urllib.request

from planner.cli.probes import ProbeServer
from provisioner.probes import ControllerMetrics


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_probes_answer_from_the_checks_and_metrics_from_the_registry():
    metrics = ControllerMetrics()
    metrics.lease_holder.labels("me").set(1)
    metrics.reconciles.labels("ready").inc(3)
    ready = [False]
    server = ProbeServer(metrics.registry, healthy=lambda: (True, "last tick 1 s ago"),
                         ready=lambda: (ready[0], "standby" if ready[0] else "no answer from the API server yet"),
                         host="127.0.0.1", port=0).start()
    try:
        status, body = _get(server.port, "/metrics")
        assert status == 200
        assert 'medley_controller_lease_holder{identity="me"} 1.0' in body
        assert 'medley_controller_reconciles_total{result="ready"} 3.0' in body
        assert _get(server.port, "/healthz") == (200, "last tick 1 s ago\n")
        assert _get(server.port, "/readyz") == (503, "no answer from the API server yet\n")
        ready[0] = True
        assert _get(server.port, "/readyz") == (200, "standby\n")
        assert _get(server.port, "/nope")[0] == 404
    finally:
        server.close()
