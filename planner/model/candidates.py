"""Candidates: the configurations a service could run in (``planner.model.configurations``) that serve at least
one of its length buckets within its SLO, each with its capacity per bucket, price and power: the MILP's
columns.

A fleet repeats itself: services share models, SLOs and length buckets, and a shape's step times do not
depend on the SLO or the role. So one pass over the fleet computes each capacity table once per (shape, role,
bucket lengths, SLO) and each step-time table once per (shape, lengths) (``_StepTimes``), and shares prices,
watts and labels between the services that run the same configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.catalog import Catalog
from planner.clock import Deadline
from planner.model.calibration import Calibration
from planner.model.capacity import Capacity, ServingLimits, capacity_table, replica_power_watts
from planner.model.configurations import CandidateStats, ServiceConfiguration, column_key, fleet_configurations
from planner.model.handoff import handoff_nic_gbitps
from planner.model.memory import MemoryFit
from planner.model.perf import PerfModel, ReplicaShape
from planner.model.roofline import RooflinePerfModel
from planner.roles import ROLES
from planner.schema import Configuration, FleetSpec, LengthBucket, Pool, Service
from planner.solve import Column

# The limits a configuration is sized under (batch cap, step-time slowdowns, cross-zone hand-off); the
# pipeline builds it from the fleet and the calibration's error bands.
LimitsFor = Callable[[ServiceConfiguration], ServingLimits]

__all__ = ["DROP_NO_BUCKET", "Candidate", "CandidateStats", "CandidatesLate", "LimitsFor", "band_slowdown",
           "column_key", "configuration_capacities", "fleet_limits", "generate_candidates", "serves_some_bucket"]

DROP_NO_BUCKET = "meets the SLO for no bucket"
# Candidate generation looks at the deadline once per this many configurations.
_CHECK_EVERY = 200


class CandidatesLate(Exception):
    """Candidate generation did not finish by the command's deadline."""


@dataclass(frozen=True)
class Candidate:
    """One column of the MILP together with what it means in the fleet's words."""

    column: Column
    service: Service
    pool: Pool
    memory_pool: Pool | None
    configuration: Configuration
    capacities: tuple[Capacity, ...]
    usd_per_hour: float  # one replica, compute and memory devices
    limits: ServingLimits = ServingLimits()


def configuration_capacities(perf: PerfModel, option: ServiceConfiguration, buckets: Sequence[LengthBucket],
                             limits: ServingLimits | None = None) -> tuple[Capacity, ...]:
    """Capacity of one replica of the configuration for each of its service's buckets, within its SLO."""
    return tuple(capacity_table(perf, option.shape, option.configuration.role, list(buckets), option.service.slo,
                                limits))


def serves_some_bucket(capacities: Sequence[Capacity]) -> bool:
    """Whether a configuration is a candidate: it serves at least one bucket within the SLO."""
    return any(c.rps > 0 for c in capacities)


def shape_key(shape: ReplicaShape) -> tuple[str, str, int, int, str | None, int]:
    """A shape by the catalog ids of its model and devices and its counts: equal shapes, equal keys (cheaper
    than hashing the pydantic models inside a shape)."""
    return (shape.model.id, shape.device.id, shape.tp, shape.pp,
            shape.memory_device.id if shape.memory_device is not None else None, shape.memory_devices)


class _StepTimes(RooflinePerfModel):
    """The roofline with its step-time tables and memory fits remembered per shape for one pass over a fleet.

    Unhashable on purpose: ``capacity_table`` then computes each table itself rather than filling its
    process-wide memo (the pass keeps its own, keyed by ``shape_key`` rather than by hashing shapes).
    """

    __hash__ = None  # type: ignore[assignment]

    def __init__(self, inner: RooflinePerfModel) -> None:
        super().__init__(inner.calibration)
        self._tables: dict[tuple[Any, ...], Any] = {}
        self._fits: dict[tuple[Any, ...], MemoryFit] = {}

    @staticmethod
    def _key(kind: str, shape: ReplicaShape, *arrays: Any) -> tuple[Any, ...]:
        return (kind, shape_key(shape), *((np.shape(a), np.asarray(a, dtype=float).tobytes()) for a in arrays))

    def prefill_ms_array(self, shape: ReplicaShape, batch: Any, prompt_tokens: Any) -> Any:
        """The roofline's prefill times, computed once per shape and lengths."""
        key = self._key("prefill", shape, batch, prompt_tokens)
        if key not in self._tables:
            self._tables[key] = _frozen(super().prefill_ms_array(shape, batch, prompt_tokens))
        return self._tables[key]

    def decode_step_ms_array(self, shape: ReplicaShape, batch: Any, context_tokens: Any) -> Any:
        """The roofline's decode step times, computed once per shape and grid."""
        key = self._key("decode", shape, batch, context_tokens)
        if key not in self._tables:
            self._tables[key] = _frozen(super().decode_step_ms_array(shape, batch, context_tokens))
        return self._tables[key]

    def memory(self, shape: ReplicaShape) -> MemoryFit:
        """The roofline's memory fit, once per shape."""
        key = shape_key(shape)
        fit = self._fits.get(key)
        if fit is None:
            fit = self._fits[key] = super().memory(shape)
        return fit


def _frozen(values: Any) -> Any:
    """A read-only array (a remembered table must not be changed by a caller)."""
    if isinstance(values, np.ndarray):
        values.flags.writeable = False
    return values


@dataclass(frozen=True)
class _Table:
    """A capacity table with what its columns take from it: the rates, and whether it serves any bucket."""

    caps: tuple[Capacity, ...]
    rps: tuple[float, ...]
    serves: bool


@dataclass(frozen=True)
class _Config:
    """What the services running one configuration in one pool share: the key's tail, price, watts, label."""

    key_tail: str
    usd_per_hour: float
    idle_watts: float
    active_watts: float
    label: str
    handoff_gbitps: float


class _Pass:
    """One pass of candidate generation over a fleet: what its services share, remembered."""

    def __init__(self, catalog: Catalog, perf: PerfModel) -> None:
        self.catalog = catalog
        # Only the roofline's own step times are remembered; another model (measured tables) is asked each time.
        self.perf: PerfModel = _StepTimes(perf) if type(perf) is RooflinePerfModel else perf
        self.tables: dict[tuple[Any, ...], _Table] = {}
        self.configs: dict[tuple[Any, ...], _Config] = {}
        self.prices: dict[str, float] = {}

    def table(self, option: ServiceConfiguration, lengths: tuple[tuple[int, int], ...],
              buckets: Sequence[LengthBucket], limits: ServingLimits) -> _Table:
        """The configuration's capacity table for its service's lengths and SLO under ``limits`` (once per
        shape, role, lengths, SLO and limits)."""
        slo = option.service.slo
        key = (shape_key(option.shape), option.configuration.role, lengths, slo.ttft_ms, slo.tpot_ms, slo.percentile,
               limits)
        found = self.tables.get(key)
        if found is None:
            caps = configuration_capacities(self.perf, option, buckets, limits)
            rps = tuple(c.rps for c in caps)
            found = self.tables[key] = _Table(caps, rps, any(r > 0 for r in rps))
        return found

    def price(self, pool: Pool) -> float:
        if pool.id not in self.prices:
            self.prices[pool.id] = self.catalog.pool_price(pool)
        return self.prices[pool.id]

    def config(self, option: ServiceConfiguration) -> _Config:
        """What every service running this configuration in this pool shares."""
        cfg, mpool = option.configuration, option.memory_pool
        ckey = (option.pool.id, id(cfg), mpool.id if mpool else None)
        found = self.configs.get(ckey)
        if found is None:
            cost = self.price(option.pool) * cfg.devices
            if mpool is not None:
                cost += self.price(mpool) * cfg.memory_devices
            idle_w, active_w = replica_power_watts(option.shape, cfg.role)
            # column_key(service, …) is the service's id, then this tail.
            tail = column_key("", option.pool.id, cfg, mpool.id if mpool else None)
            spec = ROLES[cfg.role]
            # Prefill and decode-only replicas hand KV caches over their NICs: the hand-off family pairs them by it.
            handoff = handoff_nic_gbitps(option.shape) if spec.prefill != spec.decode else 0.0
            found = self.configs[ckey] = _Config(tail, cost, idle_w, active_w, cfg.label(), handoff)
        return found

    def candidate(self, option: ServiceConfiguration, table: _Table, limits: ServingLimits) -> Candidate:
        """The candidate of one service's configuration."""
        cfg, mpool = option.configuration, option.memory_pool
        shared = self.config(option)
        col = Column(key=option.service.id + shared.key_tail, service=option.service.id, role=cfg.role,
                     pool=option.pool.id, devices=cfg.devices, memory_pool=mpool.id if mpool else None,
                     memory_devices=cfg.memory_devices, capacity_rps=table.rps, idle_watts=shared.idle_watts,
                     active_watts=shared.active_watts, label=shared.label, handoff_gbitps=shared.handoff_gbitps)
        return Candidate(column=col, service=option.service, pool=option.pool, memory_pool=mpool, configuration=cfg,
                         capacities=table.caps, usd_per_hour=shared.usd_per_hour, limits=limits)


def generate_candidates(fleet: FleetSpec, catalog: Catalog, perf: PerfModel,
                        buckets: Mapping[str, Sequence[LengthBucket]],
                        limits: LimitsFor | None = None, deadline: Deadline | None = None,
                        ) -> tuple[list[Candidate], CandidateStats]:
    """All feasible candidates of every service, with capacities per bucket from the performance model under
    ``limits`` (default: vLLM's batch cap, the model's step times, same-zone hand-offs).

    Raises CandidatesLate when ``deadline`` passes before they are all computed."""
    stats = CandidateStats()
    out: list[Candidate] = []
    run = _Pass(catalog, perf)
    lengths = {s: tuple((b.input_tokens, b.output_tokens) for b in bs) for s, bs in buckets.items()}
    for i, option in enumerate(fleet_configurations(fleet, catalog, run.perf, stats)):
        if deadline is not None and i % _CHECK_EVERY == 0 and deadline.expired():
            raise CandidatesLate(f"candidate generation stopped at the deadline after {i} configurations")
        sid = option.service.id
        lim = limits(option) if limits is not None else ServingLimits()
        table = run.table(option, lengths[sid], buckets[sid], lim)
        if not table.serves:
            stats.drop(DROP_NO_BUCKET)
            continue
        out.append(run.candidate(option, table, lim))
        stats.kept += 1
    return out, stats


def band_slowdown(calibration: Calibration, device: str, phase: str, engine: str, robustness: str) -> float:
    """Step-time factor of robust planning: ``1 + error/100`` at the band's median (``p50``) or 90th percentile
    (``p90``) for the device, engine and phase; 1 for ``none`` or where no band is known."""
    if robustness == "none":
        return 1.0
    band = calibration.error_band(device, phase, engine)
    if band is None:
        return 1.0
    return 1.0 + (band.median_pct if robustness == "p50" else band.p90_pct) / 100.0


def fleet_limits(fleet: FleetSpec, calibration: Calibration) -> LimitsFor:
    """The limits every configuration of the fleet is sized under: the batch cap (the planner's
    ``max_num_seqs``, else the engine profile's), the robustness slowdown of its device's error band, and the
    service's hand-off policy."""
    opts = fleet.planner
    engine = calibration.engine
    cap = opts.max_num_seqs or calibration.engine_profile(engine).max_num_seqs

    def limits(option: ServiceConfiguration) -> ServingLimits:
        dev = option.configuration.device
        return ServingLimits(max_num_seqs=cap,
                             prefill_slowdown=band_slowdown(calibration, dev, "prefill", engine, opts.robustness),
                             decode_slowdown=band_slowdown(calibration, dev, "decode", engine, opts.robustness),
                             cross_zone_handoff=option.service.kv_handoff == "cross-zone")

    return limits
