"""parent jobs: jobs.waiting (a running job that waits on its children) and jobs.role

Revision ID: 9b4d2e7f1c30
Revises: 5c1e8d2f4a60
Create Date: 2026-11-29 12:00:00+00:00

A sweep, or a range test verifying its bounds, is ``running`` with ``waiting``
set while no worker holds it and its children run; ``role`` says what a child is
to its parent (``{"grid": 0, "policy": "triangular", "seed": 1}``).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "9b4d2e7f1c30"
down_revision: str | None = "5c1e8d2f4a60"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported: a migration keeps building its own day's schema.
JSON = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
)


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("waiting", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch.add_column(sa.Column("role", JSON, nullable=True))
    op.create_index("ix_jobs_waiting_status", "jobs", ["waiting", "status"])


def downgrade() -> None:
    op.drop_index("ix_jobs_waiting_status", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("role")
        batch.drop_column("waiting")
