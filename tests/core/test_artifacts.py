"""The artifact store on both databases and in both stores (database chunks, a folder).

Writers commit for real (each chunk in a transaction of its own), so these tests
use ``committed`` sessions, whose tables are emptied afterwards; the ``dir`` store
gets a fresh folder per test.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import sys
import textwrap
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import Engine, delete, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from core.artifacts import (
    ARTIFACT_CHUNK_BYTES,
    artifact_info,
    delete_artifacts,
    list_artifacts,
    open_artifact_reader,
    open_artifact_writer,
    prune_orphans,
    stream_artifact,
)
from core.clock import utc_now
from core.db import session_scope
from core.errors import ArtifactNotFound, ArtifactTooLarge, DomainError, JobNotFound, NotFound
from core.models import Artifact, ArtifactChunk, ArtifactState, ArtifactStore, Job, JobStatus
from core.services import claim_job, fail_job
from core.settings import Settings
from tests.builders import make_job

CHUNK = 1000
"""Tiny chunks, so a few kilobytes span several of them."""

REPO_ROOT = Path(__file__).resolve().parents[2]


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture(params=["db", "dir"])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings of each store in turn: database chunks, or a (shared) folder."""
    artifact_dir = None
    if request.param == "dir":
        artifact_dir = tmp_path / "shared"
        artifact_dir.mkdir()
    return Settings(_env_file=None, data_dir=tmp_path / "data", artifact_dir=artifact_dir)


def running_job(factory: sessionmaker[Session]) -> Job:
    """A job claimed by a worker: running, attempt 1."""
    with session_scope(factory) as session:
        job = make_job(session)
        claimed = claim_job(session, job_id=job.id, worker="w1")
        assert claimed is not None
        return claimed


def write(
    factory: sessionmaker[Session],
    settings: Settings,
    job: Job,
    data: bytes,
    *,
    name: str = "checkpoint",
    attempt: int | None = None,
    meta: dict[str, Any] | None = None,
) -> bool:
    """Write ``data`` as artifact ``name`` in uneven pieces; whether it was published."""
    with open_artifact_writer(
        factory,
        settings,
        job_id=job.id,
        attempt=job.attempt if attempt is None else attempt,
        name=name,
        meta=meta,
        chunk_size=CHUNK,
    ) as writer:
        sizes = random.Random(len(data))
        offset = 0
        while offset < len(data):
            step = sizes.choice([1, 7, 999, 1000, 1001, 2500])
            assert writer.write(data[offset : offset + step]) == len(data[offset : offset + step])
            offset += step
    return writer.published


def read(factory: sessionmaker[Session], settings: Settings, job: Job, name: str) -> bytes:
    with open_artifact_reader(factory, settings, job_id=job.id, name=name) as reader:
        return reader.read()


def count(factory: sessionmaker[Session], model: type[Any]) -> int:
    with session_scope(factory) as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def files(settings: Settings) -> list[str]:
    """Every file in the artifact folder, as ``job/name``; empty for the db store."""
    root = settings.artifact_dir
    if root is None:
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def nothing_left_but(factory: sessionmaker[Session], settings: Settings, *ready: Artifact) -> None:
    """Only the ``ready`` artifacts exist: no other rows, chunks or files."""
    with session_scope(factory) as session:
        rows = session.scalars(select(Artifact)).all()
        assert sorted(a.id for a in rows) == sorted(a.id for a in ready)
        assert all(a.state == ArtifactState.READY for a in rows)
        chunks = session.scalar(select(func.count()).select_from(ArtifactChunk))
    db_ready = [a for a in ready if a.store == ArtifactStore.DB]
    assert chunks == sum(-(-a.size // a.chunk_size) for a in db_ready)
    assert files(settings) == sorted(
        f"{a.job_id}/{a.name}.{a.id}" for a in ready if a.store == "dir"
    )


def info(factory: sessionmaker[Session], job: Job, name: str) -> Artifact:
    with session_scope(factory) as session:
        return artifact_info(session, job.id, name)


class TestRoundTrip:
    def test_bytes_across_chunks_read_back_exactly(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = running_job(committed)
        data = payload(10 * CHUNK + 123)
        assert write(committed, settings, job, data, meta={"iteration": 42})

        artifact = info(committed, job, "checkpoint")
        assert artifact.size == len(data)
        assert artifact.sha256 == hashlib.sha256(data).hexdigest()
        assert artifact.attempt == 1
        assert artifact.meta == {"iteration": 42}
        assert artifact.store == ("dir" if settings.artifact_dir else "db")
        assert read(committed, settings, job, "checkpoint") == data
        nothing_left_but(committed, settings, artifact)

    def test_seek_and_read_at_random_offsets(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = running_job(committed)
        data = payload(7 * CHUNK + 5, seed=1)
        write(committed, settings, job, data)
        rng = random.Random(2)
        with open_artifact_reader(committed, settings, job_id=job.id, name="checkpoint") as f:
            assert f.seekable()
            for _ in range(50):
                offset, length = rng.randrange(len(data) + 10), rng.randrange(1, 2 * CHUNK)
                assert f.seek(offset) == offset
                assert f.read(length) == data[offset : offset + length]
                assert f.tell() == min(offset + length, max(offset, len(data)))
            assert f.seek(-10, io.SEEK_END) == len(data) - 10
            assert f.read() == data[-10:]
            assert f.read(5) == b""
            f.seek(CHUNK - 3)
            assert f.seek(6, io.SEEK_CUR) == CHUNK + 3
            assert f.read(4) == data[CHUNK + 3 : CHUNK + 7]

    def test_an_empty_artifact(self, committed: sessionmaker[Session], settings: Settings) -> None:
        job = running_job(committed)
        assert write(committed, settings, job, b"")
        assert info(committed, job, "checkpoint").size == 0
        assert read(committed, settings, job, "checkpoint") == b""

    def test_torch_save_and_load_through_the_store(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = running_job(committed)
        torch.manual_seed(0)
        model = torch.nn.Sequential(
            torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10)
        )
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.randn(8, 32)).sum().backward()
        opt.step()
        state: dict[str, Any] = {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "iteration": 7,
        }
        with open_artifact_writer(
            committed, settings, job_id=job.id, attempt=1, name="checkpoint", chunk_size=4096
        ) as writer:
            torch.save(state, writer)
        assert writer.published
        assert info(committed, job, "checkpoint").size > 4 * 4096

        with open_artifact_reader(committed, settings, job_id=job.id, name="checkpoint") as f:
            loaded: dict[str, Any] = torch.load(f)
        assert loaded["iteration"] == 7
        for key, value in state["model"].items():
            assert torch.equal(loaded["model"][key], value)
        momentum = [s["momentum_buffer"] for s in state["optimizer"]["state"].values()]
        loaded_momentum = [s["momentum_buffer"] for s in loaded["optimizer"]["state"].values()]
        assert all(torch.equal(a, b) for a, b in zip(momentum, loaded_momentum, strict=True))

    def test_stream_yields_the_bytes_chunk_by_chunk(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = running_job(committed)
        data = payload(3 * CHUNK + 1)
        write(committed, settings, job, data)
        stream = stream_artifact(committed, settings, job.id, "checkpoint")
        assert stream.artifact.size == len(data)
        assert stream.artifact.sha256 == hashlib.sha256(data).hexdigest()
        pieces = list(stream)
        assert b"".join(pieces) == data
        if settings.artifact_dir is None:
            assert [len(p) for p in pieces] == [CHUNK, CHUNK, CHUNK, 1]
        else:
            assert len(pieces) == 1  # files stream in ARTIFACT_CHUNK_BYTES pieces
            assert len(data) < ARTIFACT_CHUNK_BYTES

    def test_missing_artifacts_are_404s(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = running_job(committed)
        with pytest.raises(ArtifactNotFound, match="no artifact 'model'") as caught:
            open_artifact_reader(committed, settings, job_id=job.id, name="model")
        assert isinstance(caught.value, NotFound)
        assert caught.value.status == 404
        with pytest.raises(ArtifactNotFound):
            stream_artifact(committed, settings, job.id, "model")
        with pytest.raises(ArtifactNotFound):
            info(committed, job, "model")

    def test_listing_shows_only_ready_artifacts_by_name(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = running_job(committed)
        write(committed, settings, job, b"m", name="model")
        write(committed, settings, job, b"s3", name="snapshot-3")
        write(committed, settings, job, b"c", name="checkpoint")
        writer = open_artifact_writer(committed, settings, job_id=job.id, attempt=1, name="zzz")
        writer.write(b"half")
        with session_scope(committed) as session:
            listed = list_artifacts(session, job.id)
        assert [(a.name, a.size) for a in listed] == [
            ("checkpoint", 1),
            ("model", 1),
            ("snapshot-3", 2),
        ]
        writer.close()


class TestPublish:
    def test_the_old_artifact_is_read_until_the_new_one_is_published(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = running_job(committed)
        old, new = payload(2 * CHUNK + 10, seed=1), payload(3 * CHUNK + 20, seed=2)
        write(committed, settings, job, old)
        old_info = info(committed, job, "checkpoint")

        with open_artifact_writer(
            committed, settings, job_id=job.id, attempt=1, name="checkpoint", chunk_size=CHUNK
        ) as writer:
            writer.write(new)
            writer.flush()
            # every chunk of the new one is stored, and still the old one is read
            assert read(committed, settings, job, "checkpoint") == old
            assert info(committed, job, "checkpoint").id == old_info.id
        assert writer.published
        assert read(committed, settings, job, "checkpoint") == new
        nothing_left_but(committed, settings, info(committed, job, "checkpoint"))

    def test_a_stale_attempt_publishes_nothing(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = running_job(committed)
        stale = open_artifact_writer(
            committed, settings, job_id=job.id, attempt=1, name="checkpoint", chunk_size=CHUNK
        )
        stale.write(payload(3 * CHUNK))
        # the worker of attempt 1 is taken for lost; attempt 2 runs and checkpoints
        with session_scope(committed) as session:
            row = session.get(Job, job.id)
            assert row is not None
            row.status = JobStatus.QUEUED
        with session_scope(committed) as session:
            second = claim_job(session, job_id=job.id, worker="w2")
            assert second is not None
            assert second.attempt == 2
        fresh = payload(CHUNK, seed=9)
        assert write(committed, settings, second, fresh)

        with stale:
            pass  # a clean exit publishes, or tries to
        assert not stale.published
        assert read(committed, settings, job, "checkpoint") == fresh
        assert info(committed, job, "checkpoint").attempt == 2
        nothing_left_but(committed, settings, info(committed, job, "checkpoint"))

    def test_a_finished_job_takes_no_artifact(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = running_job(committed)
        writer = open_artifact_writer(committed, settings, job_id=job.id, attempt=1, name="model")
        writer.write(b"weights")
        with session_scope(committed) as session:
            assert fail_job(session, job_id=job.id, attempt=1, reason="boom") is not None
        assert writer.publish() is False
        assert writer.publish() is False
        writer.close()
        nothing_left_but(committed, settings)

    def test_the_hook_runs_in_the_publishing_transaction(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = running_job(committed)
        seen: list[tuple[int, bool]] = []

        def record(session: Session) -> None:
            # the new artifact is ready in this transaction, not yet committed
            seen.append(
                (artifact_info(session, job.id, "checkpoint").size, session.in_transaction())
            )

        with open_artifact_writer(
            committed, settings, job_id=job.id, attempt=1, name="checkpoint"
        ) as writer:
            writer.write(b"12345")
            assert writer.publish(on_publish=record)
        assert seen == [(5, True)]
        assert writer.published

    def test_a_hook_that_raises_publishes_nothing(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = running_job(committed)
        write(committed, settings, job, b"old")
        old = info(committed, job, "checkpoint")

        def broken(_session: Session) -> None:
            raise RuntimeError("the series write failed")

        with pytest.raises(RuntimeError, match="series write failed"):  # noqa: PT012
            with open_artifact_writer(
                committed, settings, job_id=job.id, attempt=1, name="checkpoint", on_publish=broken
            ) as writer:
                writer.write(b"new")
        assert not writer.published
        assert read(committed, settings, job, "checkpoint") == b"old"
        nothing_left_but(committed, settings, old)

    def test_a_writer_that_raises_leaves_nothing(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = running_job(committed)
        write(committed, settings, job, b"kept", name="model")
        kept = info(committed, job, "model")
        with pytest.raises(RuntimeError, match="out of memory"):  # noqa: PT012
            with open_artifact_writer(
                committed, settings, job_id=job.id, attempt=1, name="checkpoint", chunk_size=CHUNK
            ) as writer:
                writer.write(payload(5 * CHUNK))
                raise RuntimeError("out of memory")
        assert not writer.published
        with pytest.raises(ArtifactNotFound):
            info(committed, job, "checkpoint")
        nothing_left_but(committed, settings, kept)

    def test_closing_before_publishing_discards(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = running_job(committed)
        writer = open_artifact_writer(
            committed, settings, job_id=job.id, attempt=1, name="checkpoint", chunk_size=CHUNK
        )
        writer.write(payload(2 * CHUNK + 1))
        writer.close()
        assert not writer.published
        with pytest.raises(ValueError, match="closed"):
            writer.write(b"more")
        nothing_left_but(committed, settings)

    def test_a_writer_whose_row_was_deleted_publishes_nothing(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = running_job(committed)
        with open_artifact_writer(
            committed, settings, job_id=job.id, attempt=1, name="checkpoint", chunk_size=CHUNK
        ) as writer:
            writer.write(payload(CHUNK))
            with session_scope(committed) as session:
                assert delete_artifacts(session, settings, job.id) == 1
            writer.write(payload(2 * CHUNK))  # accepted and dropped: the caller goes on
        assert not writer.published
        nothing_left_but(committed, settings)


def wait_until_blocked_on_a_lock(engine: Engine, *, timeout: float = 10.0) -> None:
    """Poll PostgreSQL until another session waits on a lock, or fail at the deadline."""
    deadline = time.monotonic() + timeout
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with engine.connect() as conn:
        while time.monotonic() < deadline:
            if conn.execute(query).scalar_one() > 0:
                return
            conn.rollback()
            time.sleep(0.01)
    pytest.fail("no session ever waited on the lock")


class TestPublishRace:
    def test_a_publish_waits_for_a_requeue_in_flight_and_then_publishes_nothing(
        self,
        postgres_committed: sessionmaker[Session],
        postgres_engine: Engine,
        tmp_path: Path,
    ) -> None:
        settings = Settings(_env_file=None, data_dir=tmp_path)
        job = running_job(postgres_committed)
        writer = open_artifact_writer(
            postgres_committed, settings, job_id=job.id, attempt=1, name="model"
        )
        writer.write(b"weights")
        # the reconciler requeues the job, and has not committed yet
        conn = postgres_engine.connect()
        requeue = conn.begin()
        conn.execute(update(Job).where(Job.id == job.id).values(status=JobStatus.QUEUED))
        with ThreadPoolExecutor(1) as pool:
            published = pool.submit(writer.publish)
            try:
                wait_until_blocked_on_a_lock(postgres_engine)
            finally:
                requeue.commit()
                conn.close()
            assert published.result(timeout=30) is False
        writer.close()
        nothing_left_but(postgres_committed, settings)


class TestLimits:
    def test_the_cap_raises_naming_the_artifact_the_size_and_the_setting(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        capped = settings.model_copy(update={"max_artifact_bytes": 2500})
        job = running_job(committed)
        with pytest.raises(ArtifactTooLarge) as caught:  # noqa: PT012
            with open_artifact_writer(
                committed, capped, job_id=job.id, attempt=1, name="model", chunk_size=CHUNK
            ) as writer:
                writer.write(payload(2000))
                writer.write(payload(1000))
        error = caught.value
        assert isinstance(error, DomainError)
        assert (error.status, error.name, error.size, error.limit) == (413, "model", 3000, 2500)
        assert "'model'" in str(error)
        assert "3000 bytes" in str(error)
        assert "CLR_MAX_ARTIFACT_BYTES=2500" in str(error)
        nothing_left_but(committed, settings)

    def test_the_cap_admits_an_artifact_of_exactly_its_size(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        capped = settings.model_copy(update={"max_artifact_bytes": 2500})
        job = running_job(committed)
        assert write(committed, capped, job, payload(2500))

    @pytest.mark.parametrize("name", ["", ".hidden", "a/b", "x" * 129, "snap shot"])
    def test_bad_names_are_refused(
        self, committed: sessionmaker[Session], settings: Settings, name: str
    ) -> None:
        job = running_job(committed)
        with pytest.raises(ValueError, match="^name must be"):
            open_artifact_writer(committed, settings, job_id=job.id, attempt=1, name=name)
        assert count(committed, Artifact) == 0

    def test_an_unknown_job_is_refused(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        missing = uuid.uuid4()
        with pytest.raises(JobNotFound, match=str(missing)):
            open_artifact_writer(committed, settings, job_id=missing, attempt=1, name="model")


class TestDbReads:
    def test_a_reader_of_a_replaced_artifact_is_told_so(
        self, committed: sessionmaker[Session], tmp_path: Path
    ) -> None:
        settings = Settings(_env_file=None, data_dir=tmp_path)
        job = running_job(committed)
        write(committed, settings, job, payload(3 * CHUNK, seed=1))
        reader = open_artifact_reader(committed, settings, job_id=job.id, name="checkpoint")
        assert reader.read(10) == payload(3 * CHUNK, seed=1)[:10]
        write(committed, settings, job, payload(3 * CHUNK, seed=2))
        with pytest.raises(ArtifactNotFound, match="replaced or deleted while being read"):
            reader.read(2 * CHUNK)


class TestDirStore:
    def test_a_reader_of_a_replaced_file_keeps_reading_it(
        self, committed: sessionmaker[Session], tmp_path: Path
    ) -> None:
        shared = tmp_path / "shared"
        shared.mkdir()
        settings = Settings(_env_file=None, data_dir=tmp_path, artifact_dir=shared)
        job = running_job(committed)
        old = payload(3 * CHUNK, seed=1)
        write(committed, settings, job, old)
        with open_artifact_reader(committed, settings, job_id=job.id, name="checkpoint") as f:
            assert f.read(10) == old[:10]
            write(committed, settings, job, payload(3 * CHUNK, seed=2))
            assert f.read() == old[10:]
        assert len(files(settings)) == 1

    def test_a_missing_folder_is_an_error_not_a_new_folder(
        self, committed: sessionmaker[Session], tmp_path: Path
    ) -> None:
        unmounted = tmp_path / "nfs"
        settings = Settings(_env_file=None, data_dir=tmp_path, artifact_dir=unmounted)
        job = running_job(committed)
        with pytest.raises(FileNotFoundError, match="CLR_ARTIFACT_DIR .* is not an existing"):
            open_artifact_writer(committed, settings, job_id=job.id, attempt=1, name="model")
        assert not unmounted.exists()
        assert count(committed, Artifact) == 0

    def test_a_host_without_the_folder_setting_cannot_read_a_file(
        self, committed: sessionmaker[Session], tmp_path: Path
    ) -> None:
        shared = tmp_path / "shared"
        shared.mkdir()
        writer_host = Settings(_env_file=None, data_dir=tmp_path, artifact_dir=shared)
        other_host = Settings(_env_file=None, data_dir=tmp_path)
        job = running_job(committed)
        write(committed, writer_host, job, b"weights", name="model")
        with pytest.raises(FileNotFoundError, match="CLR_ARTIFACT_DIR is not set on this host"):
            open_artifact_reader(committed, other_host, job_id=job.id, name="model")

    def test_deleted_rows_keep_their_files_until_the_commit(
        self, committed: sessionmaker[Session], tmp_path: Path
    ) -> None:
        shared = tmp_path / "shared"
        shared.mkdir()
        settings = Settings(_env_file=None, data_dir=tmp_path, artifact_dir=shared)
        job = running_job(committed)
        write(committed, settings, job, b"m", name="model")
        write(committed, settings, job, b"c", name="checkpoint")
        with session_scope(committed) as session:
            with pytest.raises(RuntimeError, match="undo"):  # noqa: PT012
                with session.begin_nested():
                    assert delete_artifacts(session, settings, job.id) == 2
                    raise RuntimeError("undo")
            assert len(files(settings)) == 2  # the savepoint rolled back: files stay
        with pytest.raises(RuntimeError, match="undo"), session_scope(committed) as session:  # noqa: PT012
            with session.begin_nested():
                assert delete_artifacts(session, settings, job.id) == 2
            assert len(files(settings)) == 2  # a released savepoint waits for the commit
            raise RuntimeError("undo")
        assert len(files(settings)) == 2  # which never came
        with session_scope(committed) as session:
            assert delete_artifacts(session, settings, job.id, except_names=["model"]) == 1
            assert len(files(settings)) == 2  # not committed yet
        assert files(settings) == [f"{job.id}/model.{info(committed, job, 'model').id}"]
        assert read(committed, settings, job, "model") == b"m"


class TestOrphans:
    def test_a_dead_writers_row_and_bytes_are_pruned(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = running_job(committed)
        write(committed, settings, job, b"kept", name="model")
        kept = info(committed, job, "model")
        dead = open_artifact_writer(
            committed, settings, job_id=job.id, attempt=1, name="checkpoint", chunk_size=CHUNK
        )
        dead.write(payload(3 * CHUNK + 1))
        del dead  # the worker was killed: nobody closes it
        assert count(committed, Artifact) == 2

        with session_scope(committed) as session:
            # a writer active within the cutoff is alive
            report = prune_orphans(session, settings, older_than=utc_now() - timedelta(hours=1))
            assert (report.rows, report.files) == (0, 0)
        with session_scope(committed) as session:
            report = prune_orphans(session, settings, older_than=utc_now() + timedelta(seconds=1))
            assert (report.rows, report.files) == (1, 0)
        nothing_left_but(committed, settings, kept)

    def test_deleting_a_job_deletes_its_artifacts(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job, other = running_job(committed), running_job(committed)
        write(committed, settings, job, payload(2 * CHUNK + 1), name="model")
        write(committed, settings, job, payload(CHUNK), name="checkpoint")
        write(committed, settings, other, b"other", name="model")
        with session_scope(committed) as session:
            session.execute(delete(Job).where(Job.id == job.id))
        survivor = info(committed, other, "model")
        with session_scope(committed) as session:
            assert session.scalars(select(Artifact.job_id)).all() == [other.id]
        if settings.artifact_dir is None:
            nothing_left_but(committed, settings, survivor)
            return
        # the cascade cannot remove files: the prune finds them without rows
        assert len(files(settings)) == 3
        with session_scope(committed) as session:
            report = prune_orphans(session, settings, older_than=utc_now() + timedelta(seconds=1))
        assert (report.rows, report.files) == (0, 2)
        nothing_left_but(committed, settings, survivor)
        assert not (settings.artifact_dir / str(job.id)).exists()

    def test_files_newer_than_the_cutoff_are_not_swept(
        self, committed: sessionmaker[Session], tmp_path: Path
    ) -> None:
        shared = tmp_path / "shared"
        shared.mkdir()
        settings = Settings(_env_file=None, data_dir=tmp_path, artifact_dir=shared)
        job = running_job(committed)
        write(committed, settings, job, b"x", name="model")
        stray = shared / str(job.id) / f"model.{uuid.uuid4()}"
        stray.write_bytes(b"from a row deleted a moment ago")
        unrelated = shared / "README"
        unrelated.write_text("not ours")
        with session_scope(committed) as session:
            report = prune_orphans(session, settings, older_than=utc_now() - timedelta(hours=1))
        assert report.files == 0
        assert stray.exists()
        old = utc_now().timestamp() - 7200
        os.utime(stray, (old, old))
        with session_scope(committed) as session:
            report = prune_orphans(session, settings, older_than=utc_now() - timedelta(hours=1))
        assert report.files == 1
        assert not stray.exists()
        assert unrelated.exists()
        assert read(committed, settings, job, "model") == b"x"


READER_SCRIPT = textwrap.dedent(
    """
    import hashlib, json, sys, uuid
    from core.artifacts import open_artifact_reader, open_artifact_writer
    from core.db import create_db_engine, make_session_factory
    from core.settings import Settings

    url, folder, job_id, attempt = sys.argv[1:]
    settings = Settings(_env_file=None, artifact_dir=folder or None)
    engine = create_db_engine(url)
    factory = make_session_factory(engine)
    job_id = uuid.UUID(job_id)
    with open_artifact_reader(factory, settings, job_id=job_id, name="checkpoint") as f:
        f.seek(1234)
        tail = f.read()
        f.seek(0)
        whole = f.read()
    with open_artifact_writer(
        factory, settings, job_id=job_id, attempt=int(attempt), name="reply"
    ) as writer:
        writer.write(hashlib.sha256(whole).digest())
    print(json.dumps({"sha256": hashlib.sha256(whole).hexdigest(), "tail": len(tail)}))
    engine.dispose()
    """
)


class TestAcrossProcesses:
    def test_another_process_reads_what_one_wrote_and_answers(
        self, committed: sessionmaker[Session], settings: Settings, engine: Engine
    ) -> None:
        job = running_job(committed)
        data = payload(5 * CHUNK + 17, seed=3)
        assert write(committed, settings, job, data)
        url = engine.url.render_as_string(hide_password=False)
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        env = {k: v for k, v in env.items() if not k.startswith("CLR_")}
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                READER_SCRIPT,
                url,
                str(settings.artifact_dir or ""),
                str(job.id),
                str(job.attempt),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO_ROOT,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout.strip().splitlines()[-1])
        assert answer == {"sha256": hashlib.sha256(data).hexdigest(), "tail": len(data) - 1234}
        # and this process reads what the other one wrote
        assert read(committed, settings, job, "reply") == hashlib.sha256(data).digest()


class TestSettings:
    def test_the_defaults_keep_bytes_in_the_database_under_a_2_gib_cap(
        self, tmp_path: Path
    ) -> None:
        settings = Settings(_env_file=None, data_dir=tmp_path)
        assert settings.artifact_dir is None
        assert settings.max_artifact_bytes == 2 * 2**30

    def test_the_environment_sets_them(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setenv("CLR_ARTIFACT_DIR", "shared")
        monkeypatch.setenv("CLR_MAX_ARTIFACT_BYTES", "1000")
        settings = Settings(_env_file=None)
        assert settings.artifact_dir == tmp_path / "shared"
        assert settings.max_artifact_bytes == 1000
        monkeypatch.setenv("CLR_ARTIFACT_DIR", " ")
        assert Settings(_env_file=None).artifact_dir is None
