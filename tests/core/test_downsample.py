"""core.downsample: thinning a series for a chart keeps every field's extremes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.downsample import MIN_POINTS, downsample

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)


def test_a_series_that_fits_is_left_alone() -> None:
    assert downsample({"loss": [1.0, 2.0, 3.0]}, 3, MIN_POINTS) is None
    assert downsample({"loss": [0.5] * 100}, 100, 100) is None


def test_too_few_points_asked_for_is_an_error() -> None:
    with pytest.raises(ValueError, match="max_points must be >= 16, got 4"):
        downsample({"loss": [1.0] * 100}, 100, 4)


def test_a_single_spike_survives_any_thinning() -> None:
    loss = [1.0] * 100_000
    loss[54_321] = 50.0  # one diverged step
    loss[77_777] = -3.0
    positions, values = downsample({"loss": loss}, len(loss), 100) or ([], {})
    assert 54_321 in positions
    assert 77_777 in positions
    assert max(values["loss"] or []) == 50.0
    assert min(values["loss"] or []) == -3.0
    assert len(positions) <= 100


def test_a_missing_field_stays_missing_and_nan_is_no_extreme() -> None:
    n = 1000
    loss = [float(i % 7) for i in range(n)]
    loss[10] = math.nan
    lrs = [i * 1e-3 for i in range(n)]
    thinned = downsample({"lr": lrs, "loss": loss, "accuracy": None}, n, 64)
    assert thinned is not None
    positions, values = thinned
    assert values["accuracy"] is None
    assert values["lr"] == [i * 1e-3 for i in positions]
    assert len(positions) <= 64


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.tuples(finite, finite), min_size=1, max_size=3000),
    max_points=st.integers(min_value=MIN_POINTS, max_value=500),
)
def test_thinned_points_are_real_points_and_keep_the_extremes(
    data: list[tuple[float, float]], max_points: int
) -> None:
    loss = [a for a, _ in data]
    acc = [b for _, b in data]
    thinned = downsample({"loss": loss, "accuracy": acc}, len(data), max_points)
    if len(data) <= max_points:
        assert thinned is None
        return
    assert thinned is not None
    positions, values = thinned
    assert len(positions) <= max_points
    assert positions == sorted(set(positions))
    assert positions[0] == 0
    assert positions[-1] == len(data) - 1
    # every kept point is a real point, with all its fields
    assert values["loss"] == [loss[i] for i in positions]
    assert values["accuracy"] == [acc[i] for i in positions]
    # the extremes of each field are among them
    assert min(values["loss"] or []) == min(loss)
    assert max(values["loss"] or []) == max(loss)
    assert min(values["accuracy"] or []) == min(acc)
    assert max(values["accuracy"] or []) == max(acc)
