"""What a finished range-test curve gives: its summary and every method's bounds.

One builder for both ways a curve reaches the service: a worker's own
:class:`clr.RangeTest` run (:mod:`worker.kinds.range_test`) and a curve a team
uploaded from its own loop (:func:`core.services.client_jobs.finish_client_job`),
so the two are suggested, summarised and shown alike. It needs no torch:
:mod:`clr.suggest` works on numpy arrays, and the API process calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from core.specs import RangeTestOutcome

if TYPE_CHECKING:
    from clr import RangeTestResult, Suggestions

__all__ = ["Assessment", "assess_range_test"]


@dataclass(frozen=True)
class Assessment:
    """A finished curve's outcome, and the ``clr`` suggestions it holds (None: no bounds)."""

    outcome: RangeTestOutcome
    suggestions: Suggestions | None


def assess_range_test(
    result: RangeTestResult, *, iters_per_epoch: int | None, metric: str
) -> Assessment:
    """Every method's bounds for ``result`` (:func:`clr.suggest_all`) and its summary.

    Args:
        result: the measured curve and how the sweep ran.
        iters_per_epoch: the training's epoch length in batches, which gives the
            suggested ``step_size`` and stop iteration (None: not suggested).
        metric: ``loss`` or ``accuracy``: what the bounds read.

    A curve that gives no bounds (too short, flat, monotone) yields an outcome
    with ``no_bounds_reason`` instead.
    """
    from clr import SuggestionError, suggest_all

    suggestions = None
    no_bounds_reason = None
    try:
        suggestions = suggest_all(
            result, iters_per_epoch=iters_per_epoch, use_accuracy=metric == "accuracy"
        )
    except SuggestionError as exc:
        no_bounds_reason = str(exc)
    outcome = RangeTestOutcome.from_clr(result, suggestions, no_bounds_reason=no_bounds_reason)
    return Assessment(outcome=outcome, suggestions=suggestions)
