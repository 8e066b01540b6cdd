"""Request specs: what a client sends to create a job, with every static rule.

Each spec here declares its fields and checks everything that needs neither a
model nor the service: types and ranges, ``start_lr < end_lr``, which
hyperparameters an optimizer takes, which arguments a schedule policy takes,
the size of a sweep's grid. A client can validate a spec before sending it;
the service validates the same class again and adds what only it knows (the
workload registry checks ``workload``, ``params`` and ``batch_size``, the run
length a schedule resolves to, the configuration key). Every rejected value
names its field, as pydantic locates it (``optimizer.momentum``).
"""

from __future__ import annotations

import math
import re
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    field_validator,
    model_serializer,
    model_validator,
)

from clr_sweep.contracts._validation import (
    STORED,
    FiniteFloat,
    StrictInt,
    UnitInterval,
    canonical_json,
    located,
    raise_located,
)

__all__ = [
    "DEFAULT_CYCLES",
    "DEFAULT_SNAPSHOTS",
    "DEFAULT_VERIFY_BUDGET",
    "MAX_GRID_POINTS",
    "MAX_ITERATIONS",
    "MAX_LR",
    "MAX_RANGE_TEST_SEEDS",
    "MAX_SEEDS",
    "MAX_SNAPSHOTS",
    "MAX_TRAININGS",
    "POLICY_ARGUMENTS",
    "POLICY_NAMES",
    "MAX_TAGS",
    "BoundsFrom",
    "BoundsSource",
    "ClientConfiguration",
    "ClientRangeTestSpec",
    "ClientTrainingSpec",
    "OptimizerSpec",
    "Policy",
    "RangeTestOptions",
    "RangeTestSpec",
    "ScheduleSpec",
    "SweepGrid",
    "SweepRangeTestOptions",
    "SweepSpec",
    "TrainingSpec",
    "WorkloadSpec",
]

DEFAULT_VERIFY_BUDGET = 1.0
"""A verification's default compute, in full training runs."""

DEFAULT_CYCLES = 4
"""Cycles a cyclic training runs when no length is given (the paper: 3 get most of
the way, 4 or more do better)."""

MAX_ITERATIONS = 1_000_000
"""Longest training in iterations (its series are read whole to draw its plot: a million
iterations are ~3 million numbers)."""

MAX_LR = 1e3
"""Largest learning rate a schedule may give (far above any that trains)."""

MAX_SNAPSHOTS = 10
"""Most cycle-end snapshots a snapshot ensemble averages."""

DEFAULT_SNAPSHOTS = 3
"""Snapshots of the ensemble by default (capped at the run's cycle ends)."""

MAX_GRID_POINTS = 16
"""Most grid points a sweep may have (each runs its own range test and trainings)."""

MAX_SEEDS = 10
"""Most seeds per policy."""

MAX_TRAININGS = 1000
"""Most trainings one sweep may create (grid points x policies x seeds)."""

MAX_RANGE_TEST_SEEDS = 16
"""Most seeds one range test runs (as one fused run when the model fuses)."""

_MAX_SEED = 2**32 - 1

Policy = Literal[
    "fixed", "step", "exp", "triangular", "triangular2", "exp_range", "one_cycle", "cosine_restarts"
]
"""A ``clr`` schedule policy (``clr.policies.POLICIES``; a test checks they agree)."""

POLICY_NAMES: tuple[str, ...] = get_args(Policy)
"""Every policy, in ``clr.policies.POLICIES``' order (the paper's table plus 1cycle and SGDR)."""


# --------------------------------------------------------------------------- optimizer


class OptimizerSpec(BaseModel):
    """The optimizer, by name, with its hyperparameters (see ``clr.make_optimizer``).

    ``momentum`` and ``nesterov`` apply to ``sgd``; ``betas`` and ``eps`` to ``adam``
    and ``adamw``; ``weight_decay`` to all three (decoupled for ``adamw``). A value
    for a hyperparameter the chosen optimizer does not use is refused, naming it
    (``adam takes no momentum; use betas``); only its default passes (specs stored
    by earlier versions hold every field). A dump holds only those in effect: a
    stored spec never shows a value that did nothing.
    """

    model_config = ConfigDict(extra="forbid")

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: UnitInterval = 0.9
    weight_decay: FiniteFloat = Field(default=0.0, ge=0, le=1)
    nesterov: bool = Field(default=False, strict=True)
    betas: tuple[UnitInterval, UnitInterval] = (0.9, 0.999)
    eps: FiniteFloat = Field(default=1e-8, gt=0, le=1)

    @field_validator("nesterov")
    @classmethod
    def _nesterov_needs_sgd_momentum(cls, value: bool, info: ValidationInfo) -> bool:
        if not value:
            return value
        if info.data.get("name", "sgd") != "sgd":
            return value  # refused below as a hyperparameter this optimizer has not
        if info.data.get("momentum", 0.9) == 0:
            raise ValueError("nesterov needs momentum > 0")
        return value

    @model_validator(mode="after")
    def _only_hyperparameters_in_effect(self) -> OptimizerSpec:
        # A default value is let through: every spec stored before this rule holds
        # all five fields, and a worker must still read a job queued back then.
        used = _OPTIMIZER_FIELDS[self.name]
        unused = [
            f
            for f in _ALL_OPTIMIZER_FIELDS
            if f in self.model_fields_set
            and f not in used
            and getattr(self, f) != type(self).model_fields[f].default
        ]
        if unused:
            hint = _OPTIMIZER_HINTS[self.name]
            raise_located(
                "optimizer",
                [{"field": f, "reason": f"{self.name} takes no {f}; {hint}"} for f in unused],
                {f: getattr(self, f) for f in unused},
            )
        return self

    @model_serializer(mode="wrap")
    def _dump_only_in_effect(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        used = {"name", *_OPTIMIZER_FIELDS[self.name]}
        return {k: v for k, v in data.items() if k in used}

    def effective(self) -> dict[str, Any]:
        """Only the hyperparameters this optimizer uses (what a config key covers)."""
        if self.name == "sgd":
            return {
                "name": self.name,
                "momentum": self.momentum,
                "nesterov": self.nesterov,
                "weight_decay": self.weight_decay,
            }
        return {
            "name": self.name,
            "betas": list(self.betas),
            "eps": self.eps,
            "weight_decay": self.weight_decay,
        }

    @property
    def state_slots(self) -> int:
        """Tensors of optimizer state kept per weight tensor (momentum buffers, moments)."""
        if self.name == "sgd":
            return 1 if self.momentum > 0 else 0
        return 2


_OPTIMIZER_FIELDS: dict[str, tuple[str, ...]] = {
    "sgd": ("momentum", "nesterov", "weight_decay"),
    "adam": ("weight_decay", "betas", "eps"),
    "adamw": ("weight_decay", "betas", "eps"),
}
_ALL_OPTIMIZER_FIELDS = ("momentum", "weight_decay", "nesterov", "betas", "eps")
_OPTIMIZER_HINTS = {
    "sgd": "betas and eps apply to adam and adamw",
    "adam": "use betas (momentum and nesterov apply to sgd)",
    "adamw": "use betas (momentum and nesterov apply to sgd)",
}


# --------------------------------------------------------------------------- range tests


class WorkloadSpec(BaseModel):
    """The part of a spec that says what to train: a workload, its parameters, the
    optimizer, the seed and the device (a range test's, a training's and a sweep's).

    Attributes:
        workload: a registered workload name (``GET /workloads``; the service checks it).
        batch_size: training samples per step; folded into ``params.batch_size``
            (after the service validated it both hold the batch size in use).
        params: the workload's parameters; missing ones take their defaults.
        optimizer: the optimizer and its hyperparameters.
        seed: seed of the model initialisation and data order.
        device: ``auto`` (CUDA when the worker has it), ``cpu`` or ``cuda``.
    """

    model_config = ConfigDict(extra="forbid")

    workload: str = Field(min_length=1, max_length=64)
    batch_size: StrictInt | None = Field(default=None, ge=1)
    params: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    seed: StrictInt = Field(default=0, ge=0, le=2**32 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"


class RangeTestOptions(BaseModel):
    """How each grid point's range test runs (:class:`RangeTestSpec`'s fields and
    defaults; the workload, optimizer and seed come from the sweep).

    Attributes:
        start_lr, end_lr: the swept range, ``0 < start_lr < end_lr``.
        num_iter: mini-batches in the sweep, 2 to 100,000.
        sweep: ``exp`` (geometric, the usual choice) or ``linear`` (the paper's).
        smoothing: EMA factor of the smoothed loss, in [0, 1).
        diverge_th: stop once the smoothed loss exceeds this multiple of the best.
        metric: what the suggested bounds read: ``loss`` or ``accuracy``.
    """

    model_config = ConfigDict(extra="forbid")

    start_lr: FiniteFloat = Field(default=1e-5, gt=0)
    end_lr: FiniteFloat = Field(default=10.0, gt=0)
    num_iter: StrictInt = Field(default=300, ge=2, le=100_000)
    sweep: Literal["exp", "linear"] = "exp"
    smoothing: UnitInterval = 0.95
    diverge_th: FiniteFloat = Field(default=5.0, gt=1)
    metric: Literal["loss", "accuracy"] = "loss"

    @field_validator("end_lr")
    @classmethod
    def _range_increases(cls, value: float, info: ValidationInfo) -> float:
        start_lr = info.data.get("start_lr")
        if start_lr is not None and value <= start_lr:
            raise ValueError("start_lr must be below end_lr")
        return value


def _range_test_seeds(value: list[int] | None) -> list[int] | None:
    """A range test's ``seeds``: None, or 2 to 16 distinct seeds in the ``seed`` range."""
    if value is None:
        return value
    if not 2 <= len(value) <= MAX_RANGE_TEST_SEEDS:
        raise ValueError(
            f"give 2 to {MAX_RANGE_TEST_SEEDS} seeds, got {len(value)} (one seed: use seed)"
        )
    for i, seed in enumerate(value):
        if not 0 <= seed <= _MAX_SEED:
            raise_located("seeds", [{"field": str(i), "reason": "must be in [0, 2**32)"}], {})
    _refuse_repeats(value)
    return value


class SweepRangeTestOptions(RangeTestOptions):
    """How each grid point's range test runs (a sweep's ``range_test``): the
    :class:`RangeTestOptions`, and the seeds it runs under.

    Attributes (besides :class:`RangeTestOptions`'):
        seeds: 2 to :data:`MAX_RANGE_TEST_SEEDS` distinct seeds: each grid
            point's range test runs under all of them (:class:`RangeTestSpec`'s
            ``seeds``), so its bounds' confidence uses the seeds' agreement. The
            range tests' ``seed`` (the sweep's ``seed``) is then ``seeds[0]``.
            None: one seed.
    """

    seeds: list[StrictInt] | None = None

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int] | None) -> list[int] | None:
        return _range_test_seeds(value)


class RangeTestSpec(RangeTestOptions, WorkloadSpec):
    """An LR range test: sweep the LR over ``num_iter`` mini-batches of a workload.

    Attributes (besides :class:`WorkloadSpec`'s and :class:`RangeTestOptions`'):
        verify: after the curve, prove the bounds by training: short runs from
            the same initialisation at a few candidate bound pairs, kept by
            validation loss with successive halving (child training jobs). The
            result's ``verification`` holds the winner and the evidence.
        verify_budget: the verification's whole compute, in full training runs
            (declared up front, never exceeded).
        verify_iterations: the length of the full training run the budget is
            counted in (default: the suggestion's ``stop_iteration``, 4 cycles
            of its ``step_size``).
        seeds: 2 to :data:`MAX_RANGE_TEST_SEEDS` distinct seeds to run the test
            under, one model initialisation and data order each (one fused run
            when the model fuses, else one after another). The ``curve`` series
            is ``seeds[0]``'s, and ``seed`` must equal it (it is filled in when
            left out); the ``band`` series holds the smoothed loss's mean,
            standard deviation, minimum and maximum across seeds per LR, the
            result's ``seed_band`` the bounds across seeds, and the bounds'
            confidence uses the seeds' agreement. None: one seed (``seed``).
    """

    kind: ClassVar[str] = "range_test"

    source: Literal["service"] = Field(
        default="service",
        exclude=True,
        description='`service`: a worker runs it (`"client"`: see `ClientRangeTestSpec`)',
    )
    verify: bool = Field(default=False, strict=True)
    verify_budget: FiniteFloat = Field(default=DEFAULT_VERIFY_BUDGET, gt=0, le=10)
    verify_iterations: StrictInt | None = Field(default=None, ge=2, le=1_000_000)
    seeds: list[StrictInt] | None = Field(
        default=None,
        description="run the test under 2 to 16 distinct seeds (one fused run when the model "
        "fuses): a band on the curve and a confidence from the seeds' agreement; `seed` is "
        "then `seeds[0]`, the seed of the stored curve",
    )

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int] | None) -> list[int] | None:
        return _range_test_seeds(value)

    @model_validator(mode="after")
    def _seed_is_the_first_seed(self) -> RangeTestSpec:
        if self.seeds is None:
            return self
        if "seed" not in self.model_fields_set:
            self.seed = self.seeds[0]
        elif self.seed != self.seeds[0]:
            raise located(
                type(self).__name__,
                "seed",
                f"seed is the stored curve's seed, seeds[0] = {self.seeds[0]}; got {self.seed} "
                "(leave seed out, or put it first in seeds)",
            )
        return self


# --------------------------------------------------------------------------- trainings


class ScheduleSpec(BaseModel):
    """A ``clr`` schedule by policy, with :func:`clr.policies.make_schedule`'s arguments.

    Which arguments a policy takes: ``fixed``, ``step`` and ``exp`` take ``lr``
    (``step`` also ``step_size`` and ``gamma``, ``exp`` ``gamma``);
    ``triangular``, ``triangular2`` and ``exp_range`` take ``base_lr``,
    ``max_lr``, ``step_size_up`` (default: 4 epochs' worth, the paper's 2 to 10),
    ``step_size_down``, ``gamma`` (``exp_range``), ``shape`` and, to cycle
    momentum inversely, ``base_momentum`` and ``max_momentum``; ``one_cycle``
    takes ``max_lr``, ``total_steps`` (default: the run's length),
    ``pct_start``, ``anneal_strategy``, ``div_factor``, ``final_div_factor``,
    ``three_phase``, ``base_momentum`` and ``max_momentum``;
    ``cosine_restarts`` (SGDR) takes ``max_lr``, ``T_0``, ``T_mult``,
    ``eta_min`` and ``decay``. An argument the policy does not take is refused.
    """

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    policy: Policy = "triangular"
    lr: FiniteFloat | None = Field(default=None, gt=0, le=MAX_LR)
    base_lr: FiniteFloat | None = Field(default=None, ge=0, le=MAX_LR)
    max_lr: FiniteFloat | None = Field(default=None, gt=0, le=MAX_LR)
    step_size_up: StrictInt | None = Field(default=None, ge=1, le=MAX_ITERATIONS)
    step_size_down: StrictInt | None = Field(default=None, ge=1, le=MAX_ITERATIONS)
    step_size: StrictInt | None = Field(default=None, ge=1, le=MAX_ITERATIONS)
    gamma: FiniteFloat | None = Field(default=None, gt=0, le=1)
    shape: Literal["triangle", "sine", "parabolic"] | None = None
    base_momentum: FiniteFloat | None = Field(default=None, ge=0, lt=1)
    max_momentum: FiniteFloat | None = Field(default=None, ge=0, lt=1)
    total_steps: StrictInt | None = Field(default=None, ge=1, le=MAX_ITERATIONS)
    pct_start: FiniteFloat | None = Field(default=None, gt=0, lt=1)
    anneal_strategy: Literal["cos", "linear"] | None = None
    div_factor: FiniteFloat | None = Field(default=None, ge=1, le=1e6)
    final_div_factor: FiniteFloat | None = Field(default=None, ge=1, le=1e9)
    three_phase: bool | None = None
    T_0: StrictInt | None = Field(default=None, ge=1, le=MAX_ITERATIONS)  # noqa: N815
    T_mult: StrictInt | None = Field(default=None, ge=1, le=100)  # noqa: N815
    eta_min: FiniteFloat | None = Field(default=None, ge=0, le=MAX_LR)
    decay: FiniteFloat | None = Field(default=None, gt=0, le=1)

    def arguments(self) -> dict[str, Any]:
        """The arguments given, as :func:`clr.policies.make_schedule` takes them."""
        return {k: v for k, v in self.model_dump(exclude={"policy"}).items() if v is not None}

    @model_validator(mode="after")
    def _only_arguments_of_the_policy(self) -> ScheduleSpec:
        taken = POLICY_ARGUMENTS[self.policy]
        extra = sorted(set(self.arguments()) - set(taken))
        if extra:
            raise _training_error(
                extra[0], f"policy {self.policy!r} takes no {extra[0]}; it takes {', '.join(taken)}"
            )
        if self.eta_min is not None and self.max_lr is not None and self.eta_min > self.max_lr:
            raise _training_error("eta_min", "eta_min must be <= max_lr (SGDR anneals down to it)")
        return self


def _training_error(field: str, reason: str) -> ValidationError:
    return located("TrainingSpec", field, reason)


_CYCLIC_ARGUMENTS = (
    "base_lr",
    "max_lr",
    "step_size_up",
    "step_size_down",
    "gamma",
    "shape",
    "base_momentum",
    "max_momentum",
)
POLICY_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "fixed": ("lr",),
    "step": ("lr", "step_size", "gamma"),
    "exp": ("lr", "gamma"),
    "triangular": _CYCLIC_ARGUMENTS,
    "triangular2": _CYCLIC_ARGUMENTS,
    "exp_range": _CYCLIC_ARGUMENTS,
    "one_cycle": (
        "max_lr",
        "total_steps",
        "pct_start",
        "anneal_strategy",
        "div_factor",
        "final_div_factor",
        "three_phase",
        "base_momentum",
        "max_momentum",
    ),
    "cosine_restarts": ("max_lr", "T_0", "T_mult", "eta_min", "decay"),
}
"""The :class:`ScheduleSpec` arguments each policy takes."""


class BoundsFrom(BaseModel):
    """Take the bounds from one of the team's finished range tests.

    ``method`` picks one suggestion rule (``clr.METHODS``, or ``verified``: the
    pair the test's verification proved by training); default: the test's default
    suggestion, which is the verified pair when there is one.
    """

    model_config = ConfigDict(extra="forbid")

    range_test: uuid.UUID
    method: (
        Literal["verified", "paper", "steepest", "valley", "min_div_10", "max_fraction"] | None
    ) = None


class BoundsSource(BaseModel):
    """Where a training's bounds came from (filled in at submit from ``bounds_from``)."""

    model_config = ConfigDict(extra="forbid")

    range_test: uuid.UUID
    method: str
    base_lr: float
    max_lr: float
    step_size: int | None = None


class TrainingSpec(WorkloadSpec):
    """A CLR training: a workload trained with a schedule for a length.

    Attributes (besides :class:`WorkloadSpec`'s):
        schedule: the policy and its arguments (:class:`ScheduleSpec`).
        bounds_from: take ``base_lr``/``max_lr`` (and ``step_size_up``) from a
            finished range test instead of giving them.
        bounds_source: where the bounds came from (set at submit; read only).
        cycles, iterations, epochs: the length, at most one (default: 4 cycles
            for the cyclic policies; the others need iterations or epochs).
        whole_cycles: refuse a cyclic length that ends mid-cycle (the paper
            stops where the LR is back at ``base_lr``).
        snapshots: cycle-end snapshots the snapshot ensemble averages (default:
            up to 3; 0: none).

    The service also resolves the schedule's length (``clr.policies``) and refuses
    one that is not acceptable, naming the field.
    """

    kind: ClassVar[str] = "training"

    source: Literal["service"] = Field(
        default="service",
        exclude=True,
        description='`service`: a worker runs it (`"client"`: see `ClientTrainingSpec`)',
    )
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    bounds_from: BoundsFrom | None = None
    bounds_source: BoundsSource | None = None
    cycles: StrictInt | None = Field(default=None, ge=1, le=1000)
    iterations: StrictInt | None = Field(default=None, ge=1, le=MAX_ITERATIONS)
    epochs: StrictInt | None = Field(default=None, ge=1, le=100_000)
    whole_cycles: bool = Field(default=True, strict=True)
    snapshots: StrictInt | None = Field(default=None, ge=0, le=MAX_SNAPSHOTS)

    @field_validator("bounds_source")
    @classmethod
    def _bounds_source_is_read_only(
        cls, value: BoundsSource | None, info: ValidationInfo
    ) -> BoundsSource | None:
        # set by the service from bounds_from (and read back from stored specs),
        # never by a request
        if value is not None and not (info.context or {}).get(STORED):
            raise ValueError(
                "is set by the service from bounds_from; give bounds_from or the bounds"
            )
        return value

    @model_validator(mode="after")
    def _bounds_or_bounds_from(self) -> TrainingSpec:
        if self.bounds_from is not None:
            given = [
                f for f in ("lr", "base_lr", "max_lr") if getattr(self.schedule, f) is not None
            ]
            if given:
                raise _training_error(
                    f"schedule.{given[0]}",
                    "give the bounds or bounds_from, not both",
                )
        return self


# --------------------------------------------------------------------------- sweeps


def _sweep_error(field: str, reason: str) -> ValidationError:
    return located("SweepSpec", field, reason)


def _refuse_repeats(values: Sequence[Any]) -> None:
    seen: set[Any] = set()
    for i, v in enumerate(values):
        if v in seen:
            raise_located("list", [{"field": str(i), "reason": f"{v!r} is given twice"}], {})
        seen.add(v)


class SweepGrid(BaseModel):
    """The configurations a sweep compares: the cartesian product of the lists given.

    A list given replaces the sweep's own value (a stored spec holds its
    ``batch_size`` and ``optimizer`` filled in, so giving both cannot be refused).

    Attributes:
        batch_size: batch sizes (default: the sweep's ``batch_size``).
        optimizer: optimizers with their hyperparameters (default: the sweep's).
        weight_decay: weight decays, each replacing the optimizer's own.
    """

    model_config = ConfigDict(extra="forbid")

    batch_size: list[StrictInt] | None = None
    optimizer: list[OptimizerSpec] | None = None
    weight_decay: list[FiniteFloat] | None = None

    @field_validator("batch_size", "weight_decay")
    @classmethod
    def _distinct_values(cls, value: list[Any] | None) -> list[Any] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("give at least one value, or leave it out")
        _refuse_repeats(value)
        return value

    @field_validator("weight_decay")
    @classmethod
    def _weight_decay_range(cls, value: list[float] | None) -> list[float] | None:
        for i, wd in enumerate(value or ()):
            if not 0 <= wd <= 1:
                raise_located("grid", [{"field": str(i), "reason": "must be in [0, 1]"}], {})
        return value

    @field_validator("optimizer")
    @classmethod
    def _distinct_optimizers(cls, value: list[OptimizerSpec] | None) -> list[OptimizerSpec] | None:
        if value is None:
            return value
        if not value:
            raise ValueError("give at least one optimizer, or leave it out")
        _refuse_repeats([canonical_json(o.effective()) for o in value])
        return value

    def size(self) -> int:
        """How many grid points the lists make."""
        return math.prod(len(v) for v in (self.batch_size, self.optimizer, self.weight_decay) if v)


class SweepSpec(WorkloadSpec):
    """A sweep: every policy x seed trained at the same budget, per grid point.

    Attributes (besides :class:`WorkloadSpec`'s):
        seeds: the trainings' seeds, 1 to 10 distinct (default ``[0, 1, 2]``).
            The inherited ``seed`` is the range tests' seed: ``seeds[0]`` (or
            ``range_test.seeds[0]``) unless given (every grid point's range test
            uses it, so the points differ only in their configuration).
        policies: the policies compared (default: all of :data:`POLICY_NAMES`,
            the paper's table plus one-cycle and SGDR), distinct, at least one.
        cycles: the budget in CLR cycles of ``2 * step_size`` (default 4; the
            paper: 3 get most of the way, 4 or more do better).
        step_size: iterations per half cycle (default: the range test's
            recommendation, 4 epochs).
        iterations: the budget in iterations (at least 2), instead of ``cycles`` (default
            ``cycles * 2 * step_size``). With ``whole_cycles`` it must hold
            whole cycles; without ``step_size`` the step size is then the
            divisor of ``iterations / 2`` nearest the recommendation.
        whole_cycles: the budget ends on a cycle end (the paper stops where the
            LR is back at ``base_lr``).
        fixed_lr: the fixed policy's LR (default: the ``steepest`` suggestion
            clipped into the bounds).
        range_test: how each grid point's range test runs (with ``seeds``,
            under several seeds; ``seed`` is then ``range_test.seeds[0]``).
        verify: the range tests verify their bounds by short trainings.
        verify_budget: verification's compute cap, in full training runs.
        grid: batch sizes, optimizers and weight decays to compare (their
            product, at most :data:`MAX_GRID_POINTS` points).

    The service also checks the grid's batch sizes against the workload, and
    that it can recommend a step size when none is given.
    """

    kind: ClassVar[str] = "sweep"

    seeds: list[StrictInt] = Field(default_factory=lambda: [0, 1, 2])
    policies: list[Policy] = Field(default_factory=lambda: list(POLICY_NAMES))  # type: ignore[arg-type]
    cycles: StrictInt | None = Field(default=None, ge=1, le=1000)
    step_size: StrictInt | None = Field(default=None, ge=1, le=MAX_ITERATIONS)
    iterations: StrictInt | None = Field(default=None, ge=2, le=MAX_ITERATIONS)
    whole_cycles: bool = Field(default=True, strict=True)
    fixed_lr: FiniteFloat | None = Field(default=None, gt=0, le=MAX_LR)
    range_test: SweepRangeTestOptions = Field(default_factory=SweepRangeTestOptions)
    verify: bool = Field(default=True, strict=True)
    verify_budget: FiniteFloat = Field(default=DEFAULT_VERIFY_BUDGET, gt=0, le=10)
    grid: SweepGrid | None = None

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if not value:
            raise ValueError("give at least one seed")
        if len(value) > MAX_SEEDS:
            raise ValueError(f"give at most {MAX_SEEDS} seeds, got {len(value)}")
        for i, seed in enumerate(value):
            if not 0 <= seed <= 2**32 - 1:
                raise_located("seeds", [{"field": str(i), "reason": "must be in [0, 2**32)"}], {})
        _refuse_repeats(value)
        return value

    @field_validator("policies")
    @classmethod
    def _policies(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"give at least one policy to compare, from {list(POLICY_NAMES)}")
        _refuse_repeats(value)
        return value

    @model_validator(mode="after")
    def _sweep(self) -> SweepSpec:
        range_test_seeds = self.range_test.seeds
        if "seed" not in self.model_fields_set:
            self.seed = self.seeds[0] if range_test_seeds is None else range_test_seeds[0]
        elif range_test_seeds is not None and self.seed != range_test_seeds[0]:
            raise _sweep_error(
                "seed",
                f"seed is the range tests' seed, range_test.seeds[0] = {range_test_seeds[0]}; "
                f"got {self.seed} (leave seed out, or put it first in range_test.seeds)",
            )
        self._check_grid_size()
        self._check_budget()
        return self

    def _check_grid_size(self) -> None:
        grid = self.grid
        if grid is None:
            return
        if grid.size() > MAX_GRID_POINTS:
            raise _sweep_error(
                "grid",
                f"the grid has {grid.size()} points, over {MAX_GRID_POINTS} (each runs a range "
                "test and every policy and seed); give fewer values",
            )
        trainings = grid.size() * len(self.policies) * len(self.seeds)
        if trainings > MAX_TRAININGS:
            raise _sweep_error(
                "grid",
                f"{grid.size()} grid points x {len(self.policies)} policies x {len(self.seeds)} "
                f"seeds are {trainings} trainings, over {MAX_TRAININGS}; give fewer values",
            )

    def _check_budget(self) -> None:
        if self.cycles is not None and self.iterations is not None:
            raise _sweep_error("iterations", "give cycles or iterations, not both")
        if self.iterations is not None and self.whole_cycles:
            if self.step_size is not None and self.iterations % (2 * self.step_size):
                whole = 2 * self.step_size
                below, above = (
                    self.iterations // whole * whole,
                    (self.iterations // whole + 1) * whole,
                )
                nearby = " or ".join(str(n) for n in (below, above) if n > 0)
                raise _sweep_error(
                    "iterations",
                    f"iterations={self.iterations} is not whole cycles of 2 * step_size = {whole} "
                    f"iterations; give {nearby}, or whole_cycles=false",
                )
            if self.iterations % 2:
                raise _sweep_error(
                    "iterations",
                    f"iterations={self.iterations} is odd: it holds no whole cycles of "
                    "2 * step_size; give an even number, or whole_cycles=false",
                )
        if self.step_size is not None and self.iterations is None:
            total = self.budget_cycles() * 2 * self.step_size
            if total > MAX_ITERATIONS:
                raise _sweep_error(
                    "cycles" if self.cycles is not None else "step_size",
                    f"{self.budget_cycles()} cycles of 2 * {self.step_size} iterations are "
                    f"{total}, over {MAX_ITERATIONS} (the most a training may run)",
                )

    def budget_cycles(self) -> int:
        """The cycles the budget asks for when it is not given in iterations."""
        return DEFAULT_CYCLES if self.cycles is None else self.cycles

    def children_per_point(self) -> int:
        """The sweep's own children per grid point: a range test and the trainings."""
        return 1 + len(self.policies) * len(self.seeds)


# --------------------------------------------------------------------------- client runs

MAX_TAGS = 16
"""Most tags one client configuration may have."""

_MAX_TAG_KEY = 64
_MAX_TAG_TEXT = 256
_TAG_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _one_tag_error(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    """One reason for a bad tag value, located at the tag (not one per union member)."""
    try:
        return handler(value)
    except ValidationError:
        raise ValueError(
            f"a tag's value is text of at most {_MAX_TAG_TEXT} characters or a finite "
            "number (not a boolean, null, list or object)"
        ) from None


TagValue = Annotated[
    Annotated[str, Field(max_length=_MAX_TAG_TEXT)] | StrictInt | FiniteFloat,
    WrapValidator(_one_tag_error),
]
"""A tag's value: text, or a finite number (booleans are not accepted)."""

_ConfigText = Annotated[str, Field(min_length=1, max_length=128)]


class ClientConfiguration(BaseModel):
    """A job the team runs in its own loop and uploads (``"source": "client"``): what
    it trains, by the team's own names; no worker runs it.

    Attributes:
        source: ``client``.
        model: the model's name (``resnet-tiny``), 1 to 128 characters.
        dataset: the dataset's name (``cifar10``), 1 to 128 characters.
        batch_size: training samples per step.
        optimizer: the optimizer and its hyperparameters, as a workload's.
        tags: up to 16 more things that tell configurations apart
            (``{"run": "a", "width": 128}``): names of letters, digits, ``_``,
            ``.`` and ``-``; values text (up to 256 characters) or numbers.
    """

    model_config = ConfigDict(extra="forbid")

    source: Literal["client"]
    model: _ConfigText
    dataset: _ConfigText
    batch_size: StrictInt = Field(ge=1, le=1_000_000)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    tags: dict[str, TagValue] = Field(default_factory=dict)

    @field_validator("model", "dataset")
    @classmethod
    def _plain_text(cls, value: str, info: ValidationInfo) -> str:
        if _CONTROL.search(value):
            raise ValueError(f"{info.field_name} must not contain control characters")
        return value

    @field_validator("tags")
    @classmethod
    def _small_tags(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > MAX_TAGS:
            raise ValueError(f"at most {MAX_TAGS} tags, got {len(value)}")
        problems = []
        for key, item in value.items():
            if not 1 <= len(key) <= _MAX_TAG_KEY or not _TAG_KEY.match(key):
                problems.append(
                    {
                        "field": key[:_MAX_TAG_KEY],
                        "reason": f"a tag's name is 1 to {_MAX_TAG_KEY} letters, digits, "
                        "'_', '.' or '-' (not starting with '.' or '-')",
                    }
                )
            elif isinstance(item, str) and _CONTROL.search(item):
                problems.append({"field": key, "reason": "must not contain control characters"})
        if problems:
            raise_located("tags", problems, value)
        return value


class ClientRangeTestSpec(RangeTestOptions, ClientConfiguration):
    """A range test the team runs in its own loop (``clr.RangeTest``) and uploads.

    Attributes (besides :class:`ClientConfiguration`'s and :class:`RangeTestOptions`'):
        iters_per_epoch: the team's epoch length in batches, from which the
            suggestions' ``step_size`` (4 epochs a half cycle) and stop iteration
            follow (left out: none is suggested).
    """

    kind: ClassVar[str] = "range_test"

    iters_per_epoch: StrictInt | None = Field(default=None, ge=1, le=10_000_000)


_STEP_SIZE_POLICIES = frozenset({"triangular", "triangular2", "exp_range"})
"""The cyclic policies whose half cycle is ``step_size_up``."""


class ClientTrainingSpec(ClientConfiguration):
    """A training the team runs in its own loop and logs (its LR/momentum trace and
    metrics), shown next to the service's.

    Attributes (besides :class:`ClientConfiguration`'s):
        iterations: the run's planned length in optimizer steps.
        schedule: the ``clr`` schedule it follows, if it follows one (its cycle
            ends are drawn and counted; give ``step_size_up`` for the cyclic
            policies, there being no workload to derive it from).
        range_test: the range test whose bounds it uses, if any (shown as is).
    """

    kind: ClassVar[str] = "training"

    iterations: StrictInt = Field(ge=1, le=MAX_ITERATIONS)
    schedule: ScheduleSpec | None = None
    range_test: Annotated[str, Field(max_length=64)] | None = None

    @field_validator("range_test")
    @classmethod
    def _plain_range_test(cls, value: str | None) -> str | None:
        if value is not None and _CONTROL.search(value):
            raise ValueError("range_test must not contain control characters")
        return value

    @model_validator(mode="after")
    def _cycle_length_given(self) -> ClientTrainingSpec:
        schedule = self.schedule
        if (
            schedule is not None
            and schedule.policy in _STEP_SIZE_POLICIES
            and schedule.step_size_up is None
        ):
            raise located(
                "ClientTrainingSpec",
                "schedule.step_size_up",
                f"a {schedule.policy} schedule run in the team's own loop needs step_size_up "
                "(no workload gives its epoch length)",
            )
        return self
