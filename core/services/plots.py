"""The loss-vs-LR picture of a range test's stored curve.

Loading (:func:`load_range_test_plot`, in the caller's transaction) and drawing
(:func:`render_range_test_plot`, no database) are separate on purpose: drawing
takes a CPU-bound second or so, and a caller should not hold its transaction
(on SQLite, the write lock) open for that long.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from clr import RangeTestResult
from clr.plots import plot_range_test, render
from clr.suggest import Curve, Suggestion, Suggestions
from core.errors import JobConflict, NotReady
from core.models import JobStatus, Team
from core.services.jobs import get_job, read_series
from core.specs import RangeTestOutcome, RangeTestSpec, SuggestionDoc, SuggestionsDoc

__all__ = ["PLOT_VERSION", "RangeTestPlot", "load_range_test_plot", "render_range_test_plot"]

PLOT_VERSION = 1
"""Part of :attr:`RangeTestPlot.version_tag`: raise it when the drawing changes."""

FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


@dataclass(frozen=True)
class RangeTestPlot:
    """What a range test's plot is drawn from, loaded from the database.

    Attributes:
        job_id, status, attempt: the job as it was read.
        points: how many curve points the plot shows.
        final: the job finished, so this plot will not change any more.
        curve: the stored curve, with the run's summary once the job succeeded.
        suggestions: the bounds to draw (succeeded jobs that found some).
        title: the figure's title.
    """

    job_id: uuid.UUID
    status: JobStatus
    attempt: int
    points: int
    final: bool
    curve: RangeTestResult | Curve
    suggestions: Suggestions | None
    title: str

    @property
    def version_tag(self) -> str:
        """Changes whenever the picture would: an opaque validator (an ETag's value)."""
        return f"{self.job_id.hex}-{self.attempt}-{self.points}-{self.status}-v{PLOT_VERSION}"


def _suggestion(doc: SuggestionDoc) -> Suggestion:
    return Suggestion(
        method=doc.method,
        base_lr=doc.base_lr,
        max_lr=doc.max_lr,
        rationale=doc.rationale,
        evidence=dict(doc.evidence),
        step_size=doc.step_size,
        stop_iteration=doc.stop_iteration,
        cycles=doc.cycles,
    )


def _suggestions(doc: SuggestionsDoc) -> Suggestions:
    items = [_suggestion(item) for item in doc.items]
    # the plot tells the default from the others by identity
    default = next((s for s in items if s.method == doc.default_method), None)
    if default is None:
        default = _suggestion(doc.default)
        items.insert(0, default)
    return Suggestions(
        items=items,
        default=default,
        confidence=doc.confidence,
        noise=doc.noise,
        warnings=list(doc.warnings),
        step_size=doc.step_size,
        stop_iteration=doc.stop_iteration,
        cycles=doc.cycles,
        failed=dict(doc.failed),
    )


def load_range_test_plot(session: Session, *, team: Team, job_id: uuid.UUID) -> RangeTestPlot:
    """What the plot of one of the team's jobs shows: its whole curve so far.

    A succeeded range test comes with its summary and suggested bounds; a queued,
    running, failed or cancelled one with the points its current (or last)
    attempt stored.

    Raises:
        JobNotFound: no such job for this team.
        NotReady: the job is queued or running and has no points yet.
        JobConflict: the job finished without storing any point.
    """
    job = get_job(session, team=team, job_id=job_id, kind=RangeTestSpec.kind)
    # the same session hands read_series this Job object: points and job agree
    series = read_series(session, team=team, job_id=job_id, name="curve")
    status = JobStatus(job.status)
    final = status in FINAL_STATUSES
    lrs, losses = series.column("lr") or [], series.column("loss") or []
    smoothed, accuracies = series.column("smoothed_loss") or [], series.column("accuracy")
    if not lrs:
        if final:
            raise JobConflict(f"job {job.id} is {status} and stored no curve points to plot")
        raise NotReady(f"job {job.id} is {status} and has no curve points yet; try again soon")
    outcome = (
        RangeTestOutcome.model_validate(job.result)
        if status == JobStatus.SUCCEEDED and job.result
        else None
    )
    points = len(lrs)
    title = f"LR range test: {job.workload or job.kind}"
    shown: RangeTestResult | Curve
    if outcome is not None:
        shown = RangeTestResult.from_dict(
            {
                **outcome.summary.model_dump(),
                "lrs": lrs,
                "losses": losses,
                "smoothed_losses": smoothed,
                "accuracies": accuracies,
            }
        )
    else:
        shown = Curve(lrs, losses, smoothed=smoothed, accuracies=accuracies)
        title += f" ({status}: {points} of {series.total} steps)"
    return RangeTestPlot(
        job_id=job.id,
        status=status,
        attempt=job.attempt,
        points=points,
        final=final,
        curve=shown,
        suggestions=None
        if outcome is None or outcome.suggestions is None
        else _suggestions(outcome.suggestions),
        title=title,
    )


def render_range_test_plot(plot: RangeTestPlot, *, format: str) -> bytes:
    """The plot drawn as ``"png"`` or ``"svg"`` bytes (:func:`clr.plots.plot_range_test`).

    Raises:
        ValueError: ``format`` is neither png nor svg.
    """
    figure = plot_range_test(plot.curve, plot.suggestions, format=format, title=plot.title)
    return render(figure, format)
