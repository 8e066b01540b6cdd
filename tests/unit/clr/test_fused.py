"""Fused models, optimizers and range tests: each member equals its separate run."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from clr.exceptions import RangeTestError
from clr.fused import (
    FusedAdam,
    FusedAdamW,
    FusedModel,
    FusedRangeTest,
    FusedSGD,
    MemberMemory,
    _available_host_bytes,
    _Backprop,
    _batched_loss,
    _batched_metric,
    _loss_grad,
    fusable,
    fused_capacity,
    make_fused_optimizer,
    member_memory,
    stack_models,
)
from clr.optim import OptimizerError, make_optimizer
from clr.range_test import RangeTest
from clr.workloads import TensorBatches, build_workload


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


class ScaledLinear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2 * super().forward(x)


class TestFusedModel:
    def test_each_member_computes_what_its_model_computes(self):
        models = [mlp(s) for s in range(3)]
        fused = stack_models(models)
        x = torch.randn(3, 5, 8)
        out = fused(x)
        assert out.shape == (3, 5, 3)
        for k, model in enumerate(models):
            torch.testing.assert_close(out[k], model(x[k]), rtol=1e-6, atol=1e-6)

    def test_member_state_dict_loads_into_a_fresh_model(self):
        models = [mlp(s) for s in range(3)]
        fused = FusedModel(models)
        fresh = mlp(99)
        fresh.load_state_dict(fused.member_state_dict(2))
        for a, b in zip(fresh.state_dict().values(), models[2].state_dict().values(), strict=True):
            assert torch.equal(a, b)
        rebuilt = fused.unstack(1)
        x = torch.randn(4, 8)
        assert torch.equal(rebuilt(x), models[1](x))

    def test_buffers_are_read_per_member(self):
        models = []
        for s in range(2):
            torch.manual_seed(s)
            m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).eval()
            m[1].running_mean.normal_()
            models.append(m)
        fused = FusedModel(models).eval()
        x = torch.randn(2, 3, 4)
        out = fused(x)
        for k in range(2):
            torch.testing.assert_close(out[k], models[k](x[k]), rtol=1e-6, atol=1e-6)

    def test_models_of_different_architectures_are_refused(self):
        with pytest.raises(ValueError, match=r"models\[1\]"):
            FusedModel([nn.Linear(3, 2), nn.Linear(3, 4)])
        with pytest.raises(ValueError, match="at least one"):
            FusedModel([])

    def test_a_plain_chain_runs_stacked_with_vmaps_outputs_and_gradients(self):
        def chain(seed: int) -> nn.Module:
            torch.manual_seed(seed)
            return nn.Sequential(
                nn.Flatten(),
                nn.Sequential(nn.Linear(12, 16), nn.GELU(), nn.Dropout(0.0)),
                nn.Linear(16, 16, bias=False),
                nn.Tanh(),
                nn.Identity(),
                nn.Linear(16, 3),
                nn.ReLU(),
            )

        models = [chain(s) for s in range(3)]
        stacked, vmapped = FusedModel(models), FusedModel(models, allow_stacked=False)
        assert (stacked.path, vmapped.path) == ("stacked", "vmap")
        x = torch.randn(3, 5, 3, 4)
        out = stacked(x)
        torch.testing.assert_close(out, vmapped(x), rtol=1e-6, atol=1e-6)
        for k, model in enumerate(models):
            torch.testing.assert_close(out[k], model(x[k]), rtol=1e-6, atol=1e-6)
        params = {n: p.clone().requires_grad_() for n, p in stacked.params.items()}
        a = torch.autograd.grad(
            stacked.stacked_forward(params, x).square().sum(), list(params.values())
        )
        b = torch.autograd.grad(
            torch.vmap(vmapped.functional_forward)(params, {}, x).square().sum(),
            list(params.values()),
        )
        for ga, gb in zip(a, b, strict=True):
            torch.testing.assert_close(ga, gb, rtol=1e-5, atol=1e-6)
        in_out = stacked.stacked_params()
        assert in_out["1.0.weight"].shape == (3, 12, 16)
        torch.testing.assert_close(stacked.stacked_forward(in_out, x, in_out=True), out)

    @pytest.mark.parametrize(
        "model",
        [
            nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4)),  # a module outside the set
            nn.Sequential(nn.Linear(4, 4), nn.PReLU()),  # an activation with a weight
            nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).eval(),  # buffers
            ScaledLinear(4, 4),  # a Linear subclass: its forward may differ
        ],
    )
    def test_a_model_outside_the_stacked_set_takes_the_vmap_path(self, model):
        fused = FusedModel([model, model]).train(model.training)
        assert fused.path == "vmap"
        x = torch.randn(2, 3, 4)
        torch.testing.assert_close(fused(x)[1], model(x[1]), rtol=1e-6, atol=1e-6)
        with pytest.raises(RuntimeError, match="path == 'stacked'"):
            fused.stacked_forward(fused.params, x)

    def test_dropout_runs_stacked_in_eval_mode_only(self):
        model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
        fused = FusedModel([model, model])
        assert fused.train().path == "vmap"
        assert fused.eval().path == "stacked"

    @pytest.mark.parametrize("name", ["digits_mlp", "mnist1d_mlp", "synthetic_mlp"])
    def test_the_built_in_mlps_take_the_stacked_path(self, name):
        assert FusedModel([build_workload(name, seed=0).model]).path == "stacked"

    def test_dropout_draws_a_different_mask_per_member(self):
        models = [nn.Dropout(0.5) for _ in range(2)]
        fused = FusedModel(models).train()
        out = fused(torch.ones(2, 1, 64))
        assert not torch.equal(out[0], out[1])


# Every activation of the stacked set: those with a derivative kernel of their own
# (in place or not) and those autograd differentiates alone (Softsign, Tanhshrink, LogSigmoid).
ACTIVATIONS = [
    nn.ReLU(),
    nn.ReLU(inplace=True),
    nn.ReLU6(),
    nn.LeakyReLU(0.1, inplace=True),
    nn.GELU(),
    nn.GELU(approximate="tanh"),
    nn.Tanh(),
    nn.Sigmoid(),
    nn.SiLU(),
    nn.ELU(0.7, inplace=True),
    nn.CELU(1.3),
    nn.SELU(),
    nn.Softplus(beta=2.0, threshold=5.0),
    nn.Mish(),
    nn.Hardtanh(-0.5, 0.7),
    nn.Hardswish(),
    nn.Hardsigmoid(),
    nn.Softsign(),
    nn.Tanhshrink(),
    nn.LogSigmoid(),
    nn.Identity(),
]


def chain(act: nn.Module, depth: int, bias: bool, seed: int) -> nn.Module:
    """``depth`` Linear+activation layers over 6 features; widths below and above
    the 7 rows of a batch, so that every product runs in both orientations."""
    torch.manual_seed(seed)
    widths = [6, 9, 4, 12, 3]
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(depth):
        layers += [nn.Linear(widths[i], widths[i + 1], bias=bias), copy.deepcopy(act)]
    return nn.Sequential(*layers)


def assert_backprop_matches_autograd(models: list[nn.Module], x: torch.Tensor) -> None:
    """_Backprop's outputs and gradients equal autograd's through stacked_forward."""
    fused = FusedModel(models)
    assert fused.path == "stacked"
    assert fused._plan is not None
    params = {n: p.clone() for n, p in fused.stacked_params().items()}
    names = list(params)
    leaves = {n: p.clone().requires_grad_() for n, p in params.items()}
    expected_out = fused.stacked_forward(leaves, x, in_out=True)
    weights = torch.randn(expected_out.shape, generator=torch.Generator().manual_seed(0))
    expected = torch.autograd.grad((expected_out * weights).sum(), [leaves[n] for n in names])
    backprop = _Backprop(fused._plan, params, names)
    for _ in range(2):  # the gradient buffers are reused: a second step is as exact
        out, tape = backprop.forward(x)
        torch.testing.assert_close(out, expected_out.detach(), rtol=1e-6, atol=1e-6)
        grads = backprop.backward(weights, tape)
        assert [g.shape for g in grads] == [params[n].shape for n in names]
        for name, got, want in zip(names, grads, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
    assert all(not p.requires_grad for p in params.values())  # no autograd graph


def last_member_step(works, members: list[int], x, y) -> list[torch.Tensor]:
    """One hand-written step of ``members``: the last one's outputs, loss, loss
    gradient and weight gradients."""
    batched = _batched_loss(works[0].loss_fn)
    assert batched is not None
    fused = FusedModel([works[s].model for s in members])
    assert fused._plan is not None
    params = {n: p.clone() for n, p in fused.stacked_params().items()}
    backprop = _Backprop(fused._plan, params, list(params))
    out, tape = backprop.forward(torch.stack([x] * len(members)))
    prepared = batched.prepare(torch.stack([y] * len(members)), out.dtype)
    assert prepared is not None
    loss, grad = batched.loss_and_grad(out, prepared)
    grads = backprop.backward(grad, tape)
    return [t.clone() for t in (out[-1], loss[-1], grad[-1], *(g[-1] for g in grads))]


class TestBackprop:
    @pytest.mark.parametrize("act", ACTIVATIONS, ids=lambda a: repr(a))
    @pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
    @pytest.mark.parametrize("depth", [1, 2, 4])
    def test_gradients_equal_autograds(self, act, bias, depth):
        models = [chain(act, depth, bias, seed) for seed in range(3)]
        x = torch.randn(3, 7, 2, 3)  # flattened to 6 features
        assert_backprop_matches_autograd(models, x)

    def test_activations_in_a_row_and_a_linear_over_a_sequence(self):
        def model(seed: int) -> nn.Module:
            torch.manual_seed(seed)
            return nn.Sequential(
                nn.Linear(5, 6),  # over (K, B, 3, 5): rows are B * 3
                nn.Sigmoid(),
                nn.Tanh(),  # after Sigmoid, whose output its backward reads: not in place
                nn.Flatten(),
                nn.Linear(18, 4),
                nn.Tanh(),
                nn.GELU(),
                nn.Linear(4, 2, bias=False),
            )

        assert_backprop_matches_autograd([model(s) for s in range(2)], torch.randn(2, 9, 3, 5))

    def test_a_member_gets_the_same_bits_in_a_run_of_any_k(self):
        # the 10-class head over 64 rows runs transposed; alone (K = 1) its products
        # are batched like K > 1's (a single matrix product may round otherwise)
        works = [build_workload("digits_mlp", {"width": 16}, seed=s) for s in range(3)]
        x, y = next(iter(works[0].train_loader))
        threads = torch.get_num_threads()
        torch.set_num_threads(2)  # (the suite runs on one): a threaded BLAS may split it
        try:
            runs = [last_member_step(works, m, x, y) for m in ([2], [1, 2], [0, 1, 2])]
        finally:
            torch.set_num_threads(threads)
        for run in runs[1:]:
            assert all(torch.equal(a, b) for a, b in zip(runs[0], run, strict=True))

    def test_the_batched_cross_entropy_gradient_equals_autograds(self):
        logits = torch.randn(3, 6, 4, requires_grad=True)
        targets = torch.randint(0, 4, (3, 6))
        targets[1, 2] = targets[2, :5] = -100
        batched = _batched_loss(nn.CrossEntropyLoss())
        assert batched is not None
        prepared = batched.prepare(targets, logits.dtype)
        assert prepared is not None
        expected = torch.stack(
            [nn.functional.cross_entropy(logits[k], targets[k]) for k in range(3)]
        )
        (expected_grad,) = torch.autograd.grad(expected.sum(), logits)
        loss, grad = batched.loss_and_grad(logits.detach(), prepared)
        torch.testing.assert_close(loss, expected.detach())
        torch.testing.assert_close(grad, expected_grad)
        assert grad.shape == logits.shape

    def test_the_built_in_accuracy_is_batched_with_each_members_value(self):
        from clr.workloads._builtin import accuracy as built_in

        logits = torch.randn(3, 10, 64).mT  # (K, N, C) with a strided class dimension
        targets = torch.randint(0, 10, (3, 64))
        expected = torch.stack([built_in(logits[k], targets[k]) for k in range(3)])
        assert torch.equal(_batched_metric(built_in)(logits, targets), expected)
        # any other metric is vmapped
        other = torch.stack([accuracy(logits[k], targets[k]) for k in range(3)])
        assert torch.equal(_batched_metric(accuracy)(logits, targets), other)

    def test_any_criterion_gives_its_gradient_by_autograd(self):
        outputs = torch.randn(2, 5, 3)
        targets = torch.randn(2, 5, 3)
        loss, grad = _loss_grad(torch.vmap(nn.functional.mse_loss), outputs, targets)
        torch.testing.assert_close(loss, ((outputs - targets) ** 2).mean((1, 2)))
        torch.testing.assert_close(grad, 2 * (outputs - targets) / 15)
        loss, grad = _loss_grad(torch.vmap(lambda _outputs, t: t.sum()), outputs, targets)
        assert torch.equal(grad, torch.zeros_like(outputs))  # no dependence: zeros

    @pytest.mark.parametrize("name", ["digits_mlp", "mnist1d_mlp"])
    def test_the_built_in_mlps_gradients_equal_autograds(self, name):
        works = [build_workload(name, {"width": 16}, seed=s) for s in range(2)]
        x, _ = next(iter(works[0].train_loader))
        assert_backprop_matches_autograd([w.model for w in works], torch.stack([x, x]))


def _torch_twin(name: str, params: list[nn.Parameter], **kw):
    if name == "sgd":
        return torch.optim.SGD(params, **kw)
    return (torch.optim.Adam if name == "adam" else torch.optim.AdamW)(params, **kw)


CASES = [
    ("sgd", {"momentum": 0.9}),
    ("sgd", {"momentum": 0.8, "nesterov": True, "weight_decay": 1e-2}),
    ("sgd", {"momentum": 0.0}),
    ("adam", {}),
    ("adam", {"weight_decay": 1e-2, "betas": (0.8, 0.99), "eps": 1e-6}),
    ("adamw", {"weight_decay": 1e-2}),
]


class TestFusedOptimizers:
    @pytest.mark.parametrize(("name", "kw"), CASES)
    def test_each_member_follows_torch_optim_step_for_step(self, name, kw):
        gen = torch.Generator().manual_seed(0)
        k = 3
        lrs = [1e-3, 3e-2, 0.1]
        shapes = [(5, 4), (4,)]
        stacked = [torch.randn(k, *s, generator=gen) for s in shapes]
        members = [[nn.Parameter(t[i].clone()) for t in stacked] for i in range(k)]
        twins = [_torch_twin(name, members[i], lr=lrs[i], **kw) for i in range(k)]
        fused = make_fused_optimizer(name, stacked, lr=lrs, **kw)
        for _ in range(6):
            grads = [torch.randn(k, *s, generator=gen) for s in shapes]
            for i in range(k):
                for p, g in zip(members[i], grads, strict=True):
                    p.grad = g[i].clone()
                twins[i].step()
            fused.step(grads)
            for i in range(k):
                for p, t in zip(members[i], stacked, strict=True):
                    torch.testing.assert_close(t[i], p.detach(), rtol=1e-6, atol=1e-7)

    @pytest.mark.parametrize("cls", [FusedSGD, FusedAdam, FusedAdamW])
    def test_an_inactive_member_is_frozen_even_with_nan_gradients(self, cls):
        w = torch.randn(3, 4)
        opt = cls([w], lr=0.1)
        opt.step([torch.randn(3, 4)])
        before = w.clone()
        state_before = [t.clone() for t in _state(opt)]
        grad = torch.randn(3, 4)
        grad[1] = float("nan")
        opt.step([grad], active=torch.tensor([True, False, True]))
        assert torch.equal(w[1], before[1])
        assert not torch.equal(w[0], before[0])
        assert torch.isfinite(w).all()
        for t, b in zip(_state(opt), state_before, strict=True):
            assert torch.equal(t[1], b[1])
        assert opt.steps.tolist() == [2.0, 1.0, 2.0]

    def test_per_member_momentum(self):
        w = torch.zeros(2, 1)
        opt = FusedSGD([w], lr=1.0, momentum=[0.0, 0.5])
        opt.step([torch.ones(2, 1)])
        opt.step([torch.ones(2, 1)])
        assert w.flatten().tolist() == [-2.0, -2.5]

    def test_bad_arguments_name_the_argument(self):
        with pytest.raises(OptimizerError, match="lr must be one number or 3"):
            FusedSGD([torch.zeros(3, 2)], lr=[0.1, 0.2])
        with pytest.raises(OptimizerError, match=r"momentum\[0\]"):
            FusedSGD([torch.zeros(3, 2)], lr=0.1, momentum=1.5)
        with pytest.raises(OptimizerError, match="optimizer must be one of"):
            make_fused_optimizer("rmsprop", [torch.zeros(3, 2)])


def _state(opt) -> list[torch.Tensor]:
    if isinstance(opt, FusedSGD):
        return opt.momentum_buffers
    return [*opt.exp_avgs, *opt.exp_avg_sqs]


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return (outputs.argmax(1) == targets).float().mean()


def task(k: int, n: int = 256, batch_size: int = 32) -> tuple[nn.Module, TensorBatches]:
    """Member ``k``: its own initial weights and its own shuffling generator."""
    gen = torch.Generator().manual_seed(1234)  # one dataset, K data orders
    x = torch.randn(n, 8, generator=gen)
    y = (x[:, :4].sum(1) > 0).long() + (x[:, 4:].sum(1) > 0).long()
    return mlp(100 + k), TensorBatches(x, y, batch_size, seed=10 + k)


def separate(name, k, **run):
    model, loader = task(k)
    lr = run.pop("opt_lr", 1e-3)
    opt_kw = run.pop("opt_kw", {})
    opt = make_optimizer(name, model.parameters(), lr=lr, **opt_kw)
    test = RangeTest(model, opt, nn.functional.cross_entropy, metric_fn=accuracy)
    return test.run(loader, **run)


def fused(name, members, opt_kw=None, criterion=nn.functional.cross_entropy, **run):
    tasks = [task(k) for k in members]
    test = FusedRangeTest(
        [m for m, _ in tasks],
        name,
        criterion,
        metric_fn=accuracy,
        **(opt_kw or {}),
    )
    return test.run([loader for _, loader in tasks], **run)


def assert_same_curve(a, b, rtol=1e-5):
    assert a.stop_reason == b.stop_reason
    assert a.steps_run == b.steps_run
    assert a.lrs.tolist() == b.lrs.tolist()
    np.testing.assert_allclose(a.losses, b.losses, rtol=rtol)
    np.testing.assert_allclose(a.smoothed_losses, b.smoothed_losses, rtol=rtol)
    np.testing.assert_allclose(a.accuracies, b.accuracies, rtol=rtol)


SWEEP = {"start_lr": 1e-4, "end_lr": 0.3, "num_iter": 40, "check_every": 8}


class TestFusedRangeTest:
    @pytest.mark.parametrize(
        ("name", "kw"),
        [
            ("sgd", {"momentum": 0.9}),
            ("adam", {}),
            ("adamw", {"weight_decay": 1e-2}),
        ],
    )
    def test_each_member_equals_its_separate_range_test(self, name, kw):
        sweep = dict(SWEEP, end_lr=0.3 if name == "sgd" else 0.03)
        results = fused(name, [0, 1, 2], opt_kw=kw, **sweep)
        assert [r.metadata["fused"]["member"] for r in results] == [0, 1, 2]
        for k, result in enumerate(results):
            assert_same_curve(result, separate(name, k, opt_kw=kw, **sweep))
        # the members really differ (own weights, own data order)
        assert results[0].losses[0] != results[1].losses[0]

    def test_per_member_sweeps_and_momenta_equal_separate_runs(self):
        starts, ends, momenta = [1e-4, 1e-3, 1e-5], [0.1, 0.3, 0.01], [0.9, 0.5, 0.0]
        results = fused(
            "sgd",
            [0, 1, 2],
            opt_kw={"momentum": momenta},
            start_lr=starts,
            end_lr=ends,
            num_iter=30,
        )
        for k, result in enumerate(results):
            assert result.start_lr == starts[k]
            assert result.end_lr == ends[k]
            other = separate(
                "sgd",
                k,
                opt_kw={"momentum": momenta[k]},
                start_lr=starts[k],
                end_lr=ends[k],
                num_iter=30,
            )
            assert_same_curve(result, other)

    def test_a_diverged_member_is_masked_and_the_others_are_bit_identical(self):
        with_it = fused("sgd", [0, 1, 2], start_lr=[1e-4, 1.0, 1e-4], end_lr=[0.1, 1e4, 0.1])
        without = fused("sgd", [0, 2], start_lr=1e-4, end_lr=0.1)
        assert with_it[1].stop_reason in ("diverged", "non_finite")
        assert with_it[1].steps_run < 100
        alone = separate("sgd", 1, start_lr=1.0, end_lr=1e4)
        # it stops where it would alone; past lr ~ 10 rounding is amplified, so
        # only the first points are compared to float tolerance
        assert (with_it[1].stop_reason, with_it[1].steps_run) == (
            alone.stop_reason,
            alone.steps_run,
        )
        np.testing.assert_allclose(with_it[1].losses[:8], alone.losses[:8], rtol=1e-5)
        for a, b in zip([with_it[0], with_it[2]], without, strict=True):
            assert a.stop_reason == b.stop_reason == "completed"
            assert a.steps_run == 100
            for field in ("lrs", "losses", "smoothed_losses", "accuracies"):
                assert np.array_equal(getattr(a, field), getattr(b, field)), field

    @pytest.mark.parametrize(
        ("name", "kw"), [("sgd", {"momentum": 0.9, "nesterov": True}), ("adamw", {})]
    )
    def test_the_stacked_and_vmap_paths_give_the_same_curves(self, name, kw):
        sweep = dict(SWEEP, end_lr=0.3 if name == "sgd" else 0.03)
        stacked = fused(name, [0, 1, 2], opt_kw=kw, **sweep)
        vmapped = fused(name, [0, 1, 2], opt_kw=dict(kw, allow_stacked=False), **sweep)
        assert {r.metadata["fused"]["path"] for r in stacked} == {"stacked"}
        assert {r.metadata["fused"]["path"] for r in vmapped} == {"vmap"}
        for a, b in zip(stacked, vmapped, strict=True):
            assert_same_curve(a, b)

    @pytest.mark.parametrize(
        "criterion",
        [
            nn.CrossEntropyLoss(),  # batched
            nn.CrossEntropyLoss(label_smoothing=0.1),  # not batched: vmapped
            lambda out, y: nn.functional.cross_entropy(out, y),  # unknown: vmapped
        ],
    )
    def test_every_criterion_gives_each_member_its_separate_curve(self, criterion):
        results = fused("sgd", [0, 1], criterion=criterion, **SWEEP)
        for k, result in enumerate(results):
            model, loader = task(k)
            opt = make_optimizer("sgd", model.parameters(), lr=1e-3)
            alone = RangeTest(model, opt, criterion, metric_fn=accuracy).run(loader, **SWEEP)
            assert result.metadata["fused"]["path"] == "stacked"
            assert_same_curve(result, alone)

    def test_the_batched_cross_entropy_leaves_out_ignored_rows(self):
        logits = torch.randn(3, 6, 4)
        targets = torch.randint(0, 4, (3, 6))
        targets[1, 2] = targets[2, :5] = -100
        batched = _batched_loss(nn.functional.cross_entropy)
        assert batched is not None
        prepared = batched.prepare(targets, logits.dtype)
        assert prepared is not None
        expected = [nn.functional.cross_entropy(logits[k], targets[k]) for k in range(3)]
        torch.testing.assert_close(batched(logits, prepared), torch.stack(expected))
        assert _batched_loss(nn.CrossEntropyLoss(weight=torch.ones(4))) is None
        assert batched.prepare(torch.rand(3, 6, 4), logits.dtype) is None  # probabilities

    @pytest.mark.parametrize("epochs", [[2, 2, 2], [2, 0, 5]], ids=["in-step", "apart"])
    def test_loaders_over_one_dataset_are_read_as_one_gather_with_the_same_batches(self, epochs):
        tasks = [task(k) for k in range(3)]
        for (_, loader), epoch in zip(tasks, epochs, strict=True):
            loader.set_epoch(epoch)  # loaders that do not start at epoch 0
        models, loaders = [m for m, _ in tasks], [lo for _, lo in tasks]
        run = {"num_iter": 60, "check_every": 7}  # 60 steps: 7+ epochs of 8 batches
        gathered = FusedRangeTest(models, "sgd", nn.functional.cross_entropy).run(loaders, **run)
        one_by_one = FusedRangeTest(
            models, "sgd", nn.functional.cross_entropy, batch_fn=lambda b: b
        ).run(loaders, **run)
        for a, b in zip(gathered, one_by_one, strict=True):
            assert np.array_equal(a.losses, b.losses)
        assert [loader.epoch for loader in loaders] == epochs

    def test_models_rng_and_loader_epochs_are_left_as_found(self):
        tasks = [task(k) for k in range(2)]
        before = [{k: v.clone() for k, v in m.state_dict().items()} for m, _ in tasks]
        torch.manual_seed(7)
        rng = torch.get_rng_state()
        test = FusedRangeTest([m for m, _ in tasks], "adam", nn.functional.cross_entropy)
        test.run([loader for _, loader in tasks], num_iter=20)  # 20 steps: 2+ epochs
        assert torch.equal(torch.get_rng_state(), rng)
        assert [loader.epoch for _, loader in tasks] == [0, 0]
        for (model, _), state in zip(tasks, before, strict=True):
            for key, value in model.state_dict().items():
                assert torch.equal(value, state[key])

    def test_callback_and_should_stop(self):
        seen: list[tuple[int, int]] = []
        calls = [0]

        def stop() -> bool:
            calls[0] += 1
            return calls[0] >= 2

        results = fused(
            "sgd",
            [0, 1],
            num_iter=40,
            check_every=5,
            callback=lambda k, p: seen.append((k, p.step)),
            should_stop=stop,
        )
        assert seen == [(0, 5), (1, 5), (0, 10), (1, 10)]
        assert [r.stop_reason for r in results] == ["cancelled", "cancelled"]
        assert [r.steps_run for r in results] == [10, 10]

    def test_bad_arguments_name_the_argument(self):
        tasks = [task(k) for k in range(2)]
        test = FusedRangeTest([m for m, _ in tasks], "sgd", nn.functional.cross_entropy)
        loaders = [loader for _, loader in tasks]
        with pytest.raises(RangeTestError, match="loaders must hold 2"):
            test.run(loaders[:1])
        with pytest.raises(RangeTestError, match="end_lr must be one number or 2"):
            test.run(loaders, end_lr=[1.0, 2.0, 3.0])
        with pytest.raises(RangeTestError, match="start_lr must be below end_lr"):
            test.run(loaders, start_lr=[1e-3, 1.0], end_lr=0.1)
        odd = TensorBatches(torch.randn(64, 8), torch.zeros(64, dtype=torch.long), 16)
        with pytest.raises(RangeTestError, match="one shape"):
            test.run([loaders[0], odd])
        with pytest.raises(OptimizerError, match="optimizer must be one of"):
            FusedRangeTest([mlp(0)], "lamb", nn.functional.cross_entropy)


class SharedBuffer(nn.Module):
    """Writes each sample's value into a tensor made inside the forward (in place)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(x.shape[0], 3)
        out += self.linear(x)
        return out


class ItemBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.linear(x)
        return y if y.sum().item() > 0 else -y


class TestFusable:
    def test_batch_norm_in_training_mode_is_refused_with_its_reason(self):
        model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4)).train()
        ok, reason = fusable(model, torch.randn(2, 4))
        assert not ok
        assert reason is not None
        assert "batch norm in training mode" in reason
        assert "1: BatchNorm1d" in reason
        assert fusable(model.eval(), torch.randn(2, 4)) == (True, None)

    def test_an_in_place_write_into_a_shared_tensor_is_refused(self):
        ok, reason = fusable(SharedBuffer(), torch.randn(2, 4))
        assert not ok
        assert reason is not None
        assert reason.startswith("vmap cannot run this model: RuntimeError")

    def test_item_in_the_forward_is_refused(self):
        ok, reason = fusable(ItemBranch(), torch.randn(2, 4))
        assert not ok
        assert reason is not None
        assert "item" in reason

    def test_dropout_fuses_and_the_global_rng_is_left_as_found(self):
        model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.3), nn.Linear(8, 2))
        x = torch.randn(2, 4)
        before = torch.get_rng_state()
        assert fusable(model.train(), x) == (True, None)
        assert torch.equal(torch.get_rng_state(), before)

    @pytest.mark.parametrize(
        "name", ["digits_mlp", "digits_cnn", "mnist1d_mlp", "mnist1d_cnn", "synthetic_mlp"]
    )
    def test_the_built_in_workloads_fuse(self, name):
        w = build_workload(name, seed=0)
        x, _ = next(iter(w.train_loader))
        assert fusable(w.model, x[:2]) == (True, None)


class TestFusedOptimizerMemberState:
    @pytest.mark.parametrize("name", ["sgd", "adam", "adamw"])
    def test_a_member_state_moves_to_another_slot_exactly(self, name):
        params = [torch.zeros(3, 4, 2), torch.zeros(3, 5)]
        opt = make_fused_optimizer(name, params, lr=[0.1, 0.2, 0.3])
        torch.manual_seed(0)
        for _ in range(3):
            opt.step([torch.randn_like(p) for p in params])
        saved = opt.member_state(2)
        assert saved["step"] == 3.0
        other = make_fused_optimizer(name, [torch.zeros(2, 4, 2), torch.zeros(2, 5)], lr=0.3)
        other.load_member_state(0, saved)
        assert other.steps.tolist() == [3.0, 0.0]
        mine = [
            t
            for key, v in opt.member_state(2).items()
            if key != "step" and isinstance(v, list)
            for t in v
        ]
        theirs = [
            t
            for key, v in other.member_state(0).items()
            if key != "step" and isinstance(v, list)
            for t in v
        ]
        assert len(mine) == len(theirs) > 0
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs, strict=True))

    def test_a_state_of_another_kind_is_refused(self):
        sgd = make_fused_optimizer("sgd", [torch.zeros(2, 3)])
        adam = make_fused_optimizer("adam", [torch.zeros(2, 3)])
        with pytest.raises(OptimizerError, match="no 'exp_avg'"):
            adam.load_member_state(0, sgd.member_state(0))
        with pytest.raises(OptimizerError, match="shape"):
            sgd.load_member_state(
                0, {"step": 1.0, "momentum": True, "momentum_buffer": [torch.zeros(4)]}
            )


class TestMemberMemory:
    def test_the_cpu_estimate_is_computed_from_weights_state_and_activations(self):
        model = mlp(0)  # 195 parameters: 780 bytes
        x = torch.zeros(5, 8)  # 160 bytes
        # leaf outputs: Linear 5x16, ReLU 5x16, Linear 5x3 floats = 700 bytes, x2
        sgd = member_memory(model, x, optimizer="sgd")
        assert sgd == MemberMemory(780 * 3 + 1400 + 160, False, sgd.detail)
        assert "780 parameter bytes x 3" in sgd.detail
        assert "700 activation bytes x 2" in sgd.detail
        adam = member_memory(model, x, optimizer="adam")
        assert adam.bytes == 780 * 4 + 1400 + 160
        assert member_memory(model, torch.zeros(10, 8)).bytes == 780 * 3 + 2800 + 320

    def test_buffers_count_once_and_the_model_is_left_as_found(self):
        model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6)).train()
        before = {k: v.clone() for k, v in model.state_dict().items()}
        memory = member_memory(model, torch.randn(8, 4), optimizer="sgd")
        params = (4 * 6 + 6 + 6 + 6) * 4
        buffers = (6 + 6) * 4 + 8  # running mean and var, num_batches_tracked (int64)
        activations = 2 * 2 * 8 * 6 * 4
        assert memory.bytes == params * 3 + buffers + activations + 8 * 4 * 4
        after = model.state_dict()
        assert all(torch.equal(before[k], after[k]) for k in before)

    def test_an_unknown_optimizer_is_refused(self):
        with pytest.raises(OptimizerError, match="optimizer must be one of"):
            member_memory(mlp(0), torch.zeros(2, 8), optimizer="rmsprop")


class TestFusedCapacity:
    def test_the_share_of_the_free_bytes_over_a_members(self):
        memory = MemberMemory(1000, False, "computed")
        assert fused_capacity(memory, device="cpu", free_bytes=10_000) == 5
        assert fused_capacity(memory, device="cpu", free_bytes=10_999, fraction=1.0) == 10
        assert fused_capacity(memory, device="cpu", free_bytes=100) == 1  # never below one

    def test_the_host_memory_is_asked_without_free_bytes(self):
        gib = MemberMemory(1 << 30, False, "computed")
        low = _available_host_bytes()
        got = fused_capacity(gib, device="cpu", fraction=1.0)
        high = _available_host_bytes()
        lo, hi = sorted((low, high))
        assert max(1, (lo - (64 << 20)) >> 30) <= got <= max(1, (hi + (64 << 20)) >> 30)
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            fields = dict(line.split(":", 1) for line in meminfo)
        available = int(fields["MemAvailable"].split()[0]) * 1024
        assert abs(available - low) < 256 << 20

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"fraction": 0.0}, "fraction must be in"),
            ({"fraction": 1.5}, "fraction must be in"),
            ({"free_bytes": -1}, "free_bytes must be"),
        ],
    )
    def test_bad_arguments_are_refused(self, kwargs, match):
        with pytest.raises(ValueError, match=match):
            fused_capacity(MemberMemory(10, False, "x"), device="cpu", **kwargs)
        with pytest.raises(ValueError, match="memory.bytes must be positive"):
            fused_capacity(MemberMemory(0, False, "x"), device="cpu", free_bytes=10)
