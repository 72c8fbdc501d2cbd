"""The catalog shipped with Medley (devices, models, price books) merged with a fleet's own additions."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from planner.io.strict import safe_load
from planner.schema import DeviceType, FleetSpec, ModelSpec, Pool, PriceBook


def _load_list(name: str) -> list[dict[str, Any]]:
    text = resources.files("planner").joinpath("data", name).read_text(encoding="utf-8")
    data = safe_load(text)
    assert isinstance(data, list), f"{name} must hold a list"
    return data


@dataclass(frozen=True)
class Catalog:
    """Devices, models and price books by id."""

    devices: dict[str, DeviceType] = field(default_factory=dict)
    models: dict[str, ModelSpec] = field(default_factory=dict)
    price_books: dict[str, PriceBook] = field(default_factory=dict)

    def with_fleet(self, fleet: FleetSpec) -> Catalog:
        """This catalog plus the fleet's own devices, models and price books (the fleet's win on a clash)."""
        return Catalog(
            devices={**self.devices, **{d.id: d for d in fleet.devices}},
            models={**self.models, **{m.id: m for m in fleet.models}},
            price_books={**self.price_books, **{p.id: p for p in fleet.price_books}},
        )

    def device(self, device_id: str) -> DeviceType:
        """The device ``device_id``; ``KeyError`` naming the known ones."""
        try:
            return self.devices[device_id]
        except KeyError:
            raise KeyError(f"unknown device {device_id!r} (known: {', '.join(sorted(self.devices))})") from None

    def model(self, model_id: str) -> ModelSpec:
        """The model ``model_id``; ``KeyError`` naming the known ones."""
        try:
            return self.models[model_id]
        except KeyError:
            raise KeyError(f"unknown model {model_id!r} (known: {', '.join(sorted(self.models))})") from None

    def pool_price(self, pool: Pool) -> float:
        """$ per device-hour of a pool: its own price, else its price book's price for its device; for a spot
        pool, that on-demand price less its spot discount (``tiers.spot``, else the book's spot tier)."""
        on_demand = self.on_demand_price(pool)
        spot = pool.tiers.spot if pool.tiers is not None else None
        if spot is None:
            return on_demand
        if spot.price_usd_per_device_hour is not None:
            return spot.price_usd_per_device_hour
        discount = spot.discount
        if discount is None:
            book = self.price_books.get(pool.price_book or "")
            tier = book.tier("spot") if book is not None else None
            discount = tier.discount.get(pool.device) if tier is not None else None
        if discount is None:
            raise KeyError(f"pool {pool.id!r}: a spot pool needs tiers.spot.discount or a price, or a price book "
                           f"with a spot discount for {pool.device!r}")
        return on_demand * (1.0 - discount)

    def on_demand_price(self, pool: Pool) -> float:
        """$ per device-hour of a pool on demand: its own price, else its price book's price for its device."""
        if pool.price_usd_per_device_hour is not None:
            return pool.price_usd_per_device_hour
        book_id = pool.price_book
        if book_id is None:
            raise KeyError(f"pool {pool.id!r} has neither price_usd_per_device_hour nor price_book")
        book = self.price_books.get(book_id)
        if book is None:
            raise KeyError(f"pool {pool.id!r}: unknown price book {book_id!r}")
        if pool.device not in book.usd_per_device_hour:
            raise KeyError(f"pool {pool.id!r}: price book {book_id!r} has no price for {pool.device!r}")
        return book.usd_per_device_hour[pool.device]


@cache
def builtin_catalog() -> Catalog:
    """The catalog shipped in ``planner/data`` (parsed once)."""
    devices = [DeviceType.model_validate(d) for d in _load_list("devices.yaml")]
    models = [ModelSpec.model_validate(m) for m in _load_list("models.yaml")]
    books = [PriceBook.model_validate(p) for p in _load_list("prices.yaml")]
    return Catalog(
        devices={d.id: d for d in devices},
        models={m.id: m for m in models},
        price_books={b.id: b for b in books},
    )


def fleet_catalog(fleet: FleetSpec) -> Catalog:
    """The shipped catalog extended by a fleet file's additions."""
    return builtin_catalog().with_fleet(fleet)
