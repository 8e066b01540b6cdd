"""``/jobs``: the jobs of every kind through one set of routes, on both databases.

Two kinds are registered here: range tests and the tests' own toy kind
(:mod:`tests.worker.toy_kind`), so listing, reading, series, cancelling and
following are checked across kinds, and the read schema is the union of both,
discriminated on ``kind``.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import event
from sqlalchemy.orm import Session

from api.app import create_app
from api.schemas.jobs import job_read_model, job_read_union
from core.kinds import CURVE, RANGE_TEST, JobKind, all_kinds, get_kind
from core.models import Job, JobStatus, Team
from core.series import SeriesPoints
from core.services import claim_job, finish_job, report_progress
from core.settings import Settings
from tests.api.conftest import Caller, TestClient, make_caller
from tests.api.sse import EventReader, Live
from tests.builders import T0, curve, make_job, make_outcome, make_points, spec_data
from tests.worker import toy_kind

PROBLEM_JSON = "application/problem+json"

SHIPPED_DOC: dict[str, Any] = create_app(
    Settings(_env_file=None, database_url="sqlite://")
).openapi()
"""The document of the service as shipped: its built-in kinds (range tests, trainings, sweeps)."""


@pytest.fixture
def toy() -> Iterator[JobKind]:
    """The toy kind, registered for the test."""
    with toy_kind.registered() as kind:
        yield kind


@pytest.fixture
def test_app(toy: JobKind, test_app: FastAPI) -> FastAPI:
    """The API app, built with the toy kind registered beside range tests."""
    # FastAPI caches the document: built now, it has the routes the app was built with
    assert f"/{toy.noun}" in test_app.openapi()["paths"], "the app was built without the kind"
    return test_app


def read_name(kind: JobKind) -> str:
    """The OpenAPI schema name of a kind's read model (``RangeTestRead``)."""
    return job_read_model(kind).__name__


def fields(response: Any) -> dict[str, str]:
    assert response.headers["content-type"] == PROBLEM_JSON
    return {e["field"]: e["reason"] for e in response.json()["errors"]}


def claimed(session: Session, job: Job) -> int:
    """``job`` claimed by a worker; its attempt."""
    running = claim_job(session, job_id=job.id, worker="gpu0", device="cpu")
    assert running is not None
    return running.attempt


def ticks(start: int, size: int) -> SeriesPoints:
    """Points ``start`` to ``start + size - 1`` of a toy's ``ticks`` series."""
    values = toy_kind.tick_values(start + size)[start:]
    return SeriesPoints.of(toy_kind.TICKS, start, {"value": values})


def ids(client: TestClient, caller: Caller, **params: Any) -> list[str]:
    response = client.get("/jobs", params=params, headers=caller.headers)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["items"]]


class TestList:
    def test_every_kind_newest_first_each_as_its_kind(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        range_test = make_job(session, team=caller.team, created_at=T0 + timedelta(minutes=1))
        toy = toy_kind.make_toy_job(session, team=caller.team, created_at=T0 + timedelta(minutes=2))
        make_job(session)  # another team's
        toy_kind.make_toy_job(session, team=make_caller(session).team)

        body = client.get("/jobs", headers=caller.headers).json()

        assert [(item["id"], item["kind"]) for item in body["items"]] == [
            (str(toy.id), "toy"),
            (str(range_test.id), "range_test"),
        ]
        assert body["next_cursor"] is None
        toy_item, range_item = body["items"]
        assert toy_item["spec"] == {"ticks": 2, "fail_reason": None}
        assert range_item["spec"]["workload"] == "digits_mlp"
        assert (toy_item["total"], range_item["total"]) == (2, 100)

    def test_filters_by_kind_status_workload_created_after_and_parent(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        team = caller.team
        parent = make_job(session, team=team, created_at=T0)
        child_test = make_job(
            session, team=team, parent_id=parent.id, created_at=T0 + timedelta(minutes=1)
        )
        child_toy = toy_kind.make_toy_job(
            session,
            team=team,
            parent_id=parent.id,
            status=JobStatus.CANCELLED,
            finished_at=T0,
            created_at=T0 + timedelta(minutes=2),
        )
        cnn = make_job(
            session,
            team=team,
            spec=spec_data(workload="digits_cnn", params={}),
            created_at=T0 + timedelta(minutes=3),
        )
        toy = toy_kind.make_toy_job(session, team=team, created_at=T0 + timedelta(minutes=4))
        other_parent = make_job(session, team=team, created_at=T0 - timedelta(minutes=1))
        toy_kind.make_toy_job(session, team=make_caller(session).team, parent_id=other_parent.id)

        assert ids(client, caller, kind="toy") == [str(toy.id), str(child_toy.id)]
        assert ids(client, caller, kind="range_test") == [
            str(cnn.id),
            str(child_test.id),
            str(parent.id),
            str(other_parent.id),
        ]
        assert ids(client, caller, status="cancelled") == [str(child_toy.id)]
        assert ids(client, caller, status="queued", kind="toy") == [str(toy.id)]
        assert ids(client, caller, workload="digits_cnn") == [str(cnn.id)]
        # strictly after: the job created at the cut-off is left out
        cut = (T0 + timedelta(minutes=2)).isoformat()
        assert ids(client, caller, created_after=cut) == [str(toy.id), str(cnn.id)]
        assert ids(client, caller, parent=str(parent.id)) == [str(child_toy.id), str(child_test.id)]
        assert ids(client, caller, parent=str(parent.id), kind="range_test") == [str(child_test.id)]
        assert ids(client, caller, parent=str(other_parent.id)) == []  # another team's child
        assert ids(client, caller, parent=str(uuid.uuid4())) == []
        children = client.get("/jobs", params={"parent": str(parent.id)}, headers=caller.headers)
        assert {item["parent_id"] for item in children.json()["items"]} == {str(parent.id)}

    def test_pages_follow_the_cursor_across_kinds(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        jobs = [
            (make_job if i % 2 else toy_kind.make_toy_job)(
                session, team=caller.team, created_at=T0 + timedelta(minutes=i)
            )
            for i in range(5)
        ]
        seen: list[tuple[str, str]] = []
        cursor = None
        pages = 0
        while True:
            params: dict[str, Any] = {"limit": 2}
            if cursor is not None:
                params["cursor"] = cursor
            page = client.get("/jobs", params=params, headers=caller.headers).json()
            pages += 1
            seen.extend((item["id"], item["kind"]) for item in page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert pages == 3
        assert seen == [(str(job.id), job.kind) for job in reversed(jobs)]

    def test_an_unknown_kind_is_422_naming_kind(self, client: TestClient, caller: Caller) -> None:
        response = client.get("/jobs", params={"kind": "sweeps"}, headers=caller.headers)
        assert response.status_code == 422
        reason = fields(response)["kind"]
        assert "'sweeps'" in reason
        assert ", ".join(sorted(k.name for k in all_kinds())) in reason

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"parent": "not-a-uuid"}, "parent"),
            ({"status": "sleeping"}, "status"),
            ({"workload": "no_such_workload"}, "workload"),
            ({"created_after": "yesterday"}, "created_after"),
            ({"cursor": "garbage!"}, "cursor"),
            ({"limit": 0}, "limit"),
        ],
    )
    def test_bad_query_names_the_field(
        self, client: TestClient, caller: Caller, params: dict[str, Any], field: str
    ) -> None:
        response = client.get("/jobs", params=params, headers=caller.headers)
        assert response.status_code == 422
        assert field in fields(response)


class TestGetOne:
    def test_each_kind_reads_as_its_own_schema(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        range_test = make_job(session, team=caller.team)
        finish_job(
            session,
            job_id=range_test.id,
            attempt=claimed(session, range_test),
            result=make_outcome(),
        )
        toy = toy_kind.make_toy_job(session, team=caller.team)
        finish_job(
            session,
            job_id=toy.id,
            attempt=claimed(session, toy),
            result=toy_kind.ToyResult(ticks=2, total=1.0),
        )

        range_read = client.get(f"/jobs/{range_test.id}", headers=caller.headers).json()
        assert range_read["kind"] == "range_test"
        # the range test's result view: its summary (verification, seed band) and the
        # default bounds in brief; every method's, with their evidence, lives at /bounds
        assert set(range_read["result"]) == {
            "summary",
            "no_bounds_reason",
            "verification",
            "seed_band",
            "bounds",
        }
        assert range_read["result"]["summary"]["stop_reason"] == "diverged"
        bounds = client.get(f"/range-tests/{range_test.id}/bounds", headers=caller.headers)
        brief = range_read["result"]["bounds"]
        assert brief == {
            "method": bounds.json()["method"],
            "base_lr": bounds.json()["base_lr"],
            "max_lr": bounds.json()["max_lr"],
            "confidence": bounds.json()["confidence"],
        }
        own = client.get(f"/range-tests/{range_test.id}", headers=caller.headers).json()
        assert own == range_read

        toy_read = client.get(f"/jobs/{toy.id}", headers=caller.headers).json()
        assert (toy_read["kind"], toy_read["status"]) == ("toy", "succeeded")
        assert toy_read["result"] == {"ticks": 2, "total": 1.0}
        assert client.get(f"/toys/{toy.id}", headers=caller.headers).json() == toy_read

    def test_a_queued_job_says_where_it_stands(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        toy = toy_kind.make_toy_job(session, team=caller.team)
        body = client.get(f"/jobs/{toy.id}", headers=caller.headers).json()
        assert body["status"] == "queued"
        assert body["queue_position"] == 1
        assert body["waiting_reason"]

    def test_unknown_id_is_404_and_malformed_is_422(
        self, client: TestClient, caller: Caller
    ) -> None:
        missing = client.get(f"/jobs/{uuid.uuid4()}", headers=caller.headers)
        assert missing.status_code == 404
        assert missing.json()["title"] == "Job not found"
        malformed = client.get("/jobs/not-a-uuid", headers=caller.headers)
        assert malformed.status_code == 422
        assert "job_id" in fields(malformed)


class TestSeries:
    def test_json_whole_and_after(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job = make_job(session, team=caller.team)
        attempt = claimed(session, job)
        report_progress(session, job_id=job.id, attempt=attempt, **curve(make_points(0, 6)))
        report_progress(session, job_id=job.id, attempt=attempt, **curve(make_points(6, 4)))
        expected = make_points(0, 10).values

        whole = client.get(f"/jobs/{job.id}/series/curve", headers=caller.headers).json()
        assert whole["job_id"] == str(job.id)
        assert (whole["name"], whole["attempt"], whole["status"]) == ("curve", 1, "running")
        assert whole["fields"] == ["lr", "loss", "smoothed_loss", "accuracy"]
        assert (whole["start"], whole["next_after"], whole["points"], whole["total"]) == (
            0,
            10,
            10,
            100,
        )
        assert whole["values"] == expected

        # from inside the first stored run of points on
        newer = client.get(
            f"/jobs/{job.id}/series/curve", params={"after": 4}, headers=caller.headers
        ).json()
        assert (newer["start"], newer["next_after"], newer["points"]) == (4, 10, 10)
        assert newer["values"] == {name: column[4:] for name, column in expected.items()}
        done = client.get(
            f"/jobs/{job.id}/series/curve", params={"after": 10}, headers=caller.headers
        ).json()
        assert (done["start"], done["next_after"]) == (10, 10)
        assert done["values"]["lr"] == []

    def test_csv_by_query_or_accept_header(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job = make_job(session, team=caller.team)
        report_progress(
            session, job_id=job.id, attempt=claimed(session, job), **curve(make_points(0, 5))
        )
        tail = make_points(3, 2).values
        for kwargs in (
            {"params": {"format": "csv", "after": 3}, "headers": caller.headers},
            {"params": {"after": 3}, "headers": {**caller.headers, "Accept": "text/csv"}},
        ):
            response = client.get(f"/jobs/{job.id}/series/curve", **kwargs)  # type: ignore[arg-type]
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/csv")
            rows = list(csv.reader(io.StringIO(response.text)))
            assert rows[0] == ["index", "lr", "loss", "smoothed_loss", "accuracy"]
            assert [int(r[0]) for r in rows[1:]] == [3, 4]
            assert [float(r[1]) for r in rows[1:]] == tail["lr"]
            assert [float(r[4]) for r in rows[1:]] == tail["accuracy"]
        # an explicit format wins over the Accept header
        asked_json = client.get(
            f"/jobs/{job.id}/series/curve",
            params={"format": "json"},
            headers={**caller.headers, "Accept": "text/csv"},
        )
        assert asked_json.headers["content-type"] == "application/json"
        assert asked_json.json()["values"]["lr"] == make_points(0, 5).values["lr"]

    def test_a_missing_optional_field_is_null_and_an_empty_csv_cell(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job = make_job(session, team=caller.team)
        points = make_points(0, 3, accuracies=False)
        report_progress(session, job_id=job.id, attempt=claimed(session, job), **curve(points))
        body = client.get(f"/jobs/{job.id}/series/curve", headers=caller.headers).json()
        assert body["values"]["accuracy"] is None
        assert body["values"]["loss"] == points.values["loss"]
        text = client.get(
            f"/jobs/{job.id}/series/curve", params={"format": "csv"}, headers=caller.headers
        ).text
        assert [row[4] for row in csv.reader(io.StringIO(text))][1:] == ["", "", ""]

    def test_each_kind_has_its_own_series(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        toy = toy_kind.make_toy_job(session, team=caller.team, ticks=3)
        report_progress(
            session, job_id=toy.id, attempt=claimed(session, toy), points=[ticks(0, 3)], progress=3
        )
        body = client.get(f"/jobs/{toy.id}/series/ticks", headers=caller.headers).json()
        assert (body["name"], body["fields"], body["points"]) == ("ticks", ["value"], 3)
        assert body["values"] == {"value": [0.0, 1.0, 4.0]}
        queued = make_job(session, team=caller.team)
        empty = client.get(f"/jobs/{queued.id}/series/curve", headers=caller.headers).json()
        assert (empty["points"], empty["next_after"]) == (0, 0)
        assert empty["values"] == {"lr": [], "loss": [], "smoothed_loss": [], "accuracy": None}
        # a series of the other kind is not one of this job's
        response = client.get(f"/jobs/{queued.id}/series/ticks", headers=caller.headers)
        assert response.status_code == 422
        assert "'ticks'" in fields(response)["name"]

    def test_an_unknown_series_is_422_naming_it(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job = make_job(session, team=caller.team)
        response = client.get(f"/jobs/{job.id}/series/losses", headers=caller.headers)
        assert response.status_code == 422
        reason = fields(response)["name"]
        assert "'losses'" in reason
        assert "curve" in reason  # the series it has

    @pytest.mark.parametrize(
        ("query", "field"),
        [({"after": -1}, "after"), ({"after": 2**31}, "after"), ({"format": "xml"}, "format")],
    )
    def test_bad_query_names_the_field(
        self,
        client: TestClient,
        caller: Caller,
        session: Session,
        query: dict[str, Any],
        field: str,
    ) -> None:
        job = make_job(session, team=caller.team)
        response = client.get(f"/jobs/{job.id}/series/curve", params=query, headers=caller.headers)
        assert response.status_code == 422
        assert field in fields(response)


class TestThinnedSeries:
    """``?max_points=``: a chart's worth of a long series, each field's extremes kept."""

    N = 3000

    def _stored(self, session: Session, caller: Caller) -> tuple[Job, dict[str, list[float]]]:
        job = make_job(session, team=caller.team, spec=spec_data(num_iter=self.N))
        values = make_points(0, self.N).values
        loss = values["loss"]
        loss[1234] = 99.0  # one diverged step
        loss[2222] = -1.0
        points = SeriesPoints.of(CURVE, 0, values)
        report_progress(
            session, job_id=job.id, attempt=claimed(session, job), points=[points], progress=self.N
        )
        return job, values

    def test_thinned_points_are_real_ones_with_their_index_and_the_extremes(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job, values = self._stored(session, caller)
        body = client.get(
            f"/jobs/{job.id}/series/curve", params={"max_points": 200}, headers=caller.headers
        ).json()
        index = body["index"]
        assert len(index) <= 200
        assert index == sorted(set(index))
        assert index[0] == 0
        assert index[-1] == self.N - 1
        assert (body["start"], body["next_after"], body["points"]) == (0, self.N, self.N)
        for name in ("lr", "loss", "smoothed_loss", "accuracy"):
            assert body["values"][name] == [values[name][i] for i in index]
        assert 1234 in index
        assert 2222 in index
        assert max(body["values"]["loss"]) == 99.0
        assert min(body["values"]["loss"]) == -1.0

    def test_a_zoomed_range_is_thinned_within_it_or_whole_when_it_fits(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job, values = self._stored(session, caller)
        url = f"/jobs/{job.id}/series/curve"
        zoomed = client.get(
            url, params={"after": 1000, "limit": 500, "max_points": 100}, headers=caller.headers
        ).json()
        assert zoomed["index"][0] == 1000
        assert zoomed["index"][-1] == 1499
        assert (zoomed["start"], zoomed["next_after"]) == (1000, 1500)
        assert 1234 in zoomed["index"]
        # a range that fits comes whole: no index
        whole = client.get(
            url, params={"after": 1200, "limit": 50, "max_points": 100}, headers=caller.headers
        ).json()
        assert whole["index"] is None
        assert whole["values"]["loss"] == values["loss"][1200:1250]
        # as CSV, each row keeps its own index
        rows = list(
            csv.reader(
                io.StringIO(
                    client.get(
                        url,
                        params={"max_points": 50, "format": "csv"},
                        headers=caller.headers,
                    ).text
                )
            )
        )
        assert 1 < len(rows) <= 51
        assert all(float(r[2]) == values["loss"][int(r[0])] for r in rows[1:])

    def test_long_reads_begin_as_readers(self, live: Live) -> None:
        # on SQLite a reader's BEGIN DEFERRED takes no write lock: a long read (a big
        # series thinned) holds up no upload or heartbeat; PostgreSQL ignores it
        job_id = live.running_job(points=50)
        modes: list[str] = []

        def on_begin(conn: Any) -> None:
            modes.append(str(conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")))

        engine = live.app.state.engine
        event.listen(engine, "begin", on_begin)
        try:
            for path in (
                f"/jobs/{job_id}/series/curve?max_points=16",
                f"/range-tests/{job_id}/curve",
                "/jobs",
                "/range-tests",
            ):
                modes.clear()
                response = live.client.get(path, headers=live.headers)
                assert response.status_code == 200, response.text
                # authentication commits its own (writing) transaction first; the
                # route's work is the last one
                assert modes[-1] == "DEFERRED", (path, modes)
        finally:
            event.remove(engine, "begin", on_begin)

    @pytest.mark.parametrize(
        ("query", "field"),
        [
            ({"max_points": 4}, "max_points"),
            ({"max_points": 100_001}, "max_points"),
            ({"limit": 100_001}, "limit"),  # past a page without max_points
            ({"limit": 1_000_001, "max_points": 100}, "limit"),
        ],
    )
    def test_bad_thinning_names_the_field(
        self,
        client: TestClient,
        caller: Caller,
        session: Session,
        query: dict[str, Any],
        field: str,
    ) -> None:
        job = make_job(session, team=caller.team)
        response = client.get(f"/jobs/{job.id}/series/curve", params=query, headers=caller.headers)
        assert response.status_code == 422
        assert field in fields(response)


class TestCancel:
    def test_a_queued_job_of_any_kind_is_cancelled_then_409(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        toy = toy_kind.make_toy_job(session, team=caller.team)
        response = client.post(f"/jobs/{toy.id}/cancel", headers=caller.headers)
        assert response.status_code == 202
        assert (response.json()["kind"], response.json()["status"]) == ("toy", "cancelled")
        again = client.post(f"/jobs/{toy.id}/cancel", headers=caller.headers)
        assert again.status_code == 409
        assert fields(again)["status"] == "job is cancelled"
        assert client.get(f"/toys/{toy.id}", headers=caller.headers).json()["status"] == (
            "cancelled"
        )

    def test_a_running_job_is_asked_to_stop(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        job = make_job(session, team=caller.team)
        claimed(session, job)
        response = client.post(f"/jobs/{job.id}/cancel", headers=caller.headers)
        assert response.status_code == 202
        body = response.json()
        assert (body["kind"], body["status"], body["cancel_requested"]) == (
            "range_test",
            "running",
            True,
        )


class TestTeamIsolation:
    def test_another_teams_job_is_404_everywhere(
        self, client: TestClient, caller: Caller, session: Session
    ) -> None:
        other = make_caller(session)
        range_test = make_job(session, team=caller.team)
        toy = toy_kind.make_toy_job(session, team=caller.team)
        for job_id, series in ((range_test.id, "curve"), (toy.id, "ticks")):
            for method, path in [
                ("GET", f"/jobs/{job_id}"),
                ("GET", f"/jobs/{job_id}/series/{series}"),
                ("POST", f"/jobs/{job_id}/cancel"),
                ("GET", f"/jobs/{job_id}/events"),
            ]:
                response = client.request(method, path, headers=other.headers)
                assert response.status_code == 404, path
                assert response.headers["content-type"] == PROBLEM_JSON
                assert response.json()["title"] == "Job not found"
        assert ids(client, other) == []
        assert ids(client, other, parent=str(range_test.id)) == []
        for job in (range_test, toy):
            assert session.get_one(Job, job.id).status == JobStatus.QUEUED
        assert client.get("/jobs").status_code == 401


class TestEvents:
    @pytest.mark.usefixtures("toy")
    def test_a_range_test_streams_its_curve(self, live: Live) -> None:
        job_id = live.running_job(points=4)
        with live.client.stream("GET", f"/jobs/{job_id}/events", headers=live.headers) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            events = EventReader(stream)
            status, points = events.take(2)
            assert (status.event, status.data["kind"], status.data["status"]) == (
                "status",
                "range_test",
                "running",
            )
            assert (points.event, points.id) == ("curve", "1:4")
            assert (points.data["name"], points.data["start"], points.data["next_after"]) == (
                "curve",
                0,
                4,
            )
            assert points.data["values"]["lr"] == make_points(0, 4).values["lr"]
            live.add_points(job_id, 4, 2)
            more = events.next()
            assert (more.event, more.id, more.data["start"]) == ("curve", "1:6", 4)
            live.write(
                lambda s: finish_job(s, job_id=job_id, attempt=1, result=make_outcome(), now=T0)
            )
            final, end = events.take(2)
            assert (final.event, final.data["status"]) == ("status", "succeeded")
            assert (end.event, end.data) == (
                "end",
                {
                    "status": "succeeded",
                    "attempt": 1,
                    "progress": 6,
                    "series_points": {"curve": 6},
                },
            )
            events.assert_closed()

    def test_a_toy_streams_its_ticks(self, toy: JobKind, live: Live) -> None:
        def running_toy(session: Session) -> uuid.UUID:
            job = toy_kind.make_toy_job(session, team=session.get_one(Team, live.team_id), ticks=3)
            attempt = claimed(session, job)
            report_progress(session, job_id=job.id, attempt=attempt, points=[ticks(0, 2)])
            return job.id

        job_id: uuid.UUID = live.write(running_toy)
        for path in (f"/jobs/{job_id}/events", f"/{toy.noun}/{job_id}/events"):
            with live.client.stream("GET", path, headers=live.headers) as stream:
                events = EventReader(stream)
                status, points = events.take(2)
                assert (status.event, status.data["kind"]) == ("status", "toy")
                assert (points.event, points.id) == ("ticks", "1:2")
                assert points.data["values"] == {"value": [0.0, 1.0]}
        # a range test's routes do not follow a toy
        response = live.client.get(f"/range-tests/{job_id}/events", headers=live.headers)
        assert response.status_code == 404


class TestOpenAPI:
    def test_one_job_is_discriminated_on_kind(self, test_app: FastAPI) -> None:
        doc = test_app.openapi()
        schema = doc["paths"]["/jobs/{job_id}"]["get"]["responses"]["200"]["content"][
            "application/json"
        ]["schema"]
        refs = {k.name: f"#/components/schemas/{read_name(k)}" for k in all_kinds()}
        assert "toy" in refs
        assert schema["discriminator"] == {"propertyName": "kind", "mapping": refs}
        assert sorted(branch["$ref"] for branch in schema["oneOf"]) == sorted(refs.values())
        components = doc["components"]["schemas"]
        for kind, ref in refs.items():
            assert components[ref.rsplit("/", 1)[-1]]["properties"]["kind"]["const"] == kind
        # a page of jobs holds the same union
        page = doc["paths"]["/jobs"]["get"]["responses"]["200"]["content"]["application/json"]
        items = components[page["schema"]["$ref"].rsplit("/", 1)[-1]]["properties"]["items"]
        assert items["items"]["discriminator"]["mapping"] == refs

    def test_series_may_be_csv(self, test_app: FastAPI) -> None:
        operation = test_app.openapi()["paths"]["/jobs/{job_id}/series/{name}"]["get"]
        content = operation["responses"]["200"]["content"]
        assert content["application/json"]["schema"]["$ref"] == "#/components/schemas/SeriesRead"
        assert "text/csv" in content
        assert {"401", "404", "422"} <= set(operation["responses"])

    def test_as_shipped_a_job_is_one_of_the_built_in_kinds(self) -> None:
        paths = SHIPPED_DOC["paths"]
        schema = paths["/jobs/{job_id}"]["get"]["responses"]["200"]["content"]["application/json"][
            "schema"
        ]
        # every built-in kind (the toy kind is registered only while a test runs)
        assert schema["discriminator"]["mapping"] == {
            "range_test": "#/components/schemas/RangeTestRead",
            "training": "#/components/schemas/TrainingRead",
            "sweep": "#/components/schemas/SweepRead",
        }
        components = SHIPPED_DOC["components"]["schemas"]
        for kind in ("range_test", "training", "sweep"):
            assert components[read_name(get_kind(kind))]["properties"]["kind"]["const"] == kind
        assert not [path for path in paths if path.startswith("/toys")]
        assert {
            "RangeTestCreate",
            "RangeTestList",
            "TrainingCreate",
            "TrainingList",
            "SweepCreate",
            "SweepList",
            "JobList",
            "SeriesRead",
        } <= set(components)

    def test_with_one_kind_a_job_is_that_kinds_schema(self) -> None:
        assert job_read_union((RANGE_TEST,)) is job_read_model(RANGE_TEST)
