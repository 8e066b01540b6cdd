"""K trainings of one architecture run as one fused loop, each with its own schedule.

Smith, "Cyclical Learning Rates for Training Neural Networks",
https://arxiv.org/abs/1506.01186. A sweep's trainings (its policies × seeds,
the candidates of verified bounds) are K small, similar jobs:
:class:`FusedTrainer` stacks the K models with :class:`~clr.fused.FusedModel`
and trains them in one loop, each member with its own data order
(``train_loaders[k]``), its own :mod:`clr.policies` schedule (the LR, and the
momentum or Adam's beta1 when the schedule cycles it, set per member on the
fused optimizer every step) and its own optimizer state. Each member's
:class:`FusedTrainResult` (a :class:`~clr.TrainResult`) means what
:meth:`clr.Trainer.run` returns for a plain run of that model with
:func:`clr.make_optimizer` and ``create_scheduler``: the same LR and momentum
traces, the same losses and epoch records to float tolerance.

What a service needs around it, member by member, as :class:`~clr.Trainer`
gives it for one run:

* a progress ``callback(k, TrainProgress)`` at every read point, with exactly
  the chunks a plain run of member ``k`` would deliver (in other places);
* ``should_stop()`` polled at every read point, naming the members to stop
  (a cancelled job): they are masked, ``stop_reason="cancelled"``;
* a :class:`~clr.Checkpoint` per running member at every point of
  ``checkpoint_at`` (by default every member's cycle ends), from which
  ``run(resume=...)`` continues every member exactly (bit for bit on CPU),
  also a subset of the members in a run of its own;
* snapshot ensembles (Huang et al. 2017, https://arxiv.org/abs/1704.00109) per
  member, evaluated as :class:`~clr.Trainer` does;
* ``keep_traces=False``: delivered traces dropped, so memory and checkpoints
  stay flat.

A member whose training loss is not finite is masked at the next read (its
weights and optimizer state are frozen from then on; they may already hold
the non-finite values of the steps before the read): its traces end at that
step, its result says ``stop_reason="diverged"`` and why, and the others go on
exactly as they would without it (bit for bit).

Not supported (use :class:`~clr.Trainer`): AMP, several param groups,
gradient accumulation. With dropout, a member's masks differ from a separate
run's (and a resumed subset's from the full run's).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import torch
from torch import Tensor, nn
from torch.func import grad_and_value

from clr._batch import split_batch, to_device
from clr.exceptions import ScheduleError
from clr.fused import (
    FusedAdam,
    FusedAdamW,
    FusedModel,
    FusedOptimizer,
    FusedSGD,
    _Backprop,
    _batched_loss,
    _batched_metric,
    _loss_grad,
    _stack_inputs,
)
from clr.optim import OPTIMIZERS, OptimizerError
from clr.policies import Schedule, cycle_ends
from clr.train import (
    Checkpoint,
    EnsembleMetrics,
    EpochRecord,
    TrainProgress,
    TrainResult,
    _evaluate_ensemble,
    _rng_state,
    _set_rng_state,
    _to_cpu,
)

__all__ = ["FusedTrainResult", "FusedTrainStopReason", "FusedTrainer"]

FusedTrainStopReason = Literal["completed", "cancelled", "diverged"]
LossFn = Callable[[Any, Any], Tensor]
MetricFn = Callable[[Any, Any], Tensor]
BatchFn = Callable[[Any], tuple[Any, Any]]
# (inputs, targets) -> (gradients, (K,) losses, outputs)
_StepFn = Callable[[Any, Any], tuple[list[Tensor], Tensor, Any]]
# A member's batch rows are padded to a multiple of this (see _pad_rows).
_ALIGN_ROWS = 16


@dataclass
class FusedTrainResult(TrainResult):
    """One member's :class:`~clr.TrainResult`, with what the fused run adds.

    Every field of :class:`~clr.TrainResult` means what it means for a plain
    run (``seconds`` is the fused loop's wall time, shared by all members).
    ``stop_reason`` may also be ``"diverged"``: the member's loss was not
    finite at iteration ``diverged_at``; its traces end there (that loss
    included), ``iterations`` is ``diverged_at + 1``, its epochs are those closed
    before, and ``val_loss`` / ``val_accuracy`` / ``ensemble`` are ``None``.
    ``"cancelled"``: ``should_stop`` named it; ``iterations`` is where it
    stopped, with no final evaluation.

    Attributes:
        member: the member's index ``k``.
        members: K.
        path: how the members ran, ``"stacked"`` or ``"vmap"`` (see
            :attr:`clr.fused.FusedModel.path`).
        diverged_at: the iteration whose loss was not finite, or ``None``.
        stop_detail: a sentence saying why the member stopped.
    """

    stop_reason: FusedTrainStopReason  # type: ignore[assignment]
    member: int = 0
    members: int = 1
    path: str = "stacked"
    diverged_at: int | None = None
    stop_detail: str = ""

    @property
    def best_val_accuracy(self) -> float | None:
        """The highest validation accuracy of the epoch records, ``None`` without any."""
        values = [
            e.val_accuracy
            for e in self.epochs
            if e.val_accuracy is not None and math.isfinite(e.val_accuracy)
        ]
        return max(values) if values else None

    def to_dict(self) -> dict[str, Any]:
        """:meth:`clr.TrainResult.to_dict` plus the member's fused fields."""
        out = super().to_dict()
        out.update(
            best_val_accuracy=self.best_val_accuracy,
            member=self.member,
            members=self.members,
            path=self.path,
            diverged_at=self.diverged_at,
            stop_detail=self.stop_detail,
        )
        return out


@dataclass
class _Member:
    """One member's loop state: what its checkpoint saves and a resume restores."""

    loader: Iterable[Any]
    epoch_len: int | None
    stateful: bool  # the loader has state_dict / load_state_dict
    set_epoch: Callable[[int], Any] | None
    ends: list[int]  # its cycle ends up to the run's length
    snapshots_kept: int  # how many snapshots it keeps
    batches: Iterator[Any] | None = None
    epoch: int = 0
    batch: int = 0
    last: tuple[Any, Any] | None = None  # the last batch, fed again once masked
    iteration: int = 0  # iterations done (whose losses were read)
    losses: list[float] = field(default_factory=list)  # from trace_start
    trace_start: int = 0
    delivered: int = 0
    epochs: list[EpochRecord] = field(default_factory=list)
    new_epochs: list[EpochRecord] = field(default_factory=list)
    loss_sum: float = 0.0
    accuracy_sum: float = 0.0
    steps: int = 0
    epoch_start_rng: Tensor | None = None
    snapshots: list[dict[str, Tensor]] = field(default_factory=list)
    snapshot_iterations: list[int] = field(default_factory=list)
    active: bool = True
    stop_reason: FusedTrainStopReason = "completed"
    diverged_at: int | None = None
    detail: str = ""


def _values_fn(schedule: Schedule) -> Callable[[int], tuple[float, float | None]]:
    """The schedule's ``(lr, momentum)`` at a step, as :class:`~clr.ScheduledLR` reads them."""
    values_at = getattr(schedule, "values_at", None)
    if values_at is not None:
        return cast(Callable[[int], tuple[float, float | None]], values_at)
    return lambda step: (schedule.lr_at(step), schedule.momentum_at(step))


def _pad_rows(xs: Tensor, ys: Any) -> tuple[Tensor, int | None]:
    """``(K, B, ...)`` inputs with zero rows added up to a multiple of 16 rows a member.

    Every member's block of the batched products then has the same memory
    alignment whatever its index, and CPU matrix kernels (whose summation order
    can depend on alignment) give a member the same values in a run of any K:
    a subset of members resumed alone continues bit for bit. Whole multiples
    (batches of 16, 32, 64, ...) are left as they are, and so are inputs whose
    second dimension is not the targets' (not a batch of samples).

    Returns:
        The inputs, and the rows before padding (``None`` when not padded).
    """
    rows = int(xs.shape[1]) if xs.dim() > 1 else 0
    if (
        rows % _ALIGN_ROWS == 0
        or not isinstance(ys, Tensor)
        or ys.dim() < 2
        or int(ys.shape[1]) != rows
    ):
        return xs, None
    pad = xs.new_zeros(xs.shape[0], _ALIGN_ROWS - rows % _ALIGN_ROWS, *xs.shape[2:])
    return torch.cat([xs, pad], dim=1), rows


def _trim_rows(outputs: Any, rows: int | None, dim: int) -> Any:
    """``outputs`` without the rows :func:`_pad_rows` added (``dim``: the rows' dimension)."""
    if rows is None or not isinstance(outputs, Tensor) or outputs.dim() <= dim:
        return outputs
    return outputs.narrow(dim, 0, rows)


def _count_list(name: str, value: int | Sequence[int], k: int) -> list[int]:
    """``value`` as K non-negative integers (one number for all, or K)."""
    values = [value] * k if isinstance(value, int) else list(value)
    if len(values) != k:
        raise ValueError(f"{name} must be one integer or {k} integers, got {len(values)}")
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name}[{i}] must be a non-negative integer, got {v!r}")
    return values


class FusedTrainer:
    """Trains K models of one architecture as one, each member with its own schedule.

    Member ``k`` trains ``models[k]`` (copied, never changed) with a fresh
    optimizer named ``optimizer`` (as :func:`clr.make_optimizer` builds it),
    batches from ``train_loaders[k]`` and the LR (and, when the schedule
    cycles it, the momentum or beta1) of ``schedules[k]`` at every step: what
    ``Trainer(model, make_optimizer(...), criterion, scheduler=ScheduledLR(opt,
    schedules[k], cycle_momentum=...)).run(train_loaders[k], ...)`` does, with
    ``cycle_momentum`` on when the schedule defines a momentum (as
    :func:`clr.create_scheduler` does). Losses stay on the device and are read
    for every member at once at the read points: every ``read_every`` steps,
    every member's epoch ends and cycle ends, the checkpoint points and the
    end. A member whose loss is not finite is masked there.

    After :meth:`run`, :attr:`fused` holds the trained weights
    (``trainer.fused.member_state_dict(k)``).

    Not supported (use :class:`~clr.Trainer`): AMP, several param groups.
    Loaders whose order comes from the global RNG at ``iter()`` time (a
    shuffling ``DataLoader``) draw other orders than separate runs would;
    :class:`~clr.workloads.TensorBatches` (own seed per loader) draws the same.

    Args:
        models: K >= 1 models of one architecture (see :class:`~clr.fused.FusedModel`).
        optimizer: ``sgd``, ``adam`` or ``adamw``.
        criterion: ``criterion(outputs, targets) -> scalar loss`` for one member
            (cross-entropy runs batched on the stacked path, anything else is vmapped).
        metric_fn: optional ``metric_fn(outputs, targets) -> 0-dim tensor`` (accuracy).
        momentum, weight_decay, nesterov, betas, eps: the optimizer's
            hyperparameters, as :func:`clr.make_optimizer`; a schedule that cycles
            momentum overrides ``momentum`` (SGD) or ``betas[0]`` (Adam) for its member.
        read_every: steps between reads of the losses (the host syncs).
        batch_fn: turns one loader item into ``(inputs, targets)`` tensors.
        device: where the stacked weights go; defaults to ``models[0]``'s.
        randomness: vmap's randomness (see :class:`~clr.fused.FusedModel`).
        allow_stacked: ``False`` forces the vmap path.

    Raises:
        ValueError: no models, models of different architectures or a bad ``read_every``.
        OptimizerError: an unknown optimizer or an impossible hyperparameter.

    Example:
        >>> from clr.policies import make_schedule
        >>> from clr.workloads import build_workload
        >>> ws = [build_workload("digits_mlp", {"width": 16}, seed=s) for s in range(2)]
        >>> schedules = [make_schedule("triangular", base_lr=0.01, max_lr=m, step_size_up=11)
        ...              for m in (0.1, 0.2)]
        >>> trainer = FusedTrainer([w.model for w in ws], "sgd", ws[0].loss_fn,
        ...                        metric_fn=ws[0].metric_fn)
        >>> saved = {}
        >>> results = trainer.run([w.train_loader for w in ws], schedules, iterations=44,
        ...                       val_loader=ws[0].val_loader, snapshots=2,
        ...                       checkpoint=lambda it, ckpts: saved.update({it: ckpts}))
        >>> [(r.stop_reason, r.cycle_ends, len(r.lrs), r.ensemble.snapshots) for r in results]
        [('completed', [22, 44], 44, 2), ('completed', [22, 44], 44, 2)]

        Resume member 1 alone from iteration 22, with a fresh trainer:

        >>> w = build_workload("digits_mlp", {"width": 16}, seed=1)
        >>> again = FusedTrainer([w.model], "sgd", w.loss_fn, metric_fn=w.metric_fn).run(
        ...     [w.train_loader], schedules[1:], iterations=44, val_loader=w.val_loader,
        ...     snapshots=2, resume=[saved[22][1]])
        >>> again[0].losses == results[1].losses
        True
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        optimizer: Literal["sgd", "adam", "adamw"] | str,
        criterion: LossFn,
        *,
        metric_fn: MetricFn | None = None,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        read_every: int = 16,
        batch_fn: BatchFn | None = None,
        device: str | torch.device | None = None,
        randomness: Literal["different", "same", "error"] = "different",
        allow_stacked: bool = True,
    ) -> None:
        self.models = list(models)
        if not self.models:
            raise ValueError("models must hold at least one model, got none")
        if optimizer not in OPTIMIZERS:
            raise OptimizerError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        if not callable(criterion):
            raise ValueError(f"criterion must be callable, got {criterion!r}")
        if metric_fn is not None and not callable(metric_fn):
            raise ValueError(f"metric_fn must be callable, got {metric_fn!r}")
        if isinstance(read_every, bool) or not isinstance(read_every, int) or read_every < 1:
            raise ValueError(f"read_every must be a positive integer, got {read_every!r}")
        self.optimizer = optimizer
        self.criterion = criterion
        self.metric_fn = metric_fn
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.nesterov = nesterov
        self.betas = betas
        self.eps = eps
        self.read_every = read_every
        self.batch_fn: BatchFn = batch_fn or split_batch
        if device is None:
            first = next(self.models[0].parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.randomness = randomness
        self.fused = FusedModel(self.models, randomness=randomness, allow_stacked=allow_stacked)
        self._ensemble_model: nn.Module | None = None

    @property
    def num_members(self) -> int:
        """K, the number of members."""
        return len(self.models)

    def _make_optimizer(self, params: list[Tensor], lr: Tensor, momentum: Tensor) -> FusedOptimizer:
        if self.optimizer == "sgd":
            return FusedSGD(
                params,
                lr,
                momentum=momentum,
                weight_decay=self.weight_decay,
                nesterov=self.nesterov,
            )
        cls = FusedAdam if self.optimizer == "adam" else FusedAdamW
        return cls(
            params,
            lr,
            betas=(momentum, self.betas[1]),
            eps=self.eps,
            weight_decay=self.weight_decay,
        )

    def run(
        self,
        train_loaders: Sequence[Iterable[Any]],
        schedules: Sequence[Schedule],
        *,
        iterations: int,
        val_loader: Iterable[Any] | None = None,
        callback: Callable[[int, TrainProgress], None] | None = None,
        should_stop: Callable[[], Collection[int]] | None = None,
        checkpoint: Callable[[int, dict[int, Checkpoint]], None] | None = None,
        checkpoint_at: Iterable[int] | None = None,
        resume: Sequence[Checkpoint | None] | None = None,
        snapshots: int | Sequence[int] = 0,
        keep_traces: bool = True,
    ) -> list[FusedTrainResult]:
        """Train every member for ``iterations`` batches (or continue them up to there).

        Args:
            train_loaders: K iterables of batches, ``train_loaders[k]`` feeding member
                ``k``; each ``iter()`` is one of its epochs (a loader with
                ``set_epoch`` and no ``state_dict`` is told the epoch first, as
                :class:`~clr.Trainer` does). The members' batches must have one shape.
            schedules: K :mod:`clr.policies` schedules (from
                :func:`clr.policies.make_schedule`), one per member.
            iterations: every member's length in batches.
            val_loader: batches evaluated for every member (``eval()`` mode, no
                gradients) at each of its epoch ends, the run's end included,
                and for its snapshot ensemble.
            callback: ``callback(k, progress)`` receives member ``k``'s iterations
                and epochs once each, in order, in :class:`~clr.TrainProgress`
                chunks at the read points, meaning what a plain
                :meth:`clr.Trainer.run` of that member would hand over
                (``cycle_end`` set when the chunk ends at one of the member's
                own cycle ends); called only for members with something new. A
                member that diverged gets a last chunk ending with its
                non-finite loss, then no more.
            should_stop: polled at every read point before the end; returns the
                indices of the members to stop now (``stop_reason="cancelled"``,
                no final evaluation). They are masked: their weights and
                optimizer state stay as they are, the others go on bit for bit
                as without them. When no member is left the run ends.
            checkpoint: ``checkpoint(it, {k: Checkpoint})`` at every iteration of
                ``checkpoint_at``, after ``callback`` has received everything up
                to it, with one :class:`~clr.Checkpoint` per member still running
                (its ``model`` is member ``k``'s state dict, its ``optimizer``
                ``{"fused": optimizer, "state": ...}`` member ``k``'s slice of the
                fused optimizer's state; :meth:`clr.Checkpoint.save` /
                ``load`` round-trip it).
            checkpoint_at: the iterations to checkpoint at, each in
                ``[1, iterations]``; by default every member's cycle ends (the
                union; the run's end when it is one).
            resume: one entry per member: all ``None`` (a fresh run) or all
                checkpoints taken by :class:`FusedTrainer` at the same iteration
                (possibly of a run with more members: pass the models, loaders
                and schedules of those members, built as the first time).
                Every member continues exactly as the uninterrupted run.
            snapshots: one count for all members or K: keep member ``k``'s
                weights at its last ``snapshots[k]`` cycle ends and evaluate
                their ensemble on ``val_loader`` at the end, as
                :class:`~clr.Trainer` does.
            keep_traces: as :meth:`clr.Trainer.run`: ``False`` drops each
                member's traces once delivered (memory and checkpoints stay
                flat); the results' traces then begin at ``trace_start``.

        Returns:
            K :class:`FusedTrainResult`\\ s in the members' order.

        Raises:
            ValueError: naming the argument, for K mismatches, a bad ``iterations``,
                ``snapshots`` or ``checkpoint_at``, snapshots for a member with no
                cycle end, a loader with no batches, batches that do not stack,
                ``should_stop`` naming no member, or a ``resume`` that mixes
                ``None`` and checkpoints, holds checkpoints of other iterations,
                not taken by :class:`FusedTrainer` or with another optimizer.
            ScheduleError: if a schedule cannot run for ``iterations`` steps.
        """
        k_members = self.num_members
        loaders = list(train_loaders)
        if len(loaders) != k_members:
            raise ValueError(f"train_loaders must hold {k_members} loaders, got {len(loaders)}")
        schedules = list(schedules)
        if len(schedules) != k_members:
            raise ValueError(f"schedules must hold {k_members} schedules, got {len(schedules)}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
            raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
        for name, fn in (("callback", callback), ("should_stop", should_stop)):
            if fn is not None and not callable(fn):
                raise ValueError(f"{name} must be callable, got {fn!r}")
        if checkpoint is not None and not callable(checkpoint):
            raise ValueError(f"checkpoint must be callable, got {checkpoint!r}")
        if not isinstance(keep_traces, bool):
            raise ValueError(f"keep_traces must be true or false, got {keep_traces!r}")
        snapshot_counts = _count_list("snapshots", snapshots, k_members)
        ends = []
        for k, schedule in enumerate(schedules):
            try:
                schedule.lr_at(iterations)
            except ScheduleError as exc:
                raise ScheduleError(f"schedules[{k}]: iterations={iterations}: {exc}") from exc
            ends.append(cycle_ends(schedule, iterations))
            if snapshot_counts[k] and not ends[k]:
                raise ValueError(
                    f"snapshots[{k}]={snapshot_counts[k]} needs cycle ends to take them at, "
                    f"but schedules[{k}] has none within iterations={iterations}"
                )
        if checkpoint_at is None:
            checkpoints = sorted({e for member_ends in ends for e in member_ends})
        else:
            checkpoints = sorted(set(checkpoint_at))
            for at in checkpoints:
                if isinstance(at, bool) or not isinstance(at, int) or not 1 <= at <= iterations:
                    raise ValueError(
                        f"checkpoint_at must hold iterations in [1, {iterations}], got {at!r}"
                    )
        resumed = self._check_resume(resume, iterations, keep_traces)
        default = self.betas[0] if self.optimizer in ("adam", "adamw") else self.momentum
        lr_lists: list[list[float]] = []
        momentum_lists: list[list[float]] = []
        cycled = False
        for schedule in schedules:
            values_at = _values_fn(schedule)
            values = [values_at(step) for step in range(iterations)]
            lr_lists.append([lr for lr, _ in values])
            momentum_lists.append([default if m is None else m for _, m in values])
            cycled = cycled or any(m is not None for _, m in values)
        members = [
            self._member(loader, k, ends[k], snapshot_counts[k]) for k, loader in enumerate(loaders)
        ]
        t0 = time.perf_counter()
        loop = _Loop(
            self,
            members,
            lr_lists,
            momentum_lists,
            cycled,
            iterations=iterations,
            val_loader=val_loader,
            callback=callback,
            should_stop=should_stop,
            checkpoint=checkpoint,
            checkpoints=checkpoints,
            keep_traces=keep_traces,
            t0=t0,
        )
        loop.run(resumed)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        ensembles: list[EnsembleMetrics | None] = []
        for m in members:
            ensemble = None
            if m.stop_reason == "completed" and m.snapshots and val_loader is not None:
                ens_loss, ens_accuracy = self._evaluate_snapshots(val_loader, m.snapshots)
                ensemble = EnsembleMetrics(
                    snapshots=len(m.snapshots),
                    iterations=list(m.snapshot_iterations),
                    val_loss=ens_loss,
                    val_accuracy=ens_accuracy,
                )
            ensembles.append(ensemble)
        seconds = time.perf_counter() - t0
        results = []
        for k, m in enumerate(members):
            done = m.iteration
            completed = m.stop_reason == "completed"
            last = m.epochs[-1] if completed and m.epochs else None
            results.append(
                FusedTrainResult(
                    lrs=lr_lists[k][m.trace_start : done],
                    momenta=momentum_lists[k][m.trace_start : done],
                    losses=m.losses,
                    epochs=m.epochs,
                    cycle_ends=[e for e in ends[k] if e <= done],
                    iterations=done,
                    val_loss=None if last is None else last.val_loss,
                    val_accuracy=None if last is None else last.val_accuracy,
                    ensemble=ensembles[k],
                    stop_reason=m.stop_reason,
                    seconds=seconds,
                    device=str(self.device),
                    snapshot_states=m.snapshots,
                    snapshot_iterations=m.snapshot_iterations,
                    trace_start=m.trace_start,
                    member=k,
                    members=k_members,
                    path=loop.path,
                    diverged_at=m.diverged_at,
                    stop_detail=m.detail or f"trained all {done} iterations",
                )
            )
        return results

    def _check_resume(
        self, resume: Sequence[Checkpoint | None] | None, iterations: int, keep_traces: bool
    ) -> list[Checkpoint] | None:
        """The checkpoints to resume from, checked, or ``None`` for a fresh run."""
        if resume is None:
            return None
        entries = list(resume)
        k_members = self.num_members
        if len(entries) != k_members:
            raise ValueError(f"resume must hold {k_members} entries, got {len(entries)}")
        if all(c is None for c in entries):
            return None
        for k, ckpt in enumerate(entries):
            if not isinstance(ckpt, Checkpoint):
                raise ValueError(
                    f"resume must be all None or all Checkpoints, got resume[{k}]="
                    f"{type(ckpt).__name__}"
                )
        ckpts = cast(list[Checkpoint], entries)
        first = ckpts[0].iteration
        for k, ckpt in enumerate(ckpts):
            optimizer = ckpt.optimizer
            if not isinstance(optimizer, Mapping) or "fused" not in optimizer:
                raise ValueError(
                    f"resume[{k}] was not taken by FusedTrainer (a clr.Trainer checkpoint): "
                    "resume it with clr.Trainer.run(resume=...)"
                )
            if optimizer["fused"] != self.optimizer:
                raise ValueError(
                    f"resume[{k}] was taken with optimizer {optimizer['fused']!r}, this "
                    f"trainer's is {self.optimizer!r}"
                )
            if ckpt.iteration != first:
                raise ValueError(
                    f"resume[{k}] is at iteration {ckpt.iteration}, resume[0] at {first}: "
                    "all must be taken at the same iteration"
                )
            if ckpt.iteration > iterations:
                raise ValueError(
                    f"iterations={iterations} is before resume[{k}]'s iteration {ckpt.iteration}"
                )
            if ckpt.iteration == ckpt.iterations != iterations:
                raise ValueError(
                    f"iterations={iterations}: resume[{k}] ends a finished run of "
                    f"{ckpt.iterations} iterations (its last epoch is closed); resume from "
                    "an earlier one to run longer"
                )
            if ckpt.scheduler.get("last_epoch") != ckpt.iteration:
                raise ValueError(
                    f"resume[{k}]'s scheduler is at step {ckpt.scheduler.get('last_epoch')!r}, "
                    f"its iteration is {ckpt.iteration}"
                )
            traced = len(ckpt.losses)
            if len(ckpt.lrs) != traced or ckpt.trace_start + traced != ckpt.iteration:
                raise ValueError(
                    f"resume[{k}]'s traces ({len(ckpt.lrs)} lrs and {traced} losses from "
                    f"iteration {ckpt.trace_start}) do not end at its iteration {ckpt.iteration}"
                )
            if keep_traces and ckpt.trace_start > 0:
                raise ValueError(
                    f"keep_traces=True, but resume[{k}] dropped its traces before iteration "
                    f"{ckpt.trace_start} (taken with keep_traces=False); resume it with "
                    "keep_traces=False"
                )
        return ckpts

    def _member(self, loader: Iterable[Any], k: int, ends: list[int], snapshots: int) -> _Member:
        try:
            epoch_len: int | None = len(loader)  # type: ignore[arg-type]
        except TypeError:
            epoch_len = None
        if epoch_len == 0:
            raise ValueError(f"train_loaders[{k}] yielded no batches")
        stateful = hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict")
        set_epoch = None if stateful else getattr(loader, "set_epoch", None)
        return _Member(
            loader=loader,
            epoch_len=epoch_len,
            stateful=stateful,
            set_epoch=set_epoch,
            ends=ends,
            snapshots_kept=snapshots,
        )

    # ----------------------------------------------------------------- evaluation

    def _evaluate_snapshots(
        self, loader: Iterable[Any], states: list[dict[str, Tensor]]
    ) -> tuple[float, float | None]:
        """A member's snapshot ensemble, evaluated as :class:`~clr.Trainer` does."""
        if self._ensemble_model is None:
            # a copy on the run's device lends its forward (and any non-persistent buffer)
            self._ensemble_model = copy.deepcopy(self.models[0]).to(self.device)
        return _evaluate_ensemble(
            self._ensemble_model,
            loader,
            states,
            loss_fn=self.criterion,
            metric_fn=self.metric_fn,
            batch_fn=self.batch_fn,
            device=self.device,
        )


class _Loop:
    """One :meth:`FusedTrainer.run`'s fused loop over the live stacked tensors."""

    def __init__(
        self,
        trainer: FusedTrainer,
        members: list[_Member],
        lr_lists: list[list[float]],
        momentum_lists: list[list[float]],
        cycled: bool,
        *,
        iterations: int,
        val_loader: Iterable[Any] | None,
        callback: Callable[[int, TrainProgress], None] | None,
        should_stop: Callable[[], Collection[int]] | None,
        checkpoint: Callable[[int, dict[int, Checkpoint]], None] | None,
        checkpoints: list[int],
        keep_traces: bool,
        t0: float,
    ) -> None:
        self.trainer = trainer
        self.members = members
        self.lr_lists = lr_lists
        self.momentum_lists = momentum_lists
        self.cycled = cycled
        self.iterations = iterations
        self.val_loader = val_loader
        self.callback = callback
        self.should_stop = should_stop
        self.checkpoint = checkpoint
        self.checkpoints = set(checkpoints)
        self.keep_traces = keep_traces
        self.t0 = t0
        fused, device = trainer.fused, trainer.device
        fused.train()
        # the path is fixed for the run (in eval mode a dropout chain could read "stacked")
        self.path = fused.path
        self.stacked = self.path == "stacked"
        self.in_out = fused.in_out_names if self.stacked else frozenset()
        source = fused.stacked_params() if self.stacked else fused.params
        self.params = {n: p.to(device, copy=True) for n, p in source.items()}
        self.buffers = {n: b.to(device, copy=True) for n, b in fused.buffers.items()}
        self.names = list(self.params)
        self.lr_table = torch.tensor(lr_lists, dtype=torch.float64)  # (K, iterations), host
        self.momentum_table = torch.tensor(momentum_lists, dtype=torch.float64)
        self.optimizer = trainer._make_optimizer(
            [self.params[n] for n in self.names], self.lr_table[:, 0], self.momentum_table[:, 0]
        )
        self.mask: Tensor | None = None  # None while every member runs: no masking cost
        self.pending_loss: list[Tensor] = []
        self.pending_acc: list[Tensor] = []
        self.val_cache: dict[int, tuple[list[float], list[float] | None]] = {}
        self.it = 0
        self.rows: int | None = None  # a member's batch rows before _pad_rows, when padded

    # ----------------------------------------------------------------- the loop

    def run(self, resume: list[Checkpoint] | None) -> None:
        trainer, members, device = self.trainer, self.members, self.trainer.device
        iterations, batch_fn = self.iterations, trainer.batch_fn
        if resume is not None:
            self._restore(resume)
        names = self.names
        dtype = self.params[names[0]].dtype if names else torch.float32
        lr_rows = self.lr_table.t().contiguous().to(device, dtype)  # (iterations, K)
        step_fn = self._step_fn()
        metric = _batched_metric(trainer.metric_fn) if trainer.metric_fn is not None else None
        ends = {e for m in members for e in m.ends}
        last_read = self.it
        try:
            while self.it < iterations and any(m.active for m in members):
                inputs: list[Any] = [None] * len(members)
                targets: list[Any] = [None] * len(members)
                for k, m in enumerate(members):
                    batch = self._next_batch(m, k) if m.active else None
                    if batch is None:  # masked: fed its last batch (or another's), updates dropped
                        continue
                    x, y = batch_fn(batch)
                    m.last = (x, y)
                    inputs[k], targets[k] = x, y
                if not any(m.active for m in members):
                    break  # stopped while fetching
                spare = next(m.last for m in members if m.last is not None)
                for k, m in enumerate(members):
                    if inputs[k] is None:
                        inputs[k], targets[k] = m.last if m.last is not None else spare
                xs = to_device(_stack_inputs(inputs, "inputs", ValueError), device)
                ys = to_device(_stack_inputs(targets, "targets", ValueError), device)
                xs, self.rows = _pad_rows(xs, ys)
                it = self.it
                if self.cycled:
                    self.optimizer.set_momentum(self.momentum_table[:, it])
                grads, loss, outputs = step_fn(xs, ys)
                self.optimizer.lr = self.lr_table[:, it]
                self.optimizer.step(grads, self.mask, lr=lr_rows[it])
                self.pending_loss.append(loss)
                if metric is not None:
                    with torch.no_grad():
                        self.pending_acc.append(metric(outputs.detach(), ys))
                self.it = it = it + 1
                closing = []
                for k, m in enumerate(members):
                    if m.active:
                        m.batch += 1
                        if m.batch == m.epoch_len or it == iterations:
                            closing.append(k)
                if (
                    closing
                    or it - last_read >= trainer.read_every
                    or it in self.checkpoints
                    or it in ends
                    or it == iterations
                ):
                    self._sync(closing, at_step=True)
                    last_read = it
                    for k in closing:
                        members[k].batches = None
        finally:
            self._write_back()
        self._read()  # nothing is left pending at the end; kept for safety
        for k in range(len(members)):
            self._deliver(k)

    def _next_batch(self, m: _Member, k: int) -> Any | None:
        """Member ``k``'s next batch, closing its epoch first when its iterator ran out
        (a loader without ``len``); ``None`` when the read there masked it."""
        while True:
            if m.batches is None:
                if m.batch == 0:  # (a stateful loader resumed mid-epoch keeps the saved one)
                    m.epoch_start_rng = torch.get_rng_state()
                    if m.set_epoch is not None:
                        m.set_epoch(m.epoch)
                m.batches = iter(m.loader)
            try:
                return next(m.batches)
            except StopIteration:
                m.batches = None
                if m.batch == 0:
                    raise ValueError(f"train_loaders[{k}] yielded no batches") from None
                self._sync([k], at_step=False)
                if not m.active:
                    return None

    def _step_fn(self) -> _StepFn:
        fused, criterion = self.trainer.fused, self.trainer.criterion
        params, buffers, names = self.params, self.buffers, self.names
        if self.stacked:
            assert fused._plan is not None
            backprop = _Backprop(fused._plan, params, names)
            dtype = params[names[0]].dtype if names else torch.float32
            batched = _batched_loss(criterion)
            vmapped = torch.vmap(criterion)

            def stacked(x: Any, y: Any) -> tuple[list[Tensor], Tensor, Any]:
                # the forward and backward written by hand (no autograd graph); member
                # k's loss depends on member k's weights only, so the gradient of the
                # losses' sum is every member's own gradient
                full, tape = backprop.forward(x)
                rows = self.rows
                outputs = _trim_rows(full, rows, 1)
                prepared = batched.prepare(y, dtype) if batched is not None else None
                if batched is not None and prepared is not None and outputs.dim() == 3:
                    loss, grad = batched.loss_and_grad(outputs, prepared)
                else:
                    loss, grad = _loss_grad(vmapped, outputs, y)
                if grad.shape != full.shape:  # the padding rows (_pad_rows) get no gradient
                    padded = full.new_zeros(full.shape)
                    padded.narrow(1, 0, grad.shape[1]).copy_(grad)
                    grad = padded
                return backprop.backward(grad, tape), loss, outputs

            return stacked

        def member_loss(
            p: dict[str, Tensor], b: dict[str, Tensor], x: Any, y: Any
        ) -> tuple[Tensor, Any]:
            outputs = _trim_rows(fused.functional_forward(p, b, x), self.rows, 0)
            return criterion(outputs, y), outputs

        vstep = torch.vmap(
            grad_and_value(member_loss, has_aux=True), randomness=self.trainer.randomness
        )

        def by_vmap(x: Any, y: Any) -> tuple[list[Tensor], Tensor, Any]:
            grads, (loss, outputs) = vstep(params, buffers, x, y)
            return [grads[n] for n in names], loss.detach(), outputs

        return by_vmap

    # ----------------------------------------------------------------- read points

    def _sync(self, closing: list[int], *, at_step: bool) -> None:
        """A read point: read the losses, close epochs, deliver, snapshot, checkpoint, poll."""
        members, it = self.members, self.it
        self._read()
        for k in closing:
            if members[k].active:
                self._end_epoch(k)
        for k in range(len(members)):
            self._deliver(k)
        if at_step:
            for k, m in enumerate(members):
                if m.active and m.snapshots_kept and it in m.ends:
                    kept = m.snapshots_kept
                    m.snapshots = [*m.snapshots, self._member_weights(k)][-kept:]
                    m.snapshot_iterations = [*m.snapshot_iterations, it][-kept:]
            if self.checkpoint is not None and it in self.checkpoints:
                running = [k for k, m in enumerate(members) if m.active]
                if running:
                    rng = _rng_state()
                    self.checkpoint(it, {k: self._capture(k, rng) for k in running})
        if self.should_stop is not None and it < self.iterations:
            stop = self.should_stop()
            newly = False
            for k in stop:
                if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < len(members):
                    raise ValueError(
                        f"should_stop must return member indices in [0, {len(members)}), got {k!r}"
                    )
                m = members[k]
                if m.active:
                    m.active = False
                    m.stop_reason = "cancelled"
                    m.detail = f"cancelled by should_stop at iteration {it}"
                    newly = True
            if newly:
                self._update_mask()

    def _update_mask(self) -> None:
        self.mask = torch.tensor([m.active for m in self.members], device=self.trainer.device)

    def _read(self) -> None:
        """The host sync: every member's pending losses (and metrics) in one transfer."""
        pending_loss, pending_acc = self.pending_loss, self.pending_acc
        if not pending_loss:
            return
        losses = torch.stack(pending_loss).float().t().tolist()  # (K, chunk)
        accs = torch.stack(pending_acc).float().t().tolist() if pending_acc else None
        start = self.it - len(pending_loss)
        pending_loss.clear()
        pending_acc.clear()
        newly = False
        for k, m in enumerate(self.members):
            if not m.active:
                continue
            chunk = losses[k]
            bad = next((i for i, v in enumerate(chunk) if not math.isfinite(v)), None)
            if bad is not None:
                m.losses.extend(chunk[: bad + 1])
                m.iteration = start + bad + 1
                m.diverged_at = start + bad
                m.detail = (
                    f"loss {chunk[bad]} at iteration {start + bad} "
                    f"(lr={self.lr_lists[k][start + bad]:.3g}): masked, the others went on"
                )
                m.active = False
                m.stop_reason = "diverged"
                newly = True
                continue
            m.losses.extend(chunk)
            m.iteration = self.it
            m.loss_sum += math.fsum(chunk)
            if accs is not None:
                m.accuracy_sum += math.fsum(accs[k])
            m.steps += len(chunk)
        if newly:
            self._update_mask()

    def _end_epoch(self, k: int) -> None:
        m, it = self.members[k], self.it
        val_loss: float | None = None
        val_accuracy: float | None = None
        if self.val_loader is not None:
            if it not in self.val_cache:
                self.val_cache.clear()
                self.val_cache[it] = self._evaluate(self.val_loader)
            v_losses, v_accs = self.val_cache[it]
            val_loss = v_losses[k]
            val_accuracy = None if v_accs is None else v_accs[k]
        record = EpochRecord(
            epoch=m.epoch,
            iteration=it,
            train_loss=m.loss_sum / m.steps,
            train_accuracy=m.accuracy_sum / m.steps if self.trainer.metric_fn is not None else None,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
        )
        m.epochs.append(record)
        m.new_epochs.append(record)
        m.epoch += 1
        m.batch = 0
        m.loss_sum = m.accuracy_sum = 0.0
        m.steps = 0

    def _deliver(self, k: int) -> None:
        """Member ``k``'s undelivered iterations and epochs to the callback, then (with
        ``keep_traces=False``) dropped."""
        m = self.members[k]
        start, stop = m.delivered, m.iteration
        if stop == start and not m.new_epochs:
            return
        first, last = start - m.trace_start, stop - m.trace_start
        if self.callback is not None:
            self.callback(
                k,
                TrainProgress(
                    start=start,
                    lrs=self.lr_lists[k][start:stop],
                    momenta=self.momentum_lists[k][start:stop],
                    losses=m.losses[first:last],
                    epochs=list(m.new_epochs),
                    cycle_end=stop if stop > start and stop in m.ends else None,
                    iterations=self.iterations,
                    elapsed=time.perf_counter() - self.t0,
                ),
            )
        m.delivered = stop
        m.new_epochs.clear()
        if not self.keep_traces and last > 0:
            del m.losses[:last]
            m.trace_start = stop

    # ----------------------------------------------------------------- checkpoints

    def _layout(self) -> dict[str, Tensor]:
        """The live weights in :attr:`FusedModel.params`' layout (views)."""
        return {n: p.transpose(1, 2) if n in self.in_out else p for n, p in self.params.items()}

    def _member_weights(self, k: int) -> dict[str, Tensor]:
        state = self.trainer.fused.member_state_dict(k, params=self._layout(), buffers=self.buffers)
        return {n: t.to("cpu") for n, t in state.items()}

    def _capture(self, k: int, rng: dict[str, Any]) -> Checkpoint:
        m, it = self.members[k], self.it
        assert m.epoch_start_rng is not None  # set when the epoch's iterator was made
        state = self.optimizer.member_state(k)
        for key, value in list(state.items()):
            if isinstance(value, list):  # one tensor per param, in the params' order
                state[key] = {
                    n: (t.t() if n in self.in_out else t).contiguous().to("cpu")
                    for n, t in zip(self.names, value, strict=True)
                }
        loader_state = _to_cpu(m.loader.state_dict()) if m.stateful else None  # type: ignore[attr-defined]
        return Checkpoint(
            iteration=it,
            iterations=self.iterations,
            epoch=m.epoch,
            batch=m.batch,
            model=self._member_weights(k),
            optimizer={"fused": self.trainer.optimizer, "state": state},
            scheduler={"last_epoch": it},
            scaler=None,
            rng=copy.deepcopy(rng),
            loader=loader_state,
            epoch_start_rng=m.epoch_start_rng.clone(),
            epochs=list(m.epochs),
            epoch_loss_sum=m.loss_sum,
            epoch_accuracy_sum=m.accuracy_sum,
            epoch_steps=m.steps,
            lrs=self.lr_lists[k][m.trace_start : it],
            momenta=self.momentum_lists[k][m.trace_start : it],
            losses=list(m.losses),
            snapshots=list(m.snapshots),
            snapshot_iterations=list(m.snapshot_iterations),
            trace_start=m.trace_start,
        )

    def _restore(self, ckpts: list[Checkpoint]) -> None:
        """Every member as it was at its checkpoint (all at one iteration)."""
        it = ckpts[0].iteration
        self.it = it
        with torch.no_grad():
            for k, ckpt in enumerate(ckpts):
                self._restore_member(k, ckpt)
        _set_rng_state(ckpts[0].rng)

    def _restore_member(self, k: int, ckpt: Checkpoint) -> None:
        m = self.members[k]
        weights = ckpt.model
        live = {**self.params, **self.buffers}
        if set(weights) != set(self.trainer.fused._state_keys):
            raise ValueError(
                f"resume[{k}]'s model state has other keys than this architecture's state_dict"
            )
        for n, t in weights.items():
            target = live[n][k]
            src = t.t() if n in self.in_out else t
            if tuple(src.shape) != tuple(target.shape):
                raise ValueError(
                    f"resume[{k}]'s model state {n!r} has shape {tuple(t.shape)}, this "
                    "architecture's differs"
                )
            target.copy_(src)
        state = dict(ckpt.optimizer["state"])
        for key, value in list(state.items()):
            if isinstance(value, Mapping):
                state[key] = [
                    (value[n].t() if n in self.in_out else value[n]).to(self.trainer.device)
                    for n in self.names
                ]
        try:
            self.optimizer.load_member_state(k, state)
        except (OptimizerError, KeyError) as exc:
            raise ValueError(f"resume[{k}]'s optimizer state does not fit: {exc}") from exc
        m.iteration = m.delivered = ckpt.iteration
        m.epoch, m.batch = ckpt.epoch, ckpt.batch
        if self.keep_traces:
            m.losses = list(ckpt.losses)
        else:  # everything up to a checkpoint was delivered before it was taken
            m.trace_start = ckpt.iteration
        m.epochs = list(ckpt.epochs)
        m.loss_sum = ckpt.epoch_loss_sum
        m.accuracy_sum = ckpt.epoch_accuracy_sum
        m.steps = ckpt.epoch_steps
        m.epoch_start_rng = ckpt.epoch_start_rng.clone()
        m.snapshots = list(ckpt.snapshots)[-m.snapshots_kept :] if m.snapshots_kept else []
        m.snapshot_iterations = (
            list(ckpt.snapshot_iterations)[-m.snapshots_kept :] if m.snapshots_kept else []
        )
        if m.stateful and ckpt.loader is not None:
            m.loader.load_state_dict(ckpt.loader)  # type: ignore[attr-defined]
        elif ckpt.batch > 0:
            # Replay the epoch's order: the RNG as it was when the epoch began, the
            # same iter(), the used batches skipped; the RNG is set to the checkpoint's after.
            torch.set_rng_state(ckpt.epoch_start_rng)
            set_epoch = getattr(m.loader, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(ckpt.epoch)
            m.batches = iter(m.loader)
            for skipped in range(ckpt.batch):
                try:
                    next(m.batches)
                except StopIteration:
                    raise ValueError(
                        f"resume[{k}]: train_loaders[{k}]'s epoch has {skipped} batches, the "
                        f"checkpoint is at batch {ckpt.batch} of it"
                    ) from None

    def _write_back(self) -> None:
        """The trained weights into the trainer's :class:`~clr.fused.FusedModel`."""
        fused = self.trainer.fused
        for n, p in self._layout().items():
            fused.params[n] = p.detach().to(fused.params[n].device).contiguous()

    # ----------------------------------------------------------------- evaluation

    def _forward(self, x: Any) -> Any:
        fused = self.trainer.fused
        if self.stacked:
            return fused.stacked_forward(self.params, x, in_out=True)
        run = torch.vmap(fused.functional_forward, randomness=self.trainer.randomness)
        return run(self.params, self.buffers, x)

    def _evaluate(self, loader: Iterable[Any]) -> tuple[list[float], list[float] | None]:
        """Every member's loss and metric over ``loader``, every sample weighted equally."""
        trainer, device = self.trainer, self.trainer.device
        fused, metric_fn, k_members = trainer.fused, trainer.metric_fn, len(self.members)
        loss_fn = torch.vmap(trainer.criterion)
        metric = _batched_metric(metric_fn) if metric_fn is not None else None
        loss_sum = torch.zeros(k_members, dtype=torch.float64, device=device)
        metric_sum = torch.zeros(k_members, dtype=torch.float64, device=device)
        samples = 0
        fused.eval()
        try:
            with torch.no_grad():
                for batch in loader:
                    inputs, targets = trainer.batch_fn(batch)
                    inputs, targets = to_device(inputs, device), to_device(targets, device)
                    n = int(targets.shape[0]) if targets.dim() > 0 else 1
                    padded, rows = _pad_rows(inputs.unsqueeze(0), targets.unsqueeze(0))
                    xs = padded.expand(k_members, *padded.shape[1:])
                    ys = targets.unsqueeze(0).expand(k_members, *targets.shape)
                    outputs = _trim_rows(self._forward(xs), rows, 1)
                    loss_sum += loss_fn(outputs, ys).double() * n
                    if metric is not None:
                        metric_sum += metric(outputs, ys).double() * n
                    samples += n
        finally:
            fused.train()
        if samples == 0:
            raise ValueError("val_loader yielded no batches")
        losses = (loss_sum / samples).tolist()
        return losses, (metric_sum / samples).tolist() if metric is not None else None
