"""Domain errors: statuses, titles and the problem+json body."""

from __future__ import annotations

import pytest

from core.errors import (
    Conflict,
    DomainError,
    IdempotencyConflict,
    InvalidInput,
    InvalidJobSpec,
    JobConflict,
    JobNotFound,
    NotFound,
    NotReady,
    TeamNameTaken,
    TeamNotFound,
    TokenNotFound,
    Unauthorized,
)


@pytest.mark.parametrize(
    ("cls", "status", "parent"),
    [
        (Unauthorized, 401, DomainError),
        (JobNotFound, 404, NotFound),
        (TeamNotFound, 404, NotFound),
        (TokenNotFound, 404, NotFound),
        (JobConflict, 409, Conflict),
        (NotReady, 409, Conflict),
        (TeamNameTaken, 409, Conflict),
        (InvalidJobSpec, 422, InvalidInput),
        (IdempotencyConflict, 422, InvalidInput),
    ],
)
def test_each_error_carries_its_http_status(
    cls: type[DomainError], status: int, parent: type[DomainError]
) -> None:
    error = cls("something")
    assert error.status == status
    assert isinstance(error, parent)
    assert str(error) == "something"


def test_problem_body_names_each_field() -> None:
    error = InvalidJobSpec(
        "invalid range_test spec: end_lr: start_lr must be below end_lr",
        errors=[{"field": "end_lr", "reason": "start_lr must be below end_lr"}],
    )
    assert error.to_problem() == {
        "type": "urn:clr-sweep:problem:invalid-job-spec",
        "title": "Invalid job spec",
        "status": 422,
        "detail": "invalid range_test spec: end_lr: start_lr must be below end_lr",
        "errors": [{"field": "end_lr", "reason": "start_lr must be below end_lr"}],
    }


def test_problem_body_without_field_errors_has_no_errors_member() -> None:
    assert JobNotFound("job 1 not found").to_problem() == {
        "type": "urn:clr-sweep:problem:job-not-found",
        "title": "Job not found",
        "status": 404,
        "detail": "job 1 not found",
    }
