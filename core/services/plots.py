"""The pictures of stored jobs: a range test's loss against LR, a training's run, a
sweep's comparison of its policies.

Loading (:func:`load_range_test_plot`, :func:`load_training_plot`,
:func:`load_sweep_plot`, in the caller's transaction) and drawing
(:func:`render_range_test_plot`, :func:`render_training_plot`,
:func:`render_sweep_plot`, no database) are separate on purpose: drawing
takes a CPU-bound second or so, and a caller should not hold its transaction
(on SQLite, the write lock) open for that long.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.orm import Session

from clr import RangeTestResult
from clr.plots import plot_range_test, plot_sweep, plot_training, render
from clr.suggest import Curve, Suggestion, Suggestions
from core.client_specs import ClientTrainingSpec, is_client_spec
from core.errors import JobConflict, NotReady
from core.models import Job, JobStatus, Team
from core.services.jobs import get_job, parse_job_spec, read_series
from core.specs import RangeTestOutcome, RangeTestSpec, SuggestionDoc, SuggestionsDoc
from core.sweeps import SWEEP, SweepResult, sweep_plot_panels
from core.training import TrainingOutcome, TrainingSpec

__all__ = [
    "PLOT_VERSION",
    "Plot",
    "RangeTestPlot",
    "SweepPlot",
    "TrainingPlot",
    "load_range_test_plot",
    "load_sweep_plot",
    "load_training_plot",
    "render_range_test_plot",
    "render_sweep_plot",
    "render_training_plot",
]

PLOT_VERSION = 1
"""Part of :attr:`RangeTestPlot.version_tag`: raise it when the drawing changes."""

FINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class Plot(Protocol):
    """What a route serving a stored job's plot needs before it is drawn."""

    @property
    def final(self) -> bool:
        """The job finished: the plot will not change any more (cacheable)."""
        ...

    @property
    def version_tag(self) -> str:
        """Changes whenever the picture would: an opaque validator (an ETag's value)."""
        ...


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
    title = f"LR range test: {_subject(job)}"
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
    bounds = None if outcome is None else outcome.bounds()
    return RangeTestPlot(
        job_id=job.id,
        status=status,
        attempt=job.attempt,
        points=points,
        final=final,
        curve=shown,
        suggestions=None if bounds is None else _suggestions(bounds),
        title=title,
    )


def _subject(job: Job) -> str:
    """What a job trains, for a title: its workload, or a client job's model and dataset."""
    spec = job.spec or {}
    if is_client_spec(spec):
        return f"{spec.get('model')} on {spec.get('dataset')} (client)"
    return job.workload or job.kind


def _policy(spec: TrainingSpec | ClientTrainingSpec) -> str:
    schedule = spec.schedule
    return "own schedule" if schedule is None else schedule.policy


def render_range_test_plot(plot: RangeTestPlot, *, format: str) -> bytes:
    """The plot drawn as ``"png"`` or ``"svg"`` bytes (:func:`clr.plots.plot_range_test`).

    Raises:
        ValueError: ``format`` is neither png nor svg.
    """
    figure = plot_range_test(plot.curve, plot.suggestions, format=format, title=plot.title)
    return render(figure, format)


@dataclass(frozen=True)
class TrainingPlot:
    """What a training's plot is drawn from, loaded from the database.

    Attributes:
        job_id, status, attempt: the job as it was read.
        points: iterations the plot shows.
        epochs: epochs the plot shows.
        final: the job finished, so this plot will not change any more.
        history: ``lrs``, ``momenta``, ``losses`` and the ``epochs`` columns, as
            :func:`clr.plots.plot_training` takes them.
        cycle_ends: where the spec's cycles end (those still to come included).
        checkpoints: the iteration of the job's last checkpoint, if it has one.
        resumed_at: where the current (or last) attempt resumed, when known.
        total: the run's length in iterations.
        title, subtitle: what the figure says above the panels.
    """

    job_id: uuid.UUID
    status: JobStatus
    attempt: int
    points: int
    epochs: int
    final: bool
    history: dict[str, Any]
    cycle_ends: list[int]
    checkpoints: list[int]
    resumed_at: list[int]
    total: int
    title: str
    subtitle: str

    @property
    def version_tag(self) -> str:
        """Changes whenever the picture would: an opaque validator (an ETag's value)."""
        marks = ".".join(map(str, self.checkpoints)) + "r" + ".".join(map(str, self.resumed_at))
        return (
            f"training-{self.job_id.hex}-{self.attempt}-{self.points}-{self.epochs}"
            f"-{marks}-{self.status}-v{PLOT_VERSION}"
        )


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _training_subtitle(
    status: JobStatus, outcome: TrainingOutcome | None, points: int, total: int, epochs: int
) -> str:
    if outcome is None:
        return f"{status}: {points} of {total} iterations, {epochs} epochs"
    line = (
        f"{outcome.stop_reason}: {outcome.iterations} iterations, {outcome.cycles} cycles; "
        f"val accuracy {_fmt(outcome.final_val_accuracy)} (best {_fmt(outcome.best_val_accuracy)})"
    )
    if outcome.ensemble_size:
        line += f", {outcome.ensemble_size}-snapshot ensemble {_fmt(outcome.ensemble_val_accuracy)}"
    return line


def load_training_plot(session: Session, *, team: Team, job_id: uuid.UUID) -> TrainingPlot:
    """What the plot of one of the team's trainings shows: its run so far.

    The ``iterations`` series (LR, momentum, loss) and the ``epochs`` series
    (train and validation loss and accuracy) as stored, the spec's cycle ends,
    the last checkpoint and, once known, where the last attempt resumed; a
    succeeded training says how it ended under the title.

    Raises:
        JobNotFound: no such training for this team (another kind's id too).
        NotReady: the training is queued or running and has no iterations yet.
        JobConflict: the training finished without storing any iteration.
    """
    job = get_job(session, team=team, job_id=job_id, kind=TrainingSpec.kind)
    # the same session hands read_series this Job object: points and job agree
    iterations = read_series(session, team=team, job_id=job_id, name="iterations")
    epochs = read_series(session, team=team, job_id=job_id, name="epochs")
    status = JobStatus(job.status)
    final = status in FINAL_STATUSES
    lrs, losses = iterations.column("lr") or [], iterations.column("loss") or []
    if not lrs:
        if final:
            raise JobConflict(f"training {job.id} is {status} and stored no iterations to plot")
        raise NotReady(f"training {job.id} is {status} and has no iterations yet; try again soon")
    spec = parse_job_spec(job.kind, job.spec, stored=True)
    assert isinstance(spec, TrainingSpec | ClientTrainingSpec)
    outcome = (
        TrainingOutcome.model_validate(job.result)
        if status == JobStatus.SUCCEEDED and job.result
        else None
    )
    checkpoint = job.checkpoint or {}
    saved = [int(checkpoint["progress"])] if "progress" in checkpoint else []
    resumed: list[int] = []
    if outcome is not None and outcome.resumed_from is not None:
        resumed = [outcome.resumed_from]
    elif saved and int(checkpoint.get("attempt", job.attempt)) < job.attempt:
        resumed = saved  # no checkpoint of its own yet: it resumed from this one
    history = {
        "lrs": lrs,
        "losses": losses,
        "momenta": iterations.column("momentum"),
        "epochs": epochs.values if epochs.size else None,
    }
    return TrainingPlot(
        job_id=job.id,
        status=status,
        attempt=job.attempt,
        points=len(lrs),
        epochs=epochs.size,
        final=final,
        history=history,
        cycle_ends=spec.cycle_ends(),
        checkpoints=saved,
        resumed_at=resumed,
        total=job.total,
        title=f"CLR training: {_subject(job)} ({_policy(spec)})",
        subtitle=_training_subtitle(status, outcome, len(lrs), job.total, epochs.size),
    )


def render_training_plot(plot: TrainingPlot, *, format: str) -> bytes:
    """The plot drawn as ``"png"`` or ``"svg"`` bytes (:func:`clr.plots.plot_training`).

    Raises:
        ValueError: ``format`` is neither png nor svg.
    """
    figure = plot_training(
        plot.history,
        cycle_ends=plot.cycle_ends,
        checkpoints=plot.checkpoints,
        resumed_at=plot.resumed_at,
        total=plot.total,
        format=format,
        title=plot.title,
        subtitle=plot.subtitle,
    )
    return render(figure, format)


@dataclass(frozen=True)
class SweepPlot:
    """What a sweep's plot is drawn from: its stored (partial or complete) result.

    Attributes:
        job_id, status: the sweep as it was read.
        final: the sweep finished, so this plot will not change any more.
        result: its result, with the curves of every policy that has any so far.
        updated: when the sweep's result last changed (its advance step rewrites
            it as children finish).
        title: the figure's title.
    """

    job_id: uuid.UUID
    status: JobStatus
    final: bool
    result: SweepResult
    updated: str
    title: str

    @property
    def version_tag(self) -> str:
        """Changes whenever the picture would: an opaque validator (an ETag's value)."""
        return f"sweep-{self.job_id.hex}-{self.updated}-{self.status}-v{PLOT_VERSION}"


def load_sweep_plot(session: Session, *, team: Team, job_id: uuid.UUID) -> SweepPlot:
    """What the plot of one of the team's sweeps shows: validation accuracy against
    iteration per policy (mean over seeds with a one-std band), one panel per
    grid point, from the result its children have filled in so far.

    Raises:
        JobNotFound: no such sweep for this team (another kind's id too).
        NotReady: the sweep is running and no training has a validation accuracy yet.
        JobConflict: the sweep finished without any.
    """
    job = get_job(session, team=team, job_id=job_id, kind=SWEEP.name)
    status = JobStatus(job.status)
    final = status in FINAL_STATUSES
    result = None if job.result is None else SweepResult.model_validate(job.result)
    if result is None or not sweep_plot_panels(result):
        if final:
            raise JobConflict(f"sweep {job.id} is {status} and has no validation accuracy to plot")
        raise NotReady(
            f"sweep {job.id} is {status} and none of its trainings has a validation accuracy "
            "yet; try again soon"
        )
    title = f"Sweep: {job.workload or job.kind}"
    if not final:
        title += f" ({status}: {job.progress} of {job.total} jobs finished)"
    return SweepPlot(
        job_id=job.id,
        status=status,
        final=final,
        result=result,
        updated=job.updated_at.isoformat(),
        title=title,
    )


def render_sweep_plot(plot: SweepPlot, *, format: str) -> bytes:
    """The plot drawn as ``"png"`` or ``"svg"`` bytes (:func:`clr.plots.plot_sweep`).

    Raises:
        ValueError: ``format`` is neither png nor svg.
    """
    figure = plot_sweep(sweep_plot_panels(plot.result), format=format, title=plot.title)
    return render(figure, format)
