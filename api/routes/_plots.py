"""What every stored job's plot route shares: the drawing turn, the ETag and the response.

A plot route loads what it draws in its unit of work (a ``load_*_plot``
service), answers ``304`` when the client's ``If-None-Match`` names the
plot's version, and otherwise returns a :class:`PlotResponse` that draws the
picture only when it is sent: FastAPI ends the request's unit of work first, so
the second or so of drawing holds no transaction (on SQLite: no write lock).
Every such route takes a :data:`PlotTurnDep`, one of the app's turns to draw.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request, Response, status
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from api.admission import Admission
from api.deps import BearerTokenDep, CurrentTeamDep, SessionDep
from api.routes._responses import AUTH, INVALID, NOT_FOUND, Responses, problem
from core.services import Plot

__all__ = [
    "FINAL_PLOT_MAX_AGE_S",
    "PLOT_MEDIA_TYPES",
    "PlotFormat",
    "PlotResponse",
    "PlotTurnDep",
    "add_plot_routes",
    "hold_plot_turn",
    "plot_response",
    "plot_responses",
]

PlotFormat = Literal["png", "svg"]
PLOT_MEDIA_TYPES: dict[str, str] = {"png": "image/png", "svg": "image/svg+xml"}
FINAL_PLOT_MAX_AGE_S = 86_400
"""How long a client may keep a finished job's plot without asking again."""

Render = Callable[..., bytes]
"""A ``render_*_plot(plot, *, format=)`` service: the picture's bytes, no database."""


def _plot_headers(plot: Plot, etag: str) -> dict[str, str]:
    # A finished job's plot never changes; a running one's changes with every chunk.
    cache = f"private, max-age={FINAL_PLOT_MAX_AGE_S}" if plot.final else "no-cache"
    return {"ETag": etag, "Cache-Control": cache}


class PlotResponse(Response):
    """A plot drawn when the response is sent, in a thread (after the unit of work)."""

    def __init__(self, plot: Plot, format_: PlotFormat, etag: str, render: Render) -> None:
        super().__init__(media_type=PLOT_MEDIA_TYPES[format_], headers=_plot_headers(plot, etag))
        self._plot = plot
        self._format = format_
        self._render = render

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.body = await run_in_threadpool(self._render, self._plot, format=self._format)
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


def plot_response(
    plot: Plot, format_: PlotFormat, if_none_match: str | None, render: Render
) -> Response:
    """``304`` when ``If-None-Match`` names this version of the plot, else the drawing."""
    etag = f'W/"{plot.version_tag}-{format_}"'
    if if_none_match is not None and etag in {t.strip() for t in if_none_match.split(",")}:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=_plot_headers(plot, etag))
    return PlotResponse(plot, format_, etag, render)


def plot_responses(media_type: str, *, shows: str, empty: str) -> Responses:
    """The OpenAPI responses of a plot route: ``shows`` what a 200 is, ``empty`` when 409."""
    responses: dict[int | str, dict[str, Any]] = {
        200: {
            "content": {media_type: {"schema": {"type": "string", "format": "binary"}}},
            "description": shows,
        },
        304: {"description": "Not modified since the `ETag` given in `If-None-Match`"},
        **AUTH,
        **NOT_FOUND,
        **problem(409, empty),
        **INVALID,
        **problem(503, "The server is drawing as many plots as it may at once; see Retry-After"),
    }
    return responses


Load = Callable[..., Plot]
"""A ``load_*_plot(session, *, team, job_id)`` service: what the plot shows, read."""


def add_plot_routes(
    router: APIRouter,
    *,
    kind: str,
    load: Load,
    render: Render,
    summary: str,
    shows: str,
    empty: str,
) -> None:
    """``GET {router}/{job_id}/plot.png`` and ``.svg`` (named ``plot_<kind>_png|svg``).

    ``summary`` is the routes' one-line description, followed by the format.
    """
    for format_, media_type in PLOT_MEDIA_TYPES.items():
        route = _plot_route(format_, load, render)  # type: ignore[arg-type]
        route.__name__ = route.__qualname__ = f"plot_{kind}_{format_}"
        route.__doc__ = f"{summary} ({format_.upper()})."
        router.add_api_route(
            f"/{{job_id}}/plot.{format_}",
            route,
            methods=["GET"],
            response_class=Response,
            responses=plot_responses(media_type, shows=shows, empty=empty),
        )


def _plot_route(format_: PlotFormat, load: Load, render: Render) -> Callable[..., Response]:
    def plot_route(
        job_id: uuid.UUID,
        _turn: PlotTurnDep,
        session: SessionDep,
        team: CurrentTeamDep,
        if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
    ) -> Response:
        plot = load(session, team=team, job_id=job_id)
        return plot_response(plot, format_, if_none_match, render)

    return plot_route
