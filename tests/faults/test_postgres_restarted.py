"""PostgreSQL stopped and started again mid-job: 503s meanwhile, never a 500; the job ends.

While the database is down the API answers every request that needs it with a
503 problem+json naming ``database`` and a ``Retry-After``. Once it is back the
API recovers on its own (its pool checks connections before use), and the job
finishes: its worker lost the database mid-run, so the reaper requeues it once
its heartbeat has stopped, or it carries on if it never noticed.

This stops the local PostgreSQL cluster that every other test uses (and the
developer's own databases), so it runs only with ``CLR_TEST_RESTART_POSTGRES=1``
(set by ``.ci/run``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from api.problems import PROBLEM_JSON
from core.models import JobStatus
from tests import database
from tests.builders import spec_data
from tests.faults.conftest import Cluster, assert_curve_of_final_attempt

pytestmark = pytest.mark.serial

NUM_ITER = 10_000
"""Long enough (seconds at about 0.5 ms a step) that the outage falls mid-job: at 1000
steps the job could finish within its first progress report (0.5 s)."""
OUTAGE_S = 3.0
"""How long the database stays down: several of the job's progress reports."""
MIN_REQUESTS = 5


def local_cluster() -> list[str]:
    """``VERSION main`` of the local cluster the tests' server URL points at."""
    if shutil.which("pg_ctlcluster") is None or not Path("/etc/postgresql").is_dir():
        pytest.fail("CLR_TEST_RESTART_POSTGRES is set but pg_ctlcluster is not installed")
    url = make_url(database.ADMIN_URL)
    if url.host not in ("127.0.0.1", "localhost"):
        pytest.fail(f"CLR_TEST_RESTART_POSTGRES is set but the test server {url.host} is not local")
    versions = sorted(os.listdir("/etc/postgresql"))
    assert len(versions) == 1, f"several PostgreSQL versions installed: {versions}"
    return [versions[0], "main"]


def pg_ctlcluster(action: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *local_cluster(), action],
        check=True,
        timeout=60,
    )


@pytest.mark.skipif(
    not os.environ.get("CLR_TEST_RESTART_POSTGRES"),
    reason="stops the local PostgreSQL server: set CLR_TEST_RESTART_POSTGRES=1 (CI does)",
)
def test_postgres_down_3s_mid_job_gives_only_503s_and_the_job_finishes(cluster: Cluster) -> None:
    local_cluster()
    cluster.start(workers=1)
    client = cluster.api.client
    spec = spec_data(params={"width": 16}, num_iter=NUM_ITER, start_lr=1e-4, end_lr=1e-2)
    job_id = cluster.api.submit(spec)
    cluster.wait_until(
        "the job to report progress",
        lambda: (job := cluster.job(job_id)).progress > 0 and job.status == JobStatus.RUNNING,
    )

    outage: list[httpx.Response] = []
    pg_ctlcluster("stop")
    try:
        down_until = time.monotonic() + OUTAGE_S
        while time.monotonic() < down_until or len(outage) < MIN_REQUESTS:
            outage.append(client.get(f"/range-tests/{job_id}"))
            outage.append(client.get("/range-tests"))
            time.sleep(0.1)
    finally:
        pg_ctlcluster("start")

    statuses = Counter(r.status_code for r in outage)
    assert statuses == {503: len(outage)}, f"while the database was down: {statuses}"
    for response in outage:
        assert response.headers["content-type"] == PROBLEM_JSON
        assert int(response.headers["retry-after"]) > 0
        assert [e["field"] for e in response.json()["errors"]] == ["database"]

    after: list[int] = []

    def api_recovered() -> bool:
        after.append(client.get(f"/range-tests/{job_id}").status_code)
        return after[-1] == 200

    cluster.wait_until("the API to answer 200 again", api_recovered, interval=0.2)
    assert set(after) <= {200, 503}, f"after the restart: {Counter(after)}"
    [job] = cluster.wait_finished([job_id])

    assert job.status == JobStatus.SUCCEEDED, job.error
    assert assert_curve_of_final_attempt(cluster, job) == NUM_ITER
    assert client.get(f"/range-tests/{job_id}").json()["status"] == "succeeded"
    api_log = cluster.api.service.log()
    assert not re.search(r'HTTP/1\.1" 5(?!03)\d\d', api_log), (
        "the API answered a 5xx other than 503"
    )
