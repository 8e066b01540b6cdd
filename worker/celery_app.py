"""The Celery app: all of its configuration, and the entry ``celery -A`` loads.

Everything Celery is told lives in :func:`create_celery`, built from a
:class:`~core.settings.Settings` passed in. Importing this module reads no
environment: ``app`` (alias ``celery_app``) is a lazy module attribute, built
from :func:`~core.settings.get_settings` on first access. That first access is
how ``celery -A worker.celery_app worker`` finds the app (Celery looks for
``app``), so the worker process reads its ``CLR_*`` settings then, once, while a
process that only imports this module (tests, tools) builds nothing.
"""

from __future__ import annotations

from datetime import timedelta
from functools import cache
from pathlib import Path
from typing import Any

from celery import Celery

from core.db import set_job_sender
from core.kinds import RANGE_TEST, all_kinds
from core.queues import CPU_QUEUE, CUDA_QUEUE, JOBS_QUEUE, queue_for, worker_queues
from core.settings import REDIS_VISIBILITY_MARGIN_S, Settings, get_settings

__all__ = [
    "CPU_QUEUE",
    "CUDA_QUEUE",
    "JOBS_QUEUE",
    "MAINTENANCE_QUEUE",
    "RANGE_TEST_TASK",
    "RECONCILE_TASK",
    "create_celery",
    "queue_for",
    "worker_queues",
    "get_celery",
    "reconcile_interval_s",
    "task_time_limit_s",
]

RANGE_TEST_TASK = RANGE_TEST.task_name
RECONCILE_TASK = "jobs.reconcile"

MAINTENANCE_QUEUE = "maintenance"
"""Where the reconciler runs: a small worker of its own (or ``-B`` beside beat), so a
six-hour range test on a solo-pool GPU worker never holds a reconciler pass up."""


def task_time_limit_s(settings: Settings, kind_name: str | None = None) -> int:
    """Celery's hard time limit of a kind's task (None: the longest of all kinds): the
    kind's time limit plus one heartbeat timeout of grace.

    The solo pool (one per GPU) does not enforce time limits, so the reconciler's
    overdue check (the same limit) is what fails a job that runs too long; the
    prefork pool kills the child at this limit, and ``task_reject_on_worker_lost``
    then requeues the message, whose claim finds the job no longer queued.
    """
    limits = [k.time_limit_s(settings) for k in all_kinds() if kind_name in (None, k.name)]
    return max(limits, default=settings.job_time_limit_s) + int(settings.heartbeat_timeout_s)


def reconcile_interval_s(settings: Settings) -> float:
    """How often beat runs the reconciler: half the shorter of its two deadlines.

    A lost message is re-sent at most this late after it is due (once a worker of
    its queue is seen free, and ``queued_resend_after_s`` after its send at the
    earliest), and a lost worker's job requeued at most ``heartbeat_timeout_s`` plus this.
    """
    return min(settings.queued_resend_after_s, settings.heartbeat_timeout_s) / 2


def _transport_options(settings: Settings) -> dict[str, Any]:
    options = dict(settings.broker_transport_options)
    if "visibility_timeout" in options:
        # Redis hands an unacknowledged message to another worker once it is older
        # than this: it must outlast the longest a task may hold its message.
        options["visibility_timeout"] = max(
            int(options["visibility_timeout"]),
            task_time_limit_s(settings) + REDIS_VISIBILITY_MARGIN_S,
        )
    return options


def create_celery(settings: Settings, *, main: str = "clr-sweep") -> Celery:
    """The Celery app for ``settings``: broker, reliability settings, routes, beat.

    - ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged
      after its task returns, and requeued if the worker process dies, so a killed
      worker loses nothing. Redelivery is harmless: the claim runs a job once.
    - ``worker_prefetch_multiplier=1`` with ``--concurrency=1``: a worker holds one
      message at a time, so no job waits behind a running one.
    - ``worker_max_tasks_per_child=1``: under the prefork pool (what ``clr-sweep
      worker`` runs) every job gets a fresh child process, whose exit frees its CUDA
      context and memory; the parent, which imports torch, never touches CUDA.
    - ``worker_cancel_long_running_tasks_on_connection_loss=False``: on a broker
      blip the running job goes on and writes its result under its attempt; the
      redelivered message's claim then skips it. Cancelling would throw away a
      long job the database already protects.
    - ``task_time_limit``: see :func:`task_time_limit_s` (per kind); the Redis
      ``visibility_timeout`` sits :data:`REDIS_VISIBILITY_MARGIN_S` above it.
    - json only; no result backend (results live in PostgreSQL).
    """
    for key in ("data_folder_in", "data_folder_out", "control_folder"):
        # kombu's filesystem transport writes into these folders but does not make them
        if key in settings.broker_transport_options:
            Path(settings.broker_transport_options[key]).mkdir(parents=True, exist_ok=True)
    app = Celery(main, include=["worker.tasks"])
    app.conf.update(
        broker_url=settings.broker,
        broker_transport_options=_transport_options(settings),
        broker_connection_retry_on_startup=True,
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_max_tasks_per_child=1,
        worker_cancel_long_running_tasks_on_connection_loss=False,
        task_time_limit=task_time_limit_s(settings),
        # each kind's task, from the kind registry: its own time limit, the jobs queue
        # by default (the sender picks the device's queue per message)
        task_annotations={
            kind.task_name: {"time_limit": task_time_limit_s(settings, kind.name)}
            for kind in all_kinds()
        },
        task_default_queue=JOBS_QUEUE,
        task_routes={
            **{kind.task_name: {"queue": JOBS_QUEUE} for kind in all_kinds()},
            RECONCILE_TASK: {"queue": MAINTENANCE_QUEUE},
        },
        beat_schedule={
            "reconcile": {
                "task": RECONCILE_TASK,
                "schedule": timedelta(seconds=reconcile_interval_s(settings)),
                "options": {"queue": MAINTENANCE_QUEUE},
            }
        },
        timezone="UTC",
        enable_utc=True,
    )
    return app


@cache
def get_celery() -> Celery:
    """The process's app, from :func:`~core.settings.get_settings` (built once).

    Also installs a :class:`~worker.sender.CelerySender` on it as the process's
    job sender, so jobs the reconciler re-sends or requeues leave after commit,
    and connects :mod:`worker.announce`: a worker process registers itself.
    """
    import worker.announce  # noqa: F401 - a worker process announces itself (signals)
    from worker.sender import CelerySender  # sender imports this module's constants

    app = create_celery(get_settings())
    set_job_sender(CelerySender(app))
    return app


def __getattr__(name: str) -> Celery:
    # PEP 562: ``worker.celery_app.app`` is built on first access, not at import.
    if name in ("app", "celery_app"):
        return get_celery()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
