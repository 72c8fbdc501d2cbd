"""A ``TrafficSource`` over recorded requests: arrivals and lengths per service, the latencies they saw when
known (per replica group for a canary), and per-step rates of the days before them.

The day simulation feeds it the requests it generates and the latencies its replay measures; tests feed it
hand-made requests. Length mixes are bucketed with ``planner.io.traces.bucket`` on ``input_edges`` ×
``output_edges`` (coarse by default: a few wide cells keep the planner's model small).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from planner.io.traces import Trace, bucket
from planner.observe.source import Attainment, RateSeries, Window
from planner.schema import SLO, LengthBucket

COARSE_INPUT_EDGES = (0, 256, 1024, 4096, 32768)
COARSE_OUTPUT_EDGES = (0, 64, 256, 1024, 4096)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass
class ServiceRequests:
    """One service's requests in arrival order, with the latencies they saw once known (NaN: not yet)."""

    arrival_s: FloatArray
    input_tokens: IntArray
    output_tokens: IntArray
    ttft_ms: FloatArray = field(default_factory=lambda: np.zeros(0))
    tpot_ms: FloatArray = field(default_factory=lambda: np.zeros(0))
    group: npt.NDArray[np.object_] = field(default_factory=lambda: np.zeros(0, dtype=object))  # decoded on
    first_group: npt.NDArray[np.object_] = field(default_factory=lambda: np.zeros(0, dtype=object))  # prefilled on

    def __post_init__(self) -> None:
        n = self.arrival_s.shape[0]
        if self.ttft_ms.shape[0] != n:
            self.ttft_ms = np.full(n, np.nan)
        if self.tpot_ms.shape[0] != n:
            self.tpot_ms = np.full(n, np.nan)
        if self.group.shape[0] != n:
            self.group = np.full(n, "", dtype=object)
        if self.first_group.shape[0] != n:
            self.first_group = np.full(n, "", dtype=object)
        if n > 1 and np.any(np.diff(self.arrival_s) < 0):
            raise ValueError("arrival_s: requests must be in arrival order")

    def span(self, start_s: float, end_s: float) -> slice:
        """The requests that arrived in ``[start_s, end_s)``."""
        lo = int(np.searchsorted(self.arrival_s, start_s, side="left"))
        hi = int(np.searchsorted(self.arrival_s, end_s, side="left"))
        return slice(lo, hi)


def nearest_buckets(input_tokens: IntArray, output_tokens: IntArray, seeds: Sequence[LengthBucket],
                    rounds: int = 4) -> list[LengthBucket]:
    """Buckets whose shares are the requests nearest to each (in log lengths, L1), as the replay's router
    assigns them, with lengths at the median of their requests (a few Lloyd rounds from ``seeds``).

    Cell buckets put a request in the cell its lengths fall in, with the cell's mean lengths; the router
    sends it to the nearest bucket instead, and the two disagree near cell edges. Planning on these keeps
    the plan's split per bucket the split its requests meet."""
    x = np.log(np.maximum(np.stack([input_tokens, output_tokens], axis=1).astype(np.float64), 1.0))
    centres = np.log(np.asarray([[b.input_tokens, b.output_tokens] for b in seeds], dtype=np.float64))
    which = np.zeros(x.shape[0], dtype=np.int64)
    for _ in range(rounds):
        which = np.argmin(np.abs(x[:, None, :] - centres[None, :, :]).sum(axis=2), axis=1)
        for k in range(centres.shape[0]):
            mine = which == k
            if mine.any():
                centres[k] = np.median(x[mine], axis=0)
    counts = np.bincount(which, minlength=centres.shape[0])
    out = []
    for k in np.nonzero(counts)[0].tolist():
        i, o = np.exp(centres[k])
        out.append(LengthBucket(input_tokens=max(1, math.ceil(i - 1e-9)), output_tokens=max(1, math.ceil(o - 1e-9)),
                                share=float(counts[k]) / float(x.shape[0])))
    return out


@dataclass
class TraceTraffic:
    """Observed traffic from recorded requests (``requests``) and per-step rates before them (``history``)."""

    requests: Mapping[str, ServiceRequests]
    history: Mapping[str, RateSeries] = field(default_factory=dict)
    input_edges: Sequence[int] = COARSE_INPUT_EDGES
    output_edges: Sequence[int] = COARSE_OUTPUT_EDGES

    def _service(self, service: str) -> ServiceRequests:
        if service not in self.requests:
            raise KeyError(f"service {service!r}: no requests recorded")
        return self.requests[service]

    def rates(self, service: str, start_s: float, end_s: float, step_s: float) -> RateSeries:
        """Rates per step: the history's where the span lies before the requests, counted requests after."""
        if step_s <= 0 or end_s < start_s:
            raise ValueError("step_s: must be positive, and end_s not before start_s")
        reqs = self._service(service)
        steps = int(math.floor((end_s - start_s) / step_s + 1e-9))
        edges = start_s + step_s * np.arange(steps + 1)
        counts = np.histogram(reqs.arrival_s, bins=edges)[0].astype(np.float64) if steps else np.zeros(0)
        out = counts / step_s
        hist = self.history.get(service)
        if hist is not None and len(hist):
            if abs(hist.step_s - step_s) > 1e-9:
                raise ValueError(f"step_s: the history of {service} has steps of {hist.step_s:g} s")
            first = float(reqs.arrival_s[0]) if reqs.arrival_s.size else math.inf
            hist_end = hist.start_s + hist.step_s * len(hist)
            for i in range(steps):
                if edges[i + 1] <= min(first, hist_end) + 1e-9:
                    j = int(round((edges[i] - hist.start_s) / step_s))
                    if 0 <= j < len(hist):
                        out[i] = hist.rates_rps[j]
        return RateSeries(start_s, step_s, out)

    def window(self, service: str, start_s: float, end_s: float) -> Window:
        """Rate and length mix of the requests that arrived in the window."""
        reqs = self._service(service)
        sel = reqs.span(start_s, end_s)
        n = sel.stop - sel.start
        span = max(end_s - start_s, 1e-9)
        buckets: tuple[LengthBucket, ...] = ()
        if n:
            trace = Trace(arrival_s=reqs.arrival_s[sel], input_tokens=reqs.input_tokens[sel],
                          output_tokens=reqs.output_tokens[sel], source=f"observed {service}")
            cells = bucket(trace, self.input_edges, self.output_edges).buckets
            buckets = tuple(nearest_buckets(reqs.input_tokens[sel], reqs.output_tokens[sel], cells))
        return Window(service=service, start_s=start_s, end_s=end_s, requests=n, rate_rps=n / span, buckets=buckets)

    def attainment(self, service: str, start_s: float, end_s: float, slo: SLO,
                   group: str | None = None) -> Attainment:
        """Shares of the window's requests with a known latency that met each target; of one replica group
        when named (TTFT over the requests it prefilled, TPOT over those it decoded)."""
        reqs = self._service(service)
        sel = reqs.span(start_s, end_s)
        ttft, tpot = reqs.ttft_ms[sel], reqs.tpot_ms[sel]
        known = ~np.isnan(ttft)
        first = known & (reqs.first_group[sel] == group) if group is not None else known
        last = known & (reqs.group[sel] == group) if group is not None else known
        n = int((first | last).sum())
        if n == 0:
            return Attainment(None, None, 0.0)
        share_ttft = float(np.mean(ttft[first] <= slo.ttft_ms)) if first.any() else None
        share_tpot = float(np.mean(tpot[last] <= slo.tpot_ms)) if last.any() else None
        return Attainment(share_ttft, share_tpot, float(n))

    def record(self, service: str, index: slice | IntArray, ttft_ms: FloatArray, tpot_ms: FloatArray,
               group: Sequence[str] | None = None, first_group: Sequence[str] | None = None) -> None:
        """Store the latencies the requests at ``index`` saw, and the replica groups that decoded and
        prefilled each (the same group for a unified replica)."""
        reqs = self._service(service)
        reqs.ttft_ms[index] = ttft_ms
        reqs.tpot_ms[index] = tpot_ms
        if group is not None:
            reqs.group[index] = np.asarray(group, dtype=object)
            reqs.first_group[index] = np.asarray(first_group if first_group is not None else group, dtype=object)
