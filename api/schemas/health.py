"""Liveness and readiness bodies."""

from __future__ import annotations

from pydantic import BaseModel

__all__ = ["Health", "Readiness"]


class Health(BaseModel):
    """The process is alive."""

    status: str


class Readiness(BaseModel):
    """The database is reachable and migrated to ``revision`` (the head)."""

    status: str
    revision: str
