"""A range test under several seeds (``seeds``) end to end, on real databases.

The fused case runs on the session's real Celery worker; the cases that run the
seeds one after another (a model with batch norm, a worker that does not fuse)
call the runner in this process (:func:`worker.jobs.run_job`, as a Celery task
calls it), so that the test's own workload and settings are the runner's. Every
stored curve, band and confidence is checked against separate
:class:`clr.RangeTest` runs of each seed made here.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import torch
from sqlalchemy.orm import Session, sessionmaker

from clr import RangeTest, RangeTestResult, suggest_all
from clr.workloads import ParamSpec, TensorBatches, Workload, WorkloadInstance, register_workload
from clr.workloads._registry import _REGISTRY
from core.db import session_scope
from core.models import Job, JobStatus, Team
from core.services import cancel_job, get_bounds, read_series, submit_job
from core.settings import Settings, get_settings
from core.specs import RangeTestOutcome, RangeTestSpec, SeedBandDoc
from tests.builders import make_job, make_team, spec_data
from tests.worker.conftest import WaitFor, finished, read_job
from worker.jobs import run_job

pytestmark = pytest.mark.worker

SEEDS = [0, 1, 2]

FUSED_SPEC: dict[str, Any] = spec_data(
    params={"width": 16}, num_iter=60, start_lr=1e-3, end_lr=10.0, seeds=SEEDS, device="cpu"
)
"""digits_mlp under three seeds, each of whose curves gives bounds."""


def separate_runs(data: dict[str, Any]) -> tuple[list[RangeTestResult], int]:
    """Each seed's range test run alone here, and the workload's epoch length."""
    spec = RangeTestSpec.model_validate(data)
    assert spec.seeds is not None
    results = []
    for seed in spec.seeds:
        built, optimizer = spec.model_copy(update={"seed": seed}).build(
            lr=spec.start_lr, device="cpu"
        )
        tester = RangeTest(built.model, optimizer, built.loss_fn, metric_fn=built.metric_fn)
        results.append(
            tester.run(
                built.train_loader,
                start_lr=spec.start_lr,
                end_lr=spec.end_lr,
                num_iter=spec.num_iter,
                sweep=spec.sweep,
                smoothing=spec.smoothing,
                diverge_th=spec.diverge_th,
            )
        )
    return results, built.iters_per_epoch


def seed_band_of(job: Job) -> tuple[RangeTestOutcome, SeedBandDoc]:
    assert job.status == JobStatus.SUCCEEDED, job.error
    outcome = RangeTestOutcome.model_validate(job.result)
    assert outcome.seed_band is not None
    return outcome, outcome.seed_band


def assert_stored_like_separate_runs(
    db: sessionmaker[Session], team: Team, job: Job, runs: list[RangeTestResult], *, rtol: float
) -> None:
    """The curve is the first seed's run; the band the runs' smoothed losses per LR."""
    with session_scope(db) as session:
        curve = read_series(session, team=team, job_id=job.id, name="curve")
        band = read_series(session, team=team, job_id=job.id, name="band")
    first = runs[0]
    assert curve.column("lr") == pytest.approx(first.lrs.tolist(), rel=1e-12)
    assert curve.column("loss") == pytest.approx(first.losses.tolist(), rel=rtol)
    assert curve.column("smoothed_loss") == pytest.approx(first.smoothed_losses.tolist(), rel=rtol)
    points = max(r.steps_run for r in runs)
    padded = np.full((len(runs), points), np.nan)
    for k, r in enumerate(runs):
        padded[k, : r.steps_run] = r.smoothed_losses
    assert band.points == points
    assert job.series_points == {"curve": first.steps_run, "band": points}
    assert band.column("lr") == pytest.approx(max(runs, key=lambda r: r.steps_run).lrs.tolist())
    n = [float(sum(r.steps_run > i for r in runs)) for i in range(points)]
    assert band.column("n") == n
    assert band.column("mean") == pytest.approx(np.nanmean(padded, axis=0).tolist(), rel=rtol)
    assert band.column("std") == pytest.approx(
        np.nanstd(padded, axis=0).tolist(), rel=1e-3, abs=1e-5
    )
    assert band.column("min") == pytest.approx(np.nanmin(padded, axis=0).tolist(), rel=rtol)
    assert band.column("max") == pytest.approx(np.nanmax(padded, axis=0).tolist(), rel=rtol)


@pytest.mark.usefixtures("sender")
def test_seeds_run_fused_on_the_worker_with_the_first_seeds_curve_and_a_band(
    db: sessionmaker[Session], worker_settings: Settings, wait_for: WaitFor
) -> None:
    with session_scope(db) as session:
        team = make_team(session)
        job_id = submit_job(
            session, team=team, kind="range_test", spec=FUSED_SPEC, settings=worker_settings
        ).job.id

    job = wait_for(job_id, finished)

    outcome, band = seed_band_of(job)
    runs, iters_per_epoch = separate_runs(FUSED_SPEC)
    assert_stored_like_separate_runs(db, team, job, runs, rtol=1e-4)
    assert job.progress == runs[0].steps_run
    assert (band.seeds, band.fused, band.path) == (SEEDS, True, "stacked")
    assert band.reason == "the 3 seeds ran as one fused range test (stacked path) on cpu"
    assert band.steps_run == [r.steps_run for r in runs]
    assert band.stop_reasons == [r.stop_reason for r in runs]
    # each seed's curve read alone gives its bounds; across seeds, their geometric mean
    alone = [suggest_all(r, iters_per_epoch=iters_per_epoch) for r in runs]
    max_lrs = [s.default.max_lr for s in alone]
    assert band.failed == {}
    assert band.default is not None
    assert band.default.max_lr == pytest.approx(math.prod(max_lrs) ** (1 / 3), rel=1e-9)
    assert band.max_lr_band == pytest.approx((min(max_lrs), max(max_lrs)))
    assert band.max_lr_band is not None
    assert band.max_lr_band[0] <= band.default.max_lr <= band.max_lr_band[1]
    assert band.seed_spread == pytest.approx(max(max_lrs) / min(max_lrs))
    assert band.confidence is not None
    assert 0 <= band.confidence <= 1
    default_spread = next(s for s in band.spreads if s.method == band.default.method)
    assert default_spread.seeds == SEEDS
    assert default_spread.max_lrs == pytest.approx(max_lrs)
    # the range test's own bounds: the first seed's curve, its confidence from the seeds
    seeded = suggest_all(runs[0], iters_per_epoch=iters_per_epoch, seed_max_lrs=max_lrs)
    assert outcome.suggestions is not None
    assert outcome.suggestions.default.max_lr == pytest.approx(alone[0].default.max_lr)
    assert outcome.suggestions.confidence == pytest.approx(seeded.confidence, rel=1e-9)
    assert abs(seeded.confidence - alone[0].confidence) > 0.01  # the seeds' agreement counts
    with session_scope(db) as session:
        bounds = get_bounds(session, team=team, job_id=job_id)
    assert bounds.suggestions.confidence == pytest.approx(seeded.confidence, rel=1e-9)


@pytest.mark.usefixtures("sender")
def test_a_cancelled_fused_range_test_stops_every_seed(
    db: sessionmaker[Session], worker_settings: Settings, wait_for: WaitFor
) -> None:
    # a low, flat LR never diverges: 100,000 steps of three seeds if the cancel were ignored
    data = spec_data(params={"width": 8}, num_iter=100_000, start_lr=1e-6, end_lr=1e-5, seeds=SEEDS)
    with session_scope(db) as session:
        team = make_team(session)
        job_id = submit_job(
            session, team=team, kind="range_test", spec=data, settings=worker_settings
        ).job.id
    wait_for(
        job_id,
        lambda job: (
            job.status == JobStatus.RUNNING and (job.series_points or {}).get("curve", 0) > 0
        ),
    )

    with session_scope(db) as session:
        cancel_job(session, team=team, job_id=job_id)
    job = wait_for(job_id, finished)

    assert job.status == JobStatus.CANCELLED, job.error
    assert job.result is None
    assert 0 < job.series_points["curve"] < 100_000
    assert "band" not in job.series_points


# --------------------------------------------------------------------------- one by one

WORKER = "seeds-test:1"


def _build_batchnorm(_params: dict[str, Any], seed: int, _device: torch.device) -> WorkloadInstance:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16), torch.nn.ReLU(), torch.nn.Linear(16, 2)
    )
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=gen)
    y = (x[:, 0] > 0).long()
    train = TensorBatches(x, y, 16, shuffle=True, seed=seed)
    return WorkloadInstance(
        model=model,
        train_loader=train,
        val_loader=TensorBatches(x, y, 256, shuffle=False, seed=seed),
        loss_fn=torch.nn.functional.cross_entropy,
        metric_fn=lambda out, target: (out.argmax(1) == target).float().mean(),
        metric_name="accuracy",
        iters_per_epoch=len(train),
        num_train=256,
        num_val=256,
    )


BATCHNORM = Workload(
    name="test_seeds_batchnorm_mlp",
    description="Tests only: an MLP with batch norm (does not fuse).",
    params=(ParamSpec("batch_size", int, 16, "training samples per step", 1, 256),),
    builder=_build_batchnorm,
)


@pytest.fixture
def batchnorm_workload() -> Iterator[str]:
    """The batch-norm workload, registered in this process (the runner's) for the test."""
    register_workload(BATCHNORM)
    try:
        yield BATCHNORM.name
    finally:
        with _REGISTRY._lock:
            _REGISTRY._workloads.pop(BATCHNORM.name, None)


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """The runner's settings read afresh, with what a test sets (``CLR_FUSE_*``)."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def run_here(db: sessionmaker[Session], data: dict[str, Any]) -> tuple[Team, Job]:
    with session_scope(db) as session:
        team = make_team(session)
        job_id = make_job(session, team=team, spec=data).id
    assert run_job(db, job_id, worker=WORKER, interval_s=0.05, heartbeat_s=0.5) == "succeeded"
    return team, read_job(db, job_id)


def test_a_model_that_does_not_fuse_runs_its_seeds_one_by_one_with_the_reason(
    postgres_committed: sessionmaker[Session], batchnorm_workload: str
) -> None:
    data = spec_data(
        workload=batchnorm_workload, params={}, num_iter=40, start_lr=1e-3, seeds=[4, 5]
    )

    team, job = run_here(postgres_committed, data)

    _, band = seed_band_of(job)
    assert (band.seeds, band.fused, band.path) == ([4, 5], False, None)
    assert band.reason.startswith("the model does not fuse: batch norm in training mode (1: ")
    runs, _ = separate_runs(data)
    # the same RangeTest runs as here, one after another: equal to the bit
    assert_stored_like_separate_runs(postgres_committed, team, job, runs, rtol=0)


@pytest.mark.usefixtures("fresh_settings")
def test_a_worker_that_fuses_fewer_members_than_seeds_runs_them_one_by_one(
    postgres_committed: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLR_FUSE_MAX_MEMBERS", "2")
    data = spec_data(params={"width": 8}, num_iter=30, start_lr=1e-3, seeds=[0, 1, 2])

    team, job = run_here(postgres_committed, data)

    _, band = seed_band_of(job)
    assert (band.fused, band.path) == (False, None)
    assert band.reason == (
        "this worker fuses at most 2 members (CLR_FUSE_MAX_MEMBERS), fewer than the 3 seeds"
    )
    runs, _ = separate_runs(data)
    assert_stored_like_separate_runs(postgres_committed, team, job, runs, rtol=0)
