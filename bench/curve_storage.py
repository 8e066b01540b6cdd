"""Curve storage: write a 10,000-point curve in chunks and read it back.

Writes go through ``services.report_progress``, one transaction per chunk as a
worker sends them (a few a second); reads through ``services.read_curve``, the
whole curve and the newest chunk (``after=``, what a polling client asks for).
On a SQLite file and, when it is reachable, on a scratch PostgreSQL database
created and dropped here. Medians (and minimums) over repeats, one run.

    python -m bench.curve_storage [--points 10000] [--chunk 250] [--repeats 5]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg
from alembic import command
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.db import create_db_engine, make_session_factory, session_scope, set_job_sender
from core.migrate import alembic_config
from core.models import Team
from core.services import claim_job, create_team, read_curve, report_progress, submit_job
from core.settings import Settings
from core.specs import CurvePoints


@dataclass
class Timings:
    write_s: list[float]
    read_all_s: list[float]
    read_tail_s: list[float]


def points(start: int, size: int) -> CurvePoints:
    idx = range(start, start + size)
    return CurvePoints(
        start=start,
        lrs=[1e-6 * 1.0014**i for i in idx],
        losses=[2.3 - i * 1e-4 for i in idx],
        smoothed_losses=[2.3 - i * 9e-5 for i in idx],
        accuracies=[min(1.0, i * 1e-4) for i in idx],
    )


def run_once(
    factory: sessionmaker[Session], team: Team, settings: Settings, n_points: int, chunk: int
) -> tuple[float, float, float]:
    spec = {"workload": "digits_mlp", "num_iter": n_points}
    with session_scope(factory) as session:
        job = submit_job(session, team=team, kind="range_test", spec=spec, settings=settings)
    with session_scope(factory) as session:
        claimed = claim_job(session, job_id=job.id, worker="bench")
        assert claimed is not None
    chunks = [points(start, min(chunk, n_points - start)) for start in range(0, n_points, chunk)]
    t0 = time.perf_counter()
    for piece in chunks:
        with session_scope(factory) as session:
            ack = report_progress(session, job_id=job.id, attempt=1, **curve(piece))
            assert ack.accepted
    write = time.perf_counter() - t0
    t0 = time.perf_counter()
    with session_scope(factory) as session:
        curve = read_curve(session, team=team, job_id=job.id)
    read_all = time.perf_counter() - t0
    assert len(curve.lrs) == n_points
    t0 = time.perf_counter()
    with session_scope(factory) as session:
        tail = read_curve(session, team=team, job_id=job.id, after=n_points - chunk)
    read_tail = time.perf_counter() - t0
    assert len(tail.lrs) == chunk
    return write, read_all, read_tail


def measure(engine: Engine, settings: Settings, args: argparse.Namespace) -> Timings:
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        team = create_team(session, name=f"bench-{uuid.uuid4().hex[:8]}")
    run_once(factory, team, settings, args.points, args.chunk)  # warm-up
    timings = Timings([], [], [])
    for _ in range(args.repeats):
        write, read_all, read_tail = run_once(factory, team, settings, args.points, args.chunk)
        timings.write_s.append(write)
        timings.read_all_s.append(read_all)
        timings.read_tail_s.append(read_tail)
    return timings


def migrated_engine(url: str) -> Engine:
    command.upgrade(alembic_config(url), "head")
    return create_db_engine(url)


def report(name: str, timings: Timings, args: argparse.Namespace) -> None:
    n_chunks = -(-args.points // args.chunk)

    def fmt(values: list[float]) -> str:
        return f"{statistics.median(values) * 1e3:8.1f} ms (min {min(values) * 1e3:.1f})"

    print(f"{name}:")
    print(
        f"  write {args.points} points in {n_chunks} chunks: {fmt(timings.write_s)}"
        f"  = {statistics.median(timings.write_s) / n_chunks * 1e3:.2f} ms per chunk"
    )
    print(f"  read the whole curve:            {fmt(timings.read_all_s)}")
    print(f"  read the newest chunk (after=):  {fmt(timings.read_tail_s)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    sent: list[uuid.UUID] = []
    set_job_sender(lambda job_id, _kind, _device: sent.append(job_id))  # no broker here
    print(
        f"curve storage: {args.points} points, chunks of {args.chunk}, "
        f"median of {args.repeats} runs (after one warm-up)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(_env_file=None, data_dir=Path(tmp))
        engine = migrated_engine(f"sqlite:///{tmp}/bench.db")
        try:
            report("SQLite (file, WAL)", measure(engine, settings, args), args)
        finally:
            engine.dispose()

        admin = make_url(args.postgres).set(drivername="postgresql")
        name = f"clr_bench_{uuid.uuid4().hex[:8]}"
        try:
            conn = psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True)
        except psycopg.OperationalError as exc:
            print(f"PostgreSQL: skipped ({str(exc).strip().splitlines()[0]})")
            return
        with conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            try:
                url = make_url(args.postgres).set(database=name)
                engine = migrated_engine(url.render_as_string(hide_password=False))
                try:
                    report("PostgreSQL (JSONB)", measure(engine, settings, args), args)
                finally:
                    engine.dispose()
            finally:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


if __name__ == "__main__":
    main()
