"""Duplicate messages: how many the reaper sends per real claim, and what one costs.

1. **Rate under load.** ``python -m cli worker --processes 2`` and ``python -m cli
   reaper`` run on a scratch PostgreSQL database and a Redis index with short
   timings (a queued job's message may be re-sent 1 s after it went out, the reaper
   passes every 0.5 s, workers beat every 0.5 s). ``--jobs`` tiny range tests are
   queued at once (one transaction, the messages sent after its commit), so most
   wait behind the two busy workers. Counted from the logs, once all finished:
   re-sends (the reaper's ``job.resent``), claims (``job.claimed``), messages the
   workers received; the duplicate rate is re-sends / claims.
2. **Cost of a stale message on a GPU-style worker.** ``python -m cli worker --gpus
   0`` runs the prefork pool with a fresh child per task, as on a GPU host (without
   a GPU its jobs run on the CPU). ``--stale`` messages for a job that already
   finished are queued ahead of a real job; the real job's wait (created → started)
   against the same job's wait with nothing ahead of it gives the time a stale
   message holds the worker up.

Only log lines and columns both the old and the new code have are read, so the
same script measures a checkout before the fix.

    python -m bench.duplicates [--jobs 100] [--stale 30] [--quick]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

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
    postgres_service,
    service_env,
    start,
    wait_log,
)
from core.clock import as_utc
from core.db import session_scope, set_job_sender
from core.models import Team
from core.services import submit_job
from core.settings import Settings
from worker.celery_app import RANGE_TEST_TASK, create_celery
from worker.sender import CelerySender

console = Console()

DATABASE = "clr_bench_duplicates"

SHORT_TIMINGS = {
    "CLR_QUEUED_RESEND_AFTER_S": "1.0",
    "CLR_HEARTBEAT_INTERVAL_S": "0.5",
    "CLR_HEARTBEAT_TIMEOUT_S": "3.0",
}
"""The reaper's timings under test: short, so a run of seconds shows many passes."""

RESENT = re.compile(r"job\.resent job_id=")
CLAIMED = re.compile(r"job\.claimed job_id=")
RECEIVED = re.compile(r"Task range_test\.run\[[^\]]+\] received")


@dataclass(frozen=True)
class Rate:
    jobs: int
    wall_s: float
    resent: int
    claimed: int
    received: int

    @property
    def ratio(self) -> float:
        return self.resent / self.claimed if self.claimed else float("nan")


def submit(
    db: Db, team: Team, settings: Settings, count: int, spec: dict[str, object]
) -> list[uuid.UUID]:
    with session_scope(db.factory) as session:
        return [
            submit_job(session, team=team, kind="range_test", spec=spec, settings=settings).job.id
            for _ in range(count)
        ]


def count(pattern: re.Pattern[str], *procs: Proc) -> int:
    return sum(len(pattern.findall(proc.log_text())) for proc in procs)


def measure_rate(jobs: int, *, settings: Settings, db: Db, tmp: Path, timeout_s: float) -> Rate:
    env = {**service_env(settings), **SHORT_TIMINGS}
    with ExitStack() as stack:
        worker = start(
            "rate-worker", cli("worker", "--processes", "2"), env=env, log_dir=tmp, stack=stack
        )
        reaper = start("rate-reaper", cli("reaper"), env=env, log_dir=tmp, stack=stack)
        wait_log(worker, WORKER_READY, count=2)
        wait_log(reaper, WORKER_READY)
        team, _ = db.team_and_token()
        started = time.monotonic()
        ids = submit(db, team, settings, jobs, TINY_SPEC)
        db.wait_finished(team, ids, timeout_s=timeout_s, poll_s=0.2)
        wall = time.monotonic() - started
        time.sleep(1.0)  # the last log lines
        return Rate(
            jobs=jobs,
            wall_s=wall,
            resent=count(RESENT, reaper),
            claimed=count(CLAIMED, worker),
            received=count(RECEIVED, worker),
        )


def wait_s(db: Db, team: Team, job_id: uuid.UUID, timeout_s: float) -> float:
    [job] = db.wait_finished(team, [job_id], timeout_s=timeout_s)
    assert job.started_at is not None
    return (as_utc(job.started_at) - as_utc(job.created_at)).total_seconds()


def measure_stale_cost(
    stale: int, *, settings: Settings, db: Db, tmp: Path, timeout_s: float, repeats: int
) -> tuple[float, float]:
    """Median wait of a job with nothing ahead, and with ``stale`` stale messages ahead."""
    env = service_env(settings)
    celery = create_celery(settings)
    with ExitStack() as stack:
        stack.callback(celery.close)
        worker = start(
            "gpu-worker", cli("worker", "--gpus", "0"), env=env, log_dir=tmp, stack=stack
        )
        wait_log(worker, WORKER_READY)
        team, _ = db.team_and_token()
        [done] = submit(db, team, settings, 1, TINY_SPEC)
        db.wait_finished(team, [done], timeout_s=timeout_s)
        clear, behind = [], []
        for _ in range(repeats):
            [job] = submit(db, team, settings, 1, TINY_SPEC)
            clear.append(wait_s(db, team, job, timeout_s))
            time.sleep(0.5)
            for _ in range(stale):
                celery.send_task(RANGE_TEST_TASK, args=[str(done)], queue="jobs.cpu")
            [job] = submit(db, team, settings, 1, TINY_SPEC)
            behind.append(wait_s(db, team, job, timeout_s))
            time.sleep(0.5)
        worker.check_alive()
    return median(clear), median(behind)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--stale", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=900.0)
    parser.add_argument("--postgres", default=ADMIN_URL, help="admin URL of the server")
    parser.add_argument("--database", default=DATABASE, help="scratch database (dropped after)")
    parser.add_argument("--broker", default=BROKER_URL, help="Redis URL (flushed before and after)")
    parser.add_argument("--quick", action="store_true", help="40 jobs, 10 stale messages, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.stale, args.repeats = 40, 10, 1
    console.print(f"[yellow]{MACHINE_NOTE}[/]")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clr-bench-")))
        settings: Settings = stack.enter_context(
            postgres_service(args.postgres, args.database, broker_url=args.broker)
        )
        settings = settings.model_copy(update={"data_dir": tmp})
        db = Db(settings)
        stack.callback(db.close)
        celery = create_celery(settings)
        previous = set_job_sender(CelerySender(celery))
        stack.callback(set_job_sender, previous)
        stack.callback(celery.close)

        rate = measure_rate(args.jobs, settings=settings, db=db, tmp=tmp, timeout_s=args.timeout)
        table = Table(title="duplicate messages under load (2 CPU workers, re-send after 1 s)")
        for column in (
            "jobs",
            "wall s",
            "re-sends",
            "claims",
            "messages received",
            "re-sends / claims",
        ):
            table.add_column(column, justify="right")
        table.add_row(
            str(rate.jobs),
            f"{rate.wall_s:.1f}",
            str(rate.resent),
            str(rate.claimed),
            str(rate.received),
            f"{rate.ratio:.2f}",
        )
        console.print(table)

        clear, behind = measure_stale_cost(
            args.stale,
            settings=settings,
            db=db,
            tmp=tmp,
            timeout_s=args.timeout,
            repeats=args.repeats,
        )
        per = (behind - clear) / args.stale
        table = Table(title="a stale message on a GPU-style worker (fresh child per task)")
        for column in (
            "stale ahead",
            "wait, none ahead s",
            "wait behind them s",
            "s per stale message",
        ):
            table.add_column(column, justify="right")
        table.add_row(str(args.stale), f"{clear:.2f}", f"{behind:.2f}", f"{per:.3f}")
        console.print(table)


if __name__ == "__main__":
    main()
