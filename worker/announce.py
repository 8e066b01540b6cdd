"""A worker process announces itself in the worker registry and keeps its row current.

Runs in the Celery worker's parent process (the one that fetches messages and,
under the prefork pool, forks the children that run jobs); nothing here touches
CUDA or a job. On ``worker_ready`` it writes its row (name, host, pid, the queues
it consumes and so its device kind), then a daemon thread rewrites it every
``heartbeat_interval_s``: the heartbeat, the job whose message it holds, and since
when it has been free. A received message wakes the thread, so the row shows the
worker busy at once. On a warm shutdown the thread deletes the row; a worker that
is killed stops beating and reads as offline after ``heartbeat_timeout_s``.

What the row says is read off Celery's own bookkeeping in this process
(``celery.worker.state.reserved_requests``: the messages it holds, running or
about to run) and the ``task_received`` signal (every message fetched), so it is
right under every pool.

The parent's database access uses a :class:`~sqlalchemy.pool.NullPool` engine
(:func:`parent_session_factory`): no connection stays open for a forked child to
inherit, and a fork waits (briefly) for a heartbeat in progress to finish.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterable
from datetime import datetime
from functools import cache
from typing import Any

from celery.signals import task_received, worker_ready, worker_shutdown, worker_shutting_down
from celery.worker import state
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from core.clock import utc_now
from core.db import create_db_engine, make_session_factory, session_scope
from core.services import WorkerInfo, record_worker, retire_worker
from core.settings import get_settings

__all__ = [
    "CONNECT_TIMEOUT_S",
    "FORK_WAIT_S",
    "Announcer",
    "current_announcer",
    "job_id_of",
    "parent_session_factory",
]

logger = logging.getLogger(__name__)

FORK_WAIT_S = 2.0
"""Longest a fork waits for a heartbeat's database round trip to finish."""

CONNECT_TIMEOUT_S = 5
"""Seconds the parent waits for a PostgreSQL connection (libpq's ``connect_timeout``)."""

STOP_WAIT_S = 5.0
"""Longest a shutting-down worker waits for its thread to delete its row."""


@cache
def parent_session_factory() -> sessionmaker[Session]:
    """Sessions for the worker's parent process: a connection per unit of work.

    Without a pool no connection outlives its unit of work, so a child forked
    meanwhile inherits none (a child's jobs open their own). On PostgreSQL a
    connection attempt gives up after :data:`CONNECT_TIMEOUT_S`: the parent also
    fetches the messages, and must not hang on a frozen server.
    """
    url = get_settings().db_url
    kwargs: dict[str, Any] = {"poolclass": NullPool}
    if make_url(url).get_backend_name() == "postgresql":
        kwargs["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT_S}
    return make_session_factory(create_db_engine(url, **kwargs))


def job_id_of(args: Iterable[Any] | None) -> uuid.UUID | None:
    """The job id a task's arguments carry (a job task's only argument), if any."""
    first = next(iter(args or ()), None)
    if not isinstance(first, str):
        return None
    try:
        return uuid.UUID(first)
    except ValueError:
        return None


class Announcer:
    """Keeps one worker process's registry row current from a daemon thread."""

    def __init__(
        self, factory: sessionmaker[Session], info: WorkerInfo, *, interval_s: float
    ) -> None:
        self.factory = factory
        self.info = info
        self.interval_s = interval_s
        self.beats = 0
        self.db_lock = threading.Lock()
        """Held while the thread talks to the database; a fork waits for it."""
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._received = 0
        self._seen_received = 0
        self._last_job: uuid.UUID | None = None
        self._idle_since: datetime | None = info.started_at
        self._thread = threading.Thread(target=self._run, name="worker-registry", daemon=True)

    def start(self) -> None:
        """Announce (from the thread, at once) and keep beating."""
        self._thread.start()

    def received(self, job_id: uuid.UUID | None) -> None:
        """A message was fetched (Celery's ``task_received``): note it, and beat now."""
        self._received += 1
        self._last_job = job_id
        self._wake.set()

    def observe(self, now: datetime) -> tuple[uuid.UUID | None, datetime | None]:
        """What this worker holds at ``now``: ``(job id or None, free since or None)``.

        Free since: the first look at which it held no message and had fetched none
        since the previous look (a job that came and went between two looks moves it).
        """
        received = self._received  # before the holdings: a fetch in between reads as busy
        busy = len(state.reserved_requests) > 0
        if busy:
            self._idle_since = None
        elif self._idle_since is None or received != self._seen_received:
            self._idle_since = now
        self._seen_received = received
        return (self._last_job if busy else None), self._idle_since

    def beat(self) -> None:
        """Write the row once (inserting it if it is missing)."""
        with self.db_lock:
            now = utc_now()
            current, idle_since = self.observe(now)
            with session_scope(self.factory) as session:
                record_worker(
                    session, info=self.info, current_job_id=current, idle_since=idle_since, now=now
                )
        self.beats += 1

    def request_stop(self) -> None:
        """Ask the thread to delete the row and end (safe from a signal handler)."""
        self._stopping.set()
        self._wake.set()

    def stop(self, timeout_s: float = STOP_WAIT_S) -> None:
        """Stop beating and wait (up to ``timeout_s``) for the row to be deleted."""
        self.request_stop()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.beat()
            except Exception:  # a database blip: the next beat retries (and re-announces)
                logger.exception("worker.heartbeat_failed worker_id=%s", self.info.id)
            self._wake.wait(self.interval_s)
            self._wake.clear()
        try:
            with self.db_lock, session_scope(self.factory) as session:
                retire_worker(session, worker_id=self.info.id)
        except Exception:  # it goes offline at the timeout instead
            logger.exception("worker.retire_failed worker_id=%s", self.info.id)

    def fork_before(self) -> bool:
        """Before a fork: wait for a heartbeat in progress; whether the lock is held."""
        return self.db_lock.acquire(timeout=FORK_WAIT_S)


_announcer: Announcer | None = None
_fork_locked = False


def current_announcer() -> Announcer | None:
    """This process's announcer, once the worker is ready."""
    return _announcer


def _before_fork() -> None:
    global _fork_locked
    _fork_locked = _announcer is not None and _announcer.fork_before()


def _after_fork_in_parent() -> None:
    global _fork_locked
    if _fork_locked and _announcer is not None:
        _announcer.db_lock.release()
    _fork_locked = False


def _after_fork_in_child() -> None:
    # The child is a job's process: it has no thread and no row of its own.
    global _announcer, _fork_locked
    _announcer, _fork_locked = None, False


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)


@worker_ready.connect
def _announce(sender: Any = None, **_: object) -> None:
    global _announcer
    if _announcer is not None:
        return
    queues = tuple(sender.app.amqp.queues.consume_from) if sender is not None else ()
    info = WorkerInfo(
        id=uuid.uuid4(),
        name=str(getattr(sender, "hostname", None) or socket.gethostname()),
        hostname=socket.gethostname(),
        pid=os.getpid(),
        queues=queues,
        started_at=utc_now(),
    )
    _announcer = Announcer(
        parent_session_factory(), info, interval_s=get_settings().heartbeat_interval_s
    )
    _announcer.start()
    logger.info(
        "worker.announcing worker_id=%s name=%s queues=%s device=%s",
        info.id,
        info.name,
        ",".join(queues),
        info.device_kind,
    )


@task_received.connect
def _note_received(request: Any = None, **_: object) -> None:
    if _announcer is not None:
        _announcer.received(job_id_of(getattr(request, "args", None)))


@worker_shutting_down.connect
def _leaving(**_: object) -> None:
    # Sent from the signal handler: only set flags here; the thread deletes the row.
    if _announcer is not None:
        _announcer.request_stop()


@worker_shutdown.connect
def _left(**_: object) -> None:
    if _announcer is not None:
        _announcer.stop()
