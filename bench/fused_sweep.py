"""A sweep of 8 policies x 5 seeds on the digits MLP, fused vs unfused, through the service.

The service runs a parent's trainings that share a model configuration (a
sweep's policies x seeds at a grid point) as one fused run on one worker
(:mod:`worker.kinds.fused_training`); ``CLR_FUSE_MAX_MEMBERS=1`` in a worker's
environment turns that off, so each training is a job of its own. This
benchmark times the same sweep both ways.

``python -m cli worker --processes N`` runs on a scratch PostgreSQL database
(``clr_bench_fused_sweep``) and Redis index 15 (the other service benchmarks
use ``clr_bench`` and index 14, the test suites from ``CLR_TEST_REDIS_DB_BASE``
up; the benchmark refuses to start while another client is connected to its
index, whose messages it would take and lose), once with its default
environment ("fused") and once with ``CLR_FUSE_MAX_MEMBERS=1`` ("unfused"). The
sweep: the digits MLP at its default parameters (width 64, depth 2, batch
size 64), every policy the sweep accepts (``fixed``, ``step``, ``exp``,
``triangular``, ``triangular2``, ``exp_range``, ``one_cycle``,
``cosine_restarts``) x seeds 0-4, its default range test (300 steps) and
budget (4 cycles of the recommended 4-epoch step: 704 iterations), ``verify``
off: 41 children. It is submitted through ``core.services.submit_job`` with the
real Celery sender; the workers' after-commit advance steps create its 40
trainings once the range test has finished, and fill in its table. Its wall time
is the sweep's ``created_at`` to ``finished_at``; the trainings' time is the
first training's ``started_at`` (its claim) to the last one's ``finished_at``;
the workers' CPU time is the user and system seconds of the worker's process
tree during the sweep (from ``/proc``: what other sessions' load on this shared
machine does not inflate, unlike the wall times; PostgreSQL's share is not in
it); the loops' time is each run's ``TrainingOutcome.seconds`` (the fused run's
once, each unfused training's), summed.

Each measurement starts its own workers, runs a warm-up sweep (1 cycle, seed 0:
every process has built the model, run a range test and trainings, fused or
not), then the measured sweep, and stops them. Fused and unfused alternate
which goes first, ``--repeats`` pairs per process count; the table shows
medians (of the pairs' ratios for the speed-ups), all from one run. With 2
processes the unfused sweep runs two trainings at a time, while the fused one
runs 39 in the process that claimed first and the other process, which claimed
one in the same instant, runs that one alone. The fused runs' sizes, the memory
a member needs and the capacity are read from the trainings' results
(``TrainingOutcome.fusion``); the sweeps' tables (each policy's mean final
validation accuracy) are compared across all measured sweeps, fused against
unfused (tolerance 1e-3), and so is each training's final validation loss
(relative): most agree to 1e-6, but a trajectory can amplify float rounding
(the fused loop's batched matrix products round differently), as the same
training does when its initial weights are perturbed by 1e-7.

The machine has 2 cores, shared by the workers, PostgreSQL, Redis and this
script. Measured there (two runs, other sessions' tests running): the fused
sweep 2.0-2.7x faster on the wall with 1 process, 1.1-1.2x with 2, and about 2x
less workers' CPU either way; the tables agree exactly (docs/benchmarks.md).

    python -m bench.fused_sweep [--processes 1,2] [--repeats 2] [--cycles 4] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from rich.console import Console
from rich.table import Table

from bench._service import (
    ADMIN_URL,
    MACHINE_NOTE,
    WORKER_READY,
    Db,
    celery_bench,
    cli,
    service_env,
    start,
    wait_log,
)
from clr.policies import POLICIES
from clr_sweep.contracts import FusedRun, SweepResult, TrainingOutcome
from core.clock import as_utc
from core.db import session_scope
from core.models import Job, JobStatus, Team
from core.repositories import JobRepository
from core.services import submit_job
from core.settings import Settings
from core.sweeps import SweepSpec

console = Console(width=200)

DATABASE = "clr_bench_fused_sweep"
BROKER_URL = "redis://127.0.0.1:6379/15"
"""This benchmark's own Redis index (``bench._service`` uses 14, the test suites from
``CLR_TEST_REDIS_DB_BASE`` up)."""

MODES: dict[str, dict[str, str]] = {"fused": {}, "unfused": {"CLR_FUSE_MAX_MEMBERS": "1"}}
"""Each mode's additions to the workers' environment."""

SWEEP: dict[str, Any] = {
    "workload": "digits_mlp",
    "device": "cpu",
    "policies": list(POLICIES),
    "seeds": [0, 1, 2, 3, 4],
    "verify": False,
}
"""Every policy x 5 seeds of the default digits MLP at the default budget."""

WARM_UP: dict[str, Any] = {**SWEEP, "seeds": [0], "cycles": 1}


@dataclass(frozen=True)
class Measurement:
    """One measured sweep: its mode, wall times, fused runs and table."""

    mode: str
    sweep_s: float
    trainings_s: float
    cpu_s: float
    """CPU seconds the workers' processes spent on the sweep (robust to other load)."""
    loop_s: float
    """The training loops' own seconds (``TrainingOutcome.seconds``), one per run, summed."""
    trainings: int
    runs: Counter[int]
    """Fused runs by size (members), trainings on their own as size 1."""
    member_bytes: int | None
    capacity: int | None
    reasons: Counter[str]
    accuracy: dict[tuple[int, str], float]
    """Each table row's (grid point, policy) mean final validation accuracy."""
    losses: dict[tuple[str, int], float]
    """Each training's (policy, seed) final validation loss."""


@dataclass(frozen=True)
class Run:
    """Both modes' measurements at one process count."""

    processes: int
    pairs: list[tuple[Measurement, Measurement]]
    """(fused, unfused) per pair."""

    def median(self, mode: str, field: str) -> float:
        index = list(MODES).index(mode)
        return statistics.median(_seconds(pair[index], field) for pair in self.pairs)

    def speed_up(self, field: str) -> float:
        """Median over the pairs of the unfused time over the fused one."""
        return statistics.median(
            _seconds(unfused, field) / _seconds(fused, field) for fused, unfused in self.pairs
        )


def _seconds(measurement: Measurement, field: str) -> float:
    return {
        "sweep_s": measurement.sweep_s,
        "trainings_s": measurement.trainings_s,
        "cpu_s": measurement.cpu_s,
        "loop_s": measurement.loop_s,
    }[field]


def check_unused(broker_url: str) -> None:
    """Refuse a Redis index another client is connected to (a test run's workers would
    take this benchmark's messages and drop them, and the flush would empty its queues).

    Raises:
        SystemExit: someone else uses the index.
    """
    client = redis.Redis.from_url(broker_url)
    index = int(client.connection_pool.connection_kwargs.get("db", 0))
    try:
        me = str(client.client_id())
        others = [c for c in client.client_list() if int(c["db"]) == index and str(c["id"]) != me]
    finally:
        client.close()
    if others:
        raise SystemExit(
            f"{len(others)} other clients are connected to Redis index {index} "
            f"({broker_url}); pick a free one with --broker"
        )


def run_sweep(
    db: Db, team: Team, settings: Settings, spec: dict[str, Any], timeout_s: float
) -> tuple[Job, list[Job]]:
    """Submit the sweep, wait until it finished; it and its children.

    Raises:
        RuntimeError: the sweep or one of its children did not succeed.
    """
    with session_scope(db.factory) as session:
        sweep_id = submit_job(session, team=team, kind="sweep", spec=spec, settings=settings).job.id
    (sweep,) = db.wait_finished(team, [sweep_id], timeout_s=timeout_s, poll_s=0.05)
    with session_scope(db.factory) as session:
        children = JobRepository(session).children(sweep_id)
    failed = [job for job in [sweep, *children] if job.status != JobStatus.SUCCEEDED]
    if failed:
        raise RuntimeError(
            f"{len(failed)} of the sweep and its {len(children)} children did not succeed, "
            f"e.g. {failed[0].kind} {failed[0].id} {failed[0].status}: {failed[0].error}"
        )
    return sweep, children


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user and system) of process ``root`` and its descendants, with
    their children that have exited and been waited for, from ``/proc``."""
    stats: dict[int, tuple[int, int]] = {}  # pid: (parent, clock ticks)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # exited meanwhile
        # after the command: state, ppid, ..., utime, stime, cutime, cstime (fields 3-17)
        stats[int(entry.name)] = (int(fields[1]), sum(int(x) for x in fields[11:15]))
    tree = {root}
    while True:  # add children until none is left out
        grown = {pid for pid, (parent, _) in stats.items() if parent in tree} - tree
        if not grown:
            break
        tree |= grown
    return sum(stats[pid][1] for pid in tree if pid in stats) / os.sysconf("SC_CLK_TCK")


def summarize(mode: str, sweep: Job, children: list[Job], cpu_s: float) -> Measurement:
    """Wall times, fused runs and table of a finished sweep."""
    trainings = [job for job in children if job.kind == "training"]
    started = [as_utc(job.started_at) for job in trainings if job.started_at is not None]
    finished = [as_utc(job.finished_at) for job in trainings if job.finished_at is not None]
    assert sweep.finished_at is not None
    assert sweep.result is not None
    fusions: dict[uuid.UUID, FusedRun] = {}
    for job in trainings:
        assert job.result is not None, f"training {job.id} has no result"
        fusion = job.result.get("fusion")
        if fusion is None:
            raise RuntimeError(f"training {job.id} of a sweep has no fusion in its result")
        fusions[job.id] = FusedRun.model_validate(fusion)
    seconds = {job.id: TrainingOutcome.model_validate(job.result).seconds for job in trainings}
    runs: Counter[int] = Counter()
    loop_s = 0.0
    seen: set[uuid.UUID] = set()
    for job_id, fusion in fusions.items():
        if job_id in seen:
            continue
        group = {job_id, *fusion.jobs}
        seen |= group
        runs[fusion.members] += 1
        loop_s += max(seconds[member] for member in group)
    measured = [f for f in fusions.values() if f.member_bytes is not None]
    losses = {}
    for job in trainings:
        outcome = TrainingOutcome.model_validate(job.result)
        assert outcome.final_val_loss is not None
        losses[(outcome.policy, int(job.spec["seed"]))] = outcome.final_val_loss
    result = SweepResult.model_validate(sweep.result)
    accuracy = {
        (row.grid, row.policy): row.final_val_accuracy.mean
        for row in result.table
        if row.final_val_accuracy is not None
    }
    return Measurement(
        mode=mode,
        sweep_s=(as_utc(sweep.finished_at) - as_utc(sweep.created_at)).total_seconds(),
        trainings_s=(max(finished) - min(started)).total_seconds(),
        cpu_s=cpu_s,
        loop_s=loop_s,
        trainings=len(trainings),
        runs=runs,
        member_bytes=measured[0].member_bytes if measured else None,
        capacity=measured[0].capacity if measured else None,
        reasons=Counter(f.reason for f in fusions.values()),
        accuracy=accuracy,
        losses=losses,
    )


def measure(
    mode: str,
    processes: int,
    *,
    settings: Settings,
    db: Db,
    log_dir: Path,
    timeout_s: float,
    tag: str,
) -> Measurement:
    """Start ``processes`` workers in ``mode``, warm them up, run the sweep, stop them."""
    with ExitStack() as stack:
        worker = start(
            f"worker-{mode}-{processes}p-{tag}",
            cli("worker", "--processes", str(processes)),
            env={**service_env(settings), **MODES[mode]},
            log_dir=log_dir,
            stack=stack,
        )
        try:
            wait_log(worker, WORKER_READY, count=processes)
            team, _ = db.team_and_token()
            run_sweep(db, team, settings, WARM_UP, timeout_s)
            cpu_before = tree_cpu_s(worker.process.pid)
            sweep, children = run_sweep(db, team, settings, SWEEP, timeout_s)
            cpu_s = tree_cpu_s(worker.process.pid) - cpu_before
            worker.check_alive()
        except BaseException:
            console.print(f"[red]{worker.name} failed; the end of its log:[/]\n{worker.tail(80)}")
            raise
    return summarize(mode, sweep, children, cpu_s)


def _runs(measurement: Measurement) -> str:
    return ", ".join(
        f"{count} x {size}" for size, count in sorted(measurement.runs.items(), reverse=True)
    )


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.2f} MiB"


def largest_difference(
    runs: list[Run], values: Callable[[Measurement], dict[Any, float]], *, relative: bool
) -> tuple[float, float, str]:
    """The largest difference of one of ``values`` (a table row's mean accuracy, a
    training's loss) between a fused and an unfused sweep, and between two sweeps of
    the same mode (over every process count), relative to the first if ``relative``;
    and where the first is, with both values.

    Raises:
        RuntimeError: the sweeps have different rows or trainings.
    """
    sweeps = [m for run in runs for pair in run.pairs for m in pair]
    keys = set(values(sweeps[0]))
    for m in sweeps:
        if set(values(m)) != keys:
            raise RuntimeError(f"rows differ: {sorted(keys)} vs {sorted(values(m))}")
    across = within = 0.0
    where = "-"
    for i, a in enumerate(sweeps):
        for b in sweeps[i + 1 :]:
            va, vb = values(a), values(b)
            for k in sorted(keys):
                diff = abs(va[k] - vb[k]) / (abs(va[k]) if relative and va[k] else 1.0)
                if a.mode == b.mode:
                    within = max(within, diff)
                elif diff > across:
                    across = diff
                    where = f"{k}: {a.mode} {va[k]:.6g}, {b.mode} {vb[k]:.6g}"
    return across, within, where


def report(runs: list[Run]) -> None:
    table = Table(title="8 policies x 5 seeds on the digits MLP through the workers (medians)")
    for column in (
        "processes",
        "sweep s: fused / unfused",
        "speed-up",
        "trainings s: fused / unfused",
        "speed-up (trainings)",
        "workers' CPU s: fused / unfused",
        "speed-up (CPU)",
        "loops s: fused / unfused",
        "runs fused (count x size)",
        "runs unfused",
        "member / capacity",
    ):
        table.add_column(column, justify="right")
    for run in runs:
        fused, unfused = run.pairs[0]
        table.add_row(
            str(run.processes),
            f"{run.median('fused', 'sweep_s'):.2f} / {run.median('unfused', 'sweep_s'):.2f}",
            f"{run.speed_up('sweep_s'):.2f}x",
            f"{run.median('fused', 'trainings_s'):.2f} / "
            f"{run.median('unfused', 'trainings_s'):.2f}",
            f"{run.speed_up('trainings_s'):.2f}x",
            f"{run.median('fused', 'cpu_s'):.1f} / {run.median('unfused', 'cpu_s'):.1f}",
            f"{run.speed_up('cpu_s'):.2f}x",
            f"{run.median('fused', 'loop_s'):.1f} / {run.median('unfused', 'loop_s'):.1f}",
            " | ".join(dict.fromkeys(_runs(f) for f, _ in run.pairs)),
            " | ".join(dict.fromkeys(_runs(u) for _, u in run.pairs)),
            f"{_mib(fused.member_bytes)} / {fused.capacity}",
        )
    console.print(table)
    across, within, _ = largest_difference(runs, lambda m: m.accuracy, relative=False)
    loss_across, loss_within, where = largest_difference(runs, lambda m: m.losses, relative=True)
    rows = len(runs[0].pairs[0][0].accuracy)
    verdict = "[green]agree[/]" if across <= 1e-3 else "[red]DIFFER[/]"
    console.print(
        f"tables ({rows} rows, each policy's mean final validation accuracy over 5 seeds): "
        f"largest difference fused vs unfused {across:.2e}, between sweeps of one mode "
        f"{within:.2e}: {verdict} (tolerance 1e-3); each training's final validation loss: "
        f"largest relative difference fused vs unfused {loss_across:.2e}, one mode "
        f"{loss_within:.2e} (the largest at {where})"
    )
    close = [
        sum(abs(f.losses[k] - u.losses[k]) <= 1e-5 * abs(u.losses[k]) for k in u.losses)
        for run in runs
        for f, u in run.pairs
    ]
    console.print(
        f"  trainings whose final validation loss agrees to 1e-5 (relative), fused vs unfused "
        f"in each pair: {', '.join(map(str, close))} of {len(runs[0].pairs[0][1].losses)}"
    )
    reasons = Counter[str]()
    for run in runs:
        for pair in run.pairs:
            for m in pair:
                reasons.update({f"{m.mode}: {r}": n for r, n in m.reasons.items()})
    for reason, count in sorted(reasons.items()):
        console.print(f"  {count:4d} trainings, {reason}")
    console.print(
        "speed-up: the unfused time over the fused one (median of the pairs' ratios); sweep s: "
        "created_at to finished_at (the range test, the trainings, the advance steps); "
        "trainings s: the first training's claim to the last one's finish; workers' CPU s: "
        "user + system seconds of the worker processes during the sweep (other sessions' "
        "load does not count); loops s: the training loops' own seconds (each run's "
        "TrainingOutcome.seconds, summed over the runs); runs: fused runs as count x members, "
        "each pair's if they differ"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--repeats", type=int, default=2, help="fused/unfused pairs per count")
    parser.add_argument(
        "--cycles", type=int, default=None, help="each training's cycles (default: 4)"
    )
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per wait")
    parser.add_argument("--postgres", default=ADMIN_URL, help="admin URL of the server")
    parser.add_argument("--database", default=DATABASE, help="scratch database's name")
    parser.add_argument("--broker", default=BROKER_URL, help="Redis URL (flushed before and after)")
    parser.add_argument(
        "--quick", action="store_true", help="one pair of 1-cycle sweeps with 1 process"
    )
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.processes, args.cycles = 1, "1", 1
    counts = [int(part) for part in args.processes.split(",")]
    if args.cycles is not None:
        SWEEP["cycles"] = args.cycles
    spec = SweepSpec.model_validate(SWEEP)
    console.print(
        f"fused sweep: digits MLP (default width 64), {len(spec.policies)} policies x "
        f"{len(spec.seeds)} seeds of {spec.budget_cycles()} cycles after a "
        f"{spec.range_test.num_iter}-step range test, verify off; fused "
        f"(CLR_FUSE_MAX_MEMBERS default) vs unfused (CLR_FUSE_MAX_MEMBERS=1), "
        f"{', '.join(map(str, counts))} worker processes, {args.repeats} pairs each"
    )
    console.print(f"[yellow]{MACHINE_NOTE}[/]")
    check_unused(args.broker)
    runs: list[Run] = []
    with celery_bench(args.postgres, args.database, broker_url=args.broker) as bench:
        for processes in counts:
            pairs = []
            for i in range(args.repeats):
                order = list(MODES) if i % 2 == 0 else list(reversed(MODES))
                done = {}
                for mode in order:
                    m = measure(
                        mode,
                        processes,
                        settings=bench.settings,
                        db=bench.db,
                        log_dir=bench.tmp / "logs",
                        timeout_s=args.timeout,
                        tag=str(i),
                    )
                    done[mode] = m
                    console.print(
                        f"{processes} processes, pair {i + 1}, {mode}: sweep {m.sweep_s:.2f} s, "
                        f"trainings {m.trainings_s:.2f} s, workers' CPU {m.cpu_s:.1f} s, "
                        f"loops {m.loop_s:.1f} s "
                        f"({m.trainings} trainings; runs "
                        f"{_runs(m)})"
                    )
                pairs.append((done["fused"], done["unfused"]))
            runs.append(Run(processes, pairs))
    report(runs)


if __name__ == "__main__":
    main()
