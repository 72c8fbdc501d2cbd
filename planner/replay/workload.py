"""What the replay serves: arrivals per service, from a loaded trace (its burst shape and lengths, rescaled
to a rate) or a synthetic process (Poisson, or bursty Gamma gaps) with lengths from the plan's demand.

The replay reads no files: traces come in loaded (``planner.io.traces.load_trace``), from the edge.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from planner.demand import planned_buckets
from planner.io.traces import Trace
from planner.schema import FleetSpec, LengthBucket, Plan


@dataclass(frozen=True)
class Arrivals:
    """Requests of one service: arrival times (s from 0) and lengths."""

    arrival_s: np.ndarray
    input_tokens: np.ndarray
    output_tokens: np.ndarray

    def __len__(self) -> int:
        return int(self.arrival_s.shape[0])

    @property
    def mean_rate_rps(self) -> float:
        """Requests per second over the span of the arrivals."""
        if len(self) < 2:
            return 0.0
        span = float(self.arrival_s[-1] - self.arrival_s[0])
        return (len(self) - 1) / span if span > 0 else math.inf

    @staticmethod
    def from_trace(trace: Trace) -> Arrivals:
        """A trace's requests in arrival order (file order without timestamps), lengths at least one token."""
        if trace.arrival_s is not None and np.isnan(trace.arrival_s).any():
            raise ValueError(f"{trace.source}: TIMESTAMP: some rows have none; the replay needs every arrival")
        if trace.arrival_s is None:
            seconds = np.zeros(len(trace))
            order = np.arange(len(trace))
        else:
            order = np.argsort(trace.arrival_s, kind="stable")
            seconds = trace.arrival_s[order]
        return Arrivals(
            arrival_s=seconds.astype(np.float64),
            input_tokens=np.maximum(trace.input_tokens[order], 1),
            output_tokens=np.maximum(trace.output_tokens[order], 1),
        )


def rescale(arrivals: Arrivals, rate_rps: float) -> Arrivals:
    """The same requests with times stretched so the mean rate is ``rate_rps`` (bursts keep their shape)."""
    current = arrivals.mean_rate_rps
    if rate_rps <= 0 or current <= 0 or not math.isfinite(current):
        return arrivals
    return Arrivals(arrivals.arrival_s * (current / rate_rps), arrivals.input_tokens, arrivals.output_tokens)


def _sample_lengths(
    buckets: Sequence[LengthBucket], n: int, rng: np.random.Generator, trace_lengths: Arrivals | None
) -> tuple[np.ndarray, np.ndarray]:
    if trace_lengths is not None and len(trace_lengths):
        idx = rng.integers(0, len(trace_lengths), size=n)
        return trace_lengths.input_tokens[idx], trace_lengths.output_tokens[idx]
    shares = np.array([b.share for b in buckets], dtype=np.float64)
    pick = rng.choice(len(buckets), size=n, p=shares / shares.sum())
    ins = np.array([b.input_tokens for b in buckets], dtype=np.int64)[pick]
    outs = np.array([b.output_tokens for b in buckets], dtype=np.int64)[pick]
    return ins, outs


def synthetic_arrivals(
    buckets: Sequence[LengthBucket],
    rate_rps: float,
    duration_s: float,
    *,
    process: Literal["poisson", "bursty"] = "poisson",
    burst_cv: float = 3.0,
    seed: int = 0,
    trace_lengths: Arrivals | None = None,
) -> Arrivals:
    """Poisson arrivals, or bursty ones (Gamma gaps with coefficient of variation ``burst_cv``); lengths
    drawn from ``trace_lengths`` when given, else from the buckets by their shares."""
    rng = np.random.default_rng(seed)
    if rate_rps <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return Arrivals(np.zeros(0), empty, empty)
    n_max = int(rate_rps * duration_s * 1.5 + 50)
    if process == "poisson":
        gaps = rng.exponential(1.0 / rate_rps, size=n_max)
    else:
        shape = 1.0 / (burst_cv * burst_cv)
        gaps = rng.gamma(shape, 1.0 / (rate_rps * shape), size=n_max)
    times = np.cumsum(gaps)
    times = times[times < duration_s]
    ins, outs = _sample_lengths(buckets, int(times.shape[0]), rng, trace_lengths)
    return Arrivals(times, ins, outs)


TraceKind = Literal["file", "poisson", "bursty"]


@dataclass(frozen=True)
class TraceSource:
    """What drives the replay: a trace file (its lengths and burst shape) or a synthetic process.

    ``path`` names the file the caller loads and hands to ``build_workload`` (the replay reads no files).
    """

    kind: TraceKind
    path: Path | None = None
    rate_scale: float = 1.0
    duration_s: float = 600.0  # synthetic processes only
    keep_trace_rate: bool = False  # a trace file replays at its own rate × rate_scale, not the service's
    seed: int = 0


def build_workload(
    fleet: FleetSpec,
    source: TraceSource,
    *,
    plan: Plan | None = None,
    trace: Trace | None = None,
    service_traces: Mapping[str, Trace] | None = None,
) -> dict[str, Arrivals]:
    """Arrivals per service at ``rate_rps × rate_scale``.

    A ``file`` source replays ``trace`` (loaded by the caller) for every service, keeping its burst shape
    and lengths. A synthetic source draws each service's lengths from its own loaded trace
    (``service_traces``, for trace-file services) or from the buckets the plan was sized for
    (``planner.demand.planned_buckets``: the plan's stored demand, else the fleet's buckets).
    """
    if source.kind == "file":
        if trace is None:
            raise ValueError("trace: a file source needs its trace loaded (planner.io.traces.load_trace)")
        return _replay_trace(fleet, source, Arrivals.from_trace(trace))
    out: dict[str, Arrivals] = {}
    own_traces = service_traces or {}
    process: Literal["poisson", "bursty"] = "bursty" if source.kind == "bursty" else "poisson"
    for i, svc in enumerate(fleet.services):
        own = Arrivals.from_trace(own_traces[svc.id]) if svc.id in own_traces else None
        buckets = planned_buckets(plan, svc) if own is None or not len(own) else []
        out[svc.id] = synthetic_arrivals(
            buckets, svc.traffic.rate_rps * source.rate_scale, source.duration_s, process=process,
            seed=source.seed + 7919 * i, trace_lengths=own)
    return out


def _replay_trace(fleet: FleetSpec, source: TraceSource, trace: Arrivals) -> dict[str, Arrivals]:
    """The trace for every service, at the service's rate (or the trace's own) × ``rate_scale``."""
    out: dict[str, Arrivals] = {}
    for svc in fleet.services:
        rate = trace.mean_rate_rps if source.keep_trace_rate else svc.traffic.rate_rps
        out[svc.id] = rescale(trace, rate * source.rate_scale)
    return out
