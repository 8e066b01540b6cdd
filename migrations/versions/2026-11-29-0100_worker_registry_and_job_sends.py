"""worker registry and job sends: workers; jobs.queue, jobs.sends

Revision ID: 1efce9cb9542
Revises: 3f2a9c1e7b40
Create Date: 2026-11-29 01:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "1efce9cb9542"
down_revision: str | None = "3f2a9c1e7b40"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported: a migration keeps building its own day's schema.
JSON = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
)
QUEUE_OF_DEVICE = {"cuda": "jobs.cuda", "cpu": "jobs.cpu"}
"""The queue of a job by its spec's device (any other device: ``jobs``), as of this day."""


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "workers",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("hostname", sa.String(length=255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("device_kind", sa.String(length=16), nullable=False),
        sa.Column("queues", JSON, nullable=False),
        sa.Column("current_job_id", sa.Uuid(), nullable=True),
        _timestamp("idle_since", nullable=True),
        _timestamp("started_at"),
        _timestamp("heartbeat_at"),
        sa.CheckConstraint("device_kind IN ('cpu', 'cuda')", name=op.f("ck_workers_device_kind")),
        sa.CheckConstraint("pid >= 0", name=op.f("ck_workers_pid")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workers")),
    )
    op.create_index("ix_workers_heartbeat_at", "workers", ["heartbeat_at"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("queue", sa.String(length=64), server_default="jobs", nullable=False)
        )
        batch.add_column(
            sa.Column("sends", sa.Integer(), server_default=sa.text("1"), nullable=False)
        )
        batch.create_check_constraint(op.f("ck_jobs_sends"), "sends >= 0")
    # existing jobs wait in the queue their device routes them to
    jobs = sa.table("jobs", sa.column("spec", JSON), sa.column("queue", sa.String(64)))
    for device, queue in QUEUE_OF_DEVICE.items():
        op.execute(
            jobs.update().where(jobs.c.spec["device"].as_string() == device).values(queue=queue)
        )
    op.create_index("ix_jobs_status_queue_queued_at", "jobs", ["status", "queue", "queued_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_status_queue_queued_at", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("ck_jobs_sends"), type_="check")
        batch.drop_column("sends")
        batch.drop_column("queue")
    op.drop_index("ix_workers_heartbeat_at", table_name="workers")
    op.drop_table("workers")
