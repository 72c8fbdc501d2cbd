"""Candidate configurations: every way one replica of a service could run, with its capacity per bucket.

For each service: accelerator pool × TP × PP × role, plus attention offload (compute devices in an
accelerator pool with memory devices from a ``memory``-kind pool in the same zone). A candidate survives when
its parallelism divides the model, its TP group fits a node, its replica packs whole nodes, the model fits its
memory, and it can serve at least one length bucket within the service's SLO.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from planner.catalog import Catalog
from planner.model.capacity import Capacity, capacity_table, replica_power_watts
from planner.model.perf import PerfModel, ReplicaShape, check_shape
from planner.schema import (
    Configuration,
    DeviceKind,
    FleetSpec,
    LengthBucket,
    Pool,
    Role,
    Service,
)
from planner.solve import Column


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


@dataclass
class CandidateStats:
    """How many configurations were considered and why the others were dropped."""

    considered: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def column_key(service: str, pool: str, cfg: Configuration, memory_pool: str | None) -> str:
    """Stable key of a (service, pool, configuration) so a current plan maps onto new columns."""
    return f"{service}|{pool}|{cfg.device}|tp{cfg.tp}|pp{cfg.pp}|{cfg.role.value}|" \
           f"{memory_pool or '-'}x{cfg.memory_devices}"


def _packs(devices: int, pool: Pool) -> bool:
    """A replica packs whole nodes: it divides a node or spans a whole number of nodes."""
    per_node = pool.devices_per_node
    if devices <= per_node:
        return per_node % devices == 0
    return devices % per_node == 0 and devices // per_node <= pool.max_nodes


def _shapes(service: Service, fleet: FleetSpec, catalog: Catalog, pool: Pool,
            stats: CandidateStats) -> Iterator[tuple[Configuration, ReplicaShape, Pool | None]]:
    model = catalog.model(service.model)
    device = catalog.device(pool.device)
    opts = fleet.planner
    tps = service.tp_options or opts.tp_options
    roles = [r for r in opts.roles if service.allowed_roles is None or r in service.allowed_roles]
    memory_pools = [p for p in fleet.pools
                    if catalog.devices.get(p.device) is not None
                    and catalog.device(p.device).kind is DeviceKind.MEMORY
                    and p.zone == pool.zone
                    and (service.allowed_pools is None or p.id in service.allowed_pools)]
    for tp in tps:
        for pp in opts.pp_options:
            stats.considered += 1
            if tp > pool.devices_per_node:
                stats.drop("TP group larger than a node")
                continue
            if not _packs(tp * pp, pool):
                stats.drop("replica does not pack whole nodes")
                continue
            shape = ReplicaShape(model=model, device=device, tp=tp, pp=pp)
            try:
                check_shape(shape)
            except ValueError:
                stats.drop("parallelism does not divide the model")
                continue
            for role in roles:
                if role is Role.DECODE_OFFLOAD:
                    if pp != 1:
                        continue
                    for mpool in memory_pools:
                        mdev = catalog.device(mpool.device)
                        for b in opts.offload_memory_devices:
                            if b > mpool.devices_per_node * mpool.max_nodes:
                                continue
                            cfg = Configuration(device=device.id, tp=tp, pp=pp, role=role,
                                                memory_device=mdev.id, memory_devices=b)
                            yield cfg, ReplicaShape(model=model, device=device, tp=tp, pp=pp,
                                                    memory_device=mdev, memory_devices=b), mpool
                else:
                    yield Configuration(device=device.id, tp=tp, pp=pp, role=role), shape, None


def generate_candidates(fleet: FleetSpec, catalog: Catalog, perf: PerfModel,
                        buckets: Mapping[str, Sequence[LengthBucket]]) -> tuple[list[Candidate], CandidateStats]:
    """All feasible candidates of every service, with capacities per bucket from the performance model."""
    stats = CandidateStats()
    out: list[Candidate] = []
    for service in fleet.services:
        svc_buckets = list(buckets[service.id])
        pools = [p for p in fleet.pools
                 if (service.allowed_pools is None or p.id in service.allowed_pools)
                 and catalog.device(p.device).kind is DeviceKind.ACCELERATOR and p.max_nodes > 0]
        for pool in pools:
            price = catalog.pool_price(pool)
            for cfg, shape, mpool in _shapes(service, fleet, catalog, pool, stats):
                if not perf.memory(shape).fits:
                    stats.drop("model and KV cache do not fit memory")
                    continue
                caps = tuple(capacity_table(perf, shape, cfg.role, svc_buckets, service.slo))
                if not any(c.rps > 0 for c in caps):
                    stats.drop("meets the SLO for no bucket")
                    continue
                cost = price * cfg.devices
                if mpool is not None:
                    cost += catalog.pool_price(mpool) * cfg.memory_devices
                idle_w, active_w = replica_power_watts(shape, cfg.role)
                key = column_key(service.id, pool.id, cfg, mpool.id if mpool else None)
                col = Column(key=key, service=service.id, role=cfg.role, pool=pool.id, devices=cfg.devices,
                             memory_pool=mpool.id if mpool else None, memory_devices=cfg.memory_devices,
                             capacity_rps=tuple(c.rps for c in caps), idle_watts=idle_w,
                             active_watts=active_w, label=cfg.label())
                out.append(Candidate(column=col, service=service, pool=pool, memory_pool=mpool,
                                     configuration=cfg, capacities=caps, usd_per_hour=cost))
                stats.kept += 1
    return out, stats
