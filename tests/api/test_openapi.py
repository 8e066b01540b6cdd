"""The OpenAPI document declares what the API enforces, so generated clients send what passes.

Workload and suggestion-method names are enums read from their registries; the
cursor, ``Idempotency-Key`` and ``Last-Event-ID`` have patterns; every string
parameter says what it accepts (an enum, a pattern or a format), and none
admits control characters.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from api.app import create_app
from clr import METHODS
from clr.workloads import get_workload, list_workloads
from core.settings import Settings
from core.specs import VERIFIED_METHOD

DOC: dict[str, Any] = create_app(Settings(_env_file=None, database_url="sqlite://")).openapi()


def parameter(path: str, method: str, name: str) -> dict[str, Any]:
    for param in DOC["paths"][path][method]["parameters"]:
        if param["name"] == name:
            found: dict[str, Any] = param
            return found
    raise AssertionError(f"{method.upper()} {path} declares no parameter {name!r}")


def string_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """The string branch of a parameter's schema (an optional one is anyOf [string, null])."""
    for branch in schema.get("anyOf", [schema]):
        if branch.get("type") == "string" or "enum" in branch:
            return branch
    raise AssertionError(f"no string schema in {schema}")


def component(ref: str) -> dict[str, Any]:
    found: dict[str, Any] = DOC["components"]["schemas"][ref.rsplit("/", 1)[-1]]
    return found


@pytest.mark.parametrize(
    ("path", "method", "name"),
    [("/range-tests", "get", "workload"), ("/bounds", "get", "workload")],
)
def test_workload_names_are_an_enum_of_the_registry(path: str, method: str, name: str) -> None:
    schema = string_schema(parameter(path, method, name)["schema"])
    assert schema["enum"] == list_workloads()


def test_the_range_test_body_names_the_registered_workloads() -> None:
    body = DOC["paths"]["/range-tests"]["post"]["requestBody"]["content"]["application/json"]
    # the service's spec or, with "source": "client", one the team runs in its own loop
    specs = [component(one["$ref"]) for one in body["schema"]["oneOf"]]
    service = next(spec for spec in specs if "workload" in spec["properties"])
    assert service["properties"]["workload"]["enum"] == list_workloads()
    client = next(spec for spec in specs if "model" in spec["properties"])
    assert client["properties"]["source"]["const"] == "client"


@pytest.mark.parametrize("path", ["/bounds", "/range-tests/{job_id}/bounds"])
def test_method_names_are_an_enum_of_the_suggesters(path: str) -> None:
    enum = string_schema(parameter(path, "get", "method")["schema"])["enum"]
    assert enum == [VERIFIED_METHOD, *METHODS]


def test_the_cursor_has_the_pattern_of_the_cursors_given_out() -> None:
    schema = string_schema(parameter("/range-tests", "get", "cursor")["schema"])
    assert schema["pattern"] == "^[A-Za-z0-9_-]+$"


def test_idempotency_key_is_visible_ascii_up_to_255() -> None:
    schema = string_schema(parameter("/range-tests", "post", "Idempotency-Key")["schema"])
    assert schema["pattern"] == "^[!-~]{1,255}$"
    assert (schema["minLength"], schema["maxLength"]) == (1, 255)


def test_last_event_id_has_the_pattern_of_the_event_ids() -> None:
    schema = string_schema(
        parameter("/range-tests/{job_id}/events", "get", "Last-Event-ID")["schema"]
    )
    pattern = re.compile(schema["pattern"])
    assert pattern.fullmatch("1:120")
    assert pattern.fullmatch("120")
    assert not pattern.fullmatch("1:")
    assert not pattern.fullmatch("a:1")


def test_every_workload_param_is_declared_with_its_range_on_bounds() -> None:
    for workload in list_workloads():
        for param in get_workload(workload).params:
            schema = parameter("/bounds", "get", f"params.{param.name}")["schema"]
            assert schema["minimum"] <= param.minimum
            assert schema["maximum"] >= param.maximum


def test_submitting_declares_the_429_and_its_retry_after() -> None:
    response = DOC["paths"]["/range-tests"]["post"]["responses"]["429"]
    assert "Retry-After" in response["headers"]


HTTP_HEADERS = {"accept", "If-None-Match"}
"""Standard request headers: free-form text HTTP itself keeps control characters out of."""


def _string_parameters() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path, operations in DOC["paths"].items():
        for method, operation in operations.items():
            for param in operation.get("parameters", []):
                if param["name"] in HTTP_HEADERS:
                    continue
                for branch in param["schema"].get("anyOf", [param["schema"]]):
                    if branch.get("type") == "string":
                        found.append((f"{method.upper()} {path} {param['name']}", branch))
    return found


@pytest.mark.parametrize(("where", "schema"), _string_parameters())
def test_every_string_parameter_says_what_it_accepts(where: str, schema: dict[str, Any]) -> None:
    assert {"enum", "pattern", "format"} & set(schema), where
    if "pattern" in schema:
        # no pattern admits a NUL, a newline or another control character
        for control in ("\x00", "\n", "\x7f", "\x9b"):
            assert re.search(schema["pattern"], f"a{control}a") is None, where
