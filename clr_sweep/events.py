"""A job's Server-Sent Events (``GET /jobs/{id}/events``) as :class:`Event` objects.

The stream sends ``status`` (the job, as ``GET /jobs/{id}`` gives it) first and
whenever the job's state changes, one event per series with new points, named
after the series (a range test's ``curve``; a training's ``iterations`` and
``epochs``), and a last ``end`` once the job finished. Each series event's id
(``<attempt>:<points of each series>``) is where a broken stream resumes: the
client sends the last one it got as ``Last-Event-ID``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from clr_sweep import _models
from clr_sweep.errors import ProtocolError

__all__ = ["END", "STATUS", "Event", "SSEDecoder"]

STATUS = "status"
END = "end"


@dataclass(frozen=True)
class Event:
    """One event of a job's stream.

    Attributes:
        event: ``status``, ``end``, or the name of the series the points belong to.
        data: the event's JSON, decoded.
        id: the id the event carries (series events), else None.
        last_event_id: where a stream resumed after this event starts
            (``Client.events(job_id, last_event_id=...)``).
    """

    event: str
    data: Any
    id: str | None
    last_event_id: str | None

    @property
    def job(self) -> _models.AnyJobRead:
        """A ``status`` event's job.

        Raises:
            ValueError: this is not a ``status`` event.
        """
        if self.event != STATUS:
            raise ValueError(f"a {self.event!r} event carries no job")
        return _models.parse_job(self.data)

    @property
    def series(self) -> _models.SeriesRead:
        """A series event's points.

        Raises:
            ValueError: this is a ``status`` or ``end`` event.
        """
        if self.event in (STATUS, END):
            raise ValueError(f"a {self.event!r} event carries no series")
        return _models.parse_series(self.data)


class SSEDecoder:
    """Turns the lines of a ``text/event-stream`` into :class:`Event` objects (the
    WHATWG rules: ``event``, ``data`` lines joined, ``id``, comments ignored)."""

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_event_id = last_event_id
        self._event = ""
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> Event | None:
        """Take one line (without its end); the event a blank line completes, else None."""
        if not line:
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id" and "\0" not in value:
            self._id = value
        return None

    def _dispatch(self) -> Event | None:
        event, data, event_id = self._event or "message", self._data, self._id
        self._event, self._data, self._id = "", [], None
        if event_id is not None:
            self.last_event_id = event_id or None
        if not data:
            return None
        text = "\n".join(data)
        try:
            decoded = json.loads(text)
        except ValueError as exc:
            raise ProtocolError(f"a {event!r} event's data is not JSON: {text[:200]!r}") from exc
        return Event(event=event, data=decoded, id=event_id, last_event_id=self.last_event_id)
