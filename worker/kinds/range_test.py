"""The range-test runner: sweeps the LR with :class:`clr.RangeTest` and suggests bounds."""

from __future__ import annotations

from clr import RangeTest, RangeTestProgress
from clr.suggest import curve_verdict
from core.kinds import CURVE
from core.range_tests import assess_range_test
from core.series import SeriesPoints
from core.specs import RangeTestSpec
from core.verification import plan_verification
from worker.jobs import CannotRun, JobContext, run_device

__all__ = ["curve_points", "run"]


def curve_points(progress: RangeTestProgress) -> SeriesPoints:
    """The ``curve`` points of one ``clr`` range-test progress callback."""
    return SeriesPoints.of(
        CURVE,
        progress.start,
        {
            "lr": progress.lrs,
            "loss": progress.losses,
            "smoothed_loss": progress.smoothed_losses,
            "accuracy": progress.accuracies,
        },
    )


def run(ctx: JobContext) -> str:
    """Run one attempt of a range test from its first step (range tests start over)."""
    spec = ctx.spec
    if not isinstance(spec, RangeTestSpec):
        raise CannotRun(f"the range-test runner got a {type(spec).__name__}")
    built, optimizer = spec.build(lr=spec.start_lr, device=run_device(spec.device))
    tester = RangeTest(built.model, optimizer, built.loss_fn, metric_fn=built.metric_fn)

    def on_progress(progress: RangeTestProgress) -> None:
        points = curve_points(progress)
        ctx.reporter.add(points, progress=points.start + points.size)

    result = tester.run(
        built.train_loader,
        start_lr=spec.start_lr,
        end_lr=spec.end_lr,
        num_iter=spec.num_iter,
        sweep=spec.sweep,
        smoothing=spec.smoothing,
        diverge_th=spec.diverge_th,
        callback=on_progress,
        should_stop=ctx.should_stop,
    )
    if result.stop_reason == "cancelled":
        return ctx.stopped()
    assessed = assess_range_test(result, iters_per_epoch=built.iters_per_epoch, metric=spec.metric)
    outcome, suggestions = assessed.outcome, assessed.suggestions
    if not spec.verify:
        return ctx.finish(outcome)
    # the candidates train as child jobs while this job waits (core.verification)
    verification = plan_verification(
        spec, suggestions, curve_verdict(result), iters_per_epoch=built.iters_per_epoch
    )
    outcome = outcome.model_copy(update={"verification": verification})
    return ctx.finish(outcome, wait=verification.status == "running")
