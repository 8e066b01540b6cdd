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
