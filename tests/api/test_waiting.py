"""``GET /range-tests/{id}`` of a queued job: its place in its queue and why it waits."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy.orm import Session

from core.clock import utc_now
from core.queues import worker_queues
from tests.api.conftest import Caller, TestClient, make_caller
from tests.builders import make_job, make_worker, spec_data


def test_a_queued_job_says_where_it_stands(
    client: TestClient, session: Session, caller: Caller
) -> None:
    now = utc_now()
    make_worker(session, heartbeat_at=now, idle_since=None, current_job_id=uuid.uuid4())
    other = make_caller(session)
    cpu = spec_data(device="cpu")
    make_job(session, team=other.team, spec=cpu, queued_at=now - timedelta(minutes=2))
    mine = make_job(session, team=caller.team, spec=cpu, queued_at=now - timedelta(minutes=1))

    body = client.get(f"/range-tests/{mine.id}", headers=caller.headers).json()

    assert body["queue_position"] == 2
    assert body["waiting_reason"] == "1 job ahead in jobs.cpu; 1 worker takes it, busy"


def test_a_cuda_job_no_worker_takes_says_so(
    client: TestClient, session: Session, caller: Caller
) -> None:
    make_worker(session, heartbeat_at=utc_now())
    make_worker(session, heartbeat_at=utc_now(), queues=worker_queues("cpu"))
    job = make_job(session, team=caller.team, spec=spec_data(device="cuda"))

    body = client.get(f"/range-tests/{job.id}", headers=caller.headers).json()

    assert body["queue_position"] == 1
    assert body["waiting_reason"] == "no running worker takes jobs.cuda; 2 CPU workers are online"


def test_a_running_job_carries_neither(
    client: TestClient, session: Session, caller: Caller
) -> None:
    job = make_job(session, team=caller.team, status="running")

    body = client.get(f"/range-tests/{job.id}", headers=caller.headers).json()
    page = client.get("/range-tests", headers=caller.headers).json()

    assert (body["queue_position"], body["waiting_reason"]) == (None, None)
    assert [(i["queue_position"], i["waiting_reason"]) for i in page["items"]] == [(None, None)]


def test_list_pages_say_why_each_queued_job_waits(
    client: TestClient, session: Session, caller: Caller
) -> None:
    now = utc_now()
    make_worker(session, heartbeat_at=now, queues=worker_queues("cpu"))
    cpu = spec_data(device="cpu")
    first = make_job(session, team=caller.team, spec=cpu, queued_at=now - timedelta(minutes=2))
    second = make_job(session, team=caller.team, spec=cpu, queued_at=now - timedelta(minutes=1))
    cuda = make_job(session, team=caller.team, spec=spec_data(device="cuda"), queued_at=now)
    running = make_job(session, team=caller.team, status="running")

    for path in ("/jobs", "/range-tests"):
        items = client.get(path, headers=caller.headers).json()["items"]
        waits = {i["id"]: (i["queue_position"], i["waiting_reason"]) for i in items}
        one = client.get(f"/jobs/{second.id}", headers=caller.headers).json()
        assert waits[str(second.id)] == (one["queue_position"], one["waiting_reason"])
        assert waits[str(first.id)][0] == 1
        assert waits[str(second.id)][0] == 2
        assert waits[str(cuda.id)] == (
            1,
            "no running worker takes jobs.cuda; 1 CPU worker is online",
        )
        assert waits[str(running.id)] == (None, None)


def test_the_fields_are_in_the_openapi_document(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["RangeTestRead"]
    assert {"queue_position", "waiting_reason"} <= set(schema["properties"])
