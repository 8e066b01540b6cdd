"""Engines, the unit-of-work scope, and messages sent only after a commit."""

from __future__ import annotations

import logging
import socket
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event, select, text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from core.db import (
    POSTGRES_CONNECT_ARGS,
    create_db_engine,
    enqueue_after_commit,
    get_job_sender,
    make_engine,
    make_session_factory,
    pending_jobs,
    read_only,
    session_scope,
    set_job_sender,
)
from core.models import Team
from core.settings import Settings
from tests.builders import T0, make_team


class TestSqliteEngine:
    def test_creates_the_data_folder_and_sets_wal_and_foreign_keys(self, tmp_path: Path) -> None:
        settings = Settings(_env_file=None, data_dir=tmp_path / "new" / "dir")
        engine = make_engine(settings)
        try:
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert (tmp_path / "new" / "dir" / "clr-sweep.db").is_file()
        finally:
            engine.dispose()

    def test_foreign_keys_can_be_left_off_for_migrations(self, tmp_path: Path) -> None:
        engine = create_db_engine(f"sqlite:///{tmp_path}/x.db", sqlite_foreign_keys=False)
        try:
            with engine.connect() as conn:
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
        finally:
            engine.dispose()

    def test_transactions_take_the_write_lock_at_begin(self, tmp_path: Path) -> None:
        engine = create_db_engine(f"sqlite:///{tmp_path}/x.db", connect_args={"timeout": 0.05})
        try:
            with engine.begin() as first:
                first.exec_driver_sql("SELECT 1")
                with (
                    pytest.raises(OperationalError, match="database is locked"),
                    engine.begin() as second,
                ):
                    second.exec_driver_sql("SELECT 1")
        finally:
            engine.dispose()

    def test_read_only_work_can_ask_for_a_deferred_begin(self, tmp_path: Path) -> None:
        engine = create_db_engine(f"sqlite:///{tmp_path}/x.db", connect_args={"timeout": 0.05})
        try:
            reader = engine.execution_options(sqlite_begin="DEFERRED")
            with engine.begin() as writer, reader.begin() as read:
                writer.exec_driver_sql("CREATE TABLE t (x INTEGER)")
                assert read.exec_driver_sql("SELECT 1").scalar() == 1
        finally:
            engine.dispose()

    def test_a_read_only_session_leaves_the_write_lock_free(self, tmp_path: Path) -> None:
        engine = create_db_engine(f"sqlite:///{tmp_path}/x.db", connect_args={"timeout": 0.05})
        factory = make_session_factory(engine)
        try:
            with engine.begin() as setup:
                setup.exec_driver_sql("CREATE TABLE t (x INTEGER)")
            with factory() as reader, factory() as writer:
                read_only(reader)
                assert reader.execute(text("SELECT count(*) FROM t")).scalar() == 0
                # the reader's transaction is open; a writer still gets the lock
                writer.execute(text("INSERT INTO t VALUES (1)"))
                writer.commit()
                reader.rollback()
                # without read_only the reader would hold it (BEGIN IMMEDIATE)
                reader.execute(text("SELECT count(*) FROM t"))
                with pytest.raises(OperationalError, match="database is locked"):
                    writer.execute(text("INSERT INTO t VALUES (2)"))
        finally:
            engine.dispose()

    def test_unknown_begin_mode_is_refused(self, tmp_path: Path) -> None:
        engine = create_db_engine(f"sqlite:///{tmp_path}/x.db")
        try:
            with pytest.raises(ValueError, match="sqlite_begin must be one of"):
                with engine.execution_options(sqlite_begin="LAZY").begin() as conn:
                    conn.exec_driver_sql("SELECT 1")
        finally:
            engine.dispose()

    def test_memory_database_is_shared_by_every_checkout(self) -> None:
        engine = create_db_engine("sqlite://")
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
                conn.exec_driver_sql("INSERT INTO t VALUES (42)")
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT x FROM t").scalar() == 42
        finally:
            engine.dispose()

    def test_savepoints_roll_back_only_their_part(self, tmp_path: Path) -> None:
        engine = create_db_engine(f"sqlite:///{tmp_path}/x.db")
        try:
            with engine.begin() as conn:
                conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
                conn.exec_driver_sql("INSERT INTO t VALUES (1)")
                nested = conn.begin_nested()
                conn.exec_driver_sql("INSERT INTO t VALUES (2)")
                nested.rollback()
            with engine.connect() as conn:
                assert conn.exec_driver_sql("SELECT x FROM t").scalars().all() == [1]
        finally:
            engine.dispose()


class TestPostgresPool:
    def test_the_pool_is_sized_by_the_settings(self, tmp_path: Path) -> None:
        # building an engine opens no connection: no server needed
        settings = Settings(
            _env_file=None,
            data_dir=tmp_path,
            database_url="postgresql://nobody@127.0.0.1:1/none",
            db_pool_size=7,
            db_max_overflow=3,
        )
        engine = make_engine(settings)
        try:
            assert isinstance(engine.pool, QueuePool)
            assert (engine.pool.size(), engine.pool._max_overflow) == (7, 3)
        finally:
            engine.dispose()

    def test_the_default_pool_serves_a_busy_api(self, tmp_path: Path) -> None:
        settings = Settings(
            _env_file=None, data_dir=tmp_path, database_url="postgresql://nobody@127.0.0.1:1/x"
        )
        engine = make_engine(settings)
        try:
            assert isinstance(engine.pool, QueuePool)
            assert engine.pool.size() == 20  # SQLAlchemy's 5 closed the rest on return
        finally:
            engine.dispose()


class TestPostgresConnect:
    def test_a_server_that_never_answers_fails_the_connection_instead_of_hanging_it(
        self,
    ) -> None:
        # It accepts the TCP connection (the kernel does, for a frozen server too) and
        # never says a word: without a connect timeout, libpq waits forever.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        port = silent.getsockname()[1]
        engine = create_db_engine(f"postgresql+psycopg://nobody@127.0.0.1:{port}/none")
        outcome: list[BaseException] = []

        def connect() -> None:
            try:
                with engine.connect():
                    pass
            except BaseException as exc:  # the thread reports whatever ended it
                outcome.append(exc)

        thread = threading.Thread(target=connect, daemon=True)
        try:
            thread.start()
            thread.join(POSTGRES_CONNECT_ARGS["connect_timeout"] + 25)
            assert not thread.is_alive(), "connecting to a silent server hung"
            assert len(outcome) == 1, outcome
            assert isinstance(outcome[0], OperationalError), outcome
        finally:
            silent.close()
            engine.dispose()

    def test_every_connection_gets_the_options_and_a_caller_may_override_one(self) -> None:
        engine = create_db_engine(
            "postgresql+psycopg://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
        )
        seen: list[dict[str, Any]] = []

        @event.listens_for(engine, "do_connect")
        def capture(_dialect: Any, _record: Any, _cargs: Any, cparams: dict[str, Any]) -> None:
            seen.append(dict(cparams))
            raise ConnectionRefusedError("captured: no need to connect")

        try:
            with pytest.raises(ConnectionRefusedError, match="captured"), engine.connect():
                pass
        finally:
            engine.dispose()
        assert seen, "no connection was attempted"
        assert seen[0]["connect_timeout"] == 2
        for name in ("keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count"):
            assert seen[0][name] == POSTGRES_CONNECT_ARGS[name]


class TestSessionScope:
    def test_commits_on_success(self, committed: sessionmaker[Session]) -> None:
        with session_scope(committed) as session:
            team = make_team(session, name="scope-ok")
        with committed() as session:
            assert session.scalars(select(Team.name).where(Team.id == team.id)).one() == "scope-ok"
        # expire_on_commit=False: still readable after the commit
        assert team.name == "scope-ok"

    def test_rolls_back_on_error(self, committed: sessionmaker[Session]) -> None:
        def failing_unit_of_work() -> None:
            with session_scope(committed) as session:
                make_team(session, name="scope-fail")
                raise RuntimeError("boom")

        with pytest.raises(RuntimeError, match="boom"):
            failing_unit_of_work()
        with committed() as session:
            assert session.scalars(select(Team).where(Team.name == "scope-fail")).all() == []


class TestEnqueueAfterCommit:
    def test_sends_only_after_commit(self, session: Session, sent: list[object]) -> None:
        job_id = uuid.uuid4()
        make_team(session)
        enqueue_after_commit(session, job_id, "range_test")
        assert sent == []
        assert pending_jobs(session) == [(job_id, "range_test")]
        session.commit()
        assert sent == [(job_id, "range_test")]
        assert pending_jobs(session) == []

    def test_rollback_discards(self, session: Session, sent: list[object]) -> None:
        make_team(session)
        enqueue_after_commit(session, uuid.uuid4(), "range_test")
        session.rollback()
        session.commit()
        assert sent == []

    def test_closing_without_commit_discards(self, engine: Engine, sent: list[object]) -> None:
        session = Session(engine)
        session.execute(text("SELECT 1"))
        enqueue_after_commit(session, uuid.uuid4(), "range_test")
        session.close()
        session.execute(text("SELECT 1"))
        session.commit()
        session.close()
        assert sent == []

    def test_a_savepoint_rollback_discards_only_its_own(
        self, session: Session, sent: list[object]
    ) -> None:
        kept, dropped = uuid.uuid4(), uuid.uuid4()
        make_team(session)
        enqueue_after_commit(session, kept, "range_test")
        savepoint = session.begin_nested()
        enqueue_after_commit(session, dropped, "range_test")
        make_team(session, name="dup")
        session.add(Team(name="dup", created_at=T0, updated_at=T0))
        with pytest.raises(IntegrityError):
            session.flush()  # the failed flush rolls the savepoint back
        savepoint.rollback()
        session.commit()
        assert sent == [(kept, "range_test")]

    def test_an_explicit_savepoint_rollback_discards_its_own(
        self, session: Session, sent: list[object]
    ) -> None:
        kept, dropped = uuid.uuid4(), uuid.uuid4()
        make_team(session)
        enqueue_after_commit(session, kept, "range_test")
        savepoint = session.begin_nested()
        enqueue_after_commit(session, dropped, "range_test")
        inner = session.begin_nested()
        enqueue_after_commit(session, uuid.uuid4(), "range_test")
        inner.commit()
        savepoint.rollback()  # takes the released inner savepoint's job with it
        session.commit()
        assert sent == [(kept, "range_test")]

    def test_a_released_savepoint_waits_for_the_real_commit(
        self, session: Session, sent: list[object]
    ) -> None:
        job_id = uuid.uuid4()
        make_team(session)
        with session.begin_nested():
            enqueue_after_commit(session, job_id, "range_test")
        assert sent == []
        session.rollback()  # the outer transaction decides
        session.commit()
        assert sent == []

    def test_a_released_savepoint_is_sent_with_the_commit(
        self, session: Session, sent: list[object]
    ) -> None:
        job_id = uuid.uuid4()
        make_team(session)
        with session.begin_nested():
            enqueue_after_commit(session, job_id, "training")
        session.commit()
        assert sent == [(job_id, "training")]

    def test_a_job_enqueued_twice_is_sent_once(self, session: Session, sent: list[object]) -> None:
        a, b = uuid.uuid4(), uuid.uuid4()
        make_team(session)
        for job_id in (a, b, a):
            enqueue_after_commit(session, job_id, "range_test")
        session.commit()
        assert sent == [(a, "range_test"), (b, "range_test")]

    def test_the_device_preference_travels_with_the_message(self, session: Session) -> None:
        received: list[tuple[uuid.UUID, str, str]] = []

        def send(job_id: uuid.UUID, kind: str, device: str) -> None:
            received.append((job_id, kind, device))

        gpu, anywhere = uuid.uuid4(), uuid.uuid4()
        previous = set_job_sender(send)
        try:
            make_team(session)
            enqueue_after_commit(session, gpu, "range_test", device="cuda")
            enqueue_after_commit(session, anywhere, "range_test")
            session.commit()
        finally:
            set_job_sender(previous)
        assert received == [(gpu, "range_test", "cuda"), (anywhere, "range_test", "auto")]

    def test_a_failing_send_is_logged_and_the_others_still_go(
        self, session: Session, caplog: pytest.LogCaptureFixture
    ) -> None:
        delivered: list[uuid.UUID] = []
        bad, good = uuid.uuid4(), uuid.uuid4()

        def flaky(job_id: uuid.UUID, kind: str, _device: str) -> None:
            assert kind == "range_test"
            if job_id == bad:
                raise ConnectionError("broker down")
            delivered.append(job_id)

        previous = set_job_sender(flaky)
        try:
            make_team(session)
            enqueue_after_commit(session, bad, "range_test")
            enqueue_after_commit(session, good, "range_test")
            with caplog.at_level(logging.ERROR, logger="core.db"):
                session.commit()
        finally:
            set_job_sender(previous)
        assert delivered == [good]
        assert f"job.enqueue_failed job_id={bad}" in caplog.text

    def test_without_a_sender_the_job_is_logged_for_the_reconciler(
        self, session: Session, caplog: pytest.LogCaptureFixture
    ) -> None:
        previous = set_job_sender(None)
        try:
            job_id = uuid.uuid4()
            make_team(session)
            enqueue_after_commit(session, job_id, "range_test")
            with caplog.at_level(logging.WARNING, logger="core.db"):
                session.commit()
        finally:
            set_job_sender(previous)
        assert f"job.enqueue_skipped job_id={job_id}" in caplog.text

    def test_needs_a_transaction(self, engine: Engine) -> None:
        with Session(engine) as session, pytest.raises(RuntimeError, match="transaction"):
            enqueue_after_commit(session, uuid.uuid4(), "range_test")

    def test_set_job_sender_returns_the_previous_one(self) -> None:
        def first(job_id: uuid.UUID, kind: str) -> None:
            del job_id, kind

        original = set_job_sender(first)
        try:
            assert get_job_sender() is first
            assert set_job_sender(None) is first
            assert get_job_sender() is None
        finally:
            set_job_sender(original)
