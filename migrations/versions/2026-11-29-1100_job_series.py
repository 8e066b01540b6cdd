"""generic job series: series_chunks replace curve_chunks; jobs.series_points,
jobs.checkpoint, jobs.parent_id

Revision ID: 5c1e8d2f4a60
Revises: 7a3c5e9b1d20
Create Date: 2026-11-29 11:00:00+00:00

Every curve chunk of a job's current attempt becomes a chunk of its ``curve``
series (values packed as float64 columns, as :mod:`core.series` stores them);
chunks of earlier attempts were unreadable already and are dropped. The
downgrade turns them back into JSON curve chunks.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "5c1e8d2f4a60"
down_revision: str | None = "7a3c5e9b1d20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Written out here rather than imported: a migration keeps building its own day's schema.
JSON = sa.JSON(none_as_null=True).with_variant(
    postgresql.JSONB(none_as_null=True, astext_type=sa.Text()), "postgresql"
)
CURVE_FIELDS = ("lr", "loss", "smoothed_loss", "accuracy")
OLD_KEYS = ("lrs", "losses", "smoothed_losses", "accuracies")
BATCH = 500


def _pack(columns: Sequence[Sequence[float] | None], size: int) -> bytes:
    packed = array("d")
    for column in columns:
        packed.extend([float(v) for v in column] if column is not None else [math.nan] * size)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def _unpack(data: bytes, size: int) -> list[list[float] | None]:
    packed = array("d")
    packed.frombytes(data)
    if sys.byteorder != "little":
        packed.byteswap()
    out: list[list[float] | None] = []
    for i in range(len(CURVE_FIELDS)):
        column = packed[i * size : (i + 1) * size].tolist()
        out.append(None if all(math.isnan(v) for v in column) else column)
    return out


def _series_chunks() -> sa.Table:
    return sa.table(
        "series_chunks",
        sa.column("job_id", sa.Uuid()),
        sa.column("name", sa.String(64)),
        sa.column("attempt", sa.Integer()),
        sa.column("start", sa.Integer()),
        sa.column("size", sa.Integer()),
        sa.column("fields", sa.String(255)),
        sa.column("data", sa.LargeBinary()),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )


def upgrade() -> None:
    op.create_table(
        "series_chunks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("start", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("fields", sa.String(length=255), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("size >= 1", name=op.f("ck_series_chunks_size")),
        sa.CheckConstraint("start >= 0", name=op.f("ck_series_chunks_start")),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["jobs.id"],
            name=op.f("fk_series_chunks_job_id_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_series_chunks")),
        sa.UniqueConstraint(
            "job_id", "name", "start", name=op.f("uq_series_chunks_job_id_name_start")
        ),
    )
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("series_points", JSON, server_default=sa.text("'{}'"), nullable=False)
        )
        batch.add_column(sa.Column("checkpoint", JSON, nullable=True))
        batch.add_column(sa.Column("parent_id", sa.Uuid(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_jobs_parent_id_jobs"), "jobs", ["parent_id"], ["id"], ondelete="CASCADE"
        )
    op.create_index("ix_jobs_parent_id_created_at", "jobs", ["parent_id", "created_at"])

    bind = op.get_bind()
    jobs = sa.table(
        "jobs",
        sa.column("id", sa.Uuid()),
        sa.column("attempt", sa.Integer()),
        sa.column("progress", sa.Integer()),
        sa.column("series_points", JSON),
    )
    old = sa.table(
        "curve_chunks",
        sa.column("id", sa.BigInteger()),
        sa.column("job_id", sa.Uuid()),
        sa.column("attempt", sa.Integer()),
        sa.column("start", sa.Integer()),
        sa.column("size", sa.Integer()),
        sa.column("data", JSON),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    new = _series_chunks()
    current = (
        sa.select(
            old.c.id,
            old.c.job_id,
            old.c.attempt,
            old.c.start,
            old.c.size,
            old.c.data,
            old.c.created_at,
        )
        .join(jobs, sa.and_(jobs.c.id == old.c.job_id, jobs.c.attempt == old.c.attempt))
        .order_by(old.c.id)
    )
    last_id = -1
    points: dict[Any, int] = {}
    while True:
        rows = bind.execute(current.where(old.c.id > last_id).limit(BATCH)).all()
        if not rows:
            break
        bind.execute(
            new.insert(),
            [
                {
                    "job_id": r.job_id,
                    "name": "curve",
                    "attempt": r.attempt,
                    "start": r.start,
                    "size": r.size,
                    "fields": ",".join(CURVE_FIELDS),
                    "data": _pack([r.data.get(k) for k in OLD_KEYS], r.size),
                    "created_at": r.created_at,
                }
                for r in rows
            ],
        )
        for r in rows:
            points[r.job_id] = max(points.get(r.job_id, 0), r.start + r.size)
        last_id = rows[-1].id
    for job_id, count in points.items():
        bind.execute(
            jobs.update().where(jobs.c.id == job_id).values(series_points={"curve": count})
        )
    op.drop_table("curve_chunks")


def downgrade() -> None:
    op.create_table(
        "curve_chunks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("start", sa.Integer(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("seq >= 0", name=op.f("ck_curve_chunks_seq")),
        sa.CheckConstraint("size >= 1", name=op.f("ck_curve_chunks_size")),
        sa.CheckConstraint("start >= 0", name=op.f("ck_curve_chunks_start")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_curve_chunks_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_curve_chunks")),
        sa.UniqueConstraint(
            "job_id", "attempt", "seq", name=op.f("uq_curve_chunks_job_id_attempt_seq")
        ),
    )
    bind = op.get_bind()
    new = _series_chunks()
    old = sa.table(
        "curve_chunks",
        sa.column("job_id", sa.Uuid()),
        sa.column("attempt", sa.Integer()),
        sa.column("seq", sa.Integer()),
        sa.column("start", sa.Integer()),
        sa.column("size", sa.Integer()),
        sa.column("data", JSON),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    rows = bind.execute(
        sa.select(new).where(new.c.name == "curve").order_by(new.c.job_id, new.c.start)
    ).all()
    seqs: dict[Any, int] = {}
    for r in rows:
        seq = seqs.get(r.job_id, 0)
        seqs[r.job_id] = seq + 1
        values = _unpack(r.data, r.size)
        bind.execute(
            old.insert().values(
                job_id=r.job_id,
                attempt=r.attempt,
                seq=seq,
                start=r.start,
                size=r.size,
                data=dict(zip(OLD_KEYS, values, strict=True)),
                created_at=r.created_at,
            )
        )
    op.drop_index("ix_jobs_parent_id_created_at", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_constraint(op.f("fk_jobs_parent_id_jobs"), type_="foreignkey")
        batch.drop_column("parent_id")
        batch.drop_column("checkpoint")
        batch.drop_column("series_points")
    op.drop_table("series_chunks")
