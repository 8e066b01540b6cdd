"""Fused trainings: each member equals a separate clr.Trainer run with its schedule."""

from __future__ import annotations

import io
import math
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from clr.exceptions import ScheduleError
from clr.fused_train import FusedTrainer, FusedTrainResult
from clr.optim import make_optimizer
from clr.policies import Schedule, make_schedule
from clr.schedules import ScheduledLR
from clr.train import Checkpoint, Trainer, TrainProgress, TrainResult
from clr.workloads import TensorBatches, build_workload

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


# --------------------------------------------------------------------------- service features


def workloads(seeds: list[int]) -> list[Any]:
    return [build_workload("digits_mlp", WIDTH, seed=s) for s in seeds]


def fused_run(
    seeds: list[int],
    optimizer: str,
    schedules: list[Schedule],
    *,
    trainer_kwargs: dict[str, Any] | None = None,
    **run_kwargs: Any,
) -> tuple[FusedTrainer, list[FusedTrainResult]]:
    ws = workloads(seeds)
    trainer = FusedTrainer(
        [w.model for w in ws],
        optimizer,
        ws[0].loss_fn,
        metric_fn=ws[0].metric_fn,
        **(trainer_kwargs or {}),
    )
    run_kwargs.setdefault("iterations", ITERATIONS)
    results = trainer.run(
        [w.train_loader for w in ws], schedules, val_loader=ws[0].val_loader, **run_kwargs
    )
    return trainer, results


def short_cycles(max_lr: float = 0.2) -> Schedule:
    """Cycle ends at 14, 28 and 42: not the other members' 22 and 44."""
    return make_schedule("triangular", base_lr=0.01, max_lr=max_lr, step_size_up=7)


def assert_identical(got: FusedTrainResult, want: FusedTrainResult) -> None:
    """Bit for bit: every trace, record, metric and snapshot."""
    assert got.stop_reason == want.stop_reason
    assert got.iterations == want.iterations
    assert got.trace_start == want.trace_start
    assert got.lrs == want.lrs
    assert got.momenta == want.momenta
    assert got.losses == want.losses
    assert got.epochs == want.epochs
    assert got.cycle_ends == want.cycle_ends
    assert got.val_loss == want.val_loss
    assert got.val_accuracy == want.val_accuracy
    assert got.ensemble == want.ensemble
    assert got.snapshot_iterations == want.snapshot_iterations
    assert len(got.snapshot_states) == len(want.snapshot_states)
    for a, b in zip(got.snapshot_states, want.snapshot_states, strict=True):
        assert a.keys() == b.keys()
        assert all(torch.equal(a[n], b[n]) for n in a)


def assert_same_weights(a: FusedTrainer, i: int, b: FusedTrainer, j: int) -> None:
    wa, wb = a.fused.member_state_dict(i), b.fused.member_state_dict(j)
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[n], wb[n]) for n in wa)


def reload(ckpt: Checkpoint) -> Checkpoint:
    buffer = io.BytesIO()
    ckpt.save(buffer)
    buffer.seek(0)
    return Checkpoint.load(buffer)


class TestFusedTrainerProgress:
    def test_callback_chunks_concatenate_to_each_members_traces(self):
        chunks: dict[int, list[TrainProgress]] = {0: [], 1: []}
        schedules = [triangular(0.1), short_cycles()]
        _, results = fused_run(
            [0, 1],
            "sgd",
            schedules,
            trainer_kwargs={"read_every": 5},
            callback=lambda k, p: chunks[k].append(p),
        )
        for k, result in enumerate(results):
            got = chunks[k]
            assert [p.start for p in got] == [0] + [p.iteration for p in got[:-1]]
            assert got[-1].iteration == ITERATIONS
            assert all(p.iterations == ITERATIONS for p in got)
            assert [v for p in got for v in p.lrs] == result.lrs
            assert [v for p in got for v in (p.momenta or [])] == result.momenta
            assert [v for p in got for v in p.losses] == result.losses
            assert [e for p in got for e in p.epochs] == result.epochs
            flagged = [p.cycle_end for p in got if p.cycle_end is not None]
            assert flagged == result.cycle_ends
            assert all(p.cycle_end in (None, p.iteration) for p in got)
            assert max(len(p.lrs) for p in got) <= 5
        assert results[0].cycle_ends == [22, 44]
        assert results[1].cycle_ends == [14, 28, 42]

    def test_callback_flags_the_cycle_ends_a_plain_trainer_flags(self):
        schedule = short_cycles()
        fused_chunks: list[TrainProgress] = []
        fused_run([0], "sgd", [schedule], callback=lambda _k, p: fused_chunks.append(p))
        plain_chunks: list[TrainProgress] = []
        w = build_workload("digits_mlp", WIDTH, seed=0)
        opt = make_optimizer("sgd", w.model.parameters())
        trainer = Trainer(
            w.model, opt, w.loss_fn, scheduler=ScheduledLR(opt, schedule, cycle_momentum=False)
        )
        trainer.run(w.train_loader, iterations=ITERATIONS, callback=plain_chunks.append)
        assert [p.cycle_end for p in fused_chunks if p.cycle_end] == [
            p.cycle_end for p in plain_chunks if p.cycle_end
        ]

    def test_a_diverged_members_last_chunk_holds_its_non_finite_loss(self):
        chunks: dict[int, list[TrainProgress]] = {0: [], 1: []}
        schedules = [triangular(0.1), make_schedule("fixed", lr=1e30)]
        _, results = fused_run([0, 1], "sgd", schedules, callback=lambda k, p: chunks[k].append(p))
        diverged = results[1]
        assert diverged.stop_reason == "diverged"
        last = chunks[1][-1]
        assert last.iteration == diverged.iterations
        assert not math.isfinite(last.losses[-1])
        assert [v for p in chunks[1] for v in p.losses][:-1] == diverged.losses[:-1]
        assert chunks[0][-1].iteration == ITERATIONS


class TestFusedTrainerShouldStop:
    def test_a_stopped_member_is_cancelled_and_the_others_are_bit_identical(self):
        schedules = [triangular(0.1), short_cycles(), triangular(0.3)]
        base_trainer, base = fused_run([0, 1, 2], "sgd", schedules)
        seen: dict[int, int] = {}
        saved: dict[int, dict[int, Checkpoint]] = {}
        calls_after: list[int] = []

        def callback(k: int, p: TrainProgress) -> None:
            if k == 1 and 1 in seen and p.start >= 20:
                calls_after.append(p.start)
            seen[k] = p.iteration

        trainer, results = fused_run(
            [0, 1, 2],
            "sgd",
            schedules,
            callback=callback,
            should_stop=lambda: {1} if seen.get(1, 0) >= 20 else set(),
            checkpoint=lambda it, ckpts: saved.update({it: ckpts}),
            checkpoint_at=[16, 21, 30],
        )
        stopped = results[1]
        assert stopped.stop_reason == "cancelled"
        stop_at = stopped.iterations
        assert 20 <= stop_at < ITERATIONS
        assert f"iteration {stop_at}" in stopped.stop_detail
        assert stopped.losses == base[1].losses[:stop_at]
        assert stopped.lrs == base[1].lrs[:stop_at]
        assert stopped.val_loss is None
        assert stopped.ensemble is None
        assert calls_after == []
        assert 1 in saved[21]
        assert 1 not in saved[30]
        # frozen bit for bit from the read point where it stopped
        frozen = trainer.fused.member_state_dict(1)
        assert all(torch.equal(frozen[n], saved[21][1].model[n]) for n in frozen)
        for k in (0, 2):
            assert_identical(results[k], base[k])
            assert_same_weights(trainer, k, base_trainer, k)

    def test_stopping_every_member_ends_the_run(self):
        polls: list[int] = []

        def should_stop() -> set[int]:
            polls.append(1)
            return {0, 1} if len(polls) == 2 else set()

        _, results = fused_run(
            [0, 1],
            "adam",
            [triangular(0.01), triangular(0.02)],
            trainer_kwargs={"read_every": 4},
            should_stop=should_stop,
        )
        assert len(polls) == 2
        assert [r.stop_reason for r in results] == ["cancelled", "cancelled"]
        assert [r.iterations for r in results] == [8, 8]
        assert all(len(r.losses) == 8 for r in results)

    def test_should_stop_naming_no_member_is_refused(self):
        with pytest.raises(ValueError, match=r"should_stop must return member indices in \[0, 2\)"):
            fused_run([0, 1], "sgd", [triangular(), triangular()], should_stop=lambda: [2])


class TestFusedTrainerCheckpoints:
    def test_default_points_are_every_members_cycle_ends_after_delivery(self):
        delivered = {0: 0, 1: 0}
        taken: list[tuple[int, dict[int, Checkpoint], dict[int, int]]] = []

        def callback(k: int, p: TrainProgress) -> None:
            delivered[k] = p.iteration

        _, results = fused_run(
            [0, 1],
            "sgd",
            [triangular(0.1), short_cycles()],
            callback=callback,
            checkpoint=lambda it, ckpts: taken.append((it, ckpts, dict(delivered))),
        )
        assert [it for it, _, _ in taken] == [14, 22, 28, 42, 44]
        fresh = build_workload("digits_mlp", WIDTH, seed=5).model
        for it, ckpts, at in taken:
            assert sorted(ckpts) == [0, 1]
            assert at == {0: it, 1: it}
            for k, ckpt in ckpts.items():
                assert ckpt.iteration == it
                assert ckpt.iterations == ITERATIONS
                assert ckpt.scheduler == {"last_epoch": it}
                assert ckpt.optimizer["fused"] == "sgd"
                assert ckpt.loader is not None
                assert ckpt.loader["epoch"] == it // 22
                assert ckpt.losses == results[k].losses[:it]
                assert ckpt.lrs == results[k].lrs[:it]
                assert ckpt.epochs == [e for e in results[k].epochs if e.iteration <= it]
                fresh.load_state_dict(ckpt.model)  # strict: the model's own names and shapes
                assert all(t.device.type == "cpu" for t in ckpt.model.values())

    def test_a_diverged_member_gets_no_checkpoint(self):
        taken: dict[int, list[int]] = {}
        fused_run(
            [0, 1],
            "sgd",
            [triangular(0.1), make_schedule("fixed", lr=1e30)],
            checkpoint=lambda it, ckpts: taken.update({it: sorted(ckpts)}),
            checkpoint_at=[30, 40],
        )
        assert taken == {30: [0], 40: [0]}

    def test_checkpoint_at_outside_the_run_is_refused(self):
        for bad in ([0], [ITERATIONS + 1]):
            with pytest.raises(ValueError, match="checkpoint_at must hold iterations"):
                fused_run([0], "sgd", [triangular()], checkpoint_at=bad)


class TestFusedTrainerResume:
    @pytest.mark.parametrize(
        ("optimizer", "max_lrs"), [("sgd", (0.1, 0.2, 0.3)), ("adam", (0.02, 0.03, 0.015))]
    )
    def test_a_resumed_run_continues_every_member_bit_for_bit(self, optimizer, max_lrs):
        schedules = [triangular(max_lrs[0]), short_cycles(max_lrs[1]), triangular(max_lrs[2])]
        saved: dict[int, dict[int, Checkpoint]] = {}
        base_trainer, base = fused_run(
            [0, 1, 2],
            optimizer,
            schedules,
            snapshots=[2, 1, 0],
            checkpoint=lambda it, ckpts: saved.update({it: ckpts}),
            checkpoint_at=[22, 31],  # an epoch end and a point mid-epoch
        )
        assert base[0].ensemble is not None
        assert base[0].snapshot_iterations == [22, 44]
        for at in (22, 31):
            resume = [reload(saved[at][k]) for k in range(3)]
            trainer, results = fused_run(
                [0, 1, 2], optimizer, schedules, snapshots=[2, 1, 0], resume=resume
            )
            for k in range(3):
                assert_identical(results[k], base[k])
                assert_same_weights(trainer, k, base_trainer, k)
        # the service resumes members by their checkpoint iteration: {0, 2} alone
        trainer, results = fused_run(
            [0, 2],
            optimizer,
            [schedules[0], schedules[2]],
            snapshots=[2, 0],
            resume=[reload(saved[31][0]), reload(saved[31][2])],
        )
        for j, k in enumerate((0, 2)):
            assert_identical(results[j], base[k])
            assert_same_weights(trainer, j, base_trainer, k)

    def test_a_subset_resumes_bit_for_bit_with_an_odd_batch_size(self):
        # 33 rows a member: the blocks of the batched products are aligned alike only
        # because the fused loop pads them to 48
        def loaders(seeds: list[int]) -> list[TensorBatches]:
            out = []
            for s in seeds:
                w = build_workload("digits_mlp", WIDTH, seed=s)
                out.append(TensorBatches(w.train_loader.x, w.train_loader.y, 33, seed=s))
            return out

        def run(seeds: list[int], **kwargs: Any) -> list[FusedTrainResult]:
            ws = workloads(seeds)
            trainer = FusedTrainer([w.model for w in ws], "sgd", ws[0].loss_fn)
            schedules = [triangular(0.1 * (s + 1)) for s in seeds]
            return trainer.run(
                loaders(seeds), schedules, iterations=40, val_loader=ws[0].val_loader, **kwargs
            )

        saved: dict[int, dict[int, Checkpoint]] = {}
        base = run([0, 1, 2], checkpoint=lambda it, c: saved.update({it: c}))
        alone = run([1, 2], resume=[reload(saved[22][1]), reload(saved[22][2])])
        assert_identical(alone[0], base[1])
        assert_identical(alone[1], base[2])

    @pytest.mark.parametrize("allow_stacked", [True, False], ids=["stacked", "vmap"])
    def test_a_shuffling_dataloader_replays_its_epoch_on_resume(self, allow_stacked):
        # no loader state: the epoch's order is replayed from the RNG saved at its start
        def run(**kwargs: Any) -> list[FusedTrainResult]:
            torch.manual_seed(123)
            ws = workloads([0, 1])
            loaders = [
                DataLoader(
                    TensorDataset(w.train_loader.x, w.train_loader.y),
                    batch_size=64,
                    shuffle=True,
                    drop_last=True,
                )
                for w in ws
            ]
            trainer = FusedTrainer(
                [w.model for w in ws], "sgd", ws[0].loss_fn, allow_stacked=allow_stacked
            )
            return trainer.run(
                loaders,
                [triangular(0.1), triangular(0.2)],
                iterations=40,
                val_loader=ws[0].val_loader,
                **kwargs,
            )

        saved: dict[int, dict[int, Checkpoint]] = {}
        base = run(checkpoint=lambda it, c: saved.update({it: c}), checkpoint_at=[30])
        ckpts = saved[30]
        assert ckpts[0].loader is None
        assert (ckpts[0].epoch, ckpts[0].batch) == (1, 30 - 22)  # 22 batches an epoch
        torch.manual_seed(7)  # the resume sets every RNG from the checkpoint
        again = run(resume=[reload(ckpts[0]), reload(ckpts[1])])
        for k in range(2):
            assert_identical(again[k], base[k])

    def test_a_resume_from_the_last_iteration_only_finishes(self):
        saved: dict[int, dict[int, Checkpoint]] = {}
        _, base = fused_run(
            [0],
            "sgd",
            [triangular()],
            checkpoint=lambda it, c: saved.update({it: c}),
            checkpoint_at=[ITERATIONS],
        )
        _, again = fused_run([0], "sgd", [triangular()], resume=[saved[ITERATIONS][0]])
        assert_identical(again[0], base[0])

    def test_resume_entries_are_checked(self):
        saved: dict[int, dict[int, Checkpoint]] = {}
        schedules = [triangular(), triangular(0.2)]
        fused_run(
            [0, 1],
            "sgd",
            schedules,
            checkpoint=lambda it, c: saved.update({it: c}),
            checkpoint_at=[10, 20],
        )
        with pytest.raises(ValueError, match=r"resume\[1\] is at iteration 20, resume\[0\] at 10"):
            fused_run([0, 1], "sgd", schedules, resume=[saved[10][0], saved[20][1]])
        with pytest.raises(ValueError, match="all None or all Checkpoints"):
            fused_run([0, 1], "sgd", schedules, resume=[saved[10][0], None])
        with pytest.raises(ValueError, match="resume must hold 2 entries"):
            fused_run([0, 1], "sgd", schedules, resume=[saved[10][0]])
        with pytest.raises(ValueError, match="taken with optimizer 'sgd'"):
            fused_run([0, 1], "adam", schedules, resume=[saved[10][0], saved[10][1]])
        with pytest.raises(ValueError, match="iterations=5 is before"):
            fused_run([0, 1], "sgd", schedules, resume=[saved[10][0], saved[10][1]], iterations=5)
        # all None is a fresh run
        _, fresh = fused_run([0, 1], "sgd", schedules, resume=[None, None])
        assert fresh[0].iterations == ITERATIONS

    def test_plain_and_fused_checkpoints_do_not_cross(self):
        saved: dict[int, dict[int, Checkpoint]] = {}
        schedule = triangular()
        fused_run([0], "sgd", [schedule], checkpoint=lambda it, c: saved.update({it: c}))
        w = build_workload("digits_mlp", WIDTH, seed=0)
        opt = make_optimizer("sgd", w.model.parameters())
        plain = Trainer(
            w.model, opt, w.loss_fn, scheduler=ScheduledLR(opt, schedule, cycle_momentum=False)
        )
        with pytest.raises(ValueError, match="taken by FusedTrainer"):
            plain.run(w.train_loader, iterations=ITERATIONS, resume=saved[22][0])
        plain_saved: list[Checkpoint] = []
        plain.run(w.train_loader, iterations=ITERATIONS, checkpoint=plain_saved.append)
        with pytest.raises(ValueError, match="not taken by FusedTrainer"):
            fused_run([0], "sgd", [schedule], resume=[plain_saved[0]])


class TestFusedTrainerSnapshots:
    def test_each_members_ensemble_equals_a_plain_trainers(self):
        schedules = [triangular(0.1), short_cycles()]
        _, results = fused_run([0, 1], "sgd", schedules, snapshots=[2, 3])
        for k, (seed, count) in enumerate([(0, 2), (1, 3)]):
            w = build_workload("digits_mlp", WIDTH, seed=seed)
            opt = make_optimizer("sgd", w.model.parameters())
            sched = ScheduledLR(opt, schedules[k], cycle_momentum=False)
            trainer = Trainer(w.model, opt, w.loss_fn, metric_fn=w.metric_fn, scheduler=sched)
            want = trainer.run(
                w.train_loader, val_loader=w.val_loader, iterations=ITERATIONS, snapshots=count
            )
            got = results[k]
            assert want.ensemble is not None
            assert got.ensemble is not None
            assert got.ensemble.snapshots == want.ensemble.snapshots == count
            assert got.ensemble.iterations == want.ensemble.iterations
            assert got.snapshot_iterations == want.snapshot_iterations
            assert close(got.ensemble.val_loss, want.ensemble.val_loss)
            assert close(got.ensemble.val_accuracy, want.ensemble.val_accuracy)
            for a, b in zip(got.snapshot_states, want.snapshot_states, strict=True):
                for n in b:
                    torch.testing.assert_close(a[n], b[n], rtol=1e-4, atol=1e-5)
        assert results[1].snapshot_iterations == [14, 28, 42]

    def test_snapshots_without_cycle_ends_are_refused(self):
        schedules = [triangular(), make_schedule("fixed", lr=0.05)]
        with pytest.raises(ValueError, match=r"snapshots\[1\]=1 needs cycle ends"):
            fused_run([0, 1], "sgd", schedules, snapshots=1)
        _, results = fused_run([0, 1], "sgd", schedules, snapshots=[1, 0])
        assert results[0].ensemble is not None
        assert results[1].ensemble is None
        with pytest.raises(ValueError, match="snapshots must be one integer or 2"):
            fused_run([0, 1], "sgd", schedules, snapshots=[1])


class TestFusedTrainerKeepTraces:
    def test_dropped_traces_are_delivered_and_resume_flat(self):
        schedules = [triangular(0.1), short_cycles()]
        _, kept = fused_run([0, 1], "sgd", schedules)
        chunks: dict[int, list[TrainProgress]] = {0: [], 1: []}
        saved: dict[int, dict[int, Checkpoint]] = {}
        _, dropped = fused_run(
            [0, 1],
            "sgd",
            schedules,
            keep_traces=False,
            callback=lambda k, p: chunks[k].append(p),
            checkpoint=lambda it, c: saved.update({it: c}),
        )
        for k in range(2):
            assert dropped[k].trace_start == ITERATIONS
            assert dropped[k].losses == dropped[k].lrs == dropped[k].momenta == []
            assert [v for p in chunks[k] for v in p.losses] == kept[k].losses
            assert dropped[k].epochs == kept[k].epochs
        ckpt = saved[28][1]
        assert (ckpt.trace_start, ckpt.lrs, ckpt.losses) == (28, [], [])
        with pytest.raises(ValueError, match="keep_traces=True, but resume"):
            fused_run([0, 1], "sgd", schedules, resume=[saved[28][0], saved[28][1]])
        rest: dict[int, list[TrainProgress]] = {0: [], 1: []}
        _, again = fused_run(
            [0, 1],
            "sgd",
            schedules,
            keep_traces=False,
            resume=[reload(saved[28][0]), reload(saved[28][1])],
            callback=lambda k, p: rest[k].append(p),
        )
        for k in range(2):
            assert rest[k][0].start == 28
            assert [v for p in rest[k] for v in p.losses] == kept[k].losses[28:]
            assert again[k].epochs == kept[k].epochs
            assert again[k].val_loss == dropped[k].val_loss


class TestFusedTrainerDropout:
    def test_a_dropout_chain_trains_by_vmap_and_validates(self):
        torch.manual_seed(0)
        w = build_workload("digits_mlp", WIDTH, seed=0)
        models = []
        for s in range(2):
            torch.manual_seed(s)
            models.append(
                nn.Sequential(nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 10))
            )
        trainer = FusedTrainer(models, "sgd", w.loss_fn, metric_fn=w.metric_fn)
        results = trainer.run(
            [w.train_loader, build_workload("digits_mlp", WIDTH, seed=1).train_loader],
            [triangular(), triangular()],
            iterations=30,
            val_loader=w.val_loader,
        )
        assert results[0].path == "vmap"
        assert all(r.val_loss is not None and math.isfinite(r.val_loss) for r in results)
