"""``clr-sweep submit``'s client half against the real app (in-process, real database)."""

from __future__ import annotations

import io
import math

import httpx
import pytest
from fastapi import FastAPI
from rich.console import Console
from sqlalchemy.orm import Session

from api.admission import Admission
from cli.client import (
    ApiError,
    RetryWhenBusy,
    _print_verification,
    _status_text,
    check,
    follow_job,
    run_submission,
)
from tests.api.conftest import Caller, TestClient
from tests.api.test_plots import running_with_points
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

    def test_a_non_finite_number_is_the_apis_422_naming_it(
        self, client: TestClient, caller: Caller
    ) -> None:
        # `clr-sweep submit --start-lr nan` crashed with a traceback while encoding the body
        client.headers.update(caller.headers)
        with pytest.raises(ApiError) as caught:
            run_submission(
                client, spec_data(start_lr=math.inf), quiet(), plot=None, output=None, wait=False
            )
        assert caught.value.status == 422
        assert "start_lr" in caught.value.detail

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


def test_a_verification_prints_each_rounds_candidates_and_what_was_spent() -> None:
    doc = {
        "status": "succeeded",
        "full_run_iterations": 200,
        "budget_runs": 1.0,
        "spent_iterations": 200,
        "candidates": [
            {"source": "max_fraction", "max_lr": 0.377, "val_loss": [0.67]},
            {"source": "neighbour:x3", "max_lr": 1.13, "val_loss": [None]},
            {"source": "neighbour:/3", "max_lr": 0.126, "val_loss": [0.15, 0.11]},
        ],
        "rounds": [
            {"round": 0, "iterations": 40, "candidates": [0, 1, 2]},
            {"round": 1, "iterations": 80, "candidates": [2]},
        ],
    }
    out = io.StringIO()
    _print_verification(doc, Console(file=out, width=200))
    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "verification succeeded: 3 candidate pairs, 2 round(s), 1.00 of 1.0 full runs spent"
    )
    assert lines[1] == (
        "  round 0 (40 iterations each): max_fraction 0.377: 0.67; neighbour:x3 1.13: failed; "
        "neighbour:/3 0.126: 0.15"
    )
    assert lines[2] == "  round 1 (80 iterations each): neighbour:/3 0.126: 0.11"


class TestRetryWhenBusy:
    """The API sheds load with 503 + Retry-After; ``submit`` asks again instead of failing
    (before, one such answer while following a job ended the command and left the job
    running)."""

    def busy_plot(
        self, test_app: FastAPI, caller: Caller, session: Session
    ) -> tuple[str, Admission]:
        """A plot URL whose drawing turn is taken: the API answers it 503 until freed."""
        job_id = running_with_points(session, caller, 30)
        renders = Admission(1, max_queue=0, wait_s=0)
        test_app.state.plot_renders = renders
        return f"/range-tests/{job_id}/plot.svg", renders

    def test_a_503_is_asked_again_after_its_retry_after(
        self, test_app: FastAPI, client: TestClient, caller: Caller, session: Session
    ) -> None:
        path, renders = self.busy_plot(test_app, caller, session)
        portal = client.portal
        assert portal is not None
        turn = renders.slot()
        portal.call(turn.__aenter__)
        waits: list[float] = []

        def wait_then_free(seconds: float) -> None:
            waits.append(seconds)
            portal.call(turn.__aexit__, None, None, None)  # the server frees up meanwhile

        transport = RetryWhenBusy(client._transport, sleep=wait_then_free)
        with httpx.Client(
            base_url=client.base_url, headers=caller.headers, transport=transport
        ) as busy:
            response = busy.get(path)

        assert response.status_code == 200, response.text
        assert waits == [1.0]  # the API's Retry-After

    def test_it_gives_up_after_its_time(
        self, test_app: FastAPI, client: TestClient, caller: Caller, session: Session
    ) -> None:
        path, renders = self.busy_plot(test_app, caller, session)
        portal = client.portal
        assert portal is not None
        turn = renders.slot()
        portal.call(turn.__aenter__)
        waits: list[float] = []
        transport = RetryWhenBusy(client._transport, retry_for_s=0.5, sleep=waits.append)
        try:
            with httpx.Client(
                base_url=client.base_url, headers=caller.headers, transport=transport
            ) as busy:
                response = busy.get(path)
        finally:
            portal.call(turn.__aexit__, None, None, None)

        assert response.status_code == 503  # a wait past retry_for_s is not tried
        assert waits == []
        with pytest.raises(ApiError) as caught:
            check(response)
        assert caught.value.status == 503
