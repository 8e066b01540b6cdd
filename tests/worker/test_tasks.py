"""``range_test.run`` end to end: a real worker, Redis and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker

from core.db import session_scope
from core.models import Job, JobStatus, Team
from core.services import cancel_job, get_bounds, read_series, submit_job
from core.settings import Settings
from core.specs import RangeTestOutcome
from tests.builders import make_team, spec_data
from tests.worker.conftest import WaitFor, finished
from worker.celery_app import JOBS_QUEUE, RANGE_TEST_TASK

pytestmark = pytest.mark.worker

NUM_ITER = 30


def tiny_spec(**overrides: object) -> dict[str, object]:
    return spec_data(
        params={"width": 8}, num_iter=NUM_ITER, start_lr=1e-4, end_lr=10.0, **overrides
    )


def submit(
    db: sessionmaker[Session], settings: Settings, **overrides: object
) -> tuple[Team, uuid.UUID]:
    with session_scope(db) as session:
        team = make_team(session)
        job = submit_job(
            session, team=team, kind="range_test", spec=tiny_spec(**overrides), settings=settings
        ).job
    return team, job.id


def send_again(app: Celery, job_id: uuid.UUID) -> None:
    """A second delivery of the job's message (a redelivery, or a resend racing the first)."""
    app.send_task(RANGE_TEST_TASK, args=[str(job_id)], queue=JOBS_QUEUE)


class TestRangeTestRun:
    @pytest.mark.usefixtures("sender")
    def test_submitted_job_runs_to_success_with_curve_and_result(
        self,
        db: sessionmaker[Session],
        worker_settings: Settings,
        wait_for: WaitFor,
    ) -> None:
        team, job_id = submit(db, worker_settings)

        job = wait_for(job_id, finished)

        assert job.status == JobStatus.SUCCEEDED, job.error
        assert job.attempt == 1
        assert job.started_at is not None
        assert job.finished_at is not None
        assert job.started_at <= job.finished_at
        outcome = RangeTestOutcome.model_validate(job.result)
        with session_scope(db) as session:
            curve = read_series(session, team=team, job_id=job_id, name="curve")
            lrs, accuracies = curve.column("lr"), curve.column("accuracy")
            assert curve.attempt == 1
            assert lrs is not None
            assert len(lrs) == outcome.summary.steps_run == job.progress == curve.points
            assert job.series_points == {"curve": job.progress}
            assert lrs == sorted(lrs)
            assert lrs[0] == pytest.approx(1e-4)
            assert accuracies is not None
            assert len(accuracies) == len(lrs)
            if outcome.suggestions is not None:
                bounds = get_bounds(session, team=team, job_id=job_id)
                assert 0 < bounds.suggestions.default.base_lr < bounds.suggestions.default.max_lr
            else:
                assert outcome.no_bounds_reason

    @pytest.mark.usefixtures("sender")
    def test_duplicate_delivery_runs_the_job_once(
        self,
        db: sessionmaker[Session],
        worker_settings: Settings,
        celery_app: Celery,
        wait_for: WaitFor,
    ) -> None:
        team, job_id = submit(db, worker_settings)
        send_again(celery_app, job_id)
        # a job submitted after both messages finishes after both were handled (one solo worker,
        # one FIFO queue)
        _, marker_id = submit(db, worker_settings)

        wait_for(marker_id, finished)
        job = wait_for(job_id, finished)

        assert job.status == JobStatus.SUCCEEDED
        assert job.attempt == 1
        with session_scope(db) as session:
            curve = read_series(session, team=team, job_id=job_id, name="curve")
            assert curve.size == job.progress

    def test_job_cancelled_while_queued_is_skipped(
        self,
        db: sessionmaker[Session],
        worker_settings: Settings,
        celery_app: Celery,
        wait_for: WaitFor,
    ) -> None:
        # no sender installed: the job stays queued until its message is sent by hand
        team, job_id = submit(db, worker_settings)
        with session_scope(db) as session:
            cancel_job(session, team=team, job_id=job_id)
        send_again(celery_app, job_id)
        _, marker_id = submit(db, worker_settings)
        send_again(celery_app, marker_id)

        wait_for(marker_id, finished)

        with session_scope(db) as session:
            job = session.get(Job, job_id)
            assert job is not None
            assert job.status == JobStatus.CANCELLED
            assert job.attempt == 0
            assert job.started_at is None
            assert read_series(session, team=team, job_id=job_id, name="curve").column("lr") == []

    def test_spec_this_worker_cannot_run_fails_with_reason(
        self,
        db: sessionmaker[Session],
        worker_settings: Settings,
        celery_app: Celery,
        wait_for: WaitFor,
    ) -> None:
        # Valid when submitted (the API had the workload), unknown to this worker: a
        # plug-in workload installed on one side only.
        _, job_id = submit(db, worker_settings)  # no sender: sent below, once changed
        with session_scope(db) as session:
            row = session.get(Job, job_id)
            assert row is not None
            row.spec = {**row.spec, "workload": "plugin_only_on_the_api"}
        send_again(celery_app, job_id)

        job = wait_for(job_id, finished)

        assert job.status == JobStatus.FAILED
        assert job.attempt == 1
        assert job.error is not None
        assert "plugin_only_on_the_api" in job.error
        assert "workload" in job.error
