"""A pool's prices by tier, from the pool's own terms and its price book's tiers.

A book tier gives, per device, a price or a discount off the book's on-demand price; a pool's own figures win.
``tier_problems`` says, field by field, what a fleet file must add before its tiers can be priced.
"""

from __future__ import annotations

from dataclasses import dataclass

from planner.catalog import Catalog
from planner.schema import FleetSpec, Pool, PriceTier


@dataclass(frozen=True)
class TierPrices:
    """One pool's prices per device-hour: what one more costs, and what its other tiers cost or draw."""

    pool: str
    price: float  # one more device-hour: on demand, or the spot price of a spot pool
    on_demand: float
    reserved_rate: float | None  # a reserved device's hour, sunk (None: no reserved nodes or no rate known)
    committed_rate: float | None  # commitment $ a device-hour draws (None: the commitment does not cover the pool)
    interruption: float | None  # spot pools: probability their capacity is reclaimed in one planning period


def _book_tier(pool: Pool, catalog: Catalog, name: str) -> PriceTier | None:
    book = catalog.price_books.get(pool.price_book or "")
    return book.tier(name) if book is not None else None


def _tier_rate(tier: PriceTier | None, device: str, on_demand: float) -> float | None:
    """A tier's price for ``device``: its own, else the on-demand price less its discount, else None."""
    if tier is None:
        return None
    if device in tier.usd_per_device_hour:
        return tier.usd_per_device_hour[device]
    if device in tier.discount:
        return on_demand * (1.0 - tier.discount[device])
    return None


def interruption_probability(pool: Pool, catalog: Catalog) -> float | None:
    """A spot pool's reclaim probability: its own, else its book's for its zone, else for its device."""
    spot = pool.tiers.spot if pool.tiers is not None else None
    if spot is None:
        return None
    if spot.interruption_probability is not None:
        return spot.interruption_probability
    tier = _book_tier(pool, catalog, "spot")
    if tier is None:
        return None
    if pool.zone in tier.zone_interruption_probability:
        return tier.zone_interruption_probability[pool.zone]
    return tier.interruption_probability.get(pool.device)


def tier_prices(pool: Pool, catalog: Catalog, commitment: bool = True) -> TierPrices:
    """The pool's tier prices (``commitment``: whether the fleet has one, so committed rates matter).
    Raises KeyError, as ``Catalog.pool_price`` does, when a price is missing."""
    on_demand = catalog.on_demand_price(pool)
    price = catalog.pool_price(pool)
    t = pool.tiers
    if pool.is_spot:
        return TierPrices(pool.id, price, on_demand, None, None, interruption_probability(pool, catalog))
    reserved = None
    if t is not None and t.reserved_nodes:
        reserved = t.reserved_usd_per_device_hour
        if reserved is None:
            reserved = _tier_rate(_book_tier(pool, catalog, "reserved"), pool.device, on_demand)
    committed = None
    if commitment and (t is None or t.committed):
        committed = t.committed_usd_per_device_hour if t is not None else None
        if committed is None:
            committed = _tier_rate(_book_tier(pool, catalog, "committed"), pool.device, on_demand)
    return TierPrices(pool.id, price, on_demand, reserved, committed, None)


def tier_problems(pool: Pool, catalog: Catalog) -> list[tuple[str, str]]:
    """(field, reason) for each tier figure the pool needs and neither it nor its price book gives."""
    t = pool.tiers
    if t is None:
        return []
    try:
        prices = tier_prices(pool, catalog)
    except KeyError as exc:
        return [("tiers", str(exc.args[0]) if exc.args else str(exc))]
    out = []
    if t.reserved_nodes and prices.reserved_rate is None:
        out.append(("tiers", f"reserved_nodes: give reserved_usd_per_device_hour (price book "
                              f"{pool.price_book or '(none)'} has no reserved rate for {pool.device!r})"))
    if pool.is_spot and prices.interruption is None:
        out.append(("tiers", f"spot: give interruption_probability (price book {pool.price_book or '(none)'} "
                              f"has none for {pool.device!r})"))
    return out


def has_tiers(fleet: FleetSpec) -> bool:
    """Whether any pool has tiers or the fleet holds a commitment (otherwise it plans exactly as without)."""
    return fleet.planner.commitment_usd_per_hour > 0 or any(p.tiers is not None for p in fleet.pools)
