"""``clr-sweep train``: its options as a ``POST /trainings`` body, and what it refuses
before it talks to any service. (Following a training against the real app:
``tests/api/test_trainings.py``.)"""

from __future__ import annotations

import socket
import uuid
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.main import _training_body, app
from core.training import TrainingSpec

runner = CliRunner()


def body(**options: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "workload": "digits_mlp",
        "params": {"width": 16},
        "optimizer": "sgd",
        "momentum": 0.9,
        "weight_decay": 0.0,
        "batch_size": None,
        "seed": 0,
        "device": "cpu",
        "policy": "triangular",
        "lr": None,
        "base_lr": None,
        "max_lr": None,
        "step_size": None,
        "base_momentum": None,
        "max_momentum": None,
        "cycles": None,
        "iterations": None,
        "epochs": None,
        "whole_cycles": True,
        "snapshots": None,
        "from_range_test": None,
        "method": None,
    }
    return _training_body(**(defaults | options))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestTrainingBody:
    def test_explicit_bounds_are_a_valid_spec_of_that_length(self):
        data = body(base_lr=0.01, max_lr=0.1, step_size=20, cycles=3, batch_size=32)
        assert data["schedule"] == {
            "policy": "triangular",
            "base_lr": 0.01,
            "max_lr": 0.1,
            "step_size_up": 20,
        }
        spec = TrainingSpec.model_validate(data)
        assert spec.iteration_count() == 3 * 40
        assert spec.params["batch_size"] == 32
        assert spec.optimizer.momentum == 0.9

    def test_unset_options_are_left_to_the_service(self):
        data = body(base_lr=0.01, max_lr=0.1)
        for key in ("cycles", "iterations", "epochs", "batch_size", "snapshots", "bounds_from"):
            assert key not in data
        assert TrainingSpec.model_validate(data).cycles is None  # the spec's default applies

    def test_from_range_test_with_a_method_is_bounds_from(self):
        source = str(uuid.uuid4())
        data = body(policy="triangular2", from_range_test=source, method="steepest", cycles=4)
        assert data["bounds_from"] == {"range_test": source, "method": "steepest"}
        assert data["schedule"] == {"policy": "triangular2"}
        assert TrainingSpec.model_validate(data).bounds_from is not None

    def test_the_step_policy_takes_its_step_size(self):
        data = body(policy="step", lr=0.1, step_size=50, iterations=200)
        assert data["schedule"] == {"policy": "step", "lr": 0.1, "step_size": 50}
        assert TrainingSpec.model_validate(data).iteration_count() == 200

    def test_momentum_cycling_and_adam(self):
        data = body(optimizer="adam", base_lr=0.001, max_lr=0.01, base_momentum=0.85)
        assert "momentum" not in data["optimizer"]
        assert data["schedule"]["base_momentum"] == 0.85


class TestTrainCommand:
    @pytest.fixture(autouse=True)
    def data_dir(self, tmp_path, monkeypatch):
        monkeypatch.setenv("CLR_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.delenv("CLR_TOKEN", raising=False)
        monkeypatch.delenv("CLR_API_URL", raising=False)

    def test_a_method_without_a_range_test_exits_2(self):
        result = runner.invoke(app, ["train", "--method", "valley"])
        assert result.exit_code == 2
        assert "needs --from-range-test" in result.output

    def test_a_plot_suffix_other_than_png_or_svg_is_refused_first(self, tmp_path):
        result = runner.invoke(app, ["train", "--plot", str(tmp_path / "t.jpg")])
        assert result.exit_code == 2
        assert ".png or .svg" in result.output

    def test_without_a_token_it_says_how_to_get_one(self):
        result = runner.invoke(app, ["train", "--base-lr", "0.01", "--max-lr", "0.1"])
        assert result.exit_code == 2
        assert "no token" in result.output
        assert "--embedded" in result.output

    def test_an_unreachable_service_exits_1_saying_so(self):
        url = f"http://127.0.0.1:{closed_port()}"
        result = runner.invoke(
            app, ["train", "--url", url, "--token", "clr_" + "x" * 40, "--base-lr", "0.01"]
        )
        assert result.exit_code == 1
        assert "error:" in result.output

    def test_a_range_test_now_and_a_finished_one_are_exclusive(self):
        source = str(uuid.uuid4())
        result = runner.invoke(app, ["train", "--range-test", "--from-range-test", source])
        assert result.exit_code == 2
        assert "not both" in result.output

    def test_a_range_test_plot_needs_a_range_test(self, tmp_path):
        result = runner.invoke(app, ["train", "--range-test-plot", str(tmp_path / "r.png")])
        assert result.exit_code == 2
        assert "needs --range-test" in result.output
        bad = runner.invoke(app, ["train", "--range-test", "--range-test-plot", "r.gif"])
        assert bad.exit_code == 2
        assert ".png or .svg" in bad.output
