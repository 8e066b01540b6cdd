"""Optimizers by name."""

from __future__ import annotations

import math

import pytest
import torch

from clr.optim import OptimizerError, make_optimizer


def params():
    return torch.nn.Linear(3, 2).parameters()


class TestMakeOptimizer:
    def test_sgd_gets_momentum_and_weight_decay(self):
        opt = make_optimizer("sgd", params(), lr=0.1, momentum=0.8, weight_decay=1e-4)
        assert isinstance(opt, torch.optim.SGD)
        assert opt.defaults["momentum"] == 0.8
        assert opt.defaults["weight_decay"] == 1e-4
        assert opt.param_groups[0]["lr"] == 0.1

    @pytest.mark.parametrize(
        ("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)]
    )
    def test_adam_family_gets_betas(self, name, cls):
        opt = make_optimizer(name, params(), lr=1e-3, betas=(0.85, 0.99))
        assert type(opt) is cls
        assert opt.defaults["betas"] == (0.85, 0.99)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"name": "rmsprop"}, "optimizer must be one of"),
            ({"lr": -1.0}, "lr must be >= 0.0"),
            ({"lr": math.nan}, "lr must be a finite number"),
            ({"momentum": 1.0}, r"momentum must be in \[0.0, 1.0\)"),
            ({"nesterov": True, "momentum": 0.0}, "nesterov=True needs momentum > 0"),
            ({"name": "adam", "betas": (0.9, 1.5)}, r"betas\[1\] must be in"),
        ],
    )
    def test_bad_values_name_the_argument(self, kwargs, message):
        name = kwargs.pop("name", "sgd")
        with pytest.raises(OptimizerError, match=message):
            make_optimizer(name, params(), **kwargs)
