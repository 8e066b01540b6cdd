"""The LR range test (Smith 2015, §3.3, https://arxiv.org/abs/1506.01186).

Train for ``num_iter`` mini-batches while the learning rate sweeps from
``start_lr`` to ``end_lr`` and record the loss (and accuracy) at every step;
the curve shows where the loss starts to fall and where it stops improving,
which :mod:`clr.suggest` turns into CLR bounds.

What this implementation adds over torch-lr-finder, whose behaviour it keeps
(restore afterwards, divergence stop, a batch adapter):

* no host sync per step: losses stay on the device and are read back every
  ``check_every`` steps, where divergence is checked (with ``amp=True``,
  torch's GradScaler itself reads its overflow flag every step; nothing here adds one);
* a bias-corrected smoothed loss, so the first points are not pulled to zero;
* the model, the optimizer **and the RNG state** are restored bit for bit from
  an in-memory snapshot, with no temporary files (and a loader with
  ``epoch`` / ``set_epoch``, such as ``TensorBatches``, gets its epoch back);
* gradient accumulation, AMP on CUDA (the LR advances only on steps the
  optimizer really took), several param groups swept with their LR ratios
  kept, a validation pass every k steps, progress through a callback.
"""

from __future__ import annotations

import copy
import math
import random
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from clr._batch import split_batch, to_device
from clr._result import RangeTestResult, StopReason
from clr.exceptions import RangeTestError

__all__ = ["RangeTest", "RangeTestProgress", "range_test", "sweep_lrs"]

Sweep = Literal["exp", "linear"]
BatchFn = Callable[[Any], tuple[Any, Any]]
LossFn = Callable[[Any, Any], Tensor]
MetricFn = Callable[[Any, Any], Tensor]


@dataclass(frozen=True)
class RangeTestProgress:
    """A chunk of newly measured points, handed to the ``callback``.

    Attributes:
        step: points measured so far (the index after the last one in this chunk).
        num_iter: points the sweep will measure if it runs to the end.
        start: index of the first point in this chunk.
        lrs, losses, smoothed_losses: the chunk's values.
        accuracies: the chunk's metric values, when a ``metric_fn`` was given.
        best_loss: lowest smoothed loss so far.
        elapsed: seconds since the sweep started.
    """

    step: int
    num_iter: int
    start: int
    lrs: list[float]
    losses: list[float]
    smoothed_losses: list[float]
    accuracies: list[float] | None
    best_loss: float
    elapsed: float


def sweep_lrs(start_lr: float, end_lr: float, num_iter: int, sweep: Sweep = "exp") -> np.ndarray:
    """The learning rate at each of ``num_iter`` steps, ``start_lr`` first and ``end_lr`` last.

    Example:
        >>> sweep_lrs(1e-4, 1e-1, 4).round(6).tolist()
        [0.0001, 0.001, 0.01, 0.1]
    """
    _check_sweep(start_lr, end_lr, num_iter, sweep)
    if sweep == "exp":
        return np.geomspace(start_lr, end_lr, num_iter)
    return np.linspace(start_lr, end_lr, num_iter)


def _check_sweep(start_lr: float, end_lr: float, num_iter: int, sweep: str) -> None:
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise RangeTestError(f"{name} must be a number, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise RangeTestError(f"{name} must be a finite number > 0, got {value!r}")
    if start_lr >= end_lr:
        raise RangeTestError(f"start_lr must be below end_lr, got {start_lr} >= {end_lr}")
    if isinstance(num_iter, bool) or not isinstance(num_iter, int) or num_iter < 2:
        raise RangeTestError(f"num_iter must be an integer >= 2, got {num_iter!r}")
    if sweep not in ("exp", "linear"):
        raise RangeTestError(f"sweep must be 'exp' or 'linear', got {sweep!r}")


def _default_batch(batch: Any) -> tuple[Any, Any]:
    return split_batch(batch, RangeTestError)


class _Cycle:
    """Iterates a loader forever, starting a new epoch when one runs out."""

    def __init__(self, loader: Iterable[Any], name: str) -> None:
        self.loader = loader
        self.name = name
        self._it: Iterator[Any] | None = None  # lazy: no epoch is started before it is used

    def __next__(self) -> Any:
        try:
            if self._it is None:
                raise StopIteration
            return next(self._it)
        except StopIteration:
            self._it = iter(self.loader)
            try:
                return next(self._it)
            except StopIteration:
                raise RangeTestError(f"{self.name} yielded no batches") from None


def _copy_state(value: Any, device: torch.device | None) -> Any:
    """A deep copy of a (nested) state dict, tensors cloned, optionally onto ``device``."""
    if isinstance(value, Tensor):
        return value.detach().clone() if device is None else value.detach().to(device, copy=True)
    if isinstance(value, dict):
        return {k: _copy_state(v, device) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_copy_state(v, device) for v in value)
    return copy.deepcopy(value)


@dataclass
class _Snapshot:
    model: dict[str, Tensor]
    training: list[tuple[nn.Module, bool]]
    optimizer: dict[str, Any]
    torch_rng: Tensor
    cuda_rng: list[Tensor] | None
    python_rng: Any
    numpy_rng: Any
    loader: Any
    loader_epoch: int | None

    @classmethod
    def take(
        cls, model: nn.Module, optimizer: Optimizer, loader: Any, *, on_cpu: bool = False
    ) -> _Snapshot:
        # Straight to host memory when asked, so the device never holds two copies.
        device = torch.device("cpu") if on_cpu else None
        epoch = getattr(loader, "epoch", None)
        return cls(
            model={k: _copy_state(v, device) for k, v in model.state_dict().items()},
            training=[(m, m.training) for m in model.modules()],
            optimizer=_copy_state(optimizer.state_dict(), device),
            loader=loader,
            loader_epoch=epoch if isinstance(epoch, int) and hasattr(loader, "set_epoch") else None,
            torch_rng=torch.get_rng_state(),
            cuda_rng=(
                torch.cuda.get_rng_state_all()
                if torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
                else None
            ),
            python_rng=random.getstate(),
            numpy_rng=np.random.get_state(),  # noqa: NPY002 - the legacy global state is what users seed
        )

    def restore(self, model: nn.Module, optimizer: Optimizer) -> None:
        model.load_state_dict(self.model)
        for module, training in self.training:
            module.training = training
        optimizer.load_state_dict(self.optimizer)
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        random.setstate(self.python_rng)
        np.random.set_state(self.numpy_rng)  # noqa: NPY002
        if self.loader_epoch is not None:  # e.g. TensorBatches: the same data order as before
            self.loader.set_epoch(self.loader_epoch)


@dataclass
class _Curve:
    """Host-side accumulation of the checked points (smoothing and divergence live here)."""

    smoothing: float
    diverge_th: float
    min_steps: int
    lrs: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    smoothed: list[float] = field(default_factory=list)
    accuracies: list[float] = field(default_factory=list)
    best: float = math.inf
    avg: float = 0.0
    stop: StopReason | None = None
    detail: str = ""

    def extend(
        self, lrs: Sequence[float], losses: Sequence[float], acc: Sequence[float] | None
    ) -> int:
        """Add a chunk; returns how many of its points were kept (all unless the test stops)."""
        beta = self.smoothing
        for i, (lr, loss) in enumerate(zip(lrs, losses, strict=True)):
            n = len(self.losses)
            if not math.isfinite(loss):
                self.stop = "non_finite"
                self.detail = (
                    f"loss was {loss} at step {n} (lr={lr:.3g}); kept the {n} points before it"
                )
                return i
            self.avg = beta * self.avg + (1 - beta) * loss
            smoothed = self.avg / (1 - beta ** (n + 1))
            self.lrs.append(lr)
            self.losses.append(loss)
            self.smoothed.append(smoothed)
            if acc is not None:
                self.accuracies.append(acc[i])
            if smoothed < self.best:
                self.best = smoothed
            margin = (self.diverge_th - 1) * max(abs(self.best), 1e-12)
            if n + 1 >= self.min_steps and smoothed - self.best > margin:
                self.stop = "diverged"
                self.detail = (
                    f"smoothed loss {smoothed:.4g} exceeded {self.diverge_th:g} x the best "
                    f"{self.best:.4g} at step {n} (lr={lr:.3g})"
                )
                return i + 1
        return len(losses)


class RangeTest:
    """Runs LR range tests on a model and leaves it as it found it.

    Args:
        model: the network; it stays on its device.
        optimizer: an optimizer over ``model``'s parameters. Its param groups'
            current LRs set the ratios kept between groups during the sweep;
            ``start_lr`` / ``end_lr`` apply to the first group.
        criterion: ``criterion(outputs, targets) -> scalar loss``.
        device: where batches go; defaults to the device of the model's first
            parameter.
        metric_fn: optional ``metric_fn(outputs, targets) -> 0-dim tensor``
            (accuracy), recorded per step without a host sync.
        batch_fn: turns one loader item into ``(inputs, targets)``; by default
            a 2-sequence or a dict with ``inputs``/``targets`` keys.
        amp: mixed precision: autocast (float16 on CUDA, bfloat16 on CPU) plus a
            GradScaler; a step the scaler skips does not advance the LR.
        accumulation_steps: micro-batches whose gradients make one optimizer step.
        snapshot_on_cpu: keep the restore snapshot (weights and optimizer state)
            in host memory, so a big model never has two copies on the GPU.

    Example:
        >>> import torch
        >>> from clr.workloads import build_workload
        >>> w = build_workload("digits_mlp", seed=0)
        >>> opt = torch.optim.SGD(w.model.parameters(), lr=1e-3, momentum=0.9)
        >>> result = RangeTest(w.model, opt, w.loss_fn).run(w.train_loader, num_iter=50)
        >>> result.steps_run <= 50
        True
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        criterion: LossFn,
        *,
        device: str | torch.device | None = None,
        metric_fn: MetricFn | None = None,
        batch_fn: BatchFn | None = None,
        amp: bool = False,
        accumulation_steps: int = 1,
        snapshot_on_cpu: bool = False,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.criterion = criterion
        if device is None:
            first = next(model.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.metric_fn = metric_fn
        self.batch_fn: BatchFn = batch_fn or _default_batch
        if amp and self.device.type not in ("cuda", "cpu"):
            raise RangeTestError(f"amp=True needs a CUDA or CPU device, got device={self.device}")
        self.amp = amp
        if (
            isinstance(accumulation_steps, bool)
            or not isinstance(accumulation_steps, int)
            or accumulation_steps < 1
        ):
            raise RangeTestError(
                f"accumulation_steps must be an integer >= 1, got {accumulation_steps!r}"
            )
        self.accumulation_steps = accumulation_steps
        self.snapshot_on_cpu = snapshot_on_cpu

    def run(
        self,
        train_loader: Iterable[Any],
        *,
        start_lr: float = 1e-7,
        end_lr: float = 10.0,
        num_iter: int = 100,
        sweep: Sweep = "exp",
        smoothing: float = 0.95,
        diverge_th: float = 5.0,
        min_steps: int | None = None,
        check_every: int = 8,
        val_loader: Iterable[Any] | None = None,
        val_every: int | None = None,
        callback: Callable[[RangeTestProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> RangeTestResult:
        """Sweep the LR and return the curve; the model and optimizer are restored after.

        Args:
            train_loader: iterable of batches; restarted when exhausted.
            start_lr: first LR of the sweep (first param group).
            end_lr: last LR of the sweep.
            num_iter: optimizer steps in the sweep.
            sweep: ``exp`` (geometric, the usual choice) or ``linear`` (the paper's).
            smoothing: EMA factor ``beta`` of the smoothed loss (bias-corrected).
            diverge_th: stop once the smoothed loss exceeds this multiple of the best.
            min_steps: no divergence stop before this many points (default
                ``max(10, num_iter // 10)``), so a part-trained model whose loss
                is already low does not "diverge" on its first noisy batch.
            check_every: steps between reads of the loss buffer (the only host
                syncs), divergence checks, callbacks and ``should_stop`` polls.
            val_loader: optional validation batches, evaluated every ``val_every`` steps.
            val_every: steps between validation passes (required with ``val_loader``).
            callback: receives a :class:`RangeTestProgress` after every check.
            should_stop: polled at every check; ``True`` ends the test as ``cancelled``.

        Returns:
            The :class:`~clr.RangeTestResult`; every value in it is finite.

        Raises:
            RangeTestError: on impossible arguments or a loader with no batches.
        """
        _check_sweep(start_lr, end_lr, num_iter, sweep)
        if not (0 <= smoothing < 1):
            raise RangeTestError(f"smoothing must be in [0, 1), got {smoothing!r}")
        if not (math.isfinite(diverge_th) and diverge_th > 1):
            raise RangeTestError(f"diverge_th must be a finite number > 1, got {diverge_th!r}")
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise RangeTestError(f"check_every must be an integer >= 1, got {check_every!r}")
        if val_loader is not None and (not isinstance(val_every, int) or val_every < 1):
            raise RangeTestError(
                f"val_every must be an integer >= 1 with val_loader, got {val_every!r}"
            )
        if min_steps is None:
            min_steps = max(10, num_iter // 10)

        snapshot = _Snapshot.take(
            self.model, self.optimizer, train_loader, on_cpu=self.snapshot_on_cpu
        )
        try:
            return self._sweep(
                train_loader,
                lrs=sweep_lrs(start_lr, end_lr, num_iter, sweep),
                meta={"start_lr": start_lr, "end_lr": end_lr, "num_iter": num_iter, "sweep": sweep},
                curve=_Curve(smoothing, diverge_th, min_steps),
                check_every=check_every,
                val_loader=val_loader,
                val_every=val_every,
                callback=callback,
                should_stop=should_stop,
            )
        finally:
            snapshot.restore(self.model, self.optimizer)

    def _sweep(
        self,
        train_loader: Iterable[Any],
        *,
        lrs: np.ndarray,
        meta: dict[str, Any],
        curve: _Curve,
        check_every: int,
        val_loader: Iterable[Any] | None,
        val_every: int | None,
        callback: Callable[[RangeTestProgress], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> RangeTestResult:
        model, optimizer, criterion, device = (
            self.model,
            self.optimizer,
            self.criterion,
            self.device,
        )
        metric_fn, batch_fn, accum = self.metric_fn, self.batch_fn, self.accumulation_steps
        num_iter = len(lrs)
        groups = optimizer.param_groups
        group_lrs = [float(g["lr"]) for g in groups]
        # start_lr / end_lr are the first group's; the others keep their ratio to it.
        # A first group at lr 0 defers to the largest LR, and a group at 0 stays at 0.
        ref = group_lrs[0] if group_lrs[0] > 0 else max(group_lrs)
        ratios = [lr / ref for lr in group_lrs] if ref > 0 else [1.0] * len(groups)
        lr_list = lrs.tolist()

        # Loss / metric values stay on the device (0-dim tensors in a list) until a
        # check stacks and reads a chunk: the only host sync in the loop.
        pending_loss: list[Tensor] = []
        pending_acc: list[Tensor] = []
        val_steps: list[int] = []
        val_losses: list[float] = []
        val_accs: list[float] = []

        amp, scaler = self.amp, torch.amp.GradScaler(device.type) if self.amp else None
        steps_taken = [0]
        hook = (
            optimizer.register_step_post_hook(
                lambda *_: steps_taken.__setitem__(0, steps_taken[0] + 1)
            )
            if amp
            else None
        )
        batches = _Cycle(train_loader, "train_loader")
        if not model.training:
            model.train()  # submodules a user froze in eval mode inside a training model stay so
        modes = [(m, m.training) for m in model.modules()]
        n = 0  # points measured (the LR index)
        checked = 0
        skipped = 0
        attempts = 0
        t0 = time.perf_counter()
        try:
            while n < num_iter and curve.stop is None:
                lr = lr_list[n]
                for group, ratio in zip(groups, ratios, strict=True):
                    group["lr"] = lr * ratio
                optimizer.zero_grad(set_to_none=True)
                loss_sum: Tensor | None = None
                acc_sum: Tensor | None = None
                for _ in range(accum):
                    inputs, targets = batch_fn(next(batches))
                    inputs, targets = to_device(inputs, device), to_device(targets, device)
                    if amp:
                        with torch.autocast(device.type):
                            outputs = model(inputs)
                            loss = criterion(outputs, targets)
                    else:
                        outputs = model(inputs)
                        loss = criterion(outputs, targets)
                    scaled = loss / accum if accum > 1 else loss
                    if scaler is not None:
                        scaler.scale(scaled).backward()  # type: ignore[no-untyped-call]
                    else:
                        scaled.backward()  # type: ignore[no-untyped-call]
                    detached = loss.detach()
                    loss_sum = detached if loss_sum is None else loss_sum + detached
                    if metric_fn is not None:
                        with torch.no_grad():
                            m = metric_fn(outputs.detach(), targets)
                        acc_sum = m if acc_sum is None else acc_sum + m
                assert loss_sum is not None
                attempts += 1
                if scaler is not None:
                    before = steps_taken[0]
                    scaler.step(optimizer)
                    scaler.update()
                    if steps_taken[0] == before:  # GradScaler skipped it: the LR does not advance
                        skipped += 1
                        if attempts > 2 * num_iter + 100:
                            break
                        continue
                else:
                    optimizer.step()
                pending_loss.append(loss_sum / accum if accum > 1 else loss_sum)
                if acc_sum is not None:
                    pending_acc.append(acc_sum / accum if accum > 1 else acc_sum)
                n += 1
                if val_loader is not None and val_every is not None and n % val_every == 0:
                    val_loss, val_acc = self._evaluate(val_loader, modes)
                    val_steps.append(n - 1)
                    val_losses.append(val_loss)
                    val_accs.append(val_acc)
                if n - checked >= check_every or n == num_iter:
                    self._check(
                        curve, pending_loss, pending_acc, lr_list, checked, num_iter, t0, callback
                    )
                    checked = n
                    if curve.stop is None and should_stop is not None and should_stop():
                        curve.stop = "cancelled"
                        curve.detail = f"cancelled after {len(curve.losses)} steps"
            if pending_loss:  # left the loop between checks (AMP gave up)
                self._check(
                    curve, pending_loss, pending_acc, lr_list, checked, num_iter, t0, callback
                )
            if curve.stop is None and n < num_iter:
                curve.stop = "non_finite"
                curve.detail = f"AMP skipped {skipped} steps: the gradients never became finite"
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
        finally:
            if hook is not None:
                hook.remove()

        kept = len(curve.losses)
        if curve.stop is None:
            curve.stop = "completed"
            curve.detail = f"swept all {kept} steps up to lr={lr_list[-1]:.3g}"
        keep_val = [i for i, s in enumerate(val_steps) if s < kept]
        return RangeTestResult(
            lrs=np.asarray(curve.lrs, dtype=np.float64),
            losses=np.asarray(curve.losses, dtype=np.float64),
            smoothed_losses=np.asarray(curve.smoothed, dtype=np.float64),
            accuracies=np.asarray(curve.accuracies, dtype=np.float64) if metric_fn else None,
            val_steps=np.asarray([val_steps[i] for i in keep_val], dtype=np.int64)
            if val_loader is not None
            else None,
            val_losses=np.asarray([val_losses[i] for i in keep_val], dtype=np.float64)
            if val_loader is not None
            else None,
            val_accuracies=np.asarray([val_accs[i] for i in keep_val], dtype=np.float64)
            if val_loader is not None and metric_fn is not None
            else None,
            start_lr=float(meta["start_lr"]),
            end_lr=float(meta["end_lr"]),
            num_iter=int(meta["num_iter"]),
            sweep=str(meta["sweep"]),
            smoothing=curve.smoothing,
            diverge_th=curve.diverge_th,
            stop_reason=curve.stop,
            stop_detail=curve.detail,
            device=str(device),
            seconds=seconds,
            skipped_steps=skipped,
        )

    def _check(
        self,
        curve: _Curve,
        pending_loss: list[Tensor],
        pending_acc: list[Tensor],
        lr_list: list[float],
        start: int,
        num_iter: int,
        t0: float,
        callback: Callable[[RangeTestProgress], None] | None,
    ) -> None:
        # The one host sync per chunk: read the losses measured since the last check.
        losses = torch.stack(pending_loss).float().tolist()
        accs = torch.stack(pending_acc).float().tolist() if pending_acc else None
        pending_loss.clear()
        pending_acc.clear()
        lrs = lr_list[start : start + len(losses)]
        kept = curve.extend(lrs, losses, accs)
        if callback is not None and kept:
            callback(
                RangeTestProgress(
                    step=start + kept,
                    num_iter=num_iter,
                    start=start,
                    lrs=lrs[:kept],
                    losses=curve.losses[start : start + kept],
                    smoothed_losses=curve.smoothed[start : start + kept],
                    accuracies=curve.accuracies[start : start + kept] if accs is not None else None,
                    best_loss=curve.best,
                    elapsed=time.perf_counter() - t0,
                )
            )

    def _evaluate(
        self, val_loader: Iterable[Any], modes: list[tuple[nn.Module, bool]]
    ) -> tuple[float, float]:
        model, device = self.model, self.device
        model.eval()
        total = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        batches = 0
        try:
            with torch.no_grad():
                for batch in val_loader:
                    inputs, targets = self.batch_fn(batch)
                    inputs, targets = to_device(inputs, device), to_device(targets, device)
                    with torch.autocast(device.type, enabled=self.amp):
                        outputs = model(inputs)
                        total += self.criterion(outputs, targets).float()
                    if self.metric_fn is not None:
                        correct += self.metric_fn(outputs, targets).float()
                    batches += 1
        finally:
            for module, training in modes:
                module.training = training
        if batches == 0:
            raise RangeTestError("val_loader yielded no batches")
        return float(total) / batches, float(correct) / batches


def range_test(
    model: nn.Module,
    optimizer: Optimizer,
    criterion: LossFn,
    train_loader: Iterable[Any],
    **kwargs: Any,
) -> RangeTestResult:
    """One-call form: ``RangeTest(model, optimizer, criterion, ...).run(train_loader, ...)``.

    Constructor keywords (``device``, ``metric_fn``, ``batch_fn``, ``amp``,
    ``accumulation_steps``, ``snapshot_on_cpu``) and :meth:`RangeTest.run`
    keywords may be mixed.

    Example:
        >>> import torch
        >>> from clr.workloads import build_workload
        >>> w = build_workload("digits_mlp", seed=0)
        >>> opt = torch.optim.SGD(w.model.parameters(), lr=1e-3)
        >>> range_test(w.model, opt, w.loss_fn, w.train_loader, num_iter=20).steps_run
        20
    """
    init_keys = ("device", "metric_fn", "batch_fn", "amp", "accumulation_steps", "snapshot_on_cpu")
    init = {k: kwargs.pop(k) for k in init_keys if k in kwargs}
    return RangeTest(model, optimizer, criterion, **init).run(train_loader, **kwargs)
