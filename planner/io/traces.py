"""Request traces: the one reader of trace CSV files, and their length buckets.

A trace is a CSV with ``ContextTokens`` and ``GeneratedTokens`` columns and an optional ``TIMESTAMP`` column
(the Azure LLM inference traces of 2023). ``load_trace`` reads it into a :class:`Trace` (arrival seconds
from the earliest request, lengths as written, in file order); every stage that needs a trace takes that
value (the planner's buckets, the replay's arrivals, the power simulator's workload).

``bucket`` puts each request with positive lengths in the (input, output) cell of the given edges; a
bucket's representative lengths are the cell's mean input and output tokens (rounded up), its share the
cell's fraction of those requests, and the mean rate is ``n / (last − first)`` over their timestamps.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from planner.schema import FleetSpec, LengthBucket

DEFAULT_INPUT_EDGES = (0, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
DEFAULT_OUTPUT_EDGES = (0, 16, 64, 128, 256, 512, 1024, 2048, 4096)
_LENGTHS = ("ContextTokens", "GeneratedTokens")

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class Trace:
    """Requests of a trace file, in file order.

    ``arrival_s`` counts seconds from the earliest timestamp (NaN for a row without one; None when the file
    has no ``TIMESTAMP`` column); lengths are as written (zeros included). ``source`` names the file.
    """

    arrival_s: F64 | None
    input_tokens: I64
    output_tokens: I64
    source: str = ""

    def __len__(self) -> int:
        return int(self.input_tokens.shape[0])


@dataclass(frozen=True)
class TraceSummary:
    """Buckets of a trace and its mean arrival rate (None without timestamps)."""

    buckets: list[LengthBucket]
    requests: int
    mean_rate_rps: float | None


def _integer(text: str | None, where: str, column: str) -> int:
    try:
        return int(text)  # type: ignore[arg-type]  # None (a short row) fails like a bad value
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {column}: not an integer") from None


def _seconds(stamps: list[str], path: Path) -> F64:
    """Seconds from the earliest timestamp (NaN where empty); ``ValueError('FILE:LINE: TIMESTAMP: ...')``."""
    iso = [s.strip().replace(" ", "T") or "NaT" for s in stamps]
    try:
        t = np.array(iso, dtype="datetime64[ns]")
    except ValueError:
        for line, s in enumerate(iso, start=2):
            try:
                np.datetime64(s, "ns")
            except ValueError:
                raise ValueError(f"{path}:{line}: TIMESTAMP: not a timestamp") from None
        raise
    known = ~np.isnat(t)
    out = np.full(t.shape[0], np.nan)
    if known.any():
        ns = t.astype(np.int64)
        out[known] = (ns[known] - ns[known].min()) / 1e9
    return out


def load_trace(path: Path) -> Trace:
    """Read a trace CSV; ``ValueError('FILE:LINE: COLUMN: reason')`` on a missing column or a bad row."""
    ins: list[int] = []
    outs: list[int] = []
    stamps: list[str] = []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        for need in _LENGTHS:
            if need not in cols:
                raise ValueError(f"{path}:1: {need}: missing column")
        timed = "TIMESTAMP" in cols
        for line, row in enumerate(reader, start=2):
            ins.append(_integer(row["ContextTokens"], f"{path}:{line}", "ContextTokens"))
            outs.append(_integer(row["GeneratedTokens"], f"{path}:{line}", "GeneratedTokens"))
            if timed:
                stamps.append(row["TIMESTAMP"] or "")
    return Trace(arrival_s=_seconds(stamps, path) if timed else None,
                 input_tokens=np.array(ins, dtype=np.int64), output_tokens=np.array(outs, dtype=np.int64),
                 source=str(path))


def trace_path(trace_file: str, base_dir: Path | None = None) -> Path:
    """A service's ``trace_file`` resolved against ``base_dir`` (the fleet file's folder) when relative."""
    path = Path(trace_file)
    return path if base_dir is None or path.is_absolute() else base_dir / path


def service_traces(fleet: FleetSpec, base_dir: Path | None = None) -> dict[str, Trace]:
    """The loaded trace of every service whose traffic is a trace file (relative paths against ``base_dir``)."""
    return {s.id: load_trace(trace_path(s.traffic.trace_file, base_dir))
            for s in fleet.services if s.traffic.trace_file is not None}


def _cells(values: I64, edges: Sequence[int]) -> I64:
    """Cell ``i`` of each value: the first with ``value ≤ edges[i+1]``, the last cell above every edge."""
    upper = np.asarray(edges[1:], dtype=np.int64)
    return np.minimum(np.searchsorted(upper, values, side="left"), len(edges) - 2).astype(np.int64)


def bucket(trace: Trace, input_edges: Sequence[int] = DEFAULT_INPUT_EDGES,
           output_edges: Sequence[int] = DEFAULT_OUTPUT_EDGES) -> TraceSummary:
    """Length buckets and mean rate of a trace's requests with positive lengths."""
    keep = (trace.input_tokens >= 1) & (trace.output_tokens >= 1)
    n = int(keep.sum())
    if n == 0:
        raise ValueError(f"{trace.source}:2: ContextTokens: no requests with positive lengths")
    s_in, s_out = trace.input_tokens[keep], trace.output_tokens[keep]
    width = len(output_edges)
    keys = _cells(s_in, input_edges) * width + _cells(s_out, output_edges)
    cells, which = np.unique(keys, return_inverse=True)
    counts = np.bincount(which)
    sum_in = np.bincount(which, weights=s_in)  # sums of integers below 2**53: exact in float64
    sum_out = np.bincount(which, weights=s_out)
    buckets = [LengthBucket(input_tokens=math.ceil(float(sum_in[k]) / int(counts[k])),
                            output_tokens=math.ceil(float(sum_out[k]) / int(counts[k])), share=int(counts[k]) / n)
               for k in range(cells.shape[0])]
    rate = None
    if trace.arrival_s is not None:
        times = trace.arrival_s[keep]
        times = times[~np.isnan(times)]
        if times.size and times.max() > times.min():
            rate = n / float(times.max() - times.min())
    return TraceSummary(buckets=buckets, requests=n, mean_rate_rps=rate)


def bucket_trace(path: Path, input_edges: Sequence[int] = DEFAULT_INPUT_EDGES,
                 output_edges: Sequence[int] = DEFAULT_OUTPUT_EDGES) -> TraceSummary:
    """Read a trace and bucket it; ``ValueError('FILE:LINE: field: reason')`` on bad rows."""
    return bucket(load_trace(path), input_edges, output_edges)

