"""Progress series: the typed points a job appends while it runs.

A job kind declares its series (:class:`SeriesSpec`): a name and the fields of
each point. A range test has one, ``curve`` (``lr``, ``loss``, ``smoothed_loss``,
``accuracy``); a training has ``iterations`` (the LR and momentum applied, the
loss) and ``epochs`` (train and validation loss and accuracy). A worker appends
runs of consecutive points (:class:`SeriesPoints`) and readers get them back
whole or from an index on.

Storage (chosen by measurement, see ``bench/series_storage.py`` and
``docs/benchmarks.md``): one row per run of points, the values packed as
little-endian float64 columns in one binary value (a null is NaN: stored values
are finite otherwise). A 100,000-point, 4-field series is about 3 MB; it decodes
with :meth:`array.array.frombytes`, with no per-number parsing, so reading it
whole takes tens of milliseconds where the same points as JSON lists took
several hundred, and stores 1.4 (PostgreSQL's compressed JSONB) to 2.6 (SQLite's
text) times fewer bytes.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "MAX_POINTS_PER_REPORT",
    "SeriesPoints",
    "SeriesSpec",
    "decode_values",
    "encode_values",
]

MAX_POINTS_PER_REPORT = 100_000
"""Most points one report may carry per series."""

_NAN = float("nan")


@dataclass(frozen=True)
class SeriesSpec:
    """One named series of a job kind: the fields of its points.

    Attributes:
        name: the series' name (``curve``, ``iterations``), unique within the kind.
        fields: the fields of each point, in storage and CSV order.
        optional: fields that may be missing from a run of points (null), such
            as ``accuracy`` for a workload without a metric.
        description: what one point is, for the API's documentation.
        only_with: a spec field a job must have set (not null) to have this
            series (``seeds``: a range test's ``band``); None: every job of the
            kind has it. A job without it reads the series as empty, and its
            event stream leaves the series out.
    """

    name: str
    fields: tuple[str, ...]
    optional: frozenset[str] = frozenset()
    description: str = ""
    only_with: str | None = None

    def of_spec(self, spec: Mapping[str, Any]) -> bool:
        """Whether a job of this stored ``spec`` has this series (see ``only_with``)."""
        return self.only_with is None or spec.get(self.only_with) is not None

    def __post_init__(self) -> None:
        if not self.fields or len(set(self.fields)) != len(self.fields):
            raise ValueError(f"series {self.name!r} needs distinct fields, got {self.fields}")
        if not self.optional <= set(self.fields):
            raise ValueError(f"series {self.name!r}: optional fields must be among its fields")


@dataclass(frozen=True)
class SeriesPoints:
    """A run of consecutive points of one series, from index ``start`` on.

    ``values`` maps every field of the series to a list of the same length, or
    to None for an optional field the points do not have. Built with
    :meth:`of`, which checks them against the series' spec.
    """

    name: str
    start: int
    values: Mapping[str, list[float] | None] = field(default_factory=dict)

    @property
    def size(self) -> int:
        """Number of points."""
        return next((len(v) for v in self.values.values() if v is not None), 0)

    @classmethod
    def of(
        cls, spec: SeriesSpec, start: int, values: Mapping[str, Sequence[float] | None]
    ) -> SeriesPoints:
        """Points of ``spec`` from ``start``, checked: every field, same lengths, finite.

        Raises:
            ValueError: a field is missing or unknown, lengths differ, a value is not
                a finite number, or there are no points (or more than
                :data:`MAX_POINTS_PER_REPORT`).
        """
        if isinstance(start, bool) or not isinstance(start, int) or start < 0:
            raise ValueError(f"start must be an integer >= 0, got {start!r}")
        unknown = set(values) - set(spec.fields)
        if unknown:
            raise ValueError(f"series {spec.name!r} has no field {sorted(unknown)[0]!r}")
        checked: dict[str, list[float] | None] = {}
        length: int | None = None
        for name in spec.fields:
            column = values.get(name)
            if column is None:
                if name not in spec.optional:
                    raise ValueError(f"series {spec.name!r}: field {name!r} is missing")
                checked[name] = None
                continue
            try:
                floats = [float(v) for v in column]
            except (TypeError, ValueError):
                # float() would say "could not convert 'x'" without naming the field
                raise ValueError(
                    f"series {spec.name!r}: field {name!r} has a value that is not a number"
                ) from None
            if not all(math.isfinite(v) for v in floats):
                raise ValueError(f"series {spec.name!r}: field {name!r} has a non-finite value")
            if length is None:
                length = len(floats)
            elif len(floats) != length:
                raise ValueError(
                    f"series {spec.name!r}: field {name!r} has {len(floats)} values, "
                    f"the others {length}"
                )
            checked[name] = floats
        if not length or length > MAX_POINTS_PER_REPORT:
            raise ValueError(
                f"series {spec.name!r}: a report carries 1 to {MAX_POINTS_PER_REPORT} points, "
                f"got {length or 0}"
            )
        return cls(name=spec.name, start=start, values=checked)

    def join(self, later: SeriesPoints) -> SeriesPoints:
        """These points followed by ``later``'s (which must start where these end)."""
        if later.name != self.name or later.start != self.start + self.size:
            raise ValueError("only the next run of the same series can be joined")
        values: dict[str, list[float] | None] = {}
        for name, column in self.values.items():
            other = later.values.get(name)
            values[name] = None if column is None or other is None else column + other
        return SeriesPoints(name=self.name, start=self.start, values=values)

    def slice(self, lo: int, hi: int | None = None) -> SeriesPoints:
        """Points ``lo`` to ``hi`` (relative to :attr:`start`) as their own run."""
        values = {k: None if v is None else v[lo:hi] for k, v in self.values.items()}
        return SeriesPoints(name=self.name, start=self.start + lo, values=values)

    def to_json(self) -> dict[str, Any]:
        """``{"start", "size", <field>: [...]}``."""
        return {"start": self.start, "size": self.size, **self.values}


def encode_values(fields: Sequence[str], values: Mapping[str, list[float] | None]) -> bytes:
    """Pack ``values`` as consecutive float64 columns in ``fields`` order (null: NaN)."""
    size = next((len(v) for v in values.values() if v is not None), 0)
    packed = array("d")
    for name in fields:
        column = values.get(name)
        packed.extend(column if column is not None else [_NAN] * size)
    if sys.byteorder != "little":
        packed.byteswap()
    return packed.tobytes()


def decode_values(
    fields: Sequence[str], data: bytes, size: int, *, skip: int = 0
) -> dict[str, list[float] | None]:
    """Unpack what :func:`encode_values` packed; points from ``skip`` on.

    A column that is all NaN was null and comes back as None.
    """
    packed = array("d")
    packed.frombytes(data)
    if sys.byteorder != "little":
        packed.byteswap()
    out: dict[str, list[float] | None] = {}
    for i, name in enumerate(fields):
        column = packed[i * size + skip : (i + 1) * size]
        if size > skip and math.isnan(column[0]) and all(math.isnan(v) for v in column):
            out[name] = None
        else:
            out[name] = column.tolist()
    return out
