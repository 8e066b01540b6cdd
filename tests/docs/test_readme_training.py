"""The README's "Range test → training" library example runs as written and trains."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

pytestmark = pytest.mark.slow


def _section(text: str, heading: str) -> str:
    found = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert found, f"README has no {heading!r} section"
    return found.group(1)


def test_readme_training_example_trains_with_the_range_tests_bounds(tmp_path, monkeypatch):
    section = _section(README.read_text(), "Range test → training")
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the section shows the library once"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)  # noqa: S102 - our own README
    assert (tmp_path / "training.png").read_bytes()[:4] == b"\x89PNG"
    run, bounds, sched = namespace["run"], namespace["bounds"], namespace["sched"]
    step = bounds.step_size
    assert run.cycle_ends == [2 * step * k for k in range(1, 5)]  # 4 whole cycles
    assert run.iterations == len(run.lrs) == run.cycle_ends[-1]
    # stopped where the LR is back at base_lr; triangular2 halved the second peak
    assert sched.get_last_lr()[0] == pytest.approx(bounds.default.base_lr)
    first, second = max(run.lrs[: 2 * step]), max(run.lrs[2 * step : 4 * step])
    base = bounds.default.base_lr
    assert second - base == pytest.approx((first - base) / 2, rel=1e-6)
    assert run.val_accuracy > 0.9
    assert run.ensemble is not None
    assert run.ensemble.snapshots == 3
