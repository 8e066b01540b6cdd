"""The job lifecycle: submit, claim, heartbeat, progress, finish, fail, cancel, reconcile.

Services take the session first and keyword-only arguments after it; they
``flush()`` when they need ids and never commit: the caller's unit of work (an
API request, a worker's ``session_scope``) does. Messages for the broker are
queued with :func:`sweep.db.enqueue_after_commit` and leave after that commit.

Every write a worker makes carries the ``attempt`` its claim returned, and is
refused (changing nothing) when that attempt is no longer the job's running one.
Times default to now (UTC); tests pass ``now=`` explicitly.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from sweep.clock import as_utc, utc_now
from sweep.db import enqueue_after_commit
from sweep.errors import (
    IdempotencyConflict,
    InvalidInput,
    InvalidJobSpec,
    JobConflict,
    JobNotFound,
    NotReady,
)
from sweep.models import Job, JobStatus, Team
from sweep.repositories import JobRepository
from sweep.settings import Settings
from sweep.specs import (
    JOB_RESULTS,
    JOB_SPECS,
    CurvePoints,
    JobResult,
    JobSpec,
    RangeTestOutcome,
    RangeTestSpec,
    SuggestionsDoc,
    canonical_json,
    field_errors,
)

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "IDEMPOTENCY_KEY_MAX_LENGTH",
    "MAX_ERROR_LENGTH",
    "MAX_PAGE_SIZE",
    "Bounds",
    "CurveSlice",
    "JobAck",
    "JobPage",
    "ReconcileReport",
    "acknowledge_cancel",
    "cancel_job",
    "claim_job",
    "fail_job",
    "find_bounds",
    "finish_job",
    "get_bounds",
    "get_job",
    "heartbeat",
    "list_jobs",
    "parse_job_spec",
    "read_curve",
    "reconcile",
    "report_progress",
    "submit_job",
]

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
IDEMPOTENCY_KEY_MAX_LENGTH = 255
MAX_ERROR_LENGTH = 10_000
"""Longer failure reasons are cut (a traceback can be huge)."""

RECONCILE_BATCH = 500
"""Jobs the reconciler handles per pass and per category; the next pass takes the rest."""

_CANCEL_RETRIES = 3


@dataclass(frozen=True)
class JobAck:
    """A worker's answer from a heartbeat or a progress report.

    Attributes:
        accepted: False when the attempt is no longer the job's running one (the
            job was requeued, failed by the reconciler, or finished): stop at once.
        cancel_requested: the job was asked to cancel: stop at the next safe point
            and call :func:`acknowledge_cancel`.
    """

    accepted: bool
    cancel_requested: bool

    @property
    def should_stop(self) -> bool:
        """Whether the worker should stop running this attempt."""
        return not self.accepted or self.cancel_requested


@dataclass(frozen=True)
class JobPage:
    """One page of a job listing; ``next_cursor`` is None on the last page."""

    items: list[Job]
    next_cursor: str | None


@dataclass(frozen=True)
class CurveSlice:
    """The points of a job's current attempt from index ``start`` on.

    ``next_after`` is what to pass as ``after`` to read only newer points; when
    ``attempt`` changes between two reads the job restarted and its curve with it.
    ``accuracies`` is None when the points have no metric.
    """

    job_id: uuid.UUID
    attempt: int
    status: JobStatus
    start: int
    lrs: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    accuracies: list[float] | None
    total: int

    @property
    def next_after(self) -> int:
        """Index of the first point not in this slice."""
        return self.start + len(self.lrs)


@dataclass(frozen=True)
class Bounds:
    """Suggested CLR bounds from a successful range test."""

    job_id: uuid.UUID
    config_key: str
    finished_at: datetime | None
    suggestions: SuggestionsDoc


@dataclass(frozen=True)
class ReconcileReport:
    """What one reconciler pass did, by job id."""

    resent: list[uuid.UUID]
    requeued: list[uuid.UUID]
    failed: list[uuid.UUID]
    cancelled: list[uuid.UUID]
    timed_out: list[uuid.UUID]


def _now(now: datetime | None) -> datetime:
    return utc_now() if now is None else as_utc(now)


# --------------------------------------------------------------------------- submit


def parse_job_spec(kind: str, spec: JobSpec | Mapping[str, Any]) -> JobSpec:
    """Validate ``spec`` as a ``kind`` job's spec and return it normalised.

    Raises:
        InvalidJobSpec: the kind is unknown, or one ``{"field", "reason"}`` per problem.
    """
    spec_cls = JOB_SPECS.get(kind)
    if spec_cls is None:
        known = ", ".join(sorted(JOB_SPECS))
        reason = f"unknown job kind {kind!r}; known kinds: {known}"
        raise InvalidJobSpec(reason, errors=[{"field": "kind", "reason": reason}])
    data = spec.model_dump() if isinstance(spec, BaseModel) else dict(spec)
    try:
        return spec_cls.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        raise InvalidJobSpec(f"invalid {kind} spec: {detail}", errors=errors) from None


def _check_idempotency_key(key: str) -> None:
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_LENGTH or not all("!" <= ch <= "~" for ch in key):
        reason = (
            f"must be 1 to {IDEMPOTENCY_KEY_MAX_LENGTH} visible ASCII characters "
            "(no spaces), such as a UUID"
        )
        raise InvalidInput(
            f"Idempotency-Key {reason}", errors=[{"field": "Idempotency-Key", "reason": reason}]
        )


def _replay(existing: Job, request_hash: str, key: str) -> Job:
    if existing.request_hash != request_hash:
        reason = f"already used for job {existing.id} with a different request"
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was {reason}; use a new key for a new request",
            errors=[{"field": "Idempotency-Key", "reason": reason}],
        )
    logger.info("job.idempotent_replay job_id=%s key=%s", existing.id, key)
    return existing


def submit_job(
    session: Session,
    *,
    team: Team,
    kind: str,
    spec: JobSpec | Mapping[str, Any],
    settings: Settings,
    idempotency_key: str | None = None,
    now: datetime | None = None,
) -> Job:
    """Queue a job for ``team``; its message leaves after the commit.

    With an ``idempotency_key``, a retry of the same request (same kind and, once
    normalised, the same spec) returns the job the first one created, even when
    the two race; the same key with a different request is refused.

    Raises:
        InvalidJobSpec: the kind or the spec is not acceptable.
        InvalidInput: the idempotency key is malformed.
        IdempotencyConflict: the key was used before with a different request.
    """
    now = _now(now)
    parsed = parse_job_spec(kind, spec)
    spec_json = parsed.model_dump(mode="json")
    request_hash = hashlib.sha256(
        canonical_json({"kind": kind, "spec": spec_json}).encode()
    ).hexdigest()
    repo = JobRepository(session)
    if idempotency_key is not None:
        _check_idempotency_key(idempotency_key)
        existing = repo.find_by_idempotency_key(team.id, idempotency_key)
        if existing is not None:
            return _replay(existing, request_hash, idempotency_key)
    job = Job(
        team_id=team.id,
        kind=kind,
        status=JobStatus.QUEUED,
        spec=spec_json,
        config_key=parsed.config_key(),
        workload=parsed.workload_name(),
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        attempt=0,
        max_attempts=settings.max_attempts,
        cancel_requested=False,
        progress=0,
        total=parsed.total_steps(),
        queued_at=now,
        enqueued_at=now,
        created_at=now,
        updated_at=now,
    )
    if idempotency_key is None:
        repo.add(job)  # nothing to race on: no savepoint (two round trips fewer)
    else:
        try:
            with session.begin_nested():
                repo.add(job)
        except IntegrityError:
            # A concurrent request with the same key committed first.
            existing = repo.find_by_idempotency_key(team.id, idempotency_key)
            if existing is None:
                raise
            return _replay(existing, request_hash, idempotency_key)
    enqueue_after_commit(session, job.id, job.kind, device=job.requested_device)
    logger.info(
        "job.submitted job_id=%s kind=%s team_id=%s config_key=%s",
        job.id,
        kind,
        team.id,
        job.config_key,
    )
    return job


# --------------------------------------------------------------------------- worker side


def claim_job(
    session: Session,
    *,
    job_id: uuid.UUID,
    worker: str,
    device: str | None = None,
    now: datetime | None = None,
) -> Job | None:
    """Start a new attempt of a queued job for ``worker``; None if it is not queued.

    None means there is nothing to run: another worker has it, it finished, or it
    was cancelled. So a redelivered or duplicated message runs nothing twice.

    Raises:
        ValueError: ``worker`` is empty or longer than 255 characters.
    """
    if not 1 <= len(worker) <= 255:
        raise ValueError(f"worker must be 1 to 255 characters, got {len(worker)}")
    now = _now(now)
    repo = JobRepository(session)
    job = repo.claim(job_id, worker=worker, device=device, now=now)
    if job is None:
        current = repo.get(job_id)
        status = "missing" if current is None else current.status
        logger.info("job.claim_skipped job_id=%s status=%s worker=%s", job_id, status, worker)
        return None
    logger.info("job.claimed job_id=%s attempt=%d worker=%s", job.id, job.attempt, worker)
    return job


def heartbeat(
    session: Session, *, job_id: uuid.UUID, attempt: int, now: datetime | None = None
) -> JobAck:
    """Record that ``attempt`` of the job is alive; says whether to stop."""
    cancel_requested = JobRepository(session).heartbeat(job_id, attempt, now=_now(now))
    if cancel_requested is None:
        logger.info("job.heartbeat_refused job_id=%s attempt=%d", job_id, attempt)
        return JobAck(accepted=False, cancel_requested=False)
    return JobAck(accepted=True, cancel_requested=cancel_requested)


def report_progress(
    session: Session,
    *,
    job_id: uuid.UUID,
    attempt: int,
    chunk: CurvePoints,
    now: datetime | None = None,
) -> JobAck:
    """Append a chunk of curve points to ``attempt``'s curve (also a heartbeat).

    The chunk must start where the stored curve ends. A chunk already stored (a
    retried report) is accepted and not stored twice. A stale attempt's chunk is
    refused and changes nothing.

    Returns:
        Whether the chunk's attempt is still running and whether it was asked to
        cancel: the worker's cooperative cancel flag.

    Raises:
        ValueError: the chunk leaves a gap after, or partly overlaps, the stored curve.
    """
    now = _now(now)
    repo = JobRepository(session)
    cancel_requested = repo.advance_progress(
        job_id, attempt, start=chunk.start, size=chunk.size, now=now
    )
    if cancel_requested is not None:
        repo.add_curve_chunk(
            job_id, attempt, start=chunk.start, size=chunk.size, data=chunk.data(), now=now
        )
        return JobAck(accepted=True, cancel_requested=cancel_requested)
    job = repo.get(job_id)
    if job is None or job.attempt != attempt or job.status != JobStatus.RUNNING:
        logger.info("job.chunk_refused job_id=%s attempt=%d", job_id, attempt)
        return JobAck(accepted=False, cancel_requested=False)
    if chunk.start + chunk.size <= job.progress:
        logger.info(
            "job.chunk_duplicate job_id=%s attempt=%d start=%d", job_id, attempt, chunk.start
        )
        return JobAck(accepted=True, cancel_requested=job.cancel_requested)
    raise ValueError(
        f"chunk covers points {chunk.start} to {chunk.start + chunk.size - 1} but the "
        f"curve of job {job_id} attempt {attempt} ends before point {job.progress}"
    )


def finish_job(
    session: Session,
    *,
    job_id: uuid.UUID,
    attempt: int,
    result: JobResult | Mapping[str, Any],
    now: datetime | None = None,
) -> Job | None:
    """Mark ``attempt`` succeeded with its result; None (nothing changed) if stale.

    Raises:
        pydantic.ValidationError: ``result`` is not a valid result of the job's kind.
    """
    repo = JobRepository(session)
    job = repo.get(job_id)
    if job is None:
        logger.info("job.finish_refused job_id=%s attempt=%d status=missing", job_id, attempt)
        return None
    result_cls = JOB_RESULTS[job.kind]
    doc = result if isinstance(result, result_cls) else result_cls.model_validate(result)
    finished = repo.finish(job_id, attempt, result=doc.to_json_dict(), now=_now(now))
    if finished is None:
        logger.info(
            "job.finish_refused job_id=%s attempt=%d status=%s", job_id, attempt, job.status
        )
        return None
    logger.info("job.succeeded job_id=%s attempt=%d", job_id, attempt)
    return finished


def fail_job(
    session: Session,
    *,
    job_id: uuid.UUID,
    attempt: int,
    reason: str,
    now: datetime | None = None,
) -> Job | None:
    """Mark ``attempt`` failed with a readable ``reason``; its partial curve stays.

    Returns None (nothing changed) if the attempt is stale.
    """
    if len(reason) > MAX_ERROR_LENGTH:
        reason = reason[: MAX_ERROR_LENGTH - 1] + "…"
    failed = JobRepository(session).fail(job_id, attempt, reason=reason, now=_now(now))
    if failed is None:
        logger.info("job.fail_refused job_id=%s attempt=%d", job_id, attempt)
        return None
    logger.info("job.failed job_id=%s attempt=%d reason=%s", job_id, attempt, reason[:200])
    return failed


def note_worker_lost(
    session: Session, *, job_id: uuid.UUID, worker: str, note: str, now: datetime | None = None
) -> bool:
    """Record why the process running a job died, while the job waits to be retried.

    A worker's parent process calls this when the child running ``job_id`` as
    ``worker`` (``host:pid``) was killed (``"the worker process host:123 was killed
    by signal 9 (SIGKILL: out of memory?)"``): the child could not say so itself.
    The note is the job's ``error`` until its next attempt is claimed, so the
    reconciler can quote it when it requeues or fails the job. Only a job still
    running on ``worker`` is changed; returns whether it was.
    """
    if len(note) > MAX_ERROR_LENGTH:
        note = note[: MAX_ERROR_LENGTH - 1] + "…"
    noted = JobRepository(session).note_worker_lost(job_id, worker=worker, note=note, now=_now(now))
    logger.warning("job.worker_lost job_id=%s worker=%s noted=%s: %s", job_id, worker, noted, note)
    return noted


def acknowledge_cancel(
    session: Session, *, job_id: uuid.UUID, attempt: int, now: datetime | None = None
) -> Job | None:
    """The worker stopped ``attempt`` because it was asked to: mark it cancelled.

    Returns None (nothing changed) if the attempt is stale or was never asked to cancel.
    """
    job = JobRepository(session).mark_cancelled(job_id, attempt, now=_now(now))
    if job is None:
        logger.info("job.cancel_ack_refused job_id=%s attempt=%d", job_id, attempt)
        return None
    logger.info("job.cancelled job_id=%s attempt=%d by=worker", job_id, attempt)
    return job


# --------------------------------------------------------------------------- team side


def get_job(session: Session, *, team: Team, job_id: uuid.UUID) -> Job:
    """One of the team's jobs.

    Raises:
        JobNotFound: no such job, or it belongs to another team.
    """
    job = JobRepository(session).get_for_team(team.id, job_id)
    if job is None:
        raise JobNotFound(f"job {job_id} not found")
    return job


def cancel_job(
    session: Session, *, team: Team, job_id: uuid.UUID, now: datetime | None = None
) -> Job:
    """Cancel a job: a queued one at once, a running one cooperatively.

    A running job gets ``cancel_requested``; its worker sees the flag in its next
    heartbeat or progress report, stops, and the job becomes ``cancelled``.
    Cancelling a running job twice is harmless.

    Raises:
        JobNotFound: no such job for this team.
        JobConflict: the job already finished (the message names its status).
    """
    now = _now(now)
    repo = JobRepository(session)
    for _ in range(_CANCEL_RETRIES):
        job = repo.cancel_queued(job_id, team_id=team.id, now=now)
        if job is not None:
            logger.info("job.cancelled job_id=%s by=team status_was=queued", job_id)
            return job
        job = repo.request_cancel_running(job_id, team_id=team.id, now=now)
        if job is not None:
            logger.info("job.cancel_requested job_id=%s attempt=%d", job_id, job.attempt)
            return job
        current = get_job(session, team=team, job_id=job_id)
        if current.finished:
            raise JobConflict(
                f"job {job_id} is {current.status}; only queued or running jobs can be cancelled",
                errors=[{"field": "status", "reason": f"job is {current.status}"}],
            )
        # it moved between queued and running under us: try again
    raise JobConflict(f"job {job_id} kept changing status; try again")


def _encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id.hex])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        return as_utc(datetime.fromisoformat(created), name="cursor"), uuid.UUID(hex=job_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError):
        reason = "not a cursor returned by a previous page"
        raise InvalidInput(
            f"cursor is {reason}", errors=[{"field": "cursor", "reason": reason}]
        ) from None


def _utc_or_naive_utc(value: datetime) -> datetime:
    # A query-string time without a zone ("2026-01-01T00:00") is read as UTC.
    return as_utc(value if value.tzinfo is not None else value.replace(tzinfo=UTC))


def list_jobs(
    session: Session,
    *,
    team: Team,
    statuses: Sequence[JobStatus] = (),
    kind: str | None = None,
    workload: str | None = None,
    created_after: datetime | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> JobPage:
    """The team's jobs, newest first, one page at a time.

    ``created_after`` keeps jobs created strictly after it (a naive time is UTC).

    Raises:
        InvalidInput: ``limit`` out of range or ``cursor`` malformed.
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        reason = f"must be between 1 and {MAX_PAGE_SIZE}, got {limit}"
        raise InvalidInput(f"limit {reason}", errors=[{"field": "limit", "reason": reason}])
    before = None if cursor is None else _decode_cursor(cursor)
    jobs = JobRepository(session).list_for_team(
        team.id,
        limit=limit + 1,
        before=before,
        statuses=statuses,
        kind=kind,
        workload=workload,
        created_after=None if created_after is None else _utc_or_naive_utc(created_after),
    )
    if len(jobs) > limit:
        return JobPage(items=jobs[:limit], next_cursor=_encode_cursor(jobs[limit - 1]))
    return JobPage(items=jobs, next_cursor=None)


def read_curve(session: Session, *, team: Team, job_id: uuid.UUID, after: int = 0) -> CurveSlice:
    """The curve points of the job's current attempt from index ``after`` on.

    A failed or cancelled job keeps the points its last attempt measured.

    Raises:
        JobNotFound: no such job for this team.
        InvalidInput: ``after`` is negative.
    """
    if after < 0:
        reason = f"must be >= 0, got {after}"
        raise InvalidInput(f"after {reason}", errors=[{"field": "after", "reason": reason}])
    job = get_job(session, team=team, job_id=job_id)
    chunks = JobRepository(session).read_curve(job.id, job.attempt, after=after)
    lrs: list[float] = []
    losses: list[float] = []
    smoothed: list[float] = []
    accuracies: list[float] | None = [] if chunks else None
    # float(): JSONB keeps numbers as decimals and gives integral ones back as ints
    for chunk in chunks:
        skip = max(0, after - chunk.start)
        lrs.extend(map(float, chunk.data["lrs"][skip:]))
        losses.extend(map(float, chunk.data["losses"][skip:]))
        smoothed.extend(map(float, chunk.data["smoothed_losses"][skip:]))
        chunk_accuracies = chunk.data.get("accuracies")
        if chunk_accuracies is None or accuracies is None:
            accuracies = None
        else:
            accuracies.extend(map(float, chunk_accuracies[skip:]))
    return CurveSlice(
        job_id=job.id,
        attempt=job.attempt,
        status=JobStatus(job.status),
        start=after,
        lrs=lrs,
        losses=losses,
        smoothed_losses=smoothed,
        accuracies=accuracies,
        total=job.total,
    )


def _bounds_of(job: Job) -> Bounds:
    if job.kind != RangeTestSpec.kind:
        raise JobConflict(f"job {job.id} is of kind {job.kind!r}; only range tests have bounds")
    status = JobStatus(job.status)
    if status in (JobStatus.QUEUED, JobStatus.RUNNING):
        raise NotReady(f"job {job.id} is {status}; its bounds are ready once it has succeeded")
    if status != JobStatus.SUCCEEDED or job.result is None:
        raise JobConflict(f"job {job.id} is {status}; it has no bounds")
    outcome = RangeTestOutcome.model_validate(job.result)
    if outcome.suggestions is None:
        raise JobConflict(
            f"the range test of job {job.id} found no bounds: {outcome.no_bounds_reason}"
        )
    return Bounds(
        job_id=job.id,
        config_key=job.config_key,
        finished_at=job.finished_at,
        suggestions=outcome.suggestions,
    )


def get_bounds(session: Session, *, team: Team, job_id: uuid.UUID) -> Bounds:
    """The suggested bounds of one of the team's range tests.

    Raises:
        JobNotFound: no such job for this team.
        NotReady: the job is still queued or running.
        JobConflict: the job failed or was cancelled, is not a range test, or its
            curve gave no bounds (the message says why).
    """
    return _bounds_of(get_job(session, team=team, job_id=job_id))


def find_bounds(session: Session, *, team: Team, spec: RangeTestSpec | Mapping[str, Any]) -> Bounds:
    """The bounds of the team's latest successful range test of this configuration.

    The configuration is what :meth:`RangeTestSpec.config_key` covers: workload,
    params, optimizer and batch size.

    Raises:
        InvalidJobSpec: ``spec`` is not a valid range-test spec.
        JobNotFound: the team has no successful range test of this configuration.
        JobConflict: the latest one's curve gave no bounds.
    """
    parsed = parse_job_spec(RangeTestSpec.kind, spec)
    job = JobRepository(session).latest_succeeded_by_config_key(
        team.id, RangeTestSpec.kind, parsed.config_key()
    )
    if job is None:
        raise JobNotFound("no successful range test of this configuration")
    return _bounds_of(job)


# --------------------------------------------------------------------------- reconciler


def reconcile(
    session: Session,
    *,
    settings: Settings,
    now: datetime | None = None,
    limit: int = RECONCILE_BATCH,
) -> ReconcileReport:
    """One pass of the reconciler; safe to run from several processes at once.

    - A queued job whose message went out more than ``queued_resend_after_s`` ago
      gets it again (a flushed broker, or a crash between commit and send).
    - A running job silent for ``heartbeat_timeout_s`` lost its worker: it goes back
      to queued for another attempt, or fails once it has had ``max_attempts``; if it
      had been asked to cancel, it is cancelled instead.
    - A running job whose attempt started more than ``job_time_limit_s`` (plus one
      heartbeat timeout of grace) ago fails, even if its worker is still alive.

    Each change is a guarded update, so a heartbeat arriving meanwhile, or another
    reconciler, wins cleanly.
    """
    now = _now(now)
    repo = JobRepository(session)

    resend_cutoff = now - timedelta(seconds=settings.queued_resend_after_s)
    stale_queued = repo.stale_queued(resend_cutoff, limit=limit)
    resent = repo.mark_resent([j.id for j in stale_queued], cutoff=resend_cutoff, now=now)
    devices = {job.id: job.requested_device for job in stale_queued}
    for job_id, kind in resent:
        enqueue_after_commit(session, job_id, kind, device=devices[job_id])
        logger.info("job.resent job_id=%s kind=%s", job_id, kind)

    heartbeat_cutoff = now - timedelta(seconds=settings.heartbeat_timeout_s)
    requeued: list[uuid.UUID] = []
    failed: list[uuid.UUID] = []
    cancelled: list[uuid.UUID] = []
    for job in repo.stale_running(heartbeat_cutoff, limit=limit):
        attempt, worker, last = job.attempt, job.worker, job.heartbeat_at
        last_text = "never" if last is None else last.isoformat()
        if job.cancel_requested:
            if repo.mark_cancelled(job.id, attempt, now=now, heartbeat_before=heartbeat_cutoff):
                cancelled.append(job.id)
                logger.info("job.cancelled job_id=%s attempt=%d by=reconciler", job.id, attempt)
        elif attempt < job.max_attempts:
            if repo.requeue(job.id, attempt, heartbeat_before=heartbeat_cutoff, now=now):
                enqueue_after_commit(session, job.id, job.kind, device=job.requested_device)
                requeued.append(job.id)
                logger.warning(
                    "job.requeued job_id=%s attempt=%d worker=%s last_heartbeat=%s",
                    job.id,
                    attempt,
                    worker,
                    last_text,
                )
        else:
            reason = f"worker lost {attempt} times: last heartbeat at {last_text} from {worker}"
            if repo.fail(
                job.id, attempt, reason=reason, now=now, heartbeat_before=heartbeat_cutoff
            ):
                failed.append(job.id)
                logger.warning("job.lost job_id=%s attempt=%d reason=%s", job.id, attempt, reason)

    limit_cutoff = now - timedelta(seconds=settings.job_time_limit_s + settings.heartbeat_timeout_s)
    timed_out: list[uuid.UUID] = []
    for job in repo.overdue_running(limit_cutoff, limit=limit):
        attempt, started = job.attempt, job.started_at
        reason = (
            f"ran past the time limit of {settings.job_time_limit_s} s "
            f"(CLR_JOB_TIME_LIMIT_S): attempt {attempt} started at "
            f"{'?' if started is None else started.isoformat()}"
        )
        if repo.fail(job.id, attempt, reason=reason, now=now):
            timed_out.append(job.id)
            logger.warning("job.timed_out job_id=%s attempt=%d", job.id, attempt)

    return ReconcileReport(
        resent=[job_id for job_id, _ in resent],
        requeued=requeued,
        failed=failed,
        cancelled=cancelled,
        timed_out=timed_out,
    )
