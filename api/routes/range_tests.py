"""A range test's own routes: its curve in the old column names, its bounds and its plot.

Creating, listing, reading, cancelling and following range tests are derived
from the kind registry (:func:`api.routes.jobs.kind_router`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from api.admission import Admission
from api.deps import BearerTokenDep, CurrentTeamDep, SessionDep
from api.routes._responses import AUTH, INVALID, NOT_FOUND, problem
from api.routes.jobs import MAX_POINT_INDEX, series_csv
from api.schemas import BoundsRead, CurveRead
from api.schemas.text import check_method, method_enum
from core import services
from core.kinds import RANGE_TEST
from core.services import RangeTestPlot

__all__ = ["router"]

router = APIRouter(prefix="/range-tests", tags=["range tests"])


@router.get(
    "/{job_id}/curve",
    response_model=CurveRead,
    responses={
        200: {"content": {"text/csv": {}}, "description": "JSON, or CSV when asked for"},
        **AUTH,
        **NOT_FOUND,
        **INVALID,
    },
)
def read_curve(
    job_id: uuid.UUID,
    session: SessionDep,
    team: CurrentTeamDep,
    after: Annotated[int, Query(ge=0, le=MAX_POINT_INDEX)] = 0,
    format_: Annotated[Literal["json", "csv"] | None, Query(alias="format")] = None,
    accept: Annotated[str | None, Header()] = None,
) -> CurveRead | Response:
    """The curve from point ``after`` on, as JSON or (``?format=csv``) CSV.

    The same points as ``GET /jobs/{id}/series/curve``, with the columns named
    ``lrs``, ``losses``, ``smoothed_losses`` and ``accuracies``.
    """
    services.get_job(session, team=team, job_id=job_id, kind=RANGE_TEST.name)
    curve = services.read_series(session, team=team, job_id=job_id, name="curve", after=after)
    wants_csv = format_ == "csv" or (format_ is None and "text/csv" in (accept or ""))
    if wants_csv:
        return PlainTextResponse(series_csv(curve), media_type="text/csv")
    return CurveRead.from_series(curve)


@router.get(
    "/{job_id}/bounds",
    response_model=BoundsRead,
    responses={
        **AUTH,
        **NOT_FOUND,
        **problem(409, "The job has not succeeded (yet); the detail names its status"),
        **INVALID,
    },
)
def get_bounds(
    job_id: uuid.UUID,
    session: SessionDep,
    team: CurrentTeamDep,
    method: Annotated[
        str | None,
        Query(max_length=64, json_schema_extra=method_enum),
    ] = None,
) -> BoundsRead:
    """The suggested bounds of a finished range test, ``method`` (or the default) first."""
    check_method(method)
    bounds = services.get_bounds(session, team=team, job_id=job_id)
    return BoundsRead.from_bounds(bounds, method=method)


PLOT_MEDIA_TYPES = {"png": "image/png", "svg": "image/svg+xml"}
FINAL_PLOT_MAX_AGE_S = 86_400
"""How long a client may keep a finished job's plot without asking again."""


class _PlotResponse(Response):
    """A plot drawn when the response is sent.

    FastAPI ends the request's unit of work before it sends the response, so the
    second or so of drawing holds no transaction (on SQLite: no write lock).
    """

    def __init__(self, plot: RangeTestPlot, format_: Literal["png", "svg"], etag: str) -> None:
        super().__init__(media_type=PLOT_MEDIA_TYPES[format_], headers=_plot_headers(plot, etag))
        self._plot = plot
        self._format = format_

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.body = await run_in_threadpool(
            services.render_range_test_plot, self._plot, format=self._format
        )
        self.headers["content-length"] = str(len(self.body))
        await super().__call__(scope, receive, send)


async def hold_plot_turn(request: Request, _token: BearerTokenDep) -> AsyncIterator[None]:
    """One of the app's turns to draw a plot, from before its data is loaded until it is sent.

    Drawing takes a thread and the GIL for a second or so: without a cap, one team
    asking for plots filled the thread pool and every other request waited behind
    the drawings until its turn at the database ran out. Taken first, before the
    turn at the database, so the requests waiting to draw hold no database turn
    either: the excess is refused (503, ``Retry-After``) having cost nothing scarce.
    """
    renders: Admission = request.app.state.plot_renders
    async with renders.slot():
        yield


# The default scope: held until the response (the drawing) has been sent.
PlotTurnDep = Annotated[None, Depends(hold_plot_turn)]


def _plot_headers(plot: RangeTestPlot, etag: str) -> dict[str, str]:
    # A finished job's plot never changes; a running one's changes with every chunk.
    cache = f"private, max-age={FINAL_PLOT_MAX_AGE_S}" if plot.final else "no-cache"
    return {"ETag": etag, "Cache-Control": cache}


def _plot(
    job_id: uuid.UUID,
    session: SessionDep,
    team: CurrentTeamDep,
    format_: Literal["png", "svg"],
    if_none_match: str | None,
) -> Response:
    plot = services.load_range_test_plot(session, team=team, job_id=job_id)
    etag = f'W/"{plot.version_tag}-{format_}"'
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=_plot_headers(plot, etag))
    return _PlotResponse(plot, format_, etag)


def _plot_responses(media_type: str) -> dict[int | str, dict[str, Any]]:
    return {
        200: {
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
            "description": "The plot: the whole curve once finished, the points so far before",
        },
        304: {"description": "Not modified since the `ETag` given in `If-None-Match`"},
        **AUTH,
        **NOT_FOUND,
        **problem(409, "The job has no curve points (yet); the detail names its status"),
        **INVALID,
        **problem(503, "The server is drawing as many plots as it may at once; see Retry-After"),
    }


@router.get("/{job_id}/plot.png", response_class=Response, responses=_plot_responses("image/png"))
def plot_range_test_png(
    job_id: uuid.UUID,
    _turn: PlotTurnDep,
    session: SessionDep,
    team: CurrentTeamDep,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    """The loss-vs-LR plot of the curve so far (PNG), with the bounds once it succeeded."""
    return _plot(job_id, session, team, "png", if_none_match)


@router.get(
    "/{job_id}/plot.svg", response_class=Response, responses=_plot_responses("image/svg+xml")
)
def plot_range_test_svg(
    job_id: uuid.UUID,
    _turn: PlotTurnDep,
    session: SessionDep,
    team: CurrentTeamDep,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    """The loss-vs-LR plot of the curve so far (SVG), with the bounds once it succeeded."""
    return _plot(job_id, session, team, "svg", if_none_match)
