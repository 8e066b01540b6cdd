"""``cli.service``: worker process specs, the supervisor, the embedded token."""

from __future__ import annotations

import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from cli.service import (
    CPU_JOBS_PER_CHILD,
    TOKEN_FILE,
    Supervisor,
    WorkerSpec,
    build_api,
    ensure_local_token,
    parse_gpus,
    reaper_spec,
    worker_specs,
)
from core.db import make_engine, make_session_factory, session_scope
from core.migrate import upgrade
from core.services import authenticate, list_tokens, revoke_token
from core.settings import Settings
from tests.api.conftest import TestClient
from worker.celery_app import CPU_QUEUE, CUDA_QUEUE, JOBS_QUEUE, MAINTENANCE_QUEUE
from worker.pool import POOL

runner = CliRunner()


def _option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


class TestParseGpus:
    def test_reads_indexes_and_uuids(self) -> None:
        assert parse_gpus("0, 1,GPU-5f2a") == ["0", "1", "GPU-5f2a"]

    @pytest.mark.parametrize("text", ["", "0,,1", " , "])
    def test_empty_entries_are_refused(self, text: str) -> None:
        with pytest.raises(ValueError, match="comma-separated"):
            parse_gpus(text)

    def test_a_gpu_listed_twice_is_refused(self) -> None:
        with pytest.raises(ValueError, match="twice"):
            parse_gpus("0,1,0")

    def test_the_worker_command_names_the_option(self) -> None:
        result = runner.invoke(app, ["worker", "--gpus", "0,0"])
        assert result.exit_code == 2
        assert "--gpus" in result.output
        assert "twice" in result.output


class TestWorkerSpecs:
    def test_one_process_per_gpu_pinned_with_cuda_visible_devices(self) -> None:
        specs = worker_specs(gpus=["0", "1"])
        assert [s.name for s in specs] == ["gpu0", "gpu1"]
        assert [s.env["CUDA_VISIBLE_DEVICES"] for s in specs] == ["0", "1"]
        for spec in specs:
            assert _option(spec.argv, "-Q") == f"{CUDA_QUEUE},{JOBS_QUEUE},{CPU_QUEUE}"
            # prefork, replacing exited children at once (worker.pool.FreshProcessPool)
            assert "--pool=custom" in spec.argv
            assert spec.env["CELERY_CUSTOM_WORKER_POOL"] == POOL
            assert "--concurrency=1" in spec.argv
            # a fresh process per job: its exit frees the CUDA context
            assert "--max-tasks-per-child=1" in spec.argv
            assert _option(spec.argv, "-n").startswith(f"{spec.name}.{os.getpid()}@")

    def test_cpu_workers_see_no_gpu_and_never_take_cuda_jobs(self) -> None:
        specs = worker_specs(processes=3)
        assert [s.name for s in specs] == ["cpu1", "cpu2", "cpu3"]
        for spec in specs:
            assert spec.env["CUDA_VISIBLE_DEVICES"] == ""
            assert _option(spec.argv, "-Q") == f"{CPU_QUEUE},{JOBS_QUEUE}"
            assert f"--max-tasks-per-child={CPU_JOBS_PER_CHILD}" in spec.argv

    def test_at_least_one_process(self) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            worker_specs(processes=0)

    def test_the_reaper_runs_beat_on_the_maintenance_queue(self, tmp_path: Path) -> None:
        spec = reaper_spec(Settings(_env_file=None, data_dir=tmp_path))
        assert _option(spec.argv, "-Q") == MAINTENANCE_QUEUE
        assert "--beat" in spec.argv
        assert f"--schedule={tmp_path / 'beat-schedule'}" in spec.argv
        # a cold shutdown when its supervisor dies: it stops its beat process too
        assert spec.death_signal == signal.SIGQUIT


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _wait(condition: Callable[[], bool], *, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not true after {timeout_s} s")
        time.sleep(0.02)


class TestSupervisor:
    def test_restarts_a_process_that_exits_and_counts_it(self, tmp_path: Path) -> None:
        marker = tmp_path / "runs"
        code = f"open({str(marker)!r}, 'a').write('x'); import sys; sys.exit(3)"
        supervisor = Supervisor([WorkerSpec("flaky", _python(code))], backoff_s=(0.0,))

        def restarted_twice() -> bool:
            supervisor.poll()
            return supervisor.restarts["flaky"] >= 2

        supervisor.start()
        try:
            _wait(restarted_twice)
        finally:
            supervisor.stop(grace_s=5)
        assert supervisor.restarts["flaky"] >= 2
        assert len(marker.read_text()) >= supervisor.restarts["flaky"]

    def test_waits_longer_each_time_a_process_keeps_dying(self) -> None:
        supervisor = Supervisor(
            [WorkerSpec("dies", _python("raise SystemExit(1)"))], backoff_s=(0.0, 3600.0)
        )
        supervisor.start()
        try:
            _wait(lambda: supervisor.poll() == ["dies"])
            process = supervisor.processes["dies"]
            _wait(lambda: process.poll() is not None)
            assert all(supervisor.poll() == [] for _ in range(5))  # an hour's backoff now
        finally:
            supervisor.stop(grace_s=5)
        assert supervisor.restarts["dies"] == 1

    def test_a_held_process_starts_only_once_released(self) -> None:
        sleeper = _python("import time; time.sleep(600)")
        supervisor = Supervisor(
            [WorkerSpec("now", sleeper), WorkerSpec("later", sleeper)], held=["later"]
        )
        supervisor.start()
        try:
            assert supervisor.poll() == []
            assert list(supervisor.processes) == ["now"]
            supervisor.release("later")
            supervisor.poll()
            assert supervisor.processes["later"].poll() is None
        finally:
            supervisor.stop(grace_s=0)

    def test_stop_terminates_and_restarts_nothing(self, tmp_path: Path) -> None:
        supervisor = Supervisor(
            [WorkerSpec(f"sleeper{i}", _python("import time; time.sleep(600)")) for i in range(2)],
            log_dir=tmp_path / "logs",
        )
        supervisor.start()
        supervisor.stop(grace_s=5)
        assert all(p.poll() is not None for p in supervisor.processes.values())
        assert supervisor.poll() == []
        assert sorted(p.name for p in (tmp_path / "logs").iterdir()) == [
            "sleeper0.log",
            "sleeper1.log",
        ]

    def test_a_process_that_ignores_sigterm_is_killed_after_the_grace(self) -> None:
        code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + (
            "print('ready', flush=True); time.sleep(600)"
        )
        supervisor = Supervisor([WorkerSpec("stubborn", _python(code))])
        supervisor.start()
        time_before = time.monotonic()
        supervisor.stop(grace_s=0.5)
        assert supervisor.processes["stubborn"].returncode is not None
        assert time.monotonic() - time_before < 10


class TestLocalToken:
    @pytest.fixture
    def settings(self, tmp_path: Path) -> Settings:
        settings = Settings(_env_file=None, data_dir=tmp_path)
        upgrade(settings)
        return settings

    def _team_of(self, settings: Settings, secret: str) -> str:
        engine = make_engine(settings)
        try:
            with session_scope(make_session_factory(engine)) as session:
                return authenticate(session, token=secret).name
        finally:
            engine.dispose()

    def test_made_once_saved_private_and_reused(self, settings: Settings) -> None:
        first = ensure_local_token(settings)
        path = settings.data_dir / TOKEN_FILE
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_text().strip() == first
        assert self._team_of(settings, first) == "local"
        assert ensure_local_token(settings) == first

    def test_a_saved_token_that_no_longer_works_is_replaced(self, settings: Settings) -> None:
        first = ensure_local_token(settings)
        engine = make_engine(settings)
        try:
            with session_scope(make_session_factory(engine)) as session:
                team = authenticate(session, token=first)
                (token,) = list_tokens(session, team=team)
                revoke_token(session, team=team, token_id=token.id)
        finally:
            engine.dispose()
        second = ensure_local_token(settings)
        assert second != first
        assert self._team_of(settings, second) == "local"


class TestBuildApi:
    """The production app: jobs leave through Celery, ``/readyz`` checks the broker."""

    @pytest.fixture
    def migrated(self, tmp_path: Path) -> Settings:
        settings = Settings(_env_file=None, data_dir=tmp_path)
        upgrade(settings)
        return settings

    def test_not_ready_when_the_broker_is_unreachable(self, migrated: Settings) -> None:
        settings = migrated.model_copy(update={"broker_url": "redis://127.0.0.1:1/0"})
        response = TestClient(build_api(settings)).get("/readyz")
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["detail"].startswith("broker unreachable")
        assert response.json()["errors"][0]["field"] == "broker"

    def test_ready_on_the_embedded_broker(self, migrated: Settings) -> None:
        response = TestClient(build_api(migrated)).get("/readyz")
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "ready"


_WITH_GRANDCHILD = (
    "import subprocess, sys, time; "
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
    "print(child.pid, flush=True); time.sleep(600)"
)


def _grandchild(log: Path) -> int:
    _wait(lambda: log.exists() and log.read_text().strip().isdigit())
    return int(log.read_text())


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state == "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
class TestStoppingProcessGroups:
    def test_grace_zero_kills_each_worker_with_its_children_at_once(self, tmp_path: Path) -> None:
        supervisor = Supervisor(
            [WorkerSpec("parent", _python(_WITH_GRANDCHILD))], log_dir=tmp_path / "logs"
        )
        supervisor.start()
        grandchild = _grandchild(tmp_path / "logs" / "parent.log")
        supervisor.stop(grace_s=0)
        assert supervisor.processes["parent"].returncode == -signal.SIGKILL
        _wait(lambda: _gone(grandchild))

    def test_after_the_grace_a_stubborn_worker_is_killed_with_its_children(
        self, tmp_path: Path
    ) -> None:
        code = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); " + _WITH_GRANDCHILD
        supervisor = Supervisor([WorkerSpec("stubborn", _python(code))], log_dir=tmp_path / "logs")
        supervisor.start()
        grandchild = _grandchild(tmp_path / "logs" / "stubborn.log")
        supervisor.stop(grace_s=0.5)
        _wait(lambda: _gone(grandchild))

    def test_a_worker_dies_with_the_thread_that_started_it(self) -> None:
        # what a SIGKILLed supervisor amounts to for its children: the parent-death signal
        supervisor = Supervisor([WorkerSpec("orphan", _python("import time; time.sleep(600)"))])
        starter = threading.Thread(target=supervisor.start)
        starter.start()
        starter.join()
        process = supervisor.processes["orphan"]
        try:
            process.wait(timeout=30)
        finally:
            supervisor.stop(grace_s=0)
        assert process.returncode == -signal.SIGKILL
