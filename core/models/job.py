"""Jobs and the series chunks their attempts write."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import Mapped, mapped_column, relationship

from clr_sweep.contracts import JobStatus
from core.clock import utc_now
from core.models.base import Base, TimestampMixin
from core.models.team import Team
from core.queues import JOBS_QUEUE, queue_for

__all__ = ["FINISHED_STATUSES", "Job", "JobStatus", "SeriesChunk"]

FINISHED_STATUSES = frozenset(s for s in JobStatus if s.finished)
"""The statuses nothing more happens to a job in (:attr:`JobStatus.finished`)."""

_STATUS_VALUES = ", ".join(f"'{s.value}'" for s in JobStatus)


def _device_of(spec: dict[str, Any] | None) -> str:
    device = (spec or {}).get("device", "auto")
    return device if isinstance(device, str) else "auto"


def _queue_of_spec(context: DefaultExecutionContext) -> str:
    # the column default: the queue the job's device preference routes it to
    parameters: dict[str, Any] = context.get_current_parameters()  # type: ignore[no-untyped-call]
    return queue_for(_device_of(parameters.get("spec")))


class Job(TimestampMixin, Base):
    """One unit of GPU work of some ``kind`` (:mod:`core.kinds`).

    The row is the source of truth; a broker message carries only its id. Every
    write a worker makes names the ``attempt`` it was given by the claim, so a
    worker that lost its job cannot overwrite a newer attempt.

    ``progress`` counts the units of work done out of ``total`` (steps of a range
    test, iterations of a training); ``series_points`` holds how many points the
    current attempt's series have (``{"curve": 120}``), which is also the guard
    that appends them in order. ``checkpoint`` describes the last checkpoint a
    resumable kind published (``{"artifact", "progress", "series"}``): the next
    attempt resumes there, keeping those points.

    ``parent_id`` is the job that created this one, if any (a sweep's trainings),
    and ``role`` what it is to that parent (``{"policy": "triangular", "seed": 1}``).
    A parent is ``running`` with ``waiting`` set while no worker holds it and it
    waits on its children (:mod:`core.services.parents`): heartbeats and time
    limits do not apply to it then.

    ``queue`` is where its messages go (set from the spec's device preference);
    ``enqueued_at`` is when its last message went out and ``sends`` how many went
    out since it last became queued: the reconciler's re-sends back off on it.
    """

    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    team_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("teams.id", ondelete="RESTRICT"))
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    status: Mapped[JobStatus] = mapped_column(
        Enum(
            JobStatus,
            native_enum=False,
            create_constraint=False,  # the named check constraint below does it
            length=16,
            values_callable=lambda statuses: [s.value for s in statuses],
            validate_strings=True,
        ),
        default=JobStatus.QUEUED,
    )
    spec: Mapped[dict[str, Any]]
    config_key: Mapped[str] = mapped_column(String(64))
    workload: Mapped[str | None] = mapped_column(String(64))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    attempt: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    max_attempts: Mapped[int]
    cancel_requested: Mapped[bool] = mapped_column(default=False, server_default=false())
    waiting: Mapped[bool] = mapped_column(default=False, server_default=false())
    role: Mapped[dict[str, Any] | None]
    worker: Mapped[str | None] = mapped_column(String(255))
    device: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[int] = mapped_column(default=0, server_default=text("0"))
    total: Mapped[int]
    series_points: Mapped[dict[str, Any]] = mapped_column(default=dict, server_default=text("'{}'"))
    checkpoint: Mapped[dict[str, Any] | None]
    result: Mapped[dict[str, Any] | None]
    queue: Mapped[str] = mapped_column(
        String(64), default=_queue_of_spec, server_default=JOBS_QUEUE
    )
    sends: Mapped[int] = mapped_column(default=1, server_default=text("1"))
    queued_at: Mapped[datetime] = mapped_column(default=utc_now)
    enqueued_at: Mapped[datetime | None]
    started_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    team: Mapped[Team] = relationship(lazy="raise")

    __table_args__ = (
        CheckConstraint(f"status IN ({_STATUS_VALUES})", name="status"),
        CheckConstraint("attempt >= 0", name="attempt"),
        CheckConstraint("max_attempts >= 1", name="max_attempts"),
        CheckConstraint("progress >= 0", name="progress"),
        CheckConstraint("total >= 0", name="total"),
        CheckConstraint("sends >= 0", name="sends"),
        UniqueConstraint("team_id", "idempotency_key"),
        # listing a team's jobs newest first, with (created_at, id) cursors; also
        # serves the team_id foreign key
        Index("ix_jobs_team_id_created_at_id", "team_id", "created_at", "id"),
        Index("ix_jobs_team_id_config_key", "team_id", "config_key"),
        # a parent job's children (a sweep's trainings); also serves the foreign key
        Index("ix_jobs_parent_id_created_at", "parent_id", "created_at"),
        # the reconciler: running jobs by heartbeat, queued jobs by last send
        Index("ix_jobs_status_heartbeat_at", "status", "heartbeat_at"),
        # the reconciler: parents waiting on their children
        Index("ix_jobs_waiting_status", "waiting", "status"),
        Index("ix_jobs_status_enqueued_at", "status", "enqueued_at"),
        # a queued job's position: the queued jobs of its queue ahead of it
        Index("ix_jobs_status_queue_queued_at", "status", "queue", "queued_at"),
    )

    @property
    def finished(self) -> bool:
        """Whether the job reached a final status."""
        return JobStatus(self.status).finished

    @property
    def requested_device(self) -> str:
        """The spec's device preference (``auto``, ``cpu`` or ``cuda``): it picks the queue."""
        return _device_of(self.spec)


class SeriesChunk(Base):
    """A run of consecutive points of one series of a job (:mod:`core.series`).

    ``start`` is the index of the first point and ``size`` the number of points;
    ``data`` holds the values of ``fields`` (comma-separated, in that order) as
    packed float64 columns. ``attempt`` is the attempt that measured them: a
    resumed attempt keeps the chunks before its checkpoint, a new attempt of a
    kind that starts over deletes them all.
    """

    __tablename__ = "series_chunks"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(64))
    attempt: Mapped[int]
    start: Mapped[int]
    size: Mapped[int]
    fields: Mapped[str] = mapped_column(String(255))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)

    job: Mapped[Job] = relationship(lazy="raise")

    __table_args__ = (
        # reads: a series from an index on; the unique key also refuses a replayed chunk
        UniqueConstraint("job_id", "name", "start"),
        CheckConstraint("start >= 0", name="start"),
        CheckConstraint("size >= 1", name="size"),
    )
