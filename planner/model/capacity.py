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
from collections.abc import Hashable, Sequence
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


def _split(caps: list[Capacity], n: int) -> list[list[Capacity]]:
    """Rows ordered SLO by SLO, ``n`` buckets each, as one list per SLO."""
    return [caps[i:i + n] for i in range(0, len(caps), n)]


def _prefill_caps(perf: PerfModel, shape: ReplicaShape, buckets: Sequence[LengthBucket],
                  slos: Sequence[SLO]) -> list[list[Capacity]]:
    prompt = np.array([b.input_tokens for b in buckets], dtype=float)
    d = np.tile(_prefill_ms(perf, shape, prompt), len(slos))  # rows: SLO by SLO, bucket by bucket
    ttft = np.repeat(np.array([s.ttft_ms for s in slos], dtype=float), len(buckets))
    svc = d / shape.pp  # a pipeline takes a new prompt every stage time
    load = md1_max_load_array((ttft - d) / svc, slos[0].percentile)
    rps = np.where(d < ttft, load / svc * 1000.0, 0.0)
    return _split([Capacity(r, "ttft" if ok else "prefill alone exceeds the TTFT SLO", 1, di, 0.0)
                   for r, ok, di in zip(rps.tolist(), (d < ttft).tolist(), d.tolist(), strict=True)], len(buckets))


def _decode_caps(perf: PerfModel, shape: ReplicaShape, buckets: Sequence[LengthBucket], slos: Sequence[SLO],
                 with_transfer: bool) -> list[list[Capacity]]:
    m = shape.model
    z = _z(slos[0].percentile)
    k = len(slos)
    s_in1 = np.array([b.input_tokens for b in buckets], dtype=float)
    s_out1 = np.array([b.output_tokens for b in buckets], dtype=float)
    ctx = s_in1 + s_out1 / 2  # mean context over a request's decode
    kv_tokens = float(perf.memory(shape).kv_capacity_tokens)
    # Rows: SLO by SLO, bucket by bucket (the step times are the same for every SLO).
    times = np.tile(_decode_ms(perf, shape, _BATCH_GRID, ctx), (k, 1))
    s_in, s_out = np.tile(s_in1, k), np.tile(s_out1, k)
    tpot_ms = np.repeat(np.array([s.tpot_ms for s in slos], dtype=float), len(buckets))
    b_tpot = _largest_batch(_BATCH_GRID, times, tpot_ms, z)
    b_kv = _mean_from_percentile_batch(kv_tokens / (s_in + s_out), z)
    batch = np.minimum(b_tpot, b_kv)
    limited = np.where(b_kv < b_tpot, "kv-capacity", "tpot")
    t_step = _interp_rows(_BATCH_GRID, times, np.maximum(batch, 1.0))
    rps = np.where(batch > 0, batch / (s_out * t_step / 1000.0), 0.0)
    kv_gbps = np.zeros(len(rps))
    if with_transfer:
        nic_gbps = shape.devices * shape.device.nic_gbitps * NET_EFFICIENCY
        bits_per_request = s_in * m.kv_bytes_per_token * 8 / 1e9
        cap_nic = nic_gbps / bits_per_request
        limited = np.where(cap_nic < rps, "kv-transfer", limited)
        rps = np.minimum(rps, cap_nic)
        kv_gbps = rps * bits_per_request
    if shape.offload:
        # Lamina link check: per-step traffic over the share α of the step it may use.
        assert shape.memory_device is not None
        link_gbytes = min(shape.devices * shape.device.nic_gbitps,
                          shape.memory_devices * shape.memory_device.nic_gbitps) / 8 * NET_EFFICIENCY
        need = offload_bytes_per_token(m) * _pct_batch(batch, z) / (OFFLOAD_ALPHA * t_step / 1000.0) / 1e9
        over = need > link_gbytes
        scale = np.where(over, link_gbytes / np.maximum(need, 1e-12), 1.0)
        limited = np.where(over, "offload-link", limited)
        rps = rps * scale
    empty = "decode step alone exceeds the TPOT SLO" if kv_tokens > 0 else "no KV capacity"
    return _split([Capacity(0.0, empty, 0, 0.0, t0) if b <= 0 or t > lim else Capacity(r, why, b, 0.0, t, kv)
                   for r, why, b, t, kv, t0, lim in zip(rps.tolist(), limited.tolist(), batch.tolist(),
                                                        t_step.tolist(), kv_gbps.tolist(), times[:, 0].tolist(),
                                                        tpot_ms.tolist(), strict=True)], len(buckets))


_UNIFIED_GRID = np.geomspace(0.02, MAX_BATCH, 96)  # ≤ 3% from a 400-point grid, median 0.05%


def _unified_caps(perf: PerfModel, shape: ReplicaShape, buckets: Sequence[LengthBucket],
                  slos: Sequence[SLO]) -> list[list[Capacity]]:
    """Parametrise by the mean decode batch B: Little's law with prefill stalls gives the rate explicitly,
    ``λ = B / (s_out·T(B) + B·D)``, so every constraint is checked on a grid of B at once (and for every SLO
    at once: rows are SLO by SLO, bucket by bucket; only the margins depend on the SLO's targets)."""
    z = _z(slos[0].percentile)
    k, nb = len(slos), len(buckets)
    s_in = np.array([b.input_tokens for b in buckets], dtype=float)[:, None]
    s_out = np.array([b.output_tokens for b in buckets], dtype=float)[:, None]
    d = _prefill_ms(perf, shape, s_in[:, 0])[:, None]
    grid = _UNIFIED_GRID
    step_grid = np.maximum(grid, 1.0)
    times = _decode_ms(perf, shape, _BATCH_GRID, (s_in + s_out / 2)[:, 0])
    t_mean = _interp_grid(times, step_grid)
    b_pct = _pct_batch(grid, z)[None, :]
    t_pct = _interp_grid(times, np.maximum(b_pct[0], 1.0))
    kv_tokens = float(perf.memory(shape).kv_capacity_tokens)
    lam = grid[None, :] * 1000.0 / (s_out * t_mean + grid[None, :] * d)  # req/s
    rho = lam * d / 1000.0
    t_eff = t_mean / np.maximum(1 - rho, 1e-9)
    interrupts = lam * s_out * t_eff / 1000.0
    tpot = t_pct + poisson_quantile(interrupts, slos[0].percentile) * d / s_out
    ttft = d + t_pct
    m_kv = (kv_tokens - b_pct * (s_in + s_out)) / max(kv_tokens, 1.0)
    ttft_slo = np.repeat(np.array([s.ttft_ms for s in slos], dtype=float), nb)[:, None]
    tpot_slo = np.repeat(np.array([s.tpot_ms for s in slos], dtype=float), nb)[:, None]
    d, times, lam, rho, tpot, ttft, m_kv = (np.tile(a, (k, 1)) for a in (d, times, lam, rho, tpot, ttft, m_kv))
    slack = (ttft_slo - ttft) / d
    m_ttft = md1_max_load_array(slack, slos[0].percentile) - rho
    m_tpot = (tpot_slo - tpot) / tpot_slo
    margins = np.stack([m_ttft, m_tpot, m_kv])
    margin = margins.min(axis=0)
    # λ(B) rises with B and the margins fall: take the last point before the first infeasible one and
    # interpolate the binding margin's zero crossing to the next grid point.
    n = len(grid)
    infeasible = margin < 0
    first_bad = np.where(infeasible.any(axis=1), infeasible.argmax(axis=1), n)
    j = first_bad - 1
    rows = np.arange(k * nb)
    jc = np.minimum(np.maximum(j, 0), n - 1)
    jn = np.minimum(np.maximum(j + 1, 0), n - 1)
    m0, m1 = margin[rows, jc], margin[rows, jn]
    w = np.where((j + 1 < n) & (m0 > m1), m0 / np.where(m0 > m1, m0 - m1, 1.0), 0.0)
    lam_star = lam[rows, jc] + w * (lam[rows, jn] - lam[rows, jc])
    b_star = grid[jc] + w * (grid[jn] - grid[jc])
    names = ("ttft", "tpot", "kv-capacity")
    first = margins[:, :, 0].argmin(axis=0).tolist()  # what binds at the smallest batch, and past the last point
    after = margins[:, rows, jn].argmin(axis=0).tolist()
    return _split([Capacity(0.0, names[f], 0, d0, t0) if jj < 0
                   else Capacity(lam_i, names[a] if jj + 1 < n else "max-batch", b_i, ttft_i, tpot_i)
                   for jj, f, a, d0, t0, lam_i, b_i, ttft_i, tpot_i in zip(
                       j.tolist(), first, after, d[:, 0].tolist(), times[:, 0].tolist(), lam_star.tolist(),
                       b_star.tolist(), ttft[rows, jc].tolist(), tpot[rows, jc].tolist(), strict=True)], nb)


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
    """``capacity_table`` for several SLOs at once (one list per SLO, in order; not memoised): what does not
    depend on the SLO's targets is computed once per percentile."""
    check_shape(shape)
    if not buckets:
        return [[] for _ in slos]
    spec = ROLES[role]
    if spec.memory_devices and not shape.offload:
        raise ValueError(f"memory_devices: the {role.value} role needs memory devices")
    if not spec.memory_devices and shape.offload:
        raise ValueError(f"memory_devices: role {role.value} does not use memory devices")
    if not perf.memory(shape).fits:
        return [[Capacity(0.0, "memory: " + perf.memory(shape).reason, 0, 0.0, 0.0) for _ in buckets]
                for _ in slos]
    out: list[list[Capacity]] = [[] for _ in slos]
    for pct in dict.fromkeys(s.percentile for s in slos):
        at = [i for i, s in enumerate(slos) if s.percentile == pct]
        group = [slos[i] for i in at]
        if not spec.decode:
            tables = _prefill_caps(perf, shape, buckets, group)
        elif not spec.prefill:  # a decode replica receives each request's KV cache over its NICs
            tables = _decode_caps(perf, shape, buckets, group, with_transfer=True)
        else:
            tables = _unified_caps(perf, shape, buckets, group)
        for i, table in zip(at, tables, strict=True):
            out[i] = table
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
