"""Capacity: the largest request rate one replica sustains for one length bucket within a TTFT/TPOT SLO.

Roles (REFERENCE §1; the model that applies follows the role's phases and memory devices in ``planner.roles``):

* ``prefill``: an M/D/1 queue of prompts (Poisson arrivals, deterministic service ``D`` = one prefill).
  The rate is the largest ``λ`` whose waiting-time percentile fits ``TTFT_SLO − D``, from the exact
  M/D/1 waiting-time distribution ``P(W ≤ x) = (1−ρ)·Σ_{k≤x/D} [λ(kD−x)]^k/k!·e^{−λ(kD−x)}``.
  With PP the pipeline accepts a prompt every ``D/p`` while each still takes ``D``.
* ``decode``: Little's law ``B = λ·s_out·TPOT(B)``; the largest ``B`` whose step time stays within the
  TPOT SLO and whose KV cache (``B·(s_in+s_out)`` tokens) fits, so ``λ = B/(s_out·TPOT(B))``. The batch
  of a Poisson stream fluctuates (≈ Poisson around ``B``): the SLO and the KV limit are checked at the
  batch's percentile ``B + z_p·√B``. The inbound KV transfer ``λ·s_in·kv_bytes_per_token`` must fit the
  replica's NICs.
* ``unified``: prefill and decode share the replica; a prefill stops the decode batch (vLLM runs a step
  either of prompts or of decodes). Decode steps stretch to ``T(B)/(1−λD)``; a request's TPOT percentile
  adds the prefills that interrupt it (Poisson count percentile × D / s_out); a prompt waits its M/D/1
  queue plus the decode step in flight.
* ``decode+offload``: like decode, with the step time of the attention-offload model and its link check
  ``(2 + 2/G)·e·h·B·L / (α·TBT) ≤ NIC`` (α = 0.2, the share of a step in which transfers may happen).

Assumptions, stated once: each SLO's percentile applies to its own metric (TTFT and TPOT are not
combined into a joint attainment); a prefill replica serves one prompt at a time (no prompt batching,
conservative for short prompts); the M/D/1 slack is capped at 12 prefill times, where the exact series is
still precise (conservative beyond); decode with PP runs one batch through the stages (no micro-batches).

Pure functions of values; :func:`capacity_table` evaluates all buckets of one configuration at once
(vectorised; results memoised per (model, shape, role, buckets, SLO)); :func:`capacity_tables` does so for
several SLOs at once, rows SLO by SLO, sharing what does not depend on the SLO's targets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from statistics import NormalDist
from typing import NamedTuple, cast

import numpy as np
import numpy.typing as npt

from planner.model.collectives import NET_EFFICIENCY, offload_bytes_per_token
from planner.model.perf import PerfModel, ReplicaShape, check_shape
from planner.model.roofline import RooflinePerfModel
from planner.roles import ROLES
from planner.schema import SLO, LengthBucket, Role

FloatArray = npt.NDArray[np.float64]

OFFLOAD_ALPHA = 0.2  # Lamina: share of a step during which the KV/attention transfers may run
MAX_BATCH = 1024  # engine ceiling on concurrent sequences (vLLM max_num_seqs is 256 by default; be generous)
MD1_SERIES_MAX = 30.0  # md1_wait_cdf evaluates at most this many service times (beyond: its value there)
MD1_MAX_SLACK = 12.0  # the alternating exact series loses precision beyond ~12 service times: cap (conservative)


class Capacity(NamedTuple):
    """Largest sustainable request rate of one replica for one bucket, and what limits it (a named tuple: a
    fleet's candidates hold hundreds of thousands of them)."""

    rps: float
    limited_by: str
    batch: float
    ttft_ms: float
    tpot_ms: float
    kv_transfer_gbps: float = 0.0


# ---------------------------------------------------------------------------------------------- queueing


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


def _md1_cdf_loads(loads: FloatArray, x: float) -> FloatArray:
    """P(W ≤ x) for a vector of loads at one ``x`` (in service times)."""
    total = np.zeros_like(loads)
    for k in range(int(math.floor(x)) + 1):
        u = loads * (k - x)
        total += u**k / math.factorial(k) * np.exp(-u)
    return np.asarray(np.clip((1 - loads) * total, 0.0, 1.0), dtype=float)


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
    return np.asarray(np.where(x < 0, 0.0, table[np.minimum(np.maximum(idx, 0), len(table) - 1)]), dtype=float)


def md1_max_load(slack_over_service: float, percentile: float) -> float:
    """Largest M/D/1 utilisation whose ``percentile`` waiting time is at most ``slack`` service times."""
    return float(md1_max_load_array(np.array([slack_over_service]), percentile)[0])


@lru_cache(maxsize=256)
def _z(percentile: float) -> float:
    return NormalDist().inv_cdf(min(max(percentile / 100.0, 0.5), 0.9999))


def poisson_quantile(mean: FloatArray | float, percentile: float) -> FloatArray:
    """Normal approximation (with continuity) of a Poisson count's percentile; never below the mean."""
    m = np.maximum(np.asarray(mean, dtype=float), 0.0)
    return np.asarray(m + _z(percentile) * np.sqrt(m), dtype=float)


# ---------------------------------------------------------------------------------------------- helpers


def _prefill_ms(perf: PerfModel, shape: ReplicaShape, prompt: FloatArray) -> FloatArray:
    if isinstance(perf, RooflinePerfModel):
        return np.asarray(perf.prefill_ms_array(shape, 1.0, prompt), dtype=float)
    return np.array([perf.prefill_ms(shape, 1, int(p)) for p in prompt], dtype=float)


def _decode_ms(perf: PerfModel, shape: ReplicaShape, batch: FloatArray, ctx: FloatArray) -> FloatArray:
    """Decode step times for a batch grid (columns) × contexts (rows)."""
    if isinstance(perf, RooflinePerfModel):
        return np.asarray(perf.decode_step_ms_array(shape, batch[None, :], ctx[:, None]), dtype=float)
    return np.array([[perf.decode_step_ms(shape, max(1, int(round(b))), int(c)) for b in batch] for c in ctx],
                    dtype=float)


_BATCH_GRID = np.unique(np.round(np.geomspace(1, MAX_BATCH, 72))).astype(float)


def _interp_rows(grid: FloatArray, table: FloatArray, b: FloatArray) -> FloatArray:
    """Row-wise linear interpolation of ``table[i, :]`` (over ``grid``) at ``b[i]``."""
    idx = np.minimum(np.maximum(np.searchsorted(grid, b) - 1, 0), len(grid) - 2)
    x0, x1 = grid[idx], grid[idx + 1]
    rows = np.arange(len(b))
    y0, y1 = table[rows, idx], table[rows, idx + 1]
    w = np.maximum((b - x0) / (x1 - x0), 0.0)
    return np.asarray(y0 + w * (y1 - y0), dtype=float)


def _largest_batch(grid: FloatArray, times: FloatArray, limit_ms: float | FloatArray, z: float) -> FloatArray:
    """Largest mean batch per row whose percentile batch ``B + z√B`` has a step time within ``limit_ms`` (one
    limit, or one per row)."""
    n = len(grid)
    ok = times <= (limit_ms[:, None] if isinstance(limit_ms, np.ndarray) else limit_ms)
    # Step time rises with the batch: the feasible points are a prefix of each row.
    count = np.where(ok.all(axis=1), n, np.where(ok.any(axis=1), (~ok).argmax(axis=1), 0))
    # (np.minimum/np.maximum rather than np.clip: the same values without its per-call cost.)
    j = np.minimum(np.maximum(count - 1, 0), n - 1)
    jn = np.minimum(np.maximum(count, 0), n - 1)
    rows = np.arange(times.shape[0])
    t0, t1 = times[rows, j], times[rows, jn]
    frac = np.where((count < n) & (t1 > t0), (limit_ms - t0) / np.where(t1 > t0, t1 - t0, 1.0), 0.0)
    bp = grid[j] + (grid[jn] - grid[j]) * np.minimum(np.maximum(frac, 0.0), 1.0)
    return np.where(count > 0, _mean_from_percentile_batch(bp, z), 0.0)


def _mean_from_percentile_batch(b_pct: float | FloatArray, z: float) -> FloatArray:
    """Invert ``b = m + z√m`` for the mean ``m``."""
    s = (-z + np.sqrt(z * z + 4 * np.maximum(b_pct, 0.0))) / 2
    return np.asarray(s * s, dtype=float)


def _pct_batch(mean: FloatArray | float, z: float) -> FloatArray:
    m = np.maximum(np.asarray(mean, dtype=float), 0.0)
    return np.asarray(m + z * np.sqrt(m), dtype=float)


# ---------------------------------------------------------------------------------------------- roles


class RowTables:
    """Capacity tables computed together: every row's rate in one array, a row's ``Capacity`` (what limits it)
    built only when asked (a large fleet has millions of rows and looks at the chosen few)."""

    def __init__(self, rps: FloatArray, build: Callable[[int, int], list[Capacity]]) -> None:
        self.rps = rps
        self._build = build

    def rates(self, lo: int, hi: int) -> tuple[float, ...]:
        """The rates of rows lo..hi (each the ``rps`` of that row's Capacity)."""
        return tuple(self.rps[lo:hi].tolist())

    def capacities(self, lo: int, hi: int) -> list[Capacity]:
        """The Capacity of rows lo..hi."""
        return self._build(lo, hi)


@dataclass(frozen=True)
class _Rows:
    """Capacity tables computed together, one row per (shape, SLO, bucket): shape by shape, SLO by SLO, bucket
    by bucket, with what each row's shape and SLO give it."""

    s_in: FloatArray
    s_out: FloatArray
    ttft_slo: FloatArray
    tpot_slo: FloatArray
    prefill_ms: FloatArray  # one prompt alone (rows of decode-only tables: unused)
    pp: FloatArray
    kv_tokens: FloatArray
    kv_bytes_per_token: FloatArray
    nic_gbps: FloatArray  # the replica's NICs for inbound KV transfers
    offload_bytes_per_token: FloatArray
    link_gbytes: FloatArray  # compute-to-memory link of an offload shape, inf elsewhere
    times: FloatArray  # decode step times over _BATCH_GRID (prefill-only tables: unused)


def _rows(perf: PerfModel, wanted: Sequence[tuple[ReplicaShape, Sequence[SLO]]], buckets: Sequence[LengthBucket],
          prefill: bool, decode: bool) -> _Rows:
    """The rows of several shapes' tables for their SLOs (each shape's step times computed once)."""
    s_in1 = np.array([b.input_tokens for b in buckets], dtype=float)
    s_out1 = np.array([b.output_tokens for b in buckets], dtype=float)
    nb = len(buckets)
    ks = np.array([len(slos) for _, slos in wanted])
    per_table = np.repeat(np.arange(len(wanted)), ks)  # each (shape, SLO) table's shape
    per_row = np.repeat(per_table, nb)  # each row's shape

    def scalar(values: Sequence[float]) -> FloatArray:
        return np.asarray(np.array(values, dtype=float)[per_row], dtype=float)

    def links(shape: ReplicaShape) -> float:
        if not shape.offload:
            return math.inf
        assert shape.memory_device is not None
        return min(shape.devices * shape.device.nic_gbitps,
                   shape.memory_devices * shape.memory_device.nic_gbitps) / 8 * NET_EFFICIENCY

    shapes = [shape for shape, _ in wanted]
    slos = [x for _, group in wanted for x in group]
    grid = len(_BATCH_GRID)
    d = (np.stack([_prefill_ms(perf, sh, s_in1) for sh in shapes])[per_table].reshape(-1) if prefill
         else np.zeros(len(per_row)))
    times = (np.stack([_decode_ms(perf, sh, _BATCH_GRID, s_in1 + s_out1 / 2) for sh in shapes])[per_table]
             .reshape(-1, grid) if decode else np.zeros((len(per_row), grid)))
    return _Rows(
        s_in=np.tile(s_in1, len(per_table)), s_out=np.tile(s_out1, len(per_table)),
        ttft_slo=np.repeat(np.array([x.ttft_ms for x in slos], dtype=float), nb),
        tpot_slo=np.repeat(np.array([x.tpot_ms for x in slos], dtype=float), nb),
        prefill_ms=d, pp=scalar([float(sh.pp) for sh in shapes]),
        kv_tokens=scalar([float(perf.memory(sh).kv_capacity_tokens) for sh in shapes]),
        kv_bytes_per_token=scalar([float(sh.model.kv_bytes_per_token) for sh in shapes]),
        nic_gbps=scalar([sh.devices * sh.device.nic_gbitps * NET_EFFICIENCY for sh in shapes]),
        offload_bytes_per_token=scalar([offload_bytes_per_token(sh.model) for sh in shapes]),
        link_gbytes=scalar([links(sh) for sh in shapes]), times=times)


def _prefill_caps(r: _Rows, percentile: float) -> RowTables:
    d, ttft = r.prefill_ms, r.ttft_slo
    svc = d / r.pp  # a pipeline takes a new prompt every stage time
    load = md1_max_load_array((ttft - d) / svc, percentile)
    rps = np.where(d < ttft, load / svc * 1000.0, 0.0)
    ok = d < ttft

    def build(lo: int, hi: int) -> list[Capacity]:
        return [Capacity(x, "ttft" if fine else "prefill alone exceeds the TTFT SLO", 1, di, 0.0)
                for x, fine, di in zip(rps[lo:hi].tolist(), ok[lo:hi].tolist(), d[lo:hi].tolist(), strict=True)]

    return RowTables(rps, build)


def _decode_caps(r: _Rows, percentile: float, with_transfer: bool) -> RowTables:
    z = _z(percentile)
    s_in, s_out, times, kv_tokens = r.s_in, r.s_out, r.times, r.kv_tokens
    b_tpot = _largest_batch(_BATCH_GRID, times, r.tpot_slo, z)
    b_kv = _mean_from_percentile_batch(kv_tokens / (s_in + s_out), z)
    batch = np.minimum(b_tpot, b_kv)
    limited = np.where(b_kv < b_tpot, "kv-capacity", "tpot")
    t_step = _interp_rows(_BATCH_GRID, times, np.maximum(batch, 1.0))
    rps = np.where(batch > 0, batch / (s_out * t_step / 1000.0), 0.0)
    kv_gbps = np.zeros(len(rps))
    if with_transfer:
        bits_per_request = s_in * r.kv_bytes_per_token * 8 / 1e9
        cap_nic = r.nic_gbps / bits_per_request
        limited = np.where(cap_nic < rps, "kv-transfer", limited)
        rps = np.minimum(rps, cap_nic)
        kv_gbps = rps * bits_per_request
    if np.isfinite(r.link_gbytes).any():
        # Lamina link check (offload shapes): per-step traffic over the share α of the step it may use.
        need = r.offload_bytes_per_token * _pct_batch(batch, z) / (OFFLOAD_ALPHA * t_step / 1000.0) / 1e9
        over = need > r.link_gbytes
        scale = np.where(over, r.link_gbytes / np.maximum(need, 1e-12), 1.0)
        limited = np.where(over, "offload-link", limited)
        rps = rps * scale
    t0s, lims = times[:, 0].copy(), r.tpot_slo

    def build(lo: int, hi: int) -> list[Capacity]:
        return [Capacity(0.0, "decode step alone exceeds the TPOT SLO" if kv > 0 else "no KV capacity", 0, 0.0, t0)
                if b <= 0 or t > lim else Capacity(x, why, b, 0.0, t, g)
                for x, why, b, t, g, t0, lim, kv in zip(
                    rps[lo:hi].tolist(), limited[lo:hi].tolist(), batch[lo:hi].tolist(), t_step[lo:hi].tolist(),
                    kv_gbps[lo:hi].tolist(), t0s[lo:hi].tolist(), lims[lo:hi].tolist(), kv_tokens[lo:hi].tolist(),
                    strict=True)]

    return RowTables(np.where((batch <= 0) | (t_step > lims), 0.0, rps), build)


_UNIFIED_GRID = np.geomspace(0.02, MAX_BATCH, 96)  # ≤ 3% from a 400-point grid, median 0.05%


def _unified_caps(r: _Rows, percentile: float) -> RowTables:
    """Parametrise by the mean decode batch B: Little's law with prefill stalls gives the rate explicitly,
    ``λ = B / (s_out·T(B) + B·D)``, so every constraint is checked on a grid of B at once (every row at once)."""
    z = _z(percentile)
    s_in, s_out, times = r.s_in[:, None], r.s_out[:, None], r.times
    d = r.prefill_ms[:, None]
    kv_tokens = r.kv_tokens[:, None]
    grid = _UNIFIED_GRID
    step_grid = np.maximum(grid, 1.0)
    t_mean = _interp_grid(times, step_grid)
    b_pct = _pct_batch(grid, z)[None, :]
    t_pct = _interp_grid(times, np.maximum(b_pct[0], 1.0))
    lam = grid[None, :] * 1000.0 / (s_out * t_mean + grid[None, :] * d)  # req/s
    rho = lam * d / 1000.0
    t_eff = t_mean / np.maximum(1 - rho, 1e-9)
    interrupts = lam * s_out * t_eff / 1000.0
    tpot = t_pct + poisson_quantile(interrupts, percentile) * d / s_out
    ttft = d + t_pct
    slack = (r.ttft_slo[:, None] - ttft) / d
    m_ttft = md1_max_load_array(slack, percentile) - rho
    m_tpot = (r.tpot_slo[:, None] - tpot) / r.tpot_slo[:, None]
    m_kv = (kv_tokens - b_pct * (s_in + s_out)) / np.maximum(kv_tokens, 1.0)
    margins = np.stack([m_ttft, m_tpot, m_kv])
    margin = margins.min(axis=0)
    # λ(B) rises with B and the margins fall: take the last point before the first infeasible one and
    # interpolate the binding margin's zero crossing to the next grid point.
    n = len(grid)
    infeasible = margin < 0
    first_bad = np.where(infeasible.any(axis=1), infeasible.argmax(axis=1), n)
    j = first_bad - 1
    rows = np.arange(len(j))
    jc = np.minimum(np.maximum(j, 0), n - 1)
    jn = np.minimum(np.maximum(j + 1, 0), n - 1)
    m0, m1 = margin[rows, jc], margin[rows, jn]
    w = np.where((j + 1 < n) & (m0 > m1), m0 / np.where(m0 > m1, m0 - m1, 1.0), 0.0)
    lam_star = lam[rows, jc] + w * (lam[rows, jn] - lam[rows, jc])
    b_star = grid[jc] + w * (grid[jn] - grid[jc])
    names = ("ttft", "tpot", "kv-capacity")
    first = margins[:, :, 0].argmin(axis=0)  # what binds at the smallest batch, and past the last point
    after = margins[:, rows, jn].argmin(axis=0)
    d0s, t0s, ttft_j, tpot_j = d[:, 0], times[:, 0].copy(), ttft[rows, jc], tpot[rows, jc]

    def build(lo: int, hi: int) -> list[Capacity]:
        return [Capacity(0.0, names[f], 0, d0, t0) if jj < 0
                else Capacity(lam_i, names[a] if jj + 1 < n else "max-batch", b_i, ttft_i, tpot_i)
                for jj, f, a, d0, t0, lam_i, b_i, ttft_i, tpot_i in zip(
                    j[lo:hi].tolist(), first[lo:hi].tolist(), after[lo:hi].tolist(), d0s[lo:hi].tolist(),
                    t0s[lo:hi].tolist(), lam_star[lo:hi].tolist(), b_star[lo:hi].tolist(), ttft_j[lo:hi].tolist(),
                    tpot_j[lo:hi].tolist(), strict=True)]

    return RowTables(np.where(j < 0, 0.0, lam_star), build)


def _interp_grid(times: FloatArray, b: FloatArray) -> FloatArray:
    """Step times (rows: buckets, over ``_BATCH_GRID``) at the batches ``b`` (same for every row)."""
    idx = np.minimum(np.maximum(np.searchsorted(_BATCH_GRID, b) - 1, 0), len(_BATCH_GRID) - 2)
    x0, x1 = _BATCH_GRID[idx], _BATCH_GRID[idx + 1]
    w = np.maximum((b - x0) / (x1 - x0), 0.0)
    return np.asarray(times[:, idx] + w * (times[:, idx + 1] - times[:, idx]), dtype=float)


# ---------------------------------------------------------------------------------------------- public


def capacity_table(perf: PerfModel, shape: ReplicaShape, role: Role, buckets: Sequence[LengthBucket],
                   slo: SLO) -> list[Capacity]:
    """Capacity of one replica for each bucket (all buckets evaluated together; results memoised)."""
    try:
        key = cast(Hashable, perf)
        return list(_capacity_table_cached(key, shape, role, tuple(buckets), slo))
    except TypeError:  # an unhashable performance model: compute without the memo
        return capacity_tables(perf, shape, role, buckets, [slo])[0]


@lru_cache(maxsize=200_000)
def _capacity_table_cached(perf: Hashable, shape: ReplicaShape, role: Role, buckets: tuple[LengthBucket, ...],
                           slo: SLO) -> tuple[Capacity, ...]:
    assert isinstance(perf, PerfModel)
    return tuple(capacity_tables(perf, shape, role, buckets, [slo])[0])


def capacity_tables(perf: PerfModel, shape: ReplicaShape, role: Role, buckets: Sequence[LengthBucket],
                    slos: Sequence[SLO]) -> list[list[Capacity]]:
    """``capacity_table`` for several SLOs at once (one list per SLO, in order; not memoised)."""
    return [t.capacities() for t in shapes_capacity_tables(perf, role, buckets, [(shape, slos)])[0]]


@dataclass(frozen=True)
class TableRef:
    """One capacity table inside rows computed together."""

    rows: RowTables
    lo: int
    hi: int

    def rates(self) -> tuple[float, ...]:
        """Its rate per bucket."""
        return self.rows.rates(self.lo, self.hi)

    def capacities(self) -> list[Capacity]:
        """Its Capacity per bucket."""
        return self.rows.capacities(self.lo, self.hi)


def shapes_capacity_tables(perf: PerfModel, role: Role, buckets: Sequence[LengthBucket],
                           wanted: Sequence[tuple[ReplicaShape, Sequence[SLO]]]) -> list[list[TableRef]]:
    """``capacity_table`` of several shapes, each for several SLOs (per shape, one table per SLO, in order; not
    memoised): all of them in one pass of array arithmetic per SLO percentile."""
    spec = ROLES[role]
    nb = len(buckets)
    none = RowTables(np.zeros(0), lambda lo, hi: [])
    out: list[list[TableRef]] = [[TableRef(none, 0, 0) for _ in slos] for _, slos in wanted]
    if not buckets:
        return out
    live: list[tuple[int, int, ReplicaShape, SLO]] = []  # (shape's index, SLO's index, shape, SLO)
    for i, (shape, slos) in enumerate(wanted):
        check_shape(shape)
        if spec.memory_devices and not shape.offload:
            raise ValueError(f"memory_devices: the {role.value} role needs memory devices")
        if not spec.memory_devices and shape.offload:
            raise ValueError(f"memory_devices: role {role.value} does not use memory devices")
        fit = perf.memory(shape)
        if not fit.fits:
            why = "memory: " + fit.reason
            unfit = RowTables(np.zeros(nb), lambda lo, hi, why=why: [  # type: ignore[misc]
                Capacity(0.0, why, 0, 0.0, 0.0) for _ in range(hi - lo)])
            out[i] = [TableRef(unfit, 0, nb) for _ in slos]
            continue
        live.extend((i, j, shape, slo) for j, slo in enumerate(slos))
    for pct in dict.fromkeys(x[3].percentile for x in live):
        by_shape: dict[int, list[tuple[int, int, ReplicaShape, SLO]]] = {}
        for x in live:
            if x[3].percentile == pct:
                by_shape.setdefault(x[0], []).append(x)
        group = list(by_shape.values())
        rows = _rows(perf, [(g[0][2], [x[3] for x in g]) for g in group], buckets, spec.prefill, spec.decode)
        if not spec.decode:
            tables = _prefill_caps(rows, pct)
        elif not spec.prefill:  # a decode replica receives each request's KV cache over its NICs
            tables = _decode_caps(rows, pct, with_transfer=True)
        else:
            tables = _unified_caps(rows, pct)
        at = 0
        for g in group:
            for i, j, _, _ in g:
                out[i][j] = TableRef(tables, at, at + nb)
                at += nb
    return out


def replica_capacity(perf: PerfModel, shape: ReplicaShape, role: Role, bucket: LengthBucket,
                     slo: SLO) -> Capacity:
    """Largest request rate one replica sustains for requests of ``bucket`` within ``slo``."""
    return capacity_table(perf, shape, role, [bucket], slo)[0]


def replica_power_watts(shape: ReplicaShape, role: Role) -> tuple[float, float]:
    """(idle, active) watts of one replica from the catalog's per-device idle/prefill/decode draw."""
    dev = shape.device
    n = shape.devices
    idle = n * dev.idle_watts
    phase = ROLES[role].power_phase
    if phase == "prefill":
        active = n * dev.prefill_power_watts
    elif phase == "unified":
        # Mostly decoding, with prefill bursts: weight toward decode draw.
        active = n * (0.7 * dev.decode_power_watts + 0.3 * dev.prefill_power_watts)
    else:
        active = n * dev.decode_power_watts
    if shape.offload:
        assert shape.memory_device is not None
        idle += shape.memory_devices * shape.memory_device.idle_watts
        active += shape.memory_devices * shape.memory_device.decode_power_watts
    return idle, active
