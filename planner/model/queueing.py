"""Queueing math behind the capacity model: the M/D/1 waiting time, Poisson percentiles, and the per-target
percentile a joint SLO asks for.

* M/D/1 (Poisson arrivals, deterministic service ``D``): exact waiting-time distribution
  ``P(W ≤ x) = (1−ρ)·Σ_{k≤x/D} [λ(kD−x)]^k/k!·e^{−λ(kD−x)}`` (Erlang's series, ``x`` in service times), and
  its inverse: the largest utilisation whose percentile wait fits a slack (a cached table, never optimistic).
* A batch of a Poisson stream fluctuates (≈ Poisson around its mean ``B``): its percentile is ``B + z_p·√B``.
* A request meets its SLO when it meets *both* its TTFT and its TPOT target (the replay counts it so, and
  DistServe defines attainment so). Checking each target at ``p_t = 100 − (100 − p)/2`` bounds the share that
  misses either by ``100 − p`` (union bound), whatever the correlation between the two.

Pure functions of numbers.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

MD1_SERIES_MAX = 30.0  # md1_wait_cdf evaluates at most this many service times (beyond: its value there)
MD1_MAX_SLACK = 12.0  # the alternating exact series loses precision beyond ~12 service times: cap (conservative)


def target_percentile(slo_percentile: float, targets: int = 2) -> float:
    """The percentile each of ``targets`` latency targets must reach so that at least ``slo_percentile`` % of
    requests meet all of them (union bound): ``100 − (100 − p)/targets``."""
    return 100.0 - (100.0 - slo_percentile) / max(targets, 1)


def md1_wait_cdf(load: float, wait_over_service: float) -> float:
    """P(W ≤ x) of an M/D/1 queue at utilisation ``load`` with ``x`` in service times (exact series)."""
    if load <= 0:
        return 1.0
    if load >= 1 or wait_over_service < 0:
        return 0.0
    x = min(wait_over_service, MD1_SERIES_MAX)
    total = 0.0
    for k in range(int(math.floor(x)) + 1):
        u = load * (k - x)
        total += u**k / math.factorial(k) * math.exp(-u)
    return min(1.0, max(0.0, (1 - load) * total))


# Slack grid of the cached table: fine where service times are comparable to the slack, coarse beyond.
_SLACK_GRID = np.unique(np.concatenate([np.arange(0.0, 4.0, 0.01), np.arange(4.0, MD1_MAX_SLACK + 1e-9, 0.1)]))


def _md1_cdf_grid(loads: FloatArray, xs: FloatArray) -> FloatArray:
    """P(W ≤ x_i) at load_i for paired vectors (the exact series, terms k ≤ x masked per row)."""
    k = np.arange(int(math.floor(xs.max())) + 1, dtype=float)[None, :]
    u = loads[:, None] * (k - xs[:, None])
    logfact = np.array([math.lgamma(v + 1) for v in k[0]])[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(u == 0, np.where(k == 0, 1.0, 0.0),
                       np.exp(k * np.log(np.abs(np.where(u == 0, 1.0, u))) - logfact[:, :] - u))
    terms = np.where(u < 0, np.where(k % 2 == 1, -mag, mag), mag)
    terms = np.where(k <= np.floor(xs)[:, None], terms, 0.0)
    return np.asarray(np.clip((1 - loads) * terms.sum(axis=1), 0.0, 1.0), dtype=float)


@lru_cache(maxsize=64)
def _md1_load_table(pct_milli: int) -> FloatArray:
    """Largest load per slack on ``_SLACK_GRID`` (bisection on all grid points at once)."""
    target = pct_milli / 1000.0 / 100.0
    lo, hi = np.zeros(len(_SLACK_GRID)), np.ones(len(_SLACK_GRID))
    for _ in range(40):
        mid = (lo + hi) / 2
        ok = _md1_cdf_grid(mid, _SLACK_GRID) >= target
        lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
    # At zero slack P(W ≤ 0) = 1 − ρ exactly.
    lo = np.where(_SLACK_GRID <= 0, 1.0 - target, lo)
    return np.asarray(np.maximum.accumulate(lo), dtype=float)


def md1_max_load_array(slack_over_service: FloatArray, percentile: float) -> FloatArray:
    """Vectorised :func:`md1_max_load` (slack rounded down to the table's grid: never optimistic)."""
    table = _md1_load_table(int(round(percentile * 1000)))
    x = np.asarray(slack_over_service, dtype=float)
    idx = np.searchsorted(_SLACK_GRID, np.minimum(x, MD1_MAX_SLACK), side="right") - 1
    return np.asarray(np.where(x < 0, 0.0, table[np.clip(idx, 0, len(table) - 1)]), dtype=float)


def md1_max_load(slack_over_service: float, percentile: float) -> float:
    """Largest M/D/1 utilisation whose ``percentile`` waiting time is at most ``slack`` service times."""
    return float(md1_max_load_array(np.array([slack_over_service]), percentile)[0])


@lru_cache(maxsize=256)
def z_score(percentile: float) -> float:
    """The standard normal quantile of a percentile (clamped to 50–99.99)."""
    return NormalDist().inv_cdf(min(max(percentile / 100.0, 0.5), 0.9999))


def poisson_quantile(mean: FloatArray | float, percentile: float) -> FloatArray:
    """Normal approximation of a Poisson count's percentile; never below the mean."""
    m = np.maximum(np.asarray(mean, dtype=float), 0.0)
    return np.asarray(m + z_score(percentile) * np.sqrt(m), dtype=float)


def interruption_quantile(mean: FloatArray | float, load: FloatArray | float, percentile: float) -> FloatArray:
    """Percentile of the prefills that interrupt one request's decode on a unified engine.

    A request's decode span is stretched by every prefill that interrupts it, and each such prefill (``D``
    long) lets ``Poisson(ρ = λD)`` more arrive: the count is a Poisson number of Galton–Watson trees, with mean
    ``m`` (given, stretch included) and variance ``m/(1−ρ)²``. Normal approximation at that variance."""
    m = np.maximum(np.asarray(mean, dtype=float), 0.0)
    rho = np.clip(np.asarray(load, dtype=float), 0.0, 0.99)
    return np.asarray(m + z_score(percentile) * np.sqrt(m) / (1.0 - rho), dtype=float)


def mean_from_percentile_batch(b_pct: float | FloatArray, z: float) -> FloatArray:
    """Invert ``b = m + z√m`` for the mean ``m``."""
    s = (-z + np.sqrt(z * z + 4 * np.maximum(b_pct, 0.0))) / 2
    return np.asarray(s * s, dtype=float)


def percentile_batch(mean: FloatArray | float, z: float) -> FloatArray:
    """``B + z√B``: the batch a Poisson-fed batch of mean ``B`` stays under at that z."""
    m = np.maximum(np.asarray(mean, dtype=float), 0.0)
    return np.asarray(m + z * np.sqrt(m), dtype=float)
