"""CLR training jobs: the spec, the result, and the ``training`` kind.

A training trains a workload with any ``clr`` schedule (:mod:`clr.policies`),
stepped per batch, for a length in cycles (default: 4 whole cycles, where the
LR is back at ``base_lr``; the paper: 3 get most of the way, 4 or more better),
iterations or epochs. The bounds are given, or taken from a finished range
test (``bounds_from``): at submit, :func:`prepare_training` replaces the
reference by the suggestion's bounds and step size, and records where they
came from in ``bounds_source``. A training resumes from its last cycle-end
checkpoint when its worker is lost.

Validation is torch-free (the API validates specs): the schedule is built with
:func:`clr.policies.make_schedule` and its length resolved with
:func:`clr.policies.schedule_length`, each error named by its field
(``schedule.max_lr``, ``cycles``).
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from sqlalchemy.orm import Session

from clr.exceptions import ScheduleError
from clr.policies import (
    CYCLIC_POLICIES,
    cycle_ends,
    make_schedule,
    recommend_step_size,
    schedule_length,
)
from clr.workloads import get_workload
from core.errors import InvalidJobSpec, NotReady
from core.kinds import JobKind, register_kind
from core.models import JobStatus, Team
from core.repositories import JobRepository
from core.series import SeriesSpec
from core.specs import (
    STORED,
    FiniteFloat,
    JobEstimate,
    JobResult,
    JobSpec,
    RangeTestOutcome,
    RangeTestSpec,
    StrictInt,
    WorkloadSpec,
    _raise_located,
    canonical_json,
    field_errors,
)

__all__ = [
    "DEFAULT_CYCLES",
    "EPOCHS",
    "ITERATIONS",
    "TRAINING",
    "BoundsFrom",
    "BoundsSource",
    "EpochRecord",
    "ScheduleSpec",
    "TrainingOutcome",
    "TrainingSpec",
    "prepare_training",
]

DEFAULT_CYCLES = 4
"""Cycles a cyclic training runs when no length is given (the paper: 3 get most of
the way, 4 or more do better)."""

MAX_ITERATIONS = 1_000_000
"""Longest training in iterations (its series are read whole to draw its plot: a million
iterations are ~3 million numbers)."""

MAX_CYCLES = 10_000
"""Most cycles (checkpoints) one training may have: each cycle end writes a checkpoint."""

MAX_LR = 1e3
"""Largest learning rate a schedule may give (far above any that trains)."""

MAX_SNAPSHOTS = 10
"""Most cycle-end snapshots a snapshot ensemble averages."""

DEFAULT_SNAPSHOTS = 3
"""Snapshots of the ensemble by default (capped at the run's cycle ends)."""

_FLOAT_BYTES = 4
_POLICY = Literal[
    "fixed", "step", "exp", "triangular", "triangular2", "exp_range", "one_cycle", "cosine_restarts"
]


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

    policy: _POLICY = "triangular"
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

    @property
    def cyclic(self) -> bool:
        """Whether the policy runs in cycles (a length may be given in cycles)."""
        return self.policy in CYCLIC_POLICIES

    def arguments(self) -> dict[str, Any]:
        """The arguments given, as :func:`clr.policies.make_schedule` takes them."""
        return {k: v for k, v in self.model_dump(exclude={"policy"}).items() if v is not None}

    @model_validator(mode="after")
    def _only_arguments_of_the_policy(self) -> ScheduleSpec:
        taken = _POLICY_ARGUMENTS[self.policy]
        extra = sorted(set(self.arguments()) - set(taken))
        if extra:
            raise _located(
                extra[0], f"policy {self.policy!r} takes no {extra[0]}; it takes {', '.join(taken)}"
            )
        if self.eta_min is not None and self.max_lr is not None and self.eta_min > self.max_lr:
            raise _located("eta_min", "eta_min must be <= max_lr (SGDR anneals down to it)")
        return self


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
_POLICY_ARGUMENTS: dict[str, tuple[str, ...]] = {
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

    Attributes (besides :class:`~core.specs.WorkloadSpec`'s):
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
    """

    kind: ClassVar[str] = "training"

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
        # set by prepare_training (and read back from stored specs), never by a request
        if value is not None and not (info.context or {}).get(STORED):
            raise ValueError(
                "is set by the service from bounds_from; give bounds_from or the bounds"
            )
        return value

    @model_validator(mode="after")
    def _schedule_and_length(self) -> TrainingSpec:
        if self.bounds_from is not None:
            given = [
                f for f in ("lr", "base_lr", "max_lr") if getattr(self.schedule, f) is not None
            ]
            if given:
                raise _located(
                    f"schedule.{given[0]}",
                    "give the bounds or bounds_from, not both",
                )
            return self  # the schedule is checked once prepare_training filled them in
        self.iteration_count()
        return self

    def schedule_arguments(self) -> dict[str, Any]:
        """``make_schedule``'s arguments, with the defaults that depend on the workload."""
        args = self.schedule.arguments()
        if self.schedule.policy in ("triangular", "triangular2", "exp_range"):
            if "step_size_up" not in args:
                args["step_size_up"] = recommend_step_size(self._iters_per_epoch())
        return args

    def _iters_per_epoch(self) -> int:
        per_epoch = get_workload(self.workload).iters_per_epoch(self.params)
        if per_epoch is None:
            raise _located(
                "epochs" if self.epochs is not None else "schedule.step_size_up",
                f"workload {self.workload!r} cannot tell its epoch length before it is built; "
                "give lengths in iterations",
            )
        return per_epoch

    def _length(self) -> dict[str, Any]:
        cycles = self.cycles
        if (
            cycles is None
            and self.iterations is None
            and self.epochs is None
            and self.schedule.cyclic
            and self.schedule.policy != "one_cycle"
        ):
            cycles = DEFAULT_CYCLES
        length: dict[str, Any] = {
            "cycles": cycles,
            "iterations": self.iterations,
            "epochs": self.epochs,
            "whole_cycles": self.whole_cycles,
        }
        if self.epochs is not None:
            length["iters_per_epoch"] = self._iters_per_epoch()
        return length

    def resolved_schedule(self) -> tuple[str, dict[str, Any], int]:
        """The policy, ``make_schedule``'s arguments (one-cycle's ``total_steps``
        filled in) and the run's length in iterations.

        Raises:
            ValueError: the schedule or the length is not acceptable (pydantic
                names the field).
        """
        policy = self.schedule.policy
        args = self.schedule_arguments()
        length = self._length()
        try:
            if policy == "one_cycle" and "total_steps" not in args:
                given = {k: v for k, v in length.items() if v is not None}
                if not {"iterations", "epochs"} & set(given):
                    raise _located("iterations", "one_cycle needs iterations or epochs")
                iterations = given.get("iterations") or given["epochs"] * length["iters_per_epoch"]
                args["total_steps"] = iterations
            iterations = schedule_length(policy, **length, **args)
        except ScheduleError as exc:
            raise _located(_schedule_field(str(exc)), str(exc)) from None
        if iterations > MAX_ITERATIONS:
            named = next((f for f in ("cycles", "iterations", "epochs") if length.get(f)), "cycles")
            raise _located(
                named,
                f"the training would run over {MAX_ITERATIONS} iterations (the most one may run)",
            )
        period = _shortest_cycle(policy, args)
        if period and iterations // period > MAX_CYCLES:
            field = "schedule.T_0" if policy == "cosine_restarts" else "schedule.step_size_up"
            raise _located(
                field,
                f"{iterations} iterations of cycles of {period} make over {MAX_CYCLES} cycles "
                "(a checkpoint each); lengthen the cycles or shorten the run",
            )
        return policy, args, iterations

    def iteration_count(self) -> int:
        """How many iterations (optimizer steps) the training runs."""
        return self.resolved_schedule()[2]

    def cycle_ends(self) -> list[int]:
        """The iterations at which a cycle ends (checkpoints are taken there)."""
        policy, args, iterations = self.resolved_schedule()
        return cycle_ends(make_schedule(policy, **args), iterations)

    def snapshot_count(self) -> int:
        """Snapshots the ensemble averages: at most the run's cycle ends."""
        ends = len(self.cycle_ends())
        wanted = DEFAULT_SNAPSHOTS if self.snapshots is None else self.snapshots
        return min(wanted, ends) if ends >= 2 else 0

    def config_key(self) -> str:
        """A training has no shared configuration lookup: its key covers the spec."""
        payload = {"kind": self.kind, **self.model_dump(mode="json")}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def total_steps(self) -> int:
        return self.iteration_count()

    def estimate(self) -> JobEstimate | None:
        """Memory and FLOPs from the workload's cost, for every iteration; the run keeps
        its snapshots and a checkpoint's copy of the weights."""
        kept = DEFAULT_SNAPSHOTS if self.snapshots is None else self.snapshots
        return self.workload_estimate(steps=self.iteration_count(), copies=kept + 1)


def _shortest_cycle(policy: str, args: dict[str, Any]) -> int:
    """The shortest cycle of a schedule in iterations (0: it has no cycles)."""
    if policy in ("triangular", "triangular2", "exp_range"):
        up = int(args["step_size_up"])
        return up + int(args.get("step_size_down") or up)
    if policy == "cosine_restarts":
        return int(args["T_0"])
    return 0


def _schedule_field(message: str) -> str:
    """The spec field a :class:`ScheduleError`'s message is about."""
    if "needs a length" in message:
        return "iterations"
    head = message.split(" ", 1)[0].split("=", 1)[0].strip(":,'\"")
    if head in ("cycles", "iterations", "epochs", "whole_cycles"):
        return head
    if head in ScheduleSpec.model_fields:
        return f"schedule.{head}"
    for name in ScheduleSpec.model_fields:
        if name != "policy" and (f"{name} " in message or f"{name}=" in message):
            return f"schedule.{name}"
    return "schedule"


def _located(field: str, reason: str) -> ValidationError:
    """A pydantic error located at ``field`` (dotted), for a validator to raise."""
    try:
        _raise_located("TrainingSpec", [{"field": field, "reason": reason}], {})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


class EpochRecord(BaseModel):
    """One epoch's losses and accuracies (the ``epochs`` series' point)."""

    epoch: int
    iteration: int
    train_loss: float
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None


class TrainingOutcome(JobResult):
    """A finished training: how it went, its final and best metrics and its artifacts."""

    model_config = ConfigDict(extra="forbid")

    stop_reason: str
    iterations: int
    epochs: int
    cycles: int
    cycle_ends: list[int]
    seconds: float
    device: str
    policy: str
    schedule: dict[str, Any]
    final_train_loss: float | None
    final_val_loss: float | None
    final_val_accuracy: float | None
    best_val_accuracy: float | None
    best_val_iteration: int | None
    ensemble_val_loss: float | None = None
    ensemble_val_accuracy: float | None = None
    ensemble_size: int = 0
    resumed_from: int | None = Field(
        default=None, description="The iteration the last attempt resumed from, if it did"
    )
    artifacts: list[dict[str, Any]] = Field(default_factory=list)


ITERATIONS = SeriesSpec(
    name="iterations",
    fields=("lr", "momentum", "loss"),
    optional=frozenset({"momentum"}),
    description="one point per optimizer step: the LR and momentum applied, the batch's loss",
)
EPOCHS = SeriesSpec(
    name="epochs",
    fields=("epoch", "iteration", "train_loss", "train_accuracy", "val_loss", "val_accuracy"),
    optional=frozenset({"train_accuracy", "val_loss", "val_accuracy"}),
    description="one point per epoch: its train loss and accuracy (running means over the "
    "epoch) and the validation loss and accuracy at its end",
)


def _refused(field: str, reason: str) -> InvalidJobSpec:
    return InvalidJobSpec(f"{field}: {reason}", errors=[{"field": field, "reason": reason}])


def prepare_training(session: Session, team: Team, spec: JobSpec) -> JobSpec:
    """Fill a training's bounds in from ``bounds_from`` (the team's range test).

    Raises:
        NotReady: the range test is still queued or running (409).
        InvalidJobSpec: ``bounds_from.range_test`` is not one of the team's range
            tests, failed, was cancelled or found no bounds; ``bounds_from.method``
            gave none; or the filled-in schedule is not acceptable (422, naming
            the field).
    """
    assert isinstance(spec, TrainingSpec)
    source = spec.bounds_from
    if source is None:
        return spec
    field = "bounds_from.range_test"
    job = JobRepository(session).get_for_team(team.id, source.range_test)
    if job is None or job.kind != RangeTestSpec.kind:
        raise _refused(field, f"no range test {source.range_test} of this team")
    status = JobStatus(job.status)
    if status in (JobStatus.QUEUED, JobStatus.RUNNING):
        raise NotReady(
            f"range test {job.id} is {status}; its bounds are ready once it has succeeded",
            errors=[{"field": field, "reason": f"the range test is {status}"}],
        )
    if status != JobStatus.SUCCEEDED or job.result is None:
        raise _refused(field, f"range test {job.id} {status}: it has no bounds")
    tested = RangeTestSpec.model_validate(job.spec)
    for name, theirs, ours in (
        ("workload", tested.workload, spec.workload),
        ("optimizer", tested.optimizer.name, spec.optimizer.name),
    ):
        if theirs != ours:
            raise _refused(
                field,
                f"range test {job.id} ran {name} {theirs!r}, this training {ours!r}: its "
                "bounds are for another setup",
            )
    outcome = RangeTestOutcome.model_validate(job.result)
    suggestions = outcome.bounds()
    if suggestions is None:
        raise _refused(field, f"range test {job.id} found no bounds: {outcome.no_bounds_reason}")
    method = source.method or suggestions.default_method
    chosen = next((s for s in suggestions.items if s.method == method), None)
    if chosen is None:
        why = suggestions.failed.get(method, "it gave no bounds for this curve")
        raise _refused("bounds_from.method", f"method {method!r} has no bounds: {why}")
    schedule = spec.schedule.model_dump(exclude_none=True)
    policy = spec.schedule.policy
    if policy in ("fixed", "step", "exp"):
        schedule["lr"] = chosen.base_lr
    elif policy in ("one_cycle",):
        schedule["max_lr"] = chosen.max_lr
    elif policy == "cosine_restarts":
        schedule["max_lr"] = chosen.max_lr
        schedule.setdefault("eta_min", chosen.base_lr)
    else:
        schedule["base_lr"], schedule["max_lr"] = chosen.base_lr, chosen.max_lr
        if chosen.step_size is not None:
            schedule.setdefault("step_size_up", chosen.step_size)
    data = spec.model_dump(exclude={"bounds_from"})
    data["schedule"] = schedule
    data["bounds_source"] = {
        "range_test": job.id,
        "method": chosen.method,
        "base_lr": chosen.base_lr,
        "max_lr": chosen.max_lr,
        "step_size": chosen.step_size,
    }
    try:
        return TrainingSpec.model_validate(data, context={STORED: True})
    except ValidationError as exc:
        errors = field_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        raise InvalidJobSpec(
            f"the bounds of range test {job.id} ({chosen.method}) give no valid training: {detail}",
            errors=errors,
        ) from None


TRAINING = register_kind(
    JobKind(
        name=TrainingSpec.kind,
        noun="trainings",
        title="training",
        spec=TrainingSpec,
        result=TrainingOutcome,
        runner="worker.kinds.training:run",
        series=(ITERATIONS, EPOCHS),
        resumable=True,
        time_limit_setting="training_time_limit_s",
        prepare=prepare_training,
        examples=(
            {
                "workload": "digits_mlp",
                "batch_size": 64,
                "optimizer": {"name": "sgd", "momentum": 0.9},
                "schedule": {"policy": "triangular2"},
                "bounds_from": {"range_test": "0a6c2f4e-8d2b-4c7e-9b1a-3f5d7e9c1b2a"},
                "cycles": 4,
            },
            {
                "workload": "digits_mlp",
                "schedule": {
                    "policy": "triangular",
                    "base_lr": 0.01,
                    "max_lr": 0.3,
                    "step_size_up": 88,
                },
                "cycles": 3,
            },
        ),
    )
)
"""CLR training: resumes from its last cycle-end checkpoint when its worker is lost."""
