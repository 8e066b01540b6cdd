"""Pictures of a range test, of a learning-rate schedule and of a training.

The plots follow Smith (2015, arXiv 1506.01186): the range test is read as loss
(and accuracy) against learning rate on a log axis, with the suggested
``[base_lr, max_lr]`` shaded; a schedule is drawn as learning rate against
iteration, with the ends of cycles marked, since the paper stops training at the
end of a cycle; a training as its loss and accuracy against iteration over the LR
and momentum it applied, so each bump in the loss can be read against the part
of the cycle that caused it.

matplotlib is imported inside the functions and only through its object API
(:class:`matplotlib.figure.Figure` with a ``FigureCanvasAgg``): no pyplot, no
global figure registry, no GUI backend. A returned figure is an ordinary object
that is freed when the last reference to it goes; nothing is written to disk
unless ``path`` is given.
"""

from __future__ import annotations

import io
import math
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

    from clr.seed_band import SeedBand, SeedSuggestions

__all__ = [
    "FORMATS",
    "SupportsLRAt",
    "SupportsTrainingHistory",
    "plot_range_test",
    "plot_schedule",
    "plot_seed_band",
    "plot_sweep",
    "plot_training",
    "render",
]

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


def plot_seed_band(
    band: SeedBand,
    suggestions: SeedSuggestions | None = None,
    *,
    spread: str = "std",
    path: str | os.PathLike[str] | None = None,
    format: str | None = None,
    title: str | None = None,
) -> Figure:
    """The mean smoothed loss of K seeds against learning rate, with their band.

    Each seed's recorded smoothed loss is drawn faintly, the mean over the
    members still running boldly on a log LR axis (Smith 2015, §3.3), with a
    shaded band of ``mean ± std`` (or ``min`` to ``max``) up to where fewer than
    half of the members remain (a dotted line marks that LR). Given
    ``suggestions`` (:meth:`clr.SeedBand.suggest`), the default bounds across
    seeds are shaded between ``base_lr_band[0]`` and ``max_lr_band[1]`` with
    the geometric-mean bounds as solid lines and each bound's band as a darker
    strip.

    Args:
        band: a :class:`~clr.SeedBand`.
        suggestions: its :meth:`~clr.SeedBand.suggest`, or ``None``.
        spread: ``"std"`` (mean ± one standard deviation) or ``"minmax"``.
        path: where to save the picture; nothing is written when ``None``.
        format: ``"png"`` or ``"svg"``; inferred from ``path``'s suffix when ``None``.
        title: the figure's title (default ``"LR range test, K seeds"``).

    Returns:
        The :class:`matplotlib.figure.Figure` (Agg canvas, not registered with pyplot).

    Raises:
        ValueError: ``spread`` is neither ``"std"`` nor ``"minmax"``, or
            ``format`` is not png or svg.
    """
    if spread not in ("std", "minmax"):
        raise ValueError(f"spread must be 'std' or 'minmax', got {spread!r}")
    fmt = _check_format(format, path)
    stats = band.smoothed
    lrs, e = band.lrs, band.end
    if spread == "std":
        lo, hi, what = stats.mean - stats.std, stats.mean + stats.std, "mean ± std"
    else:
        lo, hi, what = stats.min, stats.max, "min to max"

    fig = _new_figure()
    ax = fig.add_subplot()
    for k, member in enumerate(band.members):
        ax.plot(
            member.lrs,
            member.smoothed_losses,
            color="tab:gray",
            alpha=0.35,
            linewidth=0.8,
            label="each seed" if k == 0 else None,
            gid=f"seed-{k}",
        )
    ax.fill_between(
        lrs[:e], lo[:e], hi[:e], color="tab:blue", alpha=0.2, label=what, gid="seed-band"
    )
    ax.plot(lrs, stats.mean, color="tab:blue", linewidth=2.0, label="mean", gid="mean")
    if band.end_lr is not None:
        ax.axvline(
            band.end_lr,
            color="tab:red",
            linestyle=":",
            label=f"fewer than half remain ({band.end_lr:.2g})",
            gid="band-end",
        )
    if suggestions is not None:
        d = suggestions.default
        ax.axvspan(
            suggestions.base_lr_band[0],
            suggestions.max_lr_band[1],
            color="tab:green",
            alpha=0.1,
            gid=_SPAN_GID,
            label=f"{d.method}: {d.base_lr:.2g} to {d.max_lr:.2g} "
            f"(max_lr {suggestions.seed_spread:.1f}x across seeds)",
        )
        for name, (a, b) in (
            ("base", suggestions.base_lr_band),
            ("max", suggestions.max_lr_band),
        ):
            ax.axvspan(a, b, color="tab:green", alpha=0.2, gid=f"{name}-lr-band")
        for value in (d.base_lr, d.max_lr):
            ax.axvline(value, color="tab:green", linewidth=1.5)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss")
    if lrs.size:
        ax.set_ylim(*_y_limits(np.concatenate([lo[:e], hi[:e]]), stats.mean[:e]))
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(loc="best", fontsize="small")
    fig.suptitle(title if title is not None else f"LR range test, {band.num_members} seeds")
    ax.set_title(
        f"{band.num_members} seeds; band over {e} of {lrs.shape[0]} steps", fontsize="small"
    )
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


@runtime_checkable
class SupportsTrainingHistory(Protocol):
    """What :func:`plot_training` reads from a training run (``clr.train.TrainResult`` has it).

    ``lrs``, ``momenta`` (or ``None``) and ``losses`` have one value per
    iteration; ``epochs`` one record per epoch (a mapping, or an object with
    ``to_dict()`` or attributes, with ``iteration``, ``train_loss`` and
    optionally ``train_accuracy``, ``val_loss`` and ``val_accuracy``);
    ``cycle_ends`` the iterations at which a cycle ended.
    """

    @property
    def lrs(self) -> Sequence[float]: ...

    @property
    def momenta(self) -> Sequence[float] | None: ...

    @property
    def losses(self) -> Sequence[float]: ...

    @property
    def epochs(self) -> Sequence[Any]: ...

    @property
    def cycle_ends(self) -> Sequence[int]: ...


_EPOCH_FIELDS = ("epoch", "iteration", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
FloatArray = npt.NDArray[np.float64]


def _row(record: Any, i: int) -> Mapping[str, Any]:
    if isinstance(record, Mapping):
        return record
    to_dict = getattr(record, "to_dict", None)
    if callable(to_dict):
        row = to_dict()
        if isinstance(row, Mapping):
            return row
    if hasattr(record, "iteration"):
        return {name: getattr(record, name, None) for name in _EPOCH_FIELDS}
    raise TypeError(
        f"epochs[{i}] must be a mapping or a record with an iteration, got {type(record).__name__}"
    )


def _epoch_columns(epochs: Any) -> dict[str, FloatArray | None]:
    """Epoch records (or columns of them) as one float array per field (None: absent)."""
    if epochs is None:
        return {}
    if isinstance(epochs, Mapping):
        raw = {name: epochs.get(name) for name in _EPOCH_FIELDS}
    else:
        rows = [_row(record, i) for i, record in enumerate(epochs)]
        if not rows:
            return {}
        raw = {name: [row.get(name) for row in rows] for name in _EPOCH_FIELDS}
    columns: dict[str, FloatArray | None] = {}
    for name, values in raw.items():
        if values is None or all(v is None for v in values):
            columns[name] = None
        else:
            columns[name] = np.array(
                [np.nan if v is None else float(v) for v in values], dtype=np.float64
            )
    iterations = columns["iteration"]
    if iterations is None or columns["train_loss"] is None:
        if any(c is not None for c in columns.values()):
            missing = "iteration" if iterations is None else "train_loss"
            raise ValueError(f"epochs must give every epoch's {missing}")
        return {}
    lengths = {name: c.shape[0] for name, c in columns.items() if c is not None}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"epochs' columns must have the same length, got {lengths}")
    return columns


def _iterations(name: str, values: Sequence[int] | None) -> list[int]:
    out: list[int] = []
    for v in values or ():
        if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
            raise ValueError(f"{name} must be iterations (integers >= 0), got {v!r}")
        out.append(int(v))
    return out


def _positive(name: str, value: int | None) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _moving_mean(values: FloatArray, window: int) -> FloatArray:
    """Centred mean over ``window`` points (shorter at the ends), ignoring non-finite ones.

    Centred, so the smoothed loss does not trail the raw one; cumulative sums, so
    a million iterations take milliseconds (an EMA loop in Python takes seconds).
    """
    n = values.shape[0]
    finite = np.isfinite(values)
    sums = np.concatenate([[0.0], np.cumsum(np.where(finite, values, 0.0))])
    counts = np.concatenate([[0], np.cumsum(finite)])
    idx = np.arange(n)
    lo = np.clip(idx - window // 2, 0, n)
    hi = np.clip(idx + (window - window // 2), 0, n)
    k = counts[hi] - counts[lo]
    out = np.full(n, np.nan)
    np.divide(sums[hi] - sums[lo], k, out=out, where=k > 0)
    return out


def _envelope(values: FloatArray, max_points: int) -> tuple[FloatArray, FloatArray]:
    """``(x, y)`` drawing ``values`` (one per iteration) with at most ``max_points`` points.

    Longer runs are cut into ``max_points // 2`` bins, each drawn as its minimum and
    maximum (in the order the values went): a thinned line would drop the LR's
    peaks and the loss's spikes, a mean would flatten them.
    """
    n = values.shape[0]
    if n <= max_points:
        return np.arange(n, dtype=np.float64), values
    edges = np.linspace(0, n, max_points // 2 + 1).astype(np.int64)
    starts = edges[:-1]
    low = np.fmin.reduceat(values, starts)
    high = np.fmax.reduceat(values, starts)
    rising = values[starts] <= values[edges[1:] - 1]
    first = np.where(rising, low, high)
    second = np.where(rising, high, low)
    x = np.repeat((starts + edges[1:] - 1) / 2.0, 2)
    return x, np.column_stack([first, second]).reshape(-1)


def _binned_mean(values: FloatArray, max_points: int) -> tuple[FloatArray, FloatArray]:
    """``(x, y)`` of ``values`` averaged over bins, at most ``max_points`` of them."""
    n = values.shape[0]
    if n <= max_points:
        return np.arange(n, dtype=np.float64), values
    edges = np.linspace(0, n, max_points + 1).astype(np.int64)
    finite = np.isfinite(values)
    sums = np.add.reduceat(np.where(finite, values, 0.0), edges[:-1])
    counts = np.add.reduceat(finite.astype(np.int64), edges[:-1])
    means = np.full(sums.shape, np.nan)
    np.divide(sums, counts, out=means, where=counts > 0)
    return (edges[:-1] + edges[1:] - 1) / 2.0, means


def _loss_limits(*arrays: FloatArray | None, raw: FloatArray) -> tuple[float, float] | None:
    """Y range of the smoothed and per-epoch losses and the raw loss's 1st-99th percentiles
    (a first batch's loss, or one spike, would otherwise squash the curve)."""
    parts = [a[np.isfinite(a)] for a in arrays if a is not None]
    finite_raw = raw[np.isfinite(raw)]
    if finite_raw.size:
        parts.append(np.percentile(finite_raw, [1.0, 99.0]))
    both = np.concatenate(parts) if parts else np.empty(0)
    if both.size == 0:
        return None
    bottom, top = float(both.min()), float(both.max())
    if top <= bottom:
        top = bottom + max(abs(bottom), 1.0) * 0.1
    margin = 0.05 * (top - bottom)
    return bottom - margin, top + margin


def _mark_iterations(
    axes: Sequence[Any],
    ends: Sequence[int],
    *,
    gid: str,
    label: str,
    color: str,
    linestyle: str,
) -> None:
    for k, ax in enumerate(axes):
        for j, x in enumerate(ends):
            ax.axvline(
                x,
                color=color,
                linestyle=linestyle,
                linewidth=1.0,
                gid=gid,
                label=label if j == 0 and k == 0 else None,
            )


def _training_history(
    history: SupportsTrainingHistory | Mapping[str, Any],
) -> tuple[Any, Any, Any, Any, Any]:
    if isinstance(history, Mapping):
        if "lrs" not in history or "losses" not in history:
            raise ValueError(
                f"history as a mapping needs 'lrs' and 'losses', got keys {sorted(history)}"
            )
        return (
            history["lrs"],
            history["losses"],
            history.get("momenta"),
            history.get("epochs"),
            history.get("cycle_ends"),
        )
    if isinstance(history, SupportsTrainingHistory):
        return history.lrs, history.losses, history.momenta, history.epochs, history.cycle_ends
    raise TypeError(
        "history must be a training result (lrs, momenta, losses, epochs, cycle_ends) "
        f"or a mapping of them, got {type(history).__name__}"
    )


def plot_training(
    history: SupportsTrainingHistory | Mapping[str, Any],
    *,
    cycle_ends: Sequence[int] | None = None,
    checkpoints: Sequence[int] | None = None,
    resumed_at: Sequence[int] | None = None,
    total: int | None = None,
    smoothing: int | None = None,
    max_points: int = 4000,
    path: str | os.PathLike[str] | None = None,
    format: str | None = None,
    title: str | None = None,
    subtitle: str | None = None,
) -> Figure:
    """Loss and accuracy against iteration, over the learning rate and momentum applied.

    The top panel draws the training loss of every iteration faintly and its
    centred moving mean boldly, each epoch's training and validation loss as
    markers, and (on a twin axis) the validation and training accuracy per
    epoch. The bottom panel, sharing the iteration axis, draws the LR each step
    used and (on a twin axis) the momentum, cycled inversely to it in Smith's
    scheme (Smith 2018, arXiv 1803.09820). Cycle ends, where Smith (2015, arXiv
    1506.01186) stops training and a checkpoint and snapshot are taken, are
    dotted vertical lines on both panels; checkpoints and resumes, when given,
    are dashed and dash-dotted ones. Runs longer than ``max_points`` iterations
    are drawn binned: the LR, momentum and raw loss as each bin's minimum and
    maximum, so no peak or spike is lost.

    Args:
        history: a ``clr.train.TrainResult`` (any object with ``lrs``,
            ``momenta``, ``losses``, ``epochs`` and ``cycle_ends``), or a
            mapping with ``lrs`` and ``losses`` and optionally the others.
            ``epochs`` may be records (mappings, or objects with ``to_dict()``)
            or columns (``{"iteration": [...], "train_loss": [...], ...}``).
        cycle_ends: iterations where a cycle ends; overrides ``history``'s
            (a running job's: those still to come are drawn too).
        checkpoints: iterations at which a checkpoint was stored.
        resumed_at: iterations from which an attempt resumed.
        total: the run's length in iterations: the axis spans it even while the
            run is partway (default: the iterations drawn).
        smoothing: the moving mean's window in iterations (default: 1/25 of the
            run, at most 2000).
        max_points: most points drawn per line (at least 16).
        path: where to save the picture; nothing is written when ``None``.
        format: ``"png"`` or ``"svg"``; inferred from ``path`` when ``None``.
        title: the figure's title (default ``"CLR training"``).
        subtitle: a line under the title (how far the run got, its result).

    Returns:
        The :class:`matplotlib.figure.Figure` (Agg canvas, not registered with
        pyplot). Its axes: the loss, the learning rate, then the twins of the
        accuracy (when an epoch has one) and of the momentum (when the history
        has one).

    Raises:
        ValueError: no iterations; ``losses`` or ``momenta`` not one per LR;
            epochs without iterations or train losses, or with columns of
            different lengths; an iteration list with a negative or non-integer
            value; ``total``, ``smoothing`` or ``max_points`` not a positive
            integer (``max_points`` at least 16); a bad ``format``.
        TypeError: ``history`` or an epoch record has an unexpected type.

    Example:
        >>> fig = plot_training(  # doctest: +SKIP
        ...     result, path="training.png", subtitle=f"val accuracy {result.val_accuracy:.3f}"
        ... )
    """
    fmt = _check_format(format, path)
    _positive("total", total)
    _positive("smoothing", smoothing)
    _positive("max_points", max_points)
    if max_points < 16:
        raise ValueError(f"max_points must be at least 16, got {max_points}")
    raw_lrs, raw_losses, raw_momenta, raw_epochs, own_ends = _training_history(history)
    lrs = np.asarray(raw_lrs, dtype=np.float64).reshape(-1)
    losses = np.asarray(raw_losses, dtype=np.float64).reshape(-1)
    n = lrs.shape[0]
    if n == 0:
        raise ValueError("history has no iterations to plot (lrs is empty)")
    if losses.shape[0] != n:
        raise ValueError(f"losses must have one value per lr: {n} lrs, {losses.shape[0]} losses")
    momenta: FloatArray | None = None
    if raw_momenta is not None:
        momenta = np.asarray(raw_momenta, dtype=np.float64).reshape(-1)
        if momenta.shape[0] != n:
            raise ValueError(
                f"momenta must have one value per lr: {n} lrs, {momenta.shape[0]} momenta"
            )
        if not np.isfinite(momenta).any():
            momenta = None
    epochs = _epoch_columns(raw_epochs)
    ends = _iterations("cycle_ends", own_ends if cycle_ends is None else cycle_ends)
    saved = _iterations("checkpoints", checkpoints)
    resumed = _iterations("resumed_at", resumed_at)
    window = smoothing if smoothing is not None else max(1, min(n // 25, 2000))
    smooth = _moving_mean(losses, window)

    fig = _new_figure((9.0, 7.0))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3.0, 1.6]})
    x_raw, y_raw = _envelope(losses, max_points)
    top.plot(
        x_raw, y_raw, color="tab:blue", alpha=0.25, linewidth=0.8, label="loss", gid="raw-loss"
    )
    x_s, y_s = _binned_mean(smooth, max_points)
    top.plot(
        x_s, y_s, color="tab:blue", linewidth=2.0, label=f"loss ({window}-step mean)", gid="loss"
    )
    at = epochs.get("iteration")
    marker_lines = (
        ("train_loss", "epoch train loss", "tab:blue", "s", "epoch-train-loss"),
        ("val_loss", "validation loss", "tab:purple", "o", "val-loss"),
    )
    for name, label, color, marker, gid in marker_lines:
        values = epochs.get(name)
        if at is not None and values is not None:
            top.plot(
                at,
                values,
                color=color,
                marker=marker,
                markersize=5,
                linewidth=1.2,
                label=label,
                gid=gid,
            )
    limits = _loss_limits(smooth, epochs.get("train_loss"), epochs.get("val_loss"), raw=losses)
    if limits is not None:
        top.set_ylim(*limits)
    top.set_ylabel("loss")
    top.grid(True, alpha=0.2)

    accuracy_lines = (
        ("val_accuracy", "validation accuracy", "tab:orange", "-", "val-accuracy"),
        ("train_accuracy", "epoch train accuracy", "tab:orange", "--", "train-accuracy"),
    )
    drawn = [
        (name, label, color, style, gid)
        for name, label, color, style, gid in accuracy_lines
        if at is not None and epochs.get(name) is not None
    ]
    handles, labels = [], []
    if drawn:
        acc_ax = top.twinx()
        for name, label, color, style, gid in drawn:
            acc_ax.plot(
                at,
                epochs[name],
                color=color,
                linestyle=style,
                marker="o",
                markersize=4,
                linewidth=1.2,
                label=label,
                gid=gid,
            )
        acc_ax.set_ylabel("accuracy")
        handles, labels = acc_ax.get_legend_handles_labels()

    x_lr, y_lr = _envelope(lrs, max_points)
    bottom.plot(x_lr, y_lr, color="tab:green", linewidth=1.2, label="learning rate", gid="lr")
    bottom.set_ylabel("learning rate")
    bottom.set_xlabel("iteration")
    bottom.grid(True, alpha=0.2)
    bottom.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    mom_handles: list[Any] = []
    mom_labels: list[str] = []
    if momenta is not None:
        mom_ax = bottom.twinx()
        x_m, y_m = _envelope(momenta, max_points)
        mom_ax.plot(
            x_m, y_m, color="tab:red", linewidth=1.0, alpha=0.8, label="momentum", gid="momentum"
        )
        mom_ax.set_ylabel("momentum")
        mom_handles, mom_labels = mom_ax.get_legend_handles_labels()

    panels = (top, bottom)
    _mark_iterations(
        panels, ends, gid="cycle-end", label="end of cycle", color="gray", linestyle=":"
    )
    _mark_iterations(
        panels, saved, gid="checkpoint", label="checkpoint", color="tab:brown", linestyle="--"
    )
    _mark_iterations(
        panels, resumed, gid="resumed", label="resumed", color="tab:red", linestyle="-."
    )
    epoch_ends = () if at is None else at[np.isfinite(at)]
    last = max([n - 1, *(int(v) for v in epoch_ends)])
    right = max(last, total if total is not None else 0)
    bottom.set_xlim(0, max(right, 1))

    # one legend under the panels: inside either it would hide a part of the curves
    h_top, l_top = top.get_legend_handles_labels()
    h_bottom, l_bottom = bottom.get_legend_handles_labels()
    fig.legend(
        h_top + handles + h_bottom + mom_handles,
        l_top + labels + l_bottom + mom_labels,
        loc="outside lower center",
        ncols=4,
        fontsize="small",
        frameon=False,
    )
    fig.suptitle(title if title is not None else "CLR training")
    if subtitle:
        top.set_title(subtitle, fontsize="small")
    _save(fig, path, fmt)
    return fig


def plot_sweep(
    panels: Sequence[Mapping[str, Any]],
    *,
    path: str | os.PathLike[str] | None = None,
    format: str | None = None,
    title: str | None = None,
    ncols: int = 3,
) -> Figure:
    """Validation accuracy against iteration, one line per policy, one panel per configuration.

    The comparison of Smith (2015, arXiv 1506.01186, Fig. 1 and Table 1): every
    policy trained for the same iterations over several seeds. Each line is the
    mean over seeds with a band of one standard deviation; the ends of each
    policy's cycles are marked on its line (the paper reads accuracy there), and
    the fixed policy's final mean accuracy, when given, is a dashed horizontal
    line: where a line first crosses it is the policy's iterations to reach it.

    Args:
        panels: one mapping per configuration: ``title`` (str), ``target``
            (the fixed policy's final accuracy, or None) and ``curves``, a list
            of mappings with ``label``, ``iteration``, ``mean``, and optionally
            ``std`` and ``cycle_ends``.
        path: where to save the picture; nothing is written when ``None``.
        format: ``"png"`` or ``"svg"``; inferred from ``path`` when ``None``.
        title: the figure's title (default ``"CLR policies compared"``).
        ncols: most panels per row.

    Returns:
        The :class:`matplotlib.figure.Figure` (Agg canvas, not registered with
        pyplot), one axes per panel.

    Raises:
        ValueError: no panel or a panel without curves; a curve whose
            ``iteration``, ``mean`` and ``std`` differ in length or is empty; a
            bad ``format`` or ``ncols``.

    Example:
        >>> curve = {"label": "triangular2", "iteration": [10, 20], "mean": [0.5, 0.8]}
        >>> fig = plot_sweep([{"title": "bs=64 sgd", "target": 0.7, "curves": [curve]}])
        >>> len(fig.axes)
        1
    """
    fmt = _check_format(format, path)
    if not panels:
        raise ValueError("panels is empty: there is no curve to plot yet")
    if isinstance(ncols, bool) or not isinstance(ncols, int) or ncols < 1:
        raise ValueError(f"ncols must be a positive integer, got {ncols!r}")
    cols = min(ncols, len(panels))
    rows = -(-len(panels) // cols)
    fig = _new_figure((5.0 * cols + 1.0, 3.8 * rows + 0.8))
    grid = fig.subplots(rows, cols, squeeze=False, sharey=True)
    axes = [ax for row in grid for ax in row]
    for ax in axes[len(panels) :]:
        fig.delaxes(ax)
    colors: dict[str, str] = {}
    palette = [f"C{i}" for i in range(10)]
    for k, (ax, panel) in enumerate(zip(axes, panels, strict=False)):
        curves = list(panel.get("curves") or ())
        if not curves:
            raise ValueError(f"panels[{k}] has no curves")
        for j, curve in enumerate(curves):
            label = str(curve["label"])
            color = colors.setdefault(label, palette[len(colors) % len(palette)])
            x = np.asarray(curve["iteration"], dtype=np.float64).reshape(-1)
            mean = np.asarray(curve["mean"], dtype=np.float64).reshape(-1)
            std_raw = curve.get("std")
            std = (
                np.zeros_like(mean)
                if std_raw is None
                else np.asarray(std_raw, dtype=np.float64).reshape(-1)
            )
            if x.shape[0] == 0 or mean.shape != x.shape or std.shape != x.shape:
                raise ValueError(
                    f"panels[{k}].curves[{j}] ({label}): iteration, mean and std must be "
                    f"non-empty and of one length, got {x.shape[0]}, {mean.shape[0]}, "
                    f"{std.shape[0]}"
                )
            ax.plot(x, mean, color=color, linewidth=1.6, label=label, gid=f"mean-{label}")
            if np.any(std > 0):
                ax.fill_between(
                    x, mean - std, mean + std, color=color, alpha=0.15, gid=f"band-{label}"
                )
            ends = np.asarray(
                [e for e in (curve.get("cycle_ends") or ()) if x[0] <= e <= x[-1]],
                dtype=np.float64,
            )
            if ends.size:
                ax.plot(
                    ends,
                    np.interp(ends, x, mean),
                    linestyle="none",
                    marker="|",
                    markersize=12,
                    markeredgewidth=2.0,
                    color=color,
                    gid=f"cycle-ends-{label}",
                )
        target = panel.get("target")
        if target is not None and math.isfinite(float(target)):
            ax.axhline(
                float(target),
                color="black",
                linestyle="--",
                linewidth=0.9,
                alpha=0.7,
                label="fixed LR final accuracy",
                gid="fixed-target",
            )
        ax.set_title(str(panel.get("title") or ""), fontsize="small")
        ax.set_xlabel("iteration")
        ax.grid(True, alpha=0.2)
    for row in grid:
        row[0].set_ylabel("validation accuracy")
    handles: dict[str, Any] = {}
    for ax in axes[: len(panels)]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=False):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(
            list(handles.values()),
            list(handles),
            loc="outside lower center",
            # as many columns as the figure's width holds (about 2 inches each)
            ncols=min(len(handles), max(2, int(fig.get_figwidth() // 2.0))),
            fontsize="small",
            frameon=False,
        )
    fig.suptitle(
        (title if title is not None else "CLR policies compared")
        + " (mean over seeds, band ±1 std, | cycle ends)"
    )
    _save(fig, path, fmt)
    return fig
