"""Bodies of the uploads of a job the team runs in its own loop (``"source": "client"``):
``POST /jobs/{id}/series/{name}`` (:class:`SeriesUpload`, answered with
:class:`SeriesUploadRead`) and ``POST /jobs/{id}/finish`` (:class:`JobFinish`)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from clr_sweep.contracts.reads import JobStatus

__all__ = ["MAX_POINTS_PER_UPLOAD", "JobFinish", "SeriesUpload", "SeriesUploadRead"]

MAX_POINT_INDEX = 2**31 - 1
"""The largest point index (the database's integer columns)."""

MAX_POINTS_PER_UPLOAD = 100_000
"""Most points one upload may carry (the service's cap of one report)."""

Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A finite JSON number (``true`` or ``"1"`` is not one)."""


class SeriesUpload(BaseModel):
    """Points ``start`` on of one series of a client job: ``values`` maps each of the
    series' fields to its values (all the same length; an optional field may be
    null or left out; a range test's ``smoothed_loss`` left out is computed by the
    service: the range test's debiased moving average, continued from the stored points).
    A body is at most 64 KiB: send long runs in several uploads (the Python client's
    uploaders do)."""

    model_config = ConfigDict(extra="forbid")

    start: int = Field(ge=0, le=MAX_POINT_INDEX, description="Index of the first point")
    values: dict[
        Annotated[str, Field(max_length=64)],
        Annotated[list[Number], Field(max_length=MAX_POINTS_PER_UPLOAD)] | None,
    ] = Field(max_length=16, description='`{"lr": [...], "loss": [...], ...}`')


class SeriesUploadRead(BaseModel):
    """What an upload did: ``stored`` new points (0: all were stored already), and
    ``points`` the series has now: the next upload's ``start``."""

    job_id: uuid.UUID
    name: str
    start: int
    stored: int
    points: int
    duplicate: bool
    status: JobStatus
    progress: int
    total: int


class JobFinish(BaseModel):
    """How a client job ended.

    ``succeeded``: the service builds the result from the uploaded series (a range
    test's every method's bounds, a training's final and best metrics);
    ``stop_reason``, ``stop_detail``, ``seconds`` and ``device`` say how the run
    went (defaults: ``completed`` when every planned step was uploaded, the time
    since the job was created, ``client``). ``failed``: ``error`` says why (the
    points stay readable). ``cancelled``: the client gave up.
    """

    model_config = ConfigDict(extra="forbid")

    status: Literal["succeeded", "failed", "cancelled"]
    error: str | None = Field(default=None, max_length=10_000)
    stop_reason: Literal["completed", "diverged", "non_finite", "cancelled", "stopped"] | None = (
        None
    )
    stop_detail: str | None = Field(default=None, max_length=2000)
    seconds: Number | None = Field(default=None, ge=0, le=10**9)
    device: str | None = Field(default=None, min_length=1, max_length=64)
