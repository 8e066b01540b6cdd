"""The README's library example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_example_runs_and_trains(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert (tmp_path / "range_test.png").read_bytes()[:4] == b"\x89PNG"
    sched, bounds, work = namespace["sched"], namespace["bounds"], namespace["work"]
    assert sched.last_epoch == bounds.stop_iteration
    # stopped at the end of a cycle: the LR is back at the lower bound
    assert sched.get_last_lr()[0] == bounds.default.base_lr
    correct = sum(int((work.model(x).argmax(1) == y).sum()) for x, y in work.val_loader)
    assert correct / work.num_val > 0.85
