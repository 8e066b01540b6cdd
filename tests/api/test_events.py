"""``GET /range-tests/{id}/events``: the Server-Sent Events stream, on both databases.

The stream reads the database in sessions of its own (not the request's), so these
tests use really committed rows (``committed``: tables emptied after each test)
and the app's real session handling. The test drives the job through its states
with the services, as a worker would, and reads the events that follow; the
stream polls every 10 ms here instead of 250 ms.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import anyio
import pytest
from sqlalchemy.orm import Session

from core.kinds import BAND
from core.models import Team
from core.series import SeriesPoints
from core.services import cancel_job, claim_job, finish_job, reconcile, report_progress
from core.settings import Settings
from tests.api.sse import WAIT_S, Event, EventReader, Live
from tests.builders import T0, curve, make_job, make_outcome, make_points, make_team, spec_data


def finish(live: Live, job_id: uuid.UUID, attempt: int = 1) -> None:
    """The job's ``attempt`` succeeds."""
    live.write(
        lambda s: finish_job(s, job_id=job_id, attempt=attempt, result=make_outcome(), now=T0)
    )


def curve_points(event: Event) -> tuple[int, int]:
    """``(start, count)`` of a curve event, checking the values are those points."""
    assert event.event == "curve"
    data = event.data
    assert data["name"] == "curve"
    assert data["fields"] == ["lr", "loss", "smoothed_loss", "accuracy"]
    values = data["values"]
    start, count = data["start"], len(values["lr"])
    assert data["next_after"] == start + count
    expected = make_points(start, count).values
    assert values["lr"] == pytest.approx(expected["lr"])
    assert values["loss"] == pytest.approx(expected["loss"])
    assert values["accuracy"] == pytest.approx(expected["accuracy"])
    return start, count


def ended(status: str, attempt: int, points: int) -> dict[str, Any]:
    """The data of a range test's ``end`` event: ``points`` curve points (its progress)."""
    return {
        "status": status,
        "attempt": attempt,
        "progress": points,
        "series_points": {"curve": points} if points else {},
    }


class TestEventStream:
    def test_follows_a_job_until_it_succeeds(self, live: Live) -> None:
        job_id = live.running_job(points=10)
        with live.stream(job_id) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            events = EventReader(response)
            first = events.next()
            assert first.event == "status"
            assert first.id is None
            assert first.data["id"] == str(job_id)
            assert first.data["status"] == "running"
            assert first.data["attempt"] == 1
            assert first.data["progress"] == 10
            chunk = events.next()
            assert curve_points(chunk) == (0, 10)
            assert chunk.id == "1:10"
            assert chunk.data["attempt"] == 1

            live.add_points(job_id, 10, 5)
            chunk = events.next()
            assert curve_points(chunk) == (10, 5)
            assert chunk.id == "1:15"

            live.add_points(job_id, 15, 3)
            finish(live, job_id)
            last_points, final, end = events.take(3)
            assert curve_points(last_points) == (15, 3)
            assert last_points.id == "1:18"
            assert (final.event, final.data["status"]) == ("status", "succeeded")
            assert final.data["result"]["summary"]["stop_reason"] == "diverged"
            assert end.event == "end"
            assert end.data == ended("succeeded", 1, 18)
            events.assert_closed()

    def test_resume_sends_exactly_the_points_after_the_last_event_id(self, live: Live) -> None:
        job_id = live.running_job(points=10)
        live.add_points(job_id, 10, 15)  # two chunks; the resume point is inside the second
        with (
            live.stream(job_id, **{"Last-Event-ID": "1:12"}) as qualified,
            live.stream(job_id, **{"Last-Event-ID": "12"}) as bare,
        ):
            readers = [EventReader(qualified), EventReader(bare)]
            for events in readers:
                status, chunk = events.take(2)
                assert (status.event, status.data["progress"]) == ("status", 25)
                assert curve_points(chunk) == (12, 13)
                assert chunk.id == "1:25"
            live.add_points(job_id, 25, 2)
            finish(live, job_id)
            for events in readers:
                chunk, final, end = events.take(3)
                assert curve_points(chunk) == (25, 2)
                assert chunk.id == "1:27"
                assert (final.event, final.data["status"]) == ("status", "succeeded")
                assert end.event == "end"
                events.assert_closed()
        # a finished job: its status, the points after N, end; nothing repeated
        with live.stream(job_id, **{"Last-Event-ID": "1:20"}) as response:
            events = EventReader(response)
            status, chunk, end = events.take(3)
            assert (status.event, status.data["status"]) == ("status", "succeeded")
            assert curve_points(chunk) == (20, 7)
            assert chunk.id == "1:27"
            assert end.data == ended("succeeded", 1, 27)
            events.assert_closed()
        with live.stream(job_id, **{"Last-Event-ID": "1:27"}) as response:
            events = EventReader(response)
            assert [e.event for e in events.take(2)] == ["status", "end"]
            events.assert_closed()

    def test_a_range_test_under_seeds_streams_its_band_too(self, live: Live) -> None:
        def create(session: Session) -> uuid.UUID:
            team = session.get_one(Team, live.team_id)
            job = make_job(session, team=team, spec=spec_data(seeds=[0, 1]))
            assert claim_job(session, job_id=job.id, worker="gpu0", device="cpu", now=T0)
            report_progress(session, job_id=job.id, attempt=1, **curve(make_points(0, 4)), now=T0)
            return job.id

        job_id: uuid.UUID = live.write(create)
        with live.stream(job_id) as response:
            events = EventReader(response)
            status, chunk = events.take(2)
            assert curve_points(chunk) == (0, 4)
            assert chunk.id == "1:4,0"  # <attempt>:<curve>,<band>
            values = {"lr": [0.1, 0.2], "n": [2.0, 1.0], "mean": [2.0, 1.5]}
            values |= {"std": [0.1, 0.0], "min": [1.9, 1.5], "max": [2.1, 1.5]}
            band = SeriesPoints.of(BAND, 0, values)
            live.write(
                lambda s: report_progress(s, job_id=job_id, attempt=1, points=[band], now=T0)
            )
            finish(live, job_id)
            band_event, final, end = events.take(3)
            assert (band_event.event, band_event.id) == ("band", "1:4,2")
            assert band_event.data["values"] == values
            assert (final.event, end.event) == ("status", "end")
            assert end.data["series_points"] == {"curve": 4, "band": 2}
            events.assert_closed()

    def test_a_restarted_job_sends_its_new_curve_from_0(
        self, live: Live, api_settings: Settings
    ) -> None:
        job_id = live.running_job(points=10)
        with live.stream(job_id) as response:
            events = EventReader(response)
            assert [e.event for e in events.take(2)] == ["status", "curve"]
            # the worker vanished: the reconciler requeues the job, another worker claims it
            live.write(lambda s: reconcile(s, settings=api_settings, now=T0 + timedelta(hours=1)))
            requeued = events.next()
            assert (requeued.event, requeued.data["status"]) == ("status", "queued")

            def restart(session: Session) -> None:
                claimed = claim_job(session, job_id=job_id, worker="gpu1", now=T0)
                assert claimed is not None
                assert claimed.attempt == 2
                report_progress(session, job_id=job_id, attempt=2, **curve(make_points(0, 3)))

            live.write(restart)
            status, chunk = events.take(2)  # the new attempt first, then its points
            assert (status.event, status.data["attempt"]) == ("status", 2)
            assert curve_points(chunk) == (0, 3)
            assert chunk.id == "2:3"
            finish(live, job_id, attempt=2)
            assert [e.event for e in events.take(2)] == ["status", "end"]
            events.assert_closed()
        # resuming with an id of the old attempt starts the new attempt's curve at 0
        with live.stream(job_id, **{"Last-Event-ID": "1:10"}) as response:
            events = EventReader(response)
            status, chunk, end = events.take(3)
            assert status.data["attempt"] == 2
            assert curve_points(chunk) == (0, 3)
            assert chunk.id == "2:3"
            assert end.data == ended("succeeded", 2, 3)

    def test_a_cancelled_queued_job_ends_without_points(self, live: Live) -> None:
        def queued(session: Session) -> uuid.UUID:
            job = make_job(session, team=session.get_one(Team, live.team_id))
            return job.id

        job_id: uuid.UUID = live.write(queued)
        with live.stream(job_id) as response:
            events = EventReader(response)
            first = events.next()
            assert (first.event, first.data["status"]) == ("status", "queued")
            live.write(lambda s: cancel_job(s, team=s.get_one(Team, live.team_id), job_id=job_id))
            final, end = events.take(2)
            assert (final.event, final.data["status"]) == ("status", "cancelled")
            assert end.data == ended("cancelled", 0, 0)
            events.assert_closed()

    def test_a_queued_job_says_why_it_waits_and_again_when_that_changes(self, live: Live) -> None:
        def two_queued(session: Session) -> tuple[uuid.UUID, uuid.UUID]:
            team = session.get_one(Team, live.team_id)
            ahead = make_job(session, team=team, queued_at=T0)
            mine = make_job(session, team=team, queued_at=T0 + timedelta(seconds=1))
            return ahead.id, mine.id

        ahead, mine = live.write(two_queued)
        with live.stream(mine) as response:
            events = EventReader(response)
            first = events.next()
            assert (first.event, first.data["status"]) == ("status", "queued")
            assert first.data["queue_position"] == 2
            assert (
                first.data["waiting_reason"] == "no running worker takes jobs; no worker is online"
            )
            # the job ahead leaves the queue: the place changes, and a status event says so
            live.write(lambda s: cancel_job(s, team=s.get_one(Team, live.team_id), job_id=ahead))
            moved = events.next()
            assert (moved.event, moved.data["status"]) == ("status", "queued")
            assert moved.data["queue_position"] == 1

    def test_a_long_backlog_comes_in_events_of_1000_points(self, live: Live) -> None:
        job_id = live.running_job(points=2500)
        with live.stream(job_id) as response:
            events = EventReader(response)
            chunks = events.take(4)[1:]
            assert [curve_points(e) for e in chunks] == [(0, 1000), (1000, 1000), (2000, 500)]
            assert [e.id for e in chunks] == ["1:1000", "1:2000", "1:2500"]
            finish(live, job_id)
            assert [e.event for e in events.take(2)] == ["status", "end"]
            events.assert_closed()

    def test_a_quiet_stream_sends_keep_alive_comments(
        self, live: Live, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("fastapi.routing._PING_INTERVAL", 0.05)
        job_id = live.running_job(points=1)
        with live.stream(job_id) as response:
            events = EventReader(response)
            # a ping may come first when the first poll is slow: only the order of events counts
            assert [e.event for e in events.events(2)] == ["status", "curve"]
            ping = events.next()
            assert (ping.event, ping.comment) == (None, "ping")
            live.add_points(job_id, 1, 1)
            [following] = events.events(1)
            assert curve_points(following) == (1, 1)
            finish(live, job_id)
            assert [e.event for e in events.events(2)] == ["status", "end"]
            events.assert_closed()

    def test_stops_polling_when_the_client_disconnects(self, live: Live) -> None:
        # ASGI 2.4 servers do not tell a streaming response about a disconnect: the
        # stream must notice it itself, or it would poll a running job forever.
        job_id = live.running_job(points=2)
        sent: list[bytes] = []
        request_read = False
        disconnected = anyio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal request_read
            if not request_read:
                request_read = True
                return {"type": "http.request", "body": b"", "more_body": False}
            if disconnected.is_set():
                return {"type": "http.disconnect"}
            await disconnected.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                sent.append(message.get("body", b""))
                if b"event: curve" in message.get("body", b""):
                    disconnected.set()

        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": f"/range-tests/{job_id}/events",
            "raw_path": f"/range-tests/{job_id}/events".encode(),
            "root_path": "",
            "query_string": b"",
            "headers": [
                (b"host", b"testserver"),
                (b"authorization", live.headers["Authorization"].encode()),
            ],
            "client": ("testclient", 50000),
            "server": ("testserver", 80),
            "state": {},
        }

        async def run() -> None:
            with anyio.fail_after(WAIT_S):
                await live.app(scope, receive, send)  # type: ignore[arg-type]

        anyio.run(run)
        body = b"".join(sent)
        assert body.startswith(b"event: status\n")
        assert b"event: curve\n" in body
        assert b"event: end" not in body

    def test_another_teams_job_is_404_before_the_stream(self, live: Live) -> None:
        def other_team(session: Session) -> uuid.UUID:
            return make_team(session).id

        job_id = live.running_job(points=3, team_id=live.write(other_team))
        response = live.client.get(f"/range-tests/{job_id}/events", headers=live.headers)
        assert response.status_code == 404
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"] == f"range test {job_id} not found"
        unknown = live.client.get(f"/range-tests/{uuid.uuid4()}/events", headers=live.headers)
        assert unknown.status_code == 404
        assert live.client.get(f"/range-tests/{job_id}/events").status_code == 401

    @pytest.mark.parametrize(
        "last_event_id", ["abc", "1:", ":5", "-1", "1:2:3", "1.5", "12345678901", "1:2147483648"]
    )
    def test_bad_last_event_id_is_422_naming_the_header(
        self, live: Live, last_event_id: str
    ) -> None:
        job_id = live.running_job(points=1)
        response = live.client.get(
            f"/range-tests/{job_id}/events",
            headers={**live.headers, "Last-Event-ID": last_event_id},
        )
        assert response.status_code == 422
        assert response.headers["content-type"] == "application/problem+json"
        [error] = response.json()["errors"]
        assert error["field"] == "Last-Event-ID"
        assert "<attempt>:<points>" in error["reason"]

    def test_openapi_declares_the_stream(self, live: Live) -> None:
        operation = live.client.get("/openapi.json").json()["paths"][
            "/range-tests/{job_id}/events"
        ]["get"]
        assert "text/event-stream" in operation["responses"]["200"]["content"]
        assert {"401", "404", "422"} <= set(operation["responses"])
        assert "Last-Event-ID" in [p["name"] for p in operation["parameters"]]
