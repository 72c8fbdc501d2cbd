"""``/v1/catalog``: the shipped devices, models and price books (read-only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path

from api.deps import Viewer
from api.problems import ApiError, problem_responses
from planner.catalog import builtin_catalog
from planner.schema import DeviceType, ModelSpec, PriceBook

router = APIRouter(prefix="/v1/catalog", tags=["catalog"], responses=problem_responses(400, 401, 403, 422))

CatalogId = Annotated[str, Path(max_length=64)]


def _missing(kind: str, ident: str) -> ApiError:
    return ApiError(404, f"unknown {kind} {ident!r}")


@router.get("/devices", response_model=list[DeviceType])
async def list_devices(_: Viewer) -> list[DeviceType]:
    """Every device type in the catalog."""
    return sorted(builtin_catalog().devices.values(), key=lambda d: d.id)


@router.get("/devices/{device_id}", response_model=DeviceType, responses=problem_responses(404))
async def get_device(device_id: CatalogId, _: Viewer) -> DeviceType:
    """One device type."""
    found = builtin_catalog().devices.get(device_id)
    if found is None:
        raise _missing("device", device_id)
    return found


@router.get("/models", response_model=list[ModelSpec])
async def list_models(_: Viewer) -> list[ModelSpec]:
    """Every model in the catalog."""
    return sorted(builtin_catalog().models.values(), key=lambda m: m.id)


@router.get("/models/{model_id}", response_model=ModelSpec, responses=problem_responses(404))
async def get_model(model_id: CatalogId, _: Viewer) -> ModelSpec:
    """One model."""
    found = builtin_catalog().models.get(model_id)
    if found is None:
        raise _missing("model", model_id)
    return found


@router.get("/price-books", response_model=list[PriceBook])
async def list_price_books(_: Viewer) -> list[PriceBook]:
    """Every price book in the catalog."""
    return sorted(builtin_catalog().price_books.values(), key=lambda p: p.id)


@router.get("/price-books/{book_id}", response_model=PriceBook, responses=problem_responses(404))
async def get_price_book(book_id: CatalogId, _: Viewer) -> PriceBook:
    """One price book."""
    found = builtin_catalog().price_books.get(book_id)
    if found is None:
        raise _missing("price book", book_id)
    return found
