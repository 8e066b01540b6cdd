"""``GET /bounds`` on both databases: which configuration a query names, and misses."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from core.models import Job
from core.services import claim_job, finish_job
from tests.api.conftest import Caller, TestClient, make_caller
from tests.builders import T0, make_job, make_outcome, spec_data

PROBLEM_JSON = "application/problem+json"


def succeeded(
    session: Session, caller: Caller, *, max_lr: float = 0.1, minutes: int = 0, **spec: Any
) -> Job:
    """A range test of ``spec`` that succeeded ``minutes`` after T0 with bounds up to ``max_lr``."""
    job = make_job(session, team=caller.team, spec=spec_data(**spec))
    claimed = claim_job(session, job_id=job.id, worker="gpu0", device="cpu", now=T0)
    assert claimed is not None
    done = finish_job(
        session,
        job_id=job.id,
        attempt=claimed.attempt,
        result=make_outcome(max_lr=max_lr),
        now=T0 + timedelta(minutes=minutes),
    )
    assert done is not None
    return done


def fields(response: Any) -> dict[str, str]:
    assert response.headers["content-type"] == PROBLEM_JSON
    return {e["field"]: e["reason"] for e in response.json()["errors"]}


class TestWhichConfiguration:
    def test_an_unknown_parameter_is_refused_not_ignored(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        # It answered with the width-64 test's bounds: `width` was silently ignored.
        succeeded(session, caller, params={"width": 64})
        response = client.get(
            "/bounds", params={"workload": "digits_mlp", "width": "128"}, headers=caller.headers
        )
        assert response.status_code == 422
        assert "unknown query parameter" in fields(response)["width"]

    def test_spec_fields_that_are_not_configuration_are_refused(
        self, client: TestClient, caller: Caller
    ) -> None:
        query = {"workload": "digits_mlp", "seed": "3", "num_iter": "100"}
        response = client.get("/bounds", params=query, headers=caller.headers)
        assert response.status_code == 422
        assert set(fields(response)) == {"seed", "num_iter"}
        assert "does not change which bounds suit" in fields(response)["seed"]

    @pytest.mark.parametrize(
        "query",
        [
            {"params": json.dumps({"width": 128})},
            {"params.width": "128"},
            {"params.width": "128", "params.batch_size": "64"},
            {"params.width": "128", "batch_size": "64"},
        ],
    )
    def test_params_spelled_out_or_as_json(
        self, client: TestClient, caller: Caller, session: Session, query: dict[str, str]
    ) -> None:
        succeeded(session, caller, params={"width": 64}, max_lr=0.2)
        wanted = succeeded(session, caller, params={"width": 128}, max_lr=0.4)
        response = client.get(
            "/bounds", params={"workload": "digits_mlp", **query}, headers=caller.headers
        )
        assert response.status_code == 200, response.text
        assert response.json()["job_id"] == str(wanted.id)
        assert response.json()["max_lr"] == 0.4

    @pytest.mark.parametrize(
        "query",
        [
            {"optimizer": "adam"},
            {"optimizer": json.dumps({"name": "adam"})},
            {"optimizer": "adam", "optimizer.betas": "0.9,0.999"},
            {"optimizer.name": "adam", "optimizer.betas": "[0.9, 0.999]", "optimizer.eps": "1e-8"},
        ],
    )
    def test_optimizer_by_name_fields_or_json(
        self, client: TestClient, caller: Caller, session: Session, query: dict[str, str]
    ) -> None:
        succeeded(session, caller)
        wanted = succeeded(session, caller, optimizer={"name": "adam"})
        response = client.get(
            "/bounds",
            params={"workload": "digits_mlp", "params.width": "16", **query},
            headers=caller.headers,
        )
        assert response.status_code == 200, response.text
        assert response.json()["job_id"] == str(wanted.id)

    def test_optimizer_hyperparameters_choose_the_test(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        succeeded(session, caller, optimizer={"momentum": 0.9})
        wanted = succeeded(session, caller, optimizer={"momentum": 0.5})
        query = {"workload": "digits_mlp", "params.width": "16", "optimizer.momentum": "0.5"}
        response = client.get("/bounds", params=query, headers=caller.headers)
        assert response.json()["job_id"] == str(wanted.id)

    def test_the_metric_chooses_the_test(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        by_loss = succeeded(session, caller, minutes=1)
        by_accuracy = succeeded(session, caller, metric="accuracy", minutes=2)
        query = {"workload": "digits_mlp", "params.width": "16"}
        # the newest test read the accuracy curve; a loss lookup must not get its bounds
        response = client.get("/bounds", params=query, headers=caller.headers)
        assert response.json()["job_id"] == str(by_loss.id)
        response = client.get(
            "/bounds", params={**query, "metric": "accuracy"}, headers=caller.headers
        )
        assert response.json()["job_id"] == str(by_accuracy.id)

    @pytest.mark.parametrize(
        ("query", "field", "reason"),
        [
            ({"params.width": "1", "params": '{"width": 2}'}, "params.width", "also given"),
            ({"params.widht": "3"}, "params.widht", "unknown parameter"),
            ({"params.width": "wide"}, "params.width", "expected an integer"),
            ({"optimizer": "rmsprop"}, "optimizer.name", "'sgd', 'adam' or 'adamw'"),
            ({"optimizer": "adam", "optimizer.momentum": "0.5"}, "optimizer.momentum", "adam"),
            ({"optimizer.lr": "0.1"}, "optimizer.lr", "unknown query parameter"),
            ({"params": "[" * 5000 + "]" * 5000}, "params", "at most 8192 characters"),
            ({"params": "[" * 3000 + "]" * 3000}, "params", "nested deeper than"),
            ({"optimizer": '{"a":' * 500 + "1" + "}" * 500}, "optimizer", "nested deeper"),
            ({"params.width": "1\x00"}, "params.width", "control characters"),
            ({"metric": "vibes"}, "metric", "'loss' or 'accuracy'"),
        ],
    )
    def test_bad_query_names_the_field(
        self, client: TestClient, caller: Caller, query: dict[str, str], field: str, reason: str
    ) -> None:
        response = client.get(
            "/bounds", params={"workload": "digits_mlp", **query}, headers=caller.headers
        )
        assert response.status_code == 422, response.text
        assert reason in fields(response)[field]

    def test_a_repeated_parameter_is_refused(self, client: TestClient, caller: Caller) -> None:
        response = client.get(
            "/bounds?workload=digits_mlp&params.width=16&params.width=32", headers=caller.headers
        )
        assert response.status_code == 422
        assert "more than once" in fields(response)["params.width"]


class TestKeysOfAnEarlierVersion:
    def test_a_test_stored_with_an_older_key_is_still_found(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        # Submitted before the key covered the metric: its row holds a version-1 key,
        # and its stored spec every optimizer field.
        old = succeeded(session, caller, params={"width": 40})
        old.config_key = "0" * 64
        old.spec = {
            **old.spec,
            "optimizer": {
                "name": "sgd",
                "momentum": 0.9,
                "weight_decay": 0.0,
                "nesterov": False,
                "betas": [0.9, 0.999],
                "eps": 1e-8,
            },
        }
        session.flush()
        query = {"workload": "digits_mlp", "params.width": "40"}
        response = client.get("/bounds", params=query, headers=caller.headers)
        assert response.status_code == 200, response.text
        assert response.json()["job_id"] == str(old.id)
        wrong_metric = client.get(
            "/bounds", params={**query, "metric": "accuracy"}, headers=caller.headers
        )
        assert wrong_metric.status_code == 404


class TestMiss:
    def test_404_lists_the_configurations_with_bounds_newest_first(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        succeeded(session, caller, params={"width": 32}, minutes=1)
        succeeded(session, caller, params={"width": 48}, optimizer={"name": "adam"}, minutes=2)
        succeeded(session, caller, params={"width": 32}, minutes=3)  # the same as the first
        succeeded(session, caller, workload="digits_cnn", params={}, minutes=4)  # another workload
        response = client.get(
            "/bounds",
            params={"workload": "digits_mlp", "params.width": "128"},
            headers=caller.headers,
        )
        assert response.status_code == 404
        assert response.headers["content-type"] == PROBLEM_JSON
        detail = response.json()["detail"]
        assert detail == (
            "no successful range test of this configuration; digits_mlp has bounds for "
            "(newest first): `workload=digits_mlp&params.width=32`; "
            "`workload=digits_mlp&params.width=48&optimizer=adam`"
        )

    def test_a_listed_configuration_is_a_query_that_finds_it(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        wanted = succeeded(
            session,
            caller,
            params={"width": 32, "batch_size": 16},
            optimizer={"name": "adamw", "weight_decay": 0.01, "betas": [0.8, 0.99]},
            metric="accuracy",
        )
        miss = client.get("/bounds", params={"workload": "digits_mlp"}, headers=caller.headers)
        query = miss.json()["detail"].split("`")[1]
        assert query == (
            "workload=digits_mlp&params.batch_size=16&params.width=32&optimizer=adamw"
            "&optimizer.betas=0.8,0.99&optimizer.weight_decay=0.01&metric=accuracy"
        )
        found = client.get(f"/bounds?{query}", headers=caller.headers)
        assert found.status_code == 200, found.text
        assert found.json()["job_id"] == str(wanted.id)

    def test_without_any_bounds_it_says_to_run_a_test(
        self, client: TestClient, caller: Caller
    ) -> None:
        response = client.get("/bounds", params={"workload": "digits_mlp"}, headers=caller.headers)
        assert response.status_code == 404
        assert response.json()["detail"].endswith(
            "the team has no bounds for digits_mlp yet: run POST /range-tests first"
        )

    def test_another_teams_configurations_are_not_listed(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        stranger = make_caller(session)
        succeeded(session, stranger, params={"width": 99})
        response = client.get("/bounds", params={"workload": "digits_mlp"}, headers=caller.headers)
        assert response.status_code == 404
        assert "width=99" not in response.json()["detail"]


class TestMethod:
    @pytest.mark.parametrize("path", ["/bounds", "/range-tests/{id}/bounds"])
    def test_an_unknown_method_is_422_even_before_the_job_finished(
        self, client: TestClient, caller: Caller, session: Session, path: str
    ) -> None:
        queued = make_job(session, team=caller.team)
        url = path.replace("{id}", str(queued.id))
        query = (
            {"workload": "digits_mlp", "method": "vibes"}
            if path == "/bounds"
            else {"method": "vibes"}
        )
        response = client.get(url, params=query, headers=caller.headers)
        assert response.status_code == 422
        assert fields(response)["method"].startswith(
            "unknown method 'vibes'; methods: verified, paper"
        )
