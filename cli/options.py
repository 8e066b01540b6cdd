"""Options more than one command takes, each declared once.

- :class:`RangeTestOptions`: what a range test is (workload, optimizer, the sweep,
  the metric, ``--plot``, ``--output``), shared by the local ``clr-sweep range-test``
  and ``clr-sweep range-test submit``: same names, same defaults, one body
  (:meth:`RangeTestOptions.spec`, the ``POST /range-tests`` body).
- :func:`with_options` adds a dataclass's fields to a command as options and hands
  the command one instance of it.
- ``--url``, ``--token``, ``--json``, ``--embedded``: the aliases below.
"""

from __future__ import annotations

import functools
import inspect
import json
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_type_hints

import typer

__all__ = [
    "EmbeddedOpt",
    "JsonOpt",
    "RangeTestOptions",
    "WorkloadOptions",
    "TokenOpt",
    "UrlOpt",
    "check_plot_suffix",
    "optimizer_spec",
    "parse_params",
    "with_options",
]

F = TypeVar("F", bound=Callable[..., Any])

SERVICE_PANEL = "Service"

UrlOpt = Annotated[
    str | None,
    typer.Option(
        help="The service's URL (default: CLR_URL, else the `clr-sweep login` config, "
        "else http://127.0.0.1:8000).",
        rich_help_panel=SERVICE_PANEL,
        show_default=False,
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        help="API token (default: CLR_TOKEN, else the `clr-sweep login` config).",
        rich_help_panel=SERVICE_PANEL,
        show_default=False,
    ),
]
EmbeddedOpt = Annotated[
    bool,
    typer.Option(
        help="Start the embedded service (`clr-sweep serve`) for this command, then stop it.",
        rich_help_panel=SERVICE_PANEL,
    ),
]
JsonOpt = Annotated[
    bool,
    typer.Option(
        "--json",
        help="Print exactly one JSON document on stdout (messages and progress go to stderr).",
    ),
]


def parse_params(pairs: list[str], *, hint: str = "--param") -> dict[str, Any]:
    """``NAME=VALUE`` pairs (``--param``); a value is JSON when it parses, text otherwise."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"expected NAME=VALUE, got {pair!r}", param_hint=hint)
        try:
            params[key] = json.loads(raw)
        except json.JSONDecodeError:
            params[key] = raw
    return params


def check_plot_suffix(path: Path | None, hint: str = "--plot") -> None:
    """Refuse a plot file that is neither ``.png`` nor ``.svg`` (before any work)."""
    if path is not None and path.suffix.lower() not in (".png", ".svg"):
        raise typer.BadParameter(f"must end in .png or .svg, got {path.name!r}", param_hint=hint)


def optimizer_spec(name: str, *, momentum: float, weight_decay: float) -> dict[str, Any]:
    """The ``optimizer`` of a spec: momentum only where the optimizer has one (SGD)."""
    return {"name": name, "weight_decay": weight_decay} | (
        {"momentum": momentum} if name == "sgd" else {}
    )


RT_PANEL = "Range test"
WORKLOAD_PANEL = "Workload"


@dataclass(frozen=True)
class WorkloadOptions:
    """What every job runs on: the workload, its parameters and the optimizer."""

    workload: Annotated[
        str,
        typer.Option(
            help="Registered workload name (`clr-sweep workloads`).", rich_help_panel=WORKLOAD_PANEL
        ),
    ] = "digits_mlp"
    param: Annotated[
        list[str],
        typer.Option(
            "--param",
            "-p",
            help="Workload parameter NAME=VALUE (repeat).",
            rich_help_panel=WORKLOAD_PANEL,
        ),
    ] = field(default_factory=list)
    optimizer: Annotated[
        str, typer.Option(help="sgd, adam or adamw.", rich_help_panel=WORKLOAD_PANEL)
    ] = "sgd"
    momentum: Annotated[
        float, typer.Option(help="SGD momentum.", rich_help_panel=WORKLOAD_PANEL)
    ] = 0.9
    weight_decay: Annotated[
        float, typer.Option(help="Weight decay.", rich_help_panel=WORKLOAD_PANEL)
    ] = 0.0
    batch_size: Annotated[
        int | None,
        typer.Option(
            help="Samples per step (default: the workload's).", rich_help_panel=WORKLOAD_PANEL
        ),
    ] = None

    def workload_body(self) -> dict[str, Any]:
        """The workload, its parameters, the optimizer and the batch size of a spec."""
        body: dict[str, Any] = {
            "workload": self.workload,
            "params": parse_params(self.param),
            "optimizer": optimizer_spec(
                self.optimizer, momentum=self.momentum, weight_decay=self.weight_decay
            ),
        }
        if self.batch_size is not None:
            body["batch_size"] = self.batch_size
        return body


@dataclass(frozen=True)
class RangeTestOptions(WorkloadOptions):
    """A range test's options: the local command's and ``range-test submit``'s."""

    start_lr: Annotated[
        float, typer.Option(help="First LR of the sweep.", rich_help_panel=RT_PANEL)
    ] = 1e-5
    end_lr: Annotated[
        float, typer.Option(help="Last LR of the sweep.", rich_help_panel=RT_PANEL)
    ] = 10.0
    num_iter: Annotated[
        int, typer.Option(help="Mini-batches in the sweep.", rich_help_panel=RT_PANEL)
    ] = 300
    sweep: Annotated[str, typer.Option(help="exp or linear.", rich_help_panel=RT_PANEL)] = "exp"
    smoothing: Annotated[
        float, typer.Option(help="EMA factor of the smoothed loss.", rich_help_panel=RT_PANEL)
    ] = 0.95
    diverge_th: Annotated[
        float, typer.Option(help="Stop above this x the best loss.", rich_help_panel=RT_PANEL)
    ] = 5.0
    metric: Annotated[
        str,
        typer.Option(
            help="What the bounds read: loss, or accuracy (the paper's way).",
            rich_help_panel=RT_PANEL,
        ),
    ] = "loss"
    seed: Annotated[
        int, typer.Option(help="Seed of the model init and data order.", rich_help_panel=RT_PANEL)
    ] = 0
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.", rich_help_panel=RT_PANEL)] = (
        "auto"
    )
    plot: Annotated[
        Path | None,
        typer.Option(help="Write the curve plot (.png or .svg).", rich_help_panel=RT_PANEL),
    ] = None
    output: Annotated[
        Path | None,
        typer.Option(
            help="Write the result document (the --json one) to this file.",
            rich_help_panel=RT_PANEL,
        ),
    ] = None

    def check(self) -> None:
        """What the command line refuses before any work: a plot that is no .png/.svg."""
        check_plot_suffix(self.plot)

    def spec(self) -> dict[str, Any]:
        """The ``POST /range-tests`` body (the local command validates the same one)."""
        return self.workload_body() | {
            "start_lr": self.start_lr,
            "end_lr": self.end_lr,
            "num_iter": self.num_iter,
            "sweep": self.sweep,
            "smoothing": self.smoothing,
            "diverge_th": self.diverge_th,
            "metric": self.metric,
            "seed": self.seed,
            "device": self.device,
        }


def _option_default(item: Any) -> Any:
    if item.default_factory is not MISSING:
        return item.default_factory()
    return item.default


def with_options(options: type[Any], name: str) -> Callable[[F], F]:
    """Declare ``options``' (a dataclass) fields as the command's options, after its own;
    the command gets them as one ``options`` instance in its parameter ``name``."""
    hints = get_type_hints(options, include_extras=True)
    shared = [
        inspect.Parameter(
            item.name,
            inspect.Parameter.KEYWORD_ONLY,
            annotation=hints[item.name],
            default=_option_default(item),
        )
        for item in fields(options)
    ]
    names = [item.name for item in fields(options)]

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in signature.parameters.values()
            if p.name != name
        ]
        clash = {p.name for p in own} & set(names)
        if clash:
            raise TypeError(f"{func.__name__} declares shared options again: {sorted(clash)}")

        @functools.wraps(func)
        def command(**kwargs: Any) -> Any:
            values = {key: kwargs.pop(key) for key in names}
            return func(**kwargs, **{name: options(**values)})

        parameters = [*own, *shared]
        command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters}
        return command  # type: ignore[return-value]

    return decorate
