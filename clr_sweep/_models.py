"""The typed layer: API answers parsed into the shared contracts (:mod:`clr_sweep.contracts`).

The only module of the client that knows the response models; everything else
passes decoded JSON through these functions.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AnyJobRead",
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
    "parse_readiness",
    "parse_series",
    "parse_workloads",
]

AnyJobRead = dict[str, Any]
JobList = dict[str, Any]
SeriesRead = dict[str, Any]
BoundsRead = dict[str, Any]
WorkloadList = dict[str, Any]
Health = dict[str, Any]
Readiness = dict[str, Any]


def parse_job(data: Any) -> AnyJobRead:
    return dict(data)


def parse_job_list(data: Any) -> JobList:
    return dict(data)


def parse_series(data: Any) -> SeriesRead:
    return dict(data)


def parse_bounds(data: Any) -> BoundsRead:
    return dict(data)


def parse_workloads(data: Any) -> WorkloadList:
    return dict(data)


def parse_health(data: Any) -> Health:
    return dict(data)


def parse_readiness(data: Any) -> Readiness:
    return dict(data)


def job_list_items(page: JobList) -> list[AnyJobRead]:
    return [parse_job(item) for item in page["items"]]


def job_list_cursor(page: JobList) -> str | None:
    cursor = page.get("next_cursor")
    return None if cursor is None else str(cursor)


def job_state(job: AnyJobRead) -> tuple[Any, ...]:
    """What a progress callback is told about again when it changes."""
    return tuple(job.get(k) for k in ("status", "attempt", "progress", "cancel_requested", "error"))


def job_field(job: AnyJobRead, name: str) -> Any:
    """One field of a parsed job."""
    return job[name]


def advance(job: AnyJobRead, series: SeriesRead) -> AnyJobRead:
    """``job`` with the progress a series event of it reports."""
    points = dict(job.get("series_points") or {})
    points[series["name"]] = series["points"]
    update: dict[str, Any] = {"series_points": points}
    if series["name"] in ("curve", "iterations"):
        update["progress"] = max(int(job["progress"]), int(series["points"]))
    return {**job, **update}
