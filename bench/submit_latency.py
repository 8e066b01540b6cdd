"""Submit → running latency with an idle worker, on PostgreSQL + Redis and embedded.

Server mode: ``python -m cli worker --processes 1`` and ``python -m cli api`` on
a scratch PostgreSQL database (``clr_bench``) and Redis index 14. Embedded mode:
``python -m cli serve`` on a temporary data folder (SQLite file, kombu's
filesystem transport, polled every 0.1 s; the token is in ``<data dir>/token``).

Each sample POSTs a tiny range test (digits MLP, width 16, 20 steps), waits for
it to finish, then lets the worker sit idle for ``--gap`` seconds (so its next
child process is forked and waiting) before the next one. The latency read from
the job's row is ``started_at - created_at`` (both stamped by the service, the
most exact), and ``started_at -`` the wall-clock time the POST's response
arrived (what a client sees; the response can arrive after the worker already
claimed the job, so it can be negative). Target: median below 100 ms.

    python -m bench.submit_latency [--samples 20] [--gap 1.0] [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from bench._service import (
    ADMIN_URL,
    BROKER_URL,
    MACHINE_NOTE,
    TINY_SPEC,
    WORKER_READY,
    Db,
    Proc,
    cli,
    median,
    percentile,
    postgres_service,
    service_env,
    start,
    wait_http,
    wait_log,
)
from cli.service import LOCAL_TEAM, TOKEN_FILE, free_port
from core.clock import as_utc
from core.models import Job, JobStatus, Team
from core.settings import Settings

console = Console()

JOB_TIMEOUT_S = 120.0


@dataclass
class Samples:
    """Per job, in seconds."""

    created_to_started: list[float] = field(default_factory=list)
    response_to_started: list[float] = field(default_factory=list)
    post_s: list[float] = field(default_factory=list)
    started_to_finished: list[float] = field(default_factory=list)
    range_test_s: list[float] = field(default_factory=list)


def _seconds(later: datetime, earlier: datetime) -> float:
    return (as_utc(later) - as_utc(earlier)).total_seconds()


def measure(
    client: httpx.Client, db: Db, team: Team, *, samples: int, warmup: int, gap_s: float
) -> Samples:
    out = Samples()
    for i in range(warmup + samples):
        t0 = time.perf_counter()
        response = client.post("/range-tests", json=TINY_SPEC)
        responded = datetime.now(UTC)
        post_s = time.perf_counter() - t0
        if response.status_code != 202:
            raise RuntimeError(f"POST /range-tests: {response.status_code} {response.text}")
        job_id = uuid.UUID(response.json()["id"])
        (job,) = db.wait_finished(team, [job_id], timeout_s=JOB_TIMEOUT_S)
        if job.status != JobStatus.SUCCEEDED:
            raise RuntimeError(f"job {job_id} {job.status}: {job.error}")
        if i >= warmup:
            record(out, job, responded, post_s)
        time.sleep(gap_s)
    return out


def record(out: Samples, job: Job, responded: datetime, post_s: float) -> None:
    assert job.started_at is not None
    assert job.finished_at is not None
    out.created_to_started.append(_seconds(job.started_at, job.created_at))
    out.response_to_started.append(_seconds(job.started_at, responded))
    out.post_s.append(post_s)
    out.started_to_finished.append(_seconds(job.finished_at, job.started_at))
    summary: dict[str, Any] = (job.result or {}).get("summary") or {}
    out.range_test_s.append(float(summary.get("seconds", float("nan"))))


def server_mode(args: argparse.Namespace, stack: ExitStack, tmp: Path) -> Samples:
    settings: Settings = stack.enter_context(
        postgres_service(args.postgres, broker_url=args.broker)
    )
    settings = settings.model_copy(update={"data_dir": tmp / "server"})
    db = Db(settings)
    stack.callback(db.close)
    team, secret = db.team_and_token()
    env = service_env(settings)
    # --worker gpu: the GPU worker's process model (a fresh child per job, replaced by
    # worker.pool.FreshProcessPool); without CUDA here its "auto" jobs run on the CPU
    argv = ("worker", "--gpus", "0") if args.worker == "gpu" else ("worker", "--processes", "1")
    worker = start("worker", cli(*argv), env=env, log_dir=tmp / "logs", stack=stack)
    port = free_port()
    api = start(
        "api",
        cli("api", "--host", "127.0.0.1", "--port", str(port)),
        env=env,
        log_dir=tmp / "logs",
        stack=stack,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(api, f"{url}/readyz")
    wait_log(worker, WORKER_READY)
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        return measure(client, db, team, samples=args.samples, warmup=args.warmup, gap_s=args.gap)


def embedded_mode(args: argparse.Namespace, stack: ExitStack, tmp: Path) -> Samples:
    data_dir = tmp / "embedded"
    settings = Settings(_env_file=None, data_dir=data_dir)
    port = free_port()
    serve: Proc = start(
        "serve",
        cli("serve", "--host", "127.0.0.1", "--port", str(port)),
        env=service_env(settings),
        log_dir=tmp / "logs",
        stack=stack,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(serve, f"{url}/readyz")
    wait_log(serve, WORKER_READY, log=data_dir / "logs" / "cpu1.log")
    secret = (data_dir / TOKEN_FILE).read_text().strip()
    db = Db(settings)
    stack.callback(db.close)
    team = db.team(LOCAL_TEAM)
    headers = {"Authorization": f"Bearer {secret}"}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        return measure(client, db, team, samples=args.samples, warmup=args.warmup, gap_s=args.gap)


def report(results: dict[str, Samples]) -> None:
    table = Table(title="submit -> running, idle worker (ms)")
    for column in (
        "mode",
        "n",
        "created→started median",
        "p90",
        "max",
        "POST response→started median",
        "POST ms median",
        "run (started→finished)",
        "range test itself",
    ):
        table.add_column(column, justify="left" if column == "mode" else "right")
    for mode, s in results.items():
        ms = [x * 1e3 for x in s.created_to_started]
        table.add_row(
            mode,
            str(len(ms)),
            f"{median(ms):.0f}",
            f"{percentile(ms, 90):.0f}",
            f"{max(ms):.0f}",
            f"{median(s.response_to_started) * 1e3:.0f}",
            f"{median(s.post_s) * 1e3:.0f}",
            f"{median(s.started_to_finished) * 1e3:.0f}",
            f"{median(s.range_test_s) * 1e3:.0f}",
        )
    console.print(table)
    for mode, s in results.items():
        med = median(s.created_to_started)
        mark = "[green]met[/]" if med < 0.1 else "[red]missed[/]"
        console.print(f"{mode}: median submit→running {med * 1e3:.0f} ms, target < 100 ms: {mark}")
    if "server" in results and "embedded" in results:
        ratio = median(results["embedded"].created_to_started) / median(
            results["server"].created_to_started
        )
        console.print(f"embedded / server (median): {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2, help="jobs run first, not counted")
    parser.add_argument("--gap", type=float, default=1.0, help="idle seconds between jobs")
    parser.add_argument("--mode", choices=["server", "embedded", "both"], default="both")
    parser.add_argument("--postgres", default=ADMIN_URL, help="admin URL of the server")
    parser.add_argument("--broker", default=BROKER_URL, help="Redis URL (flushed before and after)")
    parser.add_argument(
        "--worker",
        choices=["cpu", "gpu"],
        default="cpu",
        help="server mode's worker: cpu (child reused) or gpu (a fresh child per job)",
    )
    parser.add_argument("--quick", action="store_true", help="5 samples, 1 warm-up")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.warmup = 5, 1
    console.print(
        f"submit latency: {args.samples} sequential tiny range tests per mode after "
        f"{args.warmup} warm-up, {args.gap:g} s idle between them"
    )
    console.print(f"[yellow]{MACHINE_NOTE}[/]")
    results: dict[str, Samples] = {}
    modes = ["server", "embedded"] if args.mode == "both" else [args.mode]
    for mode in modes:
        with ExitStack() as stack:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clr-bench-")))
            run = server_mode if mode == "server" else embedded_mode
            results[mode] = run(args, stack, tmp)
    report(results)


if __name__ == "__main__":
    main()
