"""A kind the tests define plugs in by registering one object (:mod:`tests.worker.toy_kind`).

With the toy kind registered, and nothing else told about it: the API has its
routes and its read schema in the ``/jobs`` union, ``create_celery`` routes its
task with its time limit, and a real Celery worker started with ``-A
tests.worker.toy_kind`` runs a toy job submitted through ``POST /toys`` to its
end, its series readable through ``/jobs/{id}/series/ticks``. Ids of one kind
are 404s (never 500s) under another kind's routes.

The worker consumes a queue of its own (the API's sender routes the jobs
there), so the session's worker, which has no toy task, never takes them.
"""

from __future__ import annotations

import csv
import io
import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from sqlalchemy.orm import Session, sessionmaker
from starlette.routing import NoMatchFound

from api.app import create_app
from api.schemas.jobs import job_read_model
from core.db import session_scope
from core.kinds import RANGE_TEST, all_kinds, get_kind, register_kind, unregister_kind
from core.models import Job, JobStatus
from core.services import create_token
from core.settings import Settings
from tests.builders import make_job, make_team
from tests.worker import toy_kind
from tests.worker.conftest import REPO_ROOT, finished
from worker.celery_app import JOBS_QUEUE, create_celery, task_time_limit_s

with warnings.catch_warnings():
    from starlette.exceptions import StarletteDeprecationWarning

    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

QUEUE = "test-toys"
"""The queue only this module's worker consumes."""

WAIT_S = 90.0
"""Deadline for a job to reach a state (the first one includes the worker's start)."""


@pytest.fixture(scope="module", autouse=True)
def _toy_kind() -> Iterator[None]:
    # this process builds apps with the kind; other modules' apps must not have it
    with toy_kind.registered():
        yield


@contextmanager
def _without_toy() -> Iterator[None]:
    """The registry as it is without the toy kind, for a comparison."""
    unregister_kind(toy_kind.TOY.name)
    try:
        yield
    finally:
        register_kind(toy_kind.TOY)


def _doc() -> dict[str, Any]:
    doc: dict[str, Any] = create_app(Settings(_env_file=None, database_url="sqlite://")).openapi()
    return doc


class TestDerivedFromTheRegistry:
    def test_the_api_has_the_kinds_routes(self) -> None:
        app = create_app(Settings(_env_file=None, database_url="sqlite://"))
        paths = app.openapi()["paths"]
        routes = {(method, path) for path, operations in paths.items() for method in operations}
        assert {
            ("post", "/toys"),
            ("get", "/toys"),
            ("get", "/toys/{job_id}"),
            ("post", "/toys/{job_id}/cancel"),
            ("get", "/toys/{job_id}/events"),
        } <= routes
        job_id = str(uuid.uuid4())
        for name in ("create_toy", "list_toys"):
            assert app.url_path_for(name) == "/toys"
        for name, suffix in (("get_toy", ""), ("cancel_toy", "/cancel")):
            assert app.url_path_for(name, job_id=job_id) == f"/toys/{job_id}{suffix}"
        assert app.url_path_for("stream_toy_events", job_id=job_id) == f"/toys/{job_id}/events"
        with _without_toy():
            app = create_app(Settings(_env_file=None, database_url="sqlite://"))
            assert not [path for path in app.openapi()["paths"] if path.startswith("/toys")]
            with pytest.raises(NoMatchFound):
                app.url_path_for("get_toy", job_id=job_id)

    def test_the_openapi_union_on_kind_includes_it(self) -> None:
        doc = _doc()
        schemas = doc["components"]["schemas"]
        response = doc["paths"]["/jobs/{job_id}"]["get"]["responses"]["200"]
        schema = response["content"]["application/json"]["schema"]
        mapping = {
            k.name: f"#/components/schemas/{job_read_model(k).__name__}" for k in all_kinds()
        }
        assert mapping["toy"] == "#/components/schemas/ToyRead"
        assert set(mapping.values()) == {branch["$ref"] for branch in schema["oneOf"]}
        assert schema["discriminator"]["propertyName"] == "kind"
        assert schema["discriminator"]["mapping"] == mapping
        assert schemas["ToyRead"]["properties"]["kind"]["const"] == "toy"
        result = schemas["ToyRead"]["properties"]["result"]
        assert {"$ref": "#/components/schemas/ToyResult"} in result["anyOf"]
        # its own create body, from its spec, with its examples
        create = doc["paths"]["/toys"]["post"]
        body = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        toy_create = schemas[body.rsplit("/", 1)[-1]]
        assert set(toy_create["properties"]) == {"ticks", "fail_reason"}
        assert toy_create["examples"] == [{"ticks": 3}]
        assert {"202", "401", "422"} <= set(create["responses"])
        kinds = next(p for p in doc["paths"]["/jobs"]["get"]["parameters"] if p["name"] == "kind")
        enum = next(b["enum"] for b in kinds["schema"]["anyOf"] if "enum" in b)
        assert enum == [k.name for k in all_kinds()]
        assert enum[-1] == "toy"

    def test_create_celery_routes_its_task_with_its_time_limit(self) -> None:
        settings = Settings(_env_file=None, database_url="sqlite://", job_time_limit_s=1234)
        app = create_celery(settings)
        task = toy_kind.TOY.task_name
        assert task == "toy.run"
        assert app.conf.task_routes[task] == {"queue": JOBS_QUEUE}
        limit = app.conf.task_annotations[task]["time_limit"]
        assert (
            limit == task_time_limit_s(settings, "toy") == 1234 + int(settings.heartbeat_timeout_s)
        )
        assert app.conf.task_annotations[RANGE_TEST.task_name]["time_limit"] == limit
        with _without_toy():
            app = create_celery(settings)
            assert task not in app.conf.task_routes
            assert task not in app.conf.task_annotations

    def test_its_spec_is_validated_at_submit(self) -> None:
        kind = get_kind("toy")
        assert kind is toy_kind.TOY
        assert kind.spec.model_validate({"ticks": 2}).total_steps() == 2


# ------------------------------------------------------------------ with a real worker


class ToyWorker:
    """The module's worker process and its log."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while needle not in self.text():
            self.check_alive()
            if time.monotonic() > deadline:
                pytest.fail(f"{needle!r} not in the worker log after {WAIT_S} s:\n{self.tail()}")
            time.sleep(0.05)

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"the worker exited with {self.process.returncode}:\n{self.tail()}")

    def tail(self) -> str:
        return self.text()[-4000:]


@pytest.fixture(scope="module")
def toy_worker(
    worker_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ToyWorker]:
    """``celery -A tests.worker.toy_kind worker`` on this module's queue."""
    log = tmp_path_factory.mktemp("toy-worker") / "worker.log"
    env = {
        **os.environ,
        "CLR_DATABASE_URL": str(worker_settings.database_url),
        "CLR_BROKER_URL": worker_settings.broker,
        "CLR_DATA_DIR": str(worker_settings.data_dir),
        "OMP_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
    }
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tests.worker.toy_kind",
        "worker",
        "--pool=solo",
        "--concurrency=1",
        "-Q",
        QUEUE,
        "-n",
        f"toys-{uuid.uuid4().hex[:8]}@%h",
        "--loglevel=INFO",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv, cwd=REPO_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    worker = ToyWorker(process, log)
    try:
        worker.wait_log(" ready.")
        yield worker
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def api(
    db: sessionmaker[Session], worker_settings: Settings, celery_app: Celery
) -> Iterator[TestClient]:
    """The API on the worker's database, authenticated as a new team; the jobs it
    queues go, as ``<kind>.run`` messages, to this module's queue."""

    def send(job_id: uuid.UUID, kind: str, _device: str) -> None:
        celery_app.send_task(get_kind(kind).task_name, args=[str(job_id)], queue=QUEUE)

    with session_scope(db) as session:
        secret = create_token(session, team=make_team(session), name="toys").secret
    with TestClient(create_app(worker_settings, job_sender=send)) as client:
        client.headers["Authorization"] = f"Bearer {secret}"
        yield client


def wait_job(
    db: sessionmaker[Session], worker: ToyWorker, job_id: uuid.UUID, done: Callable[[Job], bool]
) -> Job:
    deadline = time.monotonic() + WAIT_S
    while True:
        with session_scope(db) as session:
            job = session.get(Job, job_id)
            assert job is not None
            session.expunge(job)
        if done(job):
            return job
        worker.check_alive()
        if time.monotonic() > deadline:
            pytest.fail(f"job {job_id} still {job.status} after {WAIT_S} s:\n{worker.tail()}")
        time.sleep(0.05)


def submit_toy(api: TestClient, **spec: Any) -> uuid.UUID:
    response = api.post("/toys", json=spec)
    assert response.status_code == 202, response.text
    body = response.json()
    assert (body["kind"], body["status"], body["total"]) == ("toy", "queued", spec["ticks"])
    assert response.headers["location"] == f"http://testserver/toys/{body['id']}"
    return uuid.UUID(body["id"])


@pytest.mark.worker
class TestRunByARealWorker:
    def test_a_submitted_toy_runs_to_success_and_its_series_is_readable(
        self, db: sessionmaker[Session], api: TestClient, toy_worker: ToyWorker
    ) -> None:
        job_id = submit_toy(api, ticks=4)

        job = wait_job(db, toy_worker, job_id, finished)

        assert job.status == JobStatus.SUCCEEDED, job.error
        assert job.attempt == 1
        toy = api.get(f"/toys/{job_id}").json()
        assert toy["kind"] == "toy"
        assert (toy["status"], toy["progress"], toy["total"]) == ("succeeded", 4, 4)
        assert toy["series_points"] == {"ticks": 4}
        assert toy["result"] == {"ticks": 4, "total": sum(toy_kind.tick_values(4))}
        assert api.get(f"/jobs/{job_id}").json() == toy
        listed = api.get("/jobs", params={"kind": "toy"}).json()["items"]
        assert [item["id"] for item in listed] == [str(job_id)]

        series = api.get(f"/jobs/{job_id}/series/ticks").json()
        assert (series["name"], series["fields"], series["points"]) == ("ticks", ["value"], 4)
        assert series["values"] == {"value": toy_kind.tick_values(4)}
        newer = api.get(f"/jobs/{job_id}/series/ticks", params={"after": 2}).json()
        assert (newer["start"], newer["next_after"]) == (2, 4)
        assert newer["values"] == {"value": toy_kind.tick_values(4)[2:]}
        rows = list(
            csv.reader(io.StringIO(api.get(f"/jobs/{job_id}/series/ticks?format=csv").text))
        )
        assert rows == [["index", "value"], *([str(i), repr(i * i * 1.0)] for i in range(4))]
        # the task the worker ran is the one the registry derived for the kind
        toy_worker.wait_log(f"job.claimed job_id={job_id} attempt=1")
        assert "Task toy.run[" in toy_worker.text()

    def test_a_toy_asked_to_fail_fails_with_its_reason_and_keeps_its_points(
        self, db: sessionmaker[Session], api: TestClient, toy_worker: ToyWorker
    ) -> None:
        job_id = submit_toy(api, ticks=2, fail_reason="no more ticks")

        job = wait_job(db, toy_worker, job_id, finished)

        assert job.status == JobStatus.FAILED
        assert job.attempt == 1
        assert job.error == "the toy was asked to fail: no more ticks"
        assert job.result is None
        series = api.get(f"/jobs/{job_id}/series/ticks").json()
        assert series["values"] == {"value": toy_kind.tick_values(2)}
        assert api.get(f"/toys/{job_id}").json()["error"] == job.error


@pytest.mark.worker
class TestKindsStayApart:
    def test_ids_of_one_kind_are_404_under_another_kinds_routes(
        self, db: sessionmaker[Session], api: TestClient
    ) -> None:
        with session_scope(db) as session:
            team = make_team(session)
            secret = create_token(session, team=team, name="kinds").secret
            toy_id = toy_kind.make_toy_job(session, team=team).id
            range_test_id = make_job(session, team=team).id
        headers = {"Authorization": f"Bearer {secret}"}
        for method, path in [
            ("GET", f"/range-tests/{toy_id}"),
            ("GET", f"/range-tests/{toy_id}/curve"),
            ("GET", f"/range-tests/{toy_id}/bounds"),
            ("GET", f"/range-tests/{toy_id}/plot.png"),
            ("GET", f"/range-tests/{toy_id}/plot.svg"),
            ("GET", f"/range-tests/{toy_id}/events"),
            ("POST", f"/range-tests/{toy_id}/cancel"),
            ("GET", f"/toys/{range_test_id}"),
            ("GET", f"/toys/{range_test_id}/events"),
            ("POST", f"/toys/{range_test_id}/cancel"),
        ]:
            response = api.request(method, path, headers=headers)
            assert response.status_code == 404, (method, path, response.text)
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["title"] == "Job not found"
        # each is found under its own kind's routes, and under /jobs
        for path in (f"/toys/{toy_id}", f"/range-tests/{range_test_id}"):
            assert api.get(path, headers=headers).status_code == 200, path
        kinds = {
            item["id"]: item["kind"] for item in api.get("/jobs", headers=headers).json()["items"]
        }
        assert kinds == {str(toy_id): "toy", str(range_test_id): "range_test"}
        # the refused cancels changed nothing
        with session_scope(db) as session:
            for job_id in (toy_id, range_test_id):
                job = session.get_one(Job, job_id)
                assert (job.status, job.cancel_requested) == (JobStatus.QUEUED, False)
