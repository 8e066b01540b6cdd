"""Learning-rate schedules as pure functions of the step, and run lengths in cycles.

Everything here is plain Python (``math`` and the standard library): no torch.
The API process validates training schedules and their lengths with it without
loading torch, and :mod:`clr.schedules` builds its ``LRScheduler`` adapters on
top of it (and re-exports every name, so ``from clr.schedules import ...``
keeps working).

Every schedule is a small frozen dataclass whose ``lr_at(step)`` (and
``momentum_at(step)``) is a pure function of the 0-based iteration, in the
manner of timm's schedulers. The centre piece is :class:`CyclicSchedule`
(Smith, "Cyclical Learning Rates for Training Neural Networks",
https://arxiv.org/abs/1506.01186): its values equal torch's ``CyclicLR`` step
for step, and it adds the paper's window shapes and named scale functions.

The cycle index is ``floor(1 + t / (2 * step_size))`` -- not
``floor((1 + t) / (2 * step_size))``, a slip that circulates in tutorials and
moves every cycle boundary by one iteration. ``exp_range`` scales by
``gamma ** t`` with ``t`` the iteration count since the start, not the cycle.

A *cycle end* is an iteration count at which a cycle is complete and the LR is
back at its low point: the paper finds accuracy peaks there and recommends
stopping there (3 cycles get most of the way, 4 or more do better), and it is
where a trainer checkpoints and takes snapshot-ensemble members.
:func:`cycle_ends` lists them and :func:`schedule_length` turns a length given
in cycles, iterations or epochs into iterations, refusing one that would stop
mid-cycle.

Example:
    >>> s = make_schedule("triangular", base_lr=0.001, max_lr=0.006, step_size_up=5)
    >>> cycle_ends(s, 25)
    [10, 20]
    >>> schedule_length("triangular", cycles=3, base_lr=0.001, max_lr=0.006, step_size_up=5)
    30
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, Protocol, cast

from clr.exceptions import ScheduleError

__all__ = [
    "CYCLIC_POLICIES",
    "POLICIES",
    "SCALE_FNS",
    "SHAPES",
    "ConstantSchedule",
    "CosineWarmRestartsSchedule",
    "CyclicSchedule",
    "ExponentialDecaySchedule",
    "OneCycleSchedule",
    "Schedule",
    "StepDecaySchedule",
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

Mode = Literal["triangular", "triangular2", "exp_range"]
Shape = Literal["triangle", "sine", "parabolic"]
ScaleMode = Literal["cycle", "iterations"]

SHAPES: tuple[str, ...] = ("triangle", "sine", "parabolic")
"""Window shapes of the paper (§3.1): triangle, sine (Hann), parabolic (Welch)."""


# --------------------------------------------------------------------------- helpers


def _positive_int(name: str, value: object) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or (isinstance(value, float) and not math.isfinite(value))  # int(nan) raises unnamed
        or value != int(value)
    ):
        raise ScheduleError(f"{name} must be a positive integer, got {value!r}")
    if value <= 0:
        raise ScheduleError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _finite_nonneg(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ScheduleError(f"{name} must be a number, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ScheduleError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def cycle_length(step_size_up: int, step_size_down: int | None = None) -> int:
    """Iterations in one full cycle: ``step_size_up + step_size_down``.

    Args:
        step_size_up: iterations in the increasing half of a cycle.
        step_size_down: iterations in the decreasing half; defaults to ``step_size_up``.

    Example:
        >>> cycle_length(2000)
        4000
    """
    up = _positive_int("step_size_up", step_size_up)
    down = up if step_size_down is None else _positive_int("step_size_down", step_size_down)
    return up + down


def cycle_at(step: int, step_size_up: int, step_size_down: int | None = None) -> int:
    """The 1-based cycle that iteration ``step`` (0-based) belongs to.

    This is the paper's ``floor(1 + t / (2 * stepsize))`` generalised to
    asymmetric halves.

    Example:
        >>> [cycle_at(t, 2) for t in (0, 3, 4, 7, 8)]
        [1, 1, 2, 2, 3]
    """
    return math.floor(1 + step / cycle_length(step_size_up, step_size_down))


def cycle_end(k: int, step_size_up: int, step_size_down: int | None = None) -> int:
    """0-based index of the last iteration of cycle ``k`` (1-based).

    Stopping after this iteration ends training at the bottom of cycle ``k``,
    where the paper finds accuracy peaks. The next iteration,
    ``k * cycle_length``, is where the LR is back at ``base_lr``.

    Example:
        >>> cycle_end(3, step_size_up=100)
        599
    """
    _positive_int("k", k)
    return k * cycle_length(step_size_up, step_size_down) - 1


def total_iterations(n_cycles: int, step_size_up: int, step_size_down: int | None = None) -> int:
    """Iterations needed to run ``n_cycles`` whole cycles (the number of optimizer steps).

    Example:
        >>> total_iterations(4, step_size_up=100)
        800
    """
    return _positive_int("n_cycles", n_cycles) * cycle_length(step_size_up, step_size_down)


def recommend_step_size(iters_per_epoch: int, epochs_per_half_cycle: float = 4) -> int:
    """A ``step_size`` (iterations per half cycle) from the epoch length.

    The paper (§3.3) finds ``step_size`` of 2 to 10 epochs works well. The
    default of 4 epochs is what its CIFAR-10 runs used (``stepsize = 2000`` at
    500 iterations per epoch): long enough that a cycle explores the range,
    short enough that 3-4 cycles (the paper's stopping advice) fit a budget.

    Args:
        iters_per_epoch: mini-batches per epoch (dataset size / batch size).
        epochs_per_half_cycle: epochs per half cycle, 2-10 in the paper.

    Returns:
        The step size in iterations, at least 1.

    Example:
        >>> recommend_step_size(500)
        2000
    """
    ipe = _positive_int("iters_per_epoch", iters_per_epoch)
    if (
        isinstance(epochs_per_half_cycle, bool)
        or not isinstance(epochs_per_half_cycle, int | float)
        or not math.isfinite(epochs_per_half_cycle)
        or epochs_per_half_cycle <= 0
    ):
        raise ScheduleError(
            f"epochs_per_half_cycle must be a positive number, got {epochs_per_half_cycle!r}"
        )
    return max(1, round(ipe * epochs_per_half_cycle))


# --------------------------------------------------------------------------- scale functions

ScaleFn = Callable[[float, float], float]
"""A named scale function: ``fn(x, gamma) -> multiplier`` of the cycle amplitude."""


def _triangular_scale(x: float, gamma: float) -> float:  # noqa: ARG001 - fixed signature
    return 1.0


def _triangular2_scale(x: float, gamma: float) -> float:  # noqa: ARG001 - fixed signature
    scale: float = 1 / (2.0 ** (x - 1))  # torch's expression, for bit-equal values
    return scale


def _exp_range_scale(x: float, gamma: float) -> float:
    return float(gamma**x)


SCALE_FNS: dict[str, ScaleFn] = {
    "triangular": _triangular_scale,
    "triangular2": _triangular2_scale,
    "exp_range": _exp_range_scale,
}
"""Registered scale functions by name; a scheduler stores the name in its
``state_dict``, so a named function survives a checkpoint (torch's CyclicLR
drops plain functions)."""

_MODE_SCALE_MODE: dict[str, ScaleMode] = {
    "triangular": "cycle",
    "triangular2": "cycle",
    "exp_range": "iterations",
}


def register_scale_fn(name: str) -> Callable[[ScaleFn], ScaleFn]:
    """Register ``fn(x, gamma) -> float`` under ``name`` so checkpoints can name it.

    Example:
        >>> @register_scale_fn("halve_every_2")
        ... def halve_every_2(x: float, gamma: float) -> float:
        ...     return 0.5 ** ((x - 1) // 2)
        >>> del SCALE_FNS["halve_every_2"]
    """
    if not isinstance(name, str) or not name:
        raise ScheduleError(f"name must be a non-empty string, got {name!r}")

    def decorator(fn: ScaleFn) -> ScaleFn:
        existing = SCALE_FNS.get(name)
        if existing is not None and existing is not fn:
            raise ScheduleError(f"a scale function named {name!r} is already registered")
        SCALE_FNS[name] = fn
        return fn

    return decorator


def _name_of(fn: ScaleFn) -> str | None:
    for name, registered in SCALE_FNS.items():
        if registered is fn:
            return name
    return None


class _OneArg:
    """Adapts torch's one-argument ``scale_fn(x)`` to ``fn(x, gamma)``."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[float], float]) -> None:
        self.fn = fn

    def __call__(self, x: float, gamma: float) -> float:  # noqa: ARG002 - fixed signature
        return self.fn(x)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _OneArg) and other.fn is self.fn

    def __hash__(self) -> int:
        return hash(self.fn)


# --------------------------------------------------------------------------- schedules


class Schedule(Protocol):
    """A learning-rate schedule: a pure function of the 0-based iteration."""

    def lr_at(self, step: int) -> float:
        """Learning rate at iteration ``step``."""
        ...

    def momentum_at(self, step: int) -> float | None:
        """Momentum (or Adam's beta1) at ``step``, or ``None`` to leave it alone."""
        ...


def _window(shape: str, f: float) -> float:
    # f is the triangle's height in [0, 1]; map it onto the paper's other windows.
    if shape == "triangle":
        return f
    if shape == "sine":  # Hann: sin^2 of the position in the cycle
        return 0.5 * (1.0 - math.cos(math.pi * f))
    return f * (2.0 - f)  # parabolic (Welch): 1 - (1 - f)^2


@dataclass(frozen=True)
class CyclicSchedule:
    """The paper's cyclical learning rate, one param group's worth.

    ``lr(t) = base_lr + (max_lr - base_lr) * window(h(t)) * scale(x)``, with
    ``h`` the triangle wave rising over ``step_size_up`` iterations and falling
    over ``step_size_down``, ``x`` the cycle (``scale_mode='cycle'``) or the
    iteration (``'iterations'``). Momentum, when cycled, moves inversely: at
    ``max_momentum`` when the LR is at ``base_lr``.

    Args:
        base_lr: lower LR bound (the LR at the start and end of every cycle).
        max_lr: upper LR bound, reached mid-cycle (before any scaling).
        step_size_up: iterations in the increasing half of a cycle.
        step_size_down: iterations in the decreasing half (default: ``step_size_up``).
        mode: ``triangular`` (constant amplitude), ``triangular2`` (amplitude
            halves every cycle), ``exp_range`` (amplitude times ``gamma**t``).
        gamma: decay of ``exp_range``.
        scale_fn: a registered scale function name, or ``fn(x, gamma)``;
            overrides ``mode``.
        scale_mode: what ``scale_fn`` gets: the cycle number or the iteration.
        shape: ``triangle`` (default), ``sine`` (Hann) or ``parabolic`` (Welch).
        base_momentum: momentum at the top of the cycle (when cycling momentum).
        max_momentum: momentum at the bottom of the cycle (when cycling momentum).

    Example:
        >>> s = CyclicSchedule(base_lr=0.001, max_lr=0.006, step_size_up=2000)
        >>> s.lr_at(0), s.lr_at(2000), s.lr_at(4000)
        (0.001, 0.006, 0.001)
    """

    base_lr: float
    max_lr: float
    step_size_up: int = 2000
    step_size_down: int | None = None
    mode: Mode = "triangular"
    gamma: float = 1.0
    scale_fn: str | ScaleFn | None = None
    scale_mode: ScaleMode | None = None
    shape: Shape = "triangle"
    base_momentum: float | None = None
    max_momentum: float | None = None
    _fn: ScaleFn = field(init=False, repr=False, compare=False)
    _by_cycle: bool = field(init=False, repr=False, compare=False)
    _total: float = field(init=False, repr=False, compare=False)
    _ratio: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        base = _finite_nonneg("base_lr", self.base_lr)
        peak = _finite_nonneg("max_lr", self.max_lr)
        if peak < base:
            raise ScheduleError(f"max_lr must be >= base_lr, got base_lr={base}, max_lr={peak}")
        up = _positive_int("step_size_up", self.step_size_up)
        down = up if self.step_size_down is None else self.step_size_down
        down = _positive_int("step_size_down", down)
        if self.shape not in SHAPES:
            raise ScheduleError(f"shape must be one of {list(SHAPES)}, got {self.shape!r}")
        if isinstance(self.gamma, bool) or not isinstance(self.gamma, int | float):
            raise ScheduleError(f"gamma must be a number, got {self.gamma!r}")
        if not (math.isfinite(self.gamma) and self.gamma > 0):
            raise ScheduleError(f"gamma must be a finite number > 0, got {self.gamma!r}")
        fn: ScaleFn
        if self.scale_fn is None:
            if self.mode not in SCALE_FNS or self.mode not in _MODE_SCALE_MODE:
                raise ScheduleError(
                    f"mode must be one of {sorted(_MODE_SCALE_MODE)} when scale_fn is None, "
                    f"got {self.mode!r}"
                )
            fn = SCALE_FNS[self.mode]
            scale_mode = _MODE_SCALE_MODE[self.mode]
        else:
            if isinstance(self.scale_fn, str):
                if self.scale_fn not in SCALE_FNS:
                    raise ScheduleError(
                        f"scale_fn {self.scale_fn!r} is not registered; known: {sorted(SCALE_FNS)}"
                    )
                fn = SCALE_FNS[self.scale_fn]
            elif callable(self.scale_fn):
                fn = self.scale_fn
            else:
                raise ScheduleError(f"scale_fn must be a name or a callable, got {self.scale_fn!r}")
            scale_mode = self.scale_mode or "cycle"
        if scale_mode not in ("cycle", "iterations"):
            raise ScheduleError(f"scale_mode must be 'cycle' or 'iterations', got {scale_mode!r}")
        if (self.base_momentum is None) != (self.max_momentum is None):
            raise ScheduleError("base_momentum and max_momentum must be given together")
        if self.base_momentum is not None and self.max_momentum is not None:
            for name, m in (
                ("base_momentum", self.base_momentum),
                ("max_momentum", self.max_momentum),
            ):
                if not (0 <= _finite_nonneg(name, m) < 1):
                    raise ScheduleError(f"{name} must be in [0, 1), got {m!r}")
        object.__setattr__(self, "step_size_up", up)
        object.__setattr__(self, "step_size_down", down)
        object.__setattr__(self, "scale_mode", scale_mode)
        object.__setattr__(self, "_fn", fn)
        object.__setattr__(self, "_by_cycle", scale_mode == "cycle")
        # Same float arithmetic as torch.optim.lr_scheduler.CyclicLR, so values match bit for bit.
        total = float(up) + float(down)
        object.__setattr__(self, "_total", total)
        object.__setattr__(self, "_ratio", float(up) / total)

    def height(self, step: int) -> tuple[float, float]:
        """The window height in [0, 1] and the amplitude scale at ``step``."""
        cycle = math.floor(1 + step / self._total)
        x = 1.0 + step / self._total - cycle
        if x <= self._ratio:
            f = x / self._ratio
        else:
            f = (x - 1) / (self._ratio - 1)
        if self.shape != "triangle":
            f = _window(self.shape, f)
        return f, self._fn(cycle if self._by_cycle else step, self.gamma)

    def lr_at(self, step: int) -> float:
        """Learning rate at iteration ``step``."""
        f, scale = self.height(step)
        return self.base_lr + (self.max_lr - self.base_lr) * f * scale

    def momentum_at(self, step: int) -> float | None:
        """Momentum at ``step`` (inverse to the LR), or ``None`` if not cycled."""
        if self.base_momentum is None or self.max_momentum is None:
            return None
        f, scale = self.height(step)
        return self.max_momentum - (self.max_momentum - self.base_momentum) * f * scale

    def values_at(self, step: int) -> tuple[float, float | None]:
        """``(lr, momentum)`` at ``step`` with the window computed once."""
        f, scale = self.height(step)
        lr = self.base_lr + (self.max_lr - self.base_lr) * f * scale
        if self.base_momentum is None or self.max_momentum is None:
            return lr, None
        return lr, self.max_momentum - (self.max_momentum - self.base_momentum) * f * scale

    def config(self) -> dict[str, Any]:
        """JSON-ready arguments that rebuild this schedule (scale_fn by name)."""
        # Not dataclasses.asdict: it deep-copies every field, scale_fn callables included
        # (a bound method would drag its whole instance along, a lock would fail).
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        if self.scale_fn is not None and not isinstance(self.scale_fn, str):
            out["scale_fn"] = _name_of(self._fn)
        return out


@dataclass(frozen=True)
class ConstantSchedule:
    """The paper's ``fixed`` policy: one learning rate throughout."""

    lr: float

    def __post_init__(self) -> None:
        _finite_nonneg("lr", self.lr)

    def lr_at(self, step: int) -> float:  # noqa: ARG002 - the protocol's signature
        """Learning rate at iteration ``step``."""
        return self.lr

    def momentum_at(self, step: int) -> float | None:  # noqa: ARG002 - the protocol's signature
        """Momentum is left alone."""
        return None


@dataclass(frozen=True)
class StepDecaySchedule:
    """Step decay: ``lr * gamma ** (t // step_size)`` (torch's StepLR, per iteration)."""

    lr: float
    step_size: int
    gamma: float = 0.1

    def __post_init__(self) -> None:
        _finite_nonneg("lr", self.lr)
        _positive_int("step_size", self.step_size)
        _finite_nonneg("gamma", self.gamma)

    def lr_at(self, step: int) -> float:
        """Learning rate at iteration ``step``."""
        return self.lr * self.gamma ** (step // self.step_size)

    def momentum_at(self, step: int) -> float | None:  # noqa: ARG002 - the protocol's signature
        """Momentum is left alone."""
        return None


@dataclass(frozen=True)
class ExponentialDecaySchedule:
    """The paper's ``exp`` policy: ``lr * gamma ** t`` (torch's ExponentialLR, per iteration)."""

    lr: float
    gamma: float

    def __post_init__(self) -> None:
        _finite_nonneg("lr", self.lr)
        _finite_nonneg("gamma", self.gamma)

    def lr_at(self, step: int) -> float:
        """Learning rate at iteration ``step``."""
        return self.lr * self.gamma**step

    def momentum_at(self, step: int) -> float | None:  # noqa: ARG002 - the protocol's signature
        """Momentum is left alone."""
        return None


@dataclass(frozen=True)
class OneCycleSchedule:
    """Smith's 1cycle policy (arXiv 1708.07120), equal to torch's ``OneCycleLR``.

    Warm up from ``max_lr / div_factor`` to ``max_lr`` over ``pct_start`` of
    ``total_steps``, then anneal to ``initial / final_div_factor``; momentum
    moves inversely between ``max_momentum`` and ``base_momentum``.
    """

    max_lr: float
    total_steps: int
    pct_start: float = 0.3
    anneal_strategy: Literal["cos", "linear"] = "cos"
    div_factor: float = 25.0
    final_div_factor: float = 1e4
    three_phase: bool = False
    base_momentum: float | None = 0.85
    max_momentum: float | None = 0.95

    def __post_init__(self) -> None:
        _finite_nonneg("max_lr", self.max_lr)
        _positive_int("total_steps", self.total_steps)
        if (
            isinstance(self.pct_start, bool)
            or not isinstance(self.pct_start, int | float)
            or not (0 <= self.pct_start <= 1)
        ):
            raise ScheduleError(f"pct_start must be a number in [0, 1], got {self.pct_start!r}")
        start = 0.0
        for end, *_ in self._phases():
            if end == start:  # a phase of zero length: torch divides by zero there
                raise ScheduleError(
                    f"pct_start={self.pct_start} with total_steps={self.total_steps} leaves a "
                    "phase with no steps: change pct_start or raise total_steps"
                )
            start = end
        if self.anneal_strategy not in ("cos", "linear"):
            raise ScheduleError(
                f"anneal_strategy must be 'cos' or 'linear', got {self.anneal_strategy!r}"
            )
        for name in ("div_factor", "final_div_factor"):
            value = getattr(self, name)
            if not (_finite_nonneg(name, value) > 0):
                raise ScheduleError(f"{name} must be > 0, got {value!r}")
        if (self.base_momentum is None) != (self.max_momentum is None):
            raise ScheduleError("base_momentum and max_momentum must be given together")

    def _phases(self) -> list[tuple[float, str, str, str, str]]:
        n = self.total_steps
        if self.three_phase:
            return [
                (float(self.pct_start * n) - 1, "initial", "max", "max_m", "base_m"),
                (float(2 * self.pct_start * n) - 2, "max", "initial", "base_m", "max_m"),
                (n - 1, "initial", "min", "max_m", "max_m"),
            ]
        return [
            (float(self.pct_start * n) - 1, "initial", "max", "max_m", "base_m"),
            (n - 1, "max", "min", "base_m", "max_m"),
        ]

    def _anneal(self, start: float, end: float, pct: float) -> float:
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def values_at(self, step: int) -> tuple[float, float | None]:
        """``(lr, momentum)`` at ``step``."""
        if step > self.total_steps:
            raise ScheduleError(
                f"step {step} is past total_steps={self.total_steps} of the one-cycle schedule"
            )
        initial = self.max_lr / self.div_factor
        points = {
            "initial": initial,
            "max": self.max_lr,
            "min": initial / self.final_div_factor,
            "max_m": self.max_momentum or 0.0,
            "base_m": self.base_momentum or 0.0,
        }
        phases = self._phases()
        start_step = 0.0
        for i, (end_step, lr_a, lr_b, m_a, m_b) in enumerate(phases):
            if step <= end_step or i == len(phases) - 1:
                pct = (step - start_step) / (end_step - start_step)
                lr = self._anneal(points[lr_a], points[lr_b], pct)
                if self.base_momentum is None:
                    return lr, None
                return lr, self._anneal(points[m_a], points[m_b], pct)
            start_step = end_step
        raise AssertionError("unreachable: the last phase always matches")

    def lr_at(self, step: int) -> float:
        """Learning rate at iteration ``step``."""
        return self.values_at(step)[0]

    def momentum_at(self, step: int) -> float | None:
        """Momentum at ``step``, or ``None`` if not cycled."""
        return self.values_at(step)[1]


@dataclass(frozen=True)
class CosineWarmRestartsSchedule:
    """SGDR (Loshchilov & Hutter, arXiv 1608.03983): cosine annealing with warm restarts.

    Cycle ``i`` (0-based) lasts ``T_0 * T_mult**i`` iterations and anneals from
    ``max_lr * decay**i`` down to ``eta_min``. With ``decay=1`` this equals
    torch's ``CosineAnnealingWarmRestarts`` stepped per iteration.
    """

    max_lr: float
    T_0: int  # noqa: N815 - torch's argument name
    T_mult: int = 1  # noqa: N815 - torch's argument name
    eta_min: float = 0.0
    decay: float = 1.0

    def __post_init__(self) -> None:
        _finite_nonneg("max_lr", self.max_lr)
        _positive_int("T_0", self.T_0)
        _positive_int("T_mult", self.T_mult)
        _finite_nonneg("eta_min", self.eta_min)
        if not (0 < _finite_nonneg("decay", self.decay) <= 1):
            raise ScheduleError(f"decay must be in (0, 1], got {self.decay!r}")

    def position(self, step: int) -> tuple[int, int, int]:
        """``(cycle, t_cur, t_i)``: 0-based cycle, step within it, its length."""
        if self.T_mult == 1:
            return step // self.T_0, step % self.T_0, self.T_0
        cycle, start, length = 0, 0, self.T_0
        while step >= start + length:
            start += length
            length *= self.T_mult
            cycle += 1
        return cycle, step - start, length

    def lr_at(self, step: int) -> float:
        """Learning rate at iteration ``step``."""
        cycle, t_cur, t_i = self.position(step)
        peak = self.max_lr * self.decay**cycle if self.decay != 1.0 else self.max_lr
        return self.eta_min + (peak - self.eta_min) * (1 + math.cos(math.pi * t_cur / t_i)) / 2

    def momentum_at(self, step: int) -> float | None:  # noqa: ARG002 - the protocol's signature
        """Momentum is left alone."""
        return None


def _adapt_scale_fn(fn: Callable[..., float]) -> ScaleFn:
    """Accept torch's ``scale_fn(x)`` as well as ``fn(x, gamma)``."""
    import inspect

    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
    except (TypeError, ValueError):  # builtins without a signature: assume torch's form
        params = []
    if len(params) >= 2:
        return cast(ScaleFn, fn)
    return _OneArg(fn)


# --------------------------------------------------------------------------- factory

POLICIES: tuple[str, ...] = (
    "fixed",
    "step",
    "exp",
    "triangular",
    "triangular2",
    "exp_range",
    "one_cycle",
    "cosine_restarts",
)
"""Policy names :func:`make_schedule` understands (the paper's table plus 1cycle and SGDR)."""


def make_schedule(policy: str, **kwargs: Any) -> Schedule:
    """Build one schedule by policy name.

    ``triangular``, ``triangular2`` and ``exp_range`` build a
    :class:`CyclicSchedule` with that ``mode``; the rest map to
    ``fixed`` → :class:`ConstantSchedule`, ``step`` → :class:`StepDecaySchedule`,
    ``exp`` → :class:`ExponentialDecaySchedule`, ``one_cycle`` →
    :class:`OneCycleSchedule`, ``cosine_restarts`` → :class:`CosineWarmRestartsSchedule`.

    Example:
        >>> s = make_schedule("triangular2", base_lr=0.001, max_lr=0.01, step_size_up=10)
        >>> round(s.lr_at(10), 6), round(s.lr_at(30), 6)
        (0.01, 0.0055)
    """
    classes: Mapping[str, Callable[..., Schedule]] = {
        "fixed": ConstantSchedule,
        "step": StepDecaySchedule,
        "exp": ExponentialDecaySchedule,
        "one_cycle": OneCycleSchedule,
        "cosine_restarts": CosineWarmRestartsSchedule,
    }
    try:
        if policy in ("triangular", "triangular2", "exp_range"):
            return CyclicSchedule(mode=cast(Mode, policy), **kwargs)
        if policy in classes:
            return classes[policy](**kwargs)
    except TypeError as exc:  # unexpected or missing keyword: say which policy
        raise ScheduleError(f"policy {policy!r}: {exc}") from exc
    raise ScheduleError(f"policy must be one of {list(POLICIES)}, got {policy!r}")


# --------------------------------------------------------------------------- run lengths

CYCLIC_POLICIES: tuple[str, ...] = (
    "triangular",
    "triangular2",
    "exp_range",
    "one_cycle",
    "cosine_restarts",
)
"""Policies whose LR comes back to its low point at cycle ends (the others have none)."""


def _restart_ends(t_0: int, t_mult: int) -> Iterator[int]:
    end, period = 0, t_0
    while True:
        end += period
        yield end
        period *= t_mult


def _iter_cycle_ends(schedule: Schedule) -> Iterator[int]:
    """Every cycle end of ``schedule``, in order (endless for the periodic ones)."""
    if isinstance(schedule, CyclicSchedule):
        length = cycle_length(schedule.step_size_up, schedule.step_size_down)
        return itertools.count(length, length)
    if isinstance(schedule, CosineWarmRestartsSchedule):
        return _restart_ends(schedule.T_0, schedule.T_mult)
    if isinstance(schedule, OneCycleSchedule):
        return iter((schedule.total_steps,))
    custom = getattr(schedule, "cycle_ends", None)
    if callable(custom):  # a user schedule that knows its own cycles
        return iter(cast(Callable[[], Iterator[int]], custom)())
    return iter(())


def cycle_ends(schedule: Schedule, iterations: int) -> list[int]:
    """The iteration counts up to ``iterations`` at which a cycle of ``schedule`` ends.

    After that many optimizer steps a cycle is complete and the next LR is the
    cycle's low point: ``k * cycle_length`` for the cyclic policies, the end of
    each restart period for SGDR (``cosine_restarts``), ``total_steps`` for
    one-cycle. ``fixed``, ``step`` and ``exp`` have no cycles. A user schedule
    may say where its cycles end with a ``cycle_ends()`` method returning an
    increasing iterator of iteration counts.

    Args:
        schedule: any :class:`Schedule`.
        iterations: the run's length in iterations; later ends are left out.

    Returns:
        The cycle ends in increasing order, each ``<= iterations``.

    Raises:
        ScheduleError: if ``iterations`` is not a non-negative integer.

    Example:
        >>> cycle_ends(CosineWarmRestartsSchedule(max_lr=0.1, T_0=10, T_mult=2), 100)
        [10, 30, 70]
        >>> cycle_ends(ConstantSchedule(0.1), 100)
        []
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ScheduleError(f"iterations must be a non-negative integer, got {iterations!r}")
    return list(itertools.takewhile(lambda end: end <= iterations, _iter_cycle_ends(schedule)))


def _length_arg(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ScheduleError(f"{name} must be a positive integer, got {value!r}")
    return value


def schedule_length(
    policy: str,
    *,
    cycles: int | None = None,
    iterations: int | None = None,
    epochs: int | None = None,
    iters_per_epoch: int | None = None,
    whole_cycles: bool = True,
    **schedule_kwargs: Any,
) -> int:
    """A run's length in iterations, from cycles, iterations or epochs.

    Give at most one of ``cycles``, ``iterations`` and ``epochs`` (with
    ``iters_per_epoch``). For the cyclic policies (:data:`CYCLIC_POLICIES`) a
    length in iterations or epochs must end on a cycle end while
    ``whole_cycles`` is true: the paper stops training where the LR is back at
    ``base_lr``, and a run cut mid-cycle ends on a high LR. Without any length,
    one-cycle runs its ``total_steps``; the other policies need one.

    Args:
        policy: a name from :data:`POLICIES`.
        cycles: whole cycles to run (cyclic policies only).
        iterations: optimizer steps to run.
        epochs: epochs to run, with ``iters_per_epoch``.
        iters_per_epoch: batches per epoch, to turn ``epochs`` into iterations.
        whole_cycles: refuse a cyclic run that ends mid-cycle.
        **schedule_kwargs: the schedule's arguments, as for :func:`make_schedule`.

    Returns:
        The number of iterations, at least 1.

    Raises:
        ScheduleError: naming the argument, for a bad schedule, a bad or
            conflicting length, ``cycles`` with a policy that has none, a length
            that ends mid-cycle while ``whole_cycles`` is true, or no length.

    Example:
        >>> kw = {"base_lr": 0.001, "max_lr": 0.006, "step_size_up": 50}
        >>> schedule_length("triangular", epochs=4, iters_per_epoch=50, **kw)
        200
        >>> schedule_length("triangular", iterations=250, **kw)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        clr.exceptions.ScheduleError: iterations=250 ends mid-cycle: cycles end at 200 and 300 ...
    """
    if not isinstance(whole_cycles, bool):
        raise ScheduleError(f"whole_cycles must be true or false, got {whole_cycles!r}")
    given = [
        name
        for name, value in (("cycles", cycles), ("iterations", iterations), ("epochs", epochs))
        if value is not None
    ]
    if len(given) > 1:
        raise ScheduleError(f"give one of cycles, iterations or epochs, got {' and '.join(given)}")
    if epochs is None and iters_per_epoch is not None:
        _length_arg("iters_per_epoch", iters_per_epoch)  # checked even when unused
    schedule = make_schedule(policy, **schedule_kwargs)
    cyclic = policy in CYCLIC_POLICIES
    if cycles is not None:
        n = _length_arg("cycles", cycles)
        if not cyclic:
            raise ScheduleError(
                f"cycles is only for the cyclic policies {list(CYCLIC_POLICIES)}; policy "
                f"{policy!r} has no cycles: give iterations or epochs"
            )
        ends = list(itertools.islice(_iter_cycle_ends(schedule), n))
        if len(ends) < n:
            raise ScheduleError(
                f"cycles must be at most {len(ends)} for policy {policy!r}, got {cycles!r}"
            )
        return ends[-1]
    if epochs is not None:
        n_epochs = _length_arg("epochs", epochs)
        if iters_per_epoch is None:
            raise ScheduleError("iters_per_epoch is required with epochs")
        length, name = n_epochs * _length_arg("iters_per_epoch", iters_per_epoch), "epochs"
    elif iterations is not None:
        length, name = _length_arg("iterations", iterations), "iterations"
    elif isinstance(schedule, OneCycleSchedule):
        return schedule.total_steps
    else:
        raise ScheduleError(
            f"policy {policy!r} needs a length: give cycles, iterations or epochs"
            if cyclic
            else f"policy {policy!r} needs a length: give iterations or epochs"
        )
    if isinstance(schedule, OneCycleSchedule) and length > schedule.total_steps:
        raise ScheduleError(
            f"{name} gives {length} iterations, past the one-cycle total_steps="
            f"{schedule.total_steps}"
        )
    if cyclic and whole_cycles:
        ends = cycle_ends(schedule, length)
        if not ends or ends[-1] != length:
            later = (end for end in _iter_cycle_ends(schedule) if end > length)
            nearby = [*ends[-1:], *itertools.islice(later, 1)]
            what = f"epochs={epochs} ({length} iterations)" if name == "epochs" else name
            if name == "iterations":
                what = f"iterations={length}"
            raise ScheduleError(
                f"{what} ends mid-cycle: cycles end at "
                f"{' and '.join(str(end) for end in nearby)} iterations here; "
                "choose one of those, or whole_cycles=False"
            )
    return length
