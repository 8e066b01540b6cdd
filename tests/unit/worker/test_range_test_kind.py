"""The range-test runner's conversion of ``clr`` progress into ``curve`` points."""

from __future__ import annotations

from clr import RangeTestProgress
from worker.kinds.range_test import curve_points


def progress(**overrides: object) -> RangeTestProgress:
    values: dict[str, object] = {
        "step": 12,
        "num_iter": 100,
        "start": 10,
        "lrs": [0.1, 0.2],
        "losses": [2.0, 1.9],
        "smoothed_losses": [2.0, 1.95],
        "accuracies": None,
        "best_loss": 1.95,
        "elapsed": 0.1,
    }
    values.update(overrides)
    return RangeTestProgress(**values)  # type: ignore[arg-type]


def test_a_progress_callback_becomes_curve_points_from_its_start() -> None:
    points = curve_points(progress())
    assert (points.name, points.start, points.size) == ("curve", 10, 2)
    assert points.values == {
        "lr": [0.1, 0.2],
        "loss": [2.0, 1.9],
        "smoothed_loss": [2.0, 1.95],
        "accuracy": None,
    }


def test_accuracies_are_kept_when_the_workload_has_a_metric() -> None:
    points = curve_points(progress(accuracies=[0.5, 0.75]))
    assert points.values["accuracy"] == [0.5, 0.75]
