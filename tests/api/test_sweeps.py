"""``/sweeps`` on both databases: submit (its range tests created with it), read, list,
children through ``/jobs?parent=``, refusals naming the field, cancel, the plot."""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET
from typing import Any

import pytest
from sqlalchemy.orm import Session

from core.models import JobStatus
from core.sweeps import (
    MAX_GRID_POINTS,
    ChildRun,
    SweepBounds,
    SweepSpec,
    build_result,
)
from tests.api.conftest import Caller, Sent, TestClient
from tests.builders import make_job

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
