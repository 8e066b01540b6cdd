"""A worker SIGKILLed mid-job: the job finishes elsewhere, once, on attempt 2.

Both processes of the worker die at once (its Celery parent, then the prefork
child running the job), as on a crashed host: nothing is acknowledged or
rejected. The reaper sees the heartbeat stop, requeues the job, and another
worker process runs attempt 2; the supervisor restarts the killed one.
"""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

import pytest

from core.db import session_scope
from core.models import Job, JobStatus
from core.services import read_series
from core.specs import RangeTestOutcome
from tests.builders import spec_data
from tests.faults.conftest import Cluster, assert_curve_of_final_attempt, claimed_ids

pytestmark = pytest.mark.serial

NUM_ITER = 8000
"""Long enough to be killed mid-run (seconds: 1,500 steps took only 0.5 s on a quiet
machine, about one progress report, and the job finished before it was seen running),
short enough to run twice."""


def parent_pid(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state


def test_sigkilled_worker_job_finishes_once_on_attempt_2(cluster: Cluster) -> None:
    cluster.start(workers=2)
    spec = spec_data(params={"width": 16}, num_iter=NUM_ITER, start_lr=1e-4, end_lr=1e-2)
    job_id = cluster.api.submit(spec)

    def progressing() -> Job | None:
        job = cluster.job(job_id)
        return job if job.status == JobStatus.RUNNING and job.progress > 0 else None

    running = cluster.wait_until("the job to report progress", progressing)
    assert running.attempt == 1
    assert running.worker is not None
    child = int(running.worker.rsplit(":", 1)[1])
    parent = parent_pid(child)
    supervisors = {w.process.pid: w for w in cluster.workers}
    killed = supervisors[parent_pid(parent)]  # KeyError: not one of this test's workers
    os.kill(parent, signal.SIGKILL)
    os.kill(child, signal.SIGKILL)

    [job] = cluster.wait_finished([job_id])

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.attempt == 2
    assert job.worker is not None
    assert int(job.worker.rsplit(":", 1)[1]) not in (child, parent)
    outcome = RangeTestOutcome.model_validate(job.result)
    assert outcome.summary.steps_run == job.progress == NUM_ITER
    assert 0 < running.progress < NUM_ITER, "attempt 1 was not killed mid-run"
    assert assert_curve_of_final_attempt(cluster, job) == NUM_ITER
    with session_scope(cluster.fault_env.factory) as session:
        curve = read_series(session, team=cluster.api.team, job_id=job_id, name="curve")
    assert curve.attempt == 2
    assert curve.size == curve.points == NUM_ITER

    logs = cluster.worker_logs()
    claims = [job_id_ for log in logs for job_id_ in claimed_ids(log)]
    assert claims.count(str(job_id)) == 2, "one claim per attempt"
    assert sum(log.count(f"job.succeeded job_id={job_id}") for log in logs) == 1
    assert cluster.reaper is not None
    requeued = re.findall(rf"job\.requeued job_id={job_id} attempt=(\d+)", cluster.reaper.log())
    assert requeued == ["1"]
    # the supervisor restarts the killed worker process
    cluster.wait_until("the killed worker to be back", lambda: killed.ready_count() == 2)
    assert killed.log().count("worker.exited") == 1
