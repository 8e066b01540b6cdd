"""Jobs of every kind: the read schema (discriminated on ``kind``), pages and series.

The bodies are :mod:`clr_sweep.contracts`' (shared with the client): a kind's
read schema is its :attr:`~core.kinds.JobKind.read`
(:class:`~clr_sweep.contracts.RangeTestRead`, ...). A kind registered without
one gets a schema derived here: the common fields of
:class:`~clr_sweep.contracts.JobRead`, ``kind`` fixed to the kind's name and
``result`` shown as the kind's ``result_view``. :func:`job_read_union` joins
every registered kind's schema into one, discriminated on ``kind``: what
``GET /jobs`` and ``GET /jobs/{id}`` answer (the built-in kinds:
:data:`~clr_sweep.contracts.AnyJobRead`).
"""

from __future__ import annotations

import re
from datetime import datetime
from functools import cache
from typing import Annotated, Any, Literal, Union, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

from clr_sweep.contracts import (
    AnyJobRead,
    JobList,
    JobRead,
    RangeTestList,
    RangeTestRead,
    SeriesRead,
    SweepList,
    SweepRead,
    TrainingList,
    TrainingRead,
)
from core.kinds import JobKind, all_kinds
from core.services import SeriesSlice

__all__ = [
    "IsoDateTime",
    "JobRead",
    "SeriesRead",
    "job_list_model",
    "job_read_model",
    "job_read_union",
    "series_read",
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

_CONTRACT_READS: tuple[type[JobRead], ...] = get_args(get_args(AnyJobRead)[0])
_CONTRACT_LISTS: dict[Any, type[BaseModel]] = {
    RangeTestRead: RangeTestList,
    TrainingRead: TrainingList,
    SweepRead: SweepList,
}


def _class_name(kind: JobKind) -> str:
    return "".join(part.capitalize() for part in kind.name.split("_"))


@cache
def job_read_model(kind: JobKind) -> type[JobRead]:
    """The read schema of one kind's jobs: its ``read``, else one derived from
    :class:`~clr_sweep.contracts.JobRead` (``<Kind>Read``)."""
    if kind.read is not None:
        return kind.read
    result = kind.result_view or kind.result
    kind_type: Any = Literal[kind.name]
    result_type: Any = result | None
    model: type[JobRead] = create_model(
        f"{_class_name(kind)}Read",
        __base__=JobRead,
        __doc__=f"A {kind.title} job: its spec, where it stands and, once finished, its result.",
        kind=(kind_type, Field(description="The job's kind")),
        result=(result_type, None),
    )
    return model


def job_read_union(kinds: tuple[JobKind, ...] | None = None) -> Any:
    """Every kind's read schema, discriminated on ``kind`` (one kind: its schema; the
    built-in kinds: :data:`~clr_sweep.contracts.AnyJobRead`)."""
    models = tuple(job_read_model(k) for k in (kinds if kinds is not None else all_kinds()))
    if len(models) == 1:
        return models[0]
    if set(models) == set(_CONTRACT_READS):
        return AnyJobRead
    return Annotated[Union[models], Field(discriminator="kind")]  # noqa: UP007


@cache
def job_list_model(item: Any, name: str = "JobList") -> type[BaseModel]:
    """A page of jobs (``item``), newest first: the contract's page of a contract
    read (:class:`~clr_sweep.contracts.JobList`, ``RangeTestList``, ...), else one
    derived here."""
    if item is AnyJobRead:
        return JobList
    if item in _CONTRACT_LISTS:
        return _CONTRACT_LISTS[item]
    model: type[BaseModel] = create_model(
        name,
        __doc__="One page of jobs, newest first; pass `next_cursor` as `cursor` for the next.",
        __config__=ConfigDict(from_attributes=True),
        items=(list[item], ...),
        next_cursor=(str | None, ...),
    )
    return model


def series_read(series: SeriesSlice) -> SeriesRead:
    """The points of a :class:`~core.services.SeriesSlice`."""
    return SeriesRead(
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
