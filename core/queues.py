"""The job queues: which queue a job waits in, and which queues a worker consumes.

The domain needs these names as much as Celery does: a queued job says which
queue it waits in and whether a running worker consumes it, and the reconciler
re-sends a message only where a worker of that queue would have fetched it.
:mod:`worker.celery_app` routes messages with the same functions.
"""

from __future__ import annotations

__all__ = [
    "CPU_QUEUE",
    "CUDA_QUEUE",
    "JOBS_QUEUE",
    "JOB_QUEUES",
    "device_kind_of",
    "queue_for",
    "worker_queues",
]

JOBS_QUEUE = "jobs"
"""Jobs with device ``auto``: every worker consumes it, one job at a time each."""

CUDA_QUEUE = "jobs.cuda"
"""Jobs that asked for ``cuda``: only workers with a GPU consume it."""

CPU_QUEUE = "jobs.cpu"
"""Jobs that asked for ``cpu``: CPU workers, and GPU workers after their own queues."""

JOB_QUEUES = (CUDA_QUEUE, JOBS_QUEUE, CPU_QUEUE)
"""Every queue jobs wait in (a worker that consumes none of them runs no jobs)."""


def queue_for(device: str) -> str:
    """The queue of a job with device preference ``device`` (``auto``, ``cpu``, ``cuda``)."""
    return {"cuda": CUDA_QUEUE, "cpu": CPU_QUEUE}.get(device, JOBS_QUEUE)


def worker_queues(device_kind: str) -> list[str]:
    """The queues a worker on ``device_kind`` (``cuda`` or ``cpu``) consumes, in order.

    Celery polls a worker's queues in turn, so a GPU worker takes CUDA and ``auto``
    jobs alike; CPU-only jobs reach it too, so none waits where no CPU worker runs.
    A CPU worker never takes a job that asked for CUDA.
    """
    if device_kind == "cuda":
        return [CUDA_QUEUE, JOBS_QUEUE, CPU_QUEUE]
    if device_kind == "cpu":
        return [CPU_QUEUE, JOBS_QUEUE]
    raise ValueError(f"device kind must be 'cuda' or 'cpu', got {device_kind!r}")


def device_kind_of(queues: list[str] | tuple[str, ...]) -> str:
    """The device kind of a worker that consumes ``queues``: ``cuda`` if it takes CUDA jobs.

    Only a worker started for a GPU consumes :data:`CUDA_QUEUE` (``clr-sweep worker
    --gpus``), so the queues say what it is without touching CUDA.
    """
    return "cuda" if CUDA_QUEUE in queues else "cpu"
