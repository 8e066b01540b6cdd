"""Reading Server-Sent Events in API tests: a parser with deadlines, and the app on
committed rows that a stream (which reads in sessions of its own) can see.

The ``live`` fixture (``tests/api/conftest.py``) builds a :class:`Live`; the test
drives jobs through their states with the services, as a worker would, and reads
the events that follow.
"""

from __future__ import annotations

import json
import queue
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.orm import Session, sessionmaker

from core.db import session_scope
from core.models import Team
from core.services import claim_job, report_progress
from tests.api.conftest import TestClient
from tests.builders import T0, curve, make_job, make_points

__all__ = ["WAIT_S", "Event", "EventReader", "Live"]

WAIT_S = 10.0
"""Deadline for the next event (they come within a few polls)."""

_CLOSED = object()


@dataclass(frozen=True)
class Event:
    """One parsed event, or a comment (``event`` None)."""

    event: str | None
    data: Any = None
    id: str | None = None
    comment: str | None = None


class EventReader:
    """Parses a streamed response in a thread, so every read has a deadline."""

    def __init__(self, response: httpx.Response) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(response,), daemon=True)
        self._thread.start()

    def _run(self, response: httpx.Response) -> None:
        fields: dict[str, str] = {}
        try:
            for line in response.iter_lines():
                if line == "":
                    if fields:
                        data = fields.get("data")
                        self._queue.put(
                            Event(
                                event=fields.get("event", "message"),
                                data=None if data is None else json.loads(data),
                                id=fields.get("id"),
                            )
                        )
                    fields = {}
                elif line.startswith(":"):
                    self._queue.put(Event(event=None, comment=line[1:].strip()))
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
        except BaseException as exc:  # handed to the test, which fails with it
            self._queue.put(exc)
        finally:
            self._queue.put(_CLOSED)

    def next(self) -> Event:
        """The next event or comment; fails after :data:`WAIT_S` or if the stream closed."""
        try:
            item = self._queue.get(timeout=WAIT_S)
        except queue.Empty:
            pytest.fail(f"no event within {WAIT_S} s")
        if isinstance(item, BaseException):
            raise item
        assert item is not _CLOSED, "the stream closed"
        assert isinstance(item, Event)
        return item

    def take(self, n: int) -> list[Event]:
        """The next ``n`` events or comments."""
        return [self.next() for _ in range(n)]

    def events(self, n: int) -> list[Event]:
        """The next ``n`` events, skipping comments."""
        found: list[Event] = []
        while len(found) < n:
            item = self.next()
            if item.event is not None:
                found.append(item)
        return found

    def assert_closed(self) -> None:
        """The stream ended (the server closed it) with nothing more in it."""
        try:
            item = self._queue.get(timeout=WAIT_S)
        except queue.Empty:
            pytest.fail(f"the stream is still open after {WAIT_S} s")
        assert item is _CLOSED, f"expected the end of the stream, got {item!r}"


@dataclass
class Live:
    """The app on committed rows, a writer for them, and a team's token."""

    app: FastAPI
    client: TestClient
    db: sessionmaker[Session]
    team_id: uuid.UUID
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def write(self, change: Callable[[Session], Any]) -> Any:
        """Run ``change`` in its own committed transaction, as a worker would."""
        with session_scope(self.db) as session:
            return change(session)

    def running_job(self, points: int = 0, *, team_id: uuid.UUID | None = None) -> uuid.UUID:
        """A job of the team (or ``team_id``), claimed, with ``points`` stored."""

        def create(session: Session) -> uuid.UUID:
            team = session.get_one(Team, team_id or self.team_id)
            job = make_job(session, team=team)
            claimed = claim_job(session, job_id=job.id, worker="gpu0", device="cpu", now=T0)
            assert claimed is not None
            if points:
                report_progress(
                    session, job_id=job.id, attempt=1, **curve(make_points(0, points)), now=T0
                )
            return job.id

        job_id: uuid.UUID = self.write(create)
        return job_id

    def add_points(self, job_id: uuid.UUID, start: int, size: int, attempt: int = 1) -> None:
        self.write(
            lambda s: report_progress(
                s, job_id=job_id, attempt=attempt, **curve(make_points(start, size)), now=T0
            )
        )

    def stream(self, job_id: uuid.UUID, **headers: str) -> Any:
        return self.client.stream(
            "GET", f"/range-tests/{job_id}/events", headers={**self.headers, **headers}
        )
