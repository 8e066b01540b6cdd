"""How jobs look in a terminal: bounds, the code to use them, trainings, sweeps, lists.

Everything here takes plain JSON data (the API's documents, as the client's
models dump them) and an :class:`~cli.output.Output`.
"""

from __future__ import annotations

from typing import Any

from rich.table import Table

from cli.output import Output, markup_safe

__all__ = [
    "counts_text",
    "cyclic_lr_code",
    "print_bounds",
    "print_jobs",
    "print_range_test",
    "print_seed_band",
    "print_sweep",
    "print_training",
    "print_verification",
    "status_text",
]

TITLES = {"range_test": "range test", "training": "training", "sweep": "sweep"}
STATUS_ORDER = ("succeeded", "running", "queued", "failed", "cancelled")


def status_text(job: dict[str, Any]) -> str:
    """What the job is doing; while queued, its place and what it waits for (when the API
    says)."""
    if job.get("status") != "queued":
        return str(job.get("status"))
    text = "queued"
    if job.get("queue_position") is not None:
        text += f" (#{job['queue_position']})"
    reason = job.get("waiting_reason")
    return f"{text}: {reason}" if reason else text


def counts_text(counts: dict[str, int]) -> str:
    """``3 succeeded, 2 running, 4 queued``: the children by status, zeros left out."""
    order = [s for s in STATUS_ORDER if counts.get(s)] + sorted(
        s for s in counts if s not in STATUS_ORDER and counts[s]
    )
    return ", ".join(f"{counts[s]} {s}" for s in order) or "no children yet"


def _g(value: float) -> str:
    return f"{value:.4g}"


def cyclic_lr_code(bounds: dict[str, Any]) -> str:
    """The lines to train with ``bounds`` (a ``BoundsRead`` document): the scheduler and
    where to stop."""
    step = bounds.get("step_size")
    args = f"base_lr={_g(bounds['base_lr'])}, max_lr={_g(bounds['max_lr'])}"
    if step is not None:
        args += f", step_size_up={step}"
    line = f'sched = CyclicLR(opt, {args}, mode="triangular2")'
    if step is None:
        line += "  # and step_size_up: 2 to 8 epochs of iterations"
    lines = ["from clr import CyclicLR", line]
    if bounds.get("stop_iteration") is not None:
        lines.append(
            f"# sched.step() after every batch; stop after iteration "
            f"{bounds['stop_iteration']} (the end of cycle {bounds.get('cycles')})"
        )
    return "\n".join(lines)


def print_bounds(bounds: dict[str, Any], out: Output, *, title: str) -> None:
    """Every method's suggestion, the chosen one first, then the code to use it."""
    table = Table(title=title)
    for column in ("method", "base_lr", "max_lr", "rationale"):
        table.add_column(column, overflow="fold")
    for item in bounds["suggestions"]:
        name = item["method"] + (" (default)" if item["method"] == bounds["default_method"] else "")
        table.add_row(name, f"{item['base_lr']:.3g}", f"{item['max_lr']:.3g}", item["rationale"])
    for method, reason in (bounds.get("failed") or {}).items():
        table.add_row(method, "-", "-", f"[yellow]{reason}[/]")
    out.print(table)
    if bounds.get("step_size") is not None:
        out.print(
            f"confidence {bounds['confidence']:.2f}; step_size {bounds['step_size']}; "
            f"stop after iteration {bounds['stop_iteration']} (end of cycle {bounds['cycles']})"
        )
    for warning in bounds.get("warnings") or []:
        out.warn(warning)
    out.print(f"To train with the {bounds['method']} bounds:")
    out.print(cyclic_lr_code(bounds), markup=False, highlight=False, soft_wrap=True)


def print_verification(doc: dict[str, Any] | None, out: Output) -> None:
    """One line per round of a range test's verification, and how it ended."""
    if not doc:
        return
    candidates = doc.get("candidates") or []
    spent = doc.get("spent_iterations", 0) / max(1, doc.get("full_run_iterations") or 1)
    out.print(
        f"verification {doc['status']}: {len(candidates)} candidate pairs, "
        f"{len(doc.get('rounds') or [])} round(s), {spent:.2f} of "
        f"{doc.get('budget_runs')} full runs spent"
        + (f" ({doc['reason']})" if doc.get("reason") else ""),
        soft_wrap=True,
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
        out.print(
            f"  round {round_.get('round')} ({round_.get('iterations')} iterations each): "
            + ("; ".join(losses) or "not run"),
            soft_wrap=True,
        )


def print_range_test(job: dict[str, Any], out: Output) -> None:
    """A range test: how it went, its verification, and its bounds (or why there are none).

    ``job["result"]["bounds"]`` is the ``BoundsRead`` document the command added."""
    result = job.get("result") or {}
    summary = result.get("summary") or {}
    if summary:
        out.print(
            f"{summary.get('stop_reason')}: {summary.get('stop_detail')} "
            f"({summary.get('steps_run')} steps in {summary.get('seconds') or 0:.2f} s on "
            f"{summary.get('device') or job.get('device')})",
            soft_wrap=True,
        )
    print_verification(result.get("verification"), out)
    print_seed_band(result.get("seed_band"), out)
    bounds = result.get("bounds")
    workload = (job.get("spec") or {}).get("workload", "?")
    if bounds:
        print_bounds(bounds, out, title=f"Suggested CLR bounds for {workload}")
    elif job.get("status") == "succeeded":
        out.print(f"[yellow]no bounds:[/] {result.get('no_bounds_reason') or 'none given'}")


def print_seed_band(band: dict[str, Any] | None, out: Output) -> None:
    """A range test under several seeds: how they ran and the bounds across them."""
    if not band:
        return
    seeds = ", ".join(str(s) for s in band.get("seeds") or [])
    out.print(f"seeds {seeds}: {band.get('reason')}", soft_wrap=True)
    default = band.get("default")
    if default:
        low, high = band.get("max_lr_band") or (None, None)
        out.print(
            f"across seeds ({default.get('method')}): base_lr {_short(default.get('base_lr'))}, "
            f"max_lr {_short(default.get('max_lr'))} (seeds from {_short(low)} to "
            f"{_short(high)}, {_fmt(band.get('seed_spread'), '.2f')}x), confidence "
            f"{_fmt(band.get('confidence'), '.2f')}",
            soft_wrap=True,
        )
    else:
        out.print(f"[yellow]no bounds across seeds:[/] {band.get('no_bounds_reason')}")
    for warning in band.get("warnings") or []:
        out.warn(warning)


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def print_training(job: dict[str, Any], out: Output) -> None:
    """How a training ended: its accuracies, length and time, and its bounds."""
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
    out.print(table)


def _spread(value: dict[str, Any] | None, spec: str = ".4f") -> str:
    """``mean ± std`` (``mean`` alone for one seed); ``-`` when there is none."""
    if value is None:
        return "-"
    text = format(value["mean"], spec)
    if value.get("std") is not None:
        text += f" ± {format(value['std'], spec)}"
    return text


def print_sweep(job: dict[str, Any], out: Output) -> None:
    """A sweep: each grid point's bounds, the paper's table (per grid point and policy),
    and what failed."""
    result = job.get("result") or {}
    spec = job.get("spec") or {}
    points = result.get("points") or []
    several = len(points) > 1
    for point in points:
        bounds = point.get("bounds")
        if bounds is None:
            reason = point.get("no_bounds_reason") or "none yet"
            out.print(f"{point['label']}: [yellow]no bounds[/] ({reason})", soft_wrap=True)
            continue
        source = "verified" if bounds["verified"] else f"range test's {bounds['method']}"
        if bounds.get("not_verified"):
            source += f"; not verified: {bounds['not_verified']}"
        out.print(
            f"{point['label']}: bounds {bounds['base_lr']:.3g} to {bounds['max_lr']:.3g} "
            f"({source}), fixed lr {bounds['fixed_lr']:.3g} ({bounds['fixed_lr_from']}), "
            f"step_size {bounds['step_size']}, {bounds['iterations']} iterations "
            f"({bounds['cycles']:g} cycles)",
            soft_wrap=True,
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
    out.print(table)
    target = next(
        (
            r["fixed_accuracy"]
            for r in result.get("table") or []
            if r.get("fixed_accuracy") is not None
        ),
        None,
    )
    if target is not None:
        out.print(
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
        out.print(
            f"[yellow]{label}:[/] grid point {role.get('grid')} {what}: {reason}", soft_wrap=True
        )


def _when(text: str | None) -> str:
    return "-" if not text else text.replace("T", " ")[5:16]


def print_jobs(jobs: list[dict[str, Any]], out: Output, *, title: str) -> None:
    """A table of jobs, newest first (id, kind, status, workload, progress, created),
    then the error of each that failed."""
    jobs = markup_safe(jobs)
    from rich import box

    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("id", no_wrap=True, min_width=36)  # whole, to copy into `show`
    for column in ("kind", "status", "workload", "progress", "created"):
        table.add_column(column, overflow="fold")
    for job in jobs:
        table.add_row(
            str(job["id"]),
            TITLES.get(job["kind"], job["kind"]),
            str(job["status"]),
            str((job.get("spec") or {}).get("workload") or "-"),
            f"{job.get('progress', 0)}/{job.get('total', 0)}",
            _when(job.get("created_at")),
        )
    if not jobs:
        out.print("no jobs")
        return
    out.print(table)
    for job in jobs:
        if job.get("error"):
            out.print(f"{job['id']} {job['status']}: {job['error']}", soft_wrap=True)
