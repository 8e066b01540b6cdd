"""Jobs per second with 1, 2 and 4 worker processes, and the per-job overhead.

For each process count, ``python -m cli worker --processes N`` runs on a
scratch PostgreSQL database (``clr_bench``) and Redis index 14; once every
process is ready, ``--jobs`` tiny range tests (digits MLP, width 16, 20 steps)
are submitted at once through ``core.services.submit_job`` with the real
Celery sender (one transaction, the messages sent after its commit). Throughput
comes from the jobs' rows: ``--jobs / (last finished_at - first created_at)``,
and its ratio to one process, all in this run.

A worker process runs its jobs in a forked child (a GPU worker forks one per
job; a CPU worker reuses it for ``cli.service.CPU_JOBS_PER_CHILD`` jobs). The
per-job overhead is read from the rows too: ``finished_at - started_at`` (the
task, claim to finish) against the range test's own ``seconds`` in its result,
and the time a process spends per job (``N x wall / jobs``) against the task's,
which leaves the time between two jobs of one process (ack, message fetch, and
where the child is replaced, its exit and the next fork).

On a 2-core machine expect the scaling to flatten at 2 processes.

    python -m bench.worker_scaling [--jobs 100] [--processes 1,2,4] [--quick]
"""

from __future__ import annotations

import argparse
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench._service import (
    ADMIN_URL,
    BROKER_URL,
    MACHINE_NOTE,
    TINY_SPEC,
    Db,
    celery_bench,
    median,
    start_cpu_workers,
)
from core.clock import as_utc
from core.db import session_scope
from core.models import Job, JobStatus, Team
from core.services import submit_job
from core.settings import Settings

console = Console()


@dataclass(frozen=True)
class Run:
    processes: int
    jobs: int
    wall_s: float
    task_s: float
    range_test_s: float

    @property
    def rate(self) -> float:
        return self.jobs / self.wall_s

    @property
    def per_job_s(self) -> float:
        """Time one process spends per job, from the overall rate."""
        return self.processes * self.wall_s / self.jobs


def submit(db: Db, team: Team, settings: Settings, count: int) -> list[uuid.UUID]:
    with session_scope(db.factory) as session:
        return [
            submit_job(
                session, team=team, kind="range_test", spec=TINY_SPEC, settings=settings
            ).job.id
            for _ in range(count)
        ]


def summarize(processes: int, rows: list[Job]) -> Run:
    failed = [job for job in rows if job.status != JobStatus.SUCCEEDED]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not succeed, e.g. {failed[0].error}")
    first = min(as_utc(job.created_at) for job in rows)
    last = max(as_utc(job.finished_at) for job in rows if job.finished_at is not None)
    tasks, tests = [], []
    for job in rows:
        assert job.started_at is not None
        assert job.finished_at is not None
        tasks.append((as_utc(job.finished_at) - as_utc(job.started_at)).total_seconds())
        summary: dict[str, Any] = (job.result or {}).get("summary") or {}
        tests.append(float(summary["seconds"]))
    return Run(processes, len(rows), (last - first).total_seconds(), median(tasks), median(tests))


def measure(
    processes: int, *, jobs: int, settings: Settings, db: Db, tmp: Path, timeout_s: float
) -> Run:
    with ExitStack() as stack:
        worker = start_cpu_workers(processes, settings=settings, log_dir=tmp / "logs", stack=stack)
        team, _ = db.team_and_token()
        # one job per process first: every process has run one and is idle again
        db.wait_finished(team, submit(db, team, settings, processes), timeout_s=timeout_s)
        ids = submit(db, team, settings, jobs)
        rows = db.wait_finished(team, ids, timeout_s=timeout_s, poll_s=0.5)
        worker.check_alive()
    return summarize(processes, rows)


def report(runs: list[Run]) -> None:
    base = runs[0]
    table = Table(title="tiny range tests through the real worker (times per job: medians)")
    for column in (
        "processes",
        "jobs",
        "wall s",
        "jobs/s",
        f"ratio to {base.processes}",
        "range test s",
        "task s (claim→finish)",
        "process s per job",
        "between jobs s",
    ):
        table.add_column(column, justify="right")
    for run in runs:
        table.add_row(
            str(run.processes),
            str(run.jobs),
            f"{run.wall_s:.1f}",
            f"{run.rate:.2f}",
            f"{run.rate / base.rate:.2f}",
            f"{run.range_test_s:.3f}",
            f"{run.task_s:.2f}",
            f"{run.per_job_s:.2f}",
            f"{run.per_job_s - run.task_s:.2f}",
        )
    console.print(table)
    console.print(
        "task s - range test s: building the workload, optimizer and result, the database "
        "writes, and a fresh child's first-use costs (imports the parent never made); "
        "between jobs: ack, message fetch, and a child's exit and fork where it is replaced"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--processes", default="1,2,4", help="comma-separated counts")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per count")
    parser.add_argument("--postgres", default=ADMIN_URL, help="admin URL of the server")
    parser.add_argument("--broker", default=BROKER_URL, help="Redis URL (flushed before and after)")
    parser.add_argument("--quick", action="store_true", help="20 jobs, 1 and 2 processes")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.processes = 20, "1,2"
    counts = [int(part) for part in args.processes.split(",")]
    console.print(
        f"worker scaling: {args.jobs} tiny range tests (digits MLP width 16, 20 steps) "
        f"with {', '.join(map(str, counts))} worker processes"
    )
    console.print(f"[yellow]{MACHINE_NOTE}[/]")
    runs: list[Run] = []
    with celery_bench(args.postgres, broker_url=args.broker) as bench:
        for processes in counts:
            runs.append(
                measure(
                    processes,
                    jobs=args.jobs,
                    settings=bench.settings,
                    db=bench.db,
                    tmp=bench.tmp,
                    timeout_s=args.timeout,
                )
            )
            console.print(
                f"{processes} processes: {runs[-1].rate:.2f} jobs/s "
                f"({runs[-1].jobs} in {runs[-1].wall_s:.1f} s)"
            )
    report(runs)


if __name__ == "__main__":
    main()
