"""The job lifecycle: submit, claim, heartbeat, progress, finish, fail, cancel, reconcile.

Services take the session first and keyword-only arguments after it; they
``flush()`` when they need ids and never commit: the caller's unit of work (an
API request, a worker's ``session_scope``) does. Messages for the broker are
queued with :func:`core.db.enqueue_after_commit` and leave after that commit.

Every write a worker makes carries the ``attempt`` its claim returned, and is
refused (changing nothing) when that attempt is no longer the job's running one.
Times default to now (UTC); tests pass ``now=`` explicitly.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from clr.exceptions import InvalidWorkloadParams, UnknownWorkload
from clr.workloads import get_workload
from core.artifacts import prune_orphans
from core.client_specs import CLIENT_WORKER, is_client_spec
from core.clock import as_utc, utc_now
from core.db import enqueue_after_commit
from core.errors import (
    IdempotencyConflict,
    InvalidInput,
    InvalidJobSpec,
    JobConflict,
    JobNotFound,
    JobTooLarge,
    NoBoundsForConfiguration,
    NotReady,
    TooManyActiveJobs,
)
from core.kinds import JobKind, all_kinds, get_kind
from core.models import Job, JobStatus, SeriesChunk, Team
from core.repositories import JobRepository, ResendRule
from core.series import SeriesPoints, SeriesSpec, decode_values
from core.services.parents import advance_after_commit, advance_parent
from core.services.workers import fetched_before, live_workers, prune_workers
from core.settings import Settings
from core.specs import (
    STORED,
    JobEstimate,
    JobResult,
    JobSpec,
    RangeTestOutcome,
    RangeTestSpec,
    SuggestionsDoc,
    WorkloadSpec,
    canonical_json,
    field_errors,
)
from core.verification import longest_candidate

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "IDEMPOTENCY_KEY_MAX_LENGTH",
    "MAX_ERROR_LENGTH",
    "MAX_PAGE_SIZE",
    "Bounds",
    "JobAck",
    "JobPage",
    "ReconcileReport",
    "SeriesSlice",
    "SiblingClaim",
    "Submission",
    "acknowledge_cancel",
    "cancel_job",
    "claim_job",
    "claim_siblings",
    "fail_job",
    "find_bounds",
    "finish_job",
    "get_bounds",
    "get_job",
    "heartbeat",
    "list_jobs",
    "parse_job_spec",
    "read_series",
    "reconcile",
    "record_checkpoint",
    "report_progress",
    "series_of",
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
class SeriesSlice:
    """The points of one series of a job from index ``start`` on.

    ``values`` maps each of ``fields`` to its values (None: the points have no
    such value, like a range test's accuracy without a metric). ``points`` is
    how many points the series has now and ``next_after`` what to pass as
    ``after`` to read only newer ones. When ``attempt`` changes between two
    reads, the job started another attempt: points from ``kept`` on may have
    changed (a range test starts over: 0; a resumed training keeps those
    before its checkpoint).
    """

    job_id: uuid.UUID
    attempt: int
    status: JobStatus
    name: str
    fields: tuple[str, ...]
    start: int
    values: dict[str, list[float] | None]
    points: int
    total: int

    @property
    def size(self) -> int:
        """Points in this slice."""
        return next((len(v) for v in self.values.values() if v is not None), 0)

    @property
    def next_after(self) -> int:
        """Index of the first point not in this slice."""
        return self.start + self.size

    def column(self, name: str) -> list[float] | None:
        """One field's values."""
        return self.values.get(name)


@dataclass(frozen=True)
class Submission:
    """What a submit did: the job, and whether this call created it (False: a
    retry with the same Idempotency-Key got the job the first call created)."""

    job: Job
    created: bool


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
    pruned_workers: int = 0
    pruned_artifacts: int = 0
    advanced: list[uuid.UUID] = dataclasses.field(default_factory=list)


def _now(now: datetime | None) -> datetime:
    return utc_now() if now is None else as_utc(now)


# --------------------------------------------------------------------------- submit


def parse_job_spec(
    kind: str, spec: JobSpec | Mapping[str, Any], *, stored: bool = False
) -> JobSpec:
    """Validate ``spec`` as a ``kind`` job's spec and return it normalised.

    ``stored``: the spec was read back from a job (it may hold fields the
    service fills in at submit, such as a training's ``bounds_source``, which a
    request may not set).

    Raises:
        InvalidJobSpec: the kind is unknown, or one ``{"field", "reason"}`` per problem.
    """
    data = spec.model_dump() if isinstance(spec, BaseModel) else dict(spec)
    spec_cls = get_kind(kind).spec_class(data)
    try:
        return spec_cls.model_validate(data, context={STORED: True} if stored else None)
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


ACTIVE_JOBS_RETRY_AFTER_S = 30
"""``Retry-After`` of a submit refused for the team's cap of active jobs."""


def _gib(size: float) -> str:
    return f"{size / 2**30:.3g} GiB"


def _duration(seconds: float) -> str:
    for unit, length in (("h", 3600.0), ("min", 60.0)):
        if seconds >= length:
            return f"{seconds / length:.3g} {unit}"
    return f"{seconds:.3g} s"


def _culprit(spec: JobSpec, measure: Callable[[JobSpec], float]) -> str:
    """The field whose value, put back to its default, lowers ``measure`` the most.

    Only fields set away from their defaults are candidates (the workload's
    parameters; a range test's ``num_iter``), and only changes that leave a valid
    spec (a workload's cross-parameter checks still pass). When none helps, the
    run's length if the spec gives one (a training's ``cycles``, ``iterations`` or
    ``epochs``), else the workload itself is too large under the cap.
    """
    if not isinstance(spec, WorkloadSpec):
        return "spec"
    defaults = get_workload(spec.workload).validate_params({})
    candidates: dict[str, JobSpec] = {}
    for name, value in spec.params.items():
        if value != defaults.get(name):
            # the batch size is spelled either way; batch_size holds it after validation
            field = "batch_size" if name == "batch_size" else f"params.{name}"
            candidates[field] = spec.model_copy(
                update={"params": {**spec.params, name: defaults[name]}}
            )
    default_num_iter = RangeTestSpec.model_fields["num_iter"].default
    if isinstance(spec, RangeTestSpec) and spec.num_iter > default_num_iter:
        candidates["num_iter"] = spec.model_copy(update={"num_iter": default_num_iter})
    if isinstance(spec, RangeTestSpec) and spec.seeds:
        candidates["seeds"] = spec.model_copy(update={"seeds": None})  # one seed's needs
    savings: dict[str, float] = {}
    now = measure(spec)
    for field, smaller in candidates.items():
        try:
            savings[field] = now - measure(smaller)
        except (InvalidWorkloadParams, ValidationError):
            continue  # that value alone is not a valid spec (n_samples * n_features)
    best = max(savings, key=savings.__getitem__, default=None)
    if best is not None and savings[best] > 0:
        return best
    length = ("cycles", "iterations", "epochs")
    return next((f for f in length if getattr(spec, f, None) is not None), "workload")


def _lower(spec: JobSpec, field: str) -> str:
    """What to lower: ``field``, and the seeds too when a range test runs several."""
    if field != "seeds" and isinstance(spec, RangeTestSpec) and spec.seeds:
        return f"lower {field}, or give fewer seeds ({len(spec.seeds)} run at once)"
    return f"lower {field}"


def _check_estimate(spec: JobSpec, settings: Settings, *, kind: JobKind) -> None:
    """Refuse a job whose estimated memory or run time is over the configured caps.

    The kind's time limit is the cap when ``max_job_seconds`` is unset.
    """
    estimate = spec.estimate()
    if estimate is None:
        return
    cap = settings.max_job_memory_bytes
    if cap and estimate.memory_bytes > cap:
        field = _culprit(spec, lambda s: _estimated(s).memory_bytes)
        reason = (
            f"the job needs ~{_gib(estimate.memory_bytes)} of memory "
            f"({estimate.weights:.3g} weights with their gradients and optimizer state, "
            f"activations of a batch, the dataset), over the {_gib(cap)} cap "
            f"(CLR_MAX_JOB_MEMORY_BYTES); {_lower(spec, field)}"
        )
        raise JobTooLarge(f"{field}: {reason}", errors=[{"field": field, "reason": reason}])
    max_seconds = settings.max_job_seconds
    if max_seconds is None:
        max_seconds = kind.time_limit_s(settings)
    seconds = estimate.seconds(settings.job_flop_rate)
    if max_seconds and seconds > max_seconds:
        field = _culprit(spec, lambda s: _estimated(s).seconds(settings.job_flop_rate))
        cap_name = (
            "CLR_MAX_JOB_SECONDS"
            if settings.max_job_seconds is not None
            else f"CLR_{kind.time_limit_setting.upper()}"
        )
        reason = (
            f"the job would run for ~{_duration(seconds)} ({estimate.flops_per_step:.3g} "
            f"FLOPs a step for {estimate.steps} steps at {settings.job_flop_rate:.3g} FLOP/s, "
            f"CLR_JOB_FLOP_RATE), over the {_duration(max_seconds)} cap ({cap_name}); "
            f"{_lower(spec, field)}"
        )
        raise JobTooLarge(f"{field}: {reason}", errors=[{"field": field, "reason": reason}])


def _check_verification(spec: RangeTestSpec, settings: Settings) -> None:
    """Refuse a range test whose verification's candidate trainings would be over the
    caps (they would be refused after the curve), naming ``verify_iterations``."""
    body = longest_candidate(spec, get_workload(spec.workload).iters_per_epoch(spec.params))
    if body is None:
        return
    training = get_kind("training")
    try:
        _check_estimate(parse_job_spec(training.name, body), settings, kind=training)
    except JobTooLarge as exc:
        reason = (
            f"its verification would train candidates of up to {body['iterations']} "
            f"iterations, over a cap ({exc.detail}); lower verify_iterations or "
            "verify_budget, or set verify to false"
        )
        raise JobTooLarge(
            f"verify_iterations: {reason}",
            errors=[{"field": "verify_iterations", "reason": reason}],
        ) from None


def _estimated(spec: JobSpec) -> JobEstimate:
    estimate = spec.estimate()
    assert estimate is not None  # only called for specs that have one
    return estimate


def _check_active_jobs(repo: JobRepository, *, team: Team, settings: Settings) -> None:
    cap = settings.max_active_jobs_per_team
    if not cap:
        return
    active = repo.count_active_for_team(team.id, lock_team=True)
    if active >= cap:
        reason = (
            f"the team has {active} queued or running jobs, its cap "
            f"(CLR_MAX_ACTIVE_JOBS_PER_TEAM={cap}); wait for some to finish or cancel some"
        )
        raise TooManyActiveJobs(
            reason,
            errors=[{"field": "team", "reason": reason}],
            headers={"Retry-After": str(ACTIVE_JOBS_RETRY_AFTER_S)},
        )


def submit_job(
    session: Session,
    *,
    team: Team,
    kind: str,
    spec: JobSpec | Mapping[str, Any],
    settings: Settings,
    idempotency_key: str | None = None,
    parent: Job | None = None,
    role: Mapping[str, Any] | None = None,
    now: datetime | None = None,
) -> Submission:
    """Queue a job for ``team``; its message leaves after the commit.

    The kind's ``prepare`` step (:class:`~core.kinds.JobKind`) runs after the
    spec is validated, in this transaction: a training's ``bounds_from`` becomes
    the bounds of the range test it names. ``parent`` makes the job a child of
    another (a sweep's trainings) and ``role`` says what it is to it; the team's
    cap of active jobs never refuses a child (its parent was checked), though
    children count among the team's active jobs at its next submit.

    A job of a kind no worker runs (a sweep) starts ``running`` and ``waiting``
    at once, and its kind's advance step creates its first children in this
    transaction (:mod:`core.services.parents`).

    With an ``idempotency_key``, a retry of the same request (same kind and, once
    normalised, the same spec) returns the job the first one created, even when
    the two race; the same key with a different request is refused.

    Before queueing, the job's memory and run time are estimated from its spec
    (no model is built) and a job over ``max_job_memory_bytes`` or
    ``max_job_seconds`` is refused; so is a job past the team's
    ``max_active_jobs_per_team`` queued and running ones. The count runs with the
    team's row locked, so concurrent submits of one team cannot both take the
    last place.

    Returns:
        The job, and whether this call created it (not when a retried
        Idempotency-Key found the first call's job).

    Raises:
        InvalidJobSpec: the kind or the spec is not acceptable.
        JobConflict, NotReady: the kind's ``prepare`` step refused a reference.
        JobTooLarge: the job's estimated memory or run time is over its cap; the
            error names the field that drives the estimate.
        TooManyActiveJobs: the team is at its cap of queued and running jobs.
        InvalidInput: the idempotency key is malformed.
        IdempotencyConflict: the key was used before with a different request.
    """
    now = _now(now)
    job_kind = get_kind(kind)
    parsed = parse_job_spec(kind, spec)
    request_hash = hashlib.sha256(
        canonical_json({"kind": kind, "spec": parsed.model_dump(mode="json")}).encode()
    ).hexdigest()
    repo = JobRepository(session)
    if idempotency_key is not None:
        _check_idempotency_key(idempotency_key)
        existing = repo.find_by_idempotency_key(team.id, idempotency_key)
        if existing is not None:
            return Submission(_replay(existing, request_hash, idempotency_key), created=False)
    on_client = is_client_spec(parsed)
    if job_kind.prepare is not None and not on_client:
        parsed = job_kind.prepare(session, team, parsed)
    spec_json = parsed.model_dump(mode="json")
    if not on_client:
        _check_estimate(parsed, settings, kind=job_kind)
    if isinstance(parsed, RangeTestSpec):
        _check_verification(parsed, settings)
    if parent is None:
        _check_active_jobs(repo, team=team, settings=settings)
    by_worker = job_kind.worker_run and not on_client
    job = Job(
        team_id=team.id,
        parent_id=None if parent is None else parent.id,
        role=None if role is None else dict(role),
        kind=kind,
        status=JobStatus.QUEUED if by_worker else JobStatus.RUNNING,
        waiting=not by_worker,
        spec=spec_json,
        config_key=parsed.config_key(),
        workload=parsed.workload_name(),
        idempotency_key=idempotency_key,
        request_hash=request_hash,
        attempt=0,
        max_attempts=settings.max_attempts,
        cancel_requested=False,
        progress=0,
        series_points={},
        total=parsed.total_steps(),
        queued_at=now,
        enqueued_at=now if by_worker else None,
        started_at=None if by_worker else now,
        created_at=now,
        updated_at=now,
    )
    if on_client:
        # the team's own process runs it: running from now on, one attempt, its
        # uploads are its heartbeats (core.client_specs)
        job.waiting = False
        job.attempt = 1
        job.max_attempts = 1
        job.worker = CLIENT_WORKER
        job.device = CLIENT_WORKER
        job.heartbeat_at = now
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
            return Submission(_replay(existing, request_hash, idempotency_key), created=False)
    if by_worker:
        enqueue_after_commit(session, job.id, job.kind, device=job.requested_device)
    logger.info(
        "job.submitted job_id=%s kind=%s team_id=%s config_key=%s",
        job.id,
        kind,
        team.id,
        job.config_key,
    )
    if not by_worker and not on_client:
        advance_parent(session, parent_id=job.id, settings=settings, now=now, at_submit=True)
    return Submission(job, created=True)


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
    resume = _resume_point(job)
    if resume is None:
        repo.restart_series(job, keep={}, progress=0)
    else:
        repo.restart_series(job, keep=resume[1], progress=resume[0])
    logger.info(
        "job.claimed job_id=%s attempt=%d worker=%s resumed_at=%s",
        job.id,
        job.attempt,
        worker,
        "-" if resume is None else resume[0],
    )
    return job


def claim_siblings(
    session: Session,
    *,
    job_id: uuid.UUID,
    worker: str,
    device: str | None = None,
    limit: int,
    accept: Callable[[Job], bool],
    settings: Settings | None = None,
    now: datetime | None = None,
) -> SiblingClaim:
    """Claim up to ``limit`` queued siblings of job ``job_id`` that ``accept`` takes,
    to run with it on this worker (a fused run: :mod:`worker.kinds.fused_training`).

    Siblings are the other children of the same parent, of the same kind and
    queue, oldest first; each is claimed as :func:`claim_job` claims a job (a
    new attempt, atomically: one another worker claimed first is passed over),
    so its own message, when it comes, finds it running and runs nothing.
    None for a job without a parent.

    With ``settings``, the accepted siblings are shared with the other live
    workers of the job's queue: the idle ones, and the *peers*, those holding a
    sibling's message right now (they are about to claim it and share in turn).
    A sibling whose message a peer holds is left to it. Of the ``n`` others,
    this worker takes ``ceil((n + 1 + peers) / (1 + peers + idle)) - 1``, every
    ``(1 + peers + idle)``-th one from its own rank among the holders (so two
    workers claiming at once take different siblings), and the rest stay
    queued for their own messages.
    """
    now = _now(now)
    repo = JobRepository(session)
    job = repo.get(job_id)
    if job is None or job.parent_id is None or limit <= 0:
        return SiblingClaim(jobs=[], accepted=0, idle_workers=0, peers=0)
    candidates = [s for s in repo.queued_siblings(job) if accept(s)]
    idle, held = 0, set()
    if settings is not None:
        ids = {c.id for c in candidates}
        for w in live_workers(session, settings=settings, now=now):
            if job.queue not in w.queues:
                continue
            if w.current_job_id is None and w.idle_since is not None:
                idle += 1
            elif w.current_job_id in ids:
                held.add(w.current_job_id)
    others = [c for c in candidates if c.id not in held]
    holders = sorted([job.id, *held], key=str)
    workers = len(holders) + idle
    share = -(-(len(others) + len(holders)) // workers) - 1  # ceil(members / workers) - 1
    rank = holders.index(job.id)
    claimed: list[Job] = []
    # in the order a parent's cancel locks its children in (no deadlock with it)
    for sibling in others[rank::workers]:
        if len(claimed) >= min(limit, share):
            break
        taken = claim_job(session, job_id=sibling.id, worker=worker, device=device, now=now)
        if taken is not None:
            claimed.append(taken)
    return SiblingClaim(jobs=claimed, accepted=len(candidates), idle_workers=idle, peers=len(held))


@dataclass(frozen=True)
class SiblingClaim:
    """What :func:`claim_siblings` claimed: the jobs, how many waiting siblings fused
    with the job (``accepted``), and the idle workers and peers (workers holding a
    sibling's message) it left some of them to."""

    jobs: list[Job]
    accepted: int
    idle_workers: int
    peers: int


def _resume_point(job: Job) -> tuple[int, dict[str, int]] | None:
    """Where a claimed attempt of ``job`` resumes: progress and series counts.

    None when it starts over: its kind is not resumable, or no checkpoint was
    published yet.
    """
    checkpoint = job.checkpoint
    if not checkpoint or not get_kind(job.kind).resumable:
        return None
    series = checkpoint.get("series") or {}
    return int(checkpoint.get("progress", 0)), {str(k): int(v) for k, v in series.items()}


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
    points: Sequence[SeriesPoints] = (),
    progress: int | None = None,
    now: datetime | None = None,
) -> JobAck:
    """Append runs of series points and set ``progress`` (also a heartbeat).

    Each run must start where its series' stored points end. A run already
    stored (a retried report) is accepted and not stored twice. A stale
    attempt's report is refused and changes nothing. ``progress`` (units of
    work done, out of the job's ``total``) stays as it is when None.

    Returns:
        Whether the attempt is still running and whether it was asked to
        cancel: the worker's cooperative cancel flag.

    Raises:
        ValueError: a run leaves a gap after, or partly overlaps, its stored
            series, names a series its kind does not have, or ``progress`` is
            negative.
    """
    now = _now(now)
    repo = JobRepository(session)
    guard = repo.guard_report(job_id, attempt, now=now)
    if guard is None:
        logger.info("job.report_refused job_id=%s attempt=%d", job_id, attempt)
        return JobAck(accepted=False, cancel_requested=False)
    kind = get_kind(guard.kind)
    counts = dict(guard.series_points)
    runs: list[tuple[SeriesPoints, tuple[str, ...]]] = []
    for run in points:
        spec = kind.series_spec(run.name)
        if spec is None:
            raise ValueError(f"jobs of kind {kind.name!r} have no series {run.name!r}")
        have = counts.get(run.name, 0)
        if run.start + run.size <= have:
            logger.info(
                "job.points_duplicate job_id=%s attempt=%d series=%s start=%d",
                job_id,
                attempt,
                run.name,
                run.start,
            )
            continue
        if run.start != have:
            raise ValueError(
                f"points {run.start} to {run.start + run.size - 1} of series {run.name!r} "
                f"do not follow the {have} stored for job {job_id} attempt {attempt}"
            )
        runs.append((run, spec.fields))
        counts[run.name] = have + run.size
    if progress is not None and progress < 0:
        raise ValueError(f"progress must be >= 0, got {progress}")
    repo.append_points(
        job_id,
        attempt,
        runs=runs,
        series_points=counts,
        progress=guard.progress if progress is None else progress,
        now=now,
    )
    return JobAck(accepted=True, cancel_requested=guard.cancel_requested)


def record_checkpoint(
    session: Session, *, job_id: uuid.UUID, attempt: int, artifact: str, now: datetime | None = None
) -> bool:
    """Note that ``attempt`` published its checkpoint as artifact ``artifact``.

    The job's next attempt (after a lost worker) resumes there if its kind is
    resumable: with the progress and series points stored when this runs, so a
    worker stores every point up to the checkpoint first. Run it in the
    transaction that publishes the artifact. False (nothing changed) if the
    attempt is stale.
    """
    checkpoint = JobRepository(session).record_checkpoint(
        job_id, attempt, artifact=artifact, now=_now(now)
    )
    if checkpoint is None:
        logger.info("job.checkpoint_refused job_id=%s attempt=%d", job_id, attempt)
        return False
    logger.info(
        "job.checkpoint job_id=%s attempt=%d artifact=%s progress=%s",
        job_id,
        attempt,
        artifact,
        checkpoint["progress"],
    )
    return True


def finish_job(
    session: Session,
    *,
    job_id: uuid.UUID,
    attempt: int,
    result: JobResult | Mapping[str, Any],
    wait: bool = False,
    now: datetime | None = None,
) -> Job | None:
    """Mark ``attempt`` succeeded with its result; None (nothing changed) if stale.

    With ``wait``, the worker's part is done but the job is not: it stays
    ``running``, waiting on the children its kind's advance step creates now
    (a range test verifying its bounds; :mod:`core.services.parents`).

    Raises:
        pydantic.ValidationError: ``result`` is not a valid result of the job's kind.
    """
    repo = JobRepository(session)
    job = repo.get(job_id)
    if job is None:
        logger.info("job.finish_refused job_id=%s attempt=%d status=missing", job_id, attempt)
        return None
    result_cls = get_kind(job.kind).result
    doc = result if isinstance(result, result_cls) else result_cls.model_validate(result)
    now = _now(now)
    if wait:
        waiting = repo.wait(job_id, attempt, result=doc.to_json_dict(), now=now)
        if waiting is None:
            logger.info("job.wait_refused job_id=%s attempt=%d", job_id, attempt)
            return None
        logger.info("job.waiting job_id=%s attempt=%d", job_id, attempt)
        advance_parent(session, parent_id=job_id, now=now)
        return waiting
    finished = repo.finish(job_id, attempt, result=doc.to_json_dict(), now=now)
    if finished is None:
        logger.info(
            "job.finish_refused job_id=%s attempt=%d status=%s", job_id, attempt, job.status
        )
        return None
    logger.info("job.succeeded job_id=%s attempt=%d", job_id, attempt)
    _ended(session, finished)
    return finished


def fail_job(
    session: Session,
    *,
    job_id: uuid.UUID,
    attempt: int,
    reason: str,
    now: datetime | None = None,
) -> Job | None:
    """Mark ``attempt`` failed with a readable ``reason``; its partial series stay.

    Returns None (nothing changed) if the attempt is stale.
    """
    if len(reason) > MAX_ERROR_LENGTH:
        reason = reason[: MAX_ERROR_LENGTH - 1] + "…"
    failed = JobRepository(session).fail(job_id, attempt, reason=reason, now=_now(now))
    if failed is None:
        logger.info("job.fail_refused job_id=%s attempt=%d", job_id, attempt)
        return None
    logger.info("job.failed job_id=%s attempt=%d reason=%s", job_id, attempt, reason[:200])
    _ended(session, failed)
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
    _ended(session, job)
    return job


def _ended(session: Session, job: Job) -> None:
    """``job`` reached a final status: its parent moves on after this commits."""
    if job.parent_id is not None:
        advance_after_commit(session, job.parent_id)


# --------------------------------------------------------------------------- team side


def get_job(session: Session, *, team: Team, job_id: uuid.UUID, kind: str | None = None) -> Job:
    """One of the team's jobs; with ``kind``, only a job of that kind.

    Raises:
        JobNotFound: no such job (of that kind), or it belongs to another team.
    """
    job = JobRepository(session).get_for_team(team.id, job_id)
    if job is None or (kind is not None and job.kind != kind):
        title = "job" if kind is None else get_kind(kind).title
        raise JobNotFound(f"{title} {job_id} not found")
    return job


def cancel_job(
    session: Session,
    *,
    team: Team,
    job_id: uuid.UUID,
    kind: str | None = None,
    now: datetime | None = None,
) -> Job:
    """Cancel a job (with ``kind``: only a job of that kind): a queued one at once,
    a running one cooperatively.

    A running job gets ``cancel_requested``; its worker sees the flag in its next
    heartbeat or progress report, stops, and the job becomes ``cancelled``.
    Cancelling a running job twice is harmless.

    Raises:
        JobNotFound: no such job for this team.
        JobConflict: the job already finished (the message names its status).
    """
    now = _now(now)
    repo = JobRepository(session)
    if kind is not None:
        get_job(session, team=team, job_id=job_id, kind=kind)
    for _ in range(_CANCEL_RETRIES):
        job = repo.cancel_queued(job_id, team_id=team.id, now=now)
        if job is not None:
            logger.info("job.cancelled job_id=%s by=team status_was=queued", job_id)
            _ended(session, job)
            return job
        job = repo.request_cancel_running(job_id, team_id=team.id, now=now)
        if job is not None and is_client_spec(job.spec):
            # no worker to stop: cancelled at once; the client's next upload is refused
            cancelled = repo.mark_cancelled(job.id, job.attempt, now=now)
            if cancelled is not None:
                logger.info("job.cancelled job_id=%s by=team status_was=running", job_id)
                _ended(session, cancelled)
                return cancelled
        if job is not None:
            logger.info("job.cancel_requested job_id=%s attempt=%d", job_id, job.attempt)
            if job.waiting:
                # its children stop now; it is cancelled once none is active
                advance_parent(session, parent_id=job.id, now=now)
                session.refresh(job)
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


_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _utc_or_naive_utc(value: datetime) -> datetime:
    """``value`` in UTC, a zone-less one read as UTC; clamped to what a datetime holds.

    ``9999-12-31T23:59:59-23:59`` is an instant after the last datetime and
    ``0001-01-01T00:00:00+14:00`` one before the first: as bounds of a filter they
    mean "after everything" and "after nothing", which the clamped ends say exactly.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    try:
        return as_utc(value)
    except OverflowError:
        offset = value.utcoffset()
        return _LATEST if offset is not None and offset < timedelta(0) else _EARLIEST


def _known_workload(workload: str) -> str:
    try:
        get_workload(workload)
    except UnknownWorkload as exc:
        raise InvalidInput(str(exc), errors=[{"field": "workload", "reason": str(exc)}]) from None
    return workload


def list_jobs(
    session: Session,
    *,
    team: Team,
    statuses: Sequence[JobStatus] = (),
    kind: str | None = None,
    workload: str | None = None,
    created_after: datetime | None = None,
    parent_id: uuid.UUID | None = None,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
) -> JobPage:
    """The team's jobs, newest first, one page at a time.

    ``created_after`` keeps jobs created strictly after it (a naive time is UTC);
    ``parent_id`` only the children of that job.

    Raises:
        InvalidInput: ``limit`` out of range, ``cursor`` malformed or ``workload``
            not a registered workload's name.
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        reason = f"must be between 1 and {MAX_PAGE_SIZE}, got {limit}"
        raise InvalidInput(f"limit {reason}", errors=[{"field": "limit", "reason": reason}])
    before = None if cursor is None else _decode_cursor(cursor)
    if workload is not None:
        _known_workload(workload)
    jobs = JobRepository(session).list_for_team(
        team.id,
        limit=limit + 1,
        before=before,
        statuses=statuses,
        kind=kind,
        workload=workload,
        created_after=None if created_after is None else _utc_or_naive_utc(created_after),
        parent_id=parent_id,
    )
    if len(jobs) > limit:
        return JobPage(items=jobs[:limit], next_cursor=_encode_cursor(jobs[limit - 1]))
    return JobPage(items=jobs, next_cursor=None)


def read_series(
    session: Session,
    *,
    team: Team,
    job_id: uuid.UUID,
    name: str,
    after: int = 0,
    limit: int | None = None,
) -> SeriesSlice:
    """The points of one of the job's series from index ``after`` on (at most ``limit``).

    A failed or cancelled job keeps the points its last attempt stored.

    Raises:
        JobNotFound: no such job for this team.
        InvalidInput: ``after`` is negative, or the job's kind has no such series
            (the message lists those it has).
    """
    if after < 0:
        reason = f"must be >= 0, got {after}"
        raise InvalidInput(f"after {reason}", errors=[{"field": "after", "reason": reason}])
    if limit is not None and limit < 1:
        reason = f"must be >= 1, got {limit}"
        raise InvalidInput(f"limit {reason}", errors=[{"field": "limit", "reason": reason}])
    job = get_job(session, team=team, job_id=job_id)
    return series_of(session, job, name, after=after, limit=limit)


def series_of(
    session: Session, job: Job, name: str, *, after: int, limit: int | None = None
) -> SeriesSlice:
    """:func:`read_series` of a job already read (no team check)."""
    spec = _series_spec(job, name)
    chunks = JobRepository(session).read_series(job.id, name, after=after, limit=limit)
    return _slice(job, spec, chunks, after=after, limit=limit)


def series_of_jobs(
    session: Session, jobs: Sequence[Job], name: str
) -> dict[uuid.UUID, SeriesSlice]:
    """The whole series ``name`` of each of ``jobs`` (read, of kinds that have it), in one
    query: a parent reading its children's."""
    specs = {job.id: _series_spec(job, name) for job in jobs}
    by_job: dict[uuid.UUID, list[SeriesChunk]] = {job.id: [] for job in jobs}
    for chunk in JobRepository(session).read_series_of(list(by_job), name):
        by_job[chunk.job_id].append(chunk)
    return {job.id: _slice(job, specs[job.id], by_job[job.id], after=0) for job in jobs}


def _series_spec(job: Job, name: str) -> SeriesSpec:
    kind = get_kind(job.kind)
    spec = kind.series_spec(name)
    if spec is None:
        known = ", ".join(s.name for s in kind.series) or "none"
        reason = f"{kind.title} jobs have no series {name!r}; their series: {known}"
        raise InvalidInput(reason, errors=[{"field": "name", "reason": reason}])
    return spec


def _slice(
    job: Job,
    spec: SeriesSpec,
    chunks: Sequence[SeriesChunk],
    *,
    after: int,
    limit: int | None = None,
) -> SeriesSlice:
    """The points of ``chunks`` (one series of ``job``, in order) from index ``after`` on."""
    values: dict[str, list[float] | None] = {f: [] for f in spec.fields}
    for chunk in chunks:
        names = tuple(chunk.fields.split(","))
        decoded = decode_values(names, chunk.data, chunk.size, skip=max(0, after - chunk.start))
        for field in spec.fields:
            column, got = values[field], decoded.get(field)
            if column is None or got is None:
                values[field] = None  # a run without it: the series has no such values
            else:
                column.extend(got)
    if not chunks:
        values = {f: (None if f in spec.optional else []) for f in spec.fields}
    elif limit is not None:
        values = {k: None if v is None else v[:limit] for k, v in values.items()}
    return SeriesSlice(
        job_id=job.id,
        attempt=job.attempt,
        status=JobStatus(job.status),
        name=spec.name,
        fields=spec.fields,
        start=after,
        values=values,
        points=int((job.series_points or {}).get(spec.name, 0)),
        total=job.total,
    )


def bounds_of(job: Job) -> Bounds:
    """The bounds of a range test already read (no team check)."""
    if job.kind != RangeTestSpec.kind:
        raise JobConflict(f"job {job.id} is of kind {job.kind!r}; only range tests have bounds")
    status = JobStatus(job.status)
    if status in (JobStatus.QUEUED, JobStatus.RUNNING):
        raise NotReady(f"job {job.id} is {status}; its bounds are ready once it has succeeded")
    if status != JobStatus.SUCCEEDED or job.result is None:
        raise JobConflict(f"job {job.id} is {status}; it has no bounds")
    outcome = RangeTestOutcome.model_validate(job.result)
    suggestions = outcome.bounds()
    if suggestions is None:
        raise JobConflict(
            f"the range test of job {job.id} found no bounds: {outcome.no_bounds_reason}"
        )
    return Bounds(
        job_id=job.id,
        config_key=job.config_key,
        finished_at=job.finished_at,
        suggestions=suggestions,
    )


def get_bounds(session: Session, *, team: Team, job_id: uuid.UUID) -> Bounds:
    """The suggested bounds of one of the team's range tests.

    Raises:
        JobNotFound: no such range test for this team.
        NotReady: the job is still queued or running.
        JobConflict: the job failed or was cancelled, or its curve gave no bounds
            (the message says why).
    """
    return bounds_of(get_job(session, team=team, job_id=job_id, kind=RangeTestSpec.kind))


def find_bounds(session: Session, *, team: Team, spec: RangeTestSpec | Mapping[str, Any]) -> Bounds:
    """The bounds of the team's latest successful range test of this configuration.

    The configuration is what :meth:`RangeTestSpec.configuration` covers: workload,
    params (batch size included), the optimizer's hyperparameters in effect and
    the metric the bounds read; omitted ones take their defaults.

    Raises:
        InvalidJobSpec: ``spec`` is not a valid range-test spec.
        NoBoundsForConfiguration: the team has no successful range test of this
            configuration; the message lists, newest first, the workload's
            configurations that have bounds.
        JobConflict: the latest one's curve gave no bounds.
    """
    parsed = parse_job_spec(RangeTestSpec.kind, spec)
    assert isinstance(parsed, RangeTestSpec)
    key = parsed.config_key()
    repo = JobRepository(session)
    job = repo.latest_succeeded_by_config_key(team.id, RangeTestSpec.kind, key)
    if job is None:
        recent = _stored_specs(
            repo.latest_succeeded_of_workload(
                team.id, RangeTestSpec.kind, parsed.workload, limit=_SCANNED_FOR_CONFIGURATIONS
            )
        )
        # A test submitted before the key last changed has an older key: recompute it.
        job = next((old for old, stored in recent if stored.config_key() == key), None)
        if job is None:
            others = _configurations_with_bounds(recent)
            if others:
                listed = "; ".join(f"`{_as_query(parsed.workload, c)}`" for c in others)
                known = f"{parsed.workload} has bounds for (newest first): {listed}"
            else:
                known = (
                    f"the team has no bounds for {parsed.workload} yet: run POST /range-tests first"
                )
            raise NoBoundsForConfiguration(
                f"no successful range test of this configuration; {known}",
                configurations=others,
            )
    return bounds_of(job)


MAX_LISTED_CONFIGURATIONS = 5
"""Configurations a ``find_bounds`` miss lists."""

_SCANNED_FOR_CONFIGURATIONS = 200
"""The team's newest successful tests of the workload a ``find_bounds`` miss looks through."""


def _stored_specs(jobs: Sequence[Job]) -> list[tuple[Job, RangeTestSpec]]:
    """Each job with its stored spec parsed; one this version no longer accepts is left out."""
    out = []
    for job in jobs:
        try:
            out.append((job, RangeTestSpec.model_validate(job.spec)))
        except ValidationError:
            continue
    return out


def _configurations_with_bounds(
    recent: Sequence[tuple[Job, RangeTestSpec]],
) -> list[dict[str, Any]]:
    """The distinct configurations among ``recent`` (newest first) whose tests gave bounds."""
    seen: set[str] = set()
    found: list[dict[str, Any]] = []
    for job, stored in recent:
        key = stored.config_key()
        if key in seen or not (job.result or {}).get("suggestions"):
            continue
        seen.add(key)
        found.append(stored.configuration())
        if len(found) == MAX_LISTED_CONFIGURATIONS:
            break
    return found


def _as_query(workload: str, configuration: Mapping[str, Any]) -> str:
    """The ``/bounds`` query that finds ``configuration``: only what differs from defaults."""
    defaults = RangeTestSpec.model_validate({"workload": workload}).configuration()
    parts = [f"workload={workload}"]
    for name, value in configuration["params"].items():
        if defaults["params"].get(name) != value:
            parts.append(f"params.{name}={_query_value(value)}")
    optimizer = configuration["optimizer"]
    if optimizer["name"] != defaults["optimizer"]["name"]:
        parts.append(f"optimizer={optimizer['name']}")
        defaults_of_name = RangeTestSpec.model_validate(
            {"workload": workload, "optimizer": {"name": optimizer["name"]}}
        ).configuration()["optimizer"]
    else:
        defaults_of_name = defaults["optimizer"]
    for name, value in optimizer.items():
        if name != "name" and defaults_of_name.get(name) != value:
            parts.append(f"optimizer.{name}={_query_value(value)}")
    if configuration["metric"] != defaults["metric"]:
        parts.append(f"metric={configuration['metric']}")
    return "&".join(parts)


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_query_value(v) for v in value)
    return str(value)


# --------------------------------------------------------------------------- reconciler


def reconcile(
    session: Session,
    *,
    settings: Settings,
    now: datetime | None = None,
    limit: int = RECONCILE_BATCH,
) -> ReconcileReport:
    """One pass of the reconciler; safe to run from several processes at once.

    - A queued job whose message is lost gets it again (a flushed broker, or a
      crash between commit and send). Lost means: a live worker that consumes its
      queue has been free, fetching nothing, since its message went out (see
      :func:`~core.services.workers.fetched_before`); while every consumer of the
      queue is busy the message is taken to be waiting, and is not duplicated. A
      job is re-sent at the earliest ``queued_resend_after_s`` after its last send,
      the wait doubling with each re-send up to ``queued_resend_max_s``, so even a
      misjudged queue gets few duplicates.
    - A running job silent for ``heartbeat_timeout_s`` lost its worker: it goes back
      to queued for another attempt, or fails once it has had ``max_attempts``; if it
      had been asked to cancel, it is cancelled instead.
    - A running job whose attempt started more than its kind's time limit (plus
      one heartbeat timeout of grace) ago fails, even if its worker is still alive.
    - Workers silent for ``worker_prune_after_s`` leave the registry.
    - Parents waiting on their children move on (after this pass commits), in
      case a child's end was committed by a process that died before its
      parent's advance.
    - Artifacts a killed writer left half-written go after
      :data:`ORPHAN_ARTIFACT_AGE_S` (looked for every :data:`ARTIFACT_PRUNE_INTERVAL_S`).

    Each change is a guarded update, so a heartbeat arriving meanwhile, or another
    reconciler, wins cleanly.
    """
    now = _now(now)
    repo = JobRepository(session)

    workers = live_workers(session, settings=settings, now=now)
    rule = ResendRule(
        fetched_before=fetched_before(workers),
        now=now,
        first_wait_s=settings.queued_resend_after_s,
        max_wait_s=settings.queued_resend_max_s,
    )
    # a message a worker received but has not claimed yet is not lost
    held = {w.current_job_id for w in workers if w.current_job_id is not None}
    lost = repo.resendable(rule, exclude=held, limit=limit)
    resent = repo.mark_resent([job.id for job in lost], rule)
    devices = {job.id: job.requested_device for job in lost}
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
        if is_client_spec(job.spec):
            silent = (now - as_utc(last)).total_seconds() if last is not None else None
            reason = (
                f"the client stopped sending: no upload for {silent:.0f} s "
                f"(heartbeat timeout {settings.heartbeat_timeout_s:g} s)"
                if silent is not None
                else "the client stopped sending"
            )
            if repo.fail(
                job.id, attempt, reason=reason, now=now, heartbeat_before=heartbeat_cutoff
            ):
                _ended(session, job)
                failed.append(job.id)
                logger.warning("job.client_lost job_id=%s reason=%s", job.id, reason)
        elif job.cancel_requested:
            if repo.mark_cancelled(job.id, attempt, now=now, heartbeat_before=heartbeat_cutoff):
                _ended(session, job)
                cancelled.append(job.id)
                logger.info("job.cancelled job_id=%s attempt=%d by=reconciler", job.id, attempt)
        elif attempt < job.max_attempts:
            if repo.requeue(job.id, attempt, heartbeat_before=heartbeat_cutoff, now=now):
                enqueue_after_commit(session, job.id, job.kind, device=job.requested_device)
                requeued.append(job.id)
                logger.warning(
                    "job.requeued job_id=%s attempt=%d worker=%s last_heartbeat=%s note=%s",
                    job.id,
                    attempt,
                    worker,
                    last_text,
                    job.error or "-",
                )
        else:
            reason = f"worker lost {attempt} times: last heartbeat at {last_text} from {worker}"
            if job.error:
                # the worker's parent noted how the last attempt's process died
                reason += f"; the last: {job.error}"
            if repo.fail(
                job.id, attempt, reason=reason, now=now, heartbeat_before=heartbeat_cutoff
            ):
                _ended(session, job)
                failed.append(job.id)
                logger.warning("job.lost job_id=%s attempt=%d reason=%s", job.id, attempt, reason)

    timed_out: list[uuid.UUID] = []
    for job_kind in all_kinds():
        limit_s = job_kind.time_limit_s(settings)
        limit_cutoff = now - timedelta(seconds=limit_s + settings.heartbeat_timeout_s)
        for job in repo.overdue_running(limit_cutoff, kind=job_kind.name, limit=limit):
            if is_client_spec(job.spec):
                continue  # the team's process runs it, for as long as it sends
            attempt, started = job.attempt, job.started_at
            reason = (
                f"ran past the time limit of {limit_s} s "
                f"(CLR_{job_kind.time_limit_setting.upper()}): attempt {attempt} started at "
                f"{'?' if started is None else started.isoformat()}"
            )
            if repo.fail(job.id, attempt, reason=reason, now=now):
                _ended(session, job)
                timed_out.append(job.id)
                logger.warning("job.timed_out job_id=%s attempt=%d", job.id, attempt)

    # parents move on after this pass commits, each in a transaction of its own;
    # this picks up one whose advance was lost with its process
    advanced = repo.waiting_parents(limit=limit)
    for parent_id in advanced:
        advance_after_commit(session, parent_id)

    return ReconcileReport(
        resent=[job_id for job_id, _ in resent],
        requeued=requeued,
        failed=failed,
        cancelled=cancelled,
        timed_out=timed_out,
        pruned_workers=prune_workers(session, settings=settings, now=now),
        pruned_artifacts=_prune_artifacts(session, settings=settings, now=now),
        advanced=advanced,
    )


ORPHAN_ARTIFACT_AGE_S = 3600
"""How long a half-written artifact (a ``writing`` row, a stray file) waits before the
reconciler removes it: a live writer touches its row every chunk, far more often."""

ARTIFACT_PRUNE_INTERVAL_S = 600
"""How often one reconciler process looks for orphaned artifacts (the folder scan of
the directory store is not free)."""

_last_artifact_prune: list[datetime] = []


def _prune_artifacts(session: Session, *, settings: Settings, now: datetime) -> int:
    if _last_artifact_prune and now - _last_artifact_prune[0] < timedelta(
        seconds=ARTIFACT_PRUNE_INTERVAL_S
    ):
        return 0
    _last_artifact_prune[:] = [now]
    pruned = prune_orphans(
        session, settings, older_than=now - timedelta(seconds=ORPHAN_ARTIFACT_AGE_S)
    )
    return pruned.rows + pruned.files
