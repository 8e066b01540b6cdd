"""The error responses routes declare in OpenAPI (``responses=``)."""

from __future__ import annotations

from typing import Any

from api.problems import PROBLEM_JSON, Problem

__all__ = ["AUTH", "INVALID", "NOT_FOUND", "Responses", "problem"]

Responses = dict[int | str, dict[str, Any]]


def problem(status: int, description: str) -> Responses:
    """A problem+json response ``status`` with ``description``."""
    return {status: {"model": Problem, "description": description, "content": {PROBLEM_JSON: {}}}}


AUTH = problem(401, "Missing, unknown or revoked bearer token")
NOT_FOUND = problem(404, "No such job for this team")
INVALID = problem(422, "An input is not acceptable; `errors` names each field")
