"""The reaper re-sends only lost messages; workers announce themselves and go offline.

The real commands (``python -m cli worker``, ``reaper``, ``api``) on PostgreSQL and
Redis with the fault tier's short timings: a queued job's message may be re-sent 2 s
after it went out, the reaper passes every second, a worker beats every 0.5 s and is
offline after 3 s of silence.
"""

from __future__ import annotations

import re
import time
import uuid
from collections import Counter

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.models import JobStatus, Worker
from core.services import list_workers
from core.settings import Settings
from tests.builders import spec_data
from tests.faults.conftest import (
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_TIMEOUT_S,
    QUEUED_RESEND_AFTER_S,
    Cluster,
    claimed_ids,
    stop_services,
    wait_until,
)

pytestmark = pytest.mark.serial

N_QUEUED = 5
PASSES_AFTER_DELAY = 5
"""Reaper passes to watch once the queued jobs' messages are older than the re-send delay."""

LONG_SPEC = spec_data(
    params={"width": 8}, num_iter=100_000, start_lr=1e-6, end_lr=1e-5, device="cpu"
)
"""Runs for minutes (tiny LRs never diverge): the worker stays busy until it is cancelled."""
TINY_SPEC = spec_data(params={"width": 8}, num_iter=30, start_lr=1e-4, end_lr=1e-2, device="cpu")

RECONCILED = re.compile(r"Task jobs\.reconcile\[[^\]]+\] succeeded")
RESENT = re.compile(r"job\.resent job_id=([0-9a-f-]{36})")


def reconcile_passes(cluster: Cluster) -> int:
    assert cluster.reaper is not None
    return len(RECONCILED.findall(cluster.reaper.log()))


def resent_ids(cluster: Cluster) -> list[str]:
    assert cluster.reaper is not None
    return RESENT.findall(cluster.reaper.log())


def start_long_job(cluster: Cluster) -> uuid.UUID:
    job_id = cluster.api.submit(LONG_SPEC)
    cluster.wait_until(
        "the long job to run", lambda: cluster.job(job_id).status == JobStatus.RUNNING
    )
    return job_id


def cancel(cluster: Cluster, job_id: uuid.UUID) -> None:
    response = cluster.api.client.post(f"/range-tests/{job_id}/cancel")
    assert response.status_code == 202, response.text


def settings() -> Settings:
    return Settings(
        _env_file=None,
        heartbeat_interval_s=HEARTBEAT_INTERVAL_S,
        heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
    )


def worker_rows(cluster: Cluster) -> dict[uuid.UUID, Worker]:
    with session_scope(cluster.fault_env.factory) as session:
        rows = list(session.scalars(select(Worker)))
        session.expunge_all()
    return {row.id: row for row in rows}


def online(cluster: Cluster) -> dict[uuid.UUID, bool]:
    with session_scope(cluster.fault_env.factory) as session:
        return {v.worker.id: v.online for v in list_workers(session, settings=settings())}


def test_jobs_waiting_behind_a_busy_worker_get_no_duplicate_messages(cluster: Cluster) -> None:
    cluster.start(workers=1)
    long_id = start_long_job(cluster)
    queued = [cluster.api.submit(TINY_SPEC) for _ in range(N_QUEUED)]
    submitted = time.monotonic()
    body = cluster.api.client.get(f"/range-tests/{queued[-1]}").json()
    assert body["queue_position"] == N_QUEUED
    assert body["waiting_reason"] == (
        f"{N_QUEUED - 1} jobs ahead in jobs.cpu; 1 worker takes it, busy"
    )

    # several passes after the messages became old enough to be re-sent
    cluster.wait_until(
        "the queued messages to pass the re-send delay",
        lambda: time.monotonic() - submitted > QUEUED_RESEND_AFTER_S,
    )
    seen = reconcile_passes(cluster)
    cluster.wait_until(
        f"{PASSES_AFTER_DELAY} reaper passes",
        lambda: reconcile_passes(cluster) >= seen + PASSES_AFTER_DELAY,
    )
    assert resent_ids(cluster) == []
    assert all(job.status == JobStatus.QUEUED for job in cluster.jobs(queued))

    cancel(cluster, long_id)
    jobs = cluster.wait_finished(queued)
    assert [(job.status, job.attempt, job.sends) for job in jobs] == [
        (JobStatus.SUCCEEDED, 1, 1)
    ] * N_QUEUED
    claims = Counter(job_id for log in cluster.worker_logs() for job_id in claimed_ids(log))
    assert {str(job_id): 1 for job_id in queued}.items() <= claims.items()
    assert resent_ids(cluster) == []


def test_messages_flushed_behind_a_busy_worker_are_resent_once_it_is_free(
    cluster: Cluster,
) -> None:
    cluster.start(workers=1)
    long_id = start_long_job(cluster)
    queued = [cluster.api.submit(TINY_SPEC) for _ in range(N_QUEUED)]
    broker = cluster.fault_env.broker
    assert broker.flushdb()

    cancel(cluster, long_id)
    jobs = cluster.wait_finished(queued)

    assert [(job.status, job.attempt) for job in jobs] == [(JobStatus.SUCCEEDED, 1)] * N_QUEUED
    assert Counter(resent_ids(cluster)) == {str(job_id): 1 for job_id in queued}
    claims = Counter(job_id for log in cluster.worker_logs() for job_id in claimed_ids(log))
    assert {str(job_id): 1 for job_id in queued}.items() <= claims.items()


def test_a_worker_announces_itself_and_goes_offline_once_killed(cluster: Cluster) -> None:
    before = set(worker_rows(cluster))
    cluster.start(workers=1, reaper=False)
    rows = cluster.wait_until(
        "the worker's row",
        lambda: {i: r for i, r in worker_rows(cluster).items() if i not in before} or None,
    )
    [(worker_id, row)] = rows.items()
    assert row.device_kind == "cpu"
    assert row.queues == ["jobs.cpu", "jobs"]
    assert row.name.startswith("cpu1.")
    assert online(cluster)[worker_id]

    cluster.kill()  # SIGKILL: no shutdown, no goodbye
    wait_until(
        "the killed worker to read as offline",
        lambda: not online(cluster)[worker_id],
        [cluster.api.service],
        timeout=HEARTBEAT_TIMEOUT_S * 10,
    )
    assert worker_id in worker_rows(cluster)


def test_a_worker_stopped_cleanly_removes_itself(cluster: Cluster) -> None:
    before = set(worker_rows(cluster))
    cluster.start(workers=1, reaper=False)
    rows = cluster.wait_until(
        "the worker's row",
        lambda: {i: r for i, r in worker_rows(cluster).items() if i not in before} or None,
    )
    [worker_id] = rows
    stop_services(cluster.workers)  # SIGTERM: a warm shutdown
    assert worker_id not in worker_rows(cluster)
