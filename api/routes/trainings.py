"""A training's own routes: its plot.

Creating, listing, reading, cancelling and following trainings, and their
``iterations`` and ``epochs`` series, are derived from the kind registry
(:func:`api.routes.jobs.kind_router`, ``/jobs/{id}/series/{name}``).
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Header, Response

from api.deps import CurrentTeamDep, SessionDep
from api.routes._plots import PlotFormat, PlotTurnDep, plot_response, plot_responses
from api.routes._responses import Responses
from core import services
from core.training import TRAINING

__all__ = ["router"]

router = APIRouter(prefix=f"/{TRAINING.noun}", tags=[f"{TRAINING.title}s"])


def _plot(
    job_id: uuid.UUID,
    session: SessionDep,
    team: CurrentTeamDep,
    format_: PlotFormat,
    if_none_match: str | None,
) -> Response:
    plot = services.load_training_plot(session, team=team, job_id=job_id)
    return plot_response(plot, format_, if_none_match, services.render_training_plot)


def _plot_responses(media_type: str) -> Responses:
    return plot_responses(
        media_type,
        shows="The plot: loss and accuracy against iteration over the LR and momentum, "
        "the whole run once finished, the iterations so far before",
        empty="The training has no iterations (yet); the detail names its status",
    )


@router.get("/{job_id}/plot.png", response_class=Response, responses=_plot_responses("image/png"))
def plot_training_png(
    job_id: uuid.UUID,
    _turn: PlotTurnDep,
    session: SessionDep,
    team: CurrentTeamDep,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    """Loss and accuracy vs iteration over the LR and momentum, cycle ends marked (PNG)."""
    return _plot(job_id, session, team, "png", if_none_match)


@router.get(
    "/{job_id}/plot.svg", response_class=Response, responses=_plot_responses("image/svg+xml")
)
def plot_training_svg(
    job_id: uuid.UUID,
    _turn: PlotTurnDep,
    session: SessionDep,
    team: CurrentTeamDep,
    if_none_match: Annotated[str | None, Header(alias="If-None-Match")] = None,
) -> Response:
    """Loss and accuracy vs iteration over the LR and momentum, cycle ends marked (SVG)."""
    return _plot(job_id, session, team, "svg", if_none_match)
