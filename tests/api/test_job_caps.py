"""Jobs too large to run, and too many of them, are refused when submitted.

The estimate is arithmetic on the spec (no model is built), so a job that would
run out of memory on every attempt or run for days never reaches a worker.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.deps import get_settings
from core.errors import JobTooLarge, TooManyActiveJobs
from core.models import Job, JobStatus
from core.services import submit_job
from core.settings import Settings
from core.specs import RangeTestSpec
from tests.api.conftest import Caller, Sent, TestClient
from tests.builders import make_team, spec_data

PROBLEM_JSON = "application/problem+json"

HUGE_SYNTHETIC = {
    "workload": "synthetic_mlp",
    "params": {"n_features": 65536, "width": 8192, "depth": 8, "n_samples": 700},
    "num_iter": 10,
}
"""About 1e9 weights: ran out of memory on all three attempts."""

SLOW_DIGITS = {
    "workload": "digits_mlp",
    "params": {"width": 4096, "depth": 8, "batch_size": 1024},
    "num_iter": 100_000,
}
"""10.5 s a step, ~291 h: stopped only by the 6 h time limit."""


def use_settings(app: FastAPI, settings: Settings) -> None:
    app.dependency_overrides[get_settings] = lambda: settings


def only_error(response: Any) -> dict[str, str]:
    assert response.headers["content-type"] == PROBLEM_JSON
    errors = response.json()["errors"]
    assert len(errors) == 1, errors
    error: dict[str, str] = errors[0]
    return error


class TestTooLarge:
    def test_a_billion_weights_is_refused_naming_the_field_and_the_estimate(
        self, client: TestClient, caller: Caller, messages: Sent
    ) -> None:
        response = client.post("/range-tests", json=HUGE_SYNTHETIC, headers=caller.headers)
        assert response.status_code == 422, response.text
        assert response.json()["type"] == "urn:clr-sweep:problem:job-too-large"
        error = only_error(response)
        # width back at its default saves most (n_features alone would fail n_samples' check)
        assert error["field"] == "params.width"
        assert error["reason"].startswith("the job needs ~19.1 GiB of memory (1.01e+09 weights")
        assert "over the 4 GiB cap (CLR_MAX_JOB_MEMORY_BYTES)" in error["reason"]
        assert messages == []

    def test_days_of_steps_are_refused_naming_the_field_and_the_time(
        self, client: TestClient, caller: Caller, messages: Sent
    ) -> None:
        response = client.post("/range-tests", json=SLOW_DIGITS, headers=caller.headers)
        assert response.status_code == 422, response.text
        error = only_error(response)
        assert error["field"] == "params.width"
        assert error["reason"].startswith("the job would run for ~502 h (7.23e+11 FLOPs a step")
        assert "over the 6 h cap (CLR_JOB_TIME_LIMIT_S)" in error["reason"]
        assert messages == []

    def test_num_iter_is_named_when_the_steps_are_what_is_long(
        self, test_app: FastAPI, client: TestClient, caller: Caller, api_settings: Settings
    ) -> None:
        use_settings(test_app, api_settings.model_copy(update={"max_job_seconds": 1.0}))
        body = spec_data(params={"width": 128}, num_iter=100_000)
        response = client.post("/range-tests", json=body, headers=caller.headers)
        assert response.status_code == 422, response.text
        error = only_error(response)
        assert error["field"] == "num_iter"
        assert "over the 1 s cap (CLR_MAX_JOB_SECONDS)" in error["reason"]

    def test_seeds_are_named_when_the_k_models_are_what_is_large(
        self, test_app: FastAPI, client: TestClient, caller: Caller, api_settings: Settings
    ) -> None:
        body = spec_data(params={"width": 16})
        one = RangeTestSpec.model_validate(body).estimate()
        assert one is not None
        # room for two of these models, not for the four seeds' (the estimate is K times one)
        cap = 2 * one.memory_bytes
        use_settings(test_app, api_settings.model_copy(update={"max_job_memory_bytes": cap}))
        two = client.post("/range-tests", json={**body, "seeds": [0, 1]}, headers=caller.headers)
        assert two.status_code == 202, two.text
        response = client.post(
            "/range-tests", json={**body, "seeds": [0, 1, 2, 3]}, headers=caller.headers
        )
        assert response.status_code == 422, response.text
        error = only_error(response)
        assert error["field"] == "seeds"
        assert "memory" in error["reason"]

    def test_a_large_model_under_several_seeds_names_it_and_the_seeds(
        self, test_app: FastAPI, client: TestClient, caller: Caller, api_settings: Settings
    ) -> None:
        small = RangeTestSpec.model_validate(spec_data(params={"width": 16})).estimate()
        assert small is not None
        use_settings(
            test_app,
            api_settings.model_copy(update={"max_job_memory_bytes": 4 * small.memory_bytes}),
        )
        body = {**spec_data(params={"width": 2048, "depth": 6}), "seeds": [0, 1, 2, 3]}
        response = client.post("/range-tests", json=body, headers=caller.headers)
        assert response.status_code == 422, response.text
        error = only_error(response)
        assert error["field"].startswith("params.")  # the model is what is large
        assert error["reason"].endswith("or give fewer seeds (4 run at once)")

    def test_a_faster_fleet_takes_longer_jobs(
        self, test_app: FastAPI, client: TestClient, caller: Caller, api_settings: Settings
    ) -> None:
        use_settings(test_app, api_settings.model_copy(update={"job_flop_rate": 1e14}))
        response = client.post("/range-tests", json=SLOW_DIGITS, headers=caller.headers)
        assert response.status_code == 202, response.text

    def test_caps_at_zero_are_off(
        self, test_app: FastAPI, client: TestClient, caller: Caller, api_settings: Settings
    ) -> None:
        off = api_settings.model_copy(update={"max_job_memory_bytes": 0, "max_job_seconds": 0})
        use_settings(test_app, off)
        for body in (HUGE_SYNTHETIC, SLOW_DIGITS):
            assert client.post("/range-tests", json=body, headers=caller.headers).status_code == 202

    def test_the_default_job_is_far_below_the_caps(self, settings: Settings) -> None:
        estimate = RangeTestSpec.model_validate(spec_data()).estimate()
        assert estimate is not None
        assert estimate.memory_bytes < settings.max_job_memory_bytes / 1000
        assert estimate.seconds(settings.job_flop_rate) < 1


class TestActiveJobsPerTeam:
    def test_over_the_cap_is_429_with_retry_after(
        self,
        test_app: FastAPI,
        client: TestClient,
        caller: Caller,
        api_settings: Settings,
        messages: Sent,
    ) -> None:
        use_settings(test_app, api_settings.model_copy(update={"max_active_jobs_per_team": 2}))
        first = client.post("/range-tests", json=spec_data(), headers=caller.headers)
        client.post("/range-tests", json=spec_data(seed=1), headers=caller.headers)
        refused = client.post(
            "/range-tests",
            json=spec_data(seed=2),
            headers={**caller.headers, "Idempotency-Key": "k3"},
        )
        assert refused.status_code == 429, refused.text
        assert refused.headers["retry-after"] == "30"
        assert refused.json()["type"] == "urn:clr-sweep:problem:too-many-active-jobs"
        error = only_error(refused)
        assert error["field"] == "team"
        assert "CLR_MAX_ACTIVE_JOBS_PER_TEAM=2" in error["reason"]
        assert len(messages) == 2
        # a finished job frees its place; a retry of a submitted one is no new job
        job_id = first.json()["id"]
        assert (
            client.post(f"/range-tests/{job_id}/cancel", headers=caller.headers).status_code == 202
        )
        again = client.post(
            "/range-tests",
            json=spec_data(seed=2),
            headers={**caller.headers, "Idempotency-Key": "k3"},
        )
        assert again.status_code == 202
        replay = client.post(
            "/range-tests",
            json=spec_data(seed=2),
            headers={**caller.headers, "Idempotency-Key": "k3"},
        )
        assert replay.status_code == 200

    def test_another_teams_jobs_do_not_count(
        self,
        test_app: FastAPI,
        client: TestClient,
        caller: Caller,
        api_settings: Settings,
        session: Session,
    ) -> None:
        use_settings(test_app, api_settings.model_copy(update={"max_active_jobs_per_team": 1}))
        other = make_team(session)
        submit_job(session, team=other, kind="range_test", spec=spec_data(), settings=api_settings)
        response = client.post("/range-tests", json=spec_data(), headers=caller.headers)
        assert response.status_code == 202, response.text


THREADS = 6


def test_concurrent_submits_cannot_pass_the_cap(
    committed: sessionmaker[Session], settings: Settings
) -> None:
    """Six submits race for the last two places: exactly two get in, on both databases."""
    capped = settings.model_copy(update={"max_active_jobs_per_team": 3})
    with committed() as session:
        team = make_team(session)
        submit_job(session, team=team, kind="range_test", spec=spec_data(), settings=capped)
        session.commit()
    barrier = threading.Barrier(THREADS)

    def one(seed: int) -> str:
        with committed() as session:
            barrier.wait(timeout=10)
            try:
                submit_job(
                    session,
                    team=team,
                    kind="range_test",
                    spec=spec_data(seed=seed),
                    settings=capped,
                )
            except TooManyActiveJobs:
                session.rollback()
                return "refused"
            session.commit()
            return "queued"

    with ThreadPoolExecutor(THREADS) as pool:
        outcomes = list(pool.map(one, range(1, THREADS + 1), timeout=60))
    assert sorted(outcomes) == ["queued"] * 2 + ["refused"] * 4
    with committed() as session:
        active = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.team_id == team.id, Job.status == JobStatus.QUEUED)
        )
    assert active == 3


def test_the_service_refuses_before_queueing(settings: Settings, session: Session) -> None:
    """The domain refuses it too (not only the API), and nothing is written."""
    team = make_team(session)
    with pytest.raises(JobTooLarge) as info:
        submit_job(session, team=team, kind="range_test", spec=HUGE_SYNTHETIC, settings=settings)
    assert info.value.errors[0]["field"] == "params.width"
    assert session.scalar(select(func.count()).select_from(Job).where(Job.team_id == team.id)) == 0


def test_a_workload_too_large_at_its_defaults_is_named(
    settings: Settings, session: Session
) -> None:
    tiny = settings.model_copy(update={"max_job_memory_bytes": 1000})
    with pytest.raises(JobTooLarge) as info:
        submit_job(
            session,
            team=make_team(session),
            kind="range_test",
            spec={"workload": "digits_mlp", "params": {"width": 8}},
            settings=tiny,
        )
    # width is already below its default: no field the caller set is to blame
    assert info.value.errors[0]["field"] == "workload"
