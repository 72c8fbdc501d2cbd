r"""A lower bound on one service's cost at once, from its columns alone.

Dropping every row but cover and capacity (and the integrality of n) leaves, per service, one LP in which each
bucket b independently rides its cheapest way: a unified column c at π_c·λ_b/(h·cap_{c,b}), or a prefill column
plus a decode column at the sum of theirs. The sum over buckets bounds the service's cost in any plan (prices
and churn are never negative). So does the price of its least replicas: max(min_s, 1) serving replicas (1 when
it has traffic) at the cheapest serving column's price. The larger of the two is a bound the solvers can start
from before they prove a better one.
"""

from __future__ import annotations

import math

import numpy as np

from planner.solve.problem import Problem
from planner.solve.table import DECODE, PREFILL, UNIFIED

_INF = math.inf


def bucket_floor(problem: Problem, service: int, mask: np.ndarray | None = None) -> float:
    """Service ``service``'s (index in problem.demands) bucket-by-bucket LP bound over the columns ``mask`` (all
    by default); inf where a bucket has no column that can serve it."""
    t = problem.table
    cols = t.by_service[service]
    live = t.rates[service] > 0
    usable = np.ones(len(cols), dtype=bool) if mask is None else mask[cols]
    serving = usable & (t.role[cols] != PREFILL)
    least = max(problem.demands[service].min_replicas, 1 if live.any() else 0)
    replicas = least * float(t.price[cols][serving].min()) if serving.any() else (_INF if least else 0.0)
    if not live.any():
        return replicas
    caps = t.caps[cols][:, live]
    with np.errstate(divide="ignore"):
        unit = np.where(caps > 0, t.price[cols, None] * t.rates[service, live] / np.where(caps > 0, caps, 1.0), _INF)
    if mask is not None:
        unit = np.where(mask[cols, None], unit, _INF)
    unit = unit / problem.headroom
    role = t.role[cols]

    def cheapest(which: np.ndarray) -> np.ndarray:
        return np.where(which[:, None], unit, _INF).min(axis=0) if which.any() else np.full(unit.shape[1], _INF)

    per_bucket = np.minimum(cheapest(role == UNIFIED), cheapest(role == PREFILL) + cheapest(role == DECODE))
    return max(float(per_bucket.sum()), replicas)


def fleet_floor(problem: Problem) -> float | None:
    """The sum of every service's ``bucket_floor``: a bound on the fleet's cost, each service over its own
    columns with the shared rows (pools, power) dropped. None where the objective is not a sum of replica
    prices over services (node billing, tiers) or a service has no column for a bucket with traffic."""
    if problem.tiers is not None or any(p.billing != "device" for p in problem.pools):
        return None
    total = sum(bucket_floor(problem, i) for i in range(len(problem.demands)))
    return total if math.isfinite(total) else None
