"""``GET /range-tests/{id}/events``: follow a range test as Server-Sent Events.

The protocol (``text/event-stream``):

- ``status``: the job, as ``GET /range-tests/{id}`` gives it. Sent first on every
  connection (resumed ones too), then whenever its status, attempt, error or
  ``cancel_requested`` changes. No ``id``.
- ``curve``: new points, as ``GET /range-tests/{id}/curve?after=N`` gives them
  (at most :data:`MAX_POINTS_PER_EVENT` per event). Its ``id`` is
  ``<attempt>:<points so far>`` (``1:120``: attempt 1's points 0 to 119 are
  delivered). Points come before the status change that follows them, except that
  a new attempt's ``status`` comes before its first points (a requeued job starts
  its curve again at 0).
- ``end``: the job finished (succeeded, failed or cancelled); sent after its last
  points and its final ``status``, then the stream closes. A client should close
  its ``EventSource`` on ``end``, or it reconnects and gets ``status`` and ``end``
  again.
- ``: ping`` comments when nothing was sent for 15 s.

Resuming: ``Last-Event-ID: A:N`` sends attempt ``A``'s points after the first
``N``, or the current attempt's points from 0 when the job has started another
attempt since. A bare ``N`` means the current attempt.

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
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

import anyio
from fastapi import APIRouter, Depends, Header, Request
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.admission import Overloaded
from api.deps import CurrentTeamDep, SessionDep
from api.routes._responses import AUTH, INVALID, NOT_FOUND, problem
from api.schemas import CurveRead, RangeTestRead
from api.schemas.events import StreamEnd
from api.schemas.text import string_schema
from core import services
from core.db import make_session_factory
from core.errors import InvalidInput, JobNotFound
from core.models import JobStatus, Team
from core.services import CurveSlice

__all__ = [
    "LAST_EVENT_ID",
    "MAX_POINTS_PER_EVENT",
    "POLL_INTERVAL_S",
    "Resume",
    "STREAM_RETRY_AFTER_S",
    "StreamSlots",
    "StreamTiming",
    "TooManyStreams",
    "get_stream_timing",
    "hold_stream_slot",
    "parse_last_event_id",
    "router",
]

POLL_INTERVAL_S = 0.25
"""How often a stream looks at the database."""

MAX_POINTS_PER_EVENT = 1000
"""Longer runs of points (a resumed finished job) are cut into several ``curve`` events."""

LAST_EVENT_ID = "Last-Event-ID"
_MAX_INDEX = 2**31 - 1
_EVENT_ID = re.compile(r"(?:([0-9]{1,10}):)?([0-9]{1,10})")
_FINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

router = APIRouter(prefix="/range-tests", tags=["range tests"])


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
    """Where a stream starts: after ``after`` points of ``attempt`` (None: the current one)."""

    attempt: int | None = None
    after: int = 0


def parse_last_event_id(value: str | None) -> Resume:
    """The ``Last-Event-ID`` header as a :class:`Resume` point.

    Raises:
        InvalidInput: the header is not ``<attempt>:<points>`` or ``<points>``.
    """
    if value is None:
        return Resume()
    match = _EVENT_ID.fullmatch(value.strip())
    numbers = [] if match is None else [int(g) for g in match.groups() if g is not None]
    if match is None or any(n > _MAX_INDEX for n in numbers):
        reason = (
            "must be the id of an event of this stream: <attempt>:<points> or <points>, "
            f"whole numbers from 0 to {_MAX_INDEX}, got {value[:64]!r}"
        )
        raise InvalidInput(
            f"{LAST_EVENT_ID} {reason}", errors=[{"field": LAST_EVENT_ID, "reason": reason}]
        )
    attempt, after = match.groups()
    return Resume(attempt=None if attempt is None else int(attempt), after=int(after))


@dataclass(frozen=True)
class _Stream:
    team: Team
    job_id: uuid.UUID
    resume: Resume
    sessions: sessionmaker[Session]


def open_stream(
    job_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    team: CurrentTeamDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias=LAST_EVENT_ID,
            description="Resume after this event: `<attempt>:<points>` or `<points>`",
            # declared only: parse_last_event_id checks it (and the numbers' range)
            json_schema_extra=string_schema(
                pattern=r"^(?:[0-9]{1,10}:)?[0-9]{1,10}$", minLength=1, maxLength=21
            ),
        ),
    ] = None,
) -> _Stream:
    """Check the request before the stream starts, so errors are still problem+json."""
    resume = parse_last_event_id(last_event_id)
    services.get_job(session, team=team, job_id=job_id)
    # Polls only read: BEGIN DEFERRED on SQLite, so they never take the write lock.
    return _Stream(team, job_id, resume, make_session_factory(request.app.state.read_engine))


@dataclass(frozen=True)
class _Polled:
    job: RangeTestRead
    progress: int
    curve: CurveSlice | None


class _Busy:
    """A poll that found no free pooled connection: try again at the next tick."""


def _poll(stream: _Stream, attempt: int | None, after: int) -> _Polled | _Busy | None:
    try:
        return _poll_once(stream, attempt, after)
    except PoolTimeout:
        return _Busy()


def _poll_once(stream: _Stream, attempt: int | None, after: int) -> _Polled | None:
    with stream.sessions() as session:
        try:
            update = services.poll_job(
                session, team=stream.team, job_id=stream.job_id, attempt=attempt, after=after
            )
        except JobNotFound:
            return None
        job = RangeTestRead.model_validate(update.job)
        return _Polled(job=job, progress=update.job.progress, curve=update.curve)


def _pieces(curve: CurveSlice) -> list[CurveSlice]:
    pieces = []
    for lo in range(0, len(curve.lrs), MAX_POINTS_PER_EVENT):
        hi = lo + MAX_POINTS_PER_EVENT
        accuracies = curve.accuracies
        pieces.append(
            dataclasses.replace(
                curve,
                start=curve.start + lo,
                lrs=curve.lrs[lo:hi],
                losses=curve.losses[lo:hi],
                smoothed_losses=curve.smoothed_losses[lo:hi],
                accuracies=None if accuracies is None else accuracies[lo:hi],
            )
        )
    return pieces


class _Feed:
    """Turns successive polls into events, and remembers what the client has."""

    def __init__(self, resume: Resume) -> None:
        self.attempt = resume.attempt
        self.after = resume.after
        self.ended = False
        self._seen: tuple[object, ...] | None = None

    def events(self, polled: _Polled) -> list[ServerSentEvent]:
        job = polled.job
        seen = (job.status, job.attempt, job.error, job.cancel_requested)
        changed = seen != self._seen
        # a new attempt is announced before its points; other changes after them
        status_first = changed and (self._seen is None or self._seen[1] != job.attempt)
        self._seen = seen
        status = ServerSentEvent(event="status", data=job)
        out = [status] if status_first else []
        if polled.curve is not None:
            for piece in _pieces(polled.curve):
                out.append(
                    ServerSentEvent(
                        event="curve",
                        id=f"{piece.attempt}:{piece.next_after}",
                        data=CurveRead.model_validate(piece),
                    )
                )
            self.attempt, self.after = polled.curve.attempt, polled.curve.next_after
        elif self.attempt is None:
            self.attempt = job.attempt  # a bare Last-Event-ID meant this attempt
        if changed and not status_first:
            out.append(status)
        if job.status in _FINAL:
            end = StreamEnd(status=job.status, attempt=job.attempt, points=polled.progress)
            out.append(ServerSentEvent(event="end", data=end))
            self.ended = True
        return out


_EVENTS_DESCRIPTION = (
    "`text/event-stream`: `status` events (data: the job, as `GET /range-tests/{id}`), "
    "`curve` events (data: new points, as `GET /range-tests/{id}/curve`; "
    "id `<attempt>:<points so far>`, send it back as `Last-Event-ID` to resume) "
    "and a last `end` event (data: `{status, attempt, points}`) once the job finished; "
    "`: ping` comments every 15 s of silence."
)


@router.get(
    "/{job_id}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"description": _EVENTS_DESCRIPTION},
        **AUTH,
        **NOT_FOUND,
        **INVALID,
        **problem(429, "The team has as many open event streams as it may"),
        **problem(503, "The server is at capacity (requests or open event streams)"),
    },
)
async def stream_range_test_events(
    request: Request,
    _slot: Annotated[None, Depends(hold_stream_slot)],
    stream: Annotated[_Stream, Depends(open_stream)],
    timing: Annotated[StreamTiming, Depends(get_stream_timing)],
) -> AsyncIterator[ServerSentEvent]:
    """Follow a range test as Server-Sent Events: its status and new curve points.

    A `status` event first, `curve` events as points arrive, a `status` event on
    every change and, once the job finished, an `end` event; then the stream
    closes. Resume with `Last-Event-ID` (the id of the last `curve` event).
    """
    feed = _Feed(stream.resume)
    while True:
        polled = await run_in_threadpool(_poll, stream, feed.attempt, feed.after)
        if polled is None:
            return  # the job is gone
        if not isinstance(polled, _Busy):
            for event in feed.events(polled):
                yield event
        if feed.ended or await request.is_disconnected():
            return
        await anyio.sleep(timing.poll_interval_s)
