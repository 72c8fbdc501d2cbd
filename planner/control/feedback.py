r"""SLO feedback: a service's capacity per replica, corrected by the attainment it is observed to give.

The capacity model sizes a replica for Poisson arrivals of each bucket's representative lengths and mixes
buckets linearly; real traffic comes in bursts (the Azure code trace sends dozens of prompts within a
second) and some configurations hold a mix worse than the model says. The loop watches, per service and
role of its running groups, the share of the service's requests that met the target that role answers for —
TTFT for prefill groups, TPOT for decode groups, the worse of both for unified ones — over the last period,
and keeps a factor d ∈ [d_min, 1] on the capacity of every configuration of that service and role in later
plans (a configuration the loop has not run yet starts from it too):

    short  = (p − w⁺) / (1 − p)    (p the SLO percentile as a share; the miss in units of the miss the SLO
                                    allows; w⁺ = w + z·√(w(1−w)/n), so a miss a sample of n requests can show
                                    by chance does not count)
    short > 0:             d ← max(d_min, d / (1 + k · min(short, 2)))      derate at once
    w > p + g:             d ← min(1, d / r)                                 recover slowly (r < 1)
    p ≤ w ≤ p + g, or fewer than n_min requests observed: d unchanged (g the guard: a dead band)

Only a miss of the SLO itself derates: a period that meets the percentile needs no more capacity than the
model gives, and paying for more is what the static plan does.

A derated column carries less load per replica, so the next plan adds replicas or moves load elsewhere;
the correction stays with the service's traffic, not the hour, so what the loop learns at night holds by day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from planner.observe.source import Attainment
from planner.roles import ROLES
from planner.schema import Role


@dataclass(frozen=True)
class Feedback:
    """The correction's rule (see the module docstring)."""

    guard: float = 0.03
    gain: float = 0.6
    recover: float = 0.97
    min_factor: float = 0.25
    min_requests: int = 30
    z: float = 1.64  # one-sided 95%: derate only on a miss the sample shows beyond chance


def answered_share(role: Role, observed: Attainment) -> float | None:
    """The share a group of this role answers for: TTFT (prefill), TPOT (decode), the worse (unified)."""
    phases = ROLES[role].phases
    if "prefill" in phases and "decode" in phases:
        return observed.worst
    return observed.ttft if "prefill" in phases else observed.tpot


def update_factor(factor: float, role: Role, observed: Attainment, percentile: float, rule: Feedback) -> float:
    """The next capacity factor of a column from what its group showed over the last period."""
    share = answered_share(role, observed)
    if share is None or observed.requests < rule.min_requests:
        return factor
    p = percentile / 100.0
    upper = share + rule.z * math.sqrt(max(share * (1.0 - share), 1e-4) / observed.requests)
    short = (p - upper) / max(1.0 - p, 1e-3)
    if short > 0:
        return max(rule.min_factor, factor / (1.0 + rule.gain * min(short, 2.0)))
    if share > min(p + rule.guard, 0.999):
        return min(1.0, factor / rule.recover)
    return factor
