"""The service's processes as a hostile environment treats them: SIGKILLed parents,
two ``serve`` on one folder, a ``submit`` stopped by a signal; and what they leave on disk.

Real commands as subprocesses (``python -m cli serve | worker | submit``) on the
embedded default (SQLite + kombu's filesystem transport).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from cli.service import TOKEN_FILE, free_port
from core.db import make_engine, make_session_factory, session_scope
from core.services import get_job, get_team
from core.settings import Settings
from tests.service.test_flows import DEADLINE_S, REPO_ROOT, Service, _processes_with_env

pytestmark = pytest.mark.worker

GONE_DEADLINE_S = 120.0
"""How long a dead parent's children may take to stop (a loaded two-core machine)."""


def _env(data_dir: Path) -> dict[str, str]:
    env = {**os.environ, "CLR_DATA_DIR": str(data_dir), "OMP_NUM_THREADS": "1"}
    for key in ("CLR_DATABASE_URL", "CLR_BROKER_URL", "CLR_TOKEN", "CLR_URL"):
        env.pop(key, None)
    return env


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if _alive(child):
                found.append(child)
                todo.append(child)
    return found


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not after {timeout_s:g} s")
        time.sleep(0.1)


def _logged(path: Path, text: str, count: int = 1) -> Callable[[], bool]:
    return lambda: path.exists() and path.read_text(errors="replace").count(text) >= count


def _kill_and_expect_orphans_gone(parent: subprocess.Popen[bytes], children: list[int]) -> None:
    assert children, "the parent had no children to orphan"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    _wait_for(
        lambda: not any(_alive(pid) for pid in children),
        f"children {[p for p in children if _alive(p)]} of the SIGKILLed {parent.pid} alive",
        GONE_DEADLINE_S,
    )


def _started_serve(service: Service, name: str, data_dir: Path) -> subprocess.Popen[bytes]:
    process = service.start(
        name, ["serve", "--port", service.url.rsplit(":", 1)[1]], _env(data_dir)
    )
    service.wait_ready()
    logs = data_dir / "logs"
    # Celery's signal handlers and its pool child exist once a worker says it is ready
    _wait_for(_logged(logs / "cpu1.log", " ready."), "worker ready")
    _wait_for(_logged(logs / "reaper.log", " ready."), "reaper ready")
    return process


class TestParentDeath:
    def test_a_killed_serve_takes_its_workers_along_and_frees_its_folder(
        self, tmp_path: Path
    ) -> None:
        data_dir = tmp_path / "data"
        service = Service({}, tmp_path / "logs", f"http://127.0.0.1:{free_port()}")
        try:
            first = _started_serve(service, "first", data_dir)
            second = subprocess.run(
                [sys.executable, "-m", "cli", "serve", "--port", str(free_port())],
                cwd=REPO_ROOT,
                env=_env(data_dir),
                capture_output=True,
                text=True,
                timeout=DEADLINE_S,
                check=False,
            )
            assert second.returncode == 1, second.stdout + second.stderr
            refusal = " ".join((second.stdout + second.stderr).split())
            assert f"another clr-sweep serve (pid {first.pid}) is using" in refusal
            children = _descendants(first.pid)
            assert len(children) >= 3  # worker, its pool child, reaper (and beat)
            _kill_and_expect_orphans_gone(first, children)
            assert _processes_with_env("CLR_DATA_DIR", str(data_dir)) == []
            del service.processes["first"]
            # the folder is free again: a new serve starts on it
            service.url = f"http://127.0.0.1:{free_port()}"
            service.start(
                "third", ["serve", "--port", service.url.rsplit(":", 1)[1]], _env(data_dir)
            )
            service.wait_ready()
        finally:
            codes = service.stop()
        assert codes["third"] in (0, -signal.SIGTERM), service.log_tails()

    def test_a_killed_worker_supervisor_takes_its_workers_along(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        service = Service({}, tmp_path / "logs")
        try:
            supervisor = service.start("worker", ["worker", "--processes", "1"], _env(data_dir))
            _wait_for(_logged(tmp_path / "logs" / "worker.log", " ready."), "worker ready")
            children = _descendants(supervisor.pid)
            assert len(children) >= 2  # the Celery worker and its pool child
            _kill_and_expect_orphans_gone(supervisor, children)
        finally:
            service.stop()


class TestSubmitStoppedBySignal:
    @pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
    def test_the_job_is_cancelled_and_the_service_stopped(
        self, tmp_path: Path, sig: signal.Signals
    ) -> None:
        data_dir = tmp_path / "data"
        out = tmp_path / "submit.out"
        # a sweep that never diverges and would run for minutes
        argv = ["range-test", "submit", "--embedded", "-p", "width=16", "--num-iter", "20000"]
        argv += ["--start-lr", "1e-5", "--end-lr", "1e-4", "--device", "cpu"]
        with out.open("wb") as sink:
            submit = subprocess.Popen(
                [sys.executable, "-m", "cli", *argv],
                cwd=REPO_ROOT,
                env=_env(data_dir),
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_for(_logged(out, "starting the embedded service on"), "service started")
            match = re.search(r"on (http://127\.0\.0\.1:\d+)", out.read_text())
            assert match is not None, out.read_text()
            _wait_for(lambda: (data_dir / TOKEN_FILE).exists(), "token written")
            token = (data_dir / TOKEN_FILE).read_text().strip()
            headers = {"Authorization": f"Bearer {token}"}

            def running() -> bool:
                try:
                    response = httpx.get(f"{match[1]}/range-tests", headers=headers, timeout=5)
                except httpx.TransportError:
                    return False
                items = response.json()["items"] if response.is_success else []
                return bool(items) and items[0]["status"] == "running"

            _wait_for(running, "job running")
            job_id = httpx.get(f"{match[1]}/range-tests", headers=headers).json()["items"][0]["id"]
            submit.send_signal(sig)
            code = submit.wait(timeout=DEADLINE_S)
        finally:
            if submit.poll() is None:
                submit.kill()
                submit.wait()
        assert code == 128 + sig, out.read_text()
        assert "cancel requested" in out.read_text()
        assert _processes_with_env("CLR_DATA_DIR", str(data_dir)) == []
        engine = make_engine(Settings(_env_file=None, data_dir=data_dir))
        try:
            with session_scope(make_session_factory(engine)) as session:
                job = get_job(
                    session, team=get_team(session, name="local"), job_id=uuid.UUID(job_id)
                )
                assert job.cancel_requested
                assert job.status == "cancelled"
        finally:
            engine.dispose()


class TestPrivateFiles:
    def test_the_access_log_keeps_no_query_string(self, tmp_path: Path) -> None:
        data_dir = tmp_path / "data"
        env = _env(data_dir)
        upgrade = subprocess.run(
            [sys.executable, "-m", "cli", "db", "upgrade"],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert upgrade.returncode == 0, upgrade.stdout + upgrade.stderr
        service = Service({}, tmp_path / "logs", f"http://127.0.0.1:{free_port()}")
        port = service.url.rsplit(":", 1)[1]
        try:
            service.start("api", ["api", "--port", port], env)
            service.wait_ready()
            response = httpx.get(f"{service.url}/healthz?token=clr_s3cret-in-the-query")
            assert response.status_code == 200
            log = tmp_path / "logs" / "api.log"
            _wait_for(_logged(log, "GET /healthz"), "access log line")
        finally:
            service.stop()
        text = log.read_text()
        assert "GET /healthz HTTP/1.1" in text
        assert "s3cret" not in text
