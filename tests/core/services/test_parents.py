"""Parent jobs on both databases: children created with the parent, the parent moved
on after each child's end, cancelled with its children, failed by a broken step,
and picked up by the reconciler when a child's end lost its advance."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import ClassVar

import pytest
from pydantic import Field, StrictInt
from sqlalchemy.orm import Session, sessionmaker

from core.clock import utc_now
from core.db import session_scope
from core.kinds import JobKind, register_kind, unregister_kind
from core.models import Job, JobStatus, Team
from core.repositories import JobRepository
from core.services import (
    acknowledge_cancel,
    cancel_job,
    claim_job,
    fail_job,
    finish_job,
    heartbeat,
    reconcile,
    submit_job,
)
from core.services.parents import Family
from core.settings import Settings
from core.specs import JobResult, JobSpec, canonical_json
from tests.builders import make_team
from tests.worker.toy_kind import TOY, ToyResult

Sent = list[tuple[uuid.UUID, str]]

# every test: messages go to an in-process sender, not nowhere
pytestmark = pytest.mark.usefixtures("sent")


class BroodSpec(JobSpec):
    """A parent that creates ``children`` toy jobs, then sums what they did."""

    kind: ClassVar[str] = "brood"

    children: StrictInt = Field(default=2, ge=1, le=10)
    broken: bool = False

    def config_key(self) -> str:
        return hashlib.sha256(canonical_json(self.model_dump(mode="json")).encode()).hexdigest()

    def total_steps(self) -> int:
        return self.children


class BroodResult(JobResult):
    succeeded: int
    not_succeeded: int
    complete: bool


def advance_brood(family: Family) -> None:
    spec = BroodSpec.model_validate(family.parent.spec)
    if not family.children and not family.cancelling:
        for i in range(spec.children):
            family.submit(TOY.name, {"ticks": 2}, role={"index": i})
        if spec.broken:
            raise ZeroDivisionError("the brood's step is broken")
        return
    counts = family.counts()
    done = sum(counts[s] for s in ("succeeded", "failed", "cancelled"))
    result = BroodResult(
        succeeded=counts["succeeded"],
        not_succeeded=done - counts["succeeded"],
        complete=done == len(family.children),
    )
    family.update(result=result, progress=done, total=len(family.children))
    if result.complete and not family.cancelling:
        family.finish(result)


BROOD = JobKind(
    name="brood",
    noun="broods",
    title="brood",
    spec=BroodSpec,
    result=BroodResult,
    runner=None,
    advance=f"{__name__}:advance_brood",
)


@pytest.fixture(autouse=True)
def kinds() -> Iterator[None]:
    register_kind(TOY)
    register_kind(BROOD)
    yield
    unregister_kind(BROOD.name)
    unregister_kind(TOY.name)


def submit_brood(factory: sessionmaker[Session], settings: Settings, **spec: object) -> Job:
    with session_scope(factory) as session:
        team = make_team(session)
        return submit_job(session, team=team, kind="brood", spec=spec, settings=settings).job


def children_of(factory: sessionmaker[Session], parent_id: uuid.UUID) -> list[Job]:
    with session_scope(factory) as session:
        return JobRepository(session).children(parent_id)


def reread(factory: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job


def run_child(factory: sessionmaker[Session], child: Job, *, fail: bool = False) -> None:
    with session_scope(factory) as session:
        claimed = claim_job(session, job_id=child.id, worker="w-1")
        assert claimed is not None
    with session_scope(factory) as session:
        if fail:
            fail_job(session, job_id=child.id, attempt=1, reason="the toy broke")
        else:
            finish_job(session, job_id=child.id, attempt=1, result=ToyResult(ticks=2, total=1.0))


def test_a_parent_starts_waiting_with_its_children_and_no_message_of_its_own(
    committed: sessionmaker[Session], settings: Settings, sent: Sent
) -> None:
    parent = submit_brood(committed, settings, children=3)
    assert parent.status == JobStatus.RUNNING
    assert parent.waiting
    children = children_of(committed, parent.id)
    roles = sorted((c.role or {})["index"] for c in children)
    assert roles == [0, 1, 2]
    assert {c.status for c in children} == {JobStatus.QUEUED}
    # only the children went to the broker, after the one commit
    assert sorted(sent) == sorted((c.id, "toy") for c in children)


def test_the_parent_moves_on_as_children_end_and_finishes_with_all_of_them(
    committed: sessionmaker[Session], settings: Settings
) -> None:
    parent = submit_brood(committed, settings, children=2)
    first, second = children_of(committed, parent.id)
    run_child(committed, first)
    partial = reread(committed, parent.id)
    assert partial.status == JobStatus.RUNNING
    assert partial.result == {"succeeded": 1, "not_succeeded": 0, "complete": False}
    assert (partial.progress, partial.total) == (1, 2)
    run_child(committed, second, fail=True)
    done = reread(committed, parent.id)
    assert done.status == JobStatus.SUCCEEDED
    assert not done.waiting
    assert done.result == {"succeeded": 1, "not_succeeded": 1, "complete": True}


def test_cancelling_a_parent_cancels_queued_children_at_once(
    committed: sessionmaker[Session], settings: Settings
) -> None:
    parent = submit_brood(committed, settings, children=2)
    with session_scope(committed) as session:
        team = session.get(Team, parent.team_id)
        assert team is not None
        cancelled = cancel_job(session, team=team, job_id=parent.id)
        assert cancelled.status == JobStatus.CANCELLED
    assert {c.status for c in children_of(committed, parent.id)} == {JobStatus.CANCELLED}
    final = reread(committed, parent.id)
    assert final.result == {"succeeded": 0, "not_succeeded": 2, "complete": True}


def test_a_cancelled_parent_waits_for_its_running_child_to_stop(
    committed: sessionmaker[Session], settings: Settings
) -> None:
    parent = submit_brood(committed, settings, children=2)
    running, queued = children_of(committed, parent.id)
    with session_scope(committed) as session:
        assert claim_job(session, job_id=running.id, worker="w-1") is not None
    with session_scope(committed) as session:
        team = session.get(Team, parent.team_id)
        assert team is not None
        asked = cancel_job(session, team=team, job_id=parent.id)
        assert asked.status == JobStatus.RUNNING
        assert asked.cancel_requested
    assert reread(committed, queued.id).status == JobStatus.CANCELLED
    with session_scope(committed) as session:
        ack = heartbeat(session, job_id=running.id, attempt=1)
        assert ack.cancel_requested
        assert acknowledge_cancel(session, job_id=running.id, attempt=1) is not None
    final = reread(committed, parent.id)
    assert final.status == JobStatus.CANCELLED
    assert final.result == {"succeeded": 0, "not_succeeded": 2, "complete": True}


def test_a_broken_advance_step_fails_the_parent_and_creates_nothing(
    committed: sessionmaker[Session], settings: Settings, sent: Sent
) -> None:
    parent = submit_brood(committed, settings, children=2, broken=True)
    failed = reread(committed, parent.id)
    assert failed.status == JobStatus.FAILED
    assert failed.error is not None
    assert "ZeroDivisionError: the brood's step is broken" in failed.error
    assert "test_parents.py" in failed.error
    assert children_of(committed, parent.id) == []
    assert sent == []


def test_the_reconciler_moves_on_a_parent_whose_advance_was_lost(
    committed: sessionmaker[Session], settings: Settings
) -> None:
    parent = submit_brood(committed, settings, children=1)
    (child,) = children_of(committed, parent.id)
    with session_scope(committed) as session:
        assert claim_job(session, job_id=child.id, worker="w-1") is not None
    with session_scope(committed) as session:
        # the child's end without its parent's advance (its process died in between)
        JobRepository(session).finish(child.id, 1, result={"ticks": 2, "total": 1.0}, now=utc_now())
    assert reread(committed, parent.id).status == JobStatus.RUNNING
    with session_scope(committed) as session:
        report = reconcile(session, settings=settings)
    assert parent.id in report.advanced
    assert reread(committed, parent.id).status == JobStatus.SUCCEEDED


def test_the_reconciler_leaves_a_waiting_parent_alone_however_old(
    committed: sessionmaker[Session], settings: Settings
) -> None:
    parent = submit_brood(committed, settings, children=1)
    later = utc_now() + timedelta(days=30)
    with session_scope(committed) as session:
        report = reconcile(session, settings=settings, now=later)
    assert parent.id not in report.requeued + report.failed + report.timed_out
    assert reread(committed, parent.id).status == JobStatus.RUNNING


class HatchResult(JobResult):
    stage: str


def advance_hatch(family: Family) -> None:
    if not family.children:
        family.submit(TOY.name, {"ticks": 1}, role={"stage": "check"})
    elif all(c.finished for c in family.children):
        family.finish(HatchResult(stage="checked"))


HATCH = JobKind(
    name="hatch",
    noun="hatches",
    title="hatch",
    spec=BroodSpec,
    result=HatchResult,
    runner="tests.worker.toy_kind:run",
    advance=f"{__name__}:advance_hatch",
)


def test_a_worker_done_with_its_part_leaves_the_job_waiting_on_its_children(
    committed: sessionmaker[Session], settings: Settings
) -> None:
    register_kind(HATCH)
    try:
        with session_scope(committed) as session:
            team = make_team(session)
            job = submit_job(session, team=team, kind="hatch", spec={}, settings=settings).job
        assert job.status == JobStatus.QUEUED
        with session_scope(committed) as session:
            assert claim_job(session, job_id=job.id, worker="w-1") is not None
        with session_scope(committed) as session:
            waiting = finish_job(
                session, job_id=job.id, attempt=1, result=HatchResult(stage="run"), wait=True
            )
            assert waiting is not None
            assert waiting.waiting
        # the worker's attempt holds nothing any more
        with session_scope(committed) as session:
            assert not heartbeat(session, job_id=job.id, attempt=1).accepted
        assert reread(committed, job.id).result == {"stage": "run"}
        (child,) = children_of(committed, job.id)
        run_child(committed, child)
        done = reread(committed, job.id)
        assert done.status == JobStatus.SUCCEEDED
        assert done.result == {"stage": "checked"}
    finally:
        unregister_kind(HATCH.name)
