"""Job specs and results: the contracts' classes with what needs the domain.

The fields and every static rule of each spec and result document live in
:mod:`clr_sweep.contracts` (shared with the client); the specs here subclass
them to add what needs the workload registry (``workload``, ``params``,
``batch_size``), the configuration key, the step count and the estimate.
Result documents are the contracts' own classes, re-exported.

A spec is validated once, when the job is submitted, and stored normalised in
``jobs.spec`` (defaults filled in, workload parameters checked by the workload
itself). Each kind of job (:mod:`core.kinds`) names its spec and result class;
the lifecycle code in :mod:`core.services` looks kinds up there.

Every rejected value names its field: pydantic's location, with workload
parameters under ``params.<name>`` (``params.width``), and
:func:`field_errors` turns a :class:`pydantic.ValidationError` into
``[{"field", "reason"}]``.
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import (
    BaseModel,
    ConfigDict,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from clr.exceptions import InvalidWorkloadParams, UnknownWorkload
from clr.workloads import Workload, get_workload
from clr_sweep import contracts
from clr_sweep.contracts import (
    DEFAULT_BOUNDS_CYCLES,
    DEFAULT_VERIFY_BUDGET,
    STORED,
    VERIFIED_METHOD,
    CandidateDoc,
    FiniteFloat,
    JobResult,
    OptimizerSpec,
    RangeTestOutcome,
    RangeTestResultView,
    RangeTestSummary,
    SeedBandDoc,
    SeedSpreadDoc,
    StrictInt,
    SuggestionDoc,
    SuggestionsDoc,
    UnitInterval,
    VerificationDoc,
    VerificationRoundDoc,
    VerifiedBoundsDoc,
    canonical_json,
)
from clr_sweep.contracts._validation import raise_located as _raise_located

if TYPE_CHECKING:
    import torch

    from clr.workloads import WorkloadInstance
from core.errors import FieldError

__all__ = [
    "CONFIG_KEY_VERSION",
    "DEFAULT_BOUNDS_CYCLES",
    "DEFAULT_VERIFY_BUDGET",
    "STORED",
    "VERIFIED_METHOD",
    "CandidateDoc",
    "JobEstimate",
    "JobResult",
    "JobSpec",
    "FiniteFloat",
    "OptimizerSpec",
    "StrictInt",
    "RangeTestOutcome",
    "RangeTestResultView",
    "RangeTestSpec",
    "RangeTestSummary",
    "SeedBandDoc",
    "SeedSpreadDoc",
    "UnitInterval",
    "VerificationDoc",
    "VerificationRoundDoc",
    "VerifiedBoundsDoc",
    "WorkloadSpec",
    "SuggestionDoc",
    "SuggestionsDoc",
    "canonical_json",
    "field_errors",
]

CONFIG_KEY_VERSION = 2
"""Part of every config key, so a change to what the key covers never matches old keys.

Version 2 added ``metric``: a version-1 key (jobs submitted before) matches no lookup."""

_FLOAT_BYTES = 4
"""Bytes of a float32: the workloads train in single precision."""


def field_errors(exc: ValidationError) -> list[FieldError]:
    """``[{"field", "reason"}]`` of a pydantic error; locations become dotted names.

    Example:
        >>> try:
        ...     RangeTestSpec.model_validate({"workload": "digits_mlp", "start_lr": 1, "end_lr": 1})
        ... except ValidationError as exc:
        ...     field_errors(exc)
        [{'field': 'end_lr', 'reason': 'start_lr must be below end_lr'}]
    """
    out: list[FieldError] = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(part) for part in error["loc"]) or "spec"
        reason = error["msg"]
        cause = error.get("ctx", {}).get("error")
        if error["type"] == "value_error" and cause is not None:
            reason = str(cause)  # without pydantic's "Value error, " prefix
        out.append({"field": field, "reason": reason})
    return out


# --------------------------------------------------------------------------- specs


class JobSpec(BaseModel):
    """Base of every kind's spec: what the lifecycle needs to know about a job.

    Pydantic's model metaclass is an ``ABCMeta``, so a kind must implement the
    abstract methods before it can be built.
    """

    model_config = ConfigDict(extra="forbid")

    kind: ClassVar[str]

    @abstractmethod
    def config_key(self) -> str:
        """SHA-256 (hex) of what makes two jobs "the same configuration"."""

    @abstractmethod
    def total_steps(self) -> int:
        """How many progress points the job reports when it runs to the end."""

    def workload_name(self) -> str | None:
        """The workload the job runs, if any (stored in its own column, for filters)."""
        return None

    def estimate(self) -> JobEstimate | None:
        """What the job will need, from the spec alone; None when it cannot be told."""
        return None


@dataclass(frozen=True)
class JobEstimate:
    """A job's needs worked out from its spec before it is queued (no model is built).

    Attributes:
        memory_bytes: peak memory of the run: weights, their gradients, the
            optimizer's state, the copy a range test keeps to restore them, the
            activations of one batch (and their gradients) and the dataset.
        flops_per_step: floating-point operations of one training step (forward
            and backward: about three forward passes of the batch).
        steps: training steps the job runs at most.
        weights: trainable parameters of the model.
        efficiency: the fraction of a device's FLOP rate the model reaches
            (:attr:`clr.workloads.WorkloadCost.efficiency`).
    """

    memory_bytes: int
    flops_per_step: int
    steps: int
    weights: int
    efficiency: float = 1.0

    @property
    def flops(self) -> int:
        """Floating-point operations of the whole job."""
        return self.flops_per_step * self.steps

    def seconds(self, flop_rate: float) -> float:
        """The run time on a device sustaining ``flop_rate`` FLOP/s on large matmuls."""
        return self.flops / (flop_rate * self.efficiency)


def _lookup_workload(info: ValidationInfo) -> Workload | None:
    name = info.data.get("workload")
    return get_workload(name) if isinstance(name, str) else None


class WorkloadSpec(contracts.WorkloadSpec, JobSpec):
    """:class:`clr_sweep.contracts.WorkloadSpec` checked against the workload registry:
    ``workload`` is a registered name, ``params`` its parameters (missing ones take
    their defaults) and ``batch_size`` one of them (after validation both hold the
    batch size in use)."""

    @field_validator("workload")
    @classmethod
    def _known_workload(cls, value: str) -> str:
        try:
            get_workload(value)
        except UnknownWorkload as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("batch_size")
    @classmethod
    def _workload_takes_batch_size(cls, value: int | None, info: ValidationInfo) -> int | None:
        workload = _lookup_workload(info)
        if value is None or workload is None:
            return value
        param = next((p for p in workload.params if p.name == "batch_size"), None)
        if param is None:
            raise ValueError(f"workload {workload.name!r} has no batch_size parameter")
        try:
            param.validate(value)
        except InvalidWorkloadParams as exc:
            raise ValueError(exc.errors[0]["reason"]) from None
        return value

    @field_validator("params")
    @classmethod
    def _valid_workload_params(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        workload = _lookup_workload(info)
        if workload is None:
            return value  # the workload's own error is reported
        merged = dict(value)
        batch_size = info.data.get("batch_size")
        if batch_size is not None:
            if "batch_size" in merged and merged["batch_size"] != batch_size:
                reason = f"conflicts with batch_size={batch_size}; give only one of them"
                _raise_located("params", [{"field": "batch_size", "reason": reason}], merged)
            merged["batch_size"] = batch_size
        try:
            return workload.validate_params(merged)
        except InvalidWorkloadParams as exc:
            problems: list[FieldError] = [
                {"field": e["field"], "reason": e["reason"]} for e in exc.errors
            ]
            _raise_located("params", problems, merged)

    @model_validator(mode="after")
    def _batch_size_in_use(self) -> WorkloadSpec:
        if "batch_size" in self.params:
            self.batch_size = int(self.params["batch_size"])
        return self

    def workload_name(self) -> str | None:
        return self.workload

    def build(self, *, lr: float, device: str) -> tuple[WorkloadInstance, torch.optim.Optimizer]:
        """The workload built from ``seed`` on ``device``, and the spec's optimizer over its
        weights at ``lr`` (imports torch: the worker's and the local command's side)."""
        from clr.optim import make_optimizer
        from clr.workloads import build_workload

        built = build_workload(self.workload, self.params, seed=self.seed, device=device)
        optimizer = make_optimizer(
            self.optimizer.name, built.model.parameters(), lr=lr, **self.optimizer_kwargs()
        )
        return built, optimizer

    def optimizer_kwargs(self) -> dict[str, Any]:
        """The optimizer's hyperparameters as :func:`clr.make_optimizer` (and the fused
        runs, :class:`clr.FusedTrainer` and :class:`clr.FusedRangeTest`) take them."""
        o = self.optimizer
        return {
            "momentum": o.momentum,
            "weight_decay": o.weight_decay,
            "nesterov": o.nesterov,
            "betas": o.betas,
            "eps": o.eps,
        }

    def workload_estimate(self, *, steps: int, copies: int) -> JobEstimate | None:
        """A run of ``steps`` training steps that keeps ``copies`` more copies of the
        weights than training itself needs, from the workload's
        :class:`~clr.workloads.WorkloadCost` (None when the workload has none).

        Memory: the weights, their gradients, the optimizer's state, the copies, the
        activations of one batch and their gradients, and the dataset.
        """
        cost = get_workload(self.workload).estimate_cost(self.params)
        if cost is None:
            return None
        batch = int(self.params.get("batch_size") or 1)
        slots = self.optimizer.state_slots
        floats = cost.weights * (2 + slots + copies) + 2 * batch * cost.activations
        return JobEstimate(
            memory_bytes=floats * _FLOAT_BYTES + cost.data_bytes,
            flops_per_step=3 * batch * cost.flops,
            steps=steps,
            weights=cost.weights,
            efficiency=cost.efficiency,
        )


class RangeTestSpec(contracts.RangeTestSpec, WorkloadSpec):
    """An LR range test (:class:`clr_sweep.contracts.RangeTestSpec`) with its workload
    checked, its configuration key and its estimate.

    ``verify`` proves the bounds with child trainings (:mod:`core.verification`).
    """

    configuration_fields: ClassVar[tuple[str, ...]] = (
        "workload",
        "params",
        "batch_size",
        "optimizer",
        "metric",
    )
    """The fields :meth:`configuration` covers; the others are how the test runs."""

    def configuration(self) -> dict[str, Any]:
        """What decides which bounds suit this job (:attr:`configuration_fields`).

        The workload, every one of its params (the batch size among them), the
        optimizer with the hyperparameters in effect, and the metric the bounds
        read. Seeds, the sweep's range, shape and length, its smoothing and
        divergence threshold, and the device change how the curve is measured,
        not which bounds suit the configuration, so they are left out.
        """
        return {
            "workload": self.workload,
            "params": self.params,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer.effective(),
            "metric": self.metric,
        }

    def config_key(self) -> str:
        """SHA-256 of :meth:`configuration` (and :data:`CONFIG_KEY_VERSION`)."""
        payload = {"v": CONFIG_KEY_VERSION, **self.configuration()}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def total_steps(self) -> int:
        return self.num_iter

    def estimate(self) -> JobEstimate | None:
        """Memory and FLOPs from the workload's cost; the sweep keeps a copy of the
        weights and of the optimizer's state to restore them. Under ``seeds`` the K
        seeds' models run at once (fused) and each step is K steps: memory and FLOPs
        scale by K."""
        one = self.workload_estimate(steps=self.num_iter, copies=1 + self.optimizer.state_slots)
        members = len(self.seeds or ()) or 1
        if one is None or members == 1:
            return one
        return replace(
            one,
            memory_bytes=one.memory_bytes * members,
            flops_per_step=one.flops_per_step * members,
        )
