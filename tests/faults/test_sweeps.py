"""Sweeps on the real service commands (API, two workers, reaper; PostgreSQL, Redis): the
children fan out over both workers and the table is complete; a worker SIGKILLed
mid-sweep loses no child and duplicates none, whether its trainings ran each on its own
or fused into one run; cancelling a sweep stops its children.

They run two worker processes beside the session's API and are marked ``serial``
with the other fault tests (``make test`` runs them after the parallel phase).
"""

from __future__ import annotations

import os
import re
import signal
import uuid
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import select

from core.db import session_scope
from core.models import Job, JobStatus
from core.specs import RangeTestOutcome
from core.sweeps import SweepResult
from core.training import TrainingOutcome
from tests.faults.conftest import Cluster, claimed_ids
from tests.faults.test_worker_killed import parent_pid

pytestmark = pytest.mark.serial

POLICIES = ["fixed", "triangular2"]
SEEDS = [0, 1]


def sweep_body(step_size: int, **overrides: Any) -> dict[str, Any]:
    """A tiny sweep: digits_mlp of width 16, 2 policies x 2 seeds, 2 cycles of ``step_size``."""
    body: dict[str, Any] = {
        "workload": "digits_mlp",
        "params": {"width": 16},
        "device": "cpu",
        "policies": POLICIES,
        "seeds": SEEDS,
        "step_size": step_size,
        "cycles": 2,
        "verify": False,
        "range_test": {"num_iter": 50, "start_lr": 1e-4, "end_lr": 1.0},
    }
    body.update(overrides)
    return body


def submit_sweep(cluster: Cluster, body: dict[str, Any]) -> uuid.UUID:
    response = cluster.api.client.post("/sweeps", json=body)
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


def children(cluster: Cluster, sweep_id: uuid.UUID) -> list[Job]:
    with session_scope(cluster.fault_env.factory) as session:
        rows = list(session.scalars(select(Job).where(Job.parent_id == sweep_id)))
        session.expunge_all()
    return rows


def role_key(job: Job) -> tuple[Any, ...]:
    role = job.role or {}
    return (role.get("grid"), role.get("stage"), role.get("policy"), role.get("seed"))


EXPECTED_ROLES = {(0, "range_test", None, None)} | {
    (0, None, p, s) for p in POLICIES for s in SEEDS
}


def assert_every_child_once(cluster: Cluster, kids: list[Job]) -> None:
    """Five children, one per role, each succeeded once (one ``job.succeeded`` line; a
    range test that verified its bounds succeeds in an advance step, in a worker or
    the reaper)."""
    assert Counter(role_key(k) for k in kids) == Counter(EXPECTED_ROLES)
    reaper = [] if cluster.reaper is None else [cluster.reaper.log()]
    logs = "".join([*cluster.worker_logs(), *reaper])
    for kid in kids:
        assert kid.status == JobStatus.SUCCEEDED, (role_key(kid), kid.error)
        assert logs.count(f"job.succeeded job_id={kid.id}") == 1


def assert_complete_table(sweep: Job) -> SweepResult:
    assert sweep.status == JobStatus.SUCCEEDED, sweep.error
    result = SweepResult.model_validate(sweep.result)
    assert result.complete
    assert result.failures == []
    assert result.counts == {"succeeded": 5}
    assert (sweep.progress, sweep.total) == (5, 5)
    assert [r.policy for r in result.table] == POLICIES
    for row in result.table:
        assert (row.succeeded, row.failed) == (2, 0)
        assert row.final_val_accuracy is not None
        assert row.final_val_accuracy.n == 2
        assert 0.1 < row.final_val_accuracy.mean <= 1
        assert row.fixed_accuracy is not None
    fixed = result.table[0]
    # the better fixed seed reaches the fixed mean, at the latest at its last epoch end
    assert fixed.iterations_to_fixed is not None
    assert fixed.ratio_to_fixed == pytest.approx(1.0)
    assert {c.policy for c in result.curves} == set(POLICIES)
    return result


UNFUSED = {"CLR_FUSE_MAX_MEMBERS": "1"}
"""Workers that run every training on its own (fused runs: the last test)."""


def test_a_sweeps_children_fan_out_over_two_workers_and_fill_its_table(
    cluster: Cluster,
) -> None:
    cluster.start(workers=2, worker_env=UNFUSED)
    # with its range test's bounds verified by short trainings (its own children; these
    # 88-iteration trainings need more than the default 1.0 run for a first round of 20)
    sweep_id = submit_sweep(cluster, sweep_body(step_size=22, verify=True, verify_budget=3.0))

    [sweep] = cluster.wait_finished([sweep_id])

    result = assert_complete_table(sweep)
    kids = children(cluster, sweep_id)
    assert_every_child_once(cluster, kids)
    (point,) = result.points
    assert point.bounds is not None
    assert (point.bounds.step_size, point.bounds.iterations) == (22, 88)
    (test,) = [k for k in kids if k.kind == "range_test"]
    verification = RangeTestOutcome.model_validate(test.result).verification
    assert verification is not None
    assert verification.full_run_iterations == 88  # counted in the sweep's trainings
    candidates = children(cluster, test.id)
    assert candidates, verification.reason
    assert all(c.status == JobStatus.SUCCEEDED for c in candidates)
    winner = verification.winner
    assert winner is not None, verification.reason
    assert (point.bounds.verified, point.bounds.not_verified) == (True, None)
    assert (point.bounds.base_lr, point.bounds.max_lr) == (winner.base_lr, winner.max_lr)
    # both workers ran some of its trainings
    claims = [set(claimed_ids(log)) for log in cluster.worker_logs()]
    trainings = {str(k.id) for k in kids if k.kind == "training"}
    assert all(c & trainings for c in claims), "one worker ran every training"


def test_a_worker_sigkilled_mid_sweep_loses_no_child_and_duplicates_none(
    cluster: Cluster,
) -> None:
    cluster.start(workers=2, worker_env=UNFUSED)
    # 2 cycles of 20 epochs: seconds per training, so the kill lands mid-run
    sweep_id = submit_sweep(cluster, sweep_body(step_size=440))

    def a_training_progressing() -> Job | None:
        return next(
            (
                k
                for k in children(cluster, sweep_id)
                if k.kind == "training" and k.status == JobStatus.RUNNING and k.progress > 0
            ),
            None,
        )

    victim = cluster.wait_until("a training to report progress", a_training_progressing)
    kill_worker_of(cluster, victim)

    [sweep] = cluster.wait_finished([sweep_id], timeout=180)

    assert_complete_table(sweep)
    kids = children(cluster, sweep_id)
    assert_every_child_once(cluster, kids)
    killed = next(k for k in kids if k.id == victim.id)
    assert killed.attempt == 2
    assert 0 < victim.progress < victim.total, "attempt 1 was not killed mid-run"
    claims = Counter(c for log in cluster.worker_logs() for c in claimed_ids(log))
    assert claims[str(victim.id)] == 2, "one claim per attempt"
    assert all(claims[str(k.id)] == 1 for k in kids if k.id != victim.id)
    assert cluster.reaper is not None
    requeued = re.findall(r"job\.requeued job_id=([0-9a-f-]{36})", cluster.reaper.log())
    assert requeued == [str(victim.id)]


def kill_worker_of(cluster: Cluster, job: Job) -> None:
    """SIGKILL the worker process running ``job`` and its supervisor."""
    assert job.worker is not None
    child = int(job.worker.rsplit(":", 1)[1])
    parent = parent_pid(child)
    supervisors = {w.process.pid: w for w in cluster.workers}
    assert parent_pid(parent) in supervisors, "not one of this test's workers"
    os.kill(parent, signal.SIGKILL)
    os.kill(child, signal.SIGKILL)


def test_a_fused_sweep_job_sigkilled_mid_way_finishes_every_child_exactly_once(
    cluster: Cluster,
) -> None:
    # one worker, so that it claims all four trainings as one fused run
    cluster.start(workers=1)
    # 2 cycles of 100 epochs (8,800 iterations, tens of seconds fused): the kill lands
    # after the first cycle end (4,400) and long before the last
    sweep_id = submit_sweep(cluster, sweep_body(step_size=2200))

    def fused_and_checkpointed() -> list[Job] | None:
        kids = [k for k in children(cluster, sweep_id) if k.kind == "training"]
        running = [k for k in kids if k.status == JobStatus.RUNNING]
        if len(kids) == 4 and len(running) == 4 and all(k.checkpoint for k in running):
            return running
        return None

    running = cluster.wait_until("the fused trainings' first checkpoint", fused_and_checkpointed)
    assert len({k.worker for k in running}) == 1, "the four trainings did not run as one"
    assert {k.checkpoint["artifact"] for k in running if k.checkpoint} == {"fused-checkpoint"}
    progress = {k.id: k.progress for k in running}
    kill_worker_of(cluster, running[0])
    cluster.start(workers=1, reaper=False)  # where the next attempts resume

    [sweep] = cluster.wait_finished([sweep_id], timeout=180)

    assert_complete_table(sweep)
    kids = children(cluster, sweep_id)
    assert_every_child_once(cluster, kids)
    claims = Counter(c for log in cluster.worker_logs() for c in claimed_ids(log))
    resumed: set[int | None] = set()
    for kid in kids:
        if kid.kind != "training":
            assert claims[str(kid.id)] == 1
            continue
        assert kid.attempt == 2
        assert claims[str(kid.id)] == 2, "one claim per attempt"
        assert 0 < progress[kid.id] < kid.total, "attempt 1 was not killed mid-run"
        outcome = TrainingOutcome.model_validate(kid.result)
        resumed.add(outcome.resumed_from)
        assert outcome.fusion is not None
        assert outcome.fusion.fused
        assert outcome.iterations == 8800
    # every member from the first cycle end: they checkpoint together, nothing ran twice
    # before it
    assert resumed == {4400}
    assert cluster.reaper is not None
    requeued = re.findall(r"job\.requeued job_id=([0-9a-f-]{36})", cluster.reaper.log())
    assert sorted(requeued) == sorted(str(k.id) for k in running)


def test_cancelling_a_sweep_stops_its_running_children(cluster: Cluster) -> None:
    cluster.start(workers=2)
    # 2 cycles of 100 epochs: a training runs far longer than a cancel takes to land
    sweep_id = submit_sweep(cluster, sweep_body(step_size=2200))

    def trainings_running() -> list[Job] | None:
        running = [
            k
            for k in children(cluster, sweep_id)
            if k.kind == "training" and k.status == JobStatus.RUNNING and k.progress > 0
        ]
        return running or None

    running = cluster.wait_until("a training to report progress", trainings_running)
    response = cluster.api.client.post(f"/sweeps/{sweep_id}/cancel")
    assert response.status_code == 202, response.text

    [sweep] = cluster.wait_finished([sweep_id])

    assert sweep.status == JobStatus.CANCELLED
    kids = children(cluster, sweep_id)
    assert all(k.finished for k in kids)
    by_id = {k.id: k for k in kids}
    for was_running in running:
        assert by_id[was_running.id].status == JobStatus.CANCELLED
    trainings = [k for k in kids if k.kind == "training"]
    assert len(trainings) == 4  # created before the cancel; none after it
    assert any(k.status == JobStatus.CANCELLED for k in trainings)
    result = SweepResult.model_validate(sweep.result)
    assert not result.complete
    assert sum(result.counts.values()) == 5
