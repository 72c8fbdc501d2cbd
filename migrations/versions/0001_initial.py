"""Initial schema: tokens, pools, services, power domains, plans, planning jobs, audit log.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TS = sa.DateTime(timezone=True)


def _document_table(name: str, *extra: sa.Column[object]) -> None:
    op.create_table(
        name,
        sa.Column("id", sa.String(64), primary_key=True),
        *extra,
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
    )


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("revoked_at", TS, nullable=True),
    )
    _document_table("pools")
    _document_table("services", sa.Column("team", sa.String(128), nullable=False))
    op.create_index("ix_services_team", "services", ["team"])
    _document_table("power_domains")
    op.create_table(
        "plans",
        sa.Column("number", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(64), nullable=False, unique=True),
        sa.Column("fleet", sa.String(128), nullable=False),
        sa.Column("previous_plan_id", sa.String(64), sa.ForeignKey("plans.id"), nullable=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("teams", sa.JSON(), nullable=False),
        sa.Column("cost_usd_per_hour", sa.Float(), nullable=False),
        sa.Column("state", sa.String(24), nullable=False),
        sa.Column("state_version", sa.Integer(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(160), nullable=False),
        sa.Column("approved_by", sa.String(160), nullable=True),
        sa.Column("approved_at", TS, nullable=True),
        sa.Column("applied_by", sa.String(160), nullable=True),
        sa.Column("applied_at", TS, nullable=True),
        sa.Column("apply_result", sa.JSON(), nullable=True),
    )
    op.create_table(
        "plan_jobs",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("fleet", sa.JSON(), nullable=False),
        sa.Column("based_on", sa.String(64), nullable=True),
        sa.Column("requested_by", sa.String(160), nullable=False),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("time_limit_s", sa.Float(), nullable=False),
        sa.Column("plan_id", sa.String(64), sa.ForeignKey("plans.id"), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("findings", sa.JSON(), nullable=True),
        sa.Column("retry_of", sa.String(32), sa.ForeignKey("plan_jobs.id"), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
    )
    op.create_index("ix_plan_jobs_status", "plan_jobs", ["status"])
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("at", TS, nullable=False),
        sa.Column("actor", sa.String(160), nullable=False),
        sa.Column("team", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("resource_kind", sa.String(32), nullable=False),
        sa.Column("resource_id", sa.String(64), nullable=False),
        sa.Column("before", sa.JSON(), nullable=True),
        sa.Column("after", sa.JSON(), nullable=True),
    )
    op.create_index("ix_audit_log_resource", "audit_log", ["resource_kind", "resource_id"])


def downgrade() -> None:
    op.drop_index("ix_audit_log_resource", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_plan_jobs_status", table_name="plan_jobs")
    op.drop_table("plan_jobs")
    op.drop_table("plans")
    op.drop_table("power_domains")
    op.drop_index("ix_services_team", table_name="services")
    op.drop_table("services")
    op.drop_table("pools")
    op.drop_table("api_tokens")
