"""``/trainings`` on both databases: submit (explicit bounds or a range test's), read,
list, kind isolation, the plot and the model download."""

from __future__ import annotations

import hashlib
import io
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from rich.console import Console
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from cli.follow import follow
from cli.jobs import print_job
from cli.output import Output
from core.artifacts import open_artifact_writer
from core.db import session_scope
from core.models import Job, JobStatus
from core.series import SeriesPoints
from core.services import claim_job, fail_job, finish_job, record_checkpoint, report_progress
from core.settings import Settings
from core.training import EPOCHS, ITERATIONS
from tests.api.conftest import Caller, JobsOf, Sent, TestClient, make_caller
from tests.builders import make_job, make_outcome

PROBLEM_JSON = "application/problem+json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"
STEP = 20  # step_size_up of the trainings below: a cycle is 40 iterations


def training_body(**overrides: Any) -> dict[str, Any]:
    """A small valid training: 3 triangular cycles of 40 iterations on digits."""
    body: dict[str, Any] = {
        "workload": "digits_mlp",
        "params": {"width": 16},
        "batch_size": 32,
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "schedule": {"policy": "triangular", "base_lr": 0.01, "max_lr": 0.1, "step_size_up": STEP},
        "cycles": 3,
    }
    body.update(overrides)
    return body


def submit(client: TestClient, caller: Caller, body: Any = None, **headers: str) -> Any:
    return client.post(
        "/trainings",
        json=training_body() if body is None else body,
        headers={**caller.headers, **headers},
    )


def fields(response: Any) -> dict[str, str]:
    assert response.status_code in (409, 422), response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    return {e["field"]: e["reason"] for e in response.json().get("errors", [])}


def queued_training(client: TestClient, caller: Caller, **overrides: Any) -> uuid.UUID:
    response = submit(client, caller, training_body(**overrides))
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


def finished_range_test(session: Session, caller: Caller, **overrides: Any) -> Job:
    """A range test of the caller's team that succeeded with bounds 0.02..0.2."""
    values: dict[str, Any] = {
        "status": JobStatus.SUCCEEDED,
        "attempt": 1,
        "result": make_outcome(base_lr=0.02, max_lr=0.2).to_json_dict(),
    }
    values.update(overrides)
    return make_job(session, team=caller.team, **values)


def iteration_points(start: int, size: int) -> SeriesPoints:
    idx = range(start, start + size)
    return SeriesPoints.of(
        ITERATIONS,
        start,
        {
            "lr": [0.01 + 0.09 * (1 - abs((i % 40) / STEP - 1)) for i in idx],
            "momentum": [0.9 for _ in idx],
            "loss": [2.3 - i / 100 for i in idx],
        },
    )


def epoch_points(start: int, iterations: list[int]) -> SeriesPoints:
    n = len(iterations)
    return SeriesPoints.of(
        EPOCHS,
        start,
        {
            "epoch": [float(start + k) for k in range(n)],
            "iteration": [float(i) for i in iterations],
            "train_loss": [2.0 - 0.1 * k for k in range(start, start + n)],
            "train_accuracy": [0.5 + 0.1 * k for k in range(start, start + n)],
            "val_loss": [2.1 - 0.1 * k for k in range(start, start + n)],
            "val_accuracy": [0.45 + 0.1 * k for k in range(start, start + n)],
        },
    )


def running_with_points(
    client: TestClient, caller: Caller, session: Session, points: int
) -> tuple[uuid.UUID, int]:
    job_id = queued_training(client, caller)
    claimed = claim_job(session, job_id=job_id, worker="gpu0", device="cpu")
    assert claimed is not None
    if points:
        epochs = list(range(30, points + 1, 30))
        report_progress(
            session,
            job_id=job_id,
            attempt=claimed.attempt,
            points=[iteration_points(0, points), epoch_points(0, epochs)],
            progress=points,
        )
    return job_id, claimed.attempt


def outcome(**overrides: Any) -> dict[str, Any]:
    """A finished training's result: 120 iterations, 3 cycles, a 2-snapshot ensemble."""
    values: dict[str, Any] = {
        "stop_reason": "completed",
        "iterations": 120,
        "epochs": 4,
        "cycles": 3,
        "cycle_ends": [40, 80, 120],
        "seconds": 1.5,
        "device": "cpu",
        "policy": "triangular",
        "schedule": {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": STEP},
        "final_train_loss": 0.3,
        "final_val_loss": 0.35,
        "final_val_accuracy": 0.91,
        "best_val_accuracy": 0.92,
        "best_val_iteration": 90,
        "ensemble_val_loss": 0.33,
        "ensemble_val_accuracy": 0.93,
        "ensemble_size": 2,
    }
    values.update(overrides)
    return values


def svg_ids(body: bytes) -> list[str]:
    root = ET.fromstring(body)
    assert root.tag == f"{SVG}svg"
    return [el.attrib["id"] for el in root.iter() if "id" in el.attrib]


class TestCreateTraining:
    def test_queues_the_training_with_its_length_and_sends_its_id(
        self, client: TestClient, caller: Caller, session: Session, messages: Sent
    ) -> None:
        response = submit(client, caller)
        assert response.status_code == 202, response.text
        body = response.json()
        job_id = uuid.UUID(body["id"])
        assert response.headers["location"] == f"http://testserver/trainings/{job_id}"
        assert body["kind"] == "training"
        assert body["status"] == "queued"
        assert body["total"] == 3 * 2 * STEP  # 3 whole cycles, in iterations
        assert body["spec"]["schedule"]["max_lr"] == 0.1
        assert body["spec"]["params"]["batch_size"] == 32
        assert body["spec"]["bounds_source"] is None
        assert messages == [(job_id, "training")]
        job = session.get(Job, job_id)
        assert job is not None
        assert job.team_id == caller.team.id

        fetched = client.get(response.headers["location"], headers=caller.headers)
        assert fetched.status_code == 200
        assert fetched.json()["id"] == str(job_id)

    def test_same_idempotency_key_returns_the_same_training_with_200(
        self, client: TestClient, caller: Caller, messages: Sent
    ) -> None:
        first = submit(client, caller, **{"Idempotency-Key": "train-1"})
        again = submit(client, caller, **{"Idempotency-Key": "train-1"})
        assert (first.status_code, again.status_code) == (202, 200)
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["location"] == first.headers["location"]
        assert messages == [(uuid.UUID(first.json()["id"]), "training")]

    def test_bounds_from_a_finished_range_test_are_filled_in_and_recorded(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        range_test = finished_range_test(session, caller)
        body = training_body(
            schedule={"policy": "triangular2"},
            bounds_from={"range_test": str(range_test.id)},
        )
        response = submit(client, caller, body)
        assert response.status_code == 202, response.text
        spec = response.json()["spec"]
        assert spec["schedule"]["base_lr"] == 0.02
        assert spec["schedule"]["max_lr"] == 0.2
        assert spec["schedule"]["step_size_up"] == 112  # the range test's suggestion
        assert spec["bounds_source"] == {
            "range_test": str(range_test.id),
            "method": "max_fraction",
            "base_lr": 0.02,
            "max_lr": 0.2,
            "step_size": 112,
        }
        assert spec.get("bounds_from") is None
        assert response.json()["total"] == 3 * 2 * 112

    def test_bounds_from_a_queued_range_test_is_409(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        range_test = make_job(session, team=caller.team)
        body = training_body(schedule={"policy": "triangular"})
        body["bounds_from"] = {"range_test": str(range_test.id)}
        response = submit(client, caller, body)
        assert response.status_code == 409
        assert "queued" in fields(response)["bounds_from.range_test"]

    @pytest.mark.parametrize("case", ["failed", "no bounds", "another team's", "a training"])
    def test_bounds_from_a_range_test_without_bounds_is_422_naming_it(
        self, client: TestClient, caller: Caller, session: Session, case: str
    ) -> None:
        if case == "failed":
            source = make_job(session, team=caller.team, status=JobStatus.FAILED, attempt=1)
            source_id = source.id
        elif case == "no bounds":
            outcome = make_outcome().model_copy(
                update={"suggestions": None, "no_bounds_reason": "the loss never fell"}
            )
            source_id = finished_range_test(session, caller, result=outcome.to_json_dict()).id
        elif case == "another team's":
            source_id = finished_range_test(session, make_caller(session)).id
        else:
            source_id = queued_training(client, caller)
        body = training_body(schedule={"policy": "triangular"})
        body["bounds_from"] = {"range_test": str(source_id)}
        response = submit(client, caller, body)
        assert response.status_code == 422, response.text
        assert str(source_id) in fields(response)["bounds_from.range_test"]

    def test_bounds_and_bounds_from_together_are_422(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        range_test = finished_range_test(session, caller)
        body = training_body(bounds_from={"range_test": str(range_test.id)})
        response = submit(client, caller, body)
        assert response.status_code == 422
        assert "not both" in fields(response)["schedule.base_lr"]

    @pytest.mark.parametrize(
        ("schedule", "length", "field", "reason"),
        [
            ({"base_lr": 0.1, "max_lr": 0.01}, {}, "schedule.max_lr", "max_lr"),
            ({"step_size_up": 0}, {}, "schedule.step_size_up", "greater than or equal to 1"),
            ({"policy": "cosine"}, {}, "schedule.policy", "triangular"),
            ({}, {"cycles": None, "iterations": 100}, "iterations", "cycle"),
            ({"T_0": 10}, {}, "schedule.T_0", "takes no T_0"),
            (
                {"policy": "fixed", "lr": 0.1, "base_lr": None, "max_lr": None},
                {},
                "schedule.step_size_up",
                "takes no step_size_up",
            ),
        ],
    )
    def test_bad_schedules_are_422_naming_the_field(
        self,
        client: TestClient,
        caller: Caller,
        messages: Sent,
        schedule: dict[str, Any],
        length: dict[str, Any],
        field: str,
        reason: str,
    ) -> None:
        body = training_body(**length)
        merged = {**body["schedule"], **schedule}
        body["schedule"] = {k: v for k, v in merged.items() if v is not None}
        body = {k: v for k, v in body.items() if v is not None}
        response = submit(client, caller, body)
        assert response.status_code == 422, response.text
        errors = fields(response)
        assert field in errors, errors
        assert reason in errors[field]
        assert messages == []


class TestRefusedBeforeTheyRun:
    """Specs that would crash the worker, or load the service, are refused at submit."""

    @pytest.mark.parametrize(
        ("schedule", "length", "field", "reason"),
        [
            # lengths past the cap, however they are given
            ({"step_size_up": 10_000}, {"cycles": 60}, "cycles", "over 1000000 iterations"),
            ({}, {"cycles": None, "iterations": 2_000_000}, "iterations", "1000000"),
            (
                {"policy": "cosine_restarts", "max_lr": 0.1, "T_0": 100_000, "T_mult": 100},
                {"cycles": 1000},
                "cycles",
                "over 1000000 iterations",
            ),
            # a checkpoint at every cycle end: not millions of them
            (
                {"step_size_up": 1},
                {"cycles": None, "iterations": 40_000},
                "schedule.step_size_up",
                "10000 cycles",
            ),
            (
                {"policy": "cosine_restarts", "max_lr": 0.1, "T_0": 1},
                {"cycles": None, "iterations": 20_000},
                "schedule.T_0",
                "10000 cycles",
            ),
            # values whose schedule overflows or makes no sense
            (
                {"policy": "exp", "lr": 0.1, "gamma": 1e300},
                {"cycles": None, "iterations": 100},
                "schedule.gamma",
                "less than or equal to 1",
            ),
            (
                {"policy": "exp_range", "gamma": 10.0},
                {},
                "schedule.gamma",
                "less than or equal to 1",
            ),
            (
                {"policy": "one_cycle", "max_lr": 0.1, "div_factor": 1e-300},
                {"cycles": None, "iterations": 100},
                "schedule.div_factor",
                "greater than or equal to 1",
            ),
            (
                {"policy": "cosine_restarts", "max_lr": 0.1, "T_0": 40, "eta_min": 5.0},
                {},
                "schedule.eta_min",
                "max_lr",
            ),
            ({"max_lr": 1e308}, {}, "schedule.max_lr", "less than or equal to 1000"),
        ],
    )
    def test_is_422_naming_the_field(
        self,
        client: TestClient,
        caller: Caller,
        messages: Sent,
        schedule: dict[str, Any],
        length: dict[str, Any],
        field: str,
        reason: str,
    ) -> None:
        body = training_body(**length)
        merged = {**body["schedule"], **schedule}
        if merged.get("policy") not in (None, "triangular", "triangular2", "exp_range"):
            for name in ("base_lr", "step_size_up"):
                merged.pop(name, None)
            if merged["policy"] in ("exp",):
                merged.pop("max_lr", None)
        body["schedule"] = merged
        body = {k: v for k, v in body.items() if v is not None}
        response = submit(client, caller, body)
        assert response.status_code == 422, response.text
        errors = fields(response)
        assert field in errors, errors
        assert reason in errors[field]
        assert messages == []

    def test_bounds_source_is_set_by_the_service_only(
        self, client: TestClient, caller: Caller, messages: Sent
    ) -> None:
        forged = {
            "range_test": str(uuid.uuid4()),
            "method": "paper",
            "base_lr": 0.01,
            "max_lr": 0.1,
        }
        response = submit(client, caller, training_body(bounds_source=forged))
        assert response.status_code == 422
        assert "bounds_from" in fields(response)["bounds_source"]
        assert messages == []

    @pytest.mark.parametrize(
        ("overrides", "named"),
        [({"workload": "digits_cnn"}, "'digits_mlp'"), ({"optimizer": {"name": "adam"}}, "'sgd'")],
    )
    def test_bounds_from_a_range_test_of_another_setup_is_422(
        self,
        client: TestClient,
        caller: Caller,
        session: Session,
        overrides: dict[str, Any],
        named: str,
    ) -> None:
        range_test = finished_range_test(session, caller)
        body = training_body(
            schedule={"policy": "triangular"},
            bounds_from={"range_test": str(range_test.id)},
            **overrides,
        )
        body["params"] = {}
        response = submit(client, caller, body)
        assert response.status_code == 422, response.text
        assert named in fields(response)["bounds_from.range_test"]


class TestReadTrainings:
    def test_list_holds_only_trainings(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        range_test = make_job(session, team=caller.team)
        training_id = queued_training(client, caller)
        listed = client.get("/trainings", headers=caller.headers)
        assert listed.status_code == 200
        assert [j["id"] for j in listed.json()["items"]] == [str(training_id)]
        everything = client.get("/jobs", headers=caller.headers).json()["items"]
        assert {j["id"] for j in everything} == {str(training_id), str(range_test.id)}

    def test_another_kinds_id_is_404_never_500(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        range_test = finished_range_test(session, caller)
        training_id = queued_training(client, caller)
        for path in (
            f"/trainings/{range_test.id}",
            f"/trainings/{range_test.id}/plot.png",
            f"/trainings/{range_test.id}/plot.svg",
            f"/range-tests/{training_id}",
            f"/range-tests/{training_id}/curve",
            f"/range-tests/{training_id}/bounds",
            f"/range-tests/{training_id}/plot.png",
        ):
            response = client.get(path, headers=caller.headers)
            assert response.status_code == 404, (path, response.text)
            assert response.headers["content-type"] == PROBLEM_JSON
        cancel = client.post(f"/trainings/{range_test.id}/cancel", headers=caller.headers)
        assert cancel.status_code == 404

    def test_another_teams_training_is_404(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id, _ = running_with_points(client, caller, session, 40)
        other = make_caller(session)
        for path in (f"/trainings/{job_id}", f"/trainings/{job_id}/plot.svg"):
            assert client.get(path, headers=other.headers).status_code == 404

    def test_series_are_read_through_the_generic_route(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id, _ = running_with_points(client, caller, session, 90)
        response = client.get(
            f"/jobs/{job_id}/series/iterations", params={"after": 80}, headers=caller.headers
        )
        assert response.status_code == 200
        body = response.json()
        assert body["start"] == 80
        assert body["next_after"] == 90
        assert body["values"]["loss"] == pytest.approx([2.3 - i / 100 for i in range(80, 90)])
        epochs = client.get(f"/jobs/{job_id}/series/epochs", headers=caller.headers).json()
        assert epochs["values"]["iteration"] == [30.0, 60.0, 90.0]


class TestTrainingPlot:
    def test_running_training_svg_shows_the_run_so_far_and_every_cycle_end(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id, _ = running_with_points(client, caller, session, 50)
        response = client.get(f"/trainings/{job_id}/plot.svg", headers=caller.headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/svg+xml"
        assert response.headers["cache-control"] == "no-cache"
        ids = svg_ids(response.content)
        for gid in ("loss", "raw-loss", "lr", "momentum", "val-accuracy", "val-loss"):
            assert gid in ids
        assert ids.count("cycle-end") == 2 * 3  # the spec's 3 ends, on both panels
        assert "running: 50 of 120 iterations" in response.text

    def test_the_last_checkpoint_is_marked(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id, attempt = running_with_points(client, caller, session, 40)
        before = client.get(f"/trainings/{job_id}/plot.svg", headers=caller.headers)
        assert "checkpoint" not in svg_ids(before.content)
        assert record_checkpoint(session, job_id=job_id, attempt=attempt, artifact="checkpoint")
        after = client.get(
            f"/trainings/{job_id}/plot.svg",
            headers={**caller.headers, "If-None-Match": before.headers["etag"]},
        )
        assert after.status_code == 200  # the same points, but another picture
        assert svg_ids(after.content).count("checkpoint") == 2

    def test_png_has_an_etag_and_a_304_when_unchanged(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id, attempt = running_with_points(client, caller, session, 40)
        first = client.get(f"/trainings/{job_id}/plot.png", headers=caller.headers)
        assert first.status_code == 200
        assert first.content.startswith(PNG_MAGIC)
        assert int(first.headers["content-length"]) == len(first.content)
        etag = first.headers["etag"]
        same = client.get(
            f"/trainings/{job_id}/plot.png", headers={**caller.headers, "If-None-Match": etag}
        )
        assert same.status_code == 304
        report_progress(
            session, job_id=job_id, attempt=attempt, points=[iteration_points(40, 5)], progress=45
        )
        changed = client.get(
            f"/trainings/{job_id}/plot.png", headers={**caller.headers, "If-None-Match": etag}
        )
        assert changed.status_code == 200
        assert changed.headers["etag"] != etag

    def test_finished_training_plot_is_cacheable_and_says_how_it_ended(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id, attempt = running_with_points(client, caller, session, 120)
        assert finish_job(session, job_id=job_id, attempt=attempt, result=outcome()) is not None
        response = client.get(f"/trainings/{job_id}/plot.svg", headers=caller.headers)
        assert response.status_code == 200
        assert response.headers["cache-control"].startswith("private, max-age=")
        assert "completed: 120 iterations, 3 cycles" in response.text
        assert "ensemble 0.930" in response.text

    def test_queued_training_plot_is_409_not_ready(
        self, client: TestClient, caller: Caller
    ) -> None:
        job_id = queued_training(client, caller)
        response = client.get(f"/trainings/{job_id}/plot.png", headers=caller.headers)
        assert response.status_code == 409
        assert response.json()["type"].endswith("not-ready")

    def test_failed_training_without_iterations_plot_is_409(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id, attempt = running_with_points(client, caller, session, 0)
        assert fail_job(session, job_id=job_id, attempt=attempt, reason="boom") is not None
        response = client.get(f"/trainings/{job_id}/plot.svg", headers=caller.headers)
        assert response.status_code == 409
        assert response.json()["type"].endswith("job-conflict")


class FakeWorker:
    """Runs a training the way a worker reports it, one step per poll of the client.

    The client's ``sleep`` between two polls is this object: each call claims the
    job or stores the next run of points, then finishes it; no timing involved.
    """

    def __init__(self, session: Session, steps: list[int]) -> None:
        self.session = session
        self.steps = list(steps)  # iterations done after each poll
        self.job_id: uuid.UUID | None = None
        self.attempt = 0
        self.done = 0
        self.polls = 0

    def __call__(self, _seconds: float) -> None:
        self.polls += 1
        job_id = self.job_id
        if job_id is None:
            rows = self.session.query(Job).filter(Job.kind == "training").all()
            assert len(rows) == 1
            job_id = self.job_id = rows[0].id
            claimed = claim_job(self.session, job_id=job_id, worker="gpu0", device="cpu")
            assert claimed is not None
            self.attempt = claimed.attempt
            return
        if not self.steps:
            finish_job(self.session, job_id=job_id, attempt=self.attempt, result=outcome())
            return
        end = self.steps.pop(0)
        epochs = [i for i in range(30, end + 1, 30) if i > self.done]
        points = [iteration_points(self.done, end - self.done)]
        if epochs:
            points.append(epoch_points(self.done // 30, epochs))
        report_progress(
            self.session, job_id=job_id, attempt=self.attempt, points=points, progress=end
        )
        self.done = end


class TestTrainingAsTheCommandShowsIt:
    """``clr-sweep training wait``'s progress bar and final table on the real app's
    documents (in-process, real database; the command against a real service:
    tests/service/test_cli.py)."""

    def test_the_bar_shows_epoch_lr_loss_and_accuracy_then_the_table(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        client.headers.update(caller.headers)
        worker = FakeWorker(session, steps=[40, 90, 120])
        job = submit(client, caller).json()
        out = Output()
        out.console = Console(file=io.StringIO(), width=140)
        final = follow(JobsOf(client), job, out, interval_s=0, sleep=worker)
        print_job(final, out)
        text = out.console.file.getvalue()  # type: ignore[attr-defined]
        assert worker.polls == 5  # claimed, three reports, finished
        assert final["status"] == "succeeded"
        assert "120/120" in text
        assert "epoch 4" in text
        assert "val acc 0.750" in text  # the last epoch's, as the bar showed it
        assert "final val accuracy" in text
        assert "0.9100" in text
        assert "0.9300 (2 snapshots)" in text
        assert "0.9200 (iteration 90)" in text

    def test_a_failed_training_shows_its_reason(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        client.headers.update(caller.headers)
        worker = FakeWorker(session, steps=[])

        def fail(seconds: float) -> None:
            if worker.job_id is None:
                worker(seconds)
            else:
                fail_job(session, job_id=worker.job_id, attempt=worker.attempt, reason="boom")

        job = submit(client, caller).json()
        out = Output()
        out.console = Console(file=io.StringIO(), width=140)
        final = follow(JobsOf(client), job, out, interval_s=0, sleep=fail)
        print_job(final, out)
        assert final["status"] == "failed"
        assert "failed: boom" in out.console.file.getvalue()  # type: ignore[attr-defined]


class CommittedService:
    """The app on sessions that really commit: the model download streams each chunk in a
    transaction of its own, which sees only committed rows (the rolled-back test session's
    are invisible to it)."""

    def __init__(self, factory: sessionmaker[Session], settings: Settings, client: TestClient):
        self.factory = factory
        self.settings = settings
        self.client = client
        with session_scope(factory) as session:
            self.caller = make_caller(session)
            self.other = make_caller(session)

    def running_training(self) -> tuple[uuid.UUID, int]:
        response = self.client.post("/trainings", json=training_body(), headers=self.headers)
        assert response.status_code == 202, response.text
        job_id = uuid.UUID(response.json()["id"])
        with session_scope(self.factory) as session:
            claimed = claim_job(session, job_id=job_id, worker="gpu0", device="cpu")
            assert claimed is not None
            return job_id, claimed.attempt

    def store(self, job_id: uuid.UUID, attempt: int, name: str, data: bytes) -> None:
        with open_artifact_writer(
            self.factory,
            self.settings,
            job_id=job_id,
            attempt=attempt,
            name=name,
            chunk_size=1000,  # a download of several chunks
        ) as writer:
            writer.write(data)
        assert writer.published

    def finish(self, job_id: uuid.UUID, attempt: int, **overrides: Any) -> None:
        with session_scope(self.factory) as session:
            done = finish_job(session, job_id=job_id, attempt=attempt, result=outcome(**overrides))
            assert done is not None

    @property
    def headers(self) -> dict[str, str]:
        return self.caller.headers

    def get(self, path: str, caller: Caller | None = None, **params: Any) -> Any:
        who = caller or self.caller
        return self.client.get(path, headers=who.headers, params=params)


@pytest.fixture(params=["db", "dir"])
def service(
    request: pytest.FixtureRequest,
    committed: sessionmaker[Session],
    api_settings: Settings,
    tmp_path: Path,
) -> Any:
    """The real app (no session override) on committed data, with each artifact store."""
    settings = api_settings
    if request.param == "dir":
        shared = tmp_path / "shared"
        shared.mkdir()
        settings = api_settings.model_copy(update={"artifact_dir": shared})
    app: FastAPI = create_app(settings, job_sender=lambda *_: None)
    with TestClient(app) as client:
        yield CommittedService(committed, settings, client)


def weights(size: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(size))


class TestModelDownload:
    def test_the_final_weights_stream_with_a_filename_and_their_length(
        self, service: CommittedService
    ) -> None:
        job_id, attempt = service.running_training()
        model = weights(4321, 0)
        service.store(job_id, attempt, "model", model)
        service.store(job_id, attempt, "snapshot-1", weights(2500, 1))
        service.store(job_id, attempt, "snapshot-2", weights(2600, 2))
        service.finish(job_id, attempt)

        response = service.get(f"/trainings/{job_id}/model")
        assert response.status_code == 200, response.text
        assert response.content == model
        assert response.headers["content-type"] == "application/octet-stream"
        assert response.headers["content-length"] == str(len(model))
        disposition = response.headers["content-disposition"]
        assert disposition == f'attachment; filename="digits_mlp-{job_id.hex[:8]}-model.pt"'
        assert response.headers["etag"].strip('"') == hashlib.sha256(model).hexdigest()

        second = service.get(f"/trainings/{job_id}/model", snapshot=2)
        assert second.status_code == 200
        assert second.content == weights(2600, 2)
        assert "snapshot-2.pt" in second.headers["content-disposition"]

    def test_a_snapshot_the_ensemble_did_not_keep_is_404_naming_it(
        self, service: CommittedService
    ) -> None:
        job_id, attempt = service.running_training()
        service.store(job_id, attempt, "model", b"weights")
        service.finish(job_id, attempt, ensemble_size=2)
        response = service.get(f"/trainings/{job_id}/model", snapshot=3)
        assert response.status_code == 404
        assert fields_of(response) == {"snapshot": f"training {job_id} kept 2 snapshots (1 to 2)"}
        zero = service.get(f"/trainings/{job_id}/model", snapshot=0)
        assert zero.status_code == 422
        assert "snapshot" in fields_of(zero)

    def test_before_the_training_succeeded_it_is_409(self, service: CommittedService) -> None:
        job_id, attempt = service.running_training()
        service.store(job_id, attempt, "checkpoint", b"not the model")
        running = service.get(f"/trainings/{job_id}/model")
        assert running.status_code == 409
        assert "running" in running.json()["detail"]
        with session_scope(service.factory) as session:
            assert fail_job(session, job_id=job_id, attempt=attempt, reason="boom") is not None
        failed = service.get(f"/trainings/{job_id}/model")
        assert failed.status_code == 409
        assert "failed" in failed.json()["detail"]

    def test_another_teams_training_or_another_kinds_id_is_404(
        self, service: CommittedService
    ) -> None:
        job_id, attempt = service.running_training()
        service.store(job_id, attempt, "model", b"weights")
        service.finish(job_id, attempt)
        assert service.get(f"/trainings/{job_id}/model", service.other).status_code == 404
        with session_scope(service.factory) as session:
            range_test = make_job(session, team=service.caller.team)
        response = service.get(f"/trainings/{range_test.id}/model")
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM_JSON

    def test_a_training_that_stored_no_model_is_404(self, service: CommittedService) -> None:
        job_id, attempt = service.running_training()
        service.finish(job_id, attempt)
        response = service.get(f"/trainings/{job_id}/model")
        assert response.status_code == 404
        assert "model" in response.json()["detail"]


def fields_of(response: Any) -> dict[str, str]:
    assert response.headers["content-type"] == PROBLEM_JSON
    return {e["field"]: e["reason"] for e in response.json().get("errors", [])}
