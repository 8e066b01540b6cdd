"""All SQL about jobs and their curves.

Every state change a worker makes is one guarded ``UPDATE ... WHERE id = :id
AND attempt = :attempt AND status = 'running' ... RETURNING``: it either
happens entirely or touches nothing, so a stale worker (an older attempt), a
redelivered message or a racing reconciler changes nothing. ``RETURNING``
needs SQLite 3.35 or PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, insert, or_, select, update
from sqlalchemy.orm import Session

from sweep.models import CurveChunk, Job, JobStatus

__all__ = ["JobRepository"]


class JobRepository:
    """Reads and writes ``jobs`` and ``curve_chunks`` in the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    # ------------------------------------------------------------------ reads

    def add(self, job: Job) -> Job:
        """Insert a job and flush, so its id and defaults are set."""
        self.session.add(job)
        self.session.flush()
        return job

    def get(self, job_id: uuid.UUID) -> Job | None:
        """A job by id, whatever its team (workers and the reconciler)."""
        return self.session.get(Job, job_id)

    def get_for_team(self, team_id: uuid.UUID, job_id: uuid.UUID) -> Job | None:
        """A job by id, only if it belongs to ``team_id``."""
        stmt = select(Job).where(Job.id == job_id, Job.team_id == team_id)
        return self.session.scalars(stmt).one_or_none()

    def find_by_idempotency_key(self, team_id: uuid.UUID, key: str) -> Job | None:
        """The team's job submitted with ``key``, if any."""
        stmt = select(Job).where(Job.team_id == team_id, Job.idempotency_key == key)
        return self.session.scalars(stmt).one_or_none()

    def list_for_team(
        self,
        team_id: uuid.UUID,
        *,
        limit: int,
        before: tuple[datetime, uuid.UUID] | None = None,
        statuses: Sequence[JobStatus] = (),
        kind: str | None = None,
        workload: str | None = None,
        created_after: datetime | None = None,
    ) -> list[Job]:
        """The team's jobs, newest first, strictly after the cursor ``before``.

        Args:
            team_id: whose jobs.
            limit: at most this many.
            before: ``(created_at, id)`` of the last job of the previous page.
            statuses: only these statuses (all when empty).
            kind: only this kind.
            workload: only jobs of this workload (the denormalised ``workload`` column).
            created_after: only jobs created strictly after this time.
        """
        stmt = select(Job).where(Job.team_id == team_id)
        if statuses:
            stmt = stmt.where(Job.status.in_(list(statuses)))
        if kind is not None:
            stmt = stmt.where(Job.kind == kind)
        if workload is not None:
            stmt = stmt.where(Job.workload == workload)
        if created_after is not None:
            stmt = stmt.where(Job.created_at > created_after)
        if before is not None:
            created_at, job_id = before
            stmt = stmt.where(
                or_(
                    Job.created_at < created_at,
                    and_(Job.created_at == created_at, Job.id < job_id),
                )
            )
        stmt = stmt.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit)
        return list(self.session.scalars(stmt))

    def latest_succeeded_by_config_key(
        self, team_id: uuid.UUID, kind: str, config_key: str
    ) -> Job | None:
        """The team's most recently finished successful job of ``kind`` for a config."""
        stmt = (
            select(Job)
            .where(
                Job.team_id == team_id,
                Job.config_key == config_key,
                Job.kind == kind,
                Job.status == JobStatus.SUCCEEDED,
            )
            .order_by(Job.finished_at.desc(), Job.id.desc())
            .limit(1)
        )
        return self.session.scalars(stmt).one_or_none()

    def stale_queued(self, cutoff: datetime, *, limit: int) -> list[Job]:
        """Queued jobs whose last message went out before ``cutoff`` (or never)."""
        stmt = (
            select(Job)
            .where(Job.status == JobStatus.QUEUED, _sent_before(cutoff))
            .order_by(Job.enqueued_at, Job.id)
            .limit(limit)
        )
        return list(self.session.scalars(stmt))

    def stale_running(self, cutoff: datetime, *, limit: int) -> list[Job]:
        """Running jobs whose last heartbeat is older than ``cutoff``."""
        stmt = (
            select(Job)
            .where(Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff)
            .order_by(Job.heartbeat_at, Job.id)
            .limit(limit)
        )
        return list(self.session.scalars(stmt))

    def overdue_running(self, started_before: datetime, *, limit: int) -> list[Job]:
        """Running jobs whose current attempt started before ``started_before``."""
        stmt = (
            select(Job)
            .where(Job.status == JobStatus.RUNNING, Job.started_at < started_before)
            .order_by(Job.started_at, Job.id)
            .limit(limit)
        )
        return list(self.session.scalars(stmt))

    def read_curve(self, job_id: uuid.UUID, attempt: int, *, after: int) -> list[CurveChunk]:
        """Chunks of one attempt holding any point at index ``after`` or later, in order."""
        stmt = (
            select(CurveChunk)
            .where(
                CurveChunk.job_id == job_id,
                CurveChunk.attempt == attempt,
                CurveChunk.start + CurveChunk.size > after,
            )
            .order_by(CurveChunk.seq)
        )
        return list(self.session.scalars(stmt))

    # ------------------------------------------------------------------ guarded writes

    def _transition(
        self, job_id: uuid.UUID, where: Sequence[ColumnElement[bool]], values: dict[str, Any]
    ) -> Job | None:
        stmt = (
            update(Job)
            .where(Job.id == job_id, *where)
            .values(**values)
            .returning(Job)
            .execution_options(populate_existing=True)
        )
        return self.session.scalars(stmt).one_or_none()

    def claim(
        self, job_id: uuid.UUID, *, worker: str, device: str | None, now: datetime
    ) -> Job | None:
        """Atomically move a queued job to running as a new attempt.

        ``UPDATE jobs SET status='running', attempt=attempt+1, ... WHERE id=:id AND
        status='queued' AND NOT cancel_requested RETURNING *``: of two workers given
        the same job, exactly one gets it. The new attempt's curve starts at 0.
        """
        return self._transition(
            job_id,
            [Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False)],
            {
                "status": JobStatus.RUNNING,
                "attempt": Job.attempt + 1,
                "worker": worker,
                "device": device,
                "progress": 0,
                "error": None,
                "started_at": now,
                "heartbeat_at": now,
                "updated_at": now,
            },
        )

    def heartbeat(self, job_id: uuid.UUID, attempt: int, *, now: datetime) -> bool | None:
        """Record that ``attempt`` is alive; its ``cancel_requested``, or None if refused."""
        stmt = (
            update(Job)
            .where(Job.id == job_id, *_running(attempt))
            .values(heartbeat_at=now, updated_at=now)
            .returning(Job.cancel_requested)
        )
        return self.session.scalars(stmt).one_or_none()

    def advance_progress(
        self, job_id: uuid.UUID, attempt: int, *, start: int, size: int, now: datetime
    ) -> bool | None:
        """Move ``progress`` from ``start`` to ``start + size`` (also a heartbeat).

        Refused (None) unless ``attempt`` is the job's running attempt and ``start`` is
        exactly where its curve ends: no gap, no overlap, no replay. On PostgreSQL the
        update also locks the row until commit, so chunks of a job are appended one
        at a time. Returns the job's ``cancel_requested`` otherwise.
        """
        stmt = (
            update(Job)
            .where(Job.id == job_id, *_running(attempt), Job.progress == start)
            .values(progress=start + size, heartbeat_at=now, updated_at=now)
            .returning(Job.cancel_requested)
        )
        return self.session.scalars(stmt).one_or_none()

    def add_curve_chunk(
        self,
        job_id: uuid.UUID,
        attempt: int,
        *,
        start: int,
        size: int,
        data: dict[str, Any],
        now: datetime,
    ) -> int:
        """Store a chunk as the attempt's next ``seq``; returns that ``seq``.

        Call it after :meth:`advance_progress` accepted the same chunk, in the same
        transaction (that update is the guard and the lock).
        """
        next_seq = (
            select(func.coalesce(func.max(CurveChunk.seq) + 1, 0))
            .where(CurveChunk.job_id == job_id, CurveChunk.attempt == attempt)
            .scalar_subquery()
        )
        stmt = (
            insert(CurveChunk)
            .values(
                job_id=job_id,
                attempt=attempt,
                seq=next_seq,
                start=start,
                size=size,
                data=data,
                created_at=now,
            )
            .returning(CurveChunk.seq)
        )
        return int(self.session.execute(stmt).scalar_one())

    def finish(
        self, job_id: uuid.UUID, attempt: int, *, result: dict[str, Any], now: datetime
    ) -> Job | None:
        """running → succeeded with ``result``, only for the running ``attempt``."""
        return self._transition(
            job_id,
            _running(attempt),
            {
                "status": JobStatus.SUCCEEDED,
                "result": result,
                "finished_at": now,
                "updated_at": now,
            },
        )

    def fail(
        self,
        job_id: uuid.UUID,
        attempt: int,
        *,
        reason: str,
        now: datetime,
        heartbeat_before: datetime | None = None,
    ) -> Job | None:
        """running → failed with ``reason``, only for the running ``attempt``.

        With ``heartbeat_before``, only if the attempt has still not sent a heartbeat
        since (the reconciler's guard against a worker that just came back).
        """
        where = _running(attempt)
        if heartbeat_before is not None:
            where.append(Job.heartbeat_at < heartbeat_before)
        return self._transition(
            job_id,
            where,
            {"status": JobStatus.FAILED, "error": reason, "finished_at": now, "updated_at": now},
        )

    def mark_cancelled(
        self,
        job_id: uuid.UUID,
        attempt: int,
        *,
        now: datetime,
        heartbeat_before: datetime | None = None,
    ) -> Job | None:
        """running → cancelled, only for the running ``attempt`` asked to cancel."""
        where = [*_running(attempt), Job.cancel_requested.is_(True)]
        if heartbeat_before is not None:
            where.append(Job.heartbeat_at < heartbeat_before)
        return self._transition(
            job_id,
            where,
            {"status": JobStatus.CANCELLED, "finished_at": now, "updated_at": now},
        )

    def cancel_queued(self, job_id: uuid.UUID, *, team_id: uuid.UUID, now: datetime) -> Job | None:
        """queued → cancelled at once (its message will find nothing to run)."""
        return self._transition(
            job_id,
            [Job.team_id == team_id, Job.status == JobStatus.QUEUED],
            {
                "status": JobStatus.CANCELLED,
                "cancel_requested": True,
                "finished_at": now,
                "updated_at": now,
            },
        )

    def request_cancel_running(
        self, job_id: uuid.UUID, *, team_id: uuid.UUID, now: datetime
    ) -> Job | None:
        """Raise a running job's ``cancel_requested`` flag (its worker stops cooperatively)."""
        return self._transition(
            job_id,
            [Job.team_id == team_id, Job.status == JobStatus.RUNNING],
            {"cancel_requested": True, "updated_at": now},
        )

    def mark_resent(
        self, job_ids: Sequence[uuid.UUID], *, cutoff: datetime, now: datetime
    ) -> list[tuple[uuid.UUID, str]]:
        """Stamp ``enqueued_at = now`` on those still queued and stale; their ``(id, kind)``."""
        if not job_ids:
            return []
        stmt = (
            update(Job)
            .where(Job.id.in_(list(job_ids)), Job.status == JobStatus.QUEUED, _sent_before(cutoff))
            .values(enqueued_at=now, updated_at=now)
            .returning(Job.id, Job.kind)
        )
        return [(row.id, row.kind) for row in self.session.execute(stmt)]

    def requeue(
        self, job_id: uuid.UUID, attempt: int, *, heartbeat_before: datetime, now: datetime
    ) -> Job | None:
        """running → queued for another attempt, if ``attempt`` is still silent.

        The attempt number stays (the next claim raises it); the curve of the lost
        attempt stays readable until the next attempt starts.
        """
        return self._transition(
            job_id,
            [*_running(attempt), Job.heartbeat_at < heartbeat_before],
            {
                "status": JobStatus.QUEUED,
                "worker": None,
                "device": None,
                "started_at": None,
                "heartbeat_at": None,
                "enqueued_at": now,
                "updated_at": now,
            },
        )

    def note_worker_lost(self, job_id: uuid.UUID, *, worker: str, note: str, now: datetime) -> bool:
        """Put ``note`` in ``error`` of the job if it is running on ``worker``.

        The job stays running (the reconciler retries it once its heartbeat is
        stale); the next claim clears ``error``. False when the job is not running
        on ``worker`` any more (it finished, or another attempt took over).
        """
        stmt = (
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.RUNNING, Job.worker == worker)
            .values(error=note, updated_at=now)
            .returning(Job.id)
        )
        return self.session.execute(stmt).first() is not None


def _running(attempt: int) -> list[ColumnElement[bool]]:
    return [Job.attempt == attempt, Job.status == JobStatus.RUNNING]


def _sent_before(cutoff: datetime) -> ColumnElement[bool]:
    return or_(Job.enqueued_at.is_(None), Job.enqueued_at < cutoff)
