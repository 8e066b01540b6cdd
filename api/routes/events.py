"""``GET /jobs/{id}/events`` (and ``/<noun>/{id}/events``): follow a job as Server-Sent Events.

The protocol (``text/event-stream``):

- ``status``: the job, as ``GET /jobs/{id}`` gives it (a queued one with its
  ``queue_position`` and ``waiting_reason``). Sent first on every connection
  (resumed ones too), then whenever its status, attempt, error,
  ``cancel_requested`` or why it waits changes. No ``id``.
- one event per series with new points, named after the series (a range test's
  ``curve``; a training's ``iterations`` and ``epochs``): data as
  ``GET /jobs/{id}/series/{name}?after=N`` gives them (at most
  :data:`MAX_POINTS_PER_EVENT` per event). Its ``id`` is
  ``<attempt>:<points so far of each series>``, in the kind's order (``1:120``
  for a range test; ``2:1200,3`` for a training). Points come before the status
  change that follows them, except that a new attempt's ``status`` comes before
  its first points. A series event whose ``start`` is below what the client has
  replaces its points from ``start`` on (a requeued range test starts its curve
  again at 0; a resumed training at its last checkpoint).
- ``end``: the job finished (succeeded, failed or cancelled); sent after its last
  points and its final ``status``, then the stream closes. A client should close
  its ``EventSource`` on ``end``, or it reconnects and gets ``status`` and ``end``
  again.
- ``: ping`` comments when nothing was sent for 15 s.

Resuming: ``Last-Event-ID: A:N1,N2`` sends what attempt ``A``'s follower lacks:
the points after the first ``N1`` of the first series, ``N2`` of the second, or
from where the job's later attempts changed them. Bare counts mean the current
attempt.

The stream polls the database every :data:`POLL_INTERVAL_S` seconds in short
read-only transactions run in the thread pool (no LISTEN/NOTIFY, so SQLite works
too); the request's own session has closed before the first event goes out, so
an idle stream holds no connection. A poll that finds the pool busy is skipped.

Open streams are capped per API process (``CLR_API_MAX_STREAMS``: 503 beyond, with
``Retry-After``) and per team (``CLR_API_MAX_STREAMS_PER_TEAM``: 429 beyond), so
streams cannot crowd out requests; the refusal names the limit.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Request
from fastapi.params import Depends as DependsParam
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.admission import Overloaded
from api.deps import CurrentTeamDep, SessionDep
from api.routes._responses import AUTH, INVALID, NOT_FOUND, problem
from api.schemas.events import StreamEnd
from api.schemas.jobs import job_read_model, series_read
from api.schemas.text import string_schema
from core import services
from core.db import make_session_factory
from core.errors import InvalidInput, JobNotFound
from core.kinds import get_kind
from core.models import JobStatus, Team
from core.services import SeriesSlice
from core.settings import Settings

__all__ = [
    "LAST_EVENT_ID",
    "MAX_POINTS_PER_EVENT",
    "POLL_INTERVAL_S",
    "Resume",
    "STREAM_RETRY_AFTER_S",
    "StreamSlots",
    "StreamTiming",
    "TooManyStreams",
    "add_event_route",
    "get_stream_timing",
    "hold_stream_slot",
    "parse_last_event_id",
]

POLL_INTERVAL_S = 0.25
"""How often a stream looks at the database."""

MAX_POINTS_PER_EVENT = 1000
"""Longer runs of points (a resumed finished job) are cut into several series events."""

MAX_SERIES = 16
"""Most series counts a ``Last-Event-ID`` may carry."""

LAST_EVENT_ID = "Last-Event-ID"
_MAX_INDEX = 2**31 - 1
_EVENT_ID = re.compile(
    rf"(?:([0-9]{{1,10}}):)?([0-9]{{1,10}}(?:,[0-9]{{1,10}}){{0,{MAX_SERIES - 1}}})"
)
_FINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


@dataclass(frozen=True)
class StreamTiming:
    """How often streams poll (a dependency, so tests can make it quicker)."""

    poll_interval_s: float = POLL_INTERVAL_S


def get_stream_timing() -> StreamTiming:
    """The streams' timing."""
    return StreamTiming()


STREAM_RETRY_AFTER_S = 5
"""``Retry-After`` of a refused stream: streams last, a slot frees up slowly."""


class TooManyStreams(Overloaded):
    """The team holds as many open streams as it may (429, with ``Retry-After``)."""

    status = 429
    title = "Too many event streams"
    code = "too-many-streams"


class StreamSlots:
    """Counts the process's open streams, in all and per team (one event loop: no lock)."""

    def __init__(self, limit: int, *, per_team: int) -> None:
        self.limit = limit
        self.per_team = per_team
        self.open = 0
        self.by_team: Counter[uuid.UUID] = Counter()

    def take(self, team_id: uuid.UUID) -> None:
        """Count one more stream of ``team_id``.

        Raises:
            TooManyStreams: the team is at ``per_team``.
            Overloaded: the process is at ``limit``.
        """
        if self.by_team[team_id] >= self.per_team:
            raise TooManyStreams(
                f"the team already has {self.per_team} open event streams, the most a team "
                "may have (CLR_API_MAX_STREAMS_PER_TEAM); close one",
                field="streams",
                retry_after_s=STREAM_RETRY_AFTER_S,
            )
        if self.open >= self.limit:
            raise Overloaded(
                f"the server has {self.limit} open event streams, the most it keeps "
                "(CLR_API_MAX_STREAMS)",
                field="streams",
                retry_after_s=STREAM_RETRY_AFTER_S,
            )
        self.open += 1
        self.by_team[team_id] += 1

    def give_back(self, team_id: uuid.UUID) -> None:
        """Count one stream of ``team_id`` less."""
        self.open -= 1
        self.by_team[team_id] -= 1
        if self.by_team[team_id] <= 0:
            del self.by_team[team_id]


async def hold_stream_slot(request: Request, team: CurrentTeamDep) -> AsyncIterator[None]:
    """One of the process's and the team's stream slots, for as long as the stream lasts."""
    slots: StreamSlots = request.app.state.streams
    team_id = team.id  # read now: a rolled-back session expires the team
    slots.take(team_id)
    try:
        yield
    finally:
        slots.give_back(team_id)


@dataclass(frozen=True)
class Resume:
    """Where a stream starts: after ``counts`` points of each series (in the kind's
    order) of ``attempt`` (None: the current one)."""

    attempt: int | None = None
    counts: tuple[int, ...] = ()


def parse_last_event_id(value: str | None) -> Resume:
    """The ``Last-Event-ID`` header as a :class:`Resume` point.

    Raises:
        InvalidInput: the header is not ``<attempt>:<points>[,<points>...]`` or
            ``<points>[,...]``.
    """
    if value is None:
        return Resume()
    match = _EVENT_ID.fullmatch(value.strip())
    attempt_text, counts_text = match.groups() if match is not None else (None, None)
    numbers = [] if counts_text is None else [int(n) for n in counts_text.split(",")]
    if attempt_text is not None:
        numbers.append(int(attempt_text))
    if match is None or any(n > _MAX_INDEX for n in numbers):
        reason = (
            "must be the id of an event of this stream: <attempt>:<points>[,<points>...] or "
            f"<points>, whole numbers from 0 to {_MAX_INDEX}, got {value[:64]!r}"
        )
        raise InvalidInput(
            f"{LAST_EVENT_ID} {reason}", errors=[{"field": LAST_EVENT_ID, "reason": reason}]
        )
    assert counts_text is not None
    return Resume(
        attempt=None if attempt_text is None else int(attempt_text),
        counts=tuple(int(n) for n in counts_text.split(",")),
    )


@dataclass(frozen=True)
class _Stream:
    team: Team
    job_id: uuid.UUID
    kind: str | None
    series: tuple[str, ...]
    resume: Resume
    sessions: sessionmaker[Session]
    settings: Settings


def _open_stream(kind: str | None) -> Callable[..., _Stream]:
    def open_stream(
        job_id: uuid.UUID,
        request: Request,
        session: SessionDep,
        team: CurrentTeamDep,
        last_event_id: Annotated[
            str | None,
            Header(
                alias=LAST_EVENT_ID,
                description="Resume after this event: `<attempt>:<points>[,<points>...]`",
                # declared only: parse_last_event_id checks it (and the numbers' range)
                json_schema_extra=string_schema(
                    pattern=r"^(?:[0-9]{1,10}:)?[0-9]{1,10}(?:,[0-9]{1,10})*$",
                    minLength=1,
                    maxLength=11 * (MAX_SERIES + 1),
                ),
            ),
        ] = None,
    ) -> _Stream:
        """Check the request before the stream starts, so errors are still problem+json."""
        resume = parse_last_event_id(last_event_id)
        job = services.get_job(session, team=team, job_id=job_id, kind=kind)
        series = tuple(s.name for s in get_kind(job.kind).series_of(job.spec))
        # Polls only read: BEGIN DEFERRED on SQLite, so they never take the write lock.
        return _Stream(
            team,
            job_id,
            kind,
            series,
            resume,
            make_session_factory(request.app.state.read_engine),
            request.app.state.settings,
        )

    return open_stream


@dataclass(frozen=True)
class _Polled:
    job: Any
    progress: int
    series_points: dict[str, int]
    series: list[SeriesSlice]


class _Busy:
    """A poll that found no free pooled connection: try again at the next tick."""


def _poll(stream: _Stream, attempt: int | None, seen: dict[str, int]) -> _Polled | _Busy | None:
    try:
        return _poll_once(stream, attempt, seen)
    except PoolTimeout:
        return _Busy()


def _poll_once(stream: _Stream, attempt: int | None, seen: dict[str, int]) -> _Polled | None:
    with stream.sessions() as session:
        try:
            update = services.poll_job(
                session,
                team=stream.team,
                job_id=stream.job_id,
                attempt=attempt,
                seen=seen,
                kind=stream.kind,
            )
        except JobNotFound:
            return None
        job = job_read_model(get_kind(update.job.kind)).model_validate(update.job)
        if job.status == JobStatus.QUEUED:
            # where it stands and why it waits, as GET /jobs/{id} says
            wait = services.explain_wait(session, job=update.job, settings=stream.settings)
            job = job.model_copy(
                update={
                    "queue_position": wait.queue_position,
                    "waiting_reason": wait.waiting_reason,
                }
            )
        return _Polled(
            job=job,
            progress=update.job.progress,
            series_points=dict(update.job.series_points or {}),
            series=update.series,
        )


def _pieces(series: SeriesSlice) -> list[SeriesSlice]:
    if series.size <= MAX_POINTS_PER_EVENT:
        return [series]
    pieces = []
    for lo in range(0, series.size, MAX_POINTS_PER_EVENT):
        hi = lo + MAX_POINTS_PER_EVENT
        values = {k: None if v is None else v[lo:hi] for k, v in series.values.items()}
        pieces.append(dataclasses.replace(series, start=series.start + lo, values=values))
    return pieces


@dataclass
class _Feed:
    """Turns successive polls into events, and remembers what the client has."""

    series: tuple[str, ...]
    attempt: int | None
    seen: dict[str, int] = field(default_factory=dict)
    ended: bool = False
    _last: tuple[object, ...] | None = None

    @classmethod
    def resuming(cls, series: tuple[str, ...], resume: Resume) -> _Feed:
        seen = dict(zip(series, resume.counts, strict=False))
        return cls(series=series, attempt=resume.attempt, seen=seen)

    def event_id(self, attempt: int) -> str:
        return f"{attempt}:" + ",".join(str(self.seen.get(name, 0)) for name in self.series)

    def events(self, polled: _Polled) -> list[ServerSentEvent]:
        job = polled.job
        # a job without series (a sweep) shows its progress through its status events
        progress = None if self.series else job.progress
        last = (
            job.status,
            job.attempt,
            job.error,
            job.cancel_requested,
            progress,
            job.queue_position,
            job.waiting_reason,
        )
        changed = last != self._last
        # a new attempt is announced before its points; other changes after them
        status_first = changed and (self._last is None or self._last[1] != job.attempt)
        self._last = last
        status = ServerSentEvent(event="status", data=job)
        out = [status] if status_first else []
        for series in polled.series:
            for piece in _pieces(series):
                self.seen[piece.name] = piece.next_after
                out.append(
                    ServerSentEvent(
                        event=piece.name,
                        id=self.event_id(piece.attempt),
                        data=series_read(piece),
                    )
                )
        self.attempt = job.attempt  # what the client has is now this attempt's
        if changed and not status_first:
            out.append(status)
        if job.status in _FINAL:
            end = StreamEnd(
                status=job.status,
                attempt=job.attempt,
                progress=polled.progress,
                series_points=polled.series_points,
            )
            out.append(ServerSentEvent(event="end", data=end))
            self.ended = True
        return out


_EVENTS_DESCRIPTION = (
    "`text/event-stream`: `status` events (data: the job, as `GET /jobs/{id}`), one "
    "event per series with new points, named after it (data: as "
    "`GET /jobs/{id}/series/{name}`; id `<attempt>:<points so far of each series>`, "
    "send it back as `Last-Event-ID` to resume) and a last `end` event (data: "
    "`{status, attempt, progress, series_points}`) once the job finished; `: ping` "
    "comments every 15 s of silence."
)


def add_event_route(router: APIRouter, path: str, *, kind: str | None, title: str) -> None:
    """Add ``GET <path>`` (``/{job_id}/events``) streaming a job's events to ``router``.

    With ``kind``, only jobs of that kind are found (another kind's id is a 404).
    """
    open_stream: DependsParam = Depends(_open_stream(kind))

    async def stream_events(
        request: Request,
        _slot: Annotated[None, Depends(hold_stream_slot)],
        stream: Annotated[_Stream, open_stream],
        timing: Annotated[StreamTiming, Depends(get_stream_timing)],
    ) -> AsyncIterator[ServerSentEvent]:
        feed = _Feed.resuming(stream.series, stream.resume)
        while True:
            polled = await run_in_threadpool(_poll, stream, feed.attempt, dict(feed.seen))
            if polled is None:
                return  # the job is gone
            if not isinstance(polled, _Busy):
                for event in feed.events(polled):
                    yield event
            if feed.ended or await request.is_disconnected():
                return
            await anyio.sleep(timing.poll_interval_s)

    # open_stream is a local value: not resolvable from the (string) annotation
    stream_events.__annotations__["stream"] = Annotated[_Stream, open_stream]
    stream_events.__doc__ = (
        f"Follow a {title} as Server-Sent Events: its status and new series points.\n\n"
        "A `status` event first, series events as points arrive, a `status` event on "
        "every change and, once the job finished, an `end` event; then the stream "
        "closes. Resume with `Last-Event-ID` (the id of the last series event)."
    )
    router.add_api_route(
        path,
        stream_events,
        methods=["GET"],
        response_class=EventSourceResponse,
        name=f"stream_{(kind or 'job')}_events",
        responses={
            200: {"description": _EVENTS_DESCRIPTION},
            **AUTH,
            **NOT_FOUND,
            **INVALID,
            **problem(429, "The team has as many open event streams as it may"),
            **problem(503, "The server is at capacity (requests or open event streams)"),
        },
    )
