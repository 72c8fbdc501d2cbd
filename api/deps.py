"""Request dependencies: the app's services, the caller, ETag handling."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.auth import ApiRole, Principal, TokenCache, authenticate, hash_token
from api.db import Database
from api.jobs import JobRunner, Planner
from api.limits import TeamLimits
from api.middleware import ApiMetrics
from api.problems import ApiError, FieldError
from api.provision import Provisioner
from api.settings import Settings


@dataclass
class Services:
    """What the routes need, built once in the app's lifespan."""

    settings: Settings
    db: Database
    planner: Planner
    provisioner: Provisioner
    runner: JobRunner
    metrics: ApiMetrics
    tokens: TokenCache
    limits: TeamLimits


async def services(request: Request) -> Services:
    """The app's services (set by the lifespan)."""
    svc: Services = request.app.state.services
    return svc


Svc = Annotated[Services, Depends(services)]

_bearer = HTTPBearer(auto_error=False, description="token from `medley token create`")


async def principal(svc: Svc, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> Principal:
    """The caller, from the bearer token (401 without a valid one).

    Async on purpose: the lookup is one indexed read, cheaper inline than a hop to the thread pool.
    """
    challenge = {"WWW-Authenticate": "Bearer"}
    if creds is None or creds.scheme.lower() != "bearer":
        raise ApiError(401, "missing bearer token", headers=challenge,
                       errors=[FieldError(field="header.Authorization", reason="send 'Bearer <token>'")])
    token = creds.credentials
    digest = hash_token(token)
    now = time.monotonic()
    who = svc.tokens.get(digest, now)
    if who is None:
        with svc.db.read() as s:
            who = authenticate(s, token)
        if who is not None:
            svc.tokens.put(digest, who, now)
    if who is None:
        # The token itself is never echoed or logged.
        raise ApiError(401, "invalid or revoked token", headers=challenge,
                       errors=[FieldError(field="header.Authorization", reason="unknown or revoked token")])
    return who


def require(role: ApiRole) -> Callable[[Principal], Awaitable[Principal]]:
    """Dependency: the caller, who must hold ``role`` or a higher one (403 otherwise)."""

    async def check(who: Annotated[Principal, Depends(principal)]) -> Principal:
        if not who.at_least(role):
            raise ApiError(403, f"needs role {role.value} or higher; this token has {who.role.value}")
        return who

    return check


Viewer = Annotated[Principal, Depends(require(ApiRole.VIEWER))]
PlannerRole = Annotated[Principal, Depends(require(ApiRole.PLANNER))]
Admin = Annotated[Principal, Depends(require(ApiRole.ADMIN))]

IfMatch = Annotated[str | None, Header(
    alias="If-Match", max_length=200,
    description="ETag from the last GET; required on every change (428 without it, 412 when stale)")]


def etag(version: int) -> str:
    """Strong ETag of a version number."""
    return f'"{version}"'


def seen_version(if_match: str | None, current: int) -> int:
    """The version the caller's If-Match names (``*`` means the current one); 428 if absent, 412 if stale."""
    if if_match is None or not if_match.strip():
        raise ApiError(428, "If-Match is required: GET the resource and send its ETag",
                       errors=[FieldError(field="header.If-Match", reason="required for changes")])
    for tag in (t.strip() for t in if_match.split(",")):
        if tag == "*":
            return current
        # Weak comparison is fine here: our ETags name whole versions.
        if tag.removeprefix("W/") == etag(current):
            return current
    raise ApiError(412, "the resource changed since you read it; GET it again and retry with its ETag",
                   errors=[FieldError(field="header.If-Match", reason=f"stale; current ETag is {etag(current)}")])


def forbid_team(who: Principal, team: str, what: str) -> ApiError:
    """403 for touching another team's resource."""
    return ApiError(403, f"team {who.team!r} ({who.role.value}) may not change {what} owned by team {team!r}")
