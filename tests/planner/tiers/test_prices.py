"""Tier prices from a pool's own terms and its price book's tiers (the shipped AWS book carries its sources)."""

from __future__ import annotations

import pytest

from planner.catalog import builtin_catalog
from planner.schema import Pool, PoolTiers, SpotTerms
from planner.tiers import tier_prices, tier_problems

AWS = "aws-us-east-1-2026q1"


def _pool(**kw: object) -> Pool:
    base: dict[str, object] = {"id": "p", "device": "l4", "max_nodes": 4, "price_book": AWS}
    return Pool.model_validate({**base, **kw})


def test_the_aws_book_has_sourced_dated_tiers() -> None:
    book = builtin_catalog().price_books[AWS]
    for name in ("reserved", "committed", "spot"):
        tier = book.tier(name)
        assert tier is not None and tier.source and tier.as_of, name
    spot = book.tier("spot")
    assert spot is not None and set(spot.interruption_probability) <= set(spot.discount)


def test_on_demand_reserved_committed_and_spot_prices() -> None:
    cat = builtin_catalog()
    on_demand = tier_prices(_pool(tiers=PoolTiers(reserved_nodes=1)), cat)
    assert on_demand.price == on_demand.on_demand == pytest.approx(0.80)
    assert on_demand.reserved_rate == pytest.approx(0.80 * (1 - 0.349))
    assert on_demand.committed_rate == pytest.approx(0.80 * (1 - 0.349))
    spot = tier_prices(_pool(tiers=PoolTiers(spot=SpotTerms())), cat)
    assert spot.price == pytest.approx(0.80 * (1 - 0.48)) and spot.committed_rate is None
    assert spot.interruption == pytest.approx(0.15)
    own = tier_prices(_pool(tiers=PoolTiers(spot=SpotTerms(discount=0.6, interruption_probability=0.02))), cat)
    assert own.price == pytest.approx(0.32) and own.interruption == 0.02
    assert cat.pool_price(_pool(tiers=PoolTiers(spot=SpotTerms(price_usd_per_device_hour=0.3)))) == 0.3
    opted_out = tier_prices(_pool(tiers=PoolTiers(committed=False)), cat)
    assert opted_out.committed_rate is None


def test_missing_tier_figures_are_named_by_field() -> None:
    cat = builtin_catalog()
    own_price = _pool(price_book=None, price_usd_per_device_hour=1.0, tiers=PoolTiers(reserved_nodes=1))
    assert any("reserved_usd_per_device_hour" in why for _, why in tier_problems(own_price, cat))
    assert tier_problems(_pool(price_book=None, price_usd_per_device_hour=1.0,
                               tiers=PoolTiers(reserved_nodes=1, reserved_usd_per_device_hour=0.5)), cat) == []
    no_discount = _pool(price_book=None, price_usd_per_device_hour=1.0, tiers=PoolTiers(spot=SpotTerms()))
    assert any("spot" in why for _, why in tier_problems(no_discount, cat))


def test_pool_tiers_refuse_what_cannot_be() -> None:
    with pytest.raises(ValueError, match="reserved_nodes"):
        _pool(tiers={"reserved_nodes": 5})
    with pytest.raises(ValueError, match="spot pool"):
        _pool(tiers={"reserved_nodes": 1, "spot": {}})
