"""The range test's result: curve arrays plus the metadata needed to trust them."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["RangeTestResult", "StopReason"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

StopReason = Literal["completed", "diverged", "non_finite", "cancelled"]


def _arr(values: Any) -> FloatArray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


@dataclass
class RangeTestResult:
    """Everything one LR range test measured.

    Every array has one entry per optimizer step that was kept: a step whose
    loss was not finite ends the test and is not kept, so every value here is
    finite and the curve is the valid prefix of the sweep.

    Attributes:
        lrs: learning rate of the first param group at each step (the others
            kept their ratio to it).
        losses: raw training loss of each step.
        smoothed_losses: exponential moving average of ``losses`` with bias
            correction, ``avg_t / (1 - smoothing**t)``, so early values are not
            pulled towards zero.
        accuracies: the workload's metric on each training batch, when a
            ``metric_fn`` was given (the paper reads accuracy vs LR).
        val_steps: indices into the arrays above where a validation pass ran.
        val_losses / val_accuracies: the validation results at ``val_steps``.
        start_lr, end_lr, num_iter, sweep: the sweep that was asked for.
        smoothing: the EMA factor used for ``smoothed_losses``.
        diverge_th: divergence threshold (multiple of the best smoothed loss).
        stop_reason: ``completed``, ``diverged``, ``non_finite`` or ``cancelled``.
        stop_detail: a sentence saying why the test stopped where it did.
        device: the device the test ran on (``cpu``, ``cuda:0``).
        seconds: wall time of the sweep, restore excluded.
        skipped_steps: optimizer steps skipped by AMP's GradScaler (the LR did
            not advance on them and they are not in the curve).
    """

    lrs: FloatArray
    losses: FloatArray
    smoothed_losses: FloatArray
    start_lr: float
    end_lr: float
    num_iter: int
    sweep: str
    smoothing: float
    diverge_th: float
    stop_reason: StopReason
    stop_detail: str
    device: str
    seconds: float
    accuracies: FloatArray | None = None
    val_steps: IntArray | None = None
    val_losses: FloatArray | None = None
    val_accuracies: FloatArray | None = None
    skipped_steps: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def steps_run(self) -> int:
        """Number of optimizer steps kept in the curve."""
        return int(self.lrs.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists of floats, no numpy types)."""

        def lst(a: npt.NDArray[Any] | None) -> list[Any] | None:
            return None if a is None else a.tolist()

        return {
            "lrs": lst(self.lrs),
            "losses": lst(self.losses),
            "smoothed_losses": lst(self.smoothed_losses),
            "accuracies": lst(self.accuracies),
            "val_steps": lst(self.val_steps),
            "val_losses": lst(self.val_losses),
            "val_accuracies": lst(self.val_accuracies),
            "start_lr": self.start_lr,
            "end_lr": self.end_lr,
            "num_iter": self.num_iter,
            "sweep": self.sweep,
            "smoothing": self.smoothing,
            "diverge_th": self.diverge_th,
            "stop_reason": self.stop_reason,
            "stop_detail": self.stop_detail,
            "device": self.device,
            "seconds": self.seconds,
            "steps_run": self.steps_run,
            "skipped_steps": self.skipped_steps,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RangeTestResult:
        """Inverse of :meth:`to_dict`."""

        def opt(key: str) -> FloatArray | None:
            v = data.get(key)
            return None if v is None else _arr(v)

        val_steps = data.get("val_steps")
        return cls(
            lrs=_arr(data["lrs"]),
            losses=_arr(data["losses"]),
            smoothed_losses=_arr(data["smoothed_losses"]),
            accuracies=opt("accuracies"),
            val_steps=None if val_steps is None else np.asarray(val_steps, dtype=np.int64),
            val_losses=opt("val_losses"),
            val_accuracies=opt("val_accuracies"),
            start_lr=float(data["start_lr"]),
            end_lr=float(data["end_lr"]),
            num_iter=int(data["num_iter"]),
            sweep=str(data["sweep"]),
            smoothing=float(data["smoothing"]),
            diverge_th=float(data["diverge_th"]),
            stop_reason=data["stop_reason"],
            stop_detail=str(data["stop_detail"]),
            device=str(data["device"]),
            seconds=float(data["seconds"]),
            skipped_steps=int(data.get("skipped_steps", 0)),
            metadata=dict(data.get("metadata") or {}),
        )

    def to_json(self) -> str:
        """Serialise to a JSON string (strict JSON: every stored value is finite)."""
        return json.dumps(self.to_dict(), allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> RangeTestResult:
        """Inverse of :meth:`to_json`."""
        return cls.from_dict(json.loads(text))
