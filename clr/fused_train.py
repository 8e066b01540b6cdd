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

A member whose training loss is not finite is masked at the next read (its
weights and optimizer state are frozen from then on; they may already hold
the non-finite values of the steps before the read): its traces end at that
step, its result says ``stop_reason="diverged"`` and why, and the others go on
exactly as they would without it.

Not in this first version (use :class:`~clr.Trainer`): checkpoints and resume,
snapshot ensembles, AMP, progress callbacks, several param groups, gradient
accumulation. With dropout, a member's masks differ from a separate run's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
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
    _batched_loss,
    _stack_inputs,
)
from clr.optim import OPTIMIZERS, OptimizerError
from clr.policies import Schedule, cycle_ends
from clr.train import EpochRecord, TrainResult

__all__ = ["FusedTrainResult", "FusedTrainStopReason", "FusedTrainer"]

FusedTrainStopReason = Literal["completed", "cancelled", "diverged"]
LossFn = Callable[[Any, Any], Tensor]
MetricFn = Callable[[Any, Any], Tensor]
BatchFn = Callable[[Any], tuple[Any, Any]]
# (inputs, targets) -> (gradients, (K,) losses, outputs)
_StepFn = Callable[[Any, Any], tuple[list[Tensor], Tensor, Any]]


@dataclass
class FusedTrainResult(TrainResult):
    """One member's :class:`~clr.TrainResult`, with what the fused run adds.

    Every field of :class:`~clr.TrainResult` means what it means for a plain
    run (``ensemble`` is always ``None``, ``snapshot_states`` empty,
    ``trace_start`` 0; ``seconds`` is the fused loop's wall time, shared by all
    members). ``stop_reason`` may also be ``"diverged"``: the member's loss was
    not finite at iteration ``diverged_at``; its traces end there (that loss
    included), ``iterations`` is ``diverged_at + 1``, its epochs are those closed
    before, and ``val_loss`` / ``val_accuracy`` are ``None``.

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
    """One member's loop state."""

    loader: Iterable[Any]
    epoch_len: int | None
    set_epoch: Callable[[int], Any] | None
    batches: Iterator[Any] | None = None
    epoch: int = 0
    batch: int = 0
    last: tuple[Any, Any] | None = None  # the last batch, fed again once masked
    losses: list[float] = field(default_factory=list)
    epochs: list[EpochRecord] = field(default_factory=list)
    loss_sum: float = 0.0
    accuracy_sum: float = 0.0
    steps: int = 0
    active: bool = True
    diverged_at: int | None = None
    detail: str = ""


def _values_fn(schedule: Schedule) -> Callable[[int], tuple[float, float | None]]:
    """The schedule's ``(lr, momentum)`` at a step, as :class:`~clr.ScheduledLR` reads them."""
    values_at = getattr(schedule, "values_at", None)
    if values_at is not None:
        return cast(Callable[[int], tuple[float, float | None]], values_at)
    return lambda step: (schedule.lr_at(step), schedule.momentum_at(step))


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
    every ``read_every`` steps and at every epoch end, for every member at
    once; a member whose loss is not finite is masked there.

    Not supported in this first version (use :class:`~clr.Trainer`):
    checkpoints and resume, snapshot ensembles, AMP, callbacks, several param
    groups. Loaders whose order comes from the global RNG at ``iter()`` time
    (a shuffling ``DataLoader``) draw other orders than separate runs would;
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
        >>> results = trainer.run([w.train_loader for w in ws], schedules, iterations=44,
        ...                       val_loader=ws[0].val_loader)
        >>> [(r.stop_reason, r.cycle_ends, len(r.lrs)) for r in results]
        [('completed', [22, 44], 44), ('completed', [22, 44], 44)]
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
    ) -> list[FusedTrainResult]:
        """Train every member for ``iterations`` batches and return one result per member.

        Args:
            train_loaders: K iterables of batches, ``train_loaders[k]`` feeding member
                ``k``; each ``iter()`` is one of its epochs (a loader with
                ``set_epoch`` and no ``state_dict`` is told the epoch first, as
                :class:`~clr.Trainer` does). The members' batches must have one shape.
            schedules: K :mod:`clr.policies` schedules (from
                :func:`clr.policies.make_schedule`), one per member.
            iterations: every member's length in batches.
            val_loader: batches evaluated for every member (``eval()`` mode, no
                gradients) at each of its epoch ends, the run's end included.

        Returns:
            K :class:`FusedTrainResult`\\ s in the members' order.

        Raises:
            ValueError: naming the argument, for K mismatches, a bad ``iterations``,
                a loader with no batches or batches that do not stack.
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
        ends = []
        for k, schedule in enumerate(schedules):
            try:
                schedule.lr_at(iterations)
            except ScheduleError as exc:
                raise ScheduleError(f"schedules[{k}]: iterations={iterations}: {exc}") from exc
            ends.append(cycle_ends(schedule, iterations))
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
        members = [self._member(loader, k) for k, loader in enumerate(loaders)]
        t0 = time.perf_counter()
        self._loop(members, lr_lists, momentum_lists, cycled, iterations, val_loader)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        seconds = time.perf_counter() - t0
        results = []
        for k, m in enumerate(members):
            done = len(m.losses)
            last = m.epochs[-1] if m.active and m.epochs else None
            results.append(
                FusedTrainResult(
                    lrs=lr_lists[k][:done],
                    momenta=momentum_lists[k][:done],
                    losses=m.losses,
                    epochs=m.epochs,
                    cycle_ends=[e for e in ends[k] if e <= done],
                    iterations=done,
                    val_loss=None if last is None else last.val_loss,
                    val_accuracy=None if last is None else last.val_accuracy,
                    ensemble=None,
                    stop_reason="completed" if m.active else "diverged",
                    seconds=seconds,
                    device=str(self.device),
                    member=k,
                    members=k_members,
                    path=self.fused.path,
                    diverged_at=m.diverged_at,
                    stop_detail=m.detail or f"trained all {done} iterations",
                )
            )
        return results

    def _member(self, loader: Iterable[Any], k: int) -> _Member:
        try:
            epoch_len: int | None = len(loader)  # type: ignore[arg-type]
        except TypeError:
            epoch_len = None
        if epoch_len == 0:
            raise ValueError(f"train_loaders[{k}] yielded no batches")
        stateful = hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict")
        set_epoch = None if stateful else getattr(loader, "set_epoch", None)
        return _Member(loader=loader, epoch_len=epoch_len, set_epoch=set_epoch)

    # ----------------------------------------------------------------- the loop

    def _step_fn(
        self, params: dict[str, Tensor], buffers: dict[str, Tensor], names: list[str]
    ) -> _StepFn:
        fused, criterion = self.fused, self.criterion
        if fused.path == "stacked":
            leaves = [params[n].requires_grad_() for n in names]
            dtype = leaves[0].dtype if leaves else torch.float32
            batched = _batched_loss(criterion)
            vmapped = torch.vmap(criterion)

            def stacked(x: Any, y: Any) -> tuple[list[Tensor], Tensor, Any]:
                outputs = fused.stacked_forward(params, x, in_out=True)
                prepared = batched.prepare(y, dtype) if batched is not None else None
                if batched is not None and prepared is not None and outputs.dim() == 3:
                    loss = batched(outputs, prepared)
                else:
                    loss = vmapped(outputs, y)
                # member k's loss depends on member k's weights only: one backward of
                # the sum is every member's own gradient
                grads = torch.autograd.grad(loss.sum(), leaves)
                return list(grads), loss.detach(), outputs.detach()

            return stacked

        def member_loss(
            p: dict[str, Tensor], b: dict[str, Tensor], x: Any, y: Any
        ) -> tuple[Tensor, Any]:
            outputs = fused.functional_forward(p, b, x)
            return criterion(outputs, y), outputs

        vstep = torch.vmap(grad_and_value(member_loss, has_aux=True), randomness=self.randomness)

        def by_vmap(x: Any, y: Any) -> tuple[list[Tensor], Tensor, Any]:
            grads, (loss, outputs) = vstep(params, buffers, x, y)
            return [grads[n] for n in names], loss.detach(), outputs

        return by_vmap

    def _forward(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Any) -> Any:
        fused = self.fused
        if fused.path == "stacked":
            return fused.stacked_forward(params, x, in_out=True)
        run = torch.vmap(fused.functional_forward, randomness=self.randomness)
        return run(params, buffers, x)

    def _loop(
        self,
        members: list[_Member],
        lr_lists: list[list[float]],
        momentum_lists: list[list[float]],
        cycled: bool,
        iterations: int,
        val_loader: Iterable[Any] | None,
    ) -> None:
        fused, device, metric_fn, batch_fn = self.fused, self.device, self.metric_fn, self.batch_fn
        k_members = len(members)
        fused.train()
        source = fused.stacked_params() if fused.path == "stacked" else fused.params
        params = {n: p.to(device, copy=True) for n, p in source.items()}
        buffers = {n: b.to(device, copy=True) for n, b in fused.buffers.items()}
        names = list(params)
        lr_table = torch.tensor(lr_lists, dtype=torch.float64)  # (K, iterations), host
        momentum_table = torch.tensor(momentum_lists, dtype=torch.float64)
        optimizer = self._make_optimizer(
            [params[n] for n in names], lr_table[:, 0], momentum_table[:, 0]
        )
        dtype = params[names[0]].dtype if names else torch.float32
        lr_rows = lr_table.t().contiguous().to(device, dtype)  # (iterations, K)
        step_fn = self._step_fn(params, buffers, names)
        metric = torch.vmap(metric_fn) if metric_fn is not None else None
        mask: Tensor | None = None  # None while every member runs: no masking cost
        pending_loss: list[Tensor] = []
        pending_acc: list[Tensor] = []
        val_cache: dict[int, tuple[list[float], list[float] | None]] = {}

        def read() -> None:
            nonlocal mask
            if not pending_loss:
                return
            losses = torch.stack(pending_loss).float().t().tolist()  # (K, chunk)
            accs = torch.stack(pending_acc).float().t().tolist() if pending_acc else None
            start = it - len(pending_loss)
            pending_loss.clear()
            pending_acc.clear()
            newly = False
            for k, m in enumerate(members):
                if not m.active:
                    continue
                chunk = losses[k]
                bad = next((i for i, v in enumerate(chunk) if not math.isfinite(v)), None)
                if bad is not None:
                    m.losses.extend(chunk[: bad + 1])
                    m.diverged_at = start + bad
                    m.detail = (
                        f"loss {chunk[bad]} at iteration {start + bad} "
                        f"(lr={lr_lists[k][start + bad]:.3g}): masked, the others went on"
                    )
                    m.active = False
                    newly = True
                    continue
                m.losses.extend(chunk)
                m.loss_sum += math.fsum(chunk)
                if accs is not None:
                    m.accuracy_sum += math.fsum(accs[k])
                m.steps += len(chunk)
            if newly:
                mask = torch.tensor([m.active for m in members], device=device)

        def end_epoch(m: _Member, k: int) -> None:
            val_loss: float | None = None
            val_accuracy: float | None = None
            if val_loader is not None:
                if it not in val_cache:
                    val_cache.clear()
                    val_cache[it] = self._evaluate(params, buffers, val_loader, k_members)
                v_losses, v_accs = val_cache[it]
                val_loss = v_losses[k]
                val_accuracy = None if v_accs is None else v_accs[k]
            m.epochs.append(
                EpochRecord(
                    epoch=m.epoch,
                    iteration=it,
                    train_loss=m.loss_sum / m.steps,
                    train_accuracy=m.accuracy_sum / m.steps if metric_fn is not None else None,
                    val_loss=val_loss,
                    val_accuracy=val_accuracy,
                )
            )
            m.epoch += 1
            m.batch = 0
            m.loss_sum = m.accuracy_sum = 0.0
            m.steps = 0

        it = 0
        last_read = 0
        while it < iterations and any(m.active for m in members):
            inputs: list[Any] = []
            targets: list[Any] = []
            for k, m in enumerate(members):
                if not m.active:
                    assert m.last is not None
                    inputs.append(m.last[0])
                    targets.append(m.last[1])
                    continue
                while True:
                    if m.batches is None:
                        if m.batch == 0 and m.set_epoch is not None:
                            m.set_epoch(m.epoch)
                        m.batches = iter(m.loader)
                    try:
                        batch = next(m.batches)
                        break
                    except StopIteration:
                        m.batches = None
                        if m.batch == 0:
                            raise ValueError(f"train_loaders[{k}] yielded no batches") from None
                        read()
                        last_read = it
                        if m.active:
                            end_epoch(m, k)
                        else:
                            break
                if not m.active:  # masked by the read just above
                    assert m.last is not None
                    inputs.append(m.last[0])
                    targets.append(m.last[1])
                    continue
                x, y = batch_fn(batch)
                m.last = (x, y)
                inputs.append(x)
                targets.append(y)
            xs = to_device(_stack_inputs(inputs, "inputs", ValueError), device)
            ys = to_device(_stack_inputs(targets, "targets", ValueError), device)
            if cycled:
                optimizer.set_momentum(momentum_table[:, it])
            grads, loss, outputs = step_fn(xs, ys)
            optimizer.lr = lr_table[:, it]
            optimizer.step(grads, mask, lr=lr_rows[it])
            pending_loss.append(loss)
            if metric is not None:
                with torch.no_grad():
                    pending_acc.append(metric(outputs.detach(), ys))
            it += 1
            closing = []
            for k, m in enumerate(members):
                if m.active:
                    m.batch += 1
                    if m.batch == m.epoch_len or it == iterations:
                        closing.append(k)
            if closing or it - last_read >= self.read_every:
                read()
                last_read = it
                for k in closing:
                    m = members[k]
                    if m.active:
                        end_epoch(m, k)
                        m.batches = None
        read()

    def _evaluate(
        self,
        params: dict[str, Tensor],
        buffers: dict[str, Tensor],
        loader: Iterable[Any],
        k_members: int,
    ) -> tuple[list[float], list[float] | None]:
        """Every member's loss and metric over ``loader``, every sample weighted equally."""
        fused, device, metric_fn = self.fused, self.device, self.metric_fn
        loss_fn = torch.vmap(self.criterion)
        metric = torch.vmap(metric_fn) if metric_fn is not None else None
        loss_sum = torch.zeros(k_members, dtype=torch.float64, device=device)
        metric_sum = torch.zeros(k_members, dtype=torch.float64, device=device)
        samples = 0
        fused.eval()
        try:
            with torch.no_grad():
                for batch in loader:
                    inputs, targets = self.batch_fn(batch)
                    inputs, targets = to_device(inputs, device), to_device(targets, device)
                    xs = inputs.unsqueeze(0).expand(k_members, *inputs.shape)
                    ys = targets.unsqueeze(0).expand(k_members, *targets.shape)
                    outputs = self._forward(params, buffers, xs)
                    n = int(targets.shape[0]) if targets.dim() > 0 else 1
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
