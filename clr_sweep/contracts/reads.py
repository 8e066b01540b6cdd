"""Response bodies: jobs of every kind, pages, series, curves, bounds, workloads, health.

A job reads as :class:`JobRead`'s common fields with ``kind`` fixed to its
kind and ``result`` typed as that kind's result document
(:class:`RangeTestRead`, :class:`TrainingRead`, :class:`SweepRead`);
:data:`AnyJobRead` is their union, discriminated on ``kind``: what
``GET /jobs`` and ``GET /jobs/{id}`` answer.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field

from clr_sweep.contracts.results import RangeTestResultView, SweepResult, TrainingOutcome

__all__ = [
    "AnyJobRead",
    "BoundsRead",
    "CurveRead",
    "Health",
    "JobList",
    "JobRead",
    "JobStatus",
    "RangeTestList",
    "RangeTestRead",
    "Readiness",
    "SeriesRead",
    "SuggestionRead",
    "SweepList",
    "SweepRead",
    "TrainingList",
    "TrainingRead",
    "WorkloadList",
    "WorkloadRead",
]


class JobStatus(enum.StrEnum):
    """Where a job is: ``queued → running → succeeded | failed | cancelled``.

    A running job whose worker vanished goes back to ``queued`` (a new attempt).
    """

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """Whether nothing more will happen to a job in this status."""
        return self in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


# --------------------------------------------------------------------------- jobs


class JobRead(BaseModel):
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


class RangeTestRead(JobRead):
    """A range test job: its spec, where it stands and, once finished, its result."""

    kind: Literal["range_test"] = Field(description="The job's kind")
    result: RangeTestResultView | None = None


class TrainingRead(JobRead):
    """A training job: its spec, where it stands and, once finished, its result."""

    kind: Literal["training"] = Field(description="The job's kind")
    result: TrainingOutcome | None = None


class SweepRead(JobRead):
    """A sweep job: its spec, where it stands and, once finished, its result."""

    kind: Literal["sweep"] = Field(description="The job's kind")
    result: SweepResult | None = None


AnyJobRead = Annotated[Union[RangeTestRead, TrainingRead, SweepRead], Field(discriminator="kind")]  # noqa: UP007
"""A job of any kind, discriminated on ``kind``."""


class JobList(BaseModel):
    """One page of jobs, newest first; pass `next_cursor` as `cursor` for the next."""

    model_config = ConfigDict(from_attributes=True)

    items: list[AnyJobRead]
    next_cursor: str | None


class RangeTestList(BaseModel):
    """One page of jobs, newest first; pass `next_cursor` as `cursor` for the next."""

    model_config = ConfigDict(from_attributes=True)

    items: list[RangeTestRead]
    next_cursor: str | None


class TrainingList(BaseModel):
    """One page of jobs, newest first; pass `next_cursor` as `cursor` for the next."""

    model_config = ConfigDict(from_attributes=True)

    items: list[TrainingRead]
    next_cursor: str | None


class SweepList(BaseModel):
    """One page of jobs, newest first; pass `next_cursor` as `cursor` for the next."""

    model_config = ConfigDict(from_attributes=True)

    items: list[SweepRead]
    next_cursor: str | None


# --------------------------------------------------------------------------- series


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
    index: list[int] | None = Field(
        default=None,
        description="With `max_points`: the index of each point kept (the points are then "
        "a thinned selection of those from `start` to `next_after`); null: every point "
        "from `start` on",
    )


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


# --------------------------------------------------------------------------- bounds


class SuggestionRead(BaseModel):
    """One method's bounds with its rationale and evidence."""

    model_config = ConfigDict(from_attributes=True)

    method: str
    base_lr: float
    max_lr: float
    rationale: str
    evidence: dict[str, Any] = Field(default_factory=dict)


class BoundsRead(BaseModel):
    """Every method's suggestion, the selected one (the default unless asked) first."""

    job_id: uuid.UUID
    config_key: str
    finished_at: datetime | None
    method: str
    default_method: str
    base_lr: float
    max_lr: float
    suggestions: list[SuggestionRead]
    confidence: float
    noise: float
    warnings: list[str]
    step_size: int | None
    stop_iteration: int | None
    cycles: int | None
    failed: dict[str, str]


# --------------------------------------------------------------------------- the service


class WorkloadRead(BaseModel):
    """A workload a range test can run, with its parameters as a JSON schema."""

    name: str
    description: str
    task: str
    params: dict[str, Any]


class WorkloadList(BaseModel):
    """Every registered workload, by name."""

    items: list[WorkloadRead]


class Health(BaseModel):
    """The process is alive."""

    status: str


class Readiness(BaseModel):
    """The database is reachable and migrated to ``revision`` (the head)."""

    status: str
    revision: str
