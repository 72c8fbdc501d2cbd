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


def test_revisions_ship_inside_the_package() -> None:
    """An installed (not editable) Medley migrates too: the revisions are the ``migrations`` package and its
    package data, which the build configuration names."""
    import tomllib
    from pathlib import Path

    import migrations

    here = Path(migrations.__file__).resolve().parent
    assert here == migrate.MIGRATIONS_DIR
    assert {p.name for p in (here / "versions").glob("0*.py")} >= {"0001_initial.py", "0002_plans_fleet_index.py"}
    setuptools = tomllib.loads((here.parent / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert "migrations*" in setuptools["packages"]["find"]["include"]
    shipped = set(setuptools["package-data"]["migrations"])
    assert {"alembic.ini", "script.py.mako"} <= shipped
    assert all((here / name).is_file() for name in shipped)


def test_replicas_starting_together_migrate_in_turn(db_url: str) -> None:
    """Several API replicas upgrade one PostgreSQL database at start-up: they take turns, none fails."""
    from concurrent.futures import ThreadPoolExecutor

    import pytest

    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite is one process's embedded store")
    engines = [make_engine(db_url) for _ in range(4)]
    try:
        pool = ThreadPoolExecutor(len(engines))
        try:
            for done in [pool.submit(migrate.upgrade, e) for e in engines]:
                done.result(timeout=60)  # without turns, concurrent DDL can wait on itself for ever
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        assert set(inspect(engines[0]).get_table_names()) >= TABLES
        with engines[0].connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == "0003"
    finally:
        for e in engines:
            e.dispose()
