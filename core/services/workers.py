"""The worker registry: workers announce themselves; queued jobs say why they wait.

A worker process writes its row when it starts (:func:`record_worker`), again every
heartbeat interval with what it holds, and deletes it on a clean shutdown
(:func:`retire_worker`). A worker silent for ``heartbeat_timeout_s`` is offline;
the reconciler prunes one silent for ``worker_prune_after_s``.

Readers: :func:`explain_wait` tells a team where its queued job stands (its place
in its queue, and whether any running worker takes that queue), and
:func:`fetched_before` tells the reconciler which queued jobs' messages are lost:
only a worker that was free and fetched nothing shows that a queue holds no
message, so while every consumer of a queue is busy, its jobs' messages are taken
to be waiting there and are not sent again.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.orm import Session

from core.clock import as_utc, utc_now
from core.models import Job, JobStatus, Worker
from core.queues import JOB_QUEUES, device_kind_of
from core.repositories import JobRepository, WorkerRepository
from core.settings import Settings

__all__ = [
    "FETCH_GRACE_S",
    "JobWait",
    "WorkerInfo",
    "WorkerView",
    "explain_wait",
    "explain_waits",
    "fetched_before",
    "job_status",
    "list_workers",
    "live_workers",
    "prune_workers",
    "record_worker",
    "retire_worker",
]

logger = logging.getLogger(__name__)

FETCH_GRACE_S = 1.0
"""How long a free worker may take to fetch a message waiting in its queues.

Redis hands it over at once (a blocking pop) and the filesystem transport within
its polling interval (0.1 s); the rest covers the worker's bookkeeping between
finishing one job and asking for the next, and small clock differences between
hosts."""


def _now(now: datetime | None) -> datetime:
    return utc_now() if now is None else as_utc(now)


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker process says about itself when it announces (it does not change)."""

    id: uuid.UUID
    name: str
    hostname: str
    pid: int
    queues: tuple[str, ...]
    started_at: datetime

    @property
    def device_kind(self) -> str:
        """``cuda`` for a worker that takes CUDA jobs, else ``cpu``."""
        return device_kind_of(self.queues)


@dataclass(frozen=True)
class WorkerView:
    """A registered worker and whether it is online (heard from within the timeout)."""

    worker: Worker
    online: bool


@dataclass(frozen=True)
class JobWait:
    """Where a queued job stands; both None once it is no longer queued.

    Attributes:
        queue_position: 1 + the queued jobs of its queue queued before it (any team).
        waiting_reason: why it waits, in words.
    """

    queue_position: int | None
    waiting_reason: str | None


def record_worker(
    session: Session,
    *,
    info: WorkerInfo,
    current_job_id: uuid.UUID | None,
    idle_since: datetime | None,
    now: datetime | None = None,
) -> None:
    """A worker's announcement or heartbeat: what it holds at ``now``.

    The first call inserts its row; a later one whose row is gone (pruned while the
    worker was cut off, or a database restored) inserts it again.

    Args:
        info: the worker's identity.
        current_job_id: the job whose message it holds (None: none, or not a job's).
        idle_since: when it was first seen free after its last message (None: busy).
        now: when it looked (the row's ``heartbeat_at``).
    """
    now = _now(now)
    repo = WorkerRepository(session)
    idle = None if idle_since is None else as_utc(idle_since)
    if repo.beat(info.id, current_job_id=current_job_id, idle_since=idle, now=now):
        return
    repo.add(
        Worker(
            id=info.id,
            name=info.name,
            hostname=info.hostname,
            pid=info.pid,
            device_kind=info.device_kind,
            queues=list(info.queues),
            current_job_id=current_job_id,
            idle_since=idle,
            started_at=as_utc(info.started_at),
            heartbeat_at=now,
        )
    )
    logger.info(
        "worker.announced worker_id=%s name=%s queues=%s device=%s",
        info.id,
        info.name,
        ",".join(info.queues),
        info.device_kind,
    )


def retire_worker(session: Session, *, worker_id: uuid.UUID) -> bool:
    """Remove a worker that is shutting down cleanly; False if it had no row."""
    removed = WorkerRepository(session).delete(worker_id)
    if removed:
        logger.info("worker.retired worker_id=%s", worker_id)
    return removed


def _live_cutoff(settings: Settings, now: datetime) -> datetime:
    return now - timedelta(seconds=settings.heartbeat_timeout_s)


def live_workers(
    session: Session, *, settings: Settings, now: datetime | None = None
) -> list[Worker]:
    """The workers heard from within ``heartbeat_timeout_s``."""
    return WorkerRepository(session).heard_since(_live_cutoff(settings, _now(now)))


def list_workers(
    session: Session, *, settings: Settings, now: datetime | None = None
) -> list[WorkerView]:
    """Every registered worker, online or not (silent past ``heartbeat_timeout_s``)."""
    cutoff = _live_cutoff(settings, _now(now))
    return [
        WorkerView(w, as_utc(w.heartbeat_at) >= cutoff) for w in WorkerRepository(session).all()
    ]


def prune_workers(session: Session, *, settings: Settings, now: datetime | None = None) -> int:
    """Forget workers silent for ``worker_prune_after_s``; how many."""
    silent_since = _now(now) - timedelta(seconds=settings.worker_prune_after_s)
    pruned = WorkerRepository(session).prune(silent_since)
    if pruned:
        logger.info("worker.pruned count=%d silent_since=%s", pruned, silent_since.isoformat())
    return pruned


def fetched_before(workers: Sequence[Worker]) -> dict[str, datetime]:
    """For each job queue, a time by which a message sent to it would have been fetched.

    A worker that at its last heartbeat ``H`` had been free since ``I`` (holding no
    message and fetching none since) would have fetched any message waiting in its
    queues by ``max(sent, I) + FETCH_GRACE_S``. So if that is at most ``H``, the
    message is no longer in the queue: a job still queued whose last message went
    out at or before ``H - FETCH_GRACE_S`` has lost it, provided ``I`` is at or
    before that too. Queues no free worker consumes are absent: their messages may
    be waiting behind busy workers (or for a worker to start).

    Args:
        workers: the live workers.
    """
    cutoffs: dict[str, datetime] = {}
    grace = timedelta(seconds=FETCH_GRACE_S)
    for worker in workers:
        if worker.idle_since is None:
            continue
        settled = as_utc(worker.heartbeat_at) - grace
        if as_utc(worker.idle_since) > settled:
            continue  # just became free: it may be fetching now
        for queue in worker.queues:
            if queue in JOB_QUEUES and (queue not in cutoffs or cutoffs[queue] < settled):
                cutoffs[queue] = settled
    return cutoffs


def job_status(session: Session, *, job_id: uuid.UUID) -> JobStatus | None:
    """A job's status alone, or None if it does not exist (a worker's cheap look
    before it starts a job's process: only a queued job is worth one)."""
    return JobRepository(session).status_of(job_id)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _online(workers: Sequence[Worker]) -> str:
    kinds = [
        _plural(count, f"{label} worker")
        for label, count in (
            ("CPU", sum(w.device_kind == "cpu" for w in workers)),
            ("GPU", sum(w.device_kind == "cuda" for w in workers)),
        )
        if count
    ]
    if not kinds:
        return "no worker is online"
    verb = "is" if len(workers) == 1 else "are"
    return f"{' and '.join(kinds)} {verb} online"


def _reason(queue: str, ahead: int, workers: Sequence[Worker]) -> str:
    job_workers = [w for w in workers if any(q in JOB_QUEUES for q in w.queues)]
    takers = [w for w in job_workers if queue in w.queues]
    if not takers:
        return f"no running worker takes {queue}; {_online(job_workers)}"
    idle = sum(w.idle_since is not None for w in takers)
    if ahead == 0 and idle:
        return "waiting for a worker to pick it up"
    place = f"next in {queue}" if ahead == 0 else f"{_plural(ahead, 'job')} ahead in {queue}"
    take = "1 worker takes it" if len(takers) == 1 else f"{len(takers)} workers take it"
    if idle:
        state = f"{idle} idle"
    else:
        state = "busy" if len(takers) == 1 else "all busy"
    return f"{place}; {take}, {state}"


def explain_wait(
    session: Session, *, job: Job, settings: Settings, now: datetime | None = None
) -> JobWait:
    """Where a queued job stands: its place in its queue and why it waits.

    The place counts jobs of every team (a number, nothing more about them); the
    reason names the queue and the running workers that take it, e.g. ``no running
    worker takes jobs.cuda; 2 CPU workers are online`` or ``3 jobs ahead in
    jobs.cpu; 1 worker takes it, busy``. A job no longer queued gets neither.
    """
    return explain_waits(session, jobs=[job], settings=settings, now=now)[job.id]


def explain_waits(
    session: Session, *, jobs: Sequence[Job], settings: Settings, now: datetime | None = None
) -> dict[uuid.UUID, JobWait]:
    """:func:`explain_wait` of each of ``jobs`` (a page of a listing), reading the live
    workers once, and only when one of them is queued."""
    queued = [job for job in jobs if JobStatus(job.status) == JobStatus.QUEUED]
    waits = {job.id: JobWait(queue_position=None, waiting_reason=None) for job in jobs}
    if not queued:
        return waits
    repository = JobRepository(session)
    workers = live_workers(session, settings=settings, now=now)
    for job in queued:
        ahead = repository.queued_ahead(job)
        waits[job.id] = JobWait(
            queue_position=ahead + 1, waiting_reason=_reason(job.queue, ahead, workers)
        )
    return waits
