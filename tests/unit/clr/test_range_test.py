"""The LR range test: sweep, smoothing, stops, restore, no per-step host syncs."""

from __future__ import annotations

import math
import random
import tempfile

import numpy as np
import pytest
import torch
from torch import nn

from clr._result import RangeTestResult
from clr.exceptions import RangeTestError
from clr.range_test import RangeTest, RangeTestProgress, range_test, sweep_lrs
from clr.workloads import TensorBatches, build_workload


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs.argmax(1) == targets).float().mean()


def tiny_task(seed: int = 0, n: int = 256, batch_size: int = 32) -> tuple[nn.Module, TensorBatches]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=gen)
    y = (x[:, :4].sum(1) > 0).long() + (x[:, 4:].sum(1) > 0).long()
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    return model, TensorBatches(x, y, batch_size, seed=seed)


class CountingLoader:
    def __init__(self, inner: TensorBatches) -> None:
        self.inner = inner
        self.batches = 0

    def __iter__(self):
        for batch in self.inner:
            self.batches += 1
            yield batch


class TestSweep:
    def test_exp_sweep_records_geometric_lrs_from_start_to_end(self):
        model, loader = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        result = RangeTest(model, opt, nn.functional.cross_entropy).run(
            loader, start_lr=1e-5, end_lr=1e-2, num_iter=30
        )
        assert result.stop_reason == "completed"
        np.testing.assert_allclose(result.lrs, np.geomspace(1e-5, 1e-2, 30), rtol=1e-12)
        assert result.lrs[0] == pytest.approx(1e-5)
        assert result.lrs[-1] == pytest.approx(1e-2)

    def test_linear_sweep_records_evenly_spaced_lrs(self):
        model, loader = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        result = RangeTest(model, opt, nn.functional.cross_entropy).run(
            loader, start_lr=0.001, end_lr=0.01, num_iter=10, sweep="linear"
        )
        np.testing.assert_allclose(np.diff(result.lrs), 0.001, rtol=1e-9)

    def test_optimizer_sees_the_recorded_lr_at_each_step(self):
        model, loader = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        seen: list[float] = []
        handle = opt.register_step_pre_hook(lambda o, *_: seen.append(o.param_groups[0]["lr"]))
        result = RangeTest(model, opt, nn.functional.cross_entropy).run(
            loader, start_lr=1e-4, end_lr=1e-1, num_iter=20
        )
        handle.remove()
        assert seen == result.lrs.tolist()

    def test_param_groups_keep_their_lr_ratio(self):
        model, loader = tiny_task()
        opt = torch.optim.SGD(
            [
                {"params": model[0].parameters(), "lr": 1e-3},
                {"params": model[3].parameters(), "lr": 1e-2},
            ],
            lr=1e-3,
        )
        seen: list[tuple[float, float]] = []
        handle = opt.register_step_pre_hook(
            lambda o, *_: seen.append((o.param_groups[0]["lr"], o.param_groups[1]["lr"]))
        )
        RangeTest(model, opt, nn.functional.cross_entropy).run(
            loader, start_lr=1e-5, end_lr=1e-2, num_iter=12
        )
        handle.remove()
        assert len(seen) == 12
        for lr0, lr1 in seen:
            assert lr1 / lr0 == pytest.approx(10.0, rel=1e-12)
        assert seen[0][0] == pytest.approx(1e-5)

    def test_a_group_at_lr_zero_stays_frozen(self):
        model, loader = tiny_task()
        opt = torch.optim.SGD(
            [
                {"params": model[0].parameters(), "lr": 0.0},
                {"params": model[3].parameters(), "lr": 1e-3},
            ],
            lr=1e-3,
        )
        seen: list[tuple[float, float]] = []
        handle = opt.register_step_pre_hook(
            lambda o, *_: seen.append((o.param_groups[0]["lr"], o.param_groups[1]["lr"]))
        )
        result = RangeTest(model, opt, nn.functional.cross_entropy).run(
            loader, start_lr=1e-4, end_lr=1e-1, num_iter=10
        )
        handle.remove()
        assert [a for a, _ in seen] == [0.0] * 10
        np.testing.assert_allclose([b for _, b in seen], sweep_lrs(1e-4, 1e-1, 10), rtol=1e-12)
        np.testing.assert_allclose(result.lrs, sweep_lrs(1e-4, 1e-1, 10), rtol=1e-12)

    def test_smoothed_loss_is_the_bias_corrected_ema_of_the_raw_loss(self):
        model, loader = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        result = RangeTest(model, opt, nn.functional.cross_entropy).run(
            loader, start_lr=1e-4, end_lr=1e-1, num_iter=25, smoothing=0.9
        )
        avg = 0.0
        expected = []
        for t, loss in enumerate(result.losses, start=1):
            avg = 0.9 * avg + 0.1 * loss
            expected.append(avg / (1 - 0.9**t))
        np.testing.assert_allclose(result.smoothed_losses, expected, rtol=1e-12)
        assert result.smoothed_losses[0] == pytest.approx(result.losses[0])

    def test_accuracy_is_recorded_per_step_when_a_metric_is_given(self):
        model, loader = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        result = RangeTest(model, opt, nn.functional.cross_entropy, metric_fn=accuracy).run(
            loader, start_lr=1e-4, end_lr=1e-1, num_iter=16
        )
        assert result.accuracies is not None
        assert result.accuracies.shape == (16,)
        assert np.all((result.accuracies >= 0) & (result.accuracies <= 1))
        # batch of 32: every accuracy is a multiple of 1/32
        np.testing.assert_allclose(result.accuracies * 32, np.round(result.accuracies * 32))

    def test_sweep_lrs_rejects_an_inverted_range(self):
        with pytest.raises(RangeTestError, match="start_lr must be below end_lr"):
            sweep_lrs(1.0, 0.1, 10)


class TestStops:
    def test_divergence_stops_early_and_keeps_a_finite_prefix(self):
        model, loader = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        result = RangeTest(model, opt, nn.functional.cross_entropy).run(
            loader, start_lr=1e-3, end_lr=1e4, num_iter=200, check_every=4
        )
        assert result.stop_reason in ("diverged", "non_finite")
        assert result.steps_run < 200
        assert np.all(np.isfinite(result.losses))
        assert np.all(np.isfinite(result.smoothed_losses))
        assert result.lrs[-1] < 1e4
        assert "step" in result.stop_detail

    def test_a_non_finite_loss_ends_the_curve_before_that_step(self):
        model, loader = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        calls = {"n": 0}

        def criterion(outputs, targets):
            calls["n"] += 1
            loss = nn.functional.cross_entropy(outputs, targets)
            return loss * math.nan if calls["n"] == 14 else loss

        result = RangeTest(model, opt, criterion).run(
            loader, start_lr=1e-4, end_lr=1e-2, num_iter=40, check_every=5
        )
        assert result.stop_reason == "non_finite"
        assert result.steps_run == 13
        assert "nan" in result.stop_detail
        assert "13" in result.stop_detail

    def test_a_part_trained_model_does_not_diverge_at_the_first_steps(self):
        work = build_workload("digits_mlp", {"width": 32}, seed=0)
        opt = torch.optim.SGD(work.model.parameters(), lr=0.1, momentum=0.9)
        for _ in range(8):  # train to a low loss first
            for xb, yb in work.train_loader:
                opt.zero_grad()
                work.loss_fn(work.model(xb), yb).backward()
                opt.step()
        with torch.no_grad():
            xb, yb = next(iter(work.train_loader))
            trained_loss = work.loss_fn(work.model(xb), yb).item()
        assert trained_loss < 0.3
        result = RangeTest(work.model, opt, work.loss_fn).run(
            work.train_loader, start_lr=1e-5, end_lr=10.0, num_iter=100
        )
        # The loss is small and noisy: a naive "5 x best" check on raw losses from step 1
        # would stop at once; the smoothed check with a warm-up sweeps well past it.
        assert result.steps_run >= 40
        assert result.lrs[-1] > 1e-3

    def test_should_stop_cancels_at_the_next_check(self):
        model, loader = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        result = RangeTest(model, opt, nn.functional.cross_entropy).run(
            loader, start_lr=1e-4, end_lr=1e-1, num_iter=50, check_every=6, should_stop=lambda: True
        )
        assert result.stop_reason == "cancelled"
        assert result.steps_run == 6


class TestRestore:
    def _pretrained(self):
        model, loader = tiny_task(seed=3)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        for xb, yb in loader:
            opt.zero_grad()
            nn.functional.cross_entropy(model(xb), yb).backward()
            opt.step()
        return model, opt, loader

    def test_model_optimizer_and_rng_are_restored_bit_for_bit(self):
        model, opt, loader = self._pretrained()
        model.eval()
        random.seed(11)
        np.random.seed(12)  # noqa: NPY002 - the legacy global state is what users seed
        torch.manual_seed(13)
        params_before = {k: v.clone() for k, v in model.state_dict().items()}
        opt_before = {
            i: {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
            for i, s in opt.state_dict()["state"].items()
        }
        groups_before = [dict(g) for g in opt.state_dict()["param_groups"]]
        rng_before = (torch.get_rng_state(), random.getstate(), np.random.get_state())  # noqa: NPY002

        result = RangeTest(model, opt, nn.functional.cross_entropy).run(
            loader, start_lr=1e-4, end_lr=1.0, num_iter=30
        )
        assert result.steps_run > 0

        after = model.state_dict()
        assert params_before.keys() == after.keys()
        for key, value in params_before.items():
            assert torch.equal(value, after[key]), key  # includes BatchNorm buffers
        state_after = opt.state_dict()["state"]
        assert state_after.keys() == opt_before.keys()
        for i, s in opt_before.items():
            for k, v in s.items():
                assert (
                    torch.equal(v, state_after[i][k])
                    if torch.is_tensor(v)
                    else v == state_after[i][k]
                )
        assert opt.state_dict()["param_groups"] == groups_before
        assert torch.equal(rng_before[0], torch.get_rng_state())
        assert rng_before[1] == random.getstate()
        np_before, np_after = rng_before[2], np.random.get_state()  # noqa: NPY002
        assert np.array_equal(np_before[1], np_after[1])
        assert np_before[2:] == np_after[2:]
        assert model.training is False
        assert all(not m.training for m in model.modules())

    def test_modules_frozen_in_eval_mode_stay_frozen_during_the_sweep(self):
        model, loader = tiny_task()
        model.train()
        model[1].eval()  # a frozen BatchNorm inside a training model
        stats_before = model[1].running_mean.clone()
        modes: list[tuple[bool, bool]] = []
        handle = model.register_forward_pre_hook(
            lambda m, _args: modes.append((m.training, m[1].training))
        )
        RangeTest(
            model, torch.optim.SGD(model.parameters(), lr=0.01), nn.functional.cross_entropy
        ).run(loader, num_iter=12, val_loader=[next(iter(loader))], val_every=4)
        handle.remove()
        train_steps = [m for m in modes if m[0]]
        assert len(train_steps) == 12
        assert all(bn_training is False for _, bn_training in train_steps)
        assert torch.equal(model[1].running_mean, stats_before)

    def test_the_loader_epoch_is_restored(self):
        model, loader = tiny_task(n=128, batch_size=32)  # 4 batches an epoch
        loader.set_epoch(3)
        first_batch = next(iter(loader))[0].clone()
        loader.set_epoch(3)
        RangeTest(
            model, torch.optim.SGD(model.parameters(), lr=0.01), nn.functional.cross_entropy
        ).run(loader, num_iter=10)
        assert loader.epoch == 3
        assert torch.equal(next(iter(loader))[0], first_batch)

    def test_snapshot_on_cpu_restores_the_same_values(self):
        model, opt, loader = self._pretrained()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        exp_avg = opt.state_dict()["state"][0]["exp_avg"].clone()
        RangeTest(model, opt, nn.functional.cross_entropy, snapshot_on_cpu=True).run(
            loader, num_iter=10
        )
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
        assert torch.equal(opt.state_dict()["state"][0]["exp_avg"], exp_avg)

    def test_a_fresh_optimizer_is_left_without_state(self):
        model, loader = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        RangeTest(model, opt, nn.functional.cross_entropy).run(loader, num_iter=10)
        assert opt.state_dict()["state"] == {}
        assert opt.param_groups[0]["lr"] == 0.01

    def test_no_temporary_files_are_written(self, monkeypatch):
        def refuse(*_args, **_kwargs):
            raise AssertionError("the range test must not write files")

        for name in (
            "mkstemp",
            "mkdtemp",
            "NamedTemporaryFile",
            "TemporaryDirectory",
            "TemporaryFile",
        ):
            monkeypatch.setattr(tempfile, name, refuse)
        monkeypatch.setattr(torch, "save", refuse)
        model, loader = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        result = RangeTest(model, opt, nn.functional.cross_entropy).run(loader, num_iter=10)
        assert result.steps_run == 10

    def test_two_runs_on_the_same_model_measure_the_same_curve(self):
        model, _ = tiny_task()
        gen = torch.Generator().manual_seed(0)
        x, y = torch.randn(128, 8, generator=gen), torch.randint(0, 3, (128,), generator=gen)
        batches = [(x[i : i + 32], y[i : i + 32]) for i in range(0, 128, 32)]
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        tester = RangeTest(model, opt, nn.functional.cross_entropy)
        first = tester.run(batches, num_iter=20, start_lr=1e-4, end_lr=1.0)
        second = tester.run(batches, num_iter=20, start_lr=1e-4, end_lr=1.0)
        np.testing.assert_array_equal(first.losses, second.losses)


class TestHostSyncs:
    def test_reads_the_loss_once_per_check_not_once_per_step(self, monkeypatch):
        model, loader = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        counts = {"item": 0, "tolist": 0, "float": 0, "bool": 0}
        originals = {
            "item": torch.Tensor.item,
            "tolist": torch.Tensor.tolist,
            "float": torch.Tensor.__float__,
            "bool": torch.Tensor.__bool__,
        }

        def counting(name):
            def wrapper(self, *args, **kwargs):
                counts[name] += 1
                return originals[name](self, *args, **kwargs)

            return wrapper

        monkeypatch.setattr(torch.Tensor, "item", counting("item"))
        monkeypatch.setattr(torch.Tensor, "tolist", counting("tolist"))
        monkeypatch.setattr(torch.Tensor, "__float__", counting("float"))
        monkeypatch.setattr(torch.Tensor, "__bool__", counting("bool"))
        RangeTest(model, opt, nn.functional.cross_entropy, metric_fn=accuracy).run(
            loader, start_lr=1e-4, end_lr=1e-2, num_iter=64, check_every=16
        )
        # 4 checks, each reading the loss chunk and the accuracy chunk once.
        assert counts["tolist"] == 8
        assert counts["item"] == counts["float"] == counts["bool"] == 0


class TestOptions:
    def test_gradient_accumulation_uses_several_batches_per_step(self):
        model, inner = tiny_task(batch_size=16)
        loader = CountingLoader(inner)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        seen_steps: list[int] = []
        handle = opt.register_step_post_hook(lambda *_: seen_steps.append(1))
        result = RangeTest(model, opt, nn.functional.cross_entropy, accumulation_steps=3).run(
            loader, num_iter=10
        )
        handle.remove()
        assert result.steps_run == 10
        assert len(seen_steps) == 10
        assert loader.batches == 30

    def test_gradient_accumulation_matches_one_big_batch(self):
        gen = torch.Generator().manual_seed(1)
        x, y = torch.randn(64, 8, generator=gen), torch.randint(0, 3, (64,), generator=gen)
        results = []
        for accum, batch in ((1, 32), (2, 16)):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            loader = [(x[i : i + batch], y[i : i + batch]) for i in range(0, 64, batch)]
            results.append(
                RangeTest(model, opt, nn.functional.cross_entropy, accumulation_steps=accum).run(
                    loader, start_lr=1e-3, end_lr=1.0, num_iter=8
                )
            )
        np.testing.assert_allclose(results[0].losses, results[1].losses, rtol=1e-5)

    def test_validation_runs_every_k_steps(self):
        work = build_workload("digits_mlp", {"width": 16}, seed=0)
        opt = torch.optim.SGD(work.model.parameters(), lr=0.01)
        result = RangeTest(work.model, opt, work.loss_fn, metric_fn=work.metric_fn).run(
            work.train_loader,
            start_lr=1e-4,
            end_lr=1e-1,
            num_iter=20,
            val_loader=work.val_loader,
            val_every=5,
        )
        assert result.val_steps is not None
        assert result.val_steps.tolist() == [4, 9, 14, 19]
        assert result.val_losses is not None
        assert np.all(np.isfinite(result.val_losses))
        assert result.val_accuracies is not None
        assert np.all((result.val_accuracies >= 0) & (result.val_accuracies <= 1))

    def test_callback_chunks_add_up_to_the_curve(self):
        model, loader = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        chunks: list[RangeTestProgress] = []
        result = RangeTest(model, opt, nn.functional.cross_entropy).run(
            loader, start_lr=1e-4, end_lr=1e-1, num_iter=30, check_every=8, callback=chunks.append
        )
        assert [c.step for c in chunks] == [8, 16, 24, 30]
        assert [c.start for c in chunks] == [0, 8, 16, 24]
        assert sum((c.losses for c in chunks), []) == result.losses.tolist()
        assert sum((c.lrs for c in chunks), []) == result.lrs.tolist()
        assert chunks[-1].best_loss == pytest.approx(result.smoothed_losses.min())

    def test_dict_batches_and_a_custom_batch_fn(self):
        model, inner = tiny_task()
        dict_loader = [{"inputs": xb, "targets": yb} for xb, yb in inner]
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        assert (
            RangeTest(model, opt, nn.functional.cross_entropy)
            .run(dict_loader, num_iter=5)
            .steps_run
            == 5
        )
        odd_loader = [(yb, xb) for xb, yb in inner]
        result = RangeTest(
            model, opt, nn.functional.cross_entropy, batch_fn=lambda b: (b[1], b[0])
        ).run(odd_loader, num_iter=5)
        assert result.steps_run == 5

    def test_range_test_function_mixes_constructor_and_run_keywords(self):
        model, loader = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        result = range_test(
            model, opt, nn.functional.cross_entropy, loader, metric_fn=accuracy, num_iter=12
        )
        assert result.accuracies is not None
        assert result.steps_run == 12


class TestAmp:
    def test_a_step_the_grad_scaler_skips_does_not_advance_the_lr(self):
        model, loader = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        calls = {"n": 0}

        def criterion(outputs, targets):
            calls["n"] += 1
            loss = nn.functional.cross_entropy(outputs, targets)
            # an overflow on the 5th and 6th batches: inf gradients, the scaler skips both
            return loss * math.inf if calls["n"] in (5, 6) else loss

        stepped_lrs: list[float] = []
        handle = opt.register_step_post_hook(
            lambda o, *_: stepped_lrs.append(o.param_groups[0]["lr"])
        )
        result = RangeTest(model, opt, criterion, amp=True).run(
            loader, start_lr=1e-4, end_lr=1e-2, num_iter=12, check_every=4
        )
        handle.remove()
        assert result.skipped_steps == 2
        assert result.steps_run == 12
        assert calls["n"] == 14
        # the optimizer really stepped 12 times, at exactly the 12 LRs of the sweep, in order
        np.testing.assert_allclose(stepped_lrs, sweep_lrs(1e-4, 1e-2, 12), rtol=1e-12)
        np.testing.assert_allclose(result.lrs, stepped_lrs, rtol=1e-12)
        assert np.all(np.isfinite(result.losses))


class TestResult:
    def test_json_round_trip_keeps_every_field(self):
        work = build_workload("digits_mlp", {"width": 16}, seed=0)
        opt = torch.optim.SGD(work.model.parameters(), lr=0.01)
        result = RangeTest(work.model, opt, work.loss_fn, metric_fn=work.metric_fn).run(
            work.train_loader, num_iter=12, val_loader=work.val_loader, val_every=4
        )
        back = RangeTestResult.from_json(result.to_json())
        assert back.to_dict() == result.to_dict()
        np.testing.assert_array_equal(back.lrs, result.lrs)
        assert back.device == "cpu"
        assert back.steps_run == 12
        assert back.seconds > 0


class TestErrors:
    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"start_lr": 1.0, "end_lr": 0.1}, "start_lr must be below end_lr"),
            ({"start_lr": 0.0}, "start_lr must be a finite number > 0"),
            ({"end_lr": math.inf}, "end_lr must be a finite number > 0"),
            ({"num_iter": 1}, "num_iter must be an integer >= 2"),
            ({"sweep": "cosine"}, "sweep must be 'exp' or 'linear'"),
            ({"smoothing": 1.0}, "smoothing must be in"),
            ({"diverge_th": 1.0}, "diverge_th must be"),
            ({"check_every": 0}, "check_every must be"),
        ],
    )
    def test_bad_arguments_name_the_argument(self, kwargs, message):
        model, loader = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with pytest.raises(RangeTestError, match=message):
            RangeTest(model, opt, nn.functional.cross_entropy).run(loader, **kwargs)

    def test_an_empty_loader_is_an_error_and_the_model_is_restored(self):
        model, _ = tiny_task()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with pytest.raises(RangeTestError, match="train_loader yielded no batches"):
            RangeTest(model, opt, nn.functional.cross_entropy).run([], num_iter=5)
        assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())

    def test_amp_on_a_device_without_autocast_is_refused(self):
        model, _ = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with pytest.raises(RangeTestError, match="amp=True needs a CUDA or CPU device"):
            RangeTest(model, opt, nn.functional.cross_entropy, device="meta", amp=True)

    def test_a_batch_that_cannot_be_split_names_batch_fn(self):
        model, _ = tiny_task()
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with pytest.raises(RangeTestError, match="batch_fn"):
            RangeTest(model, opt, nn.functional.cross_entropy).run([torch.zeros(3, 8)], num_iter=3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
class TestCuda:
    def test_amp_sweep_on_cuda_restores_and_counts_skipped_steps(self):
        work = build_workload("digits_mlp", {"width": 64}, seed=0, device="cuda")
        opt = torch.optim.SGD(work.model.parameters(), lr=0.01, momentum=0.9)
        before = {k: v.clone() for k, v in work.model.state_dict().items()}
        result = RangeTest(work.model, opt, work.loss_fn, amp=True).run(
            work.train_loader, start_lr=1e-5, end_lr=10.0, num_iter=100
        )
        assert result.device.startswith("cuda")
        assert result.steps_run + result.skipped_steps >= min(result.steps_run, 1)
        assert np.all(np.isfinite(result.losses))
        assert all(torch.equal(v, work.model.state_dict()[k]) for k, v in before.items())
