"""Candidates: the configurations a service could run in (``planner.model.configurations``) that serve at least
one of its length buckets within its SLO, each with its capacity per bucket, price and power: the MILP's
columns.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from planner.catalog import Catalog
from planner.model.calibration import Calibration
from planner.model.capacity import Capacity, ServingLimits, capacity_table, replica_power_watts
from planner.model.configurations import CandidateStats, ServiceConfiguration, column_key, fleet_configurations
from planner.model.handoff import handoff_nic_gbitps
from planner.model.perf import PerfModel
from planner.roles import ROLES
from planner.schema import Configuration, FleetSpec, LengthBucket, Pool, Service
from planner.solve import Column

# The limits a configuration is sized under (batch cap, step-time slowdowns, cross-zone hand-off); the
# pipeline builds it from the fleet and the calibration's error bands.
LimitsFor = Callable[[ServiceConfiguration], ServingLimits]

__all__ = ["DROP_NO_BUCKET", "Candidate", "CandidateStats", "LimitsFor", "band_slowdown", "column_key",
           "configuration_capacities", "fleet_limits", "generate_candidates", "serves_some_bucket"]

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
    limits: ServingLimits = ServingLimits()


def configuration_capacities(perf: PerfModel, option: ServiceConfiguration, buckets: Sequence[LengthBucket],
                             limits: ServingLimits | None = None) -> tuple[Capacity, ...]:
    """Capacity of one replica of the configuration for each of its service's buckets, within its SLO."""
    return tuple(capacity_table(perf, option.shape, option.configuration.role, list(buckets), option.service.slo,
                                limits))


def serves_some_bucket(capacities: Sequence[Capacity]) -> bool:
    """Whether a configuration is a candidate: it serves at least one bucket within the SLO."""
    return any(c.rps > 0 for c in capacities)


def _candidate(option: ServiceConfiguration, caps: tuple[Capacity, ...], catalog: Catalog,
               limits: ServingLimits) -> Candidate:
    cfg, mpool = option.configuration, option.memory_pool
    cost = catalog.pool_price(option.pool) * cfg.devices
    if mpool is not None:
        cost += catalog.pool_price(mpool) * cfg.memory_devices
    idle_w, active_w = replica_power_watts(option.shape, cfg.role)
    spec = ROLES[cfg.role]
    # Prefill and decode-only replicas hand KV caches over their NICs: the hand-off family pairs them by it.
    handoff = handoff_nic_gbitps(option.shape) if spec.prefill != spec.decode else 0.0
    col = Column(key=option.key, service=option.service.id, role=cfg.role, pool=option.pool.id,
                 devices=cfg.devices, memory_pool=mpool.id if mpool else None, memory_devices=cfg.memory_devices,
                 capacity_rps=tuple(c.rps for c in caps), idle_watts=idle_w, active_watts=active_w,
                 label=cfg.label(), handoff_gbitps=handoff)
    return Candidate(column=col, service=option.service, pool=option.pool, memory_pool=mpool, configuration=cfg,
                     capacities=caps, usd_per_hour=cost, limits=limits)


def generate_candidates(fleet: FleetSpec, catalog: Catalog, perf: PerfModel,
                        buckets: Mapping[str, Sequence[LengthBucket]],
                        limits: LimitsFor | None = None) -> tuple[list[Candidate], CandidateStats]:
    """All feasible candidates of every service, with capacities per bucket from the performance model under
    ``limits`` (default: vLLM's batch cap, the model's step times, same-zone hand-offs)."""
    stats = CandidateStats()
    out: list[Candidate] = []
    for option in fleet_configurations(fleet, catalog, perf, stats):
        lim = limits(option) if limits is not None else ServingLimits()
        caps = configuration_capacities(perf, option, buckets[option.service.id], lim)
        if not serves_some_bucket(caps):
            stats.drop(DROP_NO_BUCKET)
            continue
        out.append(_candidate(option, caps, catalog, lim))
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
