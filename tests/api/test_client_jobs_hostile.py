"""What a client job refuses that its shape alone let through: a curve with an LR that is
not positive or past the test's ``num_iter``, a training's ``range_test`` with control
characters (it is shown in terminals), a cyclic schedule without its half cycle. Each is
a 422 naming the field; the points before stay."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.api.conftest import Caller, TestClient
from tests.api.test_client_jobs import (
    N,
    client_spec,
    create,
    measured_curve,
    part,
    problem,
    training_spec,
    upload,
)


@pytest.mark.parametrize("lr", [0.0, -1e-3])
def test_a_curve_point_whose_lr_is_not_positive_is_refused_naming_it(
    client: TestClient, caller: Caller, lr: float
) -> None:
    job = create(client, caller)
    curve = part(measured_curve(), 0, 3)
    curve["lr"][2] = lr
    response = upload(client, caller, job["id"], 0, curve)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in problem(response)["errors"]] == ["values.lr.2"]
    series = client.get(f"/jobs/{job['id']}/series/curve", headers=caller.headers).json()
    assert series["points"] == 0


def test_points_past_the_tests_num_iter_are_refused(client: TestClient, caller: Caller) -> None:
    job = create(client, caller)
    curve = measured_curve()
    assert upload(client, caller, job["id"], 0, part(curve, 0, N - 1)).status_code == 200
    more = {k: v[N - 1 :] + v[N - 1 :] for k, v in curve.items()}  # the last point, and one more
    response = upload(client, caller, job["id"], N - 1, more)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in problem(response)["errors"]] == ["values"]
    assert f"num_iter={N}" in problem(response)["detail"]
    assert upload(client, caller, job["id"], N - 1, part(curve, N - 1, N)).status_code == 200
    job_now = client.get(f"/jobs/{job['id']}", headers=caller.headers).json()
    assert (job_now["progress"], job_now["total"]) == (N, N)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"range_test": "\x1b[31mred\x00"}, "range_test"),
        ({"schedule": {"policy": "triangular", "base_lr": 0.01, "max_lr": 0.1}},
         "schedule.step_size_up"),
        ({"schedule": {"policy": "exp_range", "base_lr": 0.01, "max_lr": 0.1, "gamma": 0.99}},
         "schedule.step_size_up"),
    ],
)  # fmt: skip
def test_a_training_the_team_logs_is_refused_naming_the_field(
    client: TestClient, caller: Caller, overrides: dict[str, Any], field: str
) -> None:
    response = client.post("/trainings", json=training_spec(**overrides), headers=caller.headers)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in problem(response)["errors"]] == [field]


@pytest.mark.parametrize("value", [True, None, [1], {"a": 1}, "x" * 300])
def test_a_bad_tag_value_is_one_error_naming_the_tag(
    client: TestClient, caller: Caller, value: Any
) -> None:
    spec = client_spec(tags={"run": value})
    response = client.post("/range-tests", json=spec, headers=caller.headers)
    assert response.status_code == 422, response.text
    errors = problem(response)["errors"]
    assert [e["field"] for e in errors] == ["tags.run"]  # not tags.run.constrained-str, ...
    assert "text of at most 256 characters or a finite number" in errors[0]["reason"]
    found = client.get(
        "/bounds",
        params={"model": "m", "dataset": "d", "batch_size": 8, "tags": json.dumps({"run": value})},
        headers=caller.headers,
    )
    assert found.status_code == 422, found.text
    assert "tags.run" in [e["field"] for e in problem(found)["errors"]]


def a_training(client: TestClient, caller: Caller) -> str:
    response = client.post("/trainings", json=training_spec(), headers=caller.headers)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def iterations(lo: int, hi: int) -> dict[str, list[float]]:
    return {"lr": [0.01] * (hi - lo), "loss": [2.0 - i / 100 for i in range(lo, hi)]}


def test_iterations_past_the_trainings_iterations_are_refused(
    client: TestClient, caller: Caller
) -> None:
    job_id = a_training(client, caller)  # iterations: 40
    assert upload(client, caller, job_id, 0, iterations(0, 39), name="iterations").is_success
    response = upload(client, caller, job_id, 39, iterations(39, 41), name="iterations")
    assert response.status_code == 422, response.text
    assert [e["field"] for e in problem(response)["errors"]] == ["values"]
    assert "iterations=40" in problem(response)["detail"]
    assert upload(client, caller, job_id, 39, iterations(39, 40), name="iterations").is_success


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"val_accuracy": [1.5]}, "values.val_accuracy.0"),
        ({"train_accuracy": [-0.1]}, "values.train_accuracy.0"),
        ({"epoch": [-1]}, "values.epoch.0"),
        ({"epoch": [1.5]}, "values.epoch.0"),
        ({"iteration": [-5]}, "values.iteration.0"),
        ({"iteration": [41]}, "values.iteration.0"),
    ],
)
def test_an_epoch_with_a_bad_number_is_refused_naming_the_field(
    client: TestClient, caller: Caller, row: dict[str, list[float]], field: str
) -> None:
    job_id = a_training(client, caller)
    epoch = {"epoch": [1], "iteration": [20], "train_loss": [1.5], **row}
    response = upload(client, caller, job_id, 0, epoch, name="epochs")
    assert response.status_code == 422, response.text
    assert [e["field"] for e in problem(response)["errors"]] == [field]
    series = client.get(f"/jobs/{job_id}/series/epochs", headers=caller.headers).json()
    assert series["points"] == 0


def test_a_curve_accuracy_outside_0_1_is_refused_naming_it(
    client: TestClient, caller: Caller
) -> None:
    job = create(client, caller)
    curve: dict[str, Any] = part(measured_curve(), 0, 3)
    curve["accuracy"] = [0.1, 0.2, 20.0]
    response = upload(client, caller, job["id"], 0, curve)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in problem(response)["errors"]] == ["values.accuracy.2"]


@pytest.mark.parametrize("value", [True, "1"])
def test_a_value_that_is_not_a_json_number_is_refused(
    client: TestClient, caller: Caller, value: Any
) -> None:
    job = create(client, caller)
    curve: dict[str, Any] = part(measured_curve(), 0, 1)
    curve["lr"] = [value]
    response = upload(client, caller, job["id"], 0, curve)
    assert response.status_code == 422, response.text
    assert [e["field"] for e in problem(response)["errors"]] == ["values.lr.0"]


def test_a_training_with_no_iteration_cannot_succeed(client: TestClient, caller: Caller) -> None:
    job_id = a_training(client, caller)
    finished = client.post(
        f"/jobs/{job_id}/finish", json={"status": "succeeded"}, headers=caller.headers
    )
    assert finished.status_code == 409, finished.text
    assert [e["field"] for e in problem(finished)["errors"]] == ["status"]
    assert client.get(f"/jobs/{job_id}", headers=caller.headers).json()["status"] == "running"


def test_a_curve_without_smoothed_loss_is_smoothed_by_the_service_as_clr_does(
    client: TestClient, caller: Caller
) -> None:
    curve = measured_curve()  # its smoothed_loss: clr.RangeTest's, smoothing 0.95
    losses = {k: curve[k] for k in ("lr", "loss")}
    whole = create(client, caller)
    assert upload(client, caller, whole["id"], 0, part(losses, 0, N)).is_success
    pieces = create(client, caller)
    for lo, hi in [(0, 1), (0, 7), (7, 90), (60, 150), (150, N)]:  # overlaps re-sent
        assert upload(client, caller, pieces["id"], lo, part(losses, lo, hi)).is_success
    for job in (whole, pieces):
        stored = client.get(f"/jobs/{job['id']}/series/curve", headers=caller.headers).json()
        assert stored["points"] == N
        assert stored["values"]["smoothed_loss"] == pytest.approx(curve["smoothed_loss"], rel=1e-9)


def test_a_given_smoothed_loss_is_kept_and_the_service_continues_from_it(
    client: TestClient, caller: Caller
) -> None:
    job = create(client, caller, smoothing=0.5)
    given = {"lr": [1e-4, 2e-4], "loss": [1.0, 3.0], "smoothed_loss": [7.0, 8.0]}
    assert upload(client, caller, job["id"], 0, given).is_success
    assert upload(client, caller, job["id"], 2, {"lr": [3e-4], "loss": [4.0]}).is_success
    stored = client.get(f"/jobs/{job['id']}/series/curve", headers=caller.headers).json()
    avg = 8.0 * (1 - 0.5**2)  # the average the stored smoothed loss debiases
    expected = [7.0, 8.0, (0.5 * avg + 0.5 * 4.0) / (1 - 0.5**3)]
    assert stored["values"]["smoothed_loss"] == pytest.approx(expected, rel=1e-12)
