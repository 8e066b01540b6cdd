"""The worker registry with a real worker: it announces itself, beats, shows what it
holds; queued jobs say where they stand; the reconciler leaves waiting messages alone;
a stale message is dropped before its task runs."""

from __future__ import annotations

import re
import socket
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import pytest
from celery import Celery
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.clock import utc_now
from core.db import session_scope
from core.models import Job, JobStatus, Worker
from core.services import cancel_job, create_token, list_workers, reconcile, submit_job
from core.settings import Settings
from tests.builders import make_team, spec_data
from tests.worker.conftest import WAIT_S, WaitFor, WorkerProcess, finished
from tests.worker.test_tasks import send_again, submit

with warnings.catch_warnings():
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

pytestmark = pytest.mark.worker

T = TypeVar("T")

LONG_SPEC = spec_data(
    params={"width": 8}, num_iter=100_000, start_lr=1e-6, end_lr=1e-5, device="cpu"
)
"""A range test that runs for minutes (tiny LRs never diverge): the worker stays busy."""


def poll(what: str, condition: Callable[[], T | None], worker: WorkerProcess) -> T:
    """``condition()`` once it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + WAIT_S
    while True:
        value = condition()
        if value:
            return value
        if worker.process.poll() is not None:
            pytest.fail(f"the worker exited with {worker.process.returncode}:\n{worker.log_tail()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {WAIT_S} s; worker log:\n{worker.log_tail()}")
        time.sleep(0.05)


def my_row(db: sessionmaker[Session], worker: WorkerProcess) -> Worker | None:
    with session_scope(db) as session:
        row = session.scalars(select(Worker).where(Worker.pid == worker.process.pid)).first()
        if row is not None:
            session.expunge(row)
        return row


@pytest.fixture
def api(db: sessionmaker[Session], worker_settings: Settings) -> Iterator[TestClient]:
    """The API on the worker's database, authenticated as a new team."""
    with session_scope(db) as session:
        secret = create_token(session, team=make_team(session), name="registry").secret
    with TestClient(create_app(worker_settings)) as client:
        client.headers["Authorization"] = f"Bearer {secret}"
        yield client


def submit_via(api: TestClient, spec: dict[str, Any]) -> uuid.UUID:
    response = api.post("/range-tests", json=spec)
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


class TestAnnouncement:
    def test_the_worker_announces_itself_with_its_queues_and_beats(
        self, db: sessionmaker[Session], celery_worker: WorkerProcess
    ) -> None:
        row = poll("the worker's row", lambda: my_row(db, celery_worker), celery_worker)
        host = socket.gethostname()
        assert (row.hostname, row.pid, row.device_kind) == (host, celery_worker.process.pid, "cpu")
        assert row.name.endswith(f"@{host}")
        assert row.queues == ["jobs.cpu", "jobs"]
        assert row.started_at <= row.heartbeat_at
        beat = poll(
            "a later heartbeat",
            lambda: (
                (r := my_row(db, celery_worker)) is not None
                and r.heartbeat_at > row.heartbeat_at
                and r
            ),
            celery_worker,
        )
        assert beat.id == row.id

    @pytest.mark.usefixtures("sender")
    def test_a_busy_worker_shows_the_job_it_runs(
        self, db: sessionmaker[Session], worker_settings: Settings, celery_worker: WorkerProcess
    ) -> None:
        team, job_id = submit_long(db, worker_settings)
        try:
            row = poll(
                "the row to show the job",
                lambda: (
                    (r := my_row(db, celery_worker)) is not None
                    and r.current_job_id == job_id
                    and r
                ),
                celery_worker,
            )
            assert row.idle_since is None
        finally:
            stop_long(db, team, job_id, celery_worker)
        idle = poll(
            "the row to show it idle",
            lambda: (r := my_row(db, celery_worker)) is not None and r.idle_since is not None and r,
            celery_worker,
        )
        assert idle.current_job_id is None
        with session_scope(db) as session:
            views = list_workers(session, settings=worker_settings)
        assert [v.online for v in views if v.worker.id == idle.id] == [True]


def submit_long(db: sessionmaker[Session], settings: Settings) -> tuple[Any, uuid.UUID]:
    with session_scope(db) as session:
        team = make_team(session)
        job = submit_job(
            session, team=team, kind="range_test", spec=LONG_SPEC, settings=settings
        ).job
        session.expunge(team)
    return team, job.id


def stop_long(
    db: sessionmaker[Session], team: Any, job_id: uuid.UUID, worker: WorkerProcess
) -> None:
    with session_scope(db) as session:
        cancel_job(session, team=team, job_id=job_id)

    def done() -> bool:
        with session_scope(db) as session:
            job = session.get(Job, job_id)
            return job is not None and finished(job)

    poll("the long job to stop", done, worker)


class TestWaitingJobs:
    @pytest.mark.usefixtures("sender")
    def test_a_cuda_job_with_only_a_cpu_worker_says_so(
        self, db: sessionmaker[Session], api: TestClient, celery_worker: WorkerProcess
    ) -> None:
        poll("the worker's row", lambda: my_row(db, celery_worker), celery_worker)
        job_id = submit_via(api, spec_data(device="cuda"))
        body = api.get(f"/range-tests/{job_id}").json()
        assert body["status"] == "queued"
        assert body["queue_position"] == 1
        assert body["waiting_reason"] == (
            "no running worker takes jobs.cuda; 1 CPU worker is online"
        )

    @pytest.mark.usefixtures("sender")
    def test_jobs_behind_a_busy_worker_know_their_place_and_are_not_resent(
        self,
        db: sessionmaker[Session],
        worker_settings: Settings,
        api: TestClient,
        celery_worker: WorkerProcess,
        wait_for: WaitFor,
    ) -> None:
        team, long_id = submit_long(db, worker_settings)
        try:
            poll(
                "the worker to hold the long job",
                lambda: (
                    (r := my_row(db, celery_worker)) is not None and r.current_job_id == long_id
                ),
                celery_worker,
            )
            tiny = spec_data(params={"width": 8}, num_iter=20, device="cpu")
            queued = [submit_via(api, tiny) for _ in range(3)]
            bodies = [api.get(f"/range-tests/{job_id}").json() for job_id in queued]
            assert [b["queue_position"] for b in bodies] == [1, 2, 3]
            assert [b["waiting_reason"] for b in bodies] == [
                "next in jobs.cpu; 1 worker takes it, busy",
                "1 job ahead in jobs.cpu; 1 worker takes it, busy",
                "2 jobs ahead in jobs.cpu; 1 worker takes it, busy",
            ]
            # passes well past the re-send delay (the worker counts as live throughout)
            patient = worker_settings.model_copy(update={"heartbeat_timeout_s": 3600.0})
            for minutes in (1, 5, 30):
                with session_scope(db) as session:
                    later = utc_now() + timedelta(minutes=minutes)
                    assert reconcile(session, settings=patient, now=later).resent == []
        finally:
            stop_long(db, team, long_id, celery_worker)
        jobs = [wait_for(job_id, finished) for job_id in queued]
        assert [(j.status, j.attempt, j.sends) for j in jobs] == [(JobStatus.SUCCEEDED, 1, 1)] * 3


class TestStaleMessages:
    @pytest.mark.usefixtures("sender")
    def test_a_message_whose_job_is_not_queued_never_reaches_the_task(
        self,
        db: sessionmaker[Session],
        worker_settings: Settings,
        celery_app: Celery,
        celery_worker: WorkerProcess,
        wait_for: WaitFor,
    ) -> None:
        team, done_id = submit(db, worker_settings)
        wait_for(done_id, finished)
        with session_scope(db) as session:
            cancelled = submit_job(
                session, team=team, kind="range_test", spec=spec_data(), settings=worker_settings
            ).job
            cancel_job(session, team=team, job_id=cancelled.id)
        missing = uuid.uuid4()
        for job_id in (done_id, cancelled.id, missing):
            send_again(celery_app, job_id)
        _, marker_id = submit(db, worker_settings)
        wait_for(marker_id, finished)

        log = celery_worker.log_path.read_text(errors="replace")
        for job_id, status in (
            (done_id, "succeeded"),
            (cancelled.id, "cancelled"),
            (missing, "missing"),
        ):
            assert f"job.skipped_stale job_id={job_id} status={status}" in log
            assert not re.search(rf"job\.claim_skipped job_id={job_id}", log)
        assert f"job.claimed job_id={marker_id}" in log
