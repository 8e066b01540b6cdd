"""``create_celery``: the configuration a long GPU job needs, from settings alone."""

from __future__ import annotations

import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from core.errors import InvalidJobSpec
from core.settings import Settings
from worker.celery_app import (
    CPU_QUEUE,
    CUDA_QUEUE,
    JOBS_QUEUE,
    MAINTENANCE_QUEUE,
    RANGE_TEST_TASK,
    RECONCILE_TASK,
    create_celery,
    queue_for,
    task_time_limit_s,
    worker_queues,
)
from worker.sender import CelerySender

REPO_ROOT = Path(__file__).resolve().parents[3]


def redis_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return Settings(
        _env_file=None, data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/9", **overrides
    )


class TestCreateCelery:
    def test_long_job_reliability_settings(self, tmp_path: Path) -> None:
        conf = create_celery(redis_settings(tmp_path)).conf

        assert conf.broker_url == "redis://127.0.0.1:6379/9"
        assert conf.task_acks_late is True
        assert conf.task_reject_on_worker_lost is True
        assert conf.worker_prefetch_multiplier == 1
        assert conf.worker_cancel_long_running_tasks_on_connection_loss is False
        assert conf.task_serializer == "json"
        assert conf.accept_content == ["json"]

    def test_visibility_timeout_outlasts_the_hard_time_limit(self, tmp_path: Path) -> None:
        settings = redis_settings(
            tmp_path, job_time_limit_s=100, training_time_limit_s=50, heartbeat_timeout_s=7200.0
        )
        conf = create_celery(settings).conf

        # the longest kind's limit, plus one heartbeat timeout of grace
        assert conf.task_time_limit == task_time_limit_s(settings) == 7300
        assert conf.broker_transport_options["visibility_timeout"] > conf.task_time_limit

    def test_each_kind_s_task_has_its_own_time_limit(self, tmp_path: Path) -> None:
        settings = redis_settings(
            tmp_path, job_time_limit_s=100, training_time_limit_s=5000, heartbeat_timeout_s=60.0
        )
        conf = create_celery(settings).conf

        assert conf.task_annotations["range_test.run"] == {"time_limit": 160}
        assert conf.task_annotations["training.run"] == {"time_limit": 5060}
        assert conf.task_time_limit == 5060
        assert conf.broker_transport_options["visibility_timeout"] > 5060
        assert conf.task_routes["training.run"] == {"queue": "jobs"}

    def test_embedded_mode_uses_the_filesystem_broker(self, tmp_path: Path) -> None:
        conf = create_celery(Settings(_env_file=None, data_dir=tmp_path)).conf

        assert conf.broker_url == "filesystem://"
        assert conf.broker_transport_options["data_folder_in"].startswith(str(tmp_path))

    def test_beat_runs_the_reconciler_on_its_own_queue(self, tmp_path: Path) -> None:
        settings = redis_settings(tmp_path, queued_resend_after_s=20.0, heartbeat_timeout_s=60.0)
        conf = create_celery(settings).conf

        entry = conf.beat_schedule["reconcile"]
        assert entry["task"] == RECONCILE_TASK
        assert entry["schedule"] == timedelta(seconds=10)
        assert conf.task_routes[RECONCILE_TASK] == {"queue": MAINTENANCE_QUEUE}

    def test_tasks_are_registered_under_their_names(self, tmp_path: Path) -> None:
        app = create_celery(redis_settings(tmp_path))
        app.loader.import_default_modules()

        assert {RANGE_TEST_TASK, RECONCILE_TASK} <= set(app.tasks)

    def test_importing_the_entry_module_builds_no_app(self) -> None:
        # CLR_DATABASE_URL is invalid: reading settings at import would raise.
        code = "import worker.celery_app, worker.sender; print('ok')"
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=REPO_ROOT,
            env={"CLR_DATABASE_URL": "mysql://nope", "PATH": ""},
            capture_output=True,
            text=True,
            check=False,
        )

        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "ok"


class TestCelerySender:
    def test_unknown_kind_is_refused_by_the_caller_not_the_send_thread(
        self, tmp_path: Path
    ) -> None:
        sender = CelerySender(create_celery(redis_settings(tmp_path)))

        with pytest.raises(InvalidJobSpec, match="unknown job kind 'nope'; known kinds: "):
            sender(uuid.uuid4(), "nope", "auto")

    @pytest.mark.parametrize(
        ("device", "queue"), [("cuda", CUDA_QUEUE), ("cpu", CPU_QUEUE), ("auto", JOBS_QUEUE)]
    )
    def test_the_message_goes_to_the_device_queue(
        self, tmp_path: Path, device: str, queue: str
    ) -> None:
        # the embedded filesystem transport: a real broker that needs no server
        app = create_celery(Settings(_env_file=None, data_dir=tmp_path))
        job_id = uuid.uuid4()
        CelerySender(app)(job_id, "range_test", device)

        with app.connection_for_read() as conn:
            for name in (CUDA_QUEUE, CPU_QUEUE, JOBS_QUEUE):
                message = conn.SimpleQueue(name).get_nowait() if name == queue else None
                if message is not None:
                    assert message.headers["task"] == RANGE_TEST_TASK
                    assert message.payload[0] == [str(job_id)]  # (args, kwargs, embed)
                    message.ack()
                    continue
                assert conn.default_channel.queue_declare(name, passive=False).message_count == 0


class TestQueues:
    def test_each_device_preference_has_its_queue(self) -> None:
        queues = [queue_for(device) for device in ("cuda", "cpu", "auto")]
        assert queues == [CUDA_QUEUE, CPU_QUEUE, JOBS_QUEUE]

    def test_a_cpu_worker_never_takes_a_cuda_job(self) -> None:
        assert CUDA_QUEUE not in worker_queues("cpu")
        assert worker_queues("cpu") == [CPU_QUEUE, JOBS_QUEUE]

    def test_a_gpu_worker_takes_its_own_queues_first_then_cpu_jobs(self) -> None:
        assert worker_queues("cuda") == [CUDA_QUEUE, JOBS_QUEUE, CPU_QUEUE]

    def test_an_unknown_device_kind_is_refused(self) -> None:
        with pytest.raises(ValueError, match="'tpu'"):
            worker_queues("tpu")
