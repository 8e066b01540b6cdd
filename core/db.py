"""Engines, sessions, the unit-of-work scope and the after-commit job sender.

Two databases are supported: PostgreSQL through psycopg 3 (production) and a
SQLite file (the embedded mode). On SQLite every transaction starts with
``BEGIN IMMEDIATE``: it takes the write lock up front, so a transaction that
reads and then writes waits for a concurrent writer (up to
:data:`SQLITE_BUSY_TIMEOUT_S`) instead of failing with ``database is locked``.
The price is that SQLite transactions run one at a time, so keep them short; a
long read-only one can ask for ``BEGIN DEFERRED`` with
``engine.execution_options(sqlite_begin="DEFERRED")``.

A broker message carries only a job id and leaves after the row commits:
services call :func:`enqueue_after_commit`, the ids wait in ``session.info``,
an ``after_commit`` listener hands them to the sender installed with
:func:`set_job_sender`, and a rollback (of the transaction or of the savepoint
they were enqueued in) discards them. A crash between the commit and the send
is covered by the reconciler, which re-sends queued jobs whose message is old.
A :class:`BackgroundSender` keeps a hung broker out of the committing thread: it
sends on a thread of its own and the caller waits only a moment for it.
"""

from __future__ import annotations

import logging
import os
import queue
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker
from sqlalchemy.pool import ConnectionPoolEntry, StaticPool

from core.settings import Settings

__all__ = [
    "POSTGRES_CONNECT_ARGS",
    "SQLITE_BUSY_TIMEOUT_S",
    "BackgroundSender",
    "JobSender",
    "create_db_engine",
    "end_session",
    "enqueue_after_commit",
    "get_job_sender",
    "make_engine",
    "make_session_factory",
    "pending_jobs",
    "read_only",
    "session_scope",
    "set_job_sender",
]

logger = logging.getLogger(__name__)

SQLITE_BUSY_TIMEOUT_S = 30.0
"""How long a SQLite connection waits for another one's write lock."""

_SQLITE_BEGIN_MODES = ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")

POSTGRES_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
"""libpq options every PostgreSQL connection gets unless the caller passes its own.

A server that accepts connections and never answers (frozen, or a half-open
network path) fails a new connection after ``connect_timeout`` seconds instead
of hanging it forever, and TCP keepalives notice a peer that went silent under
an open connection in about a minute instead of the kernel's two hours."""


def create_db_engine(url: str, *, sqlite_foreign_keys: bool = True, **kwargs: Any) -> Engine:
    """An engine for ``url`` set up for this project.

    SQLite: usable from several threads, WAL journal, foreign keys enforced (unless
    ``sqlite_foreign_keys=False``, which migrations use as Alembic's batch mode
    advises), ``BEGIN IMMEDIATE`` transactions, and the file's folder created.
    PostgreSQL: connections are checked before use (``pool_pre_ping``) and made
    with :data:`POSTGRES_CONNECT_ARGS` (a connect timeout, TCP keepalives).

    Args:
        url: a SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``).
        sqlite_foreign_keys: whether SQLite enforces foreign keys.
        **kwargs: passed to :func:`sqlalchemy.create_engine`.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_pre_ping", True)
        connect_args = {**POSTGRES_CONNECT_ARGS, **kwargs.pop("connect_args", {})}
        return create_engine(url, connect_args=connect_args, **kwargs)
    database = parsed.database
    if database in (None, "", ":memory:"):
        # one shared connection, or every checkout would see its own empty database
        kwargs.setdefault("poolclass", StaticPool)
    else:
        Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S}
    connect_args.update(kwargs.pop("connect_args", {}))
    engine = create_engine(url, connect_args=connect_args, **kwargs)
    _configure_sqlite(engine, foreign_keys=sqlite_foreign_keys)
    return engine


def _configure_sqlite(engine: Engine, *, foreign_keys: bool) -> None:
    pragma_fk = "ON" if foreign_keys else "OFF"

    def on_connect(dbapi_connection: sqlite3.Connection, _record: ConnectionPoolEntry) -> None:
        # SQLAlchemy, not the driver, opens transactions (see on_begin): the driver's
        # own implicit BEGIN breaks SAVEPOINT and transactional DDL.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA foreign_keys={pragma_fk}")
        finally:
            cursor.close()

    def on_begin(conn: Connection) -> None:
        mode = str(conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")).upper()
        if mode not in _SQLITE_BEGIN_MODES:
            raise ValueError(f"sqlite_begin must be one of {_SQLITE_BEGIN_MODES}, got {mode!r}")
        conn.exec_driver_sql(f"BEGIN {mode}")

    event.listen(engine, "connect", on_connect)
    event.listen(engine, "begin", on_begin)


def make_engine(settings: Settings, **kwargs: Any) -> Engine:
    """The engine for ``settings.db_url`` (see :func:`create_db_engine`), its
    PostgreSQL pool sized by ``db_pool_size`` and ``db_max_overflow``; a checkout
    waits at most ``db_pool_timeout_s`` for a free connection."""
    url = make_url(settings.db_url)
    if url.get_backend_name() != "sqlite":
        kwargs.setdefault("pool_size", settings.db_pool_size)
        kwargs.setdefault("max_overflow", settings.db_max_overflow)
    if url.get_backend_name() != "sqlite" or url.database not in (None, "", ":memory:"):
        # SQLAlchemy's 30 s default outlives any client's patience: a busy pool is a
        # quick 503 (api.problems), not a request that hangs and then fails
        kwargs.setdefault("pool_timeout", settings.db_pool_timeout_s)
    return create_db_engine(settings.db_url, **kwargs)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions on ``engine`` whose objects stay readable after commit."""
    return sessionmaker(bind=engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit when the block succeeds, roll back when it raises.

    Example:
        >>> with session_scope(factory) as session:  # doctest: +SKIP
        ...     claim_job(session, job_id=job_id, worker="gpu0")
    """
    session = factory()
    try:
        yield session
    except BaseException:
        end_session(session, commit=False)
        raise
    end_session(session, commit=True)


def read_only(session: Session) -> None:
    """Begin ``session``'s next transaction as a reader: ``BEGIN DEFERRED`` on SQLite.

    SQLite's default here is ``BEGIN IMMEDIATE`` (a writer takes the write lock
    up front, so two writers never deadlock on an upgrade); a unit of work that
    only reads needs no lock at all, and a long one (a 100,000-point series read
    and thinned for a chart takes up to a second) would otherwise hold up every
    upload, heartbeat and worker for as long. Call it first in a unit of work that
    only reads; a session already in a transaction keeps it. PostgreSQL ignores
    the option.
    """
    if not session.in_transaction():
        session.connection(execution_options={"sqlite_begin": "DEFERRED"})


def end_session(session: Session, *, commit: bool) -> None:
    """End a unit of work: commit (or roll back), then close; closed even if that raises."""
    try:
        if commit:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


# --------------------------------------------------------------------------- sending


class JobSender(Protocol):
    """Sends one job's message to the broker: only its id travels.

    ``kind`` picks the task and ``device`` (the spec's device preference: ``auto``,
    ``cpu`` or ``cuda``) the queue, so a CUDA job waits for a GPU worker.
    """

    def __call__(self, job_id: uuid.UUID, kind: str, device: str) -> None: ...


@dataclass(frozen=True)
class _Send:
    job_id: uuid.UUID
    kind: str
    device: str
    done: threading.Event


class BackgroundSender:
    """A :class:`JobSender` that sends through ``send`` on a thread of its own.

    The caller waits for its send at most ``wait_s``: while the broker keeps up,
    the message is out before the caller goes on (a 202 means the job is in the
    queue), but a hung or unreachable broker delays a commit by ``wait_s`` once and
    then not at all, until a send succeeds again. Sends still pending then go out in
    order once the broker answers; more than ``max_pending`` of them are dropped
    (logged as ``job.enqueue_deferred``) and, like failed ones, left to the
    reconciler, which re-sends every queued job whose message is old.

    The thread starts on the first send in each process (a forked child starts its
    own) and is a daemon: pending sends die with the process, as a crash's would.
    """

    def __init__(self, send: JobSender, *, wait_s: float, max_pending: int = 10_000) -> None:
        self._send = send
        self.wait_s = wait_s
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._queue: queue.Queue[_Send] | None = None
        self._pid: int | None = None
        self._stalled = False

    def __call__(self, job_id: uuid.UUID, kind: str, device: str) -> None:
        item = _Send(job_id, kind, device, threading.Event())
        try:
            self._sends().put_nowait(item)
        except queue.Full:
            logger.warning(
                "job.enqueue_deferred job_id=%s kind=%s: %d sends pending; left to the reconciler",
                job_id,
                kind,
                self.max_pending,
            )
            return
        if self._stalled:
            return  # the broker is not keeping up: do not make every caller wait for it
        if not item.done.wait(self.wait_s):
            self._stalled = True
            logger.warning(
                "job.send_delayed job_id=%s kind=%s: the broker did not take it within %g s; "
                "sending in the background",
                job_id,
                kind,
                self.wait_s,
            )

    def _sends(self) -> queue.Queue[_Send]:
        with self._lock:
            if self._queue is None or self._pid != os.getpid():
                self._queue = queue.Queue(self.max_pending)
                self._pid = os.getpid()
                thread = threading.Thread(
                    target=self._run, args=(self._queue,), name="job-sender", daemon=True
                )
                thread.start()
            return self._queue

    def _run(self, sends: queue.Queue[_Send]) -> None:
        while True:
            item = sends.get()
            try:
                self._send(item.job_id, item.kind, item.device)
            except Exception:
                # The row is committed; the reconciler re-sends it.
                self._stalled = True
                logger.exception("job.enqueue_failed job_id=%s kind=%s", item.job_id, item.kind)
            else:
                if sends.empty():
                    self._stalled = False
            finally:
                item.done.set()


@dataclass(frozen=True)
class _Pending:
    job_id: uuid.UUID
    kind: str
    device: str
    transaction: SessionTransaction


_PENDING_KEY = "core.pending_jobs"
_RELEASED_KEY = "core.released_savepoints"
_sender: JobSender | None = None


def set_job_sender(sender: JobSender | None) -> JobSender | None:
    """Install the process's sender (``None`` removes it) and return the previous one.

    Without a sender, committed jobs are logged as ``job.enqueue_skipped`` and left
    to the reconciler.
    """
    global _sender
    previous, _sender = _sender, sender
    return previous


def get_job_sender() -> JobSender | None:
    """The sender :func:`set_job_sender` installed, if any."""
    return _sender


def enqueue_after_commit(
    session: Session, job_id: uuid.UUID, kind: str, *, device: str = "auto"
) -> None:
    """Send ``job_id``'s message once the session's transaction commits.

    ``device`` is the job's device preference (``auto``: any worker).

    Nothing is sent if that transaction, or the savepoint this call was made in,
    rolls back. A job enqueued twice in one transaction is sent once.

    Raises:
        RuntimeError: if the session has no transaction in progress.
    """
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is None:
        raise RuntimeError("enqueue_after_commit needs a session with a transaction in progress")
    session.info.setdefault(_PENDING_KEY, []).append(_Pending(job_id, kind, device, transaction))


def pending_jobs(session: Session) -> list[tuple[uuid.UUID, str]]:
    """``(job_id, kind)`` of every message waiting for this session's commit."""
    return [(p.job_id, p.kind) for p in session.info.get(_PENDING_KEY, [])]


def _is_within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


def _send_pending(session: Session) -> None:
    if session.in_nested_transaction():
        # a savepoint was released: its jobs wait for the real commit
        transaction = session.get_nested_transaction()
        session.info.setdefault(_RELEASED_KEY, set()).add(transaction)
        return
    pending: list[_Pending] = session.info.pop(_PENDING_KEY, [])
    sender = _sender
    sent: set[uuid.UUID] = set()
    for item in pending:
        if item.job_id in sent:
            continue
        sent.add(item.job_id)
        if sender is None:
            logger.warning(
                "job.enqueue_skipped job_id=%s kind=%s: no sender", item.job_id, item.kind
            )
            continue
        try:
            sender(item.job_id, item.kind, item.device)
        except Exception:
            # The row is committed; the reconciler re-sends it. One broken send must
            # not keep the others from going out.
            logger.exception("job.enqueue_failed job_id=%s kind=%s", item.job_id, item.kind)


def _discard_on_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        # The outermost transaction ended: what it committed was sent by
        # _send_pending; anything left was never committed (rollback, close).
        session.info.pop(_PENDING_KEY, None)
        session.info.pop(_RELEASED_KEY, None)
        return
    if not transaction.nested or transaction in session.info.get(_RELEASED_KEY, ()):
        return  # a flush's inner transaction, or a released savepoint
    # A savepoint rolled back (explicitly or through a failed flush): drop what was
    # enqueued inside it.
    pending: list[_Pending] | None = session.info.get(_PENDING_KEY)
    if pending:
        session.info[_PENDING_KEY] = [
            p for p in pending if not _is_within(p.transaction, transaction)
        ]


event.listen(Session, "after_commit", _send_pending)
event.listen(Session, "after_transaction_end", _discard_on_end)
