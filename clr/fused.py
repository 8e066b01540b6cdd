"""K copies of one model run as one: fused range tests over a leading member dimension.

A sweep is many small, similar jobs (one model under several seeds, LRs or
momenta). Run one at a time, a small model spends most of each step in Python
and kernel-launch overhead; here K copies of one architecture (any
initialisations) are stacked along a leading *member* dimension with
:func:`torch.func.stack_module_state` and run as one model, so one step of the
fused model is one step of every member. Two paths, chosen automatically
(:attr:`FusedModel.path`): a plain chain of Linear and elementwise modules
runs ``"stacked"``, as :func:`torch.baddbmm` over ``(K, in, out)`` weights,
and a training step there is written by hand: the forward keeps what the
backward reads, the backward is batched matrix products and each activation's
derivative kernel (no autograd graph), and for cross-entropy the K losses and
their gradient come from one batched call; any other model runs ``"vmap"``,
its own forward by :func:`torch.func.functional_call` under :func:`torch.vmap`.

* :class:`FusedModel` / :func:`stack_models`: the stacked weights and a
  batched forward, inputs shaped ``(K, B, ...)``; :meth:`FusedModel.member_state_dict`
  gives a member back as an ordinary state dict.
* :class:`FusedSGD`, :class:`FusedAdam`, :class:`FusedAdamW` (built by name with
  :func:`make_fused_optimizer`): torch.optim's updates written with torch's
  multi-tensor ``torch._foreach_*`` ops over the stacked tensors, with a
  learning rate and momentum per member and a mask that freezes the members
  that stopped.
* :class:`FusedRangeTest`: K LR range tests in one loop, each member with its
  own data order and sweep; a member that diverges is masked while the others
  go on, and each member's :class:`~clr.RangeTestResult` means what a separate
  :meth:`clr.RangeTest.run` would have returned.
* :func:`fusable`: whether ``vmap`` can run a model, asked before running.
* :func:`member_memory` / :func:`fused_capacity`: one member's bytes in a fused
  run (computed, and on CUDA measured) and how many members fit a device.

Which built-in workloads fuse (checked by :func:`fusable` on each, in
``tests/unit/clr/test_fused.py``): ``digits_mlp``, ``digits_cnn``,
``mnist1d_mlp``, ``mnist1d_cnn`` and ``synthetic_mlp`` all do (Linear, Conv,
ReLU, pooling and flatten have vmap batching rules; none of them has batch
norm or dropout). ``digits_mlp``, ``mnist1d_mlp`` and ``synthetic_mlp`` take the
stacked path, the CNNs the vmap path.
"""

from __future__ import annotations

import copy
import math
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import functional_call, grad_and_value, stack_module_state

from clr._batch import split_batch, to_device
from clr._result import RangeTestResult
from clr.exceptions import RangeTestError
from clr.optim import OPTIMIZERS, OptimizerError, _check
from clr.range_test import RangeTestProgress, Sweep, _check_sweep, _Curve, _Cycle, sweep_lrs

__all__ = [
    "FusedAdam",
    "FusedAdamW",
    "FusedModel",
    "FusedOptimizer",
    "FusedRangeTest",
    "FusedSGD",
    "MemberMemory",
    "fusable",
    "fused_capacity",
    "make_fused_optimizer",
    "member_memory",
    "stack_models",
]

LossFn = Callable[[Any, Any], Tensor]
# (inputs, targets, the targets' prepared part) -> (gradients, (K,) losses, outputs)
_StepFn = Callable[[Any, Any, Any], tuple[list[Tensor], Tensor, Any]]
MetricFn = Callable[[Any, Any], Tensor]
BatchFn = Callable[[Any], tuple[Any, Any]]
PerMember = float | Sequence[float] | Tensor


def _signature(model: nn.Module) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
    named = [*model.named_parameters(), *model.named_buffers()]
    return [(name, tuple(t.shape), t.dtype) for name, t in named]


class FusedModel:
    """K models of one architecture, stacked along a leading member dimension.

    The weights are plain tensors shaped ``(K, *shape)`` (one per parameter and
    buffer of the architecture). A plain chain of Linear and elementwise modules
    runs as batched matrix products over the stacked weights (:attr:`path`
    ``"stacked"``); any other architecture runs its own forward by
    :func:`torch.func.functional_call` under :func:`torch.vmap` (``"vmap"``). Either
    way a member computes exactly what its model alone would (up to the
    floating-point order of batched matrix products). Buffers are read, never written: a module that
    updates its buffers in the forward (batch norm in training mode) cannot be
    fused (see :func:`fusable`).

    Args:
        models: K >= 1 modules with the same parameter and buffer names, shapes
            and dtypes (e.g. one architecture built under K seeds). They are
            copied, never changed.
        randomness: vmap's ``randomness``: ``"different"`` (the default) gives each
            member its own dropout masks; ``"same"`` one mask for all; ``"error"``
            refuses random ops.
        allow_stacked: ``False`` runs every model by vmap, even one that
            :attr:`path` would run stacked (to compare the two).

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
        allow_stacked: bool = True,
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
        self._plan = (
            _stacked_plan(self.template, set(self.params), set(self.buffers))
            if allow_stacked
            else None
        )

    @property
    def path(self) -> Literal["stacked", "vmap"]:
        """How the members run: ``"stacked"`` or ``"vmap"``, chosen automatically.

        ``"stacked"``: the model is a plain chain (nested :class:`~torch.nn.Sequential`\\ s)
        of :class:`~torch.nn.Linear`, elementwise activations (ReLU, GELU, Tanh, ...),
        :class:`~torch.nn.Flatten`, :class:`~torch.nn.Identity` and
        :class:`~torch.nn.Dropout` that drops nothing (``p == 0`` or eval mode),
        with no buffers: it runs as :func:`torch.baddbmm` over the stacked
        ``(K, out, in)`` weights, and :class:`FusedRangeTest` /
        :class:`~clr.fused_train.FusedTrainer` train it with a backward written by
        hand (batched matrix products and each activation's derivative kernel,
        autograd only for an activation without one). ``"vmap"``: anything else,
        by :func:`torch.func.functional_call` under :func:`torch.vmap`. Both give
        the same outputs and gradients to float tolerance.
        """
        if self._plan is None:
            return "vmap"
        if self.training and any(op[0] == "dropout" and op[1] > 0 for op in self._plan):
            return "vmap"
        return "stacked"

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

    def stacked_params(self) -> dict[str, Tensor]:
        """:attr:`params` with each Linear weight as ``(K, in, out)`` (contiguous copies),
        the layout :meth:`stacked_forward` takes with ``in_out=True``."""
        if self._plan is None:
            raise RuntimeError("stacked_params needs path == 'stacked'; this model runs by vmap")
        weights = {op[1] for op in self._plan if op[0] == "linear"}
        return {
            n: p.transpose(1, 2).contiguous() if n in weights else p for n, p in self.params.items()
        }

    def stacked_forward(
        self, params: Mapping[str, Tensor], inputs: Tensor, *, in_out: bool = False
    ) -> Tensor:
        """All members' outputs by batched matrix products over the stacked weights.

        Only for :attr:`path` ``"stacked"`` (a chain of Linear, elementwise
        activation, Flatten and Identity modules): ordinary autograd, no
        ``vmap`` and no ``functional_call``.

        Args:
            params: the stacked parameters (``(K, *shape)`` each), e.g. :attr:`params`.
            inputs: ``(K, B, ...)``, one batch per member.
            in_out: the Linear weights in ``params`` are ``(K, in, out)``
                (:meth:`stacked_params`) rather than ``(K, out, in)``.
        """
        if self._plan is None or self.path != "stacked":
            raise RuntimeError("stacked_forward needs path == 'stacked'; this model runs by vmap")
        return _run_plan(self._plan, params, inputs, in_out)

    def __call__(self, inputs: Any) -> Any:
        """All members' outputs for inputs shaped ``(K, B, ...)`` (one batch per member)."""
        if self.path == "stacked" and isinstance(inputs, Tensor):
            return self.stacked_forward(self.params, inputs)
        run = torch.vmap(self.functional_forward, randomness=self.randomness)
        return run(self.params, self.buffers, inputs)

    @property
    def in_out_names(self) -> frozenset[str]:
        """The Linear weights :meth:`stacked_params` lays out as ``(K, in, out)``
        (transposed from :attr:`params`); empty on the vmap path."""
        if self._plan is None:
            return frozenset()
        return frozenset(op[1] for op in self._plan if op[0] == "linear")

    def member_state_dict(
        self,
        k: int,
        *,
        params: Mapping[str, Tensor] | None = None,
        buffers: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """Member ``k`` as an ordinary state dict (cloned), ready for ``load_state_dict``.

        Args:
            k: the member, ``0 <= k < num_members``.
            params, buffers: stacked tensors to read instead of :attr:`params` /
                :attr:`buffers` (the same layout: e.g. a training loop's live weights).

        Returns:
            The state dict, keys in the architecture's ``state_dict`` order,
            every tensor a contiguous copy.
        """
        if not 0 <= k < self.num_members:
            raise IndexError(f"k must be in [0, {self.num_members}), got {k}")
        stacked = {
            **(self.params if params is None else params),
            **(self.buffers if buffers is None else buffers),
        }
        return {
            key: stacked[key][k].detach().clone(memory_format=torch.contiguous_format)
            for key in self._state_keys
        }

    def unstack(self, k: int) -> nn.Module:
        """Member ``k`` as a new module on the weights' device (a copy)."""
        module = copy.deepcopy(self.template).to_empty(device=self.device)
        module.load_state_dict(self.member_state_dict(k))
        return module


# --------------------------------------------------------------------------- stacked path

# Modules that act elementwise (no parameters, no buffers, no randomness): on
# stacked activations (K, B, ...) they compute exactly what they compute per member.
_ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.GELU,
    nn.Tanh,
    nn.Sigmoid,
    nn.SiLU,
    nn.ELU,
    nn.CELU,
    nn.SELU,
    nn.Softplus,
    nn.Mish,
    nn.Hardtanh,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Softsign,
    nn.Tanhshrink,
    nn.LogSigmoid,
    nn.Identity,
)

# ("linear", weight name, bias name or None) | ("act", module) | ("flatten", start, end)
# | ("dropout", p): one step of the stacked forward.
_Op = tuple[Any, ...]


def _stacked_plan(
    template: nn.Module, param_names: set[str], buffer_names: set[str]
) -> list[_Op] | None:
    """The stacked forward of a plain chain of modules, or ``None`` (use vmap).

    The chain is ``template`` itself or (nested) :class:`torch.nn.Sequential`\\ s
    of :class:`~torch.nn.Linear`, elementwise activations, :class:`~torch.nn.Flatten`,
    :class:`~torch.nn.Dropout` and :class:`~torch.nn.Identity`. Exact types only:
    a subclass may override ``forward``.
    """
    if buffer_names:
        return None
    plan: list[_Op] = []

    def walk(module: nn.Module, prefix: str) -> bool:
        kind = type(module)
        if kind is nn.Sequential:
            return all(walk(child, f"{prefix}{name}.") for name, child in module.named_children())
        if kind is nn.Linear:
            bias = f"{prefix}bias" if module.bias is not None else None
            plan.append(("linear", f"{prefix}weight", bias))
            return True
        if kind is nn.Flatten:
            plan.append(("flatten", module.start_dim, module.end_dim))
            return True
        if isinstance(module, nn.Dropout) and kind is nn.Dropout:
            plan.append(("dropout", module.p))
            return True
        if kind in _ELEMENTWISE:
            plan.append(("act", module))
            return True
        return False

    if not walk(template, ""):
        return None
    used = {name for op in plan if op[0] == "linear" for name in op[1:] if name is not None}
    if used != param_names:
        return None  # a parameter the chain does not account for
    return plan


def _run_plan(
    plan: list[_Op], params: Mapping[str, Tensor], inputs: Tensor, in_out: bool
) -> Tensor:
    h = inputs
    after_linear = False
    for op in plan:
        if op[0] == "linear":
            weight = params[op[1]] if in_out else params[op[1]].transpose(1, 2)  # (K, in, out)
            lead = h.shape[1:-1]
            flat = h if h.dim() == 3 else h.reshape(h.shape[0], -1, h.shape[-1])
            if op[2] is None:
                out = torch.bmm(flat, weight)
            else:
                out = torch.baddbmm(params[op[2]].unsqueeze(1), flat, weight)
            h = out if h.dim() == 3 else out.reshape(h.shape[0], *lead, out.shape[-1])
            after_linear = True
            continue
        elif op[0] == "act":
            # ReLU in place on a fresh baddbmm output (which no backward reads):
            # the same values, one activation tensor fewer per layer.
            fresh = after_linear and h._base is None
            h = torch.relu_(h) if type(op[1]) is nn.ReLU and fresh else op[1](h)
        elif op[0] == "flatten":
            # a member's dims (B, ...) are the stacked dims (K, B, ...) shifted by one
            start, end = op[1], op[2]
            h = h.flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)
        after_linear = False
    return h  # dropout: only on this path when it drops nothing


# --------------------------------------------------------------------------- stacked backward

_aten = torch.ops.aten
_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946

# The derivative of an elementwise module as the one kernel autograd runs for it:
# ``backward(grad of the output, saved)``, where ``saved`` is the module's
# output (``True``) or input (``False``).
_Derivative = tuple[bool, Callable[[Tensor, Tensor], Tensor]]


def _derivative(module: nn.Module) -> _Derivative | None:
    """The hand-written derivative of an elementwise module, or ``None`` (autograd's)."""
    kind, m = type(module), module
    if kind is nn.ReLU:
        return True, lambda g, a: _aten.threshold_backward(g, a, 0)
    if kind is nn.Tanh:
        return True, _aten.tanh_backward
    if kind is nn.Sigmoid:
        return True, _aten.sigmoid_backward
    if kind in (nn.ReLU6, nn.Hardtanh):
        low, high = m.min_val, m.max_val
        return False, lambda g, z: _aten.hardtanh_backward(g, z, low, high)
    if kind is nn.LeakyReLU:
        slope = m.negative_slope
        return False, lambda g, z: _aten.leaky_relu_backward(g, z, slope, False)
    if kind is nn.GELU:
        approximate = m.approximate
        return False, lambda g, z: _aten.gelu_backward(g, z, approximate=approximate)
    if kind is nn.ELU:
        alpha = m.alpha
        return False, lambda g, z: _aten.elu_backward(g, alpha, 1, 1, False, z)
    if kind is nn.CELU:
        celu_alpha = cast(float, m.alpha)
        return False, lambda g, z: _aten.elu_backward(g, celu_alpha, 1, 1 / celu_alpha, False, z)
    if kind is nn.SELU:
        return False, lambda g, z: _aten.elu_backward(g, _SELU_ALPHA, _SELU_SCALE, 1, False, z)
    if kind is nn.Softplus:
        beta, threshold = m.beta, m.threshold
        return False, lambda g, z: _aten.softplus_backward(g, z, beta, threshold)
    simple: dict[type[nn.Module], Callable[[Tensor, Tensor], Tensor]] = {
        nn.SiLU: _aten.silu_backward,
        nn.Mish: _aten.mish_backward,
        nn.Hardswish: _aten.hardswish_backward,
        nn.Hardsigmoid: _aten.hardsigmoid_backward,
    }
    if kind in simple:
        return False, simple[kind]
    return None


# in place on a fresh matrix product's output, for the derivatives that read the output
_IN_PLACE: dict[type[nn.Module], Callable[[Tensor], Tensor]] = {
    nn.ReLU: torch.relu_,
    nn.Tanh: torch.tanh_,
    nn.Sigmoid: torch.sigmoid_,
}


def _out_of_place(module: nn.Module) -> nn.Module:
    """``module`` computing into a new tensor (a copy with ``inplace=False``)."""
    if getattr(module, "inplace", False):
        module = copy.copy(module)
        module.inplace = False  # type: ignore[assignment]
    return module


def _bmm(a: Tensor, b: Tensor, bias: Tensor | None = None) -> Tensor:
    """``bias + a @ b`` over the member dimension, for the products :class:`_Backprop`
    runs transposed.

    A single member's product runs as a batch of two (the same matrices twice,
    as stride-0 views, no copy): torch computes a batch of one as one matrix
    product, which the BLAS may split across threads and round differently
    (seen for a few narrow shapes) from a batch's products, each on one thread.
    A member then gets the same bits in a fused run of any K.
    """
    if a.shape[0] == 1:
        a, b = a.expand(2, -1, -1), b.expand(2, -1, -1)
        bias = None if bias is None else bias.expand(2, -1, -1)
        return (torch.bmm(a, b) if bias is None else torch.baddbmm(bias, a, b))[:1]
    return torch.bmm(a, b) if bias is None else torch.baddbmm(bias, a, b)


class _Backprop:
    """A stacked chain's forward and backward written by hand (the stacked path's step).

    The forward runs the plan's :func:`torch.baddbmm`\\ s over ``(K, in, out)``
    weights and keeps what the backward reads: each Linear's input, each
    activation's output or input. The backward is, per Linear,
    ``grad_weight = input^T @ grad`` and ``grad_bias = grad.sum(rows)`` into
    gradient buffers kept from step to step, ``grad_input = grad @ weight^T``;
    per activation the kernel autograd would run for it (``threshold_backward``
    for ReLU, ``gelu_backward``, ``tanh_backward``, ...; an activation without
    one, e.g. Softsign, is differentiated by autograd alone). These are the
    operations autograd runs for the same graph, without building it.

    Args:
        plan: the chain (:func:`_stacked_plan`).
        params: the live stacked parameters, Linear weights as ``(K, in, out)``;
            updated in place between steps.
        names: the parameters' order, that of the returned gradients.
    """

    def __init__(self, plan: list[_Op], params: Mapping[str, Tensor], names: list[str]) -> None:
        weights = {op[1] for op in plan if op[0] == "linear"}
        # A weight's gradient (K, in, out) is computed as its transpose (K, out, in)
        # when out < in (see _Backprop.backward): its buffer is laid out so.
        self.grads = {
            n: torch.empty_like(
                params[n].transpose(1, 2), memory_format=torch.contiguous_format
            ).transpose(1, 2)
            if n in weights and params[n].shape[2] < params[n].shape[1]
            else torch.empty_like(params[n])
            for n in names
        }
        self.grad_list = [self.grads[n] for n in names]
        # ("linear", weight, bias (K, 1, out) | None, grad weight, grad bias | None, input grad?)
        # | ("act", forward, in place | None, derivative | None) | ("flatten", start, end)
        self.ops: list[_Op] = []
        seen_linear = False
        for op in plan:
            if op[0] == "linear":
                bias = None if op[2] is None else params[op[2]].unsqueeze(1)
                grad_bias = None if op[2] is None else self.grads[op[2]]
                self.ops.append(
                    ("linear", params[op[1]], bias, self.grads[op[1]], grad_bias, seen_linear)
                )
                seen_linear = True
            elif op[0] == "act" and type(op[1]) is not nn.Identity:
                module = _out_of_place(op[1])
                self.ops.append(("act", module, _IN_PLACE.get(type(module)), _derivative(module)))
            elif op[0] == "flatten":
                self.ops.append(op)
            # Identity, and dropout that drops nothing: no op

    def forward(self, inputs: Tensor) -> tuple[Tensor, list[tuple[Any, ...]]]:
        """Every member's outputs, and the tape :meth:`backward` reads."""
        tape: list[tuple[Any, ...]] = []
        h = inputs
        fresh = False  # h is a matrix product's output that nothing else reads
        for op in self.ops:
            kind = op[0]
            if kind == "linear":
                weight, bias = op[1], op[2]
                shape = h.shape
                flat = h if h.dim() == 3 else h.reshape(shape[0], -1, shape[-1])
                if weight.shape[2] < flat.shape[1]:
                    # fewer outputs than rows (a classifier head): the product as its
                    # transpose, W^T x^T, whose wide rows CPU kernels run several times faster
                    out = _bmm(weight.mT, flat.mT, None if bias is None else bias.mT).mT
                else:
                    out = (
                        torch.bmm(flat, weight)
                        if bias is None
                        else torch.baddbmm(bias, flat, weight)
                    )
                tape.append((op, flat, shape))
                h = out if h.dim() == 3 else out.reshape(*shape[:-1], out.shape[-1])
                fresh = True
            elif kind == "act":
                module, in_place, derivative = op[1], op[2], op[3]
                if derivative is None:
                    # no kernel of its own: autograd differentiates this activation alone
                    z = h.detach().requires_grad_()
                    with torch.enable_grad():
                        a = module(z)
                    tape.append((op, z, a))
                    h = a.detach()
                elif derivative[0]:
                    h = in_place(h) if fresh and in_place is not None else module(h)
                    tape.append((op, h))
                else:
                    tape.append((op, h))
                    h = module(h)
                fresh = False
            else:  # flatten: a member's dims (B, ...) are the stacked dims shifted by one
                start, end = op[1], op[2]
                tape.append((op, h.shape))
                h = h.flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end)
        return h, tape

    def backward(self, grad: Tensor, tape: list[tuple[Any, ...]]) -> list[Tensor]:
        """The parameters' gradients (in ``names`` order; buffers overwritten by the
        next call) from the outputs' gradient ``grad`` and :meth:`forward`'s tape."""
        g = grad
        for entry in reversed(tape):
            op = entry[0]
            kind = op[0]
            if kind == "linear":
                weight, grad_weight, grad_bias, needs_input = op[1], op[3], op[4], op[5]
                flat, shape = entry[1], entry[2]
                gflat = g if g.dim() == 3 else g.reshape(shape[0], -1, g.shape[-1])
                # each product in the orientation whose result has the wider rows
                if grad_weight.stride(1) == 1:  # laid out (K, out, in): out < in
                    grad_weight.mT.copy_(_bmm(gflat.mT, flat))
                else:
                    torch.bmm(flat.transpose(1, 2), gflat, out=grad_weight)
                if grad_bias is not None:
                    torch.sum(gflat, 1, out=grad_bias)
                if not needs_input:
                    break  # the first Linear: nothing before it has parameters
                if weight.shape[1] < gflat.shape[1]:
                    g = _bmm(weight, gflat.mT).mT
                else:
                    g = torch.bmm(gflat, weight.transpose(1, 2))
                if len(shape) != 3:
                    g = g.reshape(shape)
            elif kind == "act":
                derivative = op[3]
                if derivative is None:
                    (g,) = torch.autograd.grad(entry[2], entry[1], g)
                else:
                    g = derivative[1](g, entry[1])
            else:
                g = g.reshape(entry[1])
        return self.grad_list


def _loss_grad(
    criterion: Callable[[Tensor, Any], Tensor], outputs: Tensor, targets: Any
) -> tuple[Tensor, Tensor]:
    """``(K,)`` losses of a batched ``criterion`` and their sum's gradient in ``outputs``
    (autograd through the criterion alone)."""
    leaf = outputs.detach().requires_grad_()
    with torch.enable_grad():
        loss = criterion(leaf, targets)
        if not loss.requires_grad:  # a criterion that does not read the outputs
            return loss, torch.zeros_like(outputs)
        (grad,) = torch.autograd.grad(loss.sum(), leaf, allow_unused=True)
    return loss.detach(), torch.zeros_like(outputs) if grad is None else grad


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


class FusedOptimizer(ABC):
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

    @abstractmethod
    def set_momentum(self, values: Tensor) -> None:
        """Set every member's momentum (SGD) or ``beta1`` (the Adam family) for the
        next step: a (K,) tensor, as a schedule that cycles momentum gives it."""

    def _cols(self, values: Tensor) -> list[Tensor]:
        """``values`` (K,) on the params' device, one broadcastable view per param."""
        cache: dict[tuple[torch.dtype, int], Tensor] = {}
        cols = []
        for p in self.params:
            key = (p.dtype, p.dim())
            v = cache.get(key)
            if v is None:
                v = values.to(device=p.device, dtype=p.dtype)
                v = cache[key] = v.view(-1, *([1] * (p.dim() - 1)))
            cols.append(v)
        return cols

    def _state(self) -> list[Tensor]:
        """The per-member state tensors a frozen member keeps (besides its params)."""
        return []

    def member_state(self, k: int) -> dict[str, Any]:
        """Member ``k``'s slice of the optimizer state (cloned), for a checkpoint.

        Returns:
            ``{"step": float, ...}`` plus, per state kind, a list with member
            ``k``'s tensor of each param (in ``params`` order): SGD
            ``momentum_buffer`` and ``momentum`` (whether the buffers are in
            use), Adam ``exp_avg`` and ``exp_avg_sq``.
        """
        if not 0 <= k < self.num_members:
            raise IndexError(f"k must be in [0, {self.num_members}), got {k}")
        state: dict[str, Any] = {"step": float(self.steps[k])}
        for name, tensors in self._named_state().items():
            state[name] = [
                t[k].detach().clone(memory_format=torch.contiguous_format) for t in tensors
            ]
        return state

    def load_member_state(self, k: int, state: Mapping[str, Any]) -> None:
        """Put :meth:`member_state`'s slice back into member ``k`` (the others untouched).

        Raises:
            OptimizerError: a state of another optimizer kind or other shapes.
        """
        if not 0 <= k < self.num_members:
            raise IndexError(f"k must be in [0, {self.num_members}), got {k}")
        named = self._named_state()
        missing = [n for n in ("step", *named) if n not in state]
        if missing:
            raise OptimizerError(
                f"the state has no {missing[0]!r}: it is not a {type(self).__name__} state"
            )
        for name, tensors in named.items():
            saved = list(state[name])
            if len(saved) != len(tensors):
                raise OptimizerError(
                    f"the state's {name} holds {len(saved)} tensors, this optimizer has "
                    f"{len(tensors)} params"
                )
            for i, (t, v) in enumerate(zip(tensors, saved, strict=True)):
                if tuple(v.shape) != tuple(t.shape[1:]):
                    raise OptimizerError(
                        f"the state's {name}[{i}] has shape {tuple(v.shape)}, "
                        f"expected {tuple(t.shape[1:])}"
                    )
                t[k].copy_(v)
        steps = self.steps.clone()
        steps[k] = float(state["step"])
        self.steps = steps

    def _named_state(self) -> dict[str, list[Tensor]]:
        """Every per-member state tensor list by name (a checkpoint's keys)."""
        return {}

    def step(
        self, grads: Sequence[Tensor], active: Tensor | None = None, *, lr: Tensor | None = None
    ) -> None:
        """Apply one update to every active member.

        The update runs on torch's multi-tensor ``torch._foreach_*`` ops over all
        the stacked params at once.

        Args:
            grads: one gradient per param, same shapes.
            active: (K,) bool, ``None`` for all; members set ``False`` are frozen
                (weights, state and step count untouched, bit for bit).
            lr: the per-member LRs of this step as a (K,) tensor already on the
                params' device (no host-to-device copy); ``None`` uses :attr:`lr`.
        """
        grads = list(grads)
        if len(grads) != len(self.params):
            raise OptimizerError(f"expected {len(self.params)} gradients, got {len(grads)}")
        if active is None:
            # The step count lives on the host: the bias corrections are float64 scalars
            # per member, like torch's (which reads its step counter with .item()).
            self.steps = self.steps + 1.0
            with torch.no_grad():
                self._update(grads, lr)
            return
        mask = active.to(self.device)
        self.steps = self.steps + active.to("cpu", torch.float64)
        tensors = [*self.params, *self._state()]
        with torch.no_grad():
            # Update every member in place, then put the frozen ones back: their
            # values (NaN gradients included) never reach what they keep.
            kept = [t.clone() for t in tensors]
            self._update(grads, lr)
            for t, old in zip(tensors, kept, strict=True):
                t.copy_(torch.where(mask.view(-1, *([1] * (t.dim() - 1))), t, old))

    @abstractmethod
    def _update(self, grads: list[Tensor], lr: Tensor | None) -> None:
        """One update of every member's params and state from ``grads``, in place."""


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
        # Zeros, so that a member's first step ``b = momentum * 0 + d`` is torch's ``b = d``.
        self.momentum_buffers: list[Tensor] = [torch.zeros_like(p) for p in self.params]
        self._momentum = bool((self.momentum != 0).any())
        self._momentum_cols = self._cols(self.momentum)

    def set_momentum(self, values: Tensor) -> None:
        self.momentum = values
        # the buffers start at zero: a member that had no momentum so far starts it as torch would
        self._momentum = self._momentum or bool((values != 0).any())
        self._momentum_cols = self._cols(values)

    def _state(self) -> list[Tensor]:
        return self.momentum_buffers if self._momentum else []

    def _named_state(self) -> dict[str, list[Tensor]]:
        return {"momentum_buffer": self.momentum_buffers}

    def member_state(self, k: int) -> dict[str, Any]:
        return {**super().member_state(k), "momentum": self._momentum}

    def load_member_state(self, k: int, state: Mapping[str, Any]) -> None:
        super().load_member_state(k, state)
        # the buffers moved only while some member had a momentum: so they do again
        self._momentum = self._momentum or bool(state.get("momentum", False))

    def _update(self, grads: list[Tensor], lr: Tensor | None) -> None:
        params = self.params
        d = (
            torch._foreach_add(grads, params, alpha=self.weight_decay)
            if self.weight_decay
            else grads
        )
        if self._momentum:
            bufs, m = self.momentum_buffers, self._momentum_cols
            torch._foreach_mul_(bufs, m)
            torch._foreach_add_(bufs, d)
            if self.nesterov:
                d = torch._foreach_add(d, torch._foreach_mul(bufs, m))
            else:
                d = bufs
        torch._foreach_addcmul_(params, d, self._cols(self.lr if lr is None else lr), value=-1)


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
        self._beta1_weight = self._cols(1 - self.beta1)

    def set_momentum(self, values: Tensor) -> None:
        self.beta1 = values
        self._beta1_weight = self._cols(1 - values)

    def _state(self) -> list[Tensor]:
        return [*self.exp_avgs, *self.exp_avg_sqs]

    def _named_state(self) -> dict[str, list[Tensor]]:
        return {"exp_avg": self.exp_avgs, "exp_avg_sq": self.exp_avg_sqs}

    def _update(self, grads: list[Tensor], lr: Tensor | None) -> None:
        del lr  # the step sizes are float64 on the host, from self.lr, like torch's
        params, wd = self.params, self.weight_decay
        # A frozen member that never stepped has t = 0 (a division by zero): its
        # values are computed and then put back by the mask.
        steps = self.steps
        coefs = torch.stack(
            [
                self.lr / (1 - self.beta1**steps),  # step size
                (1 - self.beta2**steps) ** 0.5,  # bias_correction2_sqrt
                1 - self.lr * wd,  # AdamW's decay factor
            ]
        ).to(self.device, self.params[0].dtype)  # one host-to-device copy per step
        step_size, bias_correction2_sqrt, decay = (self._cols(c) for c in coefs)
        if wd != 0:
            if self.decoupled:
                torch._foreach_mul_(params, decay)
            else:
                grads = list(torch._foreach_add(grads, params, alpha=wd))
        torch._foreach_lerp_(self.exp_avgs, grads, self._beta1_weight)
        torch._foreach_mul_(self.exp_avg_sqs, self.beta2)
        torch._foreach_addcmul_(self.exp_avg_sqs, grads, grads, value=1 - self.beta2)
        denom = torch._foreach_sqrt(self.exp_avg_sqs)
        torch._foreach_div_(denom, bias_correction2_sqrt)
        torch._foreach_add_(denom, self.eps)
        update = torch._foreach_div(self.exp_avgs, denom)
        torch._foreach_mul_(update, step_size)
        torch._foreach_sub_(params, update)


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


# --------------------------------------------------------------------------- batched loss


class _BatchedCrossEntropy:
    """Cross-entropy of K members at once: ``(K, B, C)`` logits, ``(K, B)`` class
    indices -> the ``(K,)`` per-member means, each as :func:`torch.nn.functional.cross_entropy`
    gives it for its member (rows whose target is ``ignore_index`` left out of the mean).

    :meth:`prepare` does the targets' part once for a chunk of steps; a step is
    then one ``log_softmax`` over the class dimension of the transposed logits
    (torch's kernel is slow on the CPU over a small last dimension), a gather
    and a masked mean.
    """

    def __init__(self, ignore_index: int) -> None:
        self.ignore_index = ignore_index

    def prepare(self, targets: Tensor, dtype: torch.dtype) -> tuple[Tensor, ...] | None:
        """``(index, valid, count, scale, -scale)`` for targets shaped ``(..., K, B)``,
        or ``None`` when they are not class indices (then the criterion is vmapped);
        ``valid``, ``count`` and ``scale`` (``valid / count``, shaped ``(..., K, 1, B)``)
        in the logits' ``dtype``."""
        if targets.is_floating_point() or targets.is_complex() or targets.dim() < 2:
            return None
        valid = targets != self.ignore_index
        index = torch.where(valid, targets, 0).unsqueeze(-2)  # (..., K, 1, B)
        weights = valid.to(dtype)
        count = weights.sum(-1)
        scale = (weights / count.unsqueeze(-1)).unsqueeze(-2)
        return index, weights, count, scale, scale.neg()

    def __call__(self, logits: Tensor, prepared: tuple[Tensor, ...]) -> Tensor:
        index, valid, count = prepared[:3]
        log_probs = torch.log_softmax(logits.transpose(1, 2), 1)  # (K, C, B)
        picked = log_probs.gather(1, index).squeeze(1)  # (K, B)
        return -(picked * valid).sum(-1) / count

    def loss_and_grad(self, logits: Tensor, prepared: tuple[Tensor, ...]) -> tuple[Tensor, Tensor]:
        """The ``(K,)`` losses and the gradient of their sum in ``logits``:
        ``(softmax(logits) - onehot(targets)) * valid / count`` per row, written
        by hand (no autograd), as a ``(K, B, C)`` view."""
        index, valid, count, scale, neg_scale = prepared
        log_probs = torch.log_softmax(logits.transpose(1, 2), 1)  # (K, C, B)
        picked = log_probs.gather(1, index).squeeze(1)  # (K, B)
        loss = -(picked * valid).sum(-1) / count
        grad = log_probs.exp_().mul_(scale)  # the softmax, scaled, in place
        grad.scatter_add_(1, index, neg_scale)  # minus the one-hot, scaled
        return loss, grad.transpose(1, 2)


def _batched_accuracy(outputs: Tensor, targets: Tensor) -> Tensor:
    """The built-in ``accuracy`` of K members at once: ``(K, N, C)`` logits, ``(K, N)``
    class indices -> ``(K,)``; each member's value as ``accuracy`` gives it."""
    return (outputs.argmax(-1) == targets).to(outputs.dtype).mean(-1)


def _batched_metric(metric_fn: MetricFn) -> MetricFn:
    """``metric_fn`` over K members: the built-in ``accuracy`` batched by hand (no
    ``vmap`` overhead) for ``(K, N, C)`` outputs, anything else vmapped. The outputs
    are made contiguous first (an arg-max over a strided class dimension is slow)."""
    from clr.workloads._builtin import accuracy

    vmapped = torch.vmap(metric_fn)

    def metric(outputs: Any, targets: Any) -> Tensor:
        if isinstance(outputs, Tensor):
            outputs = outputs.contiguous()
            if (
                metric_fn is accuracy
                and outputs.dim() == 3
                and isinstance(targets, Tensor)
                and targets.shape == outputs.shape[:2]
            ):
                return _batched_accuracy(outputs, targets)
        result: Tensor = vmapped(outputs, targets)
        return result

    return metric


def _batched_loss(criterion: LossFn) -> _BatchedCrossEntropy | None:
    """The batched form of a known criterion, or ``None`` (the criterion is vmapped).

    Known: :func:`torch.nn.functional.cross_entropy`, the built-in workloads'
    ``cross_entropy`` and a :class:`~torch.nn.CrossEntropyLoss` with its
    defaults (``reduction="mean"``, no ``weight``, no label smoothing).
    """
    from clr.workloads._builtin import cross_entropy

    if isinstance(criterion, nn.CrossEntropyLoss):
        if (
            type(criterion) is not nn.CrossEntropyLoss
            or criterion.weight is not None
            or criterion.label_smoothing != 0
            or criterion.reduction != "mean"
        ):
            return None
        return _BatchedCrossEntropy(criterion.ignore_index)
    if criterion is nn.functional.cross_entropy or criterion is cross_entropy:
        return _BatchedCrossEntropy(-100)
    return None


# --------------------------------------------------------------------------- range test


def _member_values(name: str, value: float | Sequence[float], k: int) -> list[float]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return [float(value)] * k
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        raise RangeTestError(f"{name} must be a number or {k} numbers, got {value!r}")
    values = list(value)
    if len(values) != k:
        raise RangeTestError(f"{name} must be one number or {k} numbers, got {len(values)}")
    return values


def _no_preparation(_targets: Tensor) -> None:
    return None


_PREFETCH = 4  # at most this many steps of batches are stacked at once


def _stack_inputs(values: list[Any], name: str, error: type[Exception] = RangeTestError) -> Tensor:
    """The members' batches (one tensor each) stacked; ``error`` says why they cannot be."""
    if not all(isinstance(v, Tensor) for v in values):
        raise error(f"fused {name} must be tensors (one per member); use batch_fn=")
    shapes = {tuple(v.shape) for v in values}
    if len(shapes) > 1:
        raise error(
            f"the members' {name} must have one shape to be stacked, got {sorted(shapes)} "
            "(a loader's last partial batch? use drop_last=True)"
        )
    return torch.stack(values)


class FusedRangeTest:
    """K LR range tests of one architecture run as one fused loop.

    Each member has its own initial weights (``models[k]``), data order
    (``loaders[k]``), LR sweep (``start_lr`` / ``end_lr`` may differ per member),
    optimizer state, smoothed loss and divergence stop, and its
    :class:`~clr.RangeTestResult` means what ``RangeTest(models[k], optimizer,
    criterion).run(loaders[k], ...)`` returns for a fresh optimizer made by
    :func:`clr.make_optimizer` with the same arguments: the same ``lrs`` (from
    :func:`clr.sweep_lrs`), the same losses to float tolerance (a batched matrix
    product may round differently from a single one), the same smoothing and
    stop rules (:class:`clr.range_test._Curve`). A member that diverges or
    whose loss is not finite is masked: its weights and optimizer state are
    frozen and its curve ends, while the others go on bit for bit as they would
    without it; the loop ends when every member has stopped.

    As with :class:`~clr.RangeTest` the losses stay on the device between checks
    (one host sync per ``check_every`` steps for all members), and the caller's
    state is left as found: the models are never changed (the fused copy is
    stacked from them), and the global RNG states and the loaders' epochs
    (``set_epoch``) are restored after the run.

    Not supported (use :class:`~clr.RangeTest`): AMP, gradient accumulation,
    several param groups, validation passes. A model ``vmap`` cannot run is
    refused by :func:`fusable` before running.

    Args:
        models: K >= 1 models of one architecture (see :class:`FusedModel`).
        optimizer: ``sgd``, ``adam`` or ``adamw``, as :func:`clr.make_optimizer`.
        criterion: ``criterion(outputs, targets) -> scalar loss`` for one member.
            Cross-entropy (:func:`torch.nn.functional.cross_entropy`, the built-in
            workloads' and a default :class:`~torch.nn.CrossEntropyLoss`) is
            computed for all members in one call on the stacked path; any other
            criterion is vmapped over the members.
        momentum, weight_decay, nesterov, betas, eps: the optimizer's
            hyperparameters, as :func:`make_fused_optimizer` (``momentum`` may be
            K numbers).
        metric_fn: optional ``metric_fn(outputs, targets) -> 0-dim tensor`` for
            one member (vmapped), recorded per step without a host sync.
        batch_fn: turns one loader item into ``(inputs, targets)`` tensors.
        device: where the stacked weights and batches go; defaults to the
            device of ``models[0]``'s first parameter.
        randomness: vmap's randomness (see :class:`FusedModel`); with dropout a
            member's masks differ from a separate run's, so its curve does too.
        allow_stacked: ``False`` runs the vmap path even for a model the stacked
            path takes (see :attr:`FusedModel.path`).

    Attributes:
        path: after :meth:`run`, the path the members ran on, ``"stacked"`` or
            ``"vmap"`` (also in each result's ``metadata["fused"]["path"]``).

    Example:
        >>> import torch
        >>> from clr.workloads import build_workload
        >>> ws = [build_workload("digits_mlp", seed=s) for s in range(4)]
        >>> test = FusedRangeTest([w.model for w in ws], "sgd", ws[0].loss_fn)
        >>> results = test.run([w.train_loader for w in ws], num_iter=40)
        >>> [r.steps_run <= 40 for r in results]
        [True, True, True, True]
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        optimizer: Literal["sgd", "adam", "adamw"] | str,
        criterion: LossFn,
        *,
        momentum: float | Sequence[float] = 0.9,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        metric_fn: MetricFn | None = None,
        batch_fn: BatchFn | None = None,
        device: str | torch.device | None = None,
        randomness: Literal["different", "same", "error"] = "different",
        allow_stacked: bool = True,
    ) -> None:
        self.models = list(models)
        if not self.models:
            raise RangeTestError("models must hold at least one model, got none")
        if optimizer not in OPTIMIZERS:
            raise OptimizerError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
        self.optimizer = optimizer
        self.criterion = criterion
        self.optimizer_kwargs: dict[str, Any] = {
            "momentum": momentum if isinstance(momentum, int | float) else list(momentum),
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "betas": betas,
            "eps": eps,
        }
        self.metric_fn = metric_fn
        self.batch_fn: BatchFn = batch_fn or (lambda b: split_batch(b, RangeTestError))
        self._default_batches = batch_fn is None
        if device is None:
            first = next(self.models[0].parameters(), None)
            device = first.device if first is not None else torch.device("cpu")
        self.device = torch.device(device)
        self.randomness = randomness
        self.allow_stacked = allow_stacked
        self.path: Literal["stacked", "vmap"] | None = None

    @property
    def num_members(self) -> int:
        """K, the number of members."""
        return len(self.models)

    def run(
        self,
        loaders: Sequence[Iterable[Any]],
        *,
        start_lr: float | Sequence[float] = 1e-7,
        end_lr: float | Sequence[float] = 10.0,
        num_iter: int = 100,
        sweep: Sweep = "exp",
        smoothing: float = 0.95,
        diverge_th: float = 5.0,
        min_steps: int | None = None,
        check_every: int = 8,
        callback: Callable[[int, RangeTestProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[RangeTestResult]:
        """Sweep every member's LR at once and return one result per member.

        Args:
            loaders: K iterables of batches, ``loaders[k]`` feeding member ``k``
                (each restarted when exhausted); the members' batches must have
                one shape, so that they stack.
            start_lr: first LR of the sweep: one for all, or one per member.
            end_lr: last LR of the sweep: one for all, or one per member.
            num_iter, sweep, smoothing, diverge_th, min_steps, check_every: as
                :meth:`clr.RangeTest.run`, for every member.
            callback: ``callback(k, progress)`` after a check added points to member ``k``.
            should_stop: polled at every check; ``True`` ends every running member
                as ``cancelled``.

        Returns:
            K :class:`~clr.RangeTestResult`\\ s, in the members' order; ``seconds``
            is the fused loop's wall time (shared by all), and ``metadata`` holds
            ``{"fused": {"member": k, "members": K, "path": "stacked" | "vmap"}}``.

        Raises:
            RangeTestError: on impossible arguments, a loader with no batches or
                batches that do not stack.
        """
        k_members = self.num_members
        loaders = list(loaders)
        if len(loaders) != k_members:
            raise RangeTestError(f"loaders must hold {k_members} loaders, got {len(loaders)}")
        starts = _member_values("start_lr", start_lr, k_members)
        ends = _member_values("end_lr", end_lr, k_members)
        for s, e in zip(starts, ends, strict=True):
            _check_sweep(s, e, num_iter, sweep)
        if not (0 <= smoothing < 1):
            raise RangeTestError(f"smoothing must be in [0, 1), got {smoothing!r}")
        if not (math.isfinite(diverge_th) and diverge_th > 1):
            raise RangeTestError(f"diverge_th must be a finite number > 1, got {diverge_th!r}")
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise RangeTestError(f"check_every must be an integer >= 1, got {check_every!r}")
        if min_steps is None:
            min_steps = max(10, num_iter // 10)
        sweeps: dict[tuple[float, float], list[float]] = {}  # members sharing a sweep share it
        for s, e in zip(starts, ends, strict=True):
            if (s, e) not in sweeps:
                sweeps[s, e] = sweep_lrs(s, e, num_iter, sweep).tolist()
        lr_lists = [sweeps[s, e] for s, e in zip(starts, ends, strict=True)]
        curves = [_Curve(smoothing, diverge_th, min_steps) for _ in range(k_members)]

        rng = _RngState.take(loaders)
        try:
            seconds = self._sweep(loaders, lr_lists, curves, check_every, callback, should_stop)
        finally:
            rng.restore()

        results = []
        for k, curve in enumerate(curves):
            if curve.stop is None:
                curve.stop = "completed"
                curve.detail = f"swept all {len(curve.losses)} steps up to lr={ends[k]:.3g}"
            results.append(
                RangeTestResult(
                    lrs=np.asarray(curve.lrs, dtype=np.float64),
                    losses=np.asarray(curve.losses, dtype=np.float64),
                    smoothed_losses=np.asarray(curve.smoothed, dtype=np.float64),
                    accuracies=np.asarray(curve.accuracies, dtype=np.float64)
                    if self.metric_fn is not None
                    else None,
                    start_lr=starts[k],
                    end_lr=ends[k],
                    num_iter=num_iter,
                    sweep=sweep,
                    smoothing=smoothing,
                    diverge_th=diverge_th,
                    stop_reason=curve.stop,
                    stop_detail=curve.detail,
                    device=str(self.device),
                    seconds=seconds,
                    metadata={"fused": {"member": k, "members": k_members, "path": self.path}},
                )
            )
        return results

    def _sweep(
        self,
        loaders: list[Iterable[Any]],
        lr_lists: list[list[float]],
        curves: list[_Curve],
        check_every: int,
        callback: Callable[[int, RangeTestProgress], None] | None,
        should_stop: Callable[[], bool] | None,
    ) -> float:
        device, criterion, metric_fn, batch_fn = (
            self.device,
            self.criterion,
            self.metric_fn,
            self.batch_fn,
        )
        k_members = self.num_members
        num_iter = len(lr_lists[0])
        fused = FusedModel(
            self.models, randomness=self.randomness, allow_stacked=self.allow_stacked
        ).train()
        # On the stacked path a Linear's weight is kept as (K, in, out), the layout
        # baddbmm reads and writes its gradient in (no transposed copies per step).
        source = fused.stacked_params() if fused.path == "stacked" else fused.params
        params = {n: p.to(device, copy=True) for n, p in source.items()}
        buffers = {n: b.to(device, copy=True) for n, b in fused.buffers.items()}
        names = list(params)
        lr_table = torch.tensor(lr_lists, dtype=torch.float64)  # (K, num_iter), host
        optimizer = make_fused_optimizer(
            self.optimizer, [params[n] for n in names], lr=lr_table[:, 0], **self.optimizer_kwargs
        )
        # The whole LR table on the device once: a step reads its row, no copy.
        dtype = params[names[0]].dtype if names else torch.float32
        lr_rows = lr_table.t().contiguous().to(device, dtype)  # (num_iter, K)
        self.path = fused.path
        step_fn: _StepFn
        prepare: Callable[[Tensor], Any]
        if fused.path == "stacked":
            step_fn, prepare = self._stacked_step(fused, params, names)
        else:
            prepare = _no_preparation

            def member_loss(
                p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor
            ) -> tuple[Tensor, Tensor]:
                outputs = fused.functional_forward(p, b, x)
                return criterion(outputs, y), outputs

            vstep = torch.vmap(
                grad_and_value(member_loss, has_aux=True), randomness=self.randomness
            )

            def step_fn(x: Any, y: Any, _prepared: Any) -> tuple[list[Tensor], Tensor, Any]:
                grads, (loss, outputs) = vstep(params, buffers, x, y)
                return [grads[name] for name in names], loss.detach(), outputs

        metric = _batched_metric(metric_fn) if metric_fn is not None else None

        batches = [_Cycle(loader, f"loaders[{k}]") for k, loader in enumerate(loaders)]
        shared = _SharedTensorBatches.take(loaders) if self._default_batches else None
        active = [True] * k_members
        mask: Tensor | None = None  # None while every member runs: no masking cost
        pending_loss: list[Tensor] = []
        pending_acc: list[Tensor] = []
        n = 0
        checked = 0
        j = size = 0  # the step within the prefetched chunk, the chunk's steps
        step_inputs: Sequence[Tensor] = ()
        step_targets: Sequence[Tensor] = ()
        step_prepared: Sequence[Any] = ()
        t0 = time.perf_counter()
        while n < num_iter and any(active):
            if j == size:
                # The batches up to the next check, in the order of a step at a time
                # (the loaders are read as before), stacked in one call each.
                size = min(check_every - (n - checked), num_iter - n, _PREFETCH)
                if shared is not None:
                    xs, ys = shared.take_chunk(size)
                else:
                    chunk = [batch_fn(next(c)) for _ in range(size) for c in batches]
                    xs = _stack_inputs([x for x, _ in chunk], "inputs")
                    ys = _stack_inputs([y for _, y in chunk], "targets")
                all_inputs = to_device(xs, device).view(size, k_members, *xs.shape[1:])
                all_targets = to_device(ys, device).view(size, k_members, *ys.shape[1:])
                prepared = prepare(all_targets)
                # every step's views at once (one unbind each, not a select per step)
                step_inputs, step_targets = all_inputs.unbind(0), all_targets.unbind(0)
                step_prepared = (
                    [None] * size
                    if prepared is None
                    else list(zip(*(t.unbind(0) for t in prepared), strict=True))
                )
                j = 0
            inputs, targets = step_inputs[j], step_targets[j]
            grads, loss, outputs = step_fn(inputs, targets, step_prepared[j])
            optimizer.lr = lr_table[:, n]
            optimizer.step(grads, mask, lr=lr_rows[n])
            pending_loss.append(loss)
            if metric is not None:
                with torch.no_grad():
                    pending_acc.append(metric(outputs.detach(), targets))
            j += 1
            n += 1
            if n - checked >= check_every or n == num_iter:
                self._check(
                    curves, active, pending_loss, pending_acc, lr_lists, checked, t0, callback
                )
                checked = n
                if should_stop is not None and any(active) and should_stop():
                    for k, curve in enumerate(curves):
                        if active[k]:
                            curve.stop = "cancelled"
                            curve.detail = f"cancelled after {len(curve.losses)} steps"
                            active[k] = False
                if not all(active):
                    mask = torch.tensor(active, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    def _stacked_step(
        self, fused: FusedModel, params: dict[str, Tensor], names: list[str]
    ) -> tuple[_StepFn, Callable[[Tensor], Any]]:
        """One step of every member on the stacked path (the forward and backward
        written by hand, :class:`_Backprop`; the (K,) losses and their gradient
        from one batched cross-entropy, or autograd through a vmapped criterion),
        and the targets' preparation for a chunk of steps."""
        assert fused._plan is not None
        backprop = _Backprop(fused._plan, params, names)
        dtype = params[names[0]].dtype if names else torch.float32
        batched = _batched_loss(self.criterion)
        vmapped = torch.vmap(self.criterion)

        def prepare(targets: Tensor) -> Any:
            return batched.prepare(targets, dtype) if batched is not None else None

        def step(x: Tensor, y: Tensor, prepared: Any) -> tuple[list[Tensor], Tensor, Tensor]:
            outputs, tape = backprop.forward(x)
            # (K,) losses, member k's from member k's weights only: the gradient of
            # their sum is every member's own gradient.
            if batched is not None and prepared is not None and outputs.dim() == 3:
                loss, grad = batched.loss_and_grad(outputs, prepared)
            else:
                loss, grad = _loss_grad(vmapped, outputs, y)
            return backprop.backward(grad, tape), loss, outputs

        return step, prepare

    @staticmethod
    def _check(
        curves: list[_Curve],
        active: list[bool],
        pending_loss: list[Tensor],
        pending_acc: list[Tensor],
        lr_lists: list[list[float]],
        start: int,
        t0: float,
        callback: Callable[[int, RangeTestProgress], None] | None,
    ) -> None:
        # The one host sync per chunk, for every member at once.
        losses = torch.stack(pending_loss).float().t().tolist()  # (K, chunk)
        accs = torch.stack(pending_acc).float().t().tolist() if pending_acc else None
        pending_loss.clear()
        pending_acc.clear()
        for k, curve in enumerate(curves):
            if not active[k]:
                continue
            lrs = lr_lists[k][start : start + len(losses[k])]
            kept = curve.extend(lrs, losses[k], accs[k] if accs is not None else None)
            if curve.stop is not None:
                active[k] = False
            if callback is not None and kept:
                callback(
                    k,
                    RangeTestProgress(
                        step=start + kept,
                        num_iter=len(lr_lists[k]),
                        start=start,
                        lrs=lrs[:kept],
                        losses=curve.losses[start : start + kept],
                        smoothed_losses=curve.smoothed[start : start + kept],
                        accuracies=curve.accuracies[start : start + kept]
                        if accs is not None
                        else None,
                        best_loss=curve.best,
                        elapsed=time.perf_counter() - t0,
                    ),
                )


class _SharedTensorBatches:
    """K :class:`~clr.workloads.TensorBatches` over one dataset, read as one gather.

    When every member's loader is a ``TensorBatches`` over equal ``x`` and ``y``
    (the built-in workloads under K seeds), member ``k``'s batch is
    ``x[perm_k[i * B:(i + 1) * B]]`` with its own permutation (its seed and
    epoch), exactly the rows its loader would slice: a chunk of steps is then
    one ``index_select`` of all members' rows, instead of K shuffled copies of
    the dataset per epoch, K slices per step and a stack. The loaders
    themselves are not advanced (their state is left as found).
    """

    def __init__(self, loaders: list[Any]) -> None:
        self.loaders = loaders
        self.x, self.y = loaders[0].x, loaders[0].y
        # per member: [epoch, next batch in it, that epoch's permutation]
        self.state: list[list[Any]] = [[lo.epoch, lo._start_batch, None] for lo in loaders]
        self._xs: Tensor | None = None
        self._ys: Tensor | None = None
        # the members' permutations of one epoch stacked (K, n), while they go in step
        self._perms: Tensor | None = None
        self._perms_epoch = -1

    @classmethod
    def take(cls, loaders: list[Iterable[Any]]) -> _SharedTensorBatches | None:
        from clr.workloads._batches import TensorBatches

        first = loaders[0]
        if not all(type(lo) is TensorBatches for lo in loaders):
            return None
        assert isinstance(first, TensorBatches)
        for lo in loaders:
            assert isinstance(lo, TensorBatches)
            if (
                len(lo) == 0
                or lo.batch_size != first.batch_size
                or (not lo.drop_last and lo.num_samples % lo.batch_size != 0)
                or not _same_tensor(lo.x, first.x)
                or not _same_tensor(lo.y, first.y)
            ):
                return None
        return cls(list(loaders))

    def _rows(self, k: int) -> Tensor:
        state, loader = self.state[k], self.loaders[k]
        if state[2] is None or state[1] >= len(loader):
            if state[2] is not None:
                state[0], state[1] = state[0] + 1, 0
            n = loader.num_samples
            state[2] = (
                loader._permutation(state[0])
                if loader.shuffle
                else torch.arange(n, device=loader.device)
            )
        bs = loader.batch_size
        i = state[1]
        state[1] = i + 1
        rows: Tensor = state[2][i * bs : (i + 1) * bs]
        return rows

    def _member_rows(self, k: int, size: int) -> Tensor:
        """Member ``k``'s rows of its next ``size`` batches, ``(size, B)``: one slice
        of its permutation when they lie in one epoch."""
        state, loader = self.state[k], self.loaders[k]
        bs = loader.batch_size
        if state[2] is not None and state[1] + size <= len(loader):
            i = state[1]
            state[1] = i + size
            rows: Tensor = state[2][i * bs : (i + size) * bs]
            return rows.view(size, bs)
        return torch.stack([self._rows(k) for _ in range(size)])

    def _rows_in_step(self, size: int) -> Tensor | None:
        """Every member's rows of its next ``size`` batches, step-major ``(size * K * B,)``,
        by one slice of the stacked permutations when the members are at the same
        batch of the same epoch (as members started together are) and the batches
        lie in it; ``None`` otherwise."""
        states, loaders = self.state, self.loaders
        epoch, i = states[0][0], states[0][1]
        for state, loader in zip(states, loaders, strict=True):
            if state[2] is None or state[0] != epoch or state[1] != i or i + size > len(loader):
                return None
        if self._perms is None or self._perms_epoch != epoch:
            self._perms = torch.stack([state[2] for state in states])
            self._perms_epoch = epoch
        for state in states:
            state[1] = i + size
        bs = loaders[0].batch_size
        block = self._perms[:, i * bs : (i + size) * bs]
        return block.view(len(states), size, bs).transpose(0, 1).reshape(-1)

    def take_chunk(self, size: int) -> tuple[Tensor, Tensor]:
        """The next ``size`` steps of every member: ``(size * K * B, ...)`` inputs and targets."""
        k_members = len(self.loaders)
        rows = self._rows_in_step(size)
        if rows is None:
            # (K, size, B) -> step-major (size, K, B): the order of a step at a time
            rows = torch.stack([self._member_rows(k, size) for k in range(k_members)], 1).view(-1)
        # Into buffers kept from chunk to chunk (a chunk's steps are done before the
        # next is read): no fresh allocation, and its page faults, per chunk.
        if self._xs is None or self._xs.shape[0] < rows.shape[0]:
            self._xs = self.x.new_empty((rows.shape[0], *self.x.shape[1:]))
            self._ys = self.y.new_empty((rows.shape[0], *self.y.shape[1:]))
        assert self._ys is not None
        xs = torch.index_select(self.x, 0, rows, out=self._xs[: rows.shape[0]])
        ys = torch.index_select(self.y, 0, rows, out=self._ys[: rows.shape[0]])
        bs = self.loaders[0].batch_size
        return xs.view(size * k_members, bs, *xs.shape[1:]), ys.view(
            size * k_members, bs, *ys.shape[1:]
        )


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    return a is b or (
        a.shape == b.shape
        and a.dtype == b.dtype
        and a.device == b.device
        and bool(torch.equal(a, b))
    )


class _RngState:
    """The global RNG states and the loaders' epochs, put back after a fused run."""

    def __init__(self, loaders: list[Iterable[Any]]) -> None:
        self.torch_rng = torch.get_rng_state()
        self.cuda_rng = (
            torch.cuda.get_rng_state_all()
            if torch.cuda.is_initialized()  # type: ignore[no-untyped-call]
            else None
        )
        self.python_rng = random.getstate()
        self.numpy_rng = np.random.get_state()  # noqa: NPY002 - the legacy global state users seed
        self.epochs = [
            (loader, epoch)
            for loader in loaders
            if isinstance(epoch := getattr(loader, "epoch", None), int)
            and hasattr(loader, "set_epoch")
        ]

    @classmethod
    def take(cls, loaders: list[Iterable[Any]]) -> _RngState:
        return cls(loaders)

    def restore(self) -> None:
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        random.setstate(self.python_rng)
        np.random.set_state(self.numpy_rng)  # noqa: NPY002
        for loader, epoch in self.epochs:
            loader.set_epoch(epoch)


# --------------------------------------------------------------------------- fusable


def fusable(model: nn.Module, example_inputs: Any) -> tuple[bool, str | None]:
    """Whether :class:`FusedModel` (``vmap``) can train ``model``, asked before running.

    Batch norm in training mode is refused by name: it writes its running
    statistics in the forward, which a stacked, read-only buffer cannot take.
    Anything else is tried: a copy of ``model`` stacked twice runs a vmapped
    forward and backward on ``example_inputs`` (one member's batch) and any
    error (an in-place write of a per-member value into a shared tensor, a
    ``.item()`` or data-dependent branch, an op without a batching rule) is
    the reason. Random ops (dropout) fuse, each member drawing its own masks,
    as the fused runs draw them. The model and the global RNG state are left
    as found.

    Of the built-in workloads, ``digits_mlp``, ``digits_cnn``, ``mnist1d_mlp``,
    ``mnist1d_cnn`` and ``synthetic_mlp`` all fuse (tested).

    Args:
        model: the architecture, in the mode it will be trained in.
        example_inputs: one member's inputs, e.g. a batch of two samples.

    Returns:
        ``(True, None)``, or ``(False, reason)`` where the reason is a sentence
        to record with the job that runs unfused.

    Example:
        >>> import torch
        >>> fusable(torch.nn.Linear(3, 2), torch.zeros(2, 3))
        (True, None)
        >>> ok, reason = fusable(torch.nn.BatchNorm1d(3).train(), torch.zeros(2, 3))
        >>> ok, reason.startswith("batch norm in training mode")
        (False, True)
    """
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            return False, (
                f"batch norm in training mode ({name or 'the model'}: {type(module).__name__}) "
                "updates its running statistics in the forward, which vmap cannot do on "
                "stacked buffers"
            )
    rng = _RngState([])
    try:
        fused = FusedModel([model, model])
        fused.train(model.training)

        def total(p: dict[str, Tensor], b: dict[str, Tensor], x: Any) -> Tensor:
            leaves = torch.utils._pytree.tree_leaves(fused.functional_forward(p, b, x))
            tensors = [t.float().sum() for t in leaves if isinstance(t, Tensor)]
            return torch.stack(tensors).sum()

        inputs = torch.utils._pytree.tree_map(
            lambda t: torch.stack([t, t]) if isinstance(t, Tensor) else t, example_inputs
        )
        # randomness "different", as the fused runs use it: dropout fuses, each member
        # drawing its own masks
        step = torch.vmap(torch.func.grad(total), in_dims=(0, 0, 0), randomness="different")
        step(fused.params, fused.buffers, inputs)
    except Exception as exc:  # noqa: BLE001 - any failure is the answer, not a crash
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return False, f"vmap cannot run this model: {type(exc).__name__}: {first}".rstrip(": ")
    finally:
        rng.restore()
    return True, None


# --------------------------------------------------------------------------- memory

# optimizer state tensors per parameter: SGD's momentum buffer, Adam's two moments
_OPTIMIZER_STATES = {"sgd": 1, "adam": 2, "adamw": 2}


@dataclass(frozen=True)
class MemberMemory:
    """One member's memory in a fused run, as :func:`member_memory` found it.

    Attributes:
        bytes: the member's bytes: weights, gradients, optimizer state and the
            activations of one batch.
        measured: ``True`` when measured on CUDA (the peak of one fused step
            with K = 1, or the computed value when larger), ``False`` when computed.
        detail: how it was obtained, one sentence with the numbers.
    """

    bytes: int
    measured: bool
    detail: str


def _tensor_bytes(value: Any) -> int:
    leaves = torch.utils._pytree.tree_leaves(value)
    return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, Tensor))


def member_memory(
    model: nn.Module,
    example_inputs: Tensor,
    *,
    optimizer: Literal["sgd", "adam", "adamw"] | str = "sgd",
    device: str | torch.device = "cpu",
) -> MemberMemory:
    """One member's bytes in a fused training of ``model``, to size K before running.

    Computed: the parameters' bytes times (1 for the weights + 1 for their
    gradients + the optimizer's state tensors: 1 for SGD's momentum, 2 for the
    Adam family's moments), plus the buffers once, plus the activations of one
    forward of ``example_inputs`` (the bytes of every leaf module's outputs,
    counted by forward hooks on a copy of the model, times 2 for their
    gradients), plus the inputs' bytes. On CUDA one fused training step of a
    single member (forward, backward of the outputs' sum, the fused optimizer's
    update) is also run on ``device`` and its peak allocation (from
    ``torch.cuda.reset_peak_memory_stats`` / ``max_memory_allocated``, above what
    was allocated before) measured; the larger of the two is returned.

    Args:
        model: the architecture (one member); left as found.
        example_inputs: one member's batch, at the batch size it will train with.
        optimizer: ``sgd``, ``adam`` or ``adamw``.
        device: where the fused run will train.

    Returns:
        A :class:`MemberMemory`.

    Raises:
        OptimizerError: an unknown optimizer.

    Example:
        >>> import torch
        >>> m = member_memory(torch.nn.Linear(10, 5), torch.zeros(4, 10), optimizer="adam")
        >>> m.bytes, m.measured  # 55 params * 4 B * 4 + (4*5 * 4 B) * 2 + 4*10 * 4 B
        (1200, False)
    """
    if optimizer not in _OPTIMIZER_STATES:
        raise OptimizerError(
            f"optimizer must be one of {list(_OPTIMIZER_STATES)}, got {optimizer!r}"
        )
    device = torch.device(device)
    copies = 2 + _OPTIMIZER_STATES[optimizer]
    param_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    buffer_bytes = sum(b.numel() * b.element_size() for b in model.buffers())
    input_bytes = _tensor_bytes(example_inputs)
    activation_bytes = 0

    def count(_module: nn.Module, _inputs: Any, outputs: Any) -> None:
        nonlocal activation_bytes
        activation_bytes += _tensor_bytes(outputs)

    probe = copy.deepcopy(model)  # a forward may write buffers (batch norm): not the caller's
    first = next(iter((*probe.parameters(), *probe.buffers())), None)
    inputs = to_device(example_inputs, first.device if first is not None else torch.device("cpu"))
    leaves = [m for m in probe.modules() if next(m.children(), None) is None]
    handles = [m.register_forward_hook(count) for m in leaves]
    rng = _RngState([])
    try:
        with torch.no_grad():
            probe(inputs)
    finally:
        for handle in handles:
            handle.remove()
        rng.restore()
    computed = param_bytes * copies + buffer_bytes + 2 * activation_bytes + input_bytes
    detail = (
        f"computed: {param_bytes} parameter bytes x {copies} (weights, gradients, "
        f"{copies - 2} {optimizer} state) + {buffer_bytes} buffer bytes + "
        f"{activation_bytes} activation bytes x 2 + {input_bytes} input bytes = {computed}"
    )
    if device.type != "cuda":
        return MemberMemory(bytes=computed, measured=False, detail=detail)
    peak = _measure_step(model, example_inputs, optimizer, device)
    return MemberMemory(
        bytes=max(peak, computed),
        measured=True,
        detail=f"measured peak of one fused K=1 step on {device}: {peak} bytes; {detail}; "
        f"the larger, {max(peak, computed)}, is used",
    )


def _measure_step(
    model: nn.Module, example_inputs: Any, optimizer: str, device: torch.device
) -> int:
    """Peak CUDA bytes of one fused training step of ``model`` alone (K = 1) on ``device``."""
    rng = _RngState([])
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        fused = FusedModel([model])
        fused.train(model.training)
        stacked = fused.path == "stacked"
        source = fused.stacked_params() if stacked else fused.params
        params = {n: p.to(device, copy=True).requires_grad_() for n, p in source.items()}
        buffers = {n: b.to(device, copy=True) for n, b in fused.buffers.items()}
        names = list(params)
        inputs = torch.utils._pytree.tree_map(
            lambda t: t.to(device).unsqueeze(0) if isinstance(t, Tensor) else t, example_inputs
        )
        if stacked:
            outputs = fused.stacked_forward(params, inputs, in_out=True)
            grads = list(torch.autograd.grad(outputs.float().sum(), [params[n] for n in names]))
        else:

            def total(p: dict[str, Tensor], b: dict[str, Tensor], x: Any) -> Tensor:
                leaves = torch.utils._pytree.tree_leaves(fused.functional_forward(p, b, x))
                return torch.stack([t.float().sum() for t in leaves if isinstance(t, Tensor)]).sum()

            detached = {n: p.detach() for n, p in params.items()}
            by_name = torch.vmap(torch.func.grad(total), randomness="different")(
                detached, buffers, inputs
            )
            grads = [by_name[n] for n in names]
        opt = make_fused_optimizer(optimizer, [params[n].detach() for n in names], lr=1e-3)
        opt.step(grads)
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - base)
    finally:
        rng.restore()


def _available_host_bytes() -> int:
    """``MemAvailable`` of ``/proc/meminfo`` (Linux), else the free physical pages."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import os

    return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))


def fused_capacity(
    memory: MemberMemory,
    *,
    device: str | torch.device,
    fraction: float = 0.5,
    free_bytes: int | None = None,
) -> int:
    """How many members of :func:`member_memory`'s size fit one fused run on ``device``.

    ``floor(fraction * free / memory.bytes)``, at least 1 (one member always
    runs: it is what an unfused job would need too). ``free`` is
    ``torch.cuda.mem_get_info`` on CUDA, ``MemAvailable`` of ``/proc/meminfo``
    on the CPU, or ``free_bytes`` when given.

    Args:
        memory: one member's memory.
        device: the device the run will use.
        fraction: the share of the free memory the run may take, in (0, 1].
        free_bytes: the free bytes to assume instead of asking the device.

    Returns:
        The number of members, >= 1.

    Raises:
        ValueError: naming the argument, for a fraction outside (0, 1], a
            negative ``free_bytes`` or a memory of no bytes.

    Example:
        >>> fused_capacity(MemberMemory(1000, False, "computed"), device="cpu",
        ...                free_bytes=10_000, fraction=0.5)
        5
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise ValueError(f"fraction must be a number in (0, 1], got {fraction!r}")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    if memory.bytes <= 0:
        raise ValueError(f"memory.bytes must be positive, got {memory.bytes!r}")
    if free_bytes is None:
        device = torch.device(device)
        if device.type == "cuda":
            free_bytes = int(torch.cuda.mem_get_info(device)[0])
        else:
            free_bytes = _available_host_bytes()
    elif isinstance(free_bytes, bool) or not isinstance(free_bytes, int) or free_bytes < 0:
        raise ValueError(f"free_bytes must be a non-negative integer, got {free_bytes!r}")
    return max(1, math.floor(fraction * free_bytes / memory.bytes))
