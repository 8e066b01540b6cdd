"""Test databases: a PostgreSQL database per xdist worker, SQLite files, cleanup.

PostgreSQL is reached at ``CLR_TEST_POSTGRES_URL`` (default: the local server,
user postgres, trust auth). When it is unreachable the PostgreSQL variants of
the tests are skipped, unless ``CLR_TEST_REQUIRE_POSTGRES`` is set (CI), which
makes them fail instead.
"""

from __future__ import annotations

import os
from functools import cache

import psycopg
import pytest
from alembic import command
from psycopg import sql
from sqlalchemy import Engine, delete
from sqlalchemy.engine import make_url

from core.migrate import alembic_config
from core.models import Base

ADMIN_URL = os.environ.get(
    "CLR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_POSTGRES = bool(os.environ.get("CLR_TEST_REQUIRE_POSTGRES"))
NAMESPACE = os.environ.get("CLR_TEST_NAMESPACE", "")
"""Prefix of this run's database names (empty in CI; set it to run two suites at once)."""

DIALECTS = ["sqlite", "postgresql"]
"""Every database the domain supports; database tests run on each."""


def _libpq_dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@cache
def postgres_unreachable() -> str | None:
    """Why PostgreSQL cannot be used, or None when it can."""
    try:
        with psycopg.connect(_libpq_dsn(ADMIN_URL), connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"PostgreSQL unreachable at {make_url(ADMIN_URL)!r}: {first_line}"
    return None


def require_postgres() -> None:
    """Skip (or, with CLR_TEST_REQUIRE_POSTGRES, fail) the test without PostgreSQL."""
    reason = postgres_unreachable()
    if reason is not None:
        if REQUIRE_POSTGRES:
            pytest.fail(f"{reason} (CLR_TEST_REQUIRE_POSTGRES is set)")
        pytest.skip(reason)


def database_url(name: str) -> str:
    """URL of database ``name`` on the test server."""
    return make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def create_database(name: str) -> str:
    """A new, empty database (any old one of that name is dropped first); its URL."""
    with psycopg.connect(_libpq_dsn(ADMIN_URL), autocommit=True) as conn:
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
    return database_url(name)


def drop_database(name: str) -> None:
    """Drop database ``name``, disconnecting whoever is still on it."""
    with psycopg.connect(_libpq_dsn(ADMIN_URL), autocommit=True) as conn:
        ident = sql.Identifier(name)
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))


def migrate(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` with Alembic (never ``create_all``)."""
    command.upgrade(alembic_config(url), revision)


def wipe(engine: Engine) -> None:
    """Delete every row, children first (after tests that really commit)."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(delete(table))
