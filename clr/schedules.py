"""LRScheduler adapters that drive a torch optimizer with :mod:`clr.policies` schedules.

:class:`ScheduledLR` turns one schedule per param group into a
:class:`torch.optim.lr_scheduler.LRScheduler`, stepped once per batch, so the
schedules drop into plain loops, PyTorch Lightning and HF-style trainers.

The centre piece is :class:`CyclicLR` (Smith, "Cyclical Learning Rates for
Training Neural Networks", https://arxiv.org/abs/1506.01186), which accepts
torch's ``CyclicLR`` arguments by the same names and reproduces its learning
rates and momenta step for step, and adds the paper's window shapes, named
(serialisable) scale functions and per-group bounds.

The schedules themselves (pure functions of the step) live in the torch-free
:mod:`clr.policies`, so a process that only validates schedules never loads
torch; this module re-exports them, and ``from clr.schedules import
CyclicSchedule`` keeps working.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, cast

from torch import Tensor
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from clr.exceptions import ScheduleError
from clr.policies import (
    CYCLIC_POLICIES,
    POLICIES,
    SCALE_FNS,
    SHAPES,
    ConstantSchedule,
    CosineWarmRestartsSchedule,
    CyclicSchedule,
    ExponentialDecaySchedule,
    Mode,
    OneCycleSchedule,
    ScaleFn,
    ScaleMode,
    Schedule,
    Shape,
    StepDecaySchedule,
    _adapt_scale_fn,
    _name_of,
    cycle_at,
    cycle_end,
    cycle_ends,
    cycle_length,
    make_schedule,
    recommend_step_size,
    register_scale_fn,
    schedule_length,
    total_iterations,
)

# Private helpers reached through this module by older callers and tests: re-exported
# explicitly (``x as x``) so they stay where they were before clr.policies existed.
from clr.policies import _exp_range_scale as _exp_range_scale
from clr.policies import _finite_nonneg as _finite_nonneg
from clr.policies import _OneArg as _OneArg
from clr.policies import _positive_int as _positive_int
from clr.policies import _triangular2_scale as _triangular2_scale
from clr.policies import _triangular_scale as _triangular_scale

__all__ = [
    "CYCLIC_POLICIES",
    "POLICIES",
    "SCALE_FNS",
    "SHAPES",
    "ConstantSchedule",
    "CosineWarmRestartsSchedule",
    "CyclicLR",
    "CyclicSchedule",
    "ExponentialDecaySchedule",
    "Mode",
    "OneCycleSchedule",
    "ScaleFn",
    "ScaleMode",
    "Schedule",
    "ScheduledLR",
    "Shape",
    "StepDecaySchedule",
    "create_scheduler",
    "cycle_at",
    "cycle_end",
    "cycle_ends",
    "cycle_length",
    "make_schedule",
    "recommend_step_size",
    "register_scale_fn",
    "schedule_length",
    "total_iterations",
]


# --------------------------------------------------------------------------- schedulers


def _values_of(schedule: Schedule) -> Callable[[int], tuple[float, float | None]]:
    def values_at(step: int) -> tuple[float, float | None]:
        return schedule.lr_at(step), schedule.momentum_at(step)

    return values_at


def _per_group(name: str, optimizer: Optimizer, value: Any) -> list[Any]:
    n = len(optimizer.param_groups)
    if isinstance(value, list | tuple):
        if len(value) != n:
            raise ScheduleError(f"expected {n} values for {name}, got {len(value)}")
        return list(value)
    return [value] * n


class ScheduledLR(LRScheduler):
    """Drives an optimizer with one :class:`Schedule` per param group.

    Follows torch's ``LRScheduler`` protocol: construct it after the optimizer,
    call ``step()`` once per batch after ``optimizer.step()``; ``state_dict`` /
    ``load_state_dict`` resume the same schedule. The step is a few Python
    float operations per group: no tensor work and no warnings machinery.

    Args:
        optimizer: the wrapped optimizer.
        schedules: one schedule for every group, or a list with one per group.
        cycle_momentum: write each schedule's ``momentum_at`` into the group's
            ``momentum`` (SGD, RMSprop) or ``betas[0]`` (Adam family).
        last_epoch: index of the last batch; ``-1`` starts from the beginning.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1)
        >>> sched = ScheduledLR(opt, ConstantSchedule(0.05))
        >>> opt.param_groups[0]["lr"]
        0.05
    """

    def __init__(
        self,
        optimizer: Optimizer,
        schedules: Schedule | Sequence[Schedule],
        *,
        cycle_momentum: bool = False,
        last_epoch: int = -1,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        self._schedules: list[Schedule] = _per_group("schedules", optimizer, schedules)
        self.cycle_momentum = cycle_momentum
        self.use_beta1 = False
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                raise ScheduleError(
                    "cycle_momentum=True needs an optimizer with momentum or betas, "
                    f"got {type(optimizer).__name__}"
                )
            self.use_beta1 = "betas" in optimizer.defaults
        self._bind()
        super().__init__(optimizer, last_epoch)

    def _bind(self) -> None:
        # One bound callable per group, looked up once rather than on every step.
        self._value_fns: list[Callable[[int], tuple[float, float | None]]] = [
            getattr(s, "values_at", None) or _values_of(s) for s in self._schedules
        ]

    def _values(self, step: int) -> list[tuple[float, float | None]]:
        return [fn(step) for fn in self._value_fns]

    def get_lr(self) -> list[float | Tensor]:
        """Learning rates at ``last_epoch`` (torch's protocol; prefer ``get_last_lr``)."""
        return [lr for lr, _ in self._values(self.last_epoch)]

    def step(self, epoch: int | None = None) -> None:
        """Advance one batch (or jump to ``epoch``) and write LR / momentum into the groups."""
        self._step_count += 1
        step = self.last_epoch + 1 if epoch is None else int(epoch)
        self.last_epoch = step
        lrs: list[float | Tensor] = []
        use_momentum = self.cycle_momentum
        beta1 = self.use_beta1
        for group, values_at in zip(self.optimizer.param_groups, self._value_fns, strict=True):
            lr, momentum = values_at(step)
            current = group["lr"]
            if isinstance(current, Tensor):
                current.fill_(lr)
            else:
                group["lr"] = lr
            lrs.append(lr)
            if use_momentum and momentum is not None:
                if beta1:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum
        self._last_lr = lrs

    @property
    def schedules(self) -> list[Schedule]:
        """The schedule of each param group."""
        return list(self._schedules)

    _STATE_KEYS: ClassVar[tuple[str, ...]] = ("last_epoch", "_step_count", "_last_lr", "base_lrs")

    def state_dict(self) -> dict[str, Any]:
        """The scheduler's position; rebuild the same schedules, then ``load_state_dict``."""
        return {key: self.__dict__[key] for key in self._STATE_KEYS if key in self.__dict__}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume from :meth:`state_dict`; the next ``step()`` continues the schedule."""
        for key in self._STATE_KEYS:
            if key in state_dict:
                setattr(self, key, state_dict[key])


class CyclicLR(ScheduledLR):
    """Cyclical learning rates (Smith 2015, https://arxiv.org/abs/1506.01186).

    Takes ``torch.optim.lr_scheduler.CyclicLR``'s arguments by the same names
    and, for the same arguments, sets the same learning rate and momentum at
    every step. On top of torch it adds the paper's window ``shape``, named
    scale functions that survive ``state_dict`` and resume exactly.

    One deliberate difference: torch cycles momentum by default
    (``cycle_momentum=True`` with ``base_momentum=0.8, max_momentum=0.9``),
    silently overwriting the momentum the user gave the optimizer. Here
    ``cycle_momentum`` defaults to ``None``, meaning "cycle only when momentum
    bounds are given" (both of them: one alone raises :class:`ScheduleError`).
    Pass ``cycle_momentum=True`` for torch's behaviour (and its 0.8 / 0.9
    bounds for whichever is not given).

    Args:
        optimizer: the wrapped optimizer.
        base_lr: lower LR bound, one value or one per param group.
        max_lr: upper LR bound, one value or one per param group.
        step_size_up: iterations in the increasing half of a cycle.
        step_size_down: iterations in the decreasing half (default ``step_size_up``).
        mode: ``triangular``, ``triangular2`` or ``exp_range``.
        gamma: ``exp_range``'s decay per iteration.
        scale_fn: a registered scale-function name, ``fn(x, gamma)``, or
            torch's one-argument ``fn(x)``; overrides ``mode``.
        scale_mode: ``cycle`` or ``iterations``: what ``scale_fn`` receives.
        cycle_momentum: cycle momentum inversely to the LR (see above).
        base_momentum: momentum at the LR peak, one value or one per group.
        max_momentum: momentum at the LR trough, one value or one per group.
        last_epoch: index of the last batch when resuming; ``-1`` to start.
        shape: ``triangle`` (default), ``sine`` (Hann) or ``parabolic`` (Welch).

    Raises:
        ScheduleError: on arguments no schedule can follow, naming the argument.

    Example:
        >>> import torch
        >>> model = torch.nn.Linear(4, 2)
        >>> opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        >>> sched = CyclicLR(opt, base_lr=0.001, max_lr=0.006, step_size_up=4)
        >>> for batch in range(8):
        ...     opt.step()
        ...     sched.step()
        >>> round(sched.get_last_lr()[0], 6)
        0.001
    """

    def __init__(
        self,
        optimizer: Optimizer,
        base_lr: float | Sequence[float],
        max_lr: float | Sequence[float],
        step_size_up: int = 2000,
        step_size_down: int | None = None,
        mode: Mode = "triangular",
        gamma: float = 1.0,
        scale_fn: str | ScaleFn | Callable[[float], float] | None = None,
        scale_mode: ScaleMode = "cycle",
        cycle_momentum: bool | None = None,
        base_momentum: float | Sequence[float] | None = None,
        max_momentum: float | Sequence[float] | None = None,
        last_epoch: int = -1,
        *,
        shape: Shape = "triangle",
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
        if cycle_momentum is None:
            if (base_momentum is None) != (max_momentum is None):
                missing = "max_momentum" if max_momentum is None else "base_momentum"
                raise ScheduleError(
                    f"{missing} is required when only one momentum bound is given "
                    "(or pass cycle_momentum=True for torch's 0.8 / 0.9 defaults)"
                )
            cycle_momentum = base_momentum is not None
        if cycle_momentum:
            if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
                # Checked before any param group is touched.
                raise ScheduleError(
                    "cycle_momentum=True needs an optimizer with momentum or betas, "
                    f"got {type(optimizer).__name__}"
                )
            base_momentum = 0.8 if base_momentum is None else base_momentum
            max_momentum = 0.9 if max_momentum is None else max_momentum
        self.mode = mode
        self.gamma = gamma
        fn: str | ScaleFn | None
        if scale_fn is None or isinstance(scale_fn, str):
            fn = scale_fn
        elif _name_of(cast(ScaleFn, scale_fn)) is not None:
            fn = cast(ScaleFn, scale_fn)
        else:
            fn = _adapt_scale_fn(scale_fn)
        base_lrs = _per_group("base_lr", optimizer, base_lr)
        max_lrs = _per_group("max_lr", optimizer, max_lr)
        base_ms = _per_group("base_momentum", optimizer, base_momentum)
        max_ms = _per_group("max_momentum", optimizer, max_momentum)
        schedules = [
            CyclicSchedule(
                base_lr=b,
                max_lr=m,
                step_size_up=step_size_up,
                step_size_down=step_size_down,
                mode=mode,
                gamma=gamma,
                scale_fn=fn,
                scale_mode=scale_mode if fn is not None else None,
                shape=shape,
                base_momentum=bm if cycle_momentum else None,
                max_momentum=mm if cycle_momentum else None,
            )
            for b, m, bm, mm in zip(base_lrs, max_lrs, base_ms, max_ms, strict=True)
        ]
        self.scale_mode = schedules[0].scale_mode
        if last_epoch == -1:
            for schedule, group in zip(schedules, optimizer.param_groups, strict=True):
                if isinstance(group["lr"], Tensor):  # keep a tensor LR a tensor, as torch does
                    group["lr"].fill_(schedule.base_lr)
                else:
                    group["lr"] = schedule.base_lr
                if cycle_momentum and schedule.max_momentum is not None:
                    if "betas" in optimizer.defaults:
                        group["betas"] = (schedule.max_momentum, *group["betas"][1:])
                    elif "momentum" in optimizer.defaults:
                        group["momentum"] = schedule.max_momentum
        super().__init__(
            optimizer, schedules, cycle_momentum=bool(cycle_momentum), last_epoch=last_epoch
        )
        self.base_lrs = [float(s.base_lr) for s in schedules]
        self.max_lrs = [float(s.max_lr) for s in schedules]

    @property
    def step_size_up(self) -> int:
        """Iterations in the increasing half of a cycle."""
        return cast(CyclicSchedule, self._schedules[0]).step_size_up

    @property
    def step_size_down(self) -> int:
        """Iterations in the decreasing half of a cycle."""
        return cast(int, cast(CyclicSchedule, self._schedules[0]).step_size_down)

    def cycle(self) -> int:
        """The 1-based cycle the last step belongs to."""
        return cycle_at(max(self.last_epoch, 0), self.step_size_up, self.step_size_down)

    def state_dict(self) -> dict[str, Any]:
        """Position plus the schedule's configuration; a named scale function is kept by name."""
        state = super().state_dict()
        state["schedules"] = [cast(CyclicSchedule, s).config() for s in self._schedules]
        state["cycle_momentum"] = self.cycle_momentum
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore position and configuration.

        A scale function saved by name is looked up in :data:`SCALE_FNS`; an
        unnamed callable cannot be saved, so the one given to the constructor
        is kept.
        """
        configs = state_dict.get("schedules")
        if configs is not None:
            rebuilt: list[Schedule] = []
            for config, current in zip(configs, self._schedules, strict=True):
                config = dict(config)
                if config.get("scale_fn") is None and cast(CyclicSchedule, current).scale_fn:
                    config["scale_fn"] = cast(CyclicSchedule, current).scale_fn
                    config["scale_mode"] = cast(CyclicSchedule, current).scale_mode
                rebuilt.append(CyclicSchedule(**config))
            self._schedules = rebuilt
            self._bind()
            self.base_lrs = [float(cast(CyclicSchedule, s).base_lr) for s in rebuilt]
            self.max_lrs = [float(cast(CyclicSchedule, s).max_lr) for s in rebuilt]
        if "cycle_momentum" in state_dict:
            self.cycle_momentum = bool(state_dict["cycle_momentum"])
            defaults = self.optimizer.defaults
            if self.cycle_momentum and "momentum" not in defaults and "betas" not in defaults:
                raise ScheduleError(
                    "the state cycles momentum but the optimizer has neither momentum nor betas, "
                    f"got {type(self.optimizer).__name__}"
                )
            self.use_beta1 = "betas" in defaults
        super().load_state_dict(state_dict)


def create_scheduler(
    optimizer: Optimizer, policy: str, *, cycle_momentum: bool | None = None, **kwargs: Any
) -> ScheduledLR:
    """An LRScheduler for ``policy`` over every param group of ``optimizer``.

    Momentum is cycled when the schedule defines it (one-cycle, or cyclic
    policies given ``base_momentum`` / ``max_momentum``) unless
    ``cycle_momentum=False``.

    Example:
        >>> import torch
        >>> opt = torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1, momentum=0.9)
        >>> sched = create_scheduler(opt, "triangular", base_lr=1e-3, max_lr=1e-2, step_size_up=5)
        >>> type(sched).__name__
        'ScheduledLR'
    """
    schedule = make_schedule(policy, **kwargs)
    if cycle_momentum is None:
        cycle_momentum = schedule.momentum_at(0) is not None
    if cycle_momentum and schedule.momentum_at(0) is None:
        raise ScheduleError(f"cycle_momentum=True but policy {policy!r} defines no momentum")
    return ScheduledLR(optimizer, schedule, cycle_momentum=cycle_momentum)
