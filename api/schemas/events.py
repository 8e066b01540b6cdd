"""Payloads of the Server-Sent Events stream that only it sends.

The stream's ``status`` events carry the job's read schema
(:mod:`api.schemas.jobs`) and its series events a
:class:`~api.schemas.jobs.SeriesRead`.
"""

from __future__ import annotations

from pydantic import BaseModel

from core.models import JobStatus

__all__ = ["StreamEnd"]


class StreamEnd(BaseModel):
    """The ``end`` event's data: the job finished and the stream closes after it."""

    status: JobStatus
    attempt: int
    progress: int
    """The job's final progress (out of its ``total``)."""
    series_points: dict[str, int]
    """How many points each series has."""
