"""Observed traffic from Prometheus: vLLM's own metrics per service (and per replica group), as a
``planner.observe.TrafficSource``.

vLLM exports, per engine: ``vllm:request_success_total`` (finished requests), the histograms
``vllm:request_prompt_tokens`` and ``vllm:request_generation_tokens`` (lengths),
``vllm:time_to_first_token_seconds`` and ``vllm:time_per_output_token_seconds`` (latency),
``vllm:num_requests_waiting`` (queue) and ``vllm:kv_cache_usage_perc`` (``vllm:gpu_cache_usage_perc``
before V1). A service's series are picked by the label Prometheus gives the pods' ``medley.dev/service``
label (``medley_dev_service`` with the usual ``labelmap`` of pod labels), a replica group's by
``medley.dev/group`` (``medley_dev_group``); both names are settings.

Queries (``SEL`` the service's matcher, ``W`` the window):
  rate        sum(rate(vllm:request_success_total{SEL}[step]))            (query_range)
  lengths     sum by (le) (increase(vllm:request_{prompt,generation}_tokens_bucket{SEL}[W]))
  latency     sum by (le) (increase(vllm:time_{to_first_token,per_output_token}_seconds_bucket{SEL}[W]))
  queue       sum(avg_over_time(vllm:num_requests_waiting{SEL}[W]))
  KV          avg(avg_over_time(vllm:kv_cache_usage_perc{SEL}[W]))
Times are Unix seconds. Finished requests stand for arrivals (equal in steady state; they lag by a request's
duration). Shares under a target interpolate inside a histogram bucket (``planner.observe.histograms``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np

from planner.observe import Attainment, RateSeries, Window, length_mix, share_below
from planner.schema import SLO


class TrafficError(RuntimeError):
    """Prometheus did not answer a query; the message names the query and the reason."""


@dataclass
class PrometheusTraffic:
    """A ``TrafficSource`` over Prometheus' HTTP API (``/api/v1/query`` and ``/api/v1/query_range``)."""

    url: str
    service_label: str = "medley_dev_service"
    group_label: str = "medley_dev_group"
    timeout_s: float = 10.0
    client: httpx.Client | None = None
    _own: httpx.Client | None = field(default=None, init=False, repr=False)

    def _http(self) -> httpx.Client:
        if self.client is not None:
            return self.client
        if self._own is None:
            self._own = httpx.Client(base_url=self.url.rstrip("/"), timeout=self.timeout_s)
        return self._own

    def close(self) -> None:
        """Close the HTTP client this source opened (not one it was given)."""
        if self._own is not None:
            self._own.close()
            self._own = None

    def selector(self, service: str, group: str | None = None) -> str:
        """The label matcher of a service's (or one replica group's) series."""
        parts = [f'{self.service_label}="{_escape(service)}"']
        if group is not None:
            parts.append(f'{self.group_label}="{_escape(group)}"')
        return "{" + ",".join(parts) + "}"

    def _get(self, path: str, params: dict[str, str]) -> list[dict[str, Any]]:
        try:
            response = self._http().get(path, params=params)
        except httpx.HTTPError as exc:
            raise TrafficError(f"prometheus {params.get('query', '')}: {exc}") from None
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or body.get("status") != "success":
            reason = body.get("error") or f"HTTP {response.status_code}"
            raise TrafficError(f"prometheus {params.get('query', '')}: {reason}")
        result = body.get("data", {}).get("result", [])
        return result if isinstance(result, list) else []

    def query(self, promql: str, at_s: float) -> list[dict[str, Any]]:
        """An instant vector at ``at_s``."""
        return self._get("/api/v1/query", {"query": promql, "time": f"{at_s:.3f}"})

    def _scalar(self, promql: str, at_s: float) -> float | None:
        rows = self.query(promql, at_s)
        if not rows:
            return None
        value = float(rows[0]["value"][1])
        return value if math.isfinite(value) else None

    def _histogram(self, metric: str, selector: str, window_s: float, at_s: float) -> tuple[list[float], list[float]]:
        rows = self.query(f"sum by (le) (increase({metric}_bucket{selector}[{_duration(window_s)}]))", at_s)
        pairs = sorted((float(r["metric"]["le"]), float(r["value"][1])) for r in rows if "le" in r.get("metric", {}))
        return [le for le, _ in pairs], [count for _, count in pairs]

    def rates(self, service: str, start_s: float, end_s: float, step_s: float) -> RateSeries:
        """Finished requests per second in each step of ``[start_s, end_s)`` (0 where nothing was scraped)."""
        steps = int(math.floor((end_s - start_s) / step_s + 1e-9))
        out = np.zeros(steps)
        if steps == 0:
            return RateSeries(start_s, step_s, out)
        promql = f"sum(rate(vllm:request_success_total{self.selector(service)}[{_duration(step_s)}]))"
        rows = self._get("/api/v1/query_range", {"query": promql, "start": f"{start_s + step_s:.3f}",
                                                 "end": f"{start_s + steps * step_s:.3f}", "step": f"{step_s:g}"})
        for row in rows:
            for t, v in row.get("values", []):
                i = int(round((float(t) - start_s) / step_s)) - 1
                if 0 <= i < steps and math.isfinite(float(v)):
                    out[i] = float(v)
        return RateSeries(start_s, step_s, out)

    def window(self, service: str, start_s: float, end_s: float) -> Window:
        """Rate, length mix, mean queue and KV use of ``[start_s, end_s)``."""
        span = max(end_s - start_s, 1e-9)
        sel = self.selector(service)
        w = _duration(span)
        finished = self._scalar(f"sum(increase(vllm:request_success_total{sel}[{w}]))", end_s) or 0.0
        p_le, p_cum = self._histogram("vllm:request_prompt_tokens", sel, span, end_s)
        g_le, g_cum = self._histogram("vllm:request_generation_tokens", sel, span, end_s)
        mix = length_mix(p_le, p_cum, g_le, g_cum) if p_le and g_le else []
        queue = self._scalar(f"sum(avg_over_time(vllm:num_requests_waiting{sel}[{w}]))", end_s)
        kv = self._scalar(f"avg(avg_over_time(vllm:kv_cache_usage_perc{sel}[{w}])) or "
                          f"avg(avg_over_time(vllm:gpu_cache_usage_perc{sel}[{w}]))", end_s)
        return Window(service=service, start_s=start_s, end_s=end_s, requests=int(round(finished)),
                      rate_rps=finished / span, buckets=tuple(mix), queue_length=queue, kv_usage=kv)

    def attainment(self, service: str, start_s: float, end_s: float, slo: SLO,
                   group: str | None = None) -> Attainment:
        """Shares of requests within the TTFT and the TPOT target over the window (of one group when named)."""
        span = max(end_s - start_s, 1e-9)
        sel = self.selector(service, group)
        t_le, t_cum = self._histogram("vllm:time_to_first_token_seconds", sel, span, end_s)
        o_le, o_cum = self._histogram("vllm:time_per_output_token_seconds", sel, span, end_s)
        ttft = share_below(t_le, t_cum, slo.ttft_ms / 1e3) if t_le else None
        tpot = share_below(o_le, o_cum, slo.tpot_ms / 1e3) if o_le else None
        return Attainment(ttft, tpot, float(t_cum[-1]) if t_cum else 0.0)


def _duration(seconds: float) -> str:
    """A PromQL range: whole seconds, at least one."""
    return f"{max(1, int(round(seconds)))}s"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
