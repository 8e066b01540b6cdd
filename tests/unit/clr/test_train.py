"""clr.train: the CLR trainer, its checkpoints, exact resume and snapshot ensembles."""

from __future__ import annotations

import doctest
import io
import json
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn
from torch.optim import lr_scheduler as tls
from torch.utils.data import DataLoader, TensorDataset

import clr.policies
import clr.train
from clr import (
    Checkpoint,
    CyclicLR,
    ScheduledLR,
    ScheduleError,
    Trainer,
    TrainProgress,
    TrainResult,
    create_scheduler,
    cycle_ends,
)
from clr.workloads import TensorBatches, build_workload

WIDTH = 16


# --------------------------------------------------------------------------- helpers


@dataclass
class Setup:
    model: nn.Module
    optimizer: torch.optim.Optimizer
    trainer: Trainer
    train_loader: Any
    val_loader: Any


def digits(
    policy: str = "triangular",
    *,
    optimizer: str = "sgd",
    read_every: int = 4,
    scheduler: Callable[[torch.optim.Optimizer], ScheduledLR] | None = None,
    **schedule: Any,
) -> Setup:
    """The digits MLP (22 batches an epoch) with a fresh optimizer and scheduler."""
    w = build_workload("digits_mlp", {"width": WIDTH}, seed=0)
    if optimizer == "sgd":
        opt: torch.optim.Optimizer = torch.optim.SGD(
            w.model.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4
        )
    else:
        opt = torch.optim.Adam(w.model.parameters(), lr=0.01)
    sched = scheduler(opt) if scheduler else create_scheduler(opt, policy, **schedule)
    trainer = Trainer(
        w.model, opt, w.loss_fn, metric_fn=w.metric_fn, scheduler=sched, read_every=read_every
    )
    return Setup(w.model, opt, trainer, w.train_loader, w.val_loader)


def noisy_dropout(read_every: int = 4) -> Setup:
    """A model with dropout, a shuffling DataLoader (global RNG) and a batch_fn that draws
    from python's random and numpy: every RNG a resume must restore is in use."""
    torch.manual_seed(1)
    x = torch.randn(120, 10)
    y = (x[:, :3].sum(dim=1) > 0).long() + (x[:, 3] > 1).long()
    model = nn.Sequential(nn.Linear(10, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    sched = CyclicLR(
        opt,
        base_lr=0.01,
        max_lr=0.2,
        step_size_up=5,
        step_size_down=8,
        mode="exp_range",
        gamma=0.99,
        base_momentum=0.8,
        max_momentum=0.9,
    )
    train = DataLoader(TensorDataset(x[:100], y[:100]), batch_size=16, shuffle=True)
    val = DataLoader(TensorDataset(x[100:], y[100:]), batch_size=8)

    def batch_fn(batch: Any) -> tuple[Any, Any]:
        inputs, targets = batch
        noise = random.gauss(0, 0.01) + float(np.random.normal(0, 0.01))  # noqa: NPY002
        return inputs + noise, targets

    def accuracy(out: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (out.argmax(dim=1) == t).float().mean()

    trainer = Trainer(
        model,
        opt,
        nn.functional.cross_entropy,
        metric_fn=accuracy,
        scheduler=sched,
        read_every=read_every,
        batch_fn=batch_fn,
    )
    return Setup(model, opt, trainer, train, val)


def seed_everything() -> None:
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)  # noqa: NPY002


def stop_after(n: int) -> tuple[Callable[[TrainProgress], None], Callable[[], bool]]:
    """A callback and stop flag that stop a run at the first read point at or after ``n``."""
    seen = [0]

    def callback(p: TrainProgress) -> None:
        seen[0] = p.iteration

    return callback, lambda: seen[0] >= n


def roundtrip(ckpt: Checkpoint) -> Checkpoint:
    buffer = io.BytesIO()
    ckpt.save(buffer)
    buffer.seek(0)
    return Checkpoint.load(buffer, map_location="cpu")


@dataclass
class Delivered:
    """A callback that gathers the traces it is handed, checking each iteration comes once."""

    start: int | None = None
    lrs: list[float] = field(default_factory=list)
    momenta: list[float] | None = None
    losses: list[float] = field(default_factory=list)

    def __call__(self, p: TrainProgress) -> None:
        if self.start is None:
            self.start = p.start
            self.momenta = None if p.momenta is None else []
        assert p.start == self.start + len(self.lrs)  # consecutive, each once
        self.lrs.extend(p.lrs)
        self.losses.extend(p.losses)
        if self.momenta is not None:
            assert p.momenta is not None
            self.momenta.extend(p.momenta)


def assert_same_run(
    a: TrainResult,
    b: TrainResult,
    ma: nn.Module,
    mb: nn.Module,
    *,
    delivered: Delivered | None = None,
) -> None:
    """``b`` is ``a`` (kept traces); with ``delivered``, ``b`` dropped its traces and the
    callback got ``a``'s from where ``b`` resumed."""
    if delivered is None:
        assert b.trace_start == 0
        assert b.lrs == a.lrs
        assert b.momenta == a.momenta
        assert b.losses == a.losses
    else:
        assert (b.trace_start, b.lrs, b.losses) == (b.iterations, [], [])
        assert b.momenta == (None if a.momenta is None else [])
        start = delivered.start
        assert start is not None
        assert delivered.lrs == a.lrs[start:]
        assert delivered.momenta == (None if a.momenta is None else a.momenta[start:])
        assert delivered.losses == a.losses[start:]
    assert b.epochs == a.epochs
    assert b.cycle_ends == a.cycle_ends
    assert (b.val_loss, b.val_accuracy) == (a.val_loss, a.val_accuracy)
    assert b.ensemble == a.ensemble
    for (name, pa), (_, pb) in zip(ma.state_dict().items(), mb.state_dict().items(), strict=True):
        assert torch.equal(pa, pb), name


# --------------------------------------------------------------------------- schedule trace


class TestTrace:
    @pytest.mark.parametrize(
        ("mode", "gamma", "down"),
        [("triangular", 1.0, None), ("triangular2", 1.0, 4), ("exp_range", 0.97, 9)],
    )
    def test_lrs_and_momenta_equal_torch_cyclic_lr(
        self, mode: str, gamma: float, down: int | None
    ) -> None:
        kwargs: dict[str, Any] = {
            "base_lr": 0.002,
            "max_lr": 0.05,
            "step_size_up": 6,
            "step_size_down": down,
            "mode": mode,
            "gamma": gamma,
            "cycle_momentum": True,
            "base_momentum": 0.8,
            "max_momentum": 0.95,
        }
        s = digits(scheduler=lambda opt: CyclicLR(opt, **kwargs))
        result = s.trainer.run(s.train_loader, iterations=60)
        oracle_opt = torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=0.5, momentum=0.5)
        oracle = tls.CyclicLR(oracle_opt, **kwargs)
        lrs, momenta = [], []
        for _ in range(60):
            lrs.append(oracle_opt.param_groups[0]["lr"])
            momenta.append(oracle_opt.param_groups[0]["momentum"])
            oracle_opt.step()
            oracle.step()
        assert result.lrs == lrs
        assert result.momenta == momenta
        assert min(result.lrs) == 0.002

    def test_adam_beta1_is_traced_as_momentum(self) -> None:
        s = digits(
            "triangular",
            optimizer="adam",
            base_lr=1e-3,
            max_lr=1e-2,
            step_size_up=5,
            base_momentum=0.85,
            max_momentum=0.95,
        )
        result = s.trainer.run(s.train_loader, iterations=20)
        assert result.momenta is not None
        assert result.momenta[0] == 0.95
        assert result.momenta[5] == pytest.approx(0.85)
        assert result.momenta[10] == pytest.approx(0.95)

    def test_no_momentum_gives_none(self) -> None:
        model = nn.Linear(4, 2)
        opt = torch.optim.Adagrad(model.parameters(), lr=0.1)
        trainer = Trainer(
            model,
            opt,
            nn.functional.cross_entropy,
            scheduler=create_scheduler(opt, "step", lr=0.1, step_size=3, gamma=0.5),
        )
        data = [(torch.randn(8, 4), torch.randint(0, 2, (8,))) for _ in range(5)]
        result = trainer.run(data, iterations=7)
        assert result.momenta is None
        assert result.lrs == [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025]

    def test_losses_are_read_every_read_every_steps(self) -> None:
        s = digits("fixed", read_every=5, lr=0.05)
        chunks: list[TrainProgress] = []
        result = s.trainer.run(s.train_loader, iterations=30, callback=chunks.append)
        # reads at 5, 10, 15, 20, the epoch end at 22, then 27 and the end at 30
        assert [(c.start, len(c.lrs)) for c in chunks] == [
            (0, 5), (5, 5), (10, 5), (15, 5), (20, 2), (22, 5), (27, 3),
        ]  # fmt: skip
        assert [len(c.epochs) for c in chunks] == [0, 0, 0, 0, 1, 0, 1]  # the last one partial
        assert [loss for c in chunks for loss in c.losses] == result.losses
        assert len(result.losses) == 30
        assert all(math.isfinite(v) for v in result.losses)
        assert result.losses[-1] < result.losses[0]


# --------------------------------------------------------------------------- epochs


class TestEpochs:
    def test_epoch_records_are_epoch_means_and_validation(self) -> None:
        s = digits("triangular", base_lr=0.01, max_lr=0.1, step_size_up=11)
        result = s.trainer.run(s.train_loader, val_loader=s.val_loader, iterations=55)
        # two whole epochs of 22, then the run's last partial one
        assert [(e.epoch, e.iteration) for e in result.epochs] == [(0, 22), (1, 44), (2, 55)]
        for e, (a, b) in zip(result.epochs, [(0, 22), (22, 44), (44, 55)], strict=True):
            assert e.train_loss == pytest.approx(sum(result.losses[a:b]) / (b - a), rel=1e-12)
            assert e.train_accuracy is not None
            assert 0 <= e.train_accuracy <= 1
            assert e.val_loss is not None
            assert e.val_accuracy is not None
        assert result.epochs[-1].val_loss == result.val_loss
        assert result.epochs[-1].val_accuracy == result.val_accuracy
        assert result.val_loss is not None
        assert result.epochs[0].val_loss is not None
        assert result.epochs[0].val_loss > result.val_loss  # it learns
        assert result.val_accuracy is not None
        assert result.val_accuracy > 0.2  # ten classes
        # the validation pass put the model back in training mode and changed nothing
        assert s.model.training

    def test_validation_weights_every_sample_equally(self) -> None:
        model = nn.Linear(2, 2, bias=False)
        nn.init.zeros_(model.weight)
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        trainer = Trainer(
            model,
            opt,
            nn.functional.cross_entropy,
            metric_fn=lambda o, t: (o.argmax(1) == t).float().mean(),
            scheduler=create_scheduler(opt, "fixed", lr=0.0),
        )
        x = torch.zeros(3, 2)
        val = [(x, torch.tensor([0, 0, 0])), (x[:1], torch.tensor([1]))]  # argmax picks class 0
        result = trainer.run([(x, torch.tensor([0, 1, 0]))], val_loader=val, iterations=1)
        assert result.val_accuracy == pytest.approx(0.75)  # not (1 + 0) / 2
        assert result.val_loss == pytest.approx(math.log(2))

    def test_a_loader_without_len_ends_epochs_when_it_runs_out(self) -> None:
        s = digits("fixed", lr=0.05)
        loader = s.train_loader

        class NoLen:
            def __iter__(self) -> Iterator[Any]:
                return iter(loader)

        result = s.trainer.run(NoLen(), val_loader=s.val_loader, iterations=50)
        assert [(e.epoch, e.iteration) for e in result.epochs] == [(0, 22), (1, 44), (2, 50)]


# --------------------------------------------------------------------------- checkpoints


class TestCheckpoints:
    def test_a_checkpoint_at_every_cycle_end_after_the_callback_has_it_all(self) -> None:
        s = digits("triangular2", base_lr=0.01, max_lr=0.1, step_size_up=7, read_every=3)
        events: list[tuple[str, Any]] = []
        delivered: list[float] = []
        epochs_delivered: list[Any] = []

        def callback(p: TrainProgress) -> None:
            assert p.start == len(delivered)  # consecutive, each once
            delivered.extend(p.lrs)
            epochs_delivered.extend(p.epochs)
            events.append(("progress", p.cycle_end))

        def checkpoint(c: Checkpoint) -> None:
            # everything up to the cycle end already went through the callback
            assert len(delivered) == c.iteration
            assert epochs_delivered == c.epochs
            assert events[-1] == ("progress", c.iteration)
            events.append(("checkpoint", c.iteration))

        result = s.trainer.run(
            s.train_loader,
            val_loader=s.val_loader,
            iterations=70,
            callback=callback,
            checkpoint=checkpoint,
        )
        assert result.cycle_ends == [14, 28, 42, 56, 70]
        assert [it for kind, it in events if kind == "checkpoint"] == [14, 28, 42, 56, 70]
        assert delivered == result.lrs
        assert epochs_delivered == result.epochs

    def test_a_checkpoint_holds_a_copy_of_everything(self) -> None:
        s = digits("triangular", base_lr=0.01, max_lr=0.1, step_size_up=5)
        saved: list[Checkpoint] = []
        s.trainer.run(s.train_loader, iterations=20, checkpoint=saved.append)
        first = saved[0]
        assert [c.iteration for c in saved] == [10, 20]
        assert (first.epoch, first.batch) == (0, 10)
        assert first.loader is not None
        assert (first.loader["epoch"], first.loader["batch"]) == (
            0,
            10,
        )
        assert first.scheduler["last_epoch"] == 10
        assert set(first.rng) == {"torch", "cuda", "python", "numpy"}
        assert first.rng["numpy"] is not None  # numpy is imported here, so it is saved
        assert first.scaler is None
        assert len(first.lrs) == len(first.losses) == 10
        # a copy: later training did not change it
        live = s.model.state_dict()
        assert not all(torch.equal(first.model[k], live[k]) for k in live)
        assert all(torch.equal(saved[1].model[k], live[k]) for k in live)

    def test_save_streams_to_a_write_only_file_and_load_reads_weights_only(self) -> None:
        s = digits("triangular", base_lr=0.01, max_lr=0.1, step_size_up=5)
        saved: list[Checkpoint] = []
        s.trainer.run(s.train_loader, iterations=10, checkpoint=saved.append, snapshots=1)

        class WriteOnly(io.RawIOBase):
            def __init__(self) -> None:
                self.chunks: list[bytes] = []

            def writable(self) -> bool:
                return True

            def write(self, b: Any) -> int:
                self.chunks.append(bytes(b))
                return len(b)

        sink = WriteOnly()
        saved[0].save(sink)  # type: ignore[arg-type]
        assert len(sink.chunks) > 1  # written piecewise, not as one blob
        back = Checkpoint.load(io.BytesIO(b"".join(sink.chunks)))
        assert back.lrs == saved[0].lrs
        assert back.losses == saved[0].losses
        assert back.epochs == saved[0].epochs
        assert back.snapshot_iterations == [10]
        assert all(torch.equal(back.model[k], v) for k, v in saved[0].model.items())
        assert back.optimizer["param_groups"] == saved[0].optimizer["param_groups"]

    def test_without_kept_traces_checkpoints_do_not_grow_and_every_iteration_is_delivered(
        self,
    ) -> None:
        def run(keep_traces: bool) -> tuple[TrainResult, list[int], Delivered, list[Checkpoint]]:
            torch.manual_seed(0)
            model = nn.Linear(4, 2)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            sched = create_scheduler(opt, "triangular", base_lr=0.01, max_lr=0.1, step_size_up=10)
            trainer = Trainer(model, opt, nn.functional.cross_entropy, scheduler=sched)
            x = torch.randn(400, 4)
            loader = TensorBatches(x, (x[:, 0] > 0).long(), 1, shuffle=False)  # one long epoch
            saved: list[Checkpoint] = []
            delivered = Delivered()
            result = trainer.run(
                loader,
                iterations=390,
                callback=delivered,
                checkpoint=saved.append,
                keep_traces=keep_traces,
            )
            sizes = []
            for ckpt in saved:
                buffer = io.BytesIO()
                ckpt.save(buffer)
                sizes.append(len(buffer.getvalue()))
            return result, sizes, delivered, saved

        kept, kept_sizes, kept_delivered, _ = run(keep_traces=True)
        dropped, sizes, delivered, saved = run(keep_traces=False)
        assert [c.iteration for c in saved] == list(range(20, 390, 20))
        assert [c.trace_start for c in saved] == [c.iteration for c in saved]
        assert all(c.lrs == c.losses == c.momenta == [] for c in saved)
        # 360 iterations between the first and last cycle end: 3 float64 traces each
        assert kept_sizes[-1] - kept_sizes[0] >= 360 * 3 * 8
        assert abs(sizes[-1] - sizes[0]) < 300, sizes
        # the callback still got every iteration exactly once (Delivered checks the order)
        assert delivered.start == 0
        assert delivered.lrs == kept.lrs == kept_delivered.lrs
        assert delivered.momenta == kept.momenta
        assert delivered.losses == kept.losses
        assert len(delivered.lrs) == 390
        assert (dropped.trace_start, dropped.lrs, dropped.losses) == (390, [], [])
        assert dropped.to_dict()["trace_start"] == 390
        assert kept.trace_start == 0

    def test_a_checkpoint_saved_without_a_trace_start_starts_at_0(self) -> None:
        s = digits("triangular", base_lr=0.01, max_lr=0.1, step_size_up=5)
        saved: list[Checkpoint] = []
        s.trainer.run(s.train_loader, iterations=10, checkpoint=saved.append)
        state = saved[0].state_dict()
        assert state["trace_start"] == 0
        del state["trace_start"]  # as written before keep_traces existed
        back = Checkpoint.from_state_dict(state)
        assert back.trace_start == 0
        assert back.lrs == saved[0].lrs

    def test_load_refuses_other_files(self) -> None:
        buffer = io.BytesIO()
        torch.save({"weights": torch.zeros(2)}, buffer)
        buffer.seek(0)
        with pytest.raises(ValueError, match="not a clr training checkpoint"):
            Checkpoint.load(buffer)


# --------------------------------------------------------------------------- resume


class TestResume:
    @pytest.mark.parametrize("keep_traces", [True, False])
    def test_resumed_mid_epoch_with_momentum_cycling_is_bit_identical(
        self, keep_traces: bool
    ) -> None:
        kwargs: dict[str, Any] = {
            "base_lr": 0.01,
            "max_lr": 0.2,
            "step_size_up": 15,
            "base_momentum": 0.8,
            "max_momentum": 0.95,
        }
        seed_everything()
        a = digits("triangular2", **kwargs)
        full = a.trainer.run(a.train_loader, val_loader=a.val_loader, iterations=90, snapshots=2)

        seed_everything()
        b = digits("triangular2", **kwargs)
        saved: list[Checkpoint] = []
        callback, should_stop = stop_after(70)
        stopped = b.trainer.run(
            b.train_loader,
            val_loader=b.val_loader,
            iterations=90,
            snapshots=2,
            callback=callback,
            should_stop=should_stop,
            checkpoint=saved.append,
            keep_traces=keep_traces,
        )
        assert stopped.stop_reason == "cancelled"
        # read points: 64, 66 (the epoch's end), 70
        assert stopped.iterations == 70
        assert stopped.val_loss is None
        assert stopped.ensemble is None
        assert [c.iteration for c in saved] == [30, 60]
        assert (saved[-1].epoch, saved[-1].batch) == (2, 16)  # a checkpoint mid-epoch
        if not keep_traces:  # all delivered at the cycle end: no traces in the checkpoint
            assert (saved[-1].trace_start, saved[-1].lrs, saved[-1].losses) == (60, [], [])
            assert saved[-1].momenta == []
            assert (stopped.trace_start, stopped.lrs) == (70, [])

        torch.manual_seed(999)  # a fresh process: every RNG elsewhere
        c = digits("triangular2", **kwargs)
        delivered = Delivered()
        resumed = c.trainer.run(
            c.train_loader,
            val_loader=c.val_loader,
            iterations=90,
            snapshots=2,
            resume=roundtrip(saved[-1]),
            callback=delivered,
            keep_traces=keep_traces,
        )
        assert resumed.stop_reason == "completed"
        assert delivered.start == 60
        assert delivered.lrs == full.lrs[60:]
        assert_same_run(
            full, resumed, a.model, c.model, delivered=None if keep_traces else delivered
        )
        assert full.ensemble is not None
        assert full.snapshot_iterations == [60, 90]
        for sa, sc in zip(full.snapshot_states, resumed.snapshot_states, strict=True):
            assert all(torch.equal(sa[k], sc[k]) for k in sa)

    @pytest.mark.parametrize("keep_traces", [True, False])
    def test_every_rng_and_a_shuffling_dataloader_resume_exactly(self, keep_traces: bool) -> None:
        seed_everything()
        a = noisy_dropout()
        full = a.trainer.run(a.train_loader, val_loader=a.val_loader, iterations=52)

        seed_everything()
        b = noisy_dropout()
        saved: list[Checkpoint] = []
        callback, should_stop = stop_after(45)
        b.trainer.run(
            b.train_loader,
            iterations=52,
            val_loader=b.val_loader,
            callback=callback,
            should_stop=should_stop,
            checkpoint=saved.append,
            keep_traces=keep_traces,
        )
        assert [c.iteration for c in saved] == [13, 26, 39]
        assert (saved[-1].epoch, saved[-1].batch) == (5, 4)  # 7 batches an epoch
        assert saved[-1].loader is None  # a DataLoader: replayed from the epoch's RNG

        torch.manual_seed(5)
        random.seed(5)
        np.random.seed(5)  # noqa: NPY002
        c = noisy_dropout()
        delivered = Delivered()
        resumed = c.trainer.run(
            c.train_loader,
            val_loader=c.val_loader,
            iterations=52,
            resume=roundtrip(saved[-1]),
            callback=delivered,
            keep_traces=keep_traces,
        )
        assert delivered.start == 39
        assert_same_run(
            full, resumed, a.model, c.model, delivered=None if keep_traces else delivered
        )
        # and the RNGs were really in play: another seed gives other weights
        torch.manual_seed(7)
        d = noisy_dropout()
        other = d.trainer.run(d.train_loader, iterations=52)
        assert other.losses != full.losses

    def test_resume_from_the_final_checkpoint_only_evaluates(self) -> None:
        s = digits("triangular", base_lr=0.01, max_lr=0.1, step_size_up=11)
        saved: list[Checkpoint] = []
        full = s.trainer.run(
            s.train_loader, val_loader=s.val_loader, iterations=44, checkpoint=saved.append
        )
        t = digits("triangular", base_lr=0.01, max_lr=0.1, step_size_up=11)
        chunks: list[TrainProgress] = []
        again = t.trainer.run(
            t.train_loader,
            val_loader=t.val_loader,
            iterations=44,
            resume=saved[-1],
            callback=chunks.append,
        )
        assert_same_run(full, again, s.model, t.model)
        assert chunks == []  # nothing new to report: the epochs were in the checkpoint

    def test_resume_refuses_what_does_not_match(self) -> None:
        s = digits("triangular", base_lr=0.01, max_lr=0.1, step_size_up=5)
        saved: list[Checkpoint] = []
        s.trainer.run(s.train_loader, iterations=20, checkpoint=saved.append)
        t = digits("triangular", base_lr=0.01, max_lr=0.1, step_size_up=5)
        with pytest.raises(ValueError, match="iterations=15 is before the checkpoint's iteration"):
            t.trainer.run(t.train_loader, iterations=15, resume=saved[-1])
        with pytest.raises(ValueError, match="the checkpoint ends a finished run of 20"):
            t.trainer.run(t.train_loader, iterations=30, resume=saved[-1])
        u = digits("triangular", base_lr=0.01, max_lr=0.1, step_size_up=5)
        adagrad = torch.optim.Adagrad(u.model.parameters(), lr=0.01)  # no momentum of any kind
        trainer = Trainer(
            u.model,
            adagrad,
            nn.functional.cross_entropy,
            scheduler=create_scheduler(
                adagrad, "triangular", base_lr=0.01, max_lr=0.1, step_size_up=5
            ),
        )
        with pytest.raises(ValueError, match="differ in having a momentum"):
            trainer.run(u.train_loader, iterations=20, resume=saved[-1])

    def test_a_checkpoint_without_its_traces_resumes_only_without_keeping_them(self) -> None:
        s = digits("triangular", base_lr=0.01, max_lr=0.1, step_size_up=5)
        saved: list[Checkpoint] = []
        s.trainer.run(s.train_loader, iterations=30, checkpoint=saved.append, keep_traces=False)
        assert saved[0].trace_start == 10
        t = digits("triangular", base_lr=0.01, max_lr=0.1, step_size_up=5)
        with pytest.raises(ValueError, match="keep_traces=True, but the checkpoint dropped"):
            t.trainer.run(t.train_loader, iterations=30, resume=saved[0])
        bad = roundtrip(saved[0])
        bad.lrs = [0.01]  # traces that do not end at the checkpoint's iteration
        with pytest.raises(ValueError, match="traces .* do not end at its iteration 10"):
            t.trainer.run(t.train_loader, iterations=30, resume=bad, keep_traces=False)
        assert t.trainer.scheduler.last_epoch == 0  # refused before anything was loaded

    def test_a_kept_trace_checkpoint_resumes_without_keeping_them(self) -> None:
        s = digits("triangular", base_lr=0.01, max_lr=0.1, step_size_up=5)
        saved: list[Checkpoint] = []
        full = s.trainer.run(s.train_loader, iterations=30, checkpoint=saved.append)
        assert (saved[0].trace_start, len(saved[0].lrs)) == (0, 10)
        t = digits("triangular", base_lr=0.01, max_lr=0.1, step_size_up=5)
        delivered = Delivered()
        again = t.trainer.run(
            t.train_loader,
            iterations=30,
            resume=roundtrip(saved[0]),
            callback=delivered,
            keep_traces=False,
        )
        assert delivered.start == 10
        assert_same_run(full, again, s.model, t.model, delivered=delivered)


# --------------------------------------------------------------------------- stop flag


class TestStop:
    def test_should_stop_ends_the_run_at_the_next_read(self) -> None:
        s = digits("fixed", read_every=4, lr=0.05)
        polls: list[int] = []
        seen = [0]

        def callback(p: TrainProgress) -> None:
            seen[0] = p.iteration

        def should_stop() -> bool:
            polls.append(seen[0])
            return seen[0] >= 10

        result = s.trainer.run(
            s.train_loader,
            val_loader=s.val_loader,
            iterations=100,
            callback=callback,
            should_stop=should_stop,
        )
        assert polls == [4, 8, 12]
        assert result.stop_reason == "cancelled"
        assert result.iterations == 12
        assert len(result.lrs) == len(result.losses) == 12
        assert result.val_loss is None
        assert result.epochs == []

    def test_completed_runs_say_so(self) -> None:
        s = digits("fixed", lr=0.05)
        result = s.trainer.run(s.train_loader, iterations=8, should_stop=lambda: False)
        assert result.stop_reason == "completed"
        assert result.iterations == 8
        assert json.loads(json.dumps(result.to_dict()))["iterations"] == 8


# --------------------------------------------------------------------------- ensemble


class TestSnapshotEnsemble:
    def test_the_last_k_cycle_ends_are_averaged(self) -> None:
        s = digits("triangular", base_lr=0.02, max_lr=0.2, step_size_up=11)
        result = s.trainer.run(s.train_loader, val_loader=s.val_loader, iterations=88, snapshots=3)
        assert result.snapshot_iterations == [44, 66, 88]
        assert len(result.snapshot_states) == 3
        ens = result.ensemble
        assert ens is not None
        assert ens.snapshots == 3
        assert ens.iterations == [44, 66, 88]
        assert ens.val_accuracy is not None
        assert 0.5 < ens.val_accuracy <= 1
        # the last snapshot is the final model
        final = s.model.state_dict()
        assert all(torch.equal(result.snapshot_states[-1][k], final[k]) for k in final)

        # recompute the ensemble by hand: mean softmax of the three snapshots
        probs = torch.zeros(0)
        targets = torch.zeros(0, dtype=torch.long)
        s.model.eval()
        with torch.no_grad():
            for state in result.snapshot_states:
                s.model.load_state_dict(state)
                p = torch.cat([s.model(x).softmax(1) for x, _ in s.val_loader])
                probs = p if probs.numel() == 0 else probs + p
            targets = torch.cat([y for _, y in s.val_loader])
        mean = probs / 3
        accuracy = float((mean.argmax(1) == targets).float().mean())
        nll = float(-mean[torch.arange(len(targets)), targets].log().mean())
        assert ens.val_accuracy == pytest.approx(accuracy, abs=1e-9)
        assert ens.val_loss == pytest.approx(nll, rel=1e-5)
        assert result.to_dict()["ensemble"]["snapshots"] == 3
        assert "snapshot_states" not in result.to_dict()

    def test_snapshots_without_validation_keep_the_weights(self) -> None:
        s = digits("cosine_restarts", max_lr=0.1, T_0=10, T_mult=2)
        result = s.trainer.run(s.train_loader, iterations=70, snapshots=2)
        assert result.cycle_ends == [10, 30, 70]
        assert result.snapshot_iterations == [30, 70]
        assert result.ensemble is None


# --------------------------------------------------------------------------- arguments


class TestArguments:
    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"iterations": 0}, "iterations must be a positive integer, got 0"),
            ({"iterations": 2.5}, "iterations must be a positive integer"),
            ({"iterations": 10, "snapshots": -1}, "snapshots must be an integer >= 0, got -1"),
            ({"iterations": 10, "callback": 3}, "callback must be callable"),
            ({"iterations": 10, "resume": {"iteration": 3}}, "resume must be a Checkpoint"),
            ({"iterations": 10, "keep_traces": 1}, "keep_traces must be true or false, got 1"),
        ],
    )
    def test_bad_run_arguments_are_named(self, kwargs: dict[str, Any], match: str) -> None:
        s = digits("fixed", lr=0.05)
        with pytest.raises(ValueError, match=match):
            s.trainer.run(s.train_loader, **kwargs)

    def test_bad_trainer_arguments_are_named(self) -> None:
        model = nn.Linear(4, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        sched = create_scheduler(opt, "fixed", lr=0.1)
        loss = nn.functional.cross_entropy
        with pytest.raises(ValueError, match="scheduler must be a clr ScheduledLR.*got CyclicLR"):
            Trainer(model, opt, loss, scheduler=tls.CyclicLR(opt, 0.01, 0.1))  # type: ignore[arg-type]
        other = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(ValueError, match="scheduler must drive the optimizer"):
            Trainer(model, other, loss, scheduler=sched)
        with pytest.raises(ValueError, match="read_every must be a positive integer, got 0"):
            Trainer(model, opt, loss, scheduler=sched, read_every=0)
        with pytest.raises(ValueError, match="amp=True needs a CUDA device, got device=cpu"):
            Trainer(model, opt, loss, scheduler=sched, amp=True)
        assert Trainer(model, opt, loss, scheduler=sched).amp is False  # auto: off on CPU

    def test_schedule_problems_are_named(self) -> None:
        s = digits("fixed", lr=0.05)
        with pytest.raises(ValueError, match="snapshots=2 needs cycle ends.*iterations=30"):
            s.trainer.run(s.train_loader, iterations=30, snapshots=2)
        one = digits("one_cycle", max_lr=0.1, total_steps=20)
        with pytest.raises(ScheduleError, match="iterations=21: step 21 is past total_steps=20"):
            one.trainer.run(one.train_loader, iterations=21)
        s.trainer.run(s.train_loader, iterations=3)
        with pytest.raises(ValueError, match="scheduler has already been stepped 3 times"):
            s.trainer.run(s.train_loader, iterations=3)

    def test_empty_loaders_are_named(self) -> None:
        s = digits("fixed", lr=0.05)
        with pytest.raises(ValueError, match="train_loader yielded no batches"):
            s.trainer.run([], iterations=3)
        t = digits("fixed", lr=0.05)
        with pytest.raises(ValueError, match="val_loader yielded no batches"):
            t.trainer.run(t.train_loader, val_loader=[], iterations=3)

    def test_a_batch_that_cannot_be_split_names_batch_fn(self) -> None:
        s = digits("fixed", lr=0.05)
        with pytest.raises(ValueError, match="batch_fn"):
            s.trainer.run([torch.zeros(3, 64)], iterations=1)


# --------------------------------------------------------------------------- TensorBatches


class TestTensorBatchesState:
    def make(self, seed: int = 3) -> TensorBatches:
        x = torch.arange(40.0).reshape(20, 2)
        return TensorBatches(x, torch.arange(20), 6, seed=seed)

    def test_a_fresh_loader_continues_mid_epoch(self) -> None:
        a = self.make()
        first = list(a)
        it = iter(a)
        second = [next(it), next(it)]
        state = a.state_dict()
        assert (state["epoch"], state["batch"]) == (1, 2)
        rest = list(it)
        b = self.make()
        b.load_state_dict(state)
        replay = list(b)
        assert len(replay) == 1
        assert torch.equal(replay[0][1], rest[0][1])
        assert all(torch.equal(x[1], y[1]) for x, y in zip(list(b), list(a), strict=True))
        assert len(first) == 3
        assert len(second) == 2

    def test_a_finished_epoch_is_the_start_of_the_next(self) -> None:
        a = self.make()
        list(a)
        assert (a.state_dict()["epoch"], a.state_dict()["batch"]) == (1, 0)
        a.set_epoch(5)
        assert (a.state_dict()["epoch"], a.state_dict()["batch"]) == (5, 0)

    def test_a_state_of_other_data_is_refused(self) -> None:
        state = self.make(seed=3).state_dict()
        with pytest.raises(ValueError, match="state_dict's seed is 3 but this loader's is 4"):
            self.make(seed=4).load_state_dict(state)
        with pytest.raises(ValueError, match=r"batch must be an integer in \[0, 3\), got 3"):
            self.make().load_state_dict({**state, "batch": 3})
        with pytest.raises(ValueError, match="state_dict has no 'num_samples'"):
            self.make().load_state_dict({"epoch": 0, "batch": 0})


# --------------------------------------------------------------------------- docs


@pytest.mark.parametrize("module", [clr.train, clr.policies], ids=lambda m: m.__name__)
def test_docstring_examples_run(module: Any) -> None:
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


def test_cycle_ends_are_where_checkpoints_go() -> None:
    s = digits("triangular", base_lr=0.01, max_lr=0.1, step_size_up=4)
    (schedule,) = s.trainer.scheduler.schedules
    saved: list[Checkpoint] = []
    s.trainer.run(s.train_loader, iterations=30, checkpoint=saved.append)
    assert [c.iteration for c in saved] == cycle_ends(schedule, 30) == [8, 16, 24]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestCuda:
    def test_amp_training_checkpoints_and_resumes_on_cuda(self) -> None:
        def setup() -> tuple[Any, Trainer]:
            w = build_workload("digits_mlp", {"width": 64}, seed=0, device="cuda")
            opt = torch.optim.SGD(w.model.parameters(), lr=0.01, momentum=0.9)
            sched = create_scheduler(opt, "triangular", base_lr=0.01, max_lr=0.2, step_size_up=11)
            return w, Trainer(w.model, opt, w.loss_fn, metric_fn=w.metric_fn, scheduler=sched)

        w, trainer = setup()
        assert trainer.amp is True
        saved: list[Checkpoint] = []
        full = trainer.run(
            w.train_loader, val_loader=w.val_loader, iterations=66, checkpoint=saved.append
        )
        assert full.device.startswith("cuda")
        assert saved[0].scaler is not None
        assert saved[0].rng["cuda"] is not None
        w2, trainer2 = setup()
        again = trainer2.run(
            w2.train_loader, val_loader=w2.val_loader, iterations=66, resume=roundtrip(saved[0])
        )
        assert again.lrs == full.lrs
        assert again.losses[:22] == full.losses[:22]
        assert again.val_accuracy == pytest.approx(full.val_accuracy, abs=0.05)
