r"""Engine limits derived from the plan: the longest request and the batch the planner sized each replica for.

* ``max_model_len`` = the longest request the service's demand holds (``input + output`` tokens of its
  longest length bucket, from ``Plan.demand``, else the fleet's buckets), rounded up to 256 and at most the
  model's context; the model's context when the lengths are unknown (a trace the plan does not carry).
* ``max_num_seqs``: a decode, unified or decode+offload replica runs the percentile batch the capacity model
  sized it for, ``pp·⌈B + z·√B⌉`` (``B`` one pipeline engine's mean batch, ``z`` at the percentile each SLO
  target is checked at), the largest over the buckets it serves (the planner's own ``capacity_table`` under the
  fleet's batch cap, so the cap and the plan agree and the rendered value never exceeds the cap); a prefill
  replica takes one prompt per pipeline stage at a time (``pp``), as the capacity model assumes. None where
  the model gives no batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

from planner.io.profiles import default_perf_model
from planner.model.capacity import DEFAULT_MAX_NUM_SEQS, ServingLimits, capacity_table
from planner.model.perf import PerfModel, ReplicaShape
from planner.model.queueing import target_percentile, z_score
from planner.model.roofline import RooflinePerfModel
from planner.schema import SLO, DeviceType, LengthBucket, ModelSpec, Plan, ReplicaGroup, Role, Service

ROUND_TOKENS = 256


@dataclass(frozen=True)
class Sizing:
    """Engine limits of one replica group (None: leave the engine's default)."""

    max_model_len: int | None = None
    max_num_seqs: int | None = None


@cache
def perf_model(engine: str) -> PerfModel:
    """The planner's performance model for ``engine`` (built once per engine)."""
    return default_perf_model(engine)


def service_buckets(service: Service, plan: Plan) -> list[LengthBucket]:
    """The length buckets the plan was sized for (its stored demand, else the fleet's), or [] when unknown."""
    for demand in plan.demand:
        if demand.service == service.id:
            return list(demand.buckets)
    try:
        return service.traffic.length_buckets()
    except ValueError:
        return []


def max_model_len(model: ModelSpec, buckets: list[LengthBucket]) -> int:
    """The longest request of ``buckets`` rounded up to 256 tokens, at most the model's context."""
    if not buckets:
        return model.max_context_tokens
    longest = max(b.input_tokens + b.output_tokens for b in buckets)
    return min(model.max_context_tokens, math.ceil(longest / ROUND_TOKENS) * ROUND_TOKENS)


def _served(group: ReplicaGroup, buckets: list[LengthBucket]) -> list[LengthBucket]:
    """The buckets a group serves (its load, when the plan gives one)."""
    if not group.load:
        return buckets
    mine = {(ld.input_tokens, ld.output_tokens) for ld in group.load if ld.decode_share > 0 or ld.prefill_share > 0}
    return [b for b in buckets if (b.input_tokens, b.output_tokens) in mine] or buckets


def batch_cap(perf: PerfModel, cap: int | None) -> int:
    """The fleet's ``planner.max_num_seqs``, else the engine profile's, else vLLM's default."""
    if cap is not None:
        return cap
    if isinstance(perf, RooflinePerfModel):
        return perf.calibration.engine_profile().max_num_seqs
    return DEFAULT_MAX_NUM_SEQS


def max_num_seqs(perf: PerfModel, shape: ReplicaShape, role: Role, buckets: list[LengthBucket],
                 slo: SLO, cap: int | None = None) -> int | None:
    """The percentile batch the capacity model sized one replica for, within the batch cap (module docstring)."""
    if role is Role.PREFILL:
        return shape.pp
    if not buckets:
        return None
    limit = batch_cap(perf, cap)
    try:
        caps = capacity_table(perf, shape, role, buckets, slo, ServingLimits(max_num_seqs=limit))
    except (ValueError, KeyError):
        return None
    batch = max((c.batch for c in caps), default=0.0)
    if batch <= 0:
        return None
    z = z_score(target_percentile(slo.percentile))
    return min(limit, max(1, shape.pp * math.ceil(batch + z * math.sqrt(batch) - 1e-9)))


def group_sizing(group: ReplicaGroup, service: Service, plan: Plan, model: ModelSpec, device: DeviceType,
                 memory_device: DeviceType | None, engine: str, cap: int | None = None) -> Sizing:
    """``max_model_len`` and ``max_num_seqs`` of one replica group (``cap``: the fleet's batch cap)."""
    cfg = group.configuration
    buckets = service_buckets(service, plan)
    shape = ReplicaShape(model=model, device=device, tp=cfg.tp, pp=cfg.pp, memory_device=memory_device,
                         memory_devices=cfg.memory_devices if memory_device else 0)
    seqs = max_num_seqs(perf_model(engine), shape, cfg.role, _served(group, buckets), service.slo, cap)
    return Sizing(max_model_len=max_model_len(model, buckets), max_num_seqs=seqs)
