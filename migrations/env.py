"""Alembic environment: runs migrations against the configured database.

The URL comes from ``config.attributes["url"]`` when a caller (the tests,
:mod:`core.migrate`) sets it, otherwise from the settings (``CLR_DATABASE_URL``,
or the embedded SQLite file). SQLite gets batch mode, since it cannot ALTER
most things in place, and its foreign keys are off while migrating, as batch
mode's table copies require.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.pool import NullPool

from core.db import create_db_engine
from core.models import Base
from core.settings import get_settings

config = context.config

if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    # keep the loggers of an application that runs migrations in-process
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = config.attributes.get("url")
    return str(url) if url is not None else get_settings().db_url


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    dialect = connection.dialect.name if connection is not None else (url or "").split(":")[0]
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        compare_type=True,
        render_as_batch=dialect.startswith("sqlite"),
        # SQLite can roll DDL back too (core.db opens real transactions), so each
        # migration is all or nothing on both databases
        transactional_ddl=True,
        literal_binds=connection is None,
        dialect_opts={"paramstyle": "named"} if connection is None else {},
    )


def run_migrations_offline() -> None:
    """Emit the SQL to stdout (``alembic upgrade head --sql``)."""
    _configure(url=_url())
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Apply the migrations over a connection."""
    engine = create_db_engine(_url(), poolclass=NullPool, sqlite_foreign_keys=False)
    try:
        with engine.connect() as connection:
            _configure(connection=connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
