"""Follow a job to its end with a live progress bar (``wait``, ``submit --wait``).

The bar shows the job's status (while queued: its place in the queue and what it
waits for, as the API explains it), the units done out of its total, the newest
LR and loss (a range test's smoothed loss; a training's mean over the last
:data:`LOSS_WINDOW` iterations, its epoch and validation accuracy; a sweep's
children by status), the time remaining and the time spent. Each poll reads the
job through the client and, only when a series grew, its last points.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cli.output import Output, as_doc, markup_safe
from cli.render import counts_text, status_text

__all__ = ["FINAL_STATUSES", "LOSS_WINDOW", "POLL_INTERVAL_S", "follow"]

FINAL_STATUSES = ("succeeded", "failed", "cancelled")
POLL_INTERVAL_S = 0.25
"""How often a followed job is read: a finished job is seen within this."""
SWEEP_POLL_INTERVAL_S = 0.5
"""How often a followed sweep is read (its result holds the table so far: bigger)."""
LOSS_WINDOW = 20
"""Iterations a training's loss on the bar averages (one batch's loss is noise)."""


def _finite(values: list[float | None] | None) -> list[float]:
    return [v for v in values or () if v is not None and math.isfinite(v)]


class _Latest:
    """The newest points of a job's series, read only when they grew."""

    def __init__(self, client: Any, job_id: str) -> None:
        self.client = client
        self.job_id = job_id
        self.seen: dict[str, int] = {}

    def read(self, job: dict[str, Any], name: str, window: int) -> dict[str, Any] | None:
        """The last ``window`` points of series ``name`` if it grew since the last read."""
        points = int((job.get("series_points") or {}).get(name, 0))
        if points <= 0 or self.seen.get(name) == points:
            return None
        self.seen[name] = points
        response = self.client.request(
            "GET",
            f"/jobs/{self.job_id}/series/{name}",
            params={"after": max(points - window, 0)},
        )
        values: dict[str, Any] = response.json().get("values") or {}
        return values if any(values.values()) else None


class _Detail:
    """The text after the bar, per kind: LR and loss, epoch and accuracy, or counts."""

    def __init__(self, client: Any, job: dict[str, Any]) -> None:
        self.kind = job["kind"]
        self.latest = _Latest(client, str(job["id"]))
        self.lr = math.nan
        self.loss = math.nan
        self.epoch = 0
        self.accuracy = "-"

    def __call__(self, job: dict[str, Any]) -> str:
        if self.kind == "sweep":
            return "jobs  " + counts_text((job.get("result") or {}).get("counts") or {})
        if self.kind == "range_test":
            curve = self.latest.read(job, "curve", 1)
            if curve is not None:
                self.lr = (_finite(curve.get("lr")) or [self.lr])[-1]
                self.loss = (_finite(curve.get("smoothed_loss")) or [self.loss])[-1]
            return f"lr {self.lr:.2e}  loss {self.loss:.4f}"
        iterations = self.latest.read(job, "iterations", LOSS_WINDOW)
        if iterations is not None:
            self.lr = (_finite(iterations.get("lr")) or [self.lr])[-1]
            losses = _finite(iterations.get("loss"))
            self.loss = sum(losses) / len(losses) if losses else self.loss
        epochs = self.latest.read(job, "epochs", 1)
        if epochs is not None:
            self.epoch = int((_finite(epochs.get("epoch")) or [self.epoch - 1])[-1]) + 1
            accuracies = _finite(epochs.get("val_accuracy"))
            if accuracies:
                self.accuracy = f"{accuracies[-1]:.3f}"
        return (
            f"epoch {self.epoch}  lr {self.lr:.2e}  loss {self.loss:.4f}  val acc {self.accuracy}"
        )


def _where(job: dict[str, Any]) -> str:
    return f"on {job['device']} ({job['worker']})" if job.get("worker") else ""


def follow(
    client: Any,
    job: dict[str, Any],
    out: Output,
    *,
    interval_s: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Read the job until it finishes, drawing its progress bar; the final job (a dict).
    ``interval_s``: between two reads (default: by kind).

    Ctrl-C (or :class:`~cli.embedded.Interrupted`) propagates: the caller cancels
    a job it submitted, or only stops watching one it did not.
    """
    detail = _Detail(client, job)
    if interval_s is None:
        interval_s = SWEEP_POLL_INTERVAL_S if job["kind"] == "sweep" else POLL_INTERVAL_S
    with Progress(
        TextColumn("[bold]{task.fields[status]}[/]"),
        BarColumn(bar_width=20 if job["kind"] == "training" else 30),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[where]}"),
        console=out.console,
    ) as progress:
        task = progress.add_task(
            str(job["id"]),
            total=job.get("total") or None,
            completed=job.get("progress", 0),
            status=status_text(markup_safe(job)),
            detail=detail(markup_safe(job)),
            where=_where(markup_safe(job)),
        )
        while job["status"] not in FINAL_STATUSES:
            sleep(interval_s)
            job = as_doc(client.get(str(job["id"])))
            progress.update(
                task,
                completed=job.get("progress", 0),
                total=job.get("total") or None,
                status=status_text(markup_safe(job)),
                detail=detail(markup_safe(job)),
                where=_where(markup_safe(job)),
            )
    return job
