"""Request traces: the one reader of trace CSV files, and their length buckets.

A trace is a CSV with ``ContextTokens`` and ``GeneratedTokens`` columns and an optional ``TIMESTAMP`` column
(the Azure LLM inference traces of 2023). ``load_trace`` reads it into a :class:`Trace` (arrival seconds
from the earliest request, lengths as written, in file order); every stage that needs a trace takes that
value (the planner's buckets, the replay's arrivals, the power simulator's workload). A trace is read as a
regular UTF-8 file of at most ``MAX_TRACE_BYTES`` and ``MAX_TRACE_ROWS`` requests (``planner.io.files``);
lengths are whole numbers from 0 to ``MAX_TOKENS``, else the error names the file, the line and the
column. Rows need not be in time order (consumers sort arrivals).

``bucket`` puts each request with positive lengths in the (input, output) cell of the given edges; a
bucket's representative lengths are the cell's mean input and output tokens (rounded up), its share the
cell's fraction of those requests, and the mean rate is ``n / (last − first)`` over their timestamps.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from planner.io.files import FileAccess, FileRefused
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


MAX_TRACE_BYTES = 256 << 20
MAX_TRACE_ROWS = 5_000_000
MAX_TOKENS = 10_000_000  # a request longer than this is a corrupt row, not a workload
TRACE_ACCESS = FileAccess(max_bytes=MAX_TRACE_BYTES)


def _integer(text: str | None, where: str, column: str) -> int:
    try:
        value = int(text)  # type: ignore[arg-type]  # None (a short row) fails like a bad value
    except (TypeError, ValueError):
        raise ValueError(f"{where}: {column}: not an integer ({text!r})") from None
    if value < 0:
        raise ValueError(f"{where}: {column}: must not be negative (got {value})")
    if value > MAX_TOKENS:
        raise ValueError(f"{where}: {column}: {value} tokens is more than {MAX_TOKENS:,}: not a request length")
    return value


def _seconds(stamps: list[str], source: str) -> F64:
    """Seconds from the earliest timestamp (NaN where empty); ``ValueError('FILE:LINE: TIMESTAMP: ...')``."""
    iso = [s.strip().replace(" ", "T") or "NaT" for s in stamps]
    try:
        t = np.array(iso, dtype="datetime64[ns]")
    except (ValueError, OverflowError):
        for line, s in enumerate(iso, start=2):
            try:
                np.datetime64(s, "ns")
            except (ValueError, OverflowError):
                raise ValueError(f"{source}:{line}: TIMESTAMP: not a timestamp ({s!r})") from None
        raise
    known = ~np.isnat(t)
    out = np.full(t.shape[0], np.nan)
    if known.any():
        ns = t.astype(np.int64)
        out[known] = (ns[known] - ns[known].min()) / 1e9
    return out


def parse_trace(text: str, source: str, max_rows: int = MAX_TRACE_ROWS) -> Trace:
    """A trace from CSV text; ``ValueError('SOURCE:LINE: COLUMN: reason')`` for every bad header or row."""
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fields = reader.fieldnames
    except csv.Error as exc:
        raise ValueError(f"{source}:1: (header): not CSV ({exc})") from None
    if not fields:
        raise ValueError(f"{source}:1: (file): empty; a trace starts with a header row naming "
                         "ContextTokens and GeneratedTokens (and TIMESTAMP)")
    cols = set(fields)
    for need in _LENGTHS:
        if need not in cols:
            raise ValueError(f"{source}:1: {need}: missing column")
    timed = "TIMESTAMP" in cols
    ins: list[int] = []
    outs: list[int] = []
    stamps: list[str] = []
    line = 1
    try:
        for line, row in enumerate(reader, start=2):
            if line - 1 > max_rows:
                raise ValueError(f"{source}:{line}: (file): more than {max_rows:,} requests")
            ins.append(_integer(row["ContextTokens"], f"{source}:{line}", "ContextTokens"))
            outs.append(_integer(row["GeneratedTokens"], f"{source}:{line}", "GeneratedTokens"))
            if timed:
                stamps.append(row["TIMESTAMP"] or "")
    except csv.Error as exc:
        raise ValueError(f"{source}:{line + 1}: (row): not CSV ({exc})") from None
    if not ins:
        raise ValueError(f"{source}:2: (file): no requests after the header")
    return Trace(arrival_s=_seconds(stamps, source) if timed else None,
                 input_tokens=np.array(ins, dtype=np.int64), output_tokens=np.array(outs, dtype=np.int64),
                 source=source)


def load_trace(path: Path, access: FileAccess = TRACE_ACCESS) -> Trace:
    """Read a trace CSV (a regular UTF-8 file, bounded; ``access`` says where it may lie); ``ValueError``
    ``FILE:LINE: COLUMN: reason`` on a missing column, a bad row or a file that is not read."""
    try:
        text = access.read_text(path)
    except FileRefused as exc:
        raise ValueError(f"{path}:1: (file): {exc.reason}") from None
    return parse_trace(text, str(path))


def trace_path(trace_file: str, base_dir: Path | None = None) -> Path:
    """A service's ``trace_file`` resolved against ``base_dir`` (the fleet file's folder) when relative."""
    path = Path(trace_file)
    return path if base_dir is None or path.is_absolute() else base_dir / path


def service_traces(fleet: FleetSpec, base_dir: Path | None = None,
                   access: FileAccess = TRACE_ACCESS) -> dict[str, Trace]:
    """The loaded trace of every service whose traffic is a trace file (relative paths against ``base_dir``)."""
    return {s.id: load_trace(trace_path(s.traffic.trace_file, base_dir), access)
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
                 output_edges: Sequence[int] = DEFAULT_OUTPUT_EDGES, access: FileAccess = TRACE_ACCESS) -> TraceSummary:
    """Read a trace and bucket it; ``ValueError('FILE:LINE: field: reason')`` on bad rows."""
    return bucket(load_trace(path, access), input_edges, output_edges)

