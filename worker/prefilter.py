"""A job task's message in the worker's parent: dropped when stale, noted when its child dies.

A duplicate message (a re-send that crossed its first delivery, a redelivery) or
the message of a job cancelled while queued finds nothing to run: the task's claim
says so and it returns. But under the prefork pool that costs a process: a GPU
worker forks a fresh child per task (so a job's exit frees its CUDA context), and
the fork, the child's start and its exit came to about 0.5 s per stale message.
:class:`JobRequest` looks first, in the parent, with one indexed read of the job's
status, and acknowledges the message there when the job is no longer queued.
The look is only a shortcut: when the database cannot answer, the task runs and
its claim decides, as before.

When the child running a job dies (the kernel's OOM killer, a segfault,
``kill -9``), the parent sees a :class:`WorkerLostError`; the child could not
say why it stopped, so :class:`JobRequest` notes how on the job
(:func:`core.services.note_worker_lost`) and a job that keeps being killed
says so when the reconciler gives up on it.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
from typing import Any

from celery import Task
from celery.exceptions import WorkerLostError
from celery.worker.request import Request
from celery.worker.state import task_ready

from core.db import session_scope
from core.models import JobStatus
from core.services import note_worker_lost
from core.services.workers import job_status
from worker.announce import job_id_of, parent_session_factory

__all__ = ["JOB_REQUEST", "JobRequest", "JobTask", "lost_worker_note"]

logger = logging.getLogger(__name__)

JOB_REQUEST = "worker.prefilter:JobRequest"
"""Where Celery finds :class:`JobRequest` (a task's ``Request`` option)."""


def lost_worker_note(worker: str, exc: BaseException) -> str:
    """What a :class:`WorkerLostError` says about how the job's process ended.

    Example:
        ``the worker process gpu-host:4242 was killed by signal 9 (SIGKILL: out of
        memory?)``, from billiard's ``Worker exited prematurely: signal 9 (SIGKILL)``.
    """
    text = str(exc)
    killed = re.search(r"signal (\d+)", text)
    if killed is not None:
        number = int(killed.group(1))
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "unknown signal"
        if number == signal.SIGKILL:
            # the kernel's OOM killer sends SIGKILL; so does `kill -9` or a container limit
            name += ": out of memory?"
        return f"the worker process {worker} was killed by signal {number} ({name})"
    code = re.search(r"exitcode (-?\d+)", text)
    if code is not None:
        return f"the worker process {worker} exited with code {code.group(1)} during the job"
    return f"the worker process {worker} died during the job: {text}"


class JobRequest(Request):
    """A job task's request: skipped before the pool when its job is not queued,
    and its job noted when the child running it dies.

    Celery asks :meth:`revoked` in the parent just before it hands a request to
    the pool (``execute_using_pool``); a True answer ends the request there, with
    the message acknowledged and the pool's slot given back, the way Celery ends
    a revoked task. A :class:`WorkerLostError` reaches :meth:`on_failure`, also in
    the parent: the note is best effort (a failure to write it is logged) and
    Celery's handling goes on unchanged (the reconciler retries the job).
    """

    def on_failure(
        self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)  # Celery's ExceptionWithTraceback wrapper
        if isinstance(exc, WorkerLostError) and self.worker_pid is not None:
            self._note_lost(exc)
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def _note_lost(self, exc: WorkerLostError) -> None:
        job_id = job_id_of(self.args)
        if job_id is None:
            return
        worker = f"{socket.gethostname()}:{self.worker_pid}"
        try:
            with session_scope(parent_session_factory()) as session:
                note_worker_lost(
                    session, job_id=job_id, worker=worker, note=lost_worker_note(worker, exc)
                )
        except Exception:
            logger.exception("job.worker_lost_note_failed job_id=%s worker=%s", job_id, worker)

    def revoked(self) -> bool:
        if super().revoked():
            return True
        job_id = job_id_of(self.args)
        if job_id is None:
            return False
        try:
            with session_scope(parent_session_factory()) as session:
                status = job_status(session, job_id=job_id)
        except Exception:  # the claim in the task decides instead
            logger.exception("job.precheck_failed job_id=%s", job_id)
            return False
        if status == JobStatus.QUEUED:
            return False
        logger.info(
            "job.skipped_stale job_id=%s status=%s", job_id, "missing" if status is None else status
        )
        task_ready(self)
        self.acknowledge()
        self._already_revoked = True
        return True


class JobTask(Task[Any, Any]):
    """The base of a job's task: its requests are :class:`JobRequest`."""

    Request = JOB_REQUEST
