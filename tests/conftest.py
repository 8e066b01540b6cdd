"""Shared test setup: small, deterministic and single-threaded torch; databases.

Database tests get a ``session`` inside an outer transaction that is rolled back
after the test (``join_transaction_mode="create_savepoint"``, so the code under
test may commit). They run once on SQLite and once on PostgreSQL, each migrated
with Alembic once per xdist worker. Tests that need rows other connections can
see use ``committed`` instead: real commits, every table emptied afterwards.
The running service for end-to-end tests comes from the plugin :mod:`tests.services`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402 - the backend must be chosen before anything imports matplotlib
from sqlalchemy import Engine  # noqa: E402
from sqlalchemy.orm import Session, sessionmaker  # noqa: E402

from core.db import create_db_engine, make_session_factory, set_job_sender  # noqa: E402
from core.settings import Settings  # noqa: E402
from tests import database  # noqa: E402

pytest_plugins = ["tests.services"]
"""The running service (``postgres_server``, ``embedded_server``), shared by tests/client and
tests/dashboard: one set of session services per xdist worker."""

# Two xdist workers share two cores: one torch thread each avoids oversubscription.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def postgresql_url(worker_id: str) -> Iterator[str]:
    """A PostgreSQL database of this xdist worker, migrated to head."""
    database.require_postgres()
    # CLR_TEST_NAMESPACE keeps concurrent runs (two checkouts, two agents) apart.
    name = f"clr_test_{database.NAMESPACE}{worker_id}"
    url = database.create_database(name)
    database.migrate(url)
    yield url
    database.drop_database(name)


@pytest.fixture(scope="session")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A SQLite file of this xdist worker, migrated to head."""
    url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'clr-sweep.db'}"
    database.migrate(url)
    return url


@pytest.fixture(scope="session", params=database.DIALECTS)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """An engine on the migrated test database of each dialect in turn."""
    url = request.getfixturevalue(f"{request.param}_url")
    engine = create_db_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    """A session whose every change, commits included, is rolled back after the test."""
    with engine.connect() as connection:
        outer = connection.begin()
        session = Session(
            bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False
        )
        try:
            yield session
        finally:
            session.close()
            outer.rollback()


@pytest.fixture
def committed(engine: Engine) -> Iterator[sessionmaker[Session]]:
    """Sessions that really commit (for concurrency tests); tables emptied afterwards."""
    yield make_session_factory(engine)
    database.wipe(engine)


@pytest.fixture(scope="session")
def postgres_engine(postgresql_url: str) -> Iterator[Engine]:
    """An engine on this worker's PostgreSQL test database (PostgreSQL-only tests)."""
    engine = create_db_engine(postgresql_url)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_committed(postgres_engine: Engine) -> Iterator[sessionmaker[Session]]:
    """``committed`` on PostgreSQL only."""
    yield make_session_factory(postgres_engine)
    database.wipe(postgres_engine)


@pytest.fixture
def sent() -> Iterator[list[tuple[uuid.UUID, str]]]:
    """The messages that leave after commits: ``(job_id, kind)`` in send order.

    A real in-process sender (there is no broker in the domain), installed for the
    test and removed after it.
    """
    messages: list[tuple[uuid.UUID, str]] = []

    def send(job_id: uuid.UUID, kind: str, _device: str) -> None:
        messages.append((job_id, kind))

    previous = set_job_sender(send)
    yield messages
    set_job_sender(previous)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Default settings, no ``.env``, data in a temporary folder."""
    return Settings(_env_file=None, data_dir=tmp_path)
