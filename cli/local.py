"""The local range test: ``clr-sweep range-test`` (or ``range-test run``), no service.

It takes the options of ``range-test submit`` (:class:`~cli.options.RangeTestOptions`),
validates the same ``POST /range-tests`` body as the API (the same errors, naming the
same fields), runs the sweep in this process with a progress bar, and answers the
document ``range-test submit --wait`` answers: a range test's job read (no id: it
never was a job) whose ``result`` carries the ``BoundsRead`` document as ``bounds``.
Needs the service extra (torch): ``pip install 'clr-sweep[service]'``.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.exit_codes import ExitCode
from cli.options import RangeTestOptions
from cli.output import CommandError, Output

__all__ = ["bounds_document", "invalid_spec", "need_service_extra", "run_local"]


def need_service_extra(what: str) -> None:
    """Fail clearly when torch and the domain package (the service extra) are missing."""
    try:
        import torch  # noqa: F401

        import core.specs  # noqa: F401
    except ImportError as exc:
        raise CommandError(
            ExitCode.NEEDS_SERVICE,
            f"{what} needs the service extra ({exc.name} is missing): "
            "pip install 'clr-sweep[service]'",
        ) from exc


def invalid_spec(exc: Any) -> CommandError:
    """A spec's pydantic ``ValidationError`` as the API's 422 would name it."""
    errors = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error.get("loc", ())) or "body"
        cause = (error.get("ctx") or {}).get("error")
        reason = str(cause) if error.get("type") == "value_error" and cause else error["msg"]
        errors.append({"field": field, "reason": reason})
    detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
    return CommandError(ExitCode.INVALID, detail, status=None, errors=errors)


def bounds_document(
    suggestions: dict[str, Any] | None, *, config_key: str | None = None
) -> dict[str, Any] | None:
    """``clr.Suggestions.to_dict()`` as the API's ``BoundsRead`` (the default first; no
    ``job_id``: the local test is no job)."""
    if suggestions is None:
        return None
    default = suggestions["default"]
    items = [default] + [s for s in suggestions["items"] if s["method"] != default["method"]]
    keys = ("method", "base_lr", "max_lr", "rationale", "evidence")
    return {
        "job_id": None,
        "config_key": config_key,
        "finished_at": datetime.now(UTC).isoformat(),
        "method": default["method"],
        "default_method": suggestions["default_method"],
        "base_lr": default["base_lr"],
        "max_lr": default["max_lr"],
        "suggestions": [{k: item.get(k) for k in keys} for item in items],
        "confidence": suggestions["confidence"],
        "noise": suggestions["noise"],
        "warnings": suggestions.get("warnings") or [],
        "step_size": suggestions.get("step_size"),
        "stop_iteration": suggestions.get("stop_iteration"),
        "cycles": suggestions.get("cycles"),
        "failed": suggestions.get("failed") or {},
    }


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def run_local(options: RangeTestOptions, out: Output) -> dict[str, Any]:
    """Run the range test here; the job-read-shaped document (see the module)."""
    need_service_extra("the local range test")
    from pydantic import ValidationError

    from clr import RangeTest, SuggestionError, plot_range_test, suggest_all
    from clr.exceptions import CLRError
    from core.specs import RangeTestOutcome, RangeTestSpec

    try:
        spec = RangeTestSpec.model_validate(options.spec())
    except ValidationError as exc:
        raise invalid_spec(exc) from exc
    created = datetime.now(UTC)
    try:
        device = _device(spec.device)
        built, optimizer = spec.build(lr=spec.start_lr, device=device)
        tester = RangeTest(built.model, optimizer, built.loss_fn, metric_fn=built.metric_fn)
        with Progress(
            TextColumn("[bold]range test[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("lr {task.fields[lr]:.2e}  loss {task.fields[loss]:.4f}"),
            TimeElapsedColumn(),
            console=out.console,
        ) as progress:
            task = progress.add_task("sweep", total=spec.num_iter, lr=spec.start_lr, loss=math.nan)
            result = tester.run(
                built.train_loader,
                start_lr=spec.start_lr,
                end_lr=spec.end_lr,
                num_iter=spec.num_iter,
                sweep=spec.sweep,
                smoothing=spec.smoothing,
                diverge_th=spec.diverge_th,
                callback=lambda p: progress.update(
                    task, completed=p.step, lr=p.lrs[-1], loss=p.smoothed_losses[-1]
                ),
            )
    except CLRError as exc:
        raise CommandError(ExitCode.INVALID, str(exc)) from exc
    suggestions = None
    no_bounds_reason = None
    try:
        suggestions = suggest_all(
            result, iters_per_epoch=built.iters_per_epoch, use_accuracy=spec.metric == "accuracy"
        )
    except SuggestionError as exc:
        no_bounds_reason = str(exc)
    outcome = RangeTestOutcome.from_clr(result, suggestions, no_bounds_reason=no_bounds_reason)
    stored = outcome.to_json_dict()
    finished = datetime.now(UTC)
    doc: dict[str, Any] = {
        "id": None,
        "kind": "range_test",
        "status": "succeeded",
        "spec": spec.model_dump(mode="json"),
        "progress": result.steps_run,
        "total": spec.num_iter,
        "device": result.device,
        "error": None,
        "created_at": created.isoformat(),
        "finished_at": finished.isoformat(),
        "result": {
            "summary": stored["summary"],
            "no_bounds_reason": stored["no_bounds_reason"],
            "verification": None,
            "seed_band": None,  # one seed here; several run on the service (`submit --seeds`)
            "bounds": bounds_document(stored["suggestions"], config_key=spec.config_key()),
        },
    }
    if options.plot is not None:
        title = f"LR range test: {spec.workload}"
        plot_range_test(result, suggestions, path=options.plot, title=title)
        doc["plot"] = str(options.plot)
    return doc
