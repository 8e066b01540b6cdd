"""Drop a job's message in the worker's parent when its job no longer waits for a claim.

A duplicate message (a re-send that crossed its first delivery, a redelivery) or
the message of a job cancelled while queued finds nothing to run: the task's claim
says so and it returns. But under the prefork pool that costs a process: a GPU
worker forks a fresh child per task (so a job's exit frees its CUDA context), and
the fork, the child's start and its exit came to about 0.5 s per stale message.
:class:`JobRequest` looks first, in the parent, with one indexed read of the job's
status, and acknowledges the message there when the job is no longer queued.
The look is only a shortcut: when the database cannot answer, the task runs and
its claim decides, as before.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.worker.request import Request
from celery.worker.state import task_ready

from sweep.db import session_scope
from sweep.models import JobStatus
from sweep.services.workers import job_status
from worker.announce import job_id_of, parent_session_factory

__all__ = ["JOB_REQUEST", "JobRequest", "JobTask"]

logger = logging.getLogger(__name__)

JOB_REQUEST = "worker.prefilter:JobRequest"
"""Where Celery finds :class:`JobRequest` (a task's ``Request`` option)."""


class JobRequest(Request):
    """A job task's request: skipped before the pool when its job is not queued.

    Celery asks :meth:`revoked` in the parent just before it hands a request to
    the pool (``execute_using_pool``); a True answer ends the request there, with
    the message acknowledged and the pool's slot given back, the way Celery ends
    a revoked task.
    """

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
