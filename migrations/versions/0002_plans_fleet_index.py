"""Index plans by fleet and sequence number (the lookup of a fleet's latest plan).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_plans_fleet_number", "plans", ["fleet", "number"])


def downgrade() -> None:
    op.drop_index("ix_plans_fleet_number", table_name="plans")
