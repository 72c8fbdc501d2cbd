"""Candidates: the configurations a service could run in (``planner.model.configurations``) that serve at least
one of its length buckets within its SLO, each with its capacity per bucket, price and power: the MILP's
columns.

A fleet repeats itself: services share models, SLOs and length buckets, and a shape's step times do not
depend on the SLO or the role. So one pass over the fleet first lists every configuration once per group of
services with the same choices (``grouped_configurations``), then computes each capacity table once per
(shape, role, bucket lengths, SLO, limits), the shapes and SLOs that share a model, role, lengths and
percentile together (``shapes_capacity_tables``, unified replicas first), and each step-time table once per
(shape, lengths) (``_StepTimes``). Services with the same configurations, bucket lengths, SLO and hand-off
policy form a class that looks its tables up once; limits are asked once per (device, hand-off policy); prices,
watts and labels are computed once per configuration of a group, and each service's candidates are copies of
its class's with the service's own key. Past ``price_by`` the roles other than unified are left unpriced where
unified replicas already serve every bucket and pricing at its pace would not end soon (an anytime answer for
fleets too large for their time limit).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np

from planner.catalog import Catalog
from planner.clock import Deadline
from planner.heap import collector_paused
from planner.model.calibration import Calibration
from planner.model.capacity import (
    Capacity,
    ServingLimits,
    TableRef,
    capacity_table,
    replica_power_watts,
    shapes_capacity_tables,
)
from planner.model.configurations import CandidateStats, ServiceConfiguration, column_key, grouped_configurations
from planner.model.handoff import handoff_nic_gbitps
from planner.model.memory import MemoryFit
from planner.model.perf import PerfModel, ReplicaShape
from planner.model.roofline import RooflinePerfModel
from planner.roles import ROLES
from planner.schema import SLO, Configuration, FleetSpec, LengthBucket, Pool, Role, Service
from planner.solve import Column

# The limits a configuration is sized under (batch cap, step-time slowdowns, cross-zone hand-off), from its
# device's id and its service's ``kv_handoff``; the pipeline builds it from the fleet and the calibration's
# error bands.
LimitsFor = Callable[[str, str], ServingLimits]

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
# Making the candidates and their columns from the priced tables takes about 4 µs a configuration here (2.1 s for
# the 576,000 of 500 services) and looks at no deadline, so pricing stops that long before the deadline.
_BUILD_S_PER_CONFIGURATION = 4e-6


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


# Roles by a small integer: an enum member hashes in Python, an int does not.
_ROLE_IDS = {role: i for i, role in enumerate(Role)}
# A table's key: the ids of its (shape, role), of its (bucket lengths, SLO) and of its limits in the pass.
Key = tuple[int, int, int]


class _Option:
    """One configuration of a group's shared list with what every service of the group takes from it: the ids
    of its shape, role and model, its price, and its column (key tail, watts, label, hand-off rate)."""

    __slots__ = ("candidate", "column", "device", "group", "option", "shape", "signature", "tail", "usd_per_hour")

    def __init__(self, option: ServiceConfiguration, ids: tuple[int, int, int], column: Column, tail: str,
                 usd_per_hour: float) -> None:
        self.option = option
        self.shape, self.signature, self.group = ids  # the ids of its shape, (shape, role) and (model, role)
        self.device = option.configuration.device
        self.column = column  # its column for the group's first service (capacities left empty)
        self.tail = tail  # column_key(service, …) is the service's id, then this tail
        self.usd_per_hour = usd_per_hour  # one replica, compute and memory devices
        self.candidate: Candidate | None = None  # its first candidate: the others copy its fields


class _Class:
    """Services with the same configuration list, bucket lengths, SLO and hand-off policy: the same capacity
    tables, configuration by configuration."""

    def __init__(self, options: list[_Option], keys: list[Key], limits: list[ServingLimits], slo: SLO,
                 lengths: int, buckets: Sequence[LengthBucket]) -> None:
        self.options = options
        self.keys = keys
        self.limits = limits
        self.slo = slo
        self.lengths = lengths  # the id of its bucket lengths
        self.buckets = buckets
        # Per candidate: its key's tail, the fields of its configuration's first column and candidate, its
        # table and limits.
        self.kept: list[tuple[str, dict[str, Any], dict[str, Any], _Table, ServingLimits]] = []
        self.dropped: dict[str, int] = {}


class _Pass:
    """One pass of candidate generation over a fleet: what its services share, remembered. Shapes, roles,
    limits, bucket lengths and SLOs go by small integer ids, so the loops over configurations hash no pydantic
    models."""

    def __init__(self, catalog: Catalog, perf: PerfModel, limits: LimitsFor | None) -> None:
        self.catalog = catalog
        # Only the roofline's own step times are remembered; another model (measured tables) is asked each time.
        self.perf: PerfModel = _StepTimes(perf) if type(perf) is RooflinePerfModel else perf
        self.limits_for = limits
        self.tables: dict[Key, _Table] = {}
        self.prices: dict[str, float] = {}
        self.ids: dict[object, int] = {}  # shapes, (shape, role), (model, role), lengths, (lengths, SLO) → id
        self.limit_ids: dict[ServingLimits, int] = {}
        self.limit_of: dict[tuple[str, str], tuple[int, ServingLimits]] = {}
        self.groups: dict[int, tuple[list[ServiceConfiguration], list[_Option]]] = {}
        self.classes: dict[tuple[int, int, str], _Class] = {}
        self.group_lims: dict[tuple[int, str], tuple[list[int], list[ServingLimits]]] = {}

    def _id(self, value: object) -> int:
        return self.ids.setdefault(value, len(self.ids))

    def limits(self, device: str, kv_handoff: str) -> tuple[int, ServingLimits]:
        """The limits of a device under a service's hand-off policy, and their id (equal limits, equal ids)."""
        found = self.limit_of.get((device, kv_handoff))
        if found is None:
            lim = self.limits_for(device, kv_handoff) if self.limits_for is not None else ServingLimits()
            found = self.limit_of[(device, kv_handoff)] = (self.limit_ids.setdefault(lim, len(self.limit_ids)), lim)
        return found

    def price(self, pool: Pool) -> float:
        if pool.id not in self.prices:
            self.prices[pool.id] = self.catalog.pool_price(pool)
        return self.prices[pool.id]

    def options(self, shared: list[ServiceConfiguration]) -> list[_Option]:
        """A group's configurations with their ids, price and column (once per group)."""
        found = self.groups.get(id(shared))
        if found is not None:
            return found[1]
        out = []
        for option in shared:
            cfg, mpool, shape = option.configuration, option.memory_pool, option.shape
            cost = self.price(option.pool) * cfg.devices
            if mpool is not None:
                cost += self.price(mpool) * cfg.memory_devices
            idle_w, active_w = replica_power_watts(shape, cfg.role)
            tail = column_key("", option.pool.id, cfg, mpool.id if mpool else None)
            spec = ROLES[cfg.role]
            # Prefill and decode-only replicas hand KV caches over their NICs: the hand-off family pairs them by it.
            handoff = handoff_nic_gbitps(shape) if spec.prefill != spec.decode else 0.0
            sid = option.service.id
            col = Column(key=sid + tail, service=sid, role=cfg.role, pool=option.pool.id, devices=cfg.devices,
                         memory_pool=mpool.id if mpool else None, memory_devices=cfg.memory_devices,
                         capacity_rps=(), idle_watts=idle_w, active_watts=active_w, label=cfg.label(),
                         handoff_gbitps=handoff)
            skey, role = shape_key(shape), _ROLE_IDS[cfg.role]
            ids = (self._id(skey), self._id((skey, role)), self._id((skey[0], role)))
            out.append(_Option(option, ids, col, tail, cost))
        self.groups[id(shared)] = (shared, out)  # the list kept alive: its id stays its own
        return out

    def group_limits(self, shared: list[ServiceConfiguration],
                     kv_handoff: str) -> tuple[list[int], list[ServingLimits]]:
        """The limits of a group's configurations under a hand-off policy, and their ids (once per pair)."""
        key = (id(shared), kv_handoff)
        found = self.group_lims.get(key)
        if found is None:
            pairs = [self.limits(o.device, kv_handoff) for o in self.options(shared)]
            found = self.group_lims[key] = ([lid for lid, _ in pairs], [lim for _, lim in pairs])
        return found

    def service_class(self, service: Service, shared: list[ServiceConfiguration],
                      buckets: Sequence[LengthBucket]) -> _Class:
        """The class of a service: its group's configurations with their table keys under its limits."""
        slo = service.slo
        lengths = self._id(tuple((b.input_tokens, b.output_tokens) for b in buckets))
        profile = self._id((lengths, slo.percentile, slo.ttft_ms, slo.tpot_ms))
        ckey = (id(shared), profile, service.kv_handoff)
        found = self.classes.get(ckey)
        if found is None:
            options = self.options(shared)
            lids, limits = self.group_limits(shared, service.kv_handoff)
            keys = list(zip([o.signature for o in options], repeat(profile), lids, strict=False))
            found = self.classes[ckey] = _Class(options, keys, limits, slo, lengths, buckets)
        return found

    def fill(self, classes: Sequence[_Class], deadline: Deadline | None, price_by: Deadline | None,
             total: int) -> None:
        """Every capacity table the classes need: those of one model, role, bucket lengths and SLO percentile,
        every shape, limits and SLO of them, computed together (``shapes_capacity_tables``), at most
        ``_ROWS_PER_BATCH`` rows at a time, unified replicas first. Raises CandidatesLate when ``deadline``
        passes first; past ``price_by`` it leaves the other roles unpriced unless at its pace it ends soon
        after (``_stop``)."""
        # (model and role, lengths, percentile) → (shape, limits) → (shape, limits, table keys → SLOs)
        groups: dict[tuple[int, int, float], tuple[Role, Sequence[LengthBucket], dict[tuple[int, int], _Entry]]] = {}
        for cls in classes:
            lengths, pct = cls.lengths, cls.slo.percentile
            for o, key, lim in zip(cls.options, cls.keys, cls.limits, strict=True):
                if key not in self.tables:
                    gkey = (o.group, lengths, pct)
                    group = groups.get(gkey)
                    if group is None:
                        group = groups[gkey] = (o.option.configuration.role, cls.buckets, {})
                    entry = group[2].get((o.shape, key[2]))
                    if entry is None:
                        entry = group[2][(o.shape, key[2])] = (o.option.shape, lim, {})
                    entry[2].setdefault(key, cls.slo)
        done = 0
        count = sum(len(e[2]) for _, _, shapes in groups.values() for e in shapes.values())
        start = price_by.now() if price_by is not None else 0.0
        for role, buckets, shapes in sorted(groups.values(), key=lambda g: g[0] != Role.UNIFIED):
            cut = price_by if role != Role.UNIFIED else None
            batch: list[_Entry] = []
            rows = 0
            last = len(shapes) - 1
            for n, entry in enumerate(shapes.values()):
                batch.append(entry)
                rows += len(entry[2]) * len(buckets)
                if rows >= _ROWS_PER_BATCH or n == last:
                    if cut is not None and self._stop(cut, deadline, start, done, count):
                        return
                    done += self._compute(role, buckets, batch, deadline, done, total)
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

    def _compute(self, role: Role, buckets: Sequence[LengthBucket], batch: Sequence[_Entry],
                 deadline: Deadline | None, done: int, total: int) -> int:
        """The tables of one batch of shapes (same model, role, lengths and percentile); how many."""
        if deadline is not None and deadline.expired():
            raise CandidatesLate(f"candidate generation stopped at the deadline after {done} of {total} "
                                 "capacity tables")
        tables = shapes_capacity_tables(self.perf, role, buckets,
                                        [(shape, lim, list(slos.values())) for shape, lim, slos in batch])
        nb = len(buckets)
        rates: dict[int, tuple[list[tuple[float, ...]], list[bool]]] = {}  # per RowTables: each table's rates
        for (_, _, slos), per_slo in zip(batch, tables, strict=True):
            for key, ref in zip(slos, per_slo, strict=True):
                got = rates.get(id(ref.rows))
                if got is None:
                    got = rates[id(ref.rows)] = ref.rows.table_rates(nb)
                at = ref.lo // nb if nb else 0
                self.tables[key] = _Table(ref, got[0][at], got[1][at])
        return sum(len(slos) for _, _, slos in batch)

    def served(self, classes: Sequence[_Class], services: Mapping[str, _Class],
               buckets: Mapping[str, Sequence[LengthBucket]]) -> bool:
        """Whether the tables priced so far serve every bucket of every service (some configuration each)."""
        answer: dict[int, bool] = {}
        for cls in classes:
            rates = [t.rps for k in set(cls.keys) for t in [self.tables.get(k)] if t is not None and t.serves]
            answer[id(cls)] = bool(rates) and bool((np.array(rates) > 0).any(axis=0).all())
        return all(not bs or (sid in services and answer[id(services[sid])]) for sid, bs in buckets.items())

    def settle(self, cls: _Class) -> None:
        """A class's drops and what its services' candidates are copied from, once its tables are priced."""
        for o, key, lim in zip(cls.options, cls.keys, cls.limits, strict=True):
            table = self.tables.get(key)
            reason = DROP_UNPRICED if table is None else None if table.serves else DROP_NO_BUCKET
            if reason is not None:
                cls.dropped[reason] = cls.dropped.get(reason, 0) + 1
                continue
            assert table is not None
            if o.candidate is None:
                option = o.option
                o.candidate = Candidate(column=o.column, service=option.service, pool=option.pool,
                                        memory_pool=option.memory_pool, configuration=option.configuration,
                                        table=table, usd_per_hour=o.usd_per_hour, limits=lim)
            cls.kept.append((o.tail, o.column.__dict__, o.candidate.__dict__, table, lim))


def _candidates(order: Sequence[tuple[Service, _Class]]) -> list[Candidate]:
    """Every service's candidates, in order: each a copy of its configuration's first candidate and column with
    the service's own key, service, capacities and limits, made without running the frozen dataclasses'
    ``__init__`` again (the fields are values already built; a large fleet has hundreds of thousands)."""
    out: list[Candidate] = []
    new = object.__new__
    for service, cls in order:
        sid = service.id
        for tail, column, fields, table, limits in cls.kept:
            col = new(Column)
            col.__dict__.update(column, key=sid + tail, service=sid, capacity_rps=table.rps)
            candidate = new(Candidate)
            candidate.__dict__.update(fields, column=col, service=service, table=table, limits=limits)
            out.append(candidate)
    return out


# One entry of a fill group: a shape, its limits and its tables' keys → SLOs.
_Entry = tuple[ReplicaShape, ServingLimits, dict[Key, SLO]]


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
    with collector_paused():  # see planner.heap
        return _generate(fleet, catalog, perf, buckets, limits, deadline, price_by)


def _generate(fleet: FleetSpec, catalog: Catalog, perf: PerfModel, buckets: Mapping[str, Sequence[LengthBucket]],
              limits: LimitsFor | None, deadline: Deadline | None,
              price_by: Deadline | None) -> tuple[list[Candidate], CandidateStats]:
    stats = CandidateStats()
    run = _Pass(catalog, perf, limits)
    services: dict[str, _Class] = {}
    order: list[tuple[Service, _Class]] = []
    total = 0
    for service, shared in grouped_configurations(fleet, catalog, run.perf, stats):
        if deadline is not None and deadline.expired():
            raise CandidatesLate(f"candidate generation stopped at the deadline after {total} configurations")
        cls = services[service.id] = run.service_class(service, shared, buckets[service.id])
        order.append((service, cls))
        total += len(shared)
    classes = list({id(c): c for _, c in order}.values())
    if deadline is not None:  # pricing ends in time to make the candidates from its tables
        deadline = Deadline(deadline.end - _BUILD_S_PER_CONFIGURATION * total, deadline.clock)
    run.fill(classes, deadline, price_by, total)
    if any(k not in run.tables for c in classes for k in c.keys) and not run.served(classes, services, buckets):
        run.fill(classes, deadline, None, total)  # not every bucket is served yet: price the rest
    for cls in classes:
        run.settle(cls)
    for _, cls in order:
        for reason, n in cls.dropped.items():
            stats.dropped[reason] = stats.dropped.get(reason, 0) + n
        stats.kept += len(cls.kept)
    return _candidates(order), stats


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
    """The limits every configuration of the fleet is sized under, by its device and its service's hand-off
    policy: the batch cap (the planner's ``max_num_seqs``, else the engine profile's), the robustness slowdown
    of the device's error band, and whether hand-offs may cross zones."""
    opts = fleet.planner
    engine = calibration.engine
    cap = opts.max_num_seqs or calibration.engine_profile(engine).max_num_seqs

    def limits(device: str, kv_handoff: str) -> ServingLimits:
        return ServingLimits(max_num_seqs=cap,
                             prefill_slowdown=band_slowdown(calibration, device, "prefill", engine, opts.robustness),
                             decode_slowdown=band_slowdown(calibration, device, "decode", engine, opts.robustness),
                             cross_zone_handoff=kv_handoff == "cross-zone")

    return limits
