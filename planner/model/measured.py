"""Measured step tables: times measured on real replicas override the model where they cover a point.

A table is a list of :class:`MeasuredPoint` (read from CSV by ``planner.io.profiles.read_measured_csv``).
``phase`` is ``prefill`` (``tokens`` = prompt tokens per request, ``time_ms`` = time of the whole batch's
prefill) or ``decode`` (``tokens`` = context tokens per request, ``time_ms`` = one decode step of the batch).
A point is covered when the table holds its (model, device, tp, pp, phase) and measured batches and tokens
bracket it; the time is then interpolated (bilinear). Offloaded shapes and memory always come from the
fallback model.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from planner.model.memory import MemoryFit
from planner.model.perf import PerfModel, ReplicaShape, check_counts, check_shape

PHASES = ("prefill", "decode")


@dataclass(frozen=True)
class MeasuredPoint:
    """One row of a measured table."""

    model: str
    device: str
    tp: int
    pp: int
    phase: str
    batch: int
    tokens: int
    time_ms: float


def _interp_tokens(rows: list[tuple[int, float]], tokens: int) -> float | None:
    rows = sorted(rows)
    xs = [r[0] for r in rows]
    if not xs or tokens < xs[0] or tokens > xs[-1]:
        return None
    return float(np.interp(tokens, xs, [r[1] for r in rows]))


class TablePerfModel:
    """Measured times where a table covers the point, the fallback model elsewhere."""

    def __init__(self, tables: Iterable[MeasuredPoint], fallback: PerfModel) -> None:
        self.fallback = fallback
        grid: dict[tuple[str, str, int, int, str], dict[int, list[tuple[int, float]]]] = {}
        for p in tables:
            grid.setdefault((p.model, p.device, p.tp, p.pp, p.phase), {}).setdefault(p.batch, []).append(
                (p.tokens, p.time_ms))
        self._grid = grid

    def lookup(self, shape: ReplicaShape, phase: str, batch: int, tokens: int) -> float | None:
        """Interpolated measured time, or None when the table does not cover the point."""
        if shape.offload:
            return None
        by_batch = self._grid.get((shape.model.id, shape.device.id, shape.tp, shape.pp, phase))
        if not by_batch:
            return None
        batches = sorted(by_batch)
        if batch < batches[0] or batch > batches[-1]:
            return None
        lo = max(b for b in batches if b <= batch)
        hi = min(b for b in batches if b >= batch)
        t_lo = _interp_tokens(by_batch[lo], tokens)
        t_hi = _interp_tokens(by_batch[hi], tokens)
        if t_lo is None or t_hi is None:
            return None
        if hi == lo:
            return t_lo
        w = (batch - lo) / (hi - lo)
        return (1 - w) * t_lo + w * t_hi

    def prefill_ms(self, shape: ReplicaShape, batch: int, prompt_tokens: int) -> float:
        """Measured prefill time when covered, else the fallback's."""
        check_shape(shape)
        check_counts(batch, prompt_tokens, "prompt_tokens")
        t = self.lookup(shape, "prefill", batch, prompt_tokens)
        return t if t is not None else self.fallback.prefill_ms(shape, batch, prompt_tokens)

    def decode_step_ms(self, shape: ReplicaShape, batch: int, context_tokens: int) -> float:
        """Measured decode step time when covered, else the fallback's."""
        check_shape(shape)
        check_counts(batch, context_tokens, "context_tokens")
        t = self.lookup(shape, "decode", batch, context_tokens)
        return t if t is not None else self.fallback.decode_step_ms(shape, batch, context_tokens)

    def memory(self, shape: ReplicaShape) -> MemoryFit:
        """Memory is always the fallback's (tables hold times only)."""
        return self.fallback.memory(shape)

