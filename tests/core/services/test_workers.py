"""The worker registry, queued jobs' positions and reasons, and the reconciler's
re-sends, on both databases."""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from core.models import JobStatus, Worker
from core.queues import worker_queues
from core.services import (
    WorkerInfo,
    claim_job,
    explain_wait,
    list_workers,
    reconcile,
    record_worker,
    retire_worker,
)
from core.services.workers import FETCH_GRACE_S, fetched_before
from core.settings import Settings
from tests.builders import T0, make_job, make_team, make_worker, spec_data

Sent = list[tuple[uuid.UUID, str]]


def info(**overrides: object) -> WorkerInfo:
    values: dict[str, object] = {
        "id": uuid.uuid4(),
        "name": "gpu0.77@host",
        "hostname": "host",
        "pid": 77,
        "queues": tuple(worker_queues("cuda")),
        "started_at": T0,
    }
    values.update(overrides)
    return WorkerInfo(**values)  # type: ignore[arg-type]


class TestRecordWorker:
    def test_announces_then_beats_the_same_row(self, session: Session) -> None:
        me = info()
        record_worker(session, info=me, current_job_id=None, idle_since=T0, now=T0)
        job_id = uuid.uuid4()
        later = T0 + timedelta(seconds=5)
        record_worker(session, info=me, current_job_id=job_id, idle_since=None, now=later)
        row = session.get(Worker, me.id)
        assert row is not None
        assert (row.name, row.hostname, row.pid, row.device_kind) == (
            "gpu0.77@host",
            "host",
            77,
            "cuda",
        )
        assert row.queues == ["jobs.cuda", "jobs", "jobs.cpu"]
        assert (row.started_at, row.heartbeat_at) == (T0, later)
        assert (row.current_job_id, row.idle_since) == (job_id, None)
        assert session.query(Worker).count() == 1

    def test_a_cpu_worker_is_cpu(self, session: Session) -> None:
        me = info(queues=tuple(worker_queues("cpu")))
        record_worker(session, info=me, current_job_id=None, idle_since=T0, now=T0)
        row = session.get(Worker, me.id)
        assert row is not None
        assert row.device_kind == "cpu"

    def test_a_beat_whose_row_is_gone_announces_again(self, session: Session) -> None:
        me = info()
        record_worker(session, info=me, current_job_id=None, idle_since=T0, now=T0)
        assert retire_worker(session, worker_id=me.id)
        assert session.get(Worker, me.id) is None
        record_worker(session, info=me, current_job_id=None, idle_since=T0, now=T0)
        assert session.get(Worker, me.id) is not None

    def test_retiring_a_worker_without_a_row_is_harmless(self, session: Session) -> None:
        assert not retire_worker(session, worker_id=uuid.uuid4())

    def test_a_worker_silent_past_the_timeout_is_offline(
        self, session: Session, settings: Settings
    ) -> None:
        quiet = make_worker(session, name="a", heartbeat_at=T0 - timedelta(seconds=61))
        loud = make_worker(session, name="b", heartbeat_at=T0 - timedelta(seconds=59))
        views = list_workers(session, settings=settings, now=T0)
        assert [(v.worker.id, v.online) for v in views] == [(quiet.id, False), (loud.id, True)]


class TestExplainWait:
    def test_positions_of_three_queued_jobs_count_every_team_and_only_their_queue(
        self, session: Session, settings: Settings
    ) -> None:
        mine, theirs = make_team(session), make_team(session)
        cpu = spec_data(device="cpu")
        first = make_job(session, team=mine, spec=cpu, queued_at=T0)
        second = make_job(session, team=theirs, spec=cpu, queued_at=T0 + timedelta(seconds=1))
        third = make_job(session, team=mine, spec=cpu, queued_at=T0 + timedelta(seconds=2))
        # not in the way: another queue, a running job, a cancelled one
        make_job(session, team=mine, spec=spec_data(device="cuda"), queued_at=T0 - timedelta(1))
        make_job(session, team=mine, spec=cpu, queued_at=T0 - timedelta(1), status="cancelled")
        running = make_job(session, team=theirs, spec=cpu, queued_at=T0 - timedelta(1))
        assert claim_job(session, job_id=running.id, worker="w", now=T0) is not None
        waits = [
            explain_wait(session, job=j, settings=settings, now=T0) for j in (first, second, third)
        ]
        assert [w.queue_position for w in waits] == [1, 2, 3]
        assert explain_wait(session, job=running, settings=settings, now=T0).queue_position is None

    def test_a_job_no_running_worker_takes_names_its_queue_and_the_workers_online(
        self, session: Session, settings: Settings
    ) -> None:
        make_worker(session)
        make_worker(session, idle_since=None, current_job_id=uuid.uuid4())
        make_worker(
            session,
            device_kind="cuda",
            queues=worker_queues("cuda"),
            heartbeat_at=T0 - timedelta(minutes=5),
        )  # offline: not counted
        make_worker(session, queues=["maintenance"])  # the reaper runs no jobs
        job = make_job(session, spec=spec_data(device="cuda"))
        wait = explain_wait(session, job=job, settings=settings, now=T0)
        assert wait.queue_position == 1
        assert wait.waiting_reason == "no running worker takes jobs.cuda; 2 CPU workers are online"

    def test_with_no_worker_at_all(self, session: Session, settings: Settings) -> None:
        job = make_job(session, spec=spec_data(device="cpu"))
        wait = explain_wait(session, job=job, settings=settings, now=T0)
        assert wait.waiting_reason == "no running worker takes jobs.cpu; no worker is online"

    def test_behind_busy_workers(self, session: Session, settings: Settings) -> None:
        make_worker(session, idle_since=None, current_job_id=uuid.uuid4())
        cpu = spec_data(device="cpu")
        jobs = [make_job(session, spec=cpu, queued_at=T0 + timedelta(seconds=i)) for i in range(4)]
        reasons = [
            explain_wait(session, job=j, settings=settings, now=T0).waiting_reason for j in jobs
        ]
        assert reasons == [
            "next in jobs.cpu; 1 worker takes it, busy",
            "1 job ahead in jobs.cpu; 1 worker takes it, busy",
            "2 jobs ahead in jobs.cpu; 1 worker takes it, busy",
            "3 jobs ahead in jobs.cpu; 1 worker takes it, busy",
        ]
        make_worker(
            session,
            idle_since=None,
            current_job_id=uuid.uuid4(),
            device_kind="cuda",
            queues=worker_queues("cuda"),
        )
        last = explain_wait(session, job=jobs[-1], settings=settings, now=T0)
        assert last.waiting_reason == "3 jobs ahead in jobs.cpu; 2 workers take it, all busy"

    def test_with_an_idle_worker(self, session: Session, settings: Settings) -> None:
        make_worker(session)
        make_worker(session, idle_since=None, current_job_id=uuid.uuid4())
        first, second = (make_job(session, queued_at=T0 + timedelta(seconds=i)) for i in range(2))
        assert explain_wait(session, job=first, settings=settings, now=T0).waiting_reason == (
            "waiting for a worker to pick it up"
        )
        assert explain_wait(session, job=second, settings=settings, now=T0).waiting_reason == (
            "1 job ahead in jobs; 2 workers take it, 1 idle"
        )

    @pytest.mark.parametrize("status", [s for s in JobStatus if s is not JobStatus.QUEUED])
    def test_a_job_no_longer_queued_has_neither(
        self, session: Session, settings: Settings, status: JobStatus
    ) -> None:
        job = make_job(session, status=status)
        wait = explain_wait(session, job=job, settings=settings, now=T0)
        assert (wait.queue_position, wait.waiting_reason) == (None, None)


class TestFetchedBefore:
    def test_a_worker_free_long_enough_vouches_for_its_job_queues(self, session: Session) -> None:
        worker = make_worker(session, queues=[*worker_queues("cuda"), "maintenance"])
        settled = T0 - timedelta(seconds=FETCH_GRACE_S)
        assert fetched_before([worker]) == dict.fromkeys(worker_queues("cuda"), settled)

    def test_a_busy_or_just_freed_worker_vouches_for_nothing(self, session: Session) -> None:
        busy = make_worker(session, idle_since=None, current_job_id=uuid.uuid4())
        just = make_worker(session, idle_since=T0 - timedelta(seconds=FETCH_GRACE_S / 2))
        assert fetched_before([busy, just]) == {}

    def test_the_latest_heartbeat_wins(self, session: Session) -> None:
        old = make_worker(session, heartbeat_at=T0 - timedelta(seconds=10))
        new = make_worker(session)
        assert fetched_before([old, new])["jobs"] == T0 - timedelta(seconds=FETCH_GRACE_S)


class TestReconcileResends:
    def test_sends_no_duplicate_while_every_worker_of_the_queue_is_busy(
        self, session: Session, settings: Settings, sent: Sent
    ) -> None:
        busy = make_worker(session, idle_since=None, current_job_id=uuid.uuid4())
        queued = [make_job(session, enqueued_at=T0) for _ in range(3)]
        for minutes in range(1, 30):
            now = T0 + timedelta(minutes=minutes)
            busy.heartbeat_at = now
            assert reconcile(session, settings=settings, now=now).resent == []
        session.commit()
        assert sent == []
        assert all(j.sends == 1 for j in queued)

    def test_resends_once_a_worker_of_the_queue_has_been_idle_since_the_send(
        self, session: Session, settings: Settings, sent: Sent
    ) -> None:
        job = make_job(session, spec=spec_data(device="cpu"), enqueued_at=T0)
        now = T0 + timedelta(seconds=40)
        # freed after the send: it may be fetching the message right now
        make_worker(session, idle_since=now - timedelta(seconds=0.5), heartbeat_at=now)
        assert reconcile(session, settings=settings, now=now).resent == []
        make_worker(session, idle_since=T0 + timedelta(seconds=35), heartbeat_at=now)
        assert reconcile(session, settings=settings, now=now).resent == [job.id]
        session.commit()
        assert sent == [(job.id, "range_test")]

    def test_an_idle_worker_of_another_queue_vouches_for_nothing(
        self, session: Session, settings: Settings
    ) -> None:
        make_worker(session)  # CPU: does not consume jobs.cuda
        make_job(session, spec=spec_data(device="cuda"), enqueued_at=T0 - timedelta(minutes=5))
        assert reconcile(session, settings=settings, now=T0).resent == []

    def test_a_message_a_worker_holds_is_not_lost(
        self, session: Session, settings: Settings
    ) -> None:
        job = make_job(session, enqueued_at=T0 - timedelta(minutes=5))
        make_worker(session)
        # received, not claimed yet (a fresh child starting); its row says it holds it
        make_worker(session, idle_since=None, current_job_id=job.id)
        assert reconcile(session, settings=settings, now=T0).resent == []

    def test_re_sends_back_off_exponentially_up_to_the_cap(
        self, session: Session, tmp_path: Path
    ) -> None:
        settings = Settings(
            _env_file=None, data_dir=tmp_path, queued_resend_after_s=10, queued_resend_max_s=35
        )
        job = make_job(session, enqueued_at=T0)
        worker = make_worker(session)
        resent_at = []
        for second in range(1, 200):
            now = T0 + timedelta(seconds=second)
            worker.heartbeat_at = now
            if reconcile(session, settings=settings, now=now).resent:
                resent_at.append(second)
        # waits of 10, 20, then 35 (the cap) seconds after each send
        assert resent_at[:5] == [11, 32, 68, 104, 140]
        session.refresh(job)
        assert job.sends == 1 + len(resent_at)

    def test_a_requeued_job_starts_its_backoff_over(
        self, session: Session, settings: Settings
    ) -> None:
        job = make_job(session, enqueued_at=T0, sends=5)
        claimed = claim_job(session, job_id=job.id, worker="w", now=T0)
        assert claimed is not None
        reconcile(session, settings=settings, now=T0 + timedelta(minutes=2))  # lost: requeued
        session.refresh(job)
        assert (job.status, job.sends) == (JobStatus.QUEUED, 1)

    def test_prunes_workers_silent_past_the_prune_age(
        self, session: Session, settings: Settings
    ) -> None:
        old = make_worker(session, heartbeat_at=T0 - timedelta(days=1, seconds=1))
        offline = make_worker(session, heartbeat_at=T0 - timedelta(hours=23))
        report = reconcile(session, settings=settings, now=T0)
        assert report.pruned_workers == 1
        assert session.get(Worker, old.id) is None
        assert session.get(Worker, offline.id) is not None
