"""Running one claimed job of any kind: claim, heartbeats, progress, and how it ended.

:func:`run_job` is what every kind's Celery task calls. It claims the job,
looks its kind up in :mod:`core.kinds`, imports the kind's runner
(``module:function``) and calls it with a :class:`JobContext`: the parsed
spec, where to resume, and the means to report series points, publish
checkpoints and end the job. The runner holds no SQL and no lifecycle code;
the context holds no science.

Errors of the spec or of ``clr`` (and :class:`CannotRun`) fail the job with a
readable reason. Any other exception (out of memory, a bug in a workload's
builder) is deterministic too: the job fails at once with
:func:`crash_reason`, not after being retried by the reconciler to its attempt
limit. Only a database failure propagates (the job's heartbeat stops and the
reconciler requeues it), like a vanished worker.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from clr import CLRError
from core.db import session_scope
from core.errors import DomainError
from core.kinds import JobKind, get_kind
from core.redact import redact
from core.series import SeriesPoints
from core.services import (
    JobAck,
    acknowledge_cancel,
    claim_job,
    fail_job,
    finish_job,
    heartbeat,
    parse_job_spec,
    report_progress,
)
from core.specs import JobResult, JobSpec

__all__ = [
    "CRASH_FRAMES",
    "MAX_CRASH_MESSAGE",
    "MAX_REPORT_INTERVAL_S",
    "CannotRun",
    "Heartbeats",
    "JobContext",
    "ProgressReporter",
    "Runner",
    "crash_reason",
    "failure_reason",
    "run_device",
    "run_job",
    "worker_device",
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


def worker_device() -> str:
    """The device this worker runs jobs on by default (CUDA when it has one)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def run_device(requested: str) -> str:
    """Where the spec's job runs on this worker (CUDA is touched only inside a task).

    Raises:
        CannotRun: the spec asks for CUDA and this worker has none.
    """
    available = worker_device()
    if requested == "cuda" and available != "cuda":
        raise CannotRun("the spec asks for device 'cuda' but this worker has no CUDA device")
    return "cpu" if requested == "cpu" else available


class ProgressReporter:
    """Gathers a job's series points and stores them in short transactions.

    Points are gathered and stored at most every ``interval_s`` seconds (each
    report is also the job's heartbeat); :meth:`should_stop` answers from the last
    report, which is how a cancel request or a lost attempt stops the run.
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
        self.pending: dict[str, SeriesPoints] = {}
        self.progress: int | None = None
        self.ack = JobAck(accepted=True, cancel_requested=False)
        self.ended = False  # set once the attempt is ended: no more heartbeats for it
        self._last_report = time.monotonic()

    def add(self, *points: SeriesPoints, progress: int | None = None) -> None:
        """Gather runs of points (and the job's progress); store them when it is time."""
        for run in points:
            held = self.pending.get(run.name)
            self.pending[run.name] = run if held is None else held.join(run)
        if progress is not None:
            self.progress = progress
        if time.monotonic() - self._last_report >= self.interval_s:
            self.flush()

    def flush(self) -> None:
        """Store everything gathered now, in a transaction of its own."""
        with session_scope(self.factory) as session:
            self.report(session)

    def report(self, session: Session) -> None:
        """Store the gathered points in ``session``'s transaction."""
        if self.pending or self.progress is not None:
            self.ack = report_progress(
                session,
                job_id=self.job_id,
                attempt=self.attempt,
                points=list(self.pending.values()),
                progress=self.progress,
            )
            self.pending = {}
            self.progress = None
        self._last_report = time.monotonic()

    def should_stop(self) -> bool:
        """Whether the last report said to stop (cancel requested or attempt stale)."""
        return self.ack.should_stop


class Heartbeats:
    """A thread that beats for claimed jobs while they run.

    Progress reports are heartbeats too, but a slow dataset build, a long first
    step or a CUDA warm-up sends none for a while: this keeps such a job from
    looking lost. A refused beat (the attempt went stale) or a cancel request
    reaches :meth:`ProgressReporter.should_stop` through the reporter's ack.
    Several reporters (the members of a fused run) beat one after another.
    """

    def __init__(self, *reporters: ProgressReporter, interval_s: float) -> None:
        if not reporters:
            raise ValueError("Heartbeats needs at least one reporter")
        self.reporters = reporters
        self.interval_s = interval_s
        self.beats = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"heartbeat-{reporters[0].job_id}", daemon=True
        )

    def _run(self) -> None:
        factory = self.reporters[0].factory
        while not self._stop.wait(self.interval_s):
            for reporter in self.reporters:
                if reporter.ended:
                    continue
                try:
                    # a transaction each: one holding several jobs' rows could deadlock
                    # with a parent's cancel, which locks them too
                    with session_scope(factory) as session:
                        ack = heartbeat(session, job_id=reporter.job_id, attempt=reporter.attempt)
                except Exception:  # a database blip: the next beat (or report) retries
                    logger.exception("job.heartbeat_failed job_id=%s", reporter.job_id)
                    continue
                if ack.should_stop:
                    reporter.ack = ack
            self.beats += 1

    def __enter__(self) -> Heartbeats:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class JobContext:
    """What a kind's runner gets for one claimed attempt, and how it ends it.

    Attributes:
        kind: the job's kind.
        job_id, attempt: the job and the attempt this worker holds.
        spec: the job's spec, parsed.
        checkpoint: where this attempt resumes (``jobs.checkpoint``: the
            artifact's name, progress and series counts), or None to start over.
        reporter: gathers and stores series points; its :meth:`~ProgressReporter.should_stop`
            says to stop (cancel requested, or another attempt took over).
    """

    kind: JobKind
    job_id: uuid.UUID
    attempt: int
    spec: JobSpec
    checkpoint: dict[str, Any] | None
    reporter: ProgressReporter

    @property
    def factory(self) -> sessionmaker[Session]:
        """The worker's session factory."""
        return self.reporter.factory

    def should_stop(self) -> bool:
        """Whether to stop at the next safe point."""
        return self.reporter.should_stop()

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A transaction that first stores the gathered points."""
        with session_scope(self.factory) as session:
            self.reporter.report(session)
            yield session

    def fail(self, reason: str) -> str:
        """Fail the job with ``reason`` (its stored points stay); ``failed``."""
        with self.transaction() as session:
            fail_job(session, job_id=self.job_id, attempt=self.attempt, reason=reason)
        self.reporter.ended = True
        return "failed"

    def finish(self, result: JobResult, *, wait: bool = False) -> str:
        """The job succeeded with ``result``: ``succeeded``, or ``stale`` if another
        attempt took over.

        With ``wait``, this worker's part is done and the job waits on the
        children its kind's advance step creates (``waiting``).
        """
        with self.transaction() as session:
            done = finish_job(
                session, job_id=self.job_id, attempt=self.attempt, result=result, wait=wait
            )
        self.reporter.ended = True
        if done is None:
            return "stale"
        return "waiting" if wait else "succeeded"

    def stopped(self) -> str:
        """The run stopped because :meth:`should_stop` said so: ``cancelled`` or ``stale``."""
        if not self.reporter.ack.accepted:
            self.reporter.ended = True
            return "stale"
        with self.transaction() as session:
            done = acknowledge_cancel(session, job_id=self.job_id, attempt=self.attempt)
        self.reporter.ended = True
        return "cancelled" if done is not None else "stale"


Runner = Callable[[JobContext], str]
"""A kind's runner: runs one claimed attempt to its end; what happened (``succeeded``,
``waiting`` (its children go on: :meth:`JobContext.finish` with ``wait``), ``failed``,
``cancelled`` or ``stale``)."""


def load_runner(kind: JobKind) -> Runner:
    """Import the kind's runner (``module:function``).

    Raises:
        CannotRun: no worker runs jobs of this kind (a message for one is a bug).
    """
    if kind.runner is None:
        raise CannotRun(f"{kind.title} jobs are not run by workers")
    module_name, _, function = kind.runner.partition(":")
    runner: Runner = getattr(importlib.import_module(module_name), function)
    return runner


def run_job(
    factory: sessionmaker[Session],
    job_id: uuid.UUID,
    *,
    worker: str,
    interval_s: float,
    heartbeat_s: float | None = None,
) -> str:
    """Claim and run one job of any kind; what happened: ``skipped``, ``succeeded``,
    ``waiting`` (the worker's part is done, the job's children go on), ``failed``,
    ``cancelled`` or ``stale`` (another attempt took over).

    Besides the progress reports, a :class:`Heartbeats` thread beats every
    ``heartbeat_s`` (default ``interval_s``) while the job runs.
    """
    with session_scope(factory) as session:
        job = claim_job(session, job_id=job_id, worker=worker, device=worker_device())
        if job is None:
            return "skipped"
        attempt, kind_name, spec_data = job.attempt, job.kind, dict(job.spec)
        checkpoint = None if job.checkpoint is None else dict(job.checkpoint)
    reporter = ProgressReporter(factory, job_id=job_id, attempt=attempt, interval_s=interval_s)
    with Heartbeats(reporter, interval_s=heartbeat_s if heartbeat_s is not None else interval_s):
        try:
            kind = get_kind(kind_name)
            context = JobContext(
                kind=kind,
                job_id=job_id,
                attempt=attempt,
                spec=parse_job_spec(kind_name, spec_data, stored=True),
                checkpoint=checkpoint if kind.resumable else None,
                reporter=reporter,
            )
            return load_runner(kind)(context)
        except Exception as exc:
            reason = failure_reason(exc, job_id=job_id, attempt=attempt)
            if reason is None:
                raise
            return _fail(reporter, reason)


def failure_reason(exc: Exception, *, job_id: uuid.UUID, attempt: int) -> str | None:
    """Why a job that raised ``exc`` fails, logged; None when ``exc`` is the database
    failing (re-raise it: the heartbeat stops and the reconciler retries the job).

    Errors of the spec or of ``clr`` (and :class:`CannotRun`) are the reason as
    they are; anything else is a crash, its traceback logged and
    :func:`crash_reason` kept.
    """
    if isinstance(exc, CLRError | DomainError | CannotRun):
        logger.info("job.run_failed job_id=%s attempt=%d error=%s", job_id, attempt, exc)
        return f"{type(exc).__name__}: {exc}"
    if _environment_failure(exc):
        return None
    # the full traceback goes to the worker's log; the job keeps its summary
    logger.exception("job.crashed job_id=%s attempt=%d", job_id, attempt)
    return crash_reason(exc)


def _fail(reporter: ProgressReporter, reason: str) -> str:
    with session_scope(reporter.factory) as session:
        reporter.report(session)  # the partial series are kept
        fail_job(session, job_id=reporter.job_id, attempt=reporter.attempt, reason=reason)
    return "failed"
