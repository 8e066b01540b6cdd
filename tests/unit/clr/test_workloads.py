"""Unit tests of :mod:`clr.workloads`: parameters, registry, plug-ins, batching, built-ins."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from clr.exceptions import InvalidWorkloadParams, UnknownWorkload, WorkloadError
from clr.workloads import (
    ENTRY_POINT_GROUP,
    ParamSpec,
    TensorBatches,
    Workload,
    WorkloadInstance,
    _builtin,
    _registry,
    build_workload,
    get_workload,
    list_workloads,
    register_workload,
)

BUILTINS = ["digits_cnn", "digits_mlp", "mnist1d_cnn", "mnist1d_mlp", "synthetic_mlp"]


def _errors(exc_info: pytest.ExceptionInfo[InvalidWorkloadParams]) -> dict[str, str]:
    return {e["field"]: e["reason"] for e in exc_info.value.errors}


def _toy_builder(params: dict[str, Any], seed: int, device: torch.device) -> WorkloadInstance:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 3, generator=gen, device="cpu").to(device)
    y = torch.zeros(32, dtype=torch.long, device=device)
    loader = TensorBatches(x, y, 8, seed=seed)
    return WorkloadInstance(
        model=torch.nn.Linear(3, 2),
        train_loader=loader,
        val_loader=TensorBatches(x, y, 8, shuffle=False, drop_last=False),
        loss_fn=_builtin.cross_entropy,
        metric_fn=_builtin.accuracy,
        metric_name="accuracy",
        iters_per_epoch=len(loader),
        num_train=32,
        num_val=32,
        params=params,
        name="ignored",
    )


def _toy(name: str = "toy") -> Workload:
    return Workload(
        name=name,
        description="a toy workload for registry tests",
        params=(
            ParamSpec("lr_scale", float, 1.0, "a float", minimum=0.0, maximum=10.0),
            ParamSpec("mode", str, "a", "a choice", choices=("a", "b")),
            ParamSpec("flag", bool, False, "a flag"),
        ),
        builder=_toy_builder,
    )


# --------------------------------------------------------------------------- ParamSpec


class TestParamSpec:
    def test_int_accepts_int_and_numpy_int(self) -> None:
        spec = ParamSpec("n", int, 3, minimum=1)
        assert spec.validate(5) == 5
        value = spec.validate(np.int64(7))
        assert value == 7
        assert type(value) is int

    @pytest.mark.parametrize("value", [True, 2.0, "3", None])
    def test_int_rejects_bool_float_str_none(self, value: object) -> None:
        spec = ParamSpec("n", int, 3)
        with pytest.raises(InvalidWorkloadParams) as exc_info:
            spec.validate(value)
        assert _errors(exc_info) == {
            "n": f"expected an integer, got {type(value).__name__} ({value!r})"
        }

    def test_float_accepts_int_and_converts(self) -> None:
        value = ParamSpec("x", float, 0.5).validate(2)
        assert value == 2.0
        assert type(value) is float

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    def test_float_rejects_non_finite(self, value: float) -> None:
        with pytest.raises(InvalidWorkloadParams) as exc_info:
            ParamSpec("x", float, 0.5).validate(value)
        assert "finite" in _errors(exc_info)["x"]

    def test_float_rejects_bool(self) -> None:
        with pytest.raises(InvalidWorkloadParams) as exc_info:
            ParamSpec("x", float, 0.5).validate(False)
        assert _errors(exc_info)["x"].startswith("expected a number")

    def test_bool_rejects_int(self) -> None:
        with pytest.raises(InvalidWorkloadParams) as exc_info:
            ParamSpec("flag", bool, False).validate(1)
        assert _errors(exc_info)["flag"].startswith("expected a boolean")

    def test_bounds_are_inclusive(self) -> None:
        spec = ParamSpec("n", int, 3, minimum=1, maximum=4)
        assert spec.validate(1) == 1
        assert spec.validate(4) == 4
        with pytest.raises(InvalidWorkloadParams) as exc_info:
            spec.validate(5)
        assert _errors(exc_info) == {"n": "must be <= 4, got 5"}

    def test_choices(self) -> None:
        spec = ParamSpec("mode", str, "a", choices=("a", "b"))
        assert spec.validate("b") == "b"
        with pytest.raises(InvalidWorkloadParams) as exc_info:
            spec.validate("c")
        assert _errors(exc_info) == {"mode": "must be one of 'a', 'b'; got 'c'"}

    @pytest.mark.parametrize(
        ("kwargs", "match"),
        [
            ({"name": "bad name", "type": int, "default": 1}, "identifier"),
            ({"name": "n", "type": list, "default": []}, "type must be"),
            ({"name": "n", "type": int, "default": 0, "minimum": 1}, "default 0 is invalid"),
            ({"name": "s", "type": str, "default": "a", "minimum": 1}, "only allowed"),
            ({"name": "n", "type": int, "default": 1, "minimum": 2, "maximum": 1}, "exceeds"),
            ({"name": "n", "type": int, "default": 1, "maximum": math.inf}, "finite"),
            ({"name": "s", "type": str, "default": "z", "choices": ("a",)}, "default 'z'"),
        ],
    )
    def test_inconsistent_spec_is_rejected(self, kwargs: dict[str, Any], match: str) -> None:
        with pytest.raises(ValueError, match=match):
            ParamSpec(**kwargs)

    def test_float_default_is_normalised(self) -> None:
        spec = ParamSpec("x", float, 1)
        assert spec.default == 1.0
        assert type(spec.default) is float


# --------------------------------------------------------------------------- Workload


class TestValidateParams:
    def test_fills_defaults_in_declaration_order(self) -> None:
        params = get_workload("digits_mlp").validate_params({"width": 8})
        assert params == {"batch_size": 64, "width": 8, "depth": 2}
        assert list(params) == ["batch_size", "width", "depth"]

    def test_none_means_all_defaults(self) -> None:
        workload = get_workload("mnist1d_cnn")
        assert workload.validate_params(None) == workload.defaults

    def test_unknown_parameter_is_named(self) -> None:
        with pytest.raises(InvalidWorkloadParams) as exc_info:
            get_workload("digits_mlp").validate_params({"widht": 8})
        assert _errors(exc_info) == {
            "widht": "unknown parameter; expected one of batch_size, width, depth"
        }

    def test_bool_for_int_is_named(self) -> None:
        with pytest.raises(InvalidWorkloadParams) as exc_info:
            get_workload("digits_mlp").validate_params({"batch_size": True})
        assert _errors(exc_info) == {"batch_size": "expected an integer, got bool (True)"}

    def test_nan_is_named(self) -> None:
        with pytest.raises(InvalidWorkloadParams) as exc_info:
            get_workload("digits_cnn").validate_params({"depth": math.nan})
        assert list(_errors(exc_info)) == ["depth"]

    def test_out_of_range_is_named(self) -> None:
        with pytest.raises(InvalidWorkloadParams) as exc_info:
            get_workload("digits_cnn").validate_params({"depth": 4})
        assert _errors(exc_info) == {"depth": "must be <= 3, got 4"}

    def test_collects_every_error(self) -> None:
        with pytest.raises(InvalidWorkloadParams) as exc_info:
            get_workload("digits_mlp").validate_params(
                {"batch_size": 0, "width": "wide", "extra": 1}
            )
        errors = _errors(exc_info)
        assert set(errors) == {"batch_size", "width", "extra"}
        assert "batch_size: must be >= 1, got 0" in str(exc_info.value)

    def test_error_is_a_workload_error_and_value_error(self) -> None:
        with pytest.raises(InvalidWorkloadParams) as exc_info:
            get_workload("digits_mlp").validate_params({"depth": -1})
        assert isinstance(exc_info.value, WorkloadError)
        assert isinstance(exc_info.value, ValueError)

    def test_cross_parameter_check(self) -> None:
        workload = get_workload("mnist1d_mlp")
        assert workload.validate_params({"num_samples": 100, "batch_size": 80})["batch_size"] == 80
        with pytest.raises(InvalidWorkloadParams) as exc_info:
            workload.validate_params({"num_samples": 100, "batch_size": 81})
        assert list(_errors(exc_info)) == ["batch_size"]
        assert "80" in _errors(exc_info)["batch_size"]

    def test_synthetic_size_check(self) -> None:
        with pytest.raises(InvalidWorkloadParams) as exc_info:
            get_workload("synthetic_mlp").validate_params(
                {"n_samples": 1_000_000, "n_features": 1000}
            )
        assert list(_errors(exc_info)) == ["n_samples"]

    def test_build_rejects_negative_seed(self) -> None:
        with pytest.raises(InvalidWorkloadParams) as exc_info:
            get_workload("digits_mlp").build(seed=-1)
        assert list(_errors(exc_info)) == ["seed"]

    def test_build_validates_before_building(self) -> None:
        calls: list[int] = []

        def builder(params: dict[str, Any], seed: int, device: torch.device) -> WorkloadInstance:
            calls.append(seed)
            return _toy_builder(params, seed, device)

        workload = Workload("w", "d", (ParamSpec("n", int, 1, minimum=1),), builder)
        with pytest.raises(InvalidWorkloadParams):
            workload.build({"n": 0})
        assert calls == []
        instance = workload.build({"n": 2}, seed=5)
        assert calls == [5]
        assert instance.name == "w"
        assert instance.params == {"n": 2}


class TestWorkloadDefinition:
    def test_bad_name(self) -> None:
        with pytest.raises(ValueError, match="identifier"):
            Workload("digits-mlp", "d", (), _toy_builder)

    def test_repeated_parameter(self) -> None:
        spec = ParamSpec("n", int, 1)
        with pytest.raises(ValueError, match="repeated"):
            Workload("w", "d", (spec, spec), _toy_builder)

    def test_builder_must_return_instance(self) -> None:
        workload = Workload("w", "d", (), lambda _p, _s, _d: None)  # type: ignore[arg-type,return-value]
        with pytest.raises(TypeError, match="expected WorkloadInstance"):
            workload.build()


class TestParamSchema:
    @pytest.mark.parametrize("name", BUILTINS)
    def test_builtin_schema_lists_defaults_and_round_trips_json(self, name: str) -> None:
        workload = get_workload(name)
        schema = json.loads(json.dumps(workload.param_schema()))
        assert schema["type"] == "object"
        assert schema["additionalProperties"] is False
        assert schema["title"] == name
        defaults = {k: v["default"] for k, v in schema["properties"].items()}
        assert defaults == workload.defaults
        assert "batch_size" in defaults
        assert "seed" not in defaults
        batch = schema["properties"]["batch_size"]
        assert batch["type"] == "integer"
        assert batch["minimum"] == 1
        assert batch["description"]

    def test_float_str_bool_and_enum(self) -> None:
        props = json.loads(json.dumps(_toy().param_schema()))["properties"]
        assert props["lr_scale"] == {
            "type": "number",
            "default": 1.0,
            "description": "a float",
            "minimum": 0.0,
            "maximum": 10.0,
        }
        assert props["mode"]["enum"] == ["a", "b"]
        assert props["mode"]["type"] == "string"
        assert props["flag"]["type"] == "boolean"


# --------------------------------------------------------------------------- TensorBatches


class TestTensorBatches:
    def test_len_and_batch_shapes_drop_last(self) -> None:
        x = torch.arange(10).float().unsqueeze(1)
        batches = TensorBatches(x, torch.arange(10), 3)
        sizes = [len(yb) for _, yb in batches]
        assert len(batches) == 3
        assert sizes == [3, 3, 3]

    def test_len_and_batch_shapes_keep_last(self) -> None:
        batches = TensorBatches(torch.zeros(10, 2), torch.arange(10), 3, drop_last=False)
        assert len(batches) == 4
        assert [len(yb) for _, yb in batches] == [3, 3, 3, 1]

    def test_unshuffled_order_is_the_data_order(self) -> None:
        batches = TensorBatches(
            torch.zeros(7, 1), torch.arange(7), 3, shuffle=False, drop_last=False
        )
        assert torch.cat([yb for _, yb in batches]).tolist() == list(range(7))

    def test_inputs_stay_aligned_with_targets(self) -> None:
        y = torch.arange(50)
        x = torch.stack([y.float(), -y.float()], dim=1)
        for xb, yb in TensorBatches(x, y, 8, seed=3):
            assert torch.equal(xb[:, 0].long(), yb)
            assert torch.equal(xb[:, 1].long(), -yb)

    @settings(max_examples=40, deadline=None)
    @given(
        n=st.integers(1, 120),
        batch_size=st.integers(1, 130),
        drop_last=st.booleans(),
        seed=st.integers(0, 2**31),
    )
    def test_each_sample_at_most_once_per_epoch(
        self, n: int, batch_size: int, drop_last: bool, seed: int
    ) -> None:
        if drop_last and batch_size > n:
            batch_size = n
        batches = TensorBatches(
            torch.zeros(n, 1), torch.arange(n), batch_size, drop_last=drop_last, seed=seed
        )
        for _ in range(2):
            seen = [yb for _, yb in batches]
            assert len(seen) == len(batches)
            ids = torch.cat(seen).tolist()
            assert len(ids) == len(set(ids))
            expected = (n // batch_size) * batch_size if drop_last else n
            assert len(ids) == expected

    def test_order_reproducible_per_seed_and_changes_per_epoch(self) -> None:
        def orders(seed: int) -> list[list[int]]:
            batches = TensorBatches(torch.zeros(40, 1), torch.arange(40), 8, seed=seed)
            return [torch.cat([yb for _, yb in batches]).tolist() for _ in range(3)]

        first, again, other = orders(7), orders(7), orders(8)
        assert first == again
        assert first[0] != first[1]
        assert first[1] != first[2]
        assert first[0] != other[0]
        assert first[0] != list(range(40))

    def test_set_epoch_replays_an_epoch(self) -> None:
        batches = TensorBatches(torch.zeros(30, 1), torch.arange(30), 5, seed=1)
        epoch0 = torch.cat([yb for _, yb in batches])
        assert batches.epoch == 1
        batches.set_epoch(0)
        assert torch.equal(torch.cat([yb for _, yb in batches]), epoch0)

    def test_does_not_touch_global_rng(self) -> None:
        torch.manual_seed(123)
        state = torch.get_rng_state()
        batches = TensorBatches(torch.zeros(64, 1), torch.arange(64), 16, seed=0)
        for _ in range(3):
            for _ in batches:
                pass
        assert torch.equal(torch.get_rng_state(), state)

    @pytest.mark.parametrize(
        ("x", "y", "batch_size", "seed", "match"),
        [
            (torch.zeros(4, 1), torch.zeros(5), 2, 0, "same number of samples"),
            (torch.zeros(4, 1), torch.zeros(4), 0, 0, "batch_size must be a positive"),
            (torch.zeros(4, 1), torch.zeros(4), True, 0, "batch_size must be a positive"),
            (torch.zeros(4, 1), torch.zeros(4), 5, 0, "drop_last"),
            (torch.zeros(4, 1), torch.zeros(4), 2, -1, "seed must be"),
            (torch.zeros(()), torch.zeros(()), 1, 0, "sample dimension"),
        ],
    )
    def test_rejects_bad_arguments(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, match: str
    ) -> None:
        with pytest.raises(ValueError, match=match):
            TensorBatches(x, y, batch_size, seed=seed)

    def test_batches_are_views_without_copies_when_unshuffled(self) -> None:
        x = torch.randn(12, 3)
        xb, _ = next(iter(TensorBatches(x, torch.arange(12), 4, shuffle=False)))
        assert xb.data_ptr() == x.data_ptr()

    @pytest.mark.cuda
    def test_cuda_epoch_has_no_host_sync(self) -> None:
        if not torch.cuda.is_available():
            pytest.skip("needs a CUDA device")
        instance = build_workload("synthetic_mlp", seed=0, device="cuda")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            metrics = []
            for xb, yb in instance.train_loader:
                out = instance.model(xb)
                torch.autograd.backward(instance.loss_fn(out, yb))
                metrics.append(instance.metric_fn(out, yb))
        finally:
            torch.cuda.set_sync_debug_mode("default")
        assert metrics[0].device.type == "cuda"
        assert 0.0 <= float(torch.stack(metrics).mean()) <= 1.0


# --------------------------------------------------------------------------- built-ins


class TestBuiltinWorkloads:
    def test_all_builtins_registered(self) -> None:
        assert set(BUILTINS) <= set(list_workloads())

    @pytest.mark.parametrize("name", BUILTINS)
    def test_builds_with_defaults_and_computes_loss_and_metric(self, name: str) -> None:
        instance = build_workload(name, seed=0)
        workload = get_workload(name)
        assert instance.name == name
        assert instance.params == workload.defaults
        assert instance.metric_name == "accuracy"
        batch_size = instance.params["batch_size"]
        assert instance.iters_per_epoch == instance.num_train // batch_size
        assert instance.iters_per_epoch == len(instance.train_loader)  # type: ignore[arg-type]
        xb, yb = next(iter(instance.train_loader))
        assert xb.shape[0] == yb.shape[0] == batch_size
        assert xb.dtype == torch.float32
        assert yb.dtype == torch.int64
        out = instance.model(xb)
        num_classes = instance.params.get("n_classes", 10)
        assert out.shape == (batch_size, num_classes)
        loss = instance.loss_fn(out, yb)
        metric = instance.metric_fn(out, yb)
        assert loss.dim() == 0
        assert math.isfinite(loss.item())
        assert metric.dim() == 0
        assert 0.0 <= metric.item() <= 1.0
        assert sum(len(yv) for _, yv in instance.val_loader) == instance.num_val
        assert int(yb.min()) >= 0
        assert int(yb.max()) < num_classes

    @pytest.mark.parametrize(
        ("name", "shape", "num_train", "num_val"),
        [
            ("digits_mlp", (64,), 1438, 359),
            ("digits_cnn", (1, 8, 8), 1438, 359),
            ("mnist1d_mlp", (40,), 4000, 1000),
            ("mnist1d_cnn", (1, 40), 4000, 1000),
            ("synthetic_mlp", (32,), 4096, 1024),
        ],
    )
    def test_dataset_sizes_and_input_shapes(
        self, name: str, shape: tuple[int, ...], num_train: int, num_val: int
    ) -> None:
        instance = build_workload(name)
        xb, _ = next(iter(instance.val_loader))
        assert tuple(xb.shape[1:]) == shape
        assert (instance.num_train, instance.num_val) == (num_train, num_val)

    def test_digits_inputs_are_scaled_to_unit_interval(self) -> None:
        instance = build_workload("digits_mlp", {"batch_size": 1024})
        xb, _ = next(iter(instance.train_loader))
        assert float(xb.min()) == 0.0
        assert float(xb.max()) == 1.0

    def test_digits_split_is_stratified(self) -> None:
        instance = build_workload("digits_mlp")
        counts = torch.bincount(torch.cat([yv for _, yv in instance.val_loader]), minlength=10)
        assert int(counts.min()) >= 34
        assert int(counts.max()) <= 37

    @pytest.mark.parametrize(
        ("name", "params", "num_weights"),
        [
            ("digits_mlp", {"width": 8, "depth": 3}, 4),
            ("digits_cnn", {"width": 4, "depth": 3}, 4),
            ("mnist1d_cnn", {"width": 4, "depth": 5}, 6),
        ],
    )
    def test_width_and_depth_shape_the_model(
        self, name: str, params: dict[str, int], num_weights: int
    ) -> None:
        instance = build_workload(name, params)
        weights = [p for n, p in instance.model.named_parameters() if n.endswith("weight")]
        assert len(weights) == num_weights
        assert weights[0].shape[0] == params["width"]
        xb, _ = next(iter(instance.val_loader))
        assert instance.model(xb).shape == (xb.shape[0], 10)

    def test_mnist1d_num_samples(self) -> None:
        instance = build_workload("mnist1d_mlp", {"num_samples": 205, "batch_size": 16})
        assert (instance.num_train, instance.num_val) == (160, 40)
        assert instance.iters_per_epoch == 10

    def test_mnist1d_generation_restores_global_rngs(self) -> None:
        np.random.seed(99)
        random.seed(99)
        expected_np, expected_py = np.random.random(), random.random()
        np.random.seed(99)
        random.seed(99)
        _builtin._mnist1d_arrays.__wrapped__(100)
        assert np.random.random() == expected_np
        assert random.random() == expected_py

    def test_synthetic_labels_follow_teacher_and_use_all_classes(self) -> None:
        instance = build_workload("synthetic_mlp", {"n_samples": 512, "n_classes": 3})
        labels = torch.cat([yb for _, yb in instance.val_loader])
        assert set(labels.tolist()) == {0, 1, 2}
        assert "speed tests only" in get_workload("synthetic_mlp").description


class TestDeterminism:
    @pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "synthetic_mlp"])
    def test_same_seed_same_model_and_first_batch(self, name: str) -> None:
        a = build_workload(name, seed=3)
        torch.manual_seed(999)  # the global state before a build must not matter
        torch.rand(5)
        b = build_workload(name, seed=3)
        for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
            assert torch.equal(pa, pb)
        (xa, ya), (xb, yb) = next(iter(a.train_loader)), next(iter(b.train_loader))
        assert torch.equal(xa, xb)
        assert torch.equal(ya, yb)

    @pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn", "synthetic_mlp"])
    def test_different_seed_different_model_and_order(self, name: str) -> None:
        a, b = build_workload(name, seed=0), build_workload(name, seed=1)
        first_a = next(iter(a.model.parameters()))
        first_b = next(iter(b.model.parameters()))
        assert not torch.equal(first_a, first_b)
        assert not torch.equal(next(iter(a.train_loader))[1], next(iter(b.train_loader))[1])

    def test_seed_does_not_change_the_data_split(self) -> None:
        a, b = build_workload("digits_mlp", seed=0), build_workload("digits_mlp", seed=1)
        va = torch.cat([y for _, y in a.val_loader])
        vb = torch.cat([y for _, y in b.val_loader])
        assert torch.equal(va, vb)


class TestTraining:
    def test_sgd_steps_reduce_digits_mlp_loss(self) -> None:
        instance = build_workload("digits_mlp", {"batch_size": 32}, seed=0)
        model = instance.model
        xs, ys = next(iter(TensorBatches(*_all(instance), 10_000, drop_last=False)))

        def full_loss() -> float:
            with torch.no_grad():
                return float(instance.loss_fn(model(xs), ys))

        before = full_loss()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        for step, (xb, yb) in enumerate(instance.train_loader):
            opt.zero_grad()
            torch.autograd.backward(instance.loss_fn(model(xb), yb))
            opt.step()
            if step == 30:
                break
        after = full_loss()
        assert before > 2.0
        assert after < 0.5 * before


def _all(instance: WorkloadInstance) -> tuple[torch.Tensor, torch.Tensor]:
    loader = instance.train_loader
    assert isinstance(loader, TensorBatches)
    return loader.x, loader.y


# --------------------------------------------------------------------------- registry


@dataclass
class FakeEntryPoint:
    name: str
    value: str
    target: Any

    def load(self) -> Any:
        if isinstance(self.target, BaseException):
            raise self.target
        return self.target


@pytest.fixture
def fresh_registry(monkeypatch: pytest.MonkeyPatch) -> _registry._Registry:
    registry = _registry._Registry()
    registry.register(_builtin.DIGITS_MLP)
    monkeypatch.setattr(_registry, "_REGISTRY", registry)
    return registry


class TestRegistry:
    def test_list_is_sorted(self) -> None:
        names = list_workloads()
        assert names == sorted(names)

    def test_unknown_name_lists_known_names(self) -> None:
        with pytest.raises(UnknownWorkload) as exc_info:
            get_workload("imagenet")
        message = str(exc_info.value)
        assert "'imagenet'" in message
        for name in BUILTINS:
            assert name in message
        assert isinstance(exc_info.value, KeyError)

    def test_build_workload_unknown_name(self) -> None:
        with pytest.raises(UnknownWorkload):
            build_workload("nope")

    @pytest.mark.usefixtures("fresh_registry")
    def test_register_and_get(self) -> None:
        toy = _toy()
        assert register_workload(toy) is toy
        assert get_workload("toy") is toy
        assert list_workloads() == ["digits_mlp", "toy"]

    @pytest.mark.usefixtures("fresh_registry")
    def test_duplicate_name_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="already registered"):
            register_workload(_toy("digits_mlp"))
        assert get_workload("digits_mlp") is _builtin.DIGITS_MLP

    def test_register_rejects_non_workload(self, fresh_registry: _registry._Registry) -> None:
        with pytest.raises(TypeError, match="expected a Workload"):
            register_workload("toy")  # type: ignore[arg-type]
        assert fresh_registry.names() == ["digits_mlp"]


class TestEntryPoints:
    def test_group_name(self) -> None:
        assert ENTRY_POINT_GROUP == "clr_sweep.workloads"

    def test_loads_workload_callable_and_list_and_skips_broken(
        self, fresh_registry: _registry._Registry, caplog: pytest.LogCaptureFixture
    ) -> None:
        eps = [
            FakeEntryPoint("plain", "pkg:PLAIN", _toy("plain")),
            FakeEntryPoint("factory", "pkg:make", lambda: _toy("made")),
            FakeEntryPoint("many", "pkg:many", lambda: [_toy("one"), _toy("two")]),
            FakeEntryPoint("broken", "pkg.missing:x", ImportError("no module pkg.missing")),
            FakeEntryPoint("wrong", "pkg:wrong", 42),
            FakeEntryPoint("clash", "pkg:clash", _toy("digits_mlp")),
        ]
        with caplog.at_level(logging.WARNING, logger=_registry.__name__):
            fresh_registry.load_entry_points(eps)
        assert fresh_registry.names() == ["digits_mlp", "made", "one", "plain", "two"]
        assert fresh_registry.get("digits_mlp") is _builtin.DIGITS_MLP
        text = caplog.text
        assert "'broken'" in text
        assert "no module pkg.missing" in text
        assert "'wrong'" in text
        assert "'clash'" in text
        assert "'plain'" not in text

    def test_loaded_lazily_once_from_importlib_metadata(
        self, fresh_registry: _registry._Registry, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls: list[str] = []

        def fake_entry_points(*, group: str) -> list[FakeEntryPoint]:
            calls.append(group)
            return [FakeEntryPoint("plugin", "plugin:W", _toy("plugin"))]

        monkeypatch.setattr(importlib.metadata, "entry_points", fake_entry_points)
        assert calls == []
        assert get_workload("plugin").name == "plugin"
        assert list_workloads() == ["digits_mlp", "plugin"]
        assert calls == [ENTRY_POINT_GROUP]
        assert fresh_registry.names() == ["digits_mlp", "plugin"]

    @pytest.mark.usefixtures("fresh_registry")
    def test_failing_entry_point_listing_keeps_builtins(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        def broken(*, group: str) -> list[FakeEntryPoint]:
            raise RuntimeError(f"bad metadata for {group}")

        monkeypatch.setattr(importlib.metadata, "entry_points", broken)
        with caplog.at_level(logging.WARNING, logger=_registry.__name__):
            assert list_workloads() == ["digits_mlp"]
        assert "bad metadata" in caplog.text

    def test_plugin_workload_builds(self, fresh_registry: _registry._Registry) -> None:
        fresh_registry.load_entry_points([FakeEntryPoint("toy", "pkg:toy", _toy())])
        instance = build_workload("toy", {"mode": "b", "lr_scale": 2}, seed=4)
        assert instance.name == "toy"
        assert instance.params == {"lr_scale": 2.0, "mode": "b", "flag": False}
        assert instance.iters_per_epoch == 4


# --------------------------------------------------------------------------- cost estimates


class TestCostEstimates:
    """A workload's cost, from arithmetic on its params, against the model it builds."""

    SIZES: dict[str, list[dict[str, Any]]] = {
        "digits_mlp": [{}, {"width": 96, "depth": 3, "batch_size": 32}, {"depth": 1}],
        "digits_cnn": [{}, {"width": 8, "depth": 3}, {"width": 5, "depth": 1}],
        "mnist1d_mlp": [{}, {"width": 33, "depth": 4, "num_samples": 1000}],
        "mnist1d_cnn": [{}, {"width": 7, "depth": 5, "num_samples": 1000}, {"depth": 1}],
        "synthetic_mlp": [{}, {"n_features": 7, "n_classes": 3, "width": 11, "n_samples": 100}],
    }

    @pytest.mark.parametrize(
        ("name", "params"), [(n, p) for n, sizes in SIZES.items() for p in sizes]
    )
    def test_weights_and_flops_are_those_of_the_built_model(
        self, name: str, params: dict[str, Any]
    ) -> None:
        from torch.utils.flop_counter import FlopCounterMode

        workload = get_workload(name)
        cost = workload.estimate_cost(params)
        assert cost is not None
        inst = workload.build(params, seed=0)
        assert cost.weights == sum(p.numel() for p in inst.model.parameters())
        xb, _ = next(iter(inst.train_loader))
        with FlopCounterMode(display=False) as counter:
            inst.model(xb[:1])
        # torch counts the matrix products and convolutions: the FLOPs that matter
        assert cost.flops == counter.get_total_flops()
        samples = inst.num_train + inst.num_val
        features = xb[0].numel()
        assert (
            samples * (4 * features + 8) <= cost.data_bytes <= 1.02 * samples * (4 * features + 8)
        )

    def test_activations_grow_with_the_batch_shape(self) -> None:
        small = get_workload("digits_mlp").estimate_cost({"width": 64})
        wide = get_workload("digits_mlp").estimate_cost({"width": 128})
        assert small is not None
        assert wide is not None
        assert wide.activations - small.activations == 2 * 2 * 64  # two layers, Linear + ReLU

    def test_the_largest_params_are_estimated_without_building(self) -> None:
        # ~1e9 weights: building it would take 4 GB; the estimate is arithmetic
        cost = get_workload("synthetic_mlp").estimate_cost(
            {"n_features": 65536, "width": 8192, "depth": 8, "n_samples": 700}
        )
        assert cost is not None
        assert cost.weights == 65536 * 8192 + 7 * 8192 * 8192 + 8192 * 10 + 8 * 8192 + 10

    def test_a_workload_without_a_cost_has_no_estimate(self) -> None:
        assert _toy().estimate_cost({}) is None

    @pytest.mark.parametrize("name", BUILTINS)
    def test_every_builtin_param_has_a_range(self, name: str) -> None:
        schema = get_workload(name).param_schema()["properties"]
        for param in get_workload(name).params:
            assert param.type in (int, float), param.name  # the built-ins take numbers only
            assert param.minimum is not None, param.name
            assert param.maximum is not None, param.name
            assert schema[param.name]["minimum"] == param.minimum
            assert schema[param.name]["maximum"] == param.maximum

    @pytest.mark.parametrize("value", ["a\x00b", "line\nbreak", "\x7f", "\x9b"])
    def test_a_str_param_refuses_control_characters(self, value: str) -> None:
        spec = ParamSpec("label", str, "plain")
        with pytest.raises(InvalidWorkloadParams, match="control characters"):
            spec.validate(value)
