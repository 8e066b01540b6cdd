"""The command line against a real service: ``clr-sweep api`` (a process) on PostgreSQL,
a real Celery worker on Redis (tests/worker/conftest.py), the real commands (in-process
through typer's runner, or as processes where a signal is sent), every ``--json``
document parsed, and every exit code: succeeded, failed, cancelled, not found, invalid
input, unreachable, bad token, conflict, busy and interrupted. Workloads are tiny."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner, Result

from cli.exit_codes import ExitCode
from cli.main import app
from cli.service import free_port
from core.db import session_scope
from core.services import create_token
from core.settings import Settings
from tests.builders import make_team
from tests.worker.conftest import WorkerProcess

pytestmark = [pytest.mark.worker, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 120.0
MAX_ACTIVE = 3
"""The API's cap of active jobs per team here: the fourth is refused (429, exit code busy)."""
TINY = ["-p", "width=16", "--device", "cpu"]
TINY_TEST = [*TINY, "--num-iter", "100"]
# a range test that runs until it is cancelled: a low, flat LR never diverges
ENDLESS_TEST = [*TINY, "--num-iter", "100000", "--start-lr", "1e-6", "--end-lr", "1e-5"]
TINY_TRAINING = [*TINY, "--base-lr", "0.02", "--max-lr", "0.2", "--step-size", "11"]
TINY_TRAINING += ["--cycles", "1"]

runner = CliRunner()


@dataclass
class Api:
    """The API process and its URL."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture(scope="module")
def api(
    worker_settings: Settings,
    celery_worker: WorkerProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Api]:
    """``clr-sweep api`` on the worker tier's database and broker (``celery_worker``
    consumes from it), for this module."""
    assert celery_worker.process.poll() is None, celery_worker.log_tail()
    port = free_port()
    log = tmp_path_factory.mktemp("api") / "api.log"
    env = {
        **os.environ,
        "CLR_DATABASE_URL": str(worker_settings.database_url),
        "CLR_BROKER_URL": worker_settings.broker,
        "CLR_DATA_DIR": str(worker_settings.data_dir),
        "CLR_MAX_ACTIVE_JOBS_PER_TEAM": str(MAX_ACTIVE),
        "OMP_NUM_THREADS": "1",
    }
    argv = [sys.executable, "-m", "cli", "api", "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    service = Api(f"http://127.0.0.1:{port}", process, log)
    try:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"the API exited with {process.returncode}:\n{service.log_tail()}")
            try:
                if httpx.get(f"{service.url}/readyz", timeout=5).is_success:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the API was not ready in {DEADLINE_S} s:\n{service.log_tail()}")
            time.sleep(0.1)
        yield service
    finally:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture
def token(db: sessionmaker[Session]) -> str:
    """A token of a new team (the ``db`` fixture empties every table afterwards)."""
    with session_scope(db) as session:
        return create_token(session, team=make_team(session), name="cli").secret


@pytest.fixture
def cli(
    api: Api, token: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Callable[..., Result]:
    """Run ``clr-sweep ARGV --url <the API> --token <the team's>`` in this process."""
    monkeypatch.chdir(tmp_path)
    for key in ("CLR_URL", "CLR_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))

    def invoke(*argv: str, auth: bool = True) -> Result:
        extra = ["--url", api.url, "--token", token] if auth else []
        return runner.invoke(app, [*argv, *extra])

    return invoke


def document(result: Result) -> Any:
    """The one JSON document on stdout (a second one, or anything else there, fails)."""
    return json.loads(result.stdout)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(read: Callable[[], Any], done: Callable[[Any], bool], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: still {value!r} after {DEADLINE_S} s")
        time.sleep(0.05)


class TestRangeTest:
    def test_submit_under_seeds_prints_the_bounds_across_them(
        self, cli: Callable[..., Result]
    ) -> None:
        # seed 5's curve gives no bounds at 60 steps from 1e-5, seed 6's does
        argv = [*TINY, "--num-iter", "60", "--seeds", "6,5"]
        done = cli("range-test", "submit", *argv)
        assert done.exit_code == ExitCode.OK, done.output
        assert "seeds 6, 5: the 2 seeds ran as one fused range test (stacked path)" in done.stdout
        assert "warning: seed 5 gave no bounds (no descent found" in done.stdout
        job_id = done.stdout.split()[2]  # "range test <id> queued"
        shown = document(cli("range-test", "show", job_id, "--json"))
        assert (shown["spec"]["seed"], shown["spec"]["seeds"]) == (6, [6, 5])
        band = shown["result"]["seed_band"]
        assert (band["seeds"], band["fused"], list(band["failed"])) == ([6, 5], True, ["5"])
        assert f"max_lr {band['default']['max_lr']:.3g}" in done.stdout
        assert shown["result"]["bounds"]["confidence"] == band["confidence"]

    def test_submit_show_bounds_plot_list_and_wait_of_one_range_test(
        self, cli: Callable[..., Result], tmp_path: Path
    ) -> None:
        plot = tmp_path / "curve.svg"
        done = cli("range-test", "submit", *TINY_TEST, "--plot", str(plot), "--json")
        assert done.exit_code == ExitCode.OK, done.output
        job = document(done)
        assert (job["kind"], job["status"]) == ("range_test", "succeeded")
        bounds = job["result"]["bounds"]
        assert bounds["job_id"] == job["id"]
        assert bounds["suggestions"][0]["method"] == bounds["default_method"]
        assert "range test" in done.stderr  # the progress bar, off stdout
        assert plot.read_text().lstrip().startswith(("<?xml", "<svg"))
        job_id = job["id"]

        # the local command answers the same document
        local = cli("range-test", *TINY_TEST, "--json", auth=False)
        assert local.exit_code == ExitCode.OK, local.output
        here = document(local)
        assert set(here) <= set(job)
        assert set(here["result"]) == set(job["result"])
        assert set(here["result"]["bounds"]) == set(bounds)
        assert set(here["result"]["summary"]) == set(job["result"]["summary"])

        shown = cli("range-test", "show", job_id, "--json")
        assert shown.exit_code == ExitCode.OK, shown.output
        assert document(shown)["result"]["bounds"] == bounds

        human = cli("range-test", "bounds", job_id)
        assert human.exit_code == ExitCode.OK, human.output
        assert f"max_lr={bounds['max_lr']:.4g}, step_size_up={bounds['step_size']}" in human.stdout
        assert f"stop after iteration {bounds['stop_iteration']}" in human.stdout
        steepest = cli("range-test", "bounds", job_id, "--method", "steepest", "--json")
        assert steepest.exit_code == ExitCode.OK, steepest.output
        assert document(steepest)["method"] == "steepest"
        assert document(steepest)["suggestions"][0]["method"] == "steepest"

        # by configuration: the latest range test of the workload and its params
        found = cli("range-test", "bounds", "--workload", "digits_mlp", "-p", "width=16", "--json")
        assert found.exit_code == ExitCode.OK, found.output
        assert document(found) == bounds
        none = cli("range-test", "bounds", "--workload", "digits_mlp", "-p", "width=32", "--json")
        assert none.exit_code == ExitCode.NOT_FOUND, none.output

        png = tmp_path / "curve.png"
        plotted = cli("range-test", "plot", job_id, "-o", str(png), "--json")
        assert plotted.exit_code == ExitCode.OK, plotted.output
        assert document(plotted)["bytes"] == len(png.read_bytes()) > 0
        assert png.read_bytes().startswith(b"\x89PNG")

        listed = cli("range-test", "list", "--json")
        assert [j["id"] for j in document(listed)["items"]] == [job_id]
        for argv in (
            ["--kind", "range_test", "--status", "succeeded"],
            ["--workload", "digits_mlp"],
        ):
            every = cli("jobs", "list", *argv, "--json")
            assert every.exit_code == ExitCode.OK, every.output
            assert [j["id"] for j in document(every)["items"]] == [job_id]
        none = cli("jobs", "list", "--kind", "training", "--json")
        assert document(none)["items"] == []
        table = cli("jobs", "list")
        assert job_id in table.stdout

        waited = cli("range-test", "wait", job_id, "--json")
        assert waited.exit_code == ExitCode.OK, waited.output
        assert document(waited)["id"] == job_id

        # a finished job cannot be cancelled: a conflict
        refused = cli("range-test", "cancel", job_id, "--json")
        assert refused.exit_code == ExitCode.CONFLICT, refused.output
        assert document(refused)["error"]["status"] == 409

    def test_a_cancelled_range_test_waits_to_exit_code_cancelled(
        self, cli: Callable[..., Result]
    ) -> None:
        queued = cli("range-test", "submit", *ENDLESS_TEST, "--no-wait", "--json")
        assert queued.exit_code == ExitCode.OK, queued.output
        job_id = document(queued)["id"]
        cancelled = cli("range-test", "cancel", job_id, "--json")
        assert cancelled.exit_code == ExitCode.OK, cancelled.output
        assert document(cancelled)["id"] == job_id
        waited = cli("range-test", "wait", job_id, "--json")
        assert waited.exit_code == ExitCode.JOB_CANCELLED, waited.output
        assert document(waited)["status"] == "cancelled"


class TestTraining:
    def test_no_wait_then_wait_then_show(self, cli: Callable[..., Result]) -> None:
        queued = cli("training", "submit", *TINY_TRAINING, "--no-wait", "--json")
        assert queued.exit_code == ExitCode.OK, queued.output
        job = document(queued)
        assert (job["kind"], job["status"], job["total"]) == ("training", "queued", 22)
        waited = cli("training", "wait", job["id"], "--json")
        assert waited.exit_code == ExitCode.OK, waited.output
        assert document(waited)["status"] == "succeeded"
        assert document(waited)["result"]["iterations"] == 22
        shown = cli("training", "show", job["id"])
        assert shown.exit_code == ExitCode.OK, shown.output
        assert "final val accuracy" in shown.stdout
        # another kind's group does not read it
        other = cli("range-test", "show", job["id"], "--json")
        assert other.exit_code == ExitCode.NOT_FOUND
        assert "is a training, not a range test" in document(other)["error"]["message"]

    def test_a_training_that_diverges_exits_job_failed(self, cli: Callable[..., Result]) -> None:
        failed = cli(
            # the weight decay flips and multiplies the weights by 999 a step: NaN by step 5
            "training", "submit", *TINY, "--policy", "fixed", "--lr", "1000",
            "--weight-decay", "1", "--iterations", "30", "--json",
        )  # fmt: skip
        assert failed.exit_code == ExitCode.JOB_FAILED, failed.output
        job = document(failed)
        assert job["status"] == "failed"
        assert "diverged" in job["error"]
        assert "diverged" in failed.stderr


class TestBringYourOwnCurve:
    def test_bounds_by_the_model_dataset_and_tags_of_a_range_test_run_in_a_loop(
        self, api: Api, token: str, cli: Callable[..., Result]
    ) -> None:
        import torch
        from torch import nn
        from torch.utils.data import DataLoader, TensorDataset

        import clr
        from clr_sweep import Client
        from clr_sweep.uploads import range_test_uploader

        generator = torch.Generator().manual_seed(0)
        x = torch.randn(512, 8, generator=generator)
        y = (x @ torch.randn(8, generator=generator) > 0).long()
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        loader = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True, generator=generator)
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
        settings = {"start_lr": 1e-4, "end_lr": 10.0, "num_iter": 120}
        with (
            Client(url=api.url, token=token) as client,
            range_test_uploader(
                client,
                model="tiny-mlp",
                dataset="generated",
                batch_size=32,
                optimizer=optimizer,
                tags={"run": "cli"},
                iters_per_epoch=len(loader),
                **settings,
            ) as upload,
        ):
            result = clr.RangeTest(model, optimizer, nn.CrossEntropyLoss()).run(
                loader, callback=upload, should_stop=upload.should_stop, **settings
            )
            upload.finish(result)
        argv = ["range-test", "bounds", "--model", "tiny-mlp", "--dataset", "generated"]
        argv += ["--batch-size", "32", "--optimizer", "sgd", "--tag", "run=cli"]
        found = cli(*argv, "--json")
        assert found.exit_code == ExitCode.OK, found.output
        assert document(found)["job_id"] == str(upload.job_id)
        other = cli(*argv[:-1], "run=other", "--json")
        assert other.exit_code == ExitCode.NOT_FOUND, other.output


class TestSweep:
    def test_submit_wait_children_show_and_plot(
        self, cli: Callable[..., Result], tmp_path: Path
    ) -> None:
        queued = cli(
            "sweep", "submit", *TINY, "--policies", "fixed,triangular2", "--seeds", "0",
            "--step-size", "11", "--cycles", "1", "--no-verify", "--num-iter", "100",
            "--start-lr", "1e-4", "--end-lr", "1", "--no-wait", "--json",
        )  # fmt: skip
        assert queued.exit_code == ExitCode.OK, queued.output
        sweep_id = document(queued)["id"]
        waited = cli("sweep", "wait", sweep_id, "--json")
        assert waited.exit_code == ExitCode.OK, waited.output
        sweep = document(waited)
        assert (sweep["status"], sweep["progress"], sweep["total"]) == ("succeeded", 3, 3)
        children = document(cli("jobs", "list", "--parent", sweep_id, "--json"))["items"]
        assert sorted(c["kind"] for c in children) == ["range_test", "training", "training"]
        trainings = document(cli("training", "list", "--parent", sweep_id, "--json"))["items"]
        assert len(trainings) == 2
        shown = cli("sweep", "show", sweep_id)
        assert shown.exit_code == ExitCode.OK, shown.output
        assert "Sweep of digits_mlp" in shown.stdout
        assert "step_size 11, 22 iterations (1 cycles)" in shown.stdout
        plot = tmp_path / "sweep.svg"
        assert cli("sweep", "plot", sweep_id, "-o", str(plot)).exit_code == ExitCode.OK
        assert plot.read_text().lstrip().startswith(("<?xml", "<svg"))


class TestErrors:
    def test_an_unknown_job_is_not_found(self, cli: Callable[..., Result]) -> None:
        missing = str(uuid.uuid4())
        for argv in (
            ["range-test", "show", missing],
            ["range-test", "bounds", missing],
            ["training", "wait", missing],
            ["sweep", "cancel", missing],
        ):
            result = cli(*argv, "--json")
            assert result.exit_code == ExitCode.NOT_FOUND, (argv, result.output)
            error = document(result)["error"]
            assert (error["name"], error["status"]) == ("not_found", 404)
            assert missing in error["detail"]

    @pytest.mark.parametrize(
        ("argv", "field"),
        [
            (["range-test", "submit", "--start-lr", "1", "--end-lr", "0.1"], "end_lr"),
            (["range-test", "submit", "-p", "widht=3"], "params.widht"),
            (["range-test", "submit", "--seeds", "3,4,3"], "seeds.2"),
            (["range-test", "submit", "--seeds", "3,4", "--seed", "5"], "seed"),
            (["training", "submit", "--from-range-test", str(uuid.UUID(int=1))],
             "bounds_from.range_test"),
            (["jobs", "list", "--status", "done"], "status"),
        ],
    )  # fmt: skip
    def test_the_apis_422_is_invalid_naming_the_field(
        self, cli: Callable[..., Result], argv: list[str], field: str
    ) -> None:
        result = cli(*argv, "--json")
        assert result.exit_code == ExitCode.INVALID, result.output
        error = document(result)["error"]
        assert error["status"] in (400, 422)
        assert field in [e["field"] for e in error["errors"]]
        assert field in result.stderr
        assert "Traceback" not in result.output

    @pytest.mark.usefixtures("cli")
    @pytest.mark.parametrize(
        ("argv", "field"),
        [
            (["range-test", "submit", "--start-lr", "nan"], "start_lr"),
            (["sweep", "submit", "--fixed-lr", "inf"], "fixed_lr"),
            (["sweep", "submit", "--grid-weight-decay", "0,nan"], "grid.weight_decay.1"),
        ],
    )
    def test_a_non_finite_number_is_invalid_naming_the_field(
        self, cli: Callable[..., Result], argv: list[str], field: str
    ) -> None:
        # JSON has no NaN: the command refuses it as the API would, never a traceback
        result = cli(*argv, "--json")
        assert result.exit_code == ExitCode.INVALID, result.output
        assert document(result)["error"]["errors"] == [
            {"field": field, "reason": "must be a finite number"}
        ]
        assert cli("jobs", "list", "--json").stdout.count('"id"') == 0  # nothing submitted

    def test_a_closed_port_is_unreachable_naming_the_url(self) -> None:
        url = f"http://127.0.0.1:{closed_port()}"
        argv = ["--retries", "0", "jobs", "list", "--url", url, "--token", "x", "--json"]
        result = runner.invoke(app, argv)
        assert result.exit_code == ExitCode.UNREACHABLE, result.output
        error = document(result)["error"]
        assert url in error["message"]
        assert "clr-sweep serve" in error["message"]
        assert "--embedded" in error["message"]

    @pytest.mark.parametrize("bad", ["clr_" + "A" * 43, "nonsense"])
    def test_a_bad_token_is_unauthorized(self, api: Api, bad: str) -> None:
        result = runner.invoke(app, ["range-test", "list", "--url", api.url, "--token", bad,
                                     "--json"])  # fmt: skip
        assert result.exit_code == ExitCode.UNAUTHORIZED, result.output
        assert document(result)["error"]["status"] == 401
        assert "--token" in result.stderr

    def test_the_teams_cap_of_active_jobs_is_busy(
        self, api: Api, token: str, cli: Callable[..., Result]
    ) -> None:
        ids = []
        for _ in range(MAX_ACTIVE):
            queued = cli("range-test", "submit", *ENDLESS_TEST, "--no-wait", "--json")
            assert queued.exit_code == ExitCode.OK, queued.output
            ids.append(document(queued)["id"])
        # --retries 0: refused at once (by default the client retries after Retry-After)
        refused = runner.invoke(
            app,
            ["--retries", "0", "range-test", "submit", *ENDLESS_TEST, "--no-wait", "--json",
             "--url", api.url, "--token", token],
        )  # fmt: skip
        for job_id in ids:
            cancelled = cli("range-test", "cancel", job_id)
            assert cancelled.exit_code == ExitCode.OK, cancelled.output
        assert refused.exit_code == ExitCode.BUSY, refused.output
        assert document(refused)["error"]["status"] == 429


class TestInterrupted:
    def command(self, api: Api, token: str, *argv: str) -> subprocess.Popen[str]:
        env = {k: v for k, v in os.environ.items() if k not in ("CLR_URL", "CLR_TOKEN")}
        return subprocess.Popen(
            [sys.executable, "-m", "cli", *argv, "--url", api.url, "--token", token, "--json"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def running_job(self, api: Api, token: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"}

        def read() -> list[dict[str, Any]]:
            items: list[dict[str, Any]] = httpx.get(
                f"{api.url}/jobs", headers=headers, timeout=10
            ).json()["items"]
            return items

        jobs = wait_until(
            read, lambda items: any(j["progress"] > 0 for j in items), "a job with progress"
        )
        return next(j for j in jobs if j["progress"] > 0)

    def test_ctrl_c_while_submit_follows_cancels_the_job(self, api: Api, token: str) -> None:
        process = self.command(api, token, "range-test", "submit", *ENDLESS_TEST)
        try:
            job = self.running_job(api, token)
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=DEADLINE_S)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == ExitCode.INTERRUPTED, err
        left = json.loads(out)
        assert (left["id"], left["status"]) == (job["id"], "cancelled")
        assert "cancel requested" in err

    def test_ctrl_c_while_wait_follows_leaves_the_job_running(
        self, api: Api, token: str, cli: Callable[..., Result]
    ) -> None:
        queued = cli("range-test", "submit", *ENDLESS_TEST, "--no-wait", "--json")
        job_id = document(queued)["id"]
        self.running_job(api, token)
        process = self.command(api, token, "range-test", "wait", job_id)
        try:
            assert process.stderr is not None
            # its first line: it is following the job, Ctrl-C handled
            assert "waiting for range test" in process.stderr.readline()
            process.send_signal(signal.SIGINT)
            out, err = process.communicate(timeout=DEADLINE_S)
        finally:
            if process.poll() is None:
                process.kill()
        assert process.returncode == ExitCode.INTERRUPTED, err
        assert "stopped watching" in err
        shown = cli("range-test", "show", job_id, "--json")
        assert document(shown)["status"] == "running"
        assert json.loads(out)["id"] == job_id
        assert cli("range-test", "cancel", job_id).exit_code == ExitCode.OK


class TestWorkloadsAndLogin:
    def test_the_services_workloads_are_the_local_registrys(
        self, cli: Callable[..., Result]
    ) -> None:
        served = cli("workloads", "--json")
        assert served.exit_code == ExitCode.OK, served.output
        local = cli("workloads", "--local", "--json", auth=False)
        assert document(served) == document(local)

    def test_login_writes_a_private_config_every_command_then_reads(
        self, api: Api, token: str, cli: Callable[..., Result], tmp_path: Path
    ) -> None:
        logged = runner.invoke(app, ["login", api.url, "--token", token, "--json"])
        assert logged.exit_code == ExitCode.OK, logged.output
        config = Path(document(logged)["config"])
        assert config.is_relative_to(tmp_path / "config")
        assert config.stat().st_mode & 0o777 == 0o600
        listed = cli("jobs", "list", "--json", auth=False)  # no --url, no --token
        assert listed.exit_code == ExitCode.OK, listed.output
        assert document(listed)["items"] == []

    @pytest.mark.usefixtures("cli")
    def test_login_with_a_bad_token_writes_nothing(self, api: Api, tmp_path: Path) -> None:
        refused = runner.invoke(app, ["login", api.url, "--token", "clr_" + "B" * 43])
        assert refused.exit_code == ExitCode.UNAUTHORIZED, refused.output
        assert not (tmp_path / "config").exists()
