"""Configuration from ``CLR_*`` environment variables (and a ``.env`` file).

The defaults are the embedded mode: a SQLite file and kombu's filesystem transport
inside ``CLR_DATA_DIR``. Production sets ``CLR_DATABASE_URL`` to PostgreSQL and
``CLR_BROKER_URL`` to Redis. Nothing builds a :class:`Settings` at import time:
call :func:`get_settings` (cached) or build one explicitly and pass it along.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "FILESYSTEM_BROKER_URL",
    "FILESYSTEM_POLLING_INTERVAL_S",
    "REDIS_VISIBILITY_MARGIN_S",
    "Settings",
    "get_settings",
]

FILESYSTEM_BROKER_URL = "filesystem://"
"""kombu's filesystem transport: the embedded mode's broker."""

FILESYSTEM_POLLING_INTERVAL_S = 0.1
"""How often an embedded worker looks for new messages in the broker folder."""

REDIS_VISIBILITY_MARGIN_S = 3600
"""How far Redis' ``visibility_timeout`` sits above the job time limit.

Redis hands an unacknowledged message to another worker once it is older than the
visibility timeout; below the hard time limit that would start a second copy of
every long job (the claim would refuse it, but the message would loop)."""

_POSTGRES_SCHEMES = ("postgres://", "postgresql://")
_SUPPORTED_SCHEMES = ("sqlite://", "sqlite+pysqlite://", "postgresql+psycopg://")


class Settings(BaseSettings):
    """Every setting of the service; ``CLR_<NAME>`` sets field ``<name>``.

    Attributes:
        data_dir: folder of the embedded mode's SQLite file and broker queue.
        database_url: SQLAlchemy URL; ``None`` means the SQLite file in ``data_dir``.
            ``postgres://`` and ``postgresql://`` are read as ``postgresql+psycopg://``.
        broker_url: kombu/Celery broker URL; ``None`` means the filesystem transport.
        heartbeat_interval_s: how often a running job's worker reports it is alive.
        heartbeat_timeout_s: a running job silent this long is taken as lost.
        queued_resend_after_s: a queued job whose message is older than this gets
            its message sent again (an emptied broker loses nothing), if a worker
            of its queue has been idle long enough to show the message is lost.
        max_attempts: claims a job may have; a job lost this many times fails.
        job_time_limit_s: the longest a range test (one attempt) may run.
        training_time_limit_s: the longest one attempt of a training may run (a
            lost worker's training resumes from its checkpoint on a new attempt).
        db_pool_size, db_max_overflow: PostgreSQL connections a process keeps open,
            and how many more it may open at a busy moment. The API serves up to 40
            requests at once (its thread pool); connections beyond the pool are
            closed on return, and a new one costs milliseconds, so the pool is sized
            for a busy API rather than SQLAlchemy's 5.
        max_job_memory_bytes: a job whose estimated memory (weights, gradients,
            optimizer state, activations of a batch, dataset) is over this is
            refused when submitted; 0 turns the check off.
        max_job_seconds: a job whose estimated run time is over this is refused
            when submitted; unset means the kind's time limit (it would be stopped
            there anyway), 0 turns the check off.
        job_flop_rate: FLOP/s a worker is taken to sustain on large matrix products,
            for run-time estimates (a workload's efficiency scales it down). The
            default is a 2-core CPU's (measured); a GPU host sets it 100 times higher.
        max_active_jobs_per_team: queued and running jobs a team may have at once;
            a submit over it gets a 429 with ``Retry-After``. 0 turns the cap off.
        queued_resend_max_s: the longest wait between two re-sends of one queued
            job's message: each re-send doubles the wait from ``queued_resend_after_s``
            up to this.
        worker_prune_after_s: a worker silent this long is dropped from the registry
            (it shows as offline from ``heartbeat_timeout_s`` on).
        db_pool_timeout_s: how long a checkout waits for a free pooled connection
            before giving up (the API answers 503 with ``Retry-After``).
        api_max_concurrency: requests that use the database at once in one API
            process; ``None`` picks 8 on PostgreSQL (at most its pool) and 4 on SQLite
            (its transactions run one at a time). It stays below the thread pool (40)
            and the connection pool, so a request holding a connection always finds a
            thread (see :mod:`api.admission`).
        api_queue_timeout_s: how long a request waits for its turn before a 503.
        api_max_queue: requests that may wait for a turn; more are refused at once.
        api_max_streams: Server-Sent Events streams one API process keeps open.
        api_max_streams_per_team: of those, how many one team may hold (429 beyond).
        api_max_plot_renders: plots one API process draws at once; more wait for a
            turn like requests do (``api_queue_timeout_s``, ``api_max_queue``), then
            get a 503. Drawing takes a thread and the GIL, so a few keep the threads
            and the event loop free for every other request.
        broker_timeout_s: socket timeouts (connect, read) towards a Redis broker, so
            a hung broker fails a send or a readiness check instead of hanging it.
        artifact_dir: a folder every worker and API host mounts (a shared volume):
            when set, new artifacts' bytes (checkpoints, models) are files there and
            only their metadata is in the database; unset, the bytes are chunks in
            the database (see :mod:`core.artifacts`). It must exist: a missing mount
            is an error, never a local folder created in its place.
        max_artifact_bytes: the largest artifact a job may write; a bigger one
            raises :class:`core.errors.ArtifactTooLarge`. 0 turns the cap off.
        fuse_max_members: the most trainings of one parent (a sweep's policies and
            seeds at a grid point, a verification round's candidates) a worker runs
            as one fused run (:mod:`clr.fused_train`); 1 runs every training on its
            own. The device's free memory may allow fewer.
        fuse_memory_fraction: the share of the device's free memory (CUDA's free
            memory, or the host's available memory on a CPU) a fused run may plan
            to use: members beyond it run as jobs of their own.
    """

    model_config = SettingsConfigDict(env_prefix="CLR_", env_file=".env", extra="ignore")

    data_dir: Path = Path(".clr-sweep")
    database_url: str | None = None
    broker_url: str | None = None
    heartbeat_interval_s: float = Field(default=5.0, gt=0, allow_inf_nan=False)
    heartbeat_timeout_s: float = Field(default=60.0, gt=0, allow_inf_nan=False)
    queued_resend_after_s: float = Field(default=30.0, gt=0, allow_inf_nan=False)
    max_attempts: int = Field(default=3, ge=1, le=100)
    job_time_limit_s: int = Field(default=6 * 3600, gt=0)
    training_time_limit_s: int = Field(default=24 * 3600, gt=0)
    db_pool_size: int = Field(default=20, ge=1, le=1000)
    db_max_overflow: int = Field(default=20, ge=0, le=1000)
    max_job_memory_bytes: int = Field(default=4 * 2**30, ge=0)
    max_job_seconds: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    job_flop_rate: float = Field(default=4e10, gt=0, allow_inf_nan=False)
    max_active_jobs_per_team: int = Field(default=1000, ge=0)
    queued_resend_max_s: float = Field(default=600.0, gt=0, allow_inf_nan=False)
    worker_prune_after_s: float = Field(default=86_400.0, gt=0, allow_inf_nan=False)
    db_pool_timeout_s: float = Field(default=5.0, gt=0, le=600, allow_inf_nan=False)
    api_max_concurrency: int | None = Field(default=None, ge=1, le=1000)
    api_queue_timeout_s: float = Field(default=1.0, ge=0, le=60, allow_inf_nan=False)
    api_max_queue: int = Field(default=1000, ge=0, le=100_000)
    api_max_streams: int = Field(default=100, ge=1, le=100_000)
    api_max_streams_per_team: int = Field(default=10, ge=1, le=100_000)
    api_max_plot_renders: int = Field(default=2, ge=1, le=32)
    broker_timeout_s: float = Field(default=5.0, gt=0, le=600, allow_inf_nan=False)
    artifact_dir: Path | None = None
    max_artifact_bytes: int = Field(default=2 * 2**30, ge=0)
    fuse_max_members: int = Field(default=64, ge=1, le=1024)
    fuse_memory_fraction: float = Field(default=0.5, gt=0, le=1, allow_inf_nan=False)

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Absolute once, so an API and a worker started from one folder agree on it
        # even when one of them later changes its working directory.
        return value.expanduser().absolute()

    @field_validator("artifact_dir", mode="before")
    @classmethod
    def _blank_artifact_dir_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @field_validator("artifact_dir")
    @classmethod
    def _absolute_artifact_dir(cls, value: Path | None) -> Path | None:
        # every host names the same files whatever its working directory
        return None if value is None else value.expanduser().absolute()

    @field_validator("database_url", "broker_url", mode="before")
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value.strip() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _use_psycopg_driver(cls, value: str | None) -> str | None:
        if value is None:
            return None
        for scheme in _POSTGRES_SCHEMES:
            if value.startswith(scheme):
                return "postgresql+psycopg://" + value[len(scheme) :]
        if not value.startswith(_SUPPORTED_SCHEMES):
            scheme = value.split("://", 1)[0] if "://" in value else value
            raise ValueError(
                "CLR_DATABASE_URL must be a postgresql:// (psycopg 3) or sqlite:// URL, "
                f"got scheme {scheme!r}"
            )
        return value

    @model_validator(mode="after")
    def _reject_impossible_combinations(self) -> Settings:
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ValueError(
                "CLR_HEARTBEAT_TIMEOUT_S must exceed CLR_HEARTBEAT_INTERVAL_S "
                f"(got {self.heartbeat_timeout_s:g} <= {self.heartbeat_interval_s:g}); "
                "otherwise every running job looks lost between two heartbeats"
            )
        return self

    @model_validator(mode="after")
    def _resend_backoff_has_room(self) -> Settings:
        if self.queued_resend_max_s < self.queued_resend_after_s:
            raise ValueError(
                "CLR_QUEUED_RESEND_MAX_S must be at least CLR_QUEUED_RESEND_AFTER_S "
                f"(got {self.queued_resend_max_s:g} < {self.queued_resend_after_s:g}): "
                "it caps the growing wait between re-sends"
            )
        if self.worker_prune_after_s <= self.heartbeat_timeout_s:
            raise ValueError(
                "CLR_WORKER_PRUNE_AFTER_S must exceed CLR_HEARTBEAT_TIMEOUT_S "
                f"(got {self.worker_prune_after_s:g} <= {self.heartbeat_timeout_s:g}): "
                "a worker is offline before it is forgotten"
            )
        return self

    @property
    def db_url(self) -> str:
        """The database URL in use: ``database_url``, or the SQLite file in ``data_dir``."""
        if self.database_url is not None:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'clr-sweep.db'}"

    @property
    def broker(self) -> str:
        """The broker URL in use: ``broker_url``, or kombu's filesystem transport."""
        return self.broker_url if self.broker_url is not None else FILESYSTEM_BROKER_URL

    @property
    def broker_transport_options(self) -> dict[str, Any]:
        """kombu transport options that go with :attr:`broker`.

        The filesystem transport gets its folders under ``data_dir/broker`` (one folder
        for both directions: producer and consumer share it). Redis gets a
        ``visibility_timeout`` above the job time limit.
        """
        broker = self.broker
        if broker.startswith(FILESYSTEM_BROKER_URL):
            root = self.data_dir / "broker"
            return {
                "data_folder_in": str(root / "queue"),
                "data_folder_out": str(root / "queue"),
                "control_folder": str(root / "control"),
                # a directory listing every 0.1 s: submit → running in ~0.1 s, not ~1 s
                "polling_interval": FILESYSTEM_POLLING_INTERVAL_S,
            }
        if broker.startswith(("redis://", "rediss://")):
            return {
                "visibility_timeout": self.job_time_limit_s + REDIS_VISIBILITY_MARGIN_S,
                # without them a publish to a frozen Redis waits forever (kombu's default)
                "socket_timeout": self.broker_timeout_s,
                "socket_connect_timeout": self.broker_timeout_s,
            }
        return {}


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read from the environment once."""
    return Settings()
