"""The running service for the end-to-end tests (tests/client, tests/dashboard), two ways.

A pytest plugin (registered by ``tests/conftest.py``), so every test directory
that needs the real service shares the same session services per xdist worker:
one API, one worker, one PostgreSQL database and one Redis database index.

- ``postgres``: the production commands as processes (``python -m cli api``,
  ``python -m cli worker --processes 1`` and ``python -m cli reaper``) on a
  PostgreSQL database and a Redis database index of this xdist worker's own; each
  test acts as a new team, so it sees only its own jobs. The reaper re-sends a
  queued job's message after 3 s of an idle worker, as in production: a Redis index
  another run on this machine empties loses no job.
- ``embedded``: ``python -m cli serve`` (SQLite, kombu's filesystem transport) in a
  temporary data folder, acting as its local team (tests share it: they filter
  what they list).

Both services live for the session; the tests' jobs are tiny (tens of steps).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.service import TOKEN_FILE, free_port
from clr_sweep import Client
from tests import database
from tests.worker.conftest import REDIS_HOST, REDIS_PORT, require_redis

REPO_ROOT = Path(__file__).resolve().parents[1]
START_S = 180.0
"""A service's start (torch, the digits) on a loaded two-core machine."""
MAX_REDIS_DB = 15
"""Redis's last database index (16 databases by default)."""
WAIT_S = 180.0
"""Longest a test waits for a tiny job."""

TINY_RANGE_TEST: dict[str, Any] = {
    "workload": "digits_mlp",
    "params": {"width": 16},
    "num_iter": 30,
    "start_lr": 1e-3,
    "end_lr": 1.0,
    "device": "cpu",
}
"""A range test of 30 steps that finds bounds (a wider sweep needs more steps)."""
TINY_TRAINING: dict[str, Any] = {
    "workload": "digits_mlp",
    "params": {"width": 8},
    "device": "cpu",
    "seed": 0,
    "optimizer": {"name": "sgd", "momentum": 0.9},
    "schedule": {"policy": "triangular", "base_lr": 0.01, "max_lr": 0.3, "step_size_up": 5},
    "cycles": 1,
    "snapshots": 0,
}


@dataclass
class Server:
    """A running service: where it listens, its processes and a way to get tokens."""

    name: str
    url: str
    processes: list[subprocess.Popen[bytes]]
    logs: list[Path]
    new_token: Callable[[], str]
    shared_team: bool
    clients: list[Client] = field(default_factory=list)

    def tails(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in self.logs
            if path.exists()
        )

    def check_alive(self) -> None:
        for process in self.processes:
            if process.poll() is not None:
                pytest.fail(f"{process.args} exited with {process.returncode}:\n{self.tails()}")

    def client(self, **kwargs: Any) -> Client:
        kwargs.setdefault("token", self.new_token())
        kwargs.setdefault("retries", 3)
        kwargs.setdefault("backoff", 0.05)
        kwargs.setdefault("timeout", 60.0)
        client = Client(self.url, **kwargs)
        self.clients.append(client)
        return client


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *argv],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its worker processes too: stopped as a group
        )


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _wait_ready(server: Server, worker_log: Path | None) -> None:
    deadline = time.monotonic() + START_S
    while True:
        server.check_alive()
        try:
            ready = httpx.get(f"{server.url}/readyz", timeout=5).is_success
        except httpx.TransportError:
            ready = False
        # a worker consumes once Celery logs "... ready."
        worker_ready = worker_log is None or (
            worker_log.exists() and b" ready." in worker_log.read_bytes()
        )
        if ready and worker_ready:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{server.name} not ready after {START_S} s:\n{server.tails()}")
        time.sleep(0.1)


@pytest.fixture(scope="session")
def postgres_server(worker_id: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``cli api`` and ``cli worker`` on a PostgreSQL database and Redis index of their own."""
    database.require_postgres()
    require_redis()
    import redis
    from sqlalchemy.orm import sessionmaker

    from core.db import create_db_engine, session_scope
    from core.services import create_team, create_token

    name = f"clr_test_{database.NAMESPACE}client_{worker_id}"
    url = database.create_database(name)
    database.migrate(url)
    base = int(os.environ.get("CLR_TEST_REDIS_DB_BASE", "1"))
    # past the worker tier's (base..base+2) and the service flows' (base+3, base+4)
    index = base + 5 + (0 if worker_id == "master" else int(worker_id.removeprefix("gw")))
    if index > MAX_REDIS_DB:
        pytest.fail(
            f"CLR_TEST_REDIS_DB_BASE={base} puts the client tests on Redis database {index}, "
            f"past the last one ({MAX_REDIS_DB}); use a base of at most {MAX_REDIS_DB - 6}"
        )
    broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/{index}"
    flush = redis.Redis.from_url(broker)
    flush.flushdb()
    data_dir = tmp_path_factory.mktemp("client-pg-data")
    logs = tmp_path_factory.mktemp("client-pg-logs")
    env = {
        **os.environ,
        "CLR_DATABASE_URL": url,
        "CLR_BROKER_URL": broker,
        "CLR_DATA_DIR": str(data_dir),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONUNBUFFERED": "1",
        "CLR_QUEUED_RESEND_AFTER_S": "3",
    }
    engine = create_db_engine(url)
    factory = sessionmaker(engine, expire_on_commit=False)

    def new_token() -> str:
        with session_scope(factory) as session:
            team = create_team(session, name=f"client-{uuid.uuid4().hex[:12]}")
            return create_token(session, team=team, name="tests").secret

    port = free_port()
    api_log, worker_log, reaper_log = logs / "api.log", logs / "worker.log", logs / "reaper.log"
    processes = [
        _start(["api", "--host", "127.0.0.1", "--port", str(port)], env, api_log),
        _start(["worker", "--processes", "1"], env, worker_log),
        _start(["reaper"], env, reaper_log),
    ]
    server = Server(
        "postgres",
        f"http://127.0.0.1:{port}",
        processes,
        [api_log, worker_log, reaper_log],
        new_token,
        shared_team=False,
    )
    try:
        _wait_ready(server, None)
        yield server
    finally:
        for client in server.clients:
            client.close()
        _stop(processes)
        engine.dispose()
        flush.flushdb()
        flush.close()
        database.drop_database(name)


@pytest.fixture(scope="session")
def embedded_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """``cli serve``: the embedded default (SQLite, no servers) in a folder of its own."""
    data_dir = tmp_path_factory.mktemp("client-embedded") / "data"
    env = {**os.environ, "CLR_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    for key in ("CLR_DATABASE_URL", "CLR_BROKER_URL", "CLR_TOKEN", "CLR_URL"):
        env.pop(key, None)
    port = free_port()
    log = data_dir.parent / "serve.log"
    process = _start(["serve", "--host", "127.0.0.1", "--port", str(port)], env, log)
    server = Server(
        "embedded",
        f"http://127.0.0.1:{port}",
        [process],
        [log, data_dir / "logs" / "cpu1.log"],
        lambda: (data_dir / TOKEN_FILE).read_text().strip(),
        shared_team=True,
    )
    try:
        _wait_ready(server, data_dir / "logs" / "cpu1.log")
        yield server
    finally:
        for client in server.clients:
            client.close()
        _stop([process])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[pytest.TestReport]:
    """A failed test's report carries its services' log tails."""
    report: pytest.TestReport = yield
    if report.when == "call" and report.failed:
        funcargs = getattr(item, "funcargs", {})
        # a fixture bound to a service (the dashboard helper) names it as ``.server``
        found = [getattr(v, "server", v) for v in funcargs.values()]
        servers = {id(v): v for v in found if isinstance(v, Server)}
        for server in servers.values():
            report.sections.append((f"{server.name} service logs", server.tails()))
    return report
