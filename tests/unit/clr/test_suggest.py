"""Tests of clr.suggest on synthetic range-test curves of known shape."""

from __future__ import annotations

import importlib
import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clr._result import RangeTestResult
from clr.exceptions import (
    CurveTooShort,
    FlatCurve,
    MonotoneCurve,
    NonFiniteCurve,
    SuggestionError,
)
from clr.suggest import (
    DEFAULT_METHOD,
    METHODS,
    Curve,
    Suggestion,
    Suggestions,
    suggest,
    suggest_all,
)

# ``clr/__init__`` re-exports the function ``suggest``, which shadows the submodule
# attribute ``clr.suggest``, so fetch the module itself.
suggest_mod = importlib.import_module("clr.suggest")

TRUE_STEEPEST = 1e-2  # centre of the sigmoid drop
TRUE_MIN = 0.3  # where the quadratic rise starts


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-z)))


def synth(
    *,
    n: int = 1000,
    lo: float = -6.0,
    hi: float = 0.5,
    center: float = math.log10(TRUE_STEEPEST),
    width: float = 0.25,
    lr_min: float = TRUE_MIN,
    rise: float = 8.0,
    noise: float = 0.02,
    seed: int = 0,
    give_smoothed: bool = False,
    accuracies: np.ndarray | None = None,
) -> tuple[Curve, np.ndarray, np.ndarray]:
    """A loss flat at 2.3 far below ``center``, steepest at ``10**center``, lowest at
    ``lr_min`` and rising quadratically (in log10 lr) after it, times seeded noise.

    Returns the curve, the noise-free loss and log10(lrs).
    """
    x = np.linspace(lo, hi, n)
    clean = (
        2.3
        - 1.8 * _sigmoid((x - center) / width)
        + rise * np.maximum(0.0, x - math.log10(lr_min)) ** 2
    )
    rng = np.random.default_rng(seed)
    raw = clean * (1.0 + noise * rng.standard_normal(n))
    curve = Curve(10.0**x, raw, clean if give_smoothed else None, accuracies)
    return curve, clean, x


def within(value: float, target: float, factor: float) -> bool:
    return target / factor <= value <= target * factor


def as_result(curve: Curve) -> RangeTestResult:
    lrs = np.asarray(curve.lrs, dtype=np.float64)
    losses = np.asarray(curve.losses, dtype=np.float64)
    return RangeTestResult(
        lrs=lrs,
        losses=losses,
        smoothed_losses=suggest_mod._ema(losses),
        start_lr=float(lrs[0]),
        end_lr=float(lrs[-1]),
        num_iter=int(lrs.shape[0]),
        sweep="exp",
        smoothing=0.98,
        diverge_th=4.0,
        stop_reason="completed",
        stop_detail="",
        device="cpu",
        seconds=1.0,
    )


class TestEma:
    def test_bias_corrected_values(self):
        out = suggest_mod._ema(np.array([1.0, 2.0, 3.0]))
        # avg1 = 0.02 -> 0.02/0.02 = 1; avg2 = 0.98*0.02 + 0.04 = 0.0596 -> /0.0396
        assert out[0] == pytest.approx(1.0)
        assert out[1] == pytest.approx(0.0596 / (1 - 0.98**2))
        avg3 = 0.98 * 0.0596 + 0.02 * 3.0
        assert out[2] == pytest.approx(avg3 / (1 - 0.98**3))

    def test_missing_smoothed_is_the_ema(self):
        curve, _, _ = synth(n=400, seed=3)
        explicit = Curve(curve.lrs, curve.losses, suggest_mod._ema(np.asarray(curve.losses)))
        for method in METHODS:
            assert suggest(curve, method=method) == suggest(explicit, method=method)


class TestPaper:
    def test_bounds_on_known_curve(self):
        curve, _, _ = synth(give_smoothed=True)
        s = suggest(curve, method="paper")
        assert s.method == "paper"
        assert 1e-4 < s.base_lr < 1e-2
        assert within(s.max_lr, TRUE_MIN, 1.2)
        assert s.evidence["signal"] == "loss"
        assert s.evidence["ragged_index"] is None

    def test_bounds_with_ema_smoothing(self):
        curve, _, _ = synth()
        s = suggest(curve, method="paper")
        assert 1e-4 < s.base_lr < 1e-2
        assert within(s.max_lr, TRUE_MIN, 2.0)
        assert f"{s.max_lr:.3g}" in s.rationale
        assert f"{s.base_lr:.3g}" in s.rationale

    def test_backs_off_where_raw_loss_turns_ragged(self):
        curve, clean, x = synth()
        rng = np.random.default_rng(7)
        ragged_from = 0.05
        sd = np.where(x > math.log10(ragged_from), 0.3, 0.02)
        ragged = Curve(curve.lrs, clean * (1 + sd * rng.standard_normal(x.size)))
        s = suggest(ragged, method="paper")
        assert within(s.evidence["ragged_lr"], ragged_from, 1.6)
        assert s.max_lr == s.evidence["ragged_lr"]
        assert s.max_lr < s.evidence["best"]["lr"]
        assert "ragged" in s.rationale

    def test_use_accuracy_reads_the_accuracy_curve(self):
        # accuracy rises around 1e-3 and peaks at 0.05, unlike the loss (1e-2, 0.3)
        x = np.linspace(-6.0, 0.5, 1000)
        rng = np.random.default_rng(1)
        acc = (
            0.1
            + 0.8 * _sigmoid((x + 3.0) / 0.25)
            - 2.0 * np.maximum(0.0, x - math.log10(0.05)) ** 2
        )
        acc = acc + 0.01 * rng.standard_normal(x.size)
        curve, _, _ = synth(accuracies=acc)
        by_loss = suggest(curve, method="paper")
        by_acc = suggest(curve, method="paper", use_accuracy=True)
        assert by_acc.evidence["signal"] == "accuracy"
        assert 1e-4 < by_acc.base_lr < 1e-3
        assert within(by_acc.max_lr, 0.05, 2.0)
        assert within(by_loss.max_lr, TRUE_MIN, 2.0)
        assert by_acc.evidence["best_level"] == pytest.approx(0.9, abs=0.05)
        assert "accuracy" in by_acc.rationale

    def test_use_accuracy_without_accuracies_falls_back_to_loss(self):
        curve, _, _ = synth()
        s = suggest(curve, method="paper", use_accuracy=True)
        assert s.evidence["signal"] == "loss"
        assert "no usable accuracies" in s.rationale
        assert s.max_lr == suggest(curve, method="paper").max_lr
        assert any("use_accuracy" in w for w in suggest_all(curve, use_accuracy=True).warnings)

    def test_minimum_before_end_with_rise_is_fine(self):
        # minimum at ~90 % of the sweep, clear rise after it
        curve, _, _ = synth(hi=0.0, lr_min=0.3, rise=30.0, give_smoothed=True)
        s = suggest(curve, method="paper")
        assert within(s.max_lr, TRUE_MIN, 1.2)


class TestSteepest:
    def test_max_at_true_steepest_point(self):
        curve, _, _ = synth(give_smoothed=True)
        s = suggest(curve, method="steepest")
        assert within(s.max_lr, TRUE_STEEPEST, 1.25)
        assert s.base_lr == pytest.approx(s.max_lr / 4)
        assert s.evidence["slope_per_decade"] < -1.0

    def test_ema_smoothed_dense_sweep(self):
        curve, _, _ = synth(n=3000)
        s = suggest(curve, method="steepest")
        assert within(s.max_lr, TRUE_STEEPEST, 2.0)

    def test_works_when_loss_still_falls_at_the_end(self):
        curve, _, _ = synth(hi=-1.0, lr_min=10.0, give_smoothed=True)
        s = suggest(curve, method="steepest")
        assert within(s.max_lr, TRUE_STEEPEST, 1.25)


class TestValley:
    def test_two_thirds_into_the_longest_descent(self):
        n = 300
        lrs = np.logspace(-5, 0, n)
        y = np.full(n, 2.3)
        y[100:201] = 2.3 - 0.015 * np.arange(1, 102)
        y[201:] = y[200] + 0.02 * np.arange(1, n - 200)
        s = suggest(Curve(lrs, y, y), method="valley")
        # strictly decreasing run: last flat point 99 .. minimum 200
        assert s.evidence["valley_start"]["index"] == 99
        assert s.evidence["valley_end"]["index"] == 200
        idx = 99 + int(101 / 3) + int(101 / 3 / 2)
        assert s.evidence["pick"]["index"] == idx
        assert s.max_lr == pytest.approx(lrs[idx])
        assert s.base_lr == pytest.approx(lrs[idx] / 4)

    def test_base_is_valley_start_when_larger(self):
        n = 300
        lrs = np.logspace(-5, 0, n)
        y = np.full(n, 2.3)
        y[180:211] = 2.3 - 0.05 * np.arange(1, 32)  # short, steep valley
        y[211:] = y[210] + 0.05 * np.arange(1, n - 210)
        s = suggest(Curve(lrs, y, y), method="valley")
        assert s.evidence["base_from_valley_start"] is True
        assert s.base_lr == pytest.approx(lrs[179])
        assert s.base_lr > s.max_lr / 4

    def test_noisy_curve_lands_in_the_descent(self):
        curve, _, _ = synth()
        s = suggest(curve, method="valley")
        assert 2e-3 < s.max_lr < 0.1


class TestMinDiv10:
    def test_tenth_of_the_minimum(self):
        curve, clean, _ = synth(give_smoothed=True)
        s = suggest(curve, method="min_div_10")
        lr_min = float(np.asarray(curve.lrs)[np.argmin(clean)])
        assert s.max_lr == pytest.approx(lr_min / 10)
        assert s.base_lr == pytest.approx(lr_min / 40)
        assert within(s.max_lr, TRUE_MIN / 10, 1.2)

    def test_raises_when_minimum_is_at_the_end(self):
        curve, _, _ = synth(hi=-1.0, lr_min=10.0)
        with pytest.raises(
            MonotoneCurve, match=r"loss still falling at end_lr=0\.1 .*raise end_lr"
        ):
            suggest(curve, method="min_div_10")

    def test_spike_after_minimum_at_the_end_is_a_turn(self):
        curve, clean, _ = synth(hi=-1.0, lr_min=10.0, noise=0.0)
        raw = clean.copy()
        raw[-1] = 1e6  # blew up on the very last step
        s = suggest(Curve(curve.lrs, raw), method="min_div_10")
        assert s.evidence["minimum"]["index"] == raw.size - 2


class TestMaxFraction:
    def test_paper_max_and_a_quarter(self):
        curve, _, _ = synth()
        paper = suggest(curve, method="paper")
        s = suggest(curve, method="max_fraction")
        assert s.max_lr == paper.max_lr
        assert s.base_lr == pytest.approx(s.max_lr / 4)
        assert f"max_lr/3={s.max_lr / 3:.3g}" in s.rationale
        assert "Bengio" in s.rationale


class TestSuggestAll:
    def test_default_first_then_every_method(self):
        curve, _, _ = synth()
        s = suggest_all(curve)
        assert isinstance(s, Suggestions)
        assert s.items[0].method == DEFAULT_METHOD == "paper"
        assert s.default is s.items[0]
        assert [i.method for i in s.items[1:]] == [m for m in METHODS if m != "paper"]
        assert s.failed == {}
        for item in s.items:
            assert 0 < item.base_lr < item.max_lr
            assert item == suggest(curve, method=item.method)

    def test_default_follows_module_constant(self, monkeypatch):
        monkeypatch.setattr(suggest_mod, "DEFAULT_METHOD", "valley")
        curve, _, _ = synth()
        assert suggest_all(curve).items[0].method == "valley"
        assert suggest(curve).method == "valley"

    def test_falls_back_when_default_fails(self):
        curve, _, _ = synth(hi=-1.0, lr_min=10.0)
        s = suggest_all(curve)
        assert s.default.method == "steepest"
        assert set(s.failed) == {"paper", "min_div_10", "max_fraction"}
        assert "raise end_lr" in s.failed["paper"]
        assert any("'paper' failed" in w for w in s.warnings)
        assert s.confidence <= 2 / 5

    def test_all_fail_reraises_default_error(self):
        lrs = np.logspace(-7, -5, 200)
        flat = 2.3 + 0.001 * np.random.default_rng(0).standard_normal(200)
        with pytest.raises(FlatCurve, match="no descent found"):
            suggest_all(Curve(lrs, flat))

    def test_confidence_high_when_methods_agree(self):
        curve, _, _ = synth()
        s = suggest_all(curve)
        assert s.confidence >= 0.8
        assert not any("disagree" in w for w in s.warnings)

    def test_confidence_low_on_two_step_curve(self):
        x = np.linspace(-6.0, 0.5, 600)
        clean = (
            2.3
            - 0.9 * _sigmoid((x + 4.5) / 0.2)
            - 0.9 * _sigmoid((x + 1.2) / 0.2)
            + 8.0 * np.maximum(0.0, x + 0.52) ** 2
        )
        raw = clean * (1 + 0.03 * np.random.default_rng(2).standard_normal(x.size))
        s = suggest_all(Curve(10.0**x, raw))
        assert s.confidence < 0.5
        assert any(w.startswith("methods disagree") for w in s.warnings)
        assert s.confidence < suggest_all(synth()[0]).confidence

    def test_noise_measures_relative_sd(self):
        for sd in (0.02, 0.1):
            s = suggest_all(synth(noise=sd)[0])
            assert s.noise == pytest.approx(sd, rel=0.3)

    def test_noise_warning_on_very_noisy_curve(self):
        noisy = suggest_all(synth(noise=0.4)[0])
        assert noisy.noise > 0.2
        assert any(
            w.startswith(f"curve is too noisy to trust (noise {noisy.noise:.2f} > 0.2)")
            and "larger batch" in w
            for w in noisy.warnings
        )
        assert not any("noisy" in w for w in suggest_all(synth()[0]).warnings)

    def test_step_size_and_stop_iteration(self):
        s = suggest_all(synth()[0], iters_per_epoch=45)
        assert (s.step_size, s.stop_iteration, s.cycles) == (180, 1440, 4)
        for item in s.items:
            assert (item.step_size, item.stop_iteration, item.cycles) == (180, 1440, 4)
            assert "1440" in item.rationale
        custom = suggest_all(synth()[0], iters_per_epoch=100, epochs_per_half_cycle=2, cycles=3)
        assert (custom.step_size, custom.stop_iteration) == (200, 1200)

    def test_no_schedule_without_iters_per_epoch(self):
        s = suggest_all(synth()[0])
        assert (s.step_size, s.stop_iteration, s.cycles) == (None, None, None)
        assert s.default.step_size is None

    @pytest.mark.parametrize(
        ("kwargs", "name"),
        [
            ({"iters_per_epoch": 0}, "iters_per_epoch"),
            ({"iters_per_epoch": 10, "cycles": 0}, "cycles"),
            ({"iters_per_epoch": 10, "epochs_per_half_cycle": -1}, "epochs_per_half_cycle"),
            ({"iters_per_epoch": True}, "iters_per_epoch"),
        ],
    )
    def test_bad_cycle_arguments(self, kwargs, name):
        with pytest.raises(ValueError, match=f"^{name} must be a positive integer"):
            suggest_all(synth(n=200)[0], **kwargs)

    def test_warns_outside_paper_half_cycle(self):
        s = suggest_all(synth()[0], iters_per_epoch=10, epochs_per_half_cycle=1)
        assert any("outside the paper's 2-10 epochs" in w for w in s.warnings)
        assert s.step_size == 10

    def test_to_dict_is_json(self):
        s = suggest_all(synth()[0], iters_per_epoch=45)
        data = json.loads(json.dumps(s.to_dict(), allow_nan=False))
        assert data["default_method"] == "paper"
        assert [d["method"] for d in data["items"]] == [i.method for i in s.items]
        assert data["items"][0]["base_lr"] == s.default.base_lr
        assert data["step_size"] == 180
        assert data["confidence"] == s.confidence
        for item in s.items:
            json.dumps(item.evidence, allow_nan=False)

    def test_get(self):
        curve, _, _ = synth(hi=-1.0, lr_min=10.0)
        s = suggest_all(curve)
        assert s.get("valley").method == "valley"
        with pytest.raises(KeyError, match="raise end_lr"):
            s.get("paper")
        with pytest.raises(KeyError, match="must be one of"):
            s.get("nope")

    def test_accepts_result_and_its_dict(self):
        curve, _, _ = synth()
        result = as_result(curve)
        from_curve = suggest_all(curve)
        assert suggest_all(result).items == from_curve.items
        assert suggest_all(result.to_dict()).items == from_curve.items

    def test_cancelled_result_warns(self):
        result = as_result(synth()[0])
        result.stop_reason = "cancelled"
        assert any("cancelled" in w for w in suggest_all(result).warnings)


class TestErrors:
    def test_too_short(self):
        lrs = np.logspace(-5, -1, 4)
        with pytest.raises(
            CurveTooShort, match=r"^need at least 10 finite points, got 4: run more iterations$"
        ):
            suggest(Curve(lrs, [2.3, 2.0, 1.0, 3.0]))

    def test_too_short_after_non_finite(self):
        lrs = np.logspace(-5, -1, 50)
        losses = np.full(50, np.nan)
        losses[:6] = 2.3
        with pytest.raises(CurveTooShort, match=r"got 6 \(the loss is not finite from step 6"):
            suggest(Curve(lrs, losses))

    def test_all_non_finite(self):
        with pytest.raises(NonFiniteCurve, match="no finite loss"):
            suggest(Curve(np.logspace(-5, -1, 50), np.full(50, np.inf)))

    def test_non_finite_tail_is_ignored(self):
        curve, _, x = synth()
        cut = int(np.searchsorted(x, 0.2))  # after the minimum at 0.3
        losses = np.asarray(curve.losses).copy()
        losses[cut:] = np.nan
        lrs = np.asarray(curve.lrs)
        s = suggest_all(Curve(lrs, losses))
        assert s.items == suggest_all(Curve(lrs[:cut], losses[:cut])).items
        assert any(f"only the first {cut} of 1000 points" in w for w in s.warnings)

    def test_flat_curve(self):
        lrs = np.logspace(-7, -5, 200)
        flat = 2.3 * (1 + 0.001 * np.random.default_rng(0).standard_normal(200))
        with pytest.raises(
            FlatCurve, match=r"^no descent found between 1e-07 and 1e-05: widen the range"
        ) as info:
            suggest(Curve(lrs, flat))
        assert "raise end_lr" in str(info.value)

    def test_rising_curve(self):
        lrs = np.logspace(-3, 1, 200)
        rising = np.linspace(2.3, 5.0, 200)
        with pytest.raises(FlatCurve, match=r"between 0\.001 and 10: widen.*lower start_lr"):
            suggest(Curve(lrs, rising), method="steepest")

    def test_monotone_curve(self):
        curve, _, _ = synth(hi=-1.0, lr_min=10.0)
        for method in ("paper", "max_fraction", "min_div_10"):
            with pytest.raises(MonotoneCurve, match=r"^loss still falling at end_lr=0\.1 "):
                suggest(curve, method=method)

    def test_monotone_accuracy(self):
        x = np.linspace(-6.0, -1.0, 500)
        acc = 0.1 + 0.8 * _sigmoid((x + 1.0) / 0.4)
        curve, _, _ = synth(hi=-1.0, n=500, accuracies=acc)
        with pytest.raises(MonotoneCurve, match="accuracy still rising at end_lr=0.1"):
            suggest(curve, method="paper", use_accuracy=True)

    def test_lrs_must_increase(self):
        lrs = np.logspace(-5, -1, 50)[::-1]
        with pytest.raises(SuggestionError, match="lrs must strictly increase"):
            suggest(Curve(lrs, np.linspace(2.3, 1.0, 50)))

    def test_unknown_method(self):
        with pytest.raises(ValueError, match="method must be one of .* got 'fastest'"):
            suggest(synth(n=200)[0], method="fastest")

    def test_length_mismatch(self):
        with pytest.raises(ValueError, match="same length, got 50 and 49"):
            suggest(Curve(np.logspace(-5, -1, 50), np.ones(49)))

    def test_bad_input_type(self):
        with pytest.raises(TypeError, match="RangeTestResult"):
            suggest([1.0, 2.0])  # type: ignore[arg-type]


def _assert_valid(s: Suggestion, lrs: np.ndarray) -> None:
    assert 0 < s.base_lr < s.max_lr
    assert lrs[0] <= s.base_lr
    assert s.max_lr <= lrs[-1]
    json.dumps(s.to_dict(), allow_nan=False)


class TestProperties:
    @settings(max_examples=40, deadline=None)
    @given(
        center=st.floats(-5.0, -2.0),
        gap=st.floats(0.8, 2.5),
        width=st.floats(0.1, 0.5),
        noise=st.floats(0.0, 0.1),
        n=st.integers(100, 800),
        seed=st.integers(0, 2**16),
    )
    def test_well_formed_curves_give_bounds_inside_the_range(
        self, center, gap, width, noise, n, seed
    ):
        lr_min = 10.0 ** (center + gap)
        curve, _, _ = synth(
            n=n,
            lo=center - 3.0,
            hi=center + gap + 1.0,
            center=center,
            width=width,
            lr_min=lr_min,
            noise=noise,
            seed=seed,
        )
        lrs = np.asarray(curve.lrs)
        s = suggest_all(curve)
        assert s.default.method == "paper"
        assert 0.0 <= s.confidence <= 1.0
        for item in s.items:
            _assert_valid(item, lrs)

    @settings(max_examples=60, deadline=None)
    @given(
        steps=st.lists(st.floats(-0.3, 0.3), min_size=10, max_size=120),
        lo=st.floats(-7.0, -2.0),
        decades=st.floats(0.5, 6.0),
    )
    def test_any_curve_gives_valid_bounds_or_a_suggestion_error(self, steps, lo, decades):
        losses = 2.0 + np.cumsum(steps)
        lrs = np.logspace(lo, lo + decades, len(steps))
        try:
            s = suggest_all(Curve(lrs, losses))
        except SuggestionError:
            return
        for item in s.items:
            _assert_valid(item, lrs)
