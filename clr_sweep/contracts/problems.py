"""The error body: every 4xx and 503 is ``application/problem+json`` (RFC 9457)."""

from __future__ import annotations

from pydantic import BaseModel

__all__ = ["FieldErrorDoc", "Problem"]


class FieldErrorDoc(BaseModel):
    """One rejected input and why."""

    field: str
    reason: str


class Problem(BaseModel):
    """An RFC 9457 problem document (the body of every 4xx and 503)."""

    type: str
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldErrorDoc] = []
