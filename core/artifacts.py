"""Artifacts: the checkpoints and final models of jobs, readable from any host.

Workers run on many hosts, so an artifact must be readable by a worker (or an API
process) on another host than the one that wrote it. Its metadata is always a row
of ``artifacts`` (so any host knows what exists); its bytes are in one of two
stores, chosen when it is written:

- ``db`` (the default): ``artifact_chunks`` rows of :data:`ARTIFACT_CHUNK_BYTES`
  each, in the service's database (PostgreSQL in production, the SQLite file in the
  embedded mode).
- ``dir``, when ``CLR_ARTIFACT_DIR`` names a folder every host mounts (a shared
  volume): one file ``<dir>/<job_id>/<name>.<artifact id>``, written as a hidden
  temporary file in the same folder, fsynced and renamed into place before it is
  published. Readers open the file directly.

Writing streams: :func:`open_artifact_writer` gives a binary file object that
``torch.save`` writes into; each full chunk goes out in a short transaction of its
own (a 100 MB checkpoint never holds a transaction for its whole write), so only
one chunk is ever buffered. A clean exit from the ``with`` block publishes it in
one guarded transaction: only if the job is still ``running`` under the writer's
attempt, it deletes the job's previous ready artifact of that name and marks the
new one ready, so readers see the old one until that commit and the new one after
it, never a half-written one. A stale attempt's writer publishes nothing.

Reading: :func:`open_artifact_reader` gives a seekable binary file that fetches the
chunk it needs when it needs it (``torch.load`` seeks), each in a short read-only
transaction; :func:`stream_artifact` yields the bytes chunk by chunk (an HTTP
download). A reader of a ``db`` artifact that is replaced or deleted while it reads
gets :class:`~core.errors.ArtifactNotFound` on its next chunk; a reader of a ``dir``
artifact keeps its open file.

Writers killed mid-write leave ``writing`` rows (and, in the ``dir`` store, files):
:func:`prune_orphans` collects them, and the files of deleted rows.

Example:
    >>> with open_artifact_writer(  # doctest: +SKIP
    ...     factory, settings, job_id=job.id, attempt=job.attempt, name="checkpoint"
    ... ) as writer:
    ...     torch.save(state, writer)
    >>> with open_artifact_reader(factory, settings, job_id=job.id, name="checkpoint") as f:
    ...     state = torch.load(f)  # doctest: +SKIP
"""

from __future__ import annotations

import enum
import hashlib
import io
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from core.clock import as_utc, utc_now
from core.db import end_session, session_scope
from core.errors import ArtifactNotFound, ArtifactTooLarge, JobNotFound
from core.models import Artifact, ArtifactState, ArtifactStore
from core.repositories import ArtifactRepository
from core.settings import Settings

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
    "ARTIFACT_CHUNK_BYTES",
    "DIR_TOUCH_INTERVAL_S",
    "ArtifactStream",
    "ArtifactWriter",
    "PrunedArtifacts",
    "artifact_info",
    "delete_artifacts",
    "list_artifacts",
    "open_artifact_reader",
    "open_artifact_writer",
    "prune_orphans",
    "stream_artifact",
]

logger = logging.getLogger(__name__)

ARTIFACT_CHUNK_BYTES = 4 * 2**20
"""Bytes per ``artifact_chunks`` row (the last chunk may be shorter).

Measured on PostgreSQL 15 (2 cores; ``python -m bench.artifacts --chunk-sweep``
and raw inserts/selects): 1 to 16 MiB chunks write at about the same rate (the
WAL is the limit); reads are fastest at 2 to 4 MiB (~600 MB/s raw, against ~450
at 1 MiB and ~350 at 16 MiB). A writer or a reader holds one chunk in memory,
so 4 MiB also keeps their footprint small."""

DIR_TOUCH_INTERVAL_S = 30.0
"""How often a ``dir``-store writer records that it is alive (a ``db``-store writer
does with every chunk): :func:`prune_orphans`'s ``older_than`` must leave a writer
far more than this."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_TEMP_SUFFIX = ".tmp"

OnPublish = Callable[[Session], object]
"""Called with the publishing transaction's session, before it commits."""


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            "name must be 1 to 128 letters, digits, '_', '.' or '-', starting with a "
            f"letter or digit, got {name!r}"
        )


# --------------------------------------------------------------------------- paths


def _file_path(root: Path, job_id: uuid.UUID, name: str, artifact_id: uuid.UUID) -> Path:
    return root / str(job_id) / f"{name}.{artifact_id}"


def _temp_path(root: Path, job_id: uuid.UUID, name: str, artifact_id: uuid.UUID) -> Path:
    # hidden (names never start with '.') and in the same folder, so the rename is atomic
    return root / str(job_id) / f".{name}.{artifact_id}{_TEMP_SUFFIX}"


def _both_paths(root: Path, job_id: uuid.UUID, name: str, artifact_id: uuid.UUID) -> list[Path]:
    """The final and the temporary file of an artifact (either may exist)."""
    return [
        _file_path(root, job_id, name, artifact_id),
        _temp_path(root, job_id, name, artifact_id),
    ]


def _artifact_id_of(file_name: str) -> uuid.UUID | None:
    """The artifact id in a file name of the ``dir`` store (final or temporary), if any."""
    stem = file_name
    if stem.startswith("."):
        if not stem.endswith(_TEMP_SUFFIX):
            return None
        stem = stem[1 : -len(_TEMP_SUFFIX)]
    _, dot, tail = stem.rpartition(".")
    if not dot:
        return None
    try:
        return uuid.UUID(tail)
    except ValueError:
        return None


def _artifact_root(settings: Settings) -> Path | None:
    """The ``dir`` store's folder, which must exist (a missing mount is not a folder to make)."""
    root = settings.artifact_dir
    if root is not None and not root.is_dir():
        raise FileNotFoundError(
            f"CLR_ARTIFACT_DIR {str(root)!r} is not an existing folder "
            "(is the shared volume mounted on this host?)"
        )
    return root


def _root_for(settings: Settings, artifact: Artifact) -> Path:
    root = _artifact_root(settings)
    if root is None:
        raise FileNotFoundError(
            f"artifact {artifact.name!r} of job {artifact.job_id} is in the artifact folder, "
            "but CLR_ARTIFACT_DIR is not set on this host"
        )
    return root


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------- file removal after commit


@dataclass(frozen=True)
class _Unlink:
    path: Path
    transaction: SessionTransaction


_UNLINK_KEY = "core.artifact_unlinks"
_RELEASED_KEY = "core.artifact_released_savepoints"


def _unlink_after_commit(session: Session, paths: Collection[Path]) -> None:
    """Remove ``paths`` once the session's transaction commits; a rollback keeps them.

    Rows are deleted in the caller's transaction, so their files must outlive it
    when it rolls back (or the savepoint it was in does). A crash between the commit
    and the removal leaves files without rows, which :func:`prune_orphans` removes.
    """
    if not paths:
        return
    transaction = session.get_nested_transaction() or session.get_transaction()
    if transaction is None:
        raise RuntimeError("deleting artifacts needs a session with a transaction in progress")
    session.info.setdefault(_UNLINK_KEY, []).extend(_Unlink(p, transaction) for p in paths)


def _within(transaction: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while transaction is not None:
        if transaction is ancestor:
            return True
        transaction = transaction.parent
    return False


def _unlink_committed(session: Session) -> None:
    if session.in_nested_transaction():
        # a savepoint was released: its files wait for the real commit
        session.info.setdefault(_RELEASED_KEY, set()).add(session.get_nested_transaction())
        return
    for item in session.info.pop(_UNLINK_KEY, []):
        try:
            item.path.unlink(missing_ok=True)
        except OSError:
            logger.exception("artifact.unlink_failed path=%s: left to prune_orphans", item.path)


def _drop_rolled_back(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_UNLINK_KEY, None)
        session.info.pop(_RELEASED_KEY, None)
        return
    if not transaction.nested or transaction in session.info.get(_RELEASED_KEY, ()):
        return
    pending: list[_Unlink] | None = session.info.get(_UNLINK_KEY)
    if pending:
        session.info[_UNLINK_KEY] = [u for u in pending if not _within(u.transaction, transaction)]


event.listen(Session, "after_commit", _unlink_committed)
event.listen(Session, "after_transaction_end", _drop_rolled_back)


@contextmanager
def _read_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A short read-only transaction: ``BEGIN DEFERRED`` on SQLite (no write lock)."""
    session = factory()
    try:
        session.connection(execution_options={"sqlite_begin": "DEFERRED"})
        yield session
    except BaseException:
        end_session(session, commit=False)
        raise
    # a commit, not a rollback: it ends the transaction without expiring what was read
    end_session(session, commit=True)


# --------------------------------------------------------------------------- writing


class _State(enum.Enum):
    OPEN = "open"
    PUBLISHED = "published"
    DISCARDED = "discarded"
    LOST = "lost"  # its row was pruned or deleted under it


class ArtifactWriter(io.RawIOBase, BinaryIO):
    """A write-only binary file whose bytes become an artifact when published.

    Made by :func:`open_artifact_writer`. ``db`` store: bytes gather into one chunk
    of ``chunk_size`` and each full chunk is inserted in a transaction of its own.
    ``dir`` store: bytes go to a temporary file. :meth:`flush` sends nothing early
    (chunks stay whole), and nothing is visible to readers before :meth:`publish`.

    Leaving the ``with`` block normally publishes; leaving it with an exception,
    or :meth:`close` before publishing, discards what was written. A writer dropped
    without either leaves a ``writing`` row for :func:`prune_orphans`.

    Attributes:
        id: the artifact's id.
        job_id, attempt, name: what the artifact belongs to.
        store: where its bytes go.
        size: bytes written so far.
        sha256: hex SHA-256 of the bytes, once published (else None).
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        settings: Settings,
        artifact: Artifact,
        *,
        root: Path | None,
        on_publish: OnPublish | None = None,
    ) -> None:
        super().__init__()
        self._factory = factory
        self._limit = settings.max_artifact_bytes
        self.id = artifact.id
        self.job_id = artifact.job_id
        self.attempt = artifact.attempt
        self._name = artifact.name
        self.store = ArtifactStore(artifact.store)
        self.size = 0
        self.sha256: str | None = None
        self._chunk_size = artifact.chunk_size
        self._on_publish = on_publish
        self._hash = hashlib.sha256()
        self._buffer = bytearray()
        self._seq = 0
        self._state = _State.OPEN
        self._root = root
        self._file: BinaryIO | None = None
        self._touched_at = time.monotonic()
        if root is not None:
            self._file = self._open_temp(root)

    @property
    def name(self) -> str:
        """The artifact's name (``checkpoint``, ``model``, ...)."""
        return self._name

    def _open_temp(self, root: Path) -> BinaryIO:
        path = _temp_path(root, self.job_id, self.name, self.id)
        path.parent.mkdir(exist_ok=True)
        try:
            return path.open("xb")
        except FileNotFoundError:
            # prune_orphans removed the (then empty) job folder in between: once more
            path.parent.mkdir(exist_ok=True)
            return path.open("xb")

    # ------------------------------------------------------------------ the file API

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        # nothing leaves early: a chunk goes out when it is full, the rest at publish
        super().flush()

    def write(self, b: ReadableBuffer, /) -> int:
        """Append ``b``; every full chunk goes to the store at once.

        Raises:
            ArtifactTooLarge: the artifact would exceed ``CLR_MAX_ARTIFACT_BYTES``
                (what was written is discarded).
            ValueError: the writer is closed.
        """
        if self.closed:
            raise ValueError("I/O operation on closed artifact writer")
        view = memoryview(b).cast("B")
        n = len(view)
        if self._state is not _State.OPEN:
            if self._state is _State.LOST:
                return n  # its row is gone: nothing will be published, keep the caller going
            raise ValueError(f"artifact writer is {self._state.value}")
        if self._limit and self.size + n > self._limit:
            self._discard("too large")
            raise ArtifactTooLarge(
                f"artifact {self.name!r} of job {self.job_id} is over the cap: "
                f"{self.size + n} bytes written, more than CLR_MAX_ARTIFACT_BYTES="
                f"{self._limit}; raise CLR_MAX_ARTIFACT_BYTES to store it",
                name=self.name,
                size=self.size + n,
                limit=self._limit,
            )
        self._hash.update(view)
        self.size += n
        if self._file is not None:
            self._file.write(view)
            if time.monotonic() - self._touched_at >= DIR_TOUCH_INTERVAL_S:
                self._touch()
            return n
        offset = 0
        while offset < n and self._state is _State.OPEN:
            if not self._buffer and n - offset >= self._chunk_size:
                # a big write (a tensor's bytes): whole chunks go straight from it
                self._put_chunk(view[offset : offset + self._chunk_size])
                offset += self._chunk_size
                continue
            take = min(self._chunk_size - len(self._buffer), n - offset)
            self._buffer += view[offset : offset + take]
            offset += take
            if len(self._buffer) == self._chunk_size:
                self._put_chunk(self._take_buffer())
        return n

    def _take_buffer(self) -> bytearray:
        data, self._buffer = self._buffer, bytearray()
        return data

    def _put_chunk(self, data: bytes | bytearray | memoryview) -> None:
        with session_scope(self._factory) as session:
            repo = ArtifactRepository(session)
            # size: the bytes stored so far (what a dead writer's row will show)
            stored = self._seq * self._chunk_size + len(data)
            if not repo.touch(self.id, size=stored, now=utc_now()):
                self._lose()
                return
            repo.add_chunk(self.id, self._seq, data)
        self._seq += 1

    def _touch(self) -> None:
        with session_scope(self._factory) as session:
            alive = ArtifactRepository(session).touch(self.id, size=self.size, now=utc_now())
        self._touched_at = time.monotonic()
        if not alive:
            self._lose()

    def _lose(self) -> None:
        logger.warning(
            "artifact.lost artifact_id=%s job_id=%s name=%s: its row was deleted while "
            "it was written; it will not be published",
            self.id,
            self.job_id,
            self.name,
        )
        self._buffer = bytearray()
        self._close_file()
        if self._root is not None:
            for path in _both_paths(self._root, self.job_id, self.name, self.id):
                path.unlink(missing_ok=True)
        self._state = _State.LOST

    # ------------------------------------------------------------------ publish / discard

    @property
    def published(self) -> bool:
        """Whether the artifact was published (readers see it)."""
        return self._state is _State.PUBLISHED

    def publish(self, on_publish: OnPublish | None = None) -> bool:
        """Make the artifact the job's ready artifact of its name; whether it did.

        In one transaction: lock the job row if it is still ``running`` under this
        writer's attempt, delete the previous ready artifact of the name, mark this
        one ready and call ``on_publish(session)`` (the caller records, say, the
        series positions a checkpoint covers, atomically with it). A stale attempt
        (the job was requeued, finished or cancelled) or a pruned row publishes
        nothing, discards the bytes and returns False. Calling it again returns the
        first answer.

        Args:
            on_publish: run inside the publishing transaction; defaults to the one
                given to :func:`open_artifact_writer`. If it raises, nothing is
                published and the exception propagates.

        Raises:
            ValueError: the writer was closed before publishing.
        """
        if self._state is _State.PUBLISHED:
            return True
        if self._state is not _State.OPEN:
            return False
        if self.closed:
            raise ValueError("I/O operation on closed artifact writer")
        hook = on_publish if on_publish is not None else self._on_publish
        try:
            self._finish_bytes()
            if self._state is not _State.OPEN:
                return False
            self.sha256 = self._hash.hexdigest()
            outcome, replaced = self._publish_row(hook)
        except BaseException:
            self.sha256 = None
            self._discard("publish failed")
            raise
        if outcome != "published":
            self.sha256 = None
            self._discard(outcome)
            return False
        self._state = _State.PUBLISHED
        if self._root is not None:
            for old in replaced:
                with suppress(FileNotFoundError):
                    _file_path(self._root, self.job_id, self.name, old).unlink()
        logger.info(
            "artifact.published artifact_id=%s job_id=%s attempt=%d name=%s size=%d store=%s",
            self.id,
            self.job_id,
            self.attempt,
            self.name,
            self.size,
            self.store.value,
        )
        return True

    def _finish_bytes(self) -> None:
        if self._file is None:
            if self._buffer:
                self._put_chunk(self._take_buffer())
            return
        assert self._root is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._close_file()
        temp = _temp_path(self._root, self.job_id, self.name, self.id)
        try:
            os.replace(temp, _file_path(self._root, self.job_id, self.name, self.id))
        except FileNotFoundError:
            self._lose()  # its row was deleted, and its file with it
            return
        _fsync_dir(temp.parent)

    def _publish_row(self, hook: OnPublish | None) -> tuple[str, list[uuid.UUID]]:
        assert self.sha256 is not None
        with session_scope(self._factory) as session:
            repo = ArtifactRepository(session)
            if not repo.lock_running_attempt(self.job_id, self.attempt):
                return "stale attempt", []
            if repo.lock_writing(self.id) is None:
                return "row gone", []
            replaced = [a.id for a in repo.ready_named(self.job_id, self.name)]
            repo.delete(replaced)
            repo.mark_ready(self.id, size=self.size, sha256=self.sha256, now=utc_now())
            if hook is not None:
                hook(session)
        return "published", replaced

    def discard(self) -> None:
        """Throw away what was written (its row, chunks and file); nothing is published."""
        self._discard("discarded by the caller")

    def _discard(self, reason: str) -> None:
        # Never raises: it runs while another exception propagates. What it cannot
        # remove stays a ``writing`` row, which prune_orphans collects.
        if self._state in (_State.PUBLISHED, _State.DISCARDED):
            return
        self._state = _State.DISCARDED
        self._buffer = bytearray()
        self._close_file()
        try:
            with session_scope(self._factory) as session:
                repo = ArtifactRepository(session)
                removed = repo.delete_writing(self.id)
                # a publish whose commit raised may still have committed
                keep_file = not removed and repo.state_of(self.id) is ArtifactState.READY
        except Exception:
            logger.exception(
                "artifact.discard_failed artifact_id=%s job_id=%s name=%s: left to prune_orphans",
                self.id,
                self.job_id,
                self.name,
            )
            return
        if self._root is not None and not keep_file:
            for path in _both_paths(self._root, self.job_id, self.name, self.id):
                with suppress(OSError):
                    path.unlink(missing_ok=True)
        logger.info(
            "artifact.discarded artifact_id=%s job_id=%s attempt=%d name=%s: %s",
            self.id,
            self.job_id,
            self.attempt,
            self.name,
            reason,
        )

    def _close_file(self) -> None:
        if self._file is not None:
            with suppress(OSError):
                self._file.close()
            self._file = None

    # ------------------------------------------------------------------ context and closing

    def close(self) -> None:
        """Close the writer; an unpublished artifact is discarded (never half-published)."""
        if self.closed:
            return
        if self._state is _State.OPEN:
            self._discard("closed before publish")
        self._close_file()
        super().close()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.publish()
            else:
                self._discard(f"{exc_type.__name__} in the writer's block")
        finally:
            self.close()

    def __del__(self) -> None:
        # io.IOBase.__del__ would close(), and so talk to the database from a
        # finalizer; a writer dropped without close() leaves its row to prune_orphans.
        self._close_file()


def open_artifact_writer(
    factory: sessionmaker[Session],
    settings: Settings,
    *,
    job_id: uuid.UUID,
    attempt: int,
    name: str,
    meta: Mapping[str, Any] | None = None,
    on_publish: OnPublish | None = None,
    chunk_size: int = ARTIFACT_CHUNK_BYTES,
) -> ArtifactWriter:
    """Start writing artifact ``name`` of a job under ``attempt``.

    The artifact's ``writing`` row is committed at once; its bytes go to the
    ``dir`` store if ``CLR_ARTIFACT_DIR`` is set, else to database chunks.

    Args:
        factory: sessions on the service's database; each chunk and the publish
            use a short transaction of their own.
        settings: ``artifact_dir`` (the store) and ``max_artifact_bytes`` (the cap).
        job_id: the job the artifact belongs to.
        attempt: the attempt writing it; publishing checks it is still the job's
            running attempt.
        name: ``checkpoint``, ``model``, ``snapshot-3``, ...: letters, digits, ``_``,
            ``.`` and ``-``, up to 128.
        meta: free-form JSON stored with it (iteration, series positions, ...).
        on_publish: called with the session inside the publishing transaction.
        chunk_size: bytes per database chunk (tests and benchmarks use others).

    Returns:
        A writer to use as a context manager.

    Raises:
        JobNotFound: no such job.
        ValueError: a bad ``name``, ``attempt`` or ``chunk_size``.
        FileNotFoundError: ``CLR_ARTIFACT_DIR`` is set but is not a folder.
    """
    _check_name(name)
    if attempt < 0:
        raise ValueError(f"attempt must be >= 0, got {attempt}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    root = _artifact_root(settings)
    store = ArtifactStore.DIR if root is not None else ArtifactStore.DB
    now = utc_now()
    with session_scope(factory) as session:
        repo = ArtifactRepository(session)
        if not repo.job_exists(job_id):
            raise JobNotFound(f"no job {job_id}")
        artifact = repo.add(
            Artifact(
                job_id=job_id,
                name=name,
                attempt=attempt,
                state=ArtifactState.WRITING,
                store=store,
                size=0,
                chunk_size=chunk_size if store is ArtifactStore.DB else 0,
                meta=dict(meta or {}),
                created_at=now,
                updated_at=now,
            )
        )
    try:
        return ArtifactWriter(factory, settings, artifact, root=root, on_publish=on_publish)
    except BaseException:
        with session_scope(factory) as session:
            ArtifactRepository(session).delete_writing(artifact.id)
        raise


# --------------------------------------------------------------------------- reading


class _ChunkReader(io.RawIOBase, BinaryIO):
    """A seekable read-only view of a ``db``-store artifact, one chunk fetched at a time."""

    def __init__(self, factory: sessionmaker[Session], artifact: Artifact) -> None:
        super().__init__()
        self._factory = factory
        self._id = artifact.id
        self._what = f"artifact {artifact.name!r} of job {artifact.job_id}"
        self._size = artifact.size
        self._chunk_size = artifact.chunk_size
        self._pos = 0
        self._seq = -1
        self._chunk = memoryview(b"")

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET, /) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed artifact reader")
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"whence must be 0, 1 or 2, got {whence}")
        if pos < 0:
            raise ValueError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed artifact reader")
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view) and self._pos < self._size:
            seq, start = divmod(self._pos, self._chunk_size)
            chunk = self._fetch(seq)
            take = min(len(view) - done, len(chunk) - start)
            view[done : done + take] = chunk[start : start + take]
            done += take
            self._pos += take
        return done

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0:
            return self.readall()
        out = bytearray(min(size, max(self._size - self._pos, 0)))
        n = self.readinto(out)
        return bytes(out) if n == len(out) else bytes(out[:n])

    def readall(self) -> bytes:
        return self.read(max(self._size - self._pos, 0))

    def _fetch(self, seq: int) -> memoryview:
        if seq != self._seq:
            with _read_scope(self._factory) as session:
                data = ArtifactRepository(session).get_chunk(self._id, seq)
            if data is None:
                raise ArtifactNotFound(
                    f"{self._what} was replaced or deleted while being read; open it again"
                )
            expected = min(self._chunk_size, self._size - seq * self._chunk_size)
            if len(data) != expected:
                raise OSError(
                    f"{self._what}: chunk {seq} holds {len(data)} bytes, expected {expected}"
                )
            self._seq, self._chunk = seq, memoryview(data)
        return self._chunk

    def close(self) -> None:
        self._chunk = memoryview(b"")
        self._seq = -1
        super().close()


def _ready(factory: sessionmaker[Session], job_id: uuid.UUID, name: str) -> Artifact:
    with _read_scope(factory) as session:
        return artifact_info(session, job_id, name)


def _open(
    settings: Settings, factory: sessionmaker[Session], artifact: Artifact
) -> tuple[Artifact, BinaryIO]:
    if artifact.store is ArtifactStore.DB:
        return artifact, _ChunkReader(factory, artifact)
    path = _file_path(_root_for(settings, artifact), artifact.job_id, artifact.name, artifact.id)
    try:
        file = io.FileIO(path, "r")
    except FileNotFoundError:
        # replaced, and its file removed, between the lookup and the open?
        current = _ready(factory, artifact.job_id, artifact.name)
        if current.id == artifact.id:
            raise
        return _open(settings, factory, current)
    size = os.fstat(file.fileno()).st_size
    if size != artifact.size:
        file.close()
        raise OSError(f"{path} holds {size} bytes, the artifact {artifact.size}")
    return artifact, file


def open_artifact_reader(
    factory: sessionmaker[Session], settings: Settings, *, job_id: uuid.UUID, name: str
) -> BinaryIO:
    """A seekable binary file of the job's ready artifact ``name`` (``torch.load`` reads it).

    ``db`` store: each chunk is fetched when first read, in a short read-only
    transaction; one chunk is held at a time. ``dir`` store: the file itself.

    Raises:
        ArtifactNotFound: the job has no ready artifact of that name (also later,
            from a read, if a ``db`` artifact is replaced or deleted meanwhile).
        FileNotFoundError: a ``dir`` artifact on a host without ``CLR_ARTIFACT_DIR``,
            or whose file is gone.
    """
    return _open(settings, factory, _ready(factory, job_id, name))[1]


class ArtifactStream(Iterator[bytes]):
    """An artifact's bytes, a chunk at a time (an HTTP download's body).

    Attributes:
        artifact: the artifact row being streamed (``size`` and ``sha256`` for the
            response headers); it is the one streamed even if it is replaced meanwhile.
    """

    def __init__(self, artifact: Artifact, file: BinaryIO, piece: int) -> None:
        self.artifact = artifact
        self._file = file
        self._piece = piece

    def __next__(self) -> bytes:
        if self._file.closed:
            raise StopIteration
        data = self._file.read(self._piece)
        if not data:
            self._file.close()
            raise StopIteration
        return bytes(data)

    def close(self) -> None:
        """Stop early and release the file."""
        self._file.close()


def stream_artifact(
    factory: sessionmaker[Session], settings: Settings, job_id: uuid.UUID, name: str
) -> ArtifactStream:
    """The job's ready artifact ``name`` as chunks of bytes, each read in a short transaction.

    The artifact is looked up now, so a missing one raises before any byte is sent.

    Raises:
        ArtifactNotFound: the job has no ready artifact of that name (or, during the
            iteration, a ``db`` artifact was replaced or deleted).
    """
    artifact, file = _open(settings, factory, _ready(factory, job_id, name))
    piece = artifact.chunk_size if artifact.store is ArtifactStore.DB else ARTIFACT_CHUNK_BYTES
    return ArtifactStream(artifact, file, piece)


def artifact_info(session: Session, job_id: uuid.UUID, name: str) -> Artifact:
    """The job's ready artifact ``name`` (its metadata, no bytes).

    Raises:
        ArtifactNotFound: the job has none of that name ready.
    """
    artifact = ArtifactRepository(session).get_ready(job_id, name)
    if artifact is None:
        raise ArtifactNotFound(f"job {job_id} has no artifact {name!r}")
    return artifact


def list_artifacts(session: Session, job_id: uuid.UUID) -> list[Artifact]:
    """The job's ready artifacts, by name (half-written ones are not listed)."""
    return ArtifactRepository(session).list_ready(job_id)


# --------------------------------------------------------------------------- deleting


def delete_artifacts(
    session: Session,
    settings: Settings,
    job_id: uuid.UUID,
    *,
    except_names: Collection[str] = (),
) -> int:
    """Delete the job's artifacts, ready or being written, except ``except_names``.

    Rows (and database chunks) go in the caller's transaction; the files of ``dir``
    artifacts are removed once it commits. A writer whose row is deleted publishes
    nothing. Returns how many artifacts were deleted.
    """
    repo = ArtifactRepository(session)
    doomed = repo.of_job(job_id, except_names=except_names)
    deleted = repo.delete([a.id for a in doomed])
    _remove_files_after_commit(session, settings, doomed)
    return deleted


@dataclass(frozen=True)
class PrunedArtifacts:
    """What :func:`prune_orphans` removed.

    Attributes:
        rows: ``writing`` rows of dead writers (with their chunks and files).
        files: files in the artifact folder that no row names any more.
    """

    rows: int
    files: int


def prune_orphans(session: Session, settings: Settings, *, older_than: datetime) -> PrunedArtifacts:
    """Remove what dead writers left: ``writing`` rows idle since ``older_than``, and files.

    A writer records its progress with every chunk (``db`` store) or every
    :data:`DIR_TOUCH_INTERVAL_S` (``dir`` store), so ``older_than`` must leave a
    live writer far more than that (an hour ago is a good cutoff). Files in the
    artifact folder that no row names (their rows were deleted, or their job was,
    by cascade) and that were last modified before ``older_than`` go too, and the
    folders of jobs left with neither files nor rows.

    Rows go in the caller's transaction; their files once it commits.
    """
    older_than = as_utc(older_than, name="older_than")
    repo = ArtifactRepository(session)
    files = 0
    root = _artifact_root(settings)
    if root is not None:
        files = _sweep_files(repo, root, older_than)
    # after the sweep: rows deleted here are not "known" to it, and their files
    # must wait for the commit
    orphans = repo.writing_idle_since(older_than)
    rows = repo.delete([a.id for a in orphans])
    _remove_files_after_commit(session, settings, orphans)
    if rows or files:
        logger.info("artifact.pruned rows=%d files=%d", rows, files)
    return PrunedArtifacts(rows=rows, files=files)


def _sweep_files(repo: ArtifactRepository, root: Path, older_than: datetime) -> int:
    cutoff = older_than.timestamp()
    removed = 0
    for folder in root.iterdir():
        try:
            job_id = uuid.UUID(folder.name)
        except ValueError:
            continue
        if not folder.is_dir():
            continue
        known = repo.ids_of_job(job_id)
        for path in folder.iterdir():
            artifact_id = _artifact_id_of(path.name)
            if artifact_id is None or artifact_id in known:
                continue
            try:
                if path.stat().st_mtime >= cutoff:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            removed += 1
        if not known:
            with suppress(OSError):  # not empty: files of others, or too new to go
                folder.rmdir()
    return removed


def _remove_files_after_commit(
    session: Session, settings: Settings, artifacts: Collection[Artifact]
) -> None:
    in_dir = [a for a in artifacts if a.store is ArtifactStore.DIR]
    if not in_dir:
        return
    root = settings.artifact_dir
    if root is None:
        logger.warning(
            "artifact.files_kept count=%d: CLR_ARTIFACT_DIR is not set here; "
            "prune_orphans on a host that mounts it removes them",
            len(in_dir),
        )
        return
    _unlink_after_commit(
        session, [p for a in in_dir for p in _both_paths(root, a.job_id, a.name, a.id)]
    )
