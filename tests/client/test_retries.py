"""Retries through a real proxy that misbehaves: a dropped answer, a 503 with Retry-After."""

from __future__ import annotations

from typing import Any

import pytest

from clr_sweep import Client, ServiceUnavailable
from tests.client.conftest import TINY_RANGE_TEST, WAIT_S, Server
from tests.client.proxy import running_proxy

pytestmark = pytest.mark.worker


def _id(job: Any) -> str:
    return str(job.id)


def test_a_submit_whose_answer_was_dropped_is_retried_and_creates_one_job(
    postgres_server: Server,
) -> None:
    token = postgres_server.new_token()
    with running_proxy(postgres_server.url, ["drop"]) as proxy:
        with Client(proxy.url, token, retries=3, backoff=0.01) as client:
            job = client.submit_range_test(TINY_RANGE_TEST)
    posts = proxy.requests("POST", "/range-tests")
    assert [p.action for p in posts] == ["drop", "forward"]
    # the server created the job the first time; the retry got it back (200, not 202)
    assert [p.upstream_status for p in posts] == [202, 200]
    keys = {p.headers["idempotency-key"] for p in posts}
    assert len(keys) == 1
    with Client(postgres_server.url, token) as direct:
        listed = [_id(j) for j in direct.list()]
        assert listed == [_id(job)]
        direct.wait(job, timeout=WAIT_S)


def test_a_503_is_retried_after_its_retry_after(postgres_server: Server) -> None:
    token = postgres_server.new_token()
    waits: list[float] = []
    with running_proxy(postgres_server.url, ["503"], retry_after="2") as proxy:
        with Client(proxy.url, token, retries=3, backoff=0.01) as client:
            client._http.sleep = waits.append  # what it waits for, without waiting
            workloads = client.workloads()
    assert workloads
    assert waits == [2.0]
    assert [h.action for h in proxy.handled] == ["503", "forward"]


def test_a_503_that_lasts_past_the_retries_is_service_unavailable(
    postgres_server: Server,
) -> None:
    waits: list[float] = []
    plan = ["503"] * 3
    with running_proxy(postgres_server.url, plan, retry_after="600") as proxy:
        with Client(proxy.url, "token", retries=2, backoff=0.01) as client:
            client._http.sleep = waits.append
            with pytest.raises(ServiceUnavailable) as caught:
                client.health()
    assert caught.value.status == 503
    assert caught.value.attempts == 3
    assert caught.value.retry_after == 600.0
    # a long Retry-After is capped (RetryPolicy.retry_after_max)
    assert waits == [30.0, 30.0]
    assert len(proxy.handled) == 3


def test_a_cut_event_stream_resumes_after_its_last_event(postgres_server: Server) -> None:
    token = postgres_server.new_token()
    with Client(postgres_server.url, token) as direct:
        job = direct.wait(direct.submit_range_test(TINY_RANGE_TEST), timeout=WAIT_S)
    plan = ["cut:curve"]  # the first stream stops right after its curve event
    with running_proxy(postgres_server.url, plan) as proxy:
        with Client(proxy.url, token, retries=3, backoff=0.01) as client:
            events = list(client.events(job))
    streams = proxy.requests("GET", f"/jobs/{_id(job)}/events")
    assert [s.action for s in streams] == ["cut:curve", "forward"]
    assert "last-event-id" not in streams[0].headers
    assert streams[1].headers["last-event-id"] == "1:30"
    curve = [e.data for e in events if e.event == "curve"]
    assert [(c["start"], c["next_after"]) for c in curve] == [(0, 30)]  # no point twice
    assert events[-1].event == "end"


def test_wait_polls_when_the_event_stream_is_refused(postgres_server: Server) -> None:
    token = postgres_server.new_token()
    seen: list[Any] = []
    with running_proxy(postgres_server.url, retry_after="0", rules={"/events": "503"}) as proxy:
        with Client(proxy.url, token, retries=1, backoff=0.01) as client:
            job = client.submit_range_test(TINY_RANGE_TEST)
            final = client.wait(job, progress=seen.append, poll=0.05, timeout=WAIT_S)
    assert final.status == "succeeded"
    assert seen
    assert proxy.requests("GET", f"/jobs/{_id(job)}/events")  # it tried the stream first
    assert len(proxy.requests("GET", f"/jobs/{_id(job)}")) >= 1  # then polled
