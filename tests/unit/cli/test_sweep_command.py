"""``clr-sweep sweep submit``: its options as a ``POST /sweeps`` body, and what it refuses
before it talks to any service. (Through the embedded service: ``tests/service/``.)"""

from __future__ import annotations

from typing import Any

import pytest
from typer.testing import CliRunner

from cli.exit_codes import ExitCode
from cli.main import app
from cli.submit import sweep_body
from core.sweeps import SweepSpec, grid_points

runner = CliRunner()


def body(**options: Any) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "workload": {
            "workload": "digits_mlp",
            "params": {"width": 16},
            "optimizer": {"name": "sgd", "weight_decay": 0.0, "momentum": 0.9},
        },
        "momentum": 0.9,
        "weight_decay": 0.0,
        "device": "cpu",
        "seeds": None,
        "policies": None,
        "cycles": None,
        "iterations": None,
        "step_size": None,
        "whole_cycles": True,
        "fixed_lr": None,
        "verify": True,
        "verify_budget": None,
        "num_iter": 300,
        "start_lr": 1e-5,
        "end_lr": 10.0,
        "grid_batch_size": None,
        "grid_optimizer": None,
        "grid_weight_decay": None,
    }
    return sweep_body(**(defaults | options))


class TestSweepBody:
    def test_unset_options_take_the_services_defaults(self) -> None:
        spec = SweepSpec.model_validate(body())
        assert spec.seeds == [0, 1, 2]
        assert len(spec.policies) == 8
        assert spec.verify is True
        assert "grid" not in body()
        assert set(body()) >= {"workload", "optimizer", "range_test"}

    def test_lists_and_the_budget(self) -> None:
        data = body(seeds="3,4", policies="fixed, triangular2", step_size=20, cycles=3)
        spec = SweepSpec.model_validate(data)
        assert (spec.seeds, spec.policies) == ([3, 4], ["fixed", "triangular2"])
        assert (spec.step_size, spec.cycles) == (20, 3)
        assert data["range_test"] == {"num_iter": 300, "start_lr": 1e-5, "end_lr": 10.0}

    def test_range_test_seeds(self) -> None:
        data = body(seeds="3,4", range_test_seeds="7,8")
        assert data["range_test"]["seeds"] == [7, 8]
        spec = SweepSpec.model_validate(data)
        assert (spec.seed, spec.seeds, spec.range_test.seeds) == (7, [3, 4], [7, 8])

    def test_a_grid_of_batch_sizes_optimizers_and_weight_decays(self) -> None:
        data = body(grid_batch_size="32,64", grid_optimizer="sgd,adamw", grid_weight_decay="0,5e-4")
        assert data["grid"]["optimizer"] == [
            {"name": "sgd", "weight_decay": 0.0, "momentum": 0.9},
            {"name": "adamw", "weight_decay": 0.0},
        ]
        points = grid_points(SweepSpec.model_validate(data))
        assert len(points) == 8
        assert points[3].label == "bs=32 adamw wd=0.0005"

    @pytest.mark.parametrize(
        ("option", "value", "hint"),
        [
            ("seeds", "0,one", "--seeds"),
            ("range_test_seeds", "0,1.5", "--range-test-seeds"),
            ("grid_batch_size", "32,6.5", "--grid-batch-size"),
            ("grid_weight_decay", "0,tiny", "--grid-weight-decay"),
        ],
    )
    def test_a_bad_list_names_its_option(self, option: str, value: str, hint: str) -> None:
        result = runner.invoke(app, ["sweep", "submit", f"--{option.replace('_', '-')}", value])
        assert result.exit_code == ExitCode.INVALID
        assert hint in result.output
        assert "not a" in result.output


class TestSweepSubmitCommand:
    def test_a_plot_suffix_other_than_png_or_svg_is_refused_first(self, tmp_path):
        result = runner.invoke(app, ["sweep", "submit", "--plot", str(tmp_path / "s.jpg")])
        assert result.exit_code == ExitCode.INVALID
        assert ".png or .svg" in result.output
