"""The app factory, health checks, workloads and the OpenAPI document."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.problems import validation_field
from core.db import get_job_sender, session_scope
from core.models import Job, JobStatus
from core.services import create_token
from core.settings import Settings
from tests.api.conftest import TestClient
from tests.builders import make_team, spec_data

BUILT_INS = {"digits_mlp", "digits_cnn", "mnist1d_mlp", "mnist1d_cnn", "synthetic_mlp"}


@pytest.fixture
def empty_sqlite(tmp_path: Path) -> Settings:
    """Settings on a SQLite file that was never migrated."""
    return Settings(
        _env_file=None, data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'empty.db'}"
    )


class TestCreateApp:
    def test_refuses_to_start_on_an_unmigrated_database(self, empty_sqlite: Settings) -> None:
        app = create_app(empty_sqlite)
        with pytest.raises(
            RuntimeError, match=r"database is not migrated: run `clr-sweep db upgrade`"
        ):
            with TestClient(app):
                pass

    def test_installs_its_sender_while_running(self, api_settings: Settings) -> None:
        received: list[uuid.UUID] = []

        def send(job_id: uuid.UUID, _kind: str, _device: str) -> None:
            received.append(job_id)

        before = get_job_sender()
        with TestClient(create_app(api_settings, job_sender=send)) as client:
            assert get_job_sender() is send
            assert client.get("/healthz").json() == {"status": "ok"}
        assert get_job_sender() is before

    def test_serves_openapi_with_declared_errors(self, client: TestClient) -> None:
        assert client.get("/docs").status_code == 200
        paths = client.get("/openapi.json").json()["paths"]
        create = paths["/range-tests"]["post"]
        assert create["summary"].startswith("Queue a range test")
        assert {"202", "401", "413", "422"} <= set(create["responses"])
        assert {"401", "404", "409"} <= set(
            paths["/range-tests/{job_id}/bounds"]["get"]["responses"]
        )


class TestHealth:
    def test_ready_on_a_migrated_database(self, client: TestClient) -> None:
        response = client.get("/readyz")
        assert response.status_code == 200
        assert response.json()["status"] == "ready"
        assert len(response.json()["revision"]) > 0

    def test_not_ready_on_an_unmigrated_database(self, empty_sqlite: Settings) -> None:
        # no lifespan (the app would refuse to start): only the probe runs
        response = TestClient(create_app(empty_sqlite)).get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert "database is not migrated" in response.json()["detail"]
        assert response.json()["errors"][0]["field"] == "database"
        # which revision it is at goes to the log, not to unauthenticated callers
        assert response.json()["errors"][0]["reason"] == "not migrated"

    def test_not_ready_when_the_database_is_unreachable(self, tmp_path: Path) -> None:
        settings = Settings(
            _env_file=None,
            data_dir=tmp_path,
            database_url="postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1",
        )
        response = TestClient(create_app(settings)).get("/readyz")
        assert response.status_code == 503
        assert response.json()["detail"].startswith("database unreachable")

    def test_alive_without_a_database(self, empty_sqlite: Settings) -> None:
        assert TestClient(create_app(empty_sqlite)).get("/healthz").json() == {"status": "ok"}


class TestWorkloads:
    def test_lists_the_built_ins_with_their_parameters(self, client: TestClient) -> None:
        items = {w["name"]: w for w in client.get("/workloads").json()["items"]}
        assert BUILT_INS <= set(items)
        digits = items["digits_mlp"]
        assert digits["task"] == "classification"
        assert digits["description"]
        assert digits["params"]["type"] == "object"
        assert "width" in digits["params"]["properties"]
        assert digits["params"]["additionalProperties"] is False


class TestValidationField:
    @pytest.mark.parametrize(
        ("loc", "field"),
        [
            (("body", "start_lr"), "start_lr"),
            (("body", "params", "width"), "params.width"),
            (("body", "optimizer", "betas", 1), "optimizer.betas.1"),
            (("body",), "body"),
            (("query", "status", 0), "status"),
            (("header", "Idempotency-Key"), "Idempotency-Key"),
            (("path", "job_id"), "job_id"),
        ],
    )
    def test_dotted_name_without_the_source(self, loc: tuple[str | int, ...], field: str) -> None:
        assert validation_field(loc) == field


class TestRealSession:
    """The app's own ``get_session`` (not overridden): real commits, tables wiped after."""

    def test_commits_before_responding_and_rolls_back_a_rejected_request(
        self, api_settings: Settings, committed: sessionmaker[Session]
    ) -> None:
        with session_scope(committed) as session:
            team = make_team(session)
            secret = create_token(session, team=team, name="real").secret
        headers = {"Authorization": f"Bearer {secret}"}
        received: list[uuid.UUID] = []

        def send(job_id: uuid.UUID, _kind: str, _device: str) -> None:
            received.append(job_id)

        with TestClient(create_app(api_settings, job_sender=send)) as client:
            bad = client.post("/range-tests", json=spec_data(num_iter=1), headers=headers)
            assert bad.status_code == 422
            assert received == []
            response = client.post("/range-tests", json=spec_data(), headers=headers)
            assert response.status_code == 202
            job_id = uuid.UUID(response.json()["id"])
            # committed before the response: another connection sees the row at once
            with committed() as other:
                job = other.get(Job, job_id)
                assert job is not None
                assert job.status == JobStatus.QUEUED
                assert other.scalar(select(func.count()).select_from(Job)) == 1
            assert received == [job_id]


def test_the_api_engine_does_not_pre_ping(api_settings: Settings) -> None:
    # a round trip per request; a dead connection is a 503 and replaces the pool
    app = create_app(api_settings)
    assert app.state.engine.pool._pre_ping is False
