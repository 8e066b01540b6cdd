"""A job kind only the tests define, and the Celery app of a worker that runs it.

It proves the claim of :mod:`core.kinds`: a new kind plugs in by registering one
:class:`~core.kinds.JobKind`. Nothing else in the service names it: its routes
(``POST /toys``, ``GET /toys/{id}``, ...), its place in the ``/jobs`` schema,
its Celery task (``toy.run``), the task's route and time limit are all derived
from the registry.

A toy job appends ``ticks`` points to its ``ticks`` series (the value of point
``i`` is ``i * i``), one report per tick with the progress, and succeeds with the
sum of the values; with ``fail_reason`` it fails with that reason after its
ticks instead.

``python -m celery -A tests.worker.toy_kind worker`` runs the real worker (the app
of :mod:`worker.celery_app`, the tasks of :mod:`worker.tasks`) with the kind
registered, the way a plug-in registers its own (when Celery asks this module
for its app). A test process registers it with :func:`registered` for as long
as it needs it: registered on import, it would show in every other test's app
(its routes, the OpenAPI document). The module imports no torch and no worker
code: the API side of a kind is the :class:`~core.kinds.JobKind` alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar

from celery import Celery
from pydantic import Field, StrictInt
from sqlalchemy.orm import Session

from core.kinds import JobKind, register_kind, registered_kind
from core.models import Job, JobStatus, Team
from core.series import SeriesPoints, SeriesSpec
from core.specs import JobResult, JobSpec, canonical_json
from tests.builders import T0

if TYPE_CHECKING:
    from worker.jobs import JobContext

__all__ = [
    "TICKS",
    "TOY",
    "ToyResult",
    "ToySpec",
    "make_toy_job",
    "registered",
    "run",
    "tick_values",
]

TICKS = SeriesSpec("ticks", ("value",), description="one point per tick: its index squared")
"""The toy's one series."""


class ToySpec(JobSpec):
    """A toy job: ``ticks`` points, then success (or failure with ``fail_reason``)."""

    kind: ClassVar[str] = "toy"

    ticks: StrictInt = Field(default=3, ge=1, le=1000)
    fail_reason: str | None = Field(default=None, min_length=1, max_length=200)

    def config_key(self) -> str:
        return hashlib.sha256(canonical_json(self.model_dump(mode="json")).encode()).hexdigest()

    def total_steps(self) -> int:
        return self.ticks


class ToyResult(JobResult):
    """A finished toy job: how many ticks it ran and the sum of their values."""

    ticks: int
    total: float


TOY = JobKind(
    name=ToySpec.kind,
    noun="toys",
    title="toy",
    spec=ToySpec,
    result=ToyResult,
    runner="tests.worker.toy_kind:run",
    series=(TICKS,),
    examples=({"ticks": 3},),
)
"""The kind: the one object that plugs it in."""


def tick_values(ticks: int) -> list[float]:
    """The values of a toy job's ``ticks`` points."""
    return [float(i * i) for i in range(ticks)]


def run(ctx: JobContext) -> str:
    """The toy's runner: one point (and its progress) per tick, then the result."""
    spec = ctx.spec
    assert isinstance(spec, ToySpec)
    values = tick_values(spec.ticks)
    for i, value in enumerate(values):
        if ctx.should_stop():
            return ctx.stopped()
        ctx.reporter.add(SeriesPoints.of(TICKS, i, {"value": [value]}), progress=i + 1)
    if spec.fail_reason is not None:
        return ctx.fail(f"the toy was asked to fail: {spec.fail_reason}")
    return ctx.finish(ToyResult(ticks=spec.ticks, total=sum(values)))


def make_toy_job(session: Session, *, team: Team, ticks: int = 2, **overrides: Any) -> Job:
    """A queued toy job of ``team``, stored without a message; keyword overrides set
    any column (``created_at``, ``status``, ``parent_id``, ...). Times default to
    :data:`tests.builders.T0`."""
    spec = ToySpec(ticks=ticks)
    values: dict[str, Any] = {
        "team_id": team.id,
        "kind": TOY.name,
        "status": JobStatus.QUEUED,
        "spec": spec.model_dump(mode="json"),
        "config_key": spec.config_key(),
        "attempt": 0,
        "max_attempts": 3,
        "cancel_requested": False,
        "progress": 0,
        "total": spec.total_steps(),
        "queued_at": T0,
        "enqueued_at": T0,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(overrides)
    job = Job(**values)
    session.add(job)
    session.flush()
    return job


@contextmanager
def registered() -> Iterator[JobKind]:
    """The toy kind registered in this process, removed again afterwards."""
    with registered_kind(TOY) as kind:
        yield kind


def __getattr__(name: str) -> Celery:
    # ``celery -A tests.worker.toy_kind`` finds the worker's own app here: the kind is
    # registered before the app (its task routes) and worker.tasks (its task) are built
    if name in ("app", "celery"):
        from worker.celery_app import get_celery

        register_kind(TOY)
        return get_celery()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
