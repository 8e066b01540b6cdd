"""Verified bounds on both databases, without workers: a range test that finished its
curve waits while its candidates train as child jobs round by round, keeps the
best by validation loss, and then gives the verified pair as its bounds."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from clr.suggest import CurveVerdict
from core.db import session_scope
from core.errors import JobTooLarge
from core.models import Job, JobStatus, Team
from core.repositories import JobRepository
from core.services import cancel_job, claim_job, fail_job, finish_job, get_bounds, submit_job
from core.settings import Settings, get_settings
from core.specs import RangeTestOutcome, RangeTestSpec, VerificationDoc
from core.verification import candidate_training, plan_verification
from tests.builders import make_outcome, make_team, spec_data

pytestmark = pytest.mark.usefixtures("sent")

FLAT = CurveVerdict(False, "the loss never moved", (1e-7, 10.0), None)
"""An uninformative curve: the candidates come from the coarse LR ladder."""


def verify_spec(**overrides: Any) -> dict[str, Any]:
    return spec_data(**{"verify": True, "verify_iterations": 400, **overrides})


def planned(spec: dict[str, Any], *, verdict: CurveVerdict = FLAT) -> RangeTestOutcome:
    """What the worker stores after the curve: the outcome with the plan declared."""
    parsed = RangeTestSpec.model_validate(spec)
    outcome = make_outcome()
    doc = plan_verification(parsed, None, verdict, iters_per_epoch=23)
    return outcome.model_copy(update={"verification": doc})


def start(factory: sessionmaker[Session], settings: Settings, outcome: RangeTestOutcome) -> Job:
    """A range test with verify whose worker finished its curve (now waiting)."""
    with session_scope(factory) as session:
        team = make_team(session)
        job = submit_job(
            session, team=team, kind="range_test", spec=verify_spec(), settings=settings
        ).job
    with session_scope(factory) as session:
        assert claim_job(session, job_id=job.id, worker="w-1") is not None
    with session_scope(factory) as session:
        waiting = finish_job(session, job_id=job.id, attempt=1, result=outcome, wait=True)
        assert waiting is not None
        return waiting


def candidates_running(factory: sessionmaker[Session], parent_id: uuid.UUID) -> list[Job]:
    with session_scope(factory) as session:
        return [c for c in JobRepository(session).children(parent_id) if not c.finished]


def finish_candidate(
    factory: sessionmaker[Session], child: Job, val_loss: float | None, *, fail: bool = False
) -> None:
    with session_scope(factory) as session:
        assert claim_job(session, job_id=child.id, worker="w-2") is not None
    with session_scope(factory) as session:
        if fail:
            fail_job(session, job_id=child.id, attempt=1, reason="Diverged: loss nan at 12")
            return
        iterations = child.spec["iterations"]
        finish_job(
            session,
            job_id=child.id,
            attempt=1,
            result={
                "stop_reason": "completed",
                "iterations": iterations,
                "epochs": 1,
                "cycles": 1,
                "cycle_ends": [iterations],
                "seconds": 0.1,
                "device": "cpu",
                "policy": "triangular",
                "schedule": child.spec["schedule"],
                "final_train_loss": val_loss,
                "final_val_loss": val_loss,
                "final_val_accuracy": None if val_loss is None else 1.0 - val_loss / 10,
                "best_val_accuracy": None,
                "best_val_iteration": None,
            },
        )


def reread(factory: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def verification_of(job: Job) -> VerificationDoc:
    doc = RangeTestOutcome.model_validate(job.result).verification
    assert doc is not None
    return doc


def test_the_plan_is_declared_before_anything_runs_and_fits_its_budget() -> None:
    doc = planned(verify_spec()).verification
    assert doc is not None
    assert doc.status == "running"
    assert not doc.informative
    assert doc.budget_iterations == int(1.0 * 400)
    assert sum(r.size * r.iterations for r in doc.rounds) <= doc.budget_iterations
    assert [r.size for r in doc.rounds] == sorted((r.size for r in doc.rounds), reverse=True)
    assert all(c.source.startswith("ladder:") for c in doc.candidates)


def test_a_candidate_trains_from_the_range_tests_seed_for_one_cycle_of_its_round() -> None:
    spec = RangeTestSpec.model_validate(verify_spec(seed=7))
    doc = planned(verify_spec()).verification
    assert doc is not None
    body = candidate_training(spec, doc.candidates[2], 40)
    assert body["seed"] == 7
    assert body["workload"] == spec.workload
    assert body["iterations"] == 40
    assert body["schedule"] == {
        "policy": "triangular",
        "base_lr": doc.candidates[2].base_lr,
        "max_lr": doc.candidates[2].max_lr,
        "step_size_up": 20,
    }


def test_rounds_halve_to_the_lowest_validation_loss_which_becomes_the_bounds(
    committed: sessionmaker[Session], settings: Settings
) -> None:
    outcome = planned(verify_spec())
    doc = outcome.verification
    assert doc is not None
    job = start(committed, settings, outcome)
    best = 1  # the middle rung trains best, by more than the plateau's 10 % tolerance
    for round_ in doc.rounds:
        running = candidates_running(committed, job.id)
        assert len(running) == round_.size
        assert {c.spec["iterations"] for c in running} == {round_.iterations}
        assert reread(committed, job.id).status == JobStatus.RUNNING
        for child in running:
            index = (child.role or {})["candidate"]
            finish_candidate(committed, child, 0.5 + abs(index - best) * 0.1)
    done = reread(committed, job.id)
    assert done.status == JobStatus.SUCCEEDED
    verified = verification_of(done)
    assert verified.status == "succeeded"
    assert verified.winner is not None
    assert verified.winner.max_lr == doc.candidates[best].max_lr
    assert verified.winner.val_loss == pytest.approx(0.5)
    assert verified.spent_iterations == sum(r.size * r.iterations for r in doc.rounds)
    assert verified.spent_iterations <= verified.budget_iterations
    assert all(c.jobs for c in verified.candidates)
    with session_scope(committed) as session:
        team = session.get(Team, done.team_id)
        assert team is not None
        bounds = get_bounds(session, team=team, job_id=job.id)
    assert bounds.suggestions.default_method == "verified"
    assert bounds.suggestions.default.max_lr == doc.candidates[best].max_lr


def test_a_failed_candidate_sorts_last_and_does_not_win(
    committed: sessionmaker[Session], settings: Settings
) -> None:
    outcome = planned(verify_spec())
    job = start(committed, settings, outcome)
    doc = outcome.verification
    assert doc is not None
    for round_index, _ in enumerate(doc.rounds):
        for child in candidates_running(committed, job.id):
            index = (child.role or {})["candidate"]
            # the highest LR would look best, but its run diverges
            if index == len(doc.candidates) - 1:
                finish_candidate(committed, child, None, fail=True)
            else:
                finish_candidate(committed, child, 1.0 - 0.01 * index - 0.001 * round_index)
    verified = verification_of(reread(committed, job.id))
    assert verified.winner is not None
    last = verified.candidates[-1]
    assert last.failed is not None
    assert "Diverged" in last.failed
    assert verified.winner.max_lr != last.max_lr


def test_cancelling_a_verifying_range_test_cancels_its_candidates(
    committed: sessionmaker[Session], settings: Settings
) -> None:
    job = start(committed, settings, planned(verify_spec()))
    assert candidates_running(committed, job.id)
    with session_scope(committed) as session:
        team = session.get(Team, job.team_id)
        assert team is not None
        cancelled = cancel_job(session, team=team, job_id=job.id)
    assert cancelled.status == JobStatus.CANCELLED
    assert candidates_running(committed, job.id) == []
    final = reread(committed, job.id)
    doc = verification_of(final)
    assert doc.status == "cancelled"
    # the curve's own result is kept
    assert RangeTestOutcome.model_validate(final.result).suggestions is not None


def test_a_budget_too_small_for_the_first_round_says_so_and_ends_at_once() -> None:
    doc = planned(verify_spec(verify_budget=0.05)).verification
    assert doc is not None
    assert doc.status == "failed"
    assert doc.reason is not None
    assert "budget_runs" in doc.reason
    assert doc.rounds == []


def test_a_round_whose_every_candidate_failed_ends_the_verification_at_once(
    committed: sessionmaker[Session], settings: Settings
) -> None:
    outcome = planned(verify_spec())
    job = start(committed, settings, outcome)
    for child in candidates_running(committed, job.id):
        finish_candidate(committed, child, None, fail=True)
    # no further round trains candidates that all failed (compute for nothing)
    assert candidates_running(committed, job.id) == []
    final = reread(committed, job.id)
    assert final.status == JobStatus.SUCCEEDED
    doc = verification_of(final)
    assert doc.status == "failed"
    assert doc.winner is None
    assert doc.reason is not None
    assert "Diverged" in doc.reason
    # the bounds are the curve's own
    bounds = RangeTestOutcome.model_validate(final.result).bounds()
    assert bounds is not None
    assert bounds.default_method != "verified"


def test_a_failed_candidate_does_not_go_on_and_a_lone_survivor_wins(
    committed: sessionmaker[Session], settings: Settings
) -> None:
    outcome = planned(verify_spec())
    job = start(committed, settings, outcome)
    doc = outcome.verification
    assert doc is not None
    first = candidates_running(committed, job.id)
    for child in first:
        index = (child.role or {})["candidate"]
        finish_candidate(committed, child, 0.7 if index == 2 else None, fail=index != 2)
    assert candidates_running(committed, job.id) == []
    verified = verification_of(reread(committed, job.id))
    assert verified.status == "succeeded"
    assert verified.winner is not None
    assert verified.winner.max_lr == doc.candidates[2].max_lr
    assert verified.winner.val_loss == pytest.approx(0.7)
    assert [r.candidates for r in verified.rounds[1:]] == [[]] * (len(verified.rounds) - 1)


def test_a_candidate_the_caps_refuse_ends_the_verification_not_the_range_test(
    committed: sessionmaker[Session], settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    outcome = planned(verify_spec())
    with session_scope(committed) as session:
        team = make_team(session)
        job = submit_job(
            session, team=team, kind="range_test", spec=verify_spec(), settings=settings
        ).job
    with session_scope(committed) as session:
        assert claim_job(session, job_id=job.id, worker="w-1") is not None
    # the candidates' trainings are over the service's cap on a job's run time
    monkeypatch.setenv("CLR_MAX_JOB_SECONDS", "0.000001")
    get_settings.cache_clear()
    try:
        with session_scope(committed) as session:
            finish_job(session, job_id=job.id, attempt=1, result=outcome, wait=True)
    finally:
        monkeypatch.delenv("CLR_MAX_JOB_SECONDS")
        get_settings.cache_clear()
    final = reread(committed, job.id)
    assert final.status == JobStatus.SUCCEEDED, final.error
    assert candidates_running(committed, job.id) == []
    doc = verification_of(final)
    assert doc.status == "failed"
    assert doc.reason is not None
    assert "CLR_MAX_JOB_SECONDS" in doc.reason
    assert RangeTestOutcome.model_validate(final.result).suggestions is not None


def test_a_verification_whose_candidates_are_over_a_cap_is_refused_at_submit(
    committed: sessionmaker[Session], settings: Settings
) -> None:
    # the candidates would only be refused after the curve: the submit says so first
    spec = verify_spec(verify_iterations=100_000)
    estimate = RangeTestSpec.model_validate(spec).estimate()
    assert estimate is not None
    capped = settings.model_copy(
        update={"max_job_seconds": 2 * estimate.seconds(settings.job_flop_rate)}
    )
    with session_scope(committed) as session:
        team = make_team(session)
        with pytest.raises(JobTooLarge) as caught:
            submit_job(session, team=team, kind="range_test", spec=spec, settings=capped)
        # the same test without verify is fine under that cap
        plain = submit_job(
            session, team=team, kind="range_test", spec=spec_data(), settings=capped
        ).job
        assert plain.kind == "range_test"
    assert [e["field"] for e in caught.value.errors] == ["verify_iterations"]
    assert "up to 50000 iterations" in caught.value.errors[0]["reason"]
    assert "CLR_MAX_JOB_SECONDS" in caught.value.errors[0]["reason"]
