"""``/metrics``, ``/healthz`` and ``/readyz`` for Medley's long-running commands (``medley controller``,
``medley power agent``): an edge of the command line, shared by the front doors that start such processes.

A small threaded HTTP server: ``/metrics`` is the Prometheus text exposition of the process's registry
(prometheus-client), ``/healthz`` and ``/readyz`` ask the process's own checks and answer 200 or 503 with
one line saying why.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Check = Callable[[], tuple[bool, str]]


def _ok() -> tuple[bool, str]:
    return True, "ok"


class ProbeServer:
    """Serves the probes and metrics on ``host:port`` in a daemon thread (port 0: any free port)."""

    def __init__(self, registry: CollectorRegistry, *, healthy: Check = _ok, ready: Check = _ok,
                 host: str = "0.0.0.0", port: int = 0) -> None:
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, generate_latest(registry)),
            "/healthz": lambda: _answer(healthy()),
            "/readyz": lambda: _answer(ready()),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
                route = routes.get(self.path.split("?", 1)[0])
                status, content_type, body = route() if route else (404, "text/plain", b"not found\n")
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_: Any) -> None:  # probes every few seconds: no access log
                pass

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="medley-probes", daemon=True)

    def start(self) -> ProbeServer:
        """Start serving; returns self."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and free the port."""
        self._server.shutdown()
        self._server.server_close()


def _answer(check: tuple[bool, str]) -> tuple[int, str, bytes]:
    ok, why = check
    return (200 if ok else 503), "text/plain; charset=utf-8", (why.replace("\n", " ") + "\n").encode()
