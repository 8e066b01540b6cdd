"""The command line without a service: the local range test, schedules, the local
workloads, the shared options, ``--json`` and the exit codes."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from cli.exit_codes import EPILOG, ExitCode
from cli.main import app
from cli.options import RangeTestOptions
from cli.submit import range_test_run_command, range_test_submit_command

runner = CliRunner()

PNG = b"\x89PNG\r\n\x1a\n"
TINY = ["--param", "width=32", "--num-iter", "120", "--start-lr", "1e-4", "--device", "cpu"]


def options_of(command: object) -> dict[str, inspect.Parameter]:
    return dict(inspect.signature(command).parameters)  # type: ignore[arg-type]


class TestLocalRangeTest:
    def test_prints_bounds_and_the_code_to_use_them_and_writes_plot_and_json(self, tmp_path):
        plot, out = tmp_path / "curve.png", tmp_path / "result.json"
        result = runner.invoke(
            app, ["range-test", *TINY, "--plot", str(plot), "--output", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert "Suggested CLR bounds for digits_mlp" in result.stdout
        assert "(default)" in result.stdout
        doc = json.loads(out.read_text())
        bounds = doc["result"]["bounds"]
        assert f"base_lr={bounds['base_lr']:.4g}, max_lr={bounds['max_lr']:.4g}" in result.stdout
        assert f"step_size_up={bounds['step_size']}" in result.stdout
        assert 'mode="triangular2")' in result.stdout
        assert f"stop after iteration {bounds['stop_iteration']}" in result.stdout
        assert plot.read_bytes().startswith(PNG)
        assert (doc["kind"], doc["status"], doc["id"]) == ("range_test", "succeeded", None)
        summary = doc["result"]["summary"]
        assert 10 <= summary["steps_run"] <= 120
        assert summary["start_lr"] == pytest.approx(1e-4)
        assert bounds["suggestions"][0]["method"] == bounds["method"] == bounds["default_method"]
        assert 0 < bounds["base_lr"] < bounds["max_lr"]
        assert bounds["step_size"] == 4 * 22  # 4 epochs of 1438 // 64 batches

    def test_json_is_the_one_document_on_stdout_and_the_same_as_output(self, tmp_path):
        out = tmp_path / "result.json"
        result = runner.invoke(app, ["range-test", *TINY, "--json", "--output", str(out)])
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)  # nothing else on stdout
        assert doc == json.loads(out.read_text())
        assert "range test" in result.stderr  # the progress bar went to stderr
        assert doc["result"]["bounds"]["base_lr"] > 0

    def test_run_is_the_bare_form(self):
        result = runner.invoke(app, ["range-test", "run", *TINY, "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["result"]["summary"]["steps_run"] > 10

    def test_a_curve_without_bounds_says_why_and_succeeds(self):
        result = runner.invoke(
            app, ["range-test", "-p", "width=16", "--num-iter", "40", "--device", "cpu", "--json"]
        )
        assert result.exit_code == 0, result.output
        doc = json.loads(result.stdout)
        assert doc["result"]["bounds"] is None
        assert "raise num_iter" in doc["result"]["no_bounds_reason"]

    def test_a_bad_workload_parameter_is_invalid_naming_the_field(self, tmp_path):
        result = runner.invoke(
            app, ["range-test", "--param", "widht=3", "--plot", str(tmp_path / "x.png"), "--json"]
        )
        assert result.exit_code == ExitCode.INVALID == 2
        error = json.loads(result.stdout)["error"]
        assert error["name"] == "invalid"
        assert error["errors"][0]["field"] == "params.widht"
        assert "unknown parameter" in error["errors"][0]["reason"]
        assert "params.widht: unknown parameter" in result.stderr
        assert not (tmp_path / "x.png").exists()

    @pytest.mark.parametrize(
        ("argv", "field", "reason"),
        [
            (["--start-lr", "1", "--end-lr", "0.1"], "end_lr", "start_lr must be below end_lr"),
            (["--metric", "acc"], "metric", "'loss' or 'accuracy'"),
            (["--optimizer", "lion"], "optimizer.name", "sgd"),
        ],
    )
    def test_the_apis_checks_name_the_same_fields(self, argv, field, reason):
        result = runner.invoke(app, ["range-test", *argv, "--json"])
        assert result.exit_code == ExitCode.INVALID, result.output
        (error,) = json.loads(result.stdout)["error"]["errors"]
        assert error["field"] == field
        assert reason in error["reason"]

    def test_a_plot_suffix_other_than_png_or_svg_is_refused_before_the_sweep(self, tmp_path):
        result = runner.invoke(app, ["range-test", "--plot", str(tmp_path / "curve.jpg")])
        assert result.exit_code == ExitCode.INVALID
        assert "--plot: must end in .png or .svg" in result.stderr
        assert "range test" not in result.output  # refused before any sweep ran
        assert result.stdout == ""

    def test_options_before_a_subcommand_are_refused_not_dropped(self):
        result = runner.invoke(app, ["range-test", "--num-iter", "50", "submit"])
        assert result.exit_code == ExitCode.INVALID
        assert "options go after the command: `clr-sweep range-test submit" in result.stderr

    def test_a_malformed_param_is_invalid(self):
        result = runner.invoke(app, ["range-test", "-p", "width", "--json"])
        assert result.exit_code == ExitCode.INVALID
        assert json.loads(result.stdout)["error"]["errors"] == [
            {"field": "--param", "reason": "expected NAME=VALUE, got 'width'"}
        ]


class TestSharedOptions:
    def test_the_local_and_the_service_range_test_take_the_same_options(self):
        names = set(RangeTestOptions.__dataclass_fields__)
        local, submit = options_of(range_test_run_command), options_of(range_test_submit_command)
        assert names <= set(local)
        assert names <= set(submit)
        for name in names:
            assert local[name].default == submit[name].default, name
            (kind, info), (other_kind, other) = (
                typing.get_args(local[name].annotation),
                typing.get_args(submit[name].annotation),
            )
            assert (kind, info.help, info.param_decls) == (
                other_kind,
                other.help,
                other.param_decls,
            )
        assert "use_accuracy" not in local
        assert local["plot"].default is None  # the same default: no plot unless asked

    def test_both_send_the_same_body(self):
        options = RangeTestOptions(param=["width=16"], metric="accuracy", batch_size=32)
        body = options.spec()
        assert body["params"] == {"width": 16}
        assert body["metric"] == "accuracy"
        assert body["batch_size"] == 32
        assert body["optimizer"] == {"name": "sgd", "weight_decay": 0.0, "momentum": 0.9}


class TestBoundsArguments:
    def test_an_id_or_a_configuration_not_both_and_not_neither(self):
        job_id = "7f0c3a52-52a5-4e58-9d9b-0b6b2f0e1c11"
        both = runner.invoke(app, ["range-test", "bounds", job_id, "--workload", "digits_mlp"])
        assert both.exit_code == ExitCode.INVALID
        assert "not both" in both.stderr
        neither = runner.invoke(app, ["range-test", "bounds", "--metric", "loss", "--json"])
        assert neither.exit_code == ExitCode.INVALID
        assert "--workload" in json.loads(neither.stdout)["error"]["message"]
        tag = runner.invoke(app, ["range-test", "bounds", "--model", "m", "--tag", "x"])
        assert tag.exit_code == ExitCode.INVALID
        assert "--tag: expected NAME=VALUE" in tag.stderr


class TestSchedule:
    @pytest.mark.parametrize(
        "policy", ["fixed", "step", "exp", "one_cycle", "cosine_restarts", "triangular"]
    )
    def test_every_policy_draws(self, tmp_path, policy):
        plot = tmp_path / f"{policy}.png"
        argv = ["schedule", "--policy", policy, "--step-size", "20", "--cycles", "2"]
        result = runner.invoke(app, [*argv, "--plot", str(plot)])
        assert result.exit_code == 0, result.output
        assert plot.read_bytes().startswith(PNG)

    def test_writes_a_schedule_plot_and_says_so_in_json(self, tmp_path):
        plot = tmp_path / "schedule.svg"
        result = runner.invoke(
            app,
            ["schedule", "--policy", "exp_range", "--shape", "sine", "--step-size", "50",
             "--cycles", "3", "--plot", str(plot), "--json"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "<svg" in plot.read_text()
        assert json.loads(result.stdout) == {
            "policy": "exp_range",
            "plot": str(plot),
            "iterations": 300,
            "cycle_ends": [99, 199, 299],  # the last iteration of each cycle
        }

    def test_unknown_shape_is_invalid(self, tmp_path):
        result = runner.invoke(
            app, ["schedule", "--shape", "square", "--plot", str(tmp_path / "s.png")]
        )
        assert result.exit_code == ExitCode.INVALID
        assert "shape must be one of" in result.stderr


class TestWorkloads:
    def test_lists_this_machines_workloads(self):
        result = runner.invoke(app, ["workloads", "--local"], terminal_width=200)
        assert result.exit_code == 0, result.output
        for name in ("digits_mlp", "digits_cnn", "mnist1d_mlp", "mnist1d_cnn", "synthetic_mlp"):
            assert name in result.stdout

    def test_json_is_the_apis_workload_list(self):
        result = runner.invoke(app, ["workloads", "--local", "--json"])
        assert result.exit_code == 0, result.output
        items = {w["name"]: w for w in json.loads(result.stdout)["items"]}
        assert items["digits_mlp"]["params"]["properties"]["width"]["type"] == "integer"
        assert set(items["digits_mlp"]) == {"name", "description", "task", "params"}


class TestTopLevel:
    def test_version(self):
        result = runner.invoke(app, ["--version"])
        assert result.exit_code == 0
        assert result.stdout.startswith("clr-sweep ")

    def test_help_lists_the_exit_codes(self):
        result = runner.invoke(app, ["--help"], terminal_width=120)
        assert result.exit_code == 0
        for code in ExitCode:
            assert code.name.lower().replace("_", " ") in result.stdout
        sub = runner.invoke(app, ["range-test", "submit", "--help"], terminal_width=120)
        assert "not found" in sub.stdout

    def test_exit_codes_are_distinct_and_in_the_epilog(self):
        assert len({int(c) for c in ExitCode}) == len(ExitCode)
        assert (ExitCode.OK, ExitCode.INVALID, ExitCode.INTERRUPTED) == (0, 2, 130)
        for code in ExitCode:
            assert f"{code.value:>3}  " in EPILOG

    def test_shell_completion_is_offered(self):
        result = runner.invoke(app, ["--help"], terminal_width=120)
        assert "--install-completion" in result.stdout
        assert "--show-completion" in result.stdout

    def test_every_leaf_command_has_json(self):
        servers = {"api", "worker", "reaper", "serve"}  # long-running: they print no result
        command = typer.main.get_command(app)
        missing = []

        def walk(group: object, path: str) -> None:
            for name, sub in getattr(group, "commands", {}).items():
                full = f"{path} {name}".strip()
                if hasattr(sub, "commands"):
                    walk(sub, full)
                    continue
                if name not in servers and not any(
                    "--json" in p.opts for p in sub.params if hasattr(p, "opts")
                ):
                    missing.append(full)

        walk(command, "")
        assert missing == []


def test_the_client_commands_import_no_service_package() -> None:
    # `pip install clr-sweep` (no service extra) runs every command that talks to a service
    code = (
        "import sys, typer.main, cli.main; typer.main.get_command(cli.main.app); "
        "heavy = ('torch', 'sqlalchemy', 'core', 'api', 'worker', 'fastapi', 'celery', 'clr'); "
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_a_command_that_needs_the_service_extra_says_so_with_its_exit_code(
    tmp_path: Path,
) -> None:
    # torch missing, as in `pip install clr-sweep`: a documented exit code, not a bug's 1
    code = (
        "import sys; sys.modules['torch'] = None; sys.argv = ['clr-sweep', 'schedule', "
        f"'--plot', {str(tmp_path / 's.png')!r}]; import runpy; "
        "runpy.run_module('cli', run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert done.returncode == ExitCode.NEEDS_SERVICE == 10, done.stderr
    assert "pip install 'clr-sweep[service]'" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr
