"""Tests of clr.plots: real files, real axes, no pyplot."""

from __future__ import annotations

import gc
import importlib
import io
import math
import weakref

import numpy as np
import pytest
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import imread
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from clr._result import RangeTestResult
from clr.plots import plot_range_test, plot_schedule, render
from clr.suggest import Curve, Suggestions, smooth_losses, suggest, suggest_all

suggest_mod = importlib.import_module("clr.suggest")  # the package re-exports a function

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_result(*, accuracies: bool = True, spike: bool = False) -> RangeTestResult:
    x = np.linspace(-6.0, 0.5, 400)
    rng = np.random.default_rng(0)
    down = 1.0 / (1.0 + np.exp(-(x + 2.0) / 0.25))
    clean = 2.3 - 1.8 * down + 8.0 * np.maximum(0.0, x + 0.52) ** 2
    losses = clean * (1 + 0.03 * rng.standard_normal(x.size))
    if spike:
        losses[-1] = 1e6
    acc = 0.1 + 0.8 * down + 0.01 * rng.standard_normal(x.size) if accuracies else None
    return RangeTestResult(
        lrs=10.0**x,
        losses=losses,
        smoothed_losses=suggest_mod._ema(losses),
        start_lr=1e-6,
        end_lr=10.0**0.5,
        num_iter=400,
        sweep="exp",
        smoothing=0.98,
        diverge_th=4.0,
        stop_reason="diverged",
        stop_detail="smoothed loss above 4x the best",
        device="cpu",
        seconds=1.5,
        accuracies=acc,
    )


@pytest.fixture(scope="module")
def result() -> RangeTestResult:
    return make_result()


@pytest.fixture(scope="module")
def suggestions(result: RangeTestResult) -> Suggestions:
    return suggest_all(result)


def _x(line: Line2D) -> np.ndarray:
    return np.asarray(line.get_xdata(), dtype=np.float64)


def _y(line: Line2D) -> np.ndarray:
    return np.asarray(line.get_ydata(), dtype=np.float64)


def _span(ax: Axes) -> list[Patch]:
    return [p for p in ax.patches if p.get_gid() == "suggested-range"]


def _line(ax: Axes, gid: str) -> Line2D:
    lines = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
    assert len(lines) == 1, f"expected one line with gid {gid!r}"
    return lines[0]


class TestPlotRangeTest:
    def test_writes_a_real_png(self, tmp_path, result, suggestions):
        path = tmp_path / "range.png"
        plot_range_test(result, suggestions, path=path)
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC)
        image = imread(path)
        assert image.shape[0] >= 300
        assert image.shape[1] >= 500
        assert float(image[..., :3].std()) > 0.05  # not a blank canvas

    def test_writes_svg(self, tmp_path, result, suggestions):
        path = tmp_path / "range.svg"
        plot_range_test(result, suggestions, path=str(path))
        text = path.read_text()
        assert "<svg" in text
        assert "LR range test" in text

    def test_format_overrides_suffix(self, tmp_path, result):
        path = tmp_path / "range.img"
        plot_range_test(result, format="svg", path=path)
        assert "<svg" in path.read_text()

    def test_log_x_axis_and_curves(self, result):
        fig = plot_range_test(result)
        ax = fig.axes[0]
        assert ax.get_xscale() == "log"
        smooth = _line(ax, "loss")
        np.testing.assert_array_equal(_x(smooth), result.lrs)
        # the bold curve is the lag-free smoothing the rules read, not the recorded EMA
        np.testing.assert_array_equal(_y(smooth), smooth_losses(result.losses))
        assert not np.allclose(_y(smooth), result.smoothed_losses)
        np.testing.assert_array_equal(_y(_line(ax, "raw-loss")), result.losses)

    def test_span_covers_the_default_suggestion(self, result, suggestions):
        fig = plot_range_test(result, suggestions)
        spans = _span(fig.axes[0])
        assert len(spans) == 1
        span = spans[0]
        assert isinstance(span, Rectangle)
        base, top = span.get_x(), span.get_x() + span.get_width()
        assert base == pytest.approx(suggestions.default.base_lr, rel=1e-12)
        assert top == pytest.approx(suggestions.default.max_lr, rel=1e-12)
        assert suggestions.default.method in str(span.get_label())

    def test_span_for_a_single_suggestion(self, result):
        one = suggest(result, method="steepest")
        fig = plot_range_test(result, one)
        (span,) = _span(fig.axes[0])
        assert isinstance(span, Rectangle)
        assert span.get_x() == pytest.approx(one.base_lr, rel=1e-12)
        assert span.get_x() + span.get_width() == pytest.approx(one.max_lr, rel=1e-12)

    def test_no_span_without_suggestions(self, result):
        fig = plot_range_test(result)
        assert _span(fig.axes[0]) == []

    def test_marks_every_method(self, result, suggestions):
        ax = plot_range_test(result, suggestions).axes[0]
        for item in suggestions.items:
            marker = _line(ax, f"marker-{item.method}")
            np.testing.assert_allclose(_x(marker), [item.base_lr, item.max_lr])
        legend = ax.get_legend()
        assert legend is not None
        labels = legend.get_texts()
        assert {f"{i.method} base/max" for i in suggestions.items} <= {t.get_text() for t in labels}

    def test_accuracy_twin_axis_when_present(self, result):
        fig = plot_range_test(result)
        assert len(fig.axes) == 2
        np.testing.assert_array_equal(_y(_line(fig.axes[1], "accuracy")), result.accuracies)

    def test_no_accuracy_axis_when_absent_or_hidden(self, result):
        assert len(plot_range_test(make_result(accuracies=False)).axes) == 1
        assert len(plot_range_test(result, show_accuracy=False).axes) == 1

    def test_accepts_the_dict_form(self, result):
        fig = plot_range_test(result.to_dict())
        np.testing.assert_allclose(_y(_line(fig.axes[0], "loss")), smooth_losses(result.losses))
        assert len(fig.axes) == 2

    def test_accepts_a_plain_mapping_of_arrays(self):
        x = np.linspace(-5, 0, 60)
        fig = plot_range_test({"lrs": (10.0**x).tolist(), "losses": (2.0 - 0.1 * x).tolist()})
        np.testing.assert_array_equal(_x(_line(fig.axes[0], "raw-loss")), 10.0**x)
        with pytest.raises(ValueError, match="needs 'lrs' and 'losses'"):
            plot_range_test({"lrs": [1e-3, 1e-2]})

    def test_accepts_a_curve(self):
        x = np.linspace(-5, 0, 100)
        curve = Curve(10.0**x, 2.0 - 0.1 * x)
        fig = plot_range_test(curve)
        # a straight line is its own lag-free smoothing (to the EMA's bias-free precision)
        np.testing.assert_allclose(_y(_line(fig.axes[0], "loss")), 2.0 - 0.1 * x, atol=0.02)
        np.testing.assert_allclose(_y(_line(fig.axes[0], "loss"))[50], 2.0 - 0.1 * x[50], atol=1e-9)

    def test_divergence_spike_is_clipped(self):
        spiky = make_result(spike=True)
        fig = plot_range_test(spiky)
        bottom, top = fig.axes[0].get_ylim()
        assert top < 10.0
        assert bottom < float(np.min(spiky.smoothed_losses))

    def test_title_and_stop_reason(self, result):
        fig = plot_range_test(result, title="digits")
        assert fig.get_suptitle() == "digits"
        assert "stopped: diverged" in fig.axes[0].get_title()

    def test_bad_format_names_the_argument(self, tmp_path, result):
        with pytest.raises(ValueError, match=r"^format must be one of \('png', 'svg'\), got 'pdf'"):
            plot_range_test(result, path=tmp_path / "x.png", format="pdf")
        with pytest.raises(ValueError, match=r"^format cannot be inferred .*'jpg'"):
            plot_range_test(result, path=tmp_path / "x.jpg")
        assert list(tmp_path.iterdir()) == []

    def test_writes_nothing_without_path(self, tmp_path, monkeypatch, result, suggestions):
        monkeypatch.chdir(tmp_path)
        plot_range_test(result, suggestions)
        assert list(tmp_path.iterdir()) == []

    def test_figure_is_agg_and_collectable(self, result):
        fig = plot_range_test(result)
        assert isinstance(fig.canvas, FigureCanvasAgg)
        ref = weakref.ref(fig)
        del fig
        gc.collect()
        assert ref() is None


class _Triangle:
    """A triangular schedule: 0.001 -> 0.01 -> 0.001 every 2 * step_size steps."""

    def __init__(self, step_size: int = 10, with_momentum: bool = True) -> None:
        self.step_size = step_size
        self.with_momentum = with_momentum

    def _phase(self, step: int) -> float:
        cycle = step % (2 * self.step_size)
        return 1.0 - abs(cycle / self.step_size - 1.0)

    def lr_at(self, step: int) -> float:
        return 0.001 + 0.009 * self._phase(step)

    def momentum_at(self, step: int) -> float | None:
        return 0.95 - 0.1 * self._phase(step) if self.with_momentum else None


class TestPlotSchedule:
    def test_object_with_lr_at(self):
        sched = _Triangle()
        fig = plot_schedule(sched, steps=40)
        line = _line(fig.axes[0], "lr")
        np.testing.assert_array_equal(_x(line), np.arange(40))
        np.testing.assert_array_equal(_y(line), [sched.lr_at(i) for i in range(40)])
        assert _y(line).max() == pytest.approx(0.01)

    def test_momentum_from_the_object(self):
        sched = _Triangle()
        fig = plot_schedule(sched, steps=40)
        assert len(fig.axes) == 2
        mom = _y(_line(fig.axes[1], "momentum"))
        np.testing.assert_allclose(mom, [0.95 - 0.1 * sched._phase(i) for i in range(40)])

    def test_no_momentum_axis_when_momentum_is_none(self):
        assert len(plot_schedule(_Triangle(with_momentum=False), steps=40).axes) == 1

    def test_array_input(self):
        lrs = np.linspace(0.001, 0.1, 25)
        line = _line(plot_schedule(lrs).axes[0], "lr")
        np.testing.assert_array_equal(_y(line), lrs)
        lst = [0.1, 0.2, 0.3]
        np.testing.assert_array_equal(_y(_line(plot_schedule(lst).axes[0], "lr")), lst)

    def test_steps_truncates_an_array(self):
        lrs = np.linspace(0.001, 0.1, 25)
        line = _line(plot_schedule(lrs, steps=10).axes[0], "lr")
        np.testing.assert_array_equal(_y(line), lrs[:10])
        with pytest.raises(ValueError, match="steps must be at most"):
            plot_schedule(lrs, steps=30)

    def test_explicit_momentums(self):
        lrs = np.linspace(0.001, 0.1, 20)
        mom = np.linspace(0.95, 0.85, 20)
        fig = plot_schedule(lrs, momentums=mom)
        np.testing.assert_array_equal(_y(_line(fig.axes[1], "momentum")), mom)
        with pytest.raises(ValueError, match="momentums must have at least 20 values, got 5"):
            plot_schedule(lrs, momentums=mom[:5])

    def test_steps_required_for_a_schedule(self):
        with pytest.raises(ValueError, match="^steps is required"):
            plot_schedule(_Triangle())
        with pytest.raises(ValueError, match="^steps must be a positive integer, got 0"):
            plot_schedule(_Triangle(), steps=0)

    def test_cycle_ends_are_dotted_lines(self):
        fig = plot_schedule(_Triangle(), steps=60, cycle_ends=[20, 40, 60])
        ends = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "cycle-end"]
        assert [_x(ln)[0] for ln in ends] == [20, 40, 60]
        assert all(ln.get_linestyle() == ":" for ln in ends)

    def test_writes_png_and_title(self, tmp_path):
        path = tmp_path / "schedule.png"
        fig = plot_schedule(np.linspace(0.001, 0.1, 30), path=path, title="triangular")
        assert path.read_bytes().startswith(PNG_MAGIC)
        assert fig.get_suptitle() == "triangular"

    def test_empty_input(self):
        with pytest.raises(ValueError, match="at least one learning rate"):
            plot_schedule([])


class TestRender:
    def test_png_bytes(self, result):
        data = render(plot_range_test(result))
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 10_000

    def test_svg_bytes(self):
        data = render(plot_schedule([0.1, 0.2, 0.1]), format="svg")
        assert b"<svg" in data

    def test_bad_format(self):
        with pytest.raises(ValueError, match="^format must be one of"):
            render(plot_schedule([0.1, 0.2]), format="gif")

    def test_png_dimensions(self, result):
        image = imread(io.BytesIO(render(plot_range_test(result))), format="png")
        assert image.shape[:2] == (500, 800)
        assert math.isclose(image.shape[1] / image.shape[0], 1.6)
