"""The announcer's thread on both databases: it announces, beats, and leaves on stop."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.clock import utc_now
from core.db import session_scope
from core.models import Worker
from core.queues import worker_queues
from core.services import WorkerInfo
from worker.announce import Announcer, job_id_of

DEADLINE_S = 30.0


def row(factory: sessionmaker[Session], worker_id: uuid.UUID) -> Worker | None:
    with session_scope(factory) as session:
        found = session.get(Worker, worker_id)
        if found is not None:
            session.expunge(found)
        return found


def wait_for(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {DEADLINE_S} s")
        time.sleep(0.02)


def test_announces_beats_and_removes_its_row(committed: sessionmaker[Session]) -> None:
    info = WorkerInfo(
        id=uuid.uuid4(),
        name="gpu0.1@host",
        hostname="host",
        pid=1,
        queues=tuple(worker_queues("cuda")),
        started_at=utc_now(),
    )
    announcer = Announcer(committed, info, interval_s=0.05)
    announcer.start()
    try:
        wait_for("the row", lambda: row(committed, info.id) is not None)
        first = row(committed, info.id)
        assert first is not None
        assert (first.device_kind, first.queues) == ("cuda", ["jobs.cuda", "jobs", "jobs.cpu"])
        assert first.current_job_id is None
        assert first.idle_since == info.started_at  # free since it started: nothing fetched
        wait_for("a later beat", lambda: announcer.beats >= 3)
        later = row(committed, info.id)
        assert later is not None
        assert later.heartbeat_at > first.heartbeat_at
        assert later.idle_since == info.started_at
    finally:
        announcer.stop()
    assert row(committed, info.id) is None


def test_a_fetched_message_moves_the_time_it_is_free_since(
    committed: sessionmaker[Session],
) -> None:
    info = WorkerInfo(uuid.uuid4(), "cpu1.1@host", "host", 1, ("jobs.cpu", "jobs"), utc_now())
    announcer = Announcer(committed, info, interval_s=3600)
    start = announcer.observe(utc_now())[1]
    job_id = uuid.uuid4()
    announcer.received(job_id)  # a job came and went between two looks
    now = utc_now()
    assert announcer.observe(now) == (None, now)
    assert start == info.started_at


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["2f1c6b9e-6f0e-4a53-9a55-0b1f7f0e8f11"],
            uuid.UUID("2f1c6b9e-6f0e-4a53-9a55-0b1f7f0e8f11"),
        ),
        ([], None),
        (None, None),
        (["not-a-uuid"], None),
        ([42], None),
    ],
)
def test_job_id_of(args: list[object] | None, expected: uuid.UUID | None) -> None:
    assert job_id_of(args) == expected
