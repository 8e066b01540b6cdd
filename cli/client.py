"""``clr-sweep submit``, ``train`` and ``sweep``: a job through the service's API,
followed to its end.

``submit`` POSTs a range test, shows a progress bar while it runs, prints every
method's suggested bounds and writes the plot the API draws; ``train`` POSTs a
training (its bounds given, or a finished range test's), shows the iteration,
epoch, LR, loss and validation accuracy as it runs, then a table of how it ended
and the training's plot; ``sweep`` POSTs a sweep, shows its children by status
as they run, then the paper's table (per policy: final and best validation
accuracy over seeds, iterations to the fixed policy's accuracy and the ratio)
and the comparison plot. With ``--embedded`` each first starts ``clr-sweep
serve`` (the embedded default) for this one job and stops it afterwards;
otherwise it talks to ``--url`` (``CLR_API_URL``).

Ctrl-C, SIGTERM and SIGHUP all cancel the job (:class:`Interrupted`): a command
stopped by a service manager or a closed terminal leaves nothing running.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

__all__ = [
    "ApiError",
    "EmbeddedService",
    "Interrupted",
    "RetryWhenBusy",
    "follow_job",
    "follow_sweep",
    "follow_training",
    "interrupt_on_signals",
    "print_bounds",
    "print_sweep",
    "print_training",
    "run_range_test_then_training",
    "run_submission",
    "run_sweep",
    "run_training",
    "start_embedded",
]

FINAL_STATUSES = ("succeeded", "failed", "cancelled")
POLL_INTERVAL_S = 0.1
"""How often a followed job is polled: a finished job is seen within this."""
READY_POLL_S = 0.05
CANCEL_WAIT_S = 15.0
"""How long an interrupted command waits for its job to stop after cancelling it."""
READY_TIMEOUT_S = 120.0
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Interrupted(BaseException):
    """A signal asked the command to stop (a ``BaseException``, like Ctrl-C's)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's code for death by this signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


@contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise :class:`Interrupted` in the main thread."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise Interrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


RETRY_WAIT_MAX_S = 10.0
"""Longest wait between two tries of a request the API answered 503 (it asks for 1 s)."""
RETRY_FOR_S = 120.0
"""How long a request keeps being retried while the API answers 503."""


class RetryWhenBusy(httpx.BaseTransport):
    """Sends each request again, after its ``Retry-After``, while the API answers 503.

    Under load the API refuses the excess at once with a 503 and ``Retry-After``
    (at capacity, its database busy or restarting): a try again, not a failure.
    Without this, one such answer while a job was followed ended the command with
    an error and left the job running. Every request this client sends is safe to
    repeat: reads, the cancel, and the submit (it carries an ``Idempotency-Key``).
    A 503 without ``Retry-After``, or one still there after ``retry_for_s``, is
    returned as it is.
    """

    def __init__(
        self,
        inner: httpx.BaseTransport,
        *,
        retry_for_s: float = RETRY_FOR_S,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.retry_for_s = retry_for_s
        self.sleep = sleep

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        deadline = time.monotonic() + self.retry_for_s
        while True:
            response = self.inner.handle_request(request)
            wait = _retry_after(response)
            if wait is None or time.monotonic() + wait > deadline:
                return response
            response.read()
            response.close()
            self.sleep(wait)

    def close(self) -> None:
        self.inner.close()


def _retry_after(response: httpx.Response) -> float | None:
    """Seconds a 503 asks to wait before the next try; None for any other answer."""
    if response.status_code != 503:
        return None
    try:
        seconds = float(response.headers.get("Retry-After", ""))
    except ValueError:
        return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), RETRY_WAIT_MAX_S)


class ApiError(Exception):
    """The API answered with an error; ``detail`` is its problem+json detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


def check(response: httpx.Response) -> httpx.Response:
    """``response`` if it succeeded, else :class:`ApiError` with the problem's detail
    and the fields it names."""
    if response.is_success:
        return response
    detail = response.text
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if isinstance(problem, dict):
        detail = str(problem.get("detail") or problem.get("title") or detail)
        errors = problem.get("errors") or []
        named = [f"{e.get('field')}: {e.get('reason')}" for e in errors if isinstance(e, dict)]
        if named and not all(n.split(": ", 1)[1] in detail for n in named):
            detail += " (" + "; ".join(named) + ")"
    raise ApiError(response.status_code, detail)


def _status_text(job: dict[str, Any]) -> str:
    """What the job is doing, and while it is queued, what it waits for (when the API says)."""
    if job["status"] != "queued":
        return str(job["status"])
    reason = job.get("waiting_reason")
    position = job.get("queue_position")
    text = "queued"
    if position is not None:
        text += f" (#{position})"
    return f"{text}: {reason}" if reason else text


def follow_job(
    client: httpx.Client,
    job: dict[str, Any],
    console: Console,
    *,
    interval_s: float = POLL_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the job until it finishes, drawing a progress bar; the final job.

    While it is queued the bar says what it waits for; while it runs, the newest
    LR and smoothed loss (read from the curve, only the points not yet seen) and
    the time remaining.
    """
    location = f"/range-tests/{job['id']}"
    after, attempt, lr, loss = 0, job["attempt"], math.nan, math.nan
    with Progress(
        TextColumn("[bold]{task.fields[status]}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lr {task.fields[lr]:.2e}  loss {task.fields[loss]:.4f}"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[where]}"),
        console=console,
    ) as progress:
        task = progress.add_task(
            "job", total=job["total"], status=_status_text(job), where="", lr=lr, loss=loss
        )
        while job["status"] not in FINAL_STATUSES:
            sleep(interval_s)
            seen = job["progress"]
            job = check(client.get(location)).json()
            if job["attempt"] != attempt:  # a new attempt starts its curve again
                after, attempt = 0, job["attempt"]
            if job["progress"] > seen or (job["progress"] and after == 0):
                curve = check(client.get(f"{location}/curve", params={"after": after})).json()
                if curve["lrs"] and curve["attempt"] == attempt:
                    after = curve["next_after"]
                    lr, loss = curve["lrs"][-1], curve["smoothed_losses"][-1]
            where = f"on {job['device']} ({job['worker']})" if job["worker"] else ""
            progress.update(
                task,
                completed=job["progress"],
                total=job["total"],
                status=_status_text(job),
                where=where,
                lr=lr,
                loss=loss,
            )
    return job


def print_bounds(bounds: dict[str, Any], console: Console, *, title: str) -> None:
    """Every method's suggestion, the default first, with the recommended schedule."""
    table = Table(title=title)
    for column in ("method", "base_lr", "max_lr", "rationale"):
        table.add_column(column, overflow="fold")
    for item in bounds["suggestions"]:
        name = item["method"] + (" (default)" if item["method"] == bounds["default_method"] else "")
        table.add_row(name, f"{item['base_lr']:.3g}", f"{item['max_lr']:.3g}", item["rationale"])
    for method, reason in bounds["failed"].items():
        table.add_row(method, "-", "-", f"[yellow]{reason}[/]")
    console.print(table)
    if bounds["step_size"] is not None:
        console.print(
            f"confidence {bounds['confidence']:.2f}; step_size {bounds['step_size']}; "
            f"stop after iteration {bounds['stop_iteration']} (end of cycle {bounds['cycles']})"
        )
    for warning in bounds["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")


@dataclass
class EmbeddedService:
    """A ``clr-sweep serve`` process started for one command."""

    process: subprocess.Popen[bytes]
    url: str
    token: str
    log_path: Path

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


@contextmanager
def start_embedded(data_dir: Path, console: Console) -> Iterator[EmbeddedService]:
    """Start ``clr-sweep serve`` on a free local port; stop it on the way out.

    The service runs in a session of its own, so a Ctrl-C at the terminal reaches
    only this command, which cancels its job before it stops the service; and it
    gets SIGTERM if this command dies without a word (SIGKILL), so it never
    outlives the command that started it.
    """
    from cli.service import TOKEN_FILE, die_with_parent, free_port, make_private

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    make_private(data_dir)
    log_path = data_dir / "logs" / "serve.log"
    log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    console.print(f"starting the embedded service on {url} (data in {data_dir}, log {log_path})")
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with open(log_fd, "ab") as log:
        process = subprocess.Popen(
            # --stop-grace 0: it is stopped once its one job is over (cancelled ones
            # included: see run_submission), and a warm Celery shutdown costs seconds
            [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
            + ["--stop-grace", "0"],
            env={**os.environ, "CLR_DATA_DIR": str(data_dir)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent(signal.SIGTERM),
        )
    service = EmbeddedService(process, url, "", log_path)
    try:
        with console.status("starting the service: API and worker…"):
            deadline = time.monotonic() + READY_TIMEOUT_S
            with httpx.Client(timeout=2) as probe:
                while True:
                    if process.poll() is not None:
                        raise RuntimeError(
                            f"the embedded service exited with {process.returncode}:\n"
                            f"{service.log_tail()}"
                        )
                    try:
                        if probe.get(f"{url}/readyz").is_success:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise RuntimeError(
                            f"the embedded service was not ready in {READY_TIMEOUT_S:g} s"
                        )
                    time.sleep(READY_POLL_S)
        service.token = (data_dir / TOKEN_FILE).read_text().strip()
        yield service
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def plot_route(plot: Path) -> str:
    """The plot route for ``plot``'s suffix (``plot.png`` or ``plot.svg``)."""
    suffix = plot.suffix.lower()
    if suffix not in (".png", ".svg"):
        raise ValueError(f"the plot must be a .png or .svg file, got {plot.name!r}")
    return f"plot{suffix}"


def _post_json(
    client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str]
) -> httpx.Response:
    """POST ``body`` as JSON. A NaN or an infinity (``--fixed-lr nan``) goes out as
    such, so that the API's 422 names its field: httpx's ``json=`` refuses to encode
    them and the command ended in a traceback."""
    return client.post(
        url, content=json.dumps(body), headers={**headers, "Content-Type": "application/json"}
    )


def _cancel(
    client: httpx.Client,
    collection: str,
    job: dict[str, Any] | None,
    body: dict[str, Any],
    headers: dict[str, str],
    console: Console,
    exc: Interrupted | KeyboardInterrupt,
) -> int:
    """Cancel the job a stopped command submitted, wait for it to stop; the exit code."""
    code = exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT
    if job is None:
        job = check(_post_json(client, collection, body, headers)).json()
    response = client.post(f"{collection}/{job['id']}/cancel")
    if response.status_code != 409:  # 409: it finished meanwhile
        check(response)
    console.print(f"[yellow]cancel requested[/] for {job['id']}")
    # The worker stops the job at its next report: wait for that (a second
    # signal ends the wait), so the job reads "cancelled" before the command ends.
    deadline = time.monotonic() + CANCEL_WAIT_S
    while job["status"] not in FINAL_STATUSES and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
        job = check(client.get(f"{collection}/{job['id']}")).json()
    console.print(f"job {job['id']} {job['status']}")
    return code


def run_submission(
    client: httpx.Client,
    body: dict[str, Any],
    console: Console,
    *,
    plot: Path | None,
    output: Path | None,
    wait: bool,
) -> int:
    """Submit, follow, report; the exit code (0 succeeded, 1 failed or cancelled).

    An :class:`Interrupted` (or Ctrl-C) while the job is not finished cancels it
    and returns the signal's exit code (130, 143, ...).
    """
    done = _run_range_test(client, body, console, plot=plot, wait=wait)
    if done.code == 0 and done.job is not None and output is not None:
        output.write_text(json.dumps({"job": done.job, "bounds": done.bounds}, indent=2))
        console.print(f"result written to {output}")
    return done.code


def _print_verification(doc: dict[str, Any] | None, console: Console) -> None:
    """One line per round of a range test's verification, and how it ended."""
    if not doc:
        return
    candidates = doc.get("candidates") or []
    spent = doc.get("spent_iterations", 0) / max(1, doc.get("full_run_iterations") or 1)
    console.print(
        f"verification {doc['status']}: {len(candidates)} candidate pairs, "
        f"{len(doc.get('rounds') or [])} round(s), {spent:.2f} of "
        f"{doc.get('budget_runs')} full runs spent"
        + (f" ({doc['reason']})" if doc.get("reason") else "")
    )
    for round_ in doc.get("rounds") or []:
        losses = []
        for index in round_.get("candidates") or []:
            candidate = candidates[index]
            ran = candidate.get("val_loss") or []
            position = round_.get("round") or 0
            loss = ran[position] if position < len(ran) else None
            shown = "failed" if loss is None else f"{loss:.4g}"
            losses.append(f"{candidate['source']} {candidate['max_lr']:.3g}: {shown}")
        console.print(
            f"  round {round_.get('round')} ({round_.get('iterations')} iterations each): "
            + ("; ".join(losses) or "not run")
        )


@dataclass(frozen=True)
class _Done:
    """How a followed range test ended: the exit code, the job and its bounds."""

    code: int
    job: dict[str, Any] | None = None
    bounds: dict[str, Any] | None = None


def _run_range_test(
    client: httpx.Client,
    body: dict[str, Any],
    console: Console,
    *,
    plot: Path | None,
    wait: bool,
    interval_s: float = POLL_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> _Done:
    # The key makes the POST safe to repeat: interrupted before its answer arrived,
    # the same POST finds the job (or makes it) so that it can be cancelled.
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    job: dict[str, Any] | None = None
    try:
        job = check(_post_json(client, "/range-tests", body, headers)).json()
        console.print(f"range test {job['id']} {job['status']}")
        if not wait:
            print(job["id"])
            return _Done(0)
        job = follow_job(client, job, console, interval_s=interval_s, sleep=sleep)
    except (Interrupted, KeyboardInterrupt) as exc:
        return _Done(_cancel(client, "/range-tests", job, body, headers, console, exc))
    if job["status"] != "succeeded":
        console.print(f"[red]{job['status']}:[/] {job['error'] or 'no reason given'}")
        return _Done(1, job)
    summary = (job.get("result") or {}).get("summary") or {}
    if summary:
        console.print(
            f"{summary.get('stop_reason')}: {summary.get('stop_detail')} "
            f"({summary.get('steps_run')} steps in {summary.get('seconds', 0):.2f} s on "
            f"{job['device']})"
        )
    _print_verification((job.get("result") or {}).get("verification"), console)
    bounds = None
    response = client.get(f"/range-tests/{job['id']}/bounds")
    if response.is_success:
        bounds = response.json()
        print_bounds(bounds, console, title=f"Suggested CLR bounds for {body['workload']}")
    else:
        reason = (job.get("result") or {}).get("no_bounds_reason")
        if reason is None:
            check(response)  # an error other than "this curve has no bounds"
        console.print(f"[yellow]no bounds:[/] {reason}")
    if plot is not None:
        image = check(client.get(f"/range-tests/{job['id']}/{plot_route(plot)}"))
        plot.write_bytes(image.content)
        console.print(f"plot written to {plot}")
    return _Done(0, job, bounds)


# --------------------------------------------------------------------------- trainings

LOSS_WINDOW = 20
"""Iterations the progress bar's loss averages (one batch's loss is noise)."""


def _latest(
    client: httpx.Client, job_id: str, name: str, points: int, window: int
) -> dict[str, list[float] | None] | None:
    """The last ``window`` points of a series (none yet: None); one short request."""
    if points <= 0:
        return None
    series = check(
        client.get(f"/jobs/{job_id}/series/{name}", params={"after": max(points - window, 0)})
    ).json()
    values: dict[str, list[float] | None] = series["values"]
    return values if any(values.values()) else None


def _mean(values: list[float] | None) -> float:
    finite = [v for v in values or () if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def _accuracy_text(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3f}"


def follow_training(
    client: httpx.Client,
    job: dict[str, Any],
    console: Console,
    *,
    interval_s: float = POLL_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the training until it finishes, drawing a progress bar; the final job.

    The bar shows iterations done of the total, the epoch, the newest LR, the mean
    loss of the last :data:`LOSS_WINDOW` iterations and the last validation
    accuracy. Each poll reads the job, and only when its series grew, their last
    points (``/jobs/{id}/series/{name}?after=``): a resumed attempt, which drops
    the points after its checkpoint, needs no special case.
    """
    location = f"/trainings/{job['id']}"
    seen: dict[str, int] = {}
    lr, loss, epoch, accuracy = math.nan, math.nan, 0, "-"
    with Progress(
        TextColumn("[bold]{task.fields[status]}[/]"),
        BarColumn(bar_width=20),
        MofNCompleteColumn(),
        TextColumn(
            "epoch {task.fields[epoch]}  lr {task.fields[lr]:.2e}  loss {task.fields[loss]:.4f}"
            "  val acc {task.fields[accuracy]}"
        ),
        TimeElapsedColumn(),
        TextColumn("{task.fields[where]}"),
        console=console,
    ) as progress:
        task = progress.add_task(
            "training",
            total=job["total"],
            status=_status_text(job),
            where="",
            epoch=epoch,
            lr=lr,
            loss=loss,
            accuracy=accuracy,
        )
        while job["status"] not in FINAL_STATUSES:
            sleep(interval_s)
            job = check(client.get(location)).json()
            counts = {k: int(v) for k, v in (job.get("series_points") or {}).items()}
            if counts.get("iterations", 0) != seen.get("iterations"):
                last = _latest(
                    client, job["id"], "iterations", counts.get("iterations", 0), LOSS_WINDOW
                )
                if last is not None:
                    lr = (last.get("lr") or [math.nan])[-1]
                    loss = _mean(last.get("loss"))
            if counts.get("epochs", 0) != seen.get("epochs"):
                last = _latest(client, job["id"], "epochs", counts.get("epochs", 0), 1)
                if last is not None:
                    epoch = int((last.get("epoch") or [0.0])[-1]) + 1
                    accuracies = last.get("val_accuracy")
                    accuracy = _accuracy_text(accuracies[-1] if accuracies else None)
            seen = counts
            where = f"on {job['device']} ({job['worker']})" if job["worker"] else ""
            progress.update(
                task,
                completed=job["progress"],
                total=job["total"],
                status=_status_text(job),
                where=where,
                epoch=epoch,
                lr=lr,
                loss=loss,
                accuracy=accuracy,
            )
    return job


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def print_training(job: dict[str, Any], console: Console) -> None:
    """How a succeeded training ended: its accuracies, length and time, and its bounds."""
    result = job.get("result") or {}
    spec = job.get("spec") or {}
    schedule = {k: v for k, v in (spec.get("schedule") or {}).items() if v is not None}
    table = Table(title=f"CLR training of {spec.get('workload', '?')}", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    best = _fmt(result.get("best_val_accuracy"))
    if result.get("best_val_iteration") is not None:
        best += f" (iteration {result['best_val_iteration']})"
    ensemble = _fmt(result.get("ensemble_val_accuracy"))
    if result.get("ensemble_size"):
        ensemble += f" ({result['ensemble_size']} snapshots)"
    rows = [
        ("final val accuracy", _fmt(result.get("final_val_accuracy"))),
        ("best val accuracy", best),
        ("snapshot ensemble val accuracy", ensemble),
        ("final val loss", _fmt(result.get("final_val_loss"))),
        ("iterations", _fmt(result.get("iterations"), "d")),
        ("epochs", _fmt(result.get("epochs"), "d")),
        ("cycles", _fmt(result.get("cycles"), "d")),
        ("seconds", _fmt(result.get("seconds"), ".2f")),
        ("device", str(result.get("device") or job.get("device") or "-")),
        ("schedule", ", ".join(f"{k}={_short(v)}" for k, v in schedule.items())),
    ]
    source = spec.get("bounds_source")
    if source:
        rows.append(("bounds from", f"range test {source['range_test']} ({source['method']})"))
    if result.get("resumed_from") is not None:
        rows.append(("resumed from iteration", str(result["resumed_from"])))
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def run_training(
    client: httpx.Client,
    body: dict[str, Any],
    console: Console,
    *,
    plot: Path | None,
    output: Path | None,
    wait: bool,
    interval_s: float = POLL_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
    record: dict[str, Any] | None = None,
) -> int:
    """Submit a training, follow it, report; the exit code (0 succeeded, 1 failed or cancelled).

    ``output`` gets ``{"job": <the training>}`` and ``record``'s items. An
    :class:`Interrupted` (or Ctrl-C) while the training is not finished cancels
    it and returns the signal's exit code (130, 143, ...).
    """
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    job: dict[str, Any] | None = None
    try:
        job = check(_post_json(client, "/trainings", body, headers)).json()
        source = job["spec"].get("bounds_source")
        bounds = (
            f"; bounds {source['base_lr']:.3g} to {source['max_lr']:.3g} from range test "
            f"{source['range_test']} ({source['method']})"
            if source
            else ""
        )
        console.print(f"training {job['id']} {job['status']}: {job['total']} iterations{bounds}")
        if not wait:
            print(job["id"])
            return 0
        job = follow_training(client, job, console, interval_s=interval_s, sleep=sleep)
    except (Interrupted, KeyboardInterrupt) as exc:
        return _cancel(client, "/trainings", job, body, headers, console, exc)
    if job["status"] != "succeeded":
        console.print(f"[red]{job['status']}:[/] {job['error'] or 'no reason given'}")
        return 1
    print_training(job, console)
    if plot is not None:
        image = check(client.get(f"/trainings/{job['id']}/{plot_route(plot)}"))
        plot.write_bytes(image.content)
        console.print(f"plot written to {plot}")
    if output is not None:
        output.write_text(json.dumps({"job": job, **(record or {})}, indent=2))
        console.print(f"result written to {output}")
    return 0


def run_range_test_then_training(
    client: httpx.Client,
    range_test: dict[str, Any],
    training: dict[str, Any],
    console: Console,
    *,
    method: str | None,
    range_test_plot: Path | None,
    plot: Path | None,
    output: Path | None,
    interval_s: float = POLL_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """A range test, then a training with its bounds (``bounds_from``); the exit code.

    The range test is followed and reported as ``submit`` does (its bounds,
    its plot to ``range_test_plot``); the training only if it found bounds.
    ``output`` gets both jobs: ``{"job": <the training>, "range_test": ...}``.
    """
    done = _run_range_test(
        client,
        range_test,
        console,
        plot=range_test_plot,
        wait=True,
        interval_s=interval_s,
        sleep=sleep,
    )
    if done.code != 0 or done.job is None:
        return done.code
    if done.bounds is None:
        console.print("[red]no training:[/] the range test found no bounds to train with")
        return 1
    source = {"range_test": done.job["id"]} | ({"method": method} if method else {})
    return run_training(
        client,
        training | {"bounds_from": source},
        console,
        plot=plot,
        output=output,
        wait=True,
        interval_s=interval_s,
        sleep=sleep,
        record={"range_test": done.job, "bounds": done.bounds},
    )


# --------------------------------------------------------------------------- sweeps

SWEEP_POLL_INTERVAL_S = 0.5
"""How often a followed sweep is polled (its result holds the table so far: bigger)."""
STATUS_ORDER = ("succeeded", "running", "queued", "failed", "cancelled")


def _counts_text(counts: dict[str, int]) -> str:
    """``3 succeeded, 2 running, 4 queued``: the children by status, zeros left out."""
    order = [s for s in STATUS_ORDER if counts.get(s)] + sorted(
        s for s in counts if s not in STATUS_ORDER and counts[s]
    )
    return ", ".join(f"{counts[s]} {s}" for s in order) or "no children yet"


def follow_sweep(
    client: httpx.Client,
    job: dict[str, Any],
    console: Console,
    *,
    interval_s: float = SWEEP_POLL_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Poll the sweep until it finishes, drawing a bar of its finished children out of
    those planned and their counts by status; the final sweep."""
    location = f"/sweeps/{job['id']}"

    def counts(sweep: dict[str, Any]) -> str:
        return _counts_text((sweep.get("result") or {}).get("counts") or {})

    with Progress(
        TextColumn("[bold]{task.fields[status]}[/]"),
        BarColumn(bar_width=30),
        MofNCompleteColumn(),
        TextColumn("jobs  {task.fields[counts]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(
            "sweep",
            total=job["total"],
            completed=job["progress"],
            status=job["status"],
            counts=counts(job),
        )
        while job["status"] not in FINAL_STATUSES:
            sleep(interval_s)
            job = check(client.get(location)).json()
            progress.update(
                task,
                completed=job["progress"],
                total=job["total"],
                status=job["status"],
                counts=counts(job),
            )
    return job


def _spread(value: dict[str, Any] | None, spec: str = ".4f") -> str:
    """``mean ± std`` (``mean`` alone for one seed); ``-`` when there is none."""
    if value is None:
        return "-"
    text = format(value["mean"], spec)
    if value.get("std") is not None:
        text += f" ± {format(value['std'], spec)}"
    return text


def print_sweep(job: dict[str, Any], console: Console) -> None:
    """A sweep's table (the paper's: per grid point and policy), its bounds and failures."""
    result = job.get("result") or {}
    spec = job.get("spec") or {}
    points = result.get("points") or []
    several = len(points) > 1
    for point in points:
        bounds = point.get("bounds")
        if bounds is None:
            reason = point.get("no_bounds_reason") or "none yet"
            console.print(f"{point['label']}: [yellow]no bounds[/] ({reason})")
            continue
        source = "verified" if bounds["verified"] else f"range test's {bounds['method']}"
        if bounds.get("not_verified"):
            source += f"; not verified: {bounds['not_verified']}"
        console.print(
            f"{point['label']}: bounds {bounds['base_lr']:.3g} to {bounds['max_lr']:.3g} "
            f"({source}), fixed lr {bounds['fixed_lr']:.3g} ({bounds['fixed_lr_from']}), "
            f"step_size {bounds['step_size']}, {bounds['iterations']} iterations "
            f"({bounds['cycles']:g} cycles)"
        )
    table = Table(title=f"Sweep of {spec.get('workload', '?')}: policies at one budget")
    columns = ["policy", "final val acc", "best val acc", "iters to fixed", "ratio", "seeds"]
    if several:
        columns.insert(0, "grid point")
    for column in columns:
        table.add_column(
            column,
            overflow="fold",
            justify="left" if column in ("grid point", "policy") else "right",
        )
    for row in result.get("table") or []:
        reached = row.get("iterations_to_fixed")
        to_fixed = _spread(reached, ".0f")
        if reached is not None:
            to_fixed += f" ({row['reached_fixed']}/{row['succeeded']})"
        ratio = "-" if row.get("ratio_to_fixed") is None else f"{row['ratio_to_fixed']:.2f}x"
        seeds = f"{row['succeeded']}/{row['seeds']}"
        if row.get("failed"):
            seeds += f" ({row['failed']} failed)"
        cells = [
            row["policy"],
            _spread(row.get("final_val_accuracy")),
            _spread(row.get("best_val_accuracy")),
            to_fixed,
            ratio,
            seeds,
        ]
        table.add_row(*([row["label"], *cells] if several else cells))
    console.print(table)
    target = next(
        (
            r["fixed_accuracy"]
            for r in result.get("table") or []
            if r.get("fixed_accuracy") is not None
        ),
        None,
    )
    if target is not None:
        console.print(
            f"iters to fixed: the first epoch end at which a seed reached the fixed policy's "
            f"final mean accuracy ({target:.4f}), mean over the seeds that did (of those "
            "that succeeded); ratio: that over the fixed policy's own"
        )
    for failure in result.get("failures") or []:
        role = failure.get("role") or {}
        what = (
            "range test"
            if role.get("stage") == "range_test"
            else f"{role.get('policy')} seed {role.get('seed')}"
        )
        reason = str(failure["reason"])
        label = "cancelled" if reason == "the job was cancelled" else "failed"
        console.print(f"[yellow]{label}:[/] grid point {role.get('grid')} {what}: {reason}")


def run_sweep(
    client: httpx.Client,
    body: dict[str, Any],
    console: Console,
    *,
    plot: Path | None,
    output: Path | None,
    wait: bool,
    interval_s: float = SWEEP_POLL_INTERVAL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Submit a sweep, follow it, print its table; the exit code (0 succeeded, 1 failed
    or cancelled). ``output`` gets ``{"job": <the sweep>}``.

    An :class:`Interrupted` (or Ctrl-C) while the sweep is not finished cancels it
    (and so its children) and returns the signal's exit code (130, 143, ...).
    """
    headers = {"Idempotency-Key": uuid.uuid4().hex}
    job: dict[str, Any] | None = None
    try:
        job = check(_post_json(client, "/sweeps", body, headers)).json()
        result = job.get("result") or {}
        console.print(
            f"sweep {job['id']} {job['status']}: {len(result.get('points') or [])} grid "
            f"point(s), {job['total']} jobs (a range test, then every policy x seed, per point)"
        )
        if not wait:
            print(job["id"])
            return 0
        job = follow_sweep(client, job, console, interval_s=interval_s, sleep=sleep)
    except (Interrupted, KeyboardInterrupt) as exc:
        return _cancel(client, "/sweeps", job, body, headers, console, exc)
    print_sweep(job, console)
    if output is not None:
        output.write_text(json.dumps({"job": job}, indent=2))
        console.print(f"result written to {output}")
    if job["status"] != "succeeded":
        console.print(f"[red]{job['status']}:[/] {job['error'] or 'no reason given'}")
        return 1
    if plot is not None:
        image = check(client.get(f"/sweeps/{job['id']}/{plot_route(plot)}"))
        plot.write_bytes(image.content)
        console.print(f"plot written to {plot}")
    return 0
