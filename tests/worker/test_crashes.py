"""A job that crashes fails at once with the real reason; a killed process is retried.

An exception that is not a ``clr`` error (a CUDA out-of-memory ``RuntimeError`` in
a workload's builder or mid-run) is deterministic: retrying it only repeats it, so
the job fails on attempt 1 saying what was raised and where, instead of being
requeued by the reconciler until it reads "worker lost 3 times". A process that
vanishes (SIGKILL, the kernel's OOM killer) is still retried; its worker's parent
notes how the process died on the job, for the reconciler's reason.

The worker here is a real prefork worker like ``clr-sweep worker`` runs (a fresh
child per job), with the test workloads of :mod:`tests.worker.crashing_workloads`
in its registry, consuming a queue of its own so the session's worker never
takes these jobs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from core.clock import utc_now
from core.db import session_scope
from core.models import Job, JobStatus
from core.services import reconcile, submit_job
from core.settings import Settings
from tests.builders import make_team, spec_data
from tests.worker import crashing_workloads as crashing
from tests.worker.conftest import REPO_ROOT, finished, read_job
from worker.celery_app import RANGE_TEST_TASK
from worker.pool import POOL_ENV

pytestmark = pytest.mark.worker

QUEUE = "test-crashes"
"""The queue only this module's worker consumes."""

WAIT_S = 90.0
"""Deadline for a job to reach a state (the first one includes the worker's start)."""


class CrashWorker:
    """The module's worker process and its log."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, *, count: int = 1) -> None:
        deadline = time.monotonic() + WAIT_S
        while self.text().count(needle) < count:
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"{needle!r} not in the worker log after {WAIT_S} s:\n{self.tail()}")
            time.sleep(0.05)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"the worker exited with {self.process.returncode}:\n{self.tail()}")

    def tail(self) -> str:
        return self.text()[-4000:]


@pytest.fixture(scope="module", autouse=True)
def _crash_workloads() -> Iterator[None]:
    # this process submits jobs naming them; other modules' tests must not see them
    with crashing.registered():
        yield


@pytest.fixture(scope="module")
def crash_worker(
    worker_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CrashWorker]:
    log = tmp_path_factory.mktemp("crash-worker") / "worker.log"
    env = {
        **os.environ,
        **POOL_ENV,
        "CLR_DATABASE_URL": str(worker_settings.database_url),
        "CLR_BROKER_URL": worker_settings.broker,
        "CLR_DATA_DIR": str(worker_settings.data_dir),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tests.worker.crashing_workloads",
        "worker",
        "--pool=custom",
        "--concurrency=1",
        "-Q",
        QUEUE,
        "-n",
        f"crashes-{uuid.uuid4().hex[:8]}@%h",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    worker = CrashWorker(process, log)
    try:
        worker.wait_log(" ready.")
        yield worker
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_job(
    db: sessionmaker[Session], settings: Settings, app: Celery, workload: str
) -> tuple[uuid.UUID, str]:
    """Submit a range test of ``workload``, send it to this module's worker; job and task ids."""
    with session_scope(db) as session:
        team = make_team(session)
        spec = spec_data(workload=workload, params={}, num_iter=20, device="cpu")
        job_id = submit_job(
            session, team=team, kind="range_test", spec=spec, settings=settings
        ).job.id
    task = app.send_task(RANGE_TEST_TASK, args=[str(job_id)], queue=QUEUE)
    return job_id, task.id


def wait_job(
    db: sessionmaker[Session],
    worker: CrashWorker,
    job_id: uuid.UUID,
    done: Callable[[Job], bool],
    *,
    what: str,
) -> Job:
    deadline = time.monotonic() + WAIT_S
    while True:
        job = read_job(db, job_id)
        if done(job):
            return job
        worker.check_alive()
        if time.monotonic() > deadline:
            pytest.fail(
                f"job {job_id} never {what} ({job.status}, error {job.error!r}):\n{worker.tail()}"
            )
        time.sleep(0.05)


def task_ended(worker: CrashWorker, task_id: str) -> Callable[[Job], bool]:
    """The job finished, or its task ended without finishing it (raised, before the fix)."""

    def ended(job: Job) -> bool:
        return finished(job) or f"[{task_id}] raised unexpected" in worker.text()

    return ended


class TestDeterministicCrash:
    def test_out_of_memory_in_the_builder_fails_attempt_1_with_the_reason(
        self,
        db: sessionmaker[Session],
        worker_settings: Settings,
        celery_app: Celery,
        crash_worker: CrashWorker,
    ) -> None:
        job_id, task_id = run_job(db, worker_settings, celery_app, crashing.OOM_IN_BUILD.name)

        job = wait_job(db, crash_worker, job_id, task_ended(crash_worker, task_id), what="ended")

        assert job.status == JobStatus.FAILED, crash_worker.tail()
        assert job.attempt == 1
        assert job.error is not None
        assert job.error.startswith(f"RuntimeError: {crashing.OOM_MESSAGE} (raised at ")
        assert "tests/worker/crashing_workloads.py:" in job.error
        assert "in _build_oom" in job.error
        assert str(REPO_ROOT) not in job.error, "paths are shown relative to the import root"
        # the message was acknowledged: nothing comes back for a second attempt
        crash_worker.wait_log(f"job.crashed job_id={job_id} attempt=1")
        assert "Traceback" in crash_worker.text(), "the worker log has the whole traceback"

    def test_out_of_memory_mid_run_fails_attempt_1_with_the_reason(
        self,
        db: sessionmaker[Session],
        worker_settings: Settings,
        celery_app: Celery,
        crash_worker: CrashWorker,
    ) -> None:
        job_id, task_id = run_job(db, worker_settings, celery_app, crashing.OOM_AT_STEP.name)

        job = wait_job(db, crash_worker, job_id, task_ended(crash_worker, task_id), what="ended")

        assert job.status == JobStatus.FAILED, crash_worker.tail()
        assert job.attempt == 1
        assert job.error is not None
        assert job.error.startswith(f"OutOfMemoryError: {crashing.OOM_MESSAGE} (raised at ")
        assert " in forward" in job.error
        crash_worker.wait_log(f"job.crashed job_id={job_id} attempt=1")


class TestKilledProcess:
    def test_a_sigkilled_child_is_noted_on_the_job_and_left_for_a_retry(
        self,
        db: sessionmaker[Session],
        worker_settings: Settings,
        celery_app: Celery,
        crash_worker: CrashWorker,
    ) -> None:
        job_id, _ = run_job(db, worker_settings, celery_app, crashing.HANG_AT_STEP.name)
        running = wait_job(
            db,
            crash_worker,
            job_id,
            lambda job: job.status == JobStatus.RUNNING and job.worker is not None,
            what="ran",
        )
        assert running.worker is not None
        child = int(running.worker.rsplit(":", 1)[1])
        assert child != crash_worker.process.pid, "the job runs in a child process"

        os.kill(child, signal.SIGKILL)

        noted = wait_job(
            db, crash_worker, job_id, lambda job: job.error is not None, what="was noted"
        )
        assert noted.error == (
            f"the worker process {running.worker} was killed by signal 9 (SIGKILL: out of memory?)"
        )
        # not failed: a vanished process is retried. The requeued message finds the
        # job still running and is dropped in the parent (worker.prefilter); the
        # reconciler requeues the job once it is silent.
        assert noted.status == JobStatus.RUNNING
        assert noted.attempt == 1
        crash_worker.wait_log(f"job.skipped_stale job_id={job_id} status=running")
        later = utc_now() + timedelta(seconds=worker_settings.heartbeat_timeout_s + 60)
        with session_scope(db) as session:
            report = reconcile(session, settings=worker_settings, now=later)
        assert report.requeued == [job_id]
        requeued = read_job(db, job_id)
        assert requeued.status == JobStatus.QUEUED
        assert requeued.error == noted.error, "the note stays for the reconciler's reason"
