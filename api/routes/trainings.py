"""A training's own routes: its plot and its weights (the final model, the snapshots).

Creating, listing, reading, cancelling and following trainings, and their
``iterations`` and ``epochs`` series, are derived from the kind registry
(:func:`api.routes.jobs.kind_router`, ``/jobs/{id}/series/{name}``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse

from api.deps import CurrentTeamDep, SessionDep, SettingsDep
from api.routes._plots import add_plot_routes
from api.routes._responses import AUTH, INVALID, problem
from core import services
from core.artifacts import ArtifactStream
from core.training import MAX_SNAPSHOTS, TRAINING

__all__ = ["router"]

router = APIRouter(prefix=f"/{TRAINING.noun}", tags=[f"{TRAINING.title}s"])


add_plot_routes(
    router,
    kind="training",
    load=services.load_training_plot,
    render=services.render_training_plot,
    summary="Loss and accuracy vs iteration over the LR and momentum, cycle ends marked",
    shows="The plot: loss and accuracy against iteration over the LR and momentum, "
    "the whole run once finished, the iterations so far before",
    empty="The training has no iterations (yet); the detail names its status",
)


MODEL_MEDIA_TYPE = "application/octet-stream"


def _chunks(stream: ArtifactStream) -> Iterator[bytes]:
    # a generator, so a client that goes away mid-download releases the file
    try:
        yield from stream
    finally:
        stream.close()


@router.get(
    "/{job_id}/model",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {MODEL_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
            "description": "The weights: a `torch.save`d state dict (`torch.load` reads it), "
            "streamed chunk by chunk",
        },
        **AUTH,
        **problem(404, "No such training for this team, or no such snapshot (`errors` says)"),
        **problem(409, "The training has not succeeded; the detail names its status"),
        **INVALID,
    },
)
def download_training_model(
    job_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    team: CurrentTeamDep,
    settings: SettingsDep,
    snapshot: Annotated[
        int | None,
        Query(
            ge=1,
            le=MAX_SNAPSHOTS,
            description="The snapshot ensemble's k-th member (1: the oldest kept) instead "
            "of the final weights",
        ),
    ] = None,
) -> StreamingResponse:
    """The final weights of a succeeded training (``?snapshot=k``: the ensemble's k-th)."""
    model = services.find_training_model(session, team=team, job_id=job_id, snapshot=snapshot)
    stream = services.stream_training_model(request.app.state.session_factory, settings, model)
    headers = {
        "Content-Length": str(stream.artifact.size),
        "Content-Disposition": f'attachment; filename="{model.filename}"',
    }
    if stream.artifact.sha256:
        headers["ETag"] = f'"{stream.artifact.sha256}"'
    return StreamingResponse(_chunks(stream), media_type=MODEL_MEDIA_TYPE, headers=headers)
