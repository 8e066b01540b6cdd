"""ORM models on both databases: UTC times, constraints, JSON, lazy relationships."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from sqlalchemy import Uuid, bindparam, select, text, update
from sqlalchemy.exc import IntegrityError, InvalidRequestError, StatementError
from sqlalchemy.orm import Session

from core.models import Job, JobStatus
from tests.builders import T0, make_job, make_team


class TestUTCDateTime:
    def test_times_come_back_aware_and_in_utc(self, session: Session) -> None:
        paris = timezone(timedelta(hours=1))
        job = make_job(session, started_at=datetime(2026, 11, 23, 13, 30, 0, 123456, paris))
        session.expire_all()
        loaded = session.get(Job, job.id)
        assert loaded is not None
        assert loaded.started_at == datetime(2026, 11, 23, 12, 30, 0, 123456, UTC)
        assert loaded.started_at.tzinfo == UTC
        assert loaded.created_at == T0

    def test_naive_times_are_refused(self, session: Session) -> None:
        with pytest.raises(StatementError, match="naive datetime"):
            make_job(session, started_at=datetime(2026, 11, 23, 12, 0))

    def test_comparisons_in_sql_follow_time_order(self, session: Session) -> None:
        team = make_team(session)
        for minutes in (1, 2, 3):
            make_job(session, team=team, heartbeat_at=T0 + timedelta(minutes=minutes))
        cutoff = (T0 + timedelta(minutes=2)).astimezone(timezone(timedelta(hours=-5)))
        stmt = select(Job.heartbeat_at).where(Job.team_id == team.id, Job.heartbeat_at < cutoff)
        assert session.scalars(stmt).all() == [T0 + timedelta(minutes=1)]


class TestConstraints:
    def test_status_outside_the_lifecycle_is_refused_by_the_database(
        self, session: Session
    ) -> None:
        job = make_job(session)
        stmt = text("UPDATE jobs SET status = 'paused' WHERE id = :id")
        stmt = stmt.bindparams(bindparam("id", type_=Uuid()))
        with pytest.raises(IntegrityError, match="ck_jobs_status"):
            session.execute(stmt, {"id": job.id})

    def test_negative_progress_is_refused(self, session: Session) -> None:
        job = make_job(session)
        with pytest.raises(IntegrityError, match="ck_jobs_progress"):
            session.execute(update(Job).where(Job.id == job.id).values(progress=-1))

    def test_idempotency_keys_are_unique_per_team(self, session: Session) -> None:
        team, other = make_team(session), make_team(session)
        make_job(session, team=team, idempotency_key="k1")
        make_job(session, team=other, idempotency_key="k1")
        make_job(session, team=team, idempotency_key=None)
        make_job(session, team=team, idempotency_key=None)
        with pytest.raises(IntegrityError):
            make_job(session, team=team, idempotency_key="k1")

    def test_foreign_keys_are_enforced(self, session: Session) -> None:
        with pytest.raises(IntegrityError):
            make_job(session, team_id=uuid.uuid4())

    def test_status_loads_as_the_enum(self, session: Session) -> None:
        job = make_job(session, status=JobStatus.RUNNING)
        session.expire_all()
        assert (
            session.scalars(select(Job.status).where(Job.id == job.id)).one() is JobStatus.RUNNING
        )
        assert not job.finished


class TestJSONAndRelationships:
    def test_none_result_is_sql_null(self, session: Session) -> None:
        job = make_job(session, result=None)
        stmt = select(Job.id).where(Job.id == job.id, Job.result.is_(None))
        assert session.scalars(stmt).one() == job.id

    def test_relationships_never_load_lazily(self, session: Session) -> None:
        job = make_job(session)
        session.expire_all()
        loaded = session.get(Job, job.id)
        assert loaded is not None
        with pytest.raises(InvalidRequestError, match="lazy='raise'"):
            _ = loaded.team
