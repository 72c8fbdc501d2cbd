"""Prometheus histograms as the planner reads them: shares under a target, and a length mix from the prompt
and generation histograms.

A Prometheus histogram is cumulative counts ``c_i`` of observations ``≤ le_i`` (the last ``le`` is +Inf).
The share under a target ``x`` interpolates linearly inside the bucket that holds ``x``, as
``histogram_quantile`` does in the other direction. vLLM exports prompt and generation lengths as two
separate histograms, so their joint mix is taken as independent: bucket ``(i, j)`` gets share
``p_i · g_j`` and lengths at the middle of each bucket's range (the last, open bucket at twice its lower
edge). That loses the correlation of long prompts with short answers a trace would show; with a trace,
bucket the trace instead (``planner.io.traces.bucket``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from planner.schema import LengthBucket


def share_below(le: Sequence[float], cumulative: Sequence[float], target: float) -> float | None:
    """Share of observations ≤ ``target`` from cumulative bucket counts (None with no observations)."""
    if len(le) != len(cumulative) or not le:
        raise ValueError("le: needs one cumulative count per bucket edge")
    total = float(cumulative[-1])
    if total <= 0:
        return None
    prev_edge, prev_count = 0.0, 0.0
    for edge, count in zip(le, cumulative, strict=True):
        if target <= edge:
            if math.isinf(edge):
                return prev_count / total  # beyond the last finite edge nothing is known: count none of it
            width = edge - prev_edge
            inside = (target - prev_edge) / width if width > 0 else 1.0
            return (prev_count + max(0.0, min(1.0, inside)) * (float(count) - prev_count)) / total
        prev_edge, prev_count = float(edge), float(count)
    return 1.0


def _cells(le: Sequence[float], cumulative: Sequence[float]) -> list[tuple[int, float]]:
    """(representative length, share) per non-empty bucket."""
    total = float(cumulative[-1]) if cumulative else 0.0
    out: list[tuple[int, float]] = []
    prev_edge, prev_count = 0.0, 0.0
    for edge, count in zip(le, cumulative, strict=True):
        n = float(count) - prev_count
        if n > 0 and total > 0:
            mid = 2.0 * prev_edge if math.isinf(edge) else 0.5 * (prev_edge + float(edge))
            out.append((max(1, math.ceil(mid)), n / total))
        if not math.isinf(edge):
            prev_edge = float(edge)
        prev_count = float(count)
    return out


def length_mix(prompt_le: Sequence[float], prompt_cumulative: Sequence[float], output_le: Sequence[float],
               output_cumulative: Sequence[float], min_share: float = 0.001) -> list[LengthBucket]:
    """Length buckets from the prompt and generation histograms (taken as independent); cells under
    ``min_share`` are dropped and the rest renormalised. Empty when either histogram has no observations."""
    prompts = _cells(prompt_le, prompt_cumulative)
    outputs = _cells(output_le, output_cumulative)
    cells = [(i, o, ps * os_) for i, ps in prompts for o, os_ in outputs if ps * os_ >= min_share]
    total = sum(share for _, _, share in cells)
    if total <= 0:
        return []
    return [LengthBucket(input_tokens=i, output_tokens=o, share=share / total) for i, o, share in cells]
