"""Learning-rate bounds from an LR range-test curve.

Smith (2015, "Cyclical Learning Rates for Training Neural Networks", arXiv
1506.01186, §3.3) runs the model for a few epochs while the learning rate rises
linearly from a low to a high value, then reads two numbers off the plot of
accuracy (or loss) against learning rate: ``base_lr``, where the curve starts to
improve, and ``max_lr``, where it stops improving, turns ragged or gets worse.
This module makes that reading repeatable, and offers the rules the fastai
library popularised next to it, so they can be compared on the same curve.

Every rule works on the *finite prefix* of the curve (a range test stops at the
first non-finite loss) and on a lag-free smoothing of the raw loss: a
bias-corrected EMA run forward and then backward (see ``_zero_lag``), after
blow-ups are clipped to twice the start level (see ``_capped``). The one-sided
EMA a range test records (``smoothed_losses``) lags the raw loss by about
``beta / (1 - beta)`` steps -- 19 at the range test's default ``beta=0.95``, 49
at fastai's 0.98, which on a 300-step sweep puts its minimum half a decade too
high. fastai's rules inherit that lag; these do not. The recorded EMA is for
display and the divergence check only.

Rules (see each ``_rule_*`` function for the exact recipe):

* ``paper``: Smith's reading. ``base_lr`` where the smoothed loss has made 10 %
  of its total drop, ``max_lr`` at its minimum, or earlier where the raw loss
  turns ragged. With ``use_accuracy=True`` the same reading on accuracy.
* ``steepest``: ``max_lr`` at the steepest descent of the loss against
  ``log10(lr)``, ``base_lr = max_lr / 4``.
* ``valley``: fastai's ``valley``: halfway along the longest descent.
* ``min_div_10``: fastai's ``minimum``: the LR of the minimum divided by 10.
* ``max_fraction``: the paper's ``max_lr`` with ``base_lr = max_lr / 4`` (Smith,
  after Bengio 2012: the best LR is within a factor of two of the largest one
  that converges, so the lower bound is a small fraction of ``max_lr``).

Example::

    suggestions = suggest_all(result, iters_per_epoch=len(train_loader))
    s = suggestions.default
    print(s.rationale, suggestions.step_size, suggestions.warnings)
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from clr._result import RangeTestResult
from clr.exceptions import (
    CurveTooShort,
    FlatCurve,
    MonotoneCurve,
    NonFiniteCurve,
    SuggestionError,
)

__all__ = [
    "BASE_FRACTION",
    "DEFAULT_METHOD",
    "EMA_BETA",
    "METHODS",
    "MIN_POINTS",
    "NOISE_WARN_THRESHOLD",
    "SEED_SPREAD_FREE",
    "SEED_SPREAD_ZERO",
    "Curve",
    "CurveLike",
    "CurveVerdict",
    "Suggestion",
    "Suggestions",
    "curve_verdict",
    "seed_agreement",
    "suggest",
    "smooth_losses",
    "suggest_all",
]

FloatArray = npt.NDArray[np.float64]

METHODS: tuple[str, ...] = ("paper", "steepest", "valley", "min_div_10", "max_fraction")
"""Every rule :func:`suggest_all` runs, in the order it reports them."""

DEFAULT_METHOD: str = "max_fraction"
"""The rule :func:`suggest` uses when none is named (read at call time).

Chosen by measurement (``python -m bench.suggestion_quality``: range test, then
CLR triangular2 for 4 cycles from each method's bounds, 5 seeds on each of
digits_mlp, digits_cnn, mnist1d_mlp and mnist1d_cnn; mean final validation
accuracy): max_fraction 0.8750, paper 0.8720, steepest 0.8564, min_div_10
0.8204, valley 0.7191. max_fraction and paper share max_lr and tie on digits;
the lower base_lr = max_lr / 4 wins on MNIST-1D (0.641 vs 0.632, 0.925 vs 0.922).
"""

MIN_POINTS = 10
"""Fewest finite points any rule accepts."""

EMA_BETA = 0.98
"""Smoothing factor of the bias-corrected EMA computed when a curve has none."""

BASE_FRACTION = 0.10
"""``paper``: the curve "starts to improve" once it has made this fraction of its drop."""

NOISE_WARN_THRESHOLD = 0.2
"""Above this relative noise :func:`suggest_all` warns that the curve cannot be trusted."""

SEED_SPREAD_FREE = 2.0
"""Seeds agree when their ``max_lr`` varies by at most this factor (max / min).

Smith (2015, §3.3) reads ``max_lr`` off one curve to within a factor of two or so
(Bengio 2012: the best LR is within a factor of two of the largest that
converges), so seeds within 2x of each other tell the same story, and agreeing
seeds raise the confidence; beyond it they lower it (see :func:`seed_agreement`).
"""

SEED_SPREAD_ZERO = 10.0
"""At this factor (max / min) of ``max_lr`` across seeds the seeds leave no confidence."""

_SEED_GAIN = 0.5  # agreeing seeds remove at most this share of the remaining doubt

_FLAT_REL_DROP = 0.02  # a drop below 2 % of the start level is no descent
_END_RISE_FRACTION = 0.05  # after the minimum the curve must rise by 5 % of the drop
_RAGGED_FACTOR = 3.0  # local noise this many times the curve's noise is "ragged"
_RAGGED_MIN = 0.05  # ... and at least 5 % relative standard deviation
_BASE_DIVISOR = 4.0  # base_lr = max_lr / 4 for the rules that only find max_lr
_DISAGREE_WARN = 0.5  # confidence below this adds a "methods disagree" warning
_SPREAD_FREE = 0.5  # decades of spread expected between the rules' readings
_NOISY_DROP_CONFIDENCE = 0.25  # confidence cap when the drop is within the noise
# A move of the smoothed loss is noise unless it exceeds this many times the raw
# loss's step noise: on pure noise the lag-free smoothing still dips and bumps by
# about one step's noise (less averaging at the curve's ends, few points per window
# on a 100-step sweep), so a single noise width let pure noise pass as a descent.
_NOISE_MOVES = 2.0
_NOISE_HIGH = 3.0  # ... and "lower start_lr" needs a move beyond three of them
_HIGH_LR = 1.0  # a flat curve up to this LR needs more steps per LR, not a higher end_lr
# A loss that can fall to 0 (cross-entropy, squared error) has its whole start level
# to fall by; a model that learns within a range test drops it by a third or more
# (the built-in workloads: 2.3 -> 0.3 and lower). A drop below a tenth of it, with
# no rise of the accuracy beyond its noise to back it, is a model that barely
# learns at this many steps per LR: its bounds are a guess (issue 12's CNN: 1.386
# -> 1.35, 2.6 %, with flat accuracy, once got confidence 0.65).
_SMALL_DROP = 0.10
_ACC_RISE_NOISE = 2.0  # an accuracy rise counts when above this many times its step noise
# Robust sigma from second differences: e_i - (e_{i-1} + e_{i+1}) / 2 has standard
# deviation sigma * sqrt(1.5) for independent noise, and median|N(0, s)| = s / 1.4826.
_ROUGH_SCALE = 1.4826 / math.sqrt(1.5)


@dataclass(frozen=True)
class Curve:
    """A range-test curve given as plain arrays (for synthetic or foreign curves).

    Attributes:
        lrs: learning rate at each step, strictly increasing.
        losses: raw training loss at each step.
        smoothed: the recorded smoothed loss, for display; the rules smooth
            ``losses`` themselves without lag and only check it is finite.
        accuracies: training accuracy at each step, for ``use_accuracy=True``.
    """

    lrs: npt.ArrayLike
    losses: npt.ArrayLike
    smoothed: npt.ArrayLike | None = None
    accuracies: npt.ArrayLike | None = None


CurveLike = RangeTestResult | Curve | Mapping[str, Any]
"""What the functions here accept: a result, a :class:`Curve`, or ``RangeTestResult.to_dict()``."""


@dataclass(frozen=True)
class Suggestion:
    """One rule's learning-rate bounds for a cyclical schedule.

    Attributes:
        method: the rule's name, one of :data:`METHODS`.
        base_lr: lower bound of the cycle (``0 < base_lr < max_lr``).
        max_lr: upper bound of the cycle.
        rationale: one or two sentences, with the numbers, saying why.
        evidence: the points the rule used (indices, LRs, loss values), as plain
            JSON-ready ints, floats, strings and lists.
        step_size: iterations per half cycle, when ``iters_per_epoch`` was given.
        stop_iteration: iteration at which to stop (the end of the last cycle).
        cycles: number of full cycles ``stop_iteration`` covers.
    """

    method: str
    base_lr: float
    max_lr: float
    rationale: str
    evidence: dict[str, Any] = field(default_factory=dict)
    step_size: int | None = None
    stop_iteration: int | None = None
    cycles: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {
            "method": self.method,
            "base_lr": float(self.base_lr),
            "max_lr": float(self.max_lr),
            "rationale": self.rationale,
            "evidence": _jsonable(self.evidence),
            "step_size": self.step_size,
            "stop_iteration": self.stop_iteration,
            "cycles": self.cycles,
        }


@dataclass
class Suggestions:
    """Every rule's bounds for one curve, with how far they can be trusted.

    Attributes:
        items: one :class:`Suggestion` per rule that succeeded, ``default`` first,
            the others in :data:`METHODS` order.
        default: the suggestion to use: :data:`DEFAULT_METHOD`'s, or the first
            rule that succeeded when that one failed (a warning says so).
        confidence: in ``[0, 1]``; 1 when the rules agree on where the loss
            bottoms out, falling to 0 as they spread over 1.5 decades, scaled down
            by the fraction of rules that failed (see :func:`suggest_all`). When
            the loss drops by less than its noise (relative drop below
            twice ``noise``) the curve may show nothing but noise: confidence is
            then at most 0.25, times ``drop / (2 * noise)``, and a warning says so. When
            it drops by less than 10 % of its start level and the accuracy (when
            recorded) does not rise beyond twice its step noise, confidence is
            at most ``0.25 * drop / 10 %``, with a warning. Given seeds
            (``seed_max_lrs``), the rules' agreement is first adjusted by the
            seeds' (:func:`seed_agreement`).
        noise: robust relative standard deviation of the raw loss about its
            trend over the descending part of the curve (0.05 means 5 %).
        warnings: sentences for a person, each with what to do about it.
        step_size: iterations per half cycle (``epochs_per_half_cycle *
            iters_per_epoch``), or ``None`` without ``iters_per_epoch``.
        stop_iteration: ``cycles * 2 * step_size``: the end of the last cycle,
            where the learning rate is back at ``base_lr``.
        cycles: the number of cycles ``stop_iteration`` covers.
        failed: rule name -> why it gave no bounds.
        informative: ``False`` when the curve shows too little to trust any
            bounds and ``confidence`` was capped for it: the loss falls by less
            than its noise, or by less than 10 % of its start level with no rise
            of the accuracy beyond its own noise to back it (a warning says
            which, with the numbers). Such bounds are a guess; verify them by
            training (:mod:`clr.verify`).
        seeds: how many runs of the same configuration under different seeds
            ``confidence`` took into account (``seed_max_lrs`` of
            :func:`suggest_all`), or ``None`` for a single run.
        seed_spread: ``max / min`` of those runs' ``max_lr`` (1.0 when they
            agree exactly), or ``None`` for a single run.
    """

    items: list[Suggestion]
    default: Suggestion
    confidence: float
    noise: float
    warnings: list[str] = field(default_factory=list)
    step_size: int | None = None
    stop_iteration: int | None = None
    cycles: int | None = None
    failed: dict[str, str] = field(default_factory=dict)
    informative: bool = True
    seeds: int | None = None
    seed_spread: float | None = None

    def get(self, method: str) -> Suggestion:
        """The suggestion of one rule.

        Args:
            method: a name from :data:`METHODS`.

        Returns:
            That rule's :class:`Suggestion`.

        Raises:
            KeyError: the rule is unknown or failed on this curve (the message
                says why).
        """
        for item in self.items:
            if item.method == method:
                return item
        if method in self.failed:
            raise KeyError(f"method {method!r} failed on this curve: {self.failed[method]}")
        raise KeyError(f"method must be one of {METHODS}, got {method!r}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (``default`` as a dict, plus its name).

        ``seeds`` and ``seed_spread`` appear only when seeds were given, so a
        single run's dict is what it always was.
        """
        data: dict[str, Any] = {
            "default_method": self.default.method,
            "default": self.default.to_dict(),
            "items": [s.to_dict() for s in self.items],
            "confidence": float(self.confidence),
            "noise": float(self.noise),
            "warnings": list(self.warnings),
            "step_size": self.step_size,
            "stop_iteration": self.stop_iteration,
            "cycles": self.cycles,
            "failed": dict(self.failed),
            "informative": bool(self.informative),
        }
        if self.seeds is not None:
            data["seeds"] = int(self.seeds)
            data["seed_spread"] = None if self.seed_spread is None else float(self.seed_spread)
        return data


# --------------------------------------------------------------------------- input


def _jsonable(value: Any) -> Any:
    """Plain Python copy of ``value``: numpy scalars and arrays become floats/ints/lists."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


def _ema(values: FloatArray, beta: float = EMA_BETA) -> FloatArray:
    """Bias-corrected EMA: ``avg_t = beta*avg_{t-1} + (1-beta)*x_t``, ``avg_t / (1-beta**t)``."""
    out = np.empty_like(values)
    avg = 0.0
    for t, x in enumerate(values, start=1):
        avg = beta * avg + (1.0 - beta) * float(x)
        out[t - 1] = avg / (1.0 - beta**t)
    return out


def _zero_lag(values: FloatArray) -> FloatArray:
    """Forward-then-backward bias-corrected EMA: smooth, and without the EMA's lag.

    A one-sided EMA with ``beta = 0.98`` trails the raw loss by ~50 steps, which on
    a 300-step sweep moves its minimum half a decade to the right. Running it back
    over its own output cancels that phase shift (the idea of ``filtfilt``), so the
    rules find the minimum, the onset and the steepest point where the loss has
    them. The window (``1 / (1 - beta)``) is ~3 % of the curve, 4 to 20 points.
    """
    window = min(20.0, max(4.0, values.shape[0] / 30.0))
    beta = 1.0 - 1.0 / window
    return _ema(_ema(values, beta)[::-1].copy(), beta)[::-1].copy()


def _capped(losses: FloatArray) -> FloatArray:
    """``losses`` with blow-ups clipped to twice the start level before smoothing.

    A range test stops on the step that diverged, so the last raw loss can be
    huge (1e6). The backward pass of :func:`_zero_lag` would spread that spike
    back over hundreds of points (it decays by ``beta`` per step) and drag the
    minimum far to the left. Above twice the start level (median of the first
    5 %; the start level plus its distance to the lowest loss when that is
    larger, for negative losses) a loss only says "diverged", so it is clipped
    there; the rules' noise and raggedness still read the raw values.
    """
    level = float(np.median(losses[: max(1, losses.shape[0] // 20)]))
    cap = level + max(abs(level), level - float(np.min(losses)))
    return np.minimum(losses, cap)


def smooth_losses(losses: npt.ArrayLike) -> FloatArray:
    """The lag-free smoothing every rule reads (and the plots draw).

    Blow-ups are clipped to twice the start level, then a bias-corrected EMA
    runs forward and back (see ``_zero_lag``), so the curve's minimum, onset
    and steepest point stay where the raw loss has them.

    Args:
        losses: raw losses of a range test, all finite.

    Returns:
        An array of the same length.
    """
    values = _array("losses", losses)
    return _zero_lag(_capped(values)) if values.size else values


def _array(name: str, values: Any) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


@dataclass(frozen=True)
class _Raw:
    lrs: FloatArray
    losses: FloatArray
    smoothed: FloatArray | None
    accuracies: FloatArray | None
    stop_reason: str | None
    end_lr: float | None  # the end_lr the range test asked for, when known


def _extract(curve: CurveLike) -> _Raw:
    if isinstance(curve, RangeTestResult):
        return _Raw(
            _array("lrs", curve.lrs),
            _array("losses", curve.losses),
            _array("smoothed_losses", curve.smoothed_losses),
            None if curve.accuracies is None else _array("accuracies", curve.accuracies),
            curve.stop_reason,
            float(curve.end_lr),
        )
    if isinstance(curve, Curve):
        return _Raw(
            _array("lrs", curve.lrs),
            _array("losses", curve.losses),
            None if curve.smoothed is None else _array("smoothed", curve.smoothed),
            None if curve.accuracies is None else _array("accuracies", curve.accuracies),
            None,
            None,
        )
    if isinstance(curve, Mapping):
        smoothed = curve.get("smoothed_losses", curve.get("smoothed"))
        acc = curve.get("accuracies")
        reason = curve.get("stop_reason")
        end_lr = curve.get("end_lr")
        return _Raw(
            _array("lrs", curve["lrs"]),
            _array("losses", curve["losses"]),
            None if smoothed is None else _array("smoothed_losses", smoothed),
            None if acc is None else _array("accuracies", acc),
            None if reason is None else str(reason),
            None if end_lr is None else float(end_lr),
        )
    raise TypeError(
        "result_or_arrays must be a RangeTestResult, a Curve or a RangeTestResult.to_dict() "
        f"mapping, got {type(curve).__name__}"
    )


def _window(n: int) -> int:
    """Odd window for local statistics: about 2 % of the curve, between 5 and 31 points."""
    w = max(5, min(31, n // 50))
    return w if w % 2 == 1 else w + 1


def _rolling(values: FloatArray, w: int, stat: Callable[..., Any]) -> FloatArray:
    """Centred rolling statistic with edge padding (same length as ``values``)."""
    half = w // 2
    padded = np.pad(values, half, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, w)
    return np.asarray(stat(windows, axis=1), dtype=np.float64)


def _roughness(raw: FloatArray, scale: FloatArray) -> FloatArray:
    """Per-point noise estimate, in units of ``scale``, from second differences.

    Second differences cancel any locally linear trend, so the lag of the EMA on
    a steep descent is not mistaken for noise.
    """
    d = np.empty_like(raw)
    d[1:-1] = np.abs(raw[1:-1] - 0.5 * (raw[:-2] + raw[2:])) / scale[1:-1]
    d[0], d[-1] = d[1], d[-2]
    return d * _ROUGH_SCALE


@dataclass(frozen=True)
class _Signal:
    """One curve oriented so that lower is better (loss, or minus accuracy)."""

    name: str  # "loss" or "accuracy"
    sign: float  # +1 for loss, -1 for accuracy: display value = sign * stored value
    raw: FloatArray
    smooth: FloatArray
    rough: FloatArray  # per-point noise estimate (relative)
    start: float  # level before the descent: median of the first 5 % of the smoothed curve
    k: int  # size of that start window
    i_best: int
    best: float
    drop: float
    i_base: int | None  # None when there is no descent

    def shown(self, value: float) -> float:
        return self.sign * value


def _signal(name: str, sign: float, raw: FloatArray, smooth: FloatArray) -> _Signal:
    n = raw.shape[0]
    k = max(1, n // 20)
    start = float(np.median(smooth[:k]))
    i_best = int(np.argmin(smooth))
    best = float(smooth[i_best])
    drop = start - best
    if sign > 0:  # loss: noise relative to the local level (a centred, lag-free median)
        scale = np.maximum(np.abs(_rolling(raw, _window(n), np.median)), 1e-12)
    else:  # accuracy: noise relative to the total rise
        scale = np.full_like(smooth, max(drop, 1e-12))
    rough = _roughness(raw, scale)
    i_base: int | None = None
    if drop > 0 and i_best > 0:
        # base: one past the last point before the minimum that is still above
        # start - BASE_FRACTION * drop (robust to noisy dips at the very start)
        above = np.nonzero(smooth[:i_best] > start - BASE_FRACTION * drop)[0]
        i_base = int(above[-1]) + 1 if above.size else 0
        i_base = min(i_base, i_best - 1)
    return _Signal(name, sign, raw, smooth, rough, start, k, i_best, best, drop, i_base)


@dataclass(frozen=True)
class _Prepared:
    lrs: FloatArray
    log_lrs: FloatArray
    loss: _Signal
    accuracy: _Signal | None
    noise: float
    noise_span: tuple[int, int]  # [lo, hi) indices the noise was measured over
    notes: tuple[str, ...]  # things suggest_all turns into warnings
    stop_reason: str | None
    cut: str | None  # why the curve was cut after its last point kept, in words
    end_lr: float | None  # the end_lr the range test asked for, when known

    @property
    def n(self) -> int:
        return int(self.lrs.shape[0])

    @property
    def truncated(self) -> bool:
        """True when unusable points after the last one kept were dropped."""
        return self.cut is not None

    @property
    def lr_span(self) -> str:
        return f"{self.lrs[0]:.3g} and {self.lrs[-1]:.3g}"

    @property
    def lr_range(self) -> str:
        """:attr:`lr_span`, saying why the curve ends where it does when it was cut."""
        cut = f" (the curve is cut there: {self.cut})" if self.cut else ""
        return f"{self.lr_span}{cut}"

    @property
    def decades(self) -> float:
        return float(self.log_lrs[-1] - self.log_lrs[0])

    def stop_phrase(self) -> str | None:
        """How the sweep ended before reaching its end, in words, or ``None`` if it did not.

        A stop (divergence, a non-finite loss, a cancel) means the curve's last
        LR is as high as this test could go: a higher ``end_lr`` changes nothing.
        """
        at = f"lr {self.lrs[-1]:.3g}"
        before = (
            f", before end_lr={self.end_lr:.3g}"
            if self.end_lr is not None and self.end_lr > self.lrs[-1] * (1 + 1e-9)
            else ""
        )
        if self.stop_reason == "diverged":
            return f"the test stopped at {at} because the loss diverged{before}"
        if self.stop_reason == "cancelled":
            return f"the test was cancelled at {at}{before}"
        if self.cut is not None:
            return f"the curve ends at {at}: {self.cut}"
        if self.stop_reason == "non_finite":
            return f"the test stopped at {at} because the loss was not finite{before}"
        return None


def _unusable(raw: _Raw, i: int) -> str:
    """Why point ``i`` of the curve cannot be used, in words."""
    lr, loss = float(raw.lrs[i]), float(raw.losses[i])
    if not (math.isfinite(lr) and lr > 0):
        return f"step {i} is unusable: its lr is {lr:.3g}, not a positive finite number"
    if not math.isfinite(loss):
        if not np.isfinite(raw.losses[i:]).any():
            return f"the loss is not finite from step {i} on (lr {lr:.3g})"
        return f"step {i} is unusable: its loss is {loss} (lr {lr:.3g})"
    return f"step {i} is unusable: its recorded smoothed loss is not finite (lr {lr:.3g})"


def _non_finite_error(raw: _Raw) -> NonFiniteCurve:
    """The error for a curve without a single usable point, saying what is wrong with it."""
    n = raw.lrs.shape[0]
    bad_loss = int(np.sum(~np.isfinite(raw.losses)))
    bad_lr = int(np.sum(~(np.isfinite(raw.lrs) & (raw.lrs > 0))))
    bad_smooth = 0 if raw.smoothed is None else int(np.sum(~np.isfinite(raw.smoothed)))
    if bad_loss == n:
        first = float(raw.lrs[0])
        at = f" even at the first lr {first:.3g}" if math.isfinite(first) and first > 0 else ""
        return NonFiniteCurve(
            f"no finite loss in the curve (all {n} losses are NaN or inf): the loss is not "
            f"finite{at}: check the model and data, and lower start_lr"
        )
    parts = [f"{bad_loss} of the losses are NaN or inf"] if bad_loss else []
    if bad_lr:
        parts.append(f"{bad_lr} of the lrs are not positive finite numbers")
    if bad_smooth:
        parts.append(f"{bad_smooth} of the recorded smoothed losses are not finite")
    return NonFiniteCurve(
        f"no usable point in the curve of {n} points ({'; '.join(parts)}): every point needs "
        "a positive finite lr and a finite loss"
    )


def _prepare(curve: CurveLike) -> _Prepared:
    raw = _extract(curve)
    n_all = raw.lrs.shape[0]
    for label, arr in (("losses", raw.losses), ("smoothed_losses", raw.smoothed)):
        if arr is not None and arr.shape[0] != n_all:
            raise ValueError(
                f"lrs and {label} must have the same length, got {n_all} and {arr.shape[0]}"
            )
    ok = np.isfinite(raw.lrs) & (raw.lrs > 0) & np.isfinite(raw.losses)
    if raw.smoothed is not None:
        ok &= np.isfinite(raw.smoothed)
    if n_all == 0:
        raise CurveTooShort(f"need at least {MIN_POINTS} finite points, got 0: run the range test")
    if not ok.any():
        raise _non_finite_error(raw)
    bad = np.nonzero(~ok)[0]
    m = int(bad[0]) if bad.size else n_all
    cut = _unusable(raw, m) if m < n_all else None
    notes: list[str] = []
    if m < MIN_POINTS:
        # a loss that blows up at lr[m] leaves more points below it with a lower end_lr
        blew_up = cut is not None and not math.isfinite(float(raw.losses[m]))
        raise CurveTooShort(
            f"need at least {MIN_POINTS} finite points, got {m}"
            + (f" ({cut})" if cut else "")
            + ": run more iterations"
            + (" or lower end_lr" if blew_up else "")
        )
    lrs = raw.lrs[:m]
    steps = np.diff(lrs)
    if np.any(steps <= 0):
        at = int(np.nonzero(steps <= 0)[0][0]) + 1
        raise SuggestionError(
            f"lrs must strictly increase along the curve, got {lrs[at - 1]:.3g} then "
            f"{lrs[at]:.3g} at index {at}: pass the curve of an LR range test"
        )
    losses = raw.losses[:m]
    # The rules read a lag-free smoothing of the raw loss; a recorded (one-sided,
    # lagging) EMA is only for display, see _zero_lag.
    smoothed = smooth_losses(losses)
    if cut is not None:
        notes.append(f"only the first {m} of {n_all} points were used: {cut}")
    loss = _signal("loss", 1.0, losses, smoothed)
    accuracy: _Signal | None = None
    if raw.accuracies is not None:
        if raw.accuracies.shape[0] != n_all:
            raise ValueError(
                f"lrs and accuracies must have the same length, got {n_all} and "
                f"{raw.accuracies.shape[0]}"
            )
        acc = raw.accuracies[:m]
        if np.all(np.isfinite(acc)):
            accuracy = _signal("accuracy", -1.0, -acc, -_zero_lag(acc))
        else:
            notes.append(
                f"{int(np.sum(~np.isfinite(acc)))} of the {m} accuracies used are NaN or inf; "
                "the accuracies were ignored"
            )
    # noise over the descending part (start of descent .. minimum), else the whole curve
    lo = loss.i_base if loss.i_base is not None else 0
    hi = loss.i_best + 1 if loss.i_base is not None else m
    if hi - lo < 5:
        lo, hi = 0, m
    noise = float(np.median(loss.rough[lo:hi]))
    return _Prepared(
        lrs,
        np.log10(lrs),
        loss,
        accuracy,
        noise,
        (lo, hi),
        tuple(notes),
        raw.stop_reason,
        cut,
        raw.end_lr,
    )


# --------------------------------------------------------------------------- checks


def _require_descent(p: _Prepared, sig: _Signal) -> int:
    """Raise :class:`FlatCurve` unless ``sig`` improves; return the base index."""
    rel = sig.drop / max(abs(sig.start), 1e-12)
    if sig.i_base is None or sig.i_best < sig.k or rel < _FLAT_REL_DROP:
        raise FlatCurve(_flat_reason(p, sig, rel))
    return sig.i_base


def _more_steps(p: _Prepared) -> str:
    return (
        f"the model needs more steps per LR than this test gives: raise num_iter (the curve "
        f"has {p.n} points over {p.decades:.2g} decades of LR, {p.n / p.decades:.3g} per decade)"
    )


def _flat_reason(p: _Prepared, sig: _Signal, rel: float) -> str:
    """Why ``sig`` shows no improvement, with the numbers, and only advice that fits them.

    Four shapes: worse from the first points on, or improving only within them
    (the range starts too high: lower ``start_lr``); never moving by
    :data:`_FLAT_REL_DROP` of the start level (too few steps per LR, or, for a
    sweep that ended normally below an LR of 1, too low an ``end_lr``); and
    flat, then worse, up to a divergence (too few steps per LR: a higher
    ``end_lr`` cannot help a curve that diverged or stopped). For the loss a
    move counts only when it is also larger than the raw loss's noise: a dip
    or a rise of the smoothed loss within that noise says nothing about where
    the range starts.
    """
    scale = max(abs(sig.start), 1e-12)
    what = "no descent" if sig.name == "loss" else "no rise in accuracy"
    worse_word, better_word = ("above", "below") if sig.name == "loss" else ("below", "above")
    stop = p.stop_phrase()  # says why the curve ends early, the cut included
    head = f"{what} found between {p.lr_span}"
    level = sig.shown(sig.start)
    # the least relative move that is not noise
    flat = max(_FLAT_REL_DROP, _NOISE_MOVES * p.noise) if sig.name == "loss" else _FLAT_REL_DROP
    by_noise = flat > _FLAT_REL_DROP
    # "the range starts too high" is the one claim that sends the user the other
    # way, so it needs a move beyond three noise widths, not two: the start level
    # is the median of a few points at the curve's edge, where smoothing averages least
    high = max(_FLAT_REL_DROP, _NOISE_HIGH * p.noise) if sig.name == "loss" else _FLAT_REL_DROP
    # > 0 where the signal is worse than its start level, in units of that level
    excess = (sig.smooth - sig.start) / scale
    mid = p.n // 2
    blown = _blown_up_at_once(p, sig)
    if blown is not None:
        first, i_up = float(sig.raw[0]), blown
        return (
            f"{head}: the loss blows up at once, from {first:.4g} at lr {p.lrs[0]:.3g} to "
            f"{float(sig.raw[i_up]):.4g} at lr {p.lrs[i_up]:.3g} (step {i_up}), and is never "
            "below its first value after that"
            + (f"; {stop}" if stop else "")
            + ": the range starts too high: lower start_lr"
        )
    if sig.i_best < sig.k and (rel >= high or excess[mid] >= high):
        if excess[mid] >= high:
            how = (
                f"is already {excess[mid]:.1%} {worse_word} its start level {level:.4g} at "
                f"lr {p.lrs[mid]:.3g}, halfway through the sweep"
            )
        else:
            best = sig.shown(sig.best)
            how = f"is never better after them (best {best:.4g} at lr {p.lrs[sig.i_best]:.3g})"
        return (
            f"{head}: the smoothed {sig.name} is best in the first {sig.k} points and {how}"
            + (f"; {stop}" if stop else "")
            + ": the range starts too high: lower start_lr"
        )
    i_worst = int(np.argmax(excess))
    worse_after = (
        f", then gets worse, to {excess[i_worst]:.1%} {worse_word} its start level at "
        f"lr {p.lrs[i_worst]:.3g}"
        if i_worst > sig.i_best and excess[i_worst] >= flat
        else ""
    )
    if (sig.smooth[0] - sig.best) / scale >= high:
        # it did improve, but from its very first points: the start level (their
        # median) is already near the best
        facts = (
            f"the smoothed {sig.name} goes from {sig.shown(float(sig.smooth[0])):.4g} at "
            f"lr {p.lrs[0]:.3g} to its best {sig.shown(sig.best):.4g} at "
            f"lr {p.lrs[sig.i_best]:.3g}, only {rel:.1%} {better_word} its start level "
            f"{level:.4g} (the median of its first {sig.k} points){worse_after}"
        )
        return (
            f"{head}: {facts}"
            + (f"; {stop}" if stop else "")
            + ": it improves from the first points on, so the range starts too high: "
            "lower start_lr"
        )
    moved = np.nonzero(np.abs(excess) >= flat)[0]
    if moved.size == 0:
        band = (
            f"by more than twice the raw {sig.name}'s noise (2 x {p.noise:.1%} = {flat:.1%}) "
            "from its start level"
            if by_noise
            else f"by {_FLAT_REL_DROP:.0%} of its start level"
        )
        facts = (
            f"the smoothed {sig.name} never moves {band} {level:.4g} in {p.n} steps (at most "
            f"{rel:.1%} {better_word} and {max(0.0, float(excess.max())):.1%} {worse_word} it)"
        )
        advice = _more_steps(p)
        if stop is None and p.lrs[-1] < _HIGH_LR:
            advice += f", or raise end_lr above {p.lrs[-1]:.3g}"
        elif p.stop_reason == "cancelled":
            advice += "; run the test to the end"
        return f"{head}: {facts}" + (f"; {stop}" if stop else "") + f": {advice}"
    j = int(moved[0])  # where it first gets worse by that much (it does not get better)
    band = (
        f"twice the raw {sig.name}'s noise (2 x {p.noise:.1%} = {flat:.1%})"
        if by_noise
        else f"{_FLAT_REL_DROP:.0%}"
    )
    facts = (
        f"the smoothed {sig.name} stays within {band} of its start level "
        f"{level:.4g} for the first {j} of {p.n} steps (up to lr {p.lrs[j]:.3g}), then gets "
        f"worse, to {excess[i_worst]:.1%} {worse_word} it at lr {p.lrs[i_worst]:.3g}"
    )
    return f"{head}: {facts}" + (f"; {stop}" if stop else "") + f": {_more_steps(p)}"


_BLOWN_UP_FACTOR = 2.0  # a raw loss this many times its first value has blown up
_BLOWN_UP_EARLY = 0.25  # ... "at once": within this first fraction of the curve


def _blown_up_at_once(p: _Prepared, sig: _Signal) -> int | None:
    """The step at which the raw loss blew up, when it did so within the first quarter
    of the curve and never came back below its first value (the range starts where the
    model already diverges); None otherwise."""
    if sig.name != "loss" or p.n < 3:
        return None
    raw = sig.raw
    first = float(raw[0])
    if first <= 0 or float(np.min(raw[1:])) < first:
        return None
    up = np.nonzero(raw > _BLOWN_UP_FACTOR * first)[0]
    if not up.size or up[0] > max(1, int(_BLOWN_UP_EARLY * p.n)):
        return None
    return int(up[0])


@dataclass(frozen=True)
class _Ragged:
    index: int
    local_noise: float  # rolling median of the roughness at ``index``
    descent_noise: float  # median roughness over the descent
    threshold: float


def _ragged_index(p: _Prepared, sig: _Signal, i_base: int) -> _Ragged | None:
    """First point after ``i_base`` (before the best point) where the raw curve turns ragged.

    Ragged: the local noise (rolling median of :func:`_roughness`) exceeds three
    times the curve's noise over its descent, and at least 5 %.
    """
    if sig.i_best <= i_base + 1:
        return None
    base_noise = float(np.median(sig.rough[i_base : sig.i_best + 1]))
    local = _rolling(sig.rough, _window(p.n), np.median)
    threshold = max(_RAGGED_FACTOR * base_noise, _RAGGED_MIN)
    hits = np.nonzero(local[i_base + 1 : sig.i_best] > threshold)[0]
    if not hits.size:
        return None
    i = i_base + 1 + int(hits[0])
    return _Ragged(i, float(local[i]), base_noise, threshold)


def _is_monotone(p: _Prepared, sig: _Signal) -> bool:
    """True when the best point is in the last 5 % and the curve has not turned back up."""
    tail = max(3, p.n // 20)
    risen = sig.smooth[-1] - sig.best
    return sig.i_best >= p.n - tail and risen < _END_RISE_FRACTION * sig.drop


@dataclass(frozen=True)
class _AccuracyRise:
    """How far the recorded accuracy rose over the sweep, against its own step noise."""

    start: float  # level before the sweep's effect: median of the first 5 % (smoothed)
    best: float  # highest smoothed accuracy
    noise: float  # robust standard deviation of one step's accuracy about its trend

    @property
    def rise(self) -> float:
        return self.best - self.start

    @property
    def rose(self) -> bool:
        return self.rise > _ACC_RISE_NOISE * self.noise


def _accuracy_rise(p: _Prepared) -> _AccuracyRise | None:
    """The accuracy's rise and step noise, or ``None`` when no usable accuracy was recorded."""
    acc = p.accuracy
    if acc is None or p.n < 3:
        return None
    raw = -acc.raw  # stored as minus the accuracy (lower is better)
    second = np.abs(raw[1:-1] - 0.5 * (raw[:-2] + raw[2:]))
    return _AccuracyRise(-acc.start, -acc.best, float(np.median(second)) * _ROUGH_SCALE)


def _rel_drop(sig: _Signal) -> float:
    return sig.drop / max(abs(sig.start), 1e-12)


def _small_drop(p: _Prepared) -> bool:
    """True when the loss falls by less than :data:`_SMALL_DROP` and no accuracy rise backs it."""
    acc = _accuracy_rise(p)
    return _rel_drop(p.loss) < _SMALL_DROP and not (acc is not None and acc.rose)


def _end_advice(p: _Prepared, sig: _Signal) -> str:
    """What to do about a curve still improving at the end of a sweep that ran to ``end_lr``.

    ``raise end_lr``, unless the loss's whole drop is within its noise, or is
    small (:func:`_small_drop`) on a sweep that already reached an LR of 1:
    such a curve needs more steps per LR, not more LR.
    """
    if sig.name != "loss":
        return "raise end_lr"
    rel = _rel_drop(sig)
    if rel < _NOISE_MOVES * p.noise:
        return (
            f"its {rel:.1%} drop is within twice the raw loss's noise ({p.noise:.1%}), so the "
            f"curve may show nothing but noise: {_more_steps(p)}"
        )
    if _small_drop(p) and p.lrs[-1] >= _HIGH_LR:
        return (
            f"it fell only {rel:.1%} below its start level {sig.start:.4g} up to lr "
            f"{p.lrs[-1]:.3g}: {_more_steps(p)}"
        )
    return "raise end_lr"


def _monotone_error(p: _Prepared, sig: _Signal) -> MonotoneCurve:
    tail = max(3, p.n // 20)
    # how much of its total improvement the curve made over those last points: it
    # is "still falling" only when that is more than a trace
    made = (float(sig.smooth[p.n - 1 - tail]) - sig.best) / max(sig.drop, 1e-12)
    falling = made >= _END_RISE_FRACTION
    if sig.name == "loss":
        verb = "loss still falling" if falling else "loss flat at its lowest"
        change = "fell by" if falling else "changed by only"
        whole = "drop"
    else:
        verb = "accuracy still rising" if falling else "accuracy flat at its highest"
        change = "rose by" if falling else "changed by only"
        whole = "rise"
    stop = p.stop_phrase()  # says why the curve ends early, the cut included
    best = (
        f"best {sig.name} {sig.shown(sig.best):.4g} at lr {p.lrs[sig.i_best]:.3g}, in the "
        f"last {tail} points of the sweep between {p.lr_span}; over those points it "
        f"{change} {made:.1%} of its total {whole}, and it has not turned"
    )
    if stop is None:
        return MonotoneCurve(f"{verb} at end_lr={p.lrs[-1]:.3g} ({best}): {_end_advice(p, sig)}")
    # the sweep ended early: end_lr was not what limited it
    advice = (
        "run the test to the end"
        if p.stop_reason == "cancelled"
        else "a higher end_lr cannot help; read max_lr off the plot below "
        f"{p.lrs[-1]:.3g}, or use 'steepest' or 'valley', which do not need the minimum"
    )
    return MonotoneCurve(f"{verb} at lr {p.lrs[-1]:.3g}, the last point ({best}); {stop}: {advice}")


def _clip_bounds(p: _Prepared, base: float, mx: float) -> tuple[float, float, str]:
    """Force ``lrs[0] <= base < max <= lrs[-1]``; the note says what was changed.

    The rules state the values their recipe gives; when those had to move, the
    note gives the values returned.
    """
    lo, second, hi = float(p.lrs[0]), float(p.lrs[1]), float(p.lrs[-1])
    notes = []
    if mx > hi:
        notes.append(f"max_lr {mx:.3g} is above the sweep's last lr; lowered to {hi:.3g}")
        mx = hi
    if mx < second:
        notes.append(f"max_lr {mx:.3g} is below the sweep's second lr; raised to {second:.3g}")
        mx = second
    if base < lo:
        notes.append(f"base_lr {base:.3g} is below the sweep's first lr; raised to {lo:.3g}")
        base = lo
    if base >= mx:
        notes.append(f"base_lr {base:.3g} is not below max_lr {mx:.3g}; lowered to {lo:.3g}")
        base = lo
    note = (
        (" Note: " + "; ".join(notes) + f": base_lr={base:.3g}, max_lr={mx:.3g}.") if notes else ""
    )
    return base, mx, note


def _point(p: _Prepared, sig: _Signal, i: int) -> dict[str, Any]:
    return {
        "index": int(i),
        "lr": float(p.lrs[i]),
        sig.name: float(sig.shown(float(sig.smooth[i]))),
        f"raw_{sig.name}": float(sig.shown(float(sig.raw[i]))),
    }


# --------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class _PaperMax:
    sig: _Signal
    i_base: int
    i_max: int
    ragged: _Ragged | None
    note: str  # set when use_accuracy fell back to the loss

    @property
    def i_ragged(self) -> int | None:
        return None if self.ragged is None else self.ragged.index


def _paper_points(p: _Prepared, use_accuracy: bool) -> _PaperMax:
    note = ""
    sig = p.loss
    if use_accuracy:
        if p.accuracy is not None:
            sig = p.accuracy
        else:
            note = (
                " (use_accuracy was set but the curve has no usable accuracies: the loss was read)"
            )
    i_base = _require_descent(p, sig)
    ragged = _ragged_index(p, sig, i_base)
    if ragged is None and _is_monotone(p, sig):
        raise _monotone_error(p, sig)
    i_max = sig.i_best if ragged is None else ragged.index
    return _PaperMax(sig, i_base, i_max, ragged, note)


def _paper_max_sentence(p: _Prepared, pm: _PaperMax) -> str:
    sig = pm.sig
    best = f"best {sig.name} {sig.shown(sig.best):.4g} at {p.lrs[sig.i_best]:.3g}"
    if pm.ragged is None:
        return f"the smoothed {sig.name} stops improving at its {best}"
    r = pm.ragged
    return (
        f"the raw {sig.name} turns ragged at {p.lrs[r.index]:.3g} (local noise "
        f"{r.local_noise:.1%} > {r.threshold:.1%}, the larger of {_RAGGED_FACTOR:g} x the "
        f"descent's {r.descent_noise:.1%} and {_RAGGED_MIN:.0%}), before the {best}, "
        "so max_lr backs off to the ragged point"
    )


def _rule_paper(p: _Prepared, use_accuracy: bool) -> Suggestion:
    """Smith (2015, §3.3): read where the curve starts and stops improving.

    Rule: ``base_lr`` is the first LR after which the smoothed curve stays at
    least 10 % (:data:`BASE_FRACTION`) of its total improvement (start level ->
    best value) below the start level. ``max_lr`` is the LR of the best smoothed
    value, backed off to the first earlier point where the raw curve turns
    ragged (local noise > 3x the descent's noise and > 5 %), as Smith reads
    "where the accuracy ... becomes ragged". With ``use_accuracy=True`` and
    accuracies present the same reading is made on the accuracy (start to
    rise, stop rising / peak / turn ragged).

    Raises :class:`FlatCurve` without an improvement and :class:`MonotoneCurve`
    when the best point is in the last 5 % of the sweep, the curve has not
    turned back, and the raw curve never turned ragged: the upper bound was not
    reached.
    """
    pm = _paper_points(p, use_accuracy)
    sig = pm.sig
    base_raw, mx_raw = float(p.lrs[pm.i_base]), float(p.lrs[pm.i_max])
    base, mx, clip_note = _clip_bounds(p, base_raw, mx_raw)
    change = "drop" if sig.name == "loss" else "rise"
    rationale = (
        f"The smoothed {sig.name} starts to improve at {base_raw:.3g} ({BASE_FRACTION:.0%} of "
        f"its {sig.shown(sig.start):.4g} -> {sig.shown(sig.best):.4g} {change}) and "
        f"{_paper_max_sentence(p, pm)}: base_lr={base_raw:.3g}, "
        f"max_lr={mx_raw:.3g} (Smith 2015, §3.3){pm.note}.{clip_note}"
    )
    evidence = {
        "signal": sig.name,
        "start_level": sig.shown(sig.start),
        "best_level": sig.shown(sig.best),
        "base_fraction": BASE_FRACTION,
        "base": _point(p, sig, pm.i_base),
        "best": _point(p, sig, sig.i_best),
        "max": _point(p, sig, pm.i_max),
        "ragged_index": pm.i_ragged,
        "ragged_lr": None if pm.i_ragged is None else float(p.lrs[pm.i_ragged]),
        "ragged_noise": None if pm.ragged is None else pm.ragged.local_noise,
        "ragged_threshold": None if pm.ragged is None else pm.ragged.threshold,
    }
    return Suggestion("paper", base, mx, rationale, evidence)


def _rule_max_fraction(p: _Prepared, use_accuracy: bool) -> Suggestion:
    """Smith (2015, §3.3) after Bengio (2012): ``base_lr`` as a fraction of ``max_lr``.

    Rule: ``max_lr`` is the ``paper`` rule's ``max_lr`` (same errors), and
    ``base_lr = max_lr / 4``. Bengio (2012) notes the optimal learning rate is
    usually within a factor of two of the largest one that does not diverge;
    Smith suggests setting ``base_lr`` to 1/3 or 1/4 of ``max_lr``. The ``/3``
    variant is given in the rationale.
    """
    pm = _paper_points(p, use_accuracy)
    mx_raw = float(p.lrs[pm.i_max])
    base, mx, clip_note = _clip_bounds(p, mx_raw / _BASE_DIVISOR, mx_raw)
    rationale = (
        f"max_lr={mx_raw:.3g} is the paper's upper bound ({_paper_max_sentence(p, pm)}); "
        f"base_lr=max_lr/4={mx_raw / _BASE_DIVISOR:.3g}, since the best LR lies within a "
        f"factor of two of the largest that converges (Smith 2015 §3.3, Bengio 2012; "
        f"max_lr/3={mx_raw / 3:.3g} is the other choice){pm.note}.{clip_note}"
    )
    evidence = {
        "signal": pm.sig.name,
        "max": _point(p, pm.sig, pm.i_max),
        "best": _point(p, pm.sig, pm.sig.i_best),
        "ragged_index": pm.i_ragged,
        "divisor": _BASE_DIVISOR,
        "base_lr_div_3": mx / 3.0,
    }
    return Suggestion("max_fraction", base, mx, rationale, evidence)


def _rule_steepest(p: _Prepared, use_accuracy: bool) -> Suggestion:  # noqa: ARG001
    """Steepest descent of the loss against ``log10(lr)`` (fastai's ``steep``).

    Rule: lightly smooth the smoothed loss again (centred moving average over
    ~2 % of the points, 5 to 31), take ``np.gradient`` with respect to
    ``log10(lr)``, and put ``max_lr`` at the most negative slope among the points
    after the first 5 % and before the minimum; ``base_lr = max_lr / 4``. Works on
    a loss that is still falling at the end of the sweep (the minimum is then the
    last point); raises :class:`FlatCurve` when nothing descends.
    """
    sig = p.loss
    _require_descent(p, sig)
    light = _rolling(sig.smooth, _window(p.n), np.mean)
    slope = np.gradient(light, p.log_lrs)
    lo = max(1, sig.k)
    hi = max(lo + 1, sig.i_best)
    i = lo + int(np.argmin(slope[lo:hi]))
    if slope[i] >= 0:
        raise FlatCurve(
            f"no descent found between {p.lr_range} for 'steepest': the lightly smoothed loss "
            f"never falls between lr {p.lrs[lo]:.3g} (after the first {lo} points) and "
            f"lr {p.lrs[hi - 1]:.3g} (its least slope there is {float(slope[i]):.3g} per "
            "decade); the other rules read the smoothed loss's drop to its minimum"
        )
    mx_raw = float(p.lrs[i])
    base, mx, clip_note = _clip_bounds(p, mx_raw / _BASE_DIVISOR, mx_raw)
    rationale = (
        f"The loss falls fastest at lr={mx_raw:.3g} (slope {float(slope[i]):.3g} per decade "
        f"of LR, searched from lr {p.lrs[lo]:.3g} up to the minimum at {p.lrs[sig.i_best]:.3g}), "
        f"so "
        f"max_lr={mx_raw:.3g} and base_lr=max_lr/4={mx_raw / _BASE_DIVISOR:.3g}.{clip_note}"
    )
    evidence = {
        "signal": "loss",
        "steepest": _point(p, sig, i),
        "slope_per_decade": float(slope[i]),
        "search_range": [int(lo), int(hi)],
        "window": _window(p.n),
    }
    return Suggestion("steepest", base, mx, rationale, evidence)


def _longest_descent(values: FloatArray) -> tuple[int, int]:
    """fastai's valley span: ``(start, end)`` of the longest strictly decreasing run.

    ``lds[i]`` is the length of the longest strictly decreasing subsequence that
    ends at ``i`` (fastai's O(n^2) DP, here in O(n log n) by patience sorting on
    the negated values). ``end`` is the first index with the largest ``lds``;
    fastai takes ``start = end - lds[end]``, one before the run; we use
    ``end - lds[end] + 1`` (the pick moves by at most one index).
    """
    tails: list[float] = []
    lds = np.empty(values.shape[0], dtype=np.int64)
    for i, v in enumerate((-values).tolist()):
        pos = bisect.bisect_left(tails, v)
        if pos == len(tails):
            tails.append(v)
        else:
            tails[pos] = v
        lds[i] = pos + 1
    end = int(np.argmax(lds))
    return max(0, end - int(lds[end]) + 1), end


def _rule_valley(p: _Prepared, use_accuracy: bool) -> Suggestion:  # noqa: ARG001
    """fastai's ``valley`` (fastai >= 2.5, ``Learner.lr_find``).

    Rule: drop the first 10 % of points as fastai does (unless the minimum is
    there), find the longest strictly decreasing run of the smoothed loss
    (:func:`_longest_descent`), split it into thirds and take
    ``idx = start + int(len/3) + int(len/6)``, halfway along it (in steps):
    ``max_lr = lr[idx]``. fastai returns that single LR; for a cycle,
    ``base_lr = max_lr / 4``, or the LR where the valley starts when that is
    larger (the loss does not improve below the valley, so there is no point
    cycling there). Raises :class:`FlatCurve` when nothing descends; works on a
    loss still falling at the end.
    """
    sig = p.loss
    _require_descent(p, sig)
    skip = p.n // 10 if sig.i_best > p.n // 10 + 2 else 0
    start, end = _longest_descent(sig.smooth[skip:])
    start, end = start + skip, end + skip
    sections = (end - start) / 3
    idx = start + int(sections) + int(sections / 2)
    mx_raw = float(p.lrs[idx])
    valley_start = float(p.lrs[start])
    from_start = start < idx and valley_start > mx_raw / _BASE_DIVISOR
    base_raw = valley_start if from_start else mx_raw / _BASE_DIVISOR
    base, mx, clip_note = _clip_bounds(p, base_raw, mx_raw)
    if from_start:
        how = f"the valley's start {valley_start:.3g}"
    elif start < idx:
        how = (
            f"max_lr/4={mx_raw / _BASE_DIVISOR:.3g} (the valley starts lower, at "
            f"{valley_start:.3g})"
        )
    else:
        how = f"max_lr/4={mx_raw / _BASE_DIVISOR:.3g} (the valley is too short to start lower)"
    rationale = (
        f"The longest descent of the smoothed loss runs from {p.lrs[start]:.3g} to "
        f"{p.lrs[end]:.3g}; halfway along it (in steps), max_lr={mx_raw:.3g} (fastai's valley), "
        f"and base_lr is {how}.{clip_note}"
    )
    evidence = {
        "signal": "loss",
        "skipped": int(skip),
        "valley_start": _point(p, sig, start),
        "valley_end": _point(p, sig, end),
        "pick": _point(p, sig, idx),
        "base_from_valley_start": bool(from_start),
    }
    return Suggestion("valley", base, mx, rationale, evidence)


def _rule_min_div_10(p: _Prepared, use_accuracy: bool) -> Suggestion:  # noqa: ARG001
    """fastai's ``minimum``: one tenth of the LR at the minimum smoothed loss.

    Rule: ``max_lr = lr[argmin(smoothed loss)] / 10``, ``base_lr = max_lr / 4``.
    At the minimum the loss is already about to blow up, so fastai backs off a
    decade. Raises :class:`MonotoneCurve` when the minimum is in the last 5 % of
    the sweep and the loss has not turned back up (the true minimum may lie
    beyond ``end_lr``), and :class:`FlatCurve` without descent.
    """
    sig = p.loss
    _require_descent(p, sig)
    if _is_monotone(p, sig):
        raise _monotone_error(p, sig)
    lr_min = float(p.lrs[sig.i_best])
    base, mx, clip_note = _clip_bounds(p, lr_min / 10 / _BASE_DIVISOR, lr_min / 10)
    rationale = (
        f"The smoothed loss is lowest ({sig.best:.4g}) at lr={lr_min:.3g}; a decade below it, "
        f"max_lr={lr_min / 10:.3g} (fastai's minimum/10), and "
        f"base_lr=max_lr/4={lr_min / 10 / _BASE_DIVISOR:.3g}.{clip_note}"
    )
    evidence = {"signal": "loss", "minimum": _point(p, sig, sig.i_best), "divisor": 10.0}
    return Suggestion("min_div_10", base, mx, rationale, evidence)


_Rule = Callable[[_Prepared, bool], Suggestion]
_RULES: dict[str, _Rule] = {
    "paper": _rule_paper,
    "steepest": _rule_steepest,
    "valley": _rule_valley,
    "min_div_10": _rule_min_div_10,
    "max_fraction": _rule_max_fraction,
}

# Where each rule's max_lr sits relative to the LR at which the loss bottoms out,
# by construction: min_div_10 is exactly a decade below it, and fastai offers
# steep and valley as alternatives to minimum/10, i.e. also about a decade below.
# Confidence compares the implied "bottom" LRs max_lr * factor.
_BOTTOM_FACTOR: dict[str, float] = {
    "paper": 1.0,
    "max_fraction": 1.0,
    "min_div_10": 10.0,
    "steepest": 10.0,
    "valley": 10.0,
}


# --------------------------------------------------------------------------- public


def _cycle_plan(
    iters_per_epoch: int | None, epochs_per_half_cycle: float, cycles: int
) -> tuple[int, int, int] | None:
    """``(step_size, stop_iteration, cycles)`` for a triangular CLR schedule, or ``None``.

    Smith (2015, §3.3): a half cycle (``step_size``) of 2-10 epochs works well,
    and training is best stopped at the end of a cycle, when the LR is back at
    its minimum: after ``total_iterations(cycles, step_size)`` iterations. The
    arguments are checked even without ``iters_per_epoch``.
    """
    # clr.schedules imports torch (its LRScheduler adapters): not at the top, so
    # reading stored suggestions (the service's API) does not load it.
    from clr.policies import _positive_int, recommend_step_size, total_iterations

    ipe = 1 if iters_per_epoch is None else iters_per_epoch
    step_size = recommend_step_size(ipe, epochs_per_half_cycle)
    stop = total_iterations(_positive_int("cycles", cycles), step_size)
    if iters_per_epoch is None:
        return None
    return step_size, stop, int(cycles)


def _with_plan(
    s: Suggestion, plan: tuple[int, int, int] | None, *, in_rationale: bool = True
) -> Suggestion:
    # suggest_all states the plan once, on Suggestions; a lone suggestion says it itself.
    if plan is None:
        return s
    step_size, stop, n_cycles = plan
    sentence = (
        f" Half cycle: step_size={step_size} iterations; stop after {n_cycles} cycles at "
        f"iteration {stop}, when the LR is back at base_lr."
    )
    return replace(
        s,
        rationale=s.rationale + sentence if in_rationale else s.rationale,
        step_size=step_size,
        stop_iteration=stop,
        cycles=n_cycles,
    )


def _check_method(method: str) -> None:
    if method not in _RULES:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def suggest(
    result_or_arrays: CurveLike,
    *,
    method: str | None = None,
    iters_per_epoch: int | None = None,
    epochs_per_half_cycle: float = 4,
    cycles: int = 4,
    use_accuracy: bool = False,
) -> Suggestion:
    """``base_lr`` and ``max_lr`` for a cyclical schedule by one rule.

    Args:
        result_or_arrays: a :class:`~clr._result.RangeTestResult`, its
            ``to_dict()``, or a :class:`Curve` of plain arrays.
        method: one of :data:`METHODS`; :data:`DEFAULT_METHOD` when ``None``.
        iters_per_epoch: training iterations per epoch; when given the
            suggestion also carries ``step_size`` and ``stop_iteration``.
        epochs_per_half_cycle: epochs per half cycle (Smith 2015: 2 to 10).
        cycles: full cycles to train before stopping.
        use_accuracy: read the accuracy curve instead of the loss for the
            ``paper`` and ``max_fraction`` rules, as Smith does (falls back to the
            loss, saying so in the rationale, when the curve has no accuracies).

    Returns:
        The rule's :class:`Suggestion`, with ``0 < base_lr < max_lr`` inside the
        swept range.

    Raises:
        ValueError: unknown ``method``, non-positive cycle arguments, or arrays
            of different lengths.
        NonFiniteCurve: no finite loss at all.
        CurveTooShort: fewer than :data:`MIN_POINTS` finite points.
        FlatCurve: the loss (or accuracy) never improves over the range.
        MonotoneCurve: the rule needs the minimum and the loss is still falling
            at the end of the sweep.
        SuggestionError: the LRs do not increase along the curve.
    """
    name = DEFAULT_METHOD if method is None else method
    _check_method(name)
    plan = _cycle_plan(iters_per_epoch, epochs_per_half_cycle, cycles)
    prepared = _prepare(result_or_arrays)
    return _with_plan(_RULES[name](prepared, use_accuracy), plan)


def _confidence(items: list[Suggestion]) -> tuple[float, float]:
    """``(confidence, spread)``: agreement of the rules on where the loss bottoms out.

    Each rule's ``max_lr`` is mapped to the bottom LR it implies
    (:data:`_BOTTOM_FACTOR`); ``spread`` is the range of their ``log10`` in
    decades. Half a decade of spread is expected (steepest and valley sit one to
    one and a half decades below the minimum, not exactly one) and costs
    nothing; beyond it confidence falls linearly, ``1 - (spread - 0.5)``, to 0 at
    1.5 decades, and is multiplied by the fraction of rules that succeeded.
    """
    implied = [math.log10(s.max_lr * _BOTTOM_FACTOR[s.method]) for s in items]
    spread = max(implied) - min(implied)
    agreement = min(1.0, max(0.0, 1.0 - max(0.0, spread - _SPREAD_FREE)))
    return agreement * len(items) / len(METHODS), spread


def _disagreement(items: list[Suggestion], spread: float, failed: int) -> str:
    """The "methods disagree" warning, stating the two values the spread is measured on."""
    implied = {s.method: s.max_lr * _BOTTOM_FACTOR[s.method] for s in items}
    lo = min(items, key=lambda s: implied[s.method])
    hi = max(items, key=lambda s: implied[s.method])

    def reading(s: Suggestion) -> str:
        factor = _BOTTOM_FACTOR[s.method]
        how = "its max_lr" if factor == 1 else f"{factor:g} x its max_lr {s.max_lr:.3g}"
        return f"{implied[s.method]:.3g} ({s.method}: {how})"

    return (
        f"methods disagree by {spread:.1f} decades on the lr where the loss bottoms out: "
        f"from {reading(lo)} to {reading(hi)}"
        + (f"; {failed} of {len(METHODS)} methods failed" if failed else "")
        + ": check the plot before trusting the default"
    )


def seed_agreement(max_lrs: npt.ArrayLike, confidence: float) -> tuple[float, str | None]:
    """Confidence after K runs under different seeds agree (or not) on ``max_lr``.

    The spread is ``r = max / min`` of the seeds' ``max_lr``. Within
    :data:`SEED_SPREAD_FREE` (2x) the seeds agree: the doubt left, ``1 -
    confidence``, shrinks by ``0.5 * (1 - log(r) / log(2)) * (1 - 1 / K)`` (up to
    half of it for many seeds in exact agreement, nothing at 2x or for one seed).
    Beyond 2x, confidence is multiplied by ``1 - log(r / 2) / log(10 / 2)``,
    falling to 0 at :data:`SEED_SPREAD_ZERO` (10x), and a warning names the
    spread: a reading that moves that much with the seed is the seed's, not the
    configuration's.

    Args:
        max_lrs: the default method's ``max_lr`` of each seed's run, all positive
            and finite.
        confidence: the single-run confidence to adjust, in ``[0, 1]``.

    Returns:
        ``(confidence, warning)``; the warning is ``None`` when the seeds agree.

    Raises:
        ValueError: ``max_lrs`` is empty, or holds a value that is not positive
            and finite.

    Example:
        >>> c, w = seed_agreement([0.1, 0.31, 0.2, 0.15], 0.8)
        >>> round(c, 2), w.split(" (")[0]
        (0.58, 'max_lr varies 3.1x across 4 seeds')
        >>> c, w = seed_agreement([0.1, 0.1, 0.1, 0.1], 0.8)
        >>> round(c, 3), w
        (0.875, None)
    """
    lrs = np.asarray(max_lrs, dtype=np.float64).reshape(-1)
    if lrs.size == 0:
        raise ValueError("max_lrs must hold at least one value, got none")
    if not (np.isfinite(lrs).all() and (lrs > 0).all()):
        raise ValueError(f"max_lrs must be positive and finite, got {lrs.tolist()}")
    k = int(lrs.size)
    lo, hi = float(lrs.min()), float(lrs.max())
    ratio = hi / lo
    if ratio <= SEED_SPREAD_FREE:
        tight = 1.0 - math.log(ratio) / math.log(SEED_SPREAD_FREE)
        gain = _SEED_GAIN * tight * (1.0 - 1.0 / k)
        return confidence + (1.0 - confidence) * gain, None
    scale = math.log(SEED_SPREAD_ZERO / SEED_SPREAD_FREE)
    factor = max(0.0, 1.0 - math.log(ratio / SEED_SPREAD_FREE) / scale)
    adjusted = confidence * factor
    return adjusted, (
        f"max_lr varies {ratio:.1f}x across {k} seeds (from {lo:.3g} to {hi:.3g}), more than "
        f"{SEED_SPREAD_FREE:g}x: the bounds depend on the seed: use the band across seeds "
        "(clr.SeedBand), a larger batch or more steps per LR"
    )


def _cancelled_warning(p: _Prepared) -> str:
    stop = p.stop_phrase() or f"the test was cancelled at lr {p.lrs[-1]:.3g}"
    if p.loss.i_base is None:
        return f"{stop}: the curve may stop short of where the loss improves"
    if _is_monotone(p, p.loss):
        return (
            f"{stop}, while the smoothed loss was still falling: its minimum may lie beyond "
            f"{p.lrs[-1]:.3g}; run the test to the end"
        )
    return (
        f"{stop}; the smoothed loss had already stopped falling after its lowest point "
        f"(lr {p.lrs[p.loss.i_best]:.3g}), so that minimum is inside the curve"
    )


def _small_drop_warning(p: _Prepared, confidence: float) -> str:
    """The warning for a loss that falls by less than :data:`_SMALL_DROP`, with its numbers."""
    sig = p.loss
    acc = _accuracy_rise(p)
    if acc is None:
        backing = "and no accuracy was recorded to back it"
    else:
        backing = (
            f"and the accuracy does not rise beyond its noise (from {acc.start:.3g} to at most "
            f"{acc.best:.3g}, {acc.rise:+.3g}, within {_ACC_RISE_NOISE:g} x its step noise "
            f"{acc.noise:.3g})"
        )
    return (
        f"the smoothed loss falls only {_rel_drop(sig):.1%} below its start level "
        f"{sig.start:.4g} (to {sig.best:.4g} at lr {p.lrs[sig.i_best]:.3g}), less than "
        f"{_SMALL_DROP:.0%} of it, {backing}: the model barely learns in this test, so the "
        f"bounds are a guess (confidence {confidence:.2f}): {_more_steps(p)}, or verify the "
        "bounds by training (clr.verify)"
    )


def suggest_all(
    result: CurveLike,
    *,
    iters_per_epoch: int | None = None,
    epochs_per_half_cycle: float = 4,
    cycles: int = 4,
    use_accuracy: bool = False,
    seed_max_lrs: Sequence[float] | None = None,
) -> Suggestions:
    """Run every rule in :data:`METHODS` and say how far to trust the answer.

    Args:
        result: a :class:`~clr._result.RangeTestResult`, its ``to_dict()``, or a
            :class:`Curve`.
        iters_per_epoch: training iterations per epoch; gives ``step_size =
            epochs_per_half_cycle * iters_per_epoch`` and ``stop_iteration =
            cycles * 2 * step_size`` (Smith 2015: 2-10 epochs per half cycle,
            stop at the end of a cycle).
        epochs_per_half_cycle: epochs per half cycle.
        cycles: full cycles to train.
        use_accuracy: see :func:`suggest`.
        seed_max_lrs: the default method's ``max_lr`` from each of K runs of
            this configuration under different seeds (this curve's run among
            them; :class:`clr.SeedBand` gathers them). The rules' agreement on
            this curve is then adjusted by the seeds' (:func:`seed_agreement`):
            seeds within 2x raise it, a wider spread lowers it and adds a
            warning naming the spread. The caps for a curve that shows too
            little still apply after. ``None`` (the default): a single run.

    Returns:
        :class:`Suggestions`; rules that raised a
        :class:`~clr.exceptions.SuggestionError` are listed in ``failed``.

    Raises:
        ValueError: non-positive cycle arguments or arrays of different lengths.
        SuggestionError: every rule failed (the default rule's error is raised),
            or the curve is unusable for all of them (non-finite, too short).
    """
    plan = _cycle_plan(iters_per_epoch, epochs_per_half_cycle, cycles)
    p = _prepare(result)
    done: dict[str, Suggestion] = {}
    errors: dict[str, SuggestionError] = {}
    for name in METHODS:
        try:
            done[name] = _with_plan(_RULES[name](p, use_accuracy), plan, in_rationale=False)
        except SuggestionError as exc:
            errors[name] = exc
    if not done:
        raise errors.get(DEFAULT_METHOD, next(iter(errors.values())))
    warnings = list(p.notes)
    default_name = DEFAULT_METHOD if DEFAULT_METHOD in done else next(iter(done))
    if default_name != DEFAULT_METHOD:
        warnings.append(
            f"the default method {DEFAULT_METHOD!r} failed ({errors[DEFAULT_METHOD]}); "
            f"using {default_name!r} instead"
        )
    items = [done[default_name]] + [s for m, s in done.items() if m != default_name]
    confidence, spread = _confidence(items)
    if confidence < _DISAGREE_WARN:
        if spread > _SPREAD_FREE:
            warnings.append(_disagreement(items, spread, len(errors)))
        elif errors:  # low only because rules failed: they do not disagree
            warnings.append(
                f"only {len(items)} of {len(METHODS)} methods gave bounds "
                f"({', '.join(errors)} failed: see failed), so confidence is "
                f"{confidence:.2f}: check the plot before trusting the default"
            )
    seeds: int | None = None
    seed_spread: float | None = None
    if seed_max_lrs is not None:
        seed_lrs = [float(v) for v in seed_max_lrs]
        confidence, seed_warning = seed_agreement(seed_lrs, confidence)
        seeds, seed_spread = len(seed_lrs), max(seed_lrs) / min(seed_lrs)
        if seed_warning is not None:
            warnings.append(seed_warning)
    noise_where = f"between lr {p.lrs[p.noise_span[0]]:.3g} and {p.lrs[p.noise_span[1] - 1]:.3g}"
    if p.noise > NOISE_WARN_THRESHOLD:
        warnings.append(
            f"curve is too noisy to trust (noise {p.noise:.2f} > {NOISE_WARN_THRESHOLD:.1f}): "
            f"the raw loss scatters by {p.noise:.0%} about its trend {noise_where}; "
            "use a larger batch"
        )
    rel_drop = _rel_drop(p.loss)
    informative = True
    noise_drop = _NOISE_MOVES * p.noise
    if rel_drop < noise_drop and done[default_name].evidence.get("signal", "loss") == "loss":
        confidence = min(confidence, _NOISY_DROP_CONFIDENCE) * rel_drop / noise_drop
        informative = False
        warnings.append(
            f"the smoothed loss falls only {rel_drop:.1%} below its start level "
            f"{p.loss.start:.4g}, less than twice the raw loss's noise ({p.noise:.1%} "
            f"{noise_where}): "
            f"the bounds may be reading noise (confidence {confidence:.2f}): use a larger "
            f"batch, or {_more_steps(p)}"
        )
    elif _small_drop(p):
        confidence = min(confidence, _NOISY_DROP_CONFIDENCE * rel_drop / _SMALL_DROP)
        informative = False
        warnings.append(_small_drop_warning(p, confidence))
    if use_accuracy and p.accuracy is None:
        warnings.append(
            "use_accuracy=True but the curve has no usable accuracies: the paper and "
            "max_fraction rules read the loss instead"
        )
    if p.stop_reason == "cancelled":
        warnings.append(_cancelled_warning(p))
    if p.n < 50:
        warnings.append(
            f"only {p.n} points ({p.decades / (p.n - 1):.2g} decades of LR apart): the bounds "
            "are coarse; run 100 or more iterations"
        )
    if plan is not None and not 2 <= epochs_per_half_cycle <= 10:
        warnings.append(
            f"epochs_per_half_cycle={epochs_per_half_cycle} is outside the paper's 2-10 epochs"
        )
    step_size, stop, n_cycles = plan if plan is not None else (None, None, None)
    return Suggestions(
        items=items,
        default=done[default_name],
        confidence=float(confidence),
        noise=float(p.noise),
        warnings=warnings,
        step_size=step_size,
        stop_iteration=stop,
        cycles=n_cycles,
        failed={m: str(e) for m, e in errors.items()},
        informative=informative,
        seeds=seeds,
        seed_spread=seed_spread,
    )


# --------------------------------------------------------------------------- verdict


@dataclass(frozen=True)
class CurveVerdict:
    """Whether a range-test curve shows enough to read bounds from, and what LRs it covers.

    What a caller decides on before trusting suggested bounds (see
    :mod:`clr.verify`, which adds a coarse LR ladder when ``informative`` is
    ``False``). Given even when :func:`suggest_all` raises.

    Attributes:
        informative: ``True`` when the rules gave bounds and the loss falls
            beyond twice its noise and by 10 % of its start level or more (or
            less, with the accuracy rising beyond its noise): the
            :attr:`Suggestions.informative` of :func:`suggest_all`, and
            ``False`` when it raised.
        reason: one sentence with the numbers: how far the loss fell, or the
            warning or error that says why the curve tells nothing.
        lr_range: ``(lo, hi)``: the first and last LR of the curve's usable
            part (up to its first non-finite loss or unusable point), or
            ``None`` when no point is usable.
        diverged_at: the LR at which the loss diverged: the first of the
            points at its end that lie above twice the start level (the level
            at which :func:`smooth_losses` clips blow-ups), else the point
            where the test stopped on a divergence or a non-finite loss;
            ``None`` when it did neither.
    """

    informative: bool
    reason: str
    lr_range: tuple[float, float] | None
    diverged_at: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (``lr_range`` as a two-item list or ``None``)."""
        return {
            "informative": bool(self.informative),
            "reason": self.reason,
            "lr_range": None if self.lr_range is None else [float(v) for v in self.lr_range],
            "diverged_at": None if self.diverged_at is None else float(self.diverged_at),
        }


def _usable_prefix(raw: _Raw) -> int:
    """How many points from the start have a positive finite LR and a finite loss."""
    ok = np.isfinite(raw.lrs) & (raw.lrs > 0) & np.isfinite(raw.losses)
    if raw.smoothed is not None:
        ok &= np.isfinite(raw.smoothed)
    bad = np.nonzero(~ok)[0]
    return int(bad[0]) if bad.size else int(ok.shape[0])


def _diverged_at(raw: _Raw, m: int) -> float | None:
    """See :attr:`CurveVerdict.diverged_at`; ``m`` is the usable prefix's length."""
    n = raw.lrs.shape[0]
    cut_by_loss = m < n and not math.isfinite(float(raw.losses[m]))
    stopped = raw.stop_reason in ("diverged", "non_finite") or cut_by_loss
    if m == 0:
        first = float(raw.lrs[0]) if n else math.nan
        return first if stopped and math.isfinite(first) and first > 0 else None
    losses = raw.losses[:m]
    level = float(np.median(losses[: max(1, m // 20)]))
    cap = level + max(abs(level), level - float(np.min(losses)))
    above = losses > cap
    if above[-1]:
        below = np.nonzero(~above)[0]
        return float(raw.lrs[int(below[-1]) + 1 if below.size else 0])
    if not stopped:
        return None
    at = float(raw.lrs[m]) if cut_by_loss else math.nan
    return at if math.isfinite(at) and at > 0 else float(raw.lrs[m - 1])


def _informative_reason(p: _Prepared) -> str:
    sig = p.loss
    rel = _rel_drop(sig)
    acc = _accuracy_rise(p)
    fell = (
        f"the smoothed loss falls {rel:.1%} below its start level {sig.start:.4g} (to "
        f"{sig.best:.4g} at lr {p.lrs[sig.i_best]:.3g}), beyond twice the raw loss's noise "
        f"({p.noise:.1%})"
    )
    if rel >= _SMALL_DROP or acc is None:
        return f"{fell} and by {_SMALL_DROP:.0%} of its start level or more"
    return (
        f"{fell}, and the accuracy rises beyond its noise (from {acc.start:.3g} to "
        f"{acc.best:.3g}, more than {_ACC_RISE_NOISE:g} x its step noise {acc.noise:.3g})"
    )


_UNINFORMATIVE_WARNINGS = ("the smoothed loss falls only ",)


def curve_verdict(curve: CurveLike, *, use_accuracy: bool = False) -> CurveVerdict:
    """Tell an informative range-test curve from one that shows nothing to read bounds from.

    A curve is uninformative when no rule can read it (:func:`suggest_all`
    raises: the loss never moves, the curve is too short or not finite), or
    when its suggestions are a guess (:attr:`Suggestions.informative`: the
    loss falls by less than twice its noise, or by less than 10 % of its
    start level with no accuracy rise beyond its noise to back it). Such a
    curve says the model needs more steps per LR than the test gave; it says
    nothing about where good bounds lie, which a short training at a few LRs
    can (:func:`clr.verify.candidates_for` then adds a coarse ladder).

    Args:
        curve: a :class:`~clr._result.RangeTestResult`, its ``to_dict()``, or a
            :class:`Curve`.
        use_accuracy: passed to :func:`suggest_all`.

    Returns:
        The :class:`CurveVerdict`.

    Raises:
        TypeError: ``curve`` is none of the accepted types.
        ValueError: arrays that are not one-dimensional or differ in length.

    Example:
        >>> import numpy as np
        >>> flat = Curve(np.logspace(-7, 1, 100), np.full(100, 0.693))
        >>> v = curve_verdict(flat)
        >>> v.informative, v.diverged_at, "more steps per LR" in v.reason
        (False, None, True)
    """
    raw = _extract(curve)
    for label, arr in (
        ("losses", raw.losses),
        ("smoothed_losses", raw.smoothed),
        ("accuracies", raw.accuracies),
    ):
        if arr is not None and arr.shape[0] != raw.lrs.shape[0]:
            raise ValueError(
                f"lrs and {label} must have the same length, got {raw.lrs.shape[0]} and "
                f"{arr.shape[0]}"
            )
    m = _usable_prefix(raw)
    lr_range = (float(raw.lrs[0]), float(raw.lrs[m - 1])) if m else None
    diverged_at = _diverged_at(raw, m)
    try:
        p = _prepare(curve)
        s = suggest_all(curve, use_accuracy=use_accuracy)
    except SuggestionError as exc:
        return CurveVerdict(False, str(exc), lr_range, diverged_at)
    if s.informative:
        return CurveVerdict(True, _informative_reason(p), lr_range, diverged_at)
    why = next(w for w in s.warnings if w.startswith(_UNINFORMATIVE_WARNINGS))
    return CurveVerdict(False, why, lr_range, diverged_at)
