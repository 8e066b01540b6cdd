"""``training.run`` end to end: a real worker, Redis and PostgreSQL.

A training submitted through :func:`core.services.submit_job` runs on the
session's worker process. What it stores is checked against two references
computed here, in the test process: torch's own ``CyclicLR`` for the LR (and
momentum) trace, and the same training run in-process with
:class:`clr.train.Trainer` for the final weights and the snapshots (bit for
bit: both run on the CPU with one thread).
"""

from __future__ import annotations

import math
import time
import uuid
from typing import Any

import pytest
import torch
from sqlalchemy.orm import Session, sessionmaker

from clr import Trainer, create_scheduler, make_optimizer
from clr.train import TrainResult
from clr.workloads import build_workload, get_workload
from core.artifacts import list_artifacts, open_artifact_reader
from core.db import session_scope
from core.errors import ArtifactNotFound
from core.models import JobStatus, Team
from core.services import cancel_job, read_series, submit_job
from core.settings import Settings
from core.training import TrainingOutcome, TrainingSpec
from tests.builders import make_team
from tests.worker.conftest import WaitFor, finished

pytestmark = pytest.mark.worker

STEP = 22
"""Half a cycle in iterations: one epoch of digits_mlp at batch size 64."""
BASE_LR = 0.01
MAX_LR = 0.3


def training_data(**overrides: Any) -> dict[str, Any]:
    """A tiny CPU training spec as a request gives it (3 cycles of 44 iterations)."""
    data: dict[str, Any] = {
        "workload": "digits_mlp",
        "params": {"width": 8},
        "device": "cpu",
        "seed": 0,
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "schedule": {
            "policy": "triangular",
            "base_lr": BASE_LR,
            "max_lr": MAX_LR,
            "step_size_up": STEP,
        },
        "cycles": 3,
        "snapshots": 0,
    }
    data.update(overrides)
    return data


def iters_per_epoch(spec: TrainingSpec) -> int:
    per_epoch = get_workload(spec.workload).iters_per_epoch(spec.params)
    assert per_epoch is not None
    return per_epoch


def torch_cyclic_trace(
    iterations: int,
    *,
    mode: str,
    base_lr: float,
    max_lr: float,
    step_size_up: int,
    base_momentum: float | None = None,
    max_momentum: float | None = None,
) -> tuple[list[float], list[float]]:
    """The LR and momentum ``torch.optim.lr_scheduler.CyclicLR`` sets on a dummy SGD
    optimizer at each of ``iterations`` steps (read before each step, as the trainer does)."""
    weight = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([weight], lr=base_lr, momentum=0.9)
    cycle_momentum = base_momentum is not None
    scheduler = torch.optim.lr_scheduler.CyclicLR(
        optimizer,
        base_lr=base_lr,
        max_lr=max_lr,
        step_size_up=step_size_up,
        mode=mode,  # type: ignore[arg-type]
        cycle_momentum=cycle_momentum,
        base_momentum=0.8 if base_momentum is None else base_momentum,
        max_momentum=0.9 if max_momentum is None else max_momentum,
    )
    lrs: list[float] = []
    moms: list[float] = []
    for _ in range(iterations):
        group = optimizer.param_groups[0]
        lrs.append(float(group["lr"]))
        moms.append(float(group["momentum"]))
        optimizer.step()
        scheduler.step()
    return lrs, moms


def run_in_process(spec: TrainingSpec) -> tuple[TrainResult, dict[str, torch.Tensor]]:
    """The spec's training run here with :class:`clr.train.Trainer`: its result and
    final weights (on the CPU)."""
    policy, args, iterations = spec.resolved_schedule()
    built = build_workload(spec.workload, spec.params, seed=spec.seed, device="cpu")
    optimizer = make_optimizer(
        spec.optimizer.name,
        built.model.parameters(),
        lr=args.get("lr") or args.get("base_lr") or 1e-3,  # as the runner does
        momentum=spec.optimizer.momentum,
        weight_decay=spec.optimizer.weight_decay,
        nesterov=spec.optimizer.nesterov,
    )
    trainer = Trainer(
        built.model,
        optimizer,
        built.loss_fn,
        metric_fn=built.metric_fn,
        scheduler=create_scheduler(optimizer, policy, **args),
    )
    result = trainer.run(
        built.train_loader,
        val_loader=built.val_loader,
        iterations=iterations,
        snapshots=spec.snapshot_count(),
    )
    return result, {k: v.detach().cpu() for k, v in built.model.state_dict().items()}


def load_artifact(
    db: sessionmaker[Session], settings: Settings, job_id: uuid.UUID, name: str
) -> Any:
    """A job's artifact read back from the artifact store, ``torch.load``'ed."""
    with open_artifact_reader(db, settings, job_id=job_id, name=name) as reader:
        return torch.load(reader, weights_only=True)


def stored_artifacts(
    db: sessionmaker[Session], job_id: uuid.UUID, *, until: set[str], timeout: float = 30.0
) -> set[str]:
    """The job's artifact names once they are ``until`` (or, after ``timeout`` s, as they are)."""
    deadline = time.monotonic() + timeout
    while True:
        with session_scope(db) as session:
            names = {a.name for a in list_artifacts(session, job_id)}
        if names == until or time.monotonic() > deadline:
            return names
        time.sleep(0.05)


def assert_same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    different = [name for name in want if not torch.equal(got[name], want[name])]
    assert not different, f"weights differ: {different}"


def submit(
    db: sessionmaker[Session], settings: Settings, data: dict[str, Any]
) -> tuple[Team, uuid.UUID]:
    with session_scope(db) as session:
        team = make_team(session)
        job = submit_job(session, team=team, kind="training", spec=data, settings=settings).job
    return team, job.id


class TestTrainingRun:
    @pytest.mark.usefixtures("sender")
    def test_training_succeeds_with_series_checkpoint_model_and_snapshots(
        self, db: sessionmaker[Session], worker_settings: Settings, wait_for: WaitFor
    ) -> None:
        data = training_data(snapshots=2)
        spec = TrainingSpec.model_validate(data)
        iterations, ends = spec.iteration_count(), spec.cycle_ends()
        team, job_id = submit(db, worker_settings, data)

        job = wait_for(job_id, finished)

        assert job.status == JobStatus.SUCCEEDED, job.error
        assert job.attempt == 1
        assert job.progress == job.total == iterations == 3 * 2 * STEP
        outcome = TrainingOutcome.model_validate(job.result)
        assert outcome.stop_reason == "completed"
        assert outcome.iterations == iterations
        assert outcome.cycle_ends == ends == [44, 88, 132]
        assert outcome.resumed_from is None
        assert outcome.ensemble_size == 2
        assert {a["name"] for a in outcome.artifacts} == {"model", "snapshot-1", "snapshot-2"}
        n_epochs = math.ceil(iterations / iters_per_epoch(spec))
        assert outcome.epochs == n_epochs
        assert job.series_points == {"iterations": iterations, "epochs": n_epochs}
        with session_scope(db) as session:
            steps = read_series(session, team=team, job_id=job_id, name="iterations")
            epochs = read_series(session, team=team, job_id=job_id, name="epochs")
        assert steps.size == steps.points == iterations
        for field in ("lr", "momentum", "loss"):
            column = steps.column(field)
            assert column is not None
            assert len(column) == iterations
        assert epochs.size == epochs.points == n_epochs
        assert epochs.column("epoch") == [float(e) for e in range(n_epochs)]
        per_epoch = iters_per_epoch(spec)
        assert epochs.column("iteration") == [
            float(min((e + 1) * per_epoch, iterations)) for e in range(n_epochs)
        ]
        val_accuracy = epochs.column("val_accuracy")
        assert val_accuracy is not None
        assert val_accuracy[-1] == outcome.final_val_accuracy
        # the checkpoint served only a resume: deleted once the weights are kept (just
        # after the job is marked succeeded: a stale attempt must not delete it first)
        assert stored_artifacts(db, job_id, until={"model", "snapshot-1", "snapshot-2"}) == {
            "model",
            "snapshot-1",
            "snapshot-2",
        }

        # the final weights and snapshots: those of the same training run here
        reference, weights = run_in_process(spec)
        assert steps.column("lr") == reference.lrs
        assert steps.column("loss") == pytest.approx(reference.losses, rel=1e-6)
        model = load_artifact(db, worker_settings, job_id, "model")
        assert_same_weights(model, weights)
        assert reference.snapshot_iterations == ends[-2:]
        for k, state in enumerate(reference.snapshot_states, start=1):
            assert_same_weights(load_artifact(db, worker_settings, job_id, f"snapshot-{k}"), state)
        # the last checkpoint was taken at the last cycle end, which ends the run
        assert job.checkpoint is not None
        assert job.checkpoint["artifact"] == "checkpoint"
        assert job.checkpoint["attempt"] == 1
        assert job.checkpoint["series"] == {"iterations": ends[-1], "epochs": n_epochs}
        assert job.checkpoint["progress"] == ends[-1]

    @pytest.mark.usefixtures("sender")
    @pytest.mark.parametrize("mode", ["triangular", "triangular2"])
    def test_lr_trace_equals_torch_cyclic_lr(
        self,
        db: sessionmaker[Session],
        worker_settings: Settings,
        wait_for: WaitFor,
        mode: str,
    ) -> None:
        data = training_data(
            schedule={
                "policy": mode,
                "base_lr": BASE_LR,
                "max_lr": MAX_LR,
                "step_size_up": STEP,
            },
        )
        iterations = TrainingSpec.model_validate(data).iteration_count()
        team, job_id = submit(db, worker_settings, data)

        job = wait_for(job_id, finished)

        assert job.status == JobStatus.SUCCEEDED, job.error
        with session_scope(db) as session:
            steps = read_series(session, team=team, job_id=job_id, name="iterations")
        want_lrs, _ = torch_cyclic_trace(
            iterations, mode=mode, base_lr=BASE_LR, max_lr=MAX_LR, step_size_up=STEP
        )
        assert steps.column("lr") == pytest.approx(want_lrs, rel=1e-9)
        # no momentum cycling asked: SGD's own momentum at every step
        assert steps.column("momentum") == [0.9] * iterations
        if mode == "triangular2":  # the test can tell the two modes apart
            lrs = steps.column("lr")
            assert lrs is not None
            assert max(lrs[2 * STEP :]) < max(lrs[: 2 * STEP])

    @pytest.mark.usefixtures("sender")
    def test_momentum_trace_equals_torch_cyclic_lr_when_momentum_cycles(
        self, db: sessionmaker[Session], worker_settings: Settings, wait_for: WaitFor
    ) -> None:
        data = training_data(
            schedule={
                "policy": "triangular",
                "base_lr": BASE_LR,
                "max_lr": MAX_LR,
                "step_size_up": STEP,
                "base_momentum": 0.8,
                "max_momentum": 0.95,
            },
            cycles=2,
        )
        iterations = TrainingSpec.model_validate(data).iteration_count()
        team, job_id = submit(db, worker_settings, data)

        job = wait_for(job_id, finished)

        assert job.status == JobStatus.SUCCEEDED, job.error
        with session_scope(db) as session:
            steps = read_series(session, team=team, job_id=job_id, name="iterations")
        want_lrs, want_momenta = torch_cyclic_trace(
            iterations,
            mode="triangular",
            base_lr=BASE_LR,
            max_lr=MAX_LR,
            step_size_up=STEP,
            base_momentum=0.8,
            max_momentum=0.95,
        )
        assert steps.column("lr") == pytest.approx(want_lrs, rel=1e-9)
        assert steps.column("momentum") == pytest.approx(want_momenta, rel=1e-9)
        assert min(want_momenta) == pytest.approx(0.8)
        assert max(want_momenta) == pytest.approx(0.95)

    @pytest.mark.usefixtures("sender")
    def test_cancelled_running_training_stops_and_keeps_its_series(
        self, db: sessionmaker[Session], worker_settings: Settings, wait_for: WaitFor
    ) -> None:
        # 100 cycles: minutes if the cancel were ignored
        data = training_data(cycles=100)
        iterations = TrainingSpec.model_validate(data).iteration_count()
        team, job_id = submit(db, worker_settings, data)
        wait_for(
            job_id,
            lambda job: (
                job.status == JobStatus.RUNNING
                and (job.series_points or {}).get("iterations", 0) > 0
            ),
        )

        with session_scope(db) as session:
            cancel_job(session, team=team, job_id=job_id)
        job = wait_for(job_id, finished)

        assert job.status == JobStatus.CANCELLED, job.error
        assert job.attempt == 1
        assert job.result is None
        stored = job.series_points["iterations"]
        assert 0 < stored < iterations
        assert job.progress == stored  # iterations done, out of total
        with session_scope(db) as session:
            steps = read_series(session, team=team, job_id=job_id, name="iterations")
            names = {a.name for a in list_artifacts(session, job_id)}
        assert steps.size == stored
        want_lrs, _ = torch_cyclic_trace(
            stored, mode="triangular", base_lr=BASE_LR, max_lr=MAX_LR, step_size_up=STEP
        )
        assert steps.column("lr") == pytest.approx(want_lrs, rel=1e-9)
        assert "model" not in names
        with pytest.raises(ArtifactNotFound):
            load_artifact(db, worker_settings, job_id, "model")
