"""A training's spec before it runs: its estimate, and what a refusal names."""

from __future__ import annotations

from typing import Any

import pytest

from clr.policies import POLICIES, SHAPES
from core.errors import JobTooLarge
from core.kinds import get_kind
from core.services.jobs import _check_estimate
from core.settings import Settings
from core.training import DEFAULT_SNAPSHOTS, ScheduleSpec, TrainingSpec

SCHEDULE = {"policy": "triangular", "base_lr": 0.01, "max_lr": 0.1, "step_size_up": 20}


def spec(**overrides: Any) -> TrainingSpec:
    data: dict[str, Any] = {"workload": "digits_mlp", "schedule": SCHEDULE, "cycles": 3}
    data.update(overrides)
    return TrainingSpec.model_validate(data)


def refusal(training: TrainingSpec, **caps: Any) -> list[dict[str, str]]:
    with pytest.raises(JobTooLarge) as caught:
        _check_estimate(training, Settings(_env_file=None, **caps), kind=get_kind("training"))
    return list(caught.value.errors)


class TestEstimate:
    def test_runs_every_iteration(self) -> None:
        estimate = spec().estimate()
        assert estimate is not None
        assert estimate.steps == 3 * 40

    def test_counts_the_default_snapshots_it_keeps(self) -> None:
        default, none = spec().estimate(), spec(snapshots=0).estimate()
        assert default is not None
        assert none is not None
        assert default.memory_bytes - none.memory_bytes == DEFAULT_SNAPSHOTS * 4 * default.weights


class TestTooLarge:
    def test_a_long_run_names_its_length(self) -> None:
        errors = refusal(spec(cycles=10_000 // 40), max_job_seconds=1e-6)
        assert [e["field"] for e in errors] == ["cycles"]
        assert "CLR_MAX_JOB_SECONDS" in errors[0]["reason"]

    def test_a_wide_model_names_its_parameter(self) -> None:
        errors = refusal(spec(params={"width": 4096}), max_job_memory_bytes=2**20)
        assert [e["field"] for e in errors] == ["params.width"]

    def test_without_a_length_the_time_cap_names_the_time_limit(self) -> None:
        long_cycles = {**SCHEDULE, "step_size_up": 5000}  # 4 cycles by default: 40,000 steps
        training = spec(cycles=None, schedule=long_cycles)
        errors = refusal(training, max_job_seconds=None, training_time_limit_s=1)
        assert errors[0]["field"] == "workload"
        assert "CLR_TRAINING_TIME_LIMIT_S" in errors[0]["reason"]


class TestScheduleSpec:
    def test_offers_every_clr_policy_and_shape(self) -> None:
        schema = ScheduleSpec.model_json_schema()["properties"]
        assert set(schema["policy"]["enum"]) == set(POLICIES)
        shapes = {v for option in schema["shape"]["anyOf"] for v in option.get("enum", [])}
        assert shapes == set(SHAPES)
