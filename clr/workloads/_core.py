"""Core types of the workload registry: parameters, workloads and built instances."""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias

from clr.exceptions import InvalidWorkloadParams

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "Batch",
    "BuilderFn",
    "CostFn",
    "LossFn",
    "MetricFn",
    "ParamSpec",
    "ParamType",
    "ParamValue",
    "Workload",
    "WorkloadCost",
    "WorkloadInstance",
]

ParamValue: TypeAlias = int | float | str | bool
"""A value a workload parameter may take."""

ParamType: TypeAlias = type[int] | type[float] | type[str] | type[bool]
"""The Python type of a workload parameter."""

Batch: TypeAlias = "tuple[torch.Tensor, torch.Tensor]"
"""One ``(inputs, targets)`` batch."""

LossFn: TypeAlias = "Callable[[torch.Tensor, torch.Tensor], torch.Tensor]"
"""``loss_fn(outputs, targets) -> scalar tensor``."""

MetricFn: TypeAlias = "Callable[[torch.Tensor, torch.Tensor], torch.Tensor]"
"""``metric_fn(outputs, targets) -> 0-dim tensor`` on the outputs' device."""

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_JSON_TYPES: dict[type, str] = {int: "integer", float: "number", str: "string", bool: "boolean"}


def _describe(value: object) -> str:
    """Short ``type (value)`` description of a rejected value for error messages."""
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{type(value).__name__} ({text})"


class _ParamRejected(Exception):
    """Internal: a single parameter value was rejected, with a human-readable reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class ParamSpec:
    """One typed, documented parameter of a workload.

    Attributes:
        name: parameter name, a Python identifier (``"batch_size"``).
        type: one of ``int``, ``float``, ``str`` or ``bool``.
        default: value used when the parameter is not given; must itself be valid.
        description: one line shown in ``--help`` texts and the JSON schema.
        minimum: inclusive lower bound, only for ``int`` and ``float`` parameters.
        maximum: inclusive upper bound, only for ``int`` and ``float`` parameters.
        choices: the only values allowed, when given.

    Raises:
        ValueError: if the specification itself is inconsistent (bad name, bounds on a
            non-numeric type, a default outside the bounds or choices, ...).
    """

    name: str
    type: ParamType
    default: ParamValue
    description: str = ""
    minimum: int | float | None = None
    maximum: int | float | None = None
    choices: tuple[ParamValue, ...] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"ParamSpec name must be a Python identifier, got {self.name!r}")
        if self.type not in _JSON_TYPES:
            raise ValueError(
                f"ParamSpec {self.name!r}: type must be int, float, str or bool, got {self.type!r}"
            )
        numeric = self.type in (int, float)
        for bound_name, bound in (("minimum", self.minimum), ("maximum", self.maximum)):
            if bound is None:
                continue
            if not numeric:
                raise ValueError(
                    f"ParamSpec {self.name!r}: {bound_name} is only allowed for int and float "
                    f"parameters, got type {self.type.__name__}"
                )
            if isinstance(bound, bool) or not isinstance(bound, int | float):
                raise ValueError(
                    f"ParamSpec {self.name!r}: {bound_name} must be a number, got {bound!r}"
                )
            if not math.isfinite(bound):
                raise ValueError(
                    f"ParamSpec {self.name!r}: {bound_name} must be finite, got {bound!r}"
                )
        if self.minimum is not None and self.maximum is not None and self.minimum > self.maximum:
            raise ValueError(
                f"ParamSpec {self.name!r}: minimum {self.minimum!r} exceeds "
                f"maximum {self.maximum!r}"
            )
        if self.choices is not None:
            if not isinstance(self.choices, tuple) or not self.choices:
                raise ValueError(
                    f"ParamSpec {self.name!r}: choices must be a non-empty tuple, "
                    f"got {self.choices!r}"
                )
            checked = []
            for choice in self.choices:
                try:
                    checked.append(self._coerce(choice))
                except _ParamRejected as exc:
                    raise ValueError(
                        f"ParamSpec {self.name!r}: choice {choice!r} is invalid: {exc.reason}"
                    ) from None
            object.__setattr__(self, "choices", tuple(checked))
        try:
            object.__setattr__(self, "default", self.validate(self.default))
        except InvalidWorkloadParams as exc:
            raise ValueError(
                f"ParamSpec {self.name!r}: default {self.default!r} is invalid: "
                f"{exc.errors[0]['reason']}"
            ) from None

    def _coerce(self, value: object) -> ParamValue:
        """Check the type and bounds of ``value`` (not choices) and return it normalised."""
        result: ParamValue
        if self.type is bool:
            if not isinstance(value, bool):
                raise _ParamRejected(f"expected a boolean, got {_describe(value)}")
            result = value
        elif self.type is int:
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise _ParamRejected(f"expected an integer, got {_describe(value)}")
            result = int(value)
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise _ParamRejected(f"expected a number, got {_describe(value)}")
            result = float(value)
            if not math.isfinite(result):
                raise _ParamRejected(f"must be a finite number, got {result!r}")
        else:
            if not isinstance(value, str):
                raise _ParamRejected(f"expected a string, got {_describe(value)}")
            if _CONTROL_CHARACTERS.search(value):
                # a NUL cannot even be stored (PostgreSQL refuses it in JSON text)
                raise _ParamRejected("must not contain control characters")
            result = value
        if isinstance(result, int | float) and not isinstance(result, bool):
            if self.minimum is not None and result < self.minimum:
                raise _ParamRejected(f"must be >= {self.minimum!r}, got {result!r}")
            if self.maximum is not None and result > self.maximum:
                raise _ParamRejected(f"must be <= {self.maximum!r}, got {result!r}")
        return result

    def validate(self, value: object) -> ParamValue:
        """Check one value against this specification.

        ``bool`` is never accepted where an ``int`` or ``float`` is expected, an ``int``
        is accepted (and converted) where a ``float`` is expected, and floats must be
        finite.

        Args:
            value: the candidate value.

        Returns:
            The value, converted to :attr:`type` (``3`` becomes ``3.0`` for a float).

        Raises:
            InvalidWorkloadParams: with one ``{"field": name, "reason": ...}`` entry.
        """
        try:
            result = self._coerce(value)
            if self.choices is not None and result not in self.choices:
                allowed = ", ".join(repr(c) for c in self.choices)
                raise _ParamRejected(f"must be one of {allowed}; got {result!r}")
        except _ParamRejected as exc:
            raise InvalidWorkloadParams([{"field": self.name, "reason": exc.reason}]) from None
        return result

    def json_schema(self) -> dict[str, Any]:
        """JSON-Schema fragment describing this parameter.

        Returns:
            A JSON-serialisable dict with ``type``, ``default``, ``description`` and,
            where set, ``minimum``, ``maximum`` and ``enum``.
        """
        schema: dict[str, Any] = {
            "type": _JSON_TYPES[self.type],
            "default": self.default,
            "description": self.description,
        }
        if self.minimum is not None:
            schema["minimum"] = self.minimum
        if self.maximum is not None:
            schema["maximum"] = self.maximum
        if self.choices is not None:
            schema["enum"] = list(self.choices)
        return schema


@dataclass
class WorkloadInstance:
    """A built workload, ready to train.

    Attributes:
        model: the network, already moved to the requested device.
        train_loader: iterable of ``(inputs, targets)`` tuples already on the device;
            each iteration is one epoch.
        val_loader: like ``train_loader`` for held-out data (unshuffled, keeps the
            last partial batch).
        loss_fn: ``loss_fn(outputs, targets)`` returning a scalar tensor.
        metric_fn: ``metric_fn(outputs, targets)`` returning a 0-dim tensor on the same
            device (no host synchronisation; call ``.item()`` yourself when needed).
        metric_name: what ``metric_fn`` measures, ``"accuracy"`` for the built-ins.
        iters_per_epoch: number of batches ``train_loader`` yields per epoch.
        num_train: number of training samples.
        num_val: number of validation samples.
        params: the validated parameters, defaults filled in.
        name: the workload's registered name.
    """

    model: nn.Module
    train_loader: Iterable[Batch]
    val_loader: Iterable[Batch]
    loss_fn: LossFn
    metric_fn: MetricFn
    metric_name: str
    iters_per_epoch: int
    num_train: int
    num_val: int
    params: dict[str, Any] = field(default_factory=dict)
    name: str = ""


BuilderFn: TypeAlias = "Callable[[dict[str, Any], int, torch.device], WorkloadInstance]"
"""``builder(params, seed, device) -> WorkloadInstance`` with already validated params."""

CheckFn: TypeAlias = Callable[[dict[str, Any]], list[dict[str, str]]]


@dataclass(frozen=True)
class WorkloadCost:
    """What one training step of a workload costs, worked out from its parameters alone.

    Pure arithmetic on the parameters: no model is built and nothing is allocated,
    so a service can refuse a job that cannot fit before any worker tries it.
    Counts are of 32-bit floats.

    Attributes:
        weights: trainable parameters of the model.
        activations: floats the forward pass keeps per sample for the backward pass.
        flops: floating-point operations of one sample's forward pass (a multiply-add
            counts 2); a training step costs about three times that per sample.
        data_bytes: bytes of the dataset the built workload holds on its device.
        efficiency: the fraction of a device's large-matmul FLOP rate this model's
            layers reach (a calibrated constant: about 1 for wide MLPs, far less for
            small convolutions), so a run time can be told from the FLOPs.
        train_samples: samples in the training split (0: not known), so an epoch's
            length in batches can be told before the workload is built.
    """

    weights: int
    activations: int
    flops: int
    data_bytes: int = 0
    efficiency: float = 1.0
    train_samples: int = 0


CostFn: TypeAlias = Callable[[dict[str, Any]], WorkloadCost]
"""``cost(params) -> WorkloadCost`` with already validated params; never builds the model."""


@dataclass(frozen=True)
class Workload:
    """A named dataset + model + loss + metric with typed parameters.

    Attributes:
        name: registry name, a Python identifier (``"digits_mlp"``).
        description: one or two sentences for listings and API documentation.
        params: the parameters :meth:`build` accepts; the build seed and device are
            separate arguments, not parameters.
        builder: ``builder(params, seed, device)`` returning a :class:`WorkloadInstance`;
            it receives params already validated by :meth:`validate_params`.
        task: the kind of problem, ``"classification"`` for every built-in.
        check: optional cross-parameter check run by :meth:`validate_params` after every
            parameter passed on its own; returns ``{"field", "reason"}`` dicts (empty when
            the combination is fine).
        cost: optional estimate of a training step's cost from validated params
            (:class:`WorkloadCost`), used to refuse jobs too large to run; it must not
            build the model or import anything heavy.

    Raises:
        ValueError: if the name is not an identifier or parameter names repeat.
    """

    name: str
    description: str
    params: tuple[ParamSpec, ...]
    builder: BuilderFn
    task: str = "classification"
    check: CheckFn | None = None
    cost: CostFn | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME_RE.match(self.name):
            raise ValueError(f"Workload name must be a Python identifier, got {self.name!r}")
        object.__setattr__(self, "params", tuple(self.params))
        seen: set[str] = set()
        for spec in self.params:
            if not isinstance(spec, ParamSpec):
                raise ValueError(
                    f"Workload {self.name!r}: params must be ParamSpec instances, got {spec!r}"
                )
            if spec.name in seen:
                raise ValueError(f"Workload {self.name!r}: parameter {spec.name!r} is repeated")
            seen.add(spec.name)
        if not callable(self.builder):
            raise ValueError(f"Workload {self.name!r}: builder must be callable")

    @property
    def defaults(self) -> dict[str, Any]:
        """The default value of every parameter, in declaration order."""
        return {spec.name: spec.default for spec in self.params}

    def validate_params(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Check parameters and fill in defaults.

        Every problem is collected before raising, so an API can show them all at once.

        Args:
            params: parameter values by name; missing ones take their defaults.

        Returns:
            A new dict holding every parameter, in declaration order.

        Raises:
            InvalidWorkloadParams: listing ``{"field", "reason"}`` for each unknown
                parameter, wrong type, non-finite float, value out of range or not among
                the choices, and each failed cross-parameter check.
        """
        given: Mapping[str, Any] = {} if params is None else params
        if not isinstance(given, Mapping):
            raise InvalidWorkloadParams(
                [{"field": "params", "reason": f"expected a mapping, got {_describe(given)}"}]
            )
        specs = {spec.name: spec for spec in self.params}
        errors: list[dict[str, str]] = []
        expected = ", ".join(specs) if specs else "(none)"
        for key in given:
            if key not in specs:
                errors.append(
                    {"field": str(key), "reason": f"unknown parameter; expected one of {expected}"}
                )
        result: dict[str, Any] = {}
        for name, spec in specs.items():
            if name not in given:
                result[name] = spec.default
                continue
            try:
                result[name] = spec.validate(given[name])
            except InvalidWorkloadParams as exc:
                errors.extend(exc.errors)
        if not errors and self.check is not None:
            errors.extend(self.check(result))
        if errors:
            raise InvalidWorkloadParams(errors)
        return result

    def estimate_cost(self, params: Mapping[str, Any] | None = None) -> WorkloadCost | None:
        """The cost of a training step with these parameters, or None if unknown.

        Args:
            params: parameter values by name; missing ones take their defaults.

        Raises:
            InvalidWorkloadParams: if the parameters are not acceptable.
        """
        validated = self.validate_params(params)
        return None if self.cost is None else self.cost(validated)

    def iters_per_epoch(self, params: Mapping[str, Any] | None = None) -> int | None:
        """Batches per epoch with these parameters (full batches of ``batch_size``),
        worked out without building anything; None when the workload cannot tell.

        Raises:
            InvalidWorkloadParams: if the parameters are not acceptable.
        """
        validated = self.validate_params(params)
        cost = None if self.cost is None else self.cost(validated)
        batch = validated.get("batch_size")
        if cost is None or not cost.train_samples or not isinstance(batch, int) or batch < 1:
            return None
        return max(1, cost.train_samples // batch)

    def param_schema(self) -> dict[str, Any]:
        """JSON Schema (draft 2020-12 compatible) of this workload's parameters.

        Returns:
            A JSON-serialisable ``{"type": "object", "properties": ..., ...}`` dict with
            ``additionalProperties: false``; no parameter is required.
        """
        return {
            "title": self.name,
            "description": self.description,
            "type": "object",
            "properties": {spec.name: spec.json_schema() for spec in self.params},
            "additionalProperties": False,
        }

    def build(
        self,
        params: Mapping[str, Any] | None = None,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
    ) -> WorkloadInstance:
        """Validate parameters and build the model and data.

        Seeds torch's global RNG with ``torch.manual_seed(seed)`` before building, so one
        seed always gives the same model initialisation (and later global-RNG draws such
        as dropout start from a known state); the training data order comes from the
        loader's own generator, also derived from ``seed``.

        Args:
            params: parameter values by name; missing ones take their defaults.
            seed: non-negative integer seed of the model init and data order. Dataset
                contents and train/validation splits do not depend on it.
            device: where the model and every batch live.

        Returns:
            The built :class:`WorkloadInstance`.

        Raises:
            InvalidWorkloadParams: if the parameters (or the seed) are not acceptable.
        """
        validated = self.validate_params(params)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise InvalidWorkloadParams(
                [
                    {
                        "field": "seed",
                        "reason": f"expected a non-negative integer, got {_describe(seed)}",
                    }
                ]
            )
        import torch  # here, not at the top: the registry is used without torch (the API)

        torch_device = torch.device(device)
        torch.manual_seed(int(seed))
        instance = self.builder(dict(validated), int(seed), torch_device)
        if not isinstance(instance, WorkloadInstance):
            raise TypeError(
                f"builder of workload {self.name!r} returned {type(instance).__name__}, "
                "expected WorkloadInstance"
            )
        instance.model.to(torch_device)
        instance.params = validated
        instance.name = self.name
        return instance
