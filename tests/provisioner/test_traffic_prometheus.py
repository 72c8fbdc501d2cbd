"""The Prometheus traffic source against a fake Prometheus HTTP server started by the test (loopback only):
the PromQL it sends per service and group, and what it makes of vLLM's counters and histograms."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from planner.schema import SLO
from provisioner.traffic_prometheus import PrometheusTraffic, TrafficError

pytestmark = pytest.mark.integration


def _hist(edges: list[str], counts: list[float]) -> list[dict[str, Any]]:
    return [{"metric": {"le": le}, "value": [0, str(c)]} for le, c in zip(edges, counts, strict=True)]


def _answer(query: str) -> list[dict[str, Any]] | None:
    """Canned vectors by metric, as a Prometheus with vLLM's metrics would give them."""
    if "query_range" in query:
        return None
    if "request_prompt_tokens_bucket" in query:
        return _hist(["512", "2048", "+Inf"], [60, 100, 100])
    if "request_generation_tokens_bucket" in query:
        return _hist(["128", "512", "+Inf"], [50, 100, 100])
    if "time_to_first_token_seconds_bucket" in query:
        return _hist(["0.5", "1", "2", "+Inf"], [70, 90, 98, 100] if "g-slow" not in query else [10, 40, 80, 100])
    if "time_per_output_token_seconds_bucket" in query:
        return _hist(["0.025", "0.05", "0.1", "+Inf"], [50, 95, 100, 100])
    if "increase(vllm:request_success_total" in query:
        return [{"metric": {}, "value": [0, "600"]}]
    if "num_requests_waiting" in query:
        return [{"metric": {}, "value": [0, "3.5"]}]
    if "kv_cache_usage_perc" in query:
        return [{"metric": {}, "value": [0, "0.42"]}]
    return []


class _Prometheus(BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        url = urlparse(self.path)
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        query = params.get("query", "")
        self.seen.append(f"{url.path} {query}")
        if "broken(" in query:
            self._send(400, {"status": "error", "errorType": "bad_data", "error": "parse error at char 7"})
        elif url.path == "/api/v1/query_range":
            start, end, step = float(params["start"]), float(params["end"]), float(params["step"])
            values = [[start + i * step, str(1.0 + i)] for i in range(int(round((end - start) / step)) + 1)]
            self._send(200, {"status": "success", "data": {"resultType": "matrix",
                                                           "result": [{"metric": {}, "values": values}]}})
        else:
            self._send(200, {"status": "success", "data": {"resultType": "vector", "result": _answer(query)}})

    def _send(self, code: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def prometheus() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Prometheus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Prometheus.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_rates_per_step_from_a_range_query(prometheus: str) -> None:
    src = PrometheusTraffic(prometheus)
    try:
        series = src.rates("chat", 1000.0, 1900.0, 300.0)
    finally:
        src.close()
    assert series.rates_rps.tolist() == [1.0, 2.0, 3.0]
    assert _Prometheus.seen == ['/api/v1/query_range sum(rate(vllm:request_success_total'
                                '{medley_dev_service="chat"}[300s]))']


def test_window_reads_rate_lengths_queue_and_kv(prometheus: str) -> None:
    src = PrometheusTraffic(prometheus)
    w = src.window("chat", 0.0, 300.0)
    src.close()
    assert w.requests == 600 and w.rate_rps == pytest.approx(2.0)
    assert w.queue_length == 3.5 and w.kv_usage == 0.42
    shares = {(b.input_tokens, b.output_tokens): round(b.share, 3) for b in w.buckets}
    assert shares[(256, 64)] == 0.3 and shares[(1280, 320)] == 0.2 and sum(shares.values()) == pytest.approx(1.0)
    assert any("sum by (le) (increase(vllm:request_prompt_tokens_bucket{medley_dev_service=\"chat\"}[300s]))" in q
               for q in _Prometheus.seen)


def test_attainment_per_service_and_per_replica_group(prometheus: str) -> None:
    src = PrometheusTraffic(prometheus)
    slo = SLO(ttft_ms=1000, tpot_ms=50)
    svc = src.attainment("chat", 0.0, 300.0, slo)
    slow = src.attainment("chat", 0.0, 300.0, slo, group="g-slow")
    src.close()
    assert svc.ttft == pytest.approx(0.9) and svc.tpot == pytest.approx(0.95) and svc.requests == 100
    assert slow.ttft == pytest.approx(0.4) and not slow.meets(90)
    assert any('medley_dev_group="g-slow"' in q for q in _Prometheus.seen)


def test_a_refused_query_is_one_line_naming_the_query(prometheus: str) -> None:
    src = PrometheusTraffic(prometheus, service_label="broken(")
    with pytest.raises(TrafficError, match="parse error at char 7"):
        src.window("chat", 0.0, 60.0)
    src.close()
    dead = PrometheusTraffic("http://127.0.0.1:9", timeout_s=0.5)
    with pytest.raises(TrafficError, match="vllm:request_success_total"):
        dead.rates("chat", 0.0, 600.0, 300.0)
    dead.close()
