"""``clr-sweep submit``: a range test through the service's API, followed to its end.

It POSTs the spec, shows a progress bar while the job runs, prints every method's
suggested bounds and writes the plot the API draws. With ``--embedded`` it first
starts ``clr-sweep serve`` (the embedded default) for this one submission and
stops it afterwards; otherwise it talks to ``--url`` (``CLR_API_URL``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["ApiError", "EmbeddedService", "follow_job", "print_bounds", "start_embedded"]

FINAL_STATUSES = ("succeeded", "failed", "cancelled")
POLL_INTERVAL_S = 0.2
READY_TIMEOUT_S = 120.0


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


def follow_job(
    client: httpx.Client,
    job: dict[str, Any],
    console: Console,
    *,
    interval_s: float = POLL_INTERVAL_S,
) -> dict[str, Any]:
    """Poll the job until it finishes, drawing a progress bar; the final job."""
    location = f"/range-tests/{job['id']}"
    with Progress(
        TextColumn("[bold]{task.fields[status]:<9}[/]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[where]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("job", total=job["total"], status=job["status"], where="")
        while job["status"] not in FINAL_STATUSES:
            time.sleep(interval_s)
            job = check(client.get(location)).json()
            where = f"on {job['device']} ({job['worker']})" if job["worker"] else ""
            progress.update(
                task,
                completed=job["progress"],
                total=job["total"],
                status=job["status"],
                where=where,
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
    """Start ``clr-sweep serve`` on a free local port; stop it on the way out."""
    from cli.service import TOKEN_FILE, free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = data_dir / "logs" / "serve.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"starting the embedded service on {url} (data in {data_dir}, log {log_path})")
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, "CLR_DATA_DIR": str(data_dir)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    service = EmbeddedService(process, url, "", log_path)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the embedded service exited with {process.returncode}:\n{service.log_tail()}"
                )
            try:
                if httpx.get(f"{url}/readyz", timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the embedded service was not ready in {READY_TIMEOUT_S:g} s")
            time.sleep(0.1)
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


def run_submission(
    client: httpx.Client,
    body: dict[str, Any],
    console: Console,
    *,
    plot: Path | None,
    output: Path | None,
    wait: bool,
) -> int:
    """Submit, follow, report; the exit code (0 succeeded, 1 failed or cancelled)."""
    job = check(client.post("/range-tests", json=body)).json()
    console.print(f"range test {job['id']} {job['status']}")
    if not wait:
        print(job["id"])
        return 0
    try:
        job = follow_job(client, job, console)
    except KeyboardInterrupt:
        check(client.post(f"/range-tests/{job['id']}/cancel"))
        console.print(f"[yellow]cancel requested[/] for {job['id']}")
        return 130
    if job["status"] != "succeeded":
        console.print(f"[red]{job['status']}:[/] {job['error'] or 'no reason given'}")
        return 1
    summary = (job.get("result") or {}).get("summary") or {}
    if summary:
        console.print(
            f"{summary.get('stop_reason')}: {summary.get('stop_detail')} "
            f"({summary.get('steps_run')} steps in {summary.get('seconds', 0):.2f} s on "
            f"{job['device']})"
        )
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
    if output is not None:
        output.write_text(json.dumps({"job": job, "bounds": bounds}, indent=2))
        console.print(f"result written to {output}")
    return 0
