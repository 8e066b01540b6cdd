"""The ``clr-sweep`` command line.

- ``clr-sweep range-test`` runs an LR range test here (no service) and prints every
  method's suggested bounds and the code to use them; ``range-test submit`` sends the
  same options to the service. ``training`` and ``sweep`` send CLR trainings and
  sweeps; each group lists, shows, waits for, plots and cancels its jobs
  (:mod:`cli.submit`, :mod:`cli.jobs`); ``jobs list`` lists every kind.
- ``workloads``, ``login``; ``schedule`` previews a schedule as a plot.
- Running the service: ``serve`` (the embedded default), ``api``, ``worker``,
  ``reaper``, and its administration: ``db upgrade``, ``team``, ``token``.

Every command takes ``--json`` (one JSON document on stdout) and exits with a code
of :class:`cli.exit_codes.ExitCode`. The client commands need only the light
install (the ``clr_sweep`` client); the others say so when the service extra is
missing.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

import cli.jobs
from cli.exit_codes import EPILOG, ExitCode
from cli.jobs import jobs_app, login_command, workloads_command
from cli.local import need_service_extra
from cli.options import JsonOpt, check_plot_suffix
from cli.output import CommandError, Output, handled
from cli.submit import range_test_app, sweep_app, training_app

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session

    from core.settings import Settings

T = TypeVar("T")

app = typer.Typer(
    help="Find good learning rates (LR range test) and train with Cyclical Learning Rates.",
    no_args_is_help=True,
    epilog=EPILOG,
)
console = Output().console


def _version() -> str:
    try:
        return version("clr-sweep")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"clr-sweep {_version()}")
        raise typer.Exit()


@app.callback()
def root(
    _version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
    retries: Annotated[
        int,
        typer.Option(
            min=0,
            help="Retries of a request the service cannot take now (unreachable, 503, "
            "or 429: the team's cap of active jobs), honouring its Retry-After; "
            "0 fails at once (exit code 6 or 9).",
        ),
    ] = cli.jobs.DEFAULT_RETRIES,
) -> None:
    """Find good learning rates (LR range test) and train with Cyclical Learning Rates."""
    cli.jobs.retries = retries


app.add_typer(range_test_app, name="range-test")
app.add_typer(training_app, name="training")
app.add_typer(sweep_app, name="sweep")
app.add_typer(jobs_app, name="jobs")
app.command("workloads", epilog=EPILOG)(workloads_command)
app.command("login", epilog=EPILOG)(login_command)


def _schedule_kwargs(
    policy: str, base_lr: float, max_lr: float, step_size: int, steps: int, gamma: float | None
) -> dict[str, Any]:
    """Each policy's arguments from the command's common options."""
    if policy in ("triangular", "triangular2", "exp_range"):
        return {
            "base_lr": base_lr,
            "max_lr": max_lr,
            # the step policy's step (its LR decays every step_size); a cycle's half otherwise
            "step_size" if policy == "step" else "step_size_up": step_size,
            "gamma": 0.99994 if gamma is None else gamma,
            "base_momentum": 0.8,
            "max_momentum": 0.9,
        }
    if policy == "fixed":
        return {"lr": max_lr}
    if policy == "step":
        return {"lr": max_lr, "step_size": 2 * step_size, "gamma": 0.5 if gamma is None else gamma}
    if policy == "exp":
        return {"lr": max_lr, "gamma": 0.9995 if gamma is None else gamma}
    if policy == "one_cycle":
        return {"max_lr": max_lr, "total_steps": steps}
    if policy == "cosine_restarts":
        return {
            "max_lr": max_lr,
            "T_0": 2 * step_size,
            "eta_min": base_lr,
            "decay": 1.0 if gamma is None else gamma,
        }
    return {}  # make_schedule names the known policies


@app.command("schedule", epilog=EPILOG)
def schedule_command(
    policy: Annotated[
        str,
        typer.Option(
            help="triangular, triangular2, exp_range, fixed, step, exp, one_cycle or "
            "cosine_restarts."
        ),
    ] = "triangular2",
    base_lr: Annotated[float, typer.Option(help="Lower LR bound.")] = 1e-3,
    max_lr: Annotated[float, typer.Option(help="Upper LR bound.")] = 6e-3,
    step_size: Annotated[int, typer.Option(help="Iterations per half cycle.")] = 2000,
    cycles: Annotated[int, typer.Option(help="Cycles to draw.")] = 4,
    gamma: Annotated[
        float | None,
        typer.Option(help="Decay: exp_range and exp per iteration, step per drop, SGDR per cycle."),
    ] = None,
    shape: Annotated[str, typer.Option(help="triangle, sine or parabolic (cyclic).")] = "triangle",
    plot: Annotated[Path, typer.Option(help="Output file (.png or .svg).")] = Path("schedule.png"),
    json_: JsonOpt = False,
) -> None:
    """Draw a schedule (LR and momentum vs iteration) over a number of cycles."""
    out = Output(json_)
    with handled(out):
        check_plot_suffix(plot)
        need_service_extra("schedule")
        from clr import cycle_end, make_schedule, plot_schedule, total_iterations
        from clr.exceptions import CLRError

        try:
            steps = total_iterations(cycles, step_size)
            kwargs = _schedule_kwargs(policy, base_lr, max_lr, step_size, steps, gamma)
            if policy in ("triangular", "triangular2", "exp_range"):
                kwargs["shape"] = shape
            schedule = make_schedule(policy, **kwargs)
            ends = [cycle_end(k, step_size) for k in range(1, cycles + 1)]
            plot_schedule(
                schedule,
                steps=steps,
                path=plot,
                title=f"{policy}, step_size={step_size}",
                cycle_ends=ends,
            )
        except CLRError as exc:
            raise CommandError(ExitCode.INVALID, str(exc)) from exc
        out.print(f"schedule plot written to {plot}")
        out.emit({"policy": policy, "plot": str(plot), "iterations": steps, "cycle_ends": ends})


db_app = typer.Typer(
    help="The service's database (CLR_DATABASE_URL; default: SQLite in CLR_DATA_DIR).",
    no_args_is_help=True,
)
team_app = typer.Typer(help="Teams: each sees only its own jobs.", no_args_is_help=True)
token_app = typer.Typer(
    help="API tokens (stored hashed; the secret is shown once).", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(team_app, name="team")
app.add_typer(token_app, name="token")


@db_app.command("upgrade", epilog=EPILOG)
def db_upgrade_command(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
    json_: JsonOpt = False,
) -> None:
    """Migrate the database to the newest schema (Alembic)."""
    out = Output(json_)
    with handled(out):
        settings = _settings()
        from core.migrate import upgrade

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings, revision)
        out.print(f"database at {revision}: {settings.db_url}")
        out.emit({"revision": revision, "database": settings.db_url})


def _in_session(action: Callable[[Session], T]) -> T:
    """Run ``action`` in one committed unit of work; a domain error is a
    :class:`CommandError` with its detail and its status's exit code."""
    settings = _settings()
    from core.db import make_engine, make_session_factory, session_scope
    from core.errors import DomainError

    engine = make_engine(settings)
    try:
        with session_scope(make_session_factory(engine)) as session:
            return action(session)
    except DomainError as exc:
        code = {404: ExitCode.NOT_FOUND, 409: ExitCode.CONFLICT}.get(exc.status, ExitCode.INVALID)
        raise CommandError(code, exc.detail, status=exc.status, errors=exc.errors) from exc
    finally:
        engine.dispose()


@team_app.command("create", epilog=EPILOG)
def team_create_command(
    name: Annotated[str, typer.Argument(help="Team name.")], json_: JsonOpt = False
) -> None:
    """Create a team."""
    out = Output(json_)
    with handled(out):
        from core.services import create_team

        team_id = _in_session(lambda session: create_team(session, name=name).id)
        out.print(f"team {name!r} created ({team_id})")
        out.emit({"id": str(team_id), "name": name})


@token_app.command("create", epilog=EPILOG)
def token_create_command(
    team: Annotated[str, typer.Option(help="The team the token acts for.")],
    name: Annotated[str, typer.Option(help="A label for the token.")] = "cli",
    json_: JsonOpt = False,
) -> None:
    """Issue an API token for a team and print its secret (shown only this once)."""
    out = Output(json_)
    with handled(out):
        from core.services import create_token, get_team

        def issue(session: Session) -> tuple[str, str]:
            issued = create_token(session, team=get_team(session, name=team), name=name)
            session.flush()
            return str(issued.token.id), issued.secret

        token_id, secret = _in_session(issue)
        out.emit({"id": token_id, "team": team, "name": name, "secret": secret})
        if not out.json:
            out.print(f"token for team {team!r} (store it now; only its hash is kept):")
            print(secret)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


@token_app.command("list", epilog=EPILOG)
def token_list_command(
    team: Annotated[str, typer.Option(help="The team whose tokens to list.")],
    json_: JsonOpt = False,
) -> None:
    """List a team's tokens: id, name, prefix, created, last used, revoked (never secrets)."""
    from rich.table import Table

    out = Output(json_)
    with handled(out):
        from core.services import get_team, list_tokens

        def rows(session: Session) -> list[dict[str, Any]]:
            tokens = list_tokens(session, team=get_team(session, name=team))
            return [
                {
                    "id": str(t.id),
                    "name": t.name,
                    "prefix": t.prefix,
                    "created_at": _iso(t.created_at),
                    "last_used_at": _iso(t.last_used_at),
                    "revoked_at": _iso(t.revoked_at),
                }
                for t in tokens
            ]

        tokens = _in_session(rows)
        table = Table(title=f"Tokens of team {team!r}")
        table.add_column("id", no_wrap=True, min_width=36)  # whole, to copy into `token revoke`
        for column in ("name", "prefix", "created", "last used", "revoked"):
            table.add_column(column, overflow="fold")
        for t in tokens:
            table.add_row(
                t["id"],
                t["name"],
                f"{t['prefix']}…",
                _text(t["created_at"]),
                _text(t["last_used_at"]),
                _text(t["revoked_at"]),
            )
        if not out.json:
            out.print(table)
        out.emit({"items": tokens})


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _text(iso: str | None) -> str:
    return "-" if iso is None else iso.replace("T", " ")[:19]


@token_app.command("revoke", epilog=EPILOG)
def token_revoke_command(
    token_id: Annotated[str, typer.Argument(help="The token's id (`clr-sweep token list`).")],
    team: Annotated[str, typer.Option(help="The team the token belongs to.")],
    json_: JsonOpt = False,
) -> None:
    """Revoke a token: the API refuses it from its next request on."""
    import uuid

    out = Output(json_)
    with handled(out):
        try:
            parsed = uuid.UUID(token_id)
        except ValueError as exc:
            raise typer.BadParameter(
                f"not a token id: {token_id!r}", param_hint="TOKEN_ID"
            ) from exc
        from core.services import get_team, revoke_token

        prefix = _in_session(
            lambda session: (
                revoke_token(session, team=get_team(session, name=team), token_id=parsed).prefix
            )
        )
        out.print(f"token {parsed} ({prefix}…) of team {team!r} revoked")
        out.emit({"id": str(parsed), "team": team, "prefix": prefix, "revoked": True})


# --------------------------------------------------------------------------- the service

Host = Annotated[str, typer.Option(help="Interface to listen on.")]
Port = Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")]
LogLevel = Annotated[str, typer.Option(help="Worker log level (DEBUG, INFO, WARNING).")]


def _settings() -> Settings:
    """The service's settings; a clear error without the service extra or with bad ones."""
    need_service_extra("this command")
    from pydantic import ValidationError

    from core.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        raise CommandError(ExitCode.INVALID, f"bad settings: {exc}") from exc


def _settings_or_exit() -> Settings:
    """:func:`_settings` for the long-running commands (no ``--json``)."""
    out = Output()
    with handled(out):
        return _settings()
    raise AssertionError("unreachable")  # handled() exits


@app.command("api")
def api_command(host: Host = "127.0.0.1", port: Port = 8000) -> None:
    """Serve the REST API (production: CLR_DATABASE_URL and CLR_BROKER_URL set)."""
    import uvicorn

    from cli.service import build_api, uvicorn_config

    config = uvicorn_config(build_api(_settings_or_exit()), host=host, port=port, log_level="info")
    uvicorn.Server(config).run()


def _gpu_list(gpus: str | None) -> list[str]:
    from cli.service import parse_gpus

    if gpus is None:
        return []
    try:
        return parse_gpus(gpus)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--gpus") from exc


@app.command("worker")
def worker_command(
    gpus: Annotated[
        str | None,
        typer.Option(help="GPUs to run on, e.g. 0,1: one worker process each (CUDA queues)."),
    ] = None,
    processes: Annotated[
        int, typer.Option(min=1, help="CPU worker processes when no --gpus are given.")
    ] = 1,
    loglevel: LogLevel = "INFO",
) -> None:
    """Run jobs: one Celery worker process per GPU (or CPU workers), restarted if one dies."""
    from cli.service import Supervisor, worker_specs

    _settings_or_exit()
    specs = worker_specs(gpus=_gpu_list(gpus), processes=processes, loglevel=loglevel)
    for spec in specs:
        pinned = spec.env.get("CUDA_VISIBLE_DEVICES")
        console.print(f"worker {spec.name}: CUDA_VISIBLE_DEVICES={pinned!r}")
    Supervisor(specs).run_forever()


@app.command("reaper")
def reaper_command(loglevel: LogLevel = "INFO") -> None:
    """Run the reconciler: re-send lost messages, requeue jobs whose worker died."""
    from cli.service import Supervisor, reaper_spec

    settings = _settings_or_exit()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    Supervisor([reaper_spec(settings, loglevel=loglevel)]).run_forever()


@app.command("serve")
def serve_command(
    host: Host = "127.0.0.1",
    port: Port = 8000,
    processes: Annotated[int, typer.Option(min=1, help="CPU worker processes.")] = 1,
    gpus: Annotated[str | None, typer.Option(help="Run workers on these GPUs instead.")] = None,
    stop_grace: Annotated[
        float,
        typer.Option(
            min=0,
            help="Seconds a stopping worker may finish its job's current step before it is "
            "killed (0: at once, for a service known to be idle).",
        ),
    ] = 30.0,
) -> None:
    """The embedded default: API + worker + reaper on a SQLite file, no servers needed."""
    import os
    import threading

    from cli.service import (
        REAPER_NICE,
        TOKEN_FILE,
        DataDirInUse,
        ServeServer,
        Supervisor,
        build_api,
        ensure_local_token,
        lock_data_dir,
        make_private,
        reaper_spec,
        uvicorn_config,
        warm_plots,
        worker_specs,
    )

    settings = _settings_or_exit()
    data_dir = settings.data_dir
    # Private: what this process and its children make from now on, and what exists.
    os.umask(0o077)
    make_private(data_dir)
    try:
        # the descriptor stays open, and the folder locked, until this process ends
        lock_data_dir(data_dir)
    except DataDirInUse as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    specs = worker_specs(gpus=_gpu_list(gpus), processes=processes)
    # The reaper starts niced, and once the API listens: a first run waits for the
    # worker and the API, not for it; and its first pass needs the migrated database.
    reaper = reaper_spec(settings, nice=REAPER_NICE)
    supervisor = Supervisor([*specs, reaper], log_dir=data_dir / "logs", held=[reaper.name])
    done = threading.Event()
    # One thread starts, restarts and stops every worker: a worker's parent-death
    # signal follows the thread that started it, so this thread outlives them all.
    watcher = threading.Thread(
        target=supervisor.run_until,
        args=(done,),
        kwargs={"grace_s": stop_grace},
        name="supervisor",
        daemon=True,
    )
    # The job workers start first, before the migrations: importing torch and
    # preloading data is the longest part of a first run. They touch the database
    # only for a job, and jobs come through the API, which listens after the migrations.
    watcher.start()

    def stop_workers() -> None:
        done.set()
        watcher.join()

    try:
        from core.migrate import upgrade  # Alembic: imported once the workers are starting

        upgrade(settings)
        token = ensure_local_token(settings)
        console.print(f"clr-sweep on http://{host}:{port} (docs at /docs); data in {data_dir}")
        console.print(f"database {settings.db_url}; broker {settings.broker}")
        console.print(
            f"workers: {', '.join(s.name for s in specs)} + reaper; logs in {data_dir / 'logs'}"
        )
        token_path = data_dir / TOKEN_FILE
        if sys.stdout.isatty():
            # a terminal only: where stdout is a file (a log), the secret stays in its file
            console.print(f"token of team 'local' (also in {token_path}):")
            print(token, flush=True)
        else:
            console.print(f"token of team 'local' in {token_path} (mode 0600)")
        config = uvicorn_config(build_api(settings), host=host, port=port, log_level="warning")
    except BaseException:
        stop_workers()
        raise

    def on_started() -> None:
        supervisor.release(reaper.name)
        threading.Thread(target=warm_plots, name="warm-plots", daemon=True).start()

    ServeServer(config, on_exit=stop_workers, on_started=on_started).run()


def main() -> None:
    """Entry point of the ``clr-sweep`` console script."""
    if "--json" not in sys.argv[1:]:
        app()
        return
    # --json: a command line typer itself refuses (an unknown option, a value out of
    # range) still answers the one JSON error document on stdout, as every command does
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        sys.stderr.write("Aborted!\n")
        sys.exit(1)
    except Exception as exc:
        # typer's (vendored) click.ClickException: a usage error, a bad parameter
        if not (callable(getattr(exc, "format_message", None)) and hasattr(exc, "exit_code")):
            raise
        from typer import rich_utils

        rich_utils.rich_format_error(exc)  # type: ignore[arg-type]  # stderr, as without --json
        sys.stdout.write(json.dumps({"error": _usage_error(exc)}, indent=2) + "\n")
        sys.exit(int(exc.exit_code))
    sys.exit(code if isinstance(code, int) else 0)


def _usage_error(exc: Any) -> dict[str, Any]:
    """``--json``'s error document of a command line typer refused (exit 2: invalid)."""
    code = ExitCode.INVALID if exc.exit_code == ExitCode.INVALID else ExitCode.ERROR
    message = exc.format_message()
    doc: dict[str, Any] = {"code": int(code), "name": code.name.lower(), "message": message}
    param = getattr(exc, "param", None)
    opts = getattr(param, "opts", None)
    if opts:
        doc["errors"] = [{"field": max(opts, key=len), "reason": message}]
    return doc
