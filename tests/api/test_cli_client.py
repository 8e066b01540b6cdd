"""``clr-sweep submit``'s client half against the real app (in-process, real database)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from cli.client import ApiError, _status_text, check, follow_job, run_submission
from tests.api.conftest import Caller, TestClient
from tests.builders import spec_data


def quiet() -> Console:
    return Console(file=io.StringIO(), width=100)


class TestRunSubmission:
    def test_without_waiting_it_queues_the_job_and_prints_its_id(
        self, client: TestClient, caller: Caller, capsys: pytest.CaptureFixture[str]
    ) -> None:
        client.headers.update(caller.headers)
        code = run_submission(client, spec_data(), quiet(), plot=None, output=None, wait=False)
        job_id = capsys.readouterr().out.strip()
        assert code == 0
        assert client.get(f"/range-tests/{job_id}").json()["status"] == "queued"

    def test_a_bad_spec_is_an_api_error_naming_the_field(
        self, client: TestClient, caller: Caller
    ) -> None:
        client.headers.update(caller.headers)
        body = spec_data(start_lr=1.0, end_lr=0.1)
        with pytest.raises(ApiError) as caught:
            run_submission(client, body, quiet(), plot=None, output=None, wait=False)
        assert caught.value.status == 422
        assert "start_lr must be below end_lr" in caught.value.detail

    def test_a_bad_token_is_a_401(self, client: TestClient) -> None:
        client.headers["Authorization"] = "Bearer clr_nope"
        with pytest.raises(ApiError) as caught:
            check(client.get("/range-tests"))
        assert caught.value.status == 401


class TestFollowJob:
    def test_a_queued_job_shows_what_it_waits_for_when_the_api_says(self) -> None:
        job = {"status": "queued"}
        assert _status_text(job) == "queued"
        job |= {"waiting_reason": "no running worker takes jobs.cuda", "queue_position": 2}
        assert _status_text(job) == "queued (#2): no running worker takes jobs.cuda"
        assert _status_text({"status": "running", "waiting_reason": None}) == "running"

    def test_follows_a_job_to_its_end(self, client: TestClient, caller: Caller) -> None:
        client.headers.update(caller.headers)
        job = client.post("/range-tests", json=spec_data()).json()
        assert client.post(f"/range-tests/{job['id']}/cancel").status_code == 202
        out = io.StringIO()
        final = follow_job(client, job, Console(file=out, width=120), interval_s=0.01)
        assert final["status"] == "cancelled"
        assert "cancelled" in out.getvalue()
