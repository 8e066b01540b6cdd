"""CLR training as a plain PyTorch library: a trainer stepped per batch by any clr schedule.

Smith, "Cyclical Learning Rates for Training Neural Networks",
https://arxiv.org/abs/1506.01186: train with the LR cycling between the bounds
a range test found, and stop at the end of a cycle, where the LR is back at
``base_lr`` (three cycles get most of the way, four or more do better).
:class:`Trainer` runs that loop for any :class:`~clr.ScheduledLR` (CLR
triangular / triangular2 / exp_range with window shapes and momentum cycling,
one-cycle, SGDR, fixed, step and exponential decay) and adds what a service
needs around it:

* a trace of the LR and momentum each step actually used (read from the
  optimizer's first param group before the step) and of the training loss,
  kept whole or (``keep_traces=False``, for long runs whose ``callback``
  streams it away) dropped once delivered, so memory and checkpoints stay
  the same size however long the run;
* no host sync per step: losses stay on the device and are read every
  ``read_every`` steps, as :class:`~clr.RangeTest` does; epoch ends, cycle
  ends and validation passes are the only other reads;
* per-epoch training loss and accuracy (means over the epoch's batches) and
  validation loss and accuracy, at each epoch end and at the end of the run;
* a progress ``callback`` and a ``should_stop`` flag polled at every read;
* a :class:`Checkpoint` at every cycle end (model, optimizer, scheduler, AMP
  scaler, every RNG, the loader's position, the epoch bookkeeping) from which
  ``run(resume=...)`` continues exactly: the same LR trace and, on CPU,
  bit-identical weights to an uninterrupted run;
* a snapshot ensemble (Huang et al. 2017, "Snapshot Ensembles: Train 1, get M
  for free", https://arxiv.org/abs/1704.00109): the weights at the last ``k``
  cycle ends, whose averaged softmax is evaluated next to the final model;
* AMP (``torch.autocast`` and a ``GradScaler``) on CUDA.

Example:
    >>> import io, torch
    >>> from clr import Checkpoint, Trainer, create_scheduler, schedule_length
    >>> from clr.workloads import build_workload
    >>> bounds = {"base_lr": 0.01, "max_lr": 0.1, "step_size_up": 22}
    >>> def setup():
    ...     w = build_workload("digits_mlp", {"width": 16}, seed=0)
    ...     opt = torch.optim.SGD(w.model.parameters(), lr=0.01, momentum=0.9)
    ...     sched = create_scheduler(opt, "triangular", **bounds)
    ...     return w, Trainer(w.model, opt, w.loss_fn, metric_fn=w.metric_fn, scheduler=sched)
    >>> n = schedule_length("triangular", cycles=3, **bounds)
    >>> w, trainer = setup()
    >>> saved = []
    >>> result = trainer.run(w.train_loader, val_loader=w.val_loader, iterations=n,
    ...                      checkpoint=saved.append, snapshots=2)
    >>> result.stop_reason, len(result.lrs), result.cycle_ends
    ('completed', 132, [44, 88, 132])
    >>> result.val_accuracy > 0.8, result.ensemble.snapshots
    (True, 2)

    Resume in a fresh process from the checkpoint of the first cycle end:

    >>> buffer = io.BytesIO()
    >>> saved[0].save(buffer)
    >>> _ = buffer.seek(0)
    >>> w2, trainer2 = setup()
    >>> again = trainer2.run(w2.train_loader, val_loader=w2.val_loader, iterations=n,
    ...                      resume=Checkpoint.load(buffer), snapshots=2)
    >>> again.lrs == result.lrs
    True
    >>> all(torch.equal(a, b) for a, b in zip(w.model.parameters(), w2.model.parameters()))
    True
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Literal

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from clr._batch import split_batch, to_device
from clr.exceptions import ScheduleError
from clr.policies import cycle_ends
from clr.schedules import ScheduledLR

__all__ = [
    "Checkpoint",
    "EnsembleMetrics",
    "EpochRecord",
    "TrainProgress",
    "TrainResult",
    "TrainStopReason",
    "Trainer",
]

TrainStopReason = Literal["completed", "cancelled"]
BatchFn = Callable[[Any], tuple[Any, Any]]
LossFn = Callable[[Any, Any], Tensor]
MetricFn = Callable[[Any, Any], Tensor]

_CHECKPOINT_KIND = "clr.train.Checkpoint"
_CHECKPOINT_FORMAT = 1


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class EpochRecord:
    """What one epoch measured.

    Attributes:
        epoch: 0-based index of the epoch.
        iteration: iterations done when it ended (the run's end for a last,
            partial epoch).
        train_loss: mean training loss over the epoch's batches.
        train_accuracy: mean of ``metric_fn`` over them, or ``None`` without one.
        val_loss: loss on ``val_loader`` at the epoch's end (samples weighted
            equally), or ``None`` without a ``val_loader``.
        val_accuracy: ``metric_fn`` there, or ``None``.
    """

    epoch: int
    iteration: int
    train_loss: float
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        """The record as a JSON-ready dict (non-finite values become ``None``)."""
        return {k: _finite(v) if isinstance(v, float) else v for k, v in asdict(self).items()}


@dataclass(frozen=True)
class TrainProgress:
    """A run of consecutive iterations (and any finished epochs), handed to the ``callback``.

    Every iteration and epoch reaches the callback exactly once, in order; at a
    cycle end every one up to it has been delivered before the checkpoint is taken.

    Attributes:
        start: index of the first iteration in this chunk.
        lrs: learning rate of the first param group at each of these iterations.
        momenta: its momentum (or Adam's beta1), or ``None`` when the optimizer has none.
        losses: training loss of each of these iterations.
        epochs: epochs that ended since the previous chunk.
        cycle_end: the iteration count when this chunk ends at a cycle end, else ``None``.
        iterations: the run's length in iterations.
        elapsed: seconds since this ``run`` call started.
    """

    start: int
    lrs: list[float]
    momenta: list[float] | None
    losses: list[float]
    epochs: list[EpochRecord]
    cycle_end: int | None
    iterations: int
    elapsed: float

    @property
    def iteration(self) -> int:
        """Iterations done at the end of this chunk."""
        return self.start + len(self.lrs)


@dataclass(frozen=True)
class EnsembleMetrics:
    """The snapshot ensemble's validation result.

    Attributes:
        snapshots: how many snapshots were averaged.
        iterations: the cycle ends at which they were taken.
        val_loss: ``loss_fn`` on the log of the snapshots' mean softmax (for
            cross-entropy, the ensemble's negative log-likelihood).
        val_accuracy: ``metric_fn`` on the same, or ``None`` without one.
    """

    snapshots: int
    iterations: list[int]
    val_loss: float
    val_accuracy: float | None


@dataclass
class TrainResult:
    """Everything one training run measured.

    With ``keep_traces=True`` (the default) the traces cover the whole run
    from iteration 0, those before a resumed checkpoint included. With
    ``keep_traces=False`` they hold only what was not dropped once
    delivered to the ``callback``: since a run, finished or cancelled, ends at
    a read point, that is nothing, and ``trace_start`` is ``iterations``.

    Attributes:
        lrs: learning rate of the first param group at each iteration from
            ``trace_start`` on.
        momenta: its momentum or beta1 at each of them, ``None`` without one.
        losses: training loss of each of them.
        epochs: one record per epoch (the last may be partial, see :class:`EpochRecord`).
        cycle_ends: the cycle ends the run reached (and checkpointed at).
        iterations: iterations done.
        val_loss: the final model's validation loss, ``None`` without a
            ``val_loader`` or when the run was cancelled.
        val_accuracy: its ``metric_fn`` value, likewise.
        ensemble: the snapshot ensemble's metrics, or ``None`` (no snapshots,
            no ``val_loader``, or cancelled).
        stop_reason: ``completed``, or ``cancelled`` by ``should_stop``.
        seconds: wall time of this ``run`` call.
        device: where it trained (``cpu``, ``cuda:0``).
        snapshot_states: the ensemble's members: model state dicts on the CPU,
            oldest first.
        snapshot_iterations: the cycle end at which each was taken.
        trace_start: the iteration ``lrs[0]`` (and ``momenta[0]``,
            ``losses[0]``) belongs to; 0 when the traces were kept.
    """

    lrs: list[float]
    momenta: list[float] | None
    losses: list[float]
    epochs: list[EpochRecord]
    cycle_ends: list[int]
    iterations: int
    val_loss: float | None
    val_accuracy: float | None
    ensemble: EnsembleMetrics | None
    stop_reason: TrainStopReason
    seconds: float
    device: str
    snapshot_states: list[dict[str, Tensor]] = field(default_factory=list, repr=False)
    snapshot_iterations: list[int] = field(default_factory=list)
    trace_start: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of everything but the snapshot weights (non-finite → ``None``)."""
        return {
            "trace_start": self.trace_start,
            "lrs": list(self.lrs),
            "momenta": None if self.momenta is None else list(self.momenta),
            "losses": [_finite(v) for v in self.losses],
            "epochs": [e.to_dict() for e in self.epochs],
            "cycle_ends": list(self.cycle_ends),
            "iterations": self.iterations,
            "val_loss": _finite(self.val_loss),
            "val_accuracy": _finite(self.val_accuracy),
            "ensemble": None
            if self.ensemble is None
            else {
                "snapshots": self.ensemble.snapshots,
                "iterations": list(self.ensemble.iterations),
                "val_loss": _finite(self.ensemble.val_loss),
                "val_accuracy": _finite(self.ensemble.val_accuracy),
            },
            "stop_reason": self.stop_reason,
            "seconds": self.seconds,
            "device": self.device,
            "snapshot_iterations": list(self.snapshot_iterations),
        }


def _finite(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


# --------------------------------------------------------------------------- checkpoint


@dataclass
class Checkpoint:
    """Everything needed to continue a run exactly from one of its cycle ends.

    Tensors are copies on the CPU, taken when the checkpoint was made, so a
    checkpoint kept in memory does not change as training goes on.

    Attributes:
        iteration: iterations done.
        iterations: the run's planned length.
        epoch: 0-based epoch the next batch belongs to.
        batch: batches of that epoch already used.
        model: the model's ``state_dict``.
        optimizer: the optimizer's ``state_dict``.
        scheduler: the scheduler's ``state_dict``.
        scaler: the AMP GradScaler's ``state_dict``, or ``None`` without AMP.
        rng: the generators' states: ``torch`` (CPU), ``cuda`` (one per device,
            when CUDA was initialised), ``python`` (:mod:`random`), ``numpy``
            (its legacy global generator, when numpy was imported).
        loader: the train loader's own ``state_dict`` when it has one
            (:class:`~clr.workloads.TensorBatches` does), else ``None``.
        epoch_start_rng: torch's CPU RNG state just before the current epoch's
            ``iter(loader)``: a loader without a state (a shuffling
            ``DataLoader``) replays the epoch's order from it and skips ``batch``
            batches.
        epochs: the epoch records so far.
        epoch_loss_sum / epoch_accuracy_sum / epoch_steps: the running epoch's
            accumulators.
        lrs / momenta / losses: the traces so far, from iteration
            ``trace_start`` on: the whole run when it kept its traces, none
            when it dropped them once delivered (``keep_traces=False``: at a
            cycle end everything up to it has been delivered), so such a
            checkpoint does not grow with the iterations done.
        snapshots / snapshot_iterations: the snapshot ensemble so far.
        trace_start: the iteration the traces start at (0 when kept whole).
    """

    iteration: int
    iterations: int
    epoch: int
    batch: int
    model: dict[str, Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any] | None
    rng: dict[str, Any]
    loader: dict[str, Any] | None
    epoch_start_rng: Tensor
    epochs: list[EpochRecord]
    epoch_loss_sum: float
    epoch_accuracy_sum: float
    epoch_steps: int
    lrs: list[float]
    momenta: list[float] | None
    losses: list[float]
    snapshots: list[dict[str, Tensor]] = field(default_factory=list)
    snapshot_iterations: list[int] = field(default_factory=list)
    trace_start: int = 0

    def state_dict(self) -> dict[str, Any]:
        """Plain containers, numbers, strings and tensors only (``weights_only``-loadable)."""
        return {
            "kind": _CHECKPOINT_KIND,
            "format": _CHECKPOINT_FORMAT,
            "iteration": self.iteration,
            "iterations": self.iterations,
            "epoch": self.epoch,
            "batch": self.batch,
            "model": self.model,
            "optimizer": self.optimizer,
            "scheduler": self.scheduler,
            "scaler": self.scaler,
            "rng": self.rng,
            "loader": self.loader,
            "epoch_start_rng": self.epoch_start_rng,
            "epochs": [asdict(e) for e in self.epochs],
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_accuracy_sum": self.epoch_accuracy_sum,
            "epoch_steps": self.epoch_steps,
            "trace_start": self.trace_start,
            # float64 tensors: compact, and every value comes back exactly
            "lrs": torch.tensor(self.lrs, dtype=torch.float64),
            "momenta": None
            if self.momenta is None
            else torch.tensor(self.momenta, dtype=torch.float64),
            "losses": torch.tensor(self.losses, dtype=torch.float64),
            "snapshots": self.snapshots,
            "snapshot_iterations": list(self.snapshot_iterations),
        }

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Checkpoint:
        """Rebuild a checkpoint from :meth:`state_dict`.

        Raises:
            ValueError: if ``state`` is not a clr training checkpoint of a known format.
        """
        if not isinstance(state, Mapping) or state.get("kind") != _CHECKPOINT_KIND:
            raise ValueError("not a clr training checkpoint (no 'kind' of clr.train.Checkpoint)")
        if state.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError(
                f"checkpoint format {state.get('format')!r} is not supported "
                f"(this version reads {_CHECKPOINT_FORMAT})"
            )
        momenta = state["momenta"]
        return cls(
            iteration=int(state["iteration"]),
            iterations=int(state["iterations"]),
            epoch=int(state["epoch"]),
            batch=int(state["batch"]),
            model=dict(state["model"]),
            optimizer=state["optimizer"],
            scheduler=state["scheduler"],
            scaler=state["scaler"],
            rng=state["rng"],
            loader=state["loader"],
            epoch_start_rng=state["epoch_start_rng"],
            epochs=[EpochRecord(**e) for e in state["epochs"]],
            epoch_loss_sum=float(state["epoch_loss_sum"]),
            epoch_accuracy_sum=float(state["epoch_accuracy_sum"]),
            epoch_steps=int(state["epoch_steps"]),
            lrs=state["lrs"].tolist(),
            momenta=None if momenta is None else momenta.tolist(),
            losses=state["losses"].tolist(),
            snapshots=[dict(s) for s in state["snapshots"]],
            snapshot_iterations=[int(i) for i in state["snapshot_iterations"]],
            trace_start=int(state.get("trace_start", 0)),  # absent before keep_traces existed
        )

    def save(self, fileobj: IO[bytes]) -> None:
        """Write the checkpoint with ``torch.save`` to any writable binary file object.

        It is written as it is serialised (a socket, a pipe or a database
        large-object writer will do): nothing is staged whole in memory first.
        """
        torch.save(self.state_dict(), fileobj)

    @classmethod
    def load(
        cls, fileobj: IO[bytes], *, map_location: str | torch.device | None = None
    ) -> Checkpoint:
        """Read a checkpoint written by :meth:`save` from a seekable binary file object.

        Loaded with ``weights_only=True``: the file holds only containers,
        numbers, strings and tensors, so loading it runs no pickled code.

        Args:
            fileobj: a readable, seekable binary file object (``torch.load``'s
                zip format needs ``seek``).
            map_location: where tensors go, as for ``torch.load`` (``"cpu"`` to
                read a GPU run's checkpoint on a machine without one).

        Raises:
            ValueError: if the file is not a clr training checkpoint.
        """
        state = torch.load(fileobj, map_location=map_location, weights_only=True)
        return cls.from_state_dict(state)


# --------------------------------------------------------------------------- helpers


_default_batch = split_batch


def _to_cpu(value: Any) -> Any:
    """A copy of a nested state with every tensor cloned onto the CPU."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_to_cpu(v) for v in value)
    return value


def _model_state(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _count(targets: Any) -> int:
    """Samples in a batch, to weight its mean loss (1 when it cannot be told)."""
    if isinstance(targets, Tensor) and targets.dim() > 0:
        return int(targets.shape[0])
    return 1


def _rng_state() -> dict[str, Any]:
    python = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all()
        if torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
        else None,
        "python": [python[0], list(python[1]), python[2]],
        "numpy": None,
    }
    np = sys.modules.get("numpy")  # only when the program uses numpy: never imported here
    if np is not None:
        name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - the global one
        state["numpy"] = {
            "name": str(name),
            "keys": torch.from_numpy(keys.astype("int64")),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    saved = state.get("numpy")
    if saved is not None:
        import numpy as np

        np.random.set_state(  # noqa: NPY002 - the legacy global generator users seed
            (
                saved["name"],
                saved["keys"].numpy().astype(np.uint32),
                saved["pos"],
                saved["has_gauss"],
                saved["cached_gaussian"],
            )
        )


def _positive_int(name: str, value: object, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


@dataclass
class _Run:
    """The mutable state of one run: what a checkpoint saves and a resume restores."""

    iteration: int = 0
    epoch: int = 0
    batch: int = 0
    lrs: list[float] = field(default_factory=list)
    momenta: list[float] | None = None
    losses: list[float] = field(default_factory=list)
    epochs: list[EpochRecord] = field(default_factory=list)
    epoch_loss_sum: float = 0.0
    epoch_accuracy_sum: float = 0.0
    epoch_steps: int = 0
    epoch_start_rng: Tensor | None = None
    snapshots: list[dict[str, Tensor]] = field(default_factory=list)
    snapshot_iterations: list[int] = field(default_factory=list)
    delivered: int = 0  # iterations handed to the callback
    trace_start: int = 0  # the iteration lrs[0] / momenta[0] / losses[0] belong to
    keep_traces: bool = True  # False: drop the traces once delivered
    new_epochs: list[EpochRecord] = field(default_factory=list)  # not yet handed over
    last_val: tuple[int, float, float | None] | None = None  # (iteration, loss, accuracy)


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Trains a model with a clr schedule stepped once per batch.

    The per-iteration traces are kept whole by default; a long run whose
    ``callback`` stores them passes ``run(keep_traces=False)`` so that memory
    and every checkpoint hold only what has not been delivered yet.

    Args:
        model: the network; it stays on its device.
        optimizer: an optimizer over ``model``'s parameters.
        loss_fn: ``loss_fn(outputs, targets) -> scalar loss`` (a mean over the batch).
        metric_fn: optional ``metric_fn(outputs, targets) -> 0-dim tensor``
            (accuracy), averaged per epoch without a host sync per step.
        scheduler: a :class:`~clr.ScheduledLR` over ``optimizer`` (from
            :func:`~clr.create_scheduler` or :class:`~clr.CyclicLR`), fresh
            (never stepped by hand); the trainer steps it after every batch.
        amp: mixed precision (``torch.autocast`` and a ``GradScaler``); ``None``
            turns it on for a CUDA device. CUDA only. The schedule advances on
            every batch, also one whose step the scaler skipped.
        read_every: steps between reads of the losses (the host syncs), progress
            callbacks and ``should_stop`` polls.
        device: where batches go; defaults to the device of the model's first parameter.
        batch_fn: turns one loader item into ``(inputs, targets)``; by default a
            2-sequence or a dict with ``inputs``/``targets`` keys.

    Raises:
        ValueError: naming the argument, for a scheduler that is not a
            ``ScheduledLR`` over ``optimizer``, ``amp=True`` off CUDA or a bad
            ``read_every``.

    Example:
        >>> import torch
        >>> from clr import create_scheduler
        >>> from clr.workloads import build_workload
        >>> w = build_workload("digits_mlp", {"width": 16}, seed=0)
        >>> opt = torch.optim.SGD(w.model.parameters(), lr=0.01)
        >>> sched = create_scheduler(opt, "fixed", lr=0.05)
        >>> result = Trainer(w.model, opt, w.loss_fn, scheduler=sched).run(
        ...     w.train_loader, iterations=30)
        >>> len(result.losses), result.lrs[0], result.stop_reason
        (30, 0.05, 'completed')
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Optimizer,
        loss_fn: LossFn,
        *,
        metric_fn: MetricFn | None = None,
        scheduler: ScheduledLR,
        amp: bool | None = None,
        read_every: int = 16,
        device: str | torch.device | None = None,
        batch_fn: BatchFn | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise ValueError(
                f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
            )
        if not isinstance(scheduler, ScheduledLR):
            raise ValueError(
                "scheduler must be a clr ScheduledLR (from clr.create_scheduler or "
                f"clr.CyclicLR), got {type(scheduler).__name__}"
            )
        if scheduler.optimizer is not optimizer:
            raise ValueError("scheduler must drive the optimizer given as optimizer")
        if not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable, got {loss_fn!r}")
        if metric_fn is not None and not callable(metric_fn):
            raise ValueError(f"metric_fn must be callable, got {metric_fn!r}")
        self.read_every = _positive_int("read_every", read_every)
        if device is None:
            first = next(model.parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        if amp is None:
            amp = self.device.type == "cuda"
        if not isinstance(amp, bool):
            raise ValueError(f"amp must be true, false or None, got {amp!r}")
        if amp and self.device.type != "cuda":
            raise ValueError(f"amp=True needs a CUDA device, got device={self.device}")
        self.amp = amp
        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.metric_fn = metric_fn
        self.scheduler = scheduler
        self.batch_fn: BatchFn = batch_fn or _default_batch
        self.scaler = torch.amp.GradScaler("cuda") if amp else None
        defaults = optimizer.defaults
        self._momentum_key = (
            "betas" if "betas" in defaults else "momentum" if "momentum" in defaults else None
        )

    # ----------------------------------------------------------------- run

    def run(
        self,
        train_loader: Iterable[Any],
        *,
        val_loader: Iterable[Any] | None = None,
        iterations: int,
        callback: Callable[[TrainProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        checkpoint: Callable[[Checkpoint], None] | None = None,
        resume: Checkpoint | None = None,
        snapshots: int = 0,
        keep_traces: bool = True,
    ) -> TrainResult:
        """Train for ``iterations`` batches (or continue a run up to there).

        Args:
            train_loader: iterable of batches; each ``iter()`` is one epoch.
                A loader with ``state_dict``/``load_state_dict`` (such as
                :class:`~clr.workloads.TensorBatches`) resumes mid-epoch from
                its state; any other replays the epoch's order from the saved
                RNG state and skips the batches already used (a loader with
                ``set_epoch`` is told each epoch's index before its ``iter()``).
            val_loader: batches evaluated at every epoch end and at the end of
                the run (``eval()`` mode, no gradients), and for the ensemble.
            iterations: the run's length in batches; see
                :func:`~clr.schedule_length` to give it in cycles or epochs.
            callback: receives every iteration and epoch once, in
                :class:`TrainProgress` chunks, at every read point.
            should_stop: polled at every read point; ``True`` stops the run
                (``stop_reason="cancelled"``, no final evaluation).
            checkpoint: called with a :class:`Checkpoint` at every cycle end,
                after ``callback`` has received everything up to it.
            resume: a checkpoint of this run to continue from; the model,
                optimizer, scheduler and loaders given must be built as the
                first time (same types, shapes and configuration).
            snapshots: keep the weights at the last ``snapshots`` cycle ends
                and evaluate their ensemble on ``val_loader`` at the end.
            keep_traces: keep the whole LR / momentum / loss traces in memory,
                in every checkpoint and in the result. ``False`` drops them at
                each read point once handed to ``callback`` (or once past it,
                without one): a long run whose callback streams them to
                storage then holds, checkpoints and returns only the entries
                not yet delivered, so checkpoint size and I/O stay flat
                instead of growing with the iterations done (about 24 bytes
                an iteration each). Exact resume is unaffected; a checkpoint
                taken this way resumes only with ``keep_traces=False``.

        Returns:
            The :class:`TrainResult` (``trace_start`` says where its traces begin).

        Raises:
            ValueError: naming the argument, for bad lengths, a scheduler
                already stepped, a checkpoint past ``iterations`` or taken by
                :class:`clr.FusedTrainer` (resume that with it), snapshots
                with no cycle end to take them at, a loader with no batches, or
                ``keep_traces=True`` with a checkpoint that dropped its traces.
            ScheduleError: if the schedule cannot run for ``iterations`` steps
                (a one-cycle schedule shorter than the run).
        """
        iterations = _positive_int("iterations", iterations)
        snapshots = _positive_int("snapshots", snapshots, minimum=0)
        if callback is not None and not callable(callback):
            raise ValueError(f"callback must be callable, got {callback!r}")
        if should_stop is not None and not callable(should_stop):
            raise ValueError(f"should_stop must be callable, got {should_stop!r}")
        if checkpoint is not None and not callable(checkpoint):
            raise ValueError(f"checkpoint must be callable, got {checkpoint!r}")
        if not isinstance(keep_traces, bool):
            raise ValueError(f"keep_traces must be true or false, got {keep_traces!r}")
        ends = self._cycle_ends(iterations)
        if snapshots and not ends:
            raise ValueError(
                f"snapshots={snapshots} needs cycle ends to take them at, but the schedule "
                f"has none within iterations={iterations}"
            )
        run = _Run(keep_traces=keep_traces)
        if resume is None:
            if self.scheduler.last_epoch != 0:
                raise ValueError(
                    f"scheduler has already been stepped {self.scheduler.last_epoch} times: "
                    "build a fresh one, or pass resume= to continue a run"
                )
            if self._momentum_key is not None:
                run.momenta = []
            batches: Iterator[Any] | None = None
        else:
            if not isinstance(resume, Checkpoint):
                raise ValueError(f"resume must be a Checkpoint, got {type(resume).__name__}")
            if isinstance(resume.optimizer, Mapping) and "fused" in resume.optimizer:
                raise ValueError(
                    "resume: the checkpoint was taken by FusedTrainer (one member of a fused "
                    "run, its optimizer state a slice of the fused one): resume it with "
                    "clr.FusedTrainer.run(resume=...)"
                )
            if resume.iteration > iterations:
                raise ValueError(
                    f"iterations={iterations} is before the checkpoint's iteration "
                    f"{resume.iteration}"
                )
            if resume.iteration == resume.iterations != iterations:
                raise ValueError(
                    f"iterations={iterations}: the checkpoint ends a finished run of "
                    f"{resume.iterations} iterations (its last epoch is closed); resume from "
                    "an earlier one to run longer"
                )
            batches = self._restore(resume, run, train_loader)
        t0 = time.perf_counter()
        stopped = self._loop(
            train_loader,
            batches,
            run,
            val_loader=val_loader,
            iterations=iterations,
            ends=ends,
            callback=callback,
            should_stop=should_stop,
            checkpoint=checkpoint,
            snapshots=snapshots,
            t0=t0,
        )
        val_loss: float | None = None
        val_accuracy: float | None = None
        ensemble: EnsembleMetrics | None = None
        if not stopped:
            if val_loader is not None:
                if run.last_val is not None and run.last_val[0] == run.iteration:
                    _, val_loss, val_accuracy = run.last_val
                else:
                    val_loss, val_accuracy = self._evaluate(val_loader)
                if run.snapshots:
                    ens_loss, ens_accuracy = self._evaluate_ensemble(val_loader, run.snapshots)
                    ensemble = EnsembleMetrics(
                        snapshots=len(run.snapshots),
                        iterations=list(run.snapshot_iterations),
                        val_loss=ens_loss,
                        val_accuracy=ens_accuracy,
                    )
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return TrainResult(
            lrs=run.lrs,
            momenta=run.momenta,
            losses=run.losses,
            epochs=run.epochs,
            cycle_ends=[e for e in ends if e <= run.iteration],
            iterations=run.iteration,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
            ensemble=ensemble,
            stop_reason="cancelled" if stopped else "completed",
            seconds=time.perf_counter() - t0,
            device=str(self.device),
            snapshot_states=run.snapshots,
            snapshot_iterations=run.snapshot_iterations,
            trace_start=run.trace_start,
        )

    def _cycle_ends(self, iterations: int) -> list[int]:
        """Where every param group's schedule is back at its low point, up to ``iterations``."""
        common: set[int] | None = None
        for schedule in self.scheduler.schedules:
            try:  # the last scheduler.step() asks for the values at ``iterations``
                schedule.lr_at(iterations)
            except ScheduleError as exc:
                raise ScheduleError(f"iterations={iterations}: {exc}") from exc
            group = set(cycle_ends(schedule, iterations))
            common = group if common is None else common & group
        return sorted(common or ())

    def _loop(
        self,
        loader: Iterable[Any],
        batches: Iterator[Any] | None,
        run: _Run,
        *,
        val_loader: Iterable[Any] | None,
        iterations: int,
        ends: list[int],
        callback: Callable[[TrainProgress], None] | None,
        should_stop: Callable[[], bool] | None,
        checkpoint: Callable[[Checkpoint], None] | None,
        snapshots: int,
        t0: float,
    ) -> bool:
        """The training loop; returns whether ``should_stop`` ended it."""
        model, optimizer, scheduler = self.model, self.optimizer, self.scheduler
        loss_fn, metric_fn, batch_fn, device = (
            self.loss_fn,
            self.metric_fn,
            self.batch_fn,
            self.device,
        )
        scaler, read_every = self.scaler, self.read_every
        group = optimizer.param_groups[0]
        momentum_key = self._momentum_key
        lrs, momenta = run.lrs, run.momenta
        pending_loss: list[Tensor] = []
        pending_acc: list[Tensor] = []
        try:
            epoch_len: int | None = len(loader)  # type: ignore[arg-type]
        except TypeError:  # no len(): an epoch ends when its iterator runs out
            epoch_len = None
        if epoch_len == 0:
            raise ValueError("train_loader yielded no batches")
        # A loader that says its batches are on our device already (TensorBatches does)
        # skips the per-batch device checks.
        on_device = getattr(loader, "device", None) == device
        default_split = batch_fn is _default_batch
        plain_loader = not (hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict"))
        set_epoch = getattr(loader, "set_epoch", None) if plain_loader else None
        upcoming = iter([e for e in ends if e > run.iteration])
        next_end = next(upcoming, None)
        it = run.iteration
        read_at = it + read_every
        if not model.training:
            model.train()  # submodules a user froze in eval mode inside a training model stay so
        while it < iterations:
            if batches is None:
                if run.batch == 0:  # (a stateful loader resumed mid-epoch keeps the saved one)
                    run.epoch_start_rng = torch.get_rng_state()
                    if set_epoch is not None:
                        set_epoch(run.epoch)
                batches = iter(loader)
            try:
                batch = next(batches)
            except StopIteration:
                batches = None
                if run.batch == 0:
                    raise ValueError("train_loader yielded no batches") from None
                run.iteration = it
                self._read(run, pending_loss, pending_acc)
                self._end_epoch(run, val_loader)
                self._deliver(run, lrs, momenta, None, iterations, callback, t0)
                read_at = it + read_every
                if should_stop is not None and should_stop():
                    return True
                continue
            lr = group["lr"]
            lrs.append(lr if type(lr) is float else float(scheduler.get_last_lr()[0]))
            if momenta is not None:
                momenta.append(
                    float(group["betas"][0] if momentum_key == "betas" else group["momentum"])
                )
            if default_split and type(batch) is tuple and len(batch) == 2:
                inputs, targets = batch
            else:
                inputs, targets = batch_fn(batch)
            if not on_device:
                inputs, targets = to_device(inputs, device), to_device(targets, device)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                with torch.autocast(device.type):
                    outputs = model(inputs)
                    loss = loss_fn(outputs, targets)
                scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
                scaler.step(optimizer)
                scaler.update()
            else:
                outputs = model(inputs)
                loss = loss_fn(outputs, targets)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
            scheduler.step()
            pending_loss.append(loss.detach())
            if metric_fn is not None:
                pending_acc.append(metric_fn(outputs.detach(), targets))
            it += 1
            run.batch += 1
            if run.batch == epoch_len or it == iterations:
                # an epoch's end, or the run's (its last epoch may be partial): before the
                # delivery and any checkpoint here, so the checkpoint holds its record
                run.iteration = it
                self._read(run, pending_loss, pending_acc)
                self._end_epoch(run, val_loader)
                batches = None
            elif it < read_at and it != next_end:
                continue
            run.iteration = it
            self._read(run, pending_loss, pending_acc)
            at_end = it == next_end
            self._deliver(run, lrs, momenta, it if at_end else None, iterations, callback, t0)
            read_at = it + read_every
            if at_end:
                next_end = next(upcoming, None)
                if snapshots:
                    run.snapshots = [*run.snapshots, _model_state(model)][-snapshots:]
                    run.snapshot_iterations = [*run.snapshot_iterations, it][-snapshots:]
                if checkpoint is not None:
                    checkpoint(self._capture(run, loader, iterations))
            if it < iterations and should_stop is not None and should_stop():
                return True
        run.iteration = it
        return False

    # ----------------------------------------------------------------- bookkeeping

    def _read(self, run: _Run, pending_loss: list[Tensor], pending_acc: list[Tensor]) -> None:
        """The host sync: bring the pending losses (and metrics) over in one transfer."""
        if not pending_loss:
            return
        if pending_acc:
            both = torch.stack(
                [torch.stack(pending_loss).float(), torch.stack(pending_acc).float()]
            )
            losses, accs = both.tolist()
            run.epoch_accuracy_sum += math.fsum(accs)
        else:
            losses = torch.stack(pending_loss).float().tolist()
        pending_loss.clear()
        pending_acc.clear()
        run.losses.extend(losses)
        run.epoch_loss_sum += math.fsum(losses)
        run.epoch_steps += len(losses)

    def _end_epoch(self, run: _Run, val_loader: Iterable[Any] | None) -> None:
        steps = run.epoch_steps
        val_loss: float | None = None
        val_accuracy: float | None = None
        if val_loader is not None:
            val_loss, val_accuracy = self._evaluate(val_loader)
            run.last_val = (run.iteration, val_loss, val_accuracy)
        record = EpochRecord(
            epoch=run.epoch,
            iteration=run.iteration,
            train_loss=run.epoch_loss_sum / steps,
            train_accuracy=run.epoch_accuracy_sum / steps if self.metric_fn is not None else None,
            val_loss=val_loss,
            val_accuracy=val_accuracy,
        )
        run.epochs.append(record)
        run.new_epochs.append(record)
        run.epoch += 1
        run.batch = 0
        run.epoch_loss_sum = 0.0
        run.epoch_accuracy_sum = 0.0
        run.epoch_steps = 0

    def _deliver(
        self,
        run: _Run,
        lrs: list[float],
        momenta: list[float] | None,
        cycle_end: int | None,
        iterations: int,
        callback: Callable[[TrainProgress], None] | None,
        t0: float,
    ) -> None:
        start, stop = run.delivered, run.iteration
        # list positions: the traces begin at iteration run.trace_start
        first, last = start - run.trace_start, stop - run.trace_start
        if callback is not None and (stop > start or run.new_epochs or cycle_end is not None):
            callback(
                TrainProgress(
                    start=start,
                    lrs=lrs[first:last],
                    momenta=None if momenta is None else momenta[first:last],
                    losses=run.losses[first:last],
                    epochs=list(run.new_epochs),
                    cycle_end=cycle_end,
                    iterations=iterations,
                    elapsed=time.perf_counter() - t0,
                )
            )
        run.delivered = stop
        run.new_epochs.clear()
        if not run.keep_traces and last > 0:
            # in place: the loop holds these very lists
            del lrs[:last], run.losses[:last]
            if momenta is not None:
                del momenta[:last]
            run.trace_start = stop

    def _capture(self, run: _Run, loader: Iterable[Any], iterations: int) -> Checkpoint:
        assert run.epoch_start_rng is not None  # set when the epoch's iterator was made
        loader_state = None
        if hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict"):
            loader_state = _to_cpu(loader.state_dict())
        return Checkpoint(
            iteration=run.iteration,
            iterations=iterations,
            epoch=run.epoch,
            batch=run.batch,
            model=_model_state(self.model),
            optimizer=_to_cpu(self.optimizer.state_dict()),
            scheduler=_to_cpu(self.scheduler.state_dict()),
            scaler=None if self.scaler is None else dict(self.scaler.state_dict()),
            rng=_rng_state(),
            loader=loader_state,
            epoch_start_rng=run.epoch_start_rng.clone(),
            epochs=list(run.epochs),
            epoch_loss_sum=run.epoch_loss_sum,
            epoch_accuracy_sum=run.epoch_accuracy_sum,
            epoch_steps=run.epoch_steps,
            lrs=list(run.lrs),
            momenta=None if run.momenta is None else list(run.momenta),
            losses=list(run.losses),
            snapshots=list(run.snapshots),
            snapshot_iterations=list(run.snapshot_iterations),
            trace_start=run.trace_start,
        )

    def _restore(self, ckpt: Checkpoint, run: _Run, loader: Iterable[Any]) -> Iterator[Any] | None:
        """Put everything back as it was at ``ckpt``; returns the live epoch iterator, if any."""
        if (self.scaler is None) != (ckpt.scaler is None):
            raise ValueError(
                f"resume: the checkpoint was taken with amp={ckpt.scaler is not None}, "
                f"this trainer has amp={self.amp}"
            )
        if (ckpt.momenta is None) != (self._momentum_key is None):
            raise ValueError(
                "resume: the checkpoint's optimizer and this one differ in having a momentum"
            )
        traced = len(ckpt.lrs)
        if len(ckpt.losses) != traced or ckpt.trace_start + traced != ckpt.iteration:
            raise ValueError(
                f"resume: the checkpoint's traces ({len(ckpt.lrs)} lrs and {len(ckpt.losses)} "
                f"losses from iteration {ckpt.trace_start}) do not end at its iteration "
                f"{ckpt.iteration}"
            )
        if run.keep_traces and ckpt.trace_start > 0:
            raise ValueError(
                f"resume: keep_traces=True, but the checkpoint dropped its traces before "
                f"iteration {ckpt.trace_start} (taken with keep_traces=False); resume it "
                "with keep_traces=False"
            )
        self.model.load_state_dict(ckpt.model)
        self.optimizer.load_state_dict(ckpt.optimizer)
        self.scheduler.load_state_dict(ckpt.scheduler)
        if self.scheduler.last_epoch != ckpt.iteration:
            raise ValueError(
                f"resume: the checkpoint's scheduler is at step {self.scheduler.last_epoch}, "
                f"its iteration is {ckpt.iteration}"
            )
        if self.scaler is not None and ckpt.scaler is not None:
            self.scaler.load_state_dict(ckpt.scaler)
        run.iteration = run.delivered = ckpt.iteration
        run.epoch, run.batch = ckpt.epoch, ckpt.batch
        if run.keep_traces:
            run.lrs, run.losses = list(ckpt.lrs), list(ckpt.losses)
            run.momenta = None if ckpt.momenta is None else list(ckpt.momenta)
        else:  # everything up to a checkpoint was delivered before it was taken
            run.trace_start = ckpt.iteration
            run.momenta = None if ckpt.momenta is None else []
        run.epochs = list(ckpt.epochs)
        run.epoch_loss_sum = ckpt.epoch_loss_sum
        run.epoch_accuracy_sum = ckpt.epoch_accuracy_sum
        run.epoch_steps = ckpt.epoch_steps
        run.epoch_start_rng = ckpt.epoch_start_rng.clone()
        run.snapshots = list(ckpt.snapshots)
        run.snapshot_iterations = list(ckpt.snapshot_iterations)
        if run.epochs and run.epochs[-1].iteration == ckpt.iteration:
            last = run.epochs[-1]
            if last.val_loss is not None:
                run.last_val = (last.iteration, last.val_loss, last.val_accuracy)
        batches: Iterator[Any] | None = None
        stateful = hasattr(loader, "state_dict") and hasattr(loader, "load_state_dict")
        if stateful and ckpt.loader is not None:
            loader.load_state_dict(ckpt.loader)  # type: ignore[attr-defined]
        elif ckpt.batch > 0:
            # Replay the epoch's order: the RNG as it was when the epoch began, the
            # same iter(), the used batches skipped; the RNG is set to the checkpoint's below.
            torch.set_rng_state(ckpt.epoch_start_rng)
            set_epoch = getattr(loader, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(ckpt.epoch)
            batches = iter(loader)
            for skipped in range(ckpt.batch):
                try:
                    next(batches)
                except StopIteration:
                    raise ValueError(
                        f"resume: train_loader's epoch has {skipped} batches, the checkpoint "
                        f"is at batch {ckpt.batch} of it"
                    ) from None
        _set_rng_state(ckpt.rng)
        return batches

    # ----------------------------------------------------------------- evaluation

    def _evaluate(self, loader: Iterable[Any]) -> tuple[float, float | None]:
        """Loss and metric over ``loader`` in eval mode, every sample weighted equally."""
        return _evaluate_with(
            self.model,
            loader,
            lambda inputs: self.model(inputs),
            loss_fn=self.loss_fn,
            metric_fn=self.metric_fn,
            batch_fn=self.batch_fn,
            device=self.device,
            amp=self.amp,
        )

    def _evaluate_ensemble(
        self, loader: Iterable[Any], states: list[dict[str, Tensor]]
    ) -> tuple[float, float | None]:
        """The snapshots' ensemble over ``loader`` (see :func:`_evaluate_ensemble`)."""
        return _evaluate_ensemble(
            self.model,
            loader,
            states,
            loss_fn=self.loss_fn,
            metric_fn=self.metric_fn,
            batch_fn=self.batch_fn,
            device=self.device,
            amp=self.amp,
        )


# --------------------------------------------------------------------------- evaluation


def _evaluate_ensemble(
    model: nn.Module,
    loader: Iterable[Any],
    states: list[dict[str, Tensor]],
    *,
    loss_fn: LossFn,
    metric_fn: MetricFn | None,
    batch_fn: BatchFn,
    device: torch.device,
    amp: bool = False,
) -> tuple[float, float | None]:
    """The snapshots' mean softmax, fed to ``loss_fn`` / ``metric_fn`` as log-probabilities.

    One pass over ``loader`` runs every snapshot on each batch with
    ``torch.func.functional_call`` (the model's own weights are untouched),
    so a shuffling validation loader cannot pair one snapshot's outputs with
    another's targets. Shared by :class:`Trainer` and :class:`clr.FusedTrainer`.
    """
    from torch.func import functional_call

    members = [{k: v.to(device) for k, v in state.items()} for state in states]
    tiny = torch.finfo(torch.float32).tiny

    def forward(inputs: Any) -> Tensor:
        mean: Tensor | None = None
        for member in members:
            probs = functional_call(model, member, (inputs,)).float().softmax(dim=1)
            mean = probs if mean is None else mean + probs
        assert mean is not None
        return (mean / len(members)).clamp_min(tiny).log()

    return _evaluate_with(
        model,
        loader,
        forward,
        loss_fn=loss_fn,
        metric_fn=metric_fn,
        batch_fn=batch_fn,
        device=device,
        amp=amp,
    )


def _evaluate_with(
    model: nn.Module,
    loader: Iterable[Any],
    forward: Callable[[Any], Tensor],
    *,
    loss_fn: LossFn,
    metric_fn: MetricFn | None,
    batch_fn: BatchFn,
    device: torch.device,
    amp: bool,
) -> tuple[float, float | None]:
    """Loss and metric of ``forward`` over ``loader``, ``model`` in eval mode (then as found)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    metric_sum = torch.zeros((), dtype=torch.float64, device=device)
    samples = 0
    try:
        with torch.no_grad(), torch.autocast(device.type, enabled=amp):
            for batch in loader:
                inputs, targets = batch_fn(batch)
                inputs, targets = to_device(inputs, device), to_device(targets, device)
                outputs = forward(inputs)
                n = _count(targets)
                loss_sum += loss_fn(outputs, targets).double() * n
                if metric_fn is not None:
                    metric_sum += metric_fn(outputs, targets).double() * n
                samples += n
    finally:
        for module, training in modes:
            module.training = training
    if samples == 0:
        raise ValueError("val_loader yielded no batches")
    loss = float(loss_sum) / samples
    return loss, float(metric_sum) / samples if metric_fn is not None else None
