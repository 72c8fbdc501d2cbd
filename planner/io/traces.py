"""Request traces (CSV with ``ContextTokens`` and ``GeneratedTokens``, optional ``TIMESTAMP``) as length buckets.

Each request falls in the (input, output) cell of the given edges; a bucket's representative lengths are the
cell's mean input and output tokens (rounded up), its share the cell's fraction of requests.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from planner.schema import LengthBucket

DEFAULT_INPUT_EDGES = (0, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
DEFAULT_OUTPUT_EDGES = (0, 16, 64, 128, 256, 512, 1024, 2048, 4096)


@dataclass(frozen=True)
class TraceSummary:
    """Buckets of a trace and its mean arrival rate (None without timestamps)."""

    buckets: list[LengthBucket]
    requests: int
    mean_rate_rps: float | None


def _cell(value: int, edges: Sequence[int]) -> int:
    for i in range(len(edges) - 1):
        if value <= edges[i + 1]:
            return i
    return len(edges) - 2


def _parse_time(text: str) -> datetime:
    text = text.strip()
    if "." in text:  # the Azure traces carry 7 fractional digits; datetime takes 6
        head, frac = text.split(".", 1)
        text = f"{head}.{frac[:6]}"
    return datetime.fromisoformat(text)


def bucket_trace(path: Path, input_edges: Sequence[int] = DEFAULT_INPUT_EDGES,
                 output_edges: Sequence[int] = DEFAULT_OUTPUT_EDGES) -> TraceSummary:
    """Read a trace and bucket it; ``ValueError('FILE:LINE: field: reason')`` on bad rows."""
    sums: dict[tuple[int, int], list[float]] = {}
    first: datetime | None = None
    last: datetime | None = None
    n = 0
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        cols = set(reader.fieldnames or [])
        for need in ("ContextTokens", "GeneratedTokens"):
            if need not in cols:
                raise ValueError(f"{path}:1: {need}: missing column")
        for line, row in enumerate(reader, start=2):
            try:
                s_in, s_out = int(row["ContextTokens"]), int(row["GeneratedTokens"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: ContextTokens: not an integer") from None
            if s_in < 1 or s_out < 1:
                continue  # empty prompts or outputs carry no load the model can price
            key = (_cell(s_in, input_edges), _cell(s_out, output_edges))
            acc = sums.setdefault(key, [0.0, 0.0, 0.0])
            acc[0] += s_in
            acc[1] += s_out
            acc[2] += 1
            n += 1
            if "TIMESTAMP" in cols and row["TIMESTAMP"]:
                try:
                    ts = _parse_time(row["TIMESTAMP"])
                except ValueError:
                    raise ValueError(f"{path}:{line}: TIMESTAMP: not a timestamp") from None
                first = ts if first is None or ts < first else first
                last = ts if last is None or ts > last else last
    if n == 0:
        raise ValueError(f"{path}:2: ContextTokens: no requests with positive lengths")
    buckets = [LengthBucket(input_tokens=math.ceil(a[0] / a[2]), output_tokens=math.ceil(a[1] / a[2]),
                            share=a[2] / n) for _, a in sorted(sums.items())]
    rate = None
    if first is not None and last is not None and last > first:
        rate = n / (last - first).total_seconds()
    return TraceSummary(buckets=buckets, requests=n, mean_rate_rps=rate)
