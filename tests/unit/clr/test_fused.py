"""Fused models, optimizers and range tests: each member equals its separate run."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from clr.fused import (
    FusedAdam,
    FusedAdamW,
    FusedModel,
    FusedSGD,
    make_fused_optimizer,
    stack_models,
)
from clr.optim import OptimizerError


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


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

    def test_dropout_draws_a_different_mask_per_member(self):
        models = [nn.Dropout(0.5) for _ in range(2)]
        fused = FusedModel(models).train()
        out = fused(torch.ones(2, 1, 64))
        assert not torch.equal(out[0], out[1])


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
