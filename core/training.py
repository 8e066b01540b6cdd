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
from typing import Any

from pydantic import ValidationError, model_validator
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
from clr_sweep import contracts
from clr_sweep.contracts import (
    DEFAULT_CYCLES,
    DEFAULT_SNAPSHOTS,
    MAX_ITERATIONS,
    MAX_LR,
    MAX_SNAPSHOTS,
    BoundsFrom,
    BoundsSource,
    EpochRecord,
    ScheduleSpec,
    TrainingOutcome,
    TrainingRead,
)
from clr_sweep.contracts._validation import canonical_json, located
from core.errors import InvalidJobSpec, NotReady
from core.kinds import JobKind, register_kind
from core.models import JobStatus, Team
from core.repositories import JobRepository
from core.series import SeriesSpec
from core.specs import (
    STORED,
    JobEstimate,
    JobSpec,
    RangeTestOutcome,
    RangeTestSpec,
    WorkloadSpec,
    field_errors,
)

__all__ = [
    "DEFAULT_CYCLES",
    "DEFAULT_SNAPSHOTS",
    "EPOCHS",
    "ITERATIONS",
    "MAX_ITERATIONS",
    "MAX_LR",
    "MAX_SNAPSHOTS",
    "TRAINING",
    "BoundsFrom",
    "BoundsSource",
    "EpochRecord",
    "ScheduleSpec",
    "TrainingOutcome",
    "TrainingSpec",
    "prepare_training",
]

MAX_CYCLES = 10_000
"""Most cycles (checkpoints) one training may have: each cycle end writes a checkpoint."""

_FLOAT_BYTES = 4


class TrainingSpec(contracts.TrainingSpec, WorkloadSpec):
    """A CLR training (:class:`clr_sweep.contracts.TrainingSpec`) with its schedule and
    length resolved by :mod:`clr.policies` for its workload.

    Without ``bounds_from`` the schedule is built and its length resolved at
    validation, each error named by its field; with it, once
    :func:`prepare_training` filled the bounds in.
    """

    @model_validator(mode="after")
    def _schedule_and_length(self) -> TrainingSpec:
        if self.bounds_from is None:  # else once prepare_training filled the bounds in
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
            and self.schedule.policy in CYCLIC_POLICIES
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

    def fuse_key(self) -> str:
        """What trainings must share to run fused (:mod:`clr.fused_train`): the model
        and its data (workload and params), the optimizer, the device and the length
        in iterations. Seeds (initialisation and data order), schedules and snapshot
        counts may differ: each member has its own."""
        payload = {
            "workload": self.workload,
            "params": self.params,
            "optimizer": self.optimizer.model_dump(mode="json"),
            "device": self.device,
            "iterations": self.iteration_count(),
        }
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
    return located("TrainingSpec", field, reason)


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
        read=TrainingRead,
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
