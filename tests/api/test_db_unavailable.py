"""A database that cannot be reached gives 503 problem+json naming it, never a 500.

The app runs on a PostgreSQL URL whose port has nothing listening (no lifespan:
the startup check would refuse it), so every request that needs the database
meets a real connection error from psycopg.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from fastapi import FastAPI
from sqlalchemy.exc import DBAPIError, IntegrityError

from api.app import create_app
from api.problems import DATABASE_RETRY_AFTER_S, PROBLEM_JSON
from cli.service import free_port
from core.settings import Settings
from tests.api.conftest import TestClient
from tests.builders import spec_data

# well-formed (a malformed one is refused before the database), checked against it
AUTH = {"Authorization": "Bearer clr_" + "x" * 43}


@pytest.fixture
def unreachable_app(tmp_path: Path) -> FastAPI:
    """The real app on a PostgreSQL port where nothing listens."""
    url = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/clr"
    return create_app(Settings(_env_file=None, data_dir=tmp_path, database_url=url))


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.headers["retry-after"] == str(DATABASE_RETRY_AFTER_S)
    body = response.json()
    assert body["type"] == "urn:clr-sweep:problem:database-unavailable"
    assert body["status"] == 503
    assert body["detail"].startswith("the database is unavailable")
    assert [e["field"] for e in body["errors"]] == ["database"]
    assert "postgres@" not in response.text  # no connection details leak


class TestDatabaseUnreachable:
    @pytest.mark.parametrize(
        ("method", "path", "body"),
        [
            ("GET", "/range-tests", None),
            ("GET", f"/range-tests/{uuid.UUID(int=1)}", None),
            ("POST", "/range-tests", spec_data()),
        ],
        ids=["list", "get", "create"],
    )
    def test_request_that_needs_the_database_gets_503(
        self, unreachable_app: FastAPI, method: str, path: str, body: object
    ) -> None:
        client = TestClient(unreachable_app, raise_server_exceptions=False)

        response = client.request(method, path, headers=AUTH, json=body)

        assert_database_unavailable(response)

    def test_request_without_the_database_still_answers(self, unreachable_app: FastAPI) -> None:
        client = TestClient(unreachable_app, raise_server_exceptions=False)

        assert client.get("/healthz").status_code == 200
        assert client.get("/range-tests").status_code == 401  # no token: refused before the DB


class TestDatabaseErrorKinds:
    """Which database errors mean "unavailable" (503) and which are bugs (500)."""

    @staticmethod
    def client_raising(app: FastAPI, exc: Exception) -> TestClient:
        def boom() -> None:
            raise exc

        app.add_api_route("/boom", boom)
        return TestClient(app, raise_server_exceptions=False)

    def test_dropped_connection_gets_503(self, unreachable_app: FastAPI) -> None:
        dropped = DBAPIError("SELECT 1", {}, Exception("server closed the connection"))
        dropped.connection_invalidated = True

        response = self.client_raising(unreachable_app, dropped).get("/boom")

        assert_database_unavailable(response)
        assert response.json()["errors"][0]["reason"] == "unavailable (Exception)"

    def test_driver_operational_error_gets_503(self, unreachable_app: FastAPI) -> None:
        exc = psycopg.OperationalError("terminating connection due to administrator command")

        response = self.client_raising(unreachable_app, exc).get("/boom")

        assert_database_unavailable(response)
        assert response.json()["errors"][0]["reason"] == "unavailable (OperationalError)"

    def test_other_database_error_is_not_hidden_as_503(self, unreachable_app: FastAPI) -> None:
        exc = IntegrityError("INSERT", {}, Exception("duplicate key"))

        response = self.client_raising(unreachable_app, exc).get("/boom")

        assert response.status_code == 500
