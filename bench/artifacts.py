"""Checkpoint write and resume through the artifact store vs a plain local file.

Setup (issue 11): the checkpoint of each built-in workload (its model and an SGD
optimizer with momentum 0.9, after one step so the momentum buffers exist) and of
a ~100 MB model (four 2500x2500 linear layers, 25M parameters, plus its momentum:
a ~200 MB checkpoint). Each is written with ``torch.save`` into an artifact writer
and resumed with ``torch.load`` from an artifact reader followed by
``load_state_dict`` into a fresh model and optimizer, in every store:

- ``postgres``: bytes as database chunks in PostgreSQL (the production default);
- ``dir``: a file in ``CLR_ARTIFACT_DIR`` (a local folder here, standing in for a
  shared volume), metadata in PostgreSQL; the file is fsynced before publishing;
- ``sqlite``: database chunks in the embedded mode's SQLite file;

and the baseline ``local``: ``torch.save`` to a local file and ``torch.load`` from
it (no fsync). Each write replaces the previous checkpoint, as a training does
at every cycle end. Stores run interleaved, ``--repeats`` times each; the medians
are compared, so the ratios come from one run on one machine.
``--chunk-sweep`` also writes and reads the big checkpoint on PostgreSQL with
other chunk sizes (how :data:`core.artifacts.ARTIFACT_CHUNK_BYTES` was chosen).

    python -m bench.artifacts [--repeats 3] [--admin-url postgresql://...] [--chunk-sweep]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from bench._service import ADMIN_URL, create_database, drop_database
from clr.workloads import build_workload, list_workloads
from core.artifacts import ARTIFACT_CHUNK_BYTES, open_artifact_reader, open_artifact_writer
from core.db import make_engine, make_session_factory, session_scope
from core.migrate import upgrade
from core.models import Job, JobStatus, Team
from core.settings import Settings

BENCH_DATABASE = "clr_bench_artifacts"
BIG_WIDTH, BIG_LAYERS = 2500, 4


@dataclass
class Checkpoint:
    """A model and optimizer whose state is saved, and fresh ones to resume into."""

    name: str
    make: Callable[[], tuple[torch.nn.Module, torch.optim.Optimizer]]
    state: dict[str, Any]
    size: int = 0

    @classmethod
    def of(
        cls, name: str, make_model: Callable[[], torch.nn.Module], x: torch.Tensor
    ) -> Checkpoint:
        def make() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
            model = make_model()
            return model, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

        model, opt = make()
        model(x).float().sum().backward()
        opt.step()
        state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "iteration": 1}
        return cls(name, make, state)

    def resume(self, loaded: dict[str, Any]) -> None:
        model, opt = self.make()
        model.load_state_dict(loaded["model"])
        opt.load_state_dict(loaded["optimizer"])


def workload_model(name: str) -> torch.nn.Module:
    return build_workload(name, seed=0).model


def checkpoints() -> list[Checkpoint]:
    out = []
    for name in list_workloads():
        work = build_workload(name, seed=0)
        x, _ = next(iter(work.train_loader))
        out.append(Checkpoint.of(name, partial(workload_model, name), x))

    def big() -> torch.nn.Module:
        return torch.nn.Sequential(
            *[torch.nn.Linear(BIG_WIDTH, BIG_WIDTH) for _ in range(BIG_LAYERS)]
        )

    out.append(Checkpoint.of("100 MB model", big, torch.randn(2, BIG_WIDTH)))
    return out


class Store:
    """Where checkpoints go: the artifact store on one database and store, or a local file."""

    def __init__(self, name: str, settings: Settings | None, folder: Path) -> None:
        self.name = name
        self.settings = settings
        self.path = folder / f"{name}.pt"
        self.job: Job | None = None
        if settings is not None:
            self.engine = make_engine(settings)
            self.factory = make_session_factory(self.engine)
            with session_scope(self.factory) as session:
                team = Team(name=f"bench-{uuid.uuid4().hex[:8]}")
                session.add(team)
                session.flush()
                self.job = Job(
                    team_id=team.id,
                    kind="range_test",
                    spec={"workload": "digits_mlp"},
                    config_key="bench",
                    status=JobStatus.RUNNING,
                    attempt=1,
                    max_attempts=1,
                    total=1,
                )
                session.add(self.job)

    def write(self, state: dict[str, Any], chunk_size: int = ARTIFACT_CHUNK_BYTES) -> int:
        if self.settings is None or self.job is None:
            torch.save(state, self.path)
            return self.path.stat().st_size
        with open_artifact_writer(
            self.factory,
            self.settings,
            job_id=self.job.id,
            attempt=1,
            name="checkpoint",
            chunk_size=chunk_size,
        ) as writer:
            torch.save(state, writer)
        assert writer.published
        return writer.size

    def read(self) -> dict[str, Any]:
        if self.settings is None or self.job is None:
            loaded: dict[str, Any] = torch.load(self.path)
            return loaded
        with open_artifact_reader(
            self.factory, self.settings, job_id=self.job.id, name="checkpoint"
        ) as f:
            loaded = torch.load(f)
        return loaded

    def close(self) -> None:
        if self.settings is not None:
            self.engine.dispose()


@contextmanager
def stores(admin_url: str, folder: Path, *, sqlite: bool) -> Iterator[list[Store]]:
    url = create_database(admin_url, BENCH_DATABASE)
    shared = folder / "shared"
    shared.mkdir()
    with ExitStack() as stack:
        stack.callback(drop_database, admin_url, BENCH_DATABASE)
        made = [Store("local", None, folder)]
        made.append(Store("postgres", Settings(_env_file=None, database_url=url), folder))
        made.append(
            Store("dir", Settings(_env_file=None, database_url=url, artifact_dir=shared), folder)
        )
        if sqlite:
            embedded = Settings(_env_file=None, data_dir=folder / "embedded")
            upgrade(embedded)
            made.append(Store("sqlite", embedded, folder))
        for store in made:
            stack.callback(store.close)
        yield made


def timed(run: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    value = run()
    return time.perf_counter() - t0, value


def resume(store: Store, checkpoint: Checkpoint) -> None:
    checkpoint.resume(store.read())


def measure(made: list[Store], checkpoint: Checkpoint, repeats: int) -> None:
    writes: dict[str, list[float]] = {s.name: [] for s in made}
    resumes: dict[str, list[float]] = {s.name: [] for s in made}
    if checkpoint.name in list_workloads():
        # warm-up on the small ones (connections, first allocations); the big one
        # would only pay its size again
        for store in made:
            store.write(checkpoint.state)
            checkpoint.resume(store.read())
    for _ in range(repeats):
        for store in made:
            seconds, size = timed(partial(store.write, checkpoint.state))
            writes[store.name].append(seconds)
            checkpoint.size = size
            seconds, _ = timed(partial(resume, store, checkpoint))
            resumes[store.name].append(seconds)
    mb = checkpoint.size / 1e6
    base_w, base_r = statistics.median(writes["local"]), statistics.median(resumes["local"])
    for store in made:
        w, r = statistics.median(writes[store.name]), statistics.median(resumes[store.name])
        print(
            f"{checkpoint.name:<14} {mb:9.3f} {store.name:<9} "
            f"{w:9.4f} {mb / w:8.1f} {w / base_w:6.2f}   "
            f"{r:9.4f} {mb / r:8.1f} {r / base_r:6.2f}"
        )


def chunk_sweep(made: list[Store], checkpoint: Checkpoint, repeats: int) -> None:
    postgres = next(s for s in made if s.name == "postgres")
    print(f"\nchunk size sweep, {checkpoint.name}, PostgreSQL store, median of {repeats}")
    print(f"{'chunk MiB':>9} {'write s':>9} {'MB/s':>8} {'read s':>9} {'MB/s':>8}")
    for mib in (1, 2, 4, 8, 16):
        w_times, r_times = [], []
        for _ in range(repeats):
            seconds, size = timed(partial(postgres.write, checkpoint.state, mib * 2**20))
            w_times.append(seconds)
            seconds, _ = timed(postgres.read)
            r_times.append(seconds)
        mb = size / 1e6
        w, r = statistics.median(w_times), statistics.median(r_times)
        print(f"{mib:9d} {w:9.3f} {mb / w:8.1f} {r:9.3f} {mb / r:8.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--admin-url", default=ADMIN_URL)
    parser.add_argument("--no-sqlite", action="store_true", help="skip the embedded store")
    parser.add_argument("--chunk-sweep", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    made_checkpoints = checkpoints()
    print(
        f"checkpoint write (torch.save) and resume (torch.load + load_state_dict) through the "
        f"artifact store, {ARTIFACT_CHUNK_BYTES >> 20} MiB chunks, median of {args.repeats}; "
        "ratio = store / local file"
    )
    print(
        f"{'checkpoint':<14} {'MB':>9} {'store':<9} "
        f"{'write s':>9} {'MB/s':>8} {'ratio':>6}   {'resume s':>9} {'MB/s':>8} {'ratio':>6}"
    )
    with (
        tempfile.TemporaryDirectory() as tmp,
        stores(args.admin_url, Path(tmp), sqlite=not args.no_sqlite) as made,
    ):
        for checkpoint in made_checkpoints:
            measure(made, checkpoint, args.repeats)
        if args.chunk_sweep:
            chunk_sweep(made, made_checkpoints[-1], args.repeats)


if __name__ == "__main__":
    main()
