"""Migrations on both databases: one head, up from empty, down to nothing, and
models that match what the migrations build (pytest-alembic's built-ins, by hand)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session

from core.db import create_db_engine
from core.kinds import CURVE
from core.migrate import (
    MIGRATIONS_DIR,
    alembic_config,
    current_revision,
    downgrade,
    head_revision,
    is_at_head,
    upgrade,
)
from core.models import Base, Job, SeriesChunk, Team
from core.services import read_series
from core.settings import Settings
from tests import database
from tests.builders import make_points

TABLES = {"teams", "api_tokens", "jobs", "series_chunks", "artifacts", "artifact_chunks", "workers"}


@pytest.fixture(params=database.DIALECTS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path, worker_id: str) -> Iterator[str]:
    """A new, empty database of each dialect."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    database.require_postgres()
    name = f"clr_test_{database.NAMESPACE}{worker_id}_migrations"
    yield database.create_database(name)
    database.drop_database(name)


@pytest.fixture
def empty_engine(empty_url: str) -> Iterator[Engine]:
    engine = create_db_engine(empty_url)
    yield engine
    engine.dispose()


def settings_for(url: str, tmp_path: Path) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, database_url=url)


def tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_there_is_a_single_head() -> None:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert heads == [head_revision()]


def test_version_files_have_dated_names() -> None:
    names = sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("*.py"))
    assert names[0] == "2026-11-23-1200_create_jobs.py"
    assert all(len(n) > 16 and n[4] == "-" and n[15] == "_" for n in names)


def test_upgrade_from_empty_to_head(empty_engine: Engine, empty_url: str, tmp_path: Path) -> None:
    assert current_revision(empty_engine) is None
    assert not is_at_head(empty_engine)
    upgrade(settings_for(empty_url, tmp_path))
    assert current_revision(empty_engine) == head_revision()
    assert is_at_head(empty_engine)
    assert tables(empty_engine) == TABLES


def test_downgrade_to_base_leaves_nothing(
    empty_engine: Engine, empty_url: str, tmp_path: Path
) -> None:
    settings = settings_for(empty_url, tmp_path)
    upgrade(settings)
    downgrade(settings, "base")
    assert tables(empty_engine) == set()
    assert current_revision(empty_engine) is None


def test_up_down_up_is_stable(empty_engine: Engine, empty_url: str) -> None:
    config = alembic_config(empty_url)
    script = ScriptDirectory.from_config(config)
    for revision in reversed(list(script.walk_revisions())):
        command.upgrade(config, revision.revision)
        command.downgrade(config, revision.down_revision or "base")
        command.upgrade(config, revision.revision)
    assert is_at_head(empty_engine)


def test_models_match_the_migrations(empty_engine: Engine, empty_url: str) -> None:
    command.upgrade(alembic_config(empty_url), "head")
    with empty_engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, Base.metadata)
    assert diff == []


def test_the_migrated_schema_has_the_named_constraints_and_indexes(
    empty_engine: Engine, empty_url: str
) -> None:
    command.upgrade(alembic_config(empty_url), "head")
    inspector = inspect(empty_engine)
    assert {ix["name"] for ix in inspector.get_indexes("jobs")} >= {
        "ix_jobs_team_id_created_at_id",
        "ix_jobs_team_id_config_key",
        "ix_jobs_status_heartbeat_at",
        "ix_jobs_status_enqueued_at",
    }
    assert {ix["name"] for ix in inspector.get_indexes("jobs")} >= {"ix_jobs_parent_id_created_at"}
    uniques = {tuple(u["column_names"]) for u in inspector.get_unique_constraints("series_chunks")}
    assert ("job_id", "name", "start") in uniques
    checks = {c["name"] for c in inspector.get_check_constraints("jobs")}
    assert {"ck_jobs_status", "ck_jobs_attempt", "ck_jobs_progress"} <= checks
    chunk_checks = {c["name"] for c in inspector.get_check_constraints("series_chunks")}
    assert {"ck_series_chunks_start", "ck_series_chunks_size"} <= chunk_checks


def test_alembic_config_refuses_a_missing_migrations_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("core.migrate.MIGRATIONS_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="no Alembic migrations"):
        alembic_config()


def test_worker_registry_migration_routes_existing_jobs_and_downgrades(
    empty_engine: Engine, empty_url: str
) -> None:
    config = alembic_config(empty_url)
    command.upgrade(config, "3f2a9c1e7b40")
    now = "2026-11-23 12:00:00+00:00"
    with empty_engine.begin() as conn:
        team = uuid.uuid4()
        conn.execute(
            text("INSERT INTO teams (id, name, created_at, updated_at) VALUES (:id, 't', :t, :t)"),
            {"id": _uuid_param(empty_engine, team), "t": now},
        )
        for device in ("cuda", "cpu", "auto"):
            conn.execute(
                text(
                    "INSERT INTO jobs (id, team_id, kind, status, spec, config_key, max_attempts,"
                    " total, queued_at, created_at, updated_at) VALUES (:id, :team, 'range_test',"
                    " 'queued', :spec, :device, 3, 10, :t, :t, :t)"
                ),
                {
                    "id": _uuid_param(empty_engine, uuid.uuid4()),
                    "team": _uuid_param(empty_engine, team),
                    "spec": json.dumps({"workload": "digits_mlp", "device": device}),
                    "device": device,
                    "t": now,
                },
            )
    command.upgrade(config, "1efce9cb9542")
    with empty_engine.connect() as conn:
        rows = conn.execute(text("SELECT config_key, queue, sends FROM jobs")).all()
    assert sorted(rows) == [("auto", "jobs", 1), ("cpu", "jobs.cpu", 1), ("cuda", "jobs.cuda", 1)]
    assert "workers" in tables(empty_engine)
    command.downgrade(config, "3f2a9c1e7b40")
    assert "workers" not in tables(empty_engine)
    columns = {c["name"] for c in inspect(empty_engine).get_columns("jobs")}
    assert not {"queue", "sends"} & columns
    with empty_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 3


def _uuid_param(engine: Engine, value: uuid.UUID) -> str:
    # sa.Uuid() stores 32 hex digits on SQLite and a native uuid on PostgreSQL
    return value.hex if engine.dialect.name == "sqlite" else str(value)


BEFORE_SERIES = "1efce9cb9542"
OLD_KEYS = ("lrs", "losses", "smoothed_losses", "accuracies")


def _old_chunk(start: int, size: int, *, accuracies: bool = True) -> dict[str, Any]:
    """What a curve chunk's JSON ``data`` held before the series: the points' values."""
    values = make_points(start, size, accuracies=accuracies).values
    return dict(zip(OLD_KEYS, (values[f] for f in CURVE.fields), strict=True))


def test_series_migration_turns_curve_chunks_into_curve_series_and_back(
    empty_engine: Engine, empty_url: str
) -> None:
    config = alembic_config(empty_url)
    command.upgrade(config, BEFORE_SERIES)
    team_id, rerun, single, unstarted = (uuid.uuid4() for _ in range(4))
    now = datetime(2026, 11, 29, 10, 0, tzinfo=UTC)
    teams = sa.table("teams", *_columns("id:uuid name created_at updated_at"))
    jobs = sa.table(
        "jobs",
        *_columns(
            "id:uuid team_id:uuid kind status spec:json config_key attempt:int max_attempts:int"
            " progress:int total:int queued_at created_at updated_at"
        ),
    )
    chunks = sa.table(
        "curve_chunks",
        *_columns("job_id:uuid attempt:int seq:int start:int size:int data:json created_at"),
    )
    with empty_engine.begin() as conn:
        conn.execute(teams.insert().values(id=team_id, name="t", created_at=now, updated_at=now))
        for job_id, attempt, progress in ((rerun, 2, 7), (single, 1, 3), (unstarted, 0, 0)):
            conn.execute(
                jobs.insert().values(
                    id=job_id,
                    team_id=team_id,
                    kind="range_test",
                    status="running" if attempt else "queued",
                    spec={"workload": "digits_mlp"},
                    config_key="k",
                    attempt=attempt,
                    max_attempts=3,
                    progress=progress,
                    total=10,
                    queued_at=now,
                    created_at=now,
                    updated_at=now,
                )
            )
        old = [
            # the first attempt of ``rerun`` was lost: its points were unreadable already
            (rerun, 1, 0, 0, 6, True),
            (rerun, 2, 0, 0, 4, True),
            (rerun, 2, 1, 4, 3, True),
            (single, 1, 0, 0, 3, False),
        ]
        conn.execute(
            chunks.insert(),
            [
                {
                    "job_id": job_id,
                    "attempt": attempt,
                    "seq": seq,
                    "start": start,
                    "size": size,
                    "data": _old_chunk(start, size, accuracies=accuracies),
                    "created_at": now,
                }
                for job_id, attempt, seq, start, size, accuracies in old
            ],
        )

    # to head: the ORM models read below have the later migrations' columns too
    command.upgrade(config, "head")
    assert "curve_chunks" not in tables(empty_engine)
    with Session(empty_engine) as session:
        stored = session.scalars(select(SeriesChunk).order_by(SeriesChunk.start)).all()
        assert sorted((c.job_id == rerun, c.name, c.attempt, c.start, c.size) for c in stored) == [
            (False, "curve", 1, 0, 3),
            (True, "curve", 2, 0, 4),
            (True, "curve", 2, 4, 3),
        ]
        assert {c.fields for c in stored} == {",".join(CURVE.fields)}
        points = {j.id: j.series_points for j in session.scalars(select(Job))}
        assert points == {rerun: {"curve": 7}, single: {"curve": 3}, unstarted: {}}
        team = session.get(Team, team_id)
        assert team is not None
        whole = read_series(session, team=team, job_id=rerun, name="curve")
        assert (whole.points, whole.values) == (7, make_points(0, 7).values)
        tail = read_series(session, team=team, job_id=rerun, name="curve", after=5)
        assert tail.values == make_points(5, 2).values
        no_metric = read_series(session, team=team, job_id=single, name="curve")
        assert no_metric.values == make_points(0, 3, accuracies=False).values
        assert no_metric.column("accuracy") is None

    command.downgrade(config, BEFORE_SERIES)
    assert "series_chunks" not in tables(empty_engine)
    assert not {"series_points", "checkpoint", "parent_id"} & {
        c["name"] for c in inspect(empty_engine).get_columns("jobs")
    }
    with empty_engine.connect() as conn:
        rows = conn.execute(sa.select(chunks).order_by(chunks.c.attempt, chunks.c.start)).all()
    back = sorted((r.job_id == rerun, r.attempt, r.seq, r.start, r.size, r.data) for r in rows)
    assert back == [
        (False, 1, 0, 0, 3, _old_chunk(0, 3, accuracies=False)),
        (True, 2, 0, 0, 4, _old_chunk(0, 4)),
        (True, 2, 1, 4, 3, _old_chunk(4, 3)),
    ]


def _columns(spec: str) -> list[sa.ColumnClause[Any]]:
    """Typed columns for ``sa.table`` from ``name[:type]`` words (default: text or time)."""
    types: dict[str, Any] = {
        "uuid": sa.Uuid(),
        "int": sa.Integer(),
        "json": sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(), "postgresql"),
    }
    out = []
    for word in spec.split():
        name, _, kind = word.partition(":")
        if kind:
            out.append(sa.column(name, types[kind]))
        elif name.endswith("_at"):
            out.append(sa.column(name, sa.DateTime(timezone=True)))
        else:
            out.append(sa.column(name, sa.String()))
    return out
