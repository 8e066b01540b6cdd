"""A range test's own routes: its curve in the old column names, its bounds and its plot.

Creating, listing, reading, cancelling and following range tests are derived
from the kind registry (:func:`api.routes.jobs.kind_router`).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import PlainTextResponse

from api.deps import CurrentTeamDep, SessionDep
from api.routes._plots import add_plot_routes
from api.routes._responses import AUTH, INVALID, NOT_FOUND, problem
from api.routes.jobs import MAX_POINT_INDEX, series_csv
from api.schemas import BoundsRead, CurveRead, bounds_read, curve_read, series_read
from api.schemas.text import check_method, method_enum
from core import services
from core.db import read_only
from core.kinds import RANGE_TEST

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
    read_only(session)
    services.get_job(session, team=team, job_id=job_id, kind=RANGE_TEST.name)
    curve = services.read_series(session, team=team, job_id=job_id, name="curve", after=after)
    wants_csv = format_ == "csv" or (format_ is None and "text/csv" in (accept or ""))
    if wants_csv:
        return PlainTextResponse(series_csv(series_read(curve)), media_type="text/csv")
    return curve_read(curve)


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
    return bounds_read(bounds, method=method)


add_plot_routes(
    router,
    kind="range_test",
    load=services.load_range_test_plot,
    render=services.render_range_test_plot,
    summary="The loss-vs-LR plot of the curve so far, with the bounds once it succeeded",
    shows="The plot: the whole curve once finished, the points so far before",
    empty="The job has no curve points (yet); the detail names its status",
)
