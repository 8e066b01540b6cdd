"""Jobs a team runs in its own loop and uploads ("bring your own curve").

A team whose model is not a registered workload (private code, private data,
its own cluster) runs :class:`clr.RangeTest` or its own CLR training itself and
streams the points to the service, which stores, suggests, plots and finds them
like any other job. Such a job is created with ``"source": "client"``: instead
of a workload it names the team's configuration (:class:`ClientConfiguration`:
``model``, ``dataset``, ``batch_size``, ``optimizer`` and free ``tags``), and
no worker ever runs it.

- A client job is ``running`` from its creation, held by the worker
  ``client`` (:data:`CLIENT_WORKER`), with one attempt: the team's uploads
  (:func:`core.services.client_jobs.upload_points`) are its heartbeats, and the
  reconciler fails it once they stop for the heartbeat timeout. It counts
  towards the team's cap of active jobs, never towards a worker queue.
- :class:`ClientRangeTestSpec`: the sweep's own settings (``start_lr``,
  ``end_lr``, ``num_iter``, ``sweep``, ``smoothing``, ``diverge_th``,
  ``metric``) tell the service the test's length and how its bounds are read;
  ``iters_per_epoch`` (optional) gives the suggested ``step_size``.
- :class:`ClientTrainingSpec`: the run's length in ``iterations`` and,
  optionally, the schedule it follows (its cycle ends are drawn and counted).

The configuration key of a client range test (what ``GET /bounds`` finds it
by) covers the configuration and the metric, and its ``source``, so it never
equals a workload's.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from clr.exceptions import ScheduleError
from clr.policies import cycle_ends, make_schedule
from core.errors import FieldError
from core.kinds import register_client_spec
from core.specs import (
    CONFIG_KEY_VERSION,
    FiniteFloat,
    JobSpec,
    OptimizerSpec,
    StrictInt,
    _raise_located,
    canonical_json,
)
from core.training import MAX_ITERATIONS, ScheduleSpec, _located

__all__ = [
    "CLIENT",
    "CLIENT_WORKER",
    "MAX_TAGS",
    "ClientConfiguration",
    "ClientRangeTestSpec",
    "ClientTrainingSpec",
    "is_client_spec",
    "tag_text",
]

CLIENT = "client"
"""The ``source`` of a job the team runs in its own loop."""

CLIENT_WORKER = "client"
"""The ``worker`` a client job shows: the team's own process holds it."""

MAX_TAGS = 16
"""Most tags one configuration may have."""

MAX_TAG_KEY = 64
MAX_TAG_TEXT = 256

_TAG_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

TagValue = Annotated[str, Field(max_length=MAX_TAG_TEXT)] | StrictInt | FiniteFloat
"""A tag's value: text, or a finite number (booleans are not accepted)."""

ConfigText = Annotated[str, Field(min_length=1, max_length=128)]


def tag_text(value: str | float) -> str:
    """How a tag's value takes part in a configuration key: text, numbers by value.

    A query string carries only text, so ``seed=1``, ``seed=1.0`` and ``"1"`` all
    name the same tag value ``1``.

    Example:
        >>> [tag_text(v) for v in (1, 1.0, "1", "1.50", "a")]
        ['1', '1', '1', '1.5', 'a']
    """
    number: float | None = None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        number = float(value)
    else:
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        if isinstance(parsed, int | float) and not isinstance(parsed, bool):
            number = float(parsed)
    if number is None or not math.isfinite(number):
        return str(value)
    if number.is_integer() and abs(number) < 2**53:
        return str(int(number))
    return repr(number)


def _no_control(field: str, value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError(f"{field} must not contain control characters")
    return value


class ClientConfiguration(JobSpec):
    """What the team trains, by its own names: the key its bounds are found by.

    Attributes:
        source: ``client``: the team runs the job and uploads its points.
        model: the model's name (``resnet-tiny``), 1 to 128 characters.
        dataset: the dataset's name (``cifar10``), 1 to 128 characters.
        batch_size: training samples per step.
        optimizer: the optimizer and its hyperparameters, as a workload's.
        tags: up to 16 more things that tell configurations apart
            (``{"run": "a", "width": 128}``): keys of letters, digits, ``_``,
            ``.`` and ``-``; values text (up to 256 characters) or numbers.
    """

    source: Literal["client"]
    model: ConfigText
    dataset: ConfigText
    batch_size: StrictInt = Field(ge=1, le=1_000_000)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    tags: dict[str, TagValue] = Field(default_factory=dict)

    runs_on_client: ClassVar[bool] = True

    @field_validator("model", "dataset")
    @classmethod
    def _plain_text(cls, value: str, info: ValidationInfo) -> str:
        return _no_control(str(info.field_name), value)

    @field_validator("tags")
    @classmethod
    def _small_tags(cls, value: dict[str, Any]) -> dict[str, Any]:
        if len(value) > MAX_TAGS:
            raise ValueError(f"at most {MAX_TAGS} tags, got {len(value)}")
        problems: list[FieldError] = []
        for key, item in value.items():
            if not 1 <= len(key) <= MAX_TAG_KEY or not _TAG_KEY.match(key):
                problems.append(
                    {
                        "field": key[:MAX_TAG_KEY],
                        "reason": f"a tag's name is 1 to {MAX_TAG_KEY} letters, digits, "
                        "'_', '.' or '-' (not starting with '.' or '-')",
                    }
                )
            elif isinstance(item, str) and _CONTROL.search(item):
                problems.append({"field": key, "reason": "must not contain control characters"})
        if problems:
            _raise_located("tags", problems, value)
        return value

    def configuration(self) -> dict[str, Any]:
        """The team's configuration: what its key covers (tags compare by :func:`tag_text`)."""
        return {
            "source": CLIENT,
            "model": self.model,
            "dataset": self.dataset,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer.effective(),
            "tags": {k: tag_text(v) for k, v in sorted(self.tags.items())},
        }


class ClientRangeTestSpec(ClientConfiguration):
    """A range test the team runs in its own loop (``clr.RangeTest``) and uploads.

    Attributes (besides :class:`ClientConfiguration`'s): the test's settings as
    :class:`~core.specs.RangeTestSpec` has them (``start_lr``, ``end_lr``,
    ``num_iter``, ``sweep``, ``smoothing``, ``diverge_th``, ``metric``), and
    ``iters_per_epoch``: the team's epoch length in batches, from which the
    suggestions' ``step_size`` (4 epochs a half cycle) and stop iteration follow
    (left out: none is suggested).
    """

    kind: ClassVar[str] = "range_test"

    start_lr: FiniteFloat = Field(default=1e-5, gt=0)
    end_lr: FiniteFloat = Field(default=10.0, gt=0)
    num_iter: StrictInt = Field(default=300, ge=2, le=100_000)
    sweep: Literal["exp", "linear"] = "exp"
    smoothing: FiniteFloat = Field(default=0.95, ge=0, lt=1)
    diverge_th: FiniteFloat = Field(default=5.0, gt=1)
    metric: Literal["loss", "accuracy"] = "loss"
    iters_per_epoch: StrictInt | None = Field(default=None, ge=1, le=10_000_000)

    @field_validator("end_lr")
    @classmethod
    def _range_increases(cls, value: float, info: ValidationInfo) -> float:
        start_lr = info.data.get("start_lr")
        if start_lr is not None and value <= start_lr:
            raise ValueError("start_lr must be below end_lr")
        return value

    def configuration(self) -> dict[str, Any]:
        """The team's configuration and the metric the bounds read."""
        return {**super().configuration(), "metric": self.metric}

    def config_key(self) -> str:
        """SHA-256 of :meth:`configuration` (with ``source``: never a workload's key)."""
        payload = {"v": CONFIG_KEY_VERSION, **self.configuration()}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def total_steps(self) -> int:
        return self.num_iter


class ClientTrainingSpec(ClientConfiguration):
    """A training the team runs in its own loop and logs (its LR/momentum trace and metrics).

    Attributes (besides :class:`ClientConfiguration`'s):
        iterations: the run's planned length in optimizer steps.
        schedule: the ``clr`` schedule it follows, when it follows one (its
            cycle ends are drawn and counted; ``step_size_up`` must be given for
            the cyclic policies, there being no workload to derive it from).
        range_test: the range test whose bounds it uses, if any (shown as is).
    """

    kind: ClassVar[str] = "training"

    iterations: StrictInt = Field(ge=1, le=MAX_ITERATIONS)
    schedule: ScheduleSpec | None = None
    range_test: Annotated[str, Field(max_length=64)] | None = None

    @model_validator(mode="after")
    def _schedule_builds(self) -> ClientTrainingSpec:
        self.cycle_ends()
        return self

    def cycle_ends(self) -> list[int]:
        """Where the schedule's cycles end within ``iterations`` (none without a schedule)."""
        if self.schedule is None or not self.schedule.cyclic:
            return []
        args = self.schedule.arguments()
        if self.schedule.policy == "one_cycle":
            args.setdefault("total_steps", self.iterations)
        try:
            return cycle_ends(make_schedule(self.schedule.policy, **args), self.iterations)
        except (ScheduleError, TypeError) as exc:
            field = next((f"schedule.{k}" for k in args if k in str(exc)), "schedule")
            raise _located(field, str(exc)) from None

    def config_key(self) -> str:
        """A training has no shared configuration lookup: its key covers the spec."""
        payload = {"kind": self.kind, **self.model_dump(mode="json")}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def total_steps(self) -> int:
        return self.iterations


register_client_spec(ClientRangeTestSpec)
register_client_spec(ClientTrainingSpec)


def is_client_spec(spec: object) -> bool:
    """Whether ``spec`` (a parsed spec or a stored one) is of a job the team runs itself."""
    if isinstance(spec, dict):
        return spec.get("source") == CLIENT
    return bool(getattr(spec, "runs_on_client", False))
