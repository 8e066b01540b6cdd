"""Jobs the team runs in its own loop: its uploads, and how it finishes them.

A client job (:mod:`core.client_specs`) is created running by
:func:`core.services.submit_job`; then:

- :func:`upload_points` appends a run of points to one of its series (the
  kind's own series: a range test's ``curve``, a training's ``iterations`` and
  ``epochs``). Each upload is the job's heartbeat and sets its progress (the
  points of the kind's first series). A run repeating points already stored
  with the same values is accepted and stores nothing twice (a retried upload);
  one leaving a gap, or differing from the stored points, is refused naming the
  index expected next. A cancelled job refuses every upload: the client stops.
- :func:`finish_client_job` ends it: ``succeeded`` builds the result from the
  stored series exactly as a worker's run does (a range test's every method's
  bounds, :func:`core.range_tests.assess_range_test`; a training's final and
  best metrics), ``failed`` keeps the points with the client's reason. A retry
  of the same finish gives the same job.

The reconciler fails a client job whose uploads stopped for the heartbeat
timeout (:func:`core.services.jobs.reconcile`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal
from urllib.parse import quote

from pydantic import ValidationError
from sqlalchemy.orm import Session

from clr import RangeTestResult
from core.client_specs import CLIENT, CLIENT_WORKER, ClientRangeTestSpec, ClientTrainingSpec
from core.clock import as_utc, utc_now
from core.errors import (
    InvalidInput,
    JobCancelled,
    JobConflict,
    NoBoundsForConfiguration,
    NotAClientJob,
    UploadConflict,
)
from core.kinds import RANGE_TEST, get_kind
from core.models import Job, JobStatus, Team
from core.range_tests import assess_range_test
from core.repositories import JobRepository
from core.series import SeriesPoints, SeriesSpec
from core.services.jobs import (
    MAX_ERROR_LENGTH,
    MAX_LISTED_CONFIGURATIONS,
    Bounds,
    _ended,
    bounds_of,
    fail_job,
    finish_job,
    get_job,
    parse_job_spec,
    series_of,
)
from core.specs import JobResult, OptimizerSpec
from core.training import TRAINING, TrainingOutcome

__all__ = [
    "FINISH_STATUSES",
    "Upload",
    "client_bounds_query",
    "client_heartbeat",
    "find_client_bounds",
    "finish_client_job",
    "upload_points",
]

logger = logging.getLogger(__name__)

FINISH_STATUSES = ("succeeded", "failed", "cancelled")
"""How a client may end its job."""

FinishStatus = Literal["succeeded", "failed", "cancelled"]


@dataclass(frozen=True)
class Upload:
    """What an upload did.

    Attributes:
        job: the job after it.
        name: the series.
        start: the index of the upload's first point.
        stored: points this upload added (0 for a repeat of stored points).
        points: points the series has now (the next upload starts there).
    """

    job: Job
    name: str
    start: int
    stored: int
    points: int

    @property
    def duplicate(self) -> bool:
        """Every point of the upload was stored already."""
        return self.stored == 0


def _client_job(session: Session, *, team: Team, job_id: uuid.UUID) -> Job:
    job = get_job(session, team=team, job_id=job_id)
    if (job.spec or {}).get("source") != "client":
        title = get_kind(job.kind).title
        raise NotAClientJob(
            f"{title} {job.id} is run by the service's workers; only jobs created with "
            '"source": "client" take uploads and finishes'
        )
    return job


def _refuse_finished(job: Job) -> None:
    status = JobStatus(job.status)
    if status == JobStatus.CANCELLED:
        raise JobCancelled(f"job {job.id} was cancelled: stop sending", errors=_status_error(job))
    if status.finished:
        why = f": {job.error}" if job.error else ""
        raise JobConflict(
            f"job {job.id} is {status}{why}; it takes no more points", errors=_status_error(job)
        )


def _status_error(job: Job) -> list[Any]:
    return [{"field": "status", "reason": f"job is {job.status}"}]


def _check_points(
    spec: SeriesSpec, start: int, values: Mapping[str, Sequence[float] | None]
) -> SeriesPoints:
    try:
        return SeriesPoints.of(spec, start, values)
    except ValueError as exc:
        reason = str(exc)
        field = "start" if reason.startswith("start") else "values"
        for name in spec.fields:
            if f"field {name!r}" in reason:
                field = f"values.{name}"
        raise InvalidInput(reason, errors=[{"field": field, "reason": reason}]) from None


def _refuse(field: str, reason: str) -> InvalidInput:
    return InvalidInput(reason, errors=[{"field": field, "reason": reason}])


def _check_end(job: Job, points: SeriesPoints, setting: str) -> None:
    """No more points than the job's planned steps (``setting``: their spec field)."""
    end = points.start + points.size
    if end > job.total:
        raise _refuse(
            "values",
            f"the {get_kind(job.kind).title.lower()} has {setting}={job.total}: points 0 to "
            f"{job.total - 1}, not up to {end - 1}",
        )


def _check_accuracies(points: SeriesPoints, names: Sequence[str]) -> None:
    for name in names:
        for i, value in enumerate(points.values.get(name) or []):
            if not 0 <= value <= 1:
                reason = f"an accuracy is a fraction in [0, 1], got {value:g}"
                raise _refuse(f"values.{name}.{i}", reason)


def _check_range_test_points(job: Job, points: SeriesPoints) -> None:
    """A range test's curve: positive LRs, accuracies in [0, 1], and no more points than
    its ``num_iter``."""
    for i, lr in enumerate(points.values.get("lr") or []):
        if not lr > 0:
            raise _refuse(f"values.lr.{i}", f"a range test's lr must be positive, got {lr:g}")
    _check_accuracies(points, ("accuracy",))
    _check_end(job, points, "num_iter")


def _check_training_points(job: Job, points: SeriesPoints) -> None:
    """A training's points: no more iterations than its ``iterations``; epochs with
    whole, non-negative numbers, an iteration within the run and accuracies in [0, 1]."""
    if points.name == "iterations":
        _check_end(job, points, "iterations")
        return
    for name in ("epoch", "iteration"):
        for i, value in enumerate(points.values.get(name) or []):
            if value < 0 or not value.is_integer():
                raise _refuse(
                    f"values.{name}.{i}", f"{name} must be a whole number >= 0, got {value:g}"
                )
    for i, value in enumerate(points.values.get("iteration") or []):
        if value > job.total:
            reason = f"the training has iterations={job.total}: iteration {value:g} is past it"
            raise _refuse(f"values.iteration.{i}", reason)
    _check_accuracies(points, ("train_accuracy", "val_accuracy"))


def _smooth(
    session: Session, job: Job, points: SeriesPoints, have: int, smoothing: float
) -> SeriesPoints:
    """``points`` (from ``have``, the stored count, on) with their ``smoothed_loss``: the
    range test's debiased moving average of the losses (as :class:`clr.RangeTest` computes
    it), continued from the last stored point's."""
    beta = smoothing
    avg = 0.0
    if have:
        last = series_of(session, job, "curve", after=have - 1, limit=1).values
        smoothed = (last.get("smoothed_loss") or [0.0])[0]
        avg = smoothed * (1 - beta**have)  # the undebiased average after ``have`` points
    out: list[float] = []
    for i, loss in enumerate(points.values.get("loss") or []):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (points.start + i + 1)))
    return SeriesPoints(
        name=points.name, start=points.start, values={**points.values, "smoothed_loss": out}
    )


def _same(
    stored: Mapping[str, list[float] | None],
    given: SeriesPoints,
    size: int,
    skip: frozenset[str] = frozenset(),
) -> bool:
    """Whether the first ``size`` points of ``given`` equal the ``stored`` ones (but for the
    fields ``skip``: those the service computes when they are not given)."""
    for name, column in given.values.items():
        if name in skip:
            continue
        have = stored.get(name)
        if column is None or have is None:
            if (column is None) != (have is None):
                return False
            continue
        if have[:size] != column[:size]:
            return False
    return True


def upload_points(
    session: Session,
    *,
    team: Team,
    job_id: uuid.UUID,
    name: str,
    start: int,
    values: Mapping[str, Sequence[float] | None],
    now: datetime | None = None,
) -> Upload:
    """Append points ``start`` on of series ``name`` of one of the team's client jobs.

    Raises:
        JobNotFound: no such job for this team.
        NotAClientJob: the service's workers run the job (409).
        JobCancelled: the job was cancelled (409): stop sending.
        JobConflict: the job already finished (409).
        InvalidInput: the kind has no such series, or the values are not its
            fields' (every field, finite numbers, the same lengths).
        UploadConflict: the points leave a gap after the stored ones, or differ
            from points stored at the same indexes (409, naming the index
            expected next).
    """
    job = _client_job(session, team=team, job_id=job_id)
    _refuse_finished(job)
    kind = get_kind(job.kind)
    spec = kind.series_spec(name)
    if spec is None:
        known = ", ".join(s.name for s in kind.series)
        reason = f"{kind.title} jobs have no series {name!r}; their series: {known}"
        raise InvalidInput(reason, errors=[{"field": "name", "reason": reason}])
    if job.kind == RANGE_TEST.name and name != "curve":
        # the band across seeds is the service's own (a range test under several seeds)
        reason = f"a range test run in the team's own loop uploads its curve, not {name!r}"
        raise InvalidInput(reason, errors=[{"field": "name", "reason": reason}])
    derived: frozenset[str] = frozenset()
    if job.kind == RANGE_TEST.name and values.get("smoothed_loss") is None:
        derived = frozenset({"smoothed_loss"})  # the service computes it
        spec = replace(spec, optional=spec.optional | derived)
    points = _check_points(spec, start, values)
    if job.kind == RANGE_TEST.name:
        _check_range_test_points(job, points)
    elif job.kind == TRAINING.name:
        _check_training_points(job, points)
    repo = JobRepository(session)
    # the time of the upload once its turn came (SQLite's write lock was waited for at
    # the first query): the heartbeat it records is not older than the upload
    now = utc_now() if now is None else as_utc(now)
    guard = repo.guard_report(job.id, job.attempt, now=now)  # locks the row: one at a time
    if guard is None:
        session.refresh(job)
        _refuse_finished(job)
        raise JobConflict(f"job {job.id} is {job.status}; it takes no more points")
    counts = dict(guard.series_points)
    have = counts.get(name, 0)
    end = points.start + points.size
    if points.start > have:
        reason = f"expected {have}: the series has {have} points"
        raise UploadConflict(
            f"points from {points.start} leave a gap after the {have} stored points of "
            f"series {name!r}; send from {have}",
            errors=[{"field": "start", "reason": reason}],
        )
    if points.start < have:
        overlap = min(end, have) - points.start
        stored = series_of(session, job, name, after=points.start, limit=overlap).values
        if not _same(stored, points, overlap, derived):
            reason = f"expected {have}: the series has {have} points"
            raise UploadConflict(
                f"points {points.start} to {points.start + overlap - 1} of series {name!r} "
                f"differ from those stored; send new points from {have}",
                errors=[{"field": "start", "reason": reason}],
            )
        points = points.slice(overlap) if end > have else points.slice(0, 0)
    runs: list[tuple[SeriesPoints, tuple[str, ...]]] = []
    added = 0
    if points.size and derived:
        parsed = parse_job_spec(job.kind, job.spec, stored=True)
        assert isinstance(parsed, ClientRangeTestSpec)
        points = _smooth(session, job, points, have, parsed.smoothing)
    if points.size:
        runs.append((points, spec.fields))
        added = points.size
        counts[name] = have + added
    progress = int(counts.get(kind.series[0].name, 0)) if kind.series else guard.progress
    repo.append_points(
        job.id,
        job.attempt,
        runs=runs,
        series_points=counts,
        progress=max(progress, guard.progress),
        now=now,
    )
    session.refresh(job)
    if not added:
        logger.info("job.upload_duplicate job_id=%s series=%s start=%d", job.id, name, start)
    return Upload(job=job, name=name, start=start, stored=added, points=counts.get(name, 0))


def client_heartbeat(
    session: Session, *, team: Team, job_id: uuid.UUID, now: datetime | None = None
) -> Job:
    """The team's process running a client job is alive, with nothing new to upload (a
    long evaluation pass, a slow first batch): refreshes its heartbeat.

    Raises:
        JobNotFound: no such job for this team.
        NotAClientJob: the service's workers run the job (409).
        JobCancelled: the job was cancelled (409): stop.
        JobConflict: the job already finished (409).
    """
    job = _client_job(session, team=team, job_id=job_id)
    _refuse_finished(job)
    now = utc_now() if now is None else as_utc(now)  # after any wait for SQLite's lock
    if JobRepository(session).guard_report(job.id, job.attempt, now=now) is None:
        session.refresh(job)
        _refuse_finished(job)
        raise JobConflict(f"job {job.id} is {job.status}; it takes no heartbeat")
    session.refresh(job)
    return job


def finish_client_job(
    session: Session,
    *,
    team: Team,
    job_id: uuid.UUID,
    status: FinishStatus,
    error: str | None = None,
    stop_reason: str | None = None,
    stop_detail: str | None = None,
    seconds: float | None = None,
    device: str | None = None,
    now: datetime | None = None,
) -> Job:
    """End one of the team's client jobs as ``status``; the same finish again gives the job.

    ``succeeded`` builds the result from the stored series; ``stop_reason``,
    ``stop_detail``, ``seconds`` and ``device`` say how the run went (defaults:
    ``completed`` when every planned step was uploaded, the time since the job
    was created, ``client``). ``failed`` keeps the stored points with ``error``.

    Raises:
        JobNotFound: no such job for this team.
        NotAClientJob: the service's workers run the job (409).
        JobCancelled: the job was cancelled (409), and ``status`` is not ``cancelled``.
        JobConflict: the job already ended another way (409), or a succeeded range
            test has no curve point (409).
    """
    now = utc_now() if now is None else as_utc(now)
    job = _client_job(session, team=team, job_id=job_id)
    current = JobStatus(job.status)
    if current.finished:
        if current == status:
            return job  # a retried finish
        _refuse_finished(job)
    if status == "failed":
        reason = (error or "the client reported a failure").strip() or "the client failed"
        if len(reason) > MAX_ERROR_LENGTH:
            reason = reason[: MAX_ERROR_LENGTH - 1] + "…"
        failed = fail_job(session, job_id=job.id, attempt=job.attempt, reason=reason, now=now)
        return _ended_or_conflict(session, job, failed)
    repo = JobRepository(session)
    if status == "cancelled":
        repo.request_cancel_running(job.id, team_id=team.id, now=now)
        cancelled = repo.mark_cancelled(job.id, job.attempt, now=now)
        if cancelled is not None:
            logger.info("job.cancelled job_id=%s by=client", job.id)
            _ended(session, cancelled)
        return _ended_or_conflict(session, job, cancelled)
    parsed = parse_job_spec(job.kind, job.spec, stored=True)
    started = as_utc(job.started_at or job.created_at)
    run_seconds = max(0.0, (now - started).total_seconds()) if seconds is None else seconds
    result: JobResult
    if isinstance(parsed, ClientRangeTestSpec):
        result = _range_test_result(
            session, job, parsed, stop_reason, stop_detail, run_seconds, device
        )
    elif isinstance(parsed, ClientTrainingSpec):
        result = _training_result(session, job, parsed, stop_reason, run_seconds, device)
    else:  # pragma: no cover - every client spec is handled above
        raise JobConflict(f"{job.kind} jobs cannot be finished by a client")
    finished = finish_job(session, job_id=job.id, attempt=job.attempt, result=result, now=now)
    return _ended_or_conflict(session, job, finished)


def _ended_or_conflict(session: Session, job: Job, ended: Job | None) -> Job:
    if ended is not None:
        return ended
    session.refresh(job)
    _refuse_finished(job)
    raise JobConflict(f"job {job.id} is {job.status}; try again")


def _range_test_result(
    session: Session,
    job: Job,
    spec: ClientRangeTestSpec,
    stop_reason: str | None,
    stop_detail: str | None,
    seconds: float,
    device: str | None,
) -> JobResult:
    curve = series_of(session, job, "curve", after=0)
    lrs = curve.column("lr") or []
    if not lrs:
        raise JobConflict(
            f"range test {job.id} has no curve points: upload them before finishing it as "
            "succeeded, or finish it as failed",
            errors=[{"field": "status", "reason": "no curve points were uploaded"}],
        )
    steps = len(lrs)
    if stop_reason is None:
        stop_reason = "completed" if steps >= spec.num_iter else "stopped"
    if stop_detail is None:
        stop_detail = (
            f"the client ran all {spec.num_iter} steps"
            if steps >= spec.num_iter
            else f"the client finished after {steps} of {spec.num_iter} steps"
        )
    result = RangeTestResult.from_dict(
        {
            "lrs": lrs,
            "losses": curve.column("loss") or [],
            "smoothed_losses": curve.column("smoothed_loss") or [],
            "accuracies": curve.column("accuracy"),
            "start_lr": spec.start_lr,
            "end_lr": spec.end_lr,
            "num_iter": spec.num_iter,
            "sweep": spec.sweep,
            "smoothing": spec.smoothing,
            "diverge_th": spec.diverge_th,
            "stop_reason": stop_reason,
            "stop_detail": stop_detail,
            "device": device or CLIENT_WORKER,
            "seconds": seconds,
        }
    )
    return assess_range_test(
        result, iters_per_epoch=spec.iters_per_epoch, metric=spec.metric
    ).outcome


def _training_result(
    session: Session,
    job: Job,
    spec: ClientTrainingSpec,
    stop_reason: str | None,
    seconds: float,
    device: str | None,
) -> JobResult:
    iterations = series_of(session, job, "iterations", after=0)
    epochs = series_of(session, job, "epochs", after=0)
    done = iterations.size
    if not done:
        raise JobConflict(
            f"training {job.id} has no iteration points: upload them before finishing it as "
            "succeeded, or finish it as failed",
            errors=[{"field": "status", "reason": "no iteration points were uploaded"}],
        )
    rows = [
        {name: (None if col is None else col[i]) for name, col in epochs.values.items()}
        for i in range(epochs.size)
    ]
    validated = [r for r in rows if r.get("val_accuracy") is not None]
    best = max(validated, key=lambda r: r["val_accuracy"] or 0.0, default=None)
    last = rows[-1] if rows else None
    losses = iterations.column("loss") or []
    ends = [e for e in spec.cycle_ends() if e <= done]
    schedule = spec.schedule
    return TrainingOutcome(
        stop_reason=stop_reason or ("completed" if done >= spec.iterations else "stopped"),
        iterations=done,
        epochs=len(rows),
        cycles=len(ends),
        cycle_ends=ends,
        seconds=seconds,
        device=device or CLIENT_WORKER,
        policy=CLIENT_WORKER if schedule is None else schedule.policy,
        schedule={} if schedule is None else schedule.arguments(),
        final_train_loss=(
            last["train_loss"] if last is not None else (losses[-1] if losses else None)
        ),
        final_val_loss=None if last is None else last.get("val_loss"),
        final_val_accuracy=None if last is None else last.get("val_accuracy"),
        best_val_accuracy=None if best is None else best["val_accuracy"],
        best_val_iteration=None if best is None else int(best["iteration"] or 0),
    )


def find_client_bounds(session: Session, *, team: Team, spec: Mapping[str, Any]) -> Bounds:
    """The bounds of the team's latest successful client range test of a configuration.

    ``spec`` names the configuration as the team created its test with:
    ``model``, ``dataset``, ``batch_size``, ``optimizer``, ``tags`` and
    ``metric`` (omitted ones take their defaults; tags compare as text, numbers
    by value).

    Raises:
        InvalidJobSpec: ``spec`` is not a client range test's configuration.
        NoBoundsForConfiguration: no successful client range test of it; the
            message lists, newest first, the model's configurations that have bounds.
        JobConflict: the latest one's curve gave no bounds.
    """
    parsed = parse_job_spec(RANGE_TEST.name, {**spec, "source": CLIENT})
    assert isinstance(parsed, ClientRangeTestSpec)
    key = parsed.config_key()
    repo = JobRepository(session)
    job = repo.latest_succeeded_by_config_key(team.id, RANGE_TEST.name, key)
    if job is None:
        recent = repo.latest_succeeded_without_workload(
            team.id, RANGE_TEST.name, limit=SCANNED_FOR_CONFIGURATIONS
        )
        others = _client_configurations(recent, model=parsed.model)
        if others:
            listed = "; ".join(f"`{client_bounds_query(c)}`" for c in others)
            known = f"model {parsed.model!r} has bounds for (newest first): {listed}"
        else:
            known = (
                f"the team has no bounds for model {parsed.model!r} yet: create a range test "
                'with "source": "client" and upload its curve first'
            )
        raise NoBoundsForConfiguration(
            f"no successful range test of this configuration; {known}", configurations=others
        )
    return bounds_of(job)


SCANNED_FOR_CONFIGURATIONS = 200
"""The team's newest successful client tests a ``find_client_bounds`` miss looks through."""


def _client_configurations(jobs: Sequence[Job], *, model: str) -> list[dict[str, Any]]:
    """The distinct configurations of ``model`` among ``jobs`` (newest first) with bounds."""
    seen: set[str] = set()
    found: list[dict[str, Any]] = []
    for job in jobs:
        if (job.spec or {}).get("model") != model or not (job.result or {}).get("suggestions"):
            continue
        try:
            stored = ClientRangeTestSpec.model_validate(job.spec)
        except ValidationError:
            continue
        key = stored.config_key()
        if key in seen:
            continue
        seen.add(key)
        found.append(stored.configuration())
        if len(found) == MAX_LISTED_CONFIGURATIONS:
            break
    return found


def client_bounds_query(configuration: Mapping[str, Any]) -> str:
    """The ``/bounds`` query that finds a client ``configuration``."""
    parts = [
        f"model={quote(str(configuration['model']))}",
        f"dataset={quote(str(configuration['dataset']))}",
        f"batch_size={configuration['batch_size']}",
    ]
    optimizer = dict(configuration["optimizer"])
    parts.append(f"optimizer={optimizer.pop('name')}")
    defaults = OptimizerSpec(name=configuration["optimizer"]["name"]).effective()
    for name, value in optimizer.items():
        if defaults.get(name) != value:
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value).lower()
            parts.append(f"optimizer.{name}={text}")
    for name, value in configuration.get("tags", {}).items():
        parts.append(f"tags.{name}={quote(str(value))}")
    if configuration.get("metric", "loss") != "loss":
        parts.append(f"metric={configuration['metric']}")
    return "&".join(parts)
