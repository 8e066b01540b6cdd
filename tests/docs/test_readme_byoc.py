"""The README's "Bring your own curve" example runs as written against a real service:
its range test, from a plain loop, uploaded; the bounds found by its configuration; a
CLR training between them logged next to the service's."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from clr_sweep import Client
from tests.services import Server

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _section(text: str, heading: str) -> str:
    found = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert found, f"README has no {heading!r} section"
    return found.group(1)


def test_readme_byoc_example_uploads_finds_its_bounds_and_trains(
    embedded_server: Server,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    section = _section(README.read_text(), "Bring your own curve")
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section shows one example"
    monkeypatch.setenv("CLR_URL", embedded_server.url)
    monkeypatch.setenv("CLR_TOKEN", embedded_server.new_token())
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    try:
        exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    finally:
        client = namespace.get("client")
        if isinstance(client, Client):
            client.close()
    upload, log, bounds = namespace["upload"], namespace["log"], namespace["bounds"]
    with Client(embedded_server.url, token=embedded_server.new_token()) as client:
        test = client.get(upload.job_id)  # type: ignore[attr-defined]
        assert test.status == "succeeded"
        assert test.spec["source"] == "client"
        assert test.result.summary.steps_run == namespace["num_iter"]
        assert bounds.job_id == upload.job_id  # type: ignore[attr-defined]
        assert {s.method for s in bounds.suggestions} >= {"paper", "steepest", "valley"}  # type: ignore[attr-defined]
        training = client.get(log.job_id)  # type: ignore[attr-defined]
        assert training.kind == "training"
        assert training.status == "succeeded"
        assert training.result.cycles == 4
        assert training.result.iterations == namespace["iterations"]
        assert training.result.final_val_accuracy > 0.85
        assert training.spec["range_test"] == str(upload.job_id)  # type: ignore[attr-defined]
        assert client.plot(log.job_id).startswith(b"\x89PNG")  # type: ignore[attr-defined]
