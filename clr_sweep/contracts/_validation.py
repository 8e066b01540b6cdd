"""What the contracts' validators share: strict number types and located errors."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, NoReturn

from pydantic import Field, ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError

__all__ = [
    "STORED",
    "FiniteFloat",
    "StrictInt",
    "UnitInterval",
    "canonical_json",
    "located",
    "raise_located",
]

STORED = "stored"
"""Validation context key: the spec is read back from a job (fields the service filled
in at submit are accepted), not a request."""

FiniteFloat = Annotated[float, Field(strict=True, allow_inf_nan=False)]
"""A finite number; ints are accepted, strings and booleans are not."""

StrictInt = Annotated[int, Field(strict=True)]
"""An integer; floats, strings and booleans are not accepted."""

UnitInterval = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=0, lt=1)]
"""A finite number in [0, 1)."""


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal values give equal strings (for hashing)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def raise_located(
    title: str, problems: Sequence[Mapping[str, Any]], given: Mapping[str, Any]
) -> NoReturn:
    """Raise a ValidationError whose locations are the problems' fields (relative).

    Args:
        title: the model's name, as pydantic titles its errors.
        problems: ``{"field", "reason"}`` each; a dotted field stays one location part.
        given: the values, by field, shown as each error's input.
    """
    details = [
        InitErrorDetails(
            type=PydanticCustomError("value_error", "{reason}", {"reason": p["reason"]}),
            loc=(p["field"],),
            input=given.get(p["field"]),
        )
        for p in problems
    ]
    raise ValidationError.from_exception_data(title, details)


def located(title: str, field: str, reason: str) -> ValidationError:
    """A pydantic error located at ``field`` (dotted), for a validator to raise."""
    try:
        raise_located(title, [{"field": field, "reason": reason}], {})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")
