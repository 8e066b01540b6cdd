"""``/bounds``: the latest suggestion for a configuration, without a job id."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Query

from api.deps import CurrentTeamDep, SessionDep
from api.routes._responses import AUTH, INVALID, problem
from api.schemas import BoundsRead
from sweep import services
from sweep.errors import InvalidInput, JobNotFound

__all__ = ["router"]

router = APIRouter(tags=["bounds"])


def _json_object(name: str, text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = None
    if not isinstance(value, dict):
        reason = "must be a JSON object"
        raise InvalidInput(f"{name} {reason}", errors=[{"field": name, "reason": reason}])
    return value


@router.get(
    "/bounds",
    response_model=BoundsRead,
    responses={
        **AUTH,
        **problem(404, "No successful range test of this configuration yet"),
        **problem(409, "The latest range test of this configuration found no bounds"),
        **INVALID,
    },
)
def find_bounds(
    session: SessionDep,
    team: CurrentTeamDep,
    workload: Annotated[str, Query(max_length=64)],
    params: Annotated[str | None, Query(max_length=8192, description="JSON object")] = None,
    optimizer: Annotated[str | None, Query(max_length=8192, description="JSON object")] = None,
    batch_size: Annotated[int | None, Query(ge=1)] = None,
    method: Annotated[str | None, Query(max_length=64)] = None,
) -> BoundsRead:
    """The bounds of the team's latest successful range test of this configuration."""
    spec: dict[str, Any] = {"workload": workload}
    for name, text in (("params", params), ("optimizer", optimizer)):
        value = _json_object(name, text)
        if value is not None:
            spec[name] = value
    if batch_size is not None:
        spec["batch_size"] = batch_size
    try:
        bounds = services.find_bounds(session, team=team, spec=spec)
    except JobNotFound as exc:
        raise JobNotFound(f"{exc.detail}: run POST /range-tests first") from None
    return BoundsRead.from_bounds(bounds, method=method)
