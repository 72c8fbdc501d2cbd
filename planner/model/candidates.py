"""Candidates: the configurations a service could run in (``planner.model.configurations``) that serve at least
one of its length buckets within its SLO, each with its capacity per bucket, price and power: the MILP's
columns.

A fleet repeats itself: services share models, SLOs and length buckets, and a shape's step times do not
depend on the SLO or the role. So one pass over the fleet computes each capacity table once per (shape, role,
bucket lengths, SLO) and each step-time table once per (shape, lengths) (``_StepTimes``), and shares prices,
watts and labels between the services that run the same configuration.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.catalog import Catalog
from planner.clock import Deadline
from planner.model.capacity import Capacity, capacity_table, replica_power_watts
from planner.model.configurations import CandidateStats, ServiceConfiguration, column_key, fleet_configurations
from planner.model.memory import MemoryFit
from planner.model.perf import PerfModel, ReplicaShape
from planner.model.roofline import RooflinePerfModel
from planner.schema import Configuration, FleetSpec, LengthBucket, Pool, Service
from planner.solve import Column

__all__ = ["DROP_NO_BUCKET", "Candidate", "CandidateStats", "CandidatesLate", "column_key",
           "configuration_capacities", "generate_candidates", "serves_some_bucket"]

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


def configuration_capacities(perf: PerfModel, option: ServiceConfiguration,
                             buckets: Sequence[LengthBucket]) -> tuple[Capacity, ...]:
    """Capacity of one replica of the configuration for each of its service's buckets, within its SLO."""
    return tuple(capacity_table(perf, option.shape, option.configuration.role, list(buckets), option.service.slo))


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


class _Pass:
    """One pass of candidate generation over a fleet: what its services share, remembered."""

    def __init__(self, catalog: Catalog, perf: PerfModel) -> None:
        self.catalog = catalog
        # Only the roofline's own step times are remembered; another model (measured tables) is asked each time.
        self.perf: PerfModel = _StepTimes(perf) if type(perf) is RooflinePerfModel else perf
        self.tables: dict[tuple[Any, ...], tuple[Capacity, ...]] = {}
        self.watts: dict[tuple[Any, ...], tuple[float, float]] = {}
        self.prices: dict[str, float] = {}
        self.labels: dict[int, str] = {}

    def capacities(self, option: ServiceConfiguration, lengths: tuple[tuple[int, int], ...],
                   buckets: Sequence[LengthBucket]) -> tuple[Capacity, ...]:
        slo = option.service.slo
        key = (shape_key(option.shape), option.configuration.role, lengths, slo.ttft_ms, slo.tpot_ms, slo.percentile)
        caps = self.tables.get(key)
        if caps is None:
            caps = self.tables[key] = configuration_capacities(self.perf, option, buckets)
        return caps

    def price(self, pool: Pool) -> float:
        if pool.id not in self.prices:
            self.prices[pool.id] = self.catalog.pool_price(pool)
        return self.prices[pool.id]

    def candidate(self, option: ServiceConfiguration, caps: tuple[Capacity, ...]) -> Candidate:
        cfg, mpool = option.configuration, option.memory_pool
        cost = self.price(option.pool) * cfg.devices
        if mpool is not None:
            cost += self.price(mpool) * cfg.memory_devices
        wkey = (shape_key(option.shape), cfg.role)
        if wkey not in self.watts:
            self.watts[wkey] = replica_power_watts(option.shape, cfg.role)
        idle_w, active_w = self.watts[wkey]
        label = self.labels.get(id(cfg))
        if label is None:
            label = self.labels[id(cfg)] = cfg.label()
        col = Column(key=option.key, service=option.service.id, role=cfg.role, pool=option.pool.id,
                     devices=cfg.devices, memory_pool=mpool.id if mpool else None, memory_devices=cfg.memory_devices,
                     capacity_rps=tuple(c.rps for c in caps), idle_watts=idle_w, active_watts=active_w, label=label)
        return Candidate(column=col, service=option.service, pool=option.pool, memory_pool=mpool, configuration=cfg,
                         capacities=caps, usd_per_hour=cost)


def generate_candidates(fleet: FleetSpec, catalog: Catalog, perf: PerfModel,
                        buckets: Mapping[str, Sequence[LengthBucket]],
                        deadline: Deadline | None = None) -> tuple[list[Candidate], CandidateStats]:
    """All feasible candidates of every service, with capacities per bucket from the performance model.

    Raises CandidatesLate when ``deadline`` passes before they are all computed."""
    stats = CandidateStats()
    out: list[Candidate] = []
    run = _Pass(catalog, perf)
    lengths = {s: tuple((b.input_tokens, b.output_tokens) for b in bs) for s, bs in buckets.items()}
    for i, option in enumerate(fleet_configurations(fleet, catalog, run.perf, stats)):
        if deadline is not None and i % _CHECK_EVERY == 0 and deadline.expired():
            raise CandidatesLate(f"candidate generation stopped at the deadline after {i} configurations")
        sid = option.service.id
        caps = run.capacities(option, lengths[sid], buckets[sid])
        if not serves_some_bucket(caps):
            stats.drop(DROP_NO_BUCKET)
            continue
        out.append(run.candidate(option, caps))
        stats.kept += 1
    return out, stats
