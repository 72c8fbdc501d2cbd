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
(vectorised; results memoised per (model, shape, role, buckets, SLO, limits)).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import cast

import numpy as np
import numpy.typing as npt

from planner.model.collectives import NET_EFFICIENCY, offload_bytes_per_token
from planner.model.handoff import admission_ms, admission_step_ms, handoff_bytes, handoff_ms, handoff_nic_gbitps
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

__all__ = ["DEFAULT_MAX_NUM_SEQS", "MAX_BATCH", "Capacity", "ServingLimits", "capacity_table", "md1_max_load",
           "md1_wait_cdf", "replica_capacity", "replica_power_watts"]

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


@dataclass(frozen=True)
class Capacity:
    """Largest sustainable request rate of one replica for one bucket, and what limits it.

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
    idx = np.clip(np.searchsorted(grid, b) - 1, 0, len(grid) - 2)
    x0, x1 = grid[idx], grid[idx + 1]
    rows = np.arange(len(b))
    y0, y1 = table[rows, idx], table[rows, idx + 1]
    w = np.clip((b - x0) / (x1 - x0), 0.0, None)
    return np.asarray(y0 + w * (y1 - y0), dtype=float)


def _largest_batch(grid: FloatArray, times: FloatArray, limit_ms: float, z: float) -> FloatArray:
    """Largest mean batch per row whose percentile batch ``B + z√B`` has a step time within ``limit_ms``."""
    n = len(grid)
    ok = times <= limit_ms
    # Step time rises with the batch: the feasible points are a prefix of each row.
    count = np.where(ok.all(axis=1), n, np.where(ok.any(axis=1), (~ok).argmax(axis=1), 0))
    j = np.clip(count - 1, 0, n - 1)
    jn = np.clip(count, 0, n - 1)
    rows = np.arange(times.shape[0])
    t0, t1 = times[rows, j], times[rows, jn]
    frac = np.where((count < n) & (t1 > t0), (limit_ms - t0) / np.where(t1 > t0, t1 - t0, 1.0), 0.0)
    bp = grid[j] + (grid[jn] - grid[j]) * np.clip(frac, 0.0, 1.0)
    return np.where(count > 0, mean_from_percentile_batch(bp, z), 0.0)


def _interp_grid(times: FloatArray, b: FloatArray) -> FloatArray:
    """Step times (rows: buckets, over ``_BATCH_GRID``) at the batches ``b`` (same for every row)."""
    idx = np.clip(np.searchsorted(_BATCH_GRID, b) - 1, 0, len(_BATCH_GRID) - 2)
    x0, x1 = _BATCH_GRID[idx], _BATCH_GRID[idx + 1]
    w = np.clip((b - x0) / (x1 - x0), 0.0, None)
    return np.asarray(times[:, idx] + w * (times[:, idx + 1] - times[:, idx]), dtype=float)


# ---------------------------------------------------------------------------------------------- roles


def _prefill_caps(perf: PerfModel, shape: ReplicaShape, buckets: Sequence[LengthBucket], slo: SLO,
                  lim: ServingLimits) -> list[Capacity]:
    pct = target_percentile(slo.percentile)
    prompt = np.array([b.input_tokens for b in buckets], dtype=float)
    d = _prefill_ms(perf, shape, prompt, lim.prefill_slowdown)
    nbytes = np.asarray(handoff_bytes(shape.model, prompt), dtype=float)
    nic = handoff_nic_gbitps(shape)
    x = np.asarray(handoff_ms(nbytes, nic, lim.cross_zone_handoff), dtype=float)
    fixed = d + (x + admission_ms(slo) if lim.handoff_in_ttft else 0.0)  # TTFT at no load
    load = md1_max_load_array((slo.ttft_ms - fixed) / d, pct)
    rps_ttft = np.where(fixed < slo.ttft_ms, shape.pp * load / d * 1000.0, 0.0)
    cap_nic = nic * 1e9 * NET_EFFICIENCY / (nbytes * 8)
    rps = np.minimum(rps_ttft, cap_nic)
    out = []
    for i in range(len(buckets)):
        if fixed[i] >= slo.ttft_ms:
            why = ("prefill alone exceeds the TTFT SLO" if d[i] >= slo.ttft_ms
                   else "prefill, KV hand-off and decode admission exceed the TTFT SLO")
            out.append(Capacity(0.0, why, 1, float(fixed[i]), 0.0, 0.0, float(x[i])))
            continue
        why = "kv-transfer" if cap_nic[i] < rps_ttft[i] else "ttft"
        out.append(Capacity(float(rps[i]), why, 1, float(fixed[i]), 0.0, float(rps[i] * nbytes[i] * 8 / 1e9),
                            float(x[i])))
    return out


def _offload_scale(shape: ReplicaShape, batch: FloatArray, t_step: FloatArray, z: float) -> FloatArray:
    """Share of the rate the attention-offload link carries (Lamina's check: the per-step traffic within the
    share α of the step it may use)."""
    assert shape.memory_device is not None
    link_gbytes = min(shape.devices * shape.device.nic_gbitps_per_device(),
                      shape.memory_devices * shape.memory_device.nic_gbitps_per_device()) / 8 * NET_EFFICIENCY
    need = offload_bytes_per_token(shape.model) * percentile_batch(batch, z) / (OFFLOAD_ALPHA * t_step / 1000.0) / 1e9
    return np.asarray(np.where(need > link_gbytes, link_gbytes / np.maximum(need, 1e-12), 1.0), dtype=float)


def _decode_caps(perf: PerfModel, shape: ReplicaShape, buckets: Sequence[LengthBucket], slo: SLO,
                 lim: ServingLimits) -> list[Capacity]:
    """Decode-only replicas: each receives every request's KV cache over its NICs (see the module docstring)."""
    z = z_score(target_percentile(slo.percentile))
    p = shape.pp
    s_in = np.array([b.input_tokens for b in buckets], dtype=float)
    s_out = np.array([b.output_tokens for b in buckets], dtype=float)
    ctx = s_in + s_out / 2  # mean context over a request's decode
    kv_tokens = float(perf.memory(shape).kv_capacity_tokens) / p  # one engine's share
    times = _decode_ms(perf, shape, _BATCH_GRID, ctx, lim.decode_slowdown)
    step_limit = admission_step_ms(slo) if lim.handoff_in_ttft else slo.tpot_ms
    b_tpot = _largest_batch(_BATCH_GRID, times, step_limit, z)
    b_kv = mean_from_percentile_batch(kv_tokens / (s_in + s_out), z)
    b_cap = float(mean_from_percentile_batch(float(lim.engine_cap(p)), z))
    batch = np.minimum(np.minimum(b_tpot, b_kv), b_cap)
    limited = np.where(batch == b_tpot, "tpot", np.where(batch == b_kv, "kv-capacity", "max-num-seqs"))
    t_step = _interp_rows(_BATCH_GRID, times, np.maximum(batch, 1.0))
    rps = np.where(batch > 0, p * batch / (s_out * t_step / 1000.0), 0.0)
    nbytes = np.asarray(handoff_bytes(shape.model, s_in), dtype=float)
    nic = handoff_nic_gbitps(shape)
    cap_nic = nic * 1e9 * NET_EFFICIENCY / (nbytes * 8)
    limited = np.where(cap_nic < rps, "kv-transfer", limited)
    rps = np.minimum(rps, cap_nic)
    if shape.offload:
        scale = _offload_scale(shape, batch, t_step, z)
        limited = np.where(scale < 1.0, "offload-link", limited)
        rps = rps * scale
    x = np.asarray(handoff_ms(nbytes, nic, lim.cross_zone_handoff), dtype=float)
    caps = []
    for i in range(len(buckets)):
        if batch[i] <= 0 or t_step[i] > step_limit:
            caps.append(Capacity(0.0, "decode step alone exceeds the TPOT SLO" if kv_tokens > 0
                                 else "no KV capacity", 0, 0.0, float(times[i, 0]), 0.0, float(x[i])))
            continue
        caps.append(Capacity(float(rps[i]), str(limited[i]), float(batch[i]), 0.0, float(t_step[i]),
                             float(rps[i] * nbytes[i] * 8 / 1e9), float(x[i])))
    return caps


_UNIFIED_GRID = np.geomspace(0.02, MAX_BATCH, 96)  # ≤ 3% from a 400-point grid, median 0.05%


def _unified_caps(perf: PerfModel, shape: ReplicaShape, buckets: Sequence[LengthBucket], slo: SLO,
                  lim: ServingLimits) -> list[Capacity]:
    """Parametrise one engine by its mean decode batch B: Little's law with prefill stalls gives its rate
    explicitly, ``λ = B / (s_out·T(B) + B·D)``, so every constraint is checked on a grid of B at once."""
    pct = target_percentile(slo.percentile)
    z = z_score(pct)
    p = shape.pp
    s_in = np.array([b.input_tokens for b in buckets], dtype=float)[:, None]
    s_out = np.array([b.output_tokens for b in buckets], dtype=float)[:, None]
    d = _prefill_ms(perf, shape, s_in[:, 0], lim.prefill_slowdown)[:, None]
    grid = _UNIFIED_GRID
    times = _decode_ms(perf, shape, _BATCH_GRID, (s_in + s_out / 2)[:, 0], lim.decode_slowdown)
    t_mean = _interp_grid(times, np.maximum(grid, 1.0))
    b_pct = percentile_batch(grid, z)[None, :]
    t_pct = _interp_grid(times, np.maximum(b_pct[0], 1.0))
    kv_tokens = float(perf.memory(shape).kv_capacity_tokens) / p
    cap = float(lim.engine_cap(p))
    lam = grid[None, :] * 1000.0 / (s_out * t_mean + grid[None, :] * d)  # req/s of one engine
    rho = lam * d / 1000.0
    t_eff = t_mean / np.maximum(1 - rho, 1e-9)
    interrupts = lam * s_out * t_eff / 1000.0
    tpot = t_pct + interruption_quantile(interrupts, rho, pct) * d / s_out
    ttft = d + t_pct
    m_ttft = md1_max_load_array((slo.ttft_ms - ttft) / d, pct) - rho
    m_tpot = (slo.tpot_ms - tpot) / slo.tpot_ms
    m_kv = (kv_tokens - b_pct * (s_in + s_out)) / max(kv_tokens, 1.0)
    m_cap = np.broadcast_to((cap - b_pct) / cap, m_kv.shape)
    margins = np.stack([m_ttft, m_tpot, m_kv, m_cap])
    margin = margins.min(axis=0)
    # λ(B) rises with B and the margins fall: take the last point before the first infeasible one and
    # interpolate the binding margin's zero crossing to the next grid point.
    n = len(grid)
    infeasible = margin < 0
    first_bad = np.where(infeasible.any(axis=1), infeasible.argmax(axis=1), n)
    j = first_bad - 1
    rows = np.arange(len(buckets))
    jc = np.clip(j, 0, n - 1)
    jn = np.clip(j + 1, 0, n - 1)
    m0, m1 = margin[rows, jc], margin[rows, jn]
    w = np.where((j + 1 < n) & (m0 > m1), m0 / np.where(m0 > m1, m0 - m1, 1.0), 0.0)
    lam_star = lam[rows, jc] + w * (lam[rows, jn] - lam[rows, jc])
    b_star = grid[jc] + w * (grid[jn] - grid[jc])
    names = ("ttft", "tpot", "kv-capacity", "max-num-seqs")
    caps = []
    for i in range(len(buckets)):
        if j[i] < 0:
            why = names[int(margins[:, i, 0].argmin())]
            caps.append(Capacity(0.0, why, 0, float(d[i, 0]), float(times[i, 0])))
            continue
        why = names[int(margins[:, i, jn[i]].argmin())] if j[i] + 1 < n else "max-batch"
        caps.append(Capacity(float(p * lam_star[i]), why, float(b_star[i]), float(ttft[i, jc[i]]),
                             float(tpot[i, jc[i]])))
    return caps


# ---------------------------------------------------------------------------------------------- public


def capacity_table(perf: PerfModel, shape: ReplicaShape, role: Role, buckets: Sequence[LengthBucket],
                   slo: SLO, limits: ServingLimits | None = None) -> list[Capacity]:
    """Capacity of one replica for each bucket (all buckets evaluated together; results memoised)."""
    lim = limits or ServingLimits()
    try:
        key = cast(Hashable, perf)
        return list(_capacity_table_cached(key, shape, role, tuple(buckets), slo, lim))
    except TypeError:  # an unhashable performance model: compute without the memo
        return _capacity_table(perf, shape, role, buckets, slo, lim)


@lru_cache(maxsize=200_000)
def _capacity_table_cached(perf: Hashable, shape: ReplicaShape, role: Role, buckets: tuple[LengthBucket, ...],
                           slo: SLO, lim: ServingLimits) -> tuple[Capacity, ...]:
    assert isinstance(perf, PerfModel)
    return tuple(_capacity_table(perf, shape, role, buckets, slo, lim))


def _capacity_table(perf: PerfModel, shape: ReplicaShape, role: Role, buckets: Sequence[LengthBucket],
                    slo: SLO, lim: ServingLimits) -> list[Capacity]:
    check_shape(shape)
    if not buckets:
        return []
    spec = ROLES[role]
    if spec.memory_devices and not shape.offload:
        raise ValueError(f"memory_devices: the {role.value} role needs memory devices")
    if not spec.memory_devices and shape.offload:
        raise ValueError(f"memory_devices: role {role.value} does not use memory devices")
    if not perf.memory(shape).fits:
        return [Capacity(0.0, "memory: " + perf.memory(shape).reason, 0, 0.0, 0.0) for _ in buckets]
    if not spec.decode:
        return _prefill_caps(perf, shape, buckets, slo, lim)
    if not spec.prefill:  # a decode replica receives each request's KV cache over its NICs
        return _decode_caps(perf, shape, buckets, slo, lim)
    return _unified_caps(perf, shape, buckets, slo, lim)


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
