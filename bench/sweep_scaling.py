"""A sweep's wall time with 1, 2 and 4 worker processes, and what it adds over its children.

For each process count, ``python -m cli worker --processes N`` runs on a scratch
PostgreSQL database (``clr_bench``) and Redis index 14. A tiny-workload sweep
(digits MLP of width 16) at the sweep's default budget (a 100-step range test,
then 8 policies x 3 seeds, each 4 cycles of the recommended 4-epoch step: 704
iterations, about a second; 25 children; ``verify`` off) is submitted through
``core.services.submit_job`` with the real Celery sender: its range test is
created with it, and the workers' after-commit advance steps create its
trainings and fill in its table, as in a deployment. Its wall time is the
sweep's ``created_at`` to ``finished_at``.

The same children run *directly* too, as a client script would: the sweep's own
range-test spec submitted as a plain job, polled (every 50 ms) until it finished,
then the sweep's own 24 training specs submitted at once as plain jobs; wall
time from the range test's ``created_at`` to the last training's
``finished_at``. The sweep's overhead is its wall time over the direct one,
minus one; the two alternate which goes first, ``--repeats`` pairs per process
count, and the table shows medians (of the pairs' ratios for the overhead), all
in one run; so is the scaling (wall time with 1 process over N). The cost of
one advance call (the last, with every child finished: the children, their
``epochs`` series, the table, in one transaction rolled back) is timed on each
finished sweep.

The machine has 2 cores, shared by the workers, PostgreSQL, Redis and this
script: 2 processes is all it can run in parallel; 4 oversubscribe it (each job
runs slower, but one's database waits overlap another's compute).

    python -m bench.sweep_scaling [--processes 1,2,4] [--repeats 5] [--cycles 4] [--quick]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench._service import (
    ADMIN_URL,
    BENCH_DATABASE,
    BROKER_URL,
    MACHINE_NOTE,
    Db,
    celery_bench,
    start_cpu_workers,
)
from core.clock import as_utc
from core.db import session_scope
from core.models import Job, JobStatus, Team
from core.repositories import JobRepository
from core.services import submit_job
from core.services.parents import Family
from core.settings import Settings
from core.sweeps import SweepSpec, advance

console = Console(width=150)

SWEEP: dict[str, Any] = {
    "workload": "digits_mlp",
    "params": {"width": 16},
    "device": "cpu",
    "seeds": [0, 1, 2],
    "verify": False,
    "range_test": {"num_iter": 100},
}
"""Every policy x 3 seeds at the default budget: 4 cycles of 4 epochs (88 iterations a
half cycle at batch size 64), 704 iterations each."""


@dataclass(frozen=True)
class Pair:
    """One sweep and the same children run directly, on one worker configuration:
    wall times, the median gap between two jobs of one worker process, and one
    advance call's milliseconds."""

    sweep_s: float
    direct_s: float
    sweep_gap_ms: float
    direct_gap_ms: float
    children: int
    advance_ms: float


@dataclass(frozen=True)
class Run:
    processes: int
    pairs: list[Pair]

    @property
    def sweep_s(self) -> float:
        return statistics.median(p.sweep_s for p in self.pairs)

    @property
    def direct_s(self) -> float:
        return statistics.median(p.direct_s for p in self.pairs)

    @property
    def overhead(self) -> float:
        """The sweep's wall time over the direct one, minus one (median of the pairs)."""
        return statistics.median(p.sweep_s / p.direct_s - 1 for p in self.pairs)

    @property
    def advance_ms(self) -> float:
        return statistics.median(p.advance_ms for p in self.pairs)

    @property
    def sweep_gap_ms(self) -> float:
        return statistics.median(p.sweep_gap_ms for p in self.pairs)

    @property
    def direct_gap_ms(self) -> float:
        return statistics.median(p.direct_gap_ms for p in self.pairs)

    @property
    def gap_overhead(self) -> float:
        """The sweep's extra gaps (every child's, spread over the processes) over the
        direct wall time: the overhead without the jobs' own run-to-run noise."""
        children = self.pairs[0].children
        extra_s = children * (self.sweep_gap_ms - self.direct_gap_ms) / 1000 / self.processes
        return extra_s / self.direct_s


def _span(rows: list[Job]) -> float:
    failed = [job for job in rows if job.status != JobStatus.SUCCEEDED]
    if failed:
        raise RuntimeError(f"{len(failed)} jobs did not succeed, e.g. {failed[0].error}")
    first = min(as_utc(job.created_at) for job in rows)
    last = max(as_utc(job.finished_at) for job in rows if job.finished_at is not None)
    return (last - first).total_seconds()


def _gap_ms(rows: list[Job]) -> float:
    """The median time between a job's finish and the next job's start on the same
    worker process (the ack, the next message, its claim; for a sweep's child also
    the sweep's advance step, run in that process after the child's commit)."""
    by_worker: dict[str, list[tuple[datetime, datetime]]] = {}
    for job in rows:
        if job.worker is not None and job.started_at is not None and job.finished_at is not None:
            span = (as_utc(job.started_at), as_utc(job.finished_at))
            by_worker.setdefault(job.worker, []).append(span)
    gaps = []
    for spans in by_worker.values():
        spans.sort()
        for (_, finished), (started, _) in itertools.pairwise(spans):
            gaps.append((started - finished).total_seconds())
    return statistics.median(gaps) * 1000 if gaps else float("nan")


def _wait(db: Db, team: Team, ids: list[uuid.UUID], timeout_s: float) -> list[Job]:
    return db.wait_finished(team, ids, timeout_s=timeout_s, poll_s=0.05)


def run_sweep(
    db: Db, team: Team, settings: Settings, timeout_s: float, spec: dict[str, Any] | None = None
) -> tuple[Job, list[Job]]:
    """The sweep, to its end; it and its children."""
    with session_scope(db.factory) as session:
        sweep_id = submit_job(
            session, team=team, kind="sweep", spec=spec or SWEEP, settings=settings
        ).job.id
    (sweep,) = _wait(db, team, [sweep_id], timeout_s)
    if sweep.status != JobStatus.SUCCEEDED:
        raise RuntimeError(f"the sweep {sweep.status}: {sweep.error}")
    with session_scope(db.factory) as session:
        children = JobRepository(session).children(sweep_id)
    return sweep, children


def run_direct(
    db: Db, team: Team, settings: Settings, children: list[Job], timeout_s: float
) -> tuple[float, float]:
    """The sweep's children as plain jobs: its range test, then (once it finished) its
    trainings at once; the wall time and the median gap between jobs."""

    def submit(kind: str, specs: list[dict[str, Any]]) -> list[uuid.UUID]:
        with session_scope(db.factory) as session:
            return [
                submit_job(session, team=team, kind=kind, spec=spec, settings=settings).job.id
                for spec in specs
            ]

    tests = [c.spec for c in children if c.kind == "range_test"]
    trainings = [c.spec for c in children if c.kind == "training"]
    rows = _wait(db, team, submit("range_test", tests), timeout_s)
    rows += _wait(db, team, submit("training", trainings), timeout_s)
    return _span(rows), _gap_ms(rows)


def time_advance(db: Db, settings: Settings, sweep: Job, repeats: int = 5) -> float:
    """Milliseconds of one advance call on the finished sweep (rolled back): reading its
    children and their series and rebuilding the table (its last call's work)."""
    times = []
    for _ in range(repeats):
        with db.factory() as session:
            start_s = time.perf_counter()
            repo = JobRepository(session)
            parent = repo.lock(sweep.id)
            assert parent is not None
            team = session.get(Team, parent.team_id)
            assert team is not None
            family = Family(
                session=session,
                parent=parent,
                team=team,
                settings=settings,
                children=repo.children(sweep.id),
            )
            advance(family)
            times.append((time.perf_counter() - start_s) * 1000)
            session.rollback()
    return statistics.median(times)


def measure(
    processes: int,
    *,
    repeats: int,
    settings: Settings,
    db: Db,
    tmp: Path,
    timeout_s: float,
    progress: Callable[[str], None],
) -> Run:
    pairs = []
    with ExitStack() as stack:
        worker = start_cpu_workers(processes, settings=settings, log_dir=tmp / "logs", stack=stack)
        team, _ = db.team_and_token()
        # a 1-cycle sweep first: every process has run a range test, trainings and
        # advance steps (their first-use costs), and is idle again
        run_sweep(db, team, settings, timeout_s, {**SWEEP, "cycles": 1})
        children: list[Job] = []
        for i in range(repeats):
            # the sweep and the direct run alternate which goes first (the direct run
            # needs a sweep's children: when it goes first, the previous pair's)
            if i % 2 == 0:
                sweep, children = run_sweep(db, team, settings, timeout_s)
                direct_s, direct_gap = run_direct(db, team, settings, children, timeout_s)
            else:
                direct_s, direct_gap = run_direct(db, team, settings, children, timeout_s)
                sweep, children = run_sweep(db, team, settings, timeout_s)
            assert sweep.finished_at is not None
            sweep_s = (as_utc(sweep.finished_at) - as_utc(sweep.created_at)).total_seconds()
            pair = Pair(
                sweep_s,
                direct_s,
                _gap_ms(children),
                direct_gap,
                len(children),
                time_advance(db, settings, sweep),
            )
            pairs.append(pair)
            progress(
                f"{processes} processes, pair {i + 1}: sweep {sweep_s:.2f} s, direct "
                f"{direct_s:.2f} s ({pair.children} children); between jobs "
                f"{pair.sweep_gap_ms:.0f} / {pair.direct_gap_ms:.0f} ms; advance "
                f"{pair.advance_ms:.0f} ms"
            )
        worker.check_alive()
    return Run(processes, pairs)


def report(runs: list[Run]) -> None:
    base = runs[0]
    children = base.pairs[0].children
    table = Table(title=f"a tiny sweep ({children} children) through the real workers (medians)")
    for column in (
        "processes",
        "sweep s",
        f"speed-up vs {base.processes}",
        "children directly s",
        "sweep overhead (wall)",
        "between jobs ms: sweep / direct",
        "overhead from the gaps",
        "advance ms (last call)",
    ):
        table.add_column(column, justify="right")
    for run in runs:
        table.add_row(
            str(run.processes),
            f"{run.sweep_s:.2f}",
            f"{base.sweep_s / run.sweep_s:.2f}",
            f"{run.direct_s:.2f}",
            f"{run.overhead * 100:+.1f} %",
            f"{run.sweep_gap_ms:.0f} / {run.direct_gap_ms:.0f}",
            f"{run.gap_overhead * 100:+.1f} %",
            f"{run.advance_ms:.0f}",
        )
    console.print(table)
    console.print(
        "sweep overhead (wall): the sweep's wall time over its children's run directly (range "
        "test, then its trainings at once, polled every 50 ms), minus one; from the gaps: the "
        "sweep's extra time between two jobs of a process (its advance step) times its "
        "children, over the processes, over the direct wall time; target <= 5 %"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2,4", help="comma-separated counts")
    parser.add_argument("--repeats", type=int, default=5, help="sweep/direct pairs per count")
    parser.add_argument(
        "--cycles", type=int, default=None, help="each training's cycles (default: 4)"
    )
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds per wait")
    parser.add_argument("--postgres", default=ADMIN_URL, help="admin URL of the server")
    parser.add_argument("--database", default=BENCH_DATABASE, help="scratch database's name")
    parser.add_argument("--broker", default=BROKER_URL, help="Redis URL (flushed before and after)")
    parser.add_argument(
        "--quick", action="store_true", help="one pair of 1-cycle sweeps, 1 and 2 processes"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.processes, args.cycles = 1, "1,2", 1
    counts = [int(part) for part in args.processes.split(",")]
    if args.cycles is not None:
        SWEEP["cycles"] = args.cycles
    spec = SweepSpec.model_validate(SWEEP)
    console.print(
        f"sweep scaling: digits MLP width 16, {len(spec.policies)} policies x "
        f"{len(spec.seeds)} seeds of {spec.budget_cycles()} cycles of 2 x 88 iterations after "
        f"a 100-step range test, with {', '.join(map(str, counts))} worker processes"
    )
    console.print(f"[yellow]{MACHINE_NOTE}[/]")
    runs: list[Run] = []
    with celery_bench(args.postgres, args.database, broker_url=args.broker) as bench:
        for processes in counts:
            runs.append(
                measure(
                    processes,
                    repeats=args.repeats,
                    settings=bench.settings,
                    db=bench.db,
                    tmp=bench.tmp,
                    timeout_s=args.timeout,
                    progress=console.print,
                )
            )
    report(runs)


if __name__ == "__main__":
    main()
