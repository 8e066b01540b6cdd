"""The request specs' static rules hold in the contracts alone, without the service.

Each rule refuses its value naming the field, as the API's 422 does; the
workload registry is not consulted here (any workload name passes: the
service checks it).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from clr_sweep.contracts import (
    MAX_GRID_POINTS,
    MAX_TRAININGS,
    POLICY_ARGUMENTS,
    POLICY_NAMES,
    STORED,
    BoundsFrom,
    OptimizerSpec,
    RangeTestOptions,
    RangeTestSpec,
    ScheduleSpec,
    SweepGrid,
    SweepSpec,
    TrainingSpec,
)


def refused(model: type[BaseModel], data: dict[str, Any], **context: Any) -> dict[str, str]:
    """The errors of validating ``data``, as ``{dotted field: message}``."""
    with pytest.raises(ValidationError) as caught:
        model.model_validate(data, context=context or None)
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in caught.value.errors()}


# --------------------------------------------------------------------------- range tests


def test_a_range_test_names_any_workload_the_service_checks_it() -> None:
    spec = RangeTestSpec(workload="my_private_model", start_lr=1e-4, end_lr=1.0)
    assert (spec.kind, spec.num_iter, spec.metric, spec.verify) == (
        "range_test",
        300,
        "loss",
        False,
    )


@pytest.mark.parametrize("end_lr", [0.5, 1.0])
def test_start_lr_must_be_below_end_lr(end_lr: float) -> None:
    errors = refused(RangeTestSpec, {"workload": "w", "start_lr": 1.0, "end_lr": end_lr})
    assert list(errors) == ["end_lr"]
    assert "start_lr must be below end_lr" in errors["end_lr"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("start_lr", 0),
        ("start_lr", "1e-3"),
        ("end_lr", float("inf")),
        ("num_iter", 1),
        ("num_iter", 100_001),
        ("num_iter", 3.0),
        ("smoothing", 1.0),
        ("diverge_th", 1.0),
        ("metric", "f1"),
        ("sweep", "cosine"),
        ("verify", "yes"),
        ("verify_budget", 11),
        ("verify_iterations", 1),
        ("seed", -1),
        ("device", "tpu"),
        ("batch_size", 0),
        ("workload", ""),
    ],
)
def test_a_range_test_field_out_of_range_is_refused_naming_it(field: str, value: Any) -> None:
    assert list(refused(RangeTestSpec, {"workload": "w", field: value})) == [field]


def test_an_unknown_field_is_refused_naming_it() -> None:
    assert list(refused(RangeTestSpec, {"workload": "w", "lr_max": 1.0})) == ["lr_max"]


def test_a_sweeps_range_test_options_have_the_same_rule() -> None:
    assert list(refused(RangeTestOptions, {"start_lr": 2.0, "end_lr": 1.0})) == ["end_lr"]
    assert issubclass(RangeTestSpec, RangeTestOptions)  # the fields are declared once


# --------------------------------------------------------------------------- optimizer


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"name": "adam", "momentum": 0.5}, "momentum"),
        ({"name": "adamw", "nesterov": True}, "nesterov"),
        ({"name": "sgd", "betas": [0.8, 0.9]}, "betas"),
        ({"name": "sgd", "eps": 1e-6}, "eps"),
    ],
)
def test_an_optimizer_refuses_a_hyperparameter_it_does_not_take(
    data: dict[str, Any], field: str
) -> None:
    errors = refused(OptimizerSpec, data)
    assert list(errors) == [field]
    assert f"{data['name']} takes no {field}" in errors[field]


def test_nesterov_needs_momentum() -> None:
    errors = refused(OptimizerSpec, {"name": "sgd", "momentum": 0, "nesterov": True})
    assert "nesterov needs momentum > 0" in errors["nesterov"]


def test_an_optimizer_dumps_only_the_hyperparameters_in_effect() -> None:
    # a default of another optimizer's hyperparameter passes (stored specs hold all five)
    adam = OptimizerSpec(name="adam", momentum=0.9, betas=(0.8, 0.99))
    assert adam.model_dump() == {
        "name": "adam",
        "weight_decay": 0.0,
        "betas": (0.8, 0.99),
        "eps": 1e-8,
    }
    assert set(OptimizerSpec().model_dump()) == {"name", "momentum", "nesterov", "weight_decay"}
    assert (OptimizerSpec().state_slots, adam.state_slots) == (1, 2)


def test_an_optimizer_in_a_spec_is_named_by_its_path() -> None:
    errors = refused(
        RangeTestSpec, {"workload": "w", "optimizer": {"name": "adam", "momentum": 0.5}}
    )
    assert list(errors) == ["optimizer.momentum"]


# --------------------------------------------------------------------------- trainings


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_a_schedule_refuses_an_argument_its_policy_does_not_take(policy: str) -> None:
    other = next(
        name
        for name in ("lr", "T_0", "base_lr", "three_phase")
        if name not in POLICY_ARGUMENTS[policy]
    )
    value: Any = True if other == "three_phase" else 1 if other == "T_0" else 0.1
    errors = refused(ScheduleSpec, {"policy": policy, other: value})
    assert list(errors) == [other]
    assert f"policy {policy!r} takes no {other}" in errors[other]


def test_sgdr_anneals_down_to_eta_min() -> None:
    data = {"policy": "cosine_restarts", "max_lr": 0.1, "eta_min": 0.2}
    assert list(refused(ScheduleSpec, data)) == ["eta_min"]


def test_a_training_takes_the_bounds_or_bounds_from_not_both() -> None:
    data = {
        "workload": "w",
        "schedule": {"policy": "triangular", "max_lr": 0.1},
        "bounds_from": {"range_test": str(uuid.uuid4())},
    }
    assert list(refused(TrainingSpec, data)) == ["schedule.max_lr"]


def test_bounds_source_is_set_by_the_service_only() -> None:
    source = {"range_test": str(uuid.uuid4()), "method": "paper", "base_lr": 0.01, "max_lr": 0.1}
    assert list(refused(TrainingSpec, {"workload": "w", "bounds_source": source})) == [
        "bounds_source"
    ]
    stored = TrainingSpec.model_validate(
        {"workload": "w", "bounds_source": source}, context={STORED: True}
    )
    assert stored.bounds_source is not None
    assert stored.bounds_source.method == "paper"


@pytest.mark.parametrize(
    ("field", "value"),
    [("cycles", 0), ("iterations", 1_000_001), ("epochs", 0), ("snapshots", 11)],
)
def test_a_training_length_out_of_range_is_refused(field: str, value: int) -> None:
    assert list(refused(TrainingSpec, {"workload": "w", field: value})) == [field]


def test_bounds_from_names_a_suggestion_method() -> None:
    assert list(refused(BoundsFrom, {"range_test": str(uuid.uuid4()), "method": "guess"})) == [
        "method"
    ]


# --------------------------------------------------------------------------- sweeps


def test_a_sweeps_range_tests_use_its_first_seed_unless_given() -> None:
    assert SweepSpec(workload="w", seeds=[7, 8]).seed == 7
    assert SweepSpec(workload="w", seeds=[7, 8], seed=3).seed == 3
    assert list(SweepSpec(workload="w").policies) == list(POLICY_NAMES)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"seeds": []}, "seeds"),
        ({"seeds": [1, 1]}, "seeds.1"),
        ({"seeds": list(range(11))}, "seeds"),
        ({"policies": []}, "policies"),
        ({"policies": ["fixed", "fixed"]}, "policies.1"),
        ({"policies": ["warmup"]}, "policies.0"),
        ({"cycles": 2, "iterations": 100}, "iterations"),
        ({"iterations": 101}, "iterations"),
        ({"iterations": 100, "step_size": 30}, "iterations"),
        ({"step_size": 1_000_000}, "step_size"),
        ({"range_test": {"start_lr": 1.0, "end_lr": 0.1}}, "range_test.end_lr"),
        ({"grid": {"batch_size": []}}, "grid.batch_size"),
        ({"grid": {"weight_decay": [0.1, 2.0]}}, "grid.weight_decay.1"),
        ({"grid": {"optimizer": [{"name": "adam"}, {"name": "adam"}]}}, "grid.optimizer.1"),
    ],
)
def test_a_sweep_refuses_a_bad_value_naming_it(data: dict[str, Any], field: str) -> None:
    assert field in refused(SweepSpec, {"workload": "w", **data})


def test_a_sweeps_grid_is_capped() -> None:
    sizes = list(range(1, MAX_GRID_POINTS + 2))
    errors = refused(SweepSpec, {"workload": "w", "grid": {"batch_size": sizes}})
    assert list(errors) == ["grid"]
    assert f"over {MAX_GRID_POINTS}" in errors["grid"]
    grid = {"batch_size": list(range(1, 9)), "weight_decay": [0.0, 0.1]}  # 16 points
    many = {"workload": "w", "grid": grid, "seeds": list(range(10)), "policies": list(POLICY_NAMES)}
    assert f"over {MAX_TRAININGS}" in refused(SweepSpec, many)["grid"]
    assert SweepGrid(batch_size=[32, 64], weight_decay=[0, 1e-4]).size() == 4
