"""A parent's trainings run as one fused loop on one worker (:mod:`clr.fused_train`).

A sweep's trainings at a grid point (every policy x seed) and a verification
round's candidates are small, similar jobs: the same model and data, optimizer,
device and length (:meth:`~core.training.TrainingSpec.fuse_key`), each with its
own seed and schedule. When a worker claims one of them, :func:`plan_fused`
decides whether it runs with its siblings:

- the model must fuse (:func:`clr.fused.fusable`: no batch norm in training
  mode, no in-place writes, no data-dependent control flow); if not, it runs
  alone and its result says why (``fusion.reason``);
- the device must hold them: one member's memory (:func:`clr.fused.member_memory`,
  measured on CUDA, computed on a CPU, plus its data) against the share
  ``CLR_FUSE_MEMORY_FRACTION`` of the free memory, at most
  ``CLR_FUSE_MAX_MEMBERS`` and as many as fit half the training time limit;
  siblings beyond run as jobs of their own;
- it claims the queued siblings with the same fuse key that are where it is
  (no checkpoint, or a fused checkpoint at the same iteration) with
  :func:`core.services.claim_siblings`, sharing them with the queue's other
  live workers (idle, or holding a sibling's message): each is a new attempt
  of its own job, and its own message, when it comes, finds it running and
  runs nothing.

:func:`run_fused` then trains them with :class:`clr.fused_train.FusedTrainer`.
Each member keeps its own row: its attempt (one thread beats for all), its
series (every member's points stored, a short transaction each, at most every
``MAX_REPORT_INTERVAL_S``), its checkpoint (artifact ``fused-checkpoint``, all
members at the same cycle ends), its model and snapshots, its result with
``fusion`` (how many ran together, how, the memory measured). A member whose
loss diverges fails alone with the reason and a cancelled one stops alone, each
ended at the read point where it stopped: the others go on bit for bit. A crash
fails every member with the reason; a lost worker leaves them all to the
reconciler, and their next attempts resume from their checkpoints, fused again.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from sqlalchemy.orm import Session

from clr.fused import MemberMemory, fusable, fused_capacity, member_memory
from clr.fused_train import FusedTrainer, FusedTrainResult
from clr.policies import make_schedule
from clr.train import Checkpoint, TrainProgress
from clr.workloads import TensorBatches, WorkloadInstance, build_workload
from clr_sweep.contracts import FusedRun
from core.artifacts import open_artifact_reader
from core.db import session_scope
from core.kinds import get_kind
from core.models import Job
from core.repositories import JobRepository
from core.services import SiblingClaim, claim_siblings, parse_job_spec, record_checkpoint
from core.settings import get_settings
from core.training import TrainingSpec
from worker.jobs import (
    MAX_REPORT_INTERVAL_S,
    Heartbeats,
    JobContext,
    ProgressReporter,
    failure_reason,
    run_device,
    worker_device,
)
from worker.kinds.range_test import example_inputs
from worker.kinds.training import (
    divergence,
    epoch_points,
    finish_training,
    first_bad,
    iteration_points,
    save_artifact,
    training_outcome,
)

__all__ = ["FUSED_CHECKPOINT", "FusedGroup", "FusionPlan", "plan_fused", "run_fused"]

logger = logging.getLogger(__name__)

FUSED_CHECKPOINT = "fused-checkpoint"
"""A fused run's member checkpoint (resumed only by a fused run, of one or more members)."""


@dataclass
class Member:
    """One claimed training of a fused run."""

    ctx: JobContext
    spec: TrainingSpec
    built: WorkloadInstance | None = None
    resume: Checkpoint | None = None
    epochs_seen: int = 0
    diverged: str | None = None
    ended: str | None = None  # how its attempt ended, once it did (before the group's end)


@dataclass
class FusedGroup:
    """The trainings one worker runs fused: the claimed job first, then its siblings."""

    members: list[Member]
    memory: MemberMemory | None
    capacity: int
    path: str
    heartbeats: Heartbeats | None = None
    shared: str | None = None  # the siblings left to idle workers, said in the reason


@dataclass
class FusionPlan:
    """What :func:`plan_fused` decided: a group to run fused, or why the job runs alone
    (``fusion`` None: not a parent's child, nothing to say)."""

    group: FusedGroup | None = None
    fusion: FusedRun | None = None


def _parent_of(ctx: JobContext) -> uuid.UUID | None:
    with session_scope(ctx.factory) as session:
        job = JobRepository(session).get(ctx.job_id)
        return None if job is None else job.parent_id


def _is_fused_checkpoint(checkpoint: dict[str, Any] | None) -> bool:
    return checkpoint is not None and checkpoint.get("artifact") == FUSED_CHECKPOINT


def plan_fused(ctx: JobContext, spec: TrainingSpec) -> FusionPlan:
    """Whether the claimed training runs fused, and with which siblings (claimed here).

    A training resuming a fused checkpoint always runs fused (alone, if no sibling
    is at its iteration). One that is not a parent's child runs alone, saying nothing.
    """
    resuming = _is_fused_checkpoint(ctx.checkpoint)
    parent = _parent_of(ctx)
    if parent is None and not resuming:
        return FusionPlan()
    settings = get_settings()
    if ctx.checkpoint is not None and not resuming:
        return FusionPlan(fusion=_alone("it resumes a checkpoint its own run took"))
    if settings.fuse_max_members < 2 and not resuming:
        return FusionPlan(fusion=_alone("fusing is off on this worker (CLR_FUSE_MAX_MEMBERS=1)"))
    device = torch.device(run_device(spec.device))
    built = build_workload(spec.workload, spec.params, seed=spec.seed, device=str(device))
    example = example_inputs(built)
    ok, why = fusable(built.model, example)
    if not ok:
        if resuming:  # a fused checkpoint of a model that does not fuse cannot happen
            raise RuntimeError(f"a fused checkpoint of a model that does not fuse: {why}")
        return FusionPlan(fusion=_alone(f"the model does not fuse: {why}"))
    path = "stacked" if _stacked(built) else "vmap"
    memory = _with_data(
        member_memory(built.model, example, optimizer=spec.optimizer.name, device=device), built
    )
    capacity, limit = _capacity(spec, memory, device)
    claim = _claim(ctx, spec, limit=capacity - 1) if capacity > 1 else None
    siblings = [] if claim is None else claim.jobs
    if not siblings and not resuming:
        if capacity < 2:
            reason = limit
        elif claim is not None and claim.accepted:
            reason = (
                f"its {claim.accepted} waiting sibling(s) went to "
                f"{_workers(claim)} or were claimed by another worker first"
            )
        else:
            reason = "no sibling was waiting to run with it"
        return FusionPlan(fusion=_alone(reason, memory=memory, capacity=capacity))
    members = [Member(ctx=ctx, spec=spec, built=built)]
    for job in siblings:
        members.append(_member(ctx, job))
    left = 0 if claim is None else claim.accepted - len(siblings)
    shared = None
    if claim is not None and left:
        if len(siblings) == capacity - 1:
            shared = f"{left} more beyond its capacity ({limit})"
        elif claim.idle_workers or claim.peers:
            shared = f"{left} left to {_workers(claim)}"
        else:
            shared = f"{left} claimed by another worker first"
    group = FusedGroup(members=members, memory=memory, capacity=capacity, path=path, shared=shared)
    if siblings:
        # the siblings beat from now on: a slow build below must not make them look lost
        group.heartbeats = Heartbeats(
            *(m.ctx.reporter for m in members[1:]), interval_s=settings.heartbeat_interval_s
        )
        group.heartbeats.__enter__()
    logger.info(
        "training.fused job_id=%s members=%d capacity=%d path=%s left=%d",
        ctx.job_id,
        len(members),
        capacity,
        path,
        left,
    )
    return FusionPlan(group=group)


def _with_data(memory: MemberMemory, built: WorkloadInstance) -> MemberMemory:
    """``memory`` plus the member's own copy of its data (each member builds its
    workload: the built-ins put their train and validation sets on the device)."""
    data = sum(
        t.element_size() * t.nelement()
        for loader in (built.train_loader, built.val_loader)
        if isinstance(loader, TensorBatches)
        for t in (loader.x, loader.y)
    )
    if not data:
        return memory
    return MemberMemory(
        bytes=memory.bytes + data,
        measured=memory.measured,
        detail=f"{memory.detail}; plus {data:,} bytes of its data on the device",
    )


def _workers(claim: SiblingClaim) -> str:
    """The other workers a claim left siblings to, in words."""
    parts = []
    if claim.peers:
        parts.append(f"{claim.peers} worker(s) holding a sibling's message")
    if claim.idle_workers:
        parts.append(f"{claim.idle_workers} idle worker(s)")
    return " and ".join(parts) or "other workers"


def _capacity(spec: TrainingSpec, memory: MemberMemory, device: torch.device) -> tuple[int, str]:
    """How many members may run fused with this one, and a sentence on what limits it:
    ``CLR_FUSE_MAX_MEMBERS``, the device's free memory (``CLR_FUSE_MEMORY_FRACTION``
    of it), and half the training time limit (K members' estimated run time, as if
    they ran one after another: a fused run is faster, so this errs on the safe side)."""
    settings = get_settings()
    by_memory = fused_capacity(memory, device=device, fraction=settings.fuse_memory_fraction)
    limits = [
        (settings.fuse_max_members, f"at most CLR_FUSE_MAX_MEMBERS={settings.fuse_max_members}"),
        (by_memory, f"only {by_memory} member(s) fit the device's free memory ({memory.detail})"),
    ]
    estimate = spec.estimate()
    if estimate is not None:
        seconds = estimate.seconds(settings.job_flop_rate)
        if seconds > 0:
            by_time = max(1, int(0.5 * settings.training_time_limit_s / seconds))
            limit_s = settings.training_time_limit_s
            reason = (
                f"{by_time} member(s) of about {seconds:.0f} s fit half the training time "
                f"limit (CLR_TRAINING_TIME_LIMIT_S={limit_s})"
            )
            limits.append((by_time, reason))
    return min(limits, key=lambda pair: pair[0])


def _alone(
    reason: str, *, memory: MemberMemory | None = None, capacity: int | None = None
) -> FusedRun:
    return FusedRun(
        fused=False,
        members=1,
        member_bytes=None if memory is None else memory.bytes,
        capacity=capacity,
        reason=reason,
    )


def _stacked(built: WorkloadInstance) -> bool:
    from clr.fused import FusedModel

    return FusedModel([built.model]).path == "stacked"


def _claim(ctx: JobContext, spec: TrainingSpec, *, limit: int) -> SiblingClaim:
    """Claim up to ``limit`` queued siblings that fuse with ``spec`` and are where it is,
    leaving a share to the idle workers of its queue."""
    key = spec.fuse_key()
    mine = ctx.checkpoint

    def accept(job: Job) -> bool:
        theirs = None if job.checkpoint is None else dict(job.checkpoint)
        if (mine is None) != (theirs is None):
            return False
        if mine is not None and theirs is not None:
            if not _is_fused_checkpoint(theirs) or theirs.get("progress") != mine.get("progress"):
                return False
        try:
            other = parse_job_spec(job.kind, dict(job.spec), stored=True)
        except Exception:  # a spec this version cannot read runs (and fails) on its own
            return False
        return isinstance(other, TrainingSpec) and other.fuse_key() == key

    worker = _worker_of(ctx)
    with session_scope(ctx.factory) as session:
        claim = claim_siblings(
            session,
            job_id=ctx.job_id,
            worker=worker,
            device=worker_device(),
            limit=limit,
            accept=accept,
            settings=get_settings(),
        )
        for job in claim.jobs:
            session.refresh(job)
        session.expunge_all()
    return claim


def _worker_of(ctx: JobContext) -> str:
    with session_scope(ctx.factory) as session:
        job = JobRepository(session).get(ctx.job_id)
        assert job is not None  # claimed by this worker
        assert job.worker is not None
        return job.worker


def _member(ctx: JobContext, job: Job) -> Member:
    kind = get_kind(job.kind)
    spec = parse_job_spec(job.kind, dict(job.spec), stored=True)
    assert isinstance(spec, TrainingSpec)
    reporter = ProgressReporter(
        ctx.factory, job_id=job.id, attempt=job.attempt, interval_s=ctx.reporter.interval_s
    )
    member_ctx = JobContext(
        kind=kind,
        job_id=job.id,
        attempt=job.attempt,
        spec=spec,
        checkpoint=None if job.checkpoint is None else dict(job.checkpoint),
        reporter=reporter,
    )
    return Member(ctx=member_ctx, spec=spec)


# --------------------------------------------------------------------------- the run


def run_fused(ctx: JobContext, group: FusedGroup) -> str:
    """Run a fused group to its end; what happened to the claimed job (``ctx``'s).

    Any failure fails every member with the reason (a database failure
    propagates: every heartbeat stops and the reconciler retries them all).
    """
    try:
        return _run(ctx, group)
    except Exception as exc:
        reason = failure_reason(exc, job_id=ctx.job_id, attempt=ctx.attempt)
        if reason is None:
            raise
        for member in group.members:
            _fail(member.ctx, reason)
        return "failed"
    finally:
        if group.heartbeats is not None:
            group.heartbeats.__exit__(None, None, None)


def _fail(ctx: JobContext, reason: str) -> None:
    if ctx.reporter.ended:  # it ended before the failure (an earlier part of the run)
        return
    ctx.fail(reason)


def _load(ctx: JobContext, device: torch.device) -> Checkpoint | None:
    if not _is_fused_checkpoint(ctx.checkpoint):
        return None
    with open_artifact_reader(
        ctx.factory, get_settings(), job_id=ctx.job_id, name=FUSED_CHECKPOINT
    ) as f:
        return Checkpoint.load(f, map_location=device)


def _same_validation(a: Iterable[Any], b: Iterable[Any]) -> bool:
    """Whether two validation loaders hold the same batches (members are evaluated on one):
    the same loader, or two :class:`~clr.workloads.TensorBatches` of equal tensors."""
    if a is b:
        return True
    if not (isinstance(a, TensorBatches) and isinstance(b, TensorBatches)):
        return False
    if a.batch_size != b.batch_size:
        return False
    return all(
        s.shape == t.shape and s.dtype == t.dtype and bool(torch.equal(s, t))
        for s, t in ((a.x, b.x), (a.y, b.y))
    )


def _partition(members: list[Member]) -> list[list[Member]]:
    """Members evaluated on the same validation data run together (the built-in
    workloads' validation splits do not depend on the seed)."""
    groups: list[list[Member]] = []
    for member in members:
        assert member.built is not None
        for group in groups:
            first = group[0].built
            assert first is not None
            if _same_validation(first.val_loader, member.built.val_loader):
                group.append(member)
                break
        else:
            groups.append([member])
    return groups


def _run(ctx: JobContext, group: FusedGroup) -> str:
    device = torch.device(run_device(group.members[0].spec.device))
    for member in group.members:
        if member.built is None:
            spec = member.spec
            member.built = build_workload(
                spec.workload, spec.params, seed=spec.seed, device=str(device)
            )
        member.resume = _load(member.ctx, device)
        member.epochs_seen = 0 if member.resume is None else len(member.resume.epochs)
        member.ctx.reporter.interval_s = math.inf  # the group stores every member's points
    outcomes: dict[uuid.UUID, str] = {}
    for part in _partition(group.members):
        outcomes.update(_run_part(part, group, device))
    return outcomes[ctx.job_id]


def _store(members: Sequence[Member]) -> None:
    """Every member's gathered points, a short transaction each: one holding several
    members' rows could deadlock with a parent's cancel, which locks them too."""
    for member in members:
        if member.ctx.reporter.pending or member.ctx.reporter.progress is not None:
            member.ctx.reporter.flush()


def _run_part(
    members: list[Member], group: FusedGroup, device: torch.device
) -> dict[uuid.UUID, str]:
    first = members[0]
    assert first.built is not None
    spec = first.spec
    trainer = FusedTrainer(
        [m.built.model for m in members if m.built is not None],
        spec.optimizer.name,
        first.built.loss_fn,
        metric_fn=first.built.metric_fn,
        device=device,
        **spec.optimizer_kwargs(),
    )
    resolved = [m.spec.resolved_schedule() for m in members]
    schedules = [make_schedule(policy, **args) for policy, args, _ in resolved]
    iterations = resolved[0][2]
    resumes = [m.resume for m in members]
    resumed_from = None if resumes[0] is None else resumes[0].iteration
    last_store = time.monotonic()

    def on_progress(k: int, progress: TrainProgress) -> None:
        member = members[k]
        bad = first_bad(progress.losses)
        if bad is not None:
            member.diverged = divergence(member.ctx, progress, bad)
            return
        points = [iteration_points(progress)] if progress.lrs else []
        epochs = epoch_points(progress, member.epochs_seen)
        if epochs is not None:
            points.append(epochs)
            member.epochs_seen += epochs.size
        member.ctx.reporter.add(*points, progress=progress.iteration)

    def should_stop() -> Collection[int]:
        # polled at every read point, after every member's points up to it were handed
        # over: a member that diverged there (the trainer has masked it) or is asked to
        # stop ends now, not when the whole group does
        nonlocal last_store
        stop = []
        for k, member in enumerate(members):
            if member.ended is not None:
                continue
            if member.diverged is not None:
                member.ended = member.ctx.fail(f"Diverged: {member.diverged}")
            elif member.ctx.should_stop():
                stop.append(k)
                member.ended = member.ctx.stopped()
        if time.monotonic() - last_store >= MAX_REPORT_INTERVAL_S:
            _store(members)
            last_store = time.monotonic()
        return stop

    def on_checkpoint(_iteration: int, checkpoints: dict[int, Checkpoint]) -> None:
        nonlocal last_store
        _store(members)  # the series up to the checkpoint are stored first
        last_store = time.monotonic()
        for k, checkpoint in checkpoints.items():
            member_ctx = members[k].ctx

            def publish(session: Session, member_ctx: JobContext = member_ctx) -> None:
                record_checkpoint(
                    session,
                    job_id=member_ctx.job_id,
                    attempt=member_ctx.attempt,
                    artifact=FUSED_CHECKPOINT,
                )

            save_artifact(member_ctx, FUSED_CHECKPOINT, checkpoint, on_publish=publish)

    results = trainer.run(
        [m.built.train_loader for m in members if m.built is not None],
        schedules,
        iterations=iterations,
        val_loader=first.built.val_loader,
        callback=on_progress,
        should_stop=should_stop,
        checkpoint=on_checkpoint,
        resume=None if resumes[0] is None else resumes,
        snapshots=[m.spec.snapshot_count() for m in members],
        keep_traces=False,  # the series hold them: checkpoints stay the model's size
    )
    _store(members)
    ended: dict[uuid.UUID, str] = {}
    ids = [m.ctx.job_id for m in members]
    for k, (member, result) in enumerate(zip(members, results, strict=True)):
        fusion = FusedRun(
            fused=True,
            members=len(members),
            path=trainer.fused.path,
            jobs=[i for i in ids if i != member.ctx.job_id],
            member_bytes=None if group.memory is None else group.memory.bytes,
            capacity=group.capacity,
            reason=_how(len(members), trainer.fused.path, resumed_from, group.shared),
        )
        ended[member.ctx.job_id] = _end(
            member, result, fusion, resumed_from, resolved[k], partial(_weights, trainer, k)
        )
    return ended


def _how(members: int, path: str, resumed_from: int | None, shared: str | None) -> str:
    text = (
        f"fused with {members - 1} sibling{'s' if members != 2 else ''} "
        f"sharing its model configuration ({path} path)"
        if members > 1
        else "resumed its fused checkpoint alone (no sibling at its iteration was waiting)"
    )
    if resumed_from is not None and members > 1:
        text += f", resumed from iteration {resumed_from}"
    if shared is not None:
        text += f"; {shared}"
    return text


def _end(
    member: Member,
    result: FusedTrainResult,
    fusion: FusedRun,
    resumed_from: int | None,
    resolved: tuple[str, dict[str, Any], int],
    weights: Callable[[], dict[str, torch.Tensor]],
) -> str:
    ctx = member.ctx
    if member.ended is not None:  # ended at the read point where it stopped
        return member.ended
    if result.stop_reason == "cancelled":
        return ctx.stopped()
    if result.stop_reason == "diverged" or member.diverged is not None:
        return ctx.fail(f"Diverged: {member.diverged or result.stop_detail}")
    policy, args, _ = resolved
    outcome = partial(training_outcome, policy, args, result, resumed_from, fusion=fusion)
    return finish_training(ctx, weights(), result.snapshot_states, outcome)


def _weights(trainer: FusedTrainer, k: int) -> dict[str, torch.Tensor]:
    """Member ``k``'s trained weights (the fused model holds them after the run), on the CPU."""
    return {name: t.cpu() for name, t in trainer.fused.member_state_dict(k).items()}
