"""Versioned documents (pools, services, power domains), plans with lineage, and the audit log.

Every function works inside the caller's transaction (``Database.write()``), so a change and its audit
entry commit together or not at all. Updates are conditional on the version the caller saw
(``UPDATE … WHERE version = :seen``), which makes optimistic locking correct under concurrency on both
SQLite and PostgreSQL without holding locks across requests.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer

from api.auth import Principal
from api.db import AuditRow, PlanRow, PoolRow, PowerDomainRow, ServiceRow, utcnow
from api.problems import ApiError, field_error
from planner.schema import FleetSpec, Plan, Pool, PowerDomain, Service

DocRow = PoolRow | ServiceRow | PowerDomainRow
M = TypeVar("M", Pool, Service, PowerDomain)


@dataclass(frozen=True)
class Kind(Generic[M]):
    """One kind of versioned document: its name in URLs and audit, its table and its schema."""

    name: str
    row: type[PoolRow] | type[ServiceRow] | type[PowerDomainRow]
    model: type[M]


POOLS = Kind("pool", PoolRow, Pool)
SERVICES = Kind("service", ServiceRow, Service)
POWER_DOMAINS = Kind("power-domain", PowerDomainRow, PowerDomain)


def dump(model: BaseModel) -> dict[str, Any]:
    """A pydantic model as stored JSON (defaults included, so the stored form is explicit)."""
    return model.model_dump(mode="json", by_alias=True)


def check_storable(doc: BaseModel) -> None:
    """422 for text PostgreSQL cannot store (NUL characters), whichever backend is in use."""
    if "\\u0000" in doc.model_dump_json():
        raise field_error(422, "body", "text must not contain NUL (\\u0000) characters")


def audit(session: Session, who: Principal, action: str, kind: str, resource_id: str,
          before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    """Append an audit entry in the current transaction."""
    session.add(AuditRow(at=utcnow(), actor=who.actor, team=who.team, role=who.role.value, action=action,
                         resource_kind=kind, resource_id=resource_id, before=before, after=after))


# --------------------------------------------------------------------------------------- documents


def get_doc(session: Session, kind: Kind[M], doc_id: str) -> DocRow | None:
    """The stored row of a document, or None."""
    found: DocRow | None = session.get(kind.row, doc_id)  # type: ignore[assignment]
    return found


def read_doc(session: Session, kind: Kind[M], doc_id: str) -> tuple[dict[str, Any], int] | None:
    """A document's stored JSON and version, without building an ORM object (the hot read path)."""
    row = session.execute(select(kind.row.body, kind.row.version).where(kind.row.id == doc_id)).first()
    return (row[0], row[1]) if row is not None else None


def list_docs(session: Session, kind: Kind[M], *, team: str | None = None, limit: int = 100,
              offset: int = 0) -> Sequence[DocRow]:
    """Documents of a kind ordered by id; services can be filtered by team."""
    stmt = select(kind.row).order_by(kind.row.id).limit(limit).offset(offset)
    if team is not None and kind.row is ServiceRow:
        stmt = stmt.where(ServiceRow.team == team)
    rows: Sequence[DocRow] = session.scalars(stmt).all()  # type: ignore[assignment]
    return rows


def all_docs(session: Session, kind: Kind[M]) -> list[M]:
    """Every document of a kind as its schema model."""
    rows = list_docs(session, kind, limit=1_000_000)
    return [kind.model.model_validate(r.body) for r in rows]


def create_doc(session: Session, kind: Kind[M], doc: M, who: Principal) -> DocRow:
    """Insert version 1 of a document; 409 if the id exists."""
    check_storable(doc)
    now = utcnow()
    body = dump(doc)
    extra: dict[str, Any] = {"team": body["team"]} if kind.row is ServiceRow else {}
    row = kind.row(id=doc.id, body=body, version=1, created_at=now, updated_at=now, **extra)
    try:
        with session.begin_nested():
            session.add(row)
            session.flush()
    except IntegrityError:
        raise ApiError(409, f"{kind.name} {doc.id!r} already exists; update it with PUT and If-Match") from None
    audit(session, who, "create", kind.name, doc.id, None, body)
    return row


def replace_doc(session: Session, kind: Kind[M], doc: M, seen_version: int, who: Principal) -> int:
    """Replace a document if it is still at ``seen_version``; returns the new version (412 if stale)."""
    check_storable(doc)
    current = get_doc(session, kind, doc.id)
    if current is None:
        raise ApiError(404, f"{kind.name} {doc.id!r} not found")
    before = dict(current.body)
    body = dump(doc)
    values: dict[str, Any] = {"body": body, "version": seen_version + 1, "updated_at": utcnow()}
    if kind.row is ServiceRow:
        values["team"] = body["team"]
    result = session.execute(
        update(kind.row).where(kind.row.id == doc.id, kind.row.version == seen_version).values(**values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise stale(kind.name, doc.id)
    audit(session, who, "update", kind.name, doc.id, before, body)
    session.expire(current)
    return seen_version + 1


def delete_doc(session: Session, kind: Kind[M], doc_id: str, seen_version: int, who: Principal) -> None:
    """Delete a document if it is still at ``seen_version`` (412 if stale)."""
    current = get_doc(session, kind, doc_id)
    if current is None:
        raise ApiError(404, f"{kind.name} {doc_id!r} not found")
    before = dict(current.body)
    result = session.execute(
        delete(kind.row).where(kind.row.id == doc_id, kind.row.version == seen_version)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise stale(kind.name, doc_id)
    audit(session, who, "delete", kind.name, doc_id, before, None)
    session.expunge(current)


def stale(kind: str, doc_id: str) -> ApiError:
    """412: the caller's If-Match names a version that is no longer current."""
    return ApiError(412, f"{kind} {doc_id!r} changed since you read it; GET it again and retry with its ETag",
                    errors=[])


# --------------------------------------------------------------------------------------- plans


PLAN_STATES = ("proposed", "approved", "apply_requested", "applied")


def plan_teams(plan: Plan, services: Sequence[Service]) -> list[str]:
    """Teams whose services a plan touches: every service it was planned for or places replicas of."""
    team_of = {s.id: s.team for s in services}
    touched = {g.service for g in plan.replica_groups} | set(team_of)
    return sorted({team_of.get(s, "default") for s in touched})


def store_plan(session: Session, plan: Plan, *, teams: list[str], created_by: str,
               previous_plan_id: str | None) -> PlanRow:
    """Store a new immutable plan; its id is ``plan-<n>`` with ``n`` the plan's sequence number."""
    now = utcnow()
    row = PlanRow(id=f"tmp-{uuid.uuid4().hex}", fleet=plan.fleet, previous_plan_id=previous_plan_id, body={},
                  teams=teams, cost_usd_per_hour=plan.cost_usd_per_hour, state="proposed", state_version=1,
                  created_at=now, created_by=created_by,
                  approved_by=None, approved_at=None, applied_by=None, applied_at=None, apply_result=None)
    session.add(row)
    session.flush()
    row.id = f"plan-{row.number}"
    final = plan.model_copy(update={"id": row.id, "created_at": now.isoformat(),
                                    "previous_plan_id": previous_plan_id})
    row.body = dump(final)
    session.flush()
    return row


def get_plan(session: Session, plan_id: str) -> PlanRow | None:
    """A stored plan by id."""
    return session.scalars(select(PlanRow).where(PlanRow.id == plan_id)).first()


def fleet_teams(fleet: FleetSpec) -> list[str]:
    """Teams whose services a fleet plans: the lineage its plans belong to."""
    return sorted({s.team for s in fleet.services})


LINEAGE_SCAN = 1000  # plans of a fleet looked through for the newest of a lineage


def latest_plan(session: Session, fleet: str, *, teams: Sequence[str] | None = None) -> PlanRow | None:
    """The newest plan of a fleet (the default parent of the next one); with ``teams``, the newest plan made
    for exactly those teams, so one team's plans never become another's starting point."""
    stmt = select(PlanRow).where(PlanRow.fleet == fleet).order_by(PlanRow.number.desc())
    if teams is None:
        return session.scalars(stmt.limit(1)).first()
    wanted = sorted(set(teams))
    ids = session.execute(select(PlanRow.id, PlanRow.teams).where(PlanRow.fleet == fleet)
                          .order_by(PlanRow.number.desc()).limit(LINEAGE_SCAN)).all()
    found = next((pid for pid, row_teams in ids if sorted(set(row_teams or [])) == wanted), None)
    return get_plan(session, found) if found is not None else None


def list_plans(session: Session, *, limit: int, offset: int) -> Sequence[PlanRow]:
    """Plans, newest first, without their bodies (listing needs only the columns)."""
    stmt = select(PlanRow).options(defer(PlanRow.body)).order_by(PlanRow.number.desc()).limit(limit).offset(offset)
    return session.scalars(stmt).all()


def transition_plan(session: Session, plan_id: str, *, seen_version: int, from_states: Sequence[str],
                    to_state: str, action: str, who: Principal, values: dict[str, Any]) -> PlanRow:
    """Move a plan's review state if it is still at ``seen_version`` and in one of ``from_states``."""
    row = get_plan(session, plan_id)
    if row is None:
        raise ApiError(404, f"plan {plan_id!r} not found")
    if row.state_version != seen_version:
        raise stale("plan", plan_id)
    if row.state not in from_states:
        raise ApiError(409, f"plan {plan_id!r} is {row.state}; this needs it to be {' or '.join(from_states)}")
    before = {"state": row.state}
    result = session.execute(
        update(PlanRow).where(PlanRow.id == plan_id, PlanRow.state_version == seen_version)
        .values(state=to_state, state_version=seen_version + 1, **values)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise stale("plan", plan_id)
    session.expire(row)
    session.refresh(row)
    after = {"state": to_state, **{k: _jsonable(v) for k, v in values.items()}}
    audit(session, who, action, "plan", plan_id, before, after)
    return row


def _jsonable(v: Any) -> Any:
    return v.isoformat() if hasattr(v, "isoformat") else v
