"""Races between real connections: one claim wins, one idempotent submit inserts.

These tests commit for real (other connections must see the rows) through the
``committed`` fixture, which empties the tables afterwards.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TypeVar

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from core.models import Job, JobStatus, Team
from core.services import Submission, claim_job, reconcile, submit_job
from core.settings import Settings
from tests.builders import T0, make_job, make_team, spec_data

T = TypeVar("T")

THREADS = 6


def race(factory: sessionmaker[Session], work: Callable[[Session], T]) -> list[T]:
    """Run ``work`` in THREADS threads, each on its own connection, started together."""
    barrier = threading.Barrier(THREADS)

    def one() -> T:
        with factory() as session:
            # no statement before the barrier: on SQLite it would BEGIN IMMEDIATE
            # and hold the others back
            barrier.wait(timeout=10)
            result = work(session)
            session.commit()
            return result

    with ThreadPoolExecutor(THREADS) as pool:
        return [f.result(timeout=60) for f in [pool.submit(one) for _ in range(THREADS)]]


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


def queued_job(factory: sessionmaker[Session]) -> Job:
    with factory.begin() as session:
        return make_job(session)


class TestClaimRace:
    def test_exactly_one_of_many_concurrent_claims_wins(
        self, committed: sessionmaker[Session]
    ) -> None:
        job = queued_job(committed)
        workers = iter(f"gpu-{i}" for i in range(THREADS))
        lock = threading.Lock()

        def claim(session: Session) -> str | None:
            with lock:
                worker = next(workers)
            claimed = claim_job(session, job_id=job.id, worker=worker, now=T0)
            return None if claimed is None else claimed.worker

        winners = [w for w in race(committed, claim) if w is not None]
        assert len(winners) == 1
        with committed() as session:
            stored = session.get(Job, job.id)
            assert stored is not None
            assert (stored.status, stored.attempt, stored.worker) == (
                JobStatus.RUNNING,
                1,
                winners[0],
            )

    def test_a_claim_waiting_on_the_row_lock_gets_nothing(
        self, postgres_engine: Engine, postgres_committed: sessionmaker[Session]
    ) -> None:
        # PostgreSQL only: SQLite has no row locks, its writers queue at BEGIN IMMEDIATE
        engine, committed = postgres_engine, postgres_committed
        job = queued_job(committed)
        with committed() as first:
            assert claim_job(first, job_id=job.id, worker="gpu-a", now=T0) is not None
            with ThreadPoolExecutor(1) as pool:

                def second_claim() -> Job | None:
                    with committed() as second:
                        return claim_job(second, job_id=job.id, worker="gpu-b", now=T0)

                pending = pool.submit(second_claim)
                wait_until_blocked_on_a_lock(engine)
                first.commit()
                assert pending.result(timeout=10) is None


class TestIdempotentSubmitRace:
    def test_concurrent_submits_with_one_key_make_one_job(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        with committed.begin() as session:
            team = make_team(session)

        def submit(session: Session) -> tuple[uuid.UUID, bool]:
            mine = session.get(Team, team.id)
            assert mine is not None
            submission = submit_job(
                session,
                team=mine,
                kind="range_test",
                spec=spec_data(),
                settings=settings,
                idempotency_key="same-request",
            )
            return submission.job.id, submission.created

        submissions = race(committed, submit)
        assert len({job_id for job_id, _ in submissions}) == 1
        assert sorted(created for _, created in submissions) == [False] * (THREADS - 1) + [True]
        with committed() as session:
            stmt = select(func.count()).select_from(Job).where(Job.team_id == team.id)
            assert session.scalar(stmt) == 1

    def test_the_loser_of_a_unique_key_race_returns_the_winners_job(
        self,
        postgres_engine: Engine,
        postgres_committed: sessionmaker[Session],
        settings: Settings,
    ) -> None:
        # PostgreSQL only: SQLite serialises writers at BEGIN IMMEDIATE, no such race
        engine, committed = postgres_engine, postgres_committed
        with committed.begin() as session:
            team = make_team(session)

        def submit(session: Session) -> Submission:
            mine = session.get(Team, team.id)
            assert mine is not None
            return submit_job(
                session,
                team=mine,
                kind="range_test",
                spec=spec_data(),
                settings=settings,
                idempotency_key="k",
            )

        with committed() as first:
            winner = submit(first)
            with ThreadPoolExecutor(1) as pool:

                def second_submit() -> tuple[uuid.UUID, bool]:
                    with committed() as second:
                        submission = submit(second)
                        second.commit()
                        return submission.job.id, submission.created

                pending = pool.submit(second_submit)
                wait_until_blocked_on_a_lock(engine)
                first.commit()
                assert winner.created
                assert pending.result(timeout=10) == (winner.job.id, False)


class TestReconcilerRace:
    def test_concurrent_reconcilers_requeue_a_lost_job_once(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        job = queued_job(committed)
        with committed.begin() as session:
            claim_job(session, job_id=job.id, worker="gpu-0", now=T0)
        reports = race(
            committed,
            lambda session: reconcile(session, settings=settings, now=T0 + timedelta(minutes=5)),
        )
        assert sum(len(r.requeued) for r in reports) == 1
        with committed() as session:
            stored = session.get(Job, job.id)
            assert stored is not None
            assert (stored.status, stored.attempt) == (JobStatus.QUEUED, 1)
