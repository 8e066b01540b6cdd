"""The command each docker-compose service runs, as argv after the ``clr-sweep`` script.

``docker-compose.yml`` must run exactly these (``tests/deploy/test_compose.py``
checks it), and the service tests launch the same argv as real processes, so what
production runs is what the tests exercise.
"""

from __future__ import annotations

__all__ = ["API_PORT", "CONSOLE_SCRIPT", "SERVICE_COMMANDS"]

CONSOLE_SCRIPT = "clr-sweep"
"""The image's entrypoint: the console script of ``[project.scripts]``."""

API_PORT = 8000
"""The port the API listens on inside its container (and publishes)."""

SERVICE_COMMANDS: dict[str, list[str]] = {
    # one-shot: the schema to head before anything else starts
    "migrate": ["db", "upgrade"],
    "api": ["api", "--host", "0.0.0.0", "--port", str(API_PORT)],
    # one Celery worker process per listed GPU, each pinned with CUDA_VISIBLE_DEVICES
    "worker": ["worker", "--gpus", "0"],
    # the reconciler: a small worker on the ``maintenance`` queue with beat embedded
    "reaper": ["reaper"],
}
