"""The three job groups: ``clr-sweep range-test``, ``training`` and ``sweep``.

``range-test`` alone (or ``range-test run``) is the local range test; its
``submit`` sends the same options to the service. ``training submit`` and
``sweep submit`` send a CLR training or a sweep. Every group also lists, shows,
waits for, plots and cancels its jobs (:func:`cli.jobs.add_job_commands`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from cli.exit_codes import EPILOG, ExitCode
from cli.jobs import (
    KINDS,
    Stopped,
    add_job_commands,
    connect,
    finish,
    print_job,
    stopped,
    submit_and_follow,
    with_bounds,
)
from cli.local import run_local
from cli.options import (
    EmbeddedOpt,
    JsonOpt,
    RangeTestOptions,
    TokenOpt,
    UrlOpt,
    WorkloadOptions,
    check_plot_suffix,
    optimizer_spec,
    with_options,
)
from cli.output import CommandError, Output, handled, markup_safe
from cli.render import print_bounds

__all__ = [
    "range_test_app",
    "sweep_app",
    "sweep_body",
    "training_app",
    "training_body",
]

T = TypeVar("T")

WaitOpt = Annotated[
    bool, typer.Option(help="Follow the job to its end (--no-wait: print it queued and exit).")
]


def _check_embedded(embedded: bool, wait: bool) -> None:
    if embedded and not wait:
        raise typer.BadParameter(
            "the embedded service stops with the command: it needs --wait", param_hint="--embedded"
        )


# --------------------------------------------------------------------------- range tests

range_test_app = typer.Typer(
    help="LR range tests: `clr-sweep range-test` alone runs one here (no service); "
    "`submit` sends the same options to the service.",
    epilog=EPILOG,
)


def _local(options: RangeTestOptions, json_: bool) -> None:
    out = Output(json_)
    with handled(out):
        options.check()
        doc = run_local(options, out)
        if not out.json:
            summary = doc["result"]["summary"]
            out.print(
                f"{summary['stop_reason']}: {summary['stop_detail']} ({summary['steps_run']} "
                f"steps in {summary['seconds']:.2f} s on {summary['device']})",
                soft_wrap=True,
            )
            bounds = doc["result"]["bounds"]
            if bounds is not None:
                print_bounds(
                    markup_safe(bounds), out, title=f"Suggested CLR bounds for {options.workload}"
                )
            else:
                out.print(f"[yellow]no bounds:[/] {doc['result']['no_bounds_reason']}")
            if options.plot is not None:
                out.print(f"plot written to {options.plot}")
        finish(out, doc, client=None, output=options.output)


@range_test_app.callback(invoke_without_command=True)
@with_options(RangeTestOptions, "options")
def range_test_callback(
    ctx: typer.Context, options: RangeTestOptions, json_: JsonOpt = False
) -> None:
    """Run an LR range test here (no service) and print every method's suggested CLR
    bounds, or manage the service's range tests (the commands below)."""
    if ctx.invoked_subcommand is None:
        _local(options, json_)
    elif options != RangeTestOptions() or json_:
        # `range-test --num-iter 50 submit` would drop the option without a word
        out = Output(json_)
        with handled(out):
            raise typer.BadParameter(
                f"options go after the command: `clr-sweep range-test "
                f"{ctx.invoked_subcommand} --option ...`",
                param_hint=ctx.invoked_subcommand,
            )


@range_test_app.command("run", epilog=EPILOG)
@with_options(RangeTestOptions, "options")
def range_test_run_command(options: RangeTestOptions, json_: JsonOpt = False) -> None:
    """Run an LR range test here, no service (the same as `clr-sweep range-test` alone)."""
    _local(options, json_)


@range_test_app.command("submit", epilog=EPILOG)
@with_options(RangeTestOptions, "options")
def range_test_submit_command(
    options: RangeTestOptions,
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
    seeds: Annotated[
        str | None,
        typer.Option(
            help="Run the test under 2 to 16 seeds, e.g. 0,1,2 (one fused run when the model "
            "fuses): a band across seeds, and a confidence from their agreement. The stored "
            "curve is the first seed's (--seed, when given, must be it).",
        ),
    ] = None,
    wait: WaitOpt = True,
    url: UrlOpt = None,
    token: TokenOpt = None,
    embedded: EmbeddedOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Send a range test to the service, follow it, print its bounds, fetch its plot."""
    out = Output(json_)
    with handled(out):
        options.check()
        _check_embedded(embedded, wait)
        body = options.spec()
        if verify:
            body["verify"] = True
        if verify_budget is not None:
            body["verify_budget"] = verify_budget
        seed_list = _csv(seeds, _integer, "--seeds")
        if seed_list is not None:
            body["seeds"] = seed_list
            if options.seed == RangeTestOptions.seed:
                del body["seed"]  # the service takes seeds[0]
        with connect(out, url=url, token=token, embedded=embedded) as client:
            try:
                job = submit_and_follow(client, KINDS["range_test"], body, out, wait=wait)
            except Stopped as exc:
                stopped(out, exc)
            job = with_bounds(client, job)
            if wait and not out.json:
                print_job(job, out)
            finish(out, job, client=client, plot=options.plot, output=options.output)


add_job_commands(range_test_app, KINDS["range_test"])

# --------------------------------------------------------------------------- trainings

training_app = typer.Typer(help="CLR trainings through the service.", no_args_is_help=True)


def training_body(
    *,
    workload: dict[str, Any],
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
    """The ``POST /trainings`` body of ``training submit``'s options (unset ones left
    out, so the service's defaults and its errors, naming each field, apply)."""
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
    body: dict[str, Any] = workload | {
        "seed": seed,
        "device": device,
        "schedule": schedule,
        "whole_cycles": whole_cycles,
    }
    length = {"cycles": cycles, "iterations": iterations, "epochs": epochs}
    length["snapshots"] = snapshots
    body |= {k: v for k, v in length.items() if v is not None}
    if from_range_test is not None:
        body["bounds_from"] = {"range_test": from_range_test} | (
            {"method": method} if method is not None else {}
        )
    elif method is not None:
        raise typer.BadParameter("needs --from-range-test or --range-test", param_hint="--method")
    return body


def _announce_training(job: dict[str, Any]) -> str:
    source = (job.get("spec") or {}).get("bounds_source")
    text = f": {job.get('total')} iterations"
    if source:
        text += (
            f"; bounds {source['base_lr']:.3g} to {source['max_lr']:.3g} from range test "
            f"{source['range_test']} ({source['method']})"
        )
    return text


@training_app.command("submit", epilog=EPILOG)
@with_options(WorkloadOptions, "options")
def training_submit_command(
    options: WorkloadOptions,
    seed: Annotated[int, typer.Option(help="Seed of the model init and data order.")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
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
    step_size: Annotated[
        int | None,
        typer.Option(
            help="Iterations per half cycle (step_size_up; default: 4 epochs' worth), or "
            "between two decays of the step policy."
        ),
    ] = None,
    base_momentum: Annotated[
        float | None, typer.Option(help="Momentum at the LR's peak (cycles it inversely).")
    ] = None,
    max_momentum: Annotated[float | None, typer.Option(help="Momentum at the LR's trough.")] = None,
    cycles: Annotated[
        int | None, typer.Option(help="Length in cycles (default: 4 for cyclic policies).")
    ] = None,
    iterations: Annotated[int | None, typer.Option(help="Length in iterations.")] = None,
    epochs: Annotated[int | None, typer.Option(help="Length in epochs.")] = None,
    whole_cycles: Annotated[
        bool, typer.Option(help="Refuse a length that ends mid-cycle (the paper's stop).")
    ] = True,
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
    plot: Annotated[Path | None, typer.Option(help="Write the plot (.png or .svg).")] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Write the result document (the --json one) to this file."),
    ] = None,
    wait: WaitOpt = True,
    url: UrlOpt = None,
    token: TokenOpt = None,
    embedded: EmbeddedOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Train with CLR through the service: follow it, print how it ended, fetch its plot.

    With --range-test, first a range test (its bounds printed, with the code to use
    them), then the training between its bounds; --json then prints the training
    with the range test as "range_test"."""
    out = Output(json_)
    with handled(out):
        check_plot_suffix(plot)
        check_plot_suffix(range_test_plot, "--range-test-plot")
        _check_embedded(embedded, wait)
        if range_test and from_range_test is not None:
            raise typer.BadParameter(
                "give --range-test (run one now) or --from-range-test (a finished one), not both",
                param_hint="--range-test",
            )
        if range_test_plot is not None and not range_test:
            raise typer.BadParameter("needs --range-test", param_hint="--range-test-plot")
        if range_test and not wait:
            raise typer.BadParameter("needs --wait", param_hint="--range-test")
        body = training_body(
            workload=options.workload_body(),
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
        with connect(out, url=url, token=token, embedded=embedded) as client:
            extra: dict[str, Any] = {}
            try:
                if range_test:
                    tested = _range_test_first(client, body, out, plot=range_test_plot)
                    extra["range_test"] = tested
                    source = {"range_test": tested["id"]} | ({"method": method} if method else {})
                    body["bounds_from"] = source
                job = submit_and_follow(
                    client,
                    KINDS["training"],
                    body,
                    out,
                    wait=wait,
                    announce=_announce_training,
                )
            except Stopped as exc:
                stopped(out, exc)
            if wait and not out.json:
                print_job(job, out)
            doc = job | extra if extra else None
            finish(out, job, client=client, plot=plot, output=output, doc=doc)


def _range_test_first(
    client: Any, training: dict[str, Any], out: Output, *, plot: Path | None
) -> dict[str, Any]:
    """``training submit --range-test``: the range test, followed and reported; its
    document (with its bounds). A test that failed or found no bounds ends the command."""
    body = {k: training[k] for k in ("workload", "params", "optimizer", "seed", "device")}
    if "batch_size" in training:
        body["batch_size"] = training["batch_size"]
    job = submit_and_follow(client, KINDS["range_test"], body, out, wait=True)
    job = with_bounds(client, job)
    if not out.json:
        print_job(job, out)
    if job["status"] != "succeeded":
        out.emit(job)
        code = ExitCode.JOB_FAILED if job["status"] == "failed" else ExitCode.JOB_CANCELLED
        raise typer.Exit(int(code))
    if plot is not None:
        plot.write_bytes(
            client.plot(str(job["id"]), plot.suffix.lower().lstrip("."), kind=job["kind"])
        )
        out.print(f"plot written to {plot}")
    if job["result"].get("bounds") is None:
        raise CommandError(
            ExitCode.JOB_FAILED,
            "no training: the range test found no bounds to train with "
            f"({job['result'].get('no_bounds_reason')})",
            range_test=job,
        )
    return job


add_job_commands(training_app, KINDS["training"])

# --------------------------------------------------------------------------- sweeps

sweep_app = typer.Typer(
    help="Sweeps: a range test, then every LR policy x seed at one budget (the paper's table).",
    no_args_is_help=True,
)


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


def sweep_body(
    *,
    workload: dict[str, Any],
    momentum: float,
    weight_decay: float,
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
    range_test_seeds: str | None = None,
) -> dict[str, Any]:
    """The ``POST /sweeps`` body of ``sweep submit``'s options (unset ones left out, so
    the service's defaults and its errors, naming each field, apply)."""
    range_test: dict[str, Any] = {"num_iter": num_iter, "start_lr": start_lr, "end_lr": end_lr}
    rt_seeds = _csv(range_test_seeds, _integer, "--range-test-seeds")
    if rt_seeds is not None:
        range_test["seeds"] = rt_seeds
    body: dict[str, Any] = workload | {
        "device": device,
        "whole_cycles": whole_cycles,
        "verify": verify,
        "range_test": range_test,
    }
    given = {
        "seeds": _csv(seeds, _integer, "--seeds"),
        "policies": _csv(policies, str, "--policies"),
        "cycles": cycles,
        "iterations": iterations,
        "step_size": step_size,
        "fixed_lr": fixed_lr,
        "verify_budget": verify_budget,
    }
    body |= {k: v for k, v in given.items() if v is not None}
    optimizers = _csv(grid_optimizer, str, "--grid-optimizer") or ()
    grid = {
        "batch_size": _csv(grid_batch_size, _integer, "--grid-batch-size"),
        "optimizer": [
            optimizer_spec(name, momentum=momentum, weight_decay=weight_decay)
            for name in optimizers
        ]
        or None,
        "weight_decay": _csv(grid_weight_decay, _number, "--grid-weight-decay"),
    }
    grid = {k: v for k, v in grid.items() if v is not None}
    if grid:
        body["grid"] = grid
    return body


@sweep_app.command("submit", epilog=EPILOG)
@with_options(WorkloadOptions, "options")
def sweep_submit_command(
    options: WorkloadOptions,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
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
    whole_cycles: Annotated[
        bool, typer.Option(help="Refuse a length that ends mid-cycle (the paper's stop).")
    ] = True,
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
    num_iter: Annotated[int, typer.Option(help="The range test's mini-batches.")] = 300,
    start_lr: Annotated[float, typer.Option(help="The range test's first LR.")] = 1e-5,
    end_lr: Annotated[float, typer.Option(help="The range test's last LR.")] = 10.0,
    range_test_seeds: Annotated[
        str | None,
        typer.Option(
            help="Run each range test under these seeds, e.g. 0,1,2 (2 to 16): its bounds' "
            "confidence then uses their agreement; the first is the range tests' seed."
        ),
    ] = None,
    grid_batch_size: Annotated[
        str | None, typer.Option(help="Compare batch sizes, e.g. 32,64 (a grid point each).")
    ] = None,
    grid_optimizer: Annotated[
        str | None, typer.Option(help="Compare optimizers, e.g. sgd,adamw.")
    ] = None,
    grid_weight_decay: Annotated[
        str | None, typer.Option(help="Compare weight decays, e.g. 0,5e-4.")
    ] = None,
    plot: Annotated[Path | None, typer.Option(help="Write the plot (.png or .svg).")] = None,
    output: Annotated[
        Path | None,
        typer.Option(help="Write the result document (the --json one) to this file."),
    ] = None,
    wait: WaitOpt = True,
    url: UrlOpt = None,
    token: TokenOpt = None,
    embedded: EmbeddedOpt = False,
    json_: JsonOpt = False,
) -> None:
    """Compare LR policies on a model: a range test, then every policy x seed at one
    budget, across the service's workers; prints the paper's table, fetches its plot."""
    out = Output(json_)
    with handled(out):
        check_plot_suffix(plot)
        _check_embedded(embedded, wait)
        body = sweep_body(
            workload=options.workload_body(),
            momentum=options.momentum,
            weight_decay=options.weight_decay,
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
            range_test_seeds=range_test_seeds,
        )
        with connect(out, url=url, token=token, embedded=embedded) as client:

            def announce(job: dict[str, Any]) -> str:
                points = len((job.get("result") or {}).get("points") or [])
                return (
                    f": {points} grid point(s), {job.get('total')} jobs (a range test, then "
                    "every policy x seed, per point)"
                )

            try:
                job = submit_and_follow(
                    client, KINDS["sweep"], body, out, wait=wait, announce=announce
                )
            except Stopped as exc:
                stopped(out, exc)
            if wait and not out.json:
                print_job(job, out)
            finish(out, job, client=client, plot=plot, output=output)


add_job_commands(sweep_app, KINDS["sweep"])
