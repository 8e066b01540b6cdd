"""Series storage: a 100,000-point series written in reports, read back whole and near its end.

What a range test's ``curve`` (4 fields a point) costs in the database, the way
the service stores it: a worker's reports of 500 points, one transaction each,
through ``services.report_progress``; then ``services.read_series`` of the whole
series and of the points after an index near its end (what ``?after=`` asks a
follower's poll for). Then why the points are packed float64 columns: the same
reports stored as rows of packed columns (the layout :mod:`core.series` uses)
and as rows of one JSON document of lists each (the curve chunks' layout before,
JSONB on PostgreSQL), written and read the same way through plain SQL on two
scratch tables, and the bytes each stores.

On a SQLite file and, when it is reachable, a scratch PostgreSQL database
created and dropped here. Medians over repeats after one warm-up, one run; the
layouts' ratios are JSON / packed.

    python -m bench.series_storage [--points 100000] [--report 500] [--repeats 3]
        [--postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import struct
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from alembic import command
from psycopg import sql
from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from core.db import create_db_engine, make_session_factory, session_scope, set_job_sender
from core.kinds import CURVE
from core.migrate import alembic_config
from core.models import Team
from core.series import SeriesPoints, decode_values, encode_values
from core.services import claim_job, create_team, read_series, report_progress, submit_job
from core.settings import Settings

OLD_KEYS = {
    "lr": "lrs",
    "loss": "losses",
    "smoothed_loss": "smoothed_losses",
    "accuracy": "accuracies",
}
"""The JSON curve chunks' keys for the curve's fields."""

Values = dict[str, list[float] | None]


def make_reports(n_points: int, size: int) -> list[SeriesPoints]:
    """The curve of an ``n_points``-step sweep, in reports of ``size`` points.

    Like a real one: the LR is computed in float64, the losses and the accuracy
    are float32 values (what ``tensor.item()`` gives), noisy, so that their
    decimal text has as many digits as a real curve's.
    """
    rng = random.Random(0)
    reports = []
    smoothed = 2.3
    for start in range(0, n_points, size):
        idx = range(start, min(start + size, n_points))
        lrs, losses, smoothed_losses, accuracies = [], [], [], []
        for i in idx:
            loss = _float32(2.3 * math.exp(-i / n_points) + rng.gauss(0.0, 0.05))
            smoothed = 0.98 * smoothed + 0.02 * loss
            lrs.append(1e-6 * (1e7 ** (1 / n_points)) ** i)
            losses.append(loss)
            smoothed_losses.append(_float32(smoothed))
            accuracies.append(_float32(min(1.0, max(0.0, i / n_points + rng.gauss(0.0, 0.02)))))
        reports.append(
            SeriesPoints.of(
                CURVE,
                start,
                {
                    "lr": lrs,
                    "loss": losses,
                    "smoothed_loss": smoothed_losses,
                    "accuracy": accuracies,
                },
            )
        )
    return reports


def _float32(value: float) -> float:
    return float(struct.unpack("f", struct.pack("f", value))[0])


@dataclass
class Timings:
    """Seconds per repeat of each operation."""

    write: list[float] = field(default_factory=list)
    read_all: list[float] = field(default_factory=list)
    read_tail: list[float] = field(default_factory=list)
    read_end: list[float] = field(default_factory=list)

    def add(self, write: float, read_all: float, read_tail: float, read_end: float) -> None:
        self.write.append(write)
        self.read_all.append(read_all)
        self.read_tail.append(read_tail)
        self.read_end.append(read_end)


def check(values: Values, reports: Sequence[SeriesPoints], after: int) -> None:
    """``values`` are the reported points from index ``after`` on."""
    n_points = reports[-1].start + reports[-1].size
    lrs = values["lr"]
    assert lrs is not None
    assert len(lrs) == n_points - after, (len(lrs), n_points - after)
    last = reports[-1].values["lr"]
    assert last is not None
    assert lrs[-1] == last[-1]


# --------------------------------------------------------------------------- the service


def service_once(
    factory: sessionmaker[Session],
    team: Team,
    settings: Settings,
    reports: Sequence[SeriesPoints],
    afters: tuple[int, int],
) -> tuple[float, float, float, float]:
    """One range test: claim, the reports through ``report_progress``, the reads."""
    n_points = reports[-1].start + reports[-1].size
    spec = {"workload": "digits_mlp", "num_iter": min(n_points, 100_000)}
    with session_scope(factory) as session:
        job_id = submit_job(
            session, team=team, kind="range_test", spec=spec, settings=settings
        ).job.id
    with session_scope(factory) as session:
        if claim_job(session, job_id=job_id, worker="bench") is None:
            raise RuntimeError(f"could not claim {job_id}")
    t0 = time.perf_counter()
    for points in reports:
        with session_scope(factory) as session:
            ack = report_progress(
                session,
                job_id=job_id,
                attempt=1,
                points=[points],
                progress=points.start + points.size,
            )
            assert ack.accepted
    write = time.perf_counter() - t0
    reads = []
    for after in (0, *afters):
        t0 = time.perf_counter()
        with session_scope(factory) as session:
            got = read_series(session, team=team, job_id=job_id, name="curve", after=after)
        reads.append(time.perf_counter() - t0)
        check(got.values, reports, after)
        del got  # freeing 400,000 floats is not the next read's time
    return write, reads[0], reads[1], reads[2]


def measure_service(
    engine: Engine, settings: Settings, reports: Sequence[SeriesPoints], args: argparse.Namespace
) -> Timings:
    factory = make_session_factory(engine)
    with session_scope(factory) as session:
        team = create_team(session, name=f"bench-{uuid.uuid4().hex[:8]}")
    afters = tail_indexes(reports, args)
    service_once(factory, team, settings, reports, afters)  # warm-up
    timings = Timings()
    for _ in range(args.repeats):
        timings.add(*service_once(factory, team, settings, reports, afters))
    return timings


# --------------------------------------------------------------------------- the layouts

_METADATA = sa.MetaData()
_JSON = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _chunk_table(name: str, data: sa.types.TypeEngine[Any]) -> sa.Table:
    return sa.Table(
        name,
        _METADATA,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("job", sa.Integer, nullable=False),
        sa.Column("start", sa.Integer, nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("data", data, nullable=False),
        sa.UniqueConstraint("job", "start"),
    )


PACKED = _chunk_table("bench_packed_chunks", sa.LargeBinary())
JSON_DOCS = _chunk_table("bench_json_chunks", _JSON)


def pack(points: SeriesPoints) -> bytes:
    return encode_values(CURVE.fields, points.values)


def unpack(rows: Sequence[Any], after: int) -> Values:
    values: Values = {f: [] for f in CURVE.fields}
    for row in rows:
        decoded = decode_values(CURVE.fields, row.data, row.size, skip=max(0, after - row.start))
        for name, column in decoded.items():
            held = values[name]
            if held is not None and column is not None:
                held.extend(column)
    return values


def as_document(points: SeriesPoints) -> dict[str, Any]:
    return {OLD_KEYS[name]: column for name, column in points.values.items()}


def from_documents(rows: Sequence[Any], after: int) -> Values:
    values: Values = {f: [] for f in CURVE.fields}
    for row in rows:
        skip = max(0, after - row.start)
        for name in CURVE.fields:
            held, column = values[name], row.data[OLD_KEYS[name]]
            if held is not None and column is not None:
                held.extend(column[skip:])
    return values


@dataclass(frozen=True)
class Layout:
    name: str
    table: sa.Table
    encode: Callable[[SeriesPoints], Any]
    decode: Callable[[Sequence[Any], int], Values]


LAYOUTS = (
    Layout("packed float64", PACKED, pack, unpack),
    Layout("JSON lists", JSON_DOCS, as_document, from_documents),
)


def layout_once(
    engine: Engine,
    layout: Layout,
    job: int,
    reports: Sequence[SeriesPoints],
    afters: tuple[int, int],
) -> tuple[float, float, float, float]:
    """The reports as rows of ``layout``, a transaction each; then the reads."""
    table = layout.table
    t0 = time.perf_counter()
    for points in reports:
        with engine.begin() as conn:
            conn.execute(
                table.insert().values(
                    job=job, start=points.start, size=points.size, data=layout.encode(points)
                )
            )
    write = time.perf_counter() - t0
    reads = []
    for after in (0, *afters):
        t0 = time.perf_counter()
        with engine.connect() as conn:
            rows = conn.execute(
                sa.select(table.c.start, table.c.size, table.c.data)
                .where(table.c.job == job, table.c.start + table.c.size > after)
                .order_by(table.c.start)
            ).all()
            values = layout.decode(rows, after)
        reads.append(time.perf_counter() - t0)
        check(values, reports, after)
        del rows, values  # freeing them is not the next read's time
    return write, reads[0], reads[1], reads[2]


def stored_bytes(engine: Engine, layout: Layout, job: int) -> int:
    """Bytes of one series' ``data`` as the database stores them (compressed, if it does)."""
    size = sa.func.pg_column_size if engine.dialect.name == "postgresql" else sa.func.length
    data: sa.ColumnElement[Any] = layout.table.c.data
    if engine.dialect.name == "sqlite" and layout.table is JSON_DOCS:
        data = sa.cast(data, sa.Text)  # JSON is stored as text: count its bytes
    stmt = sa.select(sa.func.sum(size(data))).where(layout.table.c.job == job)
    with engine.connect() as conn:
        return int(conn.execute(stmt).scalar_one())


def measure_layouts(
    engine: Engine, reports: Sequence[SeriesPoints], args: argparse.Namespace
) -> dict[str, tuple[Timings, int]]:
    """Each layout's timings, interleaved repeat by repeat, and one series' stored bytes."""
    _METADATA.create_all(engine)
    afters = tail_indexes(reports, args)
    out = {layout.name: (Timings(), 0) for layout in LAYOUTS}
    for layout in LAYOUTS:
        layout_once(engine, layout, 0, reports, afters)  # warm-up
        out[layout.name] = (Timings(), stored_bytes(engine, layout, 0))
    for job in range(1, args.repeats + 1):
        for layout in LAYOUTS:
            out[layout.name][0].add(*layout_once(engine, layout, job, reports, afters))
    return out


# --------------------------------------------------------------------------- output


def tail_indexes(reports: Sequence[SeriesPoints], args: argparse.Namespace) -> tuple[int, int]:
    """Where the two tail reads start: the newest report, and the last 10 points."""
    n_points = reports[-1].start + reports[-1].size
    return max(0, n_points - args.report), max(0, n_points - 10)


def ms(values: list[float], per: int = 1) -> str:
    return f"{statistics.median(values) / per * 1e3:.2f} ms"


HEADER = (
    f"  {'':<16} {'write a report':>14} {'read whole':>12} {'after=n-R':>12} {'after=n-10':>12}"
)


def print_timings(label: str, timings: Timings, n_reports: int) -> None:
    print(
        f"  {label:<16} {ms(timings.write, n_reports):>14} {ms(timings.read_all):>12} "
        f"{ms(timings.read_tail):>12} {ms(timings.read_end):>12}"
    )


def print_ratio(packed: Timings, json_docs: Timings) -> None:
    def ratio(a: list[float], b: list[float]) -> str:
        return f"{statistics.median(b) / statistics.median(a):.2f}x"

    print(
        f"  {'JSON / packed':<16} {ratio(packed.write, json_docs.write):>14} "
        f"{ratio(packed.read_all, json_docs.read_all):>12} "
        f"{ratio(packed.read_tail, json_docs.read_tail):>12} "
        f"{ratio(packed.read_end, json_docs.read_end):>12}"
    )


def run_on(
    name: str,
    engine: Engine,
    settings: Settings,
    reports: Sequence[SeriesPoints],
    args: argparse.Namespace,
) -> None:
    n_reports = len(reports)
    print(f"{name}:")
    print(HEADER)
    print_timings("service", measure_service(engine, settings, reports, args), n_reports)
    layouts = measure_layouts(engine, reports, args)
    (packed, packed_bytes), (json_docs, json_bytes) = (layouts[x.name] for x in LAYOUTS)
    print_timings("packed float64", packed, n_reports)
    print_timings("JSON lists", json_docs, n_reports)
    print_ratio(packed, json_docs)
    print(
        f"  stored: packed {packed_bytes / 2**20:.2f} MiB, JSON {json_bytes / 2**20:.2f} MiB "
        f"({json_bytes / packed_bytes:.2f}x)"
    )


def migrated_engine(url: str) -> Engine:
    command.upgrade(alembic_config(url), "head")
    return create_db_engine(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--report", type=int, default=500, help="points per report")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--postgres", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
    )
    args = parser.parse_args()
    if not 10 <= args.report <= args.points:
        parser.error("--report must be between 10 and --points")
    sent: list[uuid.UUID] = []
    set_job_sender(lambda job_id, _kind, _device: sent.append(job_id))  # no broker here
    reports = make_reports(args.points, args.report)
    print(
        f"series storage: {args.points} points of {len(CURVE.fields)} fields in "
        f"{len(reports)} reports of {args.report}, one transaction each; median of "
        f"{args.repeats} runs after one warm-up; R = {args.report}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        # no estimate cap: the sweep's length is only the series' length here
        settings = Settings(_env_file=None, data_dir=Path(tmp), max_job_seconds=0)
        engine = migrated_engine(f"sqlite:///{tmp}/bench.db")
        try:
            run_on("SQLite (file)", engine, settings, reports, args)
        finally:
            engine.dispose()

        admin = make_url(args.postgres).set(drivername="postgresql")
        name = f"clr_bench_series_{uuid.uuid4().hex[:8]}"
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
                    run_on("PostgreSQL", engine, settings, reports, args)
                finally:
                    engine.dispose()
            finally:
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )


if __name__ == "__main__":
    main()
