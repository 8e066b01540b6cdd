"""Run and inspect the Alembic migrations from Python.

The API refuses to start on a database that is not at head, and its readiness
check asks :func:`is_at_head`; ``clr-sweep`` and the embedded mode call
:func:`upgrade`. The migrations live in the repository's ``migrations/``
folder, beside this package.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

from core.settings import Settings

__all__ = [
    "MIGRATIONS_DIR",
    "alembic_config",
    "current_revision",
    "downgrade",
    "head_revision",
    "is_at_head",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
"""The Alembic script folder (``script_location``)."""


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for this project's migrations, without ``alembic.ini``.

    No ini file means Alembic leaves the process's logging alone.

    Args:
        url: the database to migrate; by default the settings' database.

    Raises:
        FileNotFoundError: the migrations folder is missing (an install without the
            repository's ``migrations/``).
    """
    if not (MIGRATIONS_DIR / "env.py").is_file():
        raise FileNotFoundError(f"no Alembic migrations at {MIGRATIONS_DIR}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.attributes["url"] = url
    return config


def upgrade(settings: Settings, revision: str = "head") -> None:
    """Migrate the settings' database up to ``revision``."""
    command.upgrade(alembic_config(settings.db_url), revision)


def downgrade(settings: Settings, revision: str) -> None:
    """Migrate the settings' database down to ``revision`` (``"base"``: empty)."""
    command.downgrade(alembic_config(settings.db_url), revision)


def head_revision() -> str:
    """The newest revision in ``migrations/versions``.

    Raises:
        RuntimeError: the scripts have no head, or more than one.
    """
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    if len(heads) != 1:
        raise RuntimeError(f"expected one migration head, found {len(heads)}: {heads}")
    return heads[0]


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at; None for a database never migrated."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def is_at_head(engine: Engine) -> bool:
    """Whether the database is migrated to the newest revision."""
    return current_revision(engine) == head_revision()
