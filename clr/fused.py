"""K copies of one model run as one: fused range tests over a leading member dimension.

A sweep is many small, similar jobs (one model under several seeds, LRs or
momenta). Run one at a time, a small model spends most of each step in Python
and kernel-launch overhead; here K copies of one architecture (any
initialisations) are stacked along a leading *member* dimension with
:func:`torch.func.stack_module_state` and run as one model with
:func:`torch.func.functional_call` under :func:`torch.vmap`, so one step of
the fused model is one step of every member.

* :class:`FusedModel` / :func:`stack_models`: the stacked weights and a
  vmapped forward, inputs shaped ``(K, B, ...)``; :meth:`FusedModel.member_state_dict`
  gives a member back as an ordinary state dict.
* :class:`FusedSGD`, :class:`FusedAdam`, :class:`FusedAdamW` (built by name with
  :func:`make_fused_optimizer`): torch.optim's updates written elementwise over
  the stacked tensors, with a learning rate and momentum per member and a mask
  that freezes the members that stopped.
* :class:`FusedRangeTest`: K LR range tests in one loop, each member with its
  own data order and sweep; a member that diverges is masked while the others
  go on, and each member's :class:`~clr.RangeTestResult` means what a separate
  :meth:`clr.RangeTest.run` would have returned.
* :func:`fusable`: whether ``vmap`` can run a model, asked before running.

Which built-in workloads fuse (checked by :func:`fusable` on each, in
``tests/unit/clr/test_fused.py``): ``digits_mlp``, ``digits_cnn``,
``mnist1d_mlp``, ``mnist1d_cnn`` and ``synthetic_mlp`` all do (Linear, Conv,
ReLU, pooling and flatten have vmap batching rules; none of them has batch
norm or dropout).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state

from clr.optim import OPTIMIZERS, OptimizerError, _check

__all__ = [
    "FusedAdam",
    "FusedAdamW",
    "FusedModel",
    "FusedOptimizer",
    "FusedSGD",
    "make_fused_optimizer",
    "stack_models",
]

LossFn = Callable[[Any, Any], Tensor]
MetricFn = Callable[[Any, Any], Tensor]
BatchFn = Callable[[Any], tuple[Any, Any]]
PerMember = float | Sequence[float] | Tensor


def _signature(model: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    named = [*model.named_parameters(), *model.named_buffers()]
    return [(name, tuple(t.shape), t.dtype) for name, t in named]


class FusedModel:
    """K models of one architecture, stacked along a leading member dimension.

    The weights are plain tensors shaped ``(K, *shape)`` (one per parameter and
    buffer of the architecture); the forward is the architecture's own, run by
    :func:`torch.func.functional_call` under :func:`torch.vmap`, so a member
    computes exactly what its model alone would (up to the floating-point order
    of batched matrix products). Buffers are read, never written: a module that
    updates its buffers in the forward (batch norm in training mode) cannot be
    fused (see :func:`fusable`).

    Args:
        models: K >= 1 modules with the same parameter and buffer names, shapes
            and dtypes (e.g. one architecture built under K seeds). They are
            copied, never changed.
        randomness: vmap's ``randomness``: ``"different"`` (the default) gives each
            member its own dropout masks; ``"same"`` one mask for all; ``"error"``
            refuses random ops.

    Raises:
        ValueError: no models, or models of different architectures.

    Example:
        >>> import torch
        >>> models = [torch.nn.Linear(3, 2) for _ in range(4)]
        >>> fused = FusedModel(models)
        >>> fused(torch.zeros(4, 5, 3)).shape
        torch.Size([4, 5, 2])
        >>> fresh = torch.nn.Linear(3, 2)
        >>> _ = fresh.load_state_dict(fused.member_state_dict(1))
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        *,
        randomness: Literal["different", "same", "error"] = "different",
    ) -> None:
        models = list(models)
        if not models:
            raise ValueError("models must hold at least one model, got none")
        first = _signature(models[0])
        for k, model in enumerate(models[1:], start=1):
            if type(model) is not type(models[0]) or _signature(model) != first:
                raise ValueError(
                    f"models[{k}] does not have models[0]'s architecture (parameter and "
                    "buffer names, shapes and dtypes must match)"
                )
        self.num_members = len(models)
        self.randomness = randomness
        params, buffers = stack_module_state(models)
        self.params: dict[str, Tensor] = {k: v.detach() for k, v in params.items()}
        self.buffers: dict[str, Tensor] = {k: v.detach() for k, v in buffers.items()}
        # The template only lends its forward: its own tensors are never read.
        self.template = copy.deepcopy(models[0]).to("meta")
        self._state_keys = list(models[0].state_dict().keys())
        self.training = models[0].training

    @property
    def device(self) -> torch.device:
        """The device the stacked weights are on."""
        for t in (*self.params.values(), *self.buffers.values()):
            return t.device
        return torch.device("cpu")

    def train(self, mode: bool = True) -> FusedModel:
        """Put every member in training (or eval) mode; returns ``self``."""
        self.template.train(mode)
        self.training = mode
        return self

    def eval(self) -> FusedModel:
        """Put every member in eval mode; returns ``self``."""
        return self.train(False)

    def functional_forward(
        self, params: Mapping[str, Tensor], buffers: Mapping[str, Tensor], inputs: Any
    ) -> Any:
        """One member's forward: the architecture called with ``params`` and ``buffers``.

        Args:
            params, buffers: one member's tensors (no member dimension).
            inputs: that member's inputs.

        Returns:
            The architecture's outputs.
        """
        return functional_call(self.template, (dict(params), dict(buffers)), (inputs,))

    def __call__(self, inputs: Any) -> Any:
        """All members' outputs for inputs shaped ``(K, B, ...)`` (one batch per member)."""
        run = torch.vmap(self.functional_forward, randomness=self.randomness)
        return run(self.params, self.buffers, inputs)

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member ``k`` as an ordinary state dict (cloned), ready for ``load_state_dict``.

        Args:
            k: the member, ``0 <= k < num_members``.

        Returns:
            The state dict, keys in the architecture's ``state_dict`` order.
        """
        if not 0 <= k < self.num_members:
            raise IndexError(f"k must be in [0, {self.num_members}), got {k}")
        stacked = {**self.params, **self.buffers}
        return {key: stacked[key][k].detach().clone() for key in self._state_keys}

    def unstack(self, k: int) -> nn.Module:
        """Member ``k`` as a new module on the weights' device (a copy)."""
        module = copy.deepcopy(self.template).to_empty(device=self.device)
        module.load_state_dict(self.member_state_dict(k))
        return module


def stack_models(
    models: Sequence[nn.Module], *, randomness: Literal["different", "same", "error"] = "different"
) -> FusedModel:
    """``FusedModel(models, randomness=...)``: K models of one architecture as one.

    Example:
        >>> import torch
        >>> stack_models([torch.nn.Linear(3, 2) for _ in range(2)]).num_members
        2
    """
    return FusedModel(models, randomness=randomness)


# --------------------------------------------------------------------------- optimizers


def _per_member(name: str, value: PerMember, k: int, low: float, high: float | None) -> Tensor:
    """A (K,) float64 tensor on the CPU from a number, K numbers or a tensor."""
    values: list[Any]
    if isinstance(value, Tensor):
        values = value.detach().reshape(-1).tolist()
    elif isinstance(value, int | float):
        values = [value] * k  # a bool is refused by _check
    else:
        values = list(value)
    if len(values) != k:
        raise OptimizerError(f"{name} must be one number or {k} numbers, got {len(values)}")
    for i, v in enumerate(values):
        _check(f"{name}[{i}]", v, low, high)
    return torch.tensor(values, dtype=torch.float64)


class FusedOptimizer:
    """Base of the fused optimizers: stacked parameters, a per-member LR and a mask.

    Every tensor in ``params`` has the member dimension first. :meth:`step` takes
    the gradients (same shapes) and updates the parameters in place; a member
    whose entry of ``active`` is ``False`` keeps its weights and optimizer state
    exactly as they were (its gradients may be NaN).

    Attributes:
        lr: the per-member learning rates, a (K,) float64 tensor on the CPU;
            assign a new one (or call :meth:`set_lr`) between steps.
    """

    def __init__(self, params: Sequence[Tensor], lr: PerMember) -> None:
        self.params = list(params)
        if not self.params:
            raise OptimizerError("params must hold at least one tensor, got none")
        self.num_members = int(self.params[0].shape[0])
        for p in self.params:
            if p.dim() == 0 or p.shape[0] != self.num_members:
                raise OptimizerError(
                    f"every param must have the member dimension ({self.num_members}) first, "
                    f"got shape {tuple(p.shape)}"
                )
        self.device = self.params[0].device
        self.lr = _per_member("lr", lr, self.num_members, 0.0, None)
        self.steps = torch.zeros(self.num_members, dtype=torch.float64)

    def set_lr(self, lr: PerMember) -> None:
        """Set the per-member learning rates (one number for all, or K numbers)."""
        self.lr = _per_member("lr", lr, self.num_members, 0.0, None)

    def _col(self, values: Tensor, like: Tensor) -> Tensor:
        """``values`` (K,) as ``like``'s dtype on its device, shaped to broadcast over it."""
        return values.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.dim() - 1)))

    def step(self, grads: Sequence[Tensor], active: Tensor | None = None) -> None:
        """Apply one update to every active member.

        Args:
            grads: one gradient per param, same shapes.
            active: (K,) bool, ``None`` for all; members set ``False`` are frozen
                (weights, state and step count untouched).
        """
        if len(grads) != len(self.params):
            raise OptimizerError(f"expected {len(self.params)} gradients, got {len(grads)}")
        mask = None if active is None else active.to(self.device)
        # The step count lives on the host: the bias corrections are float64 scalars
        # per member, like torch's (which reads its step counter with .item()).
        steps = self.steps + (1.0 if active is None else active.to("cpu", torch.float64))
        with torch.no_grad():
            for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
                self._update(i, p, g, mask, steps)
        self.steps = steps

    def _update(self, i: int, p: Tensor, g: Tensor, mask: Tensor | None, steps: Tensor) -> None:
        raise NotImplementedError

    @staticmethod
    def _put(target: Tensor, value: Tensor, mask: Tensor | None) -> None:
        if mask is None:
            target.copy_(value)
        else:
            target.copy_(torch.where(mask.view(-1, *([1] * (target.dim() - 1))), value, target))


class FusedSGD(FusedOptimizer):
    """:class:`torch.optim.SGD`'s update (dampening 0) per member, over stacked tensors.

    ``d = g + weight_decay * p``; with momentum ``b = d`` on a member's first
    step, then ``b = momentum * b + d``; ``d = d + momentum * b`` with Nesterov,
    else ``d = b``; ``p = p - lr * d``.

    Args:
        params: the stacked parameters (member dimension first).
        lr: learning rate, one number or K.
        momentum: momentum factor, one number or K.
        weight_decay: L2 penalty.
        nesterov: Nesterov momentum (needs momentum > 0).

    Example:
        >>> import torch
        >>> w = torch.zeros(2, 3)
        >>> opt = FusedSGD([w], lr=[0.1, 1.0], momentum=0.0)
        >>> opt.step([torch.ones(2, 3)])
        >>> w[:, 0].tolist()
        [-0.10000000149011612, -1.0]
    """

    def __init__(
        self,
        params: Sequence[Tensor],
        lr: PerMember = 1e-3,
        *,
        momentum: PerMember = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        super().__init__(params, lr)
        self.momentum = _per_member("momentum", momentum, self.num_members, 0.0, 1.0)
        self.weight_decay = _check("weight_decay", weight_decay, 0.0)
        if nesterov and bool((self.momentum == 0).any()):
            raise OptimizerError("nesterov=True needs momentum > 0")
        self.nesterov = nesterov
        self.momentum_buffers: list[Tensor] = [torch.zeros_like(p) for p in self.params]

    def _update(self, i: int, p: Tensor, g: Tensor, mask: Tensor | None, steps: Tensor) -> None:
        d = g.add(p, alpha=self.weight_decay) if self.weight_decay != 0 else g
        if bool((self.momentum != 0).any()):
            m = self._col(self.momentum, p)
            buf = self.momentum_buffers[i]
            first = self._col((steps == 1).to(torch.float64), p).bool()
            new_buf = torch.where(first, d, buf * m + d)
            d = d + m * new_buf if self.nesterov else new_buf
            self._put(buf, new_buf, mask)
        self._put(p, p - self._col(self.lr, p) * d, mask)


class FusedAdam(FusedOptimizer):
    """:class:`torch.optim.Adam`'s default update (not amsgrad) per member.

    ``g = g + weight_decay * p`` (L2, coupled); ``m = lerp(m, g, 1 - beta1)``;
    ``v = beta2 * v + (1 - beta2) * g * g``; with the member's step ``t``,
    ``p = p - lr / (1 - beta1**t) * m / (sqrt(v) / sqrt(1 - beta2**t) + eps)``.
    Kingma & Ba, https://arxiv.org/abs/1412.6980.

    Args:
        params: the stacked parameters (member dimension first).
        lr: learning rate, one number or K.
        betas: ``(beta1, beta2)``; ``beta1`` (the momentum) may be K numbers.
        eps: added to the denominator after the bias correction, as torch does.
        weight_decay: L2 penalty.

    Example:
        >>> import torch
        >>> w = torch.zeros(2, 3)
        >>> FusedAdam([w], lr=[0.1, 0.01]).step([torch.ones(2, 3)])
        >>> [round(v, 6) for v in w[:, 0].tolist()]
        [-0.1, -0.01]
    """

    decoupled = False

    def __init__(
        self,
        params: Sequence[Tensor],
        lr: PerMember = 1e-3,
        *,
        betas: tuple[PerMember, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr)
        self.beta1 = _per_member("betas[0]", betas[0], self.num_members, 0.0, 1.0)
        self.beta2 = _check("betas[1]", betas[1], 0.0, 1.0)
        self.eps = _check("eps", eps, 0.0)
        self.weight_decay = _check("weight_decay", weight_decay, 0.0)
        self.exp_avgs: list[Tensor] = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sqs: list[Tensor] = [torch.zeros_like(p) for p in self.params]

    def _update(self, i: int, p: Tensor, g: Tensor, mask: Tensor | None, steps: Tensor) -> None:
        wd = self.weight_decay
        if wd != 0:
            if self.decoupled:
                p = p * self._col(1 - self.lr * wd, p)
            else:
                g = g.add(p, alpha=wd)
        exp_avg = self.exp_avgs[i].lerp(g, self._col(1 - self.beta1, p))
        exp_avg_sq = self.exp_avg_sqs[i] * self.beta2 + (1 - self.beta2) * (g * g)
        # A frozen member that never stepped has t = 0 (a division by zero): its
        # values are computed and then discarded by the mask.
        bias_correction1 = 1 - self.beta1**steps
        step_size = self.lr / bias_correction1
        bias_correction2_sqrt = (1 - self.beta2**steps) ** 0.5
        denom = exp_avg_sq.sqrt() / self._col(bias_correction2_sqrt, p) + self.eps
        new_p = p - self._col(step_size, p) * (exp_avg / denom)
        self._put(self.exp_avgs[i], exp_avg, mask)
        self._put(self.exp_avg_sqs[i], exp_avg_sq, mask)
        self._put(self.params[i], new_p, mask)


class FusedAdamW(FusedAdam):
    """:class:`torch.optim.AdamW`'s default update per member: :class:`FusedAdam` with
    decoupled weight decay, ``p = p * (1 - lr * weight_decay)`` before the Adam step.
    Loshchilov & Hutter, https://arxiv.org/abs/1711.05101.

    Args:
        params, lr, betas, eps: as :class:`FusedAdam`.
        weight_decay: decoupled weight decay (torch's AdamW default is 0.01).

    Example:
        >>> import torch
        >>> w = torch.ones(2, 1)
        >>> FusedAdamW([w], lr=0.1, weight_decay=0.5).step([torch.zeros(2, 1)])
        >>> w.flatten().tolist()
        [0.949999988079071, 0.949999988079071]
    """

    decoupled = True

    def __init__(
        self,
        params: Sequence[Tensor],
        lr: PerMember = 1e-3,
        *,
        betas: tuple[PerMember, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
    ) -> None:
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay)


def make_fused_optimizer(
    name: Literal["sgd", "adam", "adamw"] | str,
    params: Sequence[Tensor],
    *,
    lr: PerMember = 1e-3,
    momentum: PerMember = 0.9,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    betas: tuple[float, float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> FusedOptimizer:
    """The fused twin of :func:`clr.make_optimizer`: same names, arguments and defaults.

    ``momentum`` and ``nesterov`` apply to SGD, ``betas`` and ``eps`` to the
    Adam family (``momentum`` is ignored there: pass ``betas``); ``weight_decay``
    to all (decoupled for AdamW). ``lr`` and ``momentum`` may be K numbers.

    Args:
        name: ``sgd``, ``adam`` or ``adamw``.
        params: the stacked parameters, e.g. ``list(FusedModel(models).params.values())``.

    Returns:
        A :class:`FusedOptimizer`.

    Raises:
        OptimizerError: an unknown name or an impossible hyperparameter.

    Example:
        >>> import torch
        >>> opt = make_fused_optimizer("sgd", [torch.zeros(4, 3)], lr=0.1)
        >>> type(opt).__name__, opt.momentum.tolist()
        ('FusedSGD', [0.9, 0.9, 0.9, 0.9])
    """
    if name == "sgd":
        return FusedSGD(params, lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)
    if name in ("adam", "adamw"):
        cls = FusedAdam if name == "adam" else FusedAdamW
        return cls(params, lr, betas=betas, eps=eps, weight_decay=weight_decay)
    raise OptimizerError(f"optimizer must be one of {list(OPTIMIZERS)}, got {name!r}")
