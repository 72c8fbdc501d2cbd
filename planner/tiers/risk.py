r"""Which spot losses a service must survive, and the risk a plan leaves.

A spot pool's interruption probability q is stated per month (as AWS's Spot Instance Advisor states its
frequency of interruption). Reclaimed capacity stays lost until the controller has planned around it and its
replacements serve: the recovery window of w hours (``planner.spot_recovery_hours``). With a constant hazard the
pool is reclaimed within one window with probability q_w = 1 − (1 − q)^(w/730) (``window_probability``),
independently of the other spot pools (two spot pools of one device in one zone are not independent: make them
one pool, or state a higher q).

Every service on spot survives the loss of any one of its spot pools (N−1 over spot domains); a service with
risk target ε that may use spot pools K survives every loss of at most κ of them, κ ≥ 1 the least with

    P(more than κ of K are reclaimed in one window) ≤ ε      (the Poisson-binomial tail, ``tail``)

Surviving a set of lost pools implies surviving each of its subsets (fewer replicas lost, the same recourse
still routes), so the losses to plan for are the κ-subsets of K (all of K when |K| ≤ κ). Once planned, the
risk the plan leaves is over the pools it uses, U ⊆ K: P(the pools reclaimed within U in one window are in no
covered loss) (``residual``), at most ε by construction.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations

# A service may be asked to survive at most this many losses: beyond, its spot pools are too many or too
# likely reclaimed together for the target, and planning says so.
MAX_LOSSES = 64


class SpotRiskError(ValueError):
    """A service's spot pools cannot meet its risk target with a manageable set of losses."""


def tail(probabilities: Sequence[float], k: int) -> float:
    """P(more than k of independent events with these probabilities happen)."""
    dist = [1.0]  # dist[j]: P(exactly j so far)
    for q in probabilities:
        nxt = [0.0] * (len(dist) + 1)
        for j, pj in enumerate(dist):
            nxt[j] += pj * (1.0 - q)
            nxt[j + 1] += pj * q
        dist = nxt
    return max(0.0, 1.0 - sum(dist[: k + 1]))


HOURS_PER_MONTH = 730.0


def window_probability(per_month: float, window_hours: float) -> float:
    """The probability of a reclaim within one window, from its probability per month (constant hazard)."""
    if per_month >= 1.0:
        return 1.0
    return float(1.0 - (1.0 - per_month) ** (window_hours / HOURS_PER_MONTH))


def losses_to_cover(probabilities: Mapping[str, float], risk: float) -> list[tuple[str, ...]]:
    """The sets of spot pools a service must survive losing in one window (see module); [] without spot pools."""
    pools = sorted(probabilities)
    if not pools:
        return []
    qs = [probabilities[p] for p in pools]
    kappa = next(k for k in range(1, len(pools) + 1) if k == len(pools) or tail(qs, k) <= risk)
    if kappa >= len(pools):
        return [tuple(pools)]
    count = math.comb(len(pools), kappa)
    if count > MAX_LOSSES:
        raise SpotRiskError(f"surviving any {kappa} of {len(pools)} spot pools takes {count} loss cases "
                            f"(more than {MAX_LOSSES})")
    return list(combinations(pools, kappa))


def residual(probabilities: Mapping[str, float], used: Iterable[str], covered: Iterable[Iterable[str]]) -> float:
    """P(the reclaimed pools among ``used`` form a set no covered loss contains)."""
    used = sorted(set(used))
    covers = [frozenset(c) for c in covered]
    if len(used) > 16:  # the covered losses are the κ-subsets: the tail over the used pools
        kappa = max((len(c) for c in covers), default=0)
        return tail([probabilities[p] for p in used], kappa)
    out = 0.0
    for mask in range(1, 1 << len(used)):
        lost = frozenset(p for i, p in enumerate(used) if mask >> i & 1)
        if any(lost <= c for c in covers):
            continue
        out += math.prod(probabilities[p] if p in lost else 1.0 - probabilities[p] for p in used)
    return out
