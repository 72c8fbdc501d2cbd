"""``/v1/plans`` and ``/v1/plan-jobs``: request plans (jobs), read them, diff, approve, apply.

Plans are immutable; their review state moves ``proposed → approved → apply_requested | applied`` under
If-Match on the plan's state version. Approving or applying needs the right to change every team the plan
touches (admins always have it). Only a plan verified by replay (``Plan.verified``, set when the planning job
made it) can be approved; otherwise 409 says why. Applying hands the plan, with the fleet snapshot it was
planned for, to the provisioner: ``applied`` once the cluster matches it and every workload is Ready,
``apply_requested`` while it is on its way (apply again to go on); 503 without a cluster, 409 when the cluster
refused it before anything was written (a missing namespace, an admission error).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import select

from api.auth import ApiRole, Principal
from api.db import JobRow, PlanRow, utcnow
from api.deps import IfMatch, PlannerRole, Svc, Viewer, etag, forbid_team, seen_version
from api.diff import PlanDiff, diff_plans
from api.fleets import Built, checked_fleet, scope_services
from api.problems import (
    ETAG_HEADER,
    LOCATION_HEADER,
    ApiError,
    FieldError,
    field_error,
    problem_responses,
    with_headers,
)
from api.provision import ApplyOutcome, ApplyRefused, ProvisionerUnavailable
from api.routes._documents import Limit, Offset, strict_body
from api.store import (
    POOLS,
    POWER_DOMAINS,
    SERVICES,
    all_docs,
    get_plan,
    list_plans,
    transition_plan,
)
from planner.schema import Finding, FleetSpec, Id, Plan, PlannerOptions

router = APIRouter(tags=["plans"], responses=problem_responses(400, 401, 403, 422))

PlanId = Annotated[str, Path(pattern=r"^plan-[0-9]{1,12}$", description="plan id, plan-<n>")]
JobId = Annotated[str, Path(pattern=r"^[0-9a-f]{16}$", description="job id")]


class PlanRequest(BaseModel):
    """What to plan: the stored fleet, or a subset of its services, with planner options."""

    fleet: Id = Field(default="fleet", description="fleet name; plans of one fleet form a lineage")
    services: list[Id] | None = Field(default=None, max_length=500,
                                      description="service ids to plan (default: all stored services)")
    based_on: str | None = Field(default=None, max_length=64,
                                 description="plan to start from (default: the fleet's latest plan)")
    options: PlannerOptions | None = None

    model_config = {"extra": "forbid"}


class Job(BaseModel):
    """A planning job and, once it succeeded, where its plan is."""

    id: str
    status: str = Field(description="queued, running, succeeded or failed")
    fleet: str
    based_on: str | None
    requested_by: str
    time_limit_s: float
    plan_id: str | None
    plan_url: str | None
    error: str | None
    findings: list[Finding]
    retry_of: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class PlanStatus(BaseModel):
    """A plan's review state and lineage (the plan itself never changes)."""

    id: str
    fleet: str
    previous_plan_id: str | None
    state: str = Field(description="proposed, approved, apply_requested or applied")
    state_version: int
    teams: list[str]
    cost_usd_per_hour: float
    created_at: datetime
    created_by: str
    approved_by: str | None
    approved_at: datetime | None
    applied_by: str | None
    applied_at: datetime | None
    apply_result: ApplyOutcome | None
    verified: bool | None = Field(default=None, description=(
        "verified by replay when the plan was made (only verified plans are approved); null in listings"))


def _job_view(row: JobRow) -> Job:
    items = (row.findings or {}).get("items", [])
    return Job(id=row.id, status=row.status, fleet=str(row.fleet.get("name", "fleet")), based_on=row.based_on,
               requested_by=row.requested_by, time_limit_s=row.time_limit_s, plan_id=row.plan_id,
               plan_url=f"/v1/plans/{row.plan_id}" if row.plan_id else None, error=row.error,
               findings=[Finding.model_validate(f) for f in items], retry_of=row.retry_of,
               created_at=row.created_at, started_at=row.started_at, finished_at=row.finished_at)


_LEGACY_STATES = {"apply_requested": "recorded", "complete": "applied"}


def _outcome(stored: dict[str, Any] | None) -> ApplyOutcome | None:
    """A stored apply result as an ApplyOutcome (results stored before it was typed are mapped over)."""
    if stored is None:
        return None
    state = _LEGACY_STATES.get(str(stored.get("state")), stored.get("state"))
    known = {k: v for k, v in stored.items() if k in ApplyOutcome.model_fields}
    try:
        return ApplyOutcome.model_validate({**known, "state": state})
    except ValidationError:
        return ApplyOutcome(state="recorded", detail=f"stored result: {stored}"[:2000])


def _status_view(row: PlanRow) -> PlanStatus:
    # the body is deferred in listings: not loaded (and not worth loading) there
    verified = None if "body" in sa_inspect(row).unloaded else bool((row.body or {}).get("verified"))
    return PlanStatus(id=row.id, fleet=row.fleet, previous_plan_id=row.previous_plan_id, state=row.state,
                      state_version=row.state_version, teams=list(row.teams),
                      cost_usd_per_hour=row.cost_usd_per_hour, created_at=row.created_at,
                      created_by=row.created_by, approved_by=row.approved_by, approved_at=row.approved_at,
                      applied_by=row.applied_by, applied_at=row.applied_at, apply_result=_outcome(row.apply_result),
                      verified=verified)


def _accepted(job: JobRow) -> JSONResponse:
    url = f"/v1/plan-jobs/{job.id}"
    return JSONResponse(_job_view(job).model_dump(mode="json"), status_code=202, headers={"Location": url})


def _check_options(options: PlannerOptions) -> None:
    """Option lists the planner iterates over must be non-empty and positive (the schema allows empty)."""
    for name in ("tp_options", "pp_options"):
        values: list[int] = getattr(options, name)
        if not values:
            raise field_error(422, f"body.options.{name}", "must not be empty")
        if any(v < 1 or v > 64 for v in values):
            raise field_error(422, f"body.options.{name}", "values must be between 1 and 64")
    if any(v < 0 or v > 64 for v in options.offload_memory_devices):
        raise field_error(422, "body.options.offload_memory_devices", "values must be between 0 and 64")
    if not options.roles:
        raise field_error(422, "body.options.roles", "must not be empty")


def build_fleet(svc: Svc, req: PlanRequest, who: Principal) -> Built:
    """The stored pools, power domains and the caller's services (``api.fleets``) as one checked fleet.

    A planner plans its own team's services, and may start only from a plan of teams it may change (403)."""
    with svc.db.read() as s:
        pools, services, domains = all_docs(s, POOLS), all_docs(s, SERVICES), all_docs(s, POWER_DOMAINS)
        if req.based_on is not None:
            parent = get_plan(s, req.based_on)
            if parent is None:
                raise field_error(422, "body.based_on", f"unknown plan {req.based_on!r}")
            _check_teams(who, parent)
    chosen = scope_services(services, who, req.services)
    options = req.options or PlannerOptions()
    _check_options(options)
    named = set(req.services or ())
    return checked_fleet(req.fleet, pools, chosen, domains, options, settings=svc.settings,
                         owns=lambda x: x.id in named or (who.role is not ApiRole.ADMIN and x.team == who.team))


# --------------------------------------------------------------------------------------- jobs


@router.post("/v1/plans", status_code=202, response_model=Job,
             responses={**problem_responses(413, 429), **with_headers(202, "job accepted", location=LOCATION_HEADER)},
             dependencies=[strict_body(PlanRequest)])
def request_plan(req: PlanRequest, svc: Svc, who: PlannerRole) -> JSONResponse:
    """Start a planning job over the caller's services (an admin's: all); 202 with the job's URL in Location."""
    built = build_fleet(svc, req, who)
    job = svc.runner.create(built.fleet, based_on=req.based_on, who=who, time_limit_s=svc.settings.job_time_limit_s,
                            notes=built.notes, max_active=svc.settings.jobs_per_team)
    return _accepted(job)


@router.get("/v1/plan-jobs/{job_id}", response_model=Job, responses=problem_responses(404))
async def get_job(job_id: JobId, svc: Svc, _: Viewer) -> Job:
    """A planning job: its status, error and findings, and its plan's URL once done."""
    job = svc.runner.get(job_id)
    if job is None:
        raise ApiError(404, f"job {job_id!r} not found")
    return _job_view(job)


@router.post("/v1/plan-jobs/{job_id}/retry", status_code=202, response_model=Job,
             responses={**problem_responses(404, 409, 429),
                        **with_headers(202, "job accepted", location=LOCATION_HEADER)})
def retry_job(job_id: JobId, svc: Svc, who: PlannerRole) -> JSONResponse:
    """Plan a failed job's fleet snapshot again as a new job (202); only a caller who may change every service
    of the snapshot (of a snapshot without services: the job's team) may retry it."""
    old = svc.runner.get(job_id)
    if old is None:
        raise ApiError(404, f"job {job_id!r} not found")
    fleet = FleetSpec.model_validate(old.fleet)
    for team in sorted({x.team for x in fleet.services} or {old.team}):
        if not who.may_change_team(team):
            raise forbid_team(who, team, f"job {job_id!r}, which plans services")
    if old.status != "failed":
        raise ApiError(409, f"job {job_id!r} is {old.status}; only failed jobs can be retried")
    job = svc.runner.create(fleet, based_on=old.based_on, who=who, time_limit_s=svc.settings.job_time_limit_s,
                            retry_of=old.id, max_active=svc.settings.jobs_per_team)
    return _accepted(job)


# --------------------------------------------------------------------------------------- plans


@router.get("/v1/plans", response_model=list[PlanStatus])
async def list_all_plans(svc: Svc, _: Viewer, limit: Limit = 100, offset: Offset = 0) -> list[PlanStatus]:
    """Plans, newest first, with their review state and lineage."""
    with svc.db.read() as s:
        return [_status_view(r) for r in list_plans(s, limit=limit, offset=offset)]


def _load(svc: Svc, plan_id: str) -> PlanRow:
    with svc.db.read() as s:
        row = get_plan(s, plan_id)
    if row is None:
        raise ApiError(404, f"plan {plan_id!r} not found")
    return row


@router.get("/v1/plans/{plan_id}", response_model=Plan,
            responses={**problem_responses(404), **with_headers(200, "the plan", etag=ETAG_HEADER)})
async def get_plan_body(plan_id: PlanId, svc: Svc, _: Viewer) -> JSONResponse:
    """The plan as the planner made it; ETag is its review-state version (for approve/apply)."""
    row = _load(svc, plan_id)
    return JSONResponse(row.body, headers={"ETag": etag(row.state_version)})


@router.get("/v1/plans/{plan_id}/status", response_model=PlanStatus,
            responses={**problem_responses(404), **with_headers(200, "review state", etag=ETAG_HEADER)})
async def get_plan_status(plan_id: PlanId, svc: Svc, _: Viewer, response: Response) -> PlanStatus:
    """A plan's review state, approvals and apply result."""
    row = _load(svc, plan_id)
    response.headers["ETag"] = etag(row.state_version)
    return _status_view(row)


@router.get("/v1/plans/{plan_id}/diff", response_model=PlanDiff, responses=problem_responses(404))
async def diff_plan(plan_id: PlanId, svc: Svc, _: Viewer,
              against: Annotated[str | None, Query(pattern=r"^plan-[0-9]{1,12}$",
                                                    description="default: the previous plan")] = None,
              ) -> PlanDiff:
    """Replica, device and cost changes from ``against`` (default: the plan's parent) to this plan."""
    row = _load(svc, plan_id)
    other_id = against or row.previous_plan_id
    if other_id is None:
        raise field_error(422, "query.against", "this plan has no previous plan; name one to compare with")
    with svc.db.read() as s:
        other = get_plan(s, other_id)
    if other is None:
        raise field_error(422 if against else 404, "query.against", f"unknown plan {other_id!r}")
    return diff_plans(Plan.model_validate(row.body), Plan.model_validate(other.body))


def _check_teams(who: Principal, row: PlanRow) -> None:
    for team in row.teams:
        if not who.may_change_team(team):
            raise forbid_team(who, team, f"plan {row.id!r}, which touches services")


_STATE_CHANGE = {**problem_responses(404, 409, 412, 428), **with_headers(200, "new review state", etag=ETAG_HEADER)}


@router.post("/v1/plans/{plan_id}/approve", response_model=PlanStatus, responses=_STATE_CHANGE)
def approve_plan(plan_id: PlanId, svc: Svc, who: PlannerRole, response: Response,
                 if_match: IfMatch = None) -> PlanStatus:
    """Approve a proposed plan that replay verified (If-Match: the plan's ETag); 409 says why when it is not."""
    row = _load(svc, plan_id)
    _check_teams(who, row)
    plan = Plan.model_validate(row.body)
    if not plan.verified:
        why = next((f.message for f in plan.findings if f.constraint == "verification"),
                   "it was never verified by replay")
        raise ApiError(409, f"plan {plan_id!r} is not verified, so it cannot be approved: {why}",
                       errors=[FieldError(field="plan.verified", reason=why)])
    with svc.db.write() as s:
        seen = seen_version(if_match, row.state_version)
        done = transition_plan(s, plan_id, seen_version=seen, from_states=("proposed",), to_state="approved",
                               action="approve", who=who, values={"approved_by": who.actor, "approved_at": utcnow()})
    response.headers["ETag"] = etag(done.state_version)
    return _status_view(done)


def fleet_of_plan(svc: Svc, row: PlanRow) -> FleetSpec:
    """The fleet a stored plan was made for: its planning job's snapshot, else the stored documents now."""
    with svc.db.read() as s:
        job = s.scalars(select(JobRow).where(JobRow.plan_id == row.id).limit(1)).first()
        snapshot = dict(job.fleet) if job is not None else None
        if snapshot is None:
            pools, services, domains = all_docs(s, POOLS), all_docs(s, SERVICES), all_docs(s, POWER_DOMAINS)
    if snapshot is not None:
        return FleetSpec.model_validate(snapshot)
    teams = set(row.teams)
    return checked_fleet(row.fleet, pools, [x for x in services if x.team in teams], domains, PlannerOptions(),
                         settings=svc.settings, owns=lambda _: True).fleet


@router.post("/v1/plans/{plan_id}/apply", response_model=PlanStatus, responses={
    **_STATE_CHANGE, **problem_responses(502, 503)})
def apply_plan(plan_id: PlanId, svc: Svc, who: PlannerRole, response: Response,
               if_match: IfMatch = None) -> PlanStatus:
    """Hand an approved plan to the provisioner (If-Match: the plan's ETag); again while it is on its way."""
    row = _load(svc, plan_id)
    _check_teams(who, row)
    seen = seen_version(if_match, row.state_version)
    if row.state not in ("approved", "apply_requested"):
        raise ApiError(409, f"plan {plan_id!r} is {row.state}; approve it first")
    fleet = fleet_of_plan(svc, row)
    # Nothing is recorded when the apply fails: the plan keeps its state and the apply can be repeated.
    try:
        outcome = svc.provisioner.apply(Plan.model_validate(row.body), fleet)
    except ProvisionerUnavailable as exc:
        raise ApiError(503, str(exc)) from exc
    except ApplyRefused as exc:
        raise ApiError(409, "the cluster refused the plan before anything was written: " + "; ".join(exc.problems),
                       errors=[FieldError(field="cluster", reason=p) for p in exc.problems]) from exc
    except ValueError as exc:  # RenderError: the plan cannot be rendered for its fleet
        raise ApiError(422, f"the plan cannot be rendered: {exc}") from exc
    except Exception as exc:
        raise ApiError(502, f"the provisioner failed: {exc}") from exc
    to_state = "applied" if outcome.state == "applied" else "apply_requested"
    with svc.db.write() as s:
        done = transition_plan(s, plan_id, seen_version=seen, from_states=("approved", "apply_requested"),
                               to_state=to_state, action="apply", who=who,
                               values={"applied_by": who.actor, "applied_at": utcnow(),
                                       "apply_result": outcome.model_dump(mode="json")})
    response.headers["ETag"] = etag(done.state_version)
    return _status_view(done)
