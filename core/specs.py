"""Job specs and results: the contract the API and workers share.

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
import json
import uuid
from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, NoReturn

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from clr.exceptions import InvalidWorkloadParams, UnknownWorkload
from clr.workloads import Workload, get_workload
from core.errors import FieldError

if TYPE_CHECKING:
    from clr import RangeTestResult, Suggestions

__all__ = [
    "CONFIG_KEY_VERSION",
    "STORED",
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
    "WorkloadSpec",
    "SuggestionDoc",
    "SuggestionsDoc",
    "canonical_json",
    "field_errors",
]

STORED = "stored"
"""Validation context key: the spec is read back from a job (fields the service filled
in at submit are accepted), not a request."""

CONFIG_KEY_VERSION = 2
"""Part of every config key, so a change to what the key covers never matches old keys.

Version 2 added ``metric``: a version-1 key (jobs submitted before) matches no lookup."""

_FLOAT_BYTES = 4
"""Bytes of a float32: the workloads train in single precision."""

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A finite number; ints are accepted, strings and booleans are not."""

StrictInt = Annotated[int, Field(strict=True)]
"""An integer; floats, strings and booleans are not accepted."""

UnitInterval = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, lt=1)]


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal values give equal strings (for hashing)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


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


def _raise_located(title: str, problems: list[FieldError], given: Mapping[str, Any]) -> NoReturn:
    """Raise a ValidationError whose locations are the problems' fields (relative)."""
    details = [
        InitErrorDetails(
            type=PydanticCustomError("value_error", "{reason}", {"reason": p["reason"]}),
            loc=(p["field"],),
            input=given.get(p["field"]),
        )
        for p in problems
    ]
    raise ValidationError.from_exception_data(title, details)


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
            _raise_located(
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


def _lookup_workload(info: ValidationInfo) -> Workload | None:
    name = info.data.get("workload")
    return get_workload(name) if isinstance(name, str) else None


class WorkloadSpec(JobSpec):
    """The part of a spec that says what to train: a workload, its parameters, the
    optimizer, the seed and the device (a range test's and a training's).

    Attributes:
        workload: a registered workload name (``clr.workloads.list_workloads()``).
        batch_size: training samples per step; folded into ``params.batch_size``
            (after validation both hold the batch size in use).
        params: the workload's parameters; missing ones take their defaults.
        optimizer: the optimizer and its hyperparameters.
        seed: seed of the model initialisation and data order.
        device: ``auto`` (CUDA when the worker has it), ``cpu`` or ``cuda``.
    """

    workload: str = Field(min_length=1, max_length=64)
    batch_size: StrictInt | None = Field(default=None, ge=1)
    params: dict[str, Any] = Field(default_factory=dict, validate_default=True)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    seed: StrictInt = Field(default=0, ge=0, le=2**32 - 1)
    device: Literal["auto", "cpu", "cuda"] = "auto"

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


DEFAULT_VERIFY_BUDGET = 1.0
"""A verification's default compute, in full training runs (see :mod:`core.verification`)."""


class RangeTestSpec(WorkloadSpec):
    """An LR range test: sweep the LR over ``num_iter`` mini-batches of a workload.

    Attributes (besides :class:`WorkloadSpec`'s):
        start_lr, end_lr: the swept range, ``0 < start_lr < end_lr``.
        num_iter: mini-batches in the sweep, 2 to 100,000.
        sweep: ``exp`` (geometric, the usual choice) or ``linear`` (the paper's).
        smoothing: EMA factor of the smoothed loss, in [0, 1).
        diverge_th: stop once the smoothed loss exceeds this multiple of the best.
        metric: what the suggested bounds read: ``loss`` or ``accuracy``.
        verify: after the curve, prove the bounds by training: short runs from
            the same initialisation at a few candidate bound pairs, kept by
            validation loss with successive halving (child training jobs;
            :mod:`core.verification`). The result's ``verification`` holds
            the winner and the evidence.
        verify_budget: the verification's whole compute, in full training runs
            (declared up front, never exceeded).
        verify_iterations: the length of the full training run the budget is
            counted in (default: the suggestion's ``stop_iteration``, 4 cycles
            of its ``step_size``).
    """

    kind: ClassVar[str] = "range_test"
    configuration_fields: ClassVar[tuple[str, ...]] = (
        "workload",
        "params",
        "batch_size",
        "optimizer",
        "metric",
    )
    """The fields :meth:`configuration` covers; the others are how the test runs."""

    start_lr: FiniteFloat = Field(default=1e-5, gt=0)
    end_lr: FiniteFloat = Field(default=10.0, gt=0)
    num_iter: StrictInt = Field(default=300, ge=2, le=100_000)
    sweep: Literal["exp", "linear"] = "exp"
    smoothing: UnitInterval = 0.95
    diverge_th: FiniteFloat = Field(default=5.0, gt=1)
    metric: Literal["loss", "accuracy"] = "loss"
    verify: bool = Field(default=False, strict=True)
    verify_budget: FiniteFloat = Field(default=DEFAULT_VERIFY_BUDGET, gt=0, le=10)
    verify_iterations: StrictInt | None = Field(default=None, ge=2, le=1_000_000)

    @field_validator("end_lr")
    @classmethod
    def _range_increases(cls, value: float, info: ValidationInfo) -> float:
        start_lr = info.data.get("start_lr")
        if start_lr is not None and value <= start_lr:
            raise ValueError("start_lr must be below end_lr")
        return value

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
        weights and of the optimizer's state to restore them."""
        return self.workload_estimate(steps=self.num_iter, copies=1 + self.optimizer.state_slots)


# --------------------------------------------------------------------------- results


class JobResult(BaseModel):
    """Base of every kind's result document (stored in ``jobs.result``)."""

    def to_json_dict(self) -> dict[str, Any]:
        """Strict-JSON form: non-finite floats become ``null``."""
        loaded: dict[str, Any] = json.loads(self.model_dump_json())
        return loaded


class SuggestionDoc(BaseModel):
    """One rule's bounds (``clr.Suggestion.to_dict()``)."""

    model_config = ConfigDict(extra="allow")

    method: str
    base_lr: float
    max_lr: float
    rationale: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    step_size: int | None = None
    stop_iteration: int | None = None
    cycles: int | None = None


class SuggestionsDoc(BaseModel):
    """Every rule's bounds for one curve (``clr.Suggestions.to_dict()``)."""

    model_config = ConfigDict(extra="allow")

    default_method: str
    default: SuggestionDoc
    items: list[SuggestionDoc]
    confidence: float
    noise: float
    warnings: list[str] = Field(default_factory=list)
    step_size: int | None = None
    stop_iteration: int | None = None
    cycles: int | None = None
    failed: dict[str, str] = Field(default_factory=dict)


class RangeTestSummary(BaseModel):
    """How a range test went (``clr.RangeTestResult.to_dict()`` without the curve)."""

    model_config = ConfigDict(extra="allow")

    stop_reason: str
    stop_detail: str
    steps_run: int
    seconds: float
    device: str
    skipped_steps: int = 0
    start_lr: float
    end_lr: float
    num_iter: int
    sweep: str
    smoothing: float
    diverge_th: float


VERIFIED_METHOD = "verified"
"""The method name of a verified winner among a range test's suggestions."""

DEFAULT_BOUNDS_CYCLES = 4
"""Cycles of a full training run (the paper's advice)."""


class CandidateDoc(BaseModel):
    """One bound pair a verification tried, and how it did in each round it ran."""

    index: int
    base_lr: float
    max_lr: float
    source: str = Field(description="where it came from: a method's name, or 'ladder:1e-2'")
    val_loss: list[float | None] = Field(
        default_factory=list, description="its validation loss after each round it ran"
    )
    val_accuracy: list[float | None] = Field(default_factory=list)
    jobs: list[uuid.UUID] = Field(default_factory=list, description="its training per round")
    failed: str | None = Field(default=None, description="why its last run failed, if it did")


class VerificationRoundDoc(BaseModel):
    """One round of successive halving: which candidates ran, for how long."""

    round: int
    size: int = Field(description="candidates the plan gives this round")
    iterations: int = Field(description="training iterations of each candidate this round")
    candidates: list[int] = Field(
        default_factory=list,
        description="indexes into the verification's candidates (empty until it starts)",
    )


class VerifiedBoundsDoc(BaseModel):
    """The bound pair that trained best."""

    base_lr: float
    max_lr: float
    source: str
    val_loss: float | None = None
    val_accuracy: float | None = None


class VerificationDoc(BaseModel):
    """Bounds proven by training (:mod:`core.verification`): the plan, the evidence and
    the winner.

    ``status`` is ``running`` while candidates train, then ``succeeded`` (a
    winner), ``failed`` (no candidate finished: ``reason``) or ``cancelled``.
    ``budget_iterations`` is declared before any candidate runs;
    ``spent_iterations`` never exceeds it.
    """

    status: Literal["running", "succeeded", "failed", "cancelled"]
    informative: bool = Field(description="whether the curve itself located the bounds")
    full_run_iterations: int
    budget_runs: float
    budget_iterations: int
    spent_iterations: int = 0
    candidates: list[CandidateDoc] = Field(default_factory=list)
    rounds: list[VerificationRoundDoc] = Field(default_factory=list)
    winner: VerifiedBoundsDoc | None = None
    reason: str | None = None

    @property
    def spent_runs(self) -> float:
        """Compute spent, in full training runs."""
        return self.spent_iterations / max(1, self.full_run_iterations)


class RangeTestOutcome(JobResult):
    """A finished range test: its summary and either bounds or why there are none."""

    model_config = ConfigDict(extra="forbid")

    summary: RangeTestSummary
    suggestions: SuggestionsDoc | None = None
    no_bounds_reason: str | None = None
    verification: VerificationDoc | None = None

    @model_validator(mode="after")
    def _bounds_or_reason(self) -> RangeTestOutcome:
        if (self.suggestions is None) == (self.no_bounds_reason is None):
            raise ValueError("give either suggestions or no_bounds_reason, not both or neither")
        return self

    def bounds(self) -> SuggestionsDoc | None:
        """The suggestions to use: with a verified winner, it comes first as method
        ``verified`` and is the default; the curve's own suggestions follow. None
        when there are no bounds at all."""
        verification = self.verification
        winner = None if verification is None else verification.winner
        if winner is None or verification is None:
            return self.suggestions
        plan = self.suggestions.default if self.suggestions is not None else None
        spent = verification.spent_runs
        loss = "?" if winner.val_loss is None else f"{winner.val_loss:.4g}"
        verified = SuggestionDoc(
            method=VERIFIED_METHOD,
            base_lr=winner.base_lr,
            max_lr=winner.max_lr,
            rationale=(
                f"proven by training: of {len(verification.candidates)} candidate pairs, "
                f"{winner.source}'s trained to the lowest validation loss ({loss}) in "
                f"{len(verification.rounds)} round(s) of successive halving, spending "
                f"{spent:.2f} of {verification.budget_runs:g} full runs"
            ),
            evidence={"source": winner.source, "val_loss": winner.val_loss},
            step_size=None if plan is None else plan.step_size,
            stop_iteration=None if plan is None else plan.stop_iteration,
            cycles=None if plan is None else plan.cycles,
        )
        if self.suggestions is None:
            reason = self.no_bounds_reason or "the curve gave no bounds"
            return SuggestionsDoc(
                default_method=VERIFIED_METHOD,
                default=verified,
                items=[verified],
                confidence=0.0,
                noise=0.0,
                warnings=[
                    f"the curve alone gave no bounds ({reason}); these were found by "
                    "training a coarse LR ladder"
                ],
                step_size=verification.full_run_iterations // (2 * DEFAULT_BOUNDS_CYCLES),
                stop_iteration=verification.full_run_iterations,
                cycles=DEFAULT_BOUNDS_CYCLES,
            )
        doc = self.suggestions
        return doc.model_copy(
            update={
                "default_method": VERIFIED_METHOD,
                "default": verified,
                "items": [verified, *doc.items],
            }
        )

    @classmethod
    def from_clr(
        cls,
        result: RangeTestResult,
        suggestions: Suggestions | None,
        *,
        no_bounds_reason: str | None = None,
    ) -> RangeTestOutcome:
        """Build from ``clr`` objects; the curve itself is stored as chunks, not here."""
        summary = {
            k: v
            for k, v in result.to_dict().items()
            if k not in ("lrs", "losses", "smoothed_losses", "accuracies")
        }
        return cls(
            summary=RangeTestSummary.model_validate(summary),
            suggestions=None
            if suggestions is None
            else SuggestionsDoc.model_validate(suggestions.to_dict()),
            no_bounds_reason=no_bounds_reason,
        )


class RangeTestResultView(BaseModel):
    """How a finished range test went; the bounds are at ``/range-tests/{id}/bounds``."""

    model_config = ConfigDict(from_attributes=True)

    summary: RangeTestSummary
    no_bounds_reason: str | None = None
    verification: VerificationDoc | None = None
