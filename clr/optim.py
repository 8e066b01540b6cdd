"""Optimizers by name, so a job spec (or a CLI flag) can say which one to use."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch.optim import Optimizer

from clr.exceptions import CLRError

__all__ = ["OPTIMIZERS", "OptimizerError", "make_optimizer"]

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw")


class OptimizerError(CLRError, ValueError):
    """An optimizer name or hyperparameter is not acceptable."""


def _check(name: str, value: float, low: float, high: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise OptimizerError(f"{name} must be a finite number, got {value!r}")
    if value < low or (high is not None and value >= high):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise OptimizerError(f"{name} must be {bound}, got {value!r}")
    return float(value)


def make_optimizer(
    name: Literal["sgd", "adam", "adamw"] | str,
    params: Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]],
    *,
    lr: float = 1e-3,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> Optimizer:
    """Build ``sgd`` (with momentum), ``adam`` or ``adamw``.

    ``momentum`` and ``nesterov`` apply to SGD, ``betas`` and ``eps`` to the
    Adam family; ``weight_decay`` to all (decoupled for AdamW).

    Example:
        >>> opt = make_optimizer("sgd", torch.nn.Linear(2, 1).parameters(), lr=0.1)
        >>> type(opt).__name__, opt.defaults["momentum"]
        ('SGD', 0.9)
    """
    _check("lr", lr, 0.0)
    _check("weight_decay", weight_decay, 0.0)
    if name == "sgd":
        _check("momentum", momentum, 0.0, 1.0)
        if nesterov and momentum == 0:
            raise OptimizerError("nesterov=True needs momentum > 0")
        return torch.optim.SGD(
            params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov
        )
    if name in ("adam", "adamw"):
        b1 = _check("betas[0]", betas[0], 0.0, 1.0)
        b2 = _check("betas[1]", betas[1], 0.0, 1.0)
        _check("eps", eps, 0.0)
        cls = torch.optim.Adam if name == "adam" else torch.optim.AdamW
        return cls(params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=weight_decay)
    raise OptimizerError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")
