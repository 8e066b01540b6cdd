"""The job kinds: one registry from which everything kind-specific is derived.

A kind of job (a range test, a training) is one :class:`JobKind` object. The
service derives everything else from the registry: the spec and result classes
:func:`core.services.submit_job` validates against, the Celery task that runs the
kind and its time limit (:mod:`worker.celery_app`), the queue its messages go to
(by the spec's device), the series its jobs append, whether a retried job starts
over or resumes from its last checkpoint, and the API's routes (``POST /<noun>``,
``GET /<noun>``, ``GET /<noun>/{id}``, cancel, and the kind in ``/jobs``'
discriminated schema). **A new kind plugs in by registering one object**::

    register_kind(JobKind(name="toy", noun="toys", spec=ToySpec, result=ToyResult,
                          runner="my_package.toy:run", series=(...,)))

in a module the API and the worker import before they build their app (the
tests define such a kind in ``tests/worker/toy_kind.py``). The worker imports
``runner`` (``module:function``) when it runs the first job of the kind; the API
never imports it, so a runner may use torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from clr_sweep.contracts import JobRead, RangeTestRead
from core.errors import InvalidJobSpec
from core.series import SeriesSpec
from core.specs import JobResult, JobSpec, RangeTestOutcome, RangeTestResultView, RangeTestSpec

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from core.models import Team
    from core.settings import Settings

__all__ = [
    "BAND",
    "CURVE",
    "RANGE_TEST",
    "JobKind",
    "Prepare",
    "all_kinds",
    "client_spec",
    "get_kind",
    "register_client_spec",
    "register_kind",
    "registered_kind",
    "unregister_kind",
]

Prepare = Callable[["Session", "Team", JobSpec], JobSpec]
"""A kind's last step before a job is stored: resolves references to other jobs
(a training's ``bounds_from``) in the submitting team's transaction."""


@dataclass(frozen=True)
class JobKind:
    """Everything the service knows about one kind of job.

    Attributes:
        name: the kind's name, stored in ``jobs.kind`` (``range_test``).
        noun: its URL segment (``range-tests``): ``POST /<noun>`` creates one.
        title: what a person calls one (``range test``).
        spec: the spec class (validated once, at submit).
        result: the result class (``jobs.result``).
        result_view: how ``GET /<noun>/{id}`` shows the result (default: ``result``).
        read: the job's read schema (a :class:`clr_sweep.contracts.JobRead` with
            ``kind`` fixed and ``result`` typed, such as
            :class:`~clr_sweep.contracts.RangeTestRead`); None: the API derives
            one from ``result_view`` (``<Kind>Read``).
        runner: ``module:function`` the worker calls to run one claimed attempt;
            None for a kind no worker runs (a sweep: its work is its children's).
        advance: ``module:function`` (torch-free: the API imports it) that moves a
            parent job on, called with a :class:`~core.services.parents.Family`
            whenever one of its children ends (and at submit, for a kind without
            a runner; after its worker's part, for one whose runner finishes with
            ``wait=True``). None for a kind that has no children.
        series: the series its jobs append (``GET /jobs/{id}/series/{name}``).
        resumable: a new attempt resumes from the job's last checkpoint, keeping
            the series points written before it (False: it starts over).
        time_limit_setting: the :class:`~core.settings.Settings` field holding how
            long one attempt may run.
        prepare: run at submit after validation (see :data:`Prepare`).
        examples: request bodies the API's documentation shows.
    """

    name: str
    noun: str
    title: str
    spec: type[JobSpec]
    result: type[JobResult]
    runner: str | None
    series: tuple[SeriesSpec, ...] = ()
    resumable: bool = False
    time_limit_setting: str = "job_time_limit_s"
    result_view: type[BaseModel] | None = None
    read: type[JobRead] | None = None
    prepare: Prepare | None = None
    advance: str | None = None
    # not part of the kind's identity: a dict is unhashable, and the API caches the
    # schemas it derives per kind
    examples: tuple[dict[str, Any], ...] = field(default=(), hash=False, compare=False)

    def __post_init__(self) -> None:
        for name, value in (("runner", self.runner), ("advance", self.advance)):
            if value is not None and ":" not in value:
                raise ValueError(f"{name} must be 'module:function', got {value!r}")
        if self.runner is None and self.advance is None:
            raise ValueError(f"kind {self.name!r} has neither a runner nor an advance step")
        names = [s.name for s in self.series]
        if len(set(names)) != len(names):
            raise ValueError(f"kind {self.name!r} declares a series twice: {names}")

    @property
    def worker_run(self) -> bool:
        """Whether workers run jobs of this kind (False: the service moves them on)."""
        return self.runner is not None

    @property
    def task_name(self) -> str:
        """The Celery task that runs this kind (``range_test.run``)."""
        return f"{self.name}.run"

    def time_limit_s(self, settings: Settings) -> int:
        """How long one attempt may run under ``settings``."""
        return int(getattr(settings, self.time_limit_setting))

    @property
    def client_spec(self) -> type[JobSpec] | None:
        """The spec of a job of this kind the team runs in its own loop and uploads
        (``"source": "client"``; :mod:`core.client_specs`), if the kind has one."""
        return _CLIENT_SPECS.get(self.name)

    def spec_class(self, data: object) -> type[JobSpec]:
        """The spec class ``data`` (a request body or a stored spec) is validated with:
        the client spec when it says ``"source": "client"`` and the kind has one."""
        source = data.get("source") if isinstance(data, dict) else getattr(data, "source", None)
        client = self.client_spec
        return client if source == "client" and client is not None else self.spec

    def series_of(self, spec: Mapping[str, Any]) -> tuple[SeriesSpec, ...]:
        """The series a job of this stored ``spec`` has (:attr:`SeriesSpec.only_with`):
        a range test's ``band`` only under ``seeds``."""
        return tuple(s for s in self.series if s.of_spec(spec))

    def series_spec(self, name: str) -> SeriesSpec | None:
        """The series called ``name``, if the kind has one."""
        return next((s for s in self.series if s.name == name), None)


_REGISTRY: dict[str, JobKind] = {}
_CLIENT_SPECS: dict[str, type[JobSpec]] = {}


def register_client_spec(spec: type[JobSpec]) -> type[JobSpec]:
    """Let jobs of ``spec.kind`` be run in the team's own loop, with this spec."""
    _CLIENT_SPECS[spec.kind] = spec
    return spec


def client_spec(kind: str) -> type[JobSpec] | None:
    """The client spec of the kind called ``kind``, if it has one."""
    return _CLIENT_SPECS.get(kind)


def register_kind(kind: JobKind) -> JobKind:
    """Add ``kind`` to the registry (a kind of the same name is replaced); returns it."""
    _REGISTRY[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Remove a kind (tests that define their own)."""
    _REGISTRY.pop(name, None)


@contextmanager
def registered_kind(kind: JobKind) -> Iterator[JobKind]:
    """``kind`` registered for the duration of a ``with`` block."""
    register_kind(kind)
    try:
        yield kind
    finally:
        unregister_kind(kind.name)


def all_kinds() -> list[JobKind]:
    """Every registered kind, in registration order."""
    return list(_REGISTRY.values())


def get_kind(name: str) -> JobKind:
    """The kind called ``name``.

    Raises:
        InvalidJobSpec: no such kind (the message lists the known ones).
    """
    kind = _REGISTRY.get(name)
    if kind is None:
        known = ", ".join(sorted(_REGISTRY))
        reason = f"unknown job kind {name!r}; known kinds: {known}"
        raise InvalidJobSpec(reason, errors=[{"field": "kind", "reason": reason}])
    return kind


CURVE = SeriesSpec(
    name="curve",
    fields=("lr", "loss", "smoothed_loss", "accuracy"),
    optional=frozenset({"accuracy"}),
    description="one point per step of the sweep: the LR, the batch's loss, its "
    "exponential moving average and (when the workload has a metric) the accuracy",
)

BAND = SeriesSpec(
    name="band",
    fields=("lr", "n", "mean", "std", "min", "max"),
    description="a range test under several seeds (`seeds`): one point per LR of the "
    "sweep, the smoothed loss across the seeds still running there: how many (`n`), "
    "their mean, population standard deviation, minimum and maximum; stored when the "
    "seeds have run",
    only_with="seeds",
)

RANGE_TEST = register_kind(
    JobKind(
        name=RangeTestSpec.kind,
        noun="range-tests",
        title="range test",
        spec=RangeTestSpec,
        result=RangeTestOutcome,
        result_view=RangeTestResultView,
        read=RangeTestRead,
        runner="worker.kinds.range_test:run",
        advance="core.verification:advance",
        series=(CURVE, BAND),
        resumable=False,
        examples=(
            {
                "workload": "digits_mlp",
                "params": {"width": 64},
                "optimizer": {"name": "sgd", "momentum": 0.9},
                "start_lr": 1e-5,
                "end_lr": 10,
                "num_iter": 300,
            },
            {
                "workload": "digits_mlp",
                "optimizer": {"name": "sgd", "momentum": 0.9},
                "start_lr": 1e-4,
                "end_lr": 10,
                "num_iter": 200,
                "seeds": [0, 1, 2, 3],
            },
        ),
    )
)
"""The LR range test: sweeps the LR and finds bounds; a new attempt starts over. With
``verify`` it then proves its bounds with child trainings (:mod:`core.verification`)."""

# The other built-in kinds register themselves (their modules import this one).
# the specs of the jobs teams run in their own loop (range tests, trainings)
import core.client_specs  # noqa: E402, F401, I001
import core.sweeps  # noqa: E402, F401
import core.training  # noqa: E402, F401
