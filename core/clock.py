"""Time in one place: every timestamp the domain writes is an aware UTC datetime."""

from __future__ import annotations

from datetime import UTC, datetime

__all__ = ["as_utc", "utc_now"]


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def as_utc(value: datetime, *, name: str = "now") -> datetime:
    """``value`` converted to UTC; a naive datetime is refused, never guessed.

    Raises:
        ValueError: if ``value`` has no time zone.
    """
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got naive {value.isoformat()}")
    return value.astimezone(UTC)
