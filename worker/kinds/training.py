"""The training runner: :class:`clr.train.Trainer` with checkpoints in the artifact store.

At every cycle end the trainer hands over a checkpoint. The runner first stores
every series point up to it, then streams the checkpoint into the artifact
store (:mod:`core.artifacts`) and, in the transaction that publishes it,
records it on the job (:func:`core.services.record_checkpoint`): the job's
progress and series counts at that moment are where a new attempt resumes. A
worker lost mid-cycle costs at most one cycle: the next attempt, on any host,
reads the checkpoint back and continues exactly (on CPU, bit for bit).

When the run ends the final weights are stored as ``model`` and the
ensemble's snapshots as ``snapshot-<k>``, and the checkpoint is deleted. A loss
that turns NaN or infinite fails the job, saying where, with the finite points
before it stored.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import torch
from sqlalchemy.orm import Session

from clr import create_scheduler
from clr.train import Checkpoint, Trainer, TrainProgress, TrainResult
from clr_sweep.contracts import FusedRun
from core.artifacts import delete_artifacts, open_artifact_reader, open_artifact_writer
from core.db import session_scope
from core.series import SeriesPoints
from core.services import record_checkpoint
from core.services.trainings import model_artifact_name
from core.settings import get_settings
from core.training import EPOCHS, ITERATIONS, TrainingOutcome, TrainingSpec
from worker.jobs import CannotRun, JobContext, run_device

__all__ = [
    "CHECKPOINT",
    "Diverged",
    "divergence",
    "epoch_points",
    "finish_training",
    "first_bad",
    "iteration_points",
    "run",
    "run_alone",
    "save_artifact",
    "training_outcome",
]

logger = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
"""The artifact holding the latest cycle-end checkpoint (replaced at every cycle end)."""


def iteration_points(progress: TrainProgress) -> SeriesPoints:
    """The ``iterations`` points of one progress callback."""
    return SeriesPoints.of(
        ITERATIONS,
        progress.start,
        {"lr": progress.lrs, "momentum": progress.momenta, "loss": progress.losses},
    )


def epoch_points(progress: TrainProgress, first: int) -> SeriesPoints | None:
    """The ``epochs`` points of one progress callback (epoch ``first`` is the first new)."""
    if not progress.epochs:
        return None
    columns: dict[str, list[float] | None] = {name: [] for name in EPOCHS.fields}
    for record in progress.epochs:
        row = record.to_dict()
        for name in EPOCHS.fields:
            column, value = columns[name], row.get(name)
            if value is None or column is None:
                columns[name] = None
            else:
                column.append(float(value))
    return SeriesPoints.of(EPOCHS, first, columns)


class Diverged(CannotRun):
    """The loss became NaN or infinite: the schedule's LRs are too high for the model."""


def divergence(ctx: JobContext, progress: TrainProgress, bad: int) -> str:
    """Store the finite points before iteration ``start + bad``; why the run stops."""
    if bad:
        head = TrainProgress(
            start=progress.start,
            lrs=progress.lrs[:bad],
            momenta=None if progress.momenta is None else progress.momenta[:bad],
            losses=progress.losses[:bad],
            epochs=[],
            cycle_end=None,
            iterations=progress.iterations,
            elapsed=progress.elapsed,
        )
        ctx.reporter.add(iteration_points(head), progress=progress.start + bad)
    at = progress.start + bad
    return (
        f"the loss diverged at iteration {at} ({progress.losses[bad]} at lr "
        f"{progress.lrs[bad]:.4g}): lower schedule.max_lr (or lr), or take the bounds of a "
        "more conservative method"
    )


def first_bad(losses: list[float]) -> int | None:
    """The index of the first loss that is not finite, if any."""
    return next((i for i, v in enumerate(losses) if not math.isfinite(v)), None)


def save_artifact(
    ctx: JobContext, name: str, obj: Any, *, on_publish: Any = None
) -> dict[str, Any]:
    """Stream ``obj`` (a :class:`Checkpoint` or anything ``torch.save`` takes) into the
    job's artifact ``name``; its name, size and whether it was published."""
    settings = get_settings()
    with open_artifact_writer(
        ctx.factory,
        settings,
        job_id=ctx.job_id,
        attempt=ctx.attempt,
        name=name,
        on_publish=on_publish,
    ) as writer:
        if isinstance(obj, Checkpoint):
            obj.save(writer)
        else:
            torch.save(obj, writer)
        size = writer.tell()
    return {"name": name, "size": size, "published": writer.published}


def _load_checkpoint(ctx: JobContext, device: torch.device) -> Checkpoint | None:
    if ctx.checkpoint is None:
        return None
    name = str(ctx.checkpoint.get("artifact", CHECKPOINT))
    with open_artifact_reader(ctx.factory, get_settings(), job_id=ctx.job_id, name=name) as f:
        return Checkpoint.load(f, map_location=device)


def run(ctx: JobContext) -> str:
    """Run (or resume) one attempt of a training: fused with its siblings when it is a
    parent's child that can be (:mod:`worker.kinds.fused_training`), else on its own."""
    spec = ctx.spec
    if not isinstance(spec, TrainingSpec):
        raise CannotRun(f"the training runner got a {type(spec).__name__}")
    # imported here: the fused runner builds on this module's helpers
    from worker.kinds.fused_training import plan_fused, run_fused

    plan = plan_fused(ctx, spec)
    if plan.group is not None:
        return run_fused(ctx, plan.group)
    return run_alone(ctx, spec, fusion=plan.fusion)


def run_alone(ctx: JobContext, spec: TrainingSpec, *, fusion: FusedRun | None = None) -> str:
    """Run (or resume) one attempt of a training with :class:`clr.train.Trainer`."""
    policy, schedule_args, iterations = spec.resolved_schedule()
    device = torch.device(run_device(spec.device))
    first_lr = schedule_args.get("lr") or schedule_args.get("base_lr") or 1e-3
    built, optimizer = spec.build(lr=first_lr, device=str(device))
    scheduler = create_scheduler(optimizer, policy, **schedule_args)
    trainer = Trainer(
        built.model, optimizer, built.loss_fn, metric_fn=built.metric_fn, scheduler=scheduler
    )
    resume = _load_checkpoint(ctx, device)
    resumed_from = None if resume is None else resume.iteration
    if resume is not None:
        logger.info(
            "training.resumed job_id=%s attempt=%d iteration=%d",
            ctx.job_id,
            ctx.attempt,
            resume.iteration,
        )
    epochs_seen = 0 if resume is None else len(resume.epochs)

    def on_progress(progress: TrainProgress) -> None:
        nonlocal epochs_seen
        bad = first_bad(progress.losses)
        if bad is not None:
            raise Diverged(divergence(ctx, progress, bad))
        points = [iteration_points(progress)] if progress.lrs else []
        epochs = epoch_points(progress, epochs_seen)
        if epochs is not None:
            points.append(epochs)
            epochs_seen += epochs.size
        ctx.reporter.add(*points, progress=progress.iteration)

    def on_checkpoint(checkpoint: Checkpoint) -> None:
        ctx.reporter.flush()  # the series up to the checkpoint are stored first

        def publish(session: Session) -> None:
            record_checkpoint(session, job_id=ctx.job_id, attempt=ctx.attempt, artifact=CHECKPOINT)

        save_artifact(ctx, CHECKPOINT, checkpoint, on_publish=publish)

    result = trainer.run(
        built.train_loader,
        val_loader=built.val_loader,
        iterations=iterations,
        callback=on_progress,
        should_stop=ctx.should_stop,
        checkpoint=on_checkpoint,
        resume=resume,
        snapshots=spec.snapshot_count(),
        keep_traces=False,  # the series hold them: checkpoints stay the model's size
    )
    if result.stop_reason == "cancelled":
        return ctx.stopped()
    final = {k: v.cpu() for k, v in built.model.state_dict().items()}
    outcome = partial(training_outcome, policy, schedule_args, result, resumed_from, fusion=fusion)
    return finish_training(ctx, final, result.snapshot_states, outcome)


def finish_training(
    ctx: JobContext,
    final: Mapping[str, Any],
    snapshots: list[dict[str, Any]],
    outcome: Callable[[list[dict[str, Any]]], TrainingOutcome],
) -> str:
    """Store the final weights as ``model`` and the snapshots as ``snapshot-<k>``, end
    the job with ``outcome(artifacts)`` and, once it succeeded, delete the rest (the
    checkpoint only served a resume: the weights are kept, its copy is not)."""
    artifacts = [save_artifact(ctx, model_artifact_name(), dict(final))]
    for k, state in enumerate(snapshots, start=1):
        artifacts.append(save_artifact(ctx, model_artifact_name(k), state))
    ended = ctx.finish(outcome(artifacts))
    if ended == "succeeded":
        with session_scope(ctx.factory) as session:
            delete_artifacts(
                session, get_settings(), ctx.job_id, except_names=[a["name"] for a in artifacts]
            )
    return ended


def training_outcome(
    policy: str,
    schedule_args: Mapping[str, Any],
    result: TrainResult,
    resumed_from: int | None,
    artifacts: list[dict[str, Any]],
    *,
    fusion: FusedRun | None = None,
) -> TrainingOutcome:
    validated = [e for e in result.epochs if e.val_accuracy is not None]
    best = max(validated, key=lambda e: e.val_accuracy or 0.0, default=None)
    ensemble = result.ensemble
    return TrainingOutcome(
        stop_reason=result.stop_reason,
        iterations=result.iterations,
        epochs=len(result.epochs),
        cycles=len(result.cycle_ends),
        cycle_ends=list(result.cycle_ends),
        seconds=result.seconds,
        device=result.device,
        policy=policy,
        schedule=dict(schedule_args),
        final_train_loss=result.epochs[-1].train_loss if result.epochs else None,
        final_val_loss=result.val_loss,
        final_val_accuracy=result.val_accuracy,
        best_val_accuracy=None if best is None else best.val_accuracy,
        best_val_iteration=None if best is None else best.iteration,
        ensemble_val_loss=None if ensemble is None else ensemble.val_loss,
        ensemble_val_accuracy=None if ensemble is None else ensemble.val_accuracy,
        ensemble_size=0 if ensemble is None else ensemble.snapshots,
        resumed_from=resumed_from,
        artifacts=[a for a in artifacts if a["published"]],
        fusion=fusion,
    )
