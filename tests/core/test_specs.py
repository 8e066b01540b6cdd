"""Job specs: validation naming each field, normalisation, config keys, results."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ValidationError

from clr import RangeTest, make_optimizer, suggest_all
from clr.workloads import build_workload, get_workload
from core.specs import (
    CONFIG_KEY_VERSION,
    OptimizerSpec,
    RangeTestOutcome,
    RangeTestSpec,
    field_errors,
)
from tests.builders import make_outcome, spec_data


def errors_of(data: dict[str, Any]) -> list[dict[str, str]]:
    with pytest.raises(ValidationError) as info:
        RangeTestSpec.model_validate(data)
    return [dict(e) for e in field_errors(info.value)]


class TestRangeTestSpecDefaults:
    def test_fills_workload_defaults_and_the_batch_size_in_use(self) -> None:
        spec = RangeTestSpec.model_validate({"workload": "digits_mlp"})
        assert spec.params == {"batch_size": 64, "width": 64, "depth": 2}
        assert spec.batch_size == 64
        assert (spec.start_lr, spec.end_lr, spec.num_iter) == (1e-5, 10.0, 300)
        assert (spec.sweep, spec.metric, spec.device, spec.seed) == ("exp", "loss", "auto", 0)
        assert spec.optimizer == OptimizerSpec()

    def test_top_level_batch_size_is_folded_into_params(self) -> None:
        spec = RangeTestSpec.model_validate(spec_data(batch_size=16))
        assert spec.params["batch_size"] == 16
        assert spec.batch_size == 16

    def test_params_batch_size_becomes_the_batch_size(self) -> None:
        spec = RangeTestSpec.model_validate(spec_data(params={"batch_size": 8}))
        assert spec.batch_size == 8

    def test_agreeing_batch_sizes_are_accepted(self) -> None:
        spec = RangeTestSpec.model_validate(spec_data(batch_size=8, params={"batch_size": 8}))
        assert spec.params["batch_size"] == 8

    def test_normalised_spec_validates_to_itself(self) -> None:
        spec = RangeTestSpec.model_validate(spec_data(batch_size=32, optimizer={"name": "adam"}))
        again = RangeTestSpec.model_validate(spec.model_dump(mode="json"))
        assert again == spec
        assert again.config_key() == spec.config_key()

    def test_total_steps_and_workload(self) -> None:
        spec = RangeTestSpec.model_validate(spec_data(num_iter=250))
        assert spec.total_steps() == 250
        assert spec.workload_name() == "digits_mlp"


class TestRangeTestSpecErrors:
    def test_unknown_workload_lists_the_known_ones(self) -> None:
        [error] = errors_of({"workload": "resnet9000"})
        assert error["field"] == "workload"
        assert "unknown workload 'resnet9000'" in error["reason"]
        assert "digits_mlp" in error["reason"]

    def test_workload_param_errors_are_located_under_params(self) -> None:
        errors = errors_of(spec_data(params={"width": 0, "depth": "deep", "colour": "red"}))
        assert sorted(e["field"] for e in errors) == [
            "params.colour",
            "params.depth",
            "params.width",
        ]
        by_field = {e["field"]: e["reason"] for e in errors}
        assert by_field["params.width"] == "must be >= 1, got 0"
        assert by_field["params.colour"].startswith("unknown parameter; expected one of")

    def test_conflicting_batch_sizes_name_the_param(self) -> None:
        assert errors_of(spec_data(batch_size=32, params={"batch_size": 16})) == [
            {
                "field": "params.batch_size",
                "reason": "conflicts with batch_size=32; give only one of them",
            }
        ]

    def test_batch_size_outside_the_workloads_range_names_batch_size(self) -> None:
        assert errors_of(spec_data(batch_size=5000)) == [
            {"field": "batch_size", "reason": "must be <= 1024, got 5000"}
        ]

    @pytest.mark.parametrize(("start_lr", "end_lr"), [(1.0, 1.0), (1.0, 0.5)])
    def test_start_lr_must_be_below_end_lr(self, start_lr: float, end_lr: float) -> None:
        assert errors_of(spec_data(start_lr=start_lr, end_lr=end_lr)) == [
            {"field": "end_lr", "reason": "start_lr must be below end_lr"}
        ]

    @pytest.mark.parametrize("field", ["start_lr", "end_lr", "smoothing", "diverge_th"])
    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    def test_non_finite_numbers_are_refused(self, field: str, value: float) -> None:
        errors = errors_of(spec_data(**{field: value}))
        assert {"field": field, "reason": "Input should be a finite number"} in errors

    @pytest.mark.parametrize(
        ("field", "value"),
        [
            ("start_lr", 0.0),
            ("num_iter", 1),
            ("num_iter", 100_001),
            ("num_iter", 10.0),
            ("num_iter", True),
            ("num_iter", "100"),
            ("start_lr", "1e-3"),
            ("smoothing", 1.0),
            ("smoothing", -0.1),
            ("diverge_th", 1.0),
            ("seed", -1),
            ("seed", 2**32),
            ("sweep", "log"),
            ("metric", "f1"),
            ("device", "tpu"),
            ("batch_size", 0),
        ],
    )
    def test_out_of_range_values_name_their_field(self, field: str, value: Any) -> None:
        assert [e["field"] for e in errors_of(spec_data(**{field: value}))] == [field]

    @pytest.mark.parametrize(("field", "value"), [("num_iter", 2), ("num_iter", 100_000)])
    def test_range_edges_are_accepted(self, field: str, value: int) -> None:
        assert getattr(RangeTestSpec.model_validate(spec_data(**{field: value})), field) == value

    def test_unknown_fields_are_refused(self) -> None:
        assert errors_of(spec_data(learning_rate=0.1)) == [
            {"field": "learning_rate", "reason": "Extra inputs are not permitted"}
        ]

    def test_every_problem_is_reported_at_once(self) -> None:
        errors = errors_of(spec_data(params={"width": -1}, num_iter=1, start_lr=-1.0))
        assert sorted(e["field"] for e in errors) == ["num_iter", "params.width", "start_lr"]

    def test_locations_nest_under_an_enclosing_model(self) -> None:
        class Request(BaseModel):
            spec: RangeTestSpec

        with pytest.raises(ValidationError) as info:
            Request.model_validate({"spec": spec_data(params={"width": 0})})
        assert [e["field"] for e in field_errors(info.value)] == ["spec.params.width"]


class TestOptimizerSpec:
    def test_nesterov_applies_to_sgd_only(self) -> None:
        assert errors_of(spec_data(optimizer={"name": "adam", "nesterov": True})) == [
            {
                "field": "optimizer.nesterov",
                "reason": "adam takes no nesterov; use betas (momentum and nesterov apply to sgd)",
            }
        ]

    @pytest.mark.parametrize("name", ["adam", "adamw"])
    def test_adam_takes_no_momentum(self, name: str) -> None:
        # it was accepted, stored and echoed, and did nothing
        assert errors_of(spec_data(optimizer={"name": name, "momentum": 0.5})) == [
            {
                "field": "optimizer.momentum",
                "reason": f"{name} takes no momentum; "
                "use betas (momentum and nesterov apply to sgd)",
            }
        ]

    @pytest.mark.parametrize("field", ["betas", "eps"])
    def test_sgd_takes_no_adam_hyperparameters(self, field: str) -> None:
        value = [0.9, 0.99] if field == "betas" else 1e-6  # not the defaults
        assert errors_of(spec_data(optimizer={"name": "sgd", field: value})) == [
            {
                "field": f"optimizer.{field}",
                "reason": f"sgd takes no {field}; betas and eps apply to adam and adamw",
            }
        ]

    def test_a_spec_stored_by_an_earlier_version_still_reads(self) -> None:
        # Earlier versions stored all five fields whatever the optimizer; a worker
        # reading a job queued then must not refuse it.
        legacy = {
            "name": "adam",
            "momentum": 0.9,
            "weight_decay": 0.0,
            "nesterov": False,
            "betas": [0.9, 0.999],
            "eps": 1e-8,
        }
        spec = RangeTestSpec.model_validate(spec_data(optimizer=legacy))
        assert spec.model_dump(mode="json")["optimizer"] == {
            "name": "adam",
            "weight_decay": 0.0,
            "betas": [0.9, 0.999],
            "eps": 1e-8,
        }
        sgd = RangeTestSpec.model_validate(spec_data(optimizer={**legacy, "name": "sgd"}))
        assert "betas" not in sgd.model_dump(mode="json")["optimizer"]

    @pytest.mark.parametrize(
        ("optimizer", "stored"),
        [
            (
                {"name": "adam"},
                {"name": "adam", "weight_decay": 0.0, "betas": [0.9, 0.999], "eps": 1e-8},
            ),
            ({}, {"name": "sgd", "momentum": 0.9, "weight_decay": 0.0, "nesterov": False}),
        ],
    )
    def test_stores_only_the_hyperparameters_in_effect(
        self, optimizer: dict[str, Any], stored: dict[str, Any]
    ) -> None:
        spec = RangeTestSpec.model_validate(spec_data(optimizer=optimizer))
        dumped = spec.model_dump(mode="json")
        assert dumped["optimizer"] == stored
        # and the stored form reads back (the worker parses it again)
        assert RangeTestSpec.model_validate(dumped) == spec

    def test_nesterov_needs_momentum(self) -> None:
        assert errors_of(spec_data(optimizer={"momentum": 0.0, "nesterov": True})) == [
            {"field": "optimizer.nesterov", "reason": "nesterov needs momentum > 0"}
        ]

    def test_betas_are_checked_one_by_one(self) -> None:
        errors = errors_of(spec_data(optimizer={"name": "adam", "betas": [0.9, 1.0]}))
        assert [e["field"] for e in errors] == ["optimizer.betas.1"]

    @pytest.mark.parametrize(
        ("optimizer", "field"),
        [
            ({"name": "rmsprop"}, "optimizer.name"),
            ({"momentum": 1.0}, "optimizer.momentum"),
            ({"weight_decay": -0.1}, "optimizer.weight_decay"),
            ({"eps": 0.0}, "optimizer.eps"),
            ({"lr": 0.1}, "optimizer.lr"),
        ],
    )
    def test_bad_values_name_their_field(self, optimizer: dict[str, Any], field: str) -> None:
        assert [e["field"] for e in errors_of(spec_data(optimizer=optimizer))] == [field]

    def test_effective_keeps_only_what_the_optimizer_uses(self) -> None:
        assert OptimizerSpec(name="sgd", momentum=0.8).effective() == {
            "name": "sgd",
            "momentum": 0.8,
            "nesterov": False,
            "weight_decay": 0.0,
        }
        assert OptimizerSpec(name="adamw", weight_decay=0.01).effective() == {
            "name": "adamw",
            "betas": [0.9, 0.999],
            "eps": 1e-8,
            "weight_decay": 0.01,
        }

    def test_spec_builds_the_optimizer_clr_expects(self) -> None:
        spec = OptimizerSpec(name="sgd", momentum=0.5, nesterov=True, weight_decay=0.01)
        opt = make_optimizer(
            spec.name,
            torch.nn.Linear(2, 1).parameters(),
            momentum=spec.momentum,
            nesterov=spec.nesterov,
            weight_decay=spec.weight_decay,
        )
        assert opt.defaults["momentum"] == 0.5
        assert opt.defaults["nesterov"] is True


class TestConfigKey:
    def test_is_the_sha256_of_workload_params_optimizer_batch_size_and_metric(self) -> None:
        spec = RangeTestSpec.model_validate(spec_data())
        payload = {
            "v": CONFIG_KEY_VERSION,
            "workload": "digits_mlp",
            "params": {"batch_size": 64, "depth": 2, "width": 16},
            "batch_size": 64,
            "optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
            "metric": "loss",
        }
        assert CONFIG_KEY_VERSION == 2
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        assert spec.config_key() == hashlib.sha256(text.encode()).hexdigest()

    def test_equal_configurations_written_differently_share_a_key(self) -> None:
        a = RangeTestSpec.model_validate(spec_data(batch_size=64))
        b = RangeTestSpec.model_validate(
            {"params": {"depth": 2, "batch_size": 64, "width": 16}, "workload": "digits_mlp"}
        )
        assert a.config_key() == b.config_key()

    @pytest.mark.parametrize(
        "change",
        [
            {"seed": 7},
            {"num_iter": 500},
            {"start_lr": 1e-4, "end_lr": 1.0},
            {"sweep": "linear"},
            {"device": "cpu"},
            {"smoothing": 0.9, "diverge_th": 4.0},
        ],
    )
    def test_run_settings_do_not_change_the_key(self, change: dict[str, Any]) -> None:
        base = RangeTestSpec.model_validate(spec_data())
        assert RangeTestSpec.model_validate(spec_data(**change)).config_key() == base.config_key()

    @pytest.mark.parametrize(
        "change",
        [
            {"workload": "digits_cnn", "params": {}},
            {"params": {"width": 17}},
            {"batch_size": 32},
            {"optimizer": {"name": "adam"}},
            {"optimizer": {"momentum": 0.8}},
            {"optimizer": {"weight_decay": 0.01}},
            {"optimizer": {"name": "adam", "betas": [0.8, 0.999]}},
            # bounds read off the accuracy curve are not the loss curve's
            {"metric": "accuracy"},
        ],
    )
    def test_configuration_changes_change_the_key(self, change: dict[str, Any]) -> None:
        base = RangeTestSpec.model_validate(spec_data())
        assert RangeTestSpec.model_validate(spec_data(**change)).config_key() != base.config_key()

    def test_configuration_holds_what_the_key_covers(self) -> None:
        spec = RangeTestSpec.model_validate(spec_data(metric="accuracy"))
        assert spec.configuration() == {
            "workload": "digits_mlp",
            "params": {"batch_size": 64, "width": 16, "depth": 2},
            "batch_size": 64,
            "optimizer": {"name": "sgd", "momentum": 0.9, "nesterov": False, "weight_decay": 0.0},
            "metric": "accuracy",
        }
        assert set(spec.configuration()) == set(RangeTestSpec.configuration_fields)


class TestRangeTestOutcome:
    def test_needs_bounds_or_a_reason_but_not_both(self) -> None:
        good = make_outcome()
        with pytest.raises(ValidationError, match="either suggestions or no_bounds_reason"):
            RangeTestOutcome(summary=good.summary)
        with pytest.raises(ValidationError, match="either suggestions or no_bounds_reason"):
            RangeTestOutcome(
                summary=good.summary, suggestions=good.suggestions, no_bounds_reason="flat"
            )

    def test_json_form_has_no_non_finite_numbers(self) -> None:
        outcome = make_outcome()
        outcome.summary.seconds = math.nan
        data = outcome.to_json_dict()
        assert data["summary"]["seconds"] is None
        json.dumps(data, allow_nan=False)

    def test_from_a_real_clr_range_test(self) -> None:
        work = build_workload("digits_mlp", {"width": 16}, seed=0)
        opt = torch.optim.SGD(work.model.parameters(), lr=1e-3, momentum=0.9)
        result = RangeTest(work.model, opt, work.loss_fn, metric_fn=work.metric_fn).run(
            work.train_loader, start_lr=1e-4, end_lr=10, num_iter=60
        )
        suggestions = suggest_all(result, iters_per_epoch=work.iters_per_epoch)
        outcome = RangeTestOutcome.from_clr(result, suggestions)
        data = outcome.to_json_dict()
        assert "lrs" not in data["summary"]
        assert data["summary"]["steps_run"] == result.steps_run
        assert data["summary"]["stop_reason"] == result.stop_reason
        assert data["suggestions"]["default"]["max_lr"] == suggestions.default.max_lr
        assert RangeTestOutcome.model_validate(data).suggestions == outcome.suggestions


class TestEstimate:
    def test_memory_counts_weights_optimizer_state_restore_copy_activations_and_data(
        self,
    ) -> None:
        spec = RangeTestSpec.model_validate(spec_data(params={"width": 16, "batch_size": 32}))
        cost = get_workload("digits_mlp").estimate_cost(spec.params)
        assert cost is not None
        estimate = spec.estimate()
        assert estimate is not None
        # SGD with momentum: weights, gradients, a momentum buffer, and the restore copy
        # of weights and buffer; activations and their gradients for 32 samples
        floats = cost.weights * 5 + 2 * 32 * cost.activations
        assert estimate.memory_bytes == 4 * floats + cost.data_bytes
        assert estimate.flops_per_step == 3 * 32 * cost.flops
        assert estimate.steps == spec.num_iter
        assert estimate.flops == estimate.flops_per_step * spec.num_iter

    @pytest.mark.parametrize(
        ("optimizer", "slots"), [({"momentum": 0.0}, 0), ({}, 1), ({"name": "adam"}, 2)]
    )
    def test_optimizer_state_scales_with_its_buffers(
        self, optimizer: dict[str, Any], slots: int
    ) -> None:
        bare = RangeTestSpec.model_validate(spec_data(optimizer={"momentum": 0.0})).estimate()
        spec = RangeTestSpec.model_validate(spec_data(optimizer=optimizer))
        estimate = spec.estimate()
        assert bare is not None
        assert estimate is not None
        assert estimate.memory_bytes - bare.memory_bytes == 4 * estimate.weights * 2 * slots

    def test_seconds_follow_the_flop_rate_and_the_workload_efficiency(self) -> None:
        mlp = RangeTestSpec.model_validate(spec_data()).estimate()
        cnn = RangeTestSpec.model_validate(spec_data(workload="digits_cnn", params={})).estimate()
        assert mlp is not None
        assert cnn is not None
        assert mlp.seconds(1e9) == pytest.approx(mlp.flops / 1e9)
        assert cnn.seconds(1e9) == pytest.approx(cnn.flops / (1e9 * 0.1))


class TestSeeds:
    def test_seed_is_the_first_seed(self) -> None:
        spec = RangeTestSpec.model_validate(spec_data(seeds=[7, 3, 5]))
        assert (spec.seed, spec.seeds) == (7, [7, 3, 5])
        assert RangeTestSpec.model_validate(spec_data(seeds=[7, 3], seed=7)).seed == 7
        assert RangeTestSpec.model_validate(spec_data()).seeds is None

    def test_a_different_explicit_seed_names_seed(self) -> None:
        [error] = errors_of(spec_data(seeds=[3, 4], seed=5))
        assert error["field"] == "seed"
        assert "seeds[0] = 3" in error["reason"]

    @pytest.mark.parametrize(
        ("seeds", "field", "reason"),
        [
            ([0, 1, 7, 7], "seeds.3", "7 is given twice"),
            ([4], "seeds", "give 2 to 16 seeds, got 1 (one seed: use seed)"),
            (list(range(17)), "seeds", "give 2 to 16 seeds, got 17 (one seed: use seed)"),
            ([1, -1], "seeds.1", "must be in [0, 2**32)"),
            ([1, 2**32], "seeds.1", "must be in [0, 2**32)"),
            ([1, 2.0], "seeds.1", "Input should be a valid integer"),
        ],
    )
    def test_bad_seeds_name_their_field(self, seeds: list[Any], field: str, reason: str) -> None:
        assert errors_of(spec_data(seeds=seeds)) == [{"field": field, "reason": reason}]

    def test_a_stored_spec_reads_back_equal(self) -> None:
        spec = RangeTestSpec.model_validate(spec_data(seeds=[5, 6]))
        assert RangeTestSpec.model_validate(spec.model_dump(mode="json")) == spec

    def test_seeds_do_not_change_the_key(self) -> None:
        base = RangeTestSpec.model_validate(spec_data())
        seeded = RangeTestSpec.model_validate(spec_data(seeds=[0, 1, 2]))
        assert seeded.config_key() == base.config_key()

    def test_the_estimate_scales_by_the_number_of_seeds(self) -> None:
        one = RangeTestSpec.model_validate(spec_data()).estimate()
        three = RangeTestSpec.model_validate(spec_data(seeds=[0, 1, 2])).estimate()
        assert one is not None
        assert three is not None
        assert three.memory_bytes == 3 * one.memory_bytes
        assert three.flops_per_step == 3 * one.flops_per_step
        assert (three.steps, three.weights) == (one.steps, one.weights)
