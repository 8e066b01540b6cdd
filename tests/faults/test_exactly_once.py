"""Two workers, 20 jobs: every job is claimed once and runs once.

The reaper runs too: jobs that wait in the queue longer than the resend delay get
their message again, so duplicate messages are part of the test; the claim must
turn every duplicate into a skip.
"""

from __future__ import annotations

from collections import Counter

import pytest

from core.models import JobStatus
from tests.builders import spec_data
from tests.faults.conftest import Cluster, claimed_ids

pytestmark = pytest.mark.serial

N_WORKERS = 2
N_JOBS = 20


def test_2_workers_20_jobs_each_claimed_and_run_exactly_once(cluster: Cluster) -> None:
    cluster.start(workers=N_WORKERS)
    spec = spec_data(params={"width": 8}, num_iter=30, start_lr=1e-4, end_lr=1e-2)

    job_ids = [cluster.api.submit(spec) for _ in range(N_JOBS)]
    jobs = cluster.wait_finished(job_ids)

    assert Counter(JobStatus(job.status) for job in jobs) == {JobStatus.SUCCEEDED: N_JOBS}
    assert Counter(job.attempt for job in jobs) == {1: N_JOBS}
    assert all(job.progress == 30 for job in jobs)
    claims = [claimed_ids(log) for log in cluster.worker_logs()]
    all_claims = Counter(job_id for worker in claims for job_id in worker)
    assert sum(all_claims.values()) == N_JOBS, f"job.claimed lines: {all_claims}"
    assert set(all_claims) == {str(job_id) for job_id in job_ids}
    assert all(len(worker) > 0 for worker in claims), (
        f"claims per worker: {[len(w) for w in claims]}"
    )
