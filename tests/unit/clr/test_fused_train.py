"""Fused trainings: each member equals a separate clr.Trainer run with its schedule."""

from __future__ import annotations

import math
from typing import Any

import pytest

from clr.exceptions import ScheduleError
from clr.fused_train import FusedTrainer, FusedTrainResult
from clr.optim import make_optimizer
from clr.policies import Schedule, make_schedule
from clr.schedules import ScheduledLR
from clr.train import Trainer, TrainResult
from clr.workloads import build_workload

ITERATIONS = 50  # two 22-batch epochs of digits_mlp and a partial third
WIDTH = {"width": 16}


def triangular(max_lr: float = 0.1, **kwargs: Any) -> Schedule:
    return make_schedule("triangular", base_lr=0.01, max_lr=max_lr, step_size_up=11, **kwargs)


def separate(seed: int, optimizer: str, schedule: Schedule, **kwargs: Any) -> TrainResult:
    w = build_workload("digits_mlp", WIDTH, seed=seed)
    opt = make_optimizer(optimizer, w.model.parameters(), **kwargs)
    sched = ScheduledLR(opt, schedule, cycle_momentum=schedule.momentum_at(0) is not None)
    trainer = Trainer(w.model, opt, w.loss_fn, metric_fn=w.metric_fn, scheduler=sched)
    return trainer.run(w.train_loader, val_loader=w.val_loader, iterations=ITERATIONS)


def fused(
    seeds: list[int], optimizer: str, schedules: list[Schedule], **kwargs: Any
) -> list[FusedTrainResult]:
    ws = [build_workload("digits_mlp", WIDTH, seed=s) for s in seeds]
    trainer = FusedTrainer(
        [w.model for w in ws], optimizer, ws[0].loss_fn, metric_fn=ws[0].metric_fn, **kwargs
    )
    return trainer.run(
        [w.train_loader for w in ws],
        schedules,
        iterations=ITERATIONS,
        val_loader=ws[0].val_loader,
    )


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5)


def assert_same(got: FusedTrainResult, want: TrainResult) -> None:
    assert got.stop_reason == want.stop_reason == "completed"
    assert got.iterations == want.iterations
    assert got.lrs == want.lrs  # the schedule's own floats, bit for bit
    assert got.momenta == want.momenta
    assert got.cycle_ends == want.cycle_ends
    assert len(got.losses) == len(want.losses)
    for i, (a, b) in enumerate(zip(got.losses, want.losses, strict=True)):
        assert close(a, b), (i, a, b)
    assert [(e.epoch, e.iteration) for e in got.epochs] == [
        (e.epoch, e.iteration) for e in want.epochs
    ]
    for g, w in zip(got.epochs, want.epochs, strict=True):
        assert close(g.train_loss, w.train_loss)
        assert close(g.train_accuracy, w.train_accuracy)
        assert close(g.val_loss, w.val_loss)
        assert close(g.val_accuracy, w.val_accuracy)
    assert close(got.val_loss, want.val_loss)
    assert close(got.val_accuracy, want.val_accuracy)
    best = max(e.val_accuracy for e in want.epochs if e.val_accuracy is not None)
    assert close(got.best_val_accuracy, best)


class TestFusedTrainer:
    @pytest.mark.parametrize("allow_stacked", [True, False], ids=["stacked", "vmap"])
    def test_sgd_with_momentum_members_equal_separate_runs(self, allow_stacked):
        schedules = [triangular(0.1), triangular(0.3)]
        results = fused([0, 1], "sgd", schedules, allow_stacked=allow_stacked)
        assert results[0].path == ("stacked" if allow_stacked else "vmap")
        for k, seed in enumerate([0, 1]):
            want = separate(seed, "sgd", schedules[k])
            assert want.momenta == [0.9] * ITERATIONS
            assert want.cycle_ends == [22, 44]
            assert_same(results[k], want)
            assert results[k].member == k
            assert results[k].members == 2

    def test_cycled_momentum_follows_each_members_schedule(self):
        schedules = [
            triangular(0.1, base_momentum=0.8, max_momentum=0.95),
            triangular(0.2, base_momentum=0.85, max_momentum=0.9),
        ]
        results = fused([0, 1], "sgd", schedules)
        for k, seed in enumerate([0, 1]):
            want = separate(seed, "sgd", schedules[k])
            assert want.momenta is not None
            assert len(set(want.momenta)) > 2
            assert_same(results[k], want)

    def test_adam_with_cycled_beta1_equals_separate_runs(self):
        schedules = [
            triangular(0.01),
            make_schedule("one_cycle", max_lr=0.01, total_steps=ITERATIONS, base_momentum=0.8),
        ]
        results = fused([0, 1], "adam", schedules)
        for k, seed in enumerate([0, 1]):
            assert_same(results[k], separate(seed, "adam", schedules[k]))

    def test_members_with_different_policies_in_one_run(self):
        schedules = [
            triangular(0.1),
            make_schedule("triangular2", base_lr=0.01, max_lr=0.2, step_size_up=11),
            make_schedule("exp_range", base_lr=0.01, max_lr=0.2, step_size_up=11, gamma=0.99),
            make_schedule("fixed", lr=0.05),
        ]
        seeds = [0, 1, 2, 0]
        results = fused(seeds, "sgd", schedules)
        for k, seed in enumerate(seeds):
            assert_same(results[k], separate(seed, "sgd", schedules[k]))
        assert results[3].cycle_ends == []
        assert results[1].lrs != results[2].lrs

    def test_a_diverging_member_is_masked_and_the_others_equal_separate_runs(self):
        schedules = [triangular(0.1), make_schedule("fixed", lr=1e30), triangular(0.2)]
        results = fused([0, 1, 2], "sgd", schedules)
        diverged = results[1]
        assert diverged.stop_reason == "diverged"
        assert diverged.diverged_at is not None
        assert diverged.iterations == diverged.diverged_at + 1 < ITERATIONS
        assert len(diverged.lrs) == len(diverged.losses) == diverged.iterations
        assert not math.isfinite(diverged.losses[-1])
        assert "masked" in diverged.stop_detail
        assert diverged.val_loss is None
        assert diverged.val_accuracy is None
        assert all(e.iteration <= diverged.diverged_at for e in diverged.epochs)
        # up to its divergence it trained as its separate run did
        alone = separate(1, "sgd", schedules[1])
        for a, b in zip(diverged.losses[:-1], alone.losses, strict=False):
            assert close(a, b)
        for k in (0, 2):
            assert_same(results[k], separate(k, "sgd", schedules[k]))
        assert diverged.to_dict()["stop_reason"] == "diverged"

    def test_mismatched_lengths_are_refused(self):
        ws = [build_workload("digits_mlp", WIDTH, seed=s) for s in range(2)]
        trainer = FusedTrainer([w.model for w in ws], "sgd", ws[0].loss_fn)
        loaders = [w.train_loader for w in ws]
        with pytest.raises(ValueError, match="schedules must hold 2"):
            trainer.run(loaders, [triangular()], iterations=10)
        with pytest.raises(ValueError, match="train_loaders must hold 2"):
            trainer.run(loaders[:1], [triangular(), triangular()], iterations=10)
        with pytest.raises(ValueError, match="iterations"):
            trainer.run(loaders, [triangular(), triangular()], iterations=0)
        short = make_schedule("one_cycle", max_lr=0.1, total_steps=5)
        with pytest.raises(ScheduleError, match=r"schedules\[1\]"):
            trainer.run(loaders, [triangular(), short], iterations=10)
