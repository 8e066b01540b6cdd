"""The typed layer: API answers parsed into the shared contracts (:mod:`clr_sweep.contracts`).

The only module of the client that knows the response models; everything else
passes decoded JSON through these functions. A job of a kind this client does
not know (a plugin's) reads as a plain :class:`~clr_sweep.contracts.JobRead`.
An answer that does not fit its model is a :class:`~clr_sweep.errors.ProtocolError`.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from pydantic import BaseModel, TypeAdapter, ValidationError

from clr_sweep.contracts import (
    AnyJobRead,
    BoundsRead,
    Health,
    JobList,
    JobRead,
    RangeTestRead,
    Readiness,
    SeriesRead,
    SweepRead,
    TrainingRead,
    WorkloadList,
)
from clr_sweep.errors import ProtocolError

__all__ = [
    "AnyJobRead",
    "RangeTestRead",
    "SweepRead",
    "TrainingRead",
    "BoundsRead",
    "Health",
    "JobList",
    "Readiness",
    "SeriesRead",
    "WorkloadList",
    "advance",
    "job_field",
    "job_list_cursor",
    "job_list_items",
    "job_state",
    "parse_bounds",
    "parse_health",
    "parse_job",
    "parse_job_list",
    "parse_range_test",
    "parse_sweep",
    "parse_training",
    "parse_readiness",
    "parse_series",
    "parse_workloads",
]

M = TypeVar("M", bound=BaseModel)

_ANY_JOB: TypeAdapter[AnyJobRead] = TypeAdapter(AnyJobRead)
_KNOWN_KINDS = frozenset({"range_test", "training", "sweep"})
PROGRESS_SERIES = frozenset({"curve", "iterations"})
"""The series whose point count is the job's ``progress`` (steps, iterations)."""


def _invalid(what: str, exc: ValidationError) -> ProtocolError:
    errors = exc.errors()
    reason = (
        f"{'.'.join(str(p) for p in errors[0]['loc'])}: {errors[0]['msg']}" if errors else str(exc)
    )
    return ProtocolError(
        f"the service's {what} does not fit this client's model ({reason}); "
        "is the client older than the service?"
    )


def _parse(model: type[M], data: Any, what: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _invalid(what, exc) from exc


def parse_job(data: Any) -> AnyJobRead:
    """A job of any kind, as its kind's read model."""
    if isinstance(data, dict) and data.get("kind") not in _KNOWN_KINDS:
        return cast(AnyJobRead, _parse(JobRead, data, "job"))
    try:
        return _ANY_JOB.validate_python(data)
    except ValidationError as exc:
        raise _invalid("job", exc) from exc


def parse_range_test(data: Any) -> RangeTestRead:
    return _parse(RangeTestRead, data, "range test")


def parse_training(data: Any) -> TrainingRead:
    return _parse(TrainingRead, data, "training")


def parse_sweep(data: Any) -> SweepRead:
    return _parse(SweepRead, data, "sweep")


def parse_job_list(data: Any) -> JobList:
    items = data.get("items") if isinstance(data, dict) else None
    if not isinstance(items, list):
        return _parse(JobList, data, "job list")
    # item by item: a page may hold a kind this client does not know
    return JobList.model_construct(
        items=[parse_job(item) for item in items], next_cursor=data.get("next_cursor")
    )


def parse_series(data: Any) -> SeriesRead:
    return _parse(SeriesRead, data, "series")


def parse_bounds(data: Any) -> BoundsRead:
    return _parse(BoundsRead, data, "bounds")


def parse_workloads(data: Any) -> WorkloadList:
    return _parse(WorkloadList, data, "workload list")


def parse_health(data: Any) -> Health:
    return _parse(Health, data, "health")


def parse_readiness(data: Any) -> Readiness:
    return _parse(Readiness, data, "readiness")


def job_list_items(page: JobList) -> list[AnyJobRead]:
    return list(page.items)


def job_list_cursor(page: JobList) -> str | None:
    return page.next_cursor


def job_state(job: AnyJobRead) -> tuple[Any, ...]:
    """What a progress callback is told about again when it changes."""
    return (job.status, job.attempt, job.progress, job.cancel_requested, job.error)


def job_field(job: AnyJobRead, name: str) -> Any:
    """One field of a parsed job."""
    return getattr(job, name)


def advance(job: AnyJobRead, series: SeriesRead) -> AnyJobRead:
    """``job`` with the progress a series event of it reports."""
    points = {**job.series_points, series.name: series.points}
    update: dict[str, Any] = {"series_points": points}
    if series.name in PROGRESS_SERIES:
        update["progress"] = max(job.progress, series.points)
    return job.model_copy(update=update)
