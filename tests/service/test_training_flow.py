"""Range test → training through the real commands: the README's run command, and a
training's weights downloaded from a running service and loaded back into its model."""

from __future__ import annotations

import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import torch

from cli.service import TOKEN_FILE, free_port
from clr.workloads import build_workload
from tests.service.test_flows import DEADLINE_S, REPO_ROOT, Service, _processes_with_env

pytestmark = pytest.mark.slow

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def embedded_env(data_dir: Path) -> dict[str, str]:
    env = {**os.environ, "CLR_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT), env.get("PYTHONPATH", "")])
    for key in ("CLR_DATABASE_URL", "CLR_BROKER_URL", "CLR_TOKEN", "CLR_URL"):
        env.pop(key, None)
    return env


def make_run_argv() -> list[str]:
    """The arguments of the Makefile's ``run`` target (README: ``make run``)."""
    recipe = re.search(r"^run:.*\n\t(.+)$", (REPO_ROOT / "Makefile").read_text(), flags=re.M)
    assert recipe, "the Makefile has no run target"
    words = shlex.split(recipe.group(1))
    assert words[0] == "$(VENV)/bin/clr-sweep", words
    return words[1:]


class TestRangeTestThenTraining:
    def test_the_readme_run_command_trains_with_the_bounds_it_found(self, tmp_path: Path) -> None:
        argv = make_run_argv()
        assert argv[:4] == ["training", "submit", "--embedded", "--range-test"]
        data_dir = tmp_path / ".clr-sweep"
        done = subprocess.run(
            [sys.executable, "-m", "cli", *argv],
            cwd=tmp_path,
            env=embedded_env(data_dir),
            capture_output=True,
            text=True,
            timeout=DEADLINE_S * 2,
            check=False,
        )
        out = done.stdout + done.stderr
        assert done.returncode == 0, out
        assert "Suggested CLR bounds for digits_mlp" in out
        assert "final val accuracy" in out
        assert (tmp_path / "range_test.png").read_bytes().startswith(PNG_MAGIC)
        assert (tmp_path / "training.png").read_bytes().startswith(PNG_MAGIC)
        assert 'mode="triangular2")' in out  # the code to use the range test's bounds
        training = json.loads((tmp_path / "training.json").read_text())
        range_test = training["range_test"]
        assert range_test["status"] == training["status"] == "succeeded"
        source = training["spec"]["bounds_source"]
        default = range_test["result"]["bounds"]["suggestions"][0]
        assert source["range_test"] == range_test["id"]
        assert (source["base_lr"], source["max_lr"]) == (default["base_lr"], default["max_lr"])
        result = training["result"]
        assert result["iterations"] == training["total"] == result["cycle_ends"][-1]
        assert result["final_val_accuracy"] > 0.85
        assert {a["name"] for a in result["artifacts"]} >= {"model", "snapshot-1"}
        assert _processes_with_env("CLR_DATA_DIR", str(data_dir)) == []

    def test_the_model_downloaded_from_a_running_service_loads_into_the_workload(
        self, tmp_path: Path
    ) -> None:
        data_dir = tmp_path / "data"
        env = embedded_env(data_dir)
        port = free_port()
        service = Service({}, data_dir / "logs", f"http://127.0.0.1:{port}")
        try:
            service.start("serve", ["serve", "--port", str(port)], env)
            service.wait_ready()
            token = (data_dir / TOKEN_FILE).read_text().strip()
            output = tmp_path / "training.json"
            argv = ["training", "submit", "--url", service.url, "--token", token, "-p", "width=16"]
            argv += ["--base-lr", "0.02", "--max-lr", "0.2", "--step-size", "22", "--cycles", "2"]
            done = subprocess.run(
                [sys.executable, "-m", "cli", *argv, "--snapshots", "2", "--output", str(output)],
                cwd=REPO_ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=DEADLINE_S,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr + service.log_tails()
            job = json.loads(output.read_text())
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
                model = client.get(f"/trainings/{job['id']}/model")
                snapshot = client.get(f"/trainings/{job['id']}/model", params={"snapshot": 2})
                missing = client.get(f"/trainings/{job['id']}/model", params={"snapshot": 3})
        finally:
            service.stop()
        assert model.status_code == 200, model.text
        assert int(model.headers["content-length"]) == len(model.content)
        state = torch.load(io.BytesIO(model.content), weights_only=True)
        workload = build_workload("digits_mlp", {"width": 16}, seed=0)
        workload.model.load_state_dict(state)  # every key and shape as the workload's
        assert snapshot.status_code == 200
        last = torch.load(io.BytesIO(snapshot.content), weights_only=True)
        # the last snapshot is taken at the last cycle end, which is the end of the run
        assert all(torch.equal(state[k], last[k]) for k in state)
        assert missing.status_code == 404
        assert job["result"]["ensemble_size"] == 2
