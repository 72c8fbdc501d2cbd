"""A fleet's tiers as the MILP's values (``planner.solve.tiers.Tiers``), added to its problem.

Fleets with no pool tiers and no commitment get their problem back unchanged, so they plan exactly as before.
"""

from __future__ import annotations

from dataclasses import replace

from planner.catalog import Catalog
from planner.schema import FleetSpec
from planner.solve import Problem
from planner.solve.tiers import PoolCredit, SpotLoss, Tiers
from planner.tiers.prices import has_tiers, tier_prices
from planner.tiers.risk import SpotRiskError, losses_to_cover, window_probability


class TierError(ValueError):
    """A fleet's tiers cannot be planned as given; the message names the service or pool and why."""


def pool_credits(fleet: FleetSpec, catalog: Catalog, commitment: bool = True) -> tuple[PoolCredit, ...]:
    """Each on-demand pool's reserved devices and committed rate (``commitment``: whether one is held)."""
    out = []
    for pool in fleet.pools:
        if pool.is_spot:
            continue
        prices = tier_prices(pool, catalog, commitment)
        reserved = pool.tiers.reserved_nodes * pool.devices_per_node if pool.tiers is not None else 0
        if reserved or prices.committed_rate is not None:
            out.append(PoolCredit(pool.id, reserved, prices.committed_rate))
    return tuple(out)


def fleet_tiers(fleet: FleetSpec, catalog: Catalog, problem: Problem) -> Tiers:
    """Credits, spot pools and caps, and the losses each service must survive (over the problem's columns)."""
    commitment = fleet.planner.commitment_usd_per_hour
    credits = pool_credits(fleet, catalog, commitment > 0)
    spot: dict[str, float] = {}
    for pool in fleet.pools:
        if not pool.is_spot:
            continue
        q = tier_prices(pool, catalog).interruption
        if q is None:
            raise TierError(f"pool {pool.id}: tiers.spot needs an interruption_probability")
        spot[pool.id] = window_probability(q, fleet.planner.spot_recovery_hours)
    caps = {s.id: s.max_spot_share for s in fleet.services if 0 < s.max_spot_share < 1}
    losses: list[SpotLoss] = []
    for svc in fleet.services:
        mine = {p for c in problem.columns if c.service == svc.id for p in (c.pool, c.memory_pool) if p in spot}
        try:
            sets = losses_to_cover({p: spot[p] for p in mine}, svc.spot_risk)
        except SpotRiskError as exc:
            raise TierError(f"service {svc.id}: spot_risk {svc.spot_risk:g}: {exc}; raise spot_risk, lower "
                            "max_spot_share or allow fewer spot pools") from None
        losses += [SpotLoss(svc.id, pools) for pools in sets]
    return Tiers(credits=credits, commitment_usd_per_hour=commitment, spot_pools=spot,
                 spot_caps={s: c for s, c in caps.items()}, losses=tuple(losses))


def with_tiers(problem: Problem, fleet: FleetSpec, catalog: Catalog) -> Problem:
    """The problem with the fleet's tiers, and without spot columns of services that forbid spot."""
    if not has_tiers(fleet):
        return problem
    spot = {p.id for p in fleet.pools if p.is_spot}
    forbid = {s.id for s in fleet.services if s.max_spot_share <= 0}
    columns = tuple(c for c in problem.columns if c.service not in forbid
                    or (c.pool not in spot and (c.memory_pool is None or c.memory_pool not in spot)))
    kept = replace(problem, columns=columns)
    return replace(kept, tiers=fleet_tiers(fleet, catalog, kept))
