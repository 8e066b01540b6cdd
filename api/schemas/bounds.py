"""Suggested CLR bounds of a finished range test."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from core.errors import InvalidInput
from core.services import Bounds

__all__ = ["BoundsRead", "SuggestionRead"]


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

    @classmethod
    def from_bounds(cls, bounds: Bounds, *, method: str | None = None) -> BoundsRead:
        """Order ``bounds``' suggestions with ``method`` (default: the default one) first.

        Raises:
            InvalidInput: ``method`` is not among this curve's suggestions.
        """
        doc = bounds.suggestions
        by_method = {item.method: item for item in doc.items}
        by_method.setdefault(doc.default.method, doc.default)
        chosen = doc.default_method if method is None else method
        if chosen not in by_method:
            known = ", ".join(sorted(by_method))
            reason = f"unknown method {method!r}; this curve has: {known}"
            raise InvalidInput(f"method {reason}", errors=[{"field": "method", "reason": reason}])
        first = by_method[chosen]
        ordered = [first] + [item for name, item in by_method.items() if name != chosen]
        return cls(
            job_id=bounds.job_id,
            config_key=bounds.config_key,
            finished_at=bounds.finished_at,
            method=chosen,
            default_method=doc.default_method,
            base_lr=first.base_lr,
            max_lr=first.max_lr,
            suggestions=[SuggestionRead.model_validate(item) for item in ordered],
            confidence=doc.confidence,
            noise=doc.noise,
            warnings=doc.warnings,
            step_size=doc.step_size,
            stop_iteration=doc.stop_iteration,
            cycles=doc.cycles,
            failed=doc.failed,
        )
