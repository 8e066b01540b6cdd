"""Job series on both databases: points appended in order, read whole or from an
index, and kept up to the checkpoint when a resumable job's next attempt starts.

A toy kind stands for a training here: resumable, with two series (one point per
iteration, one per epoch, the latter with an optional field).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Iterator, Sequence
from datetime import timedelta
from typing import Any, ClassVar

import pytest
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from core.errors import InvalidInput
from core.kinds import JobKind, registered_kind
from core.models import Job, JobStatus, SeriesChunk, Team
from core.repositories import JobRepository
from core.series import MAX_POINTS_PER_REPORT, SeriesPoints, SeriesSpec
from core.services import (
    JobUpdate,
    SeriesSlice,
    claim_job,
    finish_job,
    poll_job,
    read_series,
    reconcile,
    record_checkpoint,
    report_progress,
)
from core.services.jobs import series_of_jobs
from core.settings import Settings
from core.specs import JobResult, JobSpec
from tests.builders import T0, curve, make_job, make_points, make_team

ITERATIONS = SeriesSpec(name="iterations", fields=("lr", "momentum", "loss"))
EPOCHS = SeriesSpec(
    name="epochs",
    fields=("train_loss", "val_loss", "val_accuracy"),
    optional=frozenset({"val_accuracy"}),
)


class ToySpec(JobSpec):
    """A made-up training: ``steps`` iterations."""

    kind: ClassVar[str] = "toy_training"
    steps: int = Field(default=100, ge=1)

    def config_key(self) -> str:
        return hashlib.sha256(f"toy:{self.steps}".encode()).hexdigest()

    def total_steps(self) -> int:
        return self.steps


class ToyResult(JobResult):
    final_loss: float


TOY = JobKind(
    name=ToySpec.kind,
    noun="toy-trainings",
    title="toy training",
    spec=ToySpec,
    result=ToyResult,
    runner="tests.core.services.test_series:never_run",  # never imported: no worker here
    series=(ITERATIONS, EPOCHS),
    resumable=True,
)


@pytest.fixture(autouse=True)
def toy_kind() -> Iterator[JobKind]:
    with registered_kind(TOY) as kind:
        yield kind


def iterations(start: int, size: int, *, attempt: int = 1) -> SeriesPoints:
    """Iteration points whose loss says which attempt wrote them (``attempt * 1000 + i``)."""
    idx = range(start, start + size)
    return SeriesPoints.of(
        ITERATIONS,
        start,
        {
            "lr": [0.01 * (1 + i) for i in idx],
            "momentum": [0.9 - i / 1000 for i in idx],
            "loss": [attempt * 1000.0 + i for i in idx],
        },
    )


def epochs(start: int, size: int, *, accuracy: bool = True) -> SeriesPoints:
    idx = range(start, start + size)
    return SeriesPoints.of(
        EPOCHS,
        start,
        {
            "train_loss": [1.0 / (1 + i) for i in idx],
            "val_loss": [1.5 / (1 + i) for i in idx],
            "val_accuracy": [i / 10 for i in idx] if accuracy else None,
        },
    )


def losses(start: int, attempts: Sequence[int]) -> list[float]:
    """The ``loss`` column of points from ``start`` on written by ``attempts`` (one each)."""
    return [a * 1000.0 + i for i, a in enumerate(attempts, start=start)]


def toy_job(session: Session, *, team: Team | None = None, steps: int = 100) -> Job:
    """A toy training claimed by ``gpu-0`` at T0 (attempt 1)."""
    job = make_job(session, team=team, kind=TOY.name, spec={"steps": steps})
    claimed = claim_job(session, job_id=job.id, worker="gpu-0", now=T0)
    assert claimed is not None
    return claimed


def chunks(session: Session, job_id: uuid.UUID) -> list[tuple[str, int, int, int]]:
    """``(name, attempt, start, size)`` of the job's stored chunks, in order."""
    rows = session.scalars(
        select(SeriesChunk)
        .where(SeriesChunk.job_id == job_id)
        .order_by(SeriesChunk.name, SeriesChunk.start)
    )
    return [(c.name, c.attempt, c.start, c.size) for c in rows]


def state(session: Session, job_id: uuid.UUID) -> Job:
    session.expire_all()
    job = session.get(Job, job_id)
    assert job is not None
    return job


def read(session: Session, team: Team, job_id: uuid.UUID, name: str, after: int = 0) -> SeriesSlice:
    return read_series(session, team=team, job_id=job_id, name=name, after=after)


class TestAppend:
    def test_points_of_several_series_are_appended_in_order(self, session: Session) -> None:
        team = make_team(session)
        job = toy_job(session, team=team)
        reports = [
            [iterations(0, 4), epochs(0, 1)],
            [iterations(4, 3)],
            # two runs of one series in one report, the second following the first
            [iterations(7, 2), iterations(9, 1), epochs(1, 1)],
        ]
        for points in reports:
            ack = report_progress(session, job_id=job.id, attempt=1, points=points)
            assert ack.accepted
        assert state(session, job.id).series_points == {"iterations": 10, "epochs": 2}
        assert chunks(session, job.id) == [
            ("epochs", 1, 0, 1),
            ("epochs", 1, 1, 1),
            ("iterations", 1, 0, 4),
            ("iterations", 1, 4, 3),
            ("iterations", 1, 7, 2),
            ("iterations", 1, 9, 1),
        ]
        assert read(session, team, job.id, "iterations").values == iterations(0, 10).values
        assert read(session, team, job.id, "epochs").values == epochs(0, 2).values

    @pytest.mark.parametrize(
        ("start", "size"),
        [(5, 1), (3, 2)],  # a gap after the 4 stored; an overlap of the last stored
    )
    def test_a_gap_or_an_overlap_is_an_error_and_nothing_of_the_report_is_stored(
        self, session: Session, start: int, size: int
    ) -> None:
        job = toy_job(session)
        report_progress(session, job_id=job.id, attempt=1, points=[iterations(0, 4)], progress=4)
        with pytest.raises(ValueError, match="do not follow the 4 stored") as info:
            report_progress(
                session,
                job_id=job.id,
                attempt=1,
                points=[epochs(0, 1), iterations(start, size)],
                progress=9,
            )
        assert f"points {start} to {start + size - 1} of series 'iterations'" in str(info.value)
        stored = state(session, job.id)
        assert (stored.series_points, stored.progress) == ({"iterations": 4}, 4)
        assert chunks(session, job.id) == [("iterations", 1, 0, 4)]

    def test_a_replayed_run_is_accepted_once(self, session: Session) -> None:
        team = make_team(session)
        job = toy_job(session, team=team)
        for _ in range(2):  # a retried report: its transaction committed, its answer got lost
            ack = report_progress(session, job_id=job.id, attempt=1, points=[iterations(0, 4)])
            assert ack.accepted
        # a report that repeats a stored run and brings a new one stores the new one
        ack = report_progress(
            session, job_id=job.id, attempt=1, points=[iterations(0, 4), epochs(0, 1)]
        )
        assert ack.accepted
        assert chunks(session, job.id) == [("epochs", 1, 0, 1), ("iterations", 1, 0, 4)]
        assert state(session, job.id).series_points == {"iterations": 4, "epochs": 1}
        assert read(session, team, job.id, "iterations").values == iterations(0, 4).values

    @pytest.mark.parametrize("attempt", [0, 2])
    def test_a_stale_attempts_points_are_refused_and_change_nothing(
        self, session: Session, attempt: int
    ) -> None:
        job = toy_job(session)
        report_progress(session, job_id=job.id, attempt=1, points=[iterations(0, 2)], progress=2)
        ack = report_progress(
            session, job_id=job.id, attempt=attempt, points=[iterations(2, 2)], progress=4
        )
        assert (ack.accepted, ack.should_stop) == (False, True)
        stored = state(session, job.id)
        assert (stored.series_points, stored.progress) == ({"iterations": 2}, 2)
        assert chunks(session, job.id) == [("iterations", 1, 0, 2)]

    def test_a_finished_jobs_points_are_refused(self, session: Session) -> None:
        job = toy_job(session)
        finish_job(session, job_id=job.id, attempt=1, result={"final_loss": 0.1})
        ack = report_progress(session, job_id=job.id, attempt=1, points=[iterations(0, 2)])
        assert not ack.accepted
        assert chunks(session, job.id) == []

    def test_a_series_the_kind_does_not_have_is_an_error(self, session: Session) -> None:
        job = toy_job(session)
        with pytest.raises(ValueError, match="kind 'toy_training' have no series 'curve'"):
            report_progress(session, job_id=job.id, attempt=1, **curve(make_points(0, 2)))
        assert chunks(session, job.id) == []

    def test_progress_is_set_independently_of_the_point_counts(self, session: Session) -> None:
        job = toy_job(session)
        # progress alone (a step with no point to report)
        report_progress(session, job_id=job.id, attempt=1, progress=3)
        assert (state(session, job.id).progress, state(session, job.id).series_points) == (3, {})
        # points alone leave progress as it is
        report_progress(session, job_id=job.id, attempt=1, points=[iterations(0, 5)])
        assert (state(session, job.id).progress, state(session, job.id).series_points) == (
            3,
            {"iterations": 5},
        )
        # both, and progress need not match any count
        report_progress(session, job_id=job.id, attempt=1, points=[epochs(0, 1)], progress=50)
        stored = state(session, job.id)
        assert (stored.progress, stored.series_points) == (50, {"iterations": 5, "epochs": 1})

    def test_a_negative_progress_is_an_error(self, session: Session) -> None:
        job = toy_job(session)
        with pytest.raises(ValueError, match="progress must be >= 0, got -1"):
            report_progress(session, job_id=job.id, attempt=1, progress=-1)


class TestRead:
    @pytest.fixture
    def written(self, session: Session) -> tuple[Team, Job]:
        """A toy training with 25 iteration points in chunks of 10, 10 and 5."""
        team = make_team(session)
        job = toy_job(session, team=team)
        for start, size in ((0, 10), (10, 10), (20, 5)):
            report_progress(session, job_id=job.id, attempt=1, points=[iterations(start, size)])
        return team, job

    def test_whole(self, session: Session, written: tuple[Team, Job]) -> None:
        team, job = written
        got = read(session, team, job.id, "iterations")
        assert (got.name, got.fields, got.attempt, got.status) == (
            "iterations",
            ITERATIONS.fields,
            1,
            JobStatus.RUNNING,
        )
        assert (got.start, got.size, got.points, got.next_after, got.total) == (0, 25, 25, 25, 100)
        assert got.values == iterations(0, 25).values
        assert got.column("loss") == losses(0, [1] * 25)

    @pytest.mark.parametrize(
        "after",
        [
            1,  # in the middle of the first chunk
            10,  # at a chunk boundary
            15,  # in the middle of the second chunk
            19,  # the last point of a chunk
            24,  # the last point
        ],
    )
    def test_after_an_index(self, session: Session, written: tuple[Team, Job], after: int) -> None:
        team, job = written
        got = read(session, team, job.id, "iterations", after=after)
        assert (got.start, got.size, got.points, got.next_after) == (after, 25 - after, 25, 25)
        assert got.values == iterations(after, 25 - after).values

    @pytest.mark.parametrize("after", [25, 40])
    def test_after_the_last_point_is_empty(
        self, session: Session, written: tuple[Team, Job], after: int
    ) -> None:
        team, job = written
        got = read(session, team, job.id, "iterations", after=after)
        assert (got.start, got.size, got.points) == (after, 0, 25)
        assert got.values == {"lr": [], "momentum": [], "loss": []}

    def test_a_series_with_no_points_yet(self, session: Session, written: tuple[Team, Job]) -> None:
        team, job = written
        got = read(session, team, job.id, "epochs")
        assert (got.size, got.points) == (0, 0)
        # an optional field has no values until points say otherwise
        assert got.values == {"train_loss": [], "val_loss": [], "val_accuracy": None}

    def test_several_jobs_at_once_read_as_each_alone(
        self, session: Session, written: tuple[Team, Job]
    ) -> None:
        team, job = written
        other = toy_job(session, team=team)
        report_progress(session, job_id=other.id, attempt=1, points=[iterations(0, 7)])
        empty = toy_job(session, team=team)
        jobs = [session.get(Job, j.id) for j in (job, other, empty)]
        got = series_of_jobs(session, [j for j in jobs if j is not None], "iterations")
        assert list(got) == [job.id, other.id, empty.id]
        for job_id, one in got.items():
            assert one == read(session, team, job_id, "iterations")
        assert (got[job.id].size, got[other.id].size, got[empty.id].size) == (25, 7, 0)

    def test_null_optional_fields(self, session: Session) -> None:
        team = make_team(session)
        job = toy_job(session, team=team)
        for start in (0, 2):
            report_progress(
                session, job_id=job.id, attempt=1, points=[epochs(start, 2, accuracy=False)]
            )
        for after in (0, 1, 3):
            got = read(session, team, job.id, "epochs", after=after)
            assert got.column("val_accuracy") is None
            assert got.values == epochs(after, 4 - after, accuracy=False).values
        with_accuracy = toy_job(session, team=team)
        report_progress(session, job_id=with_accuracy.id, attempt=1, points=[epochs(0, 3)])
        got = read(session, team, with_accuracy.id, "epochs", after=1)
        assert got.column("val_accuracy") == [0.1, 0.2]

    def test_values_come_back_exactly(self, session: Session) -> None:
        # packed float64: no decimal round trip, whatever the magnitude or sign
        team = make_team(session)
        job = toy_job(session, team=team)
        odd = [0.1, 1 / 3, -0.0, 5e-324, 1.7976931348623157e308, -2.5e-300, 123456789.123456789]
        values = {"lr": odd, "momentum": odd[::-1], "loss": [float(i) for i in range(7)]}
        report_progress(
            session, job_id=job.id, attempt=1, points=[SeriesPoints.of(ITERATIONS, 0, values)]
        )
        got = read(session, team, job.id, "iterations")
        assert got.values == values
        assert math.copysign(1.0, (got.column("lr") or [])[2]) == -1.0

    def test_a_series_the_kind_does_not_have_is_invalid_naming_those_it_has(
        self, session: Session, written: tuple[Team, Job]
    ) -> None:
        team, job = written
        with pytest.raises(InvalidInput) as info:
            read(session, team, job.id, "curve")
        assert info.value.errors == [
            {
                "field": "name",
                "reason": "toy training jobs have no series 'curve'; "
                "their series: iterations, epochs",
            }
        ]

    def test_a_negative_index_is_invalid(self, session: Session, written: tuple[Team, Job]) -> None:
        team, job = written
        with pytest.raises(InvalidInput) as info:
            read(session, team, job.id, "iterations", after=-1)
        assert info.value.errors == [{"field": "after", "reason": "must be >= 0, got -1"}]


class TestSeriesPointsOf:
    def test_checks_and_keeps_every_field(self) -> None:
        points = SeriesPoints.of(EPOCHS, 3, {"train_loss": [1, 2], "val_loss": (3, 4)})
        assert (points.name, points.start, points.size) == ("epochs", 3, 2)
        assert points.values == {
            "train_loss": [1.0, 2.0],
            "val_loss": [3.0, 4.0],
            "val_accuracy": None,
        }
        assert all(type(v) is float for v in points.values["train_loss"] or [])

    @pytest.mark.parametrize(
        ("values", "message"),
        [
            ({"train_loss": [1.0]}, "series 'epochs': field 'val_loss' is missing"),
            (
                {"train_loss": [1.0], "val_loss": [1.0], "val_acc": [1.0]},
                "series 'epochs' has no field 'val_acc'",
            ),
            (
                {"train_loss": [1.0], "val_loss": [math.nan]},
                "field 'val_loss' has a non-finite value",
            ),
            (
                {"train_loss": [1.0], "val_loss": [1.0], "val_accuracy": [-math.inf]},
                "field 'val_accuracy' has a non-finite value",
            ),
            (
                {"train_loss": [1.0, 2.0], "val_loss": [1.0]},
                "field 'val_loss' has 1 values, the others 2",
            ),
            (
                {"train_loss": [1.0], "val_loss": [1.0], "val_accuracy": [0.5, 0.5]},
                "field 'val_accuracy' has 2 values, the others 1",
            ),
            ({"train_loss": [], "val_loss": []}, "carries 1 to 100000 points, got 0"),
            (
                {"train_loss": [1.0], "val_loss": ["a lot"]},
                "field 'val_loss' has a value that is not a number",
            ),
            (
                {"train_loss": [None], "val_loss": [1.0]},
                "field 'train_loss' has a value that is not a number",
            ),
        ],
    )
    def test_bad_points_are_refused_naming_the_field(
        self, values: dict[str, Any], message: str
    ) -> None:
        with pytest.raises(ValueError, match=message):
            SeriesPoints.of(EPOCHS, 0, values)

    def test_at_most_a_reports_worth_of_points(self) -> None:
        column = [1.0] * (MAX_POINTS_PER_REPORT + 1)
        with pytest.raises(ValueError, match=f"got {MAX_POINTS_PER_REPORT + 1}"):
            SeriesPoints.of(EPOCHS, 0, {"train_loss": column, "val_loss": column})

    @pytest.mark.parametrize("start", [-1, True, 1.0])
    def test_start_is_an_index(self, start: Any) -> None:
        with pytest.raises(ValueError, match="start must be an integer >= 0"):
            SeriesPoints.of(EPOCHS, start, {"train_loss": [1.0], "val_loss": [1.0]})

    def test_runs_join_only_when_the_second_follows_the_first(self) -> None:
        assert iterations(0, 3).join(iterations(3, 2)) == iterations(0, 5)
        with pytest.raises(ValueError, match="only the next run of the same series"):
            iterations(0, 3).join(iterations(4, 2))
        with pytest.raises(ValueError, match="only the next run of the same series"):
            epochs(0, 3).join(make_points(3, 1))
        assert iterations(0, 5).slice(2, 4) == iterations(2, 2)


# --------------------------------------------------------------------------- attempts


def lose_and_claim(
    factory: sessionmaker[Session], settings: Settings, job_id: uuid.UUID, attempt: int
) -> Job:
    """The reconciler finds ``attempt`` silent and requeues it; ``gpu-<attempt>`` claims it."""
    lost_at = T0 + timedelta(minutes=10 * attempt)
    with factory.begin() as session:
        assert reconcile(session, settings=settings, now=lost_at).requeued == [job_id]
    with factory.begin() as session:
        claimed = claim_job(
            session, job_id=job_id, worker=f"gpu-{attempt}", now=lost_at + timedelta(seconds=1)
        )
        assert claimed is not None
        assert claimed.attempt == attempt + 1
        return claimed


def report(
    factory: sessionmaker[Session],
    job_id: uuid.UUID,
    attempt: int,
    *points: SeriesPoints,
    progress: int | None = None,
) -> None:
    """One worker report in a transaction of its own, accepted."""
    now = T0 + timedelta(minutes=10 * (attempt - 1), seconds=2)
    with factory.begin() as session:
        ack = report_progress(
            session, job_id=job_id, attempt=attempt, points=points, progress=progress, now=now
        )
        assert ack.accepted


def poll(
    factory: sessionmaker[Session], team: Team, job_id: uuid.UUID, attempt: int, **seen: int
) -> dict[str, tuple[int, list[float] | None]]:
    """What a follower that read ``seen`` points during ``attempt`` gets: series ->
    (start, the losses: ``loss`` of iterations, ``train_loss`` of epochs)."""
    with factory() as session:
        update: JobUpdate = poll_job(session, team=team, job_id=job_id, attempt=attempt, seen=seen)
    loss = {"iterations": "loss", "epochs": "train_loss"}
    return {s.name: (s.start, s.column(loss[s.name])) for s in update.series}


@pytest.mark.usefixtures("sent")
class TestResumableAttempts:
    """A resumable kind's next attempt keeps the points up to the last checkpoint."""

    @pytest.fixture
    def started(self, committed: sessionmaker[Session]) -> tuple[Team, uuid.UUID]:
        """Attempt 1 of a toy training: 10 iterations and an epoch, a checkpoint there,
        then 5 iterations and an epoch more; then its worker went silent."""
        with committed.begin() as session:
            team = make_team(session)
            job_id = toy_job(session, team=team).id
        report(committed, job_id, 1, iterations(0, 4), progress=4)
        report(committed, job_id, 1, iterations(4, 6), epochs(0, 1), progress=10)
        with committed.begin() as session:
            assert record_checkpoint(
                session,
                job_id=job_id,
                attempt=1,
                artifact="ckpt-a1",
                now=T0 + timedelta(seconds=3),
            )
        report(committed, job_id, 1, iterations(10, 5), epochs(1, 1), progress=15)
        return team, job_id

    def test_the_checkpoint_records_the_progress_and_counts_at_its_time(
        self, committed: sessionmaker[Session], started: tuple[Team, uuid.UUID]
    ) -> None:
        _, job_id = started
        with committed() as session:
            job = session.get(Job, job_id)
            assert job is not None
            assert job.checkpoint == {
                "artifact": "ckpt-a1",
                "attempt": 1,
                "progress": 10,
                "series": {"iterations": 10, "epochs": 1},
                "at": (T0 + timedelta(seconds=3)).isoformat(),
            }
            assert (job.progress, job.series_points) == (15, {"iterations": 15, "epochs": 2})

    def test_the_next_attempt_starts_at_the_checkpoint_keeping_the_points_before_it(
        self,
        committed: sessionmaker[Session],
        settings: Settings,
        started: tuple[Team, uuid.UUID],
    ) -> None:
        team, job_id = started
        with committed.begin() as session:
            assert reconcile(session, settings=settings, now=T0 + timedelta(minutes=10)).requeued
        with committed() as session:
            # until the next claim, readers still see everything the lost attempt wrote
            assert read(session, team, job_id, "iterations").column("loss") == losses(0, [1] * 15)
        with committed.begin() as session:
            claimed = claim_job(
                session, job_id=job_id, worker="gpu-1", now=T0 + timedelta(minutes=11)
            )
            assert claimed is not None
            assert (claimed.attempt, claimed.progress) == (2, 10)
            assert claimed.series_points == {"iterations": 10, "epochs": 1}
        with committed() as session:
            assert chunks(session, job_id) == [
                ("epochs", 1, 0, 1),
                ("iterations", 1, 0, 4),
                ("iterations", 1, 4, 6),
            ]
            whole = read(session, team, job_id, "iterations")
            assert (whole.attempt, whole.points, whole.values) == (2, 10, iterations(0, 10).values)
            assert read(session, team, job_id, "iterations", after=7).values == (
                iterations(7, 3).values
            )
            assert read(session, team, job_id, "epochs").values == epochs(0, 1).values
        # the lost worker is fenced off; the new one appends where the checkpoint ends
        with committed.begin() as session:
            stale = report_progress(session, job_id=job_id, attempt=1, points=[iterations(15, 1)])
            assert not stale.accepted
            assert not record_checkpoint(
                session, job_id=job_id, attempt=1, artifact="late", now=T0 + timedelta(minutes=12)
            )
        with pytest.raises(ValueError, match="follow the 10 stored"), committed.begin() as session:
            report_progress(
                session, job_id=job_id, attempt=2, points=[iterations(15, 1, attempt=2)]
            )
        report(committed, job_id, 2, iterations(10, 3, attempt=2), progress=13)
        with committed() as session:
            got = read(session, team, job_id, "iterations")
            assert got.column("loss") == losses(0, [1] * 10 + [2] * 3)
            job = session.get(Job, job_id)
            assert job is not None
            assert job.checkpoint is not None
            assert job.checkpoint["artifact"] == "ckpt-a1"

    def test_a_chunk_straddling_the_checkpoint_is_cut(
        self,
        committed: sessionmaker[Session],
        settings: Settings,
        started: tuple[Team, uuid.UUID],
    ) -> None:
        # The services record a checkpoint where the stored points end; a checkpoint
        # inside a chunk is written here directly.
        team, job_id = started
        with committed.begin() as session:
            job = session.get(Job, job_id)
            assert job is not None
            job.checkpoint = {**(job.checkpoint or {}), "progress": 7, "series": {"iterations": 7}}
        lose_and_claim(committed, settings, job_id, 1)
        with committed() as session:
            assert chunks(session, job_id) == [("iterations", 1, 0, 4), ("iterations", 1, 4, 3)]
            got = read(session, team, job_id, "iterations")
            assert (got.points, got.values) == (7, iterations(0, 7).values)
            assert read(session, team, job_id, "iterations", after=5).values == (
                iterations(5, 2).values
            )
            # a series the checkpoint had no points of starts empty
            assert read(session, team, job_id, "epochs").size == 0
            job = session.get(Job, job_id)
            assert job is not None
            assert (job.progress, job.series_points) == (7, {"iterations": 7})
        report(committed, job_id, 2, iterations(7, 2, attempt=2), epochs(0, 1), progress=9)
        with committed() as session:
            got = read(session, team, job_id, "iterations")
            assert got.column("loss") == losses(0, [1] * 7 + [2] * 2)

    def test_a_later_checkpoint_of_a_resumed_attempt_wins(
        self,
        committed: sessionmaker[Session],
        settings: Settings,
        started: tuple[Team, uuid.UUID],
    ) -> None:
        team, job_id = started
        lose_and_claim(committed, settings, job_id, 1)
        report(committed, job_id, 2, iterations(10, 3, attempt=2), progress=13)
        with committed.begin() as session:
            at = T0 + timedelta(minutes=10, seconds=3)
            assert record_checkpoint(session, job_id=job_id, attempt=2, artifact="ckpt-a2", now=at)
        report(committed, job_id, 2, iterations(13, 4, attempt=2), epochs(1, 1), progress=17)
        third = lose_and_claim(committed, settings, job_id, 2)
        assert (third.progress, third.series_points) == (13, {"iterations": 13, "epochs": 1})
        with committed() as session:
            got = read(session, team, job_id, "iterations")
            assert got.column("loss") == losses(0, [1] * 10 + [2] * 3)
        # a follower of attempt 1 keeps what attempt 2 did not rewrite: 10 points
        assert poll(committed, team, job_id, 1, iterations=15) == {
            "iterations": (10, losses(10, [2] * 3)),
            "epochs": (0, [1.0]),
        }

    def test_a_resumable_job_without_a_checkpoint_starts_over(
        self,
        committed: sessionmaker[Session],
        settings: Settings,
    ) -> None:
        with committed.begin() as session:
            team = make_team(session)
            job_id = toy_job(session, team=team).id
        report(committed, job_id, 1, iterations(0, 5), epochs(0, 1), progress=5)
        again = lose_and_claim(committed, settings, job_id, 1)
        assert (again.progress, again.series_points) == (0, {})
        with committed() as session:
            assert chunks(session, job_id) == []

    def test_a_range_test_loses_all_its_points_at_the_next_claim_even_with_a_checkpoint(
        self,
        committed: sessionmaker[Session],
        settings: Settings,
    ) -> None:
        with committed.begin() as session:
            team = make_team(session)
            job = make_job(session, team=team)
            claim_job(session, job_id=job.id, worker="gpu-0", now=T0)
        report(committed, job.id, 1, make_points(0, 10), progress=10)
        with committed.begin() as session:
            assert record_checkpoint(
                session, job_id=job.id, attempt=1, artifact="ignored", now=T0 + timedelta(seconds=3)
            )
        again = lose_and_claim(committed, settings, job.id, 1)
        assert (again.progress, again.series_points) == (0, {})
        with committed() as session:
            assert chunks(session, job.id) == []
            got = read(session, team, job.id, "curve")
            assert (got.attempt, got.points, got.column("lr")) == (2, 0, [])


@pytest.mark.usefixtures("sent")
class TestPollAfterAResume:
    """What a follower of the lost attempt is sent once the job resumed."""

    @pytest.fixture
    def resumed(
        self,
        committed: sessionmaker[Session],
        settings: Settings,
    ) -> tuple[Team, uuid.UUID]:
        """Attempt 1 wrote 15 iterations, checkpointed at 10; attempt 2 resumed there."""
        with committed.begin() as session:
            team = make_team(session)
            job_id = toy_job(session, team=team).id
        report(committed, job_id, 1, iterations(0, 10), epochs(0, 1), progress=10)
        with committed.begin() as session:
            at = T0 + timedelta(seconds=3)
            assert record_checkpoint(session, job_id=job_id, attempt=1, artifact="ckpt-a1", now=at)
        report(committed, job_id, 1, iterations(10, 5), epochs(1, 1), progress=15)
        lose_and_claim(committed, settings, job_id, 1)
        return team, job_id

    def test_before_the_new_attempt_writes_a_follower_past_the_checkpoint_drops_its_tail(
        self, committed: sessionmaker[Session], resumed: tuple[Team, uuid.UUID]
    ) -> None:
        team, job_id = resumed
        assert poll(committed, team, job_id, 1, iterations=15, epochs=2) == {
            "iterations": (10, []),
            "epochs": (1, []),
        }
        # one that had no more than the checkpoint's points has nothing to change
        assert poll(committed, team, job_id, 1, iterations=10, epochs=1) == {}

    def test_a_follower_with_more_points_restarts_at_the_checkpoint(
        self, committed: sessionmaker[Session], resumed: tuple[Team, uuid.UUID]
    ) -> None:
        team, job_id = resumed
        report(committed, job_id, 2, iterations(10, 3, attempt=2), progress=13)
        assert poll(committed, team, job_id, 1, iterations=15, epochs=2) == {
            "iterations": (10, losses(10, [2] * 3)),
            "epochs": (1, []),
        }
        assert poll(committed, team, job_id, 1, iterations=12, epochs=1) == {
            "iterations": (10, losses(10, [2] * 3)),
        }

    def test_a_follower_with_fewer_points_continues_from_its_own_count(
        self, committed: sessionmaker[Session], resumed: tuple[Team, uuid.UUID]
    ) -> None:
        team, job_id = resumed
        report(committed, job_id, 2, iterations(10, 3, attempt=2), progress=13)
        assert poll(committed, team, job_id, 1, iterations=7) == {
            "iterations": (7, losses(7, [1] * 3 + [2] * 3)),
            "epochs": (0, [1.0]),
        }

    def test_a_follower_of_the_current_attempt_gets_only_new_points(
        self, committed: sessionmaker[Session], resumed: tuple[Team, uuid.UUID]
    ) -> None:
        team, job_id = resumed
        report(committed, job_id, 2, iterations(10, 3, attempt=2), progress=13)
        assert poll(committed, team, job_id, 2, iterations=11, epochs=1) == {
            "iterations": (11, losses(11, [2] * 2)),
        }
        assert poll(committed, team, job_id, 2, iterations=13, epochs=1) == {}


def test_chunk_counts_match_the_stored_counts(session: Session) -> None:
    """``jobs.series_points`` is the sum of the stored chunks' sizes, series by series."""
    job = toy_job(session)
    report_progress(session, job_id=job.id, attempt=1, points=[iterations(0, 3), epochs(0, 2)])
    report_progress(session, job_id=job.id, attempt=1, points=[iterations(3, 4)])
    sums = dict(
        session.execute(
            select(SeriesChunk.name, func.sum(SeriesChunk.size))
            .where(SeriesChunk.job_id == job.id)
            .group_by(SeriesChunk.name)
        ).all()
    )
    assert sums == state(session, job.id).series_points == {"iterations": 7, "epochs": 2}
    assert JobRepository(session).first_point_after_attempt(job.id, "iterations", 0) == 0
    assert JobRepository(session).first_point_after_attempt(job.id, "iterations", 1) is None
