"""The prefork pool GPU workers run: a fresh child per job, replaced at once.

With ``worker_max_tasks_per_child=1`` every job's child exits after the job, which
frees its CUDA context. Celery's asynchronous prefork pool notices an exited child
from its sentinel, but not always: its fallback is a timer that runs
``maintain_pool`` every 5 s, so a job arriving after a finished one could wait up
to 5 s for the next child (measured: a median of 3.9 s from submit to running).
This pool runs that timer every :data:`RESPAWN_CHECK_S` instead; the check is a
``waitpid`` per child, cheap enough at this rate. ``clr-sweep worker`` selects it
the way Celery's CLI takes a pool of one's own: ``--pool=custom`` with
``CELERY_CUSTOM_WORKER_POOL=worker.pool:FreshProcessPool`` (:data:`POOL_ENV`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery.concurrency.asynpool import AsynPool
from celery.concurrency.prefork import TaskPool

__all__ = ["POOL", "POOL_ENV", "RESPAWN_CHECK_S", "FreshProcessPool"]

RESPAWN_CHECK_S = 0.1
"""How often the pool replaces children that exited (Celery's default: 5 s)."""

POOL = "worker.pool:FreshProcessPool"
"""Where Celery finds :class:`FreshProcessPool`."""

POOL_ENV = {"CELERY_CUSTOM_WORKER_POOL": POOL}
"""The environment that makes ``celery worker --pool=custom`` run :class:`FreshProcessPool`."""


class _FastRespawnAsynPool(AsynPool):
    @property
    def timers(self) -> dict[Callable[..., Any], float]:
        return {self.maintain_pool: RESPAWN_CHECK_S}


class FreshProcessPool(TaskPool):
    """Celery's prefork pool, replacing an exited child within ``RESPAWN_CHECK_S``."""

    Pool = _FastRespawnAsynPool
