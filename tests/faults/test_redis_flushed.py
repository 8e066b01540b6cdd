"""Redis emptied with 10 jobs queued: the reaper re-sends their messages, all finish.

The jobs are submitted through the API while no worker and no reaper run, so
their 10 messages wait in Redis; then the broker's database is flushed. Only
then do the workers and the reaper start: every job must still run, once.

FLUSHDB of the broker's database index, not FLUSHALL: everything the service
keeps in Redis (queues, unacknowledged messages, kombu's bindings) lives in
that one database, so for the service the two are the same, and FLUSHDB leaves
other Redis users (a developer's concurrent test runs) alone.
"""

from __future__ import annotations

import re
from collections import Counter

import pytest

from core.models import JobStatus
from tests.builders import spec_data
from tests.faults.conftest import Cluster, claimed_ids
from worker.celery_app import JOBS_QUEUE

pytestmark = pytest.mark.serial

N_JOBS = 10


def test_10_queued_jobs_all_finish_after_redis_is_flushed(cluster: Cluster) -> None:
    broker = cluster.fault_env.broker
    spec = spec_data(params={"width": 8}, num_iter=30, start_lr=1e-4, end_lr=1e-2)
    job_ids = [cluster.api.submit(spec) for _ in range(N_JOBS)]
    assert broker.llen(JOBS_QUEUE) == N_JOBS

    assert broker.flushdb()
    assert broker.dbsize() == 0

    cluster.start(workers=2)
    jobs = cluster.wait_finished(job_ids)

    assert Counter(JobStatus(job.status) for job in jobs) == {JobStatus.SUCCEEDED: N_JOBS}
    assert Counter(job.attempt for job in jobs) == {1: N_JOBS}
    assert cluster.reaper is not None
    resent = set(re.findall(r"job\.resent job_id=([0-9a-f-]{36})", cluster.reaper.log()))
    assert resent == {str(job_id) for job_id in job_ids}
    claims = Counter(job_id for log in cluster.worker_logs() for job_id in claimed_ids(log))
    assert claims == {str(job_id): 1 for job_id in job_ids}
