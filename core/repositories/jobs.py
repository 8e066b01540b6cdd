"""All SQL about jobs and their series.

Every state change a worker makes is one guarded ``UPDATE ... WHERE id = :id
AND attempt = :attempt AND status = 'running' ... RETURNING``: it either
happens entirely or touches nothing, so a stale worker (an older attempt), a
redelivered message or a racing reconciler changes nothing. ``RETURNING``
needs SQLite 3.35 or PostgreSQL.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, insert, or_, select, true, update
from sqlalchemy.orm import Session

from core.models import Job, JobStatus, SeriesChunk, Team
from core.series import SeriesPoints, decode_values, encode_values

__all__ = ["JobRepository", "ReportGuard", "ResendRule"]

_MAX_BACKOFF_LEVELS = 32


@dataclass(frozen=True)
class ResendRule:
    """Which queued jobs' messages the reconciler sends again, at ``now``.

    Attributes:
        fetched_before: queue -> a time at which a worker consuming the queue was
            free and had fetched nothing: a job of that queue whose last message
            went out at or before it has no message left in the queue. Other
            queues' jobs are left alone (their messages may still be waiting).
        now: the reconciler's time.
        first_wait_s: the least wait after a job's first send before a re-send.
        max_wait_s: the wait doubles with every re-send (``sends``), up to this.
    """

    fetched_before: Mapping[str, datetime]
    now: datetime
    first_wait_s: float
    max_wait_s: float

    def where(self) -> list[ColumnElement[bool]]:
        """The conditions on ``jobs``."""
        lost = [
            and_(Job.queue == queue, or_(Job.enqueued_at.is_(None), Job.enqueued_at <= cutoff))
            for queue, cutoff in self.fetched_before.items()
        ]
        # the backoff: after its n-th send a job waits first_wait_s * 2**(n-1), at most max
        waited = [
            Job.enqueued_at.is_(None),
            Job.enqueued_at < self.now - timedelta(seconds=self.max_wait_s),
        ]
        sends, wait_s = 1, self.first_wait_s
        while wait_s < self.max_wait_s and sends < _MAX_BACKOFF_LEVELS:
            waited.append(
                and_(Job.sends <= sends, Job.enqueued_at < self.now - timedelta(seconds=wait_s))
            )
            sends, wait_s = sends + 1, wait_s * 2
        return [Job.status == JobStatus.QUEUED, or_(*lost), or_(*waited)]


class JobRepository:
    """Reads and writes ``jobs`` and ``series_chunks`` in the caller's transaction."""

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

    def status_of(self, job_id: uuid.UUID) -> JobStatus | None:
        """A job's status alone (one indexed read), or None if there is no such job."""
        status = self.session.scalars(select(Job.status).where(Job.id == job_id)).one_or_none()
        return None if status is None else JobStatus(status)

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
        parent_id: uuid.UUID | None = None,
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
            parent_id: only the children of this job.
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
        if parent_id is not None:
            stmt = stmt.where(Job.parent_id == parent_id)
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

    def latest_succeeded_of_workload(
        self, team_id: uuid.UUID, kind: str, workload: str, *, limit: int
    ) -> list[Job]:
        """The team's most recently finished successful jobs of ``kind`` on ``workload``."""
        stmt = (
            select(Job)
            .where(
                Job.team_id == team_id,
                Job.workload == workload,
                Job.kind == kind,
                Job.status == JobStatus.SUCCEEDED,
            )
            .order_by(Job.finished_at.desc(), Job.id.desc())
            .limit(limit)
        )
        return list(self.session.scalars(stmt))

    def latest_succeeded_without_workload(
        self, team_id: uuid.UUID, kind: str, *, limit: int
    ) -> list[Job]:
        """The team's most recently finished successful jobs of ``kind`` that ran no
        registered workload (those the team ran in its own loop)."""
        stmt = (
            select(Job)
            .where(
                Job.team_id == team_id,
                Job.workload.is_(None),
                Job.parent_id.is_(None),
                Job.kind == kind,
                Job.status == JobStatus.SUCCEEDED,
            )
            .order_by(Job.finished_at.desc(), Job.id.desc())
            .limit(limit)
        )
        return list(self.session.scalars(stmt))

    def count_active_for_team(self, team_id: uuid.UUID, *, lock_team: bool = False) -> int:
        """How many of the team's jobs are queued or running.

        With ``lock_team``, the team's row is locked first (``FOR NO KEY UPDATE`` on
        PostgreSQL, which other submits of the team wait for but foreign-key checks
        do not; SQLite's writers are serialised already) until the transaction ends,
        so two submits of one team count one after the other and a cap checked
        against this count holds under concurrency.
        """
        if lock_team:
            # key_share without read: PostgreSQL's FOR NO KEY UPDATE
            lock = select(Team.id).where(Team.id == team_id).with_for_update(key_share=True)
            self.session.execute(lock)
        stmt = (
            select(func.count())
            .select_from(Job)
            .where(
                Job.team_id == team_id,
                Job.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]),
            )
        )
        return int(self.session.scalar(stmt) or 0)

    def resendable(
        self, rule: ResendRule, *, exclude: Collection[uuid.UUID] = (), limit: int
    ) -> list[Job]:
        """Queued jobs whose message ``rule`` takes as lost and whose re-send is due.

        Args:
            rule: which messages are lost, and the backoff.
            exclude: jobs a live worker holds the message of (received, not claimed).
            limit: at most this many, the longest waiting first.
        """
        if not rule.fetched_before:
            return []
        stmt = select(Job).where(*rule.where()).order_by(Job.enqueued_at, Job.id).limit(limit)
        if exclude:
            stmt = stmt.where(Job.id.not_in(list(exclude)))
        return list(self.session.scalars(stmt))

    def queued_ahead(self, job: Job) -> int:
        """How many queued jobs of ``job``'s queue were queued before it (any team)."""
        stmt = select(func.count()).where(
            Job.status == JobStatus.QUEUED,
            Job.queue == job.queue,
            or_(
                Job.queued_at < job.queued_at,
                and_(Job.queued_at == job.queued_at, Job.id < job.id),
            ),
        )
        return int(self.session.execute(stmt).scalar_one())

    def stale_running(self, cutoff: datetime, *, limit: int) -> list[Job]:
        """Running jobs whose last heartbeat is older than ``cutoff``."""
        stmt = (
            select(Job)
            .where(
                Job.status == JobStatus.RUNNING,
                Job.waiting.is_(False),
                Job.heartbeat_at < cutoff,
            )
            .order_by(Job.heartbeat_at, Job.id)
            .limit(limit)
        )
        return list(self.session.scalars(stmt))

    def overdue_running(self, started_before: datetime, *, kind: str, limit: int) -> list[Job]:
        """Running jobs of ``kind`` whose current attempt started before ``started_before``."""
        stmt = (
            select(Job)
            .where(
                Job.status == JobStatus.RUNNING,
                Job.waiting.is_(False),
                Job.kind == kind,
                Job.started_at < started_before,
            )
            .order_by(Job.started_at, Job.id)
            .limit(limit)
        )
        return list(self.session.scalars(stmt))

    def read_series(
        self, job_id: uuid.UUID, name: str, *, after: int, limit: int | None = None
    ) -> list[SeriesChunk]:
        """Chunks of a series holding any point from index ``after`` on (up to
        ``after + limit``), in order."""
        stmt = (
            select(SeriesChunk)
            .where(
                SeriesChunk.job_id == job_id,
                SeriesChunk.name == name,
                SeriesChunk.start + SeriesChunk.size > after,
            )
            .order_by(SeriesChunk.start)
        )
        if limit is not None:
            stmt = stmt.where(SeriesChunk.start < after + limit)
        return list(self.session.scalars(stmt))

    def read_series_of(self, job_ids: Sequence[uuid.UUID], name: str) -> list[SeriesChunk]:
        """Every chunk of series ``name`` of each of ``job_ids``, job by job, in order."""
        if not job_ids:
            return []
        stmt = (
            select(SeriesChunk)
            .where(SeriesChunk.job_id.in_(list(job_ids)), SeriesChunk.name == name)
            .order_by(SeriesChunk.job_id, SeriesChunk.start)
        )
        return list(self.session.scalars(stmt))

    def first_point_after_attempt(self, job_id: uuid.UUID, name: str, attempt: int) -> int | None:
        """Index of the first point of a series that an attempt after ``attempt`` wrote."""
        stmt = select(func.min(SeriesChunk.start)).where(
            SeriesChunk.job_id == job_id,
            SeriesChunk.name == name,
            SeriesChunk.attempt > attempt,
        )
        first = self.session.scalar(stmt)
        return None if first is None else int(first)

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
        the same job, exactly one gets it. Where its series start is
        :meth:`restart_series`'s business, in the same transaction.
        """
        return self._transition(
            job_id,
            [Job.status == JobStatus.QUEUED, Job.cancel_requested.is_(False)],
            {
                "status": JobStatus.RUNNING,
                "attempt": Job.attempt + 1,
                "worker": worker,
                "device": device,
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

    def restart_series(self, job: Job, *, keep: dict[str, int], progress: int) -> None:
        """Start a claimed attempt's series at ``keep`` points each (none: empty).

        Chunks past the kept points go; a chunk that straddles the line is cut.
        Call it right after :meth:`claim`, in the same transaction (the claim
        locked the row).
        """
        cut = [
            and_(SeriesChunk.name == name, SeriesChunk.start + SeriesChunk.size > count)
            for name, count in keep.items()
        ]
        straddling = (
            list(
                self.session.scalars(
                    select(SeriesChunk).where(
                        SeriesChunk.job_id == job.id,
                        or_(
                            *[
                                and_(
                                    SeriesChunk.name == name,
                                    SeriesChunk.start < count,
                                    SeriesChunk.start + SeriesChunk.size > count,
                                )
                                for name, count in keep.items()
                            ]
                        ),
                    )
                )
            )
            if keep
            else []
        )
        for chunk in straddling:
            names = tuple(chunk.fields.split(","))
            size = keep[chunk.name] - chunk.start
            values = decode_values(names, chunk.data, chunk.size)
            head = {k: None if v is None else v[:size] for k, v in values.items()}
            chunk.data = encode_values(names, head)
            chunk.size = size
        self.session.flush()
        kept_names = list(keep)
        self.session.execute(
            delete(SeriesChunk).where(
                SeriesChunk.job_id == job.id,
                or_(SeriesChunk.name.not_in(kept_names), *cut) if kept_names else true(),
            )
        )
        job.series_points = dict(keep)
        job.progress = progress
        self.session.flush()

    def guard_report(self, job_id: uuid.UUID, attempt: int, *, now: datetime) -> ReportGuard | None:
        """Lock the running ``attempt``'s row for a report (also a heartbeat).

        None unless ``attempt`` is the job's running one. On PostgreSQL the update
        locks the row until commit, so the reports of a job are stored one at a time.
        """
        stmt = (
            update(Job)
            .where(Job.id == job_id, *_running(attempt))
            .values(heartbeat_at=now, updated_at=now)
            .returning(Job.kind, Job.cancel_requested, Job.series_points, Job.progress)
        )
        row = self.session.execute(stmt).one_or_none()
        if row is None:
            return None
        return ReportGuard(
            kind=row.kind,
            cancel_requested=row.cancel_requested,
            series_points={k: int(v) for k, v in (row.series_points or {}).items()},
            progress=row.progress,
        )

    def append_points(
        self,
        job_id: uuid.UUID,
        attempt: int,
        *,
        runs: list[tuple[SeriesPoints, tuple[str, ...]]],
        series_points: dict[str, int],
        progress: int,
        now: datetime,
    ) -> None:
        """Store runs of points (with their series' fields) and the new counts.

        Call it after :meth:`guard_report` accepted the attempt, in the same
        transaction, with counts it checked the runs against.
        """
        if runs:
            self.session.execute(
                insert(SeriesChunk),
                [
                    {
                        "job_id": job_id,
                        "name": points.name,
                        "attempt": attempt,
                        "start": points.start,
                        "size": points.size,
                        "fields": ",".join(names),
                        "data": encode_values(names, points.values),
                        "created_at": now,
                    }
                    for points, names in runs
                ],
            )
        self.session.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(series_points=series_points, progress=progress)
        )

    def record_checkpoint(
        self, job_id: uuid.UUID, attempt: int, *, artifact: str, now: datetime
    ) -> dict[str, object] | None:
        """Note that ``attempt`` published checkpoint ``artifact`` at its current points.

        The next attempt resumes there: with the job's progress and series counts
        as they are now (the worker stored every point up to the checkpoint
        before publishing it). None (nothing changed) unless ``attempt`` runs.
        """
        guard = self.guard_report(job_id, attempt, now=now)
        if guard is None:
            return None
        checkpoint: dict[str, object] = {
            "artifact": artifact,
            "attempt": attempt,
            "progress": guard.progress,
            "series": guard.series_points,
            "at": now.isoformat(),
        }
        self.session.execute(update(Job).where(Job.id == job_id).values(checkpoint=checkpoint))
        return checkpoint

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
        self, job_ids: Sequence[uuid.UUID], rule: ResendRule
    ) -> list[tuple[uuid.UUID, str]]:
        """Stamp a re-send (``enqueued_at = now``, ``sends + 1``) on those of ``job_ids``
        ``rule`` still selects; their ``(id, kind)``.

        The same conditions guard the update, so of two reconcilers re-sending the
        same job only the first does.
        """
        if not job_ids:
            return []
        stmt = (
            update(Job)
            .where(Job.id.in_(list(job_ids)), *rule.where())
            .values(enqueued_at=rule.now, sends=Job.sends + 1, updated_at=rule.now)
            .returning(Job.id, Job.kind)
        )
        return [(row.id, row.kind) for row in self.session.execute(stmt)]

    def requeue(
        self, job_id: uuid.UUID, attempt: int, *, heartbeat_before: datetime, now: datetime
    ) -> Job | None:
        """running → queued for another attempt, if ``attempt`` is still silent.

        The attempt number stays (the next claim raises it); the series of the lost
        attempt stay readable until the next attempt starts.
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
                "sends": 1,
                "updated_at": now,
            },
        )

    # ------------------------------------------------------------------ parents

    def lock(self, job_id: uuid.UUID) -> Job | None:
        """A job by id with its row locked until the transaction ends (``FOR UPDATE``)."""
        stmt = (
            select(Job)
            .where(Job.id == job_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        return self.session.scalars(stmt).one_or_none()

    def queued_siblings(self, job: Job) -> list[Job]:
        """The other queued children of ``job``'s parent of its kind and queue, oldest
        first (none not asked to cancel; the parent index finds them)."""
        if job.parent_id is None:
            return []
        stmt = (
            select(Job)
            .where(
                Job.parent_id == job.parent_id,
                Job.id != job.id,
                Job.kind == job.kind,
                Job.queue == job.queue,
                Job.status == JobStatus.QUEUED,
                Job.cancel_requested.is_(False),
            )
            .order_by(Job.created_at, Job.id)
        )
        return list(self.session.scalars(stmt))

    def children(self, parent_id: uuid.UUID) -> list[Job]:
        """A job's children, oldest first."""
        stmt = select(Job).where(Job.parent_id == parent_id).order_by(Job.created_at, Job.id)
        return list(self.session.scalars(stmt))

    def waiting_parents(self, *, limit: int) -> list[uuid.UUID]:
        """Running jobs that wait on their children, the least recently moved first."""
        stmt = select(Job.id).where(*_waiting()).order_by(Job.updated_at, Job.id).limit(limit)
        return list(self.session.scalars(stmt))

    def wait(
        self, job_id: uuid.UUID, attempt: int, *, result: dict[str, Any] | None, now: datetime
    ) -> Job | None:
        """The running ``attempt``'s worker is done; the job waits on its children.

        It stays ``running`` with ``waiting`` set and ``result`` stored; no worker
        holds it any more, so heartbeats and time limits no longer apply.
        """
        return self._transition(
            job_id,
            _running(attempt),
            {
                "waiting": True,
                "result": result,
                "worker": None,
                "heartbeat_at": None,
                "updated_at": now,
            },
        )

    def update_waiting(self, job_id: uuid.UUID, values: dict[str, Any], *, now: datetime) -> None:
        """Set ``values`` (a partial result, progress) on a job that waits on its children."""
        self.session.execute(
            update(Job).where(Job.id == job_id, *_waiting()).values(**values, updated_at=now)
        )

    def settle(
        self,
        job_id: uuid.UUID,
        *,
        status: JobStatus,
        now: datetime,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> Job | None:
        """A waiting job ends: ``status`` with its ``result`` and ``error``."""
        values: dict[str, Any] = {"status": status, "waiting": False, "finished_at": now}
        if result is not None:
            values["result"] = result
        if error is not None:
            values["error"] = error
        return self._transition(job_id, _waiting(), {**values, "updated_at": now})

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


@dataclass(frozen=True)
class ReportGuard:
    """The running attempt's row, locked for a report: what the report checks against."""

    kind: str
    cancel_requested: bool
    series_points: dict[str, int]
    progress: int


def _running(attempt: int) -> list[ColumnElement[bool]]:
    # a waiting job is running but no worker holds it: a worker's write is refused
    return [Job.attempt == attempt, Job.status == JobStatus.RUNNING, Job.waiting.is_(False)]


def _waiting() -> list[ColumnElement[bool]]:
    return [Job.status == JobStatus.RUNNING, Job.waiting.is_(True)]
