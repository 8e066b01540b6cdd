"""The service's jobs from the command line, through :class:`clr_sweep.Client`.

``clr-sweep range-test|training|sweep submit|list|show|wait|plot|cancel`` (and
``range-test bounds``), ``clr-sweep jobs list`` (every kind), ``clr-sweep
workloads`` and ``clr-sweep login``. Each takes ``--url``/``--token`` (else the
client's ``CLR_URL``/``CLR_TOKEN``/config file; for a service on this machine
without either, the token ``clr-sweep serve`` keeps in its data folder) and
``--json``; ``submit`` also ``--embedded`` (a one-shot local service for the job).

``submit`` follows the job (``--no-wait``: it only queues it) and ``wait`` follows
an existing one, with a live progress bar; both exit with the job's outcome
(:class:`~cli.exit_codes.ExitCode`). Ctrl-C (SIGTERM, SIGHUP) while ``submit``
follows its job cancels it; while ``wait`` follows one it only stops watching.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer

from cli.embedded import Interrupted, interrupt_on_signals, start_embedded
from cli.exit_codes import EPILOG, ExitCode
from cli.follow import FINAL_STATUSES, POLL_INTERVAL_S, follow
from cli.options import (
    JsonOpt,
    TokenOpt,
    UrlOpt,
    check_plot_suffix,
    parse_params,
)
from cli.output import CommandError, Output, as_doc, handled, json_safe, markup_safe
from cli.render import (
    TITLES,
    print_bounds,
    print_jobs,
    print_range_test,
    print_sweep,
    print_training,
    status_text,
)

__all__ = [
    "Kind",
    "KINDS",
    "add_job_commands",
    "connect",
    "finish",
    "jobs_app",
    "login_command",
    "submit_and_follow",
    "workloads_command",
]

DEFAULT_RETRIES = 5
"""Retries of a request the service refused for now (``clr-sweep --retries``)."""
retries = DEFAULT_RETRIES
"""The current command's (the root callback sets it)."""
CANCEL_WAIT_S = 15.0
"""How long an interrupted ``submit`` waits for its cancelled job to stop."""
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
CONFIG = "Configuration (without JOB_ID)"
"""The help panel of ``range-test bounds``' configuration options."""


@dataclass(frozen=True)
class Kind:
    """A job kind as the command line names it."""

    name: str  # the API's: range_test
    command: str  # the command group's: range-test
    noun: str  # the API's path: range-tests

    @property
    def title(self) -> str:
        return TITLES[self.name]


KINDS = {
    "range_test": Kind("range_test", "range-test", "range-tests"),
    "training": Kind("training", "training", "trainings"),
    "sweep": Kind("sweep", "sweep", "sweeps"),
}

# --------------------------------------------------------------------------- connecting


def _local_token(url: str | None) -> str | None:
    """The token ``clr-sweep serve`` keeps in its data folder, for a service on this
    machine when the client finds no token (argument, CLR_TOKEN, the config file's)."""
    from clr_sweep.config import resolve

    resolved, token = resolve(url, None)
    if token is not None or urlsplit(resolved).hostname not in LOCAL_HOSTS:
        return None
    path = Path(os.environ.get("CLR_DATA_DIR") or ".clr-sweep") / "token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _embedded_data_dir() -> Path:
    from cli.local import need_service_extra

    need_service_extra("--embedded")
    from pydantic import ValidationError

    from core.settings import get_settings

    try:
        return get_settings().data_dir
    except ValidationError as exc:
        raise CommandError(ExitCode.INVALID, f"bad settings: {exc}") from exc


@contextmanager
def connect(
    out: Output, *, url: str | None, token: str | None, embedded: bool = False
) -> Iterator[Any]:
    """A :class:`clr_sweep.Client` of the service at ``url`` (or of an embedded one
    started for the command)."""
    from clr_sweep import Client

    if embedded:
        with start_embedded(_embedded_data_dir(), out) as service:
            client = Client(url=service.url, token=service.token, retries=retries)
            try:
                yield client
            finally:
                client.close()
        return
    client = Client(url=url, token=token or _local_token(url), retries=retries)
    try:
        yield client
    finally:
        client.close()


# --------------------------------------------------------------------------- jobs


def _check_kind(job: dict[str, Any], kind: Kind | None) -> None:
    if kind is None or job.get("kind") == kind.name:
        return
    name = str(job.get("kind"))
    message = f"job {job.get('id')} is a {TITLES.get(name, name)}, not a {kind.title}"
    if name in KINDS:
        message += f": `clr-sweep {KINDS[name].command} ...` reads it"
    raise CommandError(ExitCode.NOT_FOUND, message, status=404)


def with_bounds(client: Any, job: dict[str, Any]) -> dict[str, Any]:
    """A range test's document with its ``BoundsRead`` in ``result.bounds`` (null
    without bounds), as the local command answers."""
    if job.get("kind") != "range_test" or job.get("status") != "succeeded":
        return job
    import clr_sweep

    result = dict(job.get("result") or {})
    try:
        result["bounds"] = as_doc(client.bounds(str(job["id"])))
    except clr_sweep.Conflict:  # it succeeded, and its curve gave no bounds
        result["bounds"] = None
    return {**job, "result": result}


def _write_plot(client: Any, job: dict[str, Any], path: Path, out: Output) -> None:
    fmt = path.suffix.lower().lstrip(".")
    path.write_bytes(client.plot(str(job["id"]), fmt, kind=job["kind"]))
    out.print(f"plot written to {path}")


def _write_output(doc: dict[str, Any], path: Path | None, out: Output) -> None:
    if path is None:
        return
    path.write_text(json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")
    out.print(f"result written to {path}")


def print_job(job: dict[str, Any], out: Output) -> None:
    """A job for a person: its status line, then its kind's report."""
    job = markup_safe(job)
    title = TITLES.get(job["kind"], job["kind"])
    line = f"{title} {job['id']} {status_text(job)}"
    if job.get("total"):
        line += f": {job.get('progress', 0)}/{job['total']}"
    out.print(line, soft_wrap=True)
    if job["status"] in ("failed", "cancelled"):
        out.print(f"[red]{job['status']}:[/] {job.get('error') or 'no reason given'}")
    if job["kind"] == "range_test":
        print_range_test(job, out)
    elif job["kind"] == "training" and job["status"] == "succeeded":
        print_training(job, out)
    elif job["kind"] == "sweep":
        print_sweep(job, out)


def outcome_code(job: dict[str, Any]) -> ExitCode:
    """The exit code of a followed job's end."""
    status = job.get("status")
    if status == "failed":
        return ExitCode.JOB_FAILED
    if status == "cancelled":
        return ExitCode.JOB_CANCELLED
    return ExitCode.OK


def _cancel_submitted(
    client: Any,
    submit: Callable[[], Any],
    job: dict[str, Any] | None,
    out: Output,
) -> dict[str, Any]:
    """Cancel the job an interrupted ``submit`` made and wait for it to stop."""
    import clr_sweep

    if job is None:  # interrupted before the answer: the same key finds (or makes) it
        job = as_doc(submit())
    assert job is not None
    try:
        client.cancel(str(job["id"]))
    except clr_sweep.Conflict:  # it finished meanwhile
        pass
    out.print(f"[yellow]cancel requested[/] for {job['id']}")
    # the worker stops the job at its next report: wait for that (a second signal ends
    # the wait), so the job reads "cancelled" before the command ends
    deadline = time.monotonic() + CANCEL_WAIT_S
    while job["status"] not in FINAL_STATUSES and time.monotonic() < deadline:
        time.sleep(POLL_INTERVAL_S)
        job = as_doc(client.get(str(job["id"])))
    out.print(f"job {job['id']} {job['status']}")
    return job


def _non_finite(value: Any, path: str = "") -> list[str]:
    """The dotted names of the NaN or infinite numbers in a request body."""
    if isinstance(value, float) and not math.isfinite(value):
        return [path or "body"]
    if isinstance(value, dict):
        return [f for k, v in value.items() for f in _non_finite(v, f"{path}.{k}" if path else k)]
    if isinstance(value, list):
        return [f for i, v in enumerate(value) for f in _non_finite(v, f"{path}.{i}")]
    return []


def check_finite(body: dict[str, Any]) -> None:
    """Refuse a NaN or an infinity as the API would (JSON has neither, so the client
    cannot send one): invalid input naming the field."""
    fields = _non_finite(body)
    if fields:
        errors = [{"field": f, "reason": "must be a finite number"} for f in fields]
        detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
        raise CommandError(ExitCode.INVALID, detail, status=None, errors=errors)


class Stopped(Exception):
    """A signal stopped the command; ``job`` is the job as it was left."""

    def __init__(self, code: int, job: dict[str, Any] | None) -> None:
        super().__init__(code)
        self.code = code
        self.job = job


def submit_and_follow(
    client: Any,
    kind: Kind,
    body: dict[str, Any],
    out: Output,
    *,
    wait: bool,
    announce: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """Submit a job (an idempotency key of its own) and, with ``wait``, follow it to its end.

    Raises:
        Stopped: a signal while following it; the job was cancelled.
    """
    check_finite(body)
    key = uuid.uuid4().hex
    submit_fn = getattr(client, f"submit_{kind.name}")

    def submit() -> Any:
        return submit_fn(body, idempotency_key=key)

    job: dict[str, Any] | None = None
    try:
        with interrupt_on_signals():
            try:
                job = as_doc(submit())
                assert job is not None
                text = announce(job) if announce else ""
                shown = markup_safe(job)
                out.print(
                    f"{kind.title} {shown['id']} {status_text(shown)}{markup_safe(text)}",
                    soft_wrap=True,
                )
                if wait:
                    job = follow(client, job, out)
            except (Interrupted, KeyboardInterrupt) as exc:
                code = exc.exit_code if isinstance(exc, Interrupted) else ExitCode.INTERRUPTED
                raise Stopped(code, _cancel_submitted(client, submit, job, out)) from exc
    except (Interrupted, KeyboardInterrupt) as exc:  # a second signal during the cancel
        code = exc.exit_code if isinstance(exc, Interrupted) else ExitCode.INTERRUPTED
        raise Stopped(code, job) from exc
    assert job is not None
    return job


def finish(
    out: Output,
    job: dict[str, Any],
    *,
    client: Any,
    plot: Path | None = None,
    output: Path | None = None,
    doc: dict[str, Any] | None = None,
) -> None:
    """Report a job the command waited for, write its plot and document, and exit with
    its outcome (the document, ``doc`` or the job, is what ``--json`` prints)."""
    if job["status"] == "succeeded" and plot is not None:
        _write_plot(client, job, plot, out)
    document = doc if doc is not None else job
    _write_output(document, output, out)
    out.emit(document)
    code = outcome_code(job)
    if code is not ExitCode.OK:
        if out.json:  # a person reads print_job's line; stderr still says why
            reason = markup_safe(job.get("error") or "no reason given")
            out.print(f"[red]{job['status']}:[/] {reason}")
        raise typer.Exit(int(code))


def stopped(out: Output, exc: Stopped) -> None:
    """End a command a signal stopped: the job as left (``--json``), the signal's code."""
    if exc.job is not None:
        out.emit(exc.job)
    raise typer.Exit(exc.code)


def job_id_arg(value: str) -> str:
    """The ``ID`` argument as a job id; else an invalid-input error naming it (exit 2)."""
    try:
        return str(uuid.UUID(value.strip()))
    except ValueError:
        reason = f"not a job id (a UUID): {value[:64]!r}"
        raise CommandError(
            ExitCode.INVALID, f"ID: {reason}", errors=[{"field": "ID", "reason": reason}]
        ) from None


JobIdArg = Annotated[str, typer.Argument(help="The job's id.", show_default=False)]


def _list_options_doc(kind: Kind | None) -> str:
    return "every kind" if kind is None else f"{kind.title}s"


def list_jobs(
    out: Output,
    *,
    kind: Kind | None,
    status: list[str],
    workload: str | None,
    parent: str | None,
    limit: int,
    url: str | None,
    token: str | None,
) -> None:
    """``list``: the team's jobs, newest first."""
    with connect(out, url=url, token=token) as client:
        filters: dict[str, Any] = {"limit": limit}
        if kind is not None:
            filters["kind"] = kind.name
        if status:
            filters["status"] = status
        if workload is not None:
            filters["workload"] = workload
        if parent is not None:
            filters["parent"] = parent
        jobs = [as_doc(job) for job in client.list(**filters)]
    if not out.json:
        print_jobs(jobs, out, title=f"Jobs ({_list_options_doc(kind)})")
    out.emit({"items": jobs})


def add_job_commands(app: typer.Typer, kind: Kind) -> None:
    """``list``, ``show``, ``wait``, ``plot`` and ``cancel`` of one kind (``bounds``
    for range tests)."""

    @app.command("list", epilog=EPILOG)
    def list_command(
        status: Annotated[
            list[str],
            typer.Option(help="Only jobs in this status (repeat): queued, running, ..."),
        ] = [],  # noqa: B006 - typer reads the default, never mutates it
        workload: Annotated[str | None, typer.Option(help="Only jobs of this workload.")] = None,
        parent: Annotated[
            str | None, typer.Option(help="Only this job's children (a sweep's).")
        ] = None,
        limit: Annotated[int, typer.Option(min=1, help="At most this many jobs.")] = 50,
        url: UrlOpt = None,
        token: TokenOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        out = Output(json_)
        with handled(out):
            list_jobs(
                out,
                kind=kind,
                status=status,
                workload=workload,
                parent=parent,
                limit=limit,
                url=url,
                token=token,
            )

    list_command.__doc__ = f"List the team's {kind.title}s, newest first."

    @app.command("show", epilog=EPILOG)
    def show_command(
        job_id: JobIdArg,
        url: UrlOpt = None,
        token: TokenOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        out = Output(json_)
        with handled(out):
            job_id = job_id_arg(job_id)
            with connect(out, url=url, token=token) as client:
                job = as_doc(client.get(job_id))
                _check_kind(job, kind)
                job = with_bounds(client, job)
                if not out.json:
                    print_job(job, out)
                out.emit(job)

    show_command.__doc__ = (
        f"Show a {kind.title}: its status (a queued one: what it waits for) and result"
        + (" with its bounds." if kind.name == "range_test" else ".")
        + (" A sweep shows each grid point's bounds." if kind.name == "sweep" else "")
    )

    @app.command("wait", epilog=EPILOG)
    def wait_command(
        job_id: JobIdArg,
        plot: Annotated[
            Path | None, typer.Option(help="Then write its plot (.png or .svg).")
        ] = None,
        output: Annotated[
            Path | None, typer.Option(help="Then write the --json document to this file.")
        ] = None,
        url: UrlOpt = None,
        token: TokenOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        out = Output(json_)
        with handled(out):
            job_id = job_id_arg(job_id)
            check_plot_suffix(plot)
            with connect(out, url=url, token=token) as client:
                job = as_doc(client.get(job_id))
                _check_kind(job, kind)
                try:
                    with interrupt_on_signals():
                        out.print(
                            f"waiting for {kind.title} {job_id} (Ctrl-C stops watching; the "
                            "job goes on)"
                        )
                        job = follow(client, job, out)
                except (Interrupted, KeyboardInterrupt) as exc:
                    code = exc.exit_code if isinstance(exc, Interrupted) else 130
                    out.print(f"stopped watching job {job_id}; it goes on")
                    stopped(out, Stopped(code, job))
                job = with_bounds(client, job)
                if not out.json:
                    print_job(job, out)
                finish(out, job, client=client, plot=plot, output=output)

    wait_command.__doc__ = (
        f"Follow a {kind.title} to its end with a live progress bar; exit with its outcome. "
        "Ctrl-C stops watching (the job goes on)."
    )

    @app.command("plot", epilog=EPILOG)
    def plot_command(
        job_id: JobIdArg,
        output: Annotated[
            Path | None,
            typer.Option(
                "--output", "-o", help="The file (.png or .svg; default: <kind>-<id>.png)."
            ),
        ] = None,
        url: UrlOpt = None,
        token: TokenOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        out = Output(json_)
        with handled(out):
            job_id = job_id_arg(job_id)
            path = output or Path(f"{kind.command}-{job_id}.png")
            check_plot_suffix(path, "--output")
            with connect(out, url=url, token=token) as client:
                job = as_doc(client.get(job_id))
                _check_kind(job, kind)
                fmt = path.suffix.lower().lstrip(".")
                data = client.plot(job_id, fmt, kind=kind.name)
            path.write_bytes(data)
            out.print(f"plot written to {path}")
            out.emit({"id": job_id, "kind": kind.name, "path": str(path), "format": fmt,
                      "bytes": len(data)})  # fmt: skip

    plot_command.__doc__ = f"Download a {kind.title}'s plot (the service draws it)."

    @app.command("cancel", epilog=EPILOG)
    def cancel_command(
        job_id: JobIdArg,
        url: UrlOpt = None,
        token: TokenOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        out = Output(json_)
        with handled(out):
            job_id = job_id_arg(job_id)
            with connect(out, url=url, token=token) as client:
                job = as_doc(client.get(job_id))
                _check_kind(job, kind)
                job = as_doc(client.cancel(job_id))
                state = "cancelled" if job["status"] == "cancelled" else "cancel requested"
                out.print(f"{kind.title} {job_id}: {state}")
                out.emit(job)

    cancel_command.__doc__ = (
        f"Cancel a {kind.title}: a queued one at once, a running one at its next step"
        + (" (and its children)." if kind.name == "sweep" else ".")
    )

    if kind.name != "range_test":
        return

    @app.command("bounds", epilog=EPILOG)
    def bounds_command(
        job_id: Annotated[
            str | None,
            typer.Argument(
                help="A finished range test's id; or, without it, the configuration below.",
                show_default=False,
            ),
        ] = None,
        method: Annotated[
            str | None,
            typer.Option(help="The method to put first (default: the range test's default)."),
        ] = None,
        workload: Annotated[
            str | None,
            typer.Option(help="A registered workload's configuration.", rich_help_panel=CONFIG),
        ] = None,
        param: Annotated[
            list[str],
            typer.Option(
                "--param", "-p", help="Its parameter NAME=VALUE (repeat).", rich_help_panel=CONFIG
            ),
        ] = [],  # noqa: B006 - typer reads the default, never mutates it
        model: Annotated[
            str | None,
            typer.Option(
                help="Or the model of a range test run in the team's own loop.",
                rich_help_panel=CONFIG,
            ),
        ] = None,
        dataset: Annotated[
            str | None, typer.Option(help="Its dataset.", rich_help_panel=CONFIG)
        ] = None,
        tag: Annotated[
            list[str],
            typer.Option(help="Its tag NAME=VALUE (repeat).", rich_help_panel=CONFIG),
        ] = [],  # noqa: B006 - typer reads the default, never mutates it
        batch_size: Annotated[
            int | None, typer.Option(help="Samples per step.", rich_help_panel=CONFIG)
        ] = None,
        optimizer: Annotated[
            str | None,
            typer.Option(help="sgd, adam or adamw (default: sgd).", rich_help_panel=CONFIG),
        ] = None,
        momentum: Annotated[
            float | None, typer.Option(help="SGD momentum (default: 0.9).", rich_help_panel=CONFIG)
        ] = None,
        weight_decay: Annotated[
            float | None, typer.Option(help="Weight decay (default: 0).", rich_help_panel=CONFIG)
        ] = None,
        metric: Annotated[
            str | None,
            typer.Option(help="loss or accuracy (default: loss).", rich_help_panel=CONFIG),
        ] = None,
        url: UrlOpt = None,
        token: TokenOpt = None,
        json_: JsonOpt = False,
    ) -> None:
        """Print a finished range test's suggested bounds (every method's) and the code to
        train with them: by its id, or the latest of a configuration (`GET /bounds`)."""
        out = Output(json_)
        with handled(out):
            configuration = _configuration(
                workload=workload,
                params=param,
                model=model,
                dataset=dataset,
                tags=tag,
                batch_size=batch_size,
                optimizer=optimizer,
                momentum=momentum,
                weight_decay=weight_decay,
                metric=metric,
            )
            if job_id is not None and configuration:
                raise typer.BadParameter(
                    f"give a range test's id or its configuration "
                    f"({', '.join('--' + k.replace('_', '-') for k in configuration)}), "
                    "not both",
                    param_hint="JOB_ID",
                )
            if job_id is None and not ({"workload", "model"} & set(configuration)):
                raise typer.BadParameter(
                    "give a range test's id, or a configuration: --workload (and its "
                    "--param), or --model (and --dataset, --tag) of a test run in your loop",
                    param_hint="JOB_ID",
                )
            with connect(out, url=url, token=token) as client:
                if job_id is not None:
                    job_id = job_id_arg(job_id)
                    bounds = as_doc(client.bounds(job_id, method=method))
                else:
                    bounds = as_doc(client.find_bounds(method=method, **configuration))
            if not out.json:
                what = job_id or bounds.get("config_key") or "the configuration"
                print_bounds(markup_safe(bounds), out, title=f"Suggested CLR bounds of {what}")
            out.emit(bounds)


def _configuration(
    *,
    workload: str | None,
    params: list[str],
    model: str | None,
    dataset: str | None,
    tags: list[str],
    batch_size: int | None,
    optimizer: str | None,
    momentum: float | None,
    weight_decay: float | None,
    metric: str | None,
) -> dict[str, Any]:
    """``Client.find_bounds``' arguments of ``range-test bounds``' options (unset: left out,
    so the service's defaults apply and its errors name the fields)."""
    given: dict[str, Any] = {
        "workload": workload,
        "model": model,
        "dataset": dataset,
        "batch_size": batch_size,
        "metric": metric,
    }
    found = {k: v for k, v in given.items() if v is not None}
    if params:
        found["params"] = parse_params(params)
    if tags:
        found["tags"] = {k: str(v) for k, v in parse_params(tags, hint="--tag").items()}
    hyper = {"momentum": momentum, "weight_decay": weight_decay}
    if optimizer is not None or any(v is not None for v in hyper.values()):
        found["optimizer"] = {"name": optimizer or "sgd"} | {
            k: v for k, v in hyper.items() if v is not None
        }
    return found


# --------------------------------------------------------------------------- jobs list

jobs_app = typer.Typer(help="Jobs of every kind.", no_args_is_help=True)


@jobs_app.command("list", epilog=EPILOG)
def jobs_list_command(
    kind: Annotated[
        str | None, typer.Option(help="Only this kind: range_test, training or sweep.")
    ] = None,
    status: Annotated[
        list[str], typer.Option(help="Only jobs in this status (repeat): queued, running, ...")
    ] = [],  # noqa: B006 - typer reads the default, never mutates it
    workload: Annotated[str | None, typer.Option(help="Only jobs of this workload.")] = None,
    parent: Annotated[
        str | None, typer.Option(help="Only this job's children (a sweep's).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many jobs.")] = 50,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List the team's jobs of every kind, newest first."""
    out = Output(json_)
    with handled(out):
        named = None
        if kind is not None:
            named = KINDS.get(kind.replace("-", "_"))
            if named is None:
                raise typer.BadParameter(
                    f"unknown kind {kind!r}; one of: {', '.join(KINDS)}", param_hint="--kind"
                )
        list_jobs(
            out,
            kind=named,
            status=status,
            workload=workload,
            parent=parent,
            limit=limit,
            url=url,
            token=token,
        )


# --------------------------------------------------------------------------- workloads


def workloads_command(
    local: Annotated[
        bool,
        typer.Option(help="This machine's registry instead of the service's (service extra)."),
    ] = False,
    url: UrlOpt = None,
    token: TokenOpt = None,
    json_: JsonOpt = False,
) -> None:
    """List the workloads the service runs (or, with --local, this machine's) and their
    parameters."""
    from rich.table import Table

    out = Output(json_)
    with handled(out):
        if local:
            doc = _local_workloads()
        else:
            with connect(out, url=url, token=token) as client:
                doc = as_doc(client.workloads())
        if not out.json:
            table = Table(title="Workloads")
            for column in ("name", "task", "parameters (default)", "description"):
                table.add_column(column, overflow="fold")
            for item in doc["items"]:
                props = (item.get("params") or {}).get("properties") or {}
                params = ", ".join(f"{n}={p.get('default')}" for n, p in props.items())
                table.add_row(item["name"], item.get("task", ""), params, item["description"])
            out.print(table)
        out.emit(doc)


def _local_workloads() -> dict[str, Any]:
    """This machine's workloads, as ``GET /workloads`` answers."""
    from cli.local import need_service_extra

    need_service_extra("--local")
    from clr.workloads import get_workload, list_workloads

    items = []
    for name in list_workloads():
        workload = get_workload(name)
        items.append(
            {
                "name": workload.name,
                "description": workload.description,
                "task": workload.task,
                "params": workload.param_schema(),
            }
        )
    return {"items": items}


# --------------------------------------------------------------------------- login


def login_command(
    url: Annotated[str, typer.Argument(help="The service's URL, e.g. https://clr.example.org.")],
    token: Annotated[
        str | None,
        typer.Option(help="The API token (`clr-sweep token create`); asked for when not given."),
    ] = None,
    check: Annotated[
        bool, typer.Option(help="First check that the service answers and takes the token.")
    ] = True,
    json_: JsonOpt = False,
) -> None:
    """Save the service's URL and token in the config file (mode 0600) that every command
    and `clr_sweep.Client()` read."""
    from clr_sweep import config

    out = Output(json_)
    with handled(out):
        if token is None:
            token = typer.prompt("token", hide_input=True, err=True)
        if check:
            from clr_sweep import Client

            client = Client(url=url, token=token, retries=retries)
            try:
                next(iter(client.list(limit=1)), None)  # a request that needs the token
            finally:
                client.close()
        path = config.login(url, token)
        out.print(f"logged in to {url}; config written to {path}")
        out.emit({"url": url, "config": str(path)})
