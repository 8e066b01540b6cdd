"""artifacts: artifacts and artifact_chunks (checkpoints and models of jobs)

Revision ID: 7a3c5e9b1d20
Revises: 1efce9cb9542
Create Date: 2026-11-29 10:00:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "7a3c5e9b1d20"
down_revision: str | None = "1efce9cb9542"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported: a migration keeps building its own day's schema.
JSON = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
)
READY = sa.text("state = 'ready'")


def _timestamp(name: str, *, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "artifacts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("store", sa.String(length=16), nullable=False),
        sa.Column("size", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("chunk_size", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("meta", JSON, nullable=False),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.CheckConstraint("state IN ('writing', 'ready')", name=op.f("ck_artifacts_state")),
        sa.CheckConstraint("store IN ('db', 'dir')", name=op.f("ck_artifacts_store")),
        sa.CheckConstraint("size >= 0", name=op.f("ck_artifacts_size")),
        sa.CheckConstraint("chunk_size >= 0", name=op.f("ck_artifacts_chunk_size")),
        sa.CheckConstraint("attempt >= 0", name=op.f("ck_artifacts_attempt")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_artifacts_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_artifacts")),
    )
    op.create_index("ix_artifacts_job_id_name", "artifacts", ["job_id", "name"])
    op.create_index(
        "uq_artifacts_job_id_name_ready",
        "artifacts",
        ["job_id", "name"],
        unique=True,
        postgresql_where=READY,
        sqlite_where=READY,
    )
    op.create_index("ix_artifacts_state_updated_at", "artifacts", ["state", "updated_at"])
    op.create_table(
        "artifact_chunks",
        sa.Column("artifact_id", sa.Uuid(), nullable=False),
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.CheckConstraint("seq >= 0", name=op.f("ck_artifact_chunks_seq")),
        sa.ForeignKeyConstraint(
            ["artifact_id"],
            ["artifacts.id"],
            name=op.f("fk_artifact_chunks_artifact_id_artifacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("artifact_id", "seq", name=op.f("pk_artifact_chunks")),
    )
    if op.get_context().dialect.name == "postgresql":
        # Stored out of line but never compressed: tensors do not compress with
        # pglz, and trying costs ~30% of the write rate (measured, 4 MiB chunks).
        op.execute("ALTER TABLE artifact_chunks ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("artifact_chunks")
    op.drop_index("ix_artifacts_state_updated_at", table_name="artifacts")
    op.drop_index("uq_artifacts_job_id_name_ready", table_name="artifacts")
    op.drop_index("ix_artifacts_job_id_name", table_name="artifacts")
    op.drop_table("artifacts")
