"""Range-test jobs: the request body (the spec itself), the job, pages and curves."""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from api.schemas.text import workload_enum
from core.models import JobStatus
from core.specs import RangeTestSpec, RangeTestSummary

__all__ = [
    "CurveRead",
    "IsoDateTime",
    "JobList",
    "RangeTestCreate",
    "RangeTestRead",
    "RangeTestResultRead",
]

_ISO_DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}")


def _iso_date_time_text(value: Any) -> Any:
    # pydantic reads a number (or a numeric string: every query value is a string)
    # as Unix seconds and a bare date as midnight; the document promises a date-time.
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _ISO_DATE_TIME.match(value):
        raise ValueError("must be an ISO 8601 date-time, such as 2026-11-23T12:00:00Z")
    return value


IsoDateTime = Annotated[datetime, BeforeValidator(_iso_date_time_text)]
"""A date-time given as ISO 8601 text (a zone-less one is UTC); no Unix seconds."""


def _create_schema(schema: dict[str, Any]) -> None:
    schema["examples"] = [
        {
            "workload": "digits_mlp",
            "params": {"width": 64},
            "optimizer": {"name": "sgd", "momentum": 0.9},
            "start_lr": 1e-5,
            "end_lr": 10,
            "num_iter": 300,
        }
    ]
    workload_enum(schema["properties"]["workload"])


class RangeTestCreate(RangeTestSpec):
    """The body of ``POST /range-tests``: a range-test spec; omitted fields take defaults."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_create_schema)


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
    queue_position: int | None = Field(
        default=None,
        description="While queued: 1 + the queued jobs of its queue ahead of it "
        "(given when one job is read, not in lists)",
    )
    waiting_reason: str | None = Field(
        default=None,
        description="While queued: why it waits, e.g. 'no running worker takes jobs.cuda; "
        "2 CPU workers are online' (given when one job is read, not in lists)",
    )


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
