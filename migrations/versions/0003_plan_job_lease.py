"""Record which API process holds a planning job and when it last said so (several API processes per database).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("plan_jobs", sa.Column("runner", sa.String(length=96), nullable=True))
    op.add_column("plan_jobs", sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("plan_jobs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("runner")
