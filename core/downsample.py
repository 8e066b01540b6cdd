"""Thin a long series for display, keeping its extremes.

A chart 1,400 pixels wide cannot show 100,000 points, and sending them all costs
the browser more than the drawing. :func:`downsample` keeps, in each of a number
of equal buckets of points, the point where each field is lowest and the one
where it is highest (min/max decimation, as M4 does per pixel column), plus the
first and last point of the range. A spike in the loss, a single diverged step
or the best accuracy therefore survive any thinning; the points kept are real
points (every field of a kept point is its own value, not an average), and their
indices are returned so that a zoom can ask for a narrower range again.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["MIN_POINTS", "downsample"]

MIN_POINTS = 16
"""The fewest points a caller may ask for (two buckets' extremes of a few fields)."""


def downsample(
    values: Mapping[str, Sequence[float] | None], size: int, max_points: int
) -> tuple[list[int], dict[str, list[float] | None]] | None:
    """At most ``max_points`` of ``size`` points: ``(positions, values)``, or None when
    the points already fit.

    Args:
        values: each field's ``size`` values (None: the field has no values).
        size: how many points there are.
        max_points: at most this many points in the result (>= :data:`MIN_POINTS`).

    Returns:
        The positions (0-based, ascending, unique) of the points kept, and each
        field's values at those positions.
    """
    if max_points < MIN_POINTS:
        raise ValueError(f"max_points must be >= {MIN_POINTS}, got {max_points}")
    if size <= max_points:
        return None
    columns = {k: v for k, v in values.items() if v is not None}
    # a min and a max per field per bucket, and the range's first and last point
    per_bucket = 2 * max(1, len(columns))
    buckets = max(1, (max_points - 2) // per_bucket)
    width = math.ceil(size / buckets)
    buckets = math.ceil(size / width)
    starts = np.arange(buckets) * width
    kept = [np.array([0, size - 1])]
    for column in columns.values():
        data = np.asarray(column, dtype=np.float64)
        # NaN (a missing value) is neither a minimum nor a maximum; a bucket of
        # nothing but NaN keeps its first point
        padded = np.pad(data, (0, buckets * width - size), mode="edge").reshape(buckets, width)
        missing = np.isnan(padded)
        kept.append(starts + np.where(missing, np.inf, padded).argmin(axis=1))
        kept.append(starts + np.where(missing, -np.inf, padded).argmax(axis=1))
    positions = np.unique(np.minimum(np.concatenate(kept), size - 1)).tolist()
    return positions, {
        k: None if v is None else [v[i] for i in positions] for k, v in values.items()
    }
