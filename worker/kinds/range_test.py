"""The range-test runner: sweeps the LR with :class:`clr.RangeTest` and suggests bounds.

Under ``seeds`` the runner builds the workload once per seed and, when the model
fuses (:func:`clr.fused.fusable`, on a batch of the validation loader) and the
device holds K members (:func:`clr.fused.fused_capacity`, within
``CLR_FUSE_MAX_MEMBERS``), runs the K sweeps as one :class:`clr.FusedRangeTest`;
otherwise one :class:`clr.RangeTest` after another, recording why. The ``curve``
series streams the first seed's points as a single test's would; the ``band``
series (the smoothed loss across seeds per LR, :class:`clr.SeedBand`) is stored
when the seeds have run, with the result (:func:`core.range_tests.assess_seeded_range_test`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from clr import FusedRangeTest, RangeTest, RangeTestProgress, RangeTestResult, SeedBand
from clr._batch import split_batch
from clr.fused import FusedModel, fusable, fused_capacity, member_memory
from clr.suggest import curve_verdict
from clr.workloads import WorkloadInstance
from core.kinds import BAND, CURVE
from core.range_tests import Assessment, SeededRun, assess_range_test, assess_seeded_range_test
from core.series import MAX_POINTS_PER_REPORT, SeriesPoints
from core.settings import get_settings
from core.specs import RangeTestSpec
from core.verification import plan_verification
from worker.jobs import CannotRun, JobContext, run_device

__all__ = ["band_points", "curve_points", "example_inputs", "plan_seeds", "run"]

logger = logging.getLogger(__name__)


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


def band_points(band: SeedBand) -> list[SeriesPoints]:
    """The ``band`` points of a :class:`clr.SeedBand` (its smoothed loss), in reports."""
    columns = {
        "lr": band.lrs,
        "n": band.n.astype(np.float64),
        "mean": band.smoothed.mean,
        "std": band.smoothed.std,
        "min": band.smoothed.min,
        "max": band.smoothed.max,
    }
    size = int(band.lrs.shape[0])
    return [
        SeriesPoints.of(
            BAND,
            lo,
            {k: v[lo : lo + MAX_POINTS_PER_REPORT].tolist() for k, v in columns.items()},
        )
        for lo in range(0, size, MAX_POINTS_PER_REPORT)
    ]


def _sweep_args(spec: RangeTestSpec) -> dict[str, Any]:
    return {
        "start_lr": spec.start_lr,
        "end_lr": spec.end_lr,
        "num_iter": spec.num_iter,
        "sweep": spec.sweep,
        "smoothing": spec.smoothing,
        "diverge_th": spec.diverge_th,
    }


def run(ctx: JobContext) -> str:
    """Run one attempt of a range test from its first step (range tests start over)."""
    spec = ctx.spec
    if not isinstance(spec, RangeTestSpec):
        raise CannotRun(f"the range-test runner got a {type(spec).__name__}")

    def on_progress(progress: RangeTestProgress) -> None:
        points = curve_points(progress)
        ctx.reporter.add(points, progress=points.start + points.size)

    assessed: Assessment
    if spec.seeds is not None:
        builts, results, how = _run_seeds(ctx, spec, on_progress)
        if any(r.stop_reason == "cancelled" for r in results):
            return ctx.stopped()
        built, result = builts[0], results[0]
        seeded = assess_seeded_range_test(
            results, how, iters_per_epoch=built.iters_per_epoch, metric=spec.metric
        )
        if seeded.band is not None:
            ctx.reporter.add(*band_points(seeded.band))
        assessed = seeded
    else:
        built, optimizer = spec.build(lr=spec.start_lr, device=run_device(spec.device))
        tester = RangeTest(built.model, optimizer, built.loss_fn, metric_fn=built.metric_fn)
        result = tester.run(
            built.train_loader,
            **_sweep_args(spec),
            callback=on_progress,
            should_stop=ctx.should_stop,
        )
        if result.stop_reason == "cancelled":
            return ctx.stopped()
        assessed = assess_range_test(
            result, iters_per_epoch=built.iters_per_epoch, metric=spec.metric
        )
    outcome, suggestions = assessed.outcome, assessed.suggestions
    if not spec.verify:
        return ctx.finish(outcome)
    # the candidates train as child jobs while this job waits (core.verification)
    verification = plan_verification(
        spec, suggestions, curve_verdict(result), iters_per_epoch=built.iters_per_epoch
    )
    outcome = outcome.model_copy(update={"verification": verification})
    return ctx.finish(outcome, wait=verification.status == "running")


def example_inputs(built: WorkloadInstance) -> Any:
    """One batch of the workload's inputs, to ask :func:`clr.fused.fusable` and measure a
    member's memory with: from the validation loader (unshuffled, so reading a batch
    draws nothing from any RNG)."""
    return split_batch(next(iter(built.val_loader)))[0]


def plan_seeds(spec: RangeTestSpec, builts: Sequence[WorkloadInstance]) -> SeededRun:
    """Whether the seeds' range tests run as one fused run on this worker, and why not.

    They fuse when the model does (:func:`clr.fused.fusable`), fusing is on
    (``CLR_FUSE_MAX_MEMBERS`` >= K) and the device's free memory holds K
    members (:func:`clr.fused.fused_capacity` of :func:`clr.fused.member_memory`).
    """
    seeds = list(spec.seeds or [spec.seed])
    k = len(seeds)
    first = builts[0]
    example = example_inputs(first)
    ok, why = fusable(first.model, example)
    if not ok:
        return SeededRun(seeds, fused=False, path=None, reason=f"the model does not fuse: {why}")
    settings = get_settings()
    if settings.fuse_max_members < k:
        reason = (
            f"this worker fuses at most {settings.fuse_max_members} members "
            f"(CLR_FUSE_MAX_MEMBERS), fewer than the {k} seeds"
        )
        return SeededRun(seeds, fused=False, path=None, reason=reason)
    device = next(first.model.parameters()).device
    memory = member_memory(first.model, example, optimizer=spec.optimizer.name, device=device)
    capacity = fused_capacity(memory, device=device, fraction=settings.fuse_memory_fraction)
    if capacity < k:
        reason = (
            f"only {capacity} of the {k} members fit the device's free memory ({memory.detail})"
        )
        return SeededRun(seeds, fused=False, path=None, reason=reason)
    return _fused(seeds, FusedModel([first.model]).path, device.type)


def _fused(seeds: list[int], path: Literal["stacked", "vmap"], device: str) -> SeededRun:
    reason = f"the {len(seeds)} seeds ran as one fused range test ({path} path) on {device}"
    return SeededRun(seeds, fused=True, path=path, reason=reason)


def _run_seeds(
    ctx: JobContext, spec: RangeTestSpec, on_progress: Callable[[RangeTestProgress], None]
) -> tuple[list[WorkloadInstance], list[RangeTestResult], SeededRun]:
    """The range tests of every seed, fused when they can be; the first seed's curve
    streams to ``on_progress``."""
    assert spec.seeds is not None
    device = run_device(spec.device)
    pairs = [
        spec.model_copy(update={"seed": seed}).build(lr=spec.start_lr, device=device)
        for seed in spec.seeds
    ]
    builts = [built for built, _ in pairs]
    how = plan_seeds(spec, builts)
    logger.info(
        "range_test.seeds job_id=%s seeds=%d fused=%s reason=%s",
        ctx.job_id,
        len(builts),
        how.fused,
        how.reason,
    )
    if how.fused:
        tester = FusedRangeTest(
            [b.model for b in builts],
            spec.optimizer.name,
            builts[0].loss_fn,
            metric_fn=builts[0].metric_fn,
            **spec.optimizer_kwargs(),
        )

        def on_member(k: int, progress: RangeTestProgress) -> None:
            if k == 0:
                on_progress(progress)

        results = tester.run(
            [b.train_loader for b in builts],
            **_sweep_args(spec),
            callback=on_member,
            should_stop=ctx.should_stop,
        )
        if tester.path is not None:  # the path the members ran on (planned: the same)
            how = _fused(list(how.seeds), tester.path, tester.device.type)
        return builts, results, how
    results = []
    for k, (built, optimizer) in enumerate(pairs):
        tester_k = RangeTest(built.model, optimizer, built.loss_fn, metric_fn=built.metric_fn)
        result = tester_k.run(
            built.train_loader,
            **_sweep_args(spec),
            callback=on_progress if k == 0 else None,
            should_stop=ctx.should_stop,
        )
        results.append(result)
        if result.stop_reason == "cancelled":
            break
    return builts, results, how
