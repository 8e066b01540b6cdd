"""A training broken on purpose: its worker SIGKILLed (on Redis and PostgreSQL, and in
the embedded ``serve``), Redis flushed, PostgreSQL restarted. Each time it finishes
once, with no point of its series stored twice or missing.

A training resumes from its last cycle-end checkpoint: after a lost worker the
next attempt, on another process, must give the same LR trace and, on the CPU,
bit-identical final weights to an uninterrupted run. The uninterrupted run is
the same training run here, in the test process, with :class:`clr.train.Trainer`
(computed once for the module).
"""

from __future__ import annotations

import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import httpx
import pytest
import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from cli.service import TOKEN_FILE, free_port
from core.db import make_engine, make_session_factory, session_scope
from core.models import Job, JobStatus, SeriesChunk, Team
from core.services import get_team, read_series
from core.settings import Settings
from core.training import TrainingOutcome, TrainingSpec
from tests.faults.conftest import (
    HEARTBEAT_INTERVAL_S,
    HEARTBEAT_TIMEOUT_S,
    QUEUED_RESEND_AFTER_S,
    START_S,
    Cluster,
    FaultEnv,
    Service,
    claimed_ids,
    start_service,
    stop_services,
    wait_until,
)
from tests.faults.test_postgres_restarted import local_cluster, pg_ctlcluster
from tests.faults.test_worker_killed import parent_pid
from tests.worker.test_training import (
    assert_same_weights,
    iters_per_epoch,
    load_artifact,
    run_in_process,
    torch_cyclic_trace,
    training_data,
)

pytestmark = pytest.mark.serial

STEP = 1100
"""Half a cycle: 50 epochs of digits_mlp (a whole number: a cycle end ends an epoch),
a second or so on a worker: a kill after the first checkpoint has seconds to land
before the run ends."""
CYCLES = 4
"""A checkpoint at each cycle end: a kill after the first leaves three cycles to resume."""
DATA = training_data(
    schedule={"policy": "triangular", "base_lr": 0.01, "max_lr": 0.3, "step_size_up": STEP},
    cycles=CYCLES,
)
SPEC = TrainingSpec.model_validate(DATA)
ITERATIONS = SPEC.iteration_count()
EPOCHS = -(-ITERATIONS // iters_per_epoch(SPEC))

OUTAGE_S = 3.0
"""How long PostgreSQL stays down mid-training (as in test_postgres_restarted)."""


@dataclass(frozen=True)
class Reference:
    """The uninterrupted training, run in the test process."""

    lrs: list[float]
    losses: list[float]
    weights: dict[str, torch.Tensor]


@cache
def reference() -> Reference:
    result, weights = run_in_process(SPEC)
    assert result.stop_reason == "completed"
    assert result.lrs == pytest.approx(
        torch_cyclic_trace(
            ITERATIONS, mode="triangular", base_lr=0.01, max_lr=0.3, step_size_up=STEP
        )[0],
        rel=1e-9,
    )
    return Reference(result.lrs, result.losses, weights)


@pytest.fixture
def fault_settings(fault_env: FaultEnv) -> Settings:
    """Settings of the services the cluster starts (where their artifacts are read)."""
    return Settings(
        _env_file=None,
        database_url=fault_env.env["CLR_DATABASE_URL"],
        data_dir=Path(fault_env.env["CLR_DATA_DIR"]),
    )


def submit_training(client: httpx.Client) -> uuid.UUID:
    response = client.post("/trainings", json=DATA)
    assert response.status_code == 202, response.text
    return uuid.UUID(response.json()["id"])


def load_job(factory: sessionmaker[Session], job_id: uuid.UUID) -> Job:
    with session_scope(factory) as session:
        job = session.get(Job, job_id)
        assert job is not None
        session.expunge(job)
        return job


def series_chunks(
    factory: sessionmaker[Session], job_id: uuid.UUID, name: str
) -> list[SeriesChunk]:
    """Every stored chunk of one of the job's series, in point order."""
    with session_scope(factory) as session:
        chunks = list(
            session.scalars(
                select(SeriesChunk)
                .where(SeriesChunk.job_id == job_id, SeriesChunk.name == name)
                .order_by(SeriesChunk.start)
            )
        )
        session.expunge_all()
    return chunks


def assert_series_stored_once(
    factory: sessionmaker[Session], job: Job, *, resumed_at: dict[str, int] | None
) -> None:
    """Both series run from point 0 to their full length without gaps or overlaps. A
    resumed job keeps the earlier attempt's points up to its checkpoint (``resumed_at``)
    and the final attempt measured every point after it; otherwise one attempt measured all.
    """
    for name, count in (("iterations", ITERATIONS), ("epochs", EPOCHS)):
        chunks = series_chunks(factory, job.id, name)
        position = 0
        for chunk in chunks:
            assert chunk.start == position, f"{name}: gap or overlap at point {position}"
            position += chunk.size
        assert position == count == job.series_points[name]
        if resumed_at is None:
            assert {c.attempt for c in chunks} == {job.attempt}
            continue
        kept = resumed_at[name]
        assert 0 < kept < count
        assert {c.attempt for c in chunks if c.start < kept} == {job.attempt - 1}
        assert {c.attempt for c in chunks if c.start >= kept} == {job.attempt}


def assert_same_training_as_uninterrupted(
    factory: sessionmaker[Session], settings: Settings, team: Team, job: Job
) -> TrainingOutcome:
    """The job succeeded with the uninterrupted run's LR trace, losses and final weights."""
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert job.progress == job.total == ITERATIONS
    outcome = TrainingOutcome.model_validate(job.result)
    assert outcome.iterations == ITERATIONS
    assert outcome.cycle_ends == SPEC.cycle_ends()
    want = reference()
    with session_scope(factory) as session:
        steps = read_series(session, team=team, job_id=job.id, name="iterations")
    assert steps.column("lr") == want.lrs
    assert steps.column("loss") == want.losses
    assert_same_weights(load_artifact(factory, settings, job.id, "model"), want.weights)
    return outcome


def resumed_lines(log: str, job_id: uuid.UUID) -> list[tuple[int, int]]:
    """``(attempt, iteration)`` of each ``training.resumed`` line of a worker log."""
    pattern = rf"training\.resumed job_id={job_id} attempt=(\d+) iteration=(\d+)"
    return [(int(a), int(i)) for a, i in re.findall(pattern, log)]


def past_a_checkpoint(job: Job) -> bool:
    """Running, with a checkpoint published and points stored after it (mid-cycle)."""
    checkpoint = job.checkpoint
    return (
        job.status == JobStatus.RUNNING
        and checkpoint is not None
        and job.series_points.get("iterations", 0) > checkpoint["series"]["iterations"]
    )


def kill_worker_of(job: Job, *, spare: int | None = None) -> tuple[int, int]:
    """SIGKILL the Celery worker running ``job`` and its pool child, as on a crashed host
    (never process ``spare``); their pids (parent, child)."""
    assert job.worker is not None
    child = int(job.worker.rsplit(":", 1)[1])
    parent = parent_pid(child)
    assert spare not in (parent, child), "the job's worker is not a pool child"
    os.kill(parent, signal.SIGKILL)
    os.kill(child, signal.SIGKILL)
    return parent, child


# --------------------------------------------------------------------------- Redis + PostgreSQL


def test_sigkilled_worker_training_resumes_from_its_checkpoint_on_attempt_2(
    cluster: Cluster, fault_settings: Settings
) -> None:
    reference()  # before the clock starts: the job must not wait for it
    factory = cluster.fault_env.factory
    cluster.start(workers=2)
    job_id = submit_training(cluster.api.client)
    running = cluster.wait_until(
        "the training to be past a checkpoint",
        lambda: job if past_a_checkpoint(job := cluster.job(job_id)) else None,
    )
    assert running.attempt == 1
    supervisors = {w.process.pid: w for w in cluster.workers}
    assert running.worker is not None
    killed = supervisors[parent_pid(parent_pid(int(running.worker.rsplit(":", 1)[1])))]
    parent, child = kill_worker_of(running)
    checkpoint = cluster.job(job_id).checkpoint  # attempt 1's last: nothing changes it now
    assert checkpoint is not None
    assert checkpoint["attempt"] == 1
    resumed_at = checkpoint["series"]
    assert checkpoint["progress"] == resumed_at["iterations"] in SPEC.cycle_ends()[:-1]

    [job] = cluster.wait_finished([job_id])

    outcome = assert_same_training_as_uninterrupted(factory, fault_settings, cluster.api.team, job)
    assert job.attempt == 2
    assert job.worker is not None
    assert int(job.worker.rsplit(":", 1)[1]) not in (parent, child)
    assert outcome.resumed_from == checkpoint["progress"]
    assert_series_stored_once(factory, job, resumed_at=resumed_at)
    logs = cluster.worker_logs()
    assert [line for log in logs for line in resumed_lines(log, job_id)] == [
        (2, checkpoint["progress"])
    ]
    claims = [claimed for log in logs for claimed in claimed_ids(log)]
    assert claims.count(str(job_id)) == 2, "one claim per attempt"
    assert sum(log.count(f"job.succeeded job_id={job_id}") for log in logs) == 1
    assert cluster.reaper is not None
    requeued = re.findall(rf"job\.requeued job_id={job_id} attempt=(\d+)", cluster.reaper.log())
    assert requeued == ["1"]
    cluster.wait_until("the killed worker to be back", lambda: killed.ready_count() == 2)


def test_training_finishes_once_when_redis_is_flushed_mid_run(
    cluster: Cluster, fault_settings: Settings
) -> None:
    reference()
    factory, broker = cluster.fault_env.factory, cluster.fault_env.broker
    cluster.start(workers=1)
    job_id = submit_training(cluster.api.client)
    # a second training queued behind it (one worker holds one message at a time): its
    # message waits in Redis
    queued_id = submit_training(cluster.api.client)
    cluster.wait_until(
        "the first training to be past a checkpoint",
        lambda: past_a_checkpoint(cluster.job(job_id)),
    )

    assert broker.flushdb()
    assert broker.dbsize() == 0
    waiting = cluster.job(queued_id)
    assert cluster.job(job_id).series_points["iterations"] < ITERATIONS, "flushed after the end"
    assert waiting.status == JobStatus.QUEUED  # (the one worker was still busy with the first)

    [job, queued] = sorted(cluster.wait_finished([job_id, queued_id]), key=lambda j: j.id != job_id)

    for finished in (job, queued):
        assert_same_training_as_uninterrupted(factory, fault_settings, cluster.api.team, finished)
        assert finished.attempt == 1
        assert_series_stored_once(factory, finished, resumed_at=None)
        assert TrainingOutcome.model_validate(finished.result).resumed_from is None
    logs = cluster.worker_logs()
    claims = [claimed for log in logs for claimed in claimed_ids(log)]
    assert sorted(claims) == sorted([str(job_id), str(queued_id)]), "one claim each"
    for finished in (job, queued):
        assert sum(log.count(f"job.succeeded job_id={finished.id}") for log in logs) == 1


@pytest.mark.skipif(
    not os.environ.get("CLR_TEST_RESTART_POSTGRES"),
    reason="stops the local PostgreSQL server: set CLR_TEST_RESTART_POSTGRES=1 (CI does)",
)
def test_training_finishes_once_when_postgres_restarts_mid_run(
    cluster: Cluster, fault_settings: Settings
) -> None:
    local_cluster()
    reference()
    factory = cluster.fault_env.factory
    cluster.start(workers=1)
    job_id = submit_training(cluster.api.client)
    cluster.wait_until(
        "the training to be past a checkpoint",
        lambda: past_a_checkpoint(cluster.job(job_id)),
    )
    pg_ctlcluster("stop")
    try:
        time.sleep(OUTAGE_S)  # the outage itself, not a wait for something to happen
    finally:
        pg_ctlcluster("start")

    def finished_job() -> Job | None:
        try:
            [job] = cluster.jobs([job_id])
        except Exception:  # the database is still coming back
            return None
        return job if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED) else None

    job = cluster.wait_until("the training to finish", finished_job, interval=0.2)
    # the API's pooled connections died with the server: its first requests after the
    # restart may be 503s while it replaces them; the next test needs it answering
    cluster.wait_until(
        "the API to answer 200 again",
        lambda: cluster.api.client.get(f"/trainings/{job_id}").status_code == 200,
        interval=0.2,
    )

    outcome = assert_same_training_as_uninterrupted(factory, fault_settings, cluster.api.team, job)
    if job.attempt == 1:  # the worker never noticed the outage
        assert outcome.resumed_from is None
        assert_series_stored_once(factory, job, resumed_at=None)
    else:  # its report failed, the reaper requeued it: resumed from a checkpoint
        assert job.attempt == 2
        assert outcome.resumed_from in SPEC.cycle_ends()[:-1]
        assert outcome.resumed_from is not None
        # a cycle end ends an epoch too (STEP is a whole number of epochs)
        kept = {
            "iterations": outcome.resumed_from,
            "epochs": outcome.resumed_from // iters_per_epoch(SPEC),
        }
        assert_series_stored_once(factory, job, resumed_at=kept)
    logs = cluster.worker_logs()
    assert sum(log.count(f"job.succeeded job_id={job_id}") for log in logs) == 1


# --------------------------------------------------------------------------- embedded


@dataclass
class Embedded:
    """``clr-sweep serve`` on a data folder: SQLite and kombu's filesystem transport."""

    service: Service
    data_dir: Path
    client: httpx.Client
    settings: Settings
    factory: sessionmaker[Session]

    @property
    def worker_log(self) -> Path:
        return self.data_dir / "logs" / "cpu1.log"

    @property
    def services(self) -> list[Service]:
        """``serve``, and its worker's and reaper's logs (their tails show on a failure)."""
        logs = self.data_dir / "logs"
        process = self.service.process
        return [
            self.service,
            *(
                Service(n, process, logs / f"{n}.log")
                for n in ("cpu1", "reaper")
                if (logs / f"{n}.log").exists()
            ),
        ]

    def worker_ready_count(self) -> int:
        if not self.worker_log.exists():
            return 0
        return self.worker_log.read_text(errors="replace").count(" ready.")


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Embedded]:
    """``python -m cli serve`` with the fault tests' short heartbeat timings."""
    data_dir = tmp_path / "data"
    env = {
        **os.environ,
        "CLR_DATA_DIR": str(data_dir),
        "CLR_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_INTERVAL_S),
        "CLR_HEARTBEAT_TIMEOUT_S": str(HEARTBEAT_TIMEOUT_S),
        "CLR_QUEUED_RESEND_AFTER_S": str(QUEUED_RESEND_AFTER_S),
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    for key in ("CLR_DATABASE_URL", "CLR_BROKER_URL", "CLR_TOKEN", "CLR_URL"):
        env.pop(key, None)
    port = free_port()
    service = start_service(
        "serve", ["serve", "--port", str(port), "--stop-grace", "0"], env, tmp_path
    )
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=10.0)
    settings = Settings(_env_file=None, data_dir=data_dir)
    engine = make_engine(settings)

    def ready() -> bool:
        try:
            return client.get("/readyz").status_code == 200 and (data_dir / TOKEN_FILE).exists()
        except httpx.TransportError:
            return False

    try:
        wait_until("serve to answer /readyz", ready, [service], timeout=START_S, interval=0.2)
        token = (data_dir / TOKEN_FILE).read_text().strip()
        client.headers["Authorization"] = f"Bearer {token}"
        running = Embedded(service, data_dir, client, settings, make_session_factory(engine))
        wait_until("the worker to be ready", running.worker_ready_count, [service])
        yield running
    finally:
        client.close()
        stop_services([service])
        engine.dispose()


def test_embedded_sigkilled_worker_comes_back_and_resumes_the_training(
    embedded: Embedded,
) -> None:
    reference()
    factory, services = embedded.factory, embedded.services
    job_id = submit_training(embedded.client)
    running = wait_until(
        "the training to be past a checkpoint",
        lambda: job if past_a_checkpoint(job := load_job(factory, job_id)) else None,
        services,
    )
    assert running.attempt == 1
    parent, child = kill_worker_of(running, spare=embedded.service.process.pid)
    checkpoint = load_job(factory, job_id).checkpoint
    assert checkpoint is not None
    assert checkpoint["attempt"] == 1
    resumed_at = checkpoint["series"]
    assert checkpoint["progress"] == resumed_at["iterations"] in SPEC.cycle_ends()[:-1]

    def finished() -> Job | None:
        job = load_job(factory, job_id)
        return job if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED) else None

    job = wait_until("the training to finish", finished, services)

    with session_scope(factory) as session:
        team = get_team(session, name="local")
        session.expunge(team)
    outcome = assert_same_training_as_uninterrupted(factory, embedded.settings, team, job)
    assert job.attempt == 2
    assert job.worker is not None
    assert int(job.worker.rsplit(":", 1)[1]) not in (parent, child)
    assert outcome.resumed_from == checkpoint["progress"]
    assert_series_stored_once(factory, job, resumed_at=resumed_at)
    # the serve's supervisor restarted its one worker, which ran attempt 2
    assert embedded.worker_ready_count() == 2
    log = embedded.worker_log.read_text(errors="replace")
    assert resumed_lines(log, job_id) == [(2, checkpoint["progress"])]
    assert claimed_ids(log).count(str(job_id)) == 2
    assert "worker.exited name=cpu1" in embedded.service.log()
    reaper_log = (embedded.data_dir / "logs" / "reaper.log").read_text(errors="replace")
    assert re.findall(rf"job\.requeued job_id={job_id} attempt=(\d+)", reaper_log) == ["1"]
