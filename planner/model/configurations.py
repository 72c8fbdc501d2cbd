"""Configurations: every way one replica of a service could run in the fleet, and why the others cannot.

The one enumerator behind the planner's candidates (``planner.model.candidates``) and ``medley capacity``.
For each service, in this order: compute pool × TP × PP × role, and for a role that needs memory devices
(``planner.roles``: ``decode+offload``) × memory pool × memory devices ``b``. Considered:

* compute pools: accelerator pools with ``max_nodes > 0``, within the service's ``allowed_pools``;
* memory pools: ``memory``-kind pools in the compute pool's zone, within ``allowed_pools``;
* TP from the service's ``tp_options`` (else the planner's), PP from the planner's ``pp_options``, ``b`` from
  its ``offload_memory_devices``; roles from the planner's ``roles`` within the service's ``allowed_roles``.

A configuration is kept when its TP group fits a node, its replica packs whole nodes (it divides a node or
spans whole nodes, at most ``max_nodes``), its parallelism divides the model, its offload partners fit
their pool (offload runs with PP 1), and the model with one full-context request fits its memory. Each
configuration dropped is counted under its reason in :class:`CandidateStats`.

Services that run the same model with the same pool, TP and role choices have the same configurations, so
``fleet_configurations`` enumerates them once per such group (the configurations and shapes are shared
values; each service gets its own ``ServiceConfiguration`` and its own counts); ``grouped_configurations``
hands out each group's list as it is, for callers that work a group at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from planner.catalog import Catalog
from planner.model.perf import PerfModel, ReplicaShape, check_shape
from planner.roles import ROLES
from planner.schema import Configuration, DeviceKind, FleetSpec, Pool, Role, Service

DROP_NODE = "TP group larger than a node"
DROP_PACKING = "replica does not pack whole nodes"
DROP_DIVIDES = "parallelism does not divide the model"
DROP_OFFLOAD_PP = "attention offload runs with PP 1"
DROP_MEMORY_POOL = "memory pool too small for the memory devices"
DROP_KV_SPLIT = "memory devices do not split the KV heads"
DROP_MEMORY = "model and KV cache do not fit memory"


@dataclass
class CandidateStats:
    """How many shapes (pool × TP × PP) were considered, how many configurations kept, why others dropped."""

    considered: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)

    def drop(self, reason: str) -> None:
        """Count one configuration (or shape) dropped for ``reason``."""
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def add(self, other: CandidateStats) -> None:
        """Add another count to this one."""
        self.considered += other.considered
        self.kept += other.kept
        for reason, n in other.dropped.items():
            self.dropped[reason] = self.dropped.get(reason, 0) + n


@dataclass(frozen=True)
class ServiceConfiguration:
    """One way to run one replica of a service: in which pool(s), with which configuration and shape."""

    service: Service
    pool: Pool
    memory_pool: Pool | None
    configuration: Configuration
    shape: ReplicaShape

    @property
    def key(self) -> str:
        """The stable key of its MILP column (see :func:`column_key`)."""
        return column_key(self.service.id, self.pool.id, self.configuration,
                          self.memory_pool.id if self.memory_pool else None)


def column_key(service: str, pool: str, cfg: Configuration, memory_pool: str | None) -> str:
    """Stable key of a (service, pool, configuration) so a current plan maps onto new columns."""
    return f"{service}|{pool}|{cfg.device}|tp{cfg.tp}|pp{cfg.pp}|{cfg.role.value}|" \
           f"{memory_pool or '-'}x{cfg.memory_devices}"


def packs(devices: int, pool: Pool) -> bool:
    """A replica packs whole nodes: it divides a node or spans a whole number of nodes."""
    per_node = pool.devices_per_node
    if devices <= per_node:
        return per_node % devices == 0
    return devices % per_node == 0 and devices // per_node <= pool.max_nodes


def _allowed(service: Service, pool: Pool) -> bool:
    return service.allowed_pools is None or pool.id in service.allowed_pools


def compute_pools(service: Service, fleet: FleetSpec, catalog: Catalog) -> list[Pool]:
    """Accelerator pools the service may use, in fleet order."""
    return [p for p in fleet.pools if _allowed(service, p)
            and catalog.device(p.device).kind is DeviceKind.ACCELERATOR and p.max_nodes > 0]


def memory_pools(service: Service, fleet: FleetSpec, catalog: Catalog, zone: str) -> list[Pool]:
    """Memory-device pools in ``zone`` the service may use as attention-offload partners, in fleet order."""
    return [p for p in fleet.pools if _allowed(service, p) and p.zone == zone
            and catalog.devices.get(p.device) is not None
            and catalog.device(p.device).kind is DeviceKind.MEMORY]


def service_roles(service: Service, fleet: FleetSpec) -> list[Role]:
    """The planner's roles the service allows, in the planner's order."""
    return [r for r in fleet.planner.roles if service.allowed_roles is None or r in service.allowed_roles]


def _offload(option: ServiceConfiguration, mpools: list[Pool], catalog: Catalog, perf: PerfModel,
             counts: list[int], stats: CandidateStats) -> Iterator[ServiceConfiguration]:
    """The offload configurations of a compute shape: memory pool × memory devices."""
    cfg, shape = option.configuration, option.shape
    for mpool in mpools:
        mdev = catalog.device(mpool.device)
        for b in counts:
            if b > mpool.devices_per_node * mpool.max_nodes:
                stats.drop(DROP_MEMORY_POOL)
                continue
            oshape = ReplicaShape(model=shape.model, device=shape.device, tp=shape.tp, pp=shape.pp,
                                  memory_device=mdev, memory_devices=b)
            try:
                check_shape(oshape)
            except ValueError:
                stats.drop(DROP_KV_SPLIT)
                continue
            if not perf.memory(oshape).fits:
                stats.drop(DROP_MEMORY)
                continue
            ocfg = Configuration(device=cfg.device, tp=cfg.tp, pp=cfg.pp, role=cfg.role, memory_device=mdev.id,
                                 memory_devices=b)
            yield ServiceConfiguration(option.service, option.pool, mpool, ocfg, oshape)


def _pool_configurations(service: Service, fleet: FleetSpec, catalog: Catalog, perf: PerfModel, pool: Pool,
                         stats: CandidateStats) -> Iterator[ServiceConfiguration]:
    """The configurations of one service in one compute pool (module docstring for the order and checks)."""
    model = catalog.model(service.model)
    device = catalog.device(pool.device)
    opts = fleet.planner
    roles = service_roles(service, fleet)
    mpools = memory_pools(service, fleet, catalog, pool.zone)
    for tp in service.tp_options or opts.tp_options:
        for pp in opts.pp_options:
            stats.considered += 1
            if tp > pool.devices_per_node:
                stats.drop(DROP_NODE)
                continue
            if not packs(tp * pp, pool):
                stats.drop(DROP_PACKING)
                continue
            shape = ReplicaShape(model=model, device=device, tp=tp, pp=pp)
            try:
                check_shape(shape)
            except ValueError:
                stats.drop(DROP_DIVIDES)
                continue
            for role in roles:
                option = ServiceConfiguration(service, pool, None,
                                              Configuration(device=device.id, tp=tp, pp=pp, role=role), shape)
                if ROLES[role].memory_devices:
                    if pp != 1:
                        stats.drop(DROP_OFFLOAD_PP)
                        continue
                    yield from _offload(option, mpools, catalog, perf, opts.offload_memory_devices, stats)
                elif not perf.memory(shape).fits:
                    stats.drop(DROP_MEMORY)
                else:
                    yield option


def service_configurations(service: Service, fleet: FleetSpec, catalog: Catalog, perf: PerfModel,
                           stats: CandidateStats | None = None) -> Iterator[ServiceConfiguration]:
    """Every configuration one replica of ``service`` may run in, pool by pool (drops counted in ``stats``)."""
    counter = stats if stats is not None else CandidateStats()
    for pool in compute_pools(service, fleet, catalog):
        yield from _pool_configurations(service, fleet, catalog, perf, pool, counter)


def _group(service: Service) -> tuple[object, ...]:
    """What a service's configurations depend on besides the fleet: its model, pools, TP options and roles."""
    return (service.model, None if service.allowed_pools is None else tuple(service.allowed_pools),
            None if service.tp_options is None else tuple(service.tp_options),
            None if service.allowed_roles is None else tuple(service.allowed_roles))


def grouped_configurations(fleet: FleetSpec, catalog: Catalog, perf: PerfModel, stats: CandidateStats | None = None
                           ) -> Iterator[tuple[Service, list[ServiceConfiguration]]]:
    """Every service in fleet order with its group's configurations: one list shared by the services of a
    group (same model, pools, TP options and roles), whose ``service`` is the group's first service."""
    seen: dict[tuple[object, ...], tuple[list[ServiceConfiguration], CandidateStats]] = {}
    for service in fleet.services:
        key = _group(service)
        if key not in seen:
            counts = CandidateStats()
            seen[key] = (list(service_configurations(service, fleet, catalog, perf, counts)), counts)
        options, counts = seen[key]
        if stats is not None:
            stats.add(counts)
        yield service, options


def fleet_configurations(fleet: FleetSpec, catalog: Catalog, perf: PerfModel,
                         stats: CandidateStats | None = None) -> Iterator[ServiceConfiguration]:
    """Every configuration of every service, service by service in fleet order (enumerated once per group of
    services with the same model, pools, TP options and roles)."""
    for service, options in grouped_configurations(fleet, catalog, perf, stats):
        for o in options:
            yield o if o.service is service else ServiceConfiguration(service, o.pool, o.memory_pool,
                                                                      o.configuration, o.shape)
