"""The worker tier: one real Celery worker per xdist worker, on Redis and PostgreSQL.

Each xdist worker gets its own PostgreSQL database (``postgresql_url``), its own
Redis database index (emptied before and after each test) and one worker process
for the whole session, started with ``subprocess`` and killed by its pid at the
end. Rows are really committed and every table is truncated after each test.
Without Redis or PostgreSQL the tests skip, unless ``CLR_TEST_REQUIRE_REDIS`` /
``CLR_TEST_REQUIRE_POSTGRES`` is set (CI), which makes them fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import redis
from celery import Celery
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session, sessionmaker

from core.db import create_db_engine, make_session_factory, session_scope, set_job_sender
from core.models import Base, Job, JobStatus
from core.settings import Settings
from worker.celery_app import create_celery, worker_queues
from worker.sender import CelerySender

pytestmark = pytest.mark.worker

REDIS_HOST = os.environ.get("CLR_TEST_REDIS_HOST", "127.0.0.1")
REDIS_PORT = int(os.environ.get("CLR_TEST_REDIS_PORT", "6379"))
REQUIRE_REDIS = bool(os.environ.get("CLR_TEST_REQUIRE_REDIS"))
REPO_ROOT = Path(__file__).resolve().parents[2]

WAIT_S = 120.0
"""Deadline for a job to reach a state (the first one includes the worker's start)."""


@cache
def redis_unreachable() -> str | None:
    """Why Redis cannot be used, or None when it can."""
    try:
        redis.Redis(host=REDIS_HOST, port=REDIS_PORT, socket_connect_timeout=3).ping()
    except redis.RedisError as exc:
        return f"Redis unreachable at {REDIS_HOST}:{REDIS_PORT}: {exc}"
    return None


def require_redis() -> None:
    """Skip (or, with CLR_TEST_REQUIRE_REDIS, fail) the test without Redis."""
    reason = redis_unreachable()
    if reason is not None:
        if REQUIRE_REDIS:
            pytest.fail(f"{reason} (CLR_TEST_REQUIRE_REDIS is set)")
        pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_db(worker_id: str) -> int:
    """This xdist worker's Redis database index (0 is left alone)."""
    require_redis()
    # CLR_TEST_REDIS_DB_BASE moves a concurrent run (another checkout) to other indexes.
    base = int(os.environ.get("CLR_TEST_REDIS_DB_BASE", "1"))
    return base if worker_id == "master" else base + 1 + int(worker_id.removeprefix("gw"))


@pytest.fixture(scope="session")
def worker_settings(
    postgresql_url: str, redis_db: int, tmp_path_factory: pytest.TempPathFactory
) -> Settings:
    """Settings shared by the test process and its worker process."""
    return Settings(
        _env_file=None,
        data_dir=tmp_path_factory.mktemp("worker-data"),
        database_url=postgresql_url,
        broker_url=f"redis://{REDIS_HOST}:{REDIS_PORT}/{redis_db}",
    )


@dataclass(frozen=True)
class WorkerProcess:
    """The session's worker process and the file its output goes to."""

    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="session")
def celery_worker(
    worker_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[WorkerProcess]:
    """One real worker process for this xdist worker's session."""
    flush = redis.Redis.from_url(worker_settings.broker)
    flush.flushdb()
    log = tmp_path_factory.mktemp("worker-log") / "worker.log"
    env = {
        **os.environ,
        "CLR_DATABASE_URL": str(worker_settings.database_url),
        "CLR_BROKER_URL": worker_settings.broker,
        "CLR_DATA_DIR": str(worker_settings.data_dir),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "worker.celery_app",
                "worker",
                "--pool=solo",
                "--concurrency=1",
                "-Q",
                ",".join(worker_queues("cpu")),
                "--loglevel=INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield WorkerProcess(process, log)
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
        flush.flushdb()
        flush.close()


@pytest.fixture(scope="session")
def worker_engine(worker_settings: Settings) -> Iterator[Engine]:
    engine = create_db_engine(worker_settings.db_url)
    yield engine
    engine.dispose()


@pytest.fixture
def db(worker_engine: Engine, worker_settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Sessions that really commit; every table truncated and Redis flushed after the test."""
    yield make_session_factory(worker_engine)
    tables = ", ".join(t.name for t in reversed(Base.metadata.sorted_tables))
    with worker_engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    redis.Redis.from_url(worker_settings.broker).flushdb()


@pytest.fixture
def celery_app(worker_settings: Settings) -> Celery:
    """A producer-side app on the worker's broker."""
    return create_celery(worker_settings)


@pytest.fixture
def sender(celery_app: Celery) -> Iterator[CelerySender]:
    """The real sender, installed for the test (jobs leave after their commit)."""
    sender = CelerySender(celery_app)
    previous = set_job_sender(sender)
    yield sender
    set_job_sender(previous)


WaitFor = Callable[[uuid.UUID, Callable[[Job], bool]], Job]


@pytest.fixture
def wait_for(db: sessionmaker[Session], celery_worker: WorkerProcess) -> WaitFor:
    """Poll the job until ``done(job)`` holds; fail at the deadline or if the worker died."""

    def wait(job_id: uuid.UUID, done: Callable[[Job], bool]) -> Job:
        deadline = time.monotonic() + WAIT_S
        while True:
            with session_scope(db) as session:
                job = session.get(Job, job_id)
                assert job is not None
                if done(job):
                    session.expunge(job)
                    return job
                status = job.status
            if celery_worker.process.poll() is not None:
                code = celery_worker.process.returncode
                pytest.fail(f"the worker exited with {code}:\n{celery_worker.log_tail()}")
            if time.monotonic() > deadline:
                log = celery_worker.log_tail()
                pytest.fail(f"job {job_id} still {status} after {WAIT_S} s; worker log:\n{log}")
            time.sleep(0.05)

    return wait


def read_job(db: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    """The job's row as it is now, detached."""
    with session_scope(db) as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def finished(job: Job) -> bool:
    """Whether the job reached a final state."""
    return JobStatus(job.status) in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
