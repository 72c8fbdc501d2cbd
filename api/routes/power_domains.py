"""``/v1/power-domains``: row/rack power budgets. Shared infrastructure: admins change them."""

from __future__ import annotations

from fastapi import APIRouter, Response, status
from fastapi.responses import JSONResponse

from api.deps import Admin, IfMatch, Svc, Viewer
from api.problems import problem_responses
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
from api.store import POWER_DOMAINS
from planner.schema import PowerDomain

router = APIRouter(prefix="/v1/power-domains", tags=["power-domains"], responses=problem_responses(400, 401, 403, 422))


@router.get("", response_model=list[PowerDomain])
async def list_power_domains(svc: Svc, _: Viewer, limit: Limit = 100, offset: Offset = 0) -> JSONResponse:
    """Power domains, ordered by id."""
    return list_response(svc, POWER_DOMAINS, limit=limit, offset=offset)


@router.get("/{domain_id}", response_model=PowerDomain, responses=READ_ONE_RESPONSES)
async def get_power_domain(domain_id: DocId, svc: Svc, _: Viewer) -> JSONResponse:
    """One power domain with its ETag."""
    return get_response(svc, POWER_DOMAINS, domain_id)


@router.post("", response_model=PowerDomain, status_code=status.HTTP_201_CREATED, responses=CREATED_RESPONSES,
             dependencies=[strict_body(PowerDomain)])
def create_power_domain(domain: PowerDomain, svc: Svc, who: Admin) -> JSONResponse:
    """Register a power domain (admin)."""
    return create_response(svc, POWER_DOMAINS, domain, who, "/v1/power-domains")


@router.put("/{domain_id}", response_model=PowerDomain, responses=REPLACED_RESPONSES,
            dependencies=[strict_body(PowerDomain)])
def replace_power_domain(domain_id: DocId, domain: PowerDomain, svc: Svc, who: Admin,
                         if_match: IfMatch = None) -> JSONResponse:
    """Replace a power domain (admin, If-Match required)."""
    return replace_response(svc, POWER_DOMAINS, domain_id, domain, if_match, who, no_check)


@router.delete("/{domain_id}", status_code=204, response_class=Response, responses=WRITE_RESPONSES)
def delete_power_domain(domain_id: DocId, svc: Svc, who: Admin, if_match: IfMatch = None) -> Response:
    """Delete a power domain (admin, If-Match required)."""
    return delete_response(svc, POWER_DOMAINS, domain_id, if_match, who, no_check)
