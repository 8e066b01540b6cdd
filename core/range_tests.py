"""What a finished range-test curve gives: its summary and every method's bounds.

One builder for both ways a curve reaches the service: a worker's own
:class:`clr.RangeTest` run (:mod:`worker.kinds.range_test`) and a curve a team
uploaded from its own loop (:func:`core.services.client_jobs.finish_client_job`),
so the two are suggested, summarised and shown alike. A range test under several
seeds is assessed by :func:`assess_seeded_range_test`: the first seed's curve
read with every seed's bounds, and the band across seeds (:class:`clr.SeedBand`).
It needs no torch: :mod:`clr.suggest` works on numpy arrays, and the API process
calls it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from core.specs import RangeTestOutcome, SeedBandDoc, SeedSpreadDoc, SuggestionDoc

if TYPE_CHECKING:
    from clr import RangeTestResult, Suggestions
    from clr.seed_band import SeedBand

__all__ = ["Assessment", "SeededRun", "assess_range_test", "assess_seeded_range_test"]


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


@dataclass(frozen=True)
class SeededRun:
    """How the seeds of a range test ran (what :class:`~core.specs.SeedBandDoc` records).

    Attributes:
        seeds: the seeds, in the results' order (the first one's curve is stored).
        fused: they ran as one :class:`clr.FusedRangeTest` run.
        path: the fused run's path (``stacked`` or ``vmap``), None when not fused.
        reason: one sentence: how they ran, or why not fused.
    """

    seeds: Sequence[int]
    fused: bool
    path: Literal["stacked", "vmap"] | None
    reason: str


@dataclass(frozen=True)
class SeededAssessment(Assessment):
    """:class:`Assessment` of a range test under several seeds, with its band (None
    when no seed's curve has a point)."""

    band: SeedBand | None = None


def assess_seeded_range_test(
    results: Sequence[RangeTestResult],
    run: SeededRun,
    *,
    iters_per_epoch: int | None,
    metric: str,
) -> SeededAssessment:
    """A range test under K seeds: the first seed's curve's bounds, the band across seeds.

    The suggestions are :func:`clr.suggest_all` of ``results[0]`` (the stored
    curve) with ``seed_max_lrs`` every seed's default ``max_lr`` (each seed's
    curve read alone), so their confidence rises when the seeds agree within 2x
    and falls, with a warning, beyond. The outcome's ``seed_band`` holds
    :meth:`clr.SeedBand.suggest`'s bounds across seeds and how the seeds ran.

    Args:
        results: one result per seed, in ``run.seeds``' order.
        run: how they ran.
        iters_per_epoch: as :func:`assess_range_test`.
        metric: as :func:`assess_range_test`.

    Returns:
        The outcome (with ``seed_band``), the suggestions and the band.

    Raises:
        ValueError: ``results`` and ``run.seeds`` differ in length.
    """
    from clr import SeedBand, SuggestionError, suggest_all

    if len(results) != len(run.seeds):
        raise ValueError(f"got {len(results)} results for {len(run.seeds)} seeds")
    seeds = [int(s) for s in run.seeds]
    use_accuracy = metric == "accuracy"
    with_points = [k for k, r in enumerate(results) if r.steps_run > 0]
    band = (
        SeedBand.from_results(
            [results[k] for k in with_points], seeds=[seeds[k] for k in with_points]
        )
        if with_points
        else None
    )
    doc: dict[str, object] = {
        "seeds": seeds,
        "fused": run.fused,
        "path": run.path,
        "reason": run.reason,
        "steps_run": [r.steps_run for r in results],
        "stop_reasons": [r.stop_reason for r in results],
        "end_lr": None if band is None else band.end_lr,
    }
    kept = [seeds[k] for k in with_points]
    failed = {str(s): "its sweep recorded no point" for s in seeds if s not in kept}
    seed_max_lrs: list[float] | None = None
    if band is None:
        doc["no_bounds_reason"] = "no seed's sweep recorded a point"
    else:
        try:
            across = band.suggest(iters_per_epoch=iters_per_epoch, use_accuracy=use_accuracy)
        except SuggestionError as exc:
            doc["no_bounds_reason"] = f"no seed's curve gave bounds (the first: {exc})"
            failed.update(
                {
                    str(s): _why_no_bounds(results[k], metric)
                    for s, k in zip(kept, with_points, strict=True)
                }
            )
        else:
            seed_max_lrs = [float(v) for v in across.default.evidence["max_lrs"]]
            failed.update({str(kept[k]): why for k, why in across.failed.items()})
            doc |= {
                "default": SuggestionDoc.model_validate(across.default.to_dict()),
                "base_lr_band": across.base_lr_band,
                "max_lr_band": across.max_lr_band,
                "seed_spread": across.seed_spread,
                "confidence": across.confidence,
                "spreads": [
                    SeedSpreadDoc(
                        method=spread.method,
                        seeds=[kept[k] for k in spread.members],
                        base_lrs=spread.base_lrs,
                        max_lrs=spread.max_lrs,
                        base_lr=spread.base_lr,
                        max_lr=spread.max_lr,
                        ratio=spread.ratio,
                    )
                    for spread in across.spreads.values()
                ],
                "warnings": list(across.warnings),
            }
    doc["failed"] = failed

    first = results[0]
    suggestions = None
    no_bounds_reason = None
    try:
        suggestions = suggest_all(
            first,
            iters_per_epoch=iters_per_epoch,
            use_accuracy=use_accuracy,
            seed_max_lrs=seed_max_lrs,
        )
    except SuggestionError as exc:
        no_bounds_reason = str(exc)
    outcome = RangeTestOutcome.from_clr(first, suggestions, no_bounds_reason=no_bounds_reason)
    outcome = outcome.model_copy(update={"seed_band": SeedBandDoc.model_validate(doc)})
    return SeededAssessment(outcome=outcome, suggestions=suggestions, band=band)


def _why_no_bounds(result: RangeTestResult, metric: str) -> str:
    from clr import SuggestionError, suggest_all

    try:
        suggest_all(result, use_accuracy=metric == "accuracy")
    except SuggestionError as exc:
        return str(exc)
    return "gave no bounds"
