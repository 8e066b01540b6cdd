"""Exceptions raised by :mod:`clr`.

The tree::

    CLRError                      base of everything raised on purpose here
    ├── ScheduleError (ValueError)    a schedule or scheduler got impossible arguments
    ├── RangeTestError (ValueError)   the range test could not run: bad arguments, empty loader
    ├── SuggestionError (ValueError)  a curve cannot give bounds
    │   ├── CurveTooShort             fewer usable points than a method needs
    │   ├── NonFiniteCurve            no finite loss in the curve
    │   ├── FlatCurve                 the loss never improves: no descent in the range
    │   └── MonotoneCurve             the loss still falls at end_lr: no upper bound found
    ├── VerificationError (ValueError) bounds cannot be verified: the budget is too small
    └── WorkloadError (ValueError)    unknown workload, unknown or ill-typed parameter
        ├── UnknownWorkload
        └── InvalidWorkloadParams     carries ``errors``: [{"field", "reason"}]

Every message names the argument and the value it rejects, in the manner of
``torch.optim.lr_scheduler`` (``"step_size_up must be a positive integer, got 0"``).
"""

from __future__ import annotations

__all__ = [
    "CLRError",
    "CurveTooShort",
    "FlatCurve",
    "InvalidWorkloadParams",
    "MonotoneCurve",
    "NonFiniteCurve",
    "RangeTestError",
    "ScheduleError",
    "SuggestionError",
    "UnknownWorkload",
    "VerificationError",
    "WorkloadError",
]


class CLRError(Exception):
    """Base class of every error :mod:`clr` raises on purpose."""


class ScheduleError(CLRError, ValueError):
    """A schedule or scheduler was given arguments it cannot follow."""


class RangeTestError(CLRError, ValueError):
    """The range test could not run (bad sweep arguments, an empty loader, ...)."""


class SuggestionError(CLRError, ValueError):
    """A range-test curve cannot give learning-rate bounds."""


class CurveTooShort(SuggestionError):
    """Fewer usable points than the method needs."""


class NonFiniteCurve(SuggestionError):
    """No finite loss value in the curve."""


class FlatCurve(SuggestionError):
    """The loss never improves over the swept range."""


class MonotoneCurve(SuggestionError):
    """The loss still falls at the end of the range, so no upper bound was seen."""


class VerificationError(CLRError, ValueError):
    """Candidate bounds cannot be verified as asked: the budget cannot train them.

    Raised by :func:`clr.verify.plan_halving` before anything trains; the
    message says how many iterations the budget gives and what would fit.
    """


class WorkloadError(CLRError, ValueError):
    """A workload name or its parameters are not acceptable."""


class UnknownWorkload(WorkloadError, KeyError):
    """No workload is registered under that name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidWorkloadParams(WorkloadError):
    """Workload parameters were unknown, ill-typed or out of range.

    Attributes:
        errors: one ``{"field": name, "reason": text}`` per problem.
    """

    def __init__(self, errors: list[dict[str, str]]) -> None:
        self.errors = errors
        super().__init__("; ".join(f"{e['field']}: {e['reason']}" for e in errors))
