"""The command line: the README's main job on a small sweep, schedules, workloads."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from cli.main import app
from clr import RangeTestResult

runner = CliRunner()

PNG = b"\x89PNG\r\n\x1a\n"


class TestRangeTest:
    def test_runs_a_range_test_prints_bounds_and_writes_plot_and_json(self, tmp_path):
        plot, out = tmp_path / "curve.png", tmp_path / "result.json"
        result = runner.invoke(
            app,
            [
                "range-test",
                "--workload", "digits_mlp",
                "--param", "width=32",
                "--num-iter", "120",
                "--start-lr", "1e-4",
                "--device", "cpu",
                "--plot", str(plot),
                "--output", str(out),
            ],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "Suggested CLR bounds for digits_mlp" in result.output
        assert "(default)" in result.output
        assert plot.read_bytes().startswith(PNG)
        payload = json.loads(out.read_text())
        curve = RangeTestResult.from_dict(payload["result"])
        assert 10 <= curve.steps_run <= 120
        assert curve.lrs[0] == pytest.approx(1e-4)
        default = payload["suggestions"]["items"][0]
        assert 0 < default["base_lr"] < default["max_lr"]
        assert payload["suggestions"]["step_size"] == 4 * 22  # 4 epochs of 1438 // 64 batches

    def test_bad_workload_parameter_exits_2_naming_the_field(self, tmp_path):
        result = runner.invoke(
            app,
            ["range-test", "--param", "widht=3", "--plot", str(tmp_path / "x.png")],
        )
        assert result.exit_code == 2
        assert "widht" in result.output
        assert "unknown parameter" in result.output
        assert not (tmp_path / "x.png").exists()

    def test_inverted_lr_range_exits_2_with_the_reason(self, tmp_path):
        result = runner.invoke(
            app,
            ["range-test", "--start-lr", "1", "--end-lr", "0.1", "--plot", str(tmp_path / "x.png")],
        )
        assert result.exit_code == 2
        assert "start_lr must be below end_lr" in result.output

    def test_a_plot_suffix_other_than_png_or_svg_is_refused_before_the_sweep(self, tmp_path):
        result = runner.invoke(app, ["range-test", "--plot", str(tmp_path / "curve.jpg")])
        assert result.exit_code == 2
        assert "must end in .png or .svg" in result.output
        assert "range test" not in result.output  # refused before any sweep ran


class TestSchedule:
    @pytest.mark.parametrize(
        "policy", ["fixed", "step", "exp", "one_cycle", "cosine_restarts", "triangular"]
    )
    def test_every_policy_draws(self, tmp_path, policy):
        plot = tmp_path / f"{policy}.png"
        result = runner.invoke(
            app,
            [
                "schedule",
                "--policy",
                policy,
                "--step-size",
                "20",
                "--cycles",
                "2",
                "--plot",
                str(plot),
            ],
        )
        assert result.exit_code == 0, result.output
        assert plot.read_bytes().startswith(PNG)

    def test_writes_a_schedule_plot(self, tmp_path):
        plot = tmp_path / "schedule.svg"
        result = runner.invoke(
            app,
            ["schedule", "--policy", "exp_range", "--shape", "sine", "--step-size", "50",
             "--cycles", "3", "--plot", str(plot)],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "<svg" in plot.read_text()

    def test_unknown_shape_exits_2(self, tmp_path):
        result = runner.invoke(
            app, ["schedule", "--shape", "square", "--plot", str(tmp_path / "s.png")]
        )
        assert result.exit_code == 2
        assert "shape must be one of" in result.output


class TestWorkloads:
    def test_lists_the_built_in_workloads(self):
        result = runner.invoke(app, ["workloads"], terminal_width=200)
        assert result.exit_code == 0
        for name in ("digits_mlp", "digits_cnn", "mnist1d_mlp", "mnist1d_cnn", "synthetic_mlp"):
            assert name in result.output
