"""The API process's memory: resident size at rest and under a steady mixed load.

Starts the real ``python -m cli api`` (PostgreSQL ``clr_bench_memory`` and Redis
index 14 by default; ``--embedded``: a SQLite file and the filesystem broker in a
scratch folder), reads its resident set size (``VmRSS`` in ``/proc/<pid>/status``)
once it is ready and idle, then keeps ``--concurrency`` requests in flight for
``--requests`` requests of a fixed mix (submit a range test and cancel it, read a job, list
jobs, read a curve, read bounds by job and by configuration, draw a plot.png),
sampling the RSS after every tenth of them. Growth is read between the first
sample after warm-up and the last: a steady load of the same requests should
reach a plateau, so MB per 1,000 requests near zero.

The same run then starts a second API process that imports torch and the ``clr``
training modules first, as the API did before it kept them out, and measures it
the same way (``--no-torch-baseline`` skips it), so the saving is a difference
measured in one run on one machine. It also prints how long importing the API's
code takes in a fresh interpreter, with and without torch.

    python -m bench.api_memory [--requests 3000] [--concurrency 8] [--embedded]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from alembic import command
from rich.console import Console
from rich.table import Table

from bench._service import (
    ADMIN_URL,
    BROKER_URL,
    MACHINE_NOTE,
    TINY_SPEC,
    Db,
    Proc,
    postgres_service,
    service_env,
    start,
    wait_http,
)
from cli.service import free_port
from core.db import session_scope
from core.kinds import CURVE
from core.migrate import alembic_config
from core.models import Team
from core.series import SeriesPoints
from core.services import claim_job, finish_job, report_progress, submit_job
from core.settings import Settings
from core.specs import RangeTestOutcome

console = Console()

BENCH_DATABASE = "clr_bench_memory"
"""This benchmark's own scratch database (other benchmarks use ``clr_bench``)."""

API_IMPORTS = "import cli.service, api.app, worker.celery_app, worker.sender"
"""What ``clr-sweep api`` imports before it serves (``build_api``'s modules)."""

TORCH_FIRST = "import torch, clr.range_test, clr.schedules, clr.optim, clr.workloads._batches"
"""What the API used to import along with its own code: torch and the training modules."""


# --------------------------------------------------------------------------- memory


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` field of ``/proc/<pid>/status`` (``VmRSS``: resident now; ``VmHWM``: peak)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return int(line.split()[1])
    raise KeyError(f"{key} not in /proc/{pid}/status")


def mib(kib: int) -> float:
    return kib / 1024


def torch_loaded(pid: int) -> bool:
    """Whether the process mapped torch's shared library (it imported torch)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return "libtorch" in maps


# --------------------------------------------------------------------------- the load


@dataclass
class Fixtures:
    """What the requests read: a finished job with bounds, its workload config."""

    job_id: uuid.UUID
    auth: dict[str, str]


def request_mix(fx: Fixtures, i: int) -> tuple[str, str, dict[str, Any] | None, int]:
    """The ``i``-th request of the mix: method, path, JSON body, the expected status.

    Ten requests per round; parameters vary with ``i`` (list sizes, curve offsets)
    so nothing is answered from one cached value.
    """
    job = f"/range-tests/{fx.job_id}"
    slot = i % 10
    if slot == 0:  # cancelled at once (see _drive), so no per-team cap on queued jobs fills up
        spec = {**TINY_SPEC, "seed": i}
        return "POST", "/range-tests", spec, 202
    if slot in (1, 2):
        return "GET", job, None, 200
    if slot in (3, 4):
        return "GET", f"/range-tests?limit={1 + i % 50}", None, 200
    if slot == 5:
        return "GET", f"{job}/curve?after={i % 90}", None, 200
    if slot == 6:
        return "GET", f"{job}/curve?format=csv&after={i % 90}", None, 200
    if slot == 7:
        return "GET", f"{job}/bounds", None, 200
    if slot == 8:
        params = json.dumps({"width": 16})
        return "GET", f"/bounds?workload=digits_mlp&params={params}", None, 200
    return "GET", f"{job}/plot.png", None, 200


async def _drive(base_url: str, fx: Fixtures, start_i: int, count: int, concurrency: int) -> float:
    """Send requests ``start_i .. start_i + count`` of the mix; seconds it took."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    errors: list[str] = []
    queue = iter(range(start_i, start_i + count))
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, headers=fx.auth, timeout=60
    ) as client:

        async def user() -> None:
            for i in queue:
                method, path, body, expect = request_mix(fx, i)
                response = await client.request(method, path, json=body)
                if response.status_code != expect:
                    errors.append(f"{method} {path}: {response.status_code} {response.text[:200]}")
                elif method == "POST":
                    cancel = await client.post(f"/range-tests/{response.json()['id']}/cancel")
                    if cancel.status_code not in (200, 202):
                        errors.append(f"cancel: {cancel.status_code} {cancel.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        seconds = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"{len(errors)} unexpected answers, first: {errors[0]}")
    return seconds


@dataclass
class Sample:
    requests: int
    rss_kib: int
    seconds: float


@dataclass
class Measurement:
    """One API process: RSS at rest and after each slice of the load."""

    name: str
    rest_kib: int = 0
    samples: list[Sample] = field(default_factory=list)
    peak_kib: int = 0
    torch: bool = False

    @property
    def warm(self) -> Sample:
        return self.samples[0]

    @property
    def end(self) -> Sample:
        return self.samples[-1]

    @property
    def growth_per_1000(self) -> float:
        """MiB gained per 1,000 requests between the first sample and the last."""
        done = self.end.requests - self.warm.requests
        return mib(self.end.rss_kib - self.warm.rss_kib) / done * 1000 if done else 0.0


def measure(
    name: str,
    proc: Proc,
    base_url: str,
    fx: Fixtures,
    *,
    requests: int,
    concurrency: int,
    slices: int = 10,
) -> Measurement:
    """RSS of ``proc`` at rest, then after each of ``slices`` equal parts of the load."""
    pid = proc.process.pid
    wait_http(proc, f"{base_url}/readyz")
    time.sleep(1.0)  # let start-up settle: the at-rest figure is an idle process
    result = Measurement(name, rest_kib=status_kib(pid, "VmRSS"))
    per_slice = max(1, requests // slices)
    done = 0
    for _ in range(slices):
        seconds = asyncio.run(_drive(base_url, fx, done, per_slice, concurrency))
        done += per_slice
        proc.check_alive()
        result.samples.append(Sample(done, status_kib(pid, "VmRSS"), seconds))
    result.peak_kib = status_kib(pid, "VmHWM")
    result.torch = torch_loaded(pid)
    return result


# --------------------------------------------------------------------------- setup


@contextmanager
def embedded_service(data_dir: Path) -> Iterator[Settings]:
    """A migrated SQLite database and the filesystem broker in ``data_dir``."""
    settings = Settings(_env_file=None, data_dir=data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    command.upgrade(alembic_config(settings.db_url), "head")
    yield settings


def import_seconds(code: str, *, repeat: int = 3) -> float:
    """Best wall time of a fresh interpreter running ``code`` (imports, then exit)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=os.environ.copy())
        best = min(best, time.perf_counter() - t0)
    return best


def api_argv(port: int, *, torch_first: bool) -> list[str]:
    """``python -m cli api`` on ``port``; with ``torch_first``, torch imported before."""
    args = ["api", "--host", "127.0.0.1", "--port", str(port)]
    if not torch_first:
        return [sys.executable, "-m", "cli", *args]
    code = f"import sys; {TORCH_FIRST}; from cli.main import main; sys.argv[1:] = {args!r}; main()"
    return [sys.executable, "-c", code]


def setup_fixtures(db: Db, team: Team, secret: str, settings: Settings) -> Fixtures:
    """A succeeded range test with its curve and bounds: one tiny real test, run here."""
    from clr import RangeTest, make_optimizer, suggest_all
    from clr.workloads import build_workload

    spec = {**TINY_SPEC, "num_iter": 100}
    work = build_workload("digits_mlp", {"width": 16}, seed=0)
    opt = make_optimizer("sgd", work.model.parameters(), lr=1e-5, momentum=0.9)
    result = RangeTest(work.model, opt, work.loss_fn, metric_fn=work.metric_fn).run(
        work.train_loader, start_lr=1e-5, end_lr=10.0, num_iter=100
    )
    outcome = RangeTestOutcome.from_clr(
        result, suggest_all(result, iters_per_epoch=work.iters_per_epoch)
    )
    points = SeriesPoints.of(
        CURVE,
        0,
        {
            "lr": result.lrs.tolist(),
            "loss": result.losses.tolist(),
            "smoothed_loss": result.smoothed_losses.tolist(),
            "accuracy": None if result.accuracies is None else result.accuracies.tolist(),
        },
    )
    with session_scope(db.factory) as session:
        # no sender in this process: the job is claimed and finished right here
        submission = submit_job(session, team=team, kind="range_test", spec=spec, settings=settings)
        job_id = submission.job.id
    with session_scope(db.factory) as session:
        if claim_job(session, job_id=job_id, worker="bench", device="cpu") is None:
            raise RuntimeError(f"could not claim {job_id}")
    with session_scope(db.factory) as session:
        report_progress(session, job_id=job_id, attempt=1, points=[points], progress=points.size)
    with session_scope(db.factory) as session:
        if finish_job(session, job_id=job_id, attempt=1, result=outcome) is None:
            raise RuntimeError(f"could not finish {job_id}")
    return Fixtures(job_id, {"Authorization": f"Bearer {secret}"})


def report(
    runs: Sequence[Measurement], import_s: dict[str, float], args: argparse.Namespace
) -> None:
    backend = "embedded SQLite + filesystem broker" if args.embedded else "PostgreSQL + Redis"
    console.print(
        f"API memory ({backend}): {args.requests} requests per process, {args.concurrency} in "
        "flight, mix per 10: 1 POST range-tests (+ its cancel), 2 GET job, 2 GET list, "
        "2 GET curve (json, csv), 2 GET bounds (by job, by config), 1 GET plot.png"
    )
    console.print(f"[yellow]{MACHINE_NOTE}[/]")
    for run in runs:
        table = Table(title=f"{run.name}: RSS over the load (torch loaded: {run.torch})")
        for column in ("requests", "RSS MiB", "req/s"):
            table.add_column(column, justify="right")
        table.add_row("0 (at rest)", f"{mib(run.rest_kib):.1f}", "")
        previous = 0
        for s in run.samples:
            rate = (s.requests - previous) / s.seconds
            previous = s.requests
            table.add_row(str(s.requests), f"{mib(s.rss_kib):.1f}", f"{rate:.0f}")
        console.print(table)
    summary = Table(title="API process memory")
    for column in (
        "process",
        "at rest MiB",
        "after 1st slice MiB",
        "end MiB",
        "peak MiB",
        "growth MiB / 1k req",
    ):
        summary.add_column(column, justify="left" if column == "process" else "right")
    for run in runs:
        summary.add_row(
            run.name,
            f"{mib(run.rest_kib):.1f}",
            f"{mib(run.warm.rss_kib):.1f}",
            f"{mib(run.end.rss_kib):.1f}",
            f"{mib(run.peak_kib):.1f}",
            f"{run.growth_per_1000:+.2f}",
        )
    console.print(summary)
    if len(runs) == 2:
        api, baseline = runs
        console.print(
            f"without torch / with torch: at rest {api.rest_kib / baseline.rest_kib:.2f}, "
            f"at the end {api.end.rss_kib / baseline.end.rss_kib:.2f} "
            f"({mib(baseline.end.rss_kib - api.end.rss_kib):.0f} MiB saved)"
        )
    for name, seconds in import_s.items():
        console.print(f"import time, {name}: {seconds:.2f} s (best of 3, fresh interpreter)")
    if "API" in import_s and "API with torch first" in import_s:
        ratio = import_s["API"] / import_s["API with torch first"]
        console.print(f"import time ratio API / API with torch: {ratio:.2f}")


def run(args: argparse.Namespace) -> None:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clr-bench-mem-")))
        if args.embedded:
            settings = stack.enter_context(embedded_service(tmp / "data"))
        else:
            settings = stack.enter_context(
                postgres_service(args.postgres, args.database, args.broker)
            )
            settings = settings.model_copy(update={"data_dir": tmp})
        db = Db(settings)
        stack.callback(db.close)
        team, secret = db.team_and_token()
        fx = setup_fixtures(db, team, secret, settings)

        import_s: dict[str, float] = {"API": import_seconds(API_IMPORTS)}
        variants = [("API", False)]
        if args.torch_baseline:
            import_s["API with torch first"] = import_seconds(f"{TORCH_FIRST}; {API_IMPORTS}")
            variants.append(("API with torch first", True))
        runs: list[Measurement] = []
        for name, torch_first in variants:
            port = free_port()
            with ExitStack() as one:
                proc = start(
                    name.replace(" ", "-"),
                    api_argv(port, torch_first=torch_first),
                    env=service_env(settings),
                    log_dir=tmp / "logs",
                    stack=one,
                )
                runs.append(
                    measure(
                        name,
                        proc,
                        f"http://127.0.0.1:{port}",
                        fx,
                        requests=args.requests,
                        concurrency=args.concurrency,
                    )
                )
        report(runs, import_s, args)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per process")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--embedded", action="store_true", help="SQLite + filesystem broker")
    parser.add_argument(
        "--no-torch-baseline",
        dest="torch_baseline",
        action="store_false",
        help="skip the second process that imports torch first",
    )
    parser.add_argument("--postgres", default=ADMIN_URL, help="maintenance database URL")
    parser.add_argument("--database", default=BENCH_DATABASE, help="scratch database name")
    parser.add_argument("--broker", default=BROKER_URL, help="the scratch Redis index")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
