"""Helpers of the service benchmarks: scratch databases, service processes, readiness.

The service benchmarks (``api_throughput``, ``submit_latency``, ``worker_scaling``)
run the real commands (``python -m cli api``, ``worker``, ``serve``) as
subprocesses against PostgreSQL and Redis (or the embedded SQLite + filesystem
mode), so they measure what a deployment runs. Every process started here is
stopped by :meth:`Proc.stop` (SIGTERM, then SIGKILL to its process group), and
the scratch database and Redis index are emptied on the way out.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import redis
from alembic import command
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_session_factory, session_scope
from core.migrate import alembic_config
from core.models import Job, Team
from core.services import create_team, create_token, get_job, get_team
from core.settings import Settings

ADMIN_URL = "postgresql://root@127.0.0.1:5432/postgres"
"""The PostgreSQL server's maintenance database (creates and drops ``clr_bench``)."""

BENCH_DATABASE = "clr_bench"
BROKER_URL = "redis://127.0.0.1:6379/14"
"""The benchmarks' own Redis index (the test suites use the others)."""

READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 30.0

TINY_SPEC: dict[str, Any] = {
    "workload": "digits_mlp",
    "params": {"width": 16},
    "num_iter": 20,
    "device": "cpu",
}
"""A range test that runs in a fraction of a second: the job is the overhead."""


# --------------------------------------------------------------------------- databases


def _libpq(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_database(admin_url: str, name: str) -> str:
    """A fresh database ``name`` (dropped first if it exists), migrated to head; its URL."""
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    command.upgrade(alembic_config(Settings(_env_file=None, database_url=url).db_url), "head")
    return url


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name``, disconnecting whoever is still on it."""
    with psycopg.connect(_libpq(admin_url), autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def flush_redis(url: str) -> None:
    """Empty the benchmarks' Redis index (queued messages of an earlier run)."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


@contextmanager
def postgres_service(
    admin_url: str = ADMIN_URL, name: str = BENCH_DATABASE, broker_url: str = BROKER_URL
) -> Iterator[Settings]:
    """A migrated scratch database and an empty Redis index; both removed afterwards."""
    url = create_database(admin_url, name)
    flush_redis(broker_url)
    try:
        yield Settings(_env_file=None, database_url=url, broker_url=broker_url)
    finally:
        flush_redis(broker_url)
        drop_database(admin_url, name)


@dataclass(frozen=True)
class CeleryBench:
    """A scratch service for benchmarks that submit through the real Celery sender:
    its settings, the benchmark's view of its database, and a scratch folder."""

    settings: Settings
    db: Db
    tmp: Path


@contextmanager
def celery_bench(
    admin_url: str = ADMIN_URL, name: str = BENCH_DATABASE, broker_url: str = BROKER_URL
) -> Iterator[CeleryBench]:
    """:func:`postgres_service` with jobs sent to Celery after each commit (workers are
    the benchmark's to start); everything is removed afterwards."""
    import tempfile  # noqa: PLC0415 - only the Celery benchmarks need it

    from core.db import set_job_sender  # noqa: PLC0415
    from worker.celery_app import create_celery  # noqa: PLC0415
    from worker.sender import CelerySender  # noqa: PLC0415

    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clr-bench-")))
        settings = stack.enter_context(postgres_service(admin_url, name, broker_url=broker_url))
        settings = settings.model_copy(update={"data_dir": tmp})
        db = Db(settings)
        stack.callback(db.close)
        celery = create_celery(settings)
        previous = set_job_sender(CelerySender(celery))
        stack.callback(set_job_sender, previous)
        stack.callback(celery.close)
        yield CeleryBench(settings, db, tmp)


def service_env(settings: Settings) -> dict[str, str]:
    """The environment of a service subprocess that uses ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLR_")}
    env["CLR_DATA_DIR"] = str(settings.data_dir)
    if settings.database_url is not None:
        env["CLR_DATABASE_URL"] = settings.database_url
    if settings.broker_url is not None:
        env["CLR_BROKER_URL"] = settings.broker_url
    return env


class Db:
    """The benchmark's own view of the service's database: a team, tokens, job rows."""

    def __init__(self, settings: Settings) -> None:
        self.engine: Engine = make_engine(settings)
        self.factory: sessionmaker[Session] = make_session_factory(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    def team_and_token(self, name: str | None = None) -> tuple[Team, str]:
        """A new team and a token of it (its secret)."""
        with session_scope(self.factory) as session:
            team = create_team(session, name=name or f"bench-{uuid.uuid4().hex[:8]}")
            secret = create_token(session, team=team, name="bench").secret
        return team, secret

    def team(self, name: str) -> Team:
        """The team called ``name``."""
        with session_scope(self.factory) as session:
            return get_team(session, name=name)

    def jobs(self, team: Team, ids: Sequence[uuid.UUID]) -> list[Job]:
        """The rows of jobs ``ids`` as they are now."""
        with session_scope(self.factory) as session:
            return [get_job(session, team=team, job_id=job_id) for job_id in ids]

    def wait_finished(
        self, team: Team, ids: Sequence[uuid.UUID], *, timeout_s: float, poll_s: float = 0.05
    ) -> list[Job]:
        """Poll until every job in ``ids`` has finished; their rows.

        Raises:
            TimeoutError: some did not finish within ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            rows = self.jobs(team, ids)
            if all(job.finished for job in rows):
                return rows
            if time.monotonic() > deadline:
                pending = sum(not job.finished for job in rows)
                raise TimeoutError(f"{pending} of {len(ids)} jobs unfinished after {timeout_s} s")
            time.sleep(poll_s)


# --------------------------------------------------------------------------- processes


@dataclass
class Proc:
    """A service subprocess in its own process group, its output in a log file."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.process.returncode}; log {self.log}:\n{self.tail()}"
            )

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM (a warm shutdown: supervisors stop their workers), then SIGKILL its group."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        # the group is this process's own: its workers die with it, if any are left
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()


def start(
    name: str, argv: Sequence[str], *, env: Mapping[str, str], log_dir: Path, stack: ExitStack
) -> Proc:
    """Start ``argv`` (stopped when ``stack`` closes); stdout and stderr to a log file."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            list(argv),
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    proc = Proc(name, process, log)
    stack.callback(proc.stop)
    return proc


def cli(*args: str) -> list[str]:
    """``python -m cli ARGS`` with this interpreter."""
    return [sys.executable, "-m", "cli", *args]


def wait_http(proc: Proc, url: str, *, timeout_s: float = READY_TIMEOUT_S) -> None:
    """Wait until ``url`` answers 2xx (``/readyz``: database reachable and migrated)."""
    deadline = time.monotonic() + timeout_s
    while True:
        proc.check_alive()
        try:
            if httpx.get(url, timeout=2).is_success:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name}: {url} not ready in {timeout_s} s:\n{proc.tail()}")
        time.sleep(0.1)


def wait_log(
    proc: Proc,
    needle: str,
    *,
    count: int = 1,
    log: Path | None = None,
    timeout_s: float = READY_TIMEOUT_S,
) -> None:
    """Wait until ``needle`` appears ``count`` times in the log (Celery's ``ready.``)."""
    path = log or proc.log
    deadline = time.monotonic() + timeout_s
    while True:
        proc.check_alive()
        text = path.read_text(errors="replace") if path.exists() else ""
        if text.count(needle) >= count:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{proc.name}: {count} x {needle!r} not in {path} after {timeout_s} s:\n"
                + "\n".join(text.splitlines()[-30:])
            )
        time.sleep(0.1)


WORKER_READY = " ready."
"""What a Celery worker logs once it consumes (``celery@cpu1@host ready.``)."""


# --------------------------------------------------------------------------- statistics


def start_cpu_workers(
    processes: int, *, settings: Settings, log_dir: Path, stack: ExitStack
) -> Proc:
    """``clr-sweep worker --processes N`` on ``settings`` (stopped when ``stack``
    closes), once every process is ready."""
    worker = start(
        f"worker{processes}",
        cli("worker", "--processes", str(processes)),
        env=service_env(settings),
        log_dir=log_dir,
        stack=stack,
    )
    wait_log(worker, WORKER_READY, count=processes)
    return worker


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest-rank on the sorted data."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


MACHINE_NOTE = (
    f"machine: {os.cpu_count()} CPU cores, shared; the load generator and the services "
    "compete for them"
)
