"""Artifacts (checkpoints, final models) of jobs, and the chunks of those kept in the database.

An artifact's metadata is always a row of ``artifacts``, so any host knows what
exists; its bytes are either ``artifact_chunks`` rows (store ``db``) or one file in
the shared artifact folder (store ``dir``). See :mod:`core.artifacts`.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utc_now
from core.models.base import Base
from core.models.job import Job

__all__ = ["Artifact", "ArtifactChunk", "ArtifactState", "ArtifactStore"]


class ArtifactState(enum.StrEnum):
    """``writing`` while its bytes arrive, ``ready`` once published (never back)."""

    WRITING = "writing"
    READY = "ready"


class ArtifactStore(enum.StrEnum):
    """Where an artifact's bytes are: database chunks, or a file in the shared folder."""

    DB = "db"
    DIR = "dir"


def _string_enum(cls: type[enum.StrEnum]) -> Enum:
    return Enum(
        cls,
        native_enum=False,
        create_constraint=False,  # the named check constraints below do it
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


_READY = text("state = 'ready'")


class Artifact(Base):
    """One artifact a job wrote under one of its attempts.

    A job has at most one ``ready`` artifact of each name (a partial unique index);
    any number of ``writing`` ones may exist beside it, so a half-written artifact
    never takes a ready one's place: publishing deletes the old ready one and marks
    the new one ready in one transaction. ``updated_at`` moves while bytes arrive,
    so a ``writing`` row whose ``updated_at`` is old was left by a dead writer.

    ``size`` and ``sha256`` describe the bytes once ready (``sha256`` is null while
    writing). ``chunk_size`` is the size of every chunk but the last (store ``db``;
    0 for ``dir``). ``meta`` is the writer's free-form JSON (iteration, series
    positions, ...).
    """

    __tablename__ = "artifacts"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(128))
    attempt: Mapped[int]
    state: Mapped[ArtifactState] = mapped_column(
        _string_enum(ArtifactState), default=ArtifactState.WRITING
    )
    store: Mapped[ArtifactStore] = mapped_column(_string_enum(ArtifactStore))
    size: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    chunk_size: Mapped[int]
    sha256: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)

    job: Mapped[Job] = relationship(lazy="raise")

    __table_args__ = (
        CheckConstraint("state IN ('writing', 'ready')", name="state"),
        CheckConstraint("store IN ('db', 'dir')", name="store"),
        CheckConstraint("size >= 0", name="size"),
        CheckConstraint("chunk_size >= 0", name="chunk_size"),
        CheckConstraint("attempt >= 0", name="attempt"),
        # a job's artifacts by name (reads, listing); also serves the job_id foreign key
        Index("ix_artifacts_job_id_name", "job_id", "name"),
        # one ready artifact per name; writing ones may sit beside it
        Index(
            "uq_artifacts_job_id_name_ready",
            "job_id",
            "name",
            unique=True,
            postgresql_where=_READY,
            sqlite_where=_READY,
        ),
        # the orphan prune: writing rows by last activity
        Index("ix_artifacts_state_updated_at", "state", "updated_at"),
    )


class ArtifactChunk(Base):
    """Bytes ``[seq * chunk_size, (seq + 1) * chunk_size)`` of a ``db``-store artifact."""

    __tablename__ = "artifact_chunks"

    artifact_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("artifacts.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    data: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (CheckConstraint("seq >= 0", name="seq"),)
