"""The dashboard in a real browser: the runs page with 5,000 runs, a 100,000-point series.

A scratch PostgreSQL database (``clr_bench_dashboard``) is migrated and seeded in
this process for one team: ``--runs`` jobs (range tests, trainings, sweeps with
their range tests, some run in the team's own loop) in every status, spread over
30 days, the newest ones busier. Each kind's rows come from the real services
(``submit_job``, ``claim_job``, ``finish_job``, ``fail_job``, ``cancel_job``; the
succeeded range tests carry the result of one real range test, with every
method's suggestion, so the runs page shows bounds); the bulk of them are copies
of those rows inserted in batches, with their workload, configuration and times
varied. A client-run training of ``--points`` iterations is uploaded through
``upload_points`` in 400-point pieces, as ``clr_sweep.uploads`` sends them, and
finished.

Then the real API (``python -m cli api``; no worker: nothing runs) serves the
dashboard to headless Chromium (Debian's, through Playwright; ``CLR_CHROMIUM``
names another). After signing in, ``--loads`` reloads of the runs page measure,
in the browser:

- first contentful paint (``performance.getEntriesByName('first-contentful-paint')``);
- the runs table with its first page of rows (the page's ``runs-rendered`` mark);
- the page's API calls (Resource Timing entries: ``/workloads``, ``/jobs``).

Then ``--loads`` loads of the training page (``#/trainings/<id>``) read its
``series-drawn`` measure: fetching the thinned series and drawing it. Both are
also timed as bare ``fetch`` calls from the page (``GET /jobs?limit=50``; the
series with ``max_points``), which isolates the API from the page's own work.
Targets (issue 14): the first page under 300 ms, the series drawn under 200 ms;
the ratios to them are printed from this run's medians.

    python -m bench.dashboard [--runs 5000] [--loads 15] [--points 100000] [--screenshot PNG]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table
from sqlalchemy import insert, inspect, select
from sqlalchemy.orm import Session, sessionmaker

from bench._service import (
    ADMIN_URL,
    MACHINE_NOTE,
    Db,
    cli,
    create_database,
    drop_database,
    percentile,
    service_env,
    start,
    wait_http,
)
from cli.service import free_port
from core.db import session_scope, set_job_sender
from core.models import Job, JobStatus, Team
from core.services import (
    cancel_job,
    claim_job,
    fail_job,
    finish_client_job,
    finish_job,
    parse_job_spec,
    report_progress,
    submit_job,
    upload_points,
)
from core.settings import Settings
from core.specs import RangeTestOutcome
from core.training import TrainingOutcome, TrainingSpec

console = Console()

DATABASE = "clr_bench_dashboard"
"""Its own scratch database: other benchmarks may be using ``clr_bench``."""
CHROMIUM = os.environ.get("CLR_CHROMIUM", "/usr/bin/chromium")
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
"""As tests/dashboard launches it."""
TIMEOUT_MS = 60_000
SERIES_WAIT_MS = 30_000
"""How long the training page gets to record ``series-drawn`` (a build without it: none)."""
FIRST_PAGE_TARGET_MS = 300.0
SERIES_TARGET_MS = 200.0
UPLOAD_PIECE = 400
"""Points per upload, as ``clr_sweep.uploads`` sends them."""
MAX_POINTS = 2000
"""``max_points`` of the bare series fetch: about two points per pixel of a wide chart."""
INSERT_BATCH = 1000

WORKLOADS: dict[str, list[dict[str, Any]]] = {
    "digits_mlp": [{"width": w} for w in (16, 32, 64, 128, 256)],
    "digits_cnn": [{}],
    "mnist1d_mlp": [{}],
    "synthetic_mlp": [{}],
}
"""The workloads (and params) the seeded runs use: a team's mix."""
FAILURES = [
    "CUDA out of memory. Tried to allocate 2.00 GiB",
    "the loss diverged at step 37 (4.2e+03 > 4 x the best 0.81)",
    "worker lost: no heartbeat for 130 s (heartbeat timeout 120 s)",
    "the client stopped sending: no upload for 62 s (heartbeat timeout 60 s)",
]

# --------------------------------------------------------------------------- seeding


def range_test_spec(workload: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"workload": workload, "params": params, "num_iter": 100, "device": "cpu"}


def training_spec(workload: str, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "workload": workload,
        "params": params,
        "device": "cpu",
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "schedule": {"policy": "triangular2", "base_lr": 0.01, "max_lr": 0.3, "step_size_up": 50},
        "cycles": 2,
        "snapshots": 0,
    }


SWEEP_SPEC: dict[str, Any] = {
    "workload": "digits_mlp",
    "params": {"width": 16},
    "policies": ["fixed", "triangular2"],
    "seeds": [0, 1],
    "step_size": 10,
    "cycles": 2,
    "verify": False,
    "range_test": {"num_iter": 30},
}


def real_outcome() -> RangeTestOutcome:
    """One real range test's outcome (digits MLP, 100 steps): every method's suggestion."""
    from clr import RangeTest, make_optimizer, suggest_all
    from clr.workloads import build_workload

    work = build_workload("digits_mlp", {"width": 16}, seed=0)
    opt = make_optimizer("sgd", work.model.parameters(), lr=1e-5, momentum=0.9)
    result = RangeTest(work.model, opt, work.loss_fn, metric_fn=work.metric_fn).run(
        work.train_loader, start_lr=1e-5, end_lr=10.0, num_iter=100
    )
    return RangeTestOutcome.from_clr(
        result, suggest_all(result, iters_per_epoch=work.iters_per_epoch)
    )


def training_outcome(spec: dict[str, Any], rng: random.Random) -> TrainingOutcome:
    parsed = TrainingSpec.model_validate(spec)
    iterations = parsed.iteration_count()
    accuracy = round(rng.uniform(0.85, 0.97), 4)
    return TrainingOutcome(
        stop_reason="completed",
        iterations=iterations,
        epochs=max(1, iterations // 50),
        cycles=2,
        cycle_ends=[iterations // 2, iterations],
        seconds=round(rng.uniform(5, 60), 2),
        device="cpu",
        policy=parsed.schedule.policy,
        schedule=parsed.schedule.model_dump(mode="json"),
        final_train_loss=round(rng.uniform(0.1, 0.4), 4),
        final_val_loss=round(rng.uniform(0.1, 0.5), 4),
        final_val_accuracy=accuracy,
        best_val_accuracy=accuracy,
        best_val_iteration=iterations,
    )


@dataclass
class Templates:
    """One row per (kind, status) made by the real services: what the copies copy."""

    rows: dict[tuple[str, JobStatus], Job] = field(default_factory=dict)


def make_templates(
    factory: sessionmaker[Session], team: Team, settings: Settings, rng: random.Random
) -> Templates:
    outcome = real_outcome()
    made = Templates()
    for kind, spec in (
        ("range_test", range_test_spec("digits_mlp", {"width": 16})),
        ("training", training_spec("digits_mlp", {"width": 16})),
    ):
        for status in JobStatus:
            with session_scope(factory) as session:
                job = submit_job(session, team=team, kind=kind, spec=spec, settings=settings).job
                job_id = job.id
            if status is JobStatus.CANCELLED:
                with session_scope(factory) as session:
                    cancel_job(session, team=team, job_id=job_id)
            elif status is not JobStatus.QUEUED:
                with session_scope(factory) as session:
                    claimed = claim_job(session, job_id=job_id, worker="bench@host", device="cpu")
                    assert claimed is not None
                    total = claimed.total
                with session_scope(factory) as session:
                    if status is JobStatus.RUNNING:
                        report_progress(session, job_id=job_id, attempt=1, progress=total // 2)
                    elif status is JobStatus.FAILED:
                        fail_job(session, job_id=job_id, attempt=1, reason=FAILURES[0])
                    else:
                        result = outcome if kind == "range_test" else training_outcome(spec, rng)
                        finish_job(session, job_id=job_id, attempt=1, result=result)
            with session_scope(factory) as session:
                row = session.get(Job, job_id)
                if row is None or row.status is not status:
                    raise RuntimeError(f"the {kind} template for {status} is {row}")
                session.expunge(row)
                made.rows[(kind, status)] = row
    return made


def submit_sweeps(
    factory: sessionmaker[Session], team: Team, settings: Settings, count: int
) -> int:
    """``count`` real sweeps (each creates its range test), two in three cancelled; the
    number of jobs made so far."""
    ids = []
    with session_scope(factory) as session:
        for _ in range(count):
            ids.append(
                submit_job(
                    session, team=team, kind="sweep", spec=SWEEP_SPEC, settings=settings
                ).job.id
            )
    with session_scope(factory) as session:
        for job_id in [i for n, i in enumerate(ids) if n % 3]:
            cancel_job(session, team=team, job_id=job_id)
    with session_scope(factory) as session:
        return len(session.scalars(select(Job.id).where(Job.team_id == team.id)).all())


def status_mix(rng: random.Random, busy: bool) -> JobStatus:
    """A status: among the newest runs some are still queued or running."""
    weights = {
        JobStatus.SUCCEEDED: 70,
        JobStatus.FAILED: 10,
        JobStatus.CANCELLED: 6,
        JobStatus.QUEUED: 8 if busy else 0,
        JobStatus.RUNNING: 6 if busy else 0,
    }
    return rng.choices(list(weights), weights=list(weights.values()))[0]


_COLUMNS = [attr.key for attr in inspect(Job).column_attrs]


def copies(
    templates: Templates, count: int, rng: random.Random, now: datetime
) -> Iterator[dict[str, Any]]:
    """``count`` rows copied from the templates, newest first, over the last 30 days."""
    variants: dict[tuple[str, str, int], dict[str, Any]] = {}
    choices = [(w, i) for w, params in WORKLOADS.items() for i in range(len(params))]
    spread = timedelta(days=30).total_seconds()
    ages = sorted(rng.uniform(60, spread) for _ in range(count))
    for n, age_s in enumerate(ages):
        kind = "range_test" if rng.random() < 0.6 else "training"
        status = status_mix(rng, busy=n < 150)
        template = templates.rows[(kind, status)]
        workload, index = rng.choice(choices)
        key = (kind, workload, index)
        if key not in variants:
            params = WORKLOADS[workload][index]
            make = range_test_spec if kind == "range_test" else training_spec
            parsed = parse_job_spec(kind, make(workload, params))
            variants[key] = {
                "spec": parsed.model_dump(mode="json"),
                "config_key": parsed.config_key(),
                "workload": parsed.workload_name(),
                "total": parsed.total_steps(),
            }
        row = {name: getattr(template, name) for name in _COLUMNS}
        created = now - timedelta(seconds=age_s)
        started = created + timedelta(seconds=rng.uniform(0.5, 30))
        ran = timedelta(seconds=rng.uniform(10, 900))
        row.update(variants[key])
        row.update(
            id=uuid.uuid4(),
            idempotency_key=None,
            created_at=created,
            queued_at=created,
            enqueued_at=created if row["enqueued_at"] is not None else None,
            started_at=started if row["started_at"] is not None else None,
            heartbeat_at=started + ran if row["heartbeat_at"] is not None else None,
            finished_at=started + ran if row["finished_at"] is not None else None,
            updated_at=started + ran if status is not JobStatus.QUEUED else created,
        )
        if status is JobStatus.RUNNING:
            row["progress"] = rng.randrange(row["total"])
        elif status is JobStatus.SUCCEEDED:
            row["progress"] = row["total"]
        if status is JobStatus.FAILED:
            row["error"] = rng.choice(FAILURES)
        yield row


_TIMES = [attr.key for attr in inspect(Job).column_attrs if attr.key.endswith("_at")]


def age_real_rows(
    factory: sessionmaker[Session], team: Team, rng: random.Random, now: datetime
) -> None:
    """Move the rows the services made (templates, sweeps and their children) back to a
    random time of the last 30 days, a family together, so they mix with the copies."""
    spread = timedelta(days=30).total_seconds()
    with session_scope(factory) as session:
        jobs = session.scalars(select(Job).where(Job.team_id == team.id)).all()
        delta: dict[uuid.UUID, timedelta] = {}
        for job in sorted(jobs, key=lambda j: j.parent_id is not None):
            if job.parent_id is None:
                delta[job.id] = now - timedelta(seconds=rng.uniform(600, spread)) - job.created_at
            shift = delta[job.parent_id or job.id]
            for name in _TIMES:
                value = getattr(job, name)
                if value is not None:
                    setattr(job, name, value + shift)


def seed_runs(db: Db, team: Team, settings: Settings, runs: int, rng: random.Random) -> float:
    """``runs`` jobs of ``team``; the seconds it took."""
    t0 = time.perf_counter()
    templates = make_templates(db.factory, team, settings, rng)
    made = submit_sweeps(db.factory, team, settings, max(1, runs // 50))
    now = datetime.now(UTC)
    age_real_rows(db.factory, team, rng, now)
    rows = list(copies(templates, runs - made, rng, now))
    with session_scope(db.factory) as session:
        for start_at in range(0, len(rows), INSERT_BATCH):
            session.execute(insert(Job), rows[start_at : start_at + INSERT_BATCH])
    return time.perf_counter() - t0


def seed_series(db: Db, team: Team, settings: Settings, points: int) -> tuple[uuid.UUID, float]:
    """A client training of ``points`` iterations, uploaded in pieces and finished."""
    t0 = time.perf_counter()
    step = 2000
    spec = {
        "source": "client",
        "model": "resnet-bench",
        "dataset": "cifar-bench",
        "batch_size": 128,
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "iterations": points,
        "schedule": {"policy": "triangular", "base_lr": 0.01, "max_lr": 0.3, "step_size_up": step},
    }
    with session_scope(db.factory) as session:
        job_id = submit_job(
            session, team=team, kind="training", spec=spec, settings=settings
        ).job.id
    it = np.arange(points, dtype=np.float64)
    phase = np.abs((it / step) % 2 - 1)  # 1 at a cycle's ends, 0 at its middle
    lr = 0.01 + (0.3 - 0.01) * (1 - phase)
    momentum = 0.85 + 0.1 * phase
    noise = np.random.default_rng(0).normal(0, 0.05, points)
    loss = 2.3 * np.exp(-it / (points / 5)) + 0.1 + np.abs(noise)
    for start_at in range(0, points, UPLOAD_PIECE):
        end = min(points, start_at + UPLOAD_PIECE)
        with session_scope(db.factory) as session:
            upload_points(
                session,
                team=team,
                job_id=job_id,
                name="iterations",
                start=start_at,
                values={
                    "lr": lr[start_at:end].tolist(),
                    "momentum": momentum[start_at:end].tolist(),
                    "loss": loss[start_at:end].tolist(),
                },
            )
    epochs = list(range(0, points // 1000))
    with session_scope(db.factory) as session:
        upload_points(
            session,
            team=team,
            job_id=job_id,
            name="epochs",
            start=0,
            values={
                "epoch": [float(e) for e in epochs],
                "iteration": [float((e + 1) * 1000 - 1) for e in epochs],
                "train_loss": [float(loss[(e + 1) * 1000 - 1]) for e in epochs],
                "val_accuracy": [min(0.95, 0.5 + 0.005 * e) for e in epochs],
            },
        )
    with session_scope(db.factory) as session:
        finish_client_job(session, team=team, job_id=job_id, status="succeeded", seconds=3600.0)
    return job_id, time.perf_counter() - t0


# --------------------------------------------------------------------------- the browser


@dataclass
class Samples:
    values: list[float] = field(default_factory=list)

    def add(self, value: float | None) -> None:
        if value is not None:
            self.values.append(float(value))

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def p90(self) -> float:
        return percentile(self.values, 90)


_HAS = "() => performance.getEntriesByName('%s').length > 0"
"""A function, not an expression: the page's CSP forbids the eval an expression needs."""

_RUNS_TIMING = """() => {
  const paint = performance.getEntriesByName('first-contentful-paint')[0];
  const mark = performance.getEntriesByName('runs-rendered')[0];
  const api = performance.getEntriesByType('resource')
    .filter((e) => !new URL(e.name).pathname.startsWith('/ui/'))
    .map((e) => ({path: new URL(e.name).pathname, start: e.startTime, duration: e.duration}));
  return {fcp: paint ? paint.startTime : null, rendered: mark ? mark.startTime : null, api};
}"""

_FETCH_TIMING = """async ([path, token]) => {
  const t0 = performance.now();
  const response = await fetch(path, {headers: {Authorization: `Bearer ${token}`}});
  const body = await response.json();
  if (!response.ok) throw new Error(`${path}: ${response.status} ${JSON.stringify(body)}`);
  return performance.now() - t0;
}"""


@contextmanager
def chromium() -> Iterator[Any]:
    """A page of a fresh headless Chromium (1400x900)."""
    from playwright.sync_api import sync_playwright

    if not os.access(CHROMIUM, os.X_OK):
        raise SystemExit(f"no Chromium at {CHROMIUM} (apt-get install chromium, or CLR_CHROMIUM)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=BROWSER_ARGS
        )
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 900})
            context.set_default_timeout(TIMEOUT_MS)
            yield context.new_page()
        finally:
            browser.close()


def sign_in(page: Any, url: str, token: str) -> None:
    page.goto(f"{url}/")
    page.get_by_test_id("token-input").fill(token)
    page.get_by_test_id("sign-in").click()
    page.wait_for_selector("[data-testid=runs-table] tbody tr")


def measure_runs(page: Any, url: str, loads: int) -> dict[str, Samples]:
    """``loads`` reloads of the runs page: paint, rows, and each API call's duration."""
    found: dict[str, Samples] = {"fcp": Samples(), "rendered": Samples()}
    page.goto(f"{url}/#/runs")
    for _ in range(loads):
        page.reload()
        page.wait_for_selector("[data-testid=runs-table] tbody tr[data-id]")
        page.wait_for_function(_HAS % "runs-rendered")
        timing = page.evaluate(_RUNS_TIMING)
        found["fcp"].add(timing["fcp"])
        found["rendered"].add(timing["rendered"])
        for call in timing["api"]:
            found.setdefault(f"{call['path']} start", Samples()).add(call["start"])
            found.setdefault(f"{call['path']} duration", Samples()).add(call["duration"])
    return found


def measure_fetch(page: Any, path: str, token: str, loads: int) -> Samples:
    """``loads`` bare ``fetch`` calls of ``path`` from the page (after one warm-up)."""
    page.evaluate(_FETCH_TIMING, [path, token])
    found = Samples()
    for _ in range(loads):
        found.add(page.evaluate(_FETCH_TIMING, [path, token]))
    return found


def measure_series(page: Any, url: str, job_id: uuid.UUID, loads: int) -> Samples | None:
    """``loads`` loads of the training page: its ``series-drawn`` measure (None: it has none)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    found = Samples()
    page.goto(f"{url}/#/trainings/{job_id}")
    for _ in range(loads):
        page.reload()
        try:
            page.wait_for_function(_HAS % "series-drawn", timeout=SERIES_WAIT_MS)
        except PlaywrightTimeout:
            return None
        found.add(page.evaluate("performance.getEntriesByName('series-drawn').at(-1).duration"))
    return found


# --------------------------------------------------------------------------- report


def ms(value: float) -> str:
    return f"{value:.1f}"


def report(
    runs: int,
    points: int,
    loads: int,
    page_runs: dict[str, Samples],
    fetch_jobs: Samples,
    series: Samples | None,
    fetch_series: Samples,
) -> None:
    table = Table(title=f"the runs page with {runs:,} runs, {loads} reloads (ms)")
    table.add_column("measure")
    table.add_column("median", justify="right")
    table.add_column("p90", justify="right")
    for name, samples in page_runs.items():
        table.add_row(name, ms(samples.median), ms(samples.p90))
    table.add_row("fetch GET /jobs?limit=50", ms(fetch_jobs.median), ms(fetch_jobs.p90))
    console.print(table)

    table = Table(title=f"a {points:,}-point series (ms)")
    table.add_column("measure")
    table.add_column("median", justify="right")
    table.add_column("p90", justify="right")
    if series is not None:
        table.add_row("training page: series-drawn", ms(series.median), ms(series.p90))
    table.add_row(
        f"fetch series iterations ?max_points={MAX_POINTS}",
        ms(fetch_series.median),
        ms(fetch_series.p90),
    )
    console.print(table)

    rendered = page_runs["rendered"].median
    console.print(
        f"first page of runs / target ({FIRST_PAGE_TARGET_MS:.0f} ms): "
        f"{rendered / FIRST_PAGE_TARGET_MS:.2f} (rows rendered), "
        f"{page_runs['fcp'].median / FIRST_PAGE_TARGET_MS:.2f} (first contentful paint), "
        f"{fetch_jobs.median / FIRST_PAGE_TARGET_MS:.2f} (GET /jobs alone)"
    )
    if series is None:
        console.print(
            "the training page recorded no 'series-drawn' measure (not on this build): "
            f"only the API's part, {fetch_series.median / SERIES_TARGET_MS:.2f} of the "
            f"{SERIES_TARGET_MS:.0f} ms target"
        )
    else:
        console.print(
            f"series drawn / target ({SERIES_TARGET_MS:.0f} ms): "
            f"{series.median / SERIES_TARGET_MS:.2f} "
            f"(of which the API's fetch {fetch_series.median / SERIES_TARGET_MS:.2f})"
        )
    console.print(MACHINE_NOTE)


def run(args: argparse.Namespace) -> None:
    rng = random.Random(0)
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clr-bench-")))
        url = create_database(args.postgres, DATABASE)
        stack.callback(drop_database, args.postgres, DATABASE)
        settings = Settings(
            _env_file=None, database_url=url, data_dir=tmp, max_active_jobs_per_team=1_000_000
        )
        db = Db(settings)
        stack.callback(db.close)
        team, token = db.team_and_token()
        # nothing runs the seeded jobs: their messages go nowhere
        previous = set_job_sender(lambda _job_id, _kind, _device: None)
        stack.callback(set_job_sender, previous)
        seeded_s = seed_runs(db, team, settings, args.runs, rng)
        series_id, series_s = seed_series(db, team, settings, args.points)
        console.print(
            f"seeded {args.runs:,} runs in {seeded_s:.1f} s, "
            f"a {args.points:,}-point training in {series_s:.1f} s"
        )

        port = free_port()
        api = start(
            "api",
            cli("api", "--host", "127.0.0.1", "--port", str(port)),
            env=service_env(settings),
            log_dir=tmp / "logs",
            stack=stack,
        )
        base = f"http://127.0.0.1:{port}"
        wait_http(api, f"{base}/readyz")
        page = stack.enter_context(chromium())
        sign_in(page, base, token)
        page_runs = measure_runs(page, base, args.loads)
        if args.screenshot is not None:
            page.screenshot(path=args.screenshot)
        fetch_jobs = measure_fetch(page, "/jobs?limit=50", token, args.loads)
        series = measure_series(page, base, series_id, args.loads)
        fetch_series = measure_fetch(
            page, f"/jobs/{series_id}/series/iterations?max_points={MAX_POINTS}", token, args.loads
        )
        report(args.runs, args.points, args.loads, page_runs, fetch_jobs, series, fetch_series)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5000)
    parser.add_argument("--loads", type=int, default=15)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--postgres", default=ADMIN_URL)
    parser.add_argument("--screenshot", type=Path, help="save the runs page as this PNG")
    run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
