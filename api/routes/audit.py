"""``/v1/audit``: the audit log, newest first (admins)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlalchemy import select

from api.db import AuditRow
from api.deps import Admin, Svc
from api.problems import problem_responses
from api.routes._documents import Limit, Offset

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=problem_responses(400, 401, 403, 422))


class AuditEntry(BaseModel):
    """Who did what to which resource, when, with the document before and after."""

    id: int
    at: datetime
    actor: str
    team: str
    role: str
    action: str
    resource_kind: str
    resource_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None


@router.get("", response_model=list[AuditEntry])
def list_audit(svc: Svc, _: Admin, limit: Limit = 100, offset: Offset = 0,
               resource_kind: Annotated[str | None, Query(pattern=r"^[a-z-]{1,32}$")] = None,
               resource_id: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9._-]{1,64}$")] = None) -> list[AuditEntry]:
    """Audit entries, newest first, optionally for one resource."""
    stmt = select(AuditRow).order_by(AuditRow.id.desc()).limit(limit).offset(offset)
    if resource_kind is not None:
        stmt = stmt.where(AuditRow.resource_kind == resource_kind)
    if resource_id is not None:
        stmt = stmt.where(AuditRow.resource_id == resource_id)
    with svc.db.read() as s:
        return [AuditEntry(id=r.id, at=r.at, actor=r.actor, team=r.team, role=r.role, action=r.action,
                           resource_kind=r.resource_kind, resource_id=r.resource_id, before=r.before,
                           after=r.after) for r in s.scalars(stmt)]
