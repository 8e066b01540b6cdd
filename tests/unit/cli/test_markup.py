"""The service's text (a team's model name, a job's error, a tag) is printed as it is:
never read as rich markup, which a ``[/]`` broke with a traceback and a ``[link=...]``
turned into a hidden link."""

from __future__ import annotations

from typing import Any

import pytest
import typer

from cli.exit_codes import ExitCode
from cli.jobs import print_job
from cli.output import CommandError, Output
from cli.render import print_jobs

HOSTILE = "boom [/] [link=http://evil.example]click[/link] [bold]"


def failed_job() -> dict[str, Any]:
    return {
        "id": "59dc46d3-f6b7-43a6-804e-50770ddefafc",
        "kind": "range_test",
        "status": "failed",
        "progress": 0,
        "total": 50,
        "error": HOSTILE,
        "created_at": "2026-11-29T10:17:00Z",
        "spec": {"source": "client", "model": "m[/]x", "dataset": "[bold]d", "tags": {"a": "[/]"}},
        "result": None,
    }


def test_a_job_and_the_job_list_print_its_text_as_it_is(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")  # one line each
    out = Output()
    print_job(failed_job(), out)
    print_jobs([failed_job()], out, title="Jobs")
    printed = capsys.readouterr().out
    assert printed.count(HOSTILE) == 2, printed


def test_an_error_message_keeps_its_brackets(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(typer.Exit):
        Output().fail(CommandError(ExitCode.ERROR, "pip install 'clr-sweep[service]'"))
    assert "pip install 'clr-sweep[service]'" in capsys.readouterr().err
