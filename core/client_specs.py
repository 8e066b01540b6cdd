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
from typing import Any, ClassVar

from pydantic import model_validator

from clr.exceptions import ScheduleError
from clr.policies import CYCLIC_POLICIES, cycle_ends, make_schedule
from clr_sweep import contracts
from clr_sweep.contracts._validation import canonical_json, located
from core.kinds import register_client_spec
from core.specs import CONFIG_KEY_VERSION, JobSpec

__all__ = [
    "CLIENT",
    "CLIENT_WORKER",
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


class ClientConfiguration(contracts.ClientConfiguration, JobSpec):
    """:class:`clr_sweep.contracts.ClientConfiguration` with the configuration its key
    covers."""

    runs_on_client: ClassVar[bool] = True

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


class ClientRangeTestSpec(contracts.ClientRangeTestSpec, ClientConfiguration):
    """A range test the team runs in its own loop (:class:`clr_sweep.contracts.ClientRangeTestSpec`)
    with its configuration key: the team's configuration and the metric its bounds read."""

    def configuration(self) -> dict[str, Any]:
        """The team's configuration and the metric the bounds read."""
        return {**super().configuration(), "metric": self.metric}

    def config_key(self) -> str:
        """SHA-256 of :meth:`configuration` (with ``source``: never a workload's key)."""
        payload = {"v": CONFIG_KEY_VERSION, **self.configuration()}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def total_steps(self) -> int:
        return self.num_iter


class ClientTrainingSpec(contracts.ClientTrainingSpec, ClientConfiguration):
    """A training the team runs in its own loop (:class:`clr_sweep.contracts.ClientTrainingSpec`)
    whose schedule, when given, builds (:mod:`clr.policies`)."""

    @model_validator(mode="after")
    def _schedule_builds(self) -> ClientTrainingSpec:
        self.cycle_ends()
        return self

    def cycle_ends(self) -> list[int]:
        """Where the schedule's cycles end within ``iterations`` (none without a cyclic
        schedule)."""
        if self.schedule is None or self.schedule.policy not in CYCLIC_POLICIES:
            return []
        args = self.schedule.arguments()
        if self.schedule.policy == "one_cycle":
            args.setdefault("total_steps", self.iterations)
        try:
            return cycle_ends(make_schedule(self.schedule.policy, **args), self.iterations)
        except (ScheduleError, TypeError) as exc:
            field = next((f"schedule.{k}" for k in args if k in str(exc)), "schedule")
            raise located("ClientTrainingSpec", field, str(exc)) from None

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
