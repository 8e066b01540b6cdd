"""API throughput and latency on loopback, as a ratio to a bare FastAPI app.

The real API (``python -m cli api``: PostgreSQL ``clr_bench``, a real Celery
sender to Redis index 14, so every POST commits a job and sends a message) and
a bare FastAPI app (two plain ``def`` endpoints returning the real endpoints'
JSON as a constant, the POST parsing a body of the same size) are served the
same way: uvicorn, one process, 127.0.0.1, ``log_level="info"``. An asyncio
httpx client keeps ``--concurrency`` requests in flight for ``--duration``
seconds per endpoint, after a warm-up; the four loads run interleaved for
``--rounds`` rounds (order alternating) and the headline ratios are the median
of the per-round ratios, so a slow spell of the machine hits both sides.
Target: real / bare throughput >= 0.5.

The load generator runs on the same machine as the server, and on 2 cores the
two compete: the absolute numbers are a floor, the ratios the result.

    python -m bench.api_throughput [--duration 5] [--rounds 3] [--concurrency 16] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import Body, FastAPI, Response
from rich.console import Console
from rich.table import Table

from bench._service import (
    ADMIN_URL,
    BROKER_URL,
    MACHINE_NOTE,
    TINY_SPEC,
    Db,
    cli,
    median,
    percentile,
    postgres_service,
    service_env,
    start,
    wait_http,
)
from cli.service import free_port
from core.db import session_scope
from core.models import Team
from core.services import claim_job, finish_job, submit_job
from core.settings import Settings
from core.specs import RangeTestOutcome

console = Console()


# --------------------------------------------------------------------------- the bare app


def serve_bare(port: int, bodies: Path) -> None:
    """Serve the bare app as ``clr-sweep api`` serves the real one (uvicorn.run, one process).

    Its endpoints are plain ``def`` like the real ones (run in the same threadpool);
    their annotations are resolved from this module's globals, hence the imports there.
    """
    constant = json.loads(bodies.read_text())
    get_body: dict[str, Any] = constant["get"]
    post_body: dict[str, Any] = constant["post"]
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/range-tests/{job_id}/bounds")
    def bounds(job_id: uuid.UUID) -> dict[str, Any]:  # noqa: ARG001 - parsed like the real one
        return get_body

    @app.post("/range-tests", status_code=202)
    def create(
        body: Annotated[dict[str, Any], Body()],  # noqa: ARG001 - parsed, like the real one
        response: Response,
    ) -> dict[str, Any]:
        response.headers["Location"] = f"http://127.0.0.1:{port}/range-tests/{post_body['id']}"
        return post_body

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="info")


# --------------------------------------------------------------------------- the load


@dataclass
class Load:
    """One timed load: how many requests, in how long, each one's latency."""

    requests: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def add(self, other: Load) -> None:
        self.requests += other.requests
        self.seconds += other.seconds
        self.latencies.extend(other.latencies)


@dataclass(frozen=True)
class Target:
    name: str
    method: str
    url: str
    expect: int
    body: dict[str, Any] | None
    headers: dict[str, str]


async def _load(target: Target, *, duration_s: float, concurrency: int) -> Load:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    result = Load()
    content = json.dumps(target.body).encode() if target.body is not None else None
    headers = dict(target.headers)
    if content is not None:
        headers["Content-Type"] = "application/json"
    async with httpx.AsyncClient(limits=limits, headers=headers, timeout=30) as client:
        deadline = time.perf_counter() + duration_s
        errors: list[str] = []

        async def user() -> None:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                response = await client.request(target.method, target.url, content=content)
                result.latencies.append(time.perf_counter() - t0)
                if response.status_code != target.expect:
                    errors.append(f"{response.status_code}: {response.text[:200]}")

        t0 = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(concurrency)))
        result.seconds = time.perf_counter() - t0
    result.requests = len(result.latencies)
    if errors:
        raise RuntimeError(f"{target.name}: {len(errors)} unexpected answers, first {errors[0]}")
    return result


def load(target: Target, *, duration_s: float, concurrency: int) -> Load:
    return asyncio.run(_load(target, duration_s=duration_s, concurrency=concurrency))


# --------------------------------------------------------------------------- setup


def make_bounds_job(db: Db, team: Team, settings: Settings) -> uuid.UUID:
    """A succeeded range test with bounds: one tiny real range test, run in-process."""
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
    with session_scope(db.factory) as session:
        # no sender in this process: the job is claimed and finished right here
        submission = submit_job(session, team=team, kind="range_test", spec=spec, settings=settings)
        job_id = submission.job.id
    with session_scope(db.factory) as session:
        job = claim_job(session, job_id=job_id, worker="bench", device="cpu")
        assert job is not None
    with session_scope(db.factory) as session:
        assert finish_job(session, job_id=job_id, attempt=1, result=outcome) is not None
    return job_id


def run(args: argparse.Namespace) -> None:
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clr-bench-")))
        settings = stack.enter_context(postgres_service(args.postgres, broker_url=args.broker))
        settings = settings.model_copy(update={"data_dir": tmp})
        db = Db(settings)
        stack.callback(db.close)
        team, secret = db.team_and_token()
        job_id = make_bounds_job(db, team, settings)

        real_port, bare_port = free_port(), free_port()
        real = start(
            "api",
            cli("api", "--host", "127.0.0.1", "--port", str(real_port)),
            env=service_env(settings),
            log_dir=tmp / "logs",
            stack=stack,
        )
        real_url = f"http://127.0.0.1:{real_port}"
        wait_http(real, f"{real_url}/readyz")
        auth = {"Authorization": f"Bearer {secret}"}
        got = httpx.get(f"{real_url}/range-tests/{job_id}/bounds", headers=auth)
        posted = httpx.post(f"{real_url}/range-tests", json=TINY_SPEC, headers=auth)
        if got.status_code != 200 or posted.status_code != 202:
            raise RuntimeError(f"real API: GET {got.status_code} {got.text}, POST {posted.text}")
        bodies = tmp / "bodies.json"
        bodies.write_text(json.dumps({"get": got.json(), "post": posted.json()}))

        bare = start(
            "bare",
            [
                sys.executable,
                "-m",
                "bench.api_throughput",
                "--serve-bare",
                str(bare_port),
                "--bodies",
                str(bodies),
            ],
            env=service_env(settings),
            log_dir=tmp / "logs",
            stack=stack,
        )
        bare_url = f"http://127.0.0.1:{bare_port}"
        wait_http(bare, f"{bare_url}/healthz")

        bounds_path = f"/range-tests/{job_id}/bounds"
        targets = {
            "GET bounds": (
                Target("GET bounds", "GET", real_url + bounds_path, 200, None, auth),
                Target("GET bare", "GET", bare_url + bounds_path, 200, None, auth),
            ),
            "POST range-tests": (
                Target("POST range-tests", "POST", real_url + "/range-tests", 202, TINY_SPEC, auth),
                Target("POST bare", "POST", bare_url + "/range-tests", 202, TINY_SPEC, auth),
            ),
        }
        console.print(
            f"API throughput: {args.concurrency} requests in flight, {args.duration:g} s per load,"
            f" {args.rounds} interleaved rounds after a {args.warmup:g} s warm-up each;"
            f" GET {len(got.content)} B, POST {len(posted.content)} B answers"
        )
        console.print(f"[yellow]{MACHINE_NOTE}[/]: absolute req/s are a floor, read the ratios")
        for pair in targets.values():
            for target in pair:
                load(target, duration_s=args.warmup, concurrency=args.concurrency)

        totals: dict[str, Load] = {t.name: Load() for pair in targets.values() for t in pair}
        ratios: dict[str, list[float]] = {name: [] for name in targets}
        p99_ratios: dict[str, list[float]] = {name: [] for name in targets}
        for i in range(args.rounds):
            for name, pair in targets.items():
                ordered = pair if i % 2 == 0 else pair[::-1]
                loads = {
                    t.name: load(t, duration_s=args.duration, concurrency=args.concurrency)
                    for t in ordered
                }
                real_load, bare_load = loads[pair[0].name], loads[pair[1].name]
                for t_name, one in loads.items():
                    totals[t_name].add(one)
                ratios[name].append(real_load.rate / bare_load.rate)
                p99_ratios[name].append(
                    percentile(real_load.latencies, 99) / percentile(bare_load.latencies, 99)
                )
        real.check_alive()
        bare.check_alive()

        table = Table(title="API on loopback (uvicorn, 1 process each)")
        for column in ("endpoint", "requests", "req/s", "p50 ms", "p99 ms"):
            table.add_column(column, justify="left" if column == "endpoint" else "right")
        for t_name, total in totals.items():
            table.add_row(
                t_name,
                str(total.requests),
                f"{total.rate:.0f}",
                f"{percentile(total.latencies, 50) * 1e3:.1f}",
                f"{percentile(total.latencies, 99) * 1e3:.1f}",
            )
        console.print(table)
        summary = Table(title="real / bare (median of per-round ratios)")
        for column in ("endpoint", "throughput ratio", "target", "p99 ratio (lower is better)"):
            summary.add_column(column, justify="left" if column == "endpoint" else "right")
        for name in targets:
            ratio = median(ratios[name])
            mark = "[green]met[/]" if ratio >= 0.5 else "[red]missed[/]"
            summary.add_row(
                name,
                f"{ratio:.2f} ({', '.join(f'{r:.2f}' for r in ratios[name])})",
                f">= 0.5 {mark}",
                f"{median(p99_ratios[name]):.2f}",
            )
        console.print(summary)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of warm-up per target")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--postgres", default=ADMIN_URL, help="admin URL of the server")
    parser.add_argument("--broker", default=BROKER_URL, help="Redis URL (flushed before and after)")
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s loads")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--bodies", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare is not None:
        serve_bare(args.serve_bare, args.bodies)
        return
    if args.quick:
        args.duration, args.warmup, args.rounds = 2.0, 0.5, 1
    run(args)


if __name__ == "__main__":
    main()
