"""Range-test jobs: the request body (the spec itself), the job, pages and curves."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from sweep.models import JobStatus
from sweep.specs import RangeTestSpec, RangeTestSummary

__all__ = ["CurveRead", "JobList", "RangeTestCreate", "RangeTestRead", "RangeTestResultRead"]


class RangeTestCreate(RangeTestSpec):
    """The body of ``POST /range-tests``: a range-test spec; omitted fields take defaults."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "workload": "digits_mlp",
                    "params": {"width": 64},
                    "optimizer": {"name": "sgd", "momentum": 0.9},
                    "start_lr": 1e-5,
                    "end_lr": 10,
                    "num_iter": 300,
                }
            ]
        },
    )


class RangeTestResultRead(BaseModel):
    """How a finished range test went; the bounds are at ``/range-tests/{id}/bounds``."""

    model_config = ConfigDict(from_attributes=True)

    summary: RangeTestSummary
    no_bounds_reason: str | None = None


class RangeTestRead(BaseModel):
    """A range-test job: its spec, where it stands and, once finished, its summary."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    status: JobStatus
    spec: dict[str, Any]
    attempt: int
    max_attempts: int
    cancel_requested: bool
    progress: int
    total: int
    worker: str | None
    device: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    result: RangeTestResultRead | None


class JobList(BaseModel):
    """One page of jobs, newest first; pass ``next_cursor`` as ``cursor`` for the next."""

    model_config = ConfigDict(from_attributes=True)

    items: list[RangeTestRead]
    next_cursor: str | None


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
