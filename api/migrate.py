"""Run the Alembic revisions in ``migrations/`` programmatically (start-up, tests, ``medley token``)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

import migrations

# The revisions ship as the ``migrations`` package, so an installed (not only an editable) Medley finds them.
MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent
MIGRATION_LOCK_KEY = 0x6D65646C6579  # "medley": the advisory lock PostgreSQL migrations hold


def alembic_config(engine: Engine | None = None, url: str | None = None) -> Config:
    """Alembic config for our revisions, bound to an engine's connection or a URL."""
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["configure_logging"] = False
    if url is not None:
        # ConfigParser interpolation would read '%' in a password as a reference.
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["engine"] = engine
    return cfg


def _run(engine: Engine, action: str, revision: str) -> None:
    cfg = alembic_config(engine)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # API replicas starting together migrate one at a time (the lock ends with the transaction); the
            # later ones then find the schema at head and do nothing.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        cfg.attributes["connection"] = connection
        getattr(command, action)(cfg, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision``."""
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Downgrade the database to ``revision``."""
    _run(engine, "downgrade", revision)
