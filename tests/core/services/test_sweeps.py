"""A sweep's advance step on both databases, its children driven by hand (claim, report,
finish, fail, cancel) as workers would: the range test first, then every policy x
seed with its bounds, the table as they finish, each child created once however
often the sweep moves on, and what it says when parts of it fail."""

from __future__ import annotations

import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.clock import utc_now
from core.db import session_scope
from core.errors import JobTooLarge
from core.models import Job, JobStatus, Team
from core.repositories import JobRepository
from core.series import SeriesPoints
from core.services import (
    acknowledge_cancel,
    cancel_job,
    claim_job,
    fail_job,
    finish_job,
    heartbeat,
    reconcile,
    report_progress,
    submit_job,
)
from core.services.parents import advance_parent
from core.settings import Settings
from core.specs import RangeTestOutcome, RangeTestSpec, VerificationDoc, VerifiedBoundsDoc
from core.sweeps import SweepResult
from core.training import EPOCHS, TrainingOutcome, TrainingSpec
from tests.builders import make_outcome, make_team

Sent = list[tuple[uuid.UUID, str]]

pytestmark = pytest.mark.usefixtures("sent")

STEP = 10
"""The sweeps' step size: 2 cycles of 20 iterations, an epoch record every 10."""


def sweep_spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "workload": "digits_mlp",
        "params": {"width": 16},
        "policies": ["fixed", "triangular2"],
        "seeds": [0, 1],
        "step_size": STEP,
        "cycles": 2,
        "verify": False,
        "range_test": {"num_iter": 30},
    }
    spec.update(overrides)
    return spec


def submit_sweep(
    factory: sessionmaker[Session], settings: Settings, **overrides: Any
) -> tuple[Job, Team]:
    with session_scope(factory) as session:
        team = make_team(session)
        job = submit_job(
            session, team=team, kind="sweep", spec=sweep_spec(**overrides), settings=settings
        ).job
        session.expunge(team)
        return job, team


def children_of(factory: sessionmaker[Session], parent_id: uuid.UUID) -> list[Job]:
    """The sweep's children by grid point, range test first, then policy and seed (those
    created together share their creation time)."""
    with session_scope(factory) as session:
        children = JobRepository(session).children(parent_id)

    def order(child: Job) -> tuple[int, str, int]:
        role = child.role or {}
        return (role["grid"], role.get("policy", ""), role.get("seed", -1))

    return sorted(children, key=order)


def reread(factory: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def result_of(factory: sessionmaker[Session], job_id: uuid.UUID) -> SweepResult:
    return SweepResult.model_validate(reread(factory, job_id).result)


def claim(factory: sessionmaker[Session], child: Job) -> int:
    with session_scope(factory) as session:
        claimed = claim_job(session, job_id=child.id, worker="w-1")
        assert claimed is not None
        return claimed.attempt


def run_range_test(
    factory: sessionmaker[Session], child: Job, outcome: RangeTestOutcome | None = None
) -> None:
    attempt = claim(factory, child)
    with session_scope(factory) as session:
        done = finish_job(
            session, job_id=child.id, attempt=attempt, result=outcome or make_outcome()
        )
        assert done is not None


def training_outcome(spec: TrainingSpec, accuracies: list[float]) -> TrainingOutcome:
    iterations = spec.iteration_count()
    return TrainingOutcome(
        stop_reason="completed",
        iterations=iterations,
        epochs=len(accuracies),
        cycles=2,
        cycle_ends=[2 * STEP, 4 * STEP],
        seconds=0.1,
        device="cpu",
        policy=spec.schedule.policy,
        schedule=spec.schedule.model_dump(mode="json"),
        final_train_loss=0.5,
        final_val_loss=0.6,
        final_val_accuracy=accuracies[-1],
        best_val_accuracy=max(accuracies),
        best_val_iteration=10 * (accuracies.index(max(accuracies)) + 1),
    )


def run_training(
    factory: sessionmaker[Session], child: Job, accuracies: list[float], *, fail: bool = False
) -> None:
    """Claim, store one epoch record per 10 iterations, and finish (or fail)."""
    attempt = claim(factory, child)
    n = len(accuracies)
    epochs = SeriesPoints.of(
        EPOCHS,
        0,
        {
            "epoch": [float(k) for k in range(n)],
            "iteration": [float(10 * (k + 1)) for k in range(n)],
            "train_loss": [1.0] * n,
            "train_accuracy": accuracies,
            "val_loss": [1.0] * n,
            "val_accuracy": accuracies,
        },
    )
    with session_scope(factory) as session:
        report_progress(session, job_id=child.id, attempt=attempt, points=[epochs], progress=n)
    with session_scope(factory) as session:
        if fail:
            fail_job(session, job_id=child.id, attempt=attempt, reason="the training diverged")
        else:
            spec = TrainingSpec.model_validate(child.spec, context={"stored": True})
            outcome = training_outcome(spec, accuracies)
            assert finish_job(session, job_id=child.id, attempt=attempt, result=outcome)


def trainings(children: list[Job]) -> list[Job]:
    return [c for c in children if c.kind == "training"]


def move_on(factory: sessionmaker[Session], parent_id: uuid.UUID, times: int = 3) -> None:
    """Advance the sweep again and again, as the reconciler and late child ends do."""
    for _ in range(times):
        with session_scope(factory) as session:
            advance_parent(session, parent_id=parent_id)


def assert_each_child_once(children: list[Job]) -> None:
    roles = Counter(tuple(sorted((c.role or {}).items())) for c in children)
    assert all(n == 1 for n in roles.values()), roles


ACCURACIES = {
    # policy -> per seed, the validation accuracy at iterations 10, 20, 30, 40
    "fixed": [[0.5, 0.6, 0.7, 0.8], [0.5, 0.6, 0.7, 0.8]],
    "triangular2": [[0.6, 0.8, 0.85, 0.9], [0.7, 0.8, 0.9, 0.92]],
}


def run_all_trainings(factory: sessionmaker[Session], parent_id: uuid.UUID) -> None:
    for child in trainings(children_of(factory, parent_id)):
        if child.status != JobStatus.QUEUED:
            continue
        role = child.role or {}
        run_training(factory, child, ACCURACIES[role["policy"]][role["seed"]])


class TestStart:
    def test_starts_waiting_with_one_range_test_per_grid_point(
        self, committed: sessionmaker[Session], settings: Settings, sent: Sent
    ) -> None:
        sweep, _ = submit_sweep(committed, settings, grid={"batch_size": [32, 64]}, verify=True)
        assert (sweep.status, sweep.waiting) == (JobStatus.RUNNING, True)
        children = children_of(committed, sweep.id)
        assert [c.role for c in children] == [
            {"grid": 0, "stage": "range_test"},
            {"grid": 1, "stage": "range_test"},
        ]
        specs = [RangeTestSpec.model_validate(c.spec) for c in children]
        assert [s.batch_size for s in specs] == [32, 64]
        assert {(s.num_iter, s.verify, s.seed) for s in specs} == {(30, True, 0)}
        # the verification's budget counts in the sweep's trainings: 2 cycles of 2 x 10
        assert {s.verify_iterations for s in specs} == {40}
        assert sorted(sent) == sorted((c.id, "range_test") for c in children)
        job = reread(committed, sweep.id)
        assert (job.progress, job.total) == (0, 2 * (1 + 2 * 2))
        assert result_of(committed, sweep.id).counts == {"queued": 2}

    def test_the_range_test_brings_every_policy_and_seed_with_its_bounds(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        sweep, _ = submit_sweep(committed, settings)
        (test,) = children_of(committed, sweep.id)
        run_range_test(committed, test, make_outcome(base_lr=0.02, max_lr=0.2))
        children = trainings(children_of(committed, sweep.id))
        assert sorted((c.role or {})["policy"] + str((c.role or {})["seed"]) for c in children) == [
            "fixed0",
            "fixed1",
            "triangular20",
            "triangular21",
        ]
        for child in children:
            spec = TrainingSpec.model_validate(child.spec, context={"stored": True})
            assert spec.iteration_count() == 40
            assert spec.seed == (child.role or {})["seed"]
            if spec.schedule.policy == "triangular2":
                assert (spec.schedule.base_lr, spec.schedule.max_lr) == (0.02, 0.2)
                assert spec.schedule.step_size_up == STEP
        result = result_of(committed, sweep.id)
        (point,) = result.points
        assert point.bounds is not None
        assert (point.bounds.base_lr, point.bounds.max_lr, point.bounds.verified) == (
            0.02,
            0.2,
            False,
        )
        assert point.range_test == test.id
        assert point.bounds.not_verified is None  # none asked for
        job = reread(committed, sweep.id)
        assert (job.progress, job.total, job.status) == (1, 5, JobStatus.RUNNING)

    def test_verified_bounds_win_over_the_suggestion(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        sweep, _ = submit_sweep(committed, settings, verify=True)
        (test,) = children_of(committed, sweep.id)
        outcome = make_outcome(base_lr=0.02, max_lr=0.2).model_copy(
            update={
                "verification": VerificationDoc(
                    status="succeeded",
                    informative=True,
                    full_run_iterations=40,
                    budget_runs=1.5,
                    budget_iterations=60,
                    spent_iterations=60,
                    winner=VerifiedBoundsDoc(base_lr=0.05, max_lr=0.5, source="ladder:5e-1"),
                )
            }
        )
        run_range_test(committed, test, outcome)
        (point,) = result_of(committed, sweep.id).points
        assert point.bounds is not None
        assert (point.bounds.base_lr, point.bounds.max_lr) == (0.05, 0.5)
        assert (point.bounds.method, point.bounds.verified) == ("verified", True)
        cyclic = [
            TrainingSpec.model_validate(c.spec, context={"stored": True}).schedule
            for c in trainings(children_of(committed, sweep.id))
            if (c.role or {})["policy"] == "triangular2"
        ]
        assert {(s.base_lr, s.max_lr) for s in cyclic} == {(0.05, 0.5)}

    def test_a_verification_without_a_winner_says_why_and_the_suggestion_stays(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        sweep, _ = submit_sweep(committed, settings, verify=True)
        (test,) = children_of(committed, sweep.id)
        reason = "the budget fits 1 iteration per candidate in the first of 2 rounds"
        outcome = make_outcome(base_lr=0.02, max_lr=0.2).model_copy(
            update={
                "verification": VerificationDoc(
                    status="failed",
                    informative=True,
                    full_run_iterations=40,
                    budget_runs=1.5,
                    budget_iterations=60,
                    reason=reason,
                )
            }
        )
        run_range_test(committed, test, outcome)
        (point,) = result_of(committed, sweep.id).points
        assert point.bounds is not None
        assert (point.bounds.base_lr, point.bounds.max_lr) == (0.02, 0.2)
        assert (point.bounds.verified, point.bounds.not_verified) == (False, reason)
        assert len(trainings(children_of(committed, sweep.id))) == 4


class TestTable:
    def test_fills_in_as_trainings_finish_and_is_complete_at_the_end(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        sweep, _ = submit_sweep(committed, settings)
        (test,) = children_of(committed, sweep.id)
        run_range_test(committed, test)
        first = next(
            c
            for c in trainings(children_of(committed, sweep.id))
            if c.role == {"grid": 0, "policy": "triangular2", "seed": 0}
        )
        run_training(committed, first, ACCURACIES["triangular2"][0])
        partial = result_of(committed, sweep.id)
        assert not partial.complete
        row = next(r for r in partial.table if r.policy == "triangular2")
        assert row.succeeded == 1
        assert row.final_val_accuracy is not None
        assert row.final_val_accuracy.mean == 0.9
        assert partial.counts == {"succeeded": 2, "queued": 3}
        run_all_trainings(committed, sweep.id)
        done = reread(committed, sweep.id)
        assert done.status == JobStatus.SUCCEEDED
        assert (done.progress, done.total) == (5, 5)
        result = SweepResult.model_validate(done.result)
        assert result.complete
        assert result.failures == []
        assert result.counts == {"succeeded": 5}
        rows = {r.policy: r for r in result.table}
        fixed, tri = rows["fixed"], rows["triangular2"]
        assert fixed.fixed_accuracy == pytest.approx(0.8)
        assert fixed.iterations_to_fixed is not None
        assert fixed.iterations_to_fixed.mean == 40
        assert tri.final_val_accuracy is not None
        assert tri.final_val_accuracy.mean == pytest.approx(0.91)
        assert tri.final_val_accuracy.std == pytest.approx(0.0141421356)
        assert tri.best_val_accuracy is not None
        assert tri.best_val_accuracy.mean == pytest.approx(0.91)
        assert tri.iterations_to_fixed is not None
        assert tri.iterations_to_fixed.mean == 20
        assert tri.ratio_to_fixed == pytest.approx(0.5)
        assert {c.policy for c in result.curves} == {"fixed", "triangular2"}
        curve = next(c for c in result.curves if c.policy == "triangular2")
        assert curve.iteration == [10, 20, 30, 40]
        assert curve.mean == pytest.approx([0.65, 0.8, 0.875, 0.91])

    def test_moving_on_again_creates_no_child_twice(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        sweep, _ = submit_sweep(committed, settings, grid={"batch_size": [32, 64]})
        move_on(committed, sweep.id)
        assert len(children_of(committed, sweep.id)) == 2
        first, second = children_of(committed, sweep.id)
        run_range_test(committed, first)
        move_on(committed, sweep.id)
        assert len(children_of(committed, sweep.id)) == 2 + 4
        run_range_test(committed, second)
        move_on(committed, sweep.id)
        children = children_of(committed, sweep.id)
        assert len(children) == 2 + 2 * 4
        assert_each_child_once(children)
        run_all_trainings(committed, sweep.id)
        move_on(committed, sweep.id)
        with session_scope(committed) as session:
            reconcile(session, settings=settings)
        children = children_of(committed, sweep.id)
        assert len(children) == 10
        done = reread(committed, sweep.id)
        assert done.status == JobStatus.SUCCEEDED
        assert [(r.grid, r.policy) for r in SweepResult.model_validate(done.result).table] == [
            (0, "fixed"),
            (0, "triangular2"),
            (1, "fixed"),
            (1, "triangular2"),
        ]


class TestFailures:
    def test_a_failed_training_is_a_failure_of_a_sweep_that_succeeds(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        sweep, _ = submit_sweep(committed, settings)
        (test,) = children_of(committed, sweep.id)
        run_range_test(committed, test)
        for child in trainings(children_of(committed, sweep.id)):
            role = child.role or {}
            broken = role == {"grid": 0, "policy": "triangular2", "seed": 1}
            run_training(committed, child, ACCURACIES[role["policy"]][role["seed"]], fail=broken)
        done = reread(committed, sweep.id)
        assert done.status == JobStatus.SUCCEEDED
        result = SweepResult.model_validate(done.result)
        (failure,) = result.failures
        assert failure.role == {"grid": 0, "policy": "triangular2", "seed": 1}
        assert failure.reason == "the training diverged"
        row = next(r for r in result.table if r.policy == "triangular2")
        assert (row.succeeded, row.failed) == (1, 1)
        assert row.final_val_accuracy is not None
        assert row.final_val_accuracy.n == 1

    def test_a_failed_range_test_fails_its_grid_point_only(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        sweep, _ = submit_sweep(committed, settings, grid={"batch_size": [32, 64]})
        broken, good = children_of(committed, sweep.id)
        attempt = claim(committed, broken)
        with session_scope(committed) as session:
            fail_job(session, job_id=broken.id, attempt=attempt, reason="out of memory")
        assert len(children_of(committed, sweep.id)) == 2  # no trainings for it
        job = reread(committed, sweep.id)
        assert (job.progress, job.total) == (1, 1 + 5)
        run_range_test(committed, good)
        run_all_trainings(committed, sweep.id)
        done = reread(committed, sweep.id)
        assert done.status == JobStatus.SUCCEEDED
        result = SweepResult.model_validate(done.result)
        assert [f.reason for f in result.failures] == ["out of memory"]
        assert result.points[0].no_bounds_reason == "its range test failed"
        assert result.points[0].bounds is None
        assert {r.grid for r in result.table if r.succeeded} == {1}

    def test_a_sweep_where_nothing_trained_fails_saying_why(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        sweep, _ = submit_sweep(committed, settings)
        (test,) = children_of(committed, sweep.id)
        flat = make_outcome().model_copy(
            update={"suggestions": None, "no_bounds_reason": "the loss never moved in 30 steps"}
        )
        run_range_test(committed, test, flat)
        done = reread(committed, sweep.id)
        assert done.status == JobStatus.FAILED
        assert done.error is not None
        assert "no training succeeded" in done.error
        assert "bs=64 sgd wd=0: range test" in done.error  # the grid point, by its label
        assert "the loss never moved in 30 steps" in done.error
        assert (done.progress, done.total) == (1, 1)
        result = SweepResult.model_validate(done.result)
        assert result.complete
        assert len(result.failures) == 1

    def test_refused_trainings_fail_their_grid_point_without_creating_any(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        sweep, _ = submit_sweep(committed, settings, step_size=1000)
        # a cap that lets the range test through and refuses its trainings (4,000 iterations)
        training = TrainingSpec.model_validate(
            {
                "workload": "digits_mlp",
                "params": {"width": 16},
                "schedule": {"policy": "fixed", "lr": 0.1},
                "iterations": 4000,
            }
        ).estimate()
        assert training is not None
        cap = training.seconds(settings.job_flop_rate) / 2
        capped = settings.model_copy(update={"max_job_seconds": cap})
        (test,) = children_of(committed, sweep.id)
        attempt = claim(committed, test)
        with session_scope(committed) as session:
            # the range test's end without its after-commit advance (which reads the
            # process's settings): the sweep moves on under the cap instead
            result = make_outcome().to_json_dict()
            assert JobRepository(session).finish(test.id, attempt, result=result, now=utc_now())
        for _ in range(2):
            with session_scope(committed) as session:
                advance_parent(session, parent_id=sweep.id, settings=capped)
        assert [c.kind for c in children_of(committed, sweep.id)] == ["range_test"]
        done = reread(committed, sweep.id)
        assert done.status == JobStatus.FAILED
        assert done.error is not None
        assert "its trainings were refused" in done.error
        assert "CLR_MAX_JOB_SECONDS" in done.error
        (point,) = SweepResult.model_validate(done.result).points
        assert point.bounds is not None  # the bounds were found; training them was refused

    def test_a_range_test_over_a_cap_refuses_the_sweep_itself_and_creates_nothing(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        # the sweep's first children are created by its submit: a refusal there is the
        # sweep's own 4xx, naming the reason, not a sweep that exists only to fail
        capped = settings.model_copy(update={"max_job_memory_bytes": 1024})
        with session_scope(committed) as session:
            team = make_team(session)
            team_id = team.id
        with pytest.raises(JobTooLarge) as caught:
            submit_capped(committed, team_id, capped)
        assert "CLR_MAX_JOB_MEMORY_BYTES" in str(caught.value)
        with session_scope(committed) as session:
            assert JobRepository(session).list_for_team(team_id, limit=10) == []


def submit_capped(factory: sessionmaker[Session], team_id: uuid.UUID, settings: Settings) -> Job:
    """A sweep submitted in a request's transaction (rolled back when it raises)."""
    with session_scope(factory) as session:
        team = session.get(Team, team_id)
        assert team is not None
        return submit_job(
            session, team=team, kind="sweep", spec=sweep_spec(), settings=settings
        ).job


class TestCancel:
    def test_cancelling_a_sweep_cancels_its_children_and_keeps_its_table(
        self, committed: sessionmaker[Session], settings: Settings
    ) -> None:
        sweep, team = submit_sweep(committed, settings)
        (test,) = children_of(committed, sweep.id)
        run_range_test(committed, test)
        children = trainings(children_of(committed, sweep.id))
        done, running = children[0], children[1]
        role = done.role or {}
        run_training(committed, done, ACCURACIES[role["policy"]][role["seed"]])
        attempt = claim(committed, running)
        with session_scope(committed) as session:
            asked = cancel_job(session, team=team, job_id=sweep.id, kind="sweep")
            assert asked.status == JobStatus.RUNNING
            assert asked.cancel_requested
        statuses = {c.id: c.status for c in children_of(committed, sweep.id)}
        assert statuses[running.id] == JobStatus.RUNNING
        assert [statuses[c.id] for c in children[2:]] == [JobStatus.CANCELLED] * 2
        with session_scope(committed) as session:
            assert heartbeat(session, job_id=running.id, attempt=attempt).cancel_requested
            assert acknowledge_cancel(session, job_id=running.id, attempt=attempt)
        final = reread(committed, sweep.id)
        assert final.status == JobStatus.CANCELLED
        result = SweepResult.model_validate(final.result)
        assert not result.complete
        assert result.counts == {"succeeded": 2, "cancelled": 3}
        assert sum(r.succeeded for r in result.table) == 1
        assert len(result.failures) == 3
        # nothing moves a cancelled sweep on again
        move_on(committed, sweep.id)
        assert len(children_of(committed, sweep.id)) == 5
