"""A parent's trainings run fused (:mod:`worker.kinds.fused_training`), on real databases.

The runner is called in this process (:func:`worker.jobs.run_job`, as a Celery
task calls it) on trainings made the children of one parent, so each test sets
the worker's fusing settings itself. Every member's stored series, result and
weights are checked against the same training run here with the plain
:class:`clr.train.Trainer` (to float tolerance: the fused members run batched
matrix products). A real worker process running a sweep fused, and one
SIGKILLed mid-way, are in ``tests/faults/test_sweeps.py``.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from sqlalchemy.orm import Session, sessionmaker

from clr.workloads import ParamSpec, TensorBatches, Workload, WorkloadInstance, register_workload
from clr.workloads._registry import _REGISTRY
from core.artifacts import list_artifacts, open_artifact_reader
from core.clock import utc_now
from core.db import session_scope
from core.models import Job, JobStatus, Team
from core.services import WorkerInfo, cancel_job, read_series, record_worker
from core.settings import get_settings
from core.training import TrainingOutcome, TrainingSpec
from tests.builders import make_job, make_team
from tests.worker.conftest import read_job
from tests.worker.test_training import run_in_process, training_data
from worker.jobs import run_job

pytestmark = pytest.mark.worker

WORKER = "fused-test:1"
QUEUE = "fused-tests"
"""The queue of this module's trainings: no live worker of another test (the session's
Celery worker registers in the same database) consumes it, so a claim shares siblings
only with the workers a test registers itself."""


@pytest.fixture(autouse=True)
def fuse_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """The worker's settings read afresh, with what a test sets (``CLR_FUSE_*``)."""
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


def member_data(seed: int, policy: str = "triangular", **overrides: Any) -> dict[str, Any]:
    """A tiny training (digits_mlp width 8, 2 cycles of 44 iterations) of ``policy``."""
    schedule: dict[str, Any] = {"policy": policy, "base_lr": 0.01, "max_lr": 0.3}
    if policy in ("triangular", "triangular2"):
        schedule["step_size_up"] = 22
        length: dict[str, Any] = {"cycles": 2}
    else:
        length = {"iterations": 88, "cycles": None}
    data = training_data(seed=seed, schedule=schedule, snapshots=2, **length)
    if policy == "fixed":
        data["schedule"] = {"policy": "fixed", "lr": 0.1}
        data["snapshots"] = 0
    data.update(overrides)
    return data


def family(db: sessionmaker[Session], specs: list[dict[str, Any]]) -> tuple[Team, list[uuid.UUID]]:
    """Trainings of ``specs``, queued, children of one parent (a queued range test)."""
    with session_scope(db) as session:
        team = make_team(session)
        parent = make_job(session, team=team)
        ids = [
            make_job(
                session,
                team=team,
                kind="training",
                spec=spec,
                parent_id=parent.id,
                role={"index": i},
                queue=QUEUE,
            ).id
            for i, spec in enumerate(specs)
        ]
    return team, ids


def run(db: sessionmaker[Session], job_id: uuid.UUID) -> str:
    return run_job(db, job_id, worker=WORKER, interval_s=0.05, heartbeat_s=0.5)


def outcome_of(job: Job) -> TrainingOutcome:
    assert job.status == JobStatus.SUCCEEDED, job.error
    return TrainingOutcome.model_validate(job.result)


def assert_like_a_plain_run(
    db: sessionmaker[Session], team: Team, job: Job, data: dict[str, Any]
) -> None:
    """The job's stored losses, epochs and final weights are the plain Trainer's."""
    spec = TrainingSpec.model_validate(data)
    want, weights = run_in_process(spec)
    with session_scope(db) as session:
        steps = read_series(session, team=team, job_id=job.id, name="iterations")
        epochs = read_series(session, team=team, job_id=job.id, name="epochs")
    assert steps.column("lr") == pytest.approx(want.lrs, rel=1e-6)
    assert steps.column("loss") == pytest.approx(want.losses, rel=1e-4, abs=1e-6)
    val = [e.val_accuracy for e in want.epochs]
    assert epochs.column("val_accuracy") == pytest.approx(val, abs=1e-6)
    outcome = outcome_of(job)
    assert outcome.final_val_loss == pytest.approx(want.val_loss, rel=1e-4)
    if want.ensemble is not None:
        assert outcome.ensemble_size == want.ensemble.snapshots
        assert outcome.ensemble_val_loss == pytest.approx(want.ensemble.val_loss, rel=1e-4)
    with open_artifact_reader(db, get_settings(), job_id=job.id, name="model") as reader:
        got = torch.load(reader, weights_only=True)
    assert list(got) == list(weights)
    for name, tensor in weights.items():
        torch.testing.assert_close(got[name], tensor, rtol=1e-4, atol=1e-5)


def test_a_parents_trainings_run_as_one_fused_run_each_as_a_plain_run_would(
    committed: sessionmaker[Session],
) -> None:
    specs = [member_data(0), member_data(1), member_data(0, "triangular2"), member_data(2, "fixed")]
    team, ids = family(committed, specs)

    assert run(committed, ids[0]) == "succeeded"

    jobs = [read_job(committed, i) for i in ids]
    for job, data in zip(jobs, specs, strict=True):
        assert job.attempt == 1
        outcome = outcome_of(job)
        fusion = outcome.fusion
        assert fusion is not None
        assert (fusion.fused, fusion.members, fusion.path) == (True, 4, "stacked")
        assert set(fusion.jobs) == set(ids) - {job.id}
        assert fusion.member_bytes is not None
        assert fusion.member_bytes > 0
        assert fusion.capacity is not None
        assert fusion.capacity >= 4
        assert_like_a_plain_run(committed, team, job, data)
        with session_scope(committed) as session:
            names = {a.name for a in list_artifacts(session, job.id)}
        snapshots = {f"snapshot-{k}" for k in range(1, outcome.ensemble_size + 1)}
        assert names == {"model"} | snapshots  # the fused checkpoints are gone
    # the siblings' own messages find them finished and run nothing
    assert [run(committed, i) for i in ids[1:]] == ["skipped"] * 3


@pytest.mark.usefixtures("test_workloads")
def test_a_diverging_member_fails_alone_and_the_others_succeed(
    postgres_committed: sessionmaker[Session],
) -> None:
    db = postgres_committed
    # seed 1's training data holds an infinite input: its loss turns NaN at that batch
    specs = [member_data(s, "fixed", workload=POISONED.name, params={}) for s in (0, 1, 2)]
    team, ids = family(db, specs)

    assert run(db, ids[0]) == "succeeded"

    failed = read_job(db, ids[1])
    assert failed.status == JobStatus.FAILED
    assert failed.error is not None
    assert failed.error.startswith("Diverged: the loss diverged at iteration ")
    with session_scope(db) as session:
        kept = read_series(session, team=team, job_id=ids[1], name="iterations")
    losses = kept.column("loss") or []
    assert losses
    assert all(math.isfinite(v) for v in losses)  # the finite points before it are kept
    assert f"iteration {len(losses)} " in failed.error
    for i in (0, 2):
        assert_like_a_plain_run(db, team, read_job(db, ids[i]), specs[i])


def test_a_cancelled_member_stops_alone_and_ends_while_its_siblings_run(
    postgres_committed: sessionmaker[Session],
) -> None:
    db = postgres_committed
    # long enough (3,000 iterations) that the cancel lands long before the end
    specs = [member_data(s, "fixed", iterations=3000) for s in range(3)]
    team, ids = family(db, specs)
    ended: list[str] = []
    runner = threading.Thread(target=lambda: ended.append(run(db, ids[0])))
    runner.start()
    try:
        deadline = time.monotonic() + 60
        while read_job(db, ids[2]).progress == 0:
            assert runner.is_alive(), ended
            assert time.monotonic() < deadline, "the fused run stored no progress in 60 s"
            time.sleep(0.01)
        with session_scope(db) as session:
            cancel_job(session, team=team, job_id=ids[1])
        # it ends at the next read point, not when the whole group does (review finding)
        while read_job(db, ids[1]).status == JobStatus.RUNNING:
            assert time.monotonic() < deadline, "the cancelled member did not end in 60 s"
            time.sleep(0.01)
        siblings_when_it_ended = [read_job(db, ids[i]).status for i in (0, 2)]
    finally:
        runner.join()

    assert ended == ["succeeded"]
    cancelled = read_job(db, ids[1])
    assert cancelled.status == JobStatus.CANCELLED
    assert 0 < cancelled.progress < 3000
    assert siblings_when_it_ended == [JobStatus.RUNNING, JobStatus.RUNNING]
    for i in (0, 2):
        assert outcome_of(read_job(db, ids[i])).iterations == 3000


def test_siblings_of_another_configuration_are_left_to_their_own_messages(
    postgres_committed: sessionmaker[Session],
) -> None:
    db = postgres_committed
    specs = [member_data(0), member_data(1), member_data(2, params={"width": 16})]
    _, ids = family(db, specs)

    assert run(db, ids[0]) == "succeeded"

    fusion = outcome_of(read_job(db, ids[0])).fusion
    assert fusion is not None
    assert (fusion.members, fusion.jobs) == (2, [ids[1]])
    assert read_job(db, ids[2]).status == JobStatus.QUEUED
    assert run(db, ids[2]) == "succeeded"
    alone = outcome_of(read_job(db, ids[2])).fusion
    assert alone is not None
    assert (alone.fused, alone.reason) == (False, "no sibling was waiting to run with it")


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"CLR_FUSE_MAX_MEMBERS": "1"}, "fusing is off on this worker (CLR_FUSE_MAX_MEMBERS=1)"),
        ({"CLR_FUSE_MEMORY_FRACTION": "1e-12"}, "only 1 member(s) fit the device's free memory"),
        # a worker whose FLOP rate makes each training take days: K of them would not fit
        ({"CLR_JOB_FLOP_RATE": "1"}, "1 member(s) of about "),
    ],
)
def test_a_worker_that_cannot_fuse_runs_each_training_alone_and_says_why(
    postgres_committed: sessionmaker[Session],
    fuse_env: pytest.MonkeyPatch,
    env: dict[str, str],
    reason: str,
) -> None:
    db = postgres_committed
    for name, value in env.items():
        fuse_env.setenv(name, value)
    specs = [member_data(0), member_data(1)]
    team, ids = family(db, specs)

    assert run(db, ids[0]) == "succeeded"

    assert read_job(db, ids[1]).status == JobStatus.QUEUED
    job = read_job(db, ids[0])
    fusion = outcome_of(job).fusion
    assert fusion is not None
    assert fusion.fused is False
    assert fusion.reason.startswith(reason)
    assert_like_a_plain_run(db, team, job, specs[0])


def test_a_training_of_its_own_says_nothing_about_fusing(
    postgres_committed: sessionmaker[Session],
) -> None:
    db = postgres_committed
    with session_scope(db) as session:
        job_id = make_job(session, kind="training", spec=member_data(0)).id

    assert run(db, job_id) == "succeeded"

    assert outcome_of(read_job(db, job_id)).fusion is None


def _instance(model: torch.nn.Module, seed: int, *, poisoned: bool) -> WorkloadInstance:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen)
    y = (x[:, 0] > 0).long()
    val = TensorBatches(x.clone(), y, 256, shuffle=False, seed=seed)
    if poisoned and seed == 1:
        x[100, 3] = float("inf")
    train = TensorBatches(x, y, 16, shuffle=True, seed=seed)
    return WorkloadInstance(
        model=model,
        train_loader=train,
        val_loader=val,
        loss_fn=torch.nn.functional.cross_entropy,
        metric_fn=lambda out, target: (out.argmax(1) == target).float().mean(),
        metric_name="accuracy",
        iters_per_epoch=len(train),
        num_train=256,
        num_val=256,
    )


def _build_batchnorm(_params: dict[str, Any], seed: int, _device: torch.device) -> WorkloadInstance:
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU()]
    return _instance(torch.nn.Sequential(*layers, torch.nn.Linear(16, 2)), seed, poisoned=False)


def _build_poisoned(_params: dict[str, Any], seed: int, _device: torch.device) -> WorkloadInstance:
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2)]
    return _instance(torch.nn.Sequential(*layers), seed, poisoned=True)


_BATCH = ParamSpec("batch_size", int, 16, "training samples per step", 1, 256)
BATCHNORM = Workload(
    name="test_batchnorm_mlp",
    description="Tests only: an MLP with batch norm (does not fuse).",
    params=(_BATCH,),
    builder=_build_batchnorm,
)
POISONED = Workload(
    name="test_poisoned_mlp",
    description="Tests only: an MLP whose seed-1 training data holds an infinite input.",
    params=(_BATCH,),
    builder=_build_poisoned,
)


@pytest.fixture
def test_workloads() -> Iterator[None]:
    """This module's workloads, registered in this process (the runner's) for the test."""
    for workload in (BATCHNORM, POISONED):
        register_workload(workload)
    try:
        yield
    finally:
        with _REGISTRY._lock:
            for workload in (BATCHNORM, POISONED):
                _REGISTRY._workloads.pop(workload.name, None)


@pytest.mark.usefixtures("test_workloads")
def test_a_model_that_does_not_fuse_runs_alone_with_the_reason(
    postgres_committed: sessionmaker[Session],
) -> None:
    db = postgres_committed
    specs = [member_data(s, "fixed", workload=BATCHNORM.name, params={}) for s in (0, 1)]
    _, ids = family(db, specs)

    assert run(db, ids[0]) == "succeeded"

    assert read_job(db, ids[1]).status == JobStatus.QUEUED
    fusion = outcome_of(read_job(db, ids[0])).fusion
    assert fusion is not None
    assert fusion.fused is False
    assert fusion.reason.startswith("the model does not fuse: ")
    assert "batch norm" in fusion.reason.lower() or "batchnorm" in fusion.reason.lower()


def test_siblings_are_shared_with_the_idle_workers_of_their_queue(
    postgres_committed: sessionmaker[Session],
) -> None:
    db = postgres_committed
    specs = [member_data(s) for s in range(5)]
    _, ids = family(db, specs)
    queue = read_job(db, ids[0]).queue
    idle = WorkerInfo(uuid.uuid4(), "idle@test", "test", 1, (queue,), utc_now())
    with session_scope(db) as session:  # a live worker of the queue, idle
        record_worker(session, info=idle, current_job_id=None, idle_since=utc_now())

    assert run(db, ids[0]) == "succeeded"

    # of 4 waiting siblings, this worker took ceil(5 / 2) - 1 = 2 and left 2
    fusion = outcome_of(read_job(db, ids[0])).fusion
    assert fusion is not None
    assert fusion.members == 3
    assert fusion.reason.endswith("; 2 left to 1 idle worker(s)")
    left = [i for i in ids if read_job(db, i).status == JobStatus.QUEUED]
    assert len(left) == 2
    # the idle worker fetches one of their messages (it is busy from then on) and fuses
    # the other with it
    with session_scope(db) as session:
        record_worker(session, info=idle, current_job_id=left[0], idle_since=None)
    assert run(db, left[0]) == "succeeded"
    second = outcome_of(read_job(db, left[1])).fusion
    assert second is not None
    assert (second.members, second.jobs) == (2, [left[0]])


def test_a_sibling_whose_message_another_worker_holds_is_left_to_it(
    postgres_committed: sessionmaker[Session],
) -> None:
    db = postgres_committed
    _, ids = family(db, [member_data(s) for s in range(5)])
    queue = read_job(db, ids[0]).queue
    peer = WorkerInfo(uuid.uuid4(), "peer@test", "test", 2, (queue,), utc_now())
    with session_scope(db) as session:  # another worker has just fetched ids[4]'s message
        record_worker(session, info=peer, current_job_id=ids[4], idle_since=None)

    assert run(db, ids[0]) == "succeeded"

    # 5 members over 2 workers: this one runs 3 and leaves ids[4] (and one more) alone
    fusion = outcome_of(read_job(db, ids[0])).fusion
    assert fusion is not None
    assert fusion.members == 3
    assert ids[4] not in fusion.jobs
    assert fusion.reason.endswith("; 2 left to 1 worker(s) holding a sibling's message")
    assert read_job(db, ids[4]).status == JobStatus.QUEUED
