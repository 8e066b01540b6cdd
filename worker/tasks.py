"""The worker's Celery tasks: one per job kind (from :mod:`core.kinds`), and the reconciler.

Every kind's task is the same thin call into :func:`worker.jobs.run_job`, which
claims the job and runs the kind's runner; only the job id travels in the
message, so a redelivered or duplicated message finds the job claimed and runs
nothing. The tasks are made for the kinds registered when this module is
imported: a plug-in registers its kind before the worker builds its app (see
:mod:`core.kinds`).
"""

from __future__ import annotations

import os
import socket
import uuid
from functools import cache

from celery import shared_task
from celery.signals import worker_init
from sqlalchemy.orm import Session, sessionmaker

from clr.workloads import preload
from core.db import make_engine, make_session_factory, session_scope
from core.kinds import all_kinds
from core.services import reconcile
from core.settings import get_settings
from worker.celery_app import RECONCILE_TASK
from worker.jobs import MAX_REPORT_INTERVAL_S, crash_reason, run_job
from worker.prefilter import JobTask

__all__ = ["crash_reason", "reconcile_jobs", "run_job_task"]


@cache
def _session_factory() -> sessionmaker[Session]:
    # Built on first use, so a prefork child opens its own connections.
    return make_session_factory(make_engine(get_settings()))


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


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


def run_job_task(job_id: str) -> str:
    """Run job ``job_id`` (a UUID string), whatever its kind, if it is still queued."""
    settings = get_settings()
    return run_job(
        _session_factory(),
        uuid.UUID(job_id),
        worker=_worker_name(),
        interval_s=min(MAX_REPORT_INTERVAL_S, settings.heartbeat_interval_s),
        heartbeat_s=settings.heartbeat_interval_s,
    )


for _kind in all_kinds():
    if not _kind.worker_run:
        continue  # the service moves such jobs on itself: no task, no queue
    shared_task(name=_kind.task_name, base=JobTask)(run_job_task)


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
