"""Client and uploads: the light install, the uploader's cost on a team's loop, uploads, calls.

What issue 13 adds, each part printing ratios measured within one run (``--only``
picks parts):

- ``imports``: a fresh interpreter's ``import clr_sweep`` (and
  ``clr_sweep.contracts``, ``clr_sweep.uploads``) against ``import torch`` and
  ``clr.workloads.build_workload("digits_mlp")``, each in rotation, median of
  ``--import-repeats`` runs: the import's own seconds, the process's wall time
  from spawn to exit, its peak RSS and which heavy modules it loaded.
- ``loop``: the range-test uploader's cost on the team's own loop. A small MLP
  on generated data (no workload, no dataset), ``--steps`` steps of an LR sweep,
  run bare and with ``clr_sweep.uploads.range_test_uploader`` streaming the
  points to a real service: as ``clr.RangeTest.run``'s ``callback`` (against
  the same ``RangeTest.run`` without one) and fed by hand from a plain loop
  (``add(lr, loss.item())`` against the same loop reading ``loss.item()``).
  Every repeat resets the model and optimizer; the variants run in a new random
  order each repeat; a ratio is the median of the per-repeat ratios. The loop's
  time excludes creating the job and finishing it (both printed). Target:
  with / bare <= 1.05. Beside the wall time: the client process's CPU (both
  threads), the loop thread's own CPU, the service's CPU meanwhile (it shares
  this machine) and the garbage collector's time and full collections. Controls: the bare
  loop measured twice ("bare again": the noise floor), and for the range test an
  uploader that sends nothing before the finish ("gathered only") and one that
  sends to an in-process transport answering at once ("no-op transport": the
  client's own sending, without the network and the service).
- ``uploads``: ``POST /jobs/{id}/series/curve`` through the uploader
  (``flush``: uploads of ``MAX_POINTS_PER_UPLOAD`` points, one after another)
  for a 300- and a 3,000-point synthetic curve: points accepted per second;
  then ``finish`` (the service builds every method's suggestion from the stored
  curve): its latency.
- ``calls``: ``Client.get`` and ``Client.list(limit=50)`` against the same
  requests through a bare ``httpx.Client`` (``.json()`` only), alternating,
  ``--calls`` pairs each; and the typed parsing alone, in-process.
- ``cli``: ``clr-sweep --version`` and ``clr-sweep jobs list --json`` (against
  the running service) from cold, against ``python -c pass``; median of
  ``--import-repeats`` runs; which heavy modules each loads. ``--cli-repo``
  runs another checkout's command line (e.g. a branch not yet merged).

The service: ``--mode embedded`` starts ``python -m cli serve`` on a
temporary data folder (SQLite); ``--mode server`` starts ``python -m cli api`` on a
scratch PostgreSQL database and a Redis index (a client job needs no worker);
``both`` runs every service part on each.

    python -m bench.client [--mode embedded|server|both] [--quick] [--only loop,uploads]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import math
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch
from torch import nn

from bench._service import (
    ADMIN_URL,
    BENCH_DATABASE,
    BROKER_URL,
    MACHINE_NOTE,
    WORKER_READY,
    Db,
    cli,
    median,
    postgres_service,
    service_env,
    start,
    wait_http,
    wait_log,
)
from clr import RangeTest, sweep_lrs
from clr_sweep import Client, _models
from clr_sweep.uploads import MAX_POINTS_PER_UPLOAD, RangeTestUploader, range_test_uploader
from core.settings import Settings

REPO_ROOT = Path(__file__).resolve().parents[1]
PARTS = ("imports", "loop", "uploads", "calls", "cli")
SERVICE_PARTS = ("loop", "uploads", "calls", "cli")

HEAVY = (
    "torch",
    "numpy",
    "sklearn",
    "scipy",
    "matplotlib",
    "sqlalchemy",
    "alembic",
    "psycopg",
    "fastapi",
    "starlette",
    "uvicorn",
    "celery",
    "kombu",
    "redis",
    "typer",
    "rich",
    "pydantic",
    "httpx",
    "clr",
    "core",
    "api",
    "worker",
    "cli",
)
"""Top-level packages worth naming: what a light client must not drag in, and what it uses."""

IMPORTS: dict[str, str] = {
    "python -c pass": "pass",
    "import clr_sweep": "import clr_sweep",
    "import clr_sweep.contracts": "import clr_sweep.contracts",
    "import clr_sweep.uploads": "import clr_sweep.uploads",
    "import torch": "import torch",
    "build a workload": (
        "from clr.workloads import build_workload\n"
        "build_workload('digits_mlp', {'width': 32}, seed=0)"
    ),
}
"""Fresh-interpreter import targets (the code run between the two clock reads)."""

_PROBE = """\
import json, sys, time
t0 = time.perf_counter()
exec(compile({code!r}, "<bench>", "exec"))
seconds = time.perf_counter() - t0
heavy = {heavy!r}
loaded = sorted(name for name in heavy if name in sys.modules)
with open("/proc/self/status") as status:
    rss = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
print(json.dumps({{"seconds": seconds, "loaded": loaded, "modules": len(sys.modules), "rss": rss}}))
"""

START_LR, END_LR = 1e-4, 0.3


def _env(repo: Path = REPO_ROOT, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLR_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(repo), os.environ.get("PYTHONPATH")) if p)
    env.update(extra)
    return env


def _ratio_line(name: str, with_: Sequence[float], bare: Sequence[float]) -> str:
    paired = statistics.median(w / b for w, b in zip(with_, bare, strict=True))
    return (
        f"{name}: bare {median(bare) * 1e3:7.1f} ms  with {median(with_) * 1e3:7.1f} ms"
        f"  with / bare {paired:.3f} (paired; runs: "
        + ", ".join(f"{w / b:.2f}" for w, b in zip(with_, bare, strict=True))
        + ")"
    )


# --------------------------------------------------------------------------- imports


@dataclass
class ImportRuns:
    seconds: list[float] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    modules: int = 0


def _probe(code: str) -> tuple[float, dict[str, Any]]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(code=code, heavy=HEAVY)],
        env=_env(),
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{code!r} exited with {done.returncode}:\n{done.stderr[-2000:]}")
    data: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return wall, data


def bench_imports(repeats: int) -> None:
    print(f"== imports: fresh interpreter, median of {repeats} runs in rotation")
    runs = {name: ImportRuns() for name in IMPORTS}
    names = list(IMPORTS)
    for name in names:  # warm-up: the files in the page cache
        _probe(IMPORTS[name])
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            wall, data = _probe(IMPORTS[name])
            out = runs[name]
            out.seconds.append(data["seconds"])
            out.wall.append(wall)
            out.rss.append(data["rss"])
            out.loaded, out.modules = data["loaded"], data["modules"]
    light = median(runs["import clr_sweep"].seconds)
    print(f"{'':<28} {'import s':>9} {'process s':>10} {'peak RSS':>9} {'modules':>8}  / clr_sweep")
    for name, out in runs.items():
        seconds = median(out.seconds)
        print(
            f"{name:<28} {seconds:9.3f} {median(out.wall):10.3f} {median(out.rss):7.0f} MiB"
            f" {out.modules:8d}  {seconds / light:6.1f}x"
        )
    for name in ("import clr_sweep", "import clr_sweep.uploads", "build a workload"):
        loaded = runs[name].loaded
        absent = [m for m in HEAVY if m not in loaded]
        print(f"{name}: loads {', '.join(loaded) or 'none'}; not {', '.join(absent)}")
    for name in ("import torch", "build a workload"):
        ratio = median(runs[name].seconds) / light
        print(f"{name} / import clr_sweep = {ratio:.1f}x (import seconds)")


# --------------------------------------------------------------------------- the service


@dataclass(frozen=True)
class Service:
    mode: str
    url: str
    token: str
    pid: int
    """The service's process (its children are the service too)."""


@contextmanager
def service(mode: str, args: argparse.Namespace, tmp: Path) -> Iterator[Service]:
    """A running service of ``mode`` and a token of a team on it; stopped afterwards."""
    from cli.service import TOKEN_FILE, free_port  # noqa: PLC0415 - the service's helpers

    with ExitStack() as stack:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        if mode == "embedded":
            data_dir = tmp / "embedded"
            settings = Settings(_env_file=None, data_dir=data_dir)
            proc = start(
                "serve",
                cli("serve", "--host", "127.0.0.1", "--port", str(port)),
                env=service_env(settings),
                log_dir=tmp / "logs",
                stack=stack,
            )
            wait_http(proc, f"{url}/readyz")
            # the worker's start (torch) must not compete with the measurements
            wait_log(proc, WORKER_READY, log=data_dir / "logs" / "cpu1.log")
            token = (data_dir / TOKEN_FILE).read_text().strip()
        else:
            settings = stack.enter_context(
                postgres_service(args.postgres, args.database, broker_url=args.broker)
            )
            settings = settings.model_copy(update={"data_dir": tmp / "server"})
            db = Db(settings)
            stack.callback(db.close)
            _, token = db.team_and_token()
            proc = start(
                "api",
                cli("api", "--host", "127.0.0.1", "--port", str(port)),
                env=service_env(settings),
                log_dir=tmp / "logs",
                stack=stack,
            )
            wait_http(proc, f"{url}/readyz")
        yield Service(mode, url, token, proc.process.pid)


# --------------------------------------------------------------------------- the loop


def tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) used so far by process ``root`` and its descendants."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            text = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        fields = text.rsplit(")", 1)[1].split()  # after the command name: state, ppid, ...
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])  # utime, stime
    tree, grew = {root}, True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= more
        grew = bool(more)
    return sum(ticks.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


class Setup:
    """A small MLP on generated data; every variant starts each repeat from the same state."""

    def __init__(self, width: int, batch_size: int, seed: int = 0) -> None:
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(batch_size * 32, 64, generator=generator)
        y = (x @ torch.randn(64, 10, generator=generator)).argmax(1)
        self.batches = [
            (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)
        ]
        torch.manual_seed(seed)
        self.model = nn.Sequential(
            nn.Linear(64, width),
            nn.ReLU(),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Linear(width, 10),
        )
        self.loss_fn = nn.CrossEntropyLoss()
        self.opt = torch.optim.SGD(self.model.parameters(), lr=START_LR, momentum=0.9)
        self.model_state = copy.deepcopy(self.model.state_dict())
        self.opt_state = copy.deepcopy(self.opt.state_dict())
        self.batch_size = batch_size

    def reset(self) -> None:
        self.model.load_state_dict(self.model_state)
        self.opt.load_state_dict(self.opt_state)


@dataclass
class Timed:
    """One run: the loop's wall, process-CPU and loop-thread-CPU seconds, the service's
    CPU meanwhile; creating and finishing the job (outside the loop)."""

    wall: float
    cpu: float
    thread_cpu: float
    service_cpu: float
    gc_s: float
    full_gcs: int
    create: float = 0.0
    finish: float = 0.0


Variant = Callable[[], Timed]
NewUpload = Callable[[], RangeTestUploader]
"""Creates a job and its uploader for one run."""

NOOP_URL = "http://noop.invalid"


def _uploader(client: Client, setup: Setup, steps: int, **options: Any) -> RangeTestUploader:
    return range_test_uploader(
        client,
        model="bench-mlp",
        dataset="generated",
        batch_size=setup.batch_size,
        optimizer=setup.opt,
        tags={"bench": "client"},
        start_lr=START_LR,
        end_lr=END_LR,
        num_iter=steps,
        **options,
    )


def noop_client(job: Mapping[str, Any]) -> Client:
    """A client whose requests an in-process transport answers at once (``job`` for a
    finish): the uploader's own sending cost, without the network and the service."""

    def answer(request: httpx.Request) -> httpx.Response:
        request.read()
        if request.url.path.endswith("/finish"):
            return httpx.Response(200, json=job)
        return httpx.Response(200, json={"stored": 0})

    return Client(NOOP_URL, "clr_" + "x" * 43, transport=httpx.MockTransport(answer))


def upload_factories(client: Client, setup: Setup, steps: int) -> dict[str, NewUpload]:
    """The uploader's variants: the real one, one that sends nothing before the finish,
    and one that sends to an in-process no-op transport."""
    # a job as the service shows it, for the no-op transport's uploaders
    probe = _uploader(client, setup, steps, flush_interval=3600.0, keepalive=3600.0)
    job = probe.job.model_dump(mode="json")
    probe.finish(status="cancelled")
    noop = noop_client(job)
    return {
        "service": lambda: _uploader(client, setup, steps),
        "gathered only": lambda: _uploader(
            client, setup, steps, flush_interval=3600.0, keepalive=3600.0
        ),
        "no-op transport": lambda: RangeTestUploader(noop, job),
    }


class GcWatch:
    """Time spent in the garbage collector, and full (generation 2) collections, so far."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._started
        if info["generation"] == 2:
            self.full += 1


GC = GcWatch()
gc.callbacks.append(GC)


class _Clock:
    """Reads the loop's clocks: wall, process CPU, this thread's CPU, the service's CPU."""

    def __init__(self, service_pid: int) -> None:
        self.service_pid = service_pid
        self.service = tree_cpu_s(service_pid)
        self.gc_s, self.full_gcs = GC.seconds, GC.full
        self.wall, self.cpu, self.thread = (
            time.perf_counter(),
            time.process_time(),
            time.thread_time(),
        )

    def stop(self, create: float) -> Timed:
        wall, cpu, thread = time.perf_counter(), time.process_time(), time.thread_time()
        return Timed(
            wall - self.wall,
            cpu - self.cpu,
            thread - self.thread,
            tree_cpu_s(self.service_pid) - self.service,
            GC.seconds - self.gc_s,
            GC.full - self.full_gcs,
            create,
        )


def _finish(upload: RangeTestUploader | None, timed: Timed, result: Any = None) -> Timed:
    if upload is not None:
        t0 = time.perf_counter()
        if result is None:
            job = upload.finish(seconds=timed.wall, stop_reason="completed")
        else:
            job = upload.finish(result)
        timed.finish = time.perf_counter() - t0
        assert job.status == "succeeded" or upload.client.url == NOOP_URL, job
    return timed


def range_test_variant(
    setup: Setup, steps: int, new_upload: NewUpload | None, service_pid: int
) -> Variant:
    """``clr.RangeTest.run`` over the sweep, with an uploader as its callback or none."""
    tester = RangeTest(setup.model, setup.opt, setup.loss_fn)

    def run() -> Timed:
        setup.reset()
        t0 = time.perf_counter()
        upload = None if new_upload is None else new_upload()
        create = time.perf_counter() - t0
        clock = _Clock(service_pid)
        result = tester.run(
            setup.batches,
            start_lr=START_LR,
            end_lr=END_LR,
            num_iter=steps,
            diverge_th=1e9,
            callback=upload,
            should_stop=None if upload is None else upload.should_stop,
        )
        timed = clock.stop(create)
        assert result.steps_run == steps, result.stop_detail
        return _finish(upload, timed, result)

    return run


def plain_loop_variant(
    setup: Setup, steps: int, new_upload: NewUpload | None, service_pid: int
) -> Variant:
    """A hand-written loop that reads each step's loss; ``upload.add(lr, loss)`` or not."""
    model, loss_fn, opt, batches = setup.model, setup.loss_fn, setup.opt, setup.batches
    lrs = sweep_lrs(START_LR, END_LR, steps).tolist()

    def run() -> Timed:
        setup.reset()
        t0 = time.perf_counter()
        upload = None if new_upload is None else new_upload()
        create = time.perf_counter() - t0
        clock = _Clock(service_pid)
        done = 0
        while done < steps:
            for xb, yb in batches:
                lr = lrs[done]
                opt.param_groups[0]["lr"] = lr
                opt.zero_grad(set_to_none=True)
                loss = loss_fn(model(xb), yb)
                loss.backward()
                opt.step()
                value = loss.item()
                if upload is not None:
                    upload.add(lr, value)
                done += 1
                if done == steps:
                    break
        return _finish(upload, clock.stop(create))

    return run


def _paired(with_: Sequence[float], bare: Sequence[float]) -> float:
    return statistics.median(w / b for w, b in zip(with_, bare, strict=True))


def _run_variants(variants: Mapping[str, Variant], repeats: int) -> dict[str, list[Timed]]:
    """Every variant ``repeats`` times, in a new random order each repeat (so no variant
    keeps a place, nor a neighbour: what ran just before a run can slow it)."""
    for run in variants.values():  # warm-up
        run()
    times: dict[str, list[Timed]] = {name: [] for name in variants}
    names = list(variants)
    order = random.Random(0)
    for _ in range(repeats):
        order.shuffle(names)
        for name in names:
            times[name].append(variants[name]())
    return times


def bench_loop(svc: Service, args: argparse.Namespace) -> None:
    print(
        f"== loop ({svc.mode}): MLP 64-{args.width}-{args.width}-10 on generated data, batch 64,"
        f" CPU, {torch.get_num_threads()} torch thread(s), {args.steps} steps,"
        f" {args.repeats} repeats in random order; ratios: medians of the per-repeat ratios"
    )
    setup = Setup(args.width, 64)
    with Client(svc.url, svc.token) as client:
        factories = upload_factories(client, setup, args.steps)
        kinds: dict[str, tuple[Callable[..., Variant], Sequence[str]]] = {
            "clr.RangeTest, the uploader as callback": (range_test_variant, list(factories)),
            "plain loop, add(lr, loss.item())": (plain_loop_variant, ["service"]),
        }
        for label, (make, which) in kinds.items():
            # "bare again": the same bare loop, measured as a variant: the noise floor
            variants = {
                "bare": make(setup, args.steps, None, svc.pid),
                "bare again": make(setup, args.steps, None, svc.pid),
            }
            for name in which:
                variants[name] = make(setup, args.steps, factories[name], svc.pid)
            times = _run_variants(variants, args.repeats)
            bare = times["bare"]
            print(
                f"{label}: bare {median([t.wall for t in bare]) * 1e3:.0f} ms"
                f" ({median([t.wall for t in bare]) / args.steps * 1e6:.0f} us a step),"
                f" in the GC {sum(t.gc_s for t in bare) / len(bare) * 1e3:.1f} ms a run on average,"
                f" {sum(t.full_gcs for t in bare)} full collections in {len(bare)} runs"
            )
            print(
                f"  {'uploader':<16} {'wall':>6} {'CPU':>6} {'loop thread CPU':>16}"
                f" {'CPU us/step':>12} {'service CPU ms':>15} {'GC ms':>6} {'full GCs':>8}"
                "  per-repeat wall ratios"
            )
            for name in ["bare again", *which]:
                runs = times[name]
                extra = (median([t.cpu for t in runs]) - median([t.cpu for t in bare])) / args.steps
                service_cpu = (
                    median([t.service_cpu for t in runs]),
                    median([t.service_cpu for t in bare]),
                )
                walls = [t.wall / b.wall for t, b in zip(runs, bare, strict=True)]
                print(
                    f"  {name:<16} {_paired([t.wall for t in runs], [t.wall for t in bare]):6.3f}"
                    f" {_paired([t.cpu for t in runs], [t.cpu for t in bare]):6.3f}"
                    f" {_paired([t.thread_cpu for t in runs], [t.thread_cpu for t in bare]):16.3f}"
                    f" {extra * 1e6:+12.1f}"
                    f" {service_cpu[0] * 1e3:7.0f} ({service_cpu[1] * 1e3:.0f})"
                    f" {sum(t.gc_s for t in runs) / len(runs) * 1e3:6.1f}"
                    f" {sum(t.full_gcs for t in runs):8d}"
                    f"  {' '.join(f'{r:.2f}' for r in sorted(walls))}"
                )
            real = times[which[0]]
            print(
                f"  creating the job {median([t.create for t in real]) * 1e3:.1f} ms,"
                f" finishing it {median([t.finish for t in real]) * 1e3:.1f} ms (outside the loop)"
            )


# --------------------------------------------------------------------------- uploads


def synthetic_curve(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A range test's curve of ``n`` points from 1e-5 to 10: flat, falling, then diverging."""
    rng = np.random.default_rng(seed)
    lrs = np.geomspace(1e-5, 10.0, n)
    x = np.log10(lrs)
    fall = 1.0 / (1.0 + np.exp(-(x + 2.5) * 3.0))
    blow = np.exp(np.clip((x + 0.3) * 4.0, None, 8.0))
    losses = 2.3 - 1.9 * fall + 0.2 * blow + rng.normal(0.0, 0.03, n)
    return lrs, np.abs(losses).astype(np.float32).astype(np.float64)


def bench_uploads(svc: Service, args: argparse.Namespace) -> None:
    print(
        f"== uploads ({svc.mode}): synthetic curves, uploads of <= {MAX_POINTS_PER_UPLOAD} points,"
        f" median of {args.upload_repeats}"
    )
    with Client(svc.url, svc.token) as client:
        for n in (300, 3000):
            lrs, losses = synthetic_curve(n)
            gather, flush, finish, send_cpu = [], [], [], []
            for repeat in range(args.upload_repeats + 1):
                upload = range_test_uploader(
                    client,
                    model="bench-synthetic",
                    dataset="generated",
                    batch_size=64,
                    tags={"points": n},
                    start_lr=1e-5,
                    end_lr=10.0,
                    num_iter=n,
                    flush_interval=3600.0,  # nothing goes out until flush()
                    keepalive=3600.0,
                )
                t0 = time.perf_counter()
                for lr, loss in zip(lrs.tolist(), losses.tolist(), strict=True):
                    upload.add(lr, loss)
                t1, cpu1 = time.perf_counter(), time.process_time()
                upload.flush()
                t2, cpu2 = time.perf_counter(), time.process_time()
                job = upload.finish(seconds=1.0, stop_reason="completed")
                t3 = time.perf_counter()
                assert job.progress == n, job
                if repeat == 0:
                    continue  # warm-up
                gather.append(t1 - t0)
                flush.append(t2 - t1)
                finish.append(t3 - t2)
                send_cpu.append(cpu2 - cpu1)
            uploads = math.ceil(n / MAX_POINTS_PER_UPLOAD)
            print(
                f"{n:>5} points: {n / median(flush):8.0f} points/s accepted"
                f" ({uploads} uploads, {median(flush) / uploads * 1e3:.1f} ms each);"
                f" client CPU a point: add() {median(gather) / n * 1e6:.1f} us,"
                f" sending {median(send_cpu) / n * 1e6:.1f} us;"
                f" finish {median(finish) * 1e3:.1f} ms"
                f" (runs: {', '.join(f'{s * 1e3:.0f}' for s in finish)})"
            )


# --------------------------------------------------------------------------- calls


def _ensure_jobs(client: Client, count: int) -> None:
    """At least ``count`` finished jobs on the service (for a full page of the list)."""
    have = sum(1 for _ in client.list(limit=count))
    lrs, losses = synthetic_curve(300)
    for _ in range(count - have):
        upload = range_test_uploader(
            client,
            model="bench-filler",
            dataset="generated",
            batch_size=64,
            start_lr=1e-5,
            end_lr=10.0,
            num_iter=300,
        )
        for lr, loss in zip(lrs.tolist(), losses.tolist(), strict=True):
            upload.add(lr, loss)
        upload.finish()


def _per_call(fn: Callable[[], object], number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def bench_calls(svc: Service, args: argparse.Namespace) -> None:
    page = 50
    with (
        Client(svc.url, svc.token) as client,
        httpx.Client(
            base_url=svc.url, headers={"Authorization": f"Bearer {svc.token}"}, timeout=30
        ) as raw,
    ):
        _ensure_jobs(client, page)
        job = next(client.list(kind="range_test", status="succeeded", limit=1))
        job_id = str(job.id)

        def raw_json(path: str, **params: Any) -> Any:
            response = raw.get(path, params=params)
            response.raise_for_status()
            return response.json()

        ops: dict[str, tuple[Callable[[], object], Callable[[], object]]] = {
            "get": (lambda: client.get(job_id), lambda: raw_json(f"/jobs/{job_id}")),
            f"list (limit {page})": (
                lambda: list(client.list(limit=page)),
                lambda: raw_json("/jobs", limit=page)["items"],
            ),
        }
        one = raw_json(f"/jobs/{job_id}")
        listed = raw_json("/jobs", limit=page)
        print(
            f"== calls ({svc.mode}): Client vs httpx.Client + .json(), {args.calls} alternating"
            f" pairs; a job's JSON {len(json.dumps(one)) / 1024:.1f} KiB,"
            f" a page of {len(listed['items'])} {len(json.dumps(listed)) / 1024:.1f} KiB"
        )
        for name, (typed, bare) in ops.items():
            typed(), bare()  # warm-up
            t_typed: list[float] = []
            t_bare: list[float] = []
            for i in range(args.calls):
                for which in ("typed", "bare") if i % 2 == 0 else ("bare", "typed"):
                    t0 = time.perf_counter()
                    (typed if which == "typed" else bare)()
                    (t_typed if which == "typed" else t_bare).append(time.perf_counter() - t0)
            paired = statistics.median(t / b for t, b in zip(t_typed, t_bare, strict=True))
            print(
                f"{name}: httpx {median(t_bare) * 1e3:6.2f} ms  Client {median(t_typed) * 1e3:6.2f}"
                f" ms  Client / httpx {median(t_typed) / median(t_bare):.3f}"
                f" (paired {paired:.3f})"
            )
        number = 200
        parse_one = _per_call(lambda: _models.parse_job(one), number)
        parse_page = _per_call(lambda: _models.parse_job_list(listed), number // 10)
        print(
            f"typed parsing alone (in-process): a job {parse_one * 1e6:.0f} us,"
            f" a page of {len(listed['items'])} {parse_page * 1e3:.2f} ms"
        )


# --------------------------------------------------------------------------- the CLI


def _cli_argv() -> list[str]:
    script = Path(sys.executable).parent / "clr-sweep"
    if script.exists():
        return [sys.executable, str(script)]
    return [sys.executable, "-m", "cli"]


def _heavy_imported(argv: Sequence[str], env: dict[str, str]) -> list[str]:
    """The heavy top-level packages a command imports (``-X importtime``, one run)."""
    done = subprocess.run(
        [argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True, text=True
    )
    names = set()
    for line in done.stderr.splitlines():
        if line.startswith("import time:"):
            module = line.rsplit("|", 1)[-1].strip()
            names.add(module.split(".")[0])
    return [name for name in HEAVY if name in names]


def bench_cli(svc: Service, args: argparse.Namespace) -> None:
    repo = args.cli_repo or REPO_ROOT
    with Client(svc.url, svc.token) as client:
        _ensure_jobs(client, 50)  # what `jobs list` shows: a full first page
    base = _cli_argv()
    env = _env(repo, CLR_URL=svc.url, CLR_TOKEN=svc.token)
    commands: dict[str, list[str]] = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "clr-sweep --version": [*base, "--version"],
        "clr-sweep jobs list --json": [*base, "jobs", "list", "--json"],
    }
    print(
        f"== cli ({svc.mode}): from cold, {repo}, median of {args.import_repeats} runs in rotation"
    )
    for name, argv in commands.items():  # warm-up, and a check that the command works
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            said = [ln for ln in (done.stderr + done.stdout).splitlines() if re.search("[a-z]", ln)]
            print(
                f"{name}: exits {done.returncode} on this checkout (use --cli-repo), skipped:"
                f" {said[-1].strip(' │') if said else ''}"
            )
            commands = {k: v for k, v in commands.items() if k != name}
        elif name.endswith("--json"):
            document = json.loads(done.stdout)
            items = document.get("items", document) if isinstance(document, dict) else document
            print(f"{name}: one JSON document on stdout ({len(items)} jobs)")
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for repeat in range(args.import_repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            t0 = time.perf_counter()
            subprocess.run(commands[name], env=env, capture_output=True, check=True)
            times[name].append(time.perf_counter() - t0)
    floor = median(times["python -c pass"])
    for name, values in times.items():
        heavy = "" if name.startswith("python") else _heavy_imported(commands[name], env)
        loads = f"  loads {', '.join(heavy) or 'none of them'}" if heavy != "" else ""
        print(
            f"{name:<28} {median(values):6.3f} s  ({median(values) - floor:+.3f} s over python)"
            + loads
        )


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["embedded", "server", "both"], default="both")
    parser.add_argument("--only", default=",".join(PARTS), help=f"parts: {', '.join(PARTS)}")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=11, help="loop repeats")
    parser.add_argument("--upload-repeats", type=int, default=5)
    parser.add_argument("--import-repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--postgres", default=ADMIN_URL, help="admin URL of the server")
    parser.add_argument("--database", default=BENCH_DATABASE, help="the scratch database")
    parser.add_argument("--broker", default=BROKER_URL, help="the Redis index (flushed)")
    parser.add_argument("--cli-repo", type=Path, help="another checkout's command line")
    parser.add_argument("--quick", action="store_true", help="a smoke run (seconds)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.repeats, args.upload_repeats = 100, 1, 1
        args.import_repeats, args.calls = 1, 5
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = set(parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from {', '.join(PARTS)}")
    torch.set_num_threads(args.threads)
    print(MACHINE_NOTE)
    if "imports" in parts:
        bench_imports(args.import_repeats)
    modes = ["embedded", "server"] if args.mode == "both" else [args.mode]
    if not any(p in SERVICE_PARTS for p in parts):
        return
    for mode in modes:
        with tempfile.TemporaryDirectory(prefix="clr-bench-client-") as tmp:
            with service(mode, args, Path(tmp)) as svc:
                if "loop" in parts:
                    bench_loop(svc, args)
                if "uploads" in parts:
                    bench_uploads(svc, args)
                if "calls" in parts:
                    bench_calls(svc, args)
                if "cli" in parts:
                    bench_cli(svc, args)


if __name__ == "__main__":
    main()
