"""A frozen broker (Redis SIGSTOPped) does not stall the API; the jobs still go out.

The API process runs on a redis-server of this test's own (never the shared one):
after a first job went through, the server is frozen with SIGSTOP, as a hung host
or a network partition would leave it, with its connections open. Submitting a
job still answers 202 at once (the message is sent by a background thread that the
request waits for only a moment), ``/healthz`` answers 200 and ``/readyz`` answers
503 naming the broker, without its address. Once the server is continued
(SIGCONT), the jobs submitted during the freeze reach the queue without a reaper.

Before: the message was sent inside the request with no read timeout, and the POST
hung as long as Redis stayed frozen.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from cli.service import free_port
from core.db import session_scope
from core.services import create_team, create_token
from tests.builders import spec_data
from tests.faults.conftest import (
    START_S,
    Cluster,
    Service,
    start_service,
    stop_services,
    wait_until,
)
from tests.worker.conftest import REQUIRE_REDIS
from worker.celery_app import JOBS_QUEUE

pytestmark = pytest.mark.serial

ANSWER_BOUND_S = 10.0
"""A generous bound for an answer while the broker is frozen (before: as long as the freeze)."""
SENT_S = 60.0
"""Deadline for the frozen-time jobs' messages to arrive once the broker is continued."""


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """A redis-server of this test's own, on a free port; SIGCONTed and stopped after."""
    binary = shutil.which("redis-server")
    if binary is None:
        reason = "redis-server is not installed"
        if REQUIRE_REDIS:
            pytest.fail(f"{reason} (CLR_TEST_REQUIRE_REDIS is set)")
        pytest.skip(reason)
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = redis.Redis(port=port, socket_timeout=2)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        wait_until("the test's redis-server to answer", answers, [], timeout=30)
        yield process, port
    finally:
        client.close()
        os.kill(process.pid, signal.SIGCONT)
        process.terminate()
        process.wait(timeout=30)


def test_frozen_broker_stalls_no_request_and_jobs_go_out_after(
    cluster: Cluster, own_redis: tuple[subprocess.Popen[bytes], int], tmp_path: Path
) -> None:
    process, port = own_redis
    broker_url = f"redis://127.0.0.1:{port}/0"
    env = {**cluster.fault_env.env, "CLR_BROKER_URL": broker_url}
    api_port = free_port()
    service: Service = start_service(
        "api-own-redis", ["api", "--host", "127.0.0.1", "--port", str(api_port)], env, tmp_path
    )
    with session_scope(cluster.fault_env.factory) as session:
        team = create_team(session, name=f"frozen-{uuid.uuid4().hex[:8]}")
        secret = create_token(session, team=team, name="frozen").secret
    broker = redis.Redis.from_url(broker_url, socket_timeout=5)
    url = f"http://127.0.0.1:{api_port}"
    headers = {"Authorization": f"Bearer {secret}"}
    spec = spec_data(params={"width": 8}, num_iter=30)
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=ANSWER_BOUND_S) as client:

            def ready() -> bool:
                try:
                    return client.get("/readyz").status_code == 200
                except httpx.TransportError:
                    return False

            wait_until("the API to be ready", ready, [service], timeout=START_S)
            first = client.post("/range-tests", json=spec)
            assert first.status_code == 202, first.text
            assert broker.llen(JOBS_QUEUE) == 1  # sent before the answer while Redis keeps up

            os.kill(process.pid, signal.SIGSTOP)
            try:
                frozen = [client.post("/range-tests", json=spec) for _ in range(2)]
                health = client.get("/healthz")
                readiness = client.get("/readyz")
            finally:
                os.kill(process.pid, signal.SIGCONT)

        assert [r.status_code for r in frozen] == [202, 202], [r.text for r in frozen]
        assert health.status_code == 200
        assert readiness.status_code == 503
        problem = readiness.json()
        assert problem["errors"] == [{"field": "broker", "reason": "unreachable"}]
        assert str(port) not in readiness.text
        assert "api.not_ready dependency=broker" in service.log()

        job_ids = [r.json()["id"] for r in frozen]

        def all_sent() -> bool:
            messages = b" ".join(broker.lrange(JOBS_QUEUE, 0, -1)).decode()
            return all(job_id in messages for job_id in job_ids)

        wait_until("the frozen-time jobs to reach the queue", all_sent, [service], timeout=SENT_S)
    finally:
        broker.close()
        stop_services([service])
