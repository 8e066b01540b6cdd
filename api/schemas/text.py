"""What the API accepts as text, declared once for both the checks and the OpenAPI document.

Every string a request carries is checked here or by a ``pattern`` built from
these: no string may hold control characters (PostgreSQL refuses a NUL in a
text column, and a NUL or a newline in a name is never meant), names are
identifiers, and the enums of workload and suggestion-method names are read
from their registries when the OpenAPI document is built.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from clr import METHODS
from clr.workloads import list_workloads
from core.errors import InvalidInput
from core.specs import VERIFIED_METHOD

__all__ = [
    "CONTROL_CHARACTERS",
    "CURSOR_PATTERN",
    "IDEMPOTENCY_KEY_PATTERN",
    "TEXT_PATTERN",
    "check_method",
    "NAME_PATTERN",
    "has_control_characters",
    "json_depth",
    "method_enum",
    "string_schema",
    "workload_enum",
]

CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f"
"""C0 controls, DEL and C1 controls, as a regex character range."""

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""A registered name: workloads and suggestion methods are Python identifiers."""

TEXT_PATTERN = rf"^[^{CONTROL_CHARACTERS}]*$"
"""Text without control characters (JSON in a query parameter, a free-form header)."""

CURSOR_PATTERN = r"^[A-Za-z0-9_-]+$"
"""A page cursor: unpadded URL-safe base64, as ``next_cursor`` gives it."""

IDEMPOTENCY_KEY_PATTERN = r"^[!-~]{1,255}$"
"""1 to 255 visible ASCII characters (no spaces), such as a UUID."""

_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a C0 or C1 control character or DEL."""
    return _CONTROL.search(text) is not None


def json_depth(text: str) -> int:
    """How deeply arrays and objects nest in JSON ``text``, without parsing it.

    Brackets inside strings do not count. Malformed text gets a number too (the
    parser rejects it afterwards); the point is to refuse deep nesting before a
    recursive parser runs out of stack on it.
    """
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth = max(0, depth - 1)
    return deepest


def _set_enum(schema: dict[str, Any], values: list[str]) -> None:
    # An optional parameter's schema is anyOf [string, null]: the enum goes on the string.
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string":
            branch["enum"] = values
            branch["pattern"] = NAME_PATTERN


def string_schema(**keywords: Any) -> Callable[[dict[str, Any]], None]:
    """A ``json_schema_extra`` that declares ``keywords`` on a parameter's string schema.

    For constraints a route checks itself (to word the error its own way): the
    document declares them without pydantic enforcing them a second time.
    """

    def declare(schema: dict[str, Any]) -> None:
        for branch in schema.get("anyOf", [schema]):
            if branch.get("type") == "string":
                branch.update(keywords)

    return declare


def workload_enum(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of a workload name: the registered names, when the doc is built.

    Declared only: the registry itself refuses any other name, in words that list
    the known ones.
    """
    _set_enum(schema, list_workloads())


def method_enum(schema: dict[str, Any]) -> None:
    """``json_schema_extra`` of a suggestion method: every method ``clr`` suggests with.

    Declared only: :func:`check_method` refuses any other name.
    """
    _set_enum(schema, [VERIFIED_METHOD, *METHODS])


def check_method(method: str | None) -> None:
    """Refuse a suggestion method ``clr`` does not have, naming ``method``.

    Raises:
        InvalidInput: ``method`` is not one of :data:`clr.METHODS` or ``verified``.
    """
    known = (VERIFIED_METHOD, *METHODS)
    if method is not None and method not in known:
        reason = f"unknown method {method!r}; methods: {', '.join(known)}"
        raise InvalidInput(f"method {reason}", errors=[{"field": "method", "reason": reason}])
