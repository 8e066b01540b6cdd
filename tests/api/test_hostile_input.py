"""No input gives a 500: control characters in every string, extreme dates, deep nesting.

Property tests on both databases (PostgreSQL refuses a NUL in text, SQLite does
not, so a NUL that reaches a query shows only there). Every answer must be a
4xx problem naming the field, or the success the input deserves; never a 500.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from api.app import create_app
from core.models import Job
from core.settings import Settings
from tests.api.conftest import Caller, TestClient
from tests.builders import T0, make_job, spec_data

PROBLEM_JSON = "application/problem+json"

CONTROL = st.sampled_from(
    [chr(c) for c in range(0x20)] + ["\x7f"] + [chr(c) for c in range(0x80, 0xA0)]
)


@st.composite
def with_control(draw: st.DrawFn, base: str = "digits_mlp") -> str:
    """``base`` with a control character put somewhere in it."""
    at = draw(st.integers(0, len(base)))
    return base[:at] + draw(CONTROL) + base[at:]


DOC = create_app(Settings(_env_file=None, database_url="sqlite://")).openapi()

QUERY_PARAMETERS = sorted(
    (method, path, param["name"])
    for path, operations in DOC["paths"].items()
    for method, operation in operations.items()
    for param in operation.get("parameters", [])
    if param["in"] == "query" and not path.endswith("/events")
)
"""Every query parameter the document declares (an event stream does not end by itself)."""

BODY_STRINGS = ["workload", "sweep", "metric", "device", "optimizer.name", "params.width"]

FAST = settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def assert_refused(response: Any, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert field in {e["field"] for e in response.json()["errors"]}, response.text


@pytest.fixture
def job(session: Session, caller: Caller) -> Job:
    """A job of the caller, for the paths that name one."""
    return make_job(session, team=caller.team)


class TestControlCharacters:
    @pytest.mark.parametrize(("method", "path", "name"), QUERY_PARAMETERS)
    @FAST
    @given(data=st.data())
    def test_in_a_query_parameter(
        self,
        client: TestClient,
        caller: Caller,
        job: Job,
        method: str,
        path: str,
        name: str,
        data: st.DataObject,
    ) -> None:
        base = "0.5" if name.startswith(("params.", "optimizer.")) else "digits_mlp"
        query = {name: data.draw(with_control(base))}
        if path == "/bounds" and name != "workload":
            query["workload"] = "digits_mlp"
        url = path.replace("{job_id}", str(job.id))
        response = client.request(method.upper(), url, params=query, headers=caller.headers)
        assert_refused(response, name)

    @pytest.mark.parametrize("field", BODY_STRINGS)
    @FAST
    @given(data=st.data())
    def test_in_a_body_string(
        self, client: TestClient, caller: Caller, field: str, data: st.DataObject
    ) -> None:
        body: dict[str, Any] = spec_data()
        parent, _, child = field.partition(".")
        value = data.draw(with_control("sgd" if parent == "optimizer" else "cpu"))
        if child:
            body[parent] = {**body.get(parent, {}), child: value}
        else:
            body[parent] = value
        response = client.post("/range-tests", json=body, headers=caller.headers)
        assert_refused(response, field)

    @FAST
    @given(key=with_control("width"))
    def test_in_a_params_key(self, client: TestClient, caller: Caller, key: str) -> None:
        body = spec_data(params={key: 1})
        response = client.post("/range-tests", json=body, headers=caller.headers)
        assert_refused(response, f"params.{key}")

    def test_nul_in_the_workload_filter_reaches_no_query(
        self, client: TestClient, caller: Caller
    ) -> None:
        # PostgreSQL refused the NUL: a plain-text 500.
        response = client.get(
            "/range-tests", params={"workload": "digits\x00mlp"}, headers=caller.headers
        )
        assert_refused(response, "workload")

    def test_an_unregistered_workload_filter_is_refused(
        self, client: TestClient, caller: Caller
    ) -> None:
        response = client.get("/range-tests", params={"workload": "nope"}, headers=caller.headers)
        assert_refused(response, "workload")
        assert "known workloads: digits_cnn" in response.json()["errors"][0]["reason"]


OFFSETS = st.timedeltas(
    min_value=-timedelta(hours=23, minutes=59), max_value=timedelta(hours=23, minutes=59)
).map(lambda d: timezone(timedelta(minutes=d // timedelta(minutes=1))))


class TestExtremeDates:
    @pytest.mark.parametrize(
        ("created_after", "found"),
        [
            # after the last instant a datetime holds: nothing; before the first: everything
            ("9999-12-31T23:59:59-23:59", 0),
            ("9999-12-31T23:59:59.999999-00:01", 0),
            ("0001-01-01T00:00:00+14:00", 1),
            ("0001-01-01T00:00:00+23:59", 1),
            ("9999-12-31T23:59:59", 0),
            ("0001-01-01T00:00:00", 1),
        ],
    )
    def test_overflowing_utc_is_clamped(
        self, client: TestClient, caller: Caller, session: Session, created_after: str, found: int
    ) -> None:
        make_job(session, team=caller.team)
        response = client.get(
            "/range-tests", params={"created_after": created_after}, headers=caller.headers
        )
        assert response.status_code == 200, response.text
        assert len(response.json()["items"]) == found

    @FAST
    @given(
        moment=st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)),
        zone=OFFSETS,
    )
    def test_any_date_time_is_answered(
        self, client: TestClient, caller: Caller, moment: datetime, zone: timezone
    ) -> None:
        text = moment.replace(tzinfo=zone).isoformat()
        response = client.get(
            "/range-tests", params={"created_after": text}, headers=caller.headers
        )
        assert response.status_code == 200, response.text

    def test_a_job_exactly_at_the_bound_is_not_after_it(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        make_job(session, team=caller.team)
        same = T0.astimezone(timezone(timedelta(hours=-5))).isoformat()
        before = (T0 - timedelta(microseconds=1)).astimezone(UTC).isoformat()
        assert (
            client.get(
                "/range-tests", params={"created_after": same}, headers=caller.headers
            ).json()["items"]
            == []
        )
        assert (
            len(
                client.get(
                    "/range-tests", params={"created_after": before}, headers=caller.headers
                ).json()["items"]
            )
            == 1
        )


class TestNesting:
    @FAST
    @given(depth=st.integers(1, 4000), opener=st.sampled_from(["[", '{"a":']))
    def test_nested_json_in_bounds_params(
        self, client: TestClient, caller: Caller, depth: int, opener: str
    ) -> None:
        closer = "]" if opener == "[" else "}"
        text = opener * depth + ("1" if opener != "[" else "") + closer * depth
        for name in ("params", "optimizer"):
            response = client.get(
                "/bounds", params={"workload": "digits_mlp", name: text}, headers=caller.headers
            )
            assert response.status_code == 422, response.text
            assert name in {e["field"] for e in response.json()["errors"]}

    @FAST
    @given(depth=st.integers(1, 3000))
    def test_nested_json_in_a_body(self, client: TestClient, caller: Caller, depth: int) -> None:
        body = '{"workload": "digits_mlp", "params": {"width": ' + "[" * depth + "]" * depth + "}}"
        response = client.post(
            "/range-tests",
            content=body,
            headers={**caller.headers, "content-type": "application/json"},
        )
        assert 400 <= response.status_code < 500, response.text
        assert response.headers["content-type"] == PROBLEM_JSON
        json.loads(response.text)
