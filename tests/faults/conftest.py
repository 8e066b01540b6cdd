"""Fault tests: the real service commands as subprocesses, broken on purpose.

``python -m cli api``, ``python -m cli reaper`` and ``python -m cli worker
--processes 1`` run as in production, on this run's PostgreSQL database and a
Redis database index of its own, with short timings (heartbeat every 0.5 s, lost
after 3 s, a queued job's message re-sent after 2 s) so the reaper acts within
seconds. The API serves the whole session; each test starts its own workers and
reaper, and after it they are stopped, every table is emptied and the broker's
Redis database flushed.

The tests kill worker processes, flush Redis and restart PostgreSQL, which would
disturb tests running beside them: they are marked ``serial`` and ``make test``
runs them in a phase of their own, after the parallel one.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session, sessionmaker

from cli.service import free_port
from core.db import create_db_engine, make_session_factory, session_scope
from core.models import Artifact, ArtifactChunk, Job, JobStatus, SeriesChunk, Team
from core.services import create_team, create_token
from tests.worker.conftest import REDIS_HOST, REDIS_PORT, require_redis

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parents[2]

HEARTBEAT_INTERVAL_S = 0.5
HEARTBEAT_TIMEOUT_S = 3.0
QUEUED_RESEND_AFTER_S = 2.0

START_S = 90.0
"""Deadline for a service to start (imports torch, loads the digits)."""
WAIT_S = 90.0
"""Deadline for jobs to reach a state."""
STOP_GRACE_S = 15.0
"""How long a stopping service may take before its process group is killed."""

READY = re.compile(rb"@\S+ ready\.")
"""Celery's line once a worker consumes (one per start of the worker process)."""


def claimed_ids(log: str) -> list[str]:
    """The job ids of every ``job.claimed`` line of a worker log, in order."""
    return re.findall(r"job\.claimed job_id=([0-9a-f-]{36})", log)


@dataclass
class Service:
    """One ``python -m cli ...`` process (its own process group) and its log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def tail(self, chars: int = 3000) -> str:
        return f"----- {self.name} (pid {self.process.pid}) -----\n{self.log()[-chars:]}"

    def ready_count(self) -> int:
        return len(READY.findall(self.log_path.read_bytes()))


def stop_services(services: list[Service]) -> None:
    """SIGTERM to all (a warm shutdown), then SIGKILL to the groups still there past the grace."""
    for service in services:
        if service.process.poll() is None:
            service.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for service in services:
        try:
            service.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(service.process.pid, signal.SIGKILL)
            service.process.wait()


def start_service(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Service:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", *args],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its Celery processes too: killed as a group at the end
        )
    return Service(name, process, log_path)


@dataclass
class Api:
    """The session's API process, a client authenticated as a team, and that team."""

    service: Service
    url: str
    client: httpx.Client
    team: Team

    def submit(self, spec: dict[str, Any]) -> uuid.UUID:
        response = self.client.post("/range-tests", json=spec)
        assert response.status_code == 202, response.text
        return uuid.UUID(response.json()["id"])


@dataclass
class FaultEnv:
    """What every test shares: the services' environment, the database, the broker."""

    env: dict[str, str]
    engine: Engine
    factory: sessionmaker[Session]
    broker: redis.Redis
    log_dir: Path


@pytest.fixture(scope="session")
def fault_env(
    postgresql_url: str, worker_id: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FaultEnv]:
    require_redis()
    base = int(os.environ.get("CLR_TEST_REDIS_DB_BASE", "1"))
    index = base if worker_id == "master" else base + 1 + int(worker_id.removeprefix("gw"))
    broker_url = f"redis://{REDIS_HOST}:{REDIS_PORT}/{index}"
    env = {
        **os.environ,
        "CLR_DATABASE_URL": postgresql_url,
        "CLR_BROKER_URL": broker_url,
        "CLR_DATA_DIR": str(tmp_path_factory.mktemp("fault-data")),
        "CLR_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_INTERVAL_S),
        "CLR_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
        "CLR_QUEUED_RESEND_AFTER_S": str(QUEUED_RESEND_AFTER_S),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    broker = redis.Redis.from_url(broker_url)
    broker.flushdb()
    engine = create_db_engine(postgresql_url)
    try:
        yield FaultEnv(
            env, engine, make_session_factory(engine), broker, tmp_path_factory.mktemp("fault-logs")
        )
    finally:
        engine.dispose()
        broker.flushdb()
        broker.close()


def wait_until(
    what: str,
    condition: Callable[[], T | None],
    services: list[Service],
    *,
    timeout: float = WAIT_S,
    interval: float = 0.05,
) -> T:
    """Poll ``condition`` until it returns something truthy; fail with the logs' tails."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        dead = [s for s in services if s.process.poll() is not None]
        if dead:
            tails = "\n".join(s.tail() for s in services)
            names = ", ".join(f"{s.name} (exit {s.process.returncode})" for s in dead)
            pytest.fail(f"waiting for {what}: {names} exited\n{tails}")
        if time.monotonic() > deadline:
            tails = "\n".join(s.tail() for s in services)
            pytest.fail(f"{what}: not after {timeout:.0f} s\n{tails}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def api(fault_env: FaultEnv) -> Iterator[Api]:
    """``python -m cli api`` on a free port, and a client with a team's token."""
    with session_scope(fault_env.factory) as session:
        team = create_team(session, name=f"faults-{uuid.uuid4().hex[:8]}")
        secret = create_token(session, team=team, name="faults").secret
    port = free_port()
    service = start_service(
        "api", ["api", "--host", "127.0.0.1", "--port", str(port)], fault_env.env, fault_env.log_dir
    )
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {secret}"}, timeout=10.0)

    def healthy() -> bool:
        try:
            return client.get("/readyz").status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_until("the API to answer /readyz", healthy, [service], timeout=START_S, interval=0.2)
        yield Api(service, url, client, team)
    finally:
        client.close()
        stop_services([service])


@dataclass
class Cluster:
    """The test's services: workers and reaper started on demand, the session's API."""

    fault_env: FaultEnv
    api: Api
    workers: list[Service] = field(default_factory=list)
    reaper: Service | None = None

    @property
    def services(self) -> list[Service]:
        reaper = [] if self.reaper is None else [self.reaper]
        return [self.api.service, *reaper, *self.workers]

    def start(
        self, *, workers: int, reaper: bool = True, worker_env: Mapping[str, str] | None = None
    ) -> None:
        """Start ``workers`` worker supervisors (one Celery process each) and the reaper.

        ``worker_env`` adds to the workers' environment (``CLR_FUSE_MAX_MEMBERS``, say).
        All start at once; this returns when every one of them consumes.
        """
        log_dir = self.fault_env.log_dir
        test_id = uuid.uuid4().hex[:6]
        started = [
            start_service(
                f"worker{len(self.workers) + i + 1}-{test_id}",
                ["worker", "--processes", "1"],
                {**self.fault_env.env, **(worker_env or {})},
                log_dir,
            )
            for i in range(workers)
        ]
        self.workers.extend(started)
        if reaper:
            assert self.reaper is None
            env = self.fault_env.env
            self.reaper = start_service(f"reaper-{test_id}", ["reaper"], env, log_dir)
            started.append(self.reaper)
        for service in started:
            wait_until(f"{service.name} to be ready", service.ready_count, self.services)

    def wait_until(self, what: str, condition: Callable[[], T | None], **kwargs: Any) -> T:
        return wait_until(what, condition, self.services, **kwargs)

    def job(self, job_id: uuid.UUID) -> Job:
        with session_scope(self.fault_env.factory) as session:
            job = session.get(Job, job_id)
            assert job is not None
            session.expunge(job)
            return job

    def jobs(self, job_ids: list[uuid.UUID]) -> list[Job]:
        with session_scope(self.fault_env.factory) as session:
            jobs = list(session.scalars(select(Job).where(Job.id.in_(job_ids))))
            session.expunge_all()
        assert len(jobs) == len(job_ids)
        return jobs

    def chunks(self, job_id: uuid.UUID, series: str = "curve") -> list[SeriesChunk]:
        """Every stored chunk of one of the job's series, whatever its attempt, in order."""
        with session_scope(self.fault_env.factory) as session:
            chunks = list(
                session.scalars(
                    select(SeriesChunk)
                    .where(SeriesChunk.job_id == job_id, SeriesChunk.name == series)
                    .order_by(SeriesChunk.start, SeriesChunk.attempt)
                )
            )
            session.expunge_all()
        return chunks

    def wait_finished(self, job_ids: list[uuid.UUID], *, timeout: float = WAIT_S) -> list[Job]:
        def all_finished() -> list[Job] | None:
            jobs = self.jobs(job_ids)
            return jobs if all(is_finished(job) for job in jobs) else None

        return self.wait_until(f"{len(job_ids)} job(s) to finish", all_finished, timeout=timeout)

    def worker_logs(self) -> list[str]:
        return [worker.log() for worker in self.workers]

    def kill(self) -> None:
        """SIGKILL the workers' and the reaper's process groups: no warm shutdown to wait
        for, the test is over and its broker database is flushed next."""
        for service in self.services:
            if service is not self.api.service:
                try:
                    os.killpg(service.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                service.process.wait()


def is_finished(job: Job) -> bool:
    return JobStatus(job.status) in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


@pytest.fixture
def cluster(fault_env: FaultEnv, api: Api) -> Iterator[Cluster]:
    """The test's workers and reaper (started by the test); emptied tables and broker after."""
    cluster = Cluster(fault_env, api)
    try:
        yield cluster
    finally:
        cluster.kill()
        with fault_env.engine.begin() as conn:
            # the jobs, their series and artifacts (which reference them: PostgreSQL truncates
            # a referenced table only with its referrers); the API's team and token stay
            tables = (Job, SeriesChunk, Artifact, ArtifactChunk)
            conn.execute(text(f"TRUNCATE {', '.join(t.__tablename__ for t in tables)}"))
        fault_env.broker.flushdb()


def assert_curve_of_final_attempt(cluster: Cluster, job: Job) -> int:
    """The job's stored curve is its final attempt's alone (a range test starts over:
    nothing an earlier attempt stored stays) and runs from point 0 to its progress
    without gaps or overlaps; its number of points."""
    chunks = cluster.chunks(job.id)
    assert {c.attempt for c in chunks} <= {job.attempt}, "an earlier attempt's points stayed"
    fields = ("lr", "loss", "smoothed_loss", "accuracy")
    position = 0
    for chunk in chunks:
        assert chunk.start == position, f"gap or overlap at point {position}: {chunk.start}"
        assert tuple(chunk.fields.split(",")) == fields
        assert len(chunk.data) == 8 * len(fields) * chunk.size  # packed float64 columns
        position += chunk.size
    assert position == job.progress == job.series_points["curve"]
    return position
