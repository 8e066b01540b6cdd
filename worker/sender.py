"""The broker side of :func:`core.db.set_job_sender`: one Celery message per job."""

from __future__ import annotations

import logging
import math
import uuid

from celery import Celery

from core.db import BackgroundSender
from core.kinds import get_kind
from worker.celery_app import queue_for

__all__ = ["PING_TIMEOUT_S", "SEND_WAIT_S", "CelerySender"]

logger = logging.getLogger(__name__)

SEND_WAIT_S = 1.0
"""How long a committing caller waits for its message to reach the broker."""

PING_TIMEOUT_S = 2.0
"""How long a readiness check waits for the broker (connect and first reply)."""


class CelerySender:
    """A :class:`core.db.JobSender`: ``<kind>.run(job_id)`` to the device's queue.

    Only the job id travels; the worker reads everything else from the job's row.
    The queue follows the job's device preference (:func:`~worker.celery_app.queue_for`).
    A process installs one with ``core.db.set_job_sender(CelerySender(app))``.

    Messages go out on a thread of the sender's own (:class:`~core.db.BackgroundSender`):
    a hung broker delays a commit by at most ``wait_s``, never a request's whole life.
    """

    def __init__(self, app: Celery, *, wait_s: float = SEND_WAIT_S) -> None:
        self.app = app
        self._background = BackgroundSender(self._send, wait_s=wait_s)

    def ping(self, timeout_s: float = PING_TIMEOUT_S) -> None:
        """Raise if the broker does not answer within about ``timeout_s`` (readiness)."""
        # Redis is asked too, not only connected to: a frozen server accepts connections.
        options = {"socket_timeout": timeout_s, "socket_connect_timeout": timeout_s}
        with self.app.connection_for_write(
            transport_options=options, connect_timeout=timeout_s
        ) as conn:
            conn.ensure_connection(
                max_retries=1, interval_start=0, timeout=max(1, math.ceil(timeout_s))
            )
            client = getattr(conn.default_channel, "client", None)
            ping = getattr(client, "ping", None)
            if callable(ping):
                ping()

    def __call__(self, job_id: uuid.UUID, kind: str, device: str) -> None:
        get_kind(kind)  # an unknown kind is refused here, not on the sender's thread
        self._background(job_id, kind, device)

    def _send(self, job_id: uuid.UUID, kind: str, device: str) -> None:
        task = get_kind(kind).task_name
        queue = queue_for(device)
        self.app.send_task(task, args=[str(job_id)], queue=queue)
        logger.info("job.sent job_id=%s kind=%s task=%s queue=%s", job_id, kind, task, queue)
