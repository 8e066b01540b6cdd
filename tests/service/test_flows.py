"""The whole flow through the real commands: HTTP in, a worker process, bounds out.

- Embedded: ``clr-sweep serve`` (SQLite + kombu's filesystem transport, no servers),
  and ``clr-sweep range-test submit --embedded`` end to end (the README's run command, which chains
  a training, is tests/service/test_training_flow.py).
- Production: the docker-compose services' own commands (``tests/deploy/commands.py``)
  as processes on PostgreSQL and Redis: migrate, api, worker, reaper.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.service import TOKEN_FILE, ensure_local_token, free_port
from core.settings import Settings
from tests import database
from tests.deploy.commands import SERVICE_COMMANDS
from tests.worker.conftest import REDIS_HOST, REDIS_PORT, require_redis

pytestmark = pytest.mark.worker

REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 180.0
"""A service's start plus a tiny job, on a loaded two-core machine."""

TINY = {"workload": "digits_mlp", "params": {"width": 16}, "num_iter": 100}


@dataclass
class Service:
    """Processes started for one test, their logs, and where the API listens."""

    processes: dict[str, subprocess.Popen[bytes]]
    logs: Path
    url: str = ""

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "cli", *argv],
                cwd=REPO_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.processes[name] = process
        return process

    def log_tails(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.logs.rglob("*.log"))
        )

    def check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{self.log_tails()}")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            self.check_alive()
            try:
                if httpx.get(f"{self.url}/readyz", timeout=5).is_success:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"not ready after {DEADLINE_S} s:\n{self.log_tails()}")
            time.sleep(0.1)

    def wait_finished(self, client: httpx.Client, job_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            job: dict[str, Any] = client.get(f"/range-tests/{job_id}").json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"job still {job['status']} after {DEADLINE_S} s:\n{self.log_tails()}")
            time.sleep(0.1)

    def stop(self) -> dict[str, int]:
        """SIGTERM every process (the supervisors stop their workers); their exit codes."""
        for process in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes


def _processes_with_env(key: str, value: str) -> list[int]:
    """Pids of live processes whose environment has ``key=value`` (Linux /proc)."""
    needle = f"{key}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if needle in environ and state != "Z":
            found.append(int(entry.name))
    return found


def _file_modes(folder: Path) -> dict[str, int]:
    """Every file and folder under ``folder`` (itself as ``.``) and its permission bits."""
    modes = {".": stat.S_IMODE(folder.stat().st_mode)}
    for path in folder.rglob("*"):
        modes[str(path.relative_to(folder))] = stat.S_IMODE(path.lstat().st_mode)
    return modes


def _run_one(service: Service, token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Submit a tiny range test over HTTP and follow it; the job and its bounds."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
        created = client.post("/range-tests", json=TINY)
        assert created.status_code == 202, created.text
        job = service.wait_finished(client, created.json()["id"])
        assert job["status"] == "succeeded", (job["error"], service.log_tails())
        bounds = client.get(f"/range-tests/{job['id']}/bounds")
        assert bounds.status_code == 200, bounds.text
        curve = client.get(f"/range-tests/{job['id']}/curve").json()
        assert len(curve["lrs"]) == job["result"]["summary"]["steps_run"] > 0
        return job, bounds.json()


class TestEmbedded:
    def test_serve_runs_a_range_test_and_stops_its_workers(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        env = {**os.environ, "CLR_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
        for key in ("CLR_DATABASE_URL", "CLR_BROKER_URL"):
            env.pop(key, None)
        port = free_port()
        service = Service({}, data_dir / "logs", f"http://127.0.0.1:{port}")
        try:
            service.start("serve", ["serve", "--port", str(port)], env)
            service.wait_ready()
            token = (data_dir / TOKEN_FILE).read_text().strip()
            job, bounds = _run_one(service, token)
            assert job["device"] == "cpu"
            assert job["attempt"] == 1
            assert bounds["suggestions"][0]["method"] == bounds["default_method"]
            assert len(_processes_with_env("CLR_DATA_DIR", str(data_dir))) >= 3  # serve+2
        finally:
            codes = service.stop()
        # uvicorn re-raises the SIGTERM it handled once the workers are stopped
        assert codes["serve"] in (0, -signal.SIGTERM), service.log_tails()
        assert _processes_with_env("CLR_DATA_DIR", str(data_dir)) == []
        assert (data_dir / "clr-sweep.db").exists()

    def test_submit_embedded_runs_a_range_test_end_to_end(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        env = {**os.environ, "CLR_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
        for key in ("CLR_DATABASE_URL", "CLR_BROKER_URL", "CLR_TOKEN", "CLR_URL"):
            env.pop(key, None)
        plot, output = tmp_path / "curve.svg", tmp_path / "result.json"
        argv = ["range-test", "submit", "--embedded", "-p", "width=16", "--num-iter", "100"]
        done = subprocess.run(
            [sys.executable, "-m", "cli", *argv, "--plot", str(plot), "--output", str(output)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE_S * 2,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert "Suggested CLR bounds for digits_mlp" in done.stdout
        assert "(default)" in done.stdout
        result = json.loads(output.read_text())
        assert result["status"] == "succeeded"
        bounds = result["result"]["bounds"]
        default = bounds["suggestions"][0]
        assert default["method"] == bounds["default_method"]
        assert f"{default['max_lr']:.3g}" in done.stdout
        assert f"max_lr={default['max_lr']:.4g}, step_size_up={bounds['step_size']}" in done.stdout
        assert plot.read_text().lstrip().startswith(("<?xml", "<svg"))
        assert _processes_with_env("CLR_DATA_DIR", str(data_dir)) == []
        # the data folder is the user's alone: it holds every job, curve and the token
        modes = _file_modes(data_dir)
        assert {"clr-sweep.db", "logs/serve.log", "logs/cpu1.log", TOKEN_FILE} <= set(modes)
        wrong = {
            name: oct(mode)
            for name, mode in modes.items()
            if mode != (0o700 if (data_dir / name).is_dir() else 0o600)
        }
        assert wrong == {}
        # and the token is in its own file only: not in a log, not in the output
        secret = (data_dir / TOKEN_FILE).read_bytes().strip()
        holders = [
            str(path)
            for path in data_dir.rglob("*")
            if path.is_file() and path.name != TOKEN_FILE and secret in path.read_bytes()
        ]
        assert holders == []
        assert secret.decode() not in done.stdout + done.stderr

    def test_submit_embedded_json_is_one_document_on_stdout(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        env = {**os.environ, "CLR_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
        for key in ("CLR_DATABASE_URL", "CLR_BROKER_URL", "CLR_TOKEN", "CLR_URL"):
            env.pop(key, None)
        argv = ["range-test", "submit", "--embedded", "-p", "width=16", "--num-iter", "100"]
        done = subprocess.run(
            [sys.executable, "-m", "cli", *argv, "--device", "cpu", "--json"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=DEADLINE_S * 2,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        job = json.loads(done.stdout)  # the whole of stdout
        assert (job["kind"], job["status"]) == ("range_test", "succeeded")
        assert job["result"]["bounds"]["job_id"] == job["id"]
        assert "starting the embedded service" in done.stderr
        assert _processes_with_env("CLR_DATA_DIR", str(data_dir)) == []


class TestProduction:
    @pytest.fixture
    def env(self, tmp_path: Path, worker_id: str) -> Iterator[dict[str, str]]:
        """A fresh, unmigrated PostgreSQL database and a Redis index of this test's own."""
        database.require_postgres()
        require_redis()
        name = f"clr_test_{database.NAMESPACE}flow_{worker_id}"
        url = database.create_database(name)
        base = int(os.environ.get("CLR_TEST_REDIS_DB_BASE", "1"))
        index = base + 3 + (0 if worker_id == "master" else int(worker_id.removeprefix("gw")))
        broker = f"redis://{REDIS_HOST}:{REDIS_PORT}/{index}"
        import redis

        flush = redis.Redis.from_url(broker)
        flush.flushdb()
        yield {
            **os.environ,
            "CLR_DATABASE_URL": url,
            "CLR_BROKER_URL": broker,
            "CLR_DATA_DIR": str(tmp_path / "data"),
            "CLR_HEARTBEAT_INTERVAL_S": "0.5",
            "CLR_HEARTBEAT_TIMEOUT_S": "5",
            "OMP_NUM_THREADS": "1",
        }
        flush.flushdb()
        flush.close()
        database.drop_database(name)

    def test_the_compose_commands_run_a_range_test(
        self, env: dict[str, str], tmp_path: Path
    ) -> None:
        port = free_port()
        service = Service({}, tmp_path / "logs", f"http://127.0.0.1:{port}")
        migrate = subprocess.run(
            [sys.executable, "-m", "cli", *SERVICE_COMMANDS["migrate"]],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert migrate.returncode == 0, migrate.stdout + migrate.stderr
        api = list(SERVICE_COMMANDS["api"])
        api[api.index("--port") + 1] = str(port)
        api[api.index("--host") + 1] = "127.0.0.1"
        settings = Settings(_env_file=None, database_url=env["CLR_DATABASE_URL"])
        token = ensure_local_token(settings.model_copy(update={"data_dir": tmp_path}))
        try:
            service.start("api", api, env)
            # the compose worker asks for GPU 0; without CUDA here it runs "auto" jobs on CPU
            service.start("worker", SERVICE_COMMANDS["worker"], env)
            service.start("reaper", SERVICE_COMMANDS["reaper"], env)
            service.wait_ready()
            job, bounds = _run_one(service, token)
        finally:
            codes = service.stop()
        assert job["worker"] is not None
        assert job["attempt"] == 1
        assert bounds["job_id"] == job["id"]
        assert codes["worker"] == 0, service.log_tails()
        assert codes["reaper"] == 0, service.log_tails()
