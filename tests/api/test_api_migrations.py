"""Alembic revisions: empty → head → base on SQLite and PostgreSQL, and head matches the ORM models."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from api import migrate
from api.db import Base, make_engine

TABLES = {"api_tokens", "pools", "services", "power_domains", "plans", "plan_jobs", "audit_log"}


def test_upgrade_downgrade_roundtrip(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert not TABLES & set(inspect(engine).get_table_names())
        migrate.upgrade(engine, "0001")
        assert "ix_plans_fleet_number" not in {i["name"] for i in inspect(engine).get_indexes("plans")}
        migrate.upgrade(engine)
        assert set(inspect(engine).get_table_names()) >= TABLES
        assert "ix_plans_fleet_number" in {i["name"] for i in inspect(engine).get_indexes("plans")}
        with engine.connect() as conn:
            # The revisions create exactly what the models describe (types, nullability, indexes).
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
            assert diff == []
        migrate.downgrade(engine, "0001")
        assert "ix_plans_fleet_number" not in {i["name"] for i in inspect(engine).get_indexes("plans")}
        migrate.downgrade(engine, "base")
        assert not TABLES & set(inspect(engine).get_table_names())
        migrate.upgrade(engine)  # and up again: the downgrade left nothing behind that blocks it
        assert set(inspect(engine).get_table_names()) >= TABLES
    finally:
        engine.dispose()
