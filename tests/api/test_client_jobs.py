"""Jobs a team runs in its own loop ("bring your own curve"), on both databases.

A range test or training created with ``"source": "client"`` is running from
its creation; the team uploads its points (idempotently; a gap or a different
overlap is refused naming the index expected next), finishes it, and gets
every method's bounds, ``GET /bounds`` by its own configuration and plots.
"""

from __future__ import annotations

import math
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from clr import METHODS
from core.models import Job
from core.services import reconcile
from core.settings import Settings
from tests.api.conftest import Caller, Sent, TestClient, make_caller
from tests.api.sse import EventReader, Live
from tests.builders import T0, make_job

PROBLEM_JSON = "application/problem+json"
N = 200


def client_spec(**overrides: Any) -> dict[str, Any]:
    """A client range test of a model the service has never heard of."""
    data: dict[str, Any] = {
        "source": "client",
        "model": "resnet-tiny",
        "dataset": "cifar",
        "batch_size": 128,
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "tags": {"run": "a", "width": 64},
        "start_lr": 1e-4,
        "end_lr": 1.0,
        "num_iter": N,
        "iters_per_epoch": 50,
    }
    data.update(overrides)
    return data


def measured_curve(n: int = N) -> dict[str, list[float]]:
    """A curve shaped like a real range test's: flat, a descent, a blow-up."""
    lrs = [1e-4 * (1e4 ** (i / (n - 1))) for i in range(n)]
    losses = []
    for i, lr in enumerate(lrs):
        x = math.log10(lr)
        wiggle = 0.01 * math.sin(i * 1.7)
        losses.append(
            2.3 - 1.6 / (1 + math.exp(-(x + 2.5) * 3)) + 0.2 * math.exp((x + 0.3) * 5) + wiggle
        )
    smoothed, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = 0.95 * avg + 0.05 * loss
        smoothed.append(avg / (1 - 0.95 ** (i + 1)))
    return {"lr": lrs, "loss": losses, "smoothed_loss": smoothed}


def part(curve: dict[str, list[float]], lo: int, hi: int) -> dict[str, list[float]]:
    return {k: v[lo:hi] for k, v in curve.items()}


def create(client: TestClient, caller: Caller, **overrides: Any) -> dict[str, Any]:
    response = client.post("/range-tests", json=client_spec(**overrides), headers=caller.headers)
    assert response.status_code == 202, response.text
    body: dict[str, Any] = response.json()
    return body


def upload(
    client: TestClient, caller: Caller, job_id: str, start: int, values: Any, name: str = "curve"
) -> Any:
    return client.post(
        f"/jobs/{job_id}/series/{name}",
        json={"start": start, "values": values},
        headers=caller.headers,
    )


def problem(response: Any) -> dict[str, Any]:
    assert response.headers["content-type"] == PROBLEM_JSON, response.text
    body: dict[str, Any] = response.json()
    return body


def uploaded(client: TestClient, caller: Caller, **overrides: Any) -> str:
    """A client range test whose whole curve was uploaded and finished."""
    job = create(client, caller, **overrides)
    curve = measured_curve()
    for lo in range(0, N, 50):
        assert upload(client, caller, job["id"], lo, part(curve, lo, lo + 50)).status_code == 200
    finished = client.post(
        f"/jobs/{job['id']}/finish", json={"status": "succeeded"}, headers=caller.headers
    )
    assert finished.status_code == 200, finished.text
    return str(job["id"])


class TestCreate:
    def test_a_client_range_test_runs_from_its_creation_and_no_worker_gets_it(
        self, client: TestClient, caller: Caller, messages: Sent
    ) -> None:
        job = create(client, caller)
        assert job["status"] == "running"
        assert (job["worker"], job["attempt"], job["max_attempts"]) == ("client", 1, 1)
        assert job["spec"]["source"] == "client"
        assert job["spec"]["tags"] == {"run": "a", "width": 64}
        assert job["total"] == N
        assert job["heartbeat_at"] is not None
        assert messages == []  # nothing for a worker to run
        listed = client.get("/jobs", headers=caller.headers).json()["items"]
        assert [(j["id"], j["spec"]["source"]) for j in listed] == [(job["id"], "client")]

    @pytest.mark.parametrize(
        ("overrides", "field"),
        [
            ({"model": ""}, "model"),
            ({"batch_size": 0}, "batch_size"),
            ({"tags": {"bad key": 1}}, "tags.bad key"),
            ({"tags": {f"t{i}": i for i in range(17)}}, "tags"),
            ({"tags": {"run": True}}, "tags.run"),
            ({"tags": {"run": "x" * 300}}, "tags.run"),
            ({"start_lr": 1.0, "end_lr": 0.5}, "end_lr"),
            ({"workload": "digits_mlp"}, "workload"),
            ({"optimizer": {"name": "adam", "momentum": 0.5}}, "optimizer.momentum"),
        ],
    )
    def test_a_bad_configuration_is_refused_naming_the_field(
        self, client: TestClient, caller: Caller, overrides: dict[str, Any], field: str
    ) -> None:
        response = client.post(
            "/range-tests", json=client_spec(**overrides), headers=caller.headers
        )
        assert response.status_code == 422, response.text
        fields = [e["field"] for e in problem(response)["errors"]]
        assert any(f == field or f.startswith(field) for f in fields), fields

    def test_a_retried_create_with_its_idempotency_key_gives_the_same_job(
        self, client: TestClient, caller: Caller
    ) -> None:
        headers = {**caller.headers, "Idempotency-Key": "byoc-1"}
        first = client.post("/range-tests", json=client_spec(), headers=headers)
        again = client.post("/range-tests", json=client_spec(), headers=headers)
        assert (first.status_code, again.status_code) == (202, 200)
        assert again.json()["id"] == first.json()["id"]
        other = client.post("/range-tests", json=client_spec(model="other"), headers=headers)
        assert other.status_code == 422
        assert problem(other)["errors"][0]["field"] == "Idempotency-Key"

    def test_a_service_spec_may_say_its_source(self, client: TestClient, caller: Caller) -> None:
        body = {"workload": "digits_mlp", "num_iter": 50, "source": "service"}
        response = client.post("/range-tests", json=body, headers=caller.headers)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "queued"
        assert "source" not in response.json()["spec"]  # a workload's: run by the service

    def test_a_client_job_counts_against_the_teams_cap_of_active_jobs(
        self, client: TestClient, caller: Caller, api_settings: Settings
    ) -> None:
        api_settings.max_active_jobs_per_team = 1
        create(client, caller)
        response = client.post("/range-tests", json=client_spec(), headers=caller.headers)
        assert response.status_code == 429


class TestUpload:
    def test_points_append_in_order_and_set_progress_and_heartbeat(
        self, client: TestClient, caller: Caller
    ) -> None:
        job = create(client, caller)
        curve = measured_curve()
        first = upload(client, caller, job["id"], 0, part(curve, 0, 30))
        assert first.status_code == 200, first.text
        assert first.json() | {"job_id": None} == {
            "job_id": None,
            "name": "curve",
            "start": 0,
            "stored": 30,
            "points": 30,
            "duplicate": False,
            "status": "running",
            "progress": 30,
            "total": N,
        }
        assert upload(client, caller, job["id"], 30, part(curve, 30, 40)).json()["points"] == 40
        series = client.get(f"/jobs/{job['id']}/series/curve", headers=caller.headers).json()
        assert series["values"]["lr"] == curve["lr"][:40]
        assert series["values"]["accuracy"] is None

    def test_a_repeated_upload_is_idempotent(self, client: TestClient, caller: Caller) -> None:
        job = create(client, caller)
        curve = measured_curve()
        upload(client, caller, job["id"], 0, part(curve, 0, 30))
        again = upload(client, caller, job["id"], 0, part(curve, 0, 30))
        assert again.status_code == 200
        assert (again.json()["stored"], again.json()["duplicate"]) == (0, True)
        # a retry that also carries newer points stores only those
        more = upload(client, caller, job["id"], 20, part(curve, 20, 45))
        assert (more.json()["stored"], more.json()["points"]) == (15, 45)
        series = client.get(f"/jobs/{job['id']}/series/curve", headers=caller.headers).json()
        assert series["values"]["loss"] == curve["loss"][:45]
        assert series["points"] == 45

    def test_a_gap_is_refused_naming_the_expected_start(
        self, client: TestClient, caller: Caller
    ) -> None:
        job = create(client, caller)
        curve = measured_curve()
        upload(client, caller, job["id"], 0, part(curve, 0, 30))
        response = upload(client, caller, job["id"], 31, part(curve, 31, 40))
        assert response.status_code == 409
        body = problem(response)
        assert body["type"].endswith("upload-conflict")
        assert "send from 30" in body["detail"]
        assert body["errors"] == [
            {"field": "start", "reason": "expected 30: the series has 30 points"}
        ]

    def test_an_overlap_with_other_values_is_refused(
        self, client: TestClient, caller: Caller
    ) -> None:
        job = create(client, caller)
        curve = measured_curve()
        upload(client, caller, job["id"], 0, part(curve, 0, 30))
        changed = part(curve, 20, 35)
        changed["loss"][3] += 1.0
        response = upload(client, caller, job["id"], 20, changed)
        assert response.status_code == 409
        assert "differ from those stored" in problem(response)["detail"]
        assert "expected 30" in problem(response)["errors"][0]["reason"]
        series = client.get(f"/jobs/{job['id']}/series/curve", headers=caller.headers).json()
        assert series["points"] == 30

    @pytest.mark.parametrize(
        ("values", "field"),
        [
            ({"lr": [0.1], "smoothed_loss": [1.0]}, "values.loss"),
            ({"lr": [0.1], "loss": [1.0, 2.0], "smoothed_loss": [1.0]}, "values.loss"),
            ({"lr": [0.1], "loss": [1.0], "smoothed_loss": [1.0], "nope": [1.0]}, "values"),
            ({"lr": [], "loss": [], "smoothed_loss": []}, "values"),
        ],
    )
    def test_points_that_are_not_the_series_fields_are_refused(
        self, client: TestClient, caller: Caller, values: dict[str, Any], field: str
    ) -> None:
        job = create(client, caller)
        response = upload(client, caller, job["id"], 0, values)
        assert response.status_code == 422, response.text
        assert problem(response)["errors"][0]["field"] == field

    def test_an_unknown_series_is_refused_naming_the_kinds_series(
        self, client: TestClient, caller: Caller
    ) -> None:
        job = create(client, caller)
        response = upload(client, caller, job["id"], 0, {"lr": [0.1]}, name="epochs")
        assert response.status_code == 422
        assert "their series: curve, band" in problem(response)["errors"][0]["reason"]

    @pytest.mark.parametrize("smoothed", [True, False])
    def test_the_band_across_seeds_is_the_services_not_an_upload(
        self, client: TestClient, caller: Caller, smoothed: bool
    ) -> None:
        job = create(client, caller)
        values = {"lr": [0.1], "n": [2.0], "mean": [1.0], "std": [0.0], "min": [1.0], "max": [1.0]}
        if smoothed:
            values["smoothed_loss"] = [1.0]
        response = upload(client, caller, job["id"], 0, values, name="band")
        assert response.status_code == 422, response.text
        assert problem(response)["errors"] == [
            {
                "field": "name",
                "reason": "a range test run in the team's own loop uploads its curve, not 'band'",
            }
        ]

    def test_a_job_the_service_runs_takes_no_upload(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job = make_job(session, team=caller.team)
        response = upload(client, caller, str(job.id), 0, part(measured_curve(), 0, 5))
        assert response.status_code == 409
        body = problem(response)
        assert body["type"].endswith("not-a-client-job")
        assert '"source": "client"' in body["detail"]
        finish = client.post(
            f"/jobs/{job.id}/finish", json={"status": "succeeded"}, headers=caller.headers
        )
        assert finish.status_code == 409

    def test_another_teams_job_is_not_found(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job = create(client, caller)
        other = make_caller(session)
        response = upload(client, other, job["id"], 0, part(measured_curve(), 0, 5))
        assert response.status_code == 404
        missing = upload(client, caller, str(uuid.uuid4()), 0, part(measured_curve(), 0, 5))
        assert missing.status_code == 404

    def test_after_a_cancel_the_next_upload_says_cancelled(
        self, client: TestClient, caller: Caller
    ) -> None:
        job = create(client, caller)
        curve = measured_curve()
        upload(client, caller, job["id"], 0, part(curve, 0, 10))
        cancelled = client.post(f"/jobs/{job['id']}/cancel", headers=caller.headers)
        assert cancelled.status_code == 202
        assert cancelled.json()["status"] == "cancelled"  # no worker to wait for
        response = upload(client, caller, job["id"], 10, part(curve, 10, 20))
        assert response.status_code == 409
        body = problem(response)
        assert body["type"].endswith(":cancelled")
        assert "stop sending" in body["detail"]
        series = client.get(f"/jobs/{job['id']}/series/curve", headers=caller.headers).json()
        assert series["points"] == 10


class TestHeartbeat:
    def test_a_heartbeat_keeps_a_silent_client_alive(
        self, client: TestClient, caller: Caller, session: Session, api_settings: Settings
    ) -> None:
        job = create(client, caller)
        stored = session.get(Job, uuid.UUID(job["id"]))
        assert stored is not None
        stored.heartbeat_at = T0  # long ago
        session.commit()
        beat = client.post(f"/jobs/{job['id']}/heartbeat", headers=caller.headers)
        assert beat.status_code == 200, beat.text
        assert beat.json()["status"] == "running"
        beaten = session.get(Job, uuid.UUID(job["id"]))
        assert beaten is not None
        assert beaten.heartbeat_at is not None
        assert beaten.heartbeat_at > T0
        report = reconcile(
            session, settings=api_settings, now=beaten.heartbeat_at + timedelta(seconds=30)
        )
        assert report.failed == []

    def test_only_a_running_client_job_takes_a_heartbeat(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        service_job = make_job(session, team=caller.team)
        refused = client.post(f"/jobs/{service_job.id}/heartbeat", headers=caller.headers)
        assert refused.status_code == 409
        assert problem(refused)["type"].endswith("not-a-client-job")
        job = create(client, caller)
        client.post(f"/jobs/{job['id']}/cancel", headers=caller.headers)
        cancelled = client.post(f"/jobs/{job['id']}/heartbeat", headers=caller.headers)
        assert cancelled.status_code == 409
        assert problem(cancelled)["type"].endswith(":cancelled")
        other = make_caller(session)
        assert client.post(f"/jobs/{job['id']}/heartbeat", headers=other.headers).status_code == 404


class TestFinish:
    def test_a_finished_curve_gets_every_methods_bounds_and_a_plot(
        self, client: TestClient, caller: Caller
    ) -> None:
        job_id = uploaded(client, caller)
        job = client.get(f"/range-tests/{job_id}", headers=caller.headers).json()
        assert job["status"] == "succeeded"
        summary = job["result"]["summary"]
        assert (summary["steps_run"], summary["stop_reason"], summary["device"]) == (
            N,
            "completed",
            "client",
        )
        bounds = client.get(f"/range-tests/{job_id}/bounds", headers=caller.headers).json()
        assert {s["method"] for s in bounds["suggestions"]} == set(METHODS)
        assert bounds["step_size"] == 200  # 4 epochs of 50 batches
        for fmt, magic in (("png", b"\x89PNG"), ("svg", b"<?xml")):
            plot = client.get(f"/range-tests/{job_id}/plot.{fmt}", headers=caller.headers)
            assert plot.status_code == 200
            assert plot.content.startswith(magic)

    def test_a_retried_finish_gives_the_same_job_and_another_ending_is_refused(
        self, client: TestClient, caller: Caller
    ) -> None:
        job_id = uploaded(client, caller)
        again = client.post(
            f"/jobs/{job_id}/finish", json={"status": "succeeded"}, headers=caller.headers
        )
        assert again.status_code == 200
        assert again.json()["status"] == "succeeded"
        failed = client.post(
            f"/jobs/{job_id}/finish", json={"status": "failed"}, headers=caller.headers
        )
        assert failed.status_code == 409
        late = upload(client, caller, job_id, N, part(measured_curve(), 0, 1))
        assert late.status_code == 409
        assert "succeeded" in problem(late)["detail"]

    def test_a_failed_run_keeps_its_points_and_reason(
        self, client: TestClient, caller: Caller
    ) -> None:
        job = create(client, caller)
        upload(client, caller, job["id"], 0, part(measured_curve(), 0, 25))
        response = client.post(
            f"/jobs/{job['id']}/finish",
            json={"status": "failed", "error": "RuntimeError: CUDA out of memory"},
            headers=caller.headers,
        )
        assert response.status_code == 200
        assert (response.json()["status"], response.json()["error"]) == (
            "failed",
            "RuntimeError: CUDA out of memory",
        )
        series = client.get(f"/jobs/{job['id']}/series/curve", headers=caller.headers).json()
        assert series["points"] == 25
        plot = client.get(f"/range-tests/{job['id']}/plot.png", headers=caller.headers)
        assert plot.status_code == 200

    def test_a_range_test_without_points_cannot_succeed(
        self, client: TestClient, caller: Caller
    ) -> None:
        job = create(client, caller)
        response = client.post(
            f"/jobs/{job['id']}/finish", json={"status": "succeeded"}, headers=caller.headers
        )
        assert response.status_code == 409
        assert "no curve points" in problem(response)["detail"]

    def test_a_short_curve_finishes_without_bounds_saying_why(
        self, client: TestClient, caller: Caller
    ) -> None:
        job = create(client, caller)
        upload(client, caller, job["id"], 0, part(measured_curve(), 0, 3))
        response = client.post(
            f"/jobs/{job['id']}/finish",
            json={"status": "succeeded", "stop_reason": "diverged", "seconds": 1.5},
            headers=caller.headers,
        )
        assert response.status_code == 200
        result = response.json()["result"]
        assert result["no_bounds_reason"]
        assert (result["summary"]["stop_reason"], result["summary"]["seconds"]) == (
            "diverged",
            1.5,
        )
        bounds = client.get(f"/range-tests/{job['id']}/bounds", headers=caller.headers)
        assert bounds.status_code == 409


class TestFindBounds:
    def test_bounds_are_found_by_the_teams_configuration_and_tags(
        self, client: TestClient, caller: Caller
    ) -> None:
        job_id = uploaded(client, caller)
        other = uploaded(client, caller, tags={"run": "b", "width": 64})
        query = {
            "model": "resnet-tiny",
            "dataset": "cifar",
            "batch_size": "128",
            "optimizer": "sgd",
            "tags.run": "a",
            "tags.width": "64",
        }
        found = client.get("/bounds", params=query, headers=caller.headers)
        assert found.status_code == 200, found.text
        assert found.json()["job_id"] == job_id
        as_json = {**query, "tags": '{"run": "b", "width": 64.0}'}
        del as_json["tags.run"], as_json["tags.width"]
        found_b = client.get("/bounds", params=as_json, headers=caller.headers)
        assert found_b.json()["job_id"] == other
        by_method = client.get(
            "/bounds", params={**query, "method": "valley"}, headers=caller.headers
        )
        assert by_method.json()["suggestions"][0]["method"] == "valley"

    def test_a_miss_lists_the_models_configurations_that_have_bounds(
        self, client: TestClient, caller: Caller
    ) -> None:
        uploaded(client, caller)
        for query in (
            {"tags.run": "c", "tags.width": "64"},  # other tags
            {"tags.run": "a"},  # a tag missing
            {"tags.run": "a", "tags.width": "64", "batch_size": "64"},
            {"tags.run": "a", "tags.width": "64", "metric": "accuracy"},
            {"tags.run": "a", "tags.width": "64", "optimizer": "adam"},
        ):
            full = {"model": "resnet-tiny", "dataset": "cifar", "batch_size": "128", **query}
            response = client.get("/bounds", params=full, headers=caller.headers)
            assert response.status_code == 404, (query, response.text)
            detail = problem(response)["detail"]
            assert "model 'resnet-tiny' has bounds for" in detail
            assert "tags.run=a&tags.width=64" in detail

    def test_a_workloads_bounds_and_a_clients_never_mix(
        self, client: TestClient, caller: Caller
    ) -> None:
        uploaded(client, caller)
        response = client.get("/bounds", params={"workload": "digits_mlp"}, headers=caller.headers)
        assert response.status_code == 404
        assert "no bounds for digits_mlp" in problem(response)["detail"]

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ({}, "workload"),
            ({"workload": "digits_mlp", "model": "m"}, "model"),
            ({"model": "m", "batch_size": "8"}, "dataset"),
            ({"model": "m", "dataset": "d"}, "batch_size"),
            ({"model": "m", "dataset": "d", "batch_size": "8", "params.width": "3"}, "params"),
            ({"workload": "digits_mlp", "tags.run": "a"}, "tags"),
            ({"workload": "digits_mlp", "dataset": "d"}, "dataset"),
            ({"model": "m", "dataset": "d", "batch_size": "8", "tags": "[1]"}, "tags"),
        ],
    )
    def test_a_lookup_that_names_no_single_configuration_is_refused(
        self, client: TestClient, caller: Caller, query: dict[str, str], field: str
    ) -> None:
        response = client.get("/bounds", params=query, headers=caller.headers)
        assert response.status_code == 422, response.text
        assert field in [e["field"] for e in problem(response)["errors"]]


class TestReaper:
    def test_a_client_that_stops_sending_is_failed_with_the_reason(
        self, client: TestClient, caller: Caller, session: Session, api_settings: Settings
    ) -> None:
        job = create(client, caller)
        upload(client, caller, job["id"], 0, part(measured_curve(), 0, 10))
        stored = session.get(Job, uuid.UUID(job["id"]))
        assert stored is not None
        assert stored.heartbeat_at is not None
        last = stored.heartbeat_at
        # still within the timeout: left alone
        early = reconcile(session, settings=api_settings, now=last + timedelta(seconds=59))
        assert uuid.UUID(job["id"]) not in early.failed
        report = reconcile(session, settings=api_settings, now=last + timedelta(seconds=62))
        assert report.failed == [uuid.UUID(job["id"])]
        assert report.requeued == []
        session.commit()
        failed = client.get(f"/jobs/{job['id']}", headers=caller.headers).json()
        assert failed["status"] == "failed"
        assert failed["error"] == (
            "the client stopped sending: no upload for 62 s (heartbeat timeout 60 s)"
        )
        series = client.get(f"/jobs/{job['id']}/series/curve", headers=caller.headers).json()
        assert series["points"] == 10
        late = upload(client, caller, job["id"], 10, part(measured_curve(), 10, 12))
        assert late.status_code == 409
        assert "the client stopped sending" in problem(late)["detail"]

    def test_a_long_client_run_is_not_failed_by_the_time_limit(
        self, client: TestClient, caller: Caller, session: Session, api_settings: Settings
    ) -> None:
        job = create(client, caller)
        stored = session.get(Job, uuid.UUID(job["id"]))
        assert stored is not None
        later = T0.replace(year=2100)
        stored.heartbeat_at = later  # it kept uploading
        session.flush()
        report = reconcile(session, settings=api_settings, now=later + timedelta(seconds=1))
        assert report.timed_out == []
        assert report.failed == []


def training_spec(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "source": "client",
        "model": "resnet-tiny",
        "dataset": "cifar",
        "batch_size": 128,
        "iterations": 40,
        "schedule": {
            "policy": "triangular2",
            "base_lr": 0.01,
            "max_lr": 0.1,
            "step_size_up": 5,
        },
    }
    data.update(overrides)
    return data


class TestTraining:
    def test_a_training_logged_from_a_loop_shows_like_the_services(
        self, client: TestClient, caller: Caller
    ) -> None:
        response = client.post("/trainings", json=training_spec(), headers=caller.headers)
        assert response.status_code == 202, response.text
        job = response.json()
        assert (job["status"], job["total"], job["worker"]) == ("running", 40, "client")
        lrs = [0.01 + 0.09 * (1 - abs((i % 10) / 5 - 1)) for i in range(40)]
        iterations = {
            "lr": lrs,
            "momentum": [0.9] * 40,
            "loss": [2.0 - i / 40 for i in range(40)],
        }
        assert (
            upload(client, caller, job["id"], 0, iterations, name="iterations").json()["progress"]
            == 40
        )
        epochs = {
            "epoch": [1, 2],
            "iteration": [20, 40],
            "train_loss": [1.6, 1.1],
            "val_loss": [1.5, 1.2],
            "val_accuracy": [0.6, 0.55],
        }
        assert upload(client, caller, job["id"], 0, epochs, name="epochs").status_code == 200
        finished = client.post(
            f"/jobs/{job['id']}/finish", json={"status": "succeeded"}, headers=caller.headers
        )
        assert finished.status_code == 200, finished.text
        result = finished.json()["result"]
        assert result["iterations"] == 40
        assert (result["epochs"], result["cycles"]) == (2, 4)
        assert result["cycle_ends"] == [10, 20, 30, 40]
        assert (result["final_val_accuracy"], result["best_val_accuracy"]) == (0.55, 0.6)
        assert (result["best_val_iteration"], result["final_train_loss"]) == (20, 1.1)
        assert result["policy"] == "triangular2"
        plot = client.get(f"/trainings/{job['id']}/plot.png", headers=caller.headers)
        assert plot.status_code == 200
        assert plot.content.startswith(b"\x89PNG")
        listed = client.get("/trainings", headers=caller.headers).json()["items"]
        assert [j["id"] for j in listed] == [job["id"]]

    def test_a_training_without_a_schedule_is_plotted_too(
        self, client: TestClient, caller: Caller
    ) -> None:
        response = client.post(
            "/trainings", json=training_spec(schedule=None), headers=caller.headers
        )
        job = response.json()
        upload(client, caller, job["id"], 0, {"lr": [0.1] * 5, "loss": [1.0] * 5}, "iterations")
        plot = client.get(f"/trainings/{job['id']}/plot.png", headers=caller.headers)
        assert plot.status_code == 200
        finished = client.post(
            f"/jobs/{job['id']}/finish", json={"status": "succeeded"}, headers=caller.headers
        )
        result = finished.json()["result"]
        assert (result["stop_reason"], result["iterations"], result["cycles"]) == (
            "stopped",
            5,
            0,
        )
        assert result["final_train_loss"] == 1.0

    def test_a_cyclic_schedule_that_does_not_build_is_refused(
        self, client: TestClient, caller: Caller
    ) -> None:
        bad = training_spec(
            schedule={"policy": "triangular", "base_lr": 0.5, "max_lr": 0.1, "step_size_up": 5}
        )
        response = client.post("/trainings", json=bad, headers=caller.headers)
        assert response.status_code == 422
        assert problem(response)["errors"][0]["field"].startswith("schedule")


class TestEvents:
    def test_the_event_stream_follows_a_client_job_until_it_is_finished(self, live: Live) -> None:
        created = live.client.post("/range-tests", json=client_spec(), headers=live.headers)
        assert created.status_code == 202
        job_id = created.json()["id"]
        curve = measured_curve()

        def send(lo: int, hi: int) -> None:
            response = live.client.post(
                f"/jobs/{job_id}/series/curve",
                json={"start": lo, "values": part(curve, lo, hi)},
                headers=live.headers,
            )
            assert response.status_code == 200, response.text

        send(0, 120)
        with live.stream(uuid.UUID(job_id)) as response:
            events = EventReader(response)
            status = events.events(1)[0]
            assert (status.event, status.data["status"], status.data["worker"]) == (
                "status",
                "running",
                "client",
            )
            first = events.events(1)[0]
            assert (first.event, first.data["start"], first.id) == ("curve", 0, "1:120")
            assert first.data["values"]["lr"] == curve["lr"][:120]
            send(120, N)
            second = events.events(1)[0]
            assert (second.event, second.data["start"], second.id) == ("curve", 120, f"1:{N}")
            finished = live.client.post(
                f"/jobs/{job_id}/finish", json={"status": "succeeded"}, headers=live.headers
            )
            assert finished.status_code == 200
            final, end = events.events(2)
            assert (final.event, final.data["status"]) == ("status", "succeeded")
            assert final.data["result"]["summary"]["steps_run"] == N
            assert (end.event, end.data["status"], end.data["progress"]) == ("end", "succeeded", N)
            events.assert_closed()
