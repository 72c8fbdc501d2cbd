"""``/v1/services``: models served to teams. A planner changes only its own team's services; admins any."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse

from api.auth import Principal
from api.deps import IfMatch, PlannerRole, Svc, Viewer, forbid_team
from api.problems import field_error, problem_responses
from api.routes._documents import (
    CREATED_RESPONSES,
    READ_ONE_RESPONSES,
    REPLACED_RESPONSES,
    WRITE_RESPONSES,
    Check,
    DocId,
    Limit,
    Offset,
    create_response,
    delete_response,
    get_response,
    list_response,
    replace_response,
    row_team,
    strict_body,
)
from api.store import SERVICES, DocRow
from planner.catalog import builtin_catalog
from planner.io.semantics import length_problems
from planner.schema import Service

router = APIRouter(prefix="/v1/services", tags=["services"], responses=problem_responses(400, 401, 403, 422))


def _check(service: Service, who: Principal) -> None:
    if not 1 <= len(service.team) <= 128:
        raise field_error(422, "body.team", "must be 1 to 128 characters")
    if not who.may_change_team(service.team):
        raise forbid_team(who, service.team, "services")
    models = builtin_catalog().models
    if service.model not in models:
        raise field_error(422, "body.model", f"unknown model {service.model!r} (see /v1/catalog/models)")
    problems = length_problems(0, service, models[service.model])
    if problems:
        loc, reason = problems[0]
        raise field_error(422, "body." + ".".join(str(x) for x in loc[2:]), reason)


def _owner_check(who: Principal) -> Check:
    def check(row: DocRow) -> None:
        team = row_team(row)
        if not who.may_change_team(team):
            raise forbid_team(who, team, "services")

    return check


@router.get("", response_model=list[Service])
async def list_services(svc: Svc, _: Viewer, limit: Limit = 100, offset: Offset = 0,
                  team: Annotated[str | None, Query(max_length=128, pattern=r"^[^\x00]*$")] = None) -> JSONResponse:
    """Services ordered by id, optionally of one team."""
    return list_response(svc, SERVICES, limit=limit, offset=offset, team=team)


@router.get("/{service_id}", response_model=Service, responses=READ_ONE_RESPONSES)
async def get_service(service_id: DocId, svc: Svc, _: Viewer) -> JSONResponse:
    """One service; its ETag is the version to send in If-Match."""
    return get_response(svc, SERVICES, service_id)


@router.post("", response_model=Service, status_code=status.HTTP_201_CREATED, responses=CREATED_RESPONSES,
             dependencies=[strict_body(Service)])
def create_service(service: Service, svc: Svc, who: PlannerRole) -> JSONResponse:
    """Register a service for the caller's team (admins: any team)."""
    _check(service, who)
    return create_response(svc, SERVICES, service, who, "/v1/services")


@router.put("/{service_id}", response_model=Service, responses=REPLACED_RESPONSES, dependencies=[strict_body(Service)])
def replace_service(service_id: DocId, service: Service, svc: Svc, who: PlannerRole,
                    if_match: IfMatch = None) -> JSONResponse:
    """Replace a service (If-Match required); neither its old nor its new team may be another's."""
    _check(service, who)
    check = _owner_check(who)
    return replace_response(svc, SERVICES, service_id, service, if_match, who, check)


@router.delete("/{service_id}", status_code=204, response_class=Response, responses=WRITE_RESPONSES)
def delete_service(service_id: DocId, svc: Svc, who: PlannerRole, if_match: IfMatch = None) -> Response:
    """Delete a service (If-Match required)."""
    return delete_response(svc, SERVICES, service_id, if_match, who, _owner_check(who))
