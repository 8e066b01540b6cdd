"""``/sweeps`` on both databases: submit (its range tests created with it), read, list,
children through ``/jobs?parent=``, refusals naming the field, cancel, the plot."""

from __future__ import annotations

import io
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from rich.console import Console
from sqlalchemy.orm import Session

from cli.follow import follow
from cli.jobs import print_job
from cli.output import Output
from core.models import Job, JobStatus
from core.series import SeriesPoints
from core.services import claim_job, fail_job, finish_job, report_progress
from core.services.parents import advance_parent
from core.specs import STORED
from core.sweeps import (
    MAX_GRID_POINTS,
    ChildRun,
    SweepBounds,
    SweepSpec,
    build_result,
)
from core.training import EPOCHS, TrainingOutcome, TrainingSpec
from tests.api.conftest import Caller, JobsOf, Sent, TestClient
from tests.api.sse import EventReader, Live
from tests.builders import make_job, make_outcome

PROBLEM_JSON = "application/problem+json"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"


def sweep_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "workload": "digits_mlp",
        "params": {"width": 16},
        "policies": ["fixed", "triangular2"],
        "seeds": [0, 1],
        "step_size": 10,
        "cycles": 2,
        "verify": False,
        "range_test": {"num_iter": 30},
    }
    body.update(overrides)
    return body


def submit(client: TestClient, caller: Caller, body: Any = None) -> Any:
    return client.post(
        "/sweeps", json=sweep_body() if body is None else body, headers=caller.headers
    )


def fields(response: Any) -> dict[str, str]:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    return {e["field"]: e["reason"] for e in response.json().get("errors", [])}


def svg_ids(body: bytes) -> list[str]:
    root = ET.fromstring(body)
    assert root.tag == f"{SVG}svg"
    return [el.attrib["id"] for el in root.iter() if "id" in el.attrib]


class TestCreateSweep:
    def test_starts_with_its_range_tests_and_sends_only_theirs(
        self, client: TestClient, caller: Caller, messages: Sent
    ) -> None:
        response = submit(client, caller, sweep_body(grid={"batch_size": [32, 64]}))
        assert response.status_code == 202, response.text
        sweep = response.json()
        assert (sweep["kind"], sweep["status"], sweep["waiting"]) == ("sweep", "running", True)
        assert response.headers["location"].endswith(f"/sweeps/{sweep['id']}")
        assert (sweep["progress"], sweep["total"]) == (0, 2 * (1 + 2 * 2))
        assert sweep["result"]["counts"] == {"queued": 2}
        assert [p["label"] for p in sweep["result"]["points"]] == [
            "bs=32 sgd wd=0",
            "bs=64 sgd wd=0",
        ]
        children = client.get(
            "/jobs", params={"parent": sweep["id"]}, headers=caller.headers
        ).json()["items"]
        assert sorted((c["kind"], c["role"]["grid"]) for c in children) == [
            ("range_test", 0),
            ("range_test", 1),
        ]
        assert {c["parent_id"] for c in children} == {sweep["id"]}
        assert {c["role"]["stage"] for c in children} == {"range_test"}
        assert sorted(messages) == sorted((uuid.UUID(c["id"]), "range_test") for c in children)

    def test_its_range_tests_run_under_the_range_test_seeds(
        self, client: TestClient, caller: Caller
    ) -> None:
        body = sweep_body(seeds=[3, 4], range_test={"num_iter": 50, "seeds": [7, 8, 9]})
        sweep = submit(client, caller, body).json()
        assert (sweep["spec"]["seed"], sweep["spec"]["range_test"]["seeds"]) == (7, [7, 8, 9])
        [child] = client.get(
            "/jobs", params={"parent": sweep["id"]}, headers=caller.headers
        ).json()["items"]
        assert (child["spec"]["seed"], child["spec"]["seeds"]) == (7, [7, 8, 9])

    def test_reads_and_lists_as_a_sweep(self, client: TestClient, caller: Caller) -> None:
        created = submit(client, caller).json()
        one = client.get(f"/sweeps/{created['id']}", headers=caller.headers)
        assert one.status_code == 200
        assert one.json()["result"]["table"][0]["policy"] == "fixed"
        assert client.get(f"/jobs/{created['id']}", headers=caller.headers).json()["kind"] == (
            "sweep"
        )
        listed = client.get("/sweeps", headers=caller.headers).json()["items"]
        assert [s["id"] for s in listed] == [created["id"]]
        # its range test is not a sweep
        child = client.get("/jobs", params={"parent": created["id"]}, headers=caller.headers)
        child_id = child.json()["items"][0]["id"]
        assert client.get(f"/sweeps/{child_id}", headers=caller.headers).status_code == 404


class TestRefusals:
    @pytest.mark.parametrize(
        ("overrides", "field", "words"),
        [
            ({"policies": []}, "policies", "at least one policy"),
            ({"policies": ["fixed", "sawtooth"]}, "policies.1", "'triangular2'"),
            (
                {"iterations": 50, "step_size": 10, "cycles": None},
                "iterations",
                "not whole cycles",
            ),
            (
                {
                    "grid": {
                        "batch_size": [16, 32, 64],
                        "weight_decay": [0, 1e-4, 1e-3, 1e-2, 0.1, 0.2],
                    }
                },
                "grid",
                f"over {MAX_GRID_POINTS}",
            ),
            ({"seeds": []}, "seeds", "at least one seed"),
            ({"verify": 0}, "verify", "boolean"),
            ({"grid": {"batch_size": [32, 32]}}, "grid.batch_size.1", "twice"),
            ({"range_test": {"seeds": [1, 1]}}, "range_test.seeds.1", "twice"),
            ({"range_test": {"seeds": [1, 2]}, "seed": 2}, "seed", "range_test.seeds[0] = 1"),
        ],
    )
    def test_a_bad_sweep_is_422_naming_the_field(
        self,
        client: TestClient,
        caller: Caller,
        messages: Sent,
        overrides: dict[str, Any],
        field: str,
        words: str,
    ) -> None:
        body = {k: v for k, v in sweep_body(**overrides).items() if v is not None}
        response = submit(client, caller, body)
        reasons = fields(response)
        assert field in reasons, reasons
        assert words in reasons[field], reasons
        assert messages == []
        assert client.get("/sweeps", headers=caller.headers).json()["items"] == []


class TestCancelSweep:
    def test_cancels_its_queued_range_tests_and_then_itself(
        self, client: TestClient, caller: Caller
    ) -> None:
        sweep = submit(client, caller, sweep_body(grid={"batch_size": [32, 64]})).json()
        response = client.post(f"/sweeps/{sweep['id']}/cancel", headers=caller.headers)
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "cancelled"
        children = client.get(
            "/jobs", params={"parent": sweep["id"]}, headers=caller.headers
        ).json()["items"]
        assert [c["status"] for c in children] == ["cancelled", "cancelled"]
        final = client.get(f"/sweeps/{sweep['id']}", headers=caller.headers).json()
        assert final["result"]["counts"] == {"cancelled": 2}
        again = client.post(f"/sweeps/{sweep['id']}/cancel", headers=caller.headers)
        assert again.status_code == 409


def finished_sweep(session: Session, caller: Caller, *, status: JobStatus) -> uuid.UUID:
    """A sweep row with a result whose two policies have curves (no children needed)."""
    spec = SweepSpec.model_validate(sweep_body())
    runs = [
        ChildRun(
            job_id=uuid.uuid4(),
            role={"grid": 0, "policy": policy, "seed": seed},
            status="running",
            iteration=[10, 20],
            val_accuracy=[0.5 + 0.1 * seed, 0.6 + 0.1 * seed],
        )
        for policy in spec.policies
        for seed in spec.seeds
    ]
    bounds = SweepBounds(
        base_lr=0.01,
        max_lr=0.1,
        step_size=10,
        fixed_lr=0.03,
        iterations=40,
        cycles=2,
        method="max_fraction",
        fixed_lr_from="steepest",
    )
    result = build_result(spec, runs, bounds={0: bounds})
    job = make_job(
        session,
        team=caller.team,
        kind="sweep",
        spec=spec.model_dump(mode="json"),
        status=status,
        waiting=status == JobStatus.RUNNING,
        result=result.to_json_dict(),
    )
    return job.id


class TestSweepPlot:
    def test_svg_has_a_line_and_band_per_policy(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id = finished_sweep(session, caller, status=JobStatus.RUNNING)
        response = client.get(f"/sweeps/{job_id}/plot.svg", headers=caller.headers)
        assert response.status_code == 200, response.text
        assert response.headers["content-type"] == "image/svg+xml"
        assert response.headers["cache-control"] == "no-cache"
        ids = svg_ids(response.content)
        for gid in ("mean-fixed", "mean-triangular2", "band-fixed", "band-triangular2"):
            assert gid in ids, ids
        assert "[0.01, 0.1], step 10" in response.text

    def test_png_of_a_finished_sweep_is_cacheable(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job_id = finished_sweep(session, caller, status=JobStatus.SUCCEEDED)
        response = client.get(f"/sweeps/{job_id}/plot.png", headers=caller.headers)
        assert response.status_code == 200
        assert response.content.startswith(PNG_MAGIC)
        assert response.headers["cache-control"].startswith("private, max-age=")
        etag = response.headers["etag"]
        same = client.get(
            f"/sweeps/{job_id}/plot.png", headers={**caller.headers, "If-None-Match": etag}
        )
        assert same.status_code == 304

    def test_a_sweep_without_curves_yet_is_409_not_ready(
        self, client: TestClient, caller: Caller
    ) -> None:
        sweep = submit(client, caller).json()
        response = client.get(f"/sweeps/{sweep['id']}/plot.png", headers=caller.headers)
        assert response.status_code == 409
        assert response.json()["type"].endswith("not-ready")

    def test_a_cancelled_sweep_without_curves_is_409_conflict(
        self, client: TestClient, caller: Caller
    ) -> None:
        sweep = submit(client, caller).json()
        client.post(f"/sweeps/{sweep['id']}/cancel", headers=caller.headers)
        response = client.get(f"/sweeps/{sweep['id']}/plot.svg", headers=caller.headers)
        assert response.status_code == 409
        assert response.json()["type"].endswith("job-conflict")

    def test_another_kinds_id_is_404(self, client: TestClient, caller: Caller) -> None:
        sweep = submit(client, caller).json()
        child = client.get("/jobs", params={"parent": sweep["id"]}, headers=caller.headers)
        child_id = child.json()["items"][0]["id"]
        response = client.get(f"/sweeps/{child_id}/plot.png", headers=caller.headers)
        assert response.status_code == 404


class FakeWorkers:
    """Runs a sweep's children as workers would, a few per poll of the client.

    The client's ``sleep`` between two polls is this object: each call finishes
    the queued children there are (range tests with bounds, trainings with an
    ``epochs`` series); no timing involved.
    """

    def __init__(self, session: Session, *, fail: set[str] = frozenset()) -> None:
        self.session = session
        self.fail = fail  # "policy/seed" of trainings that fail
        self.polls = 0

    def __call__(self, _seconds: float) -> None:
        self.polls += 1
        queued = self.session.query(Job).filter(Job.status == JobStatus.QUEUED).all()
        for child in queued:
            claimed = claim_job(self.session, job_id=child.id, worker="gpu0", device="cpu")
            assert claimed is not None
            attempt = claimed.attempt
            role = child.role or {}
            if child.kind == "range_test":
                outcome = make_outcome(base_lr=0.02, max_lr=0.2)
                finish_job(self.session, job_id=child.id, attempt=attempt, result=outcome)
            else:
                accuracies = CURVES[role["policy"]][role["seed"]]
                points = epoch_series(accuracies)
                report_progress(
                    self.session, job_id=child.id, attempt=attempt, points=[points], progress=1
                )
                if f"{role['policy']}/{role['seed']}" in self.fail:
                    fail_job(self.session, job_id=child.id, attempt=attempt, reason="diverged")
                else:
                    result = training_result(child, accuracies)
                    finish_job(self.session, job_id=child.id, attempt=attempt, result=result)
            advance_parent(self.session, parent_id=child.parent_id)


CURVES = {
    "fixed": [[0.5, 0.6, 0.7, 0.8], [0.5, 0.7, 0.8, 0.9]],
    "triangular2": [[0.6, 0.86, 0.8, 0.9], [0.7, 0.9, 0.85, 0.95]],
}


def epoch_series(accuracies: list[float]) -> SeriesPoints:
    n = len(accuracies)
    return SeriesPoints.of(
        EPOCHS,
        0,
        {
            "epoch": [float(k) for k in range(n)],
            "iteration": [float(10 * (k + 1)) for k in range(n)],
            "train_loss": [1.0] * n,
            "train_accuracy": accuracies,
            "val_loss": [1.0] * n,
            "val_accuracy": accuracies,
        },
    )


def training_result(child: Job, accuracies: list[float]) -> TrainingOutcome:
    spec = TrainingSpec.model_validate(child.spec, context={STORED: True})
    return TrainingOutcome(
        stop_reason="completed",
        iterations=40,
        epochs=len(accuracies),
        cycles=2,
        cycle_ends=[20, 40],
        seconds=0.1,
        device="cpu",
        policy=spec.schedule.policy,
        schedule=spec.schedule.model_dump(mode="json"),
        final_train_loss=0.5,
        final_val_loss=0.6,
        final_val_accuracy=accuracies[-1],
        best_val_accuracy=max(accuracies),
        best_val_iteration=10 * (accuracies.index(max(accuracies)) + 1),
    )


class TestSweepAsTheCommandShowsIt:
    """``clr-sweep sweep wait``'s bar and the paper's table on the real app's documents
    (in-process, real database; the command itself: tests/service/test_sweep_flow.py)."""

    def test_follows_a_sweep_and_prints_its_table(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        client.headers.update(caller.headers)
        workers = FakeWorkers(session, fail={"triangular2/1"})
        job = submit(client, caller).json()
        out = Output()
        out.console = Console(file=io.StringIO(), width=160)
        final = follow(JobsOf(client), job, out, interval_s=0, sleep=workers)
        print_job(final, out)
        text = out.console.file.getvalue()  # type: ignore[attr-defined]
        assert workers.polls == 2  # the range test, then the four trainings
        assert final["status"] == "succeeded"
        assert "4 succeeded, 1 failed" in text  # the bar's counts
        assert "bounds 0.02 to 0.2 (range test's max_fraction)" in text
        assert "step_size 10, 40 iterations (2 cycles)" in text
        # fixed: 0.85 ± 0.0707 over two seeds, reached by seed 1 at 40; triangular2:
        # seed 0 alone (seed 1 failed), reaching 0.85 at 20: 0.5x
        assert "0.8500 ± 0.0707" in text
        assert "0.9000" in text
        assert "20 (1/1)" in text
        assert "0.50x" in text
        assert "1/2 (1 failed)" in text
        assert "failed: grid point 0 triangular2 seed 1: diverged" in text
        assert final["result"]["complete"] is True


class TestSweepEvents:
    def test_streams_its_progress_as_children_end_until_it_ends(self, live: Live) -> None:
        created = live.client.post("/sweeps", json=sweep_body(), headers=live.headers)
        assert created.status_code == 202, created.text
        sweep_id = uuid.UUID(created.json()["id"])
        with live.client.stream("GET", f"/sweeps/{sweep_id}/events", headers=live.headers) as s:
            events = EventReader(s)
            first = events.next()
            assert (first.event, first.data["kind"], first.data["status"]) == (
                "status",
                "sweep",
                "running",
            )
            assert (first.data["waiting"], first.data["progress"], first.data["total"]) == (
                True,
                0,
                5,
            )

            def finish_range_test(session: Session) -> None:
                (test,) = session.query(Job).filter(Job.parent_id == sweep_id).all()
                claimed = claim_job(session, job_id=test.id, worker="gpu0", device="cpu")
                assert claimed is not None
                finish_job(session, job_id=test.id, attempt=claimed.attempt, result=make_outcome())

            # a sweep has no series: its status events carry its progress
            live.write(finish_range_test)
            moved = events.next()
            assert (moved.event, moved.data["status"], moved.data["progress"]) == (
                "status",
                "running",
                1,
            )
            assert moved.data["result"]["counts"] == {"succeeded": 1, "queued": 4}
            cancel = live.client.post(f"/sweeps/{sweep_id}/cancel", headers=live.headers)
            assert cancel.status_code == 202
            final, end = events.take(2)
            assert (final.event, final.data["status"]) == ("status", "cancelled")
            assert final.data["result"]["counts"] == {"succeeded": 1, "cancelled": 4}
            assert (end.event, end.data["status"], end.data["progress"]) == ("end", "cancelled", 5)
            events.assert_closed()
