"""``Heartbeats``: a claimed job beats between progress reports (real databases)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db import session_scope
from core.models import Job, Team
from core.services import cancel_job, claim_job
from tests.builders import make_job
from worker.jobs import Heartbeats, ProgressReporter


def _until(condition: Callable[[], bool], *, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not true after {timeout_s} s")
        time.sleep(0.01)


def _claimed(committed: sessionmaker[Session]) -> ProgressReporter:
    with session_scope(committed) as session:
        job = make_job(session)
        claimed = claim_job(session, job_id=job.id, worker="test:1", device="cpu")
        assert claimed is not None
        return ProgressReporter(committed, job_id=job.id, attempt=claimed.attempt)


def _heartbeat_at(committed: sessionmaker[Session], reporter: ProgressReporter) -> object:
    with session_scope(committed) as session:
        job = session.get(Job, reporter.job_id)
        assert job is not None
        return job.heartbeat_at


def test_beats_while_the_job_sends_no_progress(committed: sessionmaker[Session]) -> None:
    reporter = _claimed(committed)
    first = _heartbeat_at(committed, reporter)
    with Heartbeats(reporter, interval_s=0.01) as beats:
        _until(lambda: beats.beats >= 3)
    assert _heartbeat_at(committed, reporter) != first
    count = beats.beats
    time.sleep(0.05)
    assert beats.beats == count  # the thread stopped with the block
    assert not reporter.should_stop()


def test_a_cancel_request_reaches_should_stop(committed: sessionmaker[Session]) -> None:
    reporter = _claimed(committed)
    with Heartbeats(reporter, interval_s=0.01):
        with session_scope(committed) as session:
            job = session.get(Job, reporter.job_id)
            assert job is not None
            team = session.get(Team, job.team_id)
            assert team is not None
            cancel_job(session, team=team, job_id=job.id)
        _until(reporter.should_stop)
    assert reporter.ack.cancel_requested
