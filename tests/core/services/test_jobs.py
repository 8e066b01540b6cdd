"""The job lifecycle on both databases: every guard refuses what it should and
changes nothing when it does."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from pydantic import Field, ValidationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from core.db import set_job_sender
from core.errors import (
    IdempotencyConflict,
    InvalidInput,
    InvalidJobSpec,
    JobConflict,
    JobNotFound,
    NotReady,
)
from core.kinds import CURVE, JobKind, registered_kind
from core.models import Job, JobStatus, SeriesChunk, Team
from core.series import encode_values
from core.services import (
    Submission,
    acknowledge_cancel,
    cancel_job,
    claim_job,
    fail_job,
    find_bounds,
    finish_job,
    get_bounds,
    get_job,
    heartbeat,
    list_jobs,
    note_worker_lost,
    read_series,
    reconcile,
    report_progress,
    submit_job,
)
from core.services.jobs import MAX_ERROR_LENGTH, SeriesSlice
from core.settings import Settings
from core.specs import JobResult, JobSpec, RangeTestOutcome, RangeTestSpec
from tests.builders import (
    T0,
    curve,
    make_job,
    make_outcome,
    make_points,
    make_team,
    make_worker,
    spec_data,
)

Sent = list[tuple[uuid.UUID, str]]


def count(session: Session, model: type[Any], **where: Any) -> int:
    stmt = select(func.count()).select_from(model).filter_by(**where)
    return int(session.scalar(stmt) or 0)


def running_job(session: Session, *, team: Team | None = None, **overrides: Any) -> Job:
    """A job claimed by ``gpu-0`` at T0 (attempt 1)."""
    job = make_job(session, team=team, **overrides)
    claimed = claim_job(session, job_id=job.id, worker="gpu-0", device="cuda:0", now=T0)
    assert claimed is not None
    return claimed


def read_curve(session: Session, *, team: Team, job_id: uuid.UUID, after: int = 0) -> SeriesSlice:
    """A range test's ``curve`` series from ``after`` on."""
    return read_series(session, team=team, job_id=job_id, name="curve", after=after)


def snapshot(session: Session, job: Job) -> dict[str, Any]:
    session.expire_all()
    fresh = session.get(Job, job.id)
    assert fresh is not None
    return {c.key: getattr(fresh, c.key) for c in Job.__table__.columns}


class TestSubmitJob:
    def test_queues_a_normalised_job_and_sends_its_id_after_commit(
        self, session: Session, settings: Settings, sent: Sent
    ) -> None:
        team = make_team(session)
        submission = submit_job(
            session, team=team, kind="range_test", spec=spec_data(), settings=settings, now=T0
        )
        job = submission.job
        assert submission.created
        expected_spec = RangeTestSpec.model_validate(spec_data())
        assert job.status is JobStatus.QUEUED
        assert (job.attempt, job.max_attempts, job.progress, job.total) == (0, 3, 0, 100)
        assert job.spec["params"] == {"batch_size": 64, "width": 16, "depth": 2}
        assert job.config_key == expected_spec.config_key()
        assert job.workload == "digits_mlp"
        assert job.queued_at == job.enqueued_at == T0
        assert sent == []
        session.commit()
        assert sent == [(job.id, "range_test")]

    def test_accepts_a_spec_model_and_takes_max_attempts_from_settings(
        self, session: Session, tmp_path: Any
    ) -> None:
        settings = Settings(_env_file=None, data_dir=tmp_path, max_attempts=5)
        spec = RangeTestSpec.model_validate(spec_data(num_iter=42))
        job = submit_job(
            session, team=make_team(session), kind="range_test", spec=spec, settings=settings
        ).job
        assert (job.total, job.max_attempts) == (42, 5)

    def test_invalid_spec_names_each_field_and_stores_nothing(
        self, session: Session, settings: Settings, sent: Sent
    ) -> None:
        team = make_team(session)
        with pytest.raises(InvalidJobSpec) as info:
            submit_job(
                session,
                team=team,
                kind="range_test",
                spec=spec_data(start_lr=1.0, end_lr=0.1, params={"width": 0}),
                settings=settings,
            )
        assert info.value.status == 422
        assert info.value.errors == [
            {"field": "params.width", "reason": "must be >= 1, got 0"},
            {"field": "end_lr", "reason": "start_lr must be below end_lr"},
        ]
        session.commit()
        assert count(session, Job, team_id=team.id) == 0
        assert sent == []

    def test_unknown_kind_is_refused(self, session: Session, settings: Settings) -> None:
        with pytest.raises(InvalidJobSpec) as info:
            submit_job(session, team=make_team(session), kind="sweeps", spec={}, settings=settings)
        assert info.value.errors[0]["field"] == "kind"
        assert "unknown job kind 'sweeps'; known kinds: range_test, sweep, training" in (
            info.value.detail
        )


class TestIdempotency:
    def submit(self, session: Session, team: Team, settings: Settings, **kw: Any) -> Job:
        return self.submission(session, team, settings, **kw).job

    def submission(self, session: Session, team: Team, settings: Settings, **kw: Any) -> Submission:
        spec = kw.pop("spec", spec_data())
        return submit_job(session, team=team, kind="range_test", spec=spec, settings=settings, **kw)

    def test_same_key_and_body_return_the_same_job_once(
        self, session: Session, settings: Settings, sent: Sent
    ) -> None:
        team = make_team(session)
        first = self.submission(session, team, settings, idempotency_key="req-1")
        session.commit()
        again = self.submission(session, team, settings, idempotency_key="req-1")
        session.commit()
        assert (again.job.id, first.created, again.created) == (first.job.id, True, False)
        assert count(session, Job, team_id=team.id) == 1
        assert sent == [(first.job.id, "range_test")]

    def test_a_body_equal_once_normalised_is_the_same_request(
        self, session: Session, settings: Settings
    ) -> None:
        team = make_team(session)
        first = self.submit(session, team, settings, idempotency_key="req-1")
        again = self.submit(
            session,
            team,
            settings,
            idempotency_key="req-1",
            spec={**spec_data(), "batch_size": 64, "seed": 0},
        )
        assert again.id == first.id

    def test_same_key_with_another_body_is_refused_naming_the_key(
        self, session: Session, settings: Settings
    ) -> None:
        team = make_team(session)
        first = self.submit(session, team, settings, idempotency_key="req-1")
        with pytest.raises(IdempotencyConflict) as info:
            self.submit(session, team, settings, idempotency_key="req-1", spec=spec_data(seed=1))
        assert info.value.status == 422
        assert info.value.errors == [
            {
                "field": "Idempotency-Key",
                "reason": f"already used for job {first.id} with a different request",
            }
        ]
        assert count(session, Job, team_id=team.id) == 1

    def test_keys_belong_to_one_team(self, session: Session, settings: Settings) -> None:
        a = self.submit(session, make_team(session), settings, idempotency_key="req-1")
        b = self.submit(session, make_team(session), settings, idempotency_key="req-1")
        assert a.id != b.id

    def test_without_a_key_every_submit_is_a_new_job(
        self, session: Session, settings: Settings
    ) -> None:
        team = make_team(session)
        assert self.submit(session, team, settings).id != self.submit(session, team, settings).id

    @pytest.mark.parametrize("key", ["", "has space", "x" * 256, "naïve"])
    def test_malformed_keys_are_refused(
        self, session: Session, settings: Settings, key: str
    ) -> None:
        with pytest.raises(InvalidInput) as info:
            self.submit(session, make_team(session), settings, idempotency_key=key)
        assert info.value.errors[0]["field"] == "Idempotency-Key"


class TestClaimJob:
    def test_starts_attempt_one(self, session: Session) -> None:
        job = make_job(session)
        claimed = claim_job(session, job_id=job.id, worker="gpu-0", device="cuda:0", now=T0)
        assert claimed is not None
        assert claimed.status is JobStatus.RUNNING
        assert (claimed.attempt, claimed.worker, claimed.device) == (1, "gpu-0", "cuda:0")
        assert claimed.started_at == claimed.heartbeat_at == T0

    def test_a_redelivered_message_runs_nothing_twice(self, session: Session) -> None:
        job = running_job(session)
        before = snapshot(session, job)
        assert claim_job(session, job_id=job.id, worker="gpu-1", now=T0 + timedelta(1)) is None
        assert snapshot(session, job) == before

    @pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
    def test_finished_jobs_are_not_claimed(self, session: Session, status: JobStatus) -> None:
        job = make_job(session, status=status, attempt=1)
        assert claim_job(session, job_id=job.id, worker="gpu-0", now=T0) is None
        assert snapshot(session, job)["status"] is status

    def test_a_missing_job_is_not_claimed(self, session: Session) -> None:
        assert claim_job(session, job_id=uuid.uuid4(), worker="gpu-0") is None

    @pytest.mark.parametrize("worker", ["", "w" * 256])
    def test_worker_name_is_checked(self, session: Session, worker: str) -> None:
        with pytest.raises(ValueError, match="worker must be 1 to 255 characters"):
            claim_job(session, job_id=uuid.uuid4(), worker=worker)


class TestHeartbeat:
    def test_records_the_time_and_reports_no_cancel(self, session: Session) -> None:
        job = running_job(session)
        ack = heartbeat(session, job_id=job.id, attempt=1, now=T0 + timedelta(seconds=5))
        assert (ack.accepted, ack.cancel_requested, ack.should_stop) == (True, False, False)
        assert snapshot(session, job)["heartbeat_at"] == T0 + timedelta(seconds=5)

    def test_reports_a_cancel_request(self, session: Session) -> None:
        team = make_team(session)
        job = running_job(session, team=team)
        cancel_job(session, team=team, job_id=job.id, now=T0)
        ack = heartbeat(session, job_id=job.id, attempt=1, now=T0)
        assert (ack.accepted, ack.cancel_requested, ack.should_stop) == (True, True, True)

    @pytest.mark.parametrize("attempt", [0, 2])
    def test_a_stale_attempt_is_refused_and_changes_nothing(
        self, session: Session, attempt: int
    ) -> None:
        job = running_job(session)
        before = snapshot(session, job)
        ack = heartbeat(session, job_id=job.id, attempt=attempt, now=T0 + timedelta(1))
        assert (ack.accepted, ack.should_stop) == (False, True)
        assert snapshot(session, job) == before

    def test_a_finished_job_refuses_heartbeats(self, session: Session) -> None:
        job = make_job(session, status=JobStatus.SUCCEEDED, attempt=1)
        assert not heartbeat(session, job_id=job.id, attempt=1).accepted


class TestReportProgress:
    def test_appends_chunks_in_order_and_counts_as_a_heartbeat(self, session: Session) -> None:
        job = running_job(session)
        later = T0 + timedelta(seconds=3)
        first = report_progress(session, job_id=job.id, attempt=1, **curve(make_points(0, 4)))
        second = report_progress(
            session, job_id=job.id, attempt=1, **curve(make_points(4, 3)), now=later
        )
        assert first.accepted
        assert second.accepted
        assert not second.cancel_requested
        state = snapshot(session, job)
        assert (state["progress"], state["heartbeat_at"]) == (7, later)
        assert state["series_points"] == {"curve": 7}
        chunks = session.scalars(
            select(SeriesChunk).where(SeriesChunk.job_id == job.id).order_by(SeriesChunk.start)
        ).all()
        assert [(c.name, c.attempt, c.start, c.size) for c in chunks] == [
            ("curve", 1, 0, 4),
            ("curve", 1, 4, 3),
        ]
        assert chunks[1].fields == ",".join(CURVE.fields)
        assert chunks[1].data == encode_values(CURVE.fields, make_points(4, 3).values)

    def test_returns_the_cooperative_cancel_flag(self, session: Session) -> None:
        team = make_team(session)
        job = running_job(session, team=team)
        cancel_job(session, team=team, job_id=job.id)
        ack = report_progress(session, job_id=job.id, attempt=1, **curve(make_points(0, 2)))
        assert (ack.accepted, ack.cancel_requested, ack.should_stop) == (True, True, True)

    def test_a_stale_attempts_chunk_is_refused_and_changes_nothing(self, session: Session) -> None:
        job = running_job(session)
        report_progress(session, job_id=job.id, attempt=1, **curve(make_points(0, 2)))
        before = snapshot(session, job)
        ack = report_progress(session, job_id=job.id, attempt=2, **curve(make_points(2, 2)))
        assert not ack.accepted
        assert snapshot(session, job) == before
        assert count(session, SeriesChunk, job_id=job.id) == 1

    def test_a_chunk_for_a_finished_job_is_refused(self, session: Session) -> None:
        job = running_job(session)
        finish_job(session, job_id=job.id, attempt=1, result=make_outcome())
        assert not report_progress(
            session, job_id=job.id, attempt=1, **curve(make_points(0, 2))
        ).accepted
        assert count(session, SeriesChunk, job_id=job.id) == 0

    def test_a_retried_chunk_is_accepted_but_stored_once(self, session: Session) -> None:
        job = running_job(session)
        for _ in range(2):
            ack = report_progress(session, job_id=job.id, attempt=1, **curve(make_points(0, 5)))
            assert ack.accepted
        assert snapshot(session, job)["progress"] == 5
        assert count(session, SeriesChunk, job_id=job.id) == 1

    @pytest.mark.parametrize(("start", "size"), [(6, 2), (3, 4)])
    def test_gaps_and_partial_overlaps_are_errors(
        self, session: Session, start: int, size: int
    ) -> None:
        job = running_job(session)
        report_progress(session, job_id=job.id, attempt=1, **curve(make_points(0, 5)))
        with pytest.raises(ValueError, match="do not follow the 5 stored"):
            report_progress(session, job_id=job.id, attempt=1, **curve(make_points(start, size)))
        assert snapshot(session, job)["progress"] == 5
        assert count(session, SeriesChunk, job_id=job.id) == 1


class TestFinishAndFail:
    def test_finish_stores_the_result(self, session: Session) -> None:
        job = running_job(session)
        later = T0 + timedelta(minutes=2)
        done = finish_job(session, job_id=job.id, attempt=1, result=make_outcome(), now=later)
        assert done is not None
        state = snapshot(session, job)
        assert state["status"] is JobStatus.SUCCEEDED
        assert state["finished_at"] == later
        assert state["result"] == make_outcome().to_json_dict()

    def test_finish_accepts_the_result_as_a_dict(self, session: Session) -> None:
        job = running_job(session)
        result = make_outcome().to_json_dict()
        assert finish_job(session, job_id=job.id, attempt=1, result=result) is not None
        assert snapshot(session, job)["result"] == result

    def test_an_invalid_result_is_an_error_and_changes_nothing(self, session: Session) -> None:
        job = running_job(session)
        before = snapshot(session, job)
        with pytest.raises(ValidationError):
            finish_job(session, job_id=job.id, attempt=1, result={"summary": {}})
        assert snapshot(session, job) == before

    def test_a_stale_attempt_cannot_finish_or_fail(
        self, session: Session, settings: Settings
    ) -> None:
        job = running_job(session)
        reconcile(session, settings=settings, now=T0 + timedelta(minutes=5))  # lost: requeued
        claim_job(session, job_id=job.id, worker="gpu-1", now=T0 + timedelta(minutes=6))
        before = snapshot(session, job)
        assert before["attempt"] == 2
        assert finish_job(session, job_id=job.id, attempt=1, result=make_outcome()) is None
        assert fail_job(session, job_id=job.id, attempt=1, reason="old worker crashed") is None
        assert snapshot(session, job) == before

    def test_finishing_a_missing_job_changes_nothing(self, session: Session) -> None:
        assert finish_job(session, job_id=uuid.uuid4(), attempt=1, result=make_outcome()) is None

    def test_fail_keeps_the_partial_curve_and_a_readable_reason(self, session: Session) -> None:
        team = make_team(session)
        job = running_job(session, team=team)
        report_progress(session, job_id=job.id, attempt=1, **curve(make_points(0, 30)))
        failed = fail_job(session, job_id=job.id, attempt=1, reason="CUDA out of memory", now=T0)
        assert failed is not None
        state = snapshot(session, job)
        assert (state["status"], state["error"], state["progress"]) == (
            JobStatus.FAILED,
            "CUDA out of memory",
            30,
        )
        got = read_curve(session, team=team, job_id=job.id)
        assert got.values == make_points(0, 30).values

    def test_a_huge_reason_is_cut(self, session: Session) -> None:
        job = running_job(session)
        fail_job(session, job_id=job.id, attempt=1, reason="x" * (MAX_ERROR_LENGTH * 2))
        error = snapshot(session, job)["error"]
        assert len(error) == MAX_ERROR_LENGTH
        assert error.endswith("…")


class TestCancel:
    def test_a_queued_job_is_cancelled_at_once_and_its_message_skipped(
        self, session: Session
    ) -> None:
        team = make_team(session)
        job = make_job(session, team=team)
        cancelled = cancel_job(session, team=team, job_id=job.id, now=T0)
        assert cancelled.status is JobStatus.CANCELLED
        assert cancelled.finished_at == T0
        assert claim_job(session, job_id=job.id, worker="gpu-0") is None

    def test_a_running_job_is_asked_to_stop(self, session: Session) -> None:
        team = make_team(session)
        job = running_job(session, team=team)
        for _ in range(2):  # asking twice is harmless
            asked = cancel_job(session, team=team, job_id=job.id)
            assert (asked.status, asked.cancel_requested) == (JobStatus.RUNNING, True)
        done = acknowledge_cancel(session, job_id=job.id, attempt=1, now=T0)
        assert done is not None
        assert (done.status, done.finished_at) == (JobStatus.CANCELLED, T0)

    def test_the_worker_cannot_cancel_a_job_nobody_cancelled(self, session: Session) -> None:
        job = running_job(session)
        assert acknowledge_cancel(session, job_id=job.id, attempt=1) is None
        assert snapshot(session, job)["status"] is JobStatus.RUNNING

    @pytest.mark.parametrize("status", [JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED])
    def test_a_finished_job_is_a_conflict_naming_its_status(
        self, session: Session, status: JobStatus
    ) -> None:
        team = make_team(session)
        job = make_job(session, team=team, status=status)
        with pytest.raises(JobConflict) as info:
            cancel_job(session, team=team, job_id=job.id)
        assert info.value.status == 409
        assert f"job {job.id} is {status.value}" in info.value.detail
        assert snapshot(session, job)["status"] is status

    def test_another_teams_job_is_not_found(self, session: Session) -> None:
        job = make_job(session)
        with pytest.raises(JobNotFound):
            cancel_job(session, team=make_team(session), job_id=job.id)
        assert snapshot(session, job)["status"] is JobStatus.QUEUED


class TestReconcile:
    def test_resends_queued_jobs_whose_message_is_old(
        self, session: Session, settings: Settings, sent: Sent
    ) -> None:
        make_worker(session)  # idle for an hour: whatever it could fetch is gone
        stale = make_job(session, enqueued_at=T0 - timedelta(seconds=31))
        fresh = make_job(session, enqueued_at=T0 - timedelta(seconds=29))
        never = make_job(session, enqueued_at=None)
        report = reconcile(session, settings=settings, now=T0)
        assert sorted(report.resent) == sorted([stale.id, never.id])
        assert snapshot(session, stale)["enqueued_at"] == T0
        assert snapshot(session, fresh)["enqueued_at"] == T0 - timedelta(seconds=29)
        assert sent == []
        session.commit()
        assert sorted(sent) == sorted([(stale.id, "range_test"), (never.id, "range_test")])
        again = reconcile(session, settings=settings, now=T0 + timedelta(seconds=1))
        assert again.resent == []

    def test_submitted_and_resent_messages_carry_the_device_preference(
        self, session: Session, settings: Settings
    ) -> None:
        received: list[tuple[uuid.UUID, str]] = []
        previous = set_job_sender(lambda job_id, _kind, device: received.append((job_id, device)))
        try:
            team = make_team(session)
            gpu = submit_job(
                session,
                team=team,
                kind="range_test",
                spec=spec_data(device="cuda"),
                settings=settings,
                now=T0,
            ).job
            session.commit()
            make_worker(session)
            stale_cpu = make_job(session, spec=spec_data(device="cpu"), enqueued_at=None)
            reconcile(session, settings=settings, now=T0)
            session.commit()
        finally:
            set_job_sender(previous)
        assert received == [(gpu.id, "cuda"), (stale_cpu.id, "cpu")]

    def test_requeues_a_running_job_whose_heartbeat_stopped(
        self, session: Session, settings: Settings, sent: Sent
    ) -> None:
        lost = running_job(session)
        alive = running_job(session)
        now = T0 + timedelta(seconds=61)
        heartbeat(session, job_id=alive.id, attempt=1, now=T0 + timedelta(seconds=30))
        report = reconcile(session, settings=settings, now=now)
        assert report.requeued == [lost.id]
        state = snapshot(session, lost)
        assert (state["status"], state["attempt"], state["worker"]) == (JobStatus.QUEUED, 1, None)
        assert state["enqueued_at"] == now
        assert snapshot(session, alive)["status"] is JobStatus.RUNNING
        session.commit()
        assert sent == [(lost.id, "range_test")]

    def test_the_next_attempt_starts_a_new_curve_and_fences_off_the_old_worker(
        self, session: Session, settings: Settings
    ) -> None:
        team = make_team(session)
        job = running_job(session, team=team)
        report_progress(session, job_id=job.id, attempt=1, **curve(make_points(0, 10)), now=T0)
        reconcile(session, settings=settings, now=T0 + timedelta(minutes=2))
        # until the next claim, readers still see the lost attempt's points
        assert read_curve(session, team=team, job_id=job.id).size == 10
        again = claim_job(session, job_id=job.id, worker="gpu-1", now=T0 + timedelta(minutes=3))
        assert again is not None
        assert (again.attempt, again.progress) == (2, 0)
        got = read_curve(session, team=team, job_id=job.id)
        assert (got.attempt, got.points, got.column("lr")) == (2, 0, [])
        assert snapshot(session, job)["series_points"] == {}
        assert count(session, SeriesChunk, job_id=job.id) == 0
        assert not heartbeat(session, job_id=job.id, attempt=1).accepted
        assert not report_progress(
            session, job_id=job.id, attempt=1, **curve(make_points(10, 5))
        ).accepted
        assert report_progress(
            session, job_id=job.id, attempt=2, **curve(make_points(0, 5))
        ).accepted

    def test_fails_a_job_lost_max_attempts_times_with_the_reason(
        self, session: Session, settings: Settings
    ) -> None:
        job = running_job(session)
        for attempt in (1, 2, 3):
            lost_at = T0 + timedelta(minutes=10 * attempt)
            report = reconcile(session, settings=settings, now=lost_at)
            if attempt < 3:
                assert report.requeued == [job.id]
                claim_job(session, job_id=job.id, worker=f"gpu-{attempt}", now=lost_at)
            else:
                assert (report.requeued, report.failed) == ([], [job.id])
        state = snapshot(session, job)
        assert state["status"] is JobStatus.FAILED
        assert state["error"] == (
            "worker lost 3 times: last heartbeat at 2026-11-23T12:20:00+00:00 from gpu-2"
        )
        assert state["finished_at"] == T0 + timedelta(minutes=30)

    def test_the_final_reason_quotes_how_the_last_process_died(
        self, session: Session, settings: Settings
    ) -> None:
        job = running_job(session)
        for attempt in (1, 2, 3):
            lost_at = T0 + timedelta(minutes=10 * attempt)
            if attempt == 3:
                note = "the worker process gpu-2 was killed by signal 9 (SIGKILL: out of memory?)"
                assert note_worker_lost(session, job_id=job.id, worker="gpu-2", note=note)
            reconcile(session, settings=settings, now=lost_at)
            if attempt < 3:
                claim_job(session, job_id=job.id, worker=f"gpu-{attempt}", now=lost_at)
        state = snapshot(session, job)
        assert state["status"] is JobStatus.FAILED
        assert state["error"] == (
            "worker lost 3 times: last heartbeat at 2026-11-23T12:20:00+00:00 from gpu-2; "
            "the last: the worker process gpu-2 was killed by signal 9 (SIGKILL: out of memory?)"
        )

    def test_a_lost_job_that_was_asked_to_cancel_is_cancelled(
        self, session: Session, settings: Settings, sent: Sent
    ) -> None:
        team = make_team(session)
        job = running_job(session, team=team)
        cancel_job(session, team=team, job_id=job.id)
        report = reconcile(session, settings=settings, now=T0 + timedelta(minutes=2))
        assert (report.cancelled, report.requeued) == ([job.id], [])
        assert snapshot(session, job)["status"] is JobStatus.CANCELLED
        session.commit()
        assert sent == []

    def test_fails_a_job_past_the_time_limit_even_if_alive(
        self, session: Session, tmp_path: Any
    ) -> None:
        settings = Settings(_env_file=None, data_dir=tmp_path, job_time_limit_s=3600)
        job = running_job(session)
        now = T0 + timedelta(seconds=3600 + 61)
        heartbeat(session, job_id=job.id, attempt=1, now=now)
        report = reconcile(session, settings=settings, now=now)
        assert report.timed_out == [job.id]
        state = snapshot(session, job)
        assert state["status"] is JobStatus.FAILED
        assert state["error"].startswith("ran past the time limit of 3600 s (CLR_JOB_TIME_LIMIT_S)")

    def test_handles_at_most_limit_jobs_per_pass(
        self, session: Session, settings: Settings
    ) -> None:
        make_worker(session)
        for _ in range(3):
            make_job(session, enqueued_at=T0 - timedelta(minutes=5))
        assert len(reconcile(session, settings=settings, now=T0, limit=2).resent) == 2
        assert len(reconcile(session, settings=settings, now=T0, limit=2).resent) == 1


class TestListJobs:
    def test_pages_newest_first_with_cursors(self, session: Session) -> None:
        team = make_team(session)
        jobs = [
            make_job(session, team=team, created_at=T0 + timedelta(minutes=i)) for i in range(5)
        ]
        seen: list[uuid.UUID] = []
        cursor = None
        for expected_size in (2, 2, 1):
            page = list_jobs(session, team=team, limit=2, cursor=cursor)
            assert len(page.items) == expected_size
            seen += [j.id for j in page.items]
            cursor = page.next_cursor
        assert cursor is None
        assert seen == [j.id for j in reversed(jobs)]

    def test_jobs_created_at_the_same_time_are_neither_lost_nor_repeated(
        self, session: Session
    ) -> None:
        team = make_team(session)
        ids = {make_job(session, team=team, created_at=T0).id for _ in range(5)}
        first = list_jobs(session, team=team, limit=3)
        rest = list_jobs(session, team=team, limit=3, cursor=first.next_cursor)
        listed = [j.id for j in first.items + rest.items]
        assert sorted(listed) == sorted(ids)
        assert listed == sorted(listed, reverse=True)
        assert rest.next_cursor is None

    def test_filters_by_status_kind_and_workload(self, session: Session) -> None:
        team = make_team(session)
        queued = make_job(session, team=team)
        running = make_job(session, team=team, status=JobStatus.RUNNING)
        cnn = make_job(session, team=team, spec=spec_data(workload="digits_cnn", params={}))
        by_status = list_jobs(session, team=team, statuses=[JobStatus.RUNNING])
        assert [j.id for j in by_status.items] == [running.id]
        by_workload = list_jobs(session, team=team, workload="digits_mlp")
        assert {j.id for j in by_workload.items} == {queued.id, running.id}
        assert [j.id for j in list_jobs(session, team=team, workload="digits_cnn").items] == [
            cnn.id
        ]
        assert list_jobs(session, team=team, kind="training").items == []

    def test_shows_only_the_teams_own_jobs(self, session: Session) -> None:
        team, other = make_team(session), make_team(session)
        mine = make_job(session, team=team)
        make_job(session, team=other)
        assert [j.id for j in list_jobs(session, team=team).items] == [mine.id]

    @pytest.mark.parametrize("cursor", ["garbage", "e30", "WyJ4IiwgInkiXQ"])
    def test_a_bad_cursor_is_invalid_input(self, session: Session, cursor: str) -> None:
        with pytest.raises(InvalidInput) as info:
            list_jobs(session, team=make_team(session), cursor=cursor)
        assert info.value.errors[0]["field"] == "cursor"

    @pytest.mark.parametrize("limit", [0, 201])
    def test_limit_is_bounded(self, session: Session, limit: int) -> None:
        with pytest.raises(InvalidInput) as info:
            list_jobs(session, team=make_team(session), limit=limit)
        assert info.value.errors[0]["field"] == "limit"


class TestReadCurve:
    def test_reads_from_an_offset(self, session: Session) -> None:
        team = make_team(session)
        job = running_job(session, team=team)
        for start in range(0, 30, 10):
            report_progress(session, job_id=job.id, attempt=1, **curve(make_points(start, 10)))
        got = read_curve(session, team=team, job_id=job.id, after=15)
        expected = make_points(15, 15)
        assert (got.name, got.fields) == ("curve", CURVE.fields)
        assert (got.start, got.next_after, got.points, got.attempt) == (15, 30, 30, 1)
        assert got.column("lr") == expected.values["lr"]
        assert got.column("loss") == expected.values["loss"]
        assert got.column("smoothed_loss") == expected.values["smoothed_loss"]
        assert got.column("accuracy") == expected.values["accuracy"]
        assert read_curve(session, team=team, job_id=job.id, after=30).column("lr") == []

    def test_ten_thousand_points_in_chunks_of_250_read_back_exactly(self, session: Session) -> None:
        team = make_team(session)
        job = running_job(session, team=team, spec=spec_data(num_iter=10_000))
        for start in range(0, 10_000, 250):
            ack = report_progress(
                session, job_id=job.id, attempt=1, **curve(make_points(start, 250))
            )
            assert ack.accepted
        everything = make_points(0, 10_000)
        got = read_curve(session, team=team, job_id=job.id)
        assert got.values == everything.values
        assert all(type(x) is float for x in got.column("lr") or [])
        assert (got.total, got.points, got.next_after) == (10_000, 10_000, 10_000)
        tail = read_curve(session, team=team, job_id=job.id, after=9_990)
        assert (tail.start, tail.values) == (9_990, make_points(9_990, 10).values)
        assert count(session, SeriesChunk, job_id=job.id) == 40

    def test_points_without_a_metric_have_no_accuracies(self, session: Session) -> None:
        team = make_team(session)
        job = running_job(session, team=team)
        points = make_points(0, 3, accuracies=False)
        report_progress(session, job_id=job.id, attempt=1, **curve(points))
        got = read_curve(session, team=team, job_id=job.id)
        assert (got.column("lr"), got.column("accuracy")) == (points.values["lr"], None)

    def test_an_unstarted_job_has_an_empty_curve(self, session: Session) -> None:
        team = make_team(session)
        job = make_job(session, team=team)
        got = read_curve(session, team=team, job_id=job.id)
        assert (got.attempt, got.column("lr"), got.column("accuracy"), got.status) == (
            0,
            [],
            None,
            JobStatus.QUEUED,
        )

    def test_a_negative_offset_is_invalid(self, session: Session) -> None:
        job = make_job(session)
        with pytest.raises(InvalidInput, match="after must be >= 0"):
            read_curve(session, team=make_team(session), job_id=job.id, after=-1)

    def test_another_teams_curve_is_not_found(self, session: Session) -> None:
        job = running_job(session)
        with pytest.raises(JobNotFound):
            read_curve(session, team=make_team(session), job_id=job.id)

    def test_a_series_the_kind_does_not_have_is_invalid_naming_those_it_has(
        self, session: Session
    ) -> None:
        team = make_team(session)
        job = make_job(session, team=team)
        with pytest.raises(InvalidInput) as info:
            read_series(session, team=team, job_id=job.id, name="epochs")
        assert info.value.errors == [
            {
                "field": "name",
                "reason": "range test jobs have no series 'epochs'; their series: curve, band",
            }
        ]


class TestTeamIsolation:
    def test_team_b_cannot_get_team_as_job(self, session: Session) -> None:
        team_a, team_b = make_team(session), make_team(session)
        job = make_job(session, team=team_a)
        assert get_job(session, team=team_a, job_id=job.id).id == job.id
        with pytest.raises(JobNotFound) as info:
            get_job(session, team=team_b, job_id=job.id)
        assert info.value.status == 404


class TestBounds:
    def test_a_succeeded_range_test_has_bounds(self, session: Session) -> None:
        team = make_team(session)
        job = running_job(session, team=team)
        finish_job(session, job_id=job.id, attempt=1, result=make_outcome(), now=T0)
        bounds = get_bounds(session, team=team, job_id=job.id)
        assert (bounds.suggestions.default.base_lr, bounds.suggestions.default.max_lr) == (
            0.01,
            0.1,
        )
        assert (bounds.job_id, bounds.config_key, bounds.finished_at) == (
            job.id,
            job.config_key,
            T0,
        )

    @pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING])
    def test_an_unfinished_job_is_not_ready(self, session: Session, status: JobStatus) -> None:
        team = make_team(session)
        job = make_job(session, team=team, status=status)
        with pytest.raises(NotReady, match=f"is {status.value}; its bounds are ready once"):
            get_bounds(session, team=team, job_id=job.id)

    @pytest.mark.parametrize("status", [JobStatus.FAILED, JobStatus.CANCELLED])
    def test_a_failed_or_cancelled_job_has_none(self, session: Session, status: JobStatus) -> None:
        team = make_team(session)
        job = make_job(session, team=team, status=status)
        with pytest.raises(JobConflict, match=f"is {status.value}; it has no bounds"):
            get_bounds(session, team=team, job_id=job.id)

    def test_a_curve_without_bounds_says_why(self, session: Session) -> None:
        team = make_team(session)
        job = running_job(session, team=team)
        outcome = RangeTestOutcome(
            summary=make_outcome().summary, no_bounds_reason="the loss never improves"
        )
        finish_job(session, job_id=job.id, attempt=1, result=outcome)
        with pytest.raises(JobConflict, match="found no bounds: the loss never improves"):
            get_bounds(session, team=team, job_id=job.id)

    def test_find_bounds_takes_the_latest_success_of_the_configuration(
        self, session: Session
    ) -> None:
        team = make_team(session)
        old, new = running_job(session, team=team), running_job(session, team=team)
        later = T0 + timedelta(hours=1)
        finish_job(session, job_id=new.id, attempt=1, result=make_outcome(max_lr=0.2), now=later)
        finish_job(session, job_id=old.id, attempt=1, result=make_outcome(max_lr=0.1), now=T0)
        make_job(session, team=team)  # queued, same configuration: not a result
        bounds = find_bounds(session, team=team, spec=spec_data(seed=9, num_iter=500))
        assert (bounds.job_id, bounds.suggestions.default.max_lr) == (new.id, 0.2)

    def test_find_bounds_does_not_cross_teams_or_configurations(self, session: Session) -> None:
        team, other = make_team(session), make_team(session)
        job = running_job(session, team=team)
        finish_job(session, job_id=job.id, attempt=1, result=make_outcome())
        with pytest.raises(JobNotFound):
            find_bounds(session, team=other, spec=spec_data())
        with pytest.raises(JobNotFound):
            find_bounds(session, team=team, spec=spec_data(params={"width": 32}))

    def test_config_key_of_a_submitted_job_is_a_sha256(self, session: Session) -> None:
        job = make_job(session)
        assert len(job.config_key) == len(hashlib.sha256().hexdigest())


class EchoSpec(JobSpec):
    """A made-up second kind of job: the lifecycle must not care which kind it runs."""

    kind: ClassVar[str] = "echo"
    steps: int = Field(default=3, ge=1)

    def config_key(self) -> str:
        return hashlib.sha256(f"echo:{self.steps}".encode()).hexdigest()

    def total_steps(self) -> int:
        return self.steps


class EchoResult(JobResult):
    said: str


ECHO = JobKind(
    name="echo",
    noun="echoes",
    title="echo",
    spec=EchoSpec,
    result=EchoResult,
    runner="tests.core.services.test_jobs:never_run",  # never imported: no worker here
)


class TestAnotherKind:
    @pytest.fixture(autouse=True)
    def echo_kind(self) -> Iterator[None]:
        with registered_kind(ECHO):
            yield

    def test_runs_through_the_same_lifecycle(
        self, session: Session, settings: Settings, sent: Sent
    ) -> None:
        team = make_team(session)
        job = submit_job(session, team=team, kind="echo", spec={"steps": 5}, settings=settings).job
        assert (job.kind, job.total, job.workload) == ("echo", 5, None)
        session.commit()
        assert sent == [(job.id, "echo")]
        assert claim_job(session, job_id=job.id, worker="cpu-0") is not None
        done = finish_job(session, job_id=job.id, attempt=1, result={"said": "hello"})
        assert done is not None
        assert done.result == {"said": "hello"}
        with pytest.raises(JobNotFound, match=f"range test {job.id} not found"):
            get_bounds(session, team=team, job_id=job.id)

    def test_its_spec_errors_name_the_field(self, session: Session, settings: Settings) -> None:
        with pytest.raises(InvalidJobSpec) as info:
            submit_job(
                session, team=make_team(session), kind="echo", spec={"steps": 0}, settings=settings
            )
        assert [e["field"] for e in info.value.errors] == ["steps"]

    def test_a_job_asked_for_as_another_kind_is_not_found(
        self, session: Session, settings: Settings
    ) -> None:
        team = make_team(session)
        echo = submit_job(session, team=team, kind="echo", spec={}, settings=settings).job
        test = make_job(session, team=team)
        assert get_job(session, team=team, job_id=echo.id, kind="echo").id == echo.id
        with pytest.raises(JobNotFound, match=f"range test {echo.id} not found"):
            get_job(session, team=team, job_id=echo.id, kind="range_test")
        with pytest.raises(JobNotFound, match=f"echo {test.id} not found"):
            cancel_job(session, team=team, job_id=test.id, kind="echo")
        assert snapshot(session, test)["status"] is JobStatus.QUEUED
        assert [j.id for j in list_jobs(session, team=team, kind="echo").items] == [echo.id]

    def test_a_kind_without_series_has_no_curve(self, session: Session, settings: Settings) -> None:
        team = make_team(session)
        job = submit_job(session, team=team, kind="echo", spec={}, settings=settings).job
        claim_job(session, job_id=job.id, worker="cpu-0")
        with pytest.raises(ValueError, match="jobs of kind 'echo' have no series 'curve'"):
            report_progress(session, job_id=job.id, attempt=1, **curve(make_points(0, 2)))
        with pytest.raises(InvalidInput, match="have no series 'curve'; their series: none"):
            read_curve(session, team=team, job_id=job.id)
        ack = report_progress(session, job_id=job.id, attempt=1, progress=2)
        assert ack.accepted
        assert (snapshot(session, job)["progress"], snapshot(session, job)["series_points"]) == (
            2,
            {},
        )
