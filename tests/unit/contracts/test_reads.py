"""The response models and result documents read what the API sends, without the service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from clr_sweep.contracts import (
    VERIFIED_METHOD,
    AnyJobRead,
    JobList,
    JobStatus,
    Problem,
    RangeTestOutcome,
    RangeTestRead,
    SweepRead,
    TrainingRead,
)

SUMMARY = {
    "stop_reason": "completed",
    "stop_detail": "ran every step",
    "steps_run": 100,
    "seconds": 1.5,
    "device": "cpu",
    "start_lr": 1e-5,
    "end_lr": 10.0,
    "num_iter": 100,
    "sweep": "exp",
    "smoothing": 0.95,
    "diverge_th": 5.0,
}
PAPER = {"method": "paper", "base_lr": 0.01, "max_lr": 0.1, "rationale": "r", "step_size": 40}
SUGGESTIONS = {
    "default_method": "paper",
    "default": PAPER,
    "items": [PAPER],
    "confidence": 0.8,
    "noise": 0.1,
    "stop_iteration": 320,
}


def job(kind: str, **fields: Any) -> dict[str, Any]:
    """A job as the API sends it."""
    return {
        "id": str(uuid.uuid4()),
        "kind": kind,
        "status": "queued",
        "spec": {"workload": "digits_mlp"},
        "attempt": 0,
        "max_attempts": 3,
        "cancel_requested": False,
        "progress": 0,
        "total": 100,
        "worker": None,
        "device": None,
        "error": None,
        "created_at": "2026-11-29T09:00:00Z",
        "started_at": None,
        "finished_at": None,
        "heartbeat_at": None,
        **fields,
    }


@pytest.mark.parametrize(
    ("kind", "model"),
    [("range_test", RangeTestRead), ("training", TrainingRead), ("sweep", SweepRead)],
)
def test_a_job_reads_as_its_kinds_model(kind: str, model: type[Any]) -> None:
    read = TypeAdapter(AnyJobRead).validate_python(job(kind))
    assert type(read) is model
    assert read.status is JobStatus.QUEUED
    assert not read.status.finished


def test_a_job_of_an_unknown_kind_is_refused_naming_kind() -> None:
    with pytest.raises(ValidationError, match="kind"):
        TypeAdapter(AnyJobRead).validate_python(job("toy"))


def test_a_range_tests_result_is_typed() -> None:
    read = RangeTestRead.model_validate(
        job("range_test", status="succeeded", result={"summary": SUMMARY})
    )
    assert read.result is not None
    assert read.result.summary.steps_run == 100
    assert read.status.finished


def test_a_page_holds_jobs_of_every_kind() -> None:
    page = JobList.model_validate({"items": [job("sweep"), job("training")], "next_cursor": "abc"})
    assert [type(item) for item in page.items] == [SweepRead, TrainingRead]


def test_a_job_reads_from_attributes() -> None:
    # the API validates its ORM rows: any object with the fields will do
    row = SimpleNamespace(**job("training"))
    row.created_at = datetime(2026, 11, 29, 9, tzinfo=UTC)
    row.result = None
    read = TrainingRead.model_validate(row)
    assert read.kind == "training"
    assert read.created_at.year == 2026


def test_a_problem_reads_with_its_field_errors() -> None:
    problem = Problem.model_validate(
        {
            "type": "urn:clr-sweep:problem:invalid-input",
            "title": "Invalid input",
            "status": 422,
            "detail": "end_lr: start_lr must be below end_lr",
            "errors": [{"field": "end_lr", "reason": "start_lr must be below end_lr"}],
        }
    )
    assert problem.errors[0].field == "end_lr"
    assert problem.instance is None


def test_an_outcome_has_bounds_or_a_reason() -> None:
    with pytest.raises(ValidationError, match="either suggestions or no_bounds_reason"):
        RangeTestOutcome.model_validate({"summary": SUMMARY})
    outcome = RangeTestOutcome.model_validate({"summary": SUMMARY, "suggestions": SUGGESTIONS})
    bounds = outcome.bounds()
    assert bounds is not None
    assert bounds.default.method == "paper"


def test_a_verified_winner_comes_first_in_the_bounds() -> None:
    verification = {
        "status": "succeeded",
        "informative": True,
        "full_run_iterations": 320,
        "budget_runs": 1.0,
        "budget_iterations": 320,
        "spent_iterations": 160,
        "winner": {"base_lr": 0.02, "max_lr": 0.2, "source": "paper", "val_loss": 0.31},
    }
    outcome = RangeTestOutcome.model_validate(
        {"summary": SUMMARY, "suggestions": SUGGESTIONS, "verification": verification}
    )
    bounds = outcome.bounds()
    assert bounds is not None
    assert [s.method for s in bounds.items] == [VERIFIED_METHOD, "paper"]
    assert (bounds.default.base_lr, bounds.default.step_size) == (0.02, 40)
