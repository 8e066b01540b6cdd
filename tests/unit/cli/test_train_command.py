"""``clr-sweep training submit``: its options as a ``POST /trainings`` body, and what it
refuses before it talks to any service. (Against a real service: ``tests/service/test_cli.py``.)"""

from __future__ import annotations

import json
import socket
import uuid
from typing import Any

import pytest
from typer.testing import CliRunner

from cli.exit_codes import ExitCode
from cli.main import app
from cli.submit import training_body
from core.kinds import get_kind

TrainingSpec = get_kind("training").spec  # importing core.training first is an import cycle

runner = CliRunner()


def body(**options: Any) -> dict[str, Any]:
    workload: dict[str, Any] = {
        "workload": "digits_mlp",
        "params": {"width": 16},
        "optimizer": {"name": "sgd", "weight_decay": 0.0, "momentum": 0.9},
    }
    if options.pop("batch_size", None) is not None:
        workload["batch_size"] = 32
    if options.pop("optimizer", None) == "adam":
        workload["optimizer"] = {"name": "adam", "weight_decay": 0.0}
    defaults: dict[str, Any] = {
        "workload": workload,
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
    return training_body(**(defaults | options))


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


class TestTrainingSubmitCommand:
    @pytest.fixture(autouse=True)
    def data_dir(self, tmp_path, monkeypatch):
        monkeypatch.setenv("CLR_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.delenv("CLR_TOKEN", raising=False)
        monkeypatch.delenv("CLR_URL", raising=False)

    def invoke(self, *argv: str) -> Any:
        return runner.invoke(app, ["training", "submit", *argv])

    def test_a_method_without_a_range_test_is_invalid(self):
        result = self.invoke("--method", "valley")
        assert result.exit_code == ExitCode.INVALID
        assert "--method: needs --from-range-test or --range-test" in result.stderr

    def test_a_plot_suffix_other_than_png_or_svg_is_refused_first(self, tmp_path):
        result = self.invoke("--plot", str(tmp_path / "t.jpg"))
        assert result.exit_code == ExitCode.INVALID
        assert ".png or .svg" in result.stderr

    def test_an_unreachable_service_names_the_url_and_what_to_do(self):
        url = f"http://127.0.0.1:{closed_port()}"
        argv = ["--retries", "0", "training", "submit", "--url", url, "--token", "clr_" + "x" * 43]
        result = runner.invoke(app, [*argv, "--base-lr", "0.01"])
        assert result.exit_code == ExitCode.UNREACHABLE
        assert url in result.stderr
        assert "clr-sweep serve" in result.stderr
        assert "--embedded" in result.stderr

    def test_a_range_test_now_and_a_finished_one_are_exclusive(self):
        source = str(uuid.uuid4())
        result = self.invoke("--range-test", "--from-range-test", source)
        assert result.exit_code == ExitCode.INVALID
        assert "not both" in result.stderr

    def test_a_range_test_plot_needs_a_range_test(self, tmp_path):
        result = self.invoke("--range-test-plot", str(tmp_path / "r.png"))
        assert result.exit_code == ExitCode.INVALID
        assert "needs --range-test" in result.stderr
        bad = self.invoke("--range-test", "--range-test-plot", "r.gif")
        assert bad.exit_code == ExitCode.INVALID
        assert ".png or .svg" in bad.stderr

    def test_embedded_needs_wait(self):
        result = self.invoke("--embedded", "--no-wait", "--json")
        assert result.exit_code == ExitCode.INVALID
        assert json.loads(result.stdout)["error"]["errors"][0]["field"] == "--embedded"
