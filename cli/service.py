"""Running the service: ``clr-sweep api``, ``worker``, ``reaper`` and ``serve``.

- ``api`` serves the REST API with uvicorn; jobs leave through Celery after commit.
- ``worker`` starts one Celery worker process per GPU (``--gpus 0,1``, each pinned
  with ``CUDA_VISIBLE_DEVICES``) or ``--processes N`` CPU workers, and restarts a
  worker process that dies. Each runs the prefork pool with one child and
  ``worker_max_tasks_per_child=1``: every job runs in a fresh process, so its exit
  frees the CUDA context, and the parent never touches CUDA (CPU workers reuse
  their child for :data:`CPU_JOBS_PER_CHILD` jobs: no CUDA context to free).
- ``reaper`` runs the reconciler: a small worker on the ``maintenance`` queue with
  beat embedded (one per deployment is enough; two are harmless).
- ``serve`` is the embedded default: migrates the SQLite database in the data
  folder, makes a local team and token, and runs the API, a CPU worker and the
  reaper on kombu's filesystem transport, which needs no server.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import uvicorn

from sweep.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = [
    "LOCAL_TEAM",
    "TOKEN_FILE",
    "ServeServer",
    "Supervisor",
    "WorkerSpec",
    "build_api",
    "ensure_local_token",
    "free_port",
    "parse_gpus",
    "reaper_spec",
    "worker_specs",
]

logger = logging.getLogger(__name__)

LOCAL_TEAM = "local"
"""The team the embedded default makes for its one user."""

TOKEN_FILE = "token"
"""File in the data folder holding the embedded default's API token (mode 0600)."""

RESTART_BACKOFF_S = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Waits before restarting a worker process that died, by how many times in a row it
died within :data:`STABLE_AFTER_S` of starting."""

STABLE_AFTER_S = 60.0
"""A process that ran this long before dying is restarted after the shortest wait."""

CPU_JOBS_PER_CHILD = 50
"""Jobs a CPU worker's child process runs before it is replaced.

GPU workers replace theirs after every job (``worker_max_tasks_per_child=1``), the
only way to free a CUDA context; a CPU job holds none, and reusing the child saves
the up to 5 s billiard may take to notice an exited child and fork the next one,
which dominated short jobs."""

STOP_GRACE_S = 30.0
"""How long a stopping worker may finish its current step before it is killed."""


def parse_gpus(text: str) -> list[str]:
    """``"0,1"`` → ``["0", "1"]``; each entry a device index or a GPU UUID.

    Raises:
        ValueError: empty entries or duplicates.
    """
    gpus = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not gpu for gpu in gpus):
        raise ValueError(f"expected a comma-separated list such as 0,1, got {text!r}")
    if len(set(gpus)) != len(gpus):
        raise ValueError(f"a GPU is listed twice in {text!r}")
    return gpus


@dataclass(frozen=True)
class WorkerSpec:
    """One Celery worker process: its name, command line and extra environment."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)


def _celery(*args: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "worker.celery_app", *args]


def _worker_argv(
    name: str, queues: Sequence[str], *, pool: str, loglevel: str, jobs_per_child: int = 1
) -> list[str]:
    return _celery(
        "worker",
        f"--pool={pool}",
        "--concurrency=1",
        f"--max-tasks-per-child={jobs_per_child}",
        "-Q",
        ",".join(queues),
        "-n",
        # the supervisor's pid keeps two supervisors on one host apart (cpu1.4242@host)
        f"{name}.{os.getpid()}@{socket.gethostname()}",
        f"--loglevel={loglevel}",
        # remote control and events are unused (cancelling goes through the database)
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    )


def worker_specs(
    *, gpus: Sequence[str] = (), processes: int = 1, loglevel: str = "INFO"
) -> list[WorkerSpec]:
    """The worker processes for ``gpus`` (one each), or ``processes`` CPU workers."""
    from worker.celery_app import worker_queues
    from worker.pool import POOL_ENV

    if gpus:
        return [
            WorkerSpec(
                f"gpu{gpu}",
                # worker.pool.FreshProcessPool: prefork, an exited child replaced at once
                _worker_argv(f"gpu{gpu}", worker_queues("cuda"), pool="custom", loglevel=loglevel),
                {"CUDA_VISIBLE_DEVICES": gpu, **POOL_ENV},
            )
            for gpu in gpus
        ]
    if processes < 1:
        raise ValueError(f"processes must be at least 1, got {processes}")
    return [
        WorkerSpec(
            f"cpu{i}",
            _worker_argv(
                f"cpu{i}",
                worker_queues("cpu"),
                pool="prefork",
                loglevel=loglevel,
                jobs_per_child=CPU_JOBS_PER_CHILD,
            ),
            # a CPU worker sees no GPU, so "auto" jobs never grab one by accident
            {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")},
        )
        for i in range(1, processes + 1)
    ]


def reaper_spec(settings: Settings, *, loglevel: str = "INFO") -> WorkerSpec:
    """The reconciler: a solo worker on the maintenance queue with beat embedded."""
    from worker.celery_app import MAINTENANCE_QUEUE

    schedule = settings.data_dir / "beat-schedule"
    argv = _worker_argv("reaper", [MAINTENANCE_QUEUE], pool="solo", loglevel=loglevel)
    return WorkerSpec("reaper", [*argv, "--beat", f"--schedule={schedule}"], {})


class Supervisor:
    """Starts worker processes, restarts one that dies, stops them all on request.

    A process that exits while the supervisor runs is restarted after a backoff
    that grows while it keeps dying (:data:`RESTART_BACKOFF_S`); its job, if it had
    one, is requeued by the reaper once its heartbeat stops.
    """

    def __init__(
        self,
        specs: Sequence[WorkerSpec],
        *,
        log_dir: Path | None = None,
        backoff_s: Sequence[float] = RESTART_BACKOFF_S,
    ) -> None:
        if not backoff_s:
            raise ValueError("backoff_s needs at least one wait")
        self.specs = list(specs)
        self.log_dir = log_dir
        self.backoff_s = tuple(backoff_s)
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.restarts: dict[str, int] = {spec.name: 0 for spec in self.specs}
        self._quick_deaths: dict[str, int] = {spec.name: 0 for spec in self.specs}
        self._started: dict[str, float] = {}
        self._due: dict[str, float] = {}
        self.stopping = False

    def _start(self, spec: WorkerSpec) -> None:
        env = {**os.environ, **spec.env}
        if self.log_dir is None:
            process = subprocess.Popen(spec.argv, env=env)
        else:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with (self.log_dir / f"{spec.name}.log").open("ab") as out:
                process = subprocess.Popen(spec.argv, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.processes[spec.name] = process
        self._started[spec.name] = time.monotonic()
        logger.info("worker.started name=%s pid=%d", spec.name, process.pid)

    def start(self) -> None:
        """Start every process."""
        for spec in self.specs:
            self._start(spec)

    def poll(self) -> list[str]:
        """Restart processes that exited (after their backoff); the names restarted."""
        restarted = []
        now = time.monotonic()
        for spec in self.specs:
            process = self.processes[spec.name]
            code = process.poll()
            if code is None or self.stopping:
                continue
            due = self._due.get(spec.name)
            if due is None:
                if now - self._started[spec.name] >= STABLE_AFTER_S:
                    self._quick_deaths[spec.name] = 0
                deaths = self._quick_deaths[spec.name]
                self._quick_deaths[spec.name] += 1
                wait = self.backoff_s[min(deaths, len(self.backoff_s) - 1)]
                self._due[spec.name] = now + wait
                logger.warning(
                    "worker.exited name=%s code=%s restart_in=%.0fs", spec.name, code, wait
                )
            elif now >= due:
                del self._due[spec.name]
                self.restarts[spec.name] += 1
                self._start(spec)
                restarted.append(spec.name)
        return restarted

    def stop(self, *, grace_s: float = STOP_GRACE_S) -> None:
        """Ask every process to stop (SIGTERM: Celery's warm shutdown), then kill."""
        self.stopping = True
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def run_forever(self, *, interval_s: float = 0.5) -> None:
        """Start, then watch until SIGTERM or SIGINT; stop everything on the way out."""
        with _stop_on_signals():
            self.start()
            try:
                while True:
                    self.poll()
                    time.sleep(interval_s)
            except _StopRequested:
                logger.info("supervisor.stopping")
            finally:
                self.stop()


class _StopRequested(Exception):
    pass


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        raise _StopRequested(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class ServeServer(uvicorn.Server):
    """uvicorn's server, running ``on_exit`` (stop the workers) as it shuts down.

    uvicorn re-raises the SIGTERM/SIGINT it caught once it has shut down, which
    ends the process at once: anything after ``run()`` would never run, and the
    worker processes would be orphaned. ``on_exit`` runs before that re-raise.
    """

    def __init__(self, config: uvicorn.Config, *, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self.on_exit()


def build_api(settings: Settings) -> FastAPI:
    """The API app for ``settings``, sending jobs through Celery after each commit."""
    from api.app import create_app
    from worker.celery_app import create_celery
    from worker.sender import CelerySender

    sender = CelerySender(create_celery(settings))
    return create_app(settings, job_sender=sender, broker_check=sender.ping)


def ensure_local_token(settings: Settings) -> str:
    """The embedded default's token: read from the data folder, or made and saved there.

    Makes the ``local`` team if it does not exist. A saved token that no longer
    authenticates (a wiped database) is replaced.
    """
    from sweep.db import make_engine, make_session_factory, session_scope
    from sweep.errors import TeamNotFound, Unauthorized
    from sweep.services import authenticate, create_team, create_token, get_team

    path = settings.data_dir / TOKEN_FILE
    engine = make_engine(settings)
    try:
        factory = make_session_factory(engine)
        if path.exists():
            secret = path.read_text().strip()
            try:
                with session_scope(factory) as session:
                    authenticate(session, token=secret)
                return secret
            except Unauthorized:
                logger.warning("serve.token_replaced path=%s: it no longer authenticates", path)
        with session_scope(factory) as session:
            try:
                team = get_team(session, name=LOCAL_TEAM)
            except TeamNotFound:
                team = create_team(session, name=LOCAL_TEAM)
            secret = create_token(session, team=team, name=f"serve-{uuid.uuid4().hex[:8]}").secret
    finally:
        engine.dispose()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(secret + "\n")
    return secret


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for a service started next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port
