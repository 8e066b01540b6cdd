"""Overload: throughput, latency and refusals as concurrent clients ramp up; the knee.

The real API (``python -m cli api``: PostgreSQL ``clr_bench_overload`` and a real
Celery sender to Redis, or ``--embedded``: a SQLite file and the filesystem broker)
is hammered by ``N`` clients, each on its own keep-alive connection, each GETting one
job as soon as its previous answer came, for ``--step`` seconds per ``N`` in
``--clients`` (10, 20, 40, 80, 160, 200). One client in eight sends a well-formed
unknown token. Per step it prints requests/s (every answer), good/s (200s),
p50/p99 latency, the share of 503s (refused at capacity, fast) and of errors
(timeouts after ``--timeout`` s, 5xx other than 503, dropped connections). The knee
is the smallest ``N`` whose good/s is within 10 % of the best step: past it, more
clients only add latency (or 503s), not throughput.

The clients speak HTTP/1.1 on raw asyncio streams: a request costs the generator
tens of microseconds, so on a small machine the API, not the load generator, is
what saturates (the generator and the API still share the cores).

    python -m bench.overload [--clients 10,20,40,80,160,200] [--step 5] [--embedded]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import httpx
from rich.console import Console
from rich.table import Table

from bench._service import (
    ADMIN_URL,
    BROKER_URL,
    MACHINE_NOTE,
    TINY_SPEC,
    Db,
    cli,
    percentile,
    postgres_service,
    service_env,
    start,
    wait_http,
)
from cli.service import free_port
from core.settings import Settings

console = Console()

DATABASE = "clr_bench_overload"
"""Its own scratch database, so it can run beside the other benchmarks."""

KNEE_SHARE = 0.9
"""The knee: the first step whose good/s reaches this share of the best step's."""


# --------------------------------------------------------------------------- the load


@dataclass
class Answer:
    """One request's outcome: its HTTP status (0: no answer) and how long it took."""

    status: int
    seconds: float
    retry_after: bool = False
    error: str = ""


@dataclass
class Step:
    """What ``clients`` concurrent clients got in ``seconds``."""

    clients: int
    seconds: float
    answers: list[Answer] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.answers) / self.seconds

    @property
    def good_rate(self) -> float:
        return sum(a.status == 200 for a in self.answers) / self.seconds

    def share(self, *statuses: int) -> float:
        n = len(self.answers)
        return sum(a.status in statuses for a in self.answers) / n if n else 0.0

    @property
    def errors(self) -> int:
        """Answers that are neither 2xx/4xx nor a 503 with ``Retry-After``."""
        return sum(
            a.status == 0 or (a.status >= 500 and not (a.status == 503 and a.retry_after))
            for a in self.answers
        )

    def latency(self, q: float) -> float:
        return percentile([a.seconds for a in self.answers], q)


def _request(url: str, path: str, token: str) -> bytes:
    host = urlsplit(url).netloc
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
    ).encode()


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool, bool]:
    """Status, whether ``Retry-After`` came, whether the server keeps the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    else:  # chunked: read chunks to the last one
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    keep = headers.get("connection", "").lower() != "close"
    return status, "retry-after" in headers, keep


class Load:
    """Clients GETting ``path`` in a loop, each on its own connection, in a thread's loop.

    ``set_clients(n)`` grows (or shrinks) the crowd; every answer goes to ``answers``.
    """

    def __init__(self, url: str, path: str, tokens: Sequence[str], *, timeout_s: float) -> None:
        split = urlsplit(url)
        self.host, self.port = split.hostname or "127.0.0.1", split.port or 80
        self.requests = [_request(url, path, token) for token in tokens]
        self.timeout_s = timeout_s
        self.answers: list[Answer] = []
        self._wanted = 0
        self._stop = False
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._tasks: list[asyncio.Task[None]] = []

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop = True
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _spawn(self, index: int) -> asyncio.Task[None]:
        return asyncio.create_task(self._client(index))

    def set_clients(self, n: int) -> None:
        """Have ``n`` clients sending (the others idle, their connections kept)."""
        self._wanted = n
        while len(self._tasks) < n:
            spawn = self._spawn(len(self._tasks))
            self._tasks.append(asyncio.run_coroutine_threadsafe(spawn, self._loop).result())

    def take(self) -> list[Answer]:
        """The answers since the last call."""
        answers, self.answers = self.answers, []
        return answers

    async def _client(self, index: int) -> None:
        request = self.requests[index % len(self.requests)]
        connection: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while not self._stop:
                if index >= self._wanted:
                    await asyncio.sleep(0.05)
                    continue
                started = time.perf_counter()
                try:
                    if connection is None:
                        connection = await asyncio.wait_for(
                            asyncio.open_connection(self.host, self.port), self.timeout_s
                        )
                    connection[1].write(request)
                    left = self.timeout_s - (time.perf_counter() - started)
                    status, retry_after, keep = await asyncio.wait_for(
                        _read_response(connection[0]), left
                    )
                except _ERRORS as exc:
                    elapsed = time.perf_counter() - started
                    self.answers.append(Answer(0, elapsed, error=type(exc).__name__))
                    if connection is not None:
                        connection[1].close()
                    connection = None
                    await asyncio.sleep(0.05)
                    continue
                self.answers.append(Answer(status, time.perf_counter() - started, retry_after))
                if not keep:
                    connection[1].close()
                    connection = None
        finally:
            if connection is not None:
                connection[1].close()


_ERRORS = (
    OSError,
    asyncio.TimeoutError,
    asyncio.IncompleteReadError,
    asyncio.LimitOverrunError,
    ValueError,
)
"""What a client counts as no answer (and reconnects after)."""


def unknown_token() -> str:
    """A token of the right shape that no team has."""
    return "clr_" + secrets.token_urlsafe(32)


def ramp(load: Load, clients: Sequence[int], *, step_s: float, warmup_s: float) -> list[Step]:
    """Each crowd size in turn for ``step_s`` (after ``warmup_s`` not counted)."""
    steps = []
    for n in clients:
        load.set_clients(n)
        time.sleep(warmup_s)
        load.take()
        started = time.monotonic()
        time.sleep(step_s)
        steps.append(Step(n, time.monotonic() - started, load.take()))
        console.print(
            f"  {n:>4} clients: {steps[-1].rate:7.1f} answers/s, "
            f"{steps[-1].good_rate:7.1f} good/s, p99 {steps[-1].latency(99) * 1e3:7.0f} ms"
        )
    return steps


def knee(steps: Sequence[Step]) -> Step:
    """The first step that reaches :data:`KNEE_SHARE` of the best good/s."""
    best = max(step.good_rate for step in steps)
    return next(step for step in steps if step.good_rate >= KNEE_SHARE * best)


# --------------------------------------------------------------------------- the service


def _target(db: Db, url: str) -> tuple[str, list[str]]:
    """A job to GET and the clients' tokens (one in eight unknown)."""
    _team, secret = db.team_and_token()
    response = httpx.post(
        f"{url}/range-tests",
        json=TINY_SPEC,
        headers={"Authorization": f"Bearer {secret}"},
        timeout=30,
    )
    response.raise_for_status()
    return f"/range-tests/{response.json()['id']}", [secret] * 7 + [unknown_token()]


def run(args: argparse.Namespace, stack: ExitStack, tmp: Path) -> list[Step]:
    if args.embedded:
        settings = Settings(_env_file=None, data_dir=tmp / "embedded")
        env = service_env(settings)
        upgrade = start("db-upgrade", cli("db", "upgrade"), env=env, log_dir=tmp, stack=stack)
        if upgrade.process.wait(timeout=120) != 0:
            raise RuntimeError(f"db upgrade failed:\n{upgrade.tail()}")
    else:
        settings = stack.enter_context(postgres_service(args.postgres, DATABASE, args.broker))
        settings = settings.model_copy(update={"data_dir": tmp / "server"})
    db = Db(settings)
    stack.callback(db.close)
    port = free_port()
    api = start(
        "api",
        cli("api", "--host", "127.0.0.1", "--port", str(port)),
        env=service_env(settings),
        log_dir=tmp / "logs",
        stack=stack,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(api, f"{url}/readyz")
    path, tokens = _target(db, url)
    with Load(url, path, tokens, timeout_s=args.timeout) as load:
        return ramp(load, args.clients, step_s=args.step, warmup_s=args.warmup)


def report(steps: Sequence[Step], title: str) -> None:
    table = Table(title=title)
    for column in ("clients", "answers/s", "good/s", "p50 ms", "p99 ms", "503", "errors"):
        table.add_column(column, justify="right")
    for step in steps:
        table.add_row(
            str(step.clients),
            f"{step.rate:.1f}",
            f"{step.good_rate:.1f}",
            f"{step.latency(50) * 1e3:.0f}",
            f"{step.latency(99) * 1e3:.0f}",
            f"{step.share(503):.1%}",
            f"{step.errors / max(1, len(step.answers)):.1%} ({step.errors})",
        )
    console.print(table)
    at = knee(steps)
    best = max(steps, key=lambda s: s.good_rate)
    last = steps[-1]
    console.print(
        f"knee: {at.clients} clients ({at.good_rate:.0f} good/s; best {best.good_rate:.0f} at "
        f"{best.clients}); at {last.clients} clients good/s is "
        f"{last.good_rate / best.good_rate if best.good_rate else 0:.0%} of the best, "
        f"p99 {last.latency(99) * 1e3:.0f} ms, errors {last.errors}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--clients",
        type=lambda s: [int(x) for x in s.split(",")],
        default=[10, 20, 40, 80, 160, 200],
        help="crowd sizes, comma-separated",
    )
    parser.add_argument("--step", type=float, default=5.0, help="seconds measured per size")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds before each step")
    parser.add_argument("--timeout", type=float, default=30.0, help="a client's patience (s)")
    parser.add_argument("--embedded", action="store_true", help="SQLite + filesystem broker")
    parser.add_argument("--postgres", default=ADMIN_URL, help="admin URL of the server")
    parser.add_argument("--broker", default=BROKER_URL, help="Redis URL (flushed before and after)")
    args = parser.parse_args()
    mode = "embedded (SQLite)" if args.embedded else "PostgreSQL + Redis"
    console.print(f"overload: GET one job, {mode}, {args.step:g} s per crowd size")
    console.print(f"[yellow]{MACHINE_NOTE}[/]")
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="clr-bench-")))
        steps = run(args, stack, tmp)
    report(steps, f"overload, {mode}")
    counts: Counter[str] = Counter(a.error for s in steps for a in s.answers if a.error)
    if counts:
        console.print(f"transport errors: {dict(counts)}")


if __name__ == "__main__":
    main()
