"""Range-test jobs: the job, pages and curves (:mod:`clr_sweep.contracts`' bodies)."""

from __future__ import annotations

from clr_sweep.contracts import CurveRead, RangeTestList, RangeTestRead
from core.services import SeriesSlice

__all__ = ["CurveRead", "RangeTestList", "RangeTestRead", "curve_read"]


def curve_read(curve: SeriesSlice) -> CurveRead:
    """The ``curve`` series' points under their old column names."""
    return CurveRead(
        job_id=curve.job_id,
        attempt=curve.attempt,
        status=curve.status,
        start=curve.start,
        next_after=curve.next_after,
        total=curve.total,
        lrs=curve.column("lr") or [],
        losses=curve.column("loss") or [],
        smoothed_losses=curve.column("smoothed_loss") or [],
        accuracies=curve.column("accuracy"),
    )
