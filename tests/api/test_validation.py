"""Regressions found by the Schemathesis run (tests/api/test_schemathesis.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError

from api.schemas import IsoDateTime
from tests.api.conftest import Caller, TestClient

PROBLEM_JSON = "application/problem+json"


class TestMethodNotAllowed:
    def test_allow_lists_every_method_of_the_path(self, client: TestClient, caller: Caller) -> None:
        # Starlette named only the first route of the path: `Allow: POST` for /range-tests.
        response = client.request("OPTIONS", "/range-tests", headers=caller.headers)
        assert response.status_code == 405
        assert response.headers["content-type"] == PROBLEM_JSON
        assert response.headers["allow"] == "GET, POST"
        assert response.json()["status"] == 405

    def test_allow_of_a_path_with_one_method(self, client: TestClient) -> None:
        response = client.delete("/workloads")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET"


class TestIsoDateTime:
    adapter: TypeAdapter[datetime] = TypeAdapter(IsoDateTime)

    @pytest.mark.parametrize("text", ["0.5", "1700000000", "2026-11-23", "yesterday", ""])
    def test_rejects_what_is_not_an_iso_date_time(self, text: str) -> None:
        with pytest.raises(ValidationError, match="must be an ISO 8601 date-time"):
            self.adapter.validate_python(text)

    def test_rejects_a_number(self) -> None:
        with pytest.raises(ValidationError, match="must be an ISO 8601 date-time"):
            self.adapter.validate_python(1700000000)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-11-23T12:00:00Z", datetime(2026, 11, 23, 12, tzinfo=UTC)),
            ("2026-11-23T12:00", datetime(2026, 11, 23, 12)),
            ("2026-11-23 12:30:00+00:00", datetime(2026, 11, 23, 12, 30, tzinfo=UTC)),
        ],
    )
    def test_accepts_an_iso_date_time(self, text: str, expected: datetime) -> None:
        assert self.adapter.validate_python(text) == expected
