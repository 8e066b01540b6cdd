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
  reaper on kombu's filesystem transport, which needs no server. One ``serve`` per
  data folder (:func:`lock_data_dir`); the folder and its files are private to the
  user (:func:`make_private`).

Every process started here dies with the one that started it (:func:`die_with_parent`,
Linux): a SIGKILLed supervisor or ``serve`` leaves no worker consuming behind it.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, TYPE_CHECKING

import uvicorn

from core.settings import Settings

if TYPE_CHECKING:
    from fastapi import FastAPI

__all__ = [
    "LOCAL_TEAM",
    "LOCK_FILE",
    "TOKEN_FILE",
    "DataDirInUse",
    "DropQueryString",
    "ServeServer",
    "Supervisor",
    "WorkerSpec",
    "build_api",
    "die_with_parent",
    "ensure_local_token",
    "free_port",
    "lock_data_dir",
    "make_private",
    "parse_gpus",
    "reaper_spec",
    "uvicorn_config",
    "warm_plots",
    "worker_specs",
]

logger = logging.getLogger(__name__)

LOCAL_TEAM = "local"
"""The team the embedded default makes for its one user."""

TOKEN_FILE = "token"
"""File in the data folder holding the embedded default's API token (mode 0600)."""

LOCK_FILE = "serve.lock"
"""File in the data folder that the running ``serve`` holds locked (its pid inside)."""

WORKER_DEATH_SIGNAL = signal.SIGKILL
"""What a job worker gets when its supervisor dies: it stops at once.

Its pool child follows (Celery gives each a parent-death SIGKILL), a running job's
heartbeat stops and the reaper requeues it, as for any lost worker. A warm
shutdown (SIGTERM) would let a six-hour job run on beside the workers of the next
supervisor, two of them on one GPU."""

REAPER_DEATH_SIGNAL = signal.SIGQUIT
"""What the reaper gets when its supervisor dies: Celery's cold shutdown, which also
stops the beat process it runs (a SIGKILL would leave that one behind)."""

REAPER_NICE = 10
"""How much lower the embedded reaper runs: its start (it imports what the worker
imports) must not take the CPU from the worker and the API a first run waits for."""

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
    nice: int = 0
    """Added to the process's niceness (lower CPU priority)."""
    death_signal: signal.Signals = WORKER_DEATH_SIGNAL
    """Sent to the process when the thread that started it exits (Linux)."""


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


def reaper_spec(settings: Settings, *, loglevel: str = "INFO", nice: int = 0) -> WorkerSpec:
    """The reconciler: a solo worker on the maintenance queue with beat embedded."""
    from worker.celery_app import MAINTENANCE_QUEUE

    schedule = settings.data_dir / "beat-schedule"
    argv = _worker_argv("reaper", [MAINTENANCE_QUEUE], pool="solo", loglevel=loglevel)
    return WorkerSpec(
        "reaper",
        [*argv, "--beat", f"--schedule={schedule}"],
        {},
        nice=nice,
        death_signal=REAPER_DEATH_SIGNAL,
    )


_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def die_with_parent(sig: signal.Signals, *, nice: int = 0) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets ``sig`` when the thread that started it exits.

    Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG)``), set between fork and
    exec, so it holds even when the parent is SIGKILLed and runs no code of its
    own. The kernel ties it to the starting *thread*: start and stop children from
    a thread that outlives them. A parent that died before the call is caught by
    comparing the parent pid. Elsewhere it only applies ``nice``.
    """
    parent = os.getpid()

    def preexec() -> None:
        if nice:
            os.nice(nice)
        if _libc is None:
            return
        if _libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            os._exit(127)  # never run a child that could outlive its parent unnoticed
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return preexec


class Supervisor:
    """Starts worker processes, restarts one that dies, stops them all on request.

    A process that exits while the supervisor runs is restarted after a backoff
    that grows while it keeps dying (:data:`RESTART_BACKOFF_S`); its job, if it had
    one, is requeued by the reaper once its heartbeat stops. Processes named in
    ``held`` start only once :meth:`release` d (at the next :meth:`poll`).
    """

    def __init__(
        self,
        specs: Sequence[WorkerSpec],
        *,
        log_dir: Path | None = None,
        backoff_s: Sequence[float] = RESTART_BACKOFF_S,
        held: Sequence[str] = (),
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
        self._held = set(held)
        self._released: set[str] = set()
        self.stopping = False

    def _start(self, spec: WorkerSpec) -> None:
        env = {**os.environ, **spec.env}
        preexec = die_with_parent(spec.death_signal, nice=spec.nice)
        out: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            out = (self.log_dir / f"{spec.name}.log").open("ab")
        try:
            # A process group of its own: a Ctrl-C at the terminal reaches the
            # supervisor only (which stops the workers), and killing the group
            # takes the worker's pool child and beat along.
            process = subprocess.Popen(
                spec.argv,
                env=env,
                stdout=out,
                stderr=None if out is None else subprocess.STDOUT,
                preexec_fn=preexec,
                start_new_session=True,
            )
        finally:
            if out is not None:
                out.close()
        self.processes[spec.name] = process
        self._started[spec.name] = time.monotonic()
        logger.info("worker.started name=%s pid=%d", spec.name, process.pid)

    def start(self) -> None:
        """Start every process not held."""
        for spec in self.specs:
            if spec.name not in self._held:
                self._start(spec)

    def release(self, name: str) -> None:
        """Let a held process start; safe from any thread (the watching one starts it)."""
        self._released.add(name)

    def poll(self) -> list[str]:
        """Start released processes, restart those that exited (after their backoff);
        the names restarted."""
        restarted = []
        now = time.monotonic()
        for spec in self.specs:
            if spec.name in self._held:
                if spec.name in self._released and not self.stopping:
                    self._held.discard(spec.name)
                    self._start(spec)
                continue
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
        """Ask every process to stop (SIGTERM: Celery's warm shutdown), then kill.

        A process still running after ``grace_s`` is killed with its whole process
        group (its pool child, beat). ``grace_s=0`` kills at once: for a service
        known to run no job, where a warm shutdown would only cost seconds.
        """
        self.stopping = True
        if grace_s > 0:
            for process in self.processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for process in self.processes.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _kill_group(process.pid)
                process.wait()

    def run_until(
        self, done: threading.Event, *, interval_s: float = 0.5, grace_s: float = STOP_GRACE_S
    ) -> None:
        """Start, watch until ``done`` is set, then stop everything.

        Meant as a thread's whole body: every process is started and stopped from
        that one thread, so each one's parent-death signal fires only if the whole
        process dies (a restart from a thread that then exits would kill it).
        """
        self.start()
        try:
            while not done.wait(interval_s):
                self.poll()
        finally:
            self.stop(grace_s=grace_s)

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


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


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
    """uvicorn's server, running ``on_started`` once it listens and ``on_exit`` (stop
    the workers) as it shuts down.

    uvicorn re-raises the SIGTERM/SIGINT it caught once it has shut down, which
    ends the process at once: anything after ``run()`` would never run, and the
    worker processes would be orphaned. ``on_exit`` runs before that re-raise.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        on_exit: Callable[[], None],
        on_started: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(config)
        self.on_exit = on_exit
        self.on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            self.on_started()

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
    from core.db import make_engine, make_session_factory, session_scope
    from core.errors import TeamNotFound, Unauthorized
    from core.services import authenticate, create_team, create_token, get_team

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


def warm_plots() -> None:
    """Import and run matplotlib once, so the first plot a client asks for is quick.

    The first figure costs a second or more (imports, fonts); ``serve`` runs this in
    a thread while the worker starts, when the API has nothing else to do.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1, 1))
    FigureCanvasAgg(figure)
    figure.add_subplot().set_xscale("log")
    figure.text(0.5, 0.5, "warm")
    figure.savefig(io.BytesIO(), format="png")


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (for a service started next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


class DataDirInUse(Exception):
    """Another ``serve`` holds the data folder; ``pid`` is its process id, if known."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "pid unknown"
        super().__init__(
            f"another clr-sweep serve ({who}) is using {data_dir}; stop it first "
            "(or submit to it without --embedded)"
        )
        self.data_dir = data_dir
        self.pid = pid


def lock_data_dir(data_dir: Path) -> int:
    """Take the data folder for this process; the locked file's descriptor.

    An exclusive ``flock`` on :data:`LOCK_FILE`, which holds this process's pid.
    The kernel releases it when the process ends, however it ends, so a SIGKILLed
    ``serve`` leaves no stale lock; the descriptor is not inherited by children.
    Keep it open for as long as the folder is in use.

    Raises:
        DataDirInUse: another process holds it.
    """
    path = data_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            os.close(fd)
            raise
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        raise DataDirInUse(data_dir, int(holder) if holder.isdigit() else None) from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def make_private(data_dir: Path) -> None:
    """Make the data folder the user's alone: the folder and its folders 0700, files 0600.

    The database, its ``-wal``/``-shm``, the logs, the token, the broker's messages
    and beat's schedule hold every job and curve. This fixes what exists (a folder
    made by an older version); ``serve`` also sets a ``0o077`` umask, which its
    children inherit, so what they make later is private from the start.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    for root, dirs, files in os.walk(data_dir):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o700, follow_symlinks=False)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o600)


class DropQueryString(logging.Filter):
    """Logs uvicorn's access lines with the path only: a query string may carry a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        # uvicorn.access: (client, method, path with query string, http version, status)
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (args[0], args[1], args[2].split("?", 1)[0], args[3], args[4])
        return True


def uvicorn_config(app: FastAPI, *, host: str, port: int, log_level: str) -> uvicorn.Config:
    """uvicorn's config for ``app``, its access log stripped of query strings."""
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level)
    # Config() has configured logging; the filter sits on the logger, so every
    # handler a deployment's log config adds gets the stripped line too.
    access = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, DropQueryString) for f in access.filters):
        access.addFilter(DropQueryString())
    return config
