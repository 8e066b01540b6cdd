"""Pictures of a range test and of a learning-rate schedule.

The plots follow Smith (2015, arXiv 1506.01186): the range test is read as loss
(and accuracy) against learning rate on a log axis, with the suggested
``[base_lr, max_lr]`` shaded; a schedule is drawn as learning rate against
iteration, with the ends of cycles marked, since the paper stops training at the
end of a cycle.

matplotlib is imported inside the functions and only through its object API
(:class:`matplotlib.figure.Figure` with a ``FigureCanvasAgg``): no pyplot, no
global figure registry, no GUI backend. A returned figure is an ordinary object
that is freed when the last reference to it goes; nothing is written to disk
unless ``path`` is given.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from clr._result import RangeTestResult
from clr.suggest import Curve, Suggestion, Suggestions, smooth_losses

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FORMATS", "SupportsLRAt", "plot_range_test", "plot_schedule", "render"]

FORMATS: tuple[str, ...] = ("png", "svg")
"""Formats :func:`render` and the ``path`` arguments can write."""

_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
_SPAN_GID = "suggested-range"


@runtime_checkable
class SupportsLRAt(Protocol):
    """A schedule that can say its learning rate at any step.

    Objects may also have ``momentum_at(step: int) -> float | None``;
    :func:`plot_schedule` draws it when present and not ``None``.
    """

    def lr_at(self, step: int) -> float:
        """Learning rate at optimizer step ``step`` (0-based)."""
        ...


def _new_figure(figsize: tuple[float, float] = (8.0, 5.0)) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _check_format(format: str | None, path: str | os.PathLike[str] | None) -> str:
    """The output format: ``format`` if given, else the suffix of ``path``, else png."""
    if format is not None:
        fmt = format.lower().lstrip(".")
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        return fmt
    if path is None:
        return "png"
    suffix = Path(os.fspath(path)).suffix.lower().lstrip(".")
    if suffix not in FORMATS:
        raise ValueError(
            f"format cannot be inferred from path {os.fspath(path)!r} (suffix {suffix!r}): "
            f"use a .png or .svg path or pass format= one of {FORMATS}"
        )
    return suffix


def render(fig: Figure, format: str = "png") -> bytes:
    """The figure as PNG or SVG bytes (for a web API or a notebook).

    Args:
        fig: a figure from this module (any matplotlib figure works).
        format: ``"png"`` or ``"svg"``.

    Returns:
        The encoded image.

    Raises:
        ValueError: ``format`` is neither png nor svg.
    """
    fmt = _check_format(format, None)
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt)
    return buf.getvalue()


def _save(fig: Figure, path: str | os.PathLike[str] | None, fmt: str) -> None:
    if path is not None:
        Path(os.fspath(path)).write_bytes(render(fig, fmt))


def _as_result(result: RangeTestResult | Curve | Mapping[str, Any]) -> RangeTestResult | Curve:
    if isinstance(result, RangeTestResult | Curve):
        return result
    if isinstance(result, Mapping):
        if "stop_reason" in result:  # a RangeTestResult.to_dict()
            return RangeTestResult.from_dict(dict(result))
        if "lrs" in result and "losses" in result:  # plain arrays, as suggest() accepts
            return Curve(result["lrs"], result["losses"], accuracies=result.get("accuracies"))
        raise ValueError(
            "result as a mapping needs 'lrs' and 'losses' (or a full RangeTestResult.to_dict()), "
            f"got keys {sorted(result)}"
        )
    raise TypeError(
        f"result must be a RangeTestResult, its to_dict() or a Curve, got {type(result).__name__}"
    )


def _y_limits(raw: npt.NDArray[np.float64], smooth: npt.NDArray[np.float64]) -> tuple[float, float]:
    """Y range that keeps a divergence spike from squashing the curve.

    The top is the highest point of the smoothed curve up to its minimum (about
    the start loss) times 1.5, unless the data stay below that; the bottom is
    the lowest finite value; 5 % margin on each side.
    """
    both = np.concatenate([raw[np.isfinite(raw)], smooth[np.isfinite(smooth)]])
    if both.size == 0:
        return 0.0, 1.0
    i_min = int(np.nanargmin(np.where(np.isfinite(smooth), smooth, np.inf)))
    head = smooth[: i_min + 1]
    cap = 1.5 * float(np.max(np.abs(head[np.isfinite(head)]), initial=0.0))
    top = min(float(both.max()), cap) if cap > 0 else float(both.max())
    bottom = float(both.min())
    if top <= bottom:
        top = bottom + max(abs(bottom), 1.0) * 0.1
    margin = 0.05 * (top - bottom)
    return bottom - margin, top + margin


def _suggestion_list(
    suggestions: Suggestions | Suggestion | None,
) -> tuple[Suggestion | None, list[Suggestion]]:
    if suggestions is None:
        return None, []
    if isinstance(suggestions, Suggestion):
        return suggestions, [suggestions]
    if isinstance(suggestions, Suggestions):
        return suggestions.default, list(suggestions.items)
    raise TypeError(
        f"suggestions must be Suggestions, a Suggestion or None, got {type(suggestions).__name__}"
    )


def plot_range_test(
    result: RangeTestResult | Curve | Mapping[str, Any],
    suggestions: Suggestions | Suggestion | None = None,
    *,
    path: str | os.PathLike[str] | None = None,
    format: str | None = None,
    title: str | None = None,
    show_accuracy: bool = True,
) -> Figure:
    """Loss (and accuracy) against learning rate, with the suggested bounds.

    Draws the raw loss faintly and its lag-free smoothing
    (:func:`~clr.suggest.smooth_losses`, what the rules read) boldly on a log LR axis
    (Smith 2015, §3.3, reads the bounds off such a plot); the accuracy on a
    twin y axis when present and ``show_accuracy``; the default suggestion's
    ``[base_lr, max_lr]`` as a shaded, labelled band; and markers at every
    rule's ``base_lr`` and ``max_lr`` on the smoothed curve. The stop reason goes
    under the title. The y axis is clipped near 1.5x the starting loss so a
    divergence spike does not flatten the rest.

    Args:
        result: a :class:`~clr._result.RangeTestResult`, its ``to_dict()``, or a
            :class:`~clr.suggest.Curve`.
        suggestions: what :func:`~clr.suggest.suggest_all` or
            :func:`~clr.suggest.suggest` returned, or ``None`` for the bare curve.
        path: where to save the picture; nothing is written when ``None``.
        format: ``"png"`` or ``"svg"``; inferred from ``path``'s suffix when
            ``None``.
        title: the figure's title (default ``"LR range test"``).
        show_accuracy: draw the accuracy when the result has one.

    Returns:
        The :class:`matplotlib.figure.Figure` (Agg canvas, not registered with
        pyplot).

    Raises:
        ValueError: ``format`` (or ``path``'s suffix) is not png or svg.
        TypeError: ``result`` or ``suggestions`` has an unexpected type.
    """
    fmt = _check_format(format, path)
    res = _as_result(result)
    if isinstance(res, RangeTestResult):
        lrs = np.asarray(res.lrs, dtype=np.float64)
        raw = np.asarray(res.losses, dtype=np.float64)
        acc = None if res.accuracies is None else np.asarray(res.accuracies, dtype=np.float64)
        subtitle = f"stopped: {res.stop_reason}"
        if res.stop_detail:
            subtitle += f" ({res.stop_detail})"
        subtitle += f"; {res.steps_run} steps on {res.device}"
    else:
        lrs = np.asarray(res.lrs, dtype=np.float64).reshape(-1)
        raw = np.asarray(res.losses, dtype=np.float64).reshape(-1)
        acc = None if res.accuracies is None else np.asarray(res.accuracies, dtype=np.float64)
        subtitle = f"{lrs.shape[0]} steps"
    # The lag-free smoothing the rules read, so every marker sits where its rule
    # looked (the range test's own one-sided EMA trails the raw loss).
    finite = np.isfinite(raw)
    n_ok = int(np.argmin(finite)) if not finite.all() else raw.shape[0]
    smooth = np.full_like(raw, np.nan)
    smooth[:n_ok] = smooth_losses(raw[:n_ok])
    default, items = _suggestion_list(suggestions)

    fig = _new_figure()
    ax = fig.add_subplot()
    ax.plot(lrs, raw, color="tab:blue", alpha=0.3, linewidth=1.0, label="loss", gid="raw-loss")
    ax.plot(lrs, smooth, color="tab:blue", linewidth=2.0, label="smoothed loss", gid="loss")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    if lrs.size:
        ax.set_ylim(*_y_limits(raw, smooth))
    ax.grid(True, which="both", alpha=0.2)

    if default is not None:
        ax.axvspan(
            default.base_lr,
            default.max_lr,
            color="tab:green",
            alpha=0.15,
            gid=_SPAN_GID,
            label=f"{default.method}: {default.base_lr:.2g} to {default.max_lr:.2g}",
        )
    ok = np.isfinite(smooth) & np.isfinite(lrs) & (lrs > 0)
    if items and ok.sum() >= 2:
        log_lr = np.log10(lrs[ok])
        for i, s in enumerate(items):
            xs = np.array([s.base_lr, s.max_lr])
            ys = np.interp(np.log10(xs), log_lr, smooth[ok])
            ax.plot(
                xs,
                ys,
                linestyle="none",
                marker=_MARKERS[i % len(_MARKERS)],
                markersize=7,
                markerfacecolor="none" if s is not default else None,
                label=f"{s.method} base/max",
                gid=f"marker-{s.method}",
            )

    handles, labels = ax.get_legend_handles_labels()
    if show_accuracy and acc is not None:
        ax2 = ax.twinx()
        ax2.plot(
            lrs, acc, color="tab:orange", alpha=0.6, linewidth=1.0, label="accuracy", gid="accuracy"
        )
        ax2.set_ylabel("training accuracy")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="best", fontsize="small")
    fig.suptitle(title if title is not None else "LR range test")
    ax.set_title(subtitle, fontsize="small")
    _save(fig, path, fmt)
    return fig


def plot_schedule(
    schedule_or_lrs: SupportsLRAt | Sequence[float] | npt.NDArray[Any],
    *,
    steps: int | None = None,
    momentums: Sequence[float] | npt.NDArray[Any] | None = None,
    path: str | os.PathLike[str] | None = None,
    format: str | None = None,
    title: str | None = None,
    cycle_ends: Sequence[int] | None = None,
) -> Figure:
    """Learning rate (and momentum) against iteration.

    Args:
        schedule_or_lrs: the learning rate of each step, or an object with
            ``lr_at(step)`` (:class:`SupportsLRAt`), sampled at ``0 .. steps-1``;
            its ``momentum_at(step)`` is drawn too when it exists and gives
            numbers.
        steps: how many steps to draw; required for a schedule object, and
            truncates a sequence when given.
        momentums: momentum at each step (Smith's cyclical momentum), drawn on a
            twin y axis; overrides the schedule's ``momentum_at``.
        path: where to save the picture; nothing is written when ``None``.
        format: ``"png"`` or ``"svg"``; inferred from ``path`` when ``None``.
        title: the figure's title (default ``"Learning-rate schedule"``).
        cycle_ends: iterations where a cycle ends (Smith 2015: stop training at
            one of them), drawn as dotted vertical lines.

    Returns:
        The :class:`matplotlib.figure.Figure`.

    Raises:
        ValueError: ``steps`` missing for a schedule object or not a positive
            integer, no learning rates, ``momentums`` shorter than the LRs, or a
            bad ``format``.
    """
    fmt = _check_format(format, path)
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    mom: npt.NDArray[np.float64] | None = None
    if isinstance(schedule_or_lrs, SupportsLRAt):
        if steps is None:
            raise ValueError("steps is required when schedule_or_lrs is a schedule with lr_at")
        lrs = np.array([float(schedule_or_lrs.lr_at(i)) for i in range(steps)])
        momentum_at = getattr(schedule_or_lrs, "momentum_at", None)
        if momentums is None and callable(momentum_at):
            values = [momentum_at(i) for i in range(steps)]
            if all(v is not None for v in values):
                mom = np.array([float(v) for v in values])
    else:
        lrs = np.asarray(schedule_or_lrs, dtype=np.float64).reshape(-1)
        if steps is not None:
            if steps > lrs.shape[0]:
                raise ValueError(
                    f"steps must be at most len(schedule_or_lrs)={lrs.shape[0]}, got {steps}"
                )
            lrs = lrs[:steps]
    if lrs.size == 0:
        raise ValueError("schedule_or_lrs must give at least one learning rate, got none")
    if momentums is not None:
        mom = np.asarray(momentums, dtype=np.float64).reshape(-1)
        if mom.shape[0] < lrs.shape[0]:
            raise ValueError(
                f"momentums must have at least {lrs.shape[0]} values, got {mom.shape[0]}"
            )
        mom = mom[: lrs.shape[0]]

    fig = _new_figure((8.0, 4.0))
    ax = fig.add_subplot()
    iters = np.arange(lrs.shape[0])
    ax.plot(iters, lrs, color="tab:blue", linewidth=1.5, label="learning rate", gid="lr")
    ax.set_xlabel("iteration")
    ax.set_ylabel("learning rate")
    ax.grid(True, alpha=0.2)
    handles, labels = ax.get_legend_handles_labels()
    for j, end in enumerate(cycle_ends or ()):
        ax.axvline(
            int(end),
            color="gray",
            linestyle=":",
            linewidth=1.0,
            gid="cycle-end",
            label="end of cycle" if j == 0 else None,
        )
    if cycle_ends:
        handles, labels = ax.get_legend_handles_labels()
    if mom is not None:
        ax2 = ax.twinx()
        ax2.plot(
            iters, mom, color="tab:red", linewidth=1.0, alpha=0.8, label="momentum", gid="momentum"
        )
        ax2.set_ylabel("momentum")
        h2, l2 = ax2.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax.legend(handles, labels, loc="best", fontsize="small")
    fig.suptitle(title if title is not None else "Learning-rate schedule")
    _save(fig, path, fmt)
    return fig
