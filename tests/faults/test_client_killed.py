"""A team's own process SIGKILLed while it uploads a range test ("bring your own curve").

The client process streams points through :mod:`clr_sweep.uploads` (its uploads
and keepalives are the job's heartbeats) and is killed mid-run: nothing tells the
service. The reaper (heartbeat timeout 3 s here) fails the job saying the client
stopped sending, and every point that reached the service stays readable.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import uuid

import pytest

from core.models import JobStatus
from tests.faults.conftest import HEARTBEAT_TIMEOUT_S, REPO_ROOT, Cluster

pytestmark = pytest.mark.serial

CLIENT = textwrap.dedent(
    """
    import sys, time

    from clr_sweep import Client
    from clr_sweep.uploads import range_test_uploader

    url, token = sys.argv[1], sys.argv[2]
    client = Client(url, token=token, retries=2)
    upload = range_test_uploader(
        client, model="killed-mid-upload", dataset="generated", batch_size=8,
        num_iter=100_000, flush_interval=0.05, keepalive=0.5,
    )
    print(upload.job_id, flush=True)
    step = 0
    while True:  # until it is killed
        upload.add(1e-5 * 1.0001 ** step, 2.0 - step / 100_000)
        step += 1
        time.sleep(0.001)
    """
)


def test_a_killed_client_is_failed_by_the_reaper_and_its_points_stay(cluster: Cluster) -> None:
    cluster.start(workers=0)
    token = cluster.api.client.headers["Authorization"].removeprefix("Bearer ")
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", CLIENT, cluster.api.url, token],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        job_id = uuid.UUID(process.stdout.readline().strip())

        def stored() -> int:
            return sum(chunk.size for chunk in cluster.chunks(job_id))

        cluster.wait_until("the client to upload 500 points", lambda: stored() >= 500)
        assert cluster.job(job_id).status == JobStatus.RUNNING
    finally:
        process.send_signal(signal.SIGKILL)
        _, err = process.communicate()
    assert process.returncode == -signal.SIGKILL, err[-2000:]

    def failed() -> bool:
        return cluster.job(job_id).status == JobStatus.FAILED

    cluster.wait_until("the reaper to fail the silent client's job", failed)
    job = cluster.job(job_id)
    assert job.error is not None
    timeout = f"{HEARTBEAT_TIMEOUT_S:g}"
    assert re.fullmatch(
        rf"the client stopped sending: no upload for \d+ s \(heartbeat timeout {timeout} s\)",
        job.error,
    ), job.error
    # every point that reached the service is there, in order, and readable
    chunks = cluster.chunks(job_id)
    points = sum(chunk.size for chunk in chunks)
    assert points >= 500
    assert points == job.series_points["curve"] == job.progress
    position = 0
    for chunk in chunks:
        assert chunk.start == position
        position += chunk.size
    series = cluster.api.client.get(f"/jobs/{job_id}/series/curve").json()
    assert series["points"] == points
    assert len(series["values"]["lr"]) == points
    assert series["status"] == "failed"
