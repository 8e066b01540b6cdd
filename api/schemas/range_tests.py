"""Range-test jobs: the job, pages and curves (the body is derived from the kind)."""

from __future__ import annotations

import uuid

from pydantic import BaseModel, ConfigDict

from api.schemas.jobs import job_list_model, job_read_model
from core.kinds import RANGE_TEST
from core.models import JobStatus
from core.services import SeriesSlice

__all__ = [
    "CurveRead",
    "RangeTestList",
    "RangeTestRead",
]

RangeTestRead = job_read_model(RANGE_TEST)
"""A range-test job: its spec, where it stands and, once finished, its summary."""

RangeTestList = job_list_model(RangeTestRead, "RangeTestList")
"""One page of range tests."""


class CurveRead(BaseModel):
    """Curve points of the job's current attempt from index ``start`` on.

    Pass ``next_after`` as ``after`` to read only newer points; a changed ``attempt``
    means the job restarted and its curve with it.
    """

    model_config = ConfigDict(from_attributes=True)

    job_id: uuid.UUID
    attempt: int
    status: JobStatus
    start: int
    next_after: int
    total: int
    lrs: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    accuracies: list[float] | None

    @classmethod
    def from_series(cls, curve: SeriesSlice) -> CurveRead:
        """The ``curve`` series' points under their old column names."""
        return cls(
            job_id=curve.job_id,
            attempt=curve.attempt,
            status=curve.status,
            start=curve.start,
            next_after=curve.next_after,
            total=curve.total,
            lrs=curve.column("lr") or [],
            losses=curve.column("loss") or [],
            smoothed_losses=curve.column("smoothed_loss") or [],
            accuracies=curve.column("accuracy"),
        )
