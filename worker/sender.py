"""The broker side of :func:`sweep.db.set_job_sender`: one Celery message per job."""

from __future__ import annotations

import logging
import uuid

from celery import Celery

from worker.celery_app import RANGE_TEST_TASK, queue_for

__all__ = ["TASK_BY_KIND", "CelerySender"]

logger = logging.getLogger(__name__)

TASK_BY_KIND = {"range_test": RANGE_TEST_TASK}
"""The task that runs each job kind."""


class CelerySender:
    """A :class:`sweep.db.JobSender`: ``<kind task>(job_id)`` to the device's queue.

    Only the job id travels; the worker reads everything else from the job's row.
    The queue follows the job's device preference (:func:`~worker.celery_app.queue_for`).
    A process installs one with ``sweep.db.set_job_sender(CelerySender(app))``.
    """

    def __init__(self, app: Celery) -> None:
        self.app = app

    def ping(self, timeout_s: int = 2) -> None:
        """Raise if the broker cannot be reached within ``timeout_s`` (readiness)."""
        with self.app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, timeout=timeout_s)

    def __call__(self, job_id: uuid.UUID, kind: str, device: str) -> None:
        task = TASK_BY_KIND.get(kind)
        if task is None:
            raise ValueError(f"no task runs jobs of kind {kind!r}; known: {sorted(TASK_BY_KIND)}")
        queue = queue_for(device)
        self.app.send_task(task, args=[str(job_id)], queue=queue)
        logger.info("job.sent job_id=%s kind=%s task=%s queue=%s", job_id, kind, task, queue)
