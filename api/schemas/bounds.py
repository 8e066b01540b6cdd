"""Suggested CLR bounds of a finished range test (:mod:`clr_sweep.contracts`' bodies)."""

from __future__ import annotations

from clr_sweep.contracts import BoundsRead, SuggestionRead
from core.errors import InvalidInput
from core.services import Bounds

__all__ = ["BoundsRead", "SuggestionRead", "bounds_read"]


def bounds_read(bounds: Bounds, *, method: str | None = None) -> BoundsRead:
    """``bounds``' suggestions with ``method`` (default: the default one) first.

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
    return BoundsRead(
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
