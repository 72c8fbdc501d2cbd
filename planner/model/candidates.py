"""Candidates: the configurations a service could run in (``planner.model.configurations``) that serve at least
one of its length buckets within its SLO, each with its capacity per bucket, price and power: the MILP's
columns.

A fleet repeats itself: services share models, SLOs and length buckets, and a shape's step times do not
depend on the SLO or the role. So one pass over the fleet first lists every configuration, then computes each
capacity table once per (shape, role, bucket lengths, SLO, limits), the shapes and SLOs that share a model,
role, lengths and percentile together (``shapes_capacity_tables``, unified replicas first), and each step-time
table once per (shape, lengths) (``_StepTimes``), and shares prices, watts and labels between the services that
run the same configuration. Past ``price_by`` the roles other than unified are left unpriced where unified
replicas already serve every bucket and pricing at its pace would not end soon (an anytime answer for fleets
too large for their time limit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from planner.catalog import Catalog
from planner.clock import Deadline
from planner.model.calibration import Calibration
from planner.model.capacity import (
    Capacity,
    ServingLimits,
    TableRef,
    capacity_table,
    replica_power_watts,
    shapes_capacity_tables,
)
from planner.model.configurations import CandidateStats, ServiceConfiguration, column_key, fleet_configurations
from planner.model.handoff import handoff_nic_gbitps
from planner.model.memory import MemoryFit
from planner.model.perf import PerfModel, ReplicaShape
from planner.model.roofline import RooflinePerfModel
from planner.roles import ROLES
from planner.schema import SLO, Configuration, FleetSpec, LengthBucket, Pool, Role, Service
from planner.solve import Column

# The limits a configuration is sized under (batch cap, step-time slowdowns, cross-zone hand-off); the
# pipeline builds it from the fleet and the calibration's error bands.
LimitsFor = Callable[[ServiceConfiguration], ServingLimits]

__all__ = ["DROP_NO_BUCKET", "DROP_UNPRICED", "Candidate", "CandidateStats", "CandidatesLate", "LimitsFor",
           "band_slowdown", "column_key", "configuration_capacities", "fleet_limits", "generate_candidates",
           "serves_some_bucket"]

DROP_NO_BUCKET = "meets the SLO for no bucket"
DROP_UNPRICED = "not priced by the deadline"
# Candidate generation looks at the deadline once per this many configurations.
_CHECK_EVERY = 200
# Capacity tables computed together: at most about this many (shape, SLO, bucket) rows at a time.
_ROWS_PER_BATCH = 4096
# Past ``price_by``, pricing goes on where at its pace it ends within this share of the time from ``price_by``
# to the deadline.
_FINISH_SHARE = 0.5


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
    table: _Table
    usd_per_hour: float  # one replica, compute and memory devices
    limits: ServingLimits = ServingLimits()

    @property
    def capacities(self) -> tuple[Capacity, ...]:
        """Capacity of one replica per bucket of its service, within its SLO."""
        return self.table.capacities()


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
    """A capacity table with what its columns take from it: the rates, and whether it serves any bucket; its
    Capacity rows are built when asked."""

    ref: TableRef
    rps: tuple[float, ...]
    serves: bool

    def capacities(self) -> tuple[Capacity, ...]:
        """The table's Capacity per bucket."""
        return tuple(self.ref.capacities())


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

    @staticmethod
    def key(option: ServiceConfiguration, lengths: tuple[tuple[int, int], ...],
            limits: ServingLimits) -> tuple[Any, ...]:
        """What a capacity table depends on: shape, role, bucket lengths, the SLO's percentile, then its targets
        and the limits."""
        slo = option.service.slo
        return (shape_key(option.shape), option.configuration.role, lengths, slo.percentile, slo.ttft_ms,
                slo.tpot_ms, limits)

    def fill(self, todo: Sequence[tuple[ServiceConfiguration, ServingLimits]],
             lengths: Mapping[str, tuple[tuple[int, int], ...]], buckets: Mapping[str, Sequence[LengthBucket]],
             deadline: Deadline | None, price_by: Deadline | None = None) -> None:
        """Every capacity table the configurations need: those of one model, role, bucket lengths and SLO
        percentile, every shape, limits and SLO of them, computed together (``shapes_capacity_tables``), at
        most ``_ROWS_PER_BATCH`` rows at a time, unified replicas first. Raises CandidatesLate when
        ``deadline`` passes first; past ``price_by`` it leaves the other roles unpriced unless at its pace it
        ends soon after (``_stop``)."""
        # (model, role, lengths, percentile) → (shape, limits) → (an option of that shape, limits, keys → SLOs)
        Entry = tuple[ServiceConfiguration, ServingLimits, dict[tuple[Any, ...], SLO]]
        groups: dict[tuple[Any, ...], dict[tuple[Any, ...], Entry]] = {}
        for option, lim in todo:
            key = self.key(option, lengths[option.service.id], lim)
            if key not in self.tables:
                shapes = groups.setdefault((key[0][0], *key[1:4]), {})
                shapes.setdefault((key[0], lim), (option, lim, {}))[2].setdefault(key, option.service.slo)
        done = 0
        total = sum(len(e[2]) for shapes in groups.values() for e in shapes.values())
        start = price_by.now() if price_by is not None else 0.0
        for group, shapes in sorted(groups.items(), key=lambda g: g[0][1] != Role.UNIFIED):
            cut = price_by if group[1] != Role.UNIFIED else None
            batch: list[Entry] = []
            rows = 0
            last = len(shapes) - 1
            for n, entry in enumerate(shapes.values()):
                batch.append(entry)
                rows += len(entry[2]) * len(buckets[entry[0].service.id])
                if rows >= _ROWS_PER_BATCH or n == last:
                    if cut is not None and self._stop(cut, deadline, start, done, total):
                        return
                    done += self._compute(batch, buckets, deadline, done, len(todo))
                    batch, rows = [], 0

    @staticmethod
    def _stop(price_by: Deadline, deadline: Deadline | None, start: float, done: int, total: int) -> bool:
        """Past ``price_by``, pricing stops unless at its pace so far it ends before halfway from ``price_by``
        to ``deadline``."""
        now = price_by.now()
        if now < price_by.end:
            return False
        if deadline is None or done <= 0:
            return True
        finish = now + (now - start) / done * (total - done)
        return finish > price_by.end + _FINISH_SHARE * (deadline.end - price_by.end)

    def _compute(self, batch: Sequence[tuple[ServiceConfiguration, ServingLimits, dict[tuple[Any, ...], SLO]]],
                 buckets: Mapping[str, Sequence[LengthBucket]], deadline: Deadline | None, done: int,
                 total: int) -> int:
        """The tables of one batch of shapes (same model, role, lengths and percentile); how many."""
        if deadline is not None and deadline.expired():
            raise CandidatesLate(f"candidate generation stopped at the deadline after {done} of {total} "
                                 "capacity tables")
        first = batch[0][0]
        tables = shapes_capacity_tables(self.perf, first.configuration.role, buckets[first.service.id],
                                        [(option.shape, lim, list(slos.values())) for option, lim, slos in batch])
        for (_, _, slos), per_slo in zip(batch, tables, strict=True):
            for key, ref in zip(slos, per_slo, strict=True):
                rps = ref.rates()
                self.tables[key] = _Table(ref, rps, any(r > 0 for r in rps))
        return sum(len(slos) for _, _, slos in batch)

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
                         table=table, usd_per_hour=shared.usd_per_hour, limits=limits)


def generate_candidates(fleet: FleetSpec, catalog: Catalog, perf: PerfModel,
                        buckets: Mapping[str, Sequence[LengthBucket]],
                        limits: LimitsFor | None = None, deadline: Deadline | None = None,
                        price_by: Deadline | None = None) -> tuple[list[Candidate], CandidateStats]:
    """All feasible candidates of every service, with capacities per bucket from the performance model under
    ``limits`` (default: vLLM's batch cap, the model's step times, same-zone hand-offs).

    Raises CandidatesLate when ``deadline`` passes before they are all computed. Unified configurations are
    priced first; past ``price_by`` the others not priced yet are left out (counted as ``DROP_UNPRICED``) where
    pricing at its pace would not end soon after and every bucket of every service is already served, else
    pricing goes on to ``deadline``."""
    stats = CandidateStats()
    out: list[Candidate] = []
    run = _Pass(catalog, perf)
    lengths = {s: tuple((b.input_tokens, b.output_tokens) for b in bs) for s, bs in buckets.items()}
    todo: list[tuple[ServiceConfiguration, ServingLimits]] = []
    for i, option in enumerate(fleet_configurations(fleet, catalog, run.perf, stats)):
        if deadline is not None and i % _CHECK_EVERY == 0 and deadline.expired():
            raise CandidatesLate(f"candidate generation stopped at the deadline after {i} configurations")
        todo.append((option, limits(option) if limits is not None else ServingLimits()))
    run.fill(todo, lengths, buckets, deadline, price_by)
    keys = [run.key(option, lengths[option.service.id], lim) for option, lim in todo]
    if any(k not in run.tables for k in keys) and not _served(todo, keys, run, buckets):
        run.fill(todo, lengths, buckets, deadline)  # not every bucket is served yet: price the rest
    for (option, lim), key in zip(todo, keys, strict=True):
        table = run.tables.get(key)
        if table is None:
            stats.drop(DROP_UNPRICED)
            continue
        if not table.serves:
            stats.drop(DROP_NO_BUCKET)
            continue
        out.append(run.candidate(option, table, lim))
        stats.kept += 1
    return out, stats


def _served(todo: Sequence[tuple[ServiceConfiguration, ServingLimits]], keys: Sequence[tuple[Any, ...]], run: _Pass,
            buckets: Mapping[str, Sequence[LengthBucket]]) -> bool:
    """Whether the tables priced so far serve every bucket of every service (some configuration each)."""
    mine: dict[str, set[tuple[Any, ...]]] = {sid: set() for sid in buckets}
    for (option, _), key in zip(todo, keys, strict=True):
        mine[option.service.id].add(key)
    for sid, bs in buckets.items():
        rates = [t.rps for k in mine[sid] for t in [run.tables.get(k)] if t is not None and t.serves]
        if bs and (not rates or not bool((np.array(rates) > 0).any(axis=0).all())):
            return False
    return True


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
