"""Payloads of the Server-Sent Events stream that only it sends.

The stream's ``status`` events carry a :class:`~api.schemas.range_tests.RangeTestRead`
and its ``curve`` events a :class:`~api.schemas.range_tests.CurveRead`.
"""

from __future__ import annotations

from pydantic import BaseModel

from core.models import JobStatus

__all__ = ["StreamEnd"]


class StreamEnd(BaseModel):
    """The ``end`` event's data: the job finished and the stream closes after it."""

    status: JobStatus
    attempt: int
    points: int
    """How many curve points the final attempt stored."""
