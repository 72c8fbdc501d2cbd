"""What the control loop observes of a service's traffic, and the ``TrafficSource`` Protocol that answers it.

A source answers three questions per service (and, for a canary, per replica group): the request rate per
step over a span (``rates``), the traffic of one window — its rate, length mix, queue and KV use (``window``),
and the share of its requests that met the SLO's TTFT and TPOT targets (``attainment``). Times are seconds
on the source's own clock. Implementations: ``planner.observe.trace.TraceTraffic`` (recorded or generated
requests, for tests and the day simulation) and ``provisioner.traffic_prometheus.PrometheusTraffic`` (vLLM's
own metrics). A service nobody has observed yet is planned from its fleet spec (``prior_window``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from planner.schema import SLO, LengthBucket, Service

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RateSeries:
    """Requests per second in consecutive steps of ``step_s`` from ``start_s`` (oldest first)."""

    start_s: float
    step_s: float
    rates_rps: FloatArray

    def __len__(self) -> int:
        return int(self.rates_rps.shape[0])


@dataclass(frozen=True)
class Window:
    """One service's traffic over ``[start_s, end_s)``; ``None`` where the source has no such data."""

    service: str
    start_s: float
    end_s: float
    requests: int
    rate_rps: float
    buckets: tuple[LengthBucket, ...]
    queue_length: float | None = None  # requests waiting, mean over the window
    kv_usage: float | None = None  # KV-cache blocks in use, 0..1, mean over the window


@dataclass(frozen=True)
class Attainment:
    """Shares of requests within the TTFT and the TPOT target, and how many requests they rest on."""

    ttft: float | None
    tpot: float | None
    requests: float

    def meets(self, percentile: float) -> bool:
        """Both shares known and at the SLO percentile (each SLO percentile applies to its own metric)."""
        need = percentile / 100.0 - 1e-12
        return self.ttft is not None and self.tpot is not None and self.ttft >= need and self.tpot >= need

    @property
    def worst(self) -> float | None:
        """The lower of the two shares (None when either is unknown)."""
        return None if self.ttft is None or self.tpot is None else min(self.ttft, self.tpot)


class TrafficSource(Protocol):
    """Observed traffic of the services (and their replica groups)."""

    def rates(self, service: str, start_s: float, end_s: float, step_s: float) -> RateSeries:
        """Request rate per ``step_s`` over ``[start_s, end_s)``."""
        ...

    def window(self, service: str, start_s: float, end_s: float) -> Window:
        """Rate, length mix, queue and KV use over ``[start_s, end_s)``."""
        ...

    def attainment(self, service: str, start_s: float, end_s: float, slo: SLO,
                   group: str | None = None) -> Attainment:
        """Shares within the SLO's targets over ``[start_s, end_s)``, of one replica group when named."""
        ...


def prior_window(service: Service, buckets: list[LengthBucket] | None = None) -> Window:
    """The fleet's spec as a window: its rate and buckets (``buckets`` for a trace-file service)."""
    mix = buckets if buckets is not None else service.traffic.length_buckets()
    return Window(service=service.id, start_s=0.0, end_s=0.0, requests=0, rate_rps=service.traffic.rate_rps,
                  buckets=tuple(mix))
