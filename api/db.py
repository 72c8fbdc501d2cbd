"""Storage: SQLAlchemy 2 typed mappings and the engine/session setup for SQLite and PostgreSQL.

Documents (pools, services, power domains, plans) are stored as the planner's pydantic models dumped to JSON,
next to the columns that queries and locking need (``version`` for ETags, ``team`` for ownership).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
)
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.pool import StaticPool


def utcnow() -> datetime:
    """Timezone-aware now (UTC)."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps stored with time zone and always read back as aware UTC (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    type_annotation_map = {
        dict[str, Any]: JSON,
        list[str]: JSON,
        datetime: UTCDateTime(),
    }


class ApiToken(Base):
    """A bearer token: only its SHA-256 is kept, so a leaked database does not leak credentials."""

    __tablename__ = "api_tokens"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    team: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128), default="")
    created_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class _Document:
    """Columns every versioned document table has: id, JSON body, optimistic-lock version, timestamps."""

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    body: Mapped[dict[str, Any]]
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class PoolRow(_Document, Base):
    __tablename__ = "pools"


class ServiceRow(_Document, Base):
    __tablename__ = "services"

    team: Mapped[str] = mapped_column(String(128), index=True)


class PowerDomainRow(_Document, Base):
    __tablename__ = "power_domains"


class PlanRow(Base):
    """An immutable plan; only its review state (``state``, ``state_version``) changes."""

    __tablename__ = "plans"
    __table_args__ = (Index("ix_plans_fleet_number", "fleet", "number"),)

    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    id: Mapped[str] = mapped_column(String(64), unique=True)
    fleet: Mapped[str] = mapped_column(String(128))
    previous_plan_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("plans.id"))
    body: Mapped[dict[str, Any]]
    teams: Mapped[list[str]]
    cost_usd_per_hour: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(24))
    state_version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    created_by: Mapped[str] = mapped_column(String(160))
    approved_by: Mapped[str | None] = mapped_column(String(160))
    approved_at: Mapped[datetime | None]
    applied_by: Mapped[str | None] = mapped_column(String(160))
    applied_at: Mapped[datetime | None]
    apply_result: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class JobRow(Base):
    """A planning job; ``fleet`` is the snapshot it plans, so a retry plans exactly the same input."""

    __tablename__ = "plan_jobs"
    __table_args__ = (Index("ix_plan_jobs_status", "status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    fleet: Mapped[dict[str, Any]]
    based_on: Mapped[str | None] = mapped_column(String(64))
    requested_by: Mapped[str] = mapped_column(String(160))
    team: Mapped[str] = mapped_column(String(128))
    time_limit_s: Mapped[float] = mapped_column(Float)
    plan_id: Mapped[str | None] = mapped_column(String(64), ForeignKey("plans.id"))
    error: Mapped[str | None] = mapped_column(Text)
    findings: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    retry_of: Mapped[str | None] = mapped_column(String(32), ForeignKey("plan_jobs.id"))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    # Which API process holds a queued or running job, and when it last said it was alive (api.jobs).
    runner: Mapped[str | None] = mapped_column(String(96))
    heartbeat_at: Mapped[datetime | None]


class AuditRow(Base):
    """Who did what to which resource, when, with the document before and after."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_resource", "resource_kind", "resource_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(160))
    team: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    action: Mapped[str] = mapped_column(String(32))
    resource_kind: Mapped[str] = mapped_column(String(32))
    resource_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON)


# --------------------------------------------------------------------------------------- engine, sessions


def make_engine(url: str) -> Engine:
    """Engine for a URL; SQLite gets WAL, a busy timeout and ``BEGIN IMMEDIATE`` for write transactions."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        # Enough connections for the thread pool (40) plus reads done on the event loop.
        return create_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=30)
    memory = parsed.database in (None, "", ":memory:")
    if not memory and parsed.database:
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": 30},
        poolclass=StaticPool if memory else None,
        **({} if memory else {"pool_size": 20, "max_overflow": 20}),
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, issue BEGIN, so writes can take the lock up front.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # A deferred transaction that reads and then writes can fail at once with SQLITE_BUSY when another
        # writer got in between; taking the write lock first makes concurrent writers queue instead.
        immediate = conn.get_execution_options().get("medley_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


class Database:
    """Engine plus two session factories: reads (shared) and writes (serialised on SQLite)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(self.engine.execution_options(medley_write=True), expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading; closing it ends its transaction, loaded rows stay readable."""
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back entirely on any error."""
        with self._write() as session, session.begin():
            yield session

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()
