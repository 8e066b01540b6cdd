"""One configuration under K seeds: a band on the range-test curve and on its bounds.

A single range test reads ``base_lr`` and ``max_lr`` off one curve (Smith 2015,
"Cyclical Learning Rates for Training Neural Networks", arXiv 1506.01186, §3.3),
and that curve carries the noise of one initialisation and one data order. Run
the same configuration under K seeds (cheaply, as one fused job:
:class:`clr.FusedRangeTest` returns one :class:`~clr.RangeTestResult` per
member) and the spread between the curves, and between the bounds read off
each, says how much of the reading belongs to the configuration and how much
to the seed.

* :class:`SeedBand`: per-LR mean, standard deviation, minimum and maximum of the
  smoothed loss (and of the raw loss and the accuracy) over the members still
  running at that LR, and where the band ends (the LR from which fewer than half
  of the members remain).
* :meth:`SeedBand.suggest` -> :class:`SeedSuggestions`: every rule's bounds per
  seed (:func:`clr.suggest_all` on each member), their spread per rule, the
  default rule's bounds across seeds with a ``[low, high]`` band, and a
  confidence that uses the seeds' agreement (:func:`clr.suggest.seed_agreement`).

Example:
    >>> from clr import FusedRangeTest
    >>> from clr.workloads import build_workload
    >>> ws = [build_workload("digits_mlp", seed=s) for s in range(4)]
    >>> test = FusedRangeTest([w.model for w in ws], "sgd", ws[0].loss_fn)
    >>> band = SeedBand.from_results(test.run([w.train_loader for w in ws], num_iter=100))
    >>> s = band.suggest()
    >>> s.max_lr_band[0] <= s.default.max_lr <= s.max_lr_band[1]
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from clr._result import RangeTestResult
from clr.exceptions import SuggestionError
from clr.suggest import (
    METHODS,
    Curve,
    Suggestion,
    Suggestions,
    seed_agreement,
    suggest_all,
)

__all__ = ["BandStats", "MethodSpread", "SeedBand", "SeedSuggestions"]

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class BandStats:
    """One quantity across seeds, per LR, over the members still running there.

    Attributes:
        mean: the mean at each LR.
        std: the population standard deviation (``ddof=0``, numpy's default;
            0 where one member remains).
        min, max: the lowest and highest member at each LR.
    """

    mean: FloatArray
    std: FloatArray
    min: FloatArray
    max: FloatArray

    @classmethod
    def of(cls, padded: FloatArray) -> BandStats:
        """The statistics of a ``(K, L)`` array whose stopped members are NaN."""
        return cls(
            mean=np.nanmean(padded, axis=0),
            std=np.nanstd(padded, axis=0),
            min=np.nanmin(padded, axis=0),
            max=np.nanmax(padded, axis=0),
        )

    def to_dict(self) -> dict[str, list[float]]:
        """A JSON-ready dict of the four arrays as lists."""
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "min": self.min.tolist(),
            "max": self.max.tolist(),
        }


@dataclass(frozen=True)
class MethodSpread:
    """One rule's bounds across the seeds that it gave bounds for.

    Attributes:
        method: the rule, one of :data:`clr.METHODS`.
        members: the members (indices into the results) the rule succeeded on.
        base_lrs, max_lrs: the rule's bounds on each of those members.
        base_lr, max_lr: their geometric means.
        ratio: ``max / min`` of ``max_lrs`` (1.0 when they agree exactly).
        log10_std: standard deviation of ``log10(max_lrs)`` in decades (``ddof=0``).
    """

    method: str
    members: list[int]
    base_lrs: list[float]
    max_lrs: list[float]
    base_lr: float
    max_lr: float
    ratio: float
    log10_std: float

    @classmethod
    def of(cls, method: str, members: list[int], items: list[Suggestion]) -> MethodSpread:
        """The spread of ``items`` (one rule's suggestion on each of ``members``)."""
        base = [float(s.base_lr) for s in items]
        top = [float(s.max_lr) for s in items]
        return cls(
            method=method,
            members=list(members),
            base_lrs=base,
            max_lrs=top,
            base_lr=_geomean(base),
            max_lr=_geomean(top),
            ratio=max(top) / min(top),
            log10_std=float(np.std(np.log10(top))),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {
            "method": self.method,
            "members": list(self.members),
            "base_lrs": list(self.base_lrs),
            "max_lrs": list(self.max_lrs),
            "base_lr": self.base_lr,
            "max_lr": self.max_lr,
            "ratio": self.ratio,
            "log10_std": self.log10_std,
        }


def _geomean(values: Sequence[float]) -> float:
    return float(math.exp(float(np.mean(np.log(values)))))


@dataclass
class SeedSuggestions:
    """Bounds read off K seeds' curves, with a band and a confidence from their agreement.

    Attributes:
        default: the default rule's bounds across seeds: the geometric mean of
            each seed's ``base_lr`` and of each seed's ``max_lr`` (see
            :meth:`SeedBand.suggest` for why), as a :class:`~clr.Suggestion`
            whose ``evidence`` lists every seed's values.
        base_lr_band, max_lr_band: ``(low, high)``: the lowest and highest seed's
            ``base_lr`` and ``max_lr``; ``default`` lies inside both.
        confidence: in ``[0, 1]``: the median over the seeds of
            :func:`clr.suggest_all`'s confidence given every seed's ``max_lr``
            (``seed_max_lrs``), so seeds within 2x raise it and a wider spread
            lowers it.
        seed_spread: ``max / min`` of the seeds' default ``max_lr``.
        spreads: rule name -> :class:`MethodSpread`, for each rule that gave
            bounds on at least one seed.
        members: each member's :class:`~clr.Suggestions` (seed-aware), or
            ``None`` for a member no rule could read.
        failed: member index -> why :func:`clr.suggest_all` raised on it.
        warnings: sentences for a person about the seeds as a whole (each
            member's own warnings are in ``members``).
        informative: ``True`` when at least half of the members that gave
            bounds have an informative curve (:attr:`clr.Suggestions.informative`).
    """

    default: Suggestion
    base_lr_band: tuple[float, float]
    max_lr_band: tuple[float, float]
    confidence: float
    seed_spread: float
    spreads: dict[str, MethodSpread]
    members: list[Suggestions | None]
    failed: dict[int, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    informative: bool = True

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (members as their ``to_dict()`` or ``None``)."""
        return {
            "default_method": self.default.method,
            "default": self.default.to_dict(),
            "base_lr_band": [float(v) for v in self.base_lr_band],
            "max_lr_band": [float(v) for v in self.max_lr_band],
            "confidence": float(self.confidence),
            "seed_spread": float(self.seed_spread),
            "spreads": {m: s.to_dict() for m, s in self.spreads.items()},
            "members": [None if s is None else s.to_dict() for s in self.members],
            "failed": {str(k): v for k, v in self.failed.items()},
            "warnings": list(self.warnings),
            "informative": bool(self.informative),
        }


@dataclass
class SeedBand:
    """K range tests of one configuration under K seeds, as a band over one LR grid.

    The members share the LR grid up to where each stopped (a fused range test
    of one sweep gives exactly that: :class:`clr.FusedRangeTest`); a member that
    stopped early (it diverged, or its loss was not finite) leaves the band
    there, so ``n`` falls and the statistics at higher LRs are over the members
    that remain. Build it with :meth:`from_results`.

    Attributes:
        lrs: the grid: the longest member's LRs.
        n: how many members are still running at each LR.
        smoothed: :class:`BandStats` of the recorded smoothed loss
            (``smoothed_losses``, the range test's bias-corrected EMA).
        losses: :class:`BandStats` of the raw loss.
        accuracies: :class:`BandStats` of the accuracy, when every member has one.
        end: how many leading points have at least half of the members running
            (``2 * n >= K``): the band proper is ``lrs[:end]``.
        members: the K results, in the order given.
        seeds: the members' seeds, when given (:meth:`from_results`): the
            warnings of :meth:`suggest` then name a member by its seed, not
            its index.

    Example:
        >>> import numpy as np
        >>> from clr import RangeTestResult
        >>> def run(losses):
        ...     lrs = np.logspace(-3, 0, 4)[: len(losses)]
        ...     return RangeTestResult(lrs, np.asarray(losses), np.asarray(losses), 1e-3, 1.0,
        ...                            4, "exp", 0.95, 5.0, "completed", "", "cpu", 0.0)
        >>> band = SeedBand.from_results([run([2.0, 1.0, 0.5, 0.7]), run([2.0, 1.2, 0.9])])
        >>> band.n.tolist(), band.smoothed.mean.tolist()[:2], band.end, band.end_lr
        ([2, 2, 2, 1], [2.0, 1.1], 4, None)
    """

    lrs: FloatArray
    n: IntArray
    smoothed: BandStats
    losses: BandStats
    accuracies: BandStats | None
    end: int
    members: list[RangeTestResult]
    seeds: list[int] | None = None

    @classmethod
    def from_results(
        cls, results: Sequence[RangeTestResult], *, seeds: Sequence[int] | None = None
    ) -> SeedBand:
        """The band of K results of one configuration (``FusedRangeTest(...).run(...)``).

        Args:
            results: K >= 1 results whose LRs agree (to a relative 1e-9) up to
                where each stopped.
            seeds: the K results' seeds, to name the members by in warnings
                (default: their indices).

        Returns:
            The :class:`SeedBand`.

        Raises:
            ValueError: no results, a result with no points, LRs that differ
                between results (the message names the result and the step), or
                ``seeds`` of another length than ``results``.
        """
        members = list(results)
        if not members:
            raise ValueError("results must hold at least one RangeTestResult, got none")
        if seeds is not None and len(seeds) != len(members):
            raise ValueError(
                f"seeds must hold {len(members)} seeds, one per result, got {len(seeds)}"
            )
        for k, r in enumerate(members):
            if r.steps_run == 0:
                raise ValueError(f"results[{k}] has no points")
        longest = max(members, key=lambda r: r.steps_run)
        grid = np.asarray(longest.lrs, dtype=np.float64)
        for k, r in enumerate(members):
            own = np.asarray(r.lrs, dtype=np.float64)
            close = np.isclose(own, grid[: own.shape[0]], rtol=1e-9, atol=0.0)
            if not close.all():
                i = int(np.argmin(close))
                raise ValueError(
                    f"results must share one LR grid: results[{k}] has lr {own[i]:.6g} at step "
                    f"{i} where the longest result has {grid[i]:.6g}"
                )
        n_points = grid.shape[0]

        def padded(arrays: list[FloatArray]) -> FloatArray:
            out = np.full((len(arrays), n_points), np.nan)
            for k, a in enumerate(arrays):
                out[k, : a.shape[0]] = a
            return out

        steps = np.array([r.steps_run for r in members], dtype=np.int64)
        n = (steps[:, None] > np.arange(n_points)[None, :]).sum(axis=0).astype(np.int64)
        accs = [r.accuracies for r in members]
        accuracies = None
        if all(a is not None for a in accs):
            accuracies = BandStats.of(padded([np.asarray(a, dtype=np.float64) for a in accs]))
        return cls(
            lrs=grid.copy(),
            n=n,
            smoothed=BandStats.of(padded([np.asarray(r.smoothed_losses) for r in members])),
            losses=BandStats.of(padded([np.asarray(r.losses) for r in members])),
            accuracies=accuracies,
            end=int(np.count_nonzero(2 * n >= len(members))),
            members=members,
            seeds=None if seeds is None else [int(v) for v in seeds],
        )

    @property
    def num_members(self) -> int:
        """K, the number of members."""
        return len(self.members)

    def _name(self, k: int) -> int:
        """Member ``k``'s seed, or ``k`` when the seeds are not known."""
        return k if self.seeds is None else self.seeds[k]

    @property
    def end_lr(self) -> float | None:
        """The first LR at which fewer than half of the members remain, or ``None``."""
        return None if self.end >= self.lrs.shape[0] else float(self.lrs[self.end])

    def mean_curve(self) -> Curve:
        """The band's mean as a :class:`clr.suggest.Curve`, up to where the band ends."""
        e = self.end
        return Curve(
            lrs=self.lrs[:e].copy(),
            losses=self.losses.mean[:e].copy(),
            smoothed=self.smoothed.mean[:e].copy(),
            accuracies=None if self.accuracies is None else self.accuracies.mean[:e].copy(),
        )

    def suggest(
        self,
        *,
        iters_per_epoch: int | None = None,
        epochs_per_half_cycle: float = 4,
        cycles: int = 4,
        use_accuracy: bool = False,
    ) -> SeedSuggestions:
        """Every rule's bounds on every seed, and the default rule's bounds across seeds.

        Each member's curve is read by :func:`clr.suggest_all` as a single run
        would be; then again with every seed's default ``max_lr``
        (``seed_max_lrs``), so its confidence uses the seeds' agreement. The
        bounds across seeds are the **geometric mean** of the seeds' bounds,
        with the lowest and highest seed as the band, rather than the
        suggestion on the mean curve: the rules read the loss against
        ``log10(lr)``, so the centre of K readings is their mean in log space;
        each seed's reading is one the rules were built and measured for
        (``bench.suggestion_quality``), while the mean of curves whose minima
        sit at different LRs is flatter and wider than any of them, its
        minimum pulled towards the seed that turns up first and its tail
        ending where members diverge; and a band of readings always contains
        its geometric mean, which a reading of another curve need not.

        Args:
            iters_per_epoch, epochs_per_half_cycle, cycles, use_accuracy: as
                :func:`clr.suggest_all`.

        Returns:
            :class:`SeedSuggestions`.

        Raises:
            SuggestionError: no member's curve could be read (the first member's
                error is raised).
            ValueError: as :func:`clr.suggest_all` for the cycle arguments.
        """
        kwargs: dict[str, Any] = {
            "iters_per_epoch": iters_per_epoch,
            "epochs_per_half_cycle": epochs_per_half_cycle,
            "cycles": cycles,
            "use_accuracy": use_accuracy,
        }
        single: dict[int, Suggestions] = {}
        errors: dict[int, SuggestionError] = {}
        for k, r in enumerate(self.members):
            try:
                single[k] = suggest_all(r, **kwargs)
            except SuggestionError as exc:
                errors[k] = exc
        if not single:
            raise errors[0]
        ok = sorted(single)
        max_lrs = [single[k].default.max_lr for k in ok]
        seeded = {k: suggest_all(self.members[k], seed_max_lrs=max_lrs, **kwargs) for k in ok}
        members: list[Suggestions | None] = [seeded.get(k) for k in range(self.num_members)]

        spreads: dict[str, MethodSpread] = {}
        for method in METHODS:
            got = [(k, s) for k in ok for s in seeded[k].items if s.method == method]
            if got:
                spreads[method] = MethodSpread.of(method, [k for k, _ in got], [s for _, s in got])
        defaults = [seeded[k].default for k in ok]
        across = MethodSpread.of(defaults[0].method, ok, defaults)
        names = sorted({s.method for s in defaults})
        warnings: list[str] = []
        _, seed_warning = seed_agreement(max_lrs, 1.0)
        if seed_warning is not None:
            warnings.append(seed_warning)
        if len(names) > 1:
            warnings.append(
                f"the seeds' default bounds come from different methods ({', '.join(names)}): "
                "the default method failed on some seeds (see members)"
            )
        for k, err in errors.items():
            warnings.append(
                f"seed {self._name(k)} gave no bounds ({err}); the band uses {len(ok)} seeds"
            )
        if len(ok) == 1:
            warnings.append(
                "only one seed gave bounds: its confidence is a single run's, with no "
                "agreement across seeds to back it"
            )
        uninformative = [k for k in ok if not seeded[k].informative]
        informative = 2 * len(uninformative) <= len(ok)
        if uninformative:
            named = ", ".join(str(self._name(k)) for k in uninformative)
            warnings.append(
                f"{len(uninformative)} of {len(ok)} seeds show too little to read bounds from "
                f"(seeds {named}: see their warnings)"
            )
        ratio = across.ratio
        rationale = (
            f"geometric mean over {len(ok)} seeds of {across.method}'s bounds: base_lr "
            f"{across.base_lr:.3g} (seeds from {min(across.base_lrs):.3g} to "
            f"{max(across.base_lrs):.3g}), max_lr {across.max_lr:.3g} (seeds from "
            f"{min(across.max_lrs):.3g} to {max(across.max_lrs):.3g}, {ratio:.1f}x)"
        )
        default = replace(
            defaults[0],
            base_lr=across.base_lr,
            max_lr=across.max_lr,
            rationale=rationale,
            evidence={
                "seeds": len(ok),
                "members": list(ok),
                "methods": [s.method for s in defaults],
                "base_lrs": list(across.base_lrs),
                "max_lrs": list(across.max_lrs),
            },
        )
        return SeedSuggestions(
            default=default,
            base_lr_band=(min(across.base_lrs), max(across.base_lrs)),
            max_lr_band=(min(across.max_lrs), max(across.max_lrs)),
            confidence=float(np.median([seeded[k].confidence for k in ok])),
            seed_spread=ratio,
            spreads=spreads,
            members=members,
            failed={k: str(e) for k, e in errors.items()},
            warnings=warnings,
            informative=informative,
        )
