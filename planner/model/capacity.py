"""Capacity: the largest request rate one replica sustains for one length bucket within a TTFT/TPOT SLO.

**Engines.** A replica with ``p`` pipeline stages keeps ``p`` micro-batches in flight (vLLM's virtual
engines): ``p`` engines, each with the replica's full step latency (a request's latency is the sum of its
stages, stage hand-offs included), 1/p of its KV cache and 1/p of its batch cap ``max_num_seqs``. The
replica's rate is ``p`` engines' rate. So a pipeline's per-device rate never exceeds that of ``p`` TP1
replicas of the same device (its steps are no shorter); it gains only where memory binds (each stage holds
1/p of the weights, leaving more room for KV).

**Queues.** Every engine is a queue of its own, fed its share of the traffic. A least-loaded router (and vLLM,
which gives a request to a virtual engine when it arrives) makes ``c`` engines behave between ``c`` separate
queues and one pooled M/D/c queue; separate queues are the conservative end, exact for ``c = 1``. No
configuration is credited with pooling, so neither a pipeline's engines nor a group of replicas gain from
the queue model alone.

**SLO.** A request meets its SLO when it meets both targets (the replay and DistServe count attainment so);
each target is checked at ``p_t = 100 − (100 − p)/2`` (``queueing.target_percentile``), which bounds the share
that misses either by ``100 − p``.

Roles (the model that applies follows the role's phases and memory devices in ``planner.roles``):

* ``prefill``: an M/D/1 queue of prompts per engine (deterministic service ``D`` = one prefill, one prompt
  at a time, as the provisioner's ``--max-num-seqs`` enforces). The client's first token comes from the
  decode replica, so TTFT = wait + ``D`` + the KV hand-off at this replica's NIC share + decode admission
  (``planner.model.handoff``); the rate is the largest ``λ`` whose ``p_t`` wait fits what is left of the TTFT
  target (exact M/D/1 series), and the outbound KV bytes ``λ·s_in·kv_bytes_per_token`` must fit the NICs.
* ``decode``: Little's law ``B = λ·s_out·TPOT(B)`` per engine; the largest ``B`` whose percentile batch
  ``B + z√B`` keeps the step within the TPOT target (and within the admission step, a quarter of the TTFT
  target, since the client's first token waits for two decode steps), fits the KV cache (``B·(s_in+s_out)``
  tokens) and the batch cap. The inbound KV bytes must fit the replica's NIC share.
* ``unified``: prefill and decode share the engine; a prefill stops the decode batch (vLLM runs a step
  either of prompts or of decodes). Decode steps stretch to ``T(B)/(1−λD)``; a request's TPOT percentile
  adds the prefills that interrupt it (percentile of their count × D / s_out; the count is a compound
  Poisson, ``queueing.interruption_quantile``); a prompt waits its M/D/1 queue plus the decode step in flight.
* ``decode+offload``: like decode, with the step time of the attention-offload model and its link check
  ``(2 + 2/G)·e·h·B·L / (α·TBT) ≤ NIC`` (α = 0.2, the share of a step in which transfers may happen).

``ServingLimits`` carries what is not the step time: the batch cap, a slowdown of the step times (robust
planning against the model's error band) and whether the hand-off may cross zones. Stated once: the M/D/1
slack is capped at 12 service times, where the exact series is still precise (conservative beyond).

Pure functions of values; :func:`capacity_table` evaluates all buckets of one configuration at once
(vectorised; results memoised per (model, shape, role, buckets, SLO, limits)); :func:`shapes_capacity_tables`
evaluates the tables of many shapes, limits and SLOs of one role at once (one row per shape, SLO and bucket;
what does not depend on the SLO once per shape and bucket, and a unified replica's SLO margins once per shape,
bucket and target), each row's ``Capacity`` built only when asked.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple, cast

import numpy as np
import numpy.typing as npt

from planner.model.collectives import NET_EFFICIENCY, offload_bytes_per_token
from planner.model.handoff import INTER_ZONE_LATENCY_MS, admission_ms, admission_step_ms, handoff_nic_gbitps
from planner.model.perf import PerfModel, ReplicaShape, check_shape
from planner.model.queueing import (
    interruption_quantile,
    md1_max_load,
    md1_max_load_array,
    md1_wait_cdf,
    mean_from_percentile_batch,
    percentile_batch,
    target_percentile,
    z_score,
)
from planner.model.roofline import RooflinePerfModel
from planner.roles import ROLES
from planner.schema import SLO, LengthBucket, Role

__all__ = ["DEFAULT_MAX_NUM_SEQS", "MAX_BATCH", "Capacity", "RowTables", "ServingLimits", "TableRef", "capacity_table",
           "capacity_tables", "md1_max_load", "md1_wait_cdf", "replica_capacity", "replica_power_watts",
           "shapes_capacity_tables"]

FloatArray = npt.NDArray[np.float64]

OFFLOAD_ALPHA = 0.2  # Lamina: share of a step during which the KV/attention transfers may run
# vLLM's --max-num-seqs default (EngineArgs); the provisioner renders the cap explicitly, so the engine never
# falls back to a release's own default.
DEFAULT_MAX_NUM_SEQS = 256
MAX_BATCH = 1024  # the largest batch the capacity grids cover (a larger cap counts as this)


@dataclass(frozen=True)
class ServingLimits:
    """What bounds a replica besides its step times: the engine's batch cap, step-time slowdowns (planning
    against the model's error band) and whether KV hand-offs may cross zones."""

    max_num_seqs: int = DEFAULT_MAX_NUM_SEQS
    prefill_slowdown: float = 1.0
    decode_slowdown: float = 1.0
    cross_zone_handoff: bool = False
    # vLLM's disaggregated serving streams the first token from the decode replica; DistServe's prototype
    # streams it from the prefill instance (False: TTFT ends at the prefill, as the paper counts it).
    handoff_in_ttft: bool = True

    def engine_cap(self, pp: int) -> int:
        """Sequences one of a replica's ``pp`` engines may run at once (at least one)."""
        return max(1, min(self.max_num_seqs, MAX_BATCH) // pp)


class Capacity(NamedTuple):
    """Largest sustainable request rate of one replica for one bucket, and what limits it (a named tuple: a
    fleet's candidates hold hundreds of thousands of them).

    ``batch`` is one engine's mean batch; ``ttft_ms`` the TTFT at no load (prefill: with the hand-off and
    admission); ``handoff_ms`` the KV hand-off at this replica's NIC share (prefill and decode roles)."""

    rps: float
    limited_by: str
    batch: float
    ttft_ms: float
    tpot_ms: float
    kv_transfer_gbps: float = 0.0
    handoff_ms: float = 0.0


# ---------------------------------------------------------------------------------------------- step times


def _prefill_ms(perf: PerfModel, shape: ReplicaShape, prompt: FloatArray, slowdown: float) -> FloatArray:
    if isinstance(perf, RooflinePerfModel):
        return np.asarray(perf.prefill_ms_array(shape, 1.0, prompt), dtype=float) * slowdown
    return np.array([perf.prefill_ms(shape, 1, int(p)) for p in prompt], dtype=float) * slowdown


def _decode_ms(perf: PerfModel, shape: ReplicaShape, batch: FloatArray, ctx: FloatArray,
               slowdown: float) -> FloatArray:
    """Decode step times for a batch grid (columns) × contexts (rows)."""
    if isinstance(perf, RooflinePerfModel):
        t = perf.decode_step_ms_array(shape, batch[None, :], ctx[:, None])
        return np.asarray(t, dtype=float) * slowdown
    return np.array([[perf.decode_step_ms(shape, max(1, int(round(b))), int(c)) for b in batch] for c in ctx],
                    dtype=float) * slowdown


_BATCH_GRID = np.unique(np.round(np.geomspace(1, MAX_BATCH, 72))).astype(float)


def _interp_rows(grid: FloatArray, table: FloatArray, b: FloatArray) -> FloatArray:
    """Row-wise linear interpolation of ``table[i, :]`` (over ``grid``) at ``b[i]``."""
    # (np.minimum/np.maximum rather than np.clip: the same values without its per-call cost.)
    idx = np.minimum(np.maximum(np.searchsorted(grid, b) - 1, 0), len(grid) - 2)
    x0, x1 = grid[idx], grid[idx + 1]
    rows = np.arange(len(b))
    y0, y1 = table[rows, idx], table[rows, idx + 1]
    w = np.maximum((b - x0) / (x1 - x0), 0.0)
    return np.asarray(y0 + w * (y1 - y0), dtype=float)


def _largest_batch(grid: FloatArray, times: FloatArray, limit_ms: FloatArray, z: float) -> FloatArray:
    """Largest mean batch per row whose percentile batch ``B + z√B`` has a step time within the row's
    ``limit_ms``."""
    n = len(grid)
    ok = times <= limit_ms[:, None]
    # Step time rises with the batch: the feasible points are a prefix of each row.
    count = np.where(ok.all(axis=1), n, np.where(ok.any(axis=1), (~ok).argmax(axis=1), 0))
    j = np.minimum(np.maximum(count - 1, 0), n - 1)
    jn = np.minimum(np.maximum(count, 0), n - 1)
    rows = np.arange(times.shape[0])
    t0, t1 = times[rows, j], times[rows, jn]
    frac = np.where((count < n) & (t1 > t0), (limit_ms - t0) / np.where(t1 > t0, t1 - t0, 1.0), 0.0)
    bp = grid[j] + (grid[jn] - grid[j]) * np.minimum(np.maximum(frac, 0.0), 1.0)
    return np.where(count > 0, mean_from_percentile_batch(bp, z), 0.0)


def _interp_grid(times: FloatArray, b: FloatArray) -> FloatArray:
    """Step times (rows: buckets, over ``_BATCH_GRID``) at the batches ``b`` (same for every row)."""
    idx = np.minimum(np.maximum(np.searchsorted(_BATCH_GRID, b) - 1, 0), len(_BATCH_GRID) - 2)
    x0, x1 = _BATCH_GRID[idx], _BATCH_GRID[idx + 1]
    w = np.maximum((b - x0) / (x1 - x0), 0.0)
    return np.asarray(times[:, idx] + w * (times[:, idx + 1] - times[:, idx]), dtype=float)


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

    def table_rates(self, width: int) -> tuple[list[tuple[float, ...]], list[bool]]:
        """Every table's rates (tables of ``width`` rows, in order) and whether it serves some bucket."""
        if width == 0:
            return [()], [False]
        per = self.rps.reshape(-1, width)
        serves = cast(list[bool], (per > 0).any(axis=1).tolist())
        return list(map(tuple, per.tolist())), serves


@dataclass(frozen=True)
class _Rows:
    """Capacity tables computed together, one row per (shape and limits, SLO, bucket): shape by shape, SLO by
    SLO, bucket by bucket. What the shape and its limits give a bucket is kept once per (shape, bucket), a
    *shape row* (``src``: each row's shape row); what the SLO gives it, per row."""

    src: npt.NDArray[np.intp]
    # Per row.
    ttft_slo: FloatArray
    tpot_slo: FloatArray
    admission_ms: FloatArray  # what decode admission adds to TTFT (where the hand-off counts in it)
    step_limit: FloatArray  # the longest decode step of a decode-only replica
    in_ttft: npt.NDArray[np.bool_]  # the hand-off and admission count in TTFT
    # Per shape row.
    s_in: FloatArray
    s_out: FloatArray
    pp: FloatArray
    kv_tokens: FloatArray  # one engine's share
    engine_cap: FloatArray
    nbytes: FloatArray  # the prompt's KV cache
    nic: FloatArray  # hand-off line rate, Gbit/s
    cross_zone: npt.NDArray[np.bool_]
    offload_bytes_per_token: FloatArray
    link_gbytes: FloatArray  # compute-to-memory link of an offload shape, inf elsewhere
    prefill_ms: FloatArray  # one prompt alone, slowed down (decode-only tables: unused)
    times: FloatArray  # decode step times over _BATCH_GRID, slowed down (prefill-only tables: unused)


Wanted = Sequence[tuple[ReplicaShape, ServingLimits, Sequence[SLO]]]


def _rows(perf: PerfModel, wanted: Wanted, buckets: Sequence[LengthBucket], prefill: bool, decode: bool) -> _Rows:
    """The rows of several shapes' tables under their limits for their SLOs (each shape's step times once)."""
    s_in1 = np.array([b.input_tokens for b in buckets], dtype=float)
    s_out1 = np.array([b.output_tokens for b in buckets], dtype=float)
    nb, ns = len(buckets), len(wanted)
    ks = np.array([len(slos) for _, _, slos in wanted])
    per_table = np.repeat(np.arange(ns), ks)  # each (shape, SLO) table's shape
    src = (per_table[:, None] * nb + np.arange(nb)[None, :]).reshape(-1)

    def scalar(values: Sequence[float]) -> FloatArray:
        return np.repeat(np.array(values, dtype=float), nb)

    def per_slo(values: Sequence[float]) -> FloatArray:
        return np.repeat(np.array(values, dtype=float), nb)

    def link(shape: ReplicaShape) -> float:
        if not shape.offload:
            return np.inf
        assert shape.memory_device is not None
        return min(shape.devices * shape.device.nic_gbitps_per_device(),
                   shape.memory_devices * shape.memory_device.nic_gbitps_per_device()) / 8 * NET_EFFICIENCY

    slos = [(x, lim) for _, lim, group in wanted for x in group]
    grid = len(_BATCH_GRID)
    if prefill:
        d = np.stack([_prefill_ms(perf, sh, s_in1, lim.prefill_slowdown) for sh, lim, _ in wanted]).reshape(-1)
    else:
        d = np.zeros(ns * nb)
    if decode:
        times = np.stack([_decode_ms(perf, sh, _BATCH_GRID, s_in1 + s_out1 / 2, lim.decode_slowdown)
                          for sh, lim, _ in wanted]).reshape(-1, grid)
    else:
        times = np.zeros((ns * nb, grid))
    s_in = np.tile(s_in1, ns)
    return _Rows(
        src=src, ttft_slo=per_slo([x.ttft_ms for x, _ in slos]), tpot_slo=per_slo([x.tpot_ms for x, _ in slos]),
        admission_ms=per_slo([admission_ms(x) for x, _ in slos]),
        step_limit=per_slo([admission_step_ms(x) if lim.handoff_in_ttft else x.tpot_ms for x, lim in slos]),
        in_ttft=per_slo([lim.handoff_in_ttft for _, lim in slos]) > 0,
        s_in=s_in, s_out=np.tile(s_out1, ns), pp=scalar([sh.pp for sh, _, _ in wanted]),
        kv_tokens=scalar([float(perf.memory(sh).kv_capacity_tokens) / sh.pp for sh, _, _ in wanted]),
        engine_cap=scalar([float(lim.engine_cap(sh.pp)) for sh, lim, _ in wanted]),
        nbytes=s_in * scalar([sh.model.kv_bytes_per_token for sh, _, _ in wanted]),
        nic=scalar([handoff_nic_gbitps(sh) for sh, _, _ in wanted]),
        cross_zone=scalar([lim.cross_zone_handoff for _, lim, _ in wanted]) > 0,
        offload_bytes_per_token=scalar([offload_bytes_per_token(sh.model) for sh, _, _ in wanted]),
        link_gbytes=scalar([link(sh) for sh, _, _ in wanted]), prefill_ms=d, times=times)


def _handoff_ms(r: _Rows) -> FloatArray:
    """``handoff.handoff_ms`` of every shape row (its line rate and zone hop)."""
    wire = r.nbytes * 8 / (r.nic * 1e9 * NET_EFFICIENCY) * 1e3
    return np.asarray(wire + np.where(r.cross_zone, INTER_ZONE_LATENCY_MS, 0.0), dtype=float)


def _prefill_caps(r: _Rows, percentile: float) -> RowTables:
    pct = target_percentile(percentile)
    src = r.src
    d, ttft, nbytes = r.prefill_ms[src], r.ttft_slo, r.nbytes[src]
    x = _handoff_ms(r)[src]
    fixed = d + np.where(r.in_ttft, x + r.admission_ms, 0.0)  # TTFT at no load
    load = md1_max_load_array((ttft - fixed) / d, pct)
    rps_ttft = np.where(fixed < ttft, r.pp[src] * load / d * 1000.0, 0.0)
    cap_nic = (r.nic * 1e9 * NET_EFFICIENCY / (r.nbytes * 8))[src]
    rps = np.minimum(rps_ttft, cap_nic)
    late = fixed >= ttft
    alone = d >= ttft
    nic_bound = cap_nic < rps_ttft

    def build(lo: int, hi: int) -> list[Capacity]:
        return [Capacity(0.0, "prefill alone exceeds the TTFT SLO" if al
                         else "prefill, KV hand-off and decode admission exceed the TTFT SLO", 1, f, 0.0, 0.0, xi)
                if lt else Capacity(q, "kv-transfer" if nb_ else "ttft", 1, f, 0.0, q * nby * 8 / 1e9, xi)
                for q, lt, al, nb_, f, nby, xi in zip(
                    rps[lo:hi].tolist(), late[lo:hi].tolist(), alone[lo:hi].tolist(), nic_bound[lo:hi].tolist(),
                    fixed[lo:hi].tolist(), nbytes[lo:hi].tolist(), x[lo:hi].tolist(), strict=True)]

    return RowTables(np.where(late, 0.0, rps), build)


def _decode_caps(r: _Rows, percentile: float) -> RowTables:
    """Decode-only replicas: each receives every request's KV cache over its NICs (see the module docstring)."""
    z = z_score(target_percentile(percentile))
    src = r.src
    s_in, s_out, times, kv_tokens, p = r.s_in[src], r.s_out[src], r.times[src], r.kv_tokens[src], r.pp[src]
    step_limit = r.step_limit
    b_tpot = _largest_batch(_BATCH_GRID, times, step_limit, z)
    b_kv = mean_from_percentile_batch(kv_tokens / (s_in + s_out), z)
    b_cap = mean_from_percentile_batch(r.engine_cap[src], z)
    batch = np.minimum(np.minimum(b_tpot, b_kv), b_cap)
    limited = np.where(batch == b_tpot, "tpot", np.where(batch == b_kv, "kv-capacity", "max-num-seqs"))
    t_step = _interp_rows(_BATCH_GRID, times, np.maximum(batch, 1.0))
    rps = np.where(batch > 0, p * batch / (s_out * t_step / 1000.0), 0.0)
    nbytes = r.nbytes[src]
    cap_nic = (r.nic * 1e9 * NET_EFFICIENCY / (r.nbytes * 8))[src]
    limited = np.where(cap_nic < rps, "kv-transfer", limited)
    rps = np.minimum(rps, cap_nic)
    if np.isfinite(r.link_gbytes).any():
        # Lamina's check on offload shapes: the per-step traffic within the share α of the step it may use.
        link = r.link_gbytes[src]
        need = r.offload_bytes_per_token[src] * percentile_batch(batch, z) / (OFFLOAD_ALPHA * t_step / 1000.0) / 1e9
        scale = np.where(need > link, link / np.maximum(need, 1e-12), 1.0)
        limited = np.where(scale < 1.0, "offload-link", limited)
        rps = rps * scale
    x = _handoff_ms(r)[src]
    empty = (batch <= 0) | (t_step > step_limit)
    t0s = times[:, 0].copy()

    def build(lo: int, hi: int) -> list[Capacity]:
        return [Capacity(0.0, "decode step alone exceeds the TPOT SLO" if kv > 0 else "no KV capacity", 0, 0.0, t0,
                         0.0, xi)
                if e else Capacity(q, why, b, 0.0, t, q * nby * 8 / 1e9, xi)
                for q, why, b, t, e, kv, t0, nby, xi in zip(
                    rps[lo:hi].tolist(), limited[lo:hi].tolist(), batch[lo:hi].tolist(), t_step[lo:hi].tolist(),
                    empty[lo:hi].tolist(), kv_tokens[lo:hi].tolist(), t0s[lo:hi].tolist(), nbytes[lo:hi].tolist(),
                    x[lo:hi].tolist(), strict=True)]

    return RowTables(np.where(empty, 0.0, rps), build)


_UNIFIED_GRID = np.geomspace(0.02, MAX_BATCH, 96)  # ≤ 3% from a 400-point grid, median 0.05%


def _first_negative(values: FloatArray) -> npt.NDArray[np.intp]:
    """Per row, the first column whose value is negative (the number of columns where none is)."""
    negative = values < 0
    return np.asarray(np.where(negative.any(axis=1), negative.argmax(axis=1), values.shape[1]))


def _pairs(src: npt.NDArray[np.intp], values: FloatArray) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """The distinct (shape row, value) pairs of the rows: one row of each, and each row's pair."""
    _, value = np.unique(values, return_inverse=True)
    _, one, pair = np.unique(src * (int(value.max(initial=0)) + 1) + value.reshape(-1), return_index=True,
                             return_inverse=True)
    return one, pair.reshape(-1)


def _unified_caps(r: _Rows, percentile: float) -> RowTables:
    """Parametrise one engine by its mean decode batch B: Little's law with prefill stalls gives its rate
    explicitly, ``λ = B / (s_out·T(B) + B·D)``, so every constraint is checked on a grid of B at once (and for
    every row at once; what does not depend on the SLO, once per shape row)."""
    pct = target_percentile(percentile)
    z = z_score(pct)
    src = r.src
    s_in, s_out, times = r.s_in[:, None], r.s_out[:, None], r.times
    d = r.prefill_ms[:, None]
    grid = _UNIFIED_GRID
    t_mean = _interp_grid(times, np.maximum(grid, 1.0))
    b_pct = percentile_batch(grid, z)[None, :]
    t_pct = _interp_grid(times, np.maximum(b_pct[0], 1.0))
    kv_tokens = r.kv_tokens[:, None]
    cap = r.engine_cap[:, None]
    lam = grid[None, :] * 1000.0 / (s_out * t_mean + grid[None, :] * d)  # req/s of one engine
    rho = lam * d / 1000.0
    t_eff = t_mean / np.maximum(1 - rho, 1e-9)
    interrupts = lam * s_out * t_eff / 1000.0
    tpot = t_pct + interruption_quantile(interrupts, rho, pct) * d / s_out
    ttft = d + t_pct
    m_kv = (kv_tokens - b_pct * (s_in + s_out)) / np.maximum(kv_tokens, 1.0)
    m_cap = np.broadcast_to((cap - b_pct) / cap, m_kv.shape)
    # The SLO's margins, once per shape row and target (``at``: each row's (shape row, target) pair).
    one, ttft_at = _pairs(src, r.ttft_slo)
    m_ttft = md1_max_load_array((r.ttft_slo[one][:, None] - ttft[src[one]]) / d[src[one]], pct) - rho[src[one]]
    one, tpot_at = _pairs(src, r.tpot_slo)
    tpot_slo = r.tpot_slo[one][:, None]
    m_tpot = (tpot_slo - tpot[src[one]]) / tpot_slo
    m_kv_cap = np.minimum(m_kv, m_cap)

    def margin(at: npt.NDArray[np.intp] | slice) -> FloatArray:
        """Each row's smallest margin at its grid point ``at`` (or over a slice of the grid)."""
        return np.minimum(np.minimum(m_ttft[ttft_at, at], m_tpot[tpot_at, at]), m_kv_cap[src, at])

    # λ(B) rises with B and the margins fall: take the last point before the first infeasible one and
    # interpolate the binding margin's zero crossing to the next grid point. A row's first infeasible point
    # is the first of its margins' own (a margin is not NaN), found once per (shape row, target).
    n = len(grid)
    if np.isnan(m_ttft).any() or np.isnan(m_tpot).any() or np.isnan(m_kv_cap).any():
        first_bad = _first_negative(margin(slice(None)))
    else:
        first_bad = np.minimum(np.minimum(_first_negative(m_ttft)[ttft_at], _first_negative(m_tpot)[tpot_at]),
                               _first_negative(m_kv_cap)[src])
    j = first_bad - 1
    jc = np.minimum(np.maximum(j, 0), n - 1)
    jn = np.minimum(np.maximum(j + 1, 0), n - 1)
    m0, m1 = margin(jc), margin(jn)
    w = np.where((j + 1 < n) & (m0 > m1), m0 / np.where(m0 > m1, m0 - m1, 1.0), 0.0)
    lam_c, lam_n = lam[src, jc], lam[src, jn]
    lam_star = lam_c + w * (lam_n - lam_c)
    b_star = grid[jc] + w * (grid[jn] - grid[jc])
    names = ("ttft", "tpot", "kv-capacity", "max-num-seqs")

    def binding(at: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        """Which margin is smallest at grid point ``at`` of each row (the first of equal ones)."""
        return np.asarray(np.stack([m_ttft[ttft_at, at], m_tpot[tpot_at, at], m_kv[src, at], m_cap[src, at]])
                          .argmin(axis=0))

    first = binding(np.zeros(len(j), dtype=np.intp))  # what binds at the smallest batch, and past the last point
    after = binding(jn)
    rps = r.pp[src] * lam_star
    d0s, t0s, ttft_j, tpot_j = r.prefill_ms[src], times[src, 0], ttft[src, jc], tpot[src, jc]

    def build(lo: int, hi: int) -> list[Capacity]:
        return [Capacity(0.0, names[f], 0, d0, t0) if jj < 0
                else Capacity(q, names[a] if jj + 1 < n else "max-batch", b_i, ttft_i, tpot_i)
                for jj, f, a, d0, t0, q, b_i, ttft_i, tpot_i in zip(
                    j[lo:hi].tolist(), first[lo:hi].tolist(), after[lo:hi].tolist(), d0s[lo:hi].tolist(),
                    t0s[lo:hi].tolist(), rps[lo:hi].tolist(), b_star[lo:hi].tolist(), ttft_j[lo:hi].tolist(),
                    tpot_j[lo:hi].tolist(), strict=True)]

    return RowTables(np.where(j < 0, 0.0, rps), build)


# ---------------------------------------------------------------------------------------------- public


def capacity_table(perf: PerfModel, shape: ReplicaShape, role: Role, buckets: Sequence[LengthBucket],
                   slo: SLO, limits: ServingLimits | None = None) -> list[Capacity]:
    """Capacity of one replica for each bucket (all buckets evaluated together; results memoised)."""
    lim = limits or ServingLimits()
    try:
        key = cast(Hashable, perf)
        return list(_capacity_table_cached(key, shape, role, tuple(buckets), slo, lim))
    except TypeError:  # an unhashable performance model: compute without the memo
        return capacity_tables(perf, shape, role, buckets, [slo], lim)[0]


@lru_cache(maxsize=200_000)
def _capacity_table_cached(perf: Hashable, shape: ReplicaShape, role: Role, buckets: tuple[LengthBucket, ...],
                           slo: SLO, lim: ServingLimits) -> tuple[Capacity, ...]:
    assert isinstance(perf, PerfModel)
    return tuple(capacity_tables(perf, shape, role, buckets, [slo], lim)[0])


def capacity_tables(perf: PerfModel, shape: ReplicaShape, role: Role, buckets: Sequence[LengthBucket],
                    slos: Sequence[SLO], limits: ServingLimits | None = None) -> list[list[Capacity]]:
    """``capacity_table`` for several SLOs at once (one list per SLO, in order; not memoised)."""
    tables = shapes_capacity_tables(perf, role, buckets, [(shape, limits or ServingLimits(), slos)])[0]
    return [t.capacities() for t in tables]


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
                           wanted: Wanted) -> list[list[TableRef]]:
    """``capacity_table`` of several shapes, each under its limits for several SLOs (per shape, one table per
    SLO, in order; not memoised): all of them in one pass of array arithmetic per SLO percentile."""
    spec = ROLES[role]
    nb = len(buckets)
    none = RowTables(np.zeros(0), lambda lo, hi: [])
    out: list[list[TableRef]] = [[TableRef(none, 0, 0) for _ in slos] for _, _, slos in wanted]
    if not buckets:
        return out
    live: list[tuple[int, int, ReplicaShape, ServingLimits, SLO]] = []  # (shape's index, SLO's index, ...)
    for i, (shape, lim, slos) in enumerate(wanted):
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
        live.extend((i, j, shape, lim, slo) for j, slo in enumerate(slos))
    for pct in dict.fromkeys(x[4].percentile for x in live):
        by_shape: dict[int, list[tuple[int, int, ReplicaShape, ServingLimits, SLO]]] = {}
        for x in live:
            if x[4].percentile == pct:
                by_shape.setdefault(x[0], []).append(x)
        group = list(by_shape.values())
        rows = _rows(perf, [(g[0][2], g[0][3], [x[4] for x in g]) for g in group], buckets, spec.prefill,
                     spec.decode)
        if not spec.decode:
            tables = _prefill_caps(rows, pct)
        elif not spec.prefill:  # a decode replica receives each request's KV cache over its NICs
            tables = _decode_caps(rows, pct)
        else:
            tables = _unified_caps(rows, pct)
        at = 0
        for g in group:
            for i, j, _, _, _ in g:
                out[i][j] = TableRef(tables, at, at + nb)
                at += nb
    return out


def replica_capacity(perf: PerfModel, shape: ReplicaShape, role: Role, bucket: LengthBucket,
                     slo: SLO, limits: ServingLimits | None = None) -> Capacity:
    """Largest request rate one replica sustains for requests of ``bucket`` within ``slo``."""
    return capacity_table(perf, shape, role, [bucket], slo, limits)[0]


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
