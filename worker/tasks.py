"""The worker's tasks: thin glue between :mod:`core.services` and :mod:`clr`.

A task claims its job, builds the ``clr`` objects its spec describes, runs them
with a callback that reports progress through the services, and records how it
ended. It holds no SQL and no science. Only the job id travels in the message;
a redelivered or duplicated message finds the job claimed and runs nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
import traceback
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import torch
from celery import shared_task
from celery.signals import worker_init
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from clr import CLRError, RangeTest, RangeTestProgress, SuggestionError, make_optimizer, suggest_all
from clr.workloads import build_workload, preload
from core.db import make_engine, make_session_factory, session_scope
from core.errors import DomainError
from core.redact import redact
from core.services import (
    JobAck,
    acknowledge_cancel,
    claim_job,
    fail_job,
    finish_job,
    heartbeat,
    parse_job_spec,
    reconcile,
    report_progress,
)
from core.settings import get_settings
from core.specs import CurvePoints, RangeTestOutcome, RangeTestSpec
from worker.celery_app import RANGE_TEST_TASK, RECONCILE_TASK
from worker.prefilter import JobTask

__all__ = [
    "ProgressReporter",
    "crash_reason",
    "reconcile_jobs",
    "run_range_test",
    "run_range_test_job",
]

logger = logging.getLogger(__name__)

MAX_REPORT_INTERVAL_S = 0.5
"""Longest a measured point waits before it is stored (unless heartbeats are rarer)."""


CRASH_FRAMES = 3
"""Innermost traceback frames a crashed job's reason names (where it was raised)."""

MAX_CRASH_MESSAGE = 1000
"""Longest exception message a crashed job's reason quotes (a CUDA OOM's is ~400)."""


class CannotRun(Exception):
    """This worker cannot run the job as specified (the job fails with the reason)."""


def _environment_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the database failing rather than the job.

    Such a job is not failed (a blip would fail a good job, and a database that is
    down could not take the failure anyway): the exception propagates, the attempt's
    heartbeat stops and the reconciler retries it on another attempt.
    """
    return isinstance(exc, SQLAlchemyError)


def _short_path(filename: str) -> str:
    """``filename`` relative to the import root it was loaded from (no home folders)."""
    path = Path(filename)
    roots = [Path(entry or os.getcwd()) for entry in sys.path]
    best = max(
        (r for r in roots if path.is_relative_to(r)), key=lambda r: len(r.parts), default=None
    )
    return path.name if best is None else path.relative_to(best).as_posix()


def crash_reason(exc: BaseException) -> str:
    """A failed job's reason for an unexpected exception: its type, message and origin.

    Example:
        ``RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB (raised at
        clr/workloads/_builtin.py:210 in _mlp <- clr/workloads/_builtin.py:260 in
        _build_digits_mlp <- clr/workloads/_core.py:404 in build)``
    """
    message = redact(str(exc).strip())  # a reason is shown to the team
    if len(message) > MAX_CRASH_MESSAGE:
        message = message[: MAX_CRASH_MESSAGE - 1] + "…"
    reason = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    frames = traceback.extract_tb(exc.__traceback__)[-CRASH_FRAMES:]
    if not frames:
        return reason
    where = " <- ".join(
        f"{_short_path(frame.filename)}:{frame.lineno} in {frame.name}"
        for frame in reversed(frames)
    )
    return f"{reason} (raised at {where})"


@cache
def _session_factory() -> sessionmaker[Session]:
    # Built on first use, so a prefork child opens its own connections.
    return make_session_factory(make_engine(get_settings()))


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _worker_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _run_device(requested: str) -> str:
    """Where the spec's job runs on this worker (CUDA is touched only inside a task)."""
    available = _worker_device()
    if requested == "cuda" and available != "cuda":
        raise CannotRun("the spec asks for device 'cuda' but this worker has no CUDA device")
    return "cpu" if requested == "cpu" else available


def _join(first: CurvePoints, second: CurvePoints) -> CurvePoints:
    accuracies = (
        None
        if first.accuracies is None or second.accuracies is None
        else first.accuracies + second.accuracies
    )
    return CurvePoints(
        start=first.start,
        lrs=first.lrs + second.lrs,
        losses=first.losses + second.losses,
        smoothed_losses=first.smoothed_losses + second.smoothed_losses,
        accuracies=accuracies,
    )


class ProgressReporter:
    """The range test's callback: stores its points in short transactions.

    Points are gathered and stored at most every ``interval_s`` seconds (each
    report is also the job's heartbeat); :meth:`should_stop` answers from the last
    report, which is how a cancel request or a lost attempt stops the sweep.
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        *,
        job_id: uuid.UUID,
        attempt: int,
        interval_s: float = MAX_REPORT_INTERVAL_S,
    ) -> None:
        self.factory = factory
        self.job_id = job_id
        self.attempt = attempt
        self.interval_s = interval_s
        self.pending: CurvePoints | None = None
        self.ack = JobAck(accepted=True, cancel_requested=False)
        self._last_report = time.monotonic()

    def __call__(self, progress: RangeTestProgress) -> None:
        chunk = CurvePoints.from_progress(progress)
        self.pending = chunk if self.pending is None else _join(self.pending, chunk)
        if time.monotonic() - self._last_report >= self.interval_s:
            with session_scope(self.factory) as session:
                self.report(session)

    def report(self, session: Session) -> None:
        """Store the gathered points in ``session``'s transaction."""
        if self.pending is not None:
            self.ack = report_progress(
                session, job_id=self.job_id, attempt=self.attempt, chunk=self.pending
            )
            self.pending = None
        self._last_report = time.monotonic()

    def should_stop(self) -> bool:
        """Whether the last report said to stop (cancel requested or attempt stale)."""
        return self.ack.should_stop


class Heartbeats:
    """A thread that beats for a claimed job while it runs.

    Progress reports are heartbeats too, but a slow dataset build, a long first
    step or a CUDA warm-up sends none for a while: this keeps such a job from
    looking lost. A refused beat (the attempt went stale) or a cancel request
    reaches :meth:`ProgressReporter.should_stop` through the reporter's ack.
    """

    def __init__(self, reporter: ProgressReporter, *, interval_s: float) -> None:
        self.reporter = reporter
        self.interval_s = interval_s
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{reporter.job_id}", daemon=True
        )

    def _run(self) -> None:
        reporter = self.reporter
        while not self._stop.wait(self.interval_s):
            try:
                with session_scope(reporter.factory) as session:
                    ack = heartbeat(session, job_id=reporter.job_id, attempt=reporter.attempt)
            except Exception:  # a database blip: the next beat (or report) retries
                logger.exception("job.heartbeat_failed job_id=%s", reporter.job_id)
                continue
            self.beats += 1
            if ack.should_stop:
                reporter.ack = ack

    def __enter__(self) -> Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


def _fail(reporter: ProgressReporter, reason: str) -> str:
    with session_scope(reporter.factory) as session:
        reporter.report(session)  # the partial curve is kept
        fail_job(session, job_id=reporter.job_id, attempt=reporter.attempt, reason=reason)
    return "failed"


def run_range_test_job(
    factory: sessionmaker[Session],
    job_id: uuid.UUID,
    *,
    worker: str,
    interval_s: float,
    heartbeat_s: float | None = None,
) -> str:
    """Claim and run one range test; what happened: ``skipped``, ``succeeded``,
    ``failed``, ``cancelled`` or ``stale`` (another attempt took over).

    Errors of the spec or of ``clr`` fail the job with a readable reason. Any other
    exception (out of memory, a bug in a workload's builder) is deterministic too:
    the job fails at once with :func:`crash_reason`, not after being retried by the
    reconciler to its attempt limit. Only a database failure propagates (the job's
    heartbeat stops and the reconciler requeues it), like a vanished worker.
    Besides the progress reports, a :class:`Heartbeats` thread beats every
    ``heartbeat_s`` (default ``interval_s``) while the job runs.
    """
    with session_scope(factory) as session:
        job = claim_job(session, job_id=job_id, worker=worker, device=_worker_device())
        if job is None:
            return "skipped"
        attempt, kind, spec_data = job.attempt, job.kind, dict(job.spec)
    reporter = ProgressReporter(factory, job_id=job_id, attempt=attempt, interval_s=interval_s)
    with Heartbeats(reporter, interval_s=heartbeat_s if heartbeat_s is not None else interval_s):
        try:
            return _run_claimed(reporter, kind, spec_data)
        except Exception as exc:
            if _environment_failure(exc):
                raise
            # the full traceback goes to the worker's log; the job keeps its summary
            logger.exception("job.crashed job_id=%s attempt=%d", job_id, attempt)
            return _fail(reporter, crash_reason(exc))


def _run_claimed(reporter: ProgressReporter, kind: str, spec_data: dict[str, Any]) -> str:
    factory, job_id, attempt = reporter.factory, reporter.job_id, reporter.attempt
    try:
        spec = parse_job_spec(kind, spec_data)
        if not isinstance(spec, RangeTestSpec):
            raise CannotRun(f"task {RANGE_TEST_TASK!r} runs range tests, not {kind!r} jobs")
        built = build_workload(
            spec.workload, spec.params, seed=spec.seed, device=_run_device(spec.device)
        )
        optimizer = make_optimizer(
            spec.optimizer.name,
            built.model.parameters(),
            lr=spec.start_lr,
            momentum=spec.optimizer.momentum,
            weight_decay=spec.optimizer.weight_decay,
            nesterov=spec.optimizer.nesterov,
            betas=spec.optimizer.betas,
            eps=spec.optimizer.eps,
        )
        tester = RangeTest(built.model, optimizer, built.loss_fn, metric_fn=built.metric_fn)
        result = tester.run(
            built.train_loader,
            start_lr=spec.start_lr,
            end_lr=spec.end_lr,
            num_iter=spec.num_iter,
            sweep=spec.sweep,
            smoothing=spec.smoothing,
            diverge_th=spec.diverge_th,
            callback=reporter,
            should_stop=reporter.should_stop,
        )
    except (CLRError, DomainError, CannotRun) as exc:
        logger.info("job.run_failed job_id=%s attempt=%d error=%s", job_id, attempt, exc)
        return _fail(reporter, f"{type(exc).__name__}: {exc}")

    if result.stop_reason == "cancelled":
        if not reporter.ack.accepted:
            return "stale"
        with session_scope(factory) as session:
            reporter.report(session)
            done = acknowledge_cancel(session, job_id=job_id, attempt=attempt)
        return "cancelled" if done is not None else "stale"

    suggestions = None
    no_bounds_reason = None
    try:
        suggestions = suggest_all(
            result, iters_per_epoch=built.iters_per_epoch, use_accuracy=spec.metric == "accuracy"
        )
    except SuggestionError as exc:
        no_bounds_reason = str(exc)
    outcome = RangeTestOutcome.from_clr(result, suggestions, no_bounds_reason=no_bounds_reason)
    with session_scope(factory) as session:
        reporter.report(session)
        finished = finish_job(session, job_id=job_id, attempt=attempt, result=outcome)
    return "succeeded" if finished is not None else "stale"


@worker_init.connect
def _preload_workloads(**_: object) -> None:
    # In the worker's parent, before it forks a child per job: children inherit the
    # imports and the loaded data. Nothing here touches CUDA. (No log line: Celery
    # configures logging only after this signal.)
    preload()
    # torch.optim's first step imports torch._dynamo (seconds), and the first
    # connection psycopg (tenths): once here, not in every job's child
    import psycopg  # noqa: F401
    import torch._dynamo  # noqa: F401


@shared_task(name=RANGE_TEST_TASK, base=JobTask)
def run_range_test(job_id: str) -> str:
    """Run range-test job ``job_id`` (a UUID string) if it is still queued."""
    settings = get_settings()
    return run_range_test_job(
        _session_factory(),
        uuid.UUID(job_id),
        worker=_worker_name(),
        interval_s=min(MAX_REPORT_INTERVAL_S, settings.heartbeat_interval_s),
        heartbeat_s=settings.heartbeat_interval_s,
    )


@shared_task(name=RECONCILE_TASK)
def reconcile_jobs() -> dict[str, int]:
    """One reconciler pass (beat runs it every ``reconcile_interval_s``); counts by action."""
    with session_scope(_session_factory()) as session:
        report = reconcile(session, settings=get_settings())
    return {
        "resent": len(report.resent),
        "requeued": len(report.requeued),
        "failed": len(report.failed),
        "cancelled": len(report.cancelled),
        "timed_out": len(report.timed_out),
    }
