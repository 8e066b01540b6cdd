"""Tests of clr.plots.plot_training: real figures, their lines and their SVG ids."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.image import imread
from matplotlib.lines import Line2D

from clr.plots import SupportsTrainingHistory, plot_training, render

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SVG = "{http://www.w3.org/2000/svg}"
STEP = 20  # iterations per half cycle
CYCLE = 2 * STEP


def triangle(n: int) -> np.ndarray:
    phase = 1.0 - np.abs((np.arange(n) % CYCLE) / STEP - 1.0)
    return 0.01 + 0.09 * phase


@dataclass
class Epoch:
    epoch: int
    iteration: int
    train_loss: float
    train_accuracy: float | None
    val_loss: float | None
    val_accuracy: float | None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class History:
    """What clr.train.TrainResult gives the plot: the duck type it reads."""

    lrs: list[float]
    momenta: list[float] | None
    losses: list[float]
    epochs: list[Epoch] = field(default_factory=list)
    cycle_ends: list[int] = field(default_factory=list)


def make_history(n: int = 3 * CYCLE, *, momenta: bool = True, validation: bool = True) -> History:
    rng = np.random.default_rng(0)
    lrs = triangle(n)
    losses = 2.3 * np.exp(-np.arange(n) / (n / 3)) + 0.05 * rng.standard_normal(n) + 0.1
    epochs = [
        Epoch(
            epoch=e,
            iteration=it,
            train_loss=float(losses[it - 10 : it].mean()),
            train_accuracy=0.5 + 0.1 * e,
            val_loss=float(losses[it - 1]) + 0.05 if validation else None,
            val_accuracy=0.55 + 0.1 * e if validation else None,
        )
        for e, it in enumerate(range(30, n + 1, 30))
    ]
    return History(
        lrs=lrs.tolist(),
        momenta=(0.95 - (lrs - 0.01) / 0.09 * 0.1).tolist() if momenta else None,
        losses=losses.tolist(),
        epochs=epochs,
        cycle_ends=list(range(CYCLE, n + 1, CYCLE)),
    )


def lines(fig: Any, gid: str) -> list[Line2D]:
    return [ln for ax in fig.axes for ln in ax.get_lines() if ln.get_gid() == gid]


def line(fig: Any, gid: str) -> Line2D:
    found = lines(fig, gid)
    assert len(found) == 1, f"expected one line {gid!r}, got {len(found)}"
    return found[0]


def xy(ln: Line2D) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.asarray(ln.get_xdata(), dtype=np.float64),
        np.asarray(ln.get_ydata(), dtype=np.float64),
    )


def svg_ids(fig: Any) -> list[str]:
    root = ET.fromstring(render(fig, "svg"))
    assert root.tag == f"{SVG}svg"
    return [el.attrib["id"] for el in root.iter() if "id" in el.attrib]


class TestPlotTraining:
    def test_svg_holds_every_part_by_its_id(self):
        fig = plot_training(make_history(), checkpoints=[40, 80], resumed_at=[80])
        ids = svg_ids(fig)
        for gid in (
            "raw-loss",
            "loss",
            "epoch-train-loss",
            "val-loss",
            "val-accuracy",
            "train-accuracy",
            "lr",
            "momentum",
        ):
            assert ids.count(gid) == 1, gid
        # three cycle ends, on both panels; two checkpoints and one resume, likewise
        assert ids.count("cycle-end") == 6
        assert ids.count("checkpoint") == 4
        assert ids.count("resumed") == 2

    def test_lr_and_momentum_are_the_ones_applied_in_a_panel_under_the_loss(self):
        history = make_history()
        fig = plot_training(history)
        loss_ax, lr_ax, acc_ax, mom_ax = fig.axes
        x, y = xy(line(fig, "lr"))
        np.testing.assert_array_equal(x, np.arange(len(history.lrs)))
        np.testing.assert_array_equal(y, history.lrs)
        np.testing.assert_array_equal(xy(line(fig, "momentum"))[1], history.momenta)
        assert line(fig, "lr").axes is lr_ax
        assert line(fig, "momentum").axes is mom_ax
        assert line(fig, "loss").axes is loss_ax
        assert line(fig, "val-accuracy").axes is acc_ax
        # one iteration axis: the LR panel is below the loss panel and shares its x
        assert lr_ax.get_shared_x_axes().joined(lr_ax, loss_ax)
        assert lr_ax.get_position().y1 <= loss_ax.get_position().y0
        assert lr_ax.get_xlabel() == "iteration"

    def test_smoothed_loss_is_a_centred_mean_without_lag(self):
        history = make_history()
        fig = plot_training(history, smoothing=5)
        raw = np.asarray(history.losses)
        _, smooth = xy(line(fig, "loss"))
        assert smooth[10] == pytest.approx(raw[8:13].mean())
        assert smooth[0] == pytest.approx(raw[0:3].mean())  # shorter at the ends
        assert smooth[-1] == pytest.approx(raw[-3:].mean())
        np.testing.assert_array_equal(xy(line(fig, "raw-loss"))[1], raw)

    def test_epochs_are_drawn_at_their_iteration(self):
        history = make_history()
        fig = plot_training(history)
        x, y = xy(line(fig, "val-accuracy"))
        np.testing.assert_array_equal(x, [e.iteration for e in history.epochs])
        np.testing.assert_allclose(y, [e.val_accuracy for e in history.epochs])
        x, y = xy(line(fig, "epoch-train-loss"))
        np.testing.assert_allclose(y, [e.train_loss for e in history.epochs])

    def test_cycle_ends_are_dotted_lines_at_the_ends(self):
        fig = plot_training(make_history())
        ends = lines(fig, "cycle-end")
        assert sorted({xy(ln)[0][0] for ln in ends}) == [40.0, 80.0, 120.0]
        assert all(ln.get_linestyle() == ":" for ln in ends)

    def test_cycle_ends_given_override_and_total_spans_the_whole_run(self):
        history = make_history(n=50)  # a running job: 50 of 120 iterations
        fig = plot_training(history, cycle_ends=[40, 80, 120], total=120)
        assert sorted({xy(ln)[0][0] for ln in lines(fig, "cycle-end")}) == [40.0, 80.0, 120.0]
        assert fig.axes[0].get_xlim() == (0.0, 120.0)

    def test_same_picture_from_a_mapping_with_epoch_columns(self):
        history = make_history()
        columns = {
            name: [getattr(e, name) for e in history.epochs]
            for name in ("iteration", "train_loss", "val_loss", "val_accuracy")
        }
        columns["train_accuracy"] = None  # a series without the field
        fig = plot_training(
            {
                "lrs": history.lrs,
                "losses": history.losses,
                "momenta": history.momenta,
                "epochs": columns,
            },
            cycle_ends=history.cycle_ends,
        )
        np.testing.assert_array_equal(xy(line(fig, "lr"))[1], history.lrs)
        np.testing.assert_allclose(
            xy(line(fig, "val-loss"))[1], [e.val_loss for e in history.epochs]
        )
        assert lines(fig, "train-accuracy") == []
        assert len(lines(fig, "cycle-end")) == 6

    def test_without_momentum_or_validation_there_are_fewer_axes(self):
        history = make_history(momenta=False, validation=False)
        history.epochs = [
            Epoch(e.epoch, e.iteration, e.train_loss, None, None, None) for e in history.epochs
        ]
        fig = plot_training(history)
        assert len(fig.axes) == 2  # loss and LR: no accuracy, no momentum twin
        assert lines(fig, "momentum") == []
        assert lines(fig, "val-loss") == []

    def test_a_long_run_is_binned_keeping_the_lr_peaks(self):
        n = 200_000
        lrs = triangle(n)
        losses = np.linspace(2.0, 0.1, n)
        losses[123_457] = 50.0  # one spike
        fig = plot_training({"lrs": lrs, "losses": losses}, max_points=1000)
        x, y = xy(line(fig, "lr"))
        assert x.size <= 1000
        assert y.max() == pytest.approx(lrs.max())
        assert y.min() == pytest.approx(lrs.min())
        assert xy(line(fig, "raw-loss"))[1].max() == 50.0
        assert xy(line(fig, "loss"))[0].size <= 1000
        assert np.all(np.diff(x) >= 0)

    def test_a_diverged_loss_does_not_break_the_plot(self):
        history = make_history()
        history.losses[-5:] = [float("nan")] * 5
        fig = plot_training(history)
        low, high = fig.axes[0].get_ylim()
        assert np.isfinite(low)
        assert np.isfinite(high)
        assert low < high

    def test_writes_png_and_svg_files_and_nothing_without_a_path(self, tmp_path):
        history = make_history()
        plot_training(history, path=tmp_path / "t.png", subtitle="completed: 120 iterations")
        data = (tmp_path / "t.png").read_bytes()
        assert data.startswith(PNG_MAGIC)
        image = imread(tmp_path / "t.png")
        assert image.shape[0] >= 500
        assert float(image[..., :3].std()) > 0.05
        plot_training(history, path=tmp_path / "t.svg", title="digits_mlp")
        text = (tmp_path / "t.svg").read_text()
        assert "digits_mlp" in text
        fig = plot_training(history)
        assert isinstance(fig.canvas, FigureCanvasAgg)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["t.png", "t.svg"]

    def test_a_train_result_is_a_history(self):
        assert isinstance(make_history(), SupportsTrainingHistory)

    @pytest.mark.parametrize(
        ("change", "kwargs", "match"),
        [
            ({"lrs": [], "losses": []}, {}, "no iterations"),
            ({"losses": [1.0]}, {}, "losses must have one value per lr"),
            ({"momenta": [0.9]}, {}, "momenta must have one value per lr"),
            ({"epochs": {"train_loss": [1.0]}}, {}, "iteration"),
            ({"epochs": [{"iteration": 10}]}, {}, "train_loss"),
            (
                {"epochs": {"iteration": [10, 20], "train_loss": [1.0]}},
                {},
                "same length",
            ),
            ({}, {"cycle_ends": [40, -1]}, "cycle_ends must be iterations"),
            ({}, {"checkpoints": [1.5]}, "checkpoints must be iterations"),
            ({}, {"resumed_at": [True]}, "resumed_at must be iterations"),
            ({}, {"total": 0}, "total must be a positive integer"),
            ({}, {"smoothing": 2.5}, "smoothing must be a positive integer"),
            ({}, {"max_points": 8}, "max_points must be at least 16"),
            ({}, {"format": "jpg"}, "format must be one of"),
        ],
    )
    def test_bad_input_is_refused_naming_the_argument(self, change, kwargs, match):
        history = make_history()
        data = {
            "lrs": history.lrs,
            "losses": history.losses,
            "momenta": history.momenta,
            "epochs": history.epochs,
            **change,
        }
        with pytest.raises(ValueError, match=match):
            plot_training(data, **kwargs)

    def test_wrong_types_are_type_errors(self):
        with pytest.raises(TypeError, match="history must be"):
            plot_training([1.0, 2.0])  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"epochs\[0\]"):
            plot_training({"lrs": [0.1], "losses": [1.0], "epochs": [3.0]})
        with pytest.raises(ValueError, match="needs 'lrs' and 'losses'"):
            plot_training({"lrs": [0.1]})
