"""``/range-tests`` on both databases: submit, read, list, curve, bounds, cancel."""

from __future__ import annotations

import base64
import csv
import io
import json
import uuid
from datetime import UTC, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from core.kinds import BAND
from core.models import Job, JobStatus
from core.series import SeriesPoints
from core.services import claim_job, fail_job, finish_job, report_progress, revoke_token
from core.specs import RangeTestOutcome, SeedBandDoc, SuggestionDoc
from tests.api.conftest import Caller, Sent, TestClient, make_caller
from tests.builders import T0, curve, make_job, make_outcome, make_points, spec_data

PROBLEM_JSON = "application/problem+json"


def submit(client: TestClient, caller: Caller, body: Any = None, **headers: str) -> Any:
    return client.post(
        "/range-tests",
        json=spec_data() if body is None else body,
        headers={**caller.headers, **headers},
    )


def fields(response: Any) -> dict[str, str]:
    assert response.headers["content-type"] == PROBLEM_JSON
    return {e["field"]: e["reason"] for e in response.json()["errors"]}


def cursor_of(created_at: str) -> str:
    raw = json.dumps([created_at, uuid.uuid4().hex]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def running(session: Session, job_id: uuid.UUID) -> int:
    job = claim_job(session, job_id=job_id, worker="gpu0", device="cpu")
    assert job is not None
    return job.attempt


def outcome_with_methods() -> RangeTestOutcome:
    """A successful outcome with three methods, the default listed last."""
    outcome = make_outcome(base_lr=0.01, max_lr=0.1)
    assert outcome.suggestions is not None
    paper = SuggestionDoc(method="paper", base_lr=0.002, max_lr=0.2, rationale="accuracy rises")
    steep = SuggestionDoc(method="steepest", base_lr=0.003, max_lr=0.03, rationale="steepest")
    items = [paper, steep, outcome.suggestions.default]
    return outcome.model_copy(
        update={"suggestions": outcome.suggestions.model_copy(update={"items": items})}
    )


class TestCreateRangeTest:
    def test_queues_the_job_and_sends_its_id_after_commit(
        self, client: TestClient, caller: Caller, session: Session, messages: Sent
    ) -> None:
        response = submit(client, caller)
        assert response.status_code == 202
        body = response.json()
        job_id = uuid.UUID(body["id"])
        assert response.headers["location"] == f"http://testserver/range-tests/{job_id}"
        assert body["status"] == "queued"
        assert body["spec"]["params"]["width"] == 16
        assert body["spec"]["start_lr"] == 1e-5  # defaults filled in
        assert body["total"] == 100
        assert body["attempt"] == 0
        assert body["result"] is None
        assert messages == [(job_id, "range_test")]
        job = session.get(Job, job_id)
        assert job is not None
        assert job.team_id == caller.team.id

        fetched = client.get(response.headers["location"], headers=caller.headers)
        assert fetched.status_code == 200
        assert fetched.json()["id"] == str(job_id)
        assert fetched.json()["status"] == "queued"

    def test_same_idempotency_key_returns_the_same_job_with_200(
        self, client: TestClient, caller: Caller, messages: Sent
    ) -> None:
        first = submit(client, caller, **{"Idempotency-Key": "key-1"})
        again = submit(client, caller, **{"Idempotency-Key": "key-1"})
        assert (first.status_code, again.status_code) == (202, 200)
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["location"] == first.headers["location"]
        assert messages == [(uuid.UUID(first.json()["id"]), "range_test")]
        listed = client.get("/range-tests", headers=caller.headers).json()
        assert [j["id"] for j in listed["items"]] == [first.json()["id"]]

    def test_same_idempotency_key_with_another_body_is_422(
        self, client: TestClient, caller: Caller, messages: Sent
    ) -> None:
        first = submit(client, caller, **{"Idempotency-Key": "key-2"})
        other = submit(client, caller, spec_data(num_iter=200), **{"Idempotency-Key": "key-2"})
        assert other.status_code == 422
        assert "already used for job " + first.json()["id"] in fields(other)["Idempotency-Key"]
        assert len(messages) == 1

    def test_malformed_idempotency_key_is_422(self, client: TestClient, caller: Caller) -> None:
        response = submit(client, caller, **{"Idempotency-Key": "has space"})
        assert response.status_code == 422
        assert "visible ASCII" in fields(response)["Idempotency-Key"]

    @pytest.mark.parametrize(
        ("overrides", "field", "reason"),
        [
            ({"start_lr": 1.0, "end_lr": 0.5}, "end_lr", "start_lr must be below end_lr"),
            ({"start_lr": 0}, "start_lr", "greater than 0"),
            ({"start_lr": -1e-3}, "start_lr", "greater than 0"),
            ({"num_iter": 0}, "num_iter", "greater than or equal to 2"),
            ({"num_iter": 10**9}, "num_iter", "less than or equal to 100000"),
            ({"num_iter": "300"}, "num_iter", "valid integer"),
            ({"start_lr": "0.1"}, "start_lr", "valid number"),
            ({"workload": "resnet_9000"}, "workload", "resnet_9000"),
            ({"params": {"widht": 16}}, "params.widht", "width"),
            ({"params": {"width": "wide"}}, "params.width", ""),
            ({"optimizer": {"momentum": 2}}, "optimizer.momentum", "less than 1"),
            ({"sweep": "cubic"}, "sweep", "'exp' or 'linear'"),
            ({"colour": "red"}, "colour", "Extra inputs are not permitted"),
            ({"seeds": [0, 1, 7, 7]}, "seeds.3", "7 is given twice"),
            ({"seeds": [3]}, "seeds", "give 2 to 16 seeds"),
            ({"seeds": [3, 4], "seed": 5}, "seed", "seeds[0] = 3"),
        ],
    )
    def test_bad_input_names_the_field(
        self,
        client: TestClient,
        caller: Caller,
        messages: Sent,
        overrides: dict[str, Any],
        field: str,
        reason: str,
    ) -> None:
        response = submit(client, caller, spec_data(**overrides))
        assert response.status_code == 422
        got = fields(response)
        assert field in got, got
        assert reason in got[field]
        assert response.json()["status"] == 422
        assert messages == []
        assert client.get("/range-tests", headers=caller.headers).json()["items"] == []

    @pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
    def test_non_finite_numbers_are_refused(
        self, client: TestClient, caller: Caller, messages: Sent, literal: str
    ) -> None:
        raw = '{"workload": "digits_mlp", "start_lr": ' + literal + "}"
        response = client.post(
            "/range-tests",
            content=raw,
            headers={**caller.headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 422
        assert "finite" in fields(response)["start_lr"]
        assert messages == []

    def test_malformed_json_is_400_naming_body(self, client: TestClient, caller: Caller) -> None:
        response = client.post(
            "/range-tests",
            content='{"workload": ',
            headers={**caller.headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 400
        assert "not valid JSON" in fields(response)["body"]

    def test_missing_body_names_body(self, client: TestClient, caller: Caller) -> None:
        response = client.post("/range-tests", headers=caller.headers)
        assert response.status_code == 422
        assert "body" in fields(response)

    def test_oversized_body_is_413(
        self, client: TestClient, caller: Caller, messages: Sent
    ) -> None:
        body = spec_data(workload="x" * (65 * 1024))
        response = submit(client, caller, body)
        assert response.status_code == 413
        assert fields(response)["body"] == "must be at most 65536 bytes"
        assert messages == []

    def test_oversized_body_without_content_length_is_413(
        self, client: TestClient, caller: Caller
    ) -> None:
        chunk = b" " * 16 * 1024

        def chunks() -> Any:
            yield b'{"workload": "digits_mlp"'
            for _ in range(5):
                yield chunk
            yield b"}"

        response = client.post(
            "/range-tests",
            content=chunks(),
            headers={**caller.headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 413
        assert "body" in fields(response)


class TestAuth:
    def test_missing_token_is_401(self, client: TestClient) -> None:
        response = client.post("/range-tests", json=spec_data())
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == PROBLEM_JSON
        assert "missing bearer token" in response.json()["detail"]

    @pytest.mark.parametrize("token", ["clr_" + "x" * 43, "not-a-token"])
    def test_wrong_token_is_401(self, client: TestClient, token: str) -> None:
        response = client.get("/range-tests", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["title"] == "Unauthorized"

    def test_revoked_token_is_401(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        assert client.get("/range-tests", headers=caller.headers).status_code == 200
        revoke_token(session, team=caller.team, token_id=caller.token_id)
        response = client.get("/range-tests", headers=caller.headers)
        assert response.status_code == 401
        assert "revoked" in response.json()["detail"]


class TestTeamIsolation:
    def test_another_teams_job_is_404_everywhere(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id = submit(client, caller).json()["id"]
        other = make_caller(session)
        for method, path in [
            ("GET", f"/range-tests/{job_id}"),
            ("GET", f"/range-tests/{job_id}/curve"),
            ("GET", f"/range-tests/{job_id}/bounds"),
            ("POST", f"/range-tests/{job_id}/cancel"),
        ]:
            response = client.request(method, path, headers=other.headers)
            assert response.status_code == 404, path
            assert response.json()["title"] == "Job not found"
        assert client.get("/range-tests", headers=other.headers).json()["items"] == []
        assert session.get(Job, uuid.UUID(job_id)).status == JobStatus.QUEUED  # type: ignore[union-attr]

    def test_malformed_id_is_422_naming_job_id(self, client: TestClient, caller: Caller) -> None:
        response = client.get("/range-tests/not-a-uuid", headers=caller.headers)
        assert response.status_code == 422
        assert "job_id" in fields(response)


class TestListJobs:
    def test_three_pages_with_a_cursor(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        jobs = [
            make_job(session, team=caller.team, created_at=T0 + timedelta(minutes=i))
            for i in range(5)
        ]
        make_job(session)  # another team's
        newest_first = [str(j.id) for j in reversed(jobs)]
        seen: list[str] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor is not None:
                params["cursor"] = cursor
            page = client.get("/range-tests", params=params, headers=caller.headers).json()
            pages += 1
            seen.extend(item["id"] for item in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == newest_first

    def test_filters_by_status_and_workload(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        queued = make_job(session, team=caller.team)
        cancelled = make_job(session, team=caller.team, status=JobStatus.CANCELLED, finished_at=T0)
        cnn = make_job(session, team=caller.team, spec=spec_data(workload="digits_cnn", params={}))

        def ids(**params: Any) -> set[str]:
            body = client.get("/range-tests", params=params, headers=caller.headers).json()
            return {item["id"] for item in body["items"]}

        assert ids(status="cancelled") == {str(cancelled.id)}
        assert ids(status=["queued", "cancelled"]) == {
            str(queued.id),
            str(cancelled.id),
            str(cnn.id),
        }
        assert ids(workload="digits_cnn") == {str(cnn.id)}

    def test_filters_by_created_after(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        jobs = [
            make_job(session, team=caller.team, created_at=T0 + timedelta(minutes=i))
            for i in range(4)
        ]
        cut = (T0 + timedelta(minutes=1, seconds=30)).isoformat()
        body = client.get(
            "/range-tests", params={"created_after": cut}, headers=caller.headers
        ).json()
        assert [item["id"] for item in body["items"]] == [str(jobs[3].id), str(jobs[2].id)]
        # strictly after: a job created exactly at the cut-off is left out
        exact = (T0 + timedelta(minutes=2)).isoformat()
        body = client.get(
            "/range-tests", params={"created_after": exact}, headers=caller.headers
        ).json()
        assert [item["id"] for item in body["items"]] == [str(jobs[3].id)]
        # a time without a zone is read as UTC
        naive = (T0 + timedelta(minutes=2)).astimezone(UTC).replace(tzinfo=None).isoformat()
        response = client.get(
            "/range-tests", params={"created_after": naive}, headers=caller.headers
        )
        assert response.status_code == 200
        assert [item["id"] for item in response.json()["items"]] == [str(jobs[3].id)]

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"created_after": "yesterday"}, "created_after"),
            # a number would be read as Unix seconds; the schema promises a date-time
            ({"created_after": "0.5"}, "created_after"),
            ({"created_after": "1700000000"}, "created_after"),
            ({"cursor": "garbage!"}, "cursor"),
            # a real-looking cursor whose time overflows when converted to UTC
            ({"cursor": cursor_of("0001-01-01T00:00:00+05:00")}, "cursor"),
            ({"cursor": cursor_of("not a time")}, "cursor"),
            ({"limit": 0}, "limit"),
            ({"limit": 1000}, "limit"),
            ({"status": "sleeping"}, "status"),
        ],
    )
    def test_bad_query_names_the_field(
        self, client: TestClient, caller: Caller, params: dict[str, Any], field: str
    ) -> None:
        response = client.get("/range-tests", params=params, headers=caller.headers)
        assert response.status_code == 422
        assert field in fields(response)


class TestCurve:
    def test_reads_incrementally_and_as_csv(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id = uuid.UUID(submit(client, caller).json()["id"])
        attempt = running(session, job_id)
        report_progress(session, job_id=job_id, attempt=attempt, **curve(make_points(0, 5)))
        report_progress(session, job_id=job_id, attempt=attempt, **curve(make_points(5, 5)))
        expected = make_points(0, 10).values

        whole = client.get(f"/range-tests/{job_id}/curve", headers=caller.headers).json()
        assert whole["lrs"] == expected["lr"]
        assert whole["losses"] == expected["loss"]
        assert whole["smoothed_losses"] == expected["smoothed_loss"]
        assert whole["accuracies"] == expected["accuracy"]
        assert (whole["start"], whole["next_after"], whole["attempt"]) == (0, 10, 1)
        assert whole["status"] == "running"

        report_progress(session, job_id=job_id, attempt=attempt, **curve(make_points(10, 3)))
        newer = client.get(
            f"/range-tests/{job_id}/curve",
            params={"after": whole["next_after"]},
            headers=caller.headers,
        ).json()
        assert newer["lrs"] == make_points(10, 3).values["lr"]
        assert (newer["start"], newer["next_after"]) == (10, 13)

        job = client.get(f"/range-tests/{job_id}", headers=caller.headers).json()
        assert (job["status"], job["attempt"], job["progress"], job["total"]) == (
            "running",
            1,
            13,
            100,
        )
        assert (job["worker"], job["device"]) == ("gpu0", "cpu")
        assert job["started_at"] is not None
        assert job["heartbeat_at"] is not None

        mid = client.get(
            f"/range-tests/{job_id}/curve", params={"after": 7}, headers=caller.headers
        ).json()
        assert mid["losses"] == make_points(7, 6).values["loss"]

        for kwargs in (
            {"params": {"format": "csv", "after": 11}, "headers": caller.headers},
            {"params": {"after": 11}, "headers": {**caller.headers, "Accept": "text/csv"}},
        ):
            response = client.get(f"/range-tests/{job_id}/curve", **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/csv")
            rows = list(csv.reader(io.StringIO(response.text)))
            assert rows[0] == ["index", "lr", "loss", "smoothed_loss", "accuracy"]
            tail = make_points(11, 2).values
            assert [int(r[0]) for r in rows[1:]] == [11, 12]
            assert [float(r[1]) for r in rows[1:]] == tail["lr"]
            assert [float(r[2]) for r in rows[1:]] == tail["loss"]
            assert [float(r[4]) for r in rows[1:]] == tail["accuracy"]

    def test_queued_job_has_an_empty_curve(self, client: TestClient, caller: Caller) -> None:
        job_id = submit(client, caller).json()["id"]
        curve = client.get(f"/range-tests/{job_id}/curve", headers=caller.headers).json()
        assert (curve["lrs"], curve["next_after"], curve["total"]) == ([], 0, 100)

    def test_negative_after_is_422(self, client: TestClient, caller: Caller) -> None:
        job_id = submit(client, caller).json()["id"]
        response = client.get(
            f"/range-tests/{job_id}/curve", params={"after": -1}, headers=caller.headers
        )
        assert response.status_code == 422
        assert "after" in fields(response)


class TestSeeds:
    def test_a_range_test_under_seeds_shows_its_band_and_seed_band(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        created = submit(client, caller, spec_data(seeds=[3, 1, 2])).json()
        assert (created["spec"]["seed"], created["spec"]["seeds"]) == (3, [3, 1, 2])
        job_id = uuid.UUID(created["id"])
        attempt = running(session, job_id)
        values = {
            "lr": [1e-3, 1e-2],
            "n": [3.0, 2.0],
            "mean": [2.3, 2.1],
            "std": [0.01, 0.02],
            "min": [2.29, 2.08],
            "max": [2.31, 2.12],
        }
        band_points = SeriesPoints.of(BAND, 0, values)
        report_progress(session, job_id=job_id, attempt=attempt, points=[band_points])
        doc = SeedBandDoc(
            seeds=[3, 1, 2],
            fused=True,
            path="stacked",
            reason="the 3 seeds ran as one fused range test (stacked path) on cpu",
            steps_run=[2, 2, 1],
            stop_reasons=["completed", "completed", "diverged"],
            max_lr_band=(0.08, 0.12),
            confidence=0.8,
        )
        outcome = make_outcome().model_copy(update={"seed_band": doc})
        finish_job(session, job_id=job_id, attempt=attempt, result=outcome)

        job = client.get(f"/range-tests/{job_id}", headers=caller.headers).json()
        assert job["result"]["seed_band"] == doc.model_dump(mode="json")
        assert job["series_points"] == {"band": 2}
        band = client.get(f"/jobs/{job_id}/series/band", headers=caller.headers).json()
        assert band["fields"] == ["lr", "n", "mean", "std", "min", "max"]
        assert band["values"] == values

    def test_a_single_seeds_result_has_no_seed_band(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id = uuid.UUID(submit(client, caller).json()["id"])
        finish_job(session, job_id=job_id, attempt=running(session, job_id), result=make_outcome())
        job = client.get(f"/range-tests/{job_id}", headers=caller.headers).json()
        assert job["spec"]["seeds"] is None
        assert job["result"]["seed_band"] is None


class TestBounds:
    def test_409_while_queued_then_every_method_once_finished(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id = uuid.UUID(submit(client, caller).json()["id"])
        queued = client.get(f"/range-tests/{job_id}/bounds", headers=caller.headers)
        assert queued.status_code == 409
        assert "is queued" in queued.json()["detail"]

        attempt = running(session, job_id)
        finish_job(session, job_id=job_id, attempt=attempt, result=outcome_with_methods())

        response = client.get(f"/range-tests/{job_id}/bounds", headers=caller.headers)
        assert response.status_code == 200
        body = response.json()
        assert body["method"] == body["default_method"] == "max_fraction"
        assert [s["method"] for s in body["suggestions"]] == ["max_fraction", "paper", "steepest"]
        assert (body["base_lr"], body["max_lr"]) == (0.01, 0.1)
        assert (body["step_size"], body["stop_iteration"], body["confidence"]) == (112, 896, 0.9)

        paper = client.get(
            f"/range-tests/{job_id}/bounds", params={"method": "paper"}, headers=caller.headers
        ).json()
        assert paper["method"] == "paper"
        assert (paper["base_lr"], paper["max_lr"]) == (0.002, 0.2)
        assert paper["suggestions"][0]["method"] == "paper"

        job = client.get(f"/range-tests/{job_id}", headers=caller.headers).json()
        assert job["status"] == "succeeded"
        assert job["result"]["summary"]["stop_reason"] == "diverged"

        unknown = client.get(
            f"/range-tests/{job_id}/bounds", params={"method": "vibes"}, headers=caller.headers
        )
        assert unknown.status_code == 422
        assert "paper" in fields(unknown)["method"]

    def test_failed_job_is_409_naming_failed(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id = uuid.UUID(submit(client, caller).json()["id"])
        fail_job(session, job_id=job_id, attempt=running(session, job_id), reason="CUDA OOM")
        response = client.get(f"/range-tests/{job_id}/bounds", headers=caller.headers)
        assert response.status_code == 409
        assert "failed" in response.json()["detail"]
        assert (
            client.get(f"/range-tests/{job_id}", headers=caller.headers).json()["error"]
            == "CUDA OOM"
        )

    def test_latest_bounds_of_a_configuration(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        query = {"workload": "digits_mlp", "params": json.dumps({"width": 16})}
        missing = client.get("/bounds", params=query, headers=caller.headers)
        assert missing.status_code == 404
        assert "run POST /range-tests first" in missing.json()["detail"]

        job_id = uuid.UUID(submit(client, caller).json()["id"])
        attempt = running(session, job_id)
        finish_job(session, job_id=job_id, attempt=attempt, result=make_outcome(max_lr=0.4))

        found = client.get("/bounds", params=query, headers=caller.headers)
        assert found.status_code == 200
        assert found.json()["job_id"] == str(job_id)
        assert found.json()["max_lr"] == 0.4
        # the same configuration spelled with the default optimizer explicitly
        explicit = {**query, "optimizer": json.dumps({"name": "sgd", "momentum": 0.9})}
        assert client.get("/bounds", params=explicit, headers=caller.headers).status_code == 200
        other = {**query, "params": json.dumps({"width": 32})}
        assert client.get("/bounds", params=other, headers=caller.headers).status_code == 404
        stranger = make_caller(session)
        assert client.get("/bounds", params=query, headers=stranger.headers).status_code == 404

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ({"workload": "digits_mlp", "params": "{width"}, "params"),
            ({"workload": "digits_mlp", "params": "[1]"}, "params"),
            ({"workload": "digits_mlp", "params": '{"widht": 3}'}, "params.widht"),
            ({"workload": "nope"}, "workload"),
            ({}, "workload"),
            ({"workload": "digits_mlp", "batch_size": 0}, "batch_size"),
        ],
    )
    def test_bad_configuration_names_the_field(
        self, client: TestClient, caller: Caller, query: dict[str, Any], field: str
    ) -> None:
        response = client.get("/bounds", params=query, headers=caller.headers)
        assert response.status_code == 422
        assert field in fields(response)


class TestCancel:
    def test_queued_job_is_cancelled_then_409(self, client: TestClient, caller: Caller) -> None:
        job_id = submit(client, caller).json()["id"]
        response = client.post(f"/range-tests/{job_id}/cancel", headers=caller.headers)
        assert response.status_code == 202
        assert response.json()["status"] == "cancelled"
        assert response.json()["finished_at"] is not None

        again = client.post(f"/range-tests/{job_id}/cancel", headers=caller.headers)
        assert again.status_code == 409
        assert fields(again)["status"] == "job is cancelled"
        assert (
            client.get(f"/range-tests/{job_id}", headers=caller.headers).json()["status"]
            == "cancelled"
        )

    def test_running_job_is_asked_to_stop(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id = uuid.UUID(submit(client, caller).json()["id"])
        running(session, job_id)
        response = client.post(f"/range-tests/{job_id}/cancel", headers=caller.headers)
        assert response.status_code == 202
        assert response.json()["status"] == "running"
        assert response.json()["cancel_requested"] is True
        assert response.json()["worker"] == "gpu0"

    def test_finished_job_is_409_naming_its_status(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id = uuid.UUID(submit(client, caller).json()["id"])
        finish_job(session, job_id=job_id, attempt=running(session, job_id), result=make_outcome())
        response = client.post(f"/range-tests/{job_id}/cancel", headers=caller.headers)
        assert response.status_code == 409
        assert fields(response)["status"] == "job is succeeded"
        assert "succeeded" in response.json()["detail"]


class TestOptimizerHyperparameters:
    def test_a_hyperparameter_the_optimizer_ignores_is_refused(
        self, client: TestClient, caller: Caller, messages: Sent
    ) -> None:
        body = spec_data(optimizer={"name": "adam", "momentum": 0.5})
        response = submit(client, caller, body)
        assert response.status_code == 422
        assert fields(response) == {
            "optimizer.momentum": "adam takes no momentum; "
            "use betas (momentum and nesterov apply to sgd)"
        }
        assert messages == []

    def test_a_job_echoes_only_the_hyperparameters_in_effect(
        self, client: TestClient, caller: Caller
    ) -> None:
        response = submit(client, caller, spec_data(optimizer={"name": "adam"}))
        assert response.status_code == 202
        assert response.json()["spec"]["optimizer"] == {
            "name": "adam",
            "weight_decay": 0.0,
            "betas": [0.9, 0.999],
            "eps": 1e-8,
        }
        job_id = response.json()["id"]
        read = client.get(f"/range-tests/{job_id}", headers=caller.headers).json()
        assert "momentum" not in read["spec"]["optimizer"]
        assert "nesterov" not in read["spec"]["optimizer"]
