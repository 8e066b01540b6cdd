"""Arguments the command line refuses before it talks to any service: a job id that is
not one, a service URL that is not a URL. Each is *invalid* (exit 2) with the one JSON
error document on stdout under ``--json``, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.exit_codes import ExitCode
from cli.main import app

runner = CliRunner()
REPO_ROOT = Path(__file__).resolve().parents[3]
NOWHERE = ["--url", "http://127.0.0.1:1", "--token", "clr_x"]


@pytest.mark.parametrize(
    "argv",
    [
        ["range-test", "show", "not-a-job"],
        ["range-test", "bounds", "12345"],
        ["training", "wait", "../../etc"],
        ["sweep", "plot", "x" * 500],
        ["training", "cancel", "not-a-job"],
    ],
)
def test_a_job_id_that_is_not_a_uuid_is_invalid_naming_the_argument(argv: list[str]) -> None:
    result = runner.invoke(app, [*argv, *NOWHERE, "--json"])
    assert result.exit_code == ExitCode.INVALID, result.output
    error = json.loads(result.stdout)["error"]
    assert error["name"] == "invalid"
    assert [e["field"] for e in error["errors"]] == ["ID"]
    assert "not a job id" in result.stderr
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("localhost:8000", "must start with http:// or https://"),
        ("http://[::1", "is not a URL"),
        ("http://127.0.0.1:port", "is not a URL"),
        ("http:///jobs", "names no host"),
    ],
)
def test_a_service_url_that_is_not_one_is_invalid(url: str, says: str) -> None:
    for argv in (["jobs", "list"], ["range-test", "show", "00000000-0000-0000-0000-000000000001"]):
        result = runner.invoke(app, [*argv, "--url", url, "--token", "clr_x", "--json"])
        assert result.exit_code == ExitCode.INVALID, result.output
        error = json.loads(result.stdout)["error"]
        assert says in error["message"]
        assert "Traceback" not in result.output


def _console_script(*argv: str) -> subprocess.CompletedProcess[str]:
    """``clr-sweep ARGV`` as the console script runs it (``cli.main:main``)."""
    return subprocess.run(
        [sys.executable, "-m", "cli", *argv], cwd=REPO_ROOT, capture_output=True, text=True
    )


@pytest.mark.parametrize(
    ("argv", "field"),
    [
        (["range-test", "list", "--limit", "0"], "--limit"),
        (["range-test", "list", "--no-such-option"], None),
        (["no-such-command"], None),
        (["range-test", "show"], "job_id"),
    ],
)
def test_json_answers_a_command_line_typer_refuses_with_one_error_document(
    argv: list[str], field: str | None
) -> None:
    done = _console_script(*argv, "--json")
    assert done.returncode == ExitCode.INVALID, done.stderr
    error = json.loads(done.stdout)["error"]
    assert (error["code"], error["name"]) == (ExitCode.INVALID, "invalid")
    assert [e["field"] for e in error.get("errors", [])] == ([field] if field else [])
    assert "Usage:" in done.stderr  # the person still reads typer's message


def test_json_keeps_each_commands_own_exit_code() -> None:
    done = _console_script(
        "--retries", "0", "range-test", "show", str(uuid.UUID(int=1)), *NOWHERE, "--json"
    )
    assert done.returncode == ExitCode.UNREACHABLE, done.stderr
    assert json.loads(done.stdout)["error"]["name"] == "unreachable"
