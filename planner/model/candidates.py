"""Candidates: the configurations a service could run in (``planner.model.configurations``) that serve at least
one of its length buckets within its SLO, each with its capacity per bucket, price and power: the MILP's
columns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from planner.catalog import Catalog
from planner.model.capacity import Capacity, capacity_table, replica_power_watts
from planner.model.configurations import CandidateStats, ServiceConfiguration, column_key, fleet_configurations
from planner.model.perf import PerfModel
from planner.schema import Configuration, FleetSpec, LengthBucket, Pool, Service
from planner.solve import Column

__all__ = ["DROP_NO_BUCKET", "Candidate", "CandidateStats", "column_key", "configuration_capacities",
           "generate_candidates", "serves_some_bucket"]

DROP_NO_BUCKET = "meets the SLO for no bucket"


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


def _candidate(option: ServiceConfiguration, caps: tuple[Capacity, ...], catalog: Catalog) -> Candidate:
    cfg, mpool = option.configuration, option.memory_pool
    cost = catalog.pool_price(option.pool) * cfg.devices
    if mpool is not None:
        cost += catalog.pool_price(mpool) * cfg.memory_devices
    idle_w, active_w = replica_power_watts(option.shape, cfg.role)
    col = Column(key=option.key, service=option.service.id, role=cfg.role, pool=option.pool.id,
                 devices=cfg.devices, memory_pool=mpool.id if mpool else None, memory_devices=cfg.memory_devices,
                 capacity_rps=tuple(c.rps for c in caps), idle_watts=idle_w, active_watts=active_w,
                 label=cfg.label())
    return Candidate(column=col, service=option.service, pool=option.pool, memory_pool=mpool, configuration=cfg,
                     capacities=caps, usd_per_hour=cost)


def generate_candidates(fleet: FleetSpec, catalog: Catalog, perf: PerfModel,
                        buckets: Mapping[str, Sequence[LengthBucket]]) -> tuple[list[Candidate], CandidateStats]:
    """All feasible candidates of every service, with capacities per bucket from the performance model."""
    stats = CandidateStats()
    out: list[Candidate] = []
    for option in fleet_configurations(fleet, catalog, perf, stats):
        caps = configuration_capacities(perf, option, buckets[option.service.id])
        if not serves_some_bucket(caps):
            stats.drop(DROP_NO_BUCKET)
            continue
        out.append(_candidate(option, caps, catalog))
        stats.kept += 1
    return out, stats
