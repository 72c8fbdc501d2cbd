"""``/v1/whatif``: plan a modified copy of the stored fleet synchronously; nothing is stored.

Kept thin: the request names changes to the stored fleet; the planner does the rest. Scenarios are bounded
(services, pools, time) so a request cannot hold a worker for long; larger ones belong in planning jobs.
"""

from __future__ import annotations

from typing import TypeVar

from fastapi import APIRouter
from pydantic import BaseModel, Field

from api.auth import Principal
from api.deps import PlannerRole, Svc, forbid_team
from api.fleets import checked_fleet
from api.isolation import PlannerFailure, TimeLimitExceeded
from api.jobs import run_planner
from api.problems import ApiError, field_error, problem_responses
from api.routes._documents import strict_body
from api.routes.plans import PlanRequest, build_fleet
from api.store import SERVICES, all_docs, fleet_teams, latest_plan
from planner.pipeline import InfeasibleFleet
from planner.schema import Finding, FleetSpec, Id, Plan, PlannerOptions, Pool, PowerDomain, Service
from planner.whatif import Scenario, ScenarioError, WhatIfReport, run_scenarios

T = TypeVar("T", Service, Pool, PowerDomain)

router = APIRouter(prefix="/v1/whatif", tags=["whatif"], responses=problem_responses(400, 401, 403, 413, 422))


class WhatIfRequest(BaseModel):
    """Changes to the stored fleet: documents to add or replace and ids to drop."""

    fleet: Id = "fleet"
    upsert_services: list[Service] = Field(default_factory=list, max_length=100)
    remove_services: list[Id] = Field(default_factory=list, max_length=500)
    upsert_pools: list[Pool] = Field(default_factory=list, max_length=100)
    remove_pools: list[Id] = Field(default_factory=list, max_length=500)
    upsert_power_domains: list[PowerDomain] = Field(default_factory=list, max_length=100)
    options: PlannerOptions | None = None
    compare_with_current: bool = Field(default=True, description="plan against the fleet's latest plan")

    model_config = {"extra": "forbid"}


class WhatIfScenariosRequest(BaseModel):
    """Scenarios in the expression language of ``medley whatif`` (files cannot be read here: no add-*)."""

    fleet: Id = "fleet"
    scenarios: list[Scenario] = Field(min_length=1, max_length=20)
    options: PlannerOptions | None = None

    model_config = {"extra": "forbid"}


def _merge(stored: list[T], upserts: list[T], removed: list[str]) -> list[T]:
    by_id = {x.id: x for x in stored}
    for x in upserts:
        by_id[x.id] = x
    for rid in removed:
        by_id.pop(rid, None)
    return [by_id[k] for k in sorted(by_id)]


def _check_upserts(req: WhatIfRequest, stored: list[Service], who: Principal) -> None:
    """A planner may add, replace or drop only its own team's services, even in a what-if (403)."""
    team_of = {x.id: x.team for x in stored}
    for i, x in enumerate(req.upsert_services):
        for team in {x.team, team_of.get(x.id, x.team)}:
            if not who.may_change_team(team):
                raise forbid_team(who, team, f"service {x.id!r} (body.upsert_services.{i})")
    for i, sid in enumerate(req.remove_services):
        if sid in team_of and not who.may_change_team(team_of[sid]):
            raise forbid_team(who, team_of[sid], f"service {sid!r} (body.remove_services.{i})")


@router.post("", response_model=Plan, responses=problem_responses(429), dependencies=[strict_body(WhatIfRequest)])
def what_if(req: WhatIfRequest, svc: Svc, who: PlannerRole) -> Plan:
    """Plan the caller's services (an admin's: all) with these changes applied; 422 with findings if it is
    infeasible, 429 while the team already runs its share of what-ifs."""
    with svc.db.read() as s:
        _check_upserts(req, all_docs(s, SERVICES), who)
    base = build_fleet(svc, PlanRequest(fleet=req.fleet, options=req.options), who).fleet
    services = _merge(list(base.services), req.upsert_services, req.remove_services)
    pools = _merge(list(base.pools), req.upsert_pools, req.remove_pools)
    domains = _merge(list(base.power_domains), req.upsert_power_domains, [])
    settings = svc.settings
    if len(services) > settings.whatif_max_services:
        raise field_error(422, "body.upsert_services",
                          f"{len(services)} services exceed the what-if limit of {settings.whatif_max_services}; "
                          "request a planning job instead")
    if len(pools) > settings.whatif_max_pools:
        raise field_error(422, "body.upsert_pools",
                          f"{len(pools)} pools exceed the what-if limit of {settings.whatif_max_pools}")
    fleet = checked_fleet(req.fleet, pools, services, domains, base.planner, settings=settings,
                          owns=lambda _: True).fleet
    current = None
    if req.compare_with_current:
        with svc.db.read() as s:
            row = latest_plan(s, req.fleet, teams=fleet_teams(fleet))
            current = Plan.model_validate(row.body) if row is not None else None
    with svc.limits.whatif(who.team):
        try:
            return run_planner(svc.planner, fleet, current, settings.whatif_time_limit_s)
        except TimeLimitExceeded as exc:
            raise field_error(422, "body", f"{exc}; scenarios this large belong in POST /v1/plans") from exc
        except PlannerFailure as exc:
            raise ApiError(422, exc.message, extra={"findings": exc.findings}) from exc


@router.post("/scenarios", response_model=WhatIfReport, responses=problem_responses(429),
             dependencies=[strict_body(WhatIfScenariosRequest)])
def what_if_scenarios(req: WhatIfScenariosRequest, svc: Svc, who: PlannerRole) -> WhatIfReport:
    """Plan the caller's services (an admin's: all) and every scenario side by side: the same implementation
    as ``medley whatif``."""
    fleet = build_fleet(svc, PlanRequest(fleet=req.fleet, options=req.options), who).fleet
    settings = svc.settings
    if len(fleet.services) > settings.whatif_max_services:
        raise field_error(422, "body.fleet", f"{len(fleet.services)} services exceed the what-if limit of "
                          f"{settings.whatif_max_services}; request a planning job instead")

    def plan(f: FleetSpec, *, current: Plan | None = None) -> Plan:
        try:
            return run_planner(svc.planner, f, current, settings.whatif_time_limit_s)
        except PlannerFailure as exc:
            raise InfeasibleFleet([Finding.model_validate(d) for d in exc.findings] or [
                Finding(kind="infeasible", constraint="fleet", message=exc.message)]) from exc

    try:
        with svc.limits.whatif(who.team):
            return run_scenarios(fleet, req.scenarios, planner=plan)
    except ScenarioError as exc:
        raise field_error(422, "body.scenarios", exc.line()) from exc
    except TimeLimitExceeded as exc:
        raise field_error(422, "body", f"{exc}; scenarios this large belong in POST /v1/plans") from exc
