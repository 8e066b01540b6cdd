"""The ``clr-sweep`` command line.

``clr-sweep range-test`` runs an LR range test on a built-in workload with a
progress bar, prints every method's suggested bounds with its rationale and
writes the curve plot; ``clr-sweep schedule`` previews a schedule as a plot;
``clr-sweep workloads`` lists what can be run. ``clr-sweep submit`` and
``clr-sweep train`` send a range test or a CLR training to the service (or to
the embedded one they start) and follow it to its end; ``clr-sweep sweep``
compares LR policies there (a range test, then every policy x seed) and prints
the paper's table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from datetime import datetime

    from sqlalchemy.orm import Session

    from core.settings import Settings

T = TypeVar("T")

app = typer.Typer(
    help="Find good learning rates (LR range test) and train with Cyclical Learning Rates.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()


def _parse_params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint="--param")
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def _check_plot_suffix(path: Path | None) -> None:
    if path is not None and path.suffix.lower() not in (".png", ".svg"):
        raise typer.BadParameter(
            f"must end in .png or .svg, got {path.name!r}", param_hint="--plot"
        )


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


# The range-test options `range-test` (in-process) and `submit` (through the API) share.
WorkloadOpt = Annotated[str, typer.Option(help="Registered workload name.")]
ParamOpt = Annotated[
    list[str], typer.Option("--param", "-p", help="Workload parameter NAME=VALUE (repeat).")
]
OptimizerOpt = Annotated[str, typer.Option(help="sgd, adam or adamw.")]
MomentumOpt = Annotated[float, typer.Option(help="SGD momentum.")]
WeightDecayOpt = Annotated[float, typer.Option(help="Weight decay.")]
StartLrOpt = Annotated[float, typer.Option(help="First LR of the sweep.")]
EndLrOpt = Annotated[float, typer.Option(help="Last LR of the sweep.")]
NumIterOpt = Annotated[int, typer.Option(help="Mini-batches in the sweep.")]
SweepOpt = Annotated[str, typer.Option(help="exp or linear.")]
SmoothingOpt = Annotated[float, typer.Option(help="EMA factor of the smoothed loss.")]
DivergeOpt = Annotated[float, typer.Option(help="Stop above this x best loss.")]
UrlOpt = Annotated[str, typer.Option(envvar="CLR_API_URL", help="The API's base URL.")]
TokenOpt = Annotated[
    str | None,
    typer.Option(envvar="CLR_TOKEN", help="API token (default: the embedded one's)."),
]
SeedOpt = Annotated[int, typer.Option(help="Seed of the model init and data order.")]
# ... and those of the commands that go through the service (submit, train, sweep)
ServiceDeviceOpt = Annotated[str, typer.Option(help="auto, cpu or cuda.")]
BatchSizeOpt = Annotated[
    int | None, typer.Option(min=1, help="Samples per step (the workload's default).")
]
StepSizeOpt = Annotated[
    int | None,
    typer.Option(
        help="Iterations per half cycle (step_size_up; default: 4 epochs' worth), or "
        "between two decays of the step policy."
    ),
]
CyclesOpt = Annotated[
    int | None, typer.Option(help="Length in cycles (default: 4 for cyclic policies).")
]
IterationsOpt = Annotated[int | None, typer.Option(help="Length in iterations.")]
WholeCyclesOpt = Annotated[
    bool, typer.Option(help="Refuse a length that ends mid-cycle (the paper's stop).")
]
EmbeddedOpt = Annotated[
    bool, typer.Option(help="Start the embedded service for this command, then stop it.")
]
PlotOpt = Annotated[Path | None, typer.Option(help="Write the plot (.png or .svg).")]


@app.command("range-test")
def range_test_command(
    workload: WorkloadOpt = "digits_mlp",
    param: ParamOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    optimizer: OptimizerOpt = "sgd",
    momentum: MomentumOpt = 0.9,
    weight_decay: WeightDecayOpt = 0.0,
    start_lr: StartLrOpt = 1e-5,
    end_lr: EndLrOpt = 10.0,
    num_iter: NumIterOpt = 300,
    sweep: SweepOpt = "exp",
    smoothing: SmoothingOpt = 0.95,
    diverge_th: DivergeOpt = 5.0,
    seed: SeedOpt = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1, ...")] = "auto",
    plot: Annotated[Path | None, typer.Option(help="Write the curve plot (.png or .svg).")] = Path(
        "range_test.png"
    ),
    output: Annotated[
        Path | None, typer.Option(help="Write the result and bounds as JSON.")
    ] = None,
    use_accuracy: Annotated[
        bool, typer.Option(help="Read accuracy instead of loss (the paper's way).")
    ] = False,
) -> None:
    """Run an LR range test on a workload and print suggested CLR bounds."""
    from clr import RangeTest, SuggestionError, make_optimizer, plot_range_test, suggest_all
    from clr.exceptions import CLRError
    from clr.workloads import get_workload

    _check_plot_suffix(plot)
    try:
        spec = get_workload(workload)
        built = spec.build(_parse_params(param), seed=seed, device=_device(device))
        opt = make_optimizer(
            optimizer,
            built.model.parameters(),
            lr=start_lr,
            momentum=momentum,
            weight_decay=weight_decay,
        )
        tester = RangeTest(built.model, opt, built.loss_fn, metric_fn=built.metric_fn)
        with Progress(
            TextColumn("[bold]range test[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("lr {task.fields[lr]:.2e}  loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            task = progress.add_task("sweep", total=num_iter, lr=start_lr, loss=math.nan)
            result = tester.run(
                built.train_loader,
                start_lr=start_lr,
                end_lr=end_lr,
                num_iter=num_iter,
                sweep=sweep,  # type: ignore[arg-type]  # validated by RangeTest
                smoothing=smoothing,
                diverge_th=diverge_th,
                callback=lambda p: progress.update(
                    task, completed=p.step, lr=p.lrs[-1], loss=p.smoothed_losses[-1]
                ),
            )
    except CLRError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc

    console.print(
        f"{result.stop_reason}: {result.stop_detail} "
        f"({result.steps_run} steps in {result.seconds:.2f} s on {result.device})"
    )
    suggestions = None
    try:
        suggestions = suggest_all(
            result, iters_per_epoch=built.iters_per_epoch, use_accuracy=use_accuracy
        )
    except SuggestionError as exc:
        console.print(f"[yellow]no bounds:[/] {exc}")
    if suggestions is not None:
        table = Table(title=f"Suggested CLR bounds for {workload} ({optimizer})")
        for column in ("method", "base_lr", "max_lr", "rationale"):
            table.add_column(column, overflow="fold")
        for item in suggestions.items:
            name = item.method + (" (default)" if item is suggestions.default else "")
            table.add_row(name, f"{item.base_lr:.3g}", f"{item.max_lr:.3g}", item.rationale)
        for method, reason in suggestions.failed.items():
            table.add_row(method, "-", "-", f"[yellow]{reason}[/]")
        console.print(table)
        console.print(
            f"confidence {suggestions.confidence:.2f}; step_size {suggestions.step_size} "
            f"({built.iters_per_epoch} iterations per epoch); stop after iteration "
            f"{suggestions.stop_iteration} (end of cycle {suggestions.cycles})"
        )
        for warning in suggestions.warnings:
            console.print(f"[yellow]warning:[/] {warning}")
    if plot is not None:
        plot_range_test(result, suggestions, path=plot, title=f"LR range test: {workload}")
        console.print(f"plot written to {plot}")
    if output is not None:
        payload = {
            "result": result.to_dict(),
            "suggestions": suggestions.to_dict() if suggestions else None,
        }
        output.write_text(json.dumps(payload, indent=2))
        console.print(f"result written to {output}")


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


@app.command("schedule")
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
) -> None:
    """Draw a schedule (LR and momentum vs iteration) over a number of cycles."""
    from clr import cycle_end, make_schedule, plot_schedule, total_iterations
    from clr.exceptions import CLRError

    _check_plot_suffix(plot)
    try:
        steps = total_iterations(cycles, step_size)
        kwargs = _schedule_kwargs(policy, base_lr, max_lr, step_size, steps, gamma)
        if policy in ("triangular", "triangular2", "exp_range"):
            kwargs["shape"] = shape
        schedule = make_schedule(policy, **kwargs)
        plot_schedule(
            schedule,
            steps=steps,
            path=plot,
            title=f"{policy}, step_size={step_size}",
            cycle_ends=[cycle_end(k, step_size) for k in range(1, cycles + 1)],
        )
    except CLRError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    console.print(f"schedule plot written to {plot}")


@app.command("workloads")
def workloads_command() -> None:
    """List the registered workloads and their parameters."""
    from clr.workloads import get_workload, list_workloads

    table = Table(title="Workloads")
    for column in ("name", "parameters (default)", "description"):
        table.add_column(column, overflow="fold")
    for name in list_workloads():
        workload = get_workload(name)
        params = ", ".join(f"{p.name}={p.default}" for p in workload.params)
        table.add_row(name, params, workload.description)
    console.print(table)


db_app = typer.Typer(
    help="The service's database (CLR_DATABASE_URL; default: SQLite in CLR_DATA_DIR)."
)
team_app = typer.Typer(help="Teams: each sees only its own jobs.")
token_app = typer.Typer(help="API tokens (stored hashed; the secret is shown once).")
app.add_typer(db_app, name="db")
app.add_typer(team_app, name="team")
app.add_typer(token_app, name="token")


@db_app.command("upgrade")
def db_upgrade_command(
    revision: Annotated[str, typer.Argument(help="Target revision.")] = "head",
) -> None:
    """Migrate the database to the newest schema (Alembic)."""
    from core.migrate import upgrade
    from core.settings import get_settings

    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings, revision)
    console.print(f"database at {revision}: {settings.db_url}")


def _in_session(action: Callable[[Session], T]) -> T:
    """Run ``action`` in one committed unit of work; a domain error exits 2 with its detail."""
    from core.db import make_engine, make_session_factory, session_scope
    from core.errors import DomainError
    from core.settings import get_settings

    engine = make_engine(get_settings())
    try:
        with session_scope(make_session_factory(engine)) as session:
            return action(session)
    except DomainError as exc:
        console.print(f"[red]error:[/] {exc.detail}")
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()


@team_app.command("create")
def team_create_command(name: Annotated[str, typer.Argument(help="Team name.")]) -> None:
    """Create a team."""
    from core.services import create_team

    team_id = _in_session(lambda session: create_team(session, name=name).id)
    console.print(f"team {name!r} created ({team_id})")


@token_app.command("create")
def token_create_command(
    team: Annotated[str, typer.Option(help="The team the token acts for.")],
    name: Annotated[str, typer.Option(help="A label for the token.")] = "cli",
) -> None:
    """Issue an API token for a team and print its secret (shown only this once)."""
    from core.services import create_token, get_team

    secret = _in_session(
        lambda session: create_token(session, team=get_team(session, name=team), name=name).secret
    )
    console.print(f"token for team {team!r} (store it now; only its hash is kept):")
    print(secret)


def _when(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


@token_app.command("list")
def token_list_command(
    team: Annotated[str, typer.Option(help="The team whose tokens to list.")],
) -> None:
    """List a team's tokens: id, name, prefix, created, last used, revoked (never secrets)."""
    from core.services import get_team, list_tokens

    def rows(session: Session) -> list[tuple[str, ...]]:
        tokens = list_tokens(session, team=get_team(session, name=team))
        return [
            (
                str(t.id),
                t.name,
                f"{t.prefix}…",
                _when(t.created_at),
                _when(t.last_used_at),
                _when(t.revoked_at),
            )
            for t in tokens
        ]

    table = Table(title=f"Tokens of team {team!r}")
    table.add_column("id", no_wrap=True, min_width=36)  # whole, to copy into `token revoke`
    for column in ("name", "prefix", "created", "last used", "revoked"):
        table.add_column(column, overflow="fold")
    for row in _in_session(rows):
        table.add_row(*row)
    console.print(table)


@token_app.command("revoke")
def token_revoke_command(
    token_id: Annotated[str, typer.Argument(help="The token's id (`clr-sweep token list`).")],
    team: Annotated[str, typer.Option(help="The team the token belongs to.")],
) -> None:
    """Revoke a token: the API refuses it from its next request on."""
    import uuid

    from core.services import get_team, revoke_token

    try:
        parsed = uuid.UUID(token_id)
    except ValueError as exc:
        raise typer.BadParameter(f"not a token id: {token_id!r}", param_hint="TOKEN_ID") from exc
    prefix = _in_session(
        lambda session: (
            revoke_token(session, team=get_team(session, name=team), token_id=parsed).prefix
        )
    )
    console.print(f"token {parsed} ({prefix}…) of team {team!r} revoked")


# --------------------------------------------------------------------------- the service

Host = Annotated[str, typer.Option(help="Interface to listen on.")]
Port = Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")]
LogLevel = Annotated[str, typer.Option(help="Worker log level (DEBUG, INFO, WARNING).")]


def _settings_or_exit() -> Settings:
    from pydantic import ValidationError

    from core.settings import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        console.print(f"[red]bad settings:[/] {exc}")
        raise typer.Exit(2) from exc


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
    import sys
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


@app.command("submit")
def submit_command(
    workload: WorkloadOpt = "digits_mlp",
    param: ParamOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    optimizer: OptimizerOpt = "sgd",
    momentum: MomentumOpt = 0.9,
    weight_decay: WeightDecayOpt = 0.0,
    start_lr: StartLrOpt = 1e-5,
    end_lr: EndLrOpt = 10.0,
    num_iter: NumIterOpt = 300,
    sweep: SweepOpt = "exp",
    smoothing: SmoothingOpt = 0.95,
    diverge_th: DivergeOpt = 5.0,
    metric: Annotated[str, typer.Option(help="What the bounds read: loss or accuracy.")] = "loss",
    seed: SeedOpt = 0,
    device: ServiceDeviceOpt = "auto",
    verify: Annotated[
        bool,
        typer.Option(
            help="Then prove the bounds by short trainings of a few candidate pairs "
            "(child jobs); the best by validation loss becomes the bounds."
        ),
    ] = False,
    verify_budget: Annotated[
        float | None,
        typer.Option(help="Verification's compute cap, in full trainings (default: 1.0)."),
    ] = None,
    plot: PlotOpt = None,
    output: Annotated[Path | None, typer.Option(help="Write the job and bounds as JSON.")] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
    embedded: EmbeddedOpt = False,
    wait: Annotated[bool, typer.Option(help="Follow the job to its end.")] = True,
) -> None:
    """Submit a range test to the service, follow it, print its bounds, fetch its plot."""
    from cli.client import plot_route, run_submission

    if plot is not None:
        try:
            plot_route(plot)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--plot") from exc
    body: dict[str, Any] = {
        "workload": workload,
        "params": _parse_params(param),
        "optimizer": {"name": optimizer, "weight_decay": weight_decay}
        | ({"momentum": momentum} if optimizer == "sgd" else {}),
        "start_lr": start_lr,
        "end_lr": end_lr,
        "num_iter": num_iter,
        "sweep": sweep,
        "smoothing": smoothing,
        "diverge_th": diverge_th,
        "metric": metric,
        "seed": seed,
        "device": device,
    }
    if verify:
        body["verify"] = True
    if verify_budget is not None:
        body["verify_budget"] = verify_budget
    _run_through_service(
        lambda client: run_submission(client, body, console, plot=plot, output=output, wait=wait),
        url=url,
        token=token,
        embedded=embedded,
    )


def _training_body(
    *,
    workload: str,
    params: dict[str, Any],
    optimizer: str,
    momentum: float,
    weight_decay: float,
    batch_size: int | None,
    seed: int,
    device: str,
    policy: str,
    lr: float | None,
    base_lr: float | None,
    max_lr: float | None,
    step_size: int | None,
    base_momentum: float | None,
    max_momentum: float | None,
    cycles: int | None,
    iterations: int | None,
    epochs: int | None,
    whole_cycles: bool,
    snapshots: int | None,
    from_range_test: str | None,
    method: str | None,
) -> dict[str, Any]:
    """The ``POST /trainings`` body of ``clr-sweep train``'s options (unset ones left out,
    so the service's defaults and its errors, naming each field, apply)."""
    schedule: dict[str, Any] = {"policy": policy}
    given = {
        "lr": lr,
        "base_lr": base_lr,
        "max_lr": max_lr,
        # the step policy's step (its LR decays every step_size); a cycle's half otherwise
        "step_size" if policy == "step" else "step_size_up": step_size,
        "base_momentum": base_momentum,
        "max_momentum": max_momentum,
    }
    schedule |= {k: v for k, v in given.items() if v is not None}
    body: dict[str, Any] = {
        "workload": workload,
        "params": params,
        "optimizer": {"name": optimizer, "weight_decay": weight_decay}
        | ({"momentum": momentum} if optimizer == "sgd" else {}),
        "seed": seed,
        "device": device,
        "schedule": schedule,
        "whole_cycles": whole_cycles,
    }
    length = {"batch_size": batch_size, "cycles": cycles, "iterations": iterations}
    length |= {"epochs": epochs, "snapshots": snapshots}
    body |= {k: v for k, v in length.items() if v is not None}
    if from_range_test is not None:
        body["bounds_from"] = {"range_test": from_range_test} | (
            {"method": method} if method is not None else {}
        )
    elif method is not None:
        raise typer.BadParameter("needs --from-range-test", param_hint="--method")
    return body


@app.command("train")
def train_command(
    workload: WorkloadOpt = "digits_mlp",
    param: ParamOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    optimizer: OptimizerOpt = "sgd",
    momentum: MomentumOpt = 0.9,
    weight_decay: WeightDecayOpt = 0.0,
    batch_size: BatchSizeOpt = None,
    seed: SeedOpt = 0,
    device: ServiceDeviceOpt = "auto",
    policy: Annotated[
        str,
        typer.Option(
            help="triangular, triangular2, exp_range, one_cycle, cosine_restarts, fixed, "
            "step or exp."
        ),
    ] = "triangular",
    lr: Annotated[float | None, typer.Option(help="The LR of fixed, step and exp.")] = None,
    base_lr: Annotated[float | None, typer.Option(help="Lower bound of the cycle.")] = None,
    max_lr: Annotated[float | None, typer.Option(help="Upper bound of the cycle.")] = None,
    step_size: StepSizeOpt = None,
    base_momentum: Annotated[
        float | None, typer.Option(help="Momentum at the LR's peak (cycles it inversely).")
    ] = None,
    max_momentum: Annotated[float | None, typer.Option(help="Momentum at the LR's trough.")] = None,
    cycles: CyclesOpt = None,
    iterations: IterationsOpt = None,
    epochs: Annotated[int | None, typer.Option(help="Length in epochs.")] = None,
    whole_cycles: WholeCyclesOpt = True,
    snapshots: Annotated[
        int | None,
        typer.Option(help="Cycle-end snapshots the ensemble averages (default: up to 3)."),
    ] = None,
    from_range_test: Annotated[
        str | None,
        typer.Option(help="Take the bounds (and step size) from this finished range test."),
    ] = None,
    range_test: Annotated[
        bool,
        typer.Option(
            "--range-test",
            help="First run a range test of the same workload, optimizer, batch size and "
            "seed (300 steps, 1e-5 to 10), print its bounds, then train with them.",
        ),
    ] = False,
    method: Annotated[
        str | None,
        typer.Option(help="The range test's suggestion to use (default: its default)."),
    ] = None,
    range_test_plot: Annotated[
        Path | None, typer.Option(help="With --range-test: write its plot (.png or .svg).")
    ] = None,
    plot: PlotOpt = None,
    output: Annotated[
        Path | None, typer.Option(help="Write the job (and the range test's) as JSON.")
    ] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
    embedded: EmbeddedOpt = False,
    wait: Annotated[bool, typer.Option(help="Follow the training to its end.")] = True,
) -> None:
    """Train with CLR through the service: follow it, print how it ended, fetch its plot."""
    from cli.client import plot_route, run_range_test_then_training, run_training

    for path, hint in ((plot, "--plot"), (range_test_plot, "--range-test-plot")):
        if path is not None:
            try:
                plot_route(path)
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint=hint) from exc
    if range_test and from_range_test is not None:
        raise typer.BadParameter(
            "give --range-test (run one now) or --from-range-test (a finished one), not both",
            param_hint="--range-test",
        )
    if range_test_plot is not None and not range_test:
        raise typer.BadParameter("needs --range-test", param_hint="--range-test-plot")
    body = _training_body(
        workload=workload,
        params=_parse_params(param),
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        seed=seed,
        device=device,
        policy=policy,
        lr=lr,
        base_lr=base_lr,
        max_lr=max_lr,
        step_size=step_size,
        base_momentum=base_momentum,
        max_momentum=max_momentum,
        cycles=cycles,
        iterations=iterations,
        epochs=epochs,
        whole_cycles=whole_cycles,
        snapshots=snapshots,
        from_range_test=from_range_test,
        method=None if range_test else method,
    )

    def run(client: Any) -> int:
        if not range_test:
            return run_training(client, body, console, plot=plot, output=output, wait=wait)
        range_body = {
            key: body[key] for key in ("workload", "params", "optimizer", "seed", "device")
        } | ({"batch_size": batch_size} if batch_size is not None else {})
        return run_range_test_then_training(
            client,
            range_body,
            body,
            console,
            method=method,
            range_test_plot=range_test_plot,
            plot=plot,
            output=output,
        )

    _run_through_service(run, url=url, token=token, embedded=embedded)


def _csv(text: str | None, parse: Callable[[str], T], hint: str) -> list[T] | None:
    """``a,b,c`` as a list of ``parse``d values (None when the option is not given)."""
    if text is None:
        return None
    items = [part.strip() for part in text.split(",")]
    try:
        return [parse(item) for item in items if item]
    except ValueError as exc:
        raise typer.BadParameter(f"{exc} (in {text!r})", param_hint=hint) from exc


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"not an integer: {text!r}") from None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"not a number: {text!r}") from None


def _sweep_body(
    *,
    workload: str,
    params: dict[str, Any],
    optimizer: str,
    momentum: float,
    weight_decay: float,
    batch_size: int | None,
    device: str,
    seeds: str | None,
    policies: str | None,
    cycles: int | None,
    iterations: int | None,
    step_size: int | None,
    whole_cycles: bool,
    fixed_lr: float | None,
    verify: bool,
    verify_budget: float | None,
    num_iter: int,
    start_lr: float,
    end_lr: float,
    grid_batch_size: str | None,
    grid_optimizer: str | None,
    grid_weight_decay: str | None,
) -> dict[str, Any]:
    """The ``POST /sweeps`` body of ``clr-sweep sweep``'s options (unset ones left out,
    so the service's defaults and its errors, naming each field, apply)."""

    def optimizer_spec(name: str) -> dict[str, Any]:
        return {"name": name, "weight_decay": weight_decay} | (
            {"momentum": momentum} if name == "sgd" else {}
        )

    body: dict[str, Any] = {
        "workload": workload,
        "params": params,
        "optimizer": optimizer_spec(optimizer),
        "device": device,
        "whole_cycles": whole_cycles,
        "verify": verify,
        "range_test": {"num_iter": num_iter, "start_lr": start_lr, "end_lr": end_lr},
    }
    given = {
        "batch_size": batch_size,
        "seeds": _csv(seeds, _integer, "--seeds"),
        "policies": _csv(policies, str, "--policies"),
        "cycles": cycles,
        "iterations": iterations,
        "step_size": step_size,
        "fixed_lr": fixed_lr,
        "verify_budget": verify_budget,
    }
    body |= {k: v for k, v in given.items() if v is not None}
    grid = {
        "batch_size": _csv(grid_batch_size, _integer, "--grid-batch-size"),
        "optimizer": [
            optimizer_spec(name) for name in _csv(grid_optimizer, str, "--grid-optimizer") or ()
        ]
        or None,
        "weight_decay": _csv(grid_weight_decay, _number, "--grid-weight-decay"),
    }
    grid = {k: v for k, v in grid.items() if v is not None}
    if grid:
        body["grid"] = grid
    return body


@app.command("sweep")
def sweep_command(
    workload: WorkloadOpt = "digits_mlp",
    param: ParamOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    optimizer: OptimizerOpt = "sgd",
    momentum: MomentumOpt = 0.9,
    weight_decay: WeightDecayOpt = 0.0,
    batch_size: BatchSizeOpt = None,
    device: ServiceDeviceOpt = "auto",
    seeds: Annotated[
        str | None, typer.Option(help="The trainings' seeds, e.g. 0,1,2 (default: 0,1,2).")
    ] = None,
    policies: Annotated[
        str | None,
        typer.Option(
            help="The policies compared, e.g. fixed,triangular2,one_cycle (default: fixed, "
            "step, exp, triangular, triangular2, exp_range, one_cycle, cosine_restarts)."
        ),
    ] = None,
    cycles: Annotated[
        int | None, typer.Option(help="Every training's length in CLR cycles (default: 4).")
    ] = None,
    iterations: Annotated[
        int | None, typer.Option(help="Every training's length in iterations, instead.")
    ] = None,
    step_size: Annotated[
        int | None,
        typer.Option(help="Iterations per half cycle (default: the range test's, 4 epochs)."),
    ] = None,
    whole_cycles: WholeCyclesOpt = True,
    fixed_lr: Annotated[
        float | None,
        typer.Option(help="The fixed policy's LR (default: the range test's steepest LR)."),
    ] = None,
    verify: Annotated[
        bool, typer.Option(help="Prove each range test's bounds by short trainings first.")
    ] = True,
    verify_budget: Annotated[
        float | None,
        typer.Option(help="Verification's compute cap, in full trainings (default: 1.0)."),
    ] = None,
    num_iter: NumIterOpt = 300,
    start_lr: StartLrOpt = 1e-5,
    end_lr: EndLrOpt = 10.0,
    grid_batch_size: Annotated[
        str | None, typer.Option(help="Compare batch sizes, e.g. 32,64 (a grid point each).")
    ] = None,
    grid_optimizer: Annotated[
        str | None, typer.Option(help="Compare optimizers, e.g. sgd,adamw.")
    ] = None,
    grid_weight_decay: Annotated[
        str | None, typer.Option(help="Compare weight decays, e.g. 0,5e-4.")
    ] = None,
    plot: PlotOpt = None,
    output: Annotated[Path | None, typer.Option(help="Write the sweep as JSON.")] = None,
    url: UrlOpt = "http://127.0.0.1:8000",
    token: TokenOpt = None,
    embedded: EmbeddedOpt = False,
    wait: Annotated[bool, typer.Option(help="Follow the sweep to its end.")] = True,
) -> None:
    """Compare LR policies on a model: a range test, then every policy x seed at one
    budget, across the service's workers; prints the paper's table, fetches its plot."""
    from cli.client import plot_route, run_sweep

    if plot is not None:
        try:
            plot_route(plot)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--plot") from exc
    body = _sweep_body(
        workload=workload,
        params=_parse_params(param),
        optimizer=optimizer,
        momentum=momentum,
        weight_decay=weight_decay,
        batch_size=batch_size,
        device=device,
        seeds=seeds,
        policies=policies,
        cycles=cycles,
        iterations=iterations,
        step_size=step_size,
        whole_cycles=whole_cycles,
        fixed_lr=fixed_lr,
        verify=verify,
        verify_budget=verify_budget,
        num_iter=num_iter,
        start_lr=start_lr,
        end_lr=end_lr,
        grid_batch_size=grid_batch_size,
        grid_optimizer=grid_optimizer,
        grid_weight_decay=grid_weight_decay,
    )
    _run_through_service(
        lambda client: run_sweep(client, body, console, plot=plot, output=output, wait=wait),
        url=url,
        token=token,
        embedded=embedded,
    )


def _run_through_service(
    run: Callable[[Any], int], *, url: str, token: str | None, embedded: bool
) -> None:
    """``run`` with a client of the service (started for it with ``embedded``); exits
    with its code, or 1 (cannot reach it) or 2 (the API refused the request)."""
    import httpx

    from cli.client import (
        ApiError,
        Interrupted,
        RetryWhenBusy,
        interrupt_on_signals,
        start_embedded,
    )
    from cli.service import TOKEN_FILE

    settings = _settings_or_exit()

    def with_client(base_url: str, secret: str) -> int:
        headers = {"Authorization": f"Bearer {secret}"}
        transport = RetryWhenBusy(httpx.HTTPTransport())
        with httpx.Client(
            base_url=base_url, headers=headers, timeout=30, transport=transport
        ) as client:
            return run(client)

    try:
        with interrupt_on_signals():
            if embedded:
                with start_embedded(settings.data_dir, console) as service:
                    code = with_client(service.url, service.token)
            else:
                token_path = settings.data_dir / TOKEN_FILE
                if token is None and token_path.exists():
                    token = token_path.read_text().strip()
                if token is None:
                    raise typer.BadParameter(
                        "no token: pass --token or set CLR_TOKEN (`clr-sweep token create`), "
                        "or use --embedded",
                        param_hint="--token",
                    )
                code = with_client(url, token)
    except Interrupted as exc:  # before the job was submitted: nothing to cancel
        console.print(f"[yellow]stopped[/] by {exc}")
        raise typer.Exit(exc.exit_code) from exc
    except ApiError as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from exc
    except (httpx.TransportError, RuntimeError) as exc:
        console.print(f"[red]error:[/] {exc}")
        raise typer.Exit(1) from exc
    raise typer.Exit(code)


def main() -> None:
    """Entry point of the ``clr-sweep`` console script."""
    app()
