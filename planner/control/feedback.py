r"""SLO feedback: a per-service margin on the rate the loop plans for, moved by the attainment it observes.

The capacity model sizes replicas for Poisson arrivals; real traffic comes in bursts (the Azure code trace
sends dozens of prompts within a second), which queue longer than the model says, more so on the few
replicas of a night plan. The loop therefore watches each service's observed shares of requests within
the TTFT and the TPOT target (``TrafficSource.attainment``) over the last period and keeps a margin
m_s ≥ 1 on its planned rate:

    w = min(share_TTFT, share_TPOT),  target = p + g   (p the SLO percentile as a share, g the guard)
    short = (target − w) / (1 − p)                     (the miss, in units of the miss the SLO allows)
    short > 0:            m ← min(m_max, m · (1 + k · min(short, 2)))      raise at once
    w > target + g:       m ← max(1, m · d)                                 decay slowly
    fewer than n_min requests observed: m unchanged

The joint share (both targets met) is at most the worse one, hence the guard.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.observe.source import Attainment


@dataclass(frozen=True)
class Feedback:
    """The margin's rule (see the module docstring)."""

    guard: float = 0.03
    gain: float = 0.5
    decay: float = 0.97
    max_margin: float = 4.0
    min_requests: int = 40


def update_margin(margin: float, observed: Attainment, percentile: float, rule: Feedback) -> float:
    """The next margin of a service from what it observed over the last period."""
    worst = observed.worst
    if worst is None or observed.requests < rule.min_requests:
        return margin
    p = percentile / 100.0
    target = min(p + rule.guard, 0.999)
    short = (target - worst) / max(1.0 - p, 1e-3)
    if short > 0:
        return min(rule.max_margin, margin * (1.0 + rule.gain * min(short, 2.0)))
    if worst > target + rule.guard:
        return max(1.0, margin * rule.decay)
    return margin
