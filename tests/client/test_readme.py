"""The README's "Python client" example runs against the embedded service and prints bounds."""

from __future__ import annotations

import contextlib
import io
import re
import threading
from pathlib import Path

import pytest

from tests.client.conftest import WAIT_S, Server

pytestmark = pytest.mark.worker

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    section = re.search(r"^## Python client\n(.*?)^## ", README.read_text(), flags=re.S | re.M)
    assert section, 'README has no "## Python client" section'
    blocks = re.findall(r"```python\n(.*?)```", section.group(1), flags=re.S)
    assert len(blocks) == 1
    return blocks[0]


def test_the_readme_client_example_runs(embedded_server: Server, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(embedded_server.new_token() + "\n")
    code = _example()
    # the README's service listens on 8000 with its token in .clr-sweep/; this one elsewhere
    assert "http://127.0.0.1:8000" in code
    assert '".clr-sweep/token"' in code
    code = code.replace("http://127.0.0.1:8000", embedded_server.url)
    code = code.replace('".clr-sweep/token"', repr(str(token_file)))
    out = io.StringIO()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            exec(compile(code, "README.md", "exec"), {})  # noqa: S102 - our own README
        except BaseException as exc:  # re-raised in the test's thread
            failure.append(exc)

    # the example waits without a timeout: a lost job fails the test instead of hanging it
    with contextlib.redirect_stdout(out):
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        thread.join(WAIT_S)
    assert not thread.is_alive(), f"the README example did not finish in {WAIT_S:g} s"
    if failure:
        raise failure[0]
    printed = out.getvalue()
    # the last line of progress: finished (a test may stop early when the loss diverges)
    assert re.search(r"^succeeded \d+/300$", printed, flags=re.M), printed
    match = re.search(r"CyclicLR\(opt, base_lr=([\d.e-]+), max_lr=([\d.e-]+)\)", printed)
    assert match, printed
    assert 0 < float(match.group(1)) < float(match.group(2))
    assert "lowest smoothed loss at lr" in printed
