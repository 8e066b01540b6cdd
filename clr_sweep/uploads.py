"""Bring your own curve: stream a range test or a training run in your own loop to the service.

A team whose model is not a registered workload runs :class:`clr.RangeTest` (or
its own training loop) itself and still gets what the service gives: every
method's suggested bounds, ``GET /bounds`` by the team's own configuration
names, plots, and its trainings next to the service's. The job is created with
``"source": "client"`` (no worker runs it); the objects here send its points
as they come, a few times a second, and finish it.

Example::

    from clr_sweep import Client
    from clr_sweep.uploads import range_test_uploader

    client = Client()
    with range_test_uploader(
        client, model="my-net", dataset="my-data", batch_size=64,
        optimizer=optimizer, start_lr=1e-5, end_lr=1, num_iter=200,
    ) as upload:
        clr.RangeTest(model, optimizer, loss_fn).run(
            loader, start_lr=1e-5, end_lr=1, num_iter=200,
            callback=upload, should_stop=upload.should_stop,
        )
    bounds = client.bounds(upload.job_id)

The uploader is the range test's ``callback`` (it reads the chunks
:class:`clr.RangeTestProgress` hands over: ``start``, ``lrs``, ``losses``,
``smoothed_losses``, ``accuracies``) or is fed point by point with
:meth:`RangeTestUploader.add`; a :class:`TrainingLogger` is a
:class:`clr.Trainer`'s ``callback`` or fed with :meth:`TrainingLogger.log` and
:meth:`TrainingLogger.log_epoch` from a plain loop. Points are gathered and
sent by a background thread every ``flush_interval`` seconds (and at the end),
in uploads of at most ``max_points``; while nothing new comes a heartbeat is
sent every ``keepalive`` seconds, so a long validation pass does not look like a
dead client (the service fails a client job that stays silent for its
heartbeat timeout, 60 s by default). Leaving the ``with`` block finishes the
job: ``succeeded``, or ``failed`` with the exception's text when the block
raised (``cancelled`` on ``KeyboardInterrupt``). When the job is cancelled on
the service (``clr-sweep range-test cancel``), :meth:`should_stop` turns True:
pass it as ``should_stop=`` and the loop stops.

After a crash, :func:`resume` (``Client.resume_upload``) attaches a new process to the
job while it is still running: the uploader starts from the points the service has,
and a loop that starts over is not sent again what is stored.

This module imports neither torch nor ``clr``: it reads their objects by their
attributes.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from clr_sweep.contracts import AnyJobRead
from clr_sweep.errors import ClientError, Conflict

if TYPE_CHECKING:
    from clr_sweep.client import Client

__all__ = [
    "DEFAULT_FLUSH_INTERVAL_S",
    "DEFAULT_KEEPALIVE_S",
    "MAX_POINTS_PER_UPLOAD",
    "RangeTestUploader",
    "TrainingLogger",
    "JobFinished",
    "optimizer_spec",
    "range_test_uploader",
    "resume",
    "training_logger",
]

DEFAULT_FLUSH_INTERVAL_S = 0.25
"""How often gathered points are sent."""

DEFAULT_KEEPALIVE_S = 15.0
"""How long the uploader stays silent before it sends a heartbeat (the service's
timeout is 60 s by default)."""

MAX_POINTS_PER_UPLOAD = 400
"""Most points one upload carries (a request body is at most 64 KiB)."""

_MAX_ERROR = 10_000

Row = dict[str, float | None]

_JOB: TypeAdapter[Any] = TypeAdapter(AnyJobRead)


def _job(data: Any) -> Any:
    """An answer's job as the contracts read it (``RangeTestRead``, ``TrainingRead``)."""
    return _JOB.validate_python(data)


_OPTIMIZER_NAMES = {"SGD": "sgd", "Adam": "adam", "AdamW": "adamw"}


def optimizer_spec(optimizer: Any) -> dict[str, Any]:
    """The service's ``optimizer`` object for a name, a dict, a pydantic
    ``OptimizerSpec`` or a torch ``SGD``/``Adam``/``AdamW`` (read from its first
    param group's hyperparameters).

    Raises:
        ValueError: a torch optimizer the service has no name for.
    """
    if optimizer is None:
        return {"name": "sgd"}
    if isinstance(optimizer, str):
        return {"name": optimizer}
    if isinstance(optimizer, Mapping):
        return dict(optimizer)
    if hasattr(optimizer, "model_dump"):
        dumped: dict[str, Any] = optimizer.model_dump(mode="json")
        return dumped
    groups = getattr(optimizer, "param_groups", None)
    if groups:
        kind = type(optimizer).__name__
        name = _OPTIMIZER_NAMES.get(kind)
        if name is None:
            known = ", ".join(_OPTIMIZER_NAMES)
            raise ValueError(f"optimizer {kind} has no name on the service; it knows {known}")
        group = groups[0]
        if name == "sgd":
            return {
                "name": name,
                "momentum": float(group.get("momentum", 0.0)),
                "nesterov": bool(group.get("nesterov", False)),
                "weight_decay": float(group.get("weight_decay", 0.0)),
            }
        betas = group.get("betas", (0.9, 0.999))
        return {
            "name": name,
            "betas": [float(betas[0]), float(betas[1])],
            "eps": float(group.get("eps", 1e-8)),
            "weight_decay": float(group.get("weight_decay", 0.0)),
        }
    raise TypeError(
        f"optimizer must be a name, a dict or a torch optimizer, got {type(optimizer).__name__}"
    )


def _floats(values: Any) -> list[float] | None:
    if values is None:
        return None
    if hasattr(values, "tolist"):
        values = values.tolist()
    return [float(v) for v in values]


class _Series:
    """One series' points: those the service has, and those waiting to be sent."""

    def __init__(self, name: str, stored: int = 0) -> None:
        self.name = name
        self.sent = stored  # points the service confirmed
        self.stored = stored  # points the service had when the uploader attached
        self.pending: list[Row] = []

    @property
    def end(self) -> int:
        """The index of the next point."""
        return self.sent + len(self.pending)


class _Uploader:
    """What both uploaders share: the job, the buffers, the sending thread, the finish."""

    noun = "jobs"

    def __init__(
        self,
        client: Client,
        job: Mapping[str, Any],
        *,
        series: Sequence[str],
        flush_interval: float = DEFAULT_FLUSH_INTERVAL_S,
        keepalive: float = DEFAULT_KEEPALIVE_S,
        max_points: int = MAX_POINTS_PER_UPLOAD,
    ) -> None:
        if flush_interval <= 0 or keepalive <= 0 or max_points < 1:
            raise ValueError("flush_interval and keepalive must be > 0, max_points >= 1")
        self.client = client
        self.job: Any = _job(job)
        """The job as the service last showed it (a ``RangeTestRead`` or ``TrainingRead``)."""
        self.job_id: uuid.UUID = self.job.id
        self.flush_interval = flush_interval
        self.keepalive = keepalive
        self.max_points = max_points
        self.cancelled = False
        self.finished = False
        self.error: BaseException | None = None
        counts = dict(getattr(self.job, "series_points", None) or {})
        self._series = {name: _Series(name, int(counts.get(name, 0))) for name in series}
        self._lock = threading.Lock()  # the buffers
        self._send_lock = threading.Lock()  # one upload at a time, in order
        self._last_send = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"clr-sweep-upload-{self.job_id}", daemon=True
        )
        self._thread.start()

    # -- gathering ------------------------------------------------------------------

    def _add(self, name: str, start: int | None, columns: Mapping[str, list[float] | None]) -> None:
        self._raise_error()
        size = next((len(c) for c in columns.values() if c is not None), 0)
        with self._lock:
            series = self._series[name]
            skip = 0
            if start is not None and start < series.end <= series.stored:
                # a resumed loop re-sending points the service has: skip them
                skip = min(size, series.end - start)
            elif start is not None and start != series.end:
                raise ValueError(
                    f"points of {name!r} from {start} do not follow the {series.end} gathered"
                )
            for i in range(skip, size):
                series.pending.append({k: None if c is None else c[i] for k, c in columns.items()})

    def should_stop(self) -> bool:
        """True once the job was cancelled on the service (pass as ``should_stop=``)."""
        return self.cancelled

    @property
    def points(self) -> dict[str, int]:
        """Points gathered per series (sent or not)."""
        with self._lock:
            return {name: s.end for name, s in self._series.items()}

    # -- sending --------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.wait(self.flush_interval):
            try:
                self.flush()
                if time.monotonic() - self._last_send >= self.keepalive:
                    self._keepalive()
            except Exception as exc:  # noqa: BLE001 - handed to the loop's next call
                self.error = exc
                return

    def _raise_error(self) -> None:
        if self.error is not None:
            error, self.error = self.error, None
            raise error

    def flush(self) -> None:
        """Send every gathered point now."""
        with self._send_lock:
            for series in self._series.values():
                with self._lock:
                    rows = list(series.pending)
                start = series.sent
                for run_start, run in _runs(start, rows, self.max_points):
                    if self.cancelled:
                        return
                    self._send(series, run_start, run)
                    if self.cancelled:
                        return
                    with self._lock:
                        del series.pending[: len(run)]
                        series.sent = run_start + len(run)

    def _keepalive(self) -> None:
        """Tell the service the run is alive while it has nothing new to send."""
        with self._send_lock:
            if self.cancelled:
                return
            try:
                self.client.request("POST", f"/jobs/{self.job_id}/heartbeat", idempotency_key=True)
            except Conflict as exc:
                if exc.type.endswith(":cancelled"):
                    self.cancelled = True
                    return
                raise
            self._last_send = time.monotonic()

    def _send(self, series: _Series, start: int, rows: list[Row]) -> None:
        values = {k: [r[k] for r in rows] if rows[0][k] is not None else None for k in rows[0]}
        try:
            self.client.request(
                "POST",
                f"/jobs/{self.job_id}/series/{series.name}",
                json={"start": start, "values": values},
                idempotency_key=True,  # a repeated upload is harmless: retry it
            )
        except Conflict as exc:
            if exc.type.endswith(":cancelled"):
                self.cancelled = True
                return
            raise
        self._last_send = time.monotonic()

    # -- finishing ------------------------------------------------------------------

    def finish(
        self,
        result: Any = None,
        *,
        status: str = "succeeded",
        error: str | None = None,
        **how: Any,
    ) -> Any:
        """Send what is left and end the job as ``status`` (``succeeded``, ``failed`` or
        ``cancelled``); the job as the service shows it now (:attr:`job`).

        ``result``: the ``clr`` result of the run (its ``stop_reason``,
        ``stop_detail``, ``seconds`` and ``device`` are sent); ``how`` gives them
        by name instead. A job cancelled on the service stays cancelled.
        """
        if self.finished:
            return self.job
        self._stop.set()
        self._thread.join()
        self.finished = True
        pending_error, self.error = self.error, None
        if pending_error is not None and status == "succeeded":
            status, error = "failed", _error_text(pending_error)
        if not self.cancelled:
            try:
                self.flush()
            except ClientError:
                if status == "succeeded":
                    raise  # the job stays running; the service fails it when it times out
                # failing anyway: the points that did reach the service stay readable
        if self.cancelled:
            return self._reread()
        body: dict[str, Any] = {"status": status}
        if error is not None:
            body["error"] = error[:_MAX_ERROR]
        for name in ("stop_reason", "stop_detail", "seconds", "device"):
            value = how.get(name, getattr(result, name, None))
            if value is not None:
                body[name] = float(value) if name == "seconds" else str(value)
        try:
            self.job = _job(
                self.client.request(
                    "POST", f"/jobs/{self.job_id}/finish", json=body, idempotency_key=True
                ).json()
            )
        except Conflict as exc:
            if not exc.type.endswith(":cancelled"):
                raise
            self.cancelled = True
            return self._reread()
        return self.job

    def _reread(self) -> Any:
        self.job = _job(self.client.request("GET", f"/jobs/{self.job_id}").json())
        return self.job

    def close(self) -> None:
        """Stop sending without finishing the job (the service fails it after its
        heartbeat timeout); :meth:`finish` is what a run that ended calls."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.finished:
            return
        if exc is None:
            self.finish()
        elif isinstance(exc, KeyboardInterrupt):
            self.finish(status="cancelled")
        else:
            self.finish(status="failed", error=_error_text(exc))


def _error_text(exc: BaseException | None) -> str:
    if exc is None:
        return "the client failed"
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


def _runs(start: int, rows: list[Row], most: int) -> list[tuple[int, list[Row]]]:
    """``rows`` (from index ``start``) as uploads: at most ``most`` points each, and the
    same fields present (a field missing from a point is null for its whole upload)."""
    out: list[tuple[int, list[Row]]] = []
    i = 0
    while i < len(rows):
        shape = tuple(v is None for v in rows[i].values())
        j = i + 1
        while (
            j < len(rows) and j - i < most and tuple(v is None for v in rows[j].values()) == shape
        ):
            j += 1
        out.append((start + i, rows[i:j]))
        i = j
    return out


def _finite(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    return _number(name, value)


def _number(name: str, value: float) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return number


class RangeTestUploader(_Uploader):
    """Streams a range test's curve (``curve``: ``lr``, ``loss``, ``smoothed_loss``,
    ``accuracy``) to a client job; call it with each :class:`clr.RangeTestProgress`."""

    def __init__(self, client: Client, job: Mapping[str, Any], **options: Any) -> None:
        super().__init__(client, job, series=("curve",), **options)

    def __call__(self, progress: Any) -> None:
        """Gather one chunk of a ``clr`` range test (``callback=uploader``)."""
        self._add(
            "curve",
            int(progress.start),
            {
                "lr": _floats(progress.lrs),
                "loss": _floats(progress.losses),
                "smoothed_loss": _floats(progress.smoothed_losses),
                "accuracy": _floats(getattr(progress, "accuracies", None)),
            },
        )

    def add(
        self,
        lr: float,
        loss: float,
        *,
        smoothed_loss: float | None = None,
        accuracy: float | None = None,
        step: int | None = None,
    ) -> None:
        """Gather one step of a plain loop; without ``smoothed_loss`` the service computes
        it (the bias-corrected moving average of the losses with the test's ``smoothing``,
        as ``clr.RangeTest`` does). ``step`` (0 first) is the point's index: a resumed
        loop that starts over passes it, and the steps the service has are skipped."""
        self._add(
            "curve",
            step,
            {
                "lr": [_number("lr", lr)],
                "loss": [_number("loss", loss)],
                "smoothed_loss": None if smoothed_loss is None else [float(smoothed_loss)],
                "accuracy": None if accuracy is None else [float(accuracy)],
            },
        )

    def bounds(self, method: str | None = None) -> Any:
        """The finished test's suggested bounds (``Client.bounds``)."""
        return self.client.bounds(self.job_id, method=method)


class TrainingLogger(_Uploader):
    """Streams a training's ``iterations`` (``lr``, ``momentum``, ``loss``) and ``epochs``
    to a client job; call it with each :class:`clr.TrainProgress`, or log by hand."""

    def __init__(self, client: Client, job: Mapping[str, Any], **options: Any) -> None:
        super().__init__(client, job, series=("iterations", "epochs"), **options)
        self._last_epoch: float | None = None  # the last stored epoch's number (resumed)
        stored = self._series["epochs"].stored
        if stored:
            last = self.client.request(
                "GET", f"/jobs/{self.job_id}/series/epochs", params={"after": stored - 1}
            ).json()
            self._last_epoch = (last["values"].get("epoch") or [None])[0]

    def __call__(self, progress: Any) -> None:
        """Gather one chunk of a ``clr.Trainer`` run (``callback=logger``)."""
        if len(progress.lrs):
            self._add(
                "iterations",
                int(progress.start),
                {
                    "lr": _floats(progress.lrs),
                    "momentum": _floats(getattr(progress, "momenta", None)),
                    "loss": _floats(progress.losses),
                },
            )
        for record in getattr(progress, "epochs", ()) or ():
            row: dict[str, Any] = (
                record.to_dict() if hasattr(record, "to_dict") else dict(vars(record))
            )
            self.log_epoch(
                int(row["epoch"]),
                iteration=int(row["iteration"]),
                train_loss=row["train_loss"],
                train_accuracy=row.get("train_accuracy"),
                val_loss=row.get("val_loss"),
                val_accuracy=row.get("val_accuracy"),
            )

    def log(
        self,
        iteration: int,
        *,
        lr: float,
        loss: float,
        momentum: float | None = None,
    ) -> None:
        """Log optimizer step ``iteration`` (0 first, one after another)."""
        self._add(
            "iterations",
            iteration,
            {
                "lr": [_number("lr", lr)],
                "momentum": None if momentum is None else [float(momentum)],
                "loss": [_number("loss", loss)],
            },
        )

    def log_epoch(
        self,
        epoch: int,
        *,
        iteration: int,
        train_loss: float,
        train_accuracy: float | None = None,
        val_loss: float | None = None,
        val_accuracy: float | None = None,
    ) -> None:
        """Log an epoch's end: its train loss (and accuracy) and validation results. A
        resumed loop that starts over re-logs epochs the service has: those numbered up to
        its last stored one are skipped."""
        if self._last_epoch is not None:
            with self._lock:
                series = self._series["epochs"]
                if series.end <= series.stored and epoch <= self._last_epoch:
                    return
        self._add(
            "epochs",
            None,
            {
                "epoch": [float(epoch)],
                "iteration": [float(iteration)],
                "train_loss": [_number("train_loss", train_loss)],
                "train_accuracy": _one("train_accuracy", train_accuracy),
                "val_loss": _one("val_loss", val_loss),
                "val_accuracy": _one("val_accuracy", val_accuracy),
            },
        )


def _one(name: str, value: float | None) -> list[float] | None:
    number = _finite(name, value)
    return None if number is None else [number]


def _configuration(
    model: str,
    dataset: str,
    batch_size: int,
    optimizer: Any,
    tags: Mapping[str, Any] | None,
) -> dict[str, Any]:
    return {
        "source": "client",
        "model": model,
        "dataset": dataset,
        "batch_size": int(batch_size),
        "optimizer": optimizer_spec(optimizer),
        "tags": dict(tags or {}),
    }


def range_test_uploader(
    client: Client,
    *,
    model: str,
    dataset: str,
    batch_size: int,
    optimizer: Any = "sgd",
    tags: Mapping[str, Any] | None = None,
    start_lr: float = 1e-5,
    end_lr: float = 10.0,
    num_iter: int = 300,
    sweep: str = "exp",
    smoothing: float = 0.95,
    diverge_th: float = 5.0,
    metric: str = "loss",
    iters_per_epoch: int | None = None,
    flush_interval: float = DEFAULT_FLUSH_INTERVAL_S,
    keepalive: float = DEFAULT_KEEPALIVE_S,
    max_points: int = MAX_POINTS_PER_UPLOAD,
) -> RangeTestUploader:
    """Create a client range test on the service and return its uploader.

    Args:
        client: a :class:`clr_sweep.Client`.
        model, dataset, batch_size, optimizer, tags: the configuration ``GET
            /bounds`` finds it by (``optimizer``: a name, a dict, an
            ``OptimizerSpec`` or the torch optimizer itself).
        start_lr, end_lr, num_iter, sweep, smoothing, diverge_th: the test's
            settings, as given to ``clr.RangeTest.run``.
        metric: what the bounds read, ``loss`` or ``accuracy``.
        iters_per_epoch: the epoch length in batches (gives the suggested
            ``step_size`` and stop iteration).

    Raises:
        clr_sweep.Invalid: the service refused the configuration (the field is named).
    """
    spec = {
        **_configuration(model, dataset, batch_size, optimizer, tags),
        "start_lr": start_lr,
        "end_lr": end_lr,
        "num_iter": num_iter,
        "sweep": sweep,
        "smoothing": smoothing,
        "diverge_th": diverge_th,
        "metric": metric,
    }
    if iters_per_epoch is not None:
        spec["iters_per_epoch"] = iters_per_epoch
    job = client.request("POST", "/range-tests", json=spec, idempotency_key=True).json()
    return RangeTestUploader(
        client, job, flush_interval=flush_interval, keepalive=keepalive, max_points=max_points
    )


class JobFinished(ClientError):
    """The job ended (``job.status``): it takes no more uploads, so nothing can attach to it."""

    def __init__(self, job: Any) -> None:
        self.job = job
        why = f": {job.error}" if getattr(job, "error", None) else ""
        super().__init__(
            f"{job.kind.replace('_', ' ')} {job.id} is {job.status}{why}; it takes no more "
            "uploads "
            "(create a new job to run the test again)"
        )


def resume(
    client: Client,
    job_id: str | uuid.UUID,
    *,
    flush_interval: float = DEFAULT_FLUSH_INTERVAL_S,
    keepalive: float = DEFAULT_KEEPALIVE_S,
    max_points: int = MAX_POINTS_PER_UPLOAD,
) -> RangeTestUploader | TrainingLogger:
    """Attach to a client job that is still running, after the process that fed it died:
    a :class:`RangeTestUploader` for a range test, a :class:`TrainingLogger` for a training.

    It reads the job's stored points (``series_points``) and continues from there. The
    loop may start over from step 0: points at indexes the service already has are
    skipped (not sent; the stored ones stay), a training's epochs numbered up to the last
    stored one too; or it may start at :attr:`~_Uploader.points` (what the service has).
    Resume before the service's heartbeat timeout (60 s by default): a job silent for
    longer was failed, and cannot be resumed.

    Raises:
        JobFinished: the job already ended (succeeded, failed or cancelled).
        ValueError: the job is not one the team runs itself (``"source": "client"``).
        clr_sweep.NotFound: no such job.
    """
    job = _job(client.request("GET", f"/jobs/{job_id}").json())
    if (job.spec or {}).get("source") != "client":
        raise ValueError(
            f"{job.kind.replace('_', ' ')} {job.id} is run by the service's workers; only a "
            "job created with "
            '"source": "client" takes uploads'
        )
    if job.status.finished:
        raise JobFinished(job)
    options: dict[str, Any] = {
        "flush_interval": flush_interval,
        "keepalive": keepalive,
        "max_points": max_points,
    }
    data = job.model_dump(mode="json")
    if job.kind == "training":
        return TrainingLogger(client, data, **options)
    return RangeTestUploader(client, data, **options)


def training_logger(
    client: Client,
    *,
    model: str,
    dataset: str,
    batch_size: int,
    iterations: int,
    optimizer: Any = "sgd",
    tags: Mapping[str, Any] | None = None,
    schedule: Mapping[str, Any] | None = None,
    range_test: str | uuid.UUID | None = None,
    flush_interval: float = DEFAULT_FLUSH_INTERVAL_S,
    keepalive: float = DEFAULT_KEEPALIVE_S,
    max_points: int = MAX_POINTS_PER_UPLOAD,
) -> TrainingLogger:
    """Create a client training on the service and return its logger.

    Args:
        iterations: the run's planned length in optimizer steps.
        schedule: the ``clr`` schedule it follows (``{"policy": "triangular2",
            "base_lr": ..., "max_lr": ..., "step_size_up": ...}``), to draw and
            count its cycles.
        range_test: the range test whose bounds it uses, shown with it.
        (the others as :func:`range_test_uploader`'s)
    """
    spec: dict[str, Any] = {
        **_configuration(model, dataset, batch_size, optimizer, tags),
        "iterations": int(iterations),
    }
    if schedule is not None:
        spec["schedule"] = dict(schedule)
    if range_test is not None:
        spec["range_test"] = str(range_test)
    job = client.request("POST", "/trainings", json=spec, idempotency_key=True).json()
    return TrainingLogger(
        client, job, flush_interval=flush_interval, keepalive=keepalive, max_points=max_points
    )
