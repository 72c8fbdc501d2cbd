"""``/v1/pools``: where devices can be had. Shared infrastructure: admins change them, everyone reads."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse

from api.deps import Admin, IfMatch, Svc, Viewer
from api.problems import ETAG_HEADER, LOCATION_HEADER, field_error, problem_responses, with_headers
from api.routes._documents import (
    DocId,
    Limit,
    Offset,
    create_response,
    delete_response,
    get_response,
    list_response,
    no_check,
    replace_response,
)
from api.store import POOLS
from planner.catalog import builtin_catalog
from planner.schema import Pool

router = APIRouter(prefix="/v1/pools", tags=["pools"], responses=problem_responses(400, 401, 403, 422))
_WRITE = problem_responses(404, 409, 412, 413, 428)
_READ_ONE = {**problem_responses(404), **with_headers(200, "the document", etag=ETAG_HEADER)}
_CREATED = {**_WRITE, **with_headers(201, "created", etag=ETAG_HEADER, location=LOCATION_HEADER)}
_REPLACED = {**_WRITE, **with_headers(200, "replaced", etag=ETAG_HEADER)}


def _check_catalog(pool: Pool) -> None:
    cat = builtin_catalog()
    if pool.device not in cat.devices:
        raise field_error(422, "body.device", f"unknown device {pool.device!r} (see /v1/catalog/devices)")
    if pool.price_usd_per_device_hour is None:
        book = cat.price_books.get(pool.price_book or "")
        if book is None:
            raise field_error(422, "body.price_book",
                              "give price_usd_per_device_hour or a known price_book (see /v1/catalog/price-books)")
        if pool.device not in book.usd_per_device_hour:
            raise field_error(422, "body.price_book", f"price book {book.id!r} has no price for {pool.device!r}")


@router.get("", response_model=list[Pool])
async def list_pools(svc: Svc, _: Viewer, limit: Limit = 100, offset: Offset = 0) -> JSONResponse:
    """Pools, ordered by id."""
    return list_response(svc, POOLS, limit=limit, offset=offset)


@router.get("/{pool_id}", response_model=Pool, responses=_READ_ONE)
async def get_pool(pool_id: DocId, svc: Svc, _: Viewer) -> JSONResponse:
    """One pool; its ETag is the version to send in If-Match."""
    return get_response(svc, POOLS, pool_id)


@router.post("", response_model=Pool, status_code=status.HTTP_201_CREATED, responses=_CREATED)
def create_pool(pool: Pool, svc: Svc, who: Admin) -> JSONResponse:
    """Register a pool (admin)."""
    _check_catalog(pool)
    return create_response(svc, POOLS, pool, who, "/v1/pools")


@router.put("/{pool_id}", response_model=Pool, responses=_REPLACED)
def replace_pool(pool_id: DocId, pool: Pool, svc: Svc, who: Admin, if_match: IfMatch = None) -> JSONResponse:
    """Replace a pool (admin, If-Match required)."""
    _check_catalog(pool)
    return replace_response(svc, POOLS, pool_id, pool, if_match, who, no_check)


@router.delete("/{pool_id}", status_code=204, response_class=Response, responses=_WRITE)
def delete_pool(pool_id: DocId, svc: Svc, who: Admin, if_match: IfMatch = None) -> Response:
    """Delete a pool (admin, If-Match required)."""
    return delete_response(svc, POOLS, pool_id, if_match, who, no_check)
