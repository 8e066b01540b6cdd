"""``clr-sweep sweep submit --embedded`` end to end: the embedded service (SQLite, the
filesystem broker, its worker and reaper) runs a tiny sweep's range test and
trainings, and the command prints the table and writes the plot and the JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.service.test_flows import DEADLINE_S, REPO_ROOT, _processes_with_env
from tests.service.test_training_flow import PNG_MAGIC, embedded_env

pytestmark = pytest.mark.slow


def test_sweep_embedded_prints_the_table_and_writes_plot_and_json(tmp_path: Path) -> None:
    data_dir = tmp_path / ".clr-sweep"
    plot, output = tmp_path / "sweep.png", tmp_path / "sweep.json"
    argv = ["sweep", "submit", "--embedded", "-p", "width=16", "--policies", "fixed,triangular2"]
    argv += ["--seeds", "0,1", "--step-size", "22", "--cycles", "2", "--no-verify"]
    argv += ["--num-iter", "100", "--start-lr", "1e-4", "--end-lr", "1"]
    argv += ["--plot", str(plot), "--output", str(output)]
    done = subprocess.run(
        [sys.executable, "-m", "cli", *argv],
        cwd=REPO_ROOT,
        env=embedded_env(data_dir),
        capture_output=True,
        text=True,
        timeout=DEADLINE_S * 2,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "Sweep of digits_mlp" in out
    assert "step_size 22, 88 iterations (2 cycles)" in out
    assert "triangular2" in out
    assert plot.read_bytes().startswith(PNG_MAGIC)
    sweep = json.loads(output.read_text())
    assert (sweep["status"], sweep["progress"], sweep["total"]) == ("succeeded", 5, 5)
    result = sweep["result"]
    assert result["complete"]
    assert result["counts"] == {"succeeded": 5}
    for row in result["table"]:
        assert row["succeeded"] == 2
        assert f"{row['final_val_accuracy']['mean']:.4f}" in out
    assert _processes_with_env("CLR_DATA_DIR", str(data_dir)) == []
