"""Jobs of every kind: the read schema (discriminated on ``kind``), pages and series.

A kind's read schema is derived from its :class:`~core.kinds.JobKind`: the
common fields of :class:`JobReadBase`, ``kind`` fixed to the kind's name and
``result`` shown as the kind's ``result_view``. :func:`job_read_union` joins
every registered kind's schema into one, discriminated on ``kind``: what
``GET /jobs`` and ``GET /jobs/{id}`` answer.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from core.kinds import JobKind, all_kinds
from core.models import JobStatus
from core.services import SeriesSlice

__all__ = [
    "IsoDateTime",
    "JobReadBase",
    "SeriesRead",
    "job_list_model",
    "job_read_model",
    "job_read_union",
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


class JobReadBase(BaseModel):
    """A job of any kind: its spec, where it stands and, once finished, its result."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    kind: str
    parent_id: uuid.UUID | None = Field(
        default=None, description="The job that created this one (a sweep's trainings)"
    )
    role: dict[str, Any] | None = Field(
        default=None,
        description='What the job is to its parent, e.g. `{"grid": 0, "policy": '
        '"triangular", "seed": 1}` (null for a job without a parent)',
    )
    status: JobStatus
    waiting: bool = Field(
        default=False,
        description="Running, with no worker holding it: it waits on its children (a sweep; "
        "a range test verifying its bounds); `GET /jobs?parent={id}` lists them",
    )
    spec: dict[str, Any]
    attempt: int
    max_attempts: int
    cancel_requested: bool
    progress: int = Field(
        description="Units of work done out of `total` (steps of a range test, iterations "
        "of a training); a resumed attempt starts from its checkpoint's"
    )
    total: int
    series_points: dict[str, int] = Field(
        default_factory=dict,
        description="Points stored per series (`GET /jobs/{id}/series/{name}`)",
    )
    worker: str | None
    device: str | None
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
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


def _class_name(kind: JobKind) -> str:
    return "".join(part.capitalize() for part in kind.name.split("_"))


@cache
def job_read_model(kind: JobKind) -> type[JobReadBase]:
    """The read schema of one kind's jobs (``RangeTestRead``)."""
    result = kind.result_view or kind.result
    kind_type: Any = Literal[kind.name]
    result_type: Any = result | None
    model: type[JobReadBase] = create_model(
        f"{_class_name(kind)}Read",
        __base__=JobReadBase,
        __doc__=f"A {kind.title} job: its spec, where it stands and, once finished, its result.",
        kind=(kind_type, Field(description="The job's kind")),
        result=(result_type, None),
    )
    return model


def job_read_union(kinds: tuple[JobKind, ...] | None = None) -> Any:
    """Every kind's read schema, discriminated on ``kind`` (one kind: its schema)."""
    models = tuple(job_read_model(k) for k in (kinds if kinds is not None else all_kinds()))
    if len(models) == 1:
        return models[0]
    return Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007


@cache
def job_list_model(item: Any, name: str = "JobList") -> type[BaseModel]:
    """A page of jobs (``item``), newest first."""
    model: type[BaseModel] = create_model(
        name,
        __doc__="One page of jobs, newest first; pass `next_cursor` as `cursor` for the next.",
        __config__=ConfigDict(from_attributes=True),
        items=(list[item], ...),
        next_cursor=(str | None, ...),
    )
    return model


class SeriesRead(BaseModel):
    """Points of one of a job's series from index ``start`` on.

    ``values`` holds each field's values (``null``: the points have no such
    value). Pass ``next_after`` as ``after`` to read only newer points. When
    ``attempt`` changes between reads the job started another attempt: points
    from ``start`` of the next read on replace what you had (a range test starts
    over at 0, a resumed training at its last checkpoint).
    """

    model_config = ConfigDict(from_attributes=True)

    job_id: uuid.UUID
    attempt: int
    status: JobStatus
    name: str
    fields: list[str]
    start: int
    next_after: int
    points: int = Field(description="Points the series has now")
    total: int = Field(description="The job's `total` (units of work when it is done)")
    values: dict[str, list[float] | None]

    @classmethod
    def from_slice(cls, series: SeriesSlice) -> SeriesRead:
        """The points of a :class:`~core.services.SeriesSlice`."""
        return cls(
            job_id=series.job_id,
            attempt=series.attempt,
            status=series.status,
            name=series.name,
            fields=list(series.fields),
            start=series.start,
            next_after=series.next_after,
            points=series.points,
            total=series.total,
            values=series.values,
        )
