"""``/v1/pools``: where devices can be had. Shared infrastructure: admins change them, everyone reads."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse

from api.deps import Admin, IfMatch, Svc, Viewer
from api.problems import field_error, problem_responses
from api.routes._documents import (
    CREATED_RESPONSES,
    READ_ONE_RESPONSES,
    REPLACED_RESPONSES,
    WRITE_RESPONSES,
    DocId,
    Limit,
    Offset,
    create_response,
    delete_response,
    get_response,
    list_response,
    no_check,
    replace_response,
    strict_body,
)
from api.store import POOLS
from planner.catalog import builtin_catalog
from planner.io.fleetfile import pool_problems
from planner.schema import Pool

router = APIRouter(prefix="/v1/pools", tags=["pools"], responses=problem_responses(400, 401, 403, 422))


def _check_catalog(pool: Pool) -> None:
    problems = pool_problems(pool, builtin_catalog())
    if problems:
        field, why = problems[0]
        raise field_error(422, f"body.{field}", f"{why} (see /v1/catalog)")


@router.get("", response_model=list[Pool])
async def list_pools(svc: Svc, _: Viewer, limit: Limit = 100, offset: Offset = 0) -> JSONResponse:
    """Pools, ordered by id."""
    return list_response(svc, POOLS, limit=limit, offset=offset)


@router.get("/{pool_id}", response_model=Pool, responses=READ_ONE_RESPONSES)
async def get_pool(pool_id: DocId, svc: Svc, _: Viewer) -> JSONResponse:
    """One pool; its ETag is the version to send in If-Match."""
    return get_response(svc, POOLS, pool_id)


@router.post("", response_model=Pool, status_code=status.HTTP_201_CREATED, responses=CREATED_RESPONSES,
             dependencies=[strict_body(Pool)])
def create_pool(pool: Pool, svc: Svc, who: Admin) -> JSONResponse:
    """Register a pool (admin)."""
    _check_catalog(pool)
    return create_response(svc, POOLS, pool, who, "/v1/pools")


@router.put("/{pool_id}", response_model=Pool, responses=REPLACED_RESPONSES, dependencies=[strict_body(Pool)])
def replace_pool(pool_id: DocId, pool: Pool, svc: Svc, who: Admin, if_match: IfMatch = None) -> JSONResponse:
    """Replace a pool (admin, If-Match required)."""
    _check_catalog(pool)
    return replace_response(svc, POOLS, pool_id, pool, if_match, who, no_check)


@router.delete("/{pool_id}", status_code=204, response_class=Response, responses=WRITE_RESPONSES)
def delete_pool(pool_id: DocId, svc: Svc, who: Admin, if_match: IfMatch = None) -> Response:
    """Delete a pool (admin, If-Match required)."""
    return delete_response(svc, POOLS, pool_id, if_match, who, no_check)
