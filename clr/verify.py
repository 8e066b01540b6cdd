"""Bounds proven by training: short CLR runs at a few candidate bound pairs, best kept.

An LR range test reads bounds off how the training loss moves while the LR
rises (Smith 2015, "Cyclical Learning Rates for Training Neural Networks",
arXiv 1506.01186, §3.3). When the model needs more steps per LR than the test
gives, the curve shows nothing (:func:`clr.suggest.curve_verdict` tells), and
every rule's reading of it is a guess. Training settles it: a few short runs of
one triangular cycle each, from the same initialisation, at candidate bound
pairs, compared by validation loss, with successive halving (Jamieson and
Talwalkar 2016, "Non-stochastic Best Arm Identification and Hyperparameter
Optimization", arXiv 1502.07943) spending most of the budget on the candidates
that stay in front.

The planning here is plain Python (no torch): :func:`candidates_for` picks the
pairs, :func:`plan_halving` the rounds within a declared budget, and
:func:`select_survivors` who goes on. :func:`verify_bounds` runs that plan in
this process, each round's candidates as one fused run
(:class:`~clr.fused_train.FusedTrainer`) when the model fuses, one after another
with :class:`~clr.Trainer` when it does not; a service runs the same plan with
each candidate as a training job of its own and puts the results together with
:meth:`Verification.from_rounds`.

Example::

    suggestions = suggest_all(result)            # may raise: then pass None
    verdict = curve_verdict(result)
    v = verify_bounds(
        lambda seed: build_workload("digits_mlp", seed=seed),
        suggestions, verdict, full_run_iterations=704, seed=0,
    )
    v.winner.base_lr, v.winner.max_lr, v.runs_spent   # within v.budget_runs
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from clr.exceptions import VerificationError
from clr.suggest import CurveVerdict, Suggestions

if TYPE_CHECKING:
    from torch import Tensor, nn
    from torch.optim import Optimizer

__all__ = [
    "DEFAULT_BUDGET_RUNS",
    "DEFAULT_MIN_ITERATIONS",
    "LADDER_DIVISOR",
    "LADDER_HIGH",
    "LADDER_LOW",
    "LADDER_TOP_RUNGS",
    "OPTIMIZER_SPEC_KEYS",
    "PLATEAU_TOLERANCE",
    "SAME_MAX_LR_DECADES",
    "TIE_TOLERANCE",
    "Candidate",
    "CandidateResult",
    "HalvingPlan",
    "OptimizerFactory",
    "TrainingSetup",
    "Verification",
    "VerificationRound",
    "candidates_for",
    "plan_halving",
    "select_survivors",
    "verify_bounds",
]

DEFAULT_BUDGET_RUNS = 1.0
"""Verification's compute cap, in full training runs (one full CLR run costs 1.0).

Why 1.0: the issue's yardstick is a brute-force grid of 13 LRs over two
settings, about 26 full runs, and verified bounds must cost at most 10 % of it:
2.6 runs for the whole answer. That answer is the range test, the verification
and the final training with the winner (1.0 run, as the grid's own winner run
is part of its 26). A budget of 1.0 leaves up to 0.6 run for the range test: a
300-step test is about 0.1 of a training of a few thousand iterations, and
0.2-0.4 of the bench's 256-512-iteration ones at its 100 steps. The issue allows
up to 1.5, which leaves only 0.1 run for the range test (the bench's first
run, with 1.5 and 300-step tests, cost 11.7-14.1 % of the grid).

Measured (``python -m bench.verified_bounds --seeds 5``, docs/verified_bounds.md):
with 1.0, range tests of 100 steps and 4 candidates (two halving rounds of
4 x 1/8 and 2 x 1/4 run), range test + verification + final training cost
2.18-2.39 full runs, 8.4-9.2 % of the grid, on all seven workloads, and came
within 1 accuracy point of the grid's best on four of them (digits_cnn,
digits_mlp, mnist1d_mlp, and gru_recall, where the default suggestion trains to
chance and verification to 100 %). With 1.5 and 300-step tests the first bench
run cost 11.7-14.1 %. At 1.0 a first round of 4 candidates gets 1/8 of a full
run each (20 iterations or more once a full run is 160), which is why
:func:`candidates_for` returns at most 4 by default.
"""

DEFAULT_MIN_ITERATIONS = 20
"""Fewest iterations a first-round candidate gets (one cycle of 10 up, 10 down).

Below that a run's validation loss tells more about the initialisation than
about the bounds; :func:`plan_halving` refuses such a plan rather than run it.
"""

LADDER_LOW = 1e-4
"""Lowest ``max_lr`` of the coarse ladder: one rung per decade from here."""

LADDER_HIGH = 10.0
"""Highest ``max_lr`` of the ladder, when the range test did not diverge lower."""

LADDER_DIVISOR = 4.0
"""``base_lr = max_lr / 4`` on the ladder: the ratio of the default method.

``max_fraction`` (``clr.suggest.DEFAULT_METHOD``, chosen by measurement) sets
``base_lr = max_lr / 4`` (Smith 2015 §3.3: a third or a quarter of ``max_lr``);
the ladder uses the same ratio, so a rung and a suggestion differ in
``max_lr`` only and are compared on that.
"""

SAME_MAX_LR_DECADES = 0.15
"""Two pairs whose ``max_lr`` are closer than this (in ``log10``) count as one."""

LADDER_TOP_RUNGS = 3
"""An uninformative curve's ladder keeps only its top rungs: this many decades below the ceiling.

A model on a plateau leaves it sooner at a higher LR, and a verification of
about one full run cannot show a low-LR candidate leaving it at all: on the
bench's GRU a fixed LR of 1 first moves the loss after 109-128 steps, 0.1 after
239-260. So the budget goes to fewer, longer runs at the rungs just below the
divergence (or below :data:`LADDER_HIGH`).
"""

TIE_TOLERANCE = 0.01
"""Validation losses within this fraction of the round's best count as a tie.

On a plateau every candidate ends at the same loss give or take noise (the
bench's GRU: 2.080-2.083 against ln 8 = 2.079, 0.1 % apart), and ranking that
noise drops the candidates that would train. Ties go to the higher ``max_lr``
when the curve was uninformative and to the lower one otherwise
(:func:`select_survivors`).
"""

PLATEAU_TOLERANCE = 0.10
"""On an uninformative curve, losses within this fraction of the best count as a tie.

The same 10 % drop :func:`clr.suggest.curve_verdict` asks of a range-test curve
before it calls it informative: a short run that did not beat the others by as
much has not shown that it left the plateau. On the bench's GRU the lowest
rung's noise (2.080) and the top rung's overshoot (2.106, LR 1 early in its
cycle) are 1.2 % apart, and the top rung is the one that trains.
"""

_NEIGHBOUR_FACTORS: tuple[tuple[float, str], ...] = (
    (3.0, "x3"),
    (1 / 3.0, "/3"),
    (10.0, "x10"),
    (0.1, "/10"),
)
_MIN_CANDIDATES = 3  # fewer than this: add neighbours of the first, so there is a choice
_DEEP_DIVISOR = 10.0  # the deep variant of the default pair: base_lr = max_lr / 10


# --------------------------------------------------------------------------- candidates


@dataclass(frozen=True)
class Candidate:
    """One pair of CLR bounds to try.

    Attributes:
        base_lr: lower bound of the cycle.
        max_lr: upper bound of the cycle.
        source: where it came from: a method of :data:`clr.suggest.METHODS`
            (``"paper"``, ``"steepest"``, ...), a ladder rung (``"ladder:0.01"``)
            or a neighbour of the first candidate (``"neighbour:x3"``,
            ``"neighbour:/3"``, ``"neighbour:x10"``, ``"neighbour:/10"``).
    """

    base_lr: float
    max_lr: float
    source: str

    def __post_init__(self) -> None:
        for name in ("base_lr", "max_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value!r}")
        if not self.base_lr < self.max_lr:
            raise ValueError(
                f"base_lr must be below max_lr, got base_lr={self.base_lr!r} and "
                f"max_lr={self.max_lr!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {"base_lr": float(self.base_lr), "max_lr": float(self.max_lr), "source": self.source}


def _close(a: float, b: float) -> bool:
    return abs(math.log10(a) - math.log10(b)) < SAME_MAX_LR_DECADES


def _ladder(verdict: CurveVerdict) -> list[float]:
    """One ``max_lr`` per decade from :data:`LADDER_LOW`, strictly below the divergence.

    Without a divergence the ladder runs up to :data:`LADDER_HIGH` however far
    the range test went: a test that never diverged says nothing about what
    lies above it. With one at ``d``, only rungs below ``d`` (a cycle that
    peaks where a quick ramp already blew up wastes its run); when even
    :data:`LADDER_LOW` is not below it, the decade under ``d``.
    """
    decades = [
        10.0**k for k in range(round(math.log10(LADDER_LOW)), 1 + round(math.log10(LADDER_HIGH)))
    ]
    ceiling = verdict.diverged_at
    if ceiling is None:
        return decades
    rungs = [r for r in decades if r < ceiling]
    return rungs or [10.0 ** (math.ceil(math.log10(ceiling)) - 1)]


def _same_pair(a: Candidate, b: Candidate) -> bool:
    return _close(a.max_lr, b.max_lr) and _close(a.base_lr, b.base_lr)


def candidates_for(
    suggestions: Suggestions | None, verdict: CurveVerdict, *, max_candidates: int = 4
) -> list[Candidate]:
    """The bound pairs worth a short training run, for a curve and its suggestions.

    In this order, each skipped when both its bounds are within
    :data:`SAME_MAX_LR_DECADES` of a pair already taken, and only while fewer
    than ``max_candidates`` are taken:

    1. the default method's pair, when there are ``suggestions``;
    2. when the curve is informative, around that pair: ``max_lr`` x3 (only
       below ``verdict.diverged_at``) and /3, both with the default's
       ``base_lr`` ratio, and the default ``max_lr`` with ``base_lr = max_lr /
       10`` (a cycle twice as deep in log LR); then every other method's pair.
       Measured on the bench (docs/verified_bounds.md), the grid's best
       ``max_lr`` lies from a quarter of to 4.6 times the default's, and on two
       of seven workloads it prefers ``base_lr = max_lr / 10``; the rules' own
       pairs all sit at or below the default, so they alone never explore
       above it;
    3. when the curve is uninformative (``verdict.informative`` is ``False``)
       or there are no suggestions, the top :data:`LADDER_TOP_RUNGS` rungs of a
       coarse ladder: ``max_lr`` one per decade up to 10, strictly below
       ``verdict.diverged_at`` when the test diverged, ``base_lr = max_lr / 4``
       (:data:`LADDER_DIVISOR`); the highest kept when not all fit. The other
       methods' pairs are left out: on such a curve they read noise;
    4. while there are fewer than 3, neighbours of the first candidate:
       ``max_lr`` x3, /3, x10, /10 (same ``base_lr`` ratio), each only below
       the divergence, so that there is something to compare.

    Args:
        suggestions: :func:`~clr.suggest_all`'s answer, or ``None`` when it
            raised (the curve gave no bounds).
        verdict: :func:`~clr.suggest.curve_verdict` of the same curve.
        max_candidates: at most this many pairs are returned. The default, 4,
            is what :data:`DEFAULT_BUDGET_RUNS` can train for 20 iterations or
            more each in the first round of successive halving when a full run
            is 160 iterations or longer.

    Returns:
        Between 1 and ``max_candidates`` candidates, the default method's
        pair first when there is one.

    Raises:
        ValueError: ``max_candidates`` below 1.

    Example:
        >>> from clr.suggest import CurveVerdict
        >>> flat = CurveVerdict(False, "the loss never moved", (1e-7, 10.0), None)
        >>> [c.source for c in candidates_for(None, flat)]
        ['ladder:0.1', 'ladder:1', 'ladder:10']
    """
    if isinstance(max_candidates, bool) or not isinstance(max_candidates, int):
        raise ValueError(f"max_candidates must be an integer >= 1, got {max_candidates!r}")
    if max_candidates < 1:
        raise ValueError(f"max_candidates must be an integer >= 1, got {max_candidates!r}")
    taken: list[Candidate] = []
    ceiling = verdict.diverged_at

    def below(max_lr: float) -> bool:
        return ceiling is None or max_lr < ceiling

    def add(candidate: Candidate) -> None:
        if len(taken) < max_candidates and not any(_same_pair(candidate, c) for c in taken):
            taken.append(candidate)

    suggested = (
        []
        if suggestions is None
        else [suggestions.default] + [s for s in suggestions.items if s is not suggestions.default]
    )
    suggested_pairs = [Candidate(s.base_lr, s.max_lr, s.method) for s in suggested]
    if suggested_pairs:
        add(suggested_pairs[0])
    if suggestions is not None and verdict.informative:
        first = suggested_pairs[0]
        ratio = first.max_lr / first.base_lr
        for factor, name in _NEIGHBOUR_FACTORS[:2]:
            mx = first.max_lr * factor
            if below(mx):
                add(Candidate(mx / ratio, mx, f"neighbour:{name}"))
        if ratio < _DEEP_DIVISOR:
            add(Candidate(first.max_lr / _DEEP_DIVISOR, first.max_lr, "neighbour:base/10"))
        for pair in suggested_pairs[1:]:
            add(pair)
    else:
        rungs = [
            r
            for r in _ladder(verdict)[-LADDER_TOP_RUNGS:]
            if not any(_close(r, c.max_lr) for c in taken)
        ]
        room = max(0, max_candidates - len(taken))
        for rung in rungs[len(rungs) - room :] if room < len(rungs) else rungs:
            add(Candidate(rung / LADDER_DIVISOR, rung, f"ladder:{rung:g}"))
    if taken and len(taken) < _MIN_CANDIDATES:
        first = taken[0]
        ratio = first.max_lr / first.base_lr
        for factor, name in _NEIGHBOUR_FACTORS:
            if len(taken) >= _MIN_CANDIDATES:
                break
            mx = first.max_lr * factor
            if below(mx):
                add(Candidate(mx / ratio, mx, f"neighbour:{name}"))
    return taken


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class HalvingPlan:
    """Successive-halving rounds within a declared compute budget.

    Every candidate of a round trains from the same initialisation for the
    round's iterations (one triangular cycle, ``step_size_up = iterations //
    2``); the best ``1 / eta`` of them (rounded up) go on to the next round,
    which trains each ``eta`` times longer. After the last round one is left,
    and it is not trained again: it is the winner.

    Attributes:
        rounds: ``(candidates, iterations)`` per round: how many candidates
            train, and for how many iterations each.
        full_run_iterations: iterations of the full training the bounds are
            for (the unit of ``budget_runs``).
        budget_runs: the cap, in full runs.
        eta: the halving factor.
    """

    rounds: tuple[tuple[int, int], ...]
    full_run_iterations: int
    budget_runs: float
    eta: int

    @property
    def total_iterations(self) -> int:
        """Iterations the plan spends: the sum over rounds of candidates x iterations."""
        return sum(n * iters for n, iters in self.rounds)

    @property
    def budget_iterations(self) -> int:
        """The cap in iterations: ``floor(budget_runs * full_run_iterations)``."""
        return math.floor(self.budget_runs * self.full_run_iterations)

    @property
    def total_runs(self) -> float:
        """:attr:`total_iterations` in full runs."""
        return self.total_iterations / self.full_run_iterations

    def keep(self, round_index: int) -> int:
        """How many candidates of round ``round_index`` go on (1 after the last: the winner)."""
        if not 0 <= round_index < len(self.rounds):
            raise IndexError(f"round_index must be in [0, {len(self.rounds)}), got {round_index}")
        nxt = round_index + 1
        return self.rounds[nxt][0] if nxt < len(self.rounds) else 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: the rounds, the totals and the budget."""
        return {
            "rounds": [{"candidates": n, "iterations": i} for n, i in self.rounds],
            "total_iterations": self.total_iterations,
            "budget_iterations": self.budget_iterations,
            "total_runs": self.total_runs,
            "budget_runs": float(self.budget_runs),
            "full_run_iterations": self.full_run_iterations,
            "eta": self.eta,
        }


def _int_arg(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def plan_halving(
    n_candidates: int,
    *,
    full_run_iterations: int,
    budget_runs: float = DEFAULT_BUDGET_RUNS,
    eta: int = 2,
    min_iterations: int = DEFAULT_MIN_ITERATIONS,
) -> HalvingPlan:
    """Successive-halving rounds for ``n_candidates`` within ``budget_runs`` full runs.

    Round sizes: ``n, ceil(n / eta), ceil(n / eta**2), ...`` down to the last
    round with more than one candidate (a lone survivor is not trained: it is
    the winner). Round ``r`` trains each of its candidates for ``i0 * eta**r``
    iterations, capped at ``full_run_iterations`` (a short run longer than the
    real one tells nothing more), where ``i0`` is the largest even number with
    ``sum(n_r * i0 * eta**r) <= budget_runs * full_run_iterations``: each
    round costs about the same, later rounds on fewer candidates for longer.
    Every round's iterations are even, so one triangular cycle of
    ``step_size_up = iterations // 2`` fills it exactly.

    Args:
        n_candidates: how many pairs to compare (1: nothing to train).
        full_run_iterations: iterations of the full training the bounds are for.
        budget_runs: the cap on the plan's iterations, in full runs
            (:data:`DEFAULT_BUDGET_RUNS`, 1.0, says why).
        eta: each round keeps ``ceil(1 / eta)`` of its candidates and trains
            them ``eta`` times longer.
        min_iterations: fewest iterations of a first-round run.

    Returns:
        The :class:`HalvingPlan`; ``total_iterations <= budget_iterations``.

    Raises:
        VerificationError: (a ``ValueError``) the budget cannot give each
            first-round candidate ``min_iterations``; the message says how
            many it could and what would fit.
        ValueError: an argument out of range, naming it.

    Example:
        >>> plan = plan_halving(4, full_run_iterations=704)
        >>> plan.rounds, plan.total_iterations, plan.budget_iterations
        (((4, 88), (2, 176)), 704, 704)
    """
    n = _int_arg("n_candidates", n_candidates, 1)
    full = _int_arg("full_run_iterations", full_run_iterations, 1)
    eta = _int_arg("eta", eta, 2)
    min_iters = _int_arg("min_iterations", min_iterations, 2)
    if (
        isinstance(budget_runs, bool)
        or not isinstance(budget_runs, int | float)
        or not (math.isfinite(budget_runs) and budget_runs > 0)
    ):
        raise ValueError(f"budget_runs must be a positive finite number, got {budget_runs!r}")
    sizes: list[int] = []
    size = n
    while size > 1:
        sizes.append(size)
        size = math.ceil(size / eta)
    budget = math.floor(budget_runs * full)
    if not sizes:
        return HalvingPlan((), full, float(budget_runs), eta)
    cap = full - full % 2 if full >= 2 else 2
    weight = sum(s * eta**r for r, s in enumerate(sizes))
    first = 2 * (budget // (2 * weight))
    if cap < min_iters:
        raise VerificationError(
            f"full_run_iterations={full} is below min_iterations={min_iters}: a short run "
            "cannot be shorter than the real one"
        )
    if first < min_iters:
        raise VerificationError(
            f"budget_runs={budget_runs:g} of full_run_iterations={full} ({budget} iterations) "
            f"gives each of the {n} candidates {first} iterations in the first of "
            f"{len(sizes)} rounds, below min_iterations={min_iters}: it needs budget_runs >= "
            f"{min_iters * weight / full:.3g}, or fewer candidates"
            + _fewer_hint(budget, eta, min_iters, n)
        )
    rounds = tuple((s, min(first * eta**r, cap)) for r, s in enumerate(sizes))
    return HalvingPlan(rounds, full, float(budget_runs), eta)


def _fewer_hint(budget: int, eta: int, min_iters: int, n: int) -> str:
    """`` (at most k fit)``: the most candidates this budget can take, when any can."""
    for k in range(n - 1, 1, -1):
        sizes, size = [], k
        while size > 1:
            sizes.append(size)
            size = math.ceil(size / eta)
        weight = sum(s * eta**r for r, s in enumerate(sizes))
        if 2 * (budget // (2 * weight)) >= min_iters:
            return f" (at most {k} fit)"
    return ""


# --------------------------------------------------------------------------- selection


def _loss_or_none(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def select_survivors(
    results: Mapping[int, float | None],
    keep: int,
    *,
    candidates: Sequence[Candidate] | None = None,
    informative: bool = True,
    tolerance: float | None = None,
) -> list[int]:
    """The ``keep`` candidates with the lowest validation loss, best first.

    Losses within ``tolerance`` (a fraction of the best loss's size) of the
    best are a tie: noise cannot tell them apart. When ``candidates`` is given,
    the tied go first by ``max_lr``: the higher first when the curve was not
    ``informative`` (a model on a plateau leaves it sooner at a higher LR, and
    a round in which no candidate moved says nothing else), the lower first
    otherwise (the safer pair); then the rest by loss (equal losses the same
    way). A ``None``, NaN or
    infinite loss (a run that diverged, or a job that gave no result) sorts
    after every finite one, lower ``max_lr`` first. Remaining ties go to the
    lower index.

    Args:
        results: candidate index -> final validation loss (or ``None``).
        keep: how many to return (all of them, when there are fewer).
        candidates: the pairs the indices refer to, for the tie-break.
        informative: whether the range-test curve was informative
            (:attr:`clr.suggest.CurveVerdict.informative`): which way ties go.
        tolerance: how close to the best a loss counts as a tie, as a
            fraction of the best; by default :data:`TIE_TOLERANCE` when
            ``informative`` and :data:`PLATEAU_TOLERANCE` when not; 0 for
            exact ties only.

    Returns:
        Candidate indices, best first.

    Raises:
        ValueError: ``keep`` below 1, ``tolerance`` negative, or an index with
            no candidate.

    Example:
        >>> select_survivors({0: 0.9, 1: float("nan"), 2: 0.4, 3: None}, 2)
        [2, 0]
    """
    keep = _int_arg("keep", keep, 1)
    if tolerance is None:
        tolerance = TIE_TOLERANCE if informative else PLATEAU_TOLERANCE
    if (
        isinstance(tolerance, bool)
        or not isinstance(tolerance, int | float)
        or not (math.isfinite(tolerance) and tolerance >= 0)
    ):
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance!r}")
    if candidates is not None:
        missing = [i for i in results if not 0 <= i < len(candidates)]
        if missing:
            raise ValueError(
                f"results name candidates {missing} but there are {len(candidates)} candidates"
            )
    losses = {i: _loss_or_none(v) for i, v in results.items()}
    finite = [v for v in losses.values() if v is not None]
    best = min(finite) if finite else None
    toward = 1.0 if informative else -1.0

    def order(index: int) -> tuple[int, float, float, int]:
        loss = losses[index]
        max_lr = candidates[index].max_lr if candidates is not None else 0.0
        if loss is None:
            return (2, 0.0, max_lr, index)
        if best is not None and loss - best <= tolerance * abs(best):
            return (0, 0.0, toward * max_lr, index)
        return (1, loss, toward * max_lr, index)

    return sorted(results, key=order)[:keep]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class CandidateResult:
    """One candidate's short run in one round.

    Attributes:
        candidate: index into :attr:`Verification.candidates`.
        iterations: iterations it actually trained (fewer than planned when
            it stopped on a non-finite loss).
        val_loss: final validation loss, ``None`` when the run diverged or
            gave no finite value.
        val_accuracy: final validation metric, when the workload has one.
    """

    candidate: int
    iterations: int
    val_loss: float | None
    val_accuracy: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (non-finite values as ``None``)."""
        return {
            "candidate": self.candidate,
            "iterations": self.iterations,
            "val_loss": _loss_or_none(self.val_loss),
            "val_accuracy": _loss_or_none(self.val_accuracy),
        }


@dataclass(frozen=True)
class VerificationRound:
    """One round of successive halving: who trained, how it went, who went on.

    Attributes:
        iterations: iterations planned for each candidate of the round.
        results: one :class:`CandidateResult` per candidate trained.
        kept: indices of the candidates that went on (the winner, after the
            last round), best first.
        fused: whether the round's candidates trained as one fused run
            (:class:`~clr.fused_train.FusedTrainer`), ``False`` when they
            trained one after another, ``None`` when not known (rounds a
            service ran, put together by :meth:`Verification.from_rounds`).
        execution: a sentence saying how the round ran, e.g. ``"3 candidates
            fused (stacked)"`` or ``"2 candidates one by one: fuse=False"``;
            empty when not known.
    """

    iterations: int
    results: tuple[CandidateResult, ...]
    kept: tuple[int, ...]
    fused: bool | None = None
    execution: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {
            "iterations": self.iterations,
            "results": [r.to_dict() for r in self.results],
            "kept": list(self.kept),
            "fused": self.fused,
            "execution": self.execution,
        }


@dataclass(frozen=True)
class Verification:
    """The verified bounds and the evidence for them.

    Attributes:
        winner: the pair with the lowest validation loss in the last round
            (the only candidate, when there was one).
        winner_index: its index in ``candidates``.
        candidates: every pair compared.
        rounds: the rounds as run.
        plan: the plan they followed (its budget declared before any run).
        iterations_spent: iterations actually trained, all runs together.
        warnings: sentences for a person (no finite loss in the last round, ...).
    """

    winner: Candidate
    winner_index: int
    candidates: tuple[Candidate, ...]
    rounds: tuple[VerificationRound, ...]
    plan: HalvingPlan
    iterations_spent: int
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def runs_spent(self) -> float:
        """:attr:`iterations_spent` in full training runs."""
        return self.iterations_spent / self.plan.full_run_iterations

    @property
    def budget_iterations(self) -> int:
        """The declared cap, in iterations."""
        return self.plan.budget_iterations

    @property
    def budget_runs(self) -> float:
        """The declared cap, in full runs."""
        return self.plan.budget_runs

    @classmethod
    def from_rounds(
        cls,
        candidates: Sequence[Candidate],
        plan: HalvingPlan,
        rounds: Sequence[Sequence[CandidateResult]],
        *,
        informative: bool = True,
    ) -> Verification:
        """Put the results of a plan's rounds together (how a service that ran them does it).

        Each round keeps :meth:`HalvingPlan.keep` of its candidates by
        :func:`select_survivors`; the winner is the best of the last round, or
        the only candidate when the plan had no round.

        Args:
            candidates: the pairs, as :func:`candidates_for` gave them.
            plan: the plan the rounds followed.
            rounds: per round, the result of every candidate trained in it.
            informative: whether the curve was informative (how
                :func:`select_survivors` breaks ties).

        Returns:
            The :class:`Verification`.

        Raises:
            ValueError: no candidates, more rounds than the plan has, or a
                result naming a candidate that does not exist.
        """
        if not candidates:
            raise ValueError("candidates must not be empty")
        if len(rounds) > len(plan.rounds):
            raise ValueError(f"got {len(rounds)} rounds for a plan of {len(plan.rounds)}")
        done: list[VerificationRound] = []
        warnings: list[str] = []
        winner_index = 0
        for r, results in enumerate(rounds):
            losses = {res.candidate: res.val_loss for res in results}
            kept = select_survivors(
                losses, plan.keep(r), candidates=candidates, informative=informative
            )
            done.append(VerificationRound(plan.rounds[r][1], tuple(results), tuple(kept)))
            if kept:
                winner_index = kept[0]
        if (
            done
            and done[-1].results
            and all(_loss_or_none(res.val_loss) is None for res in done[-1].results)
        ):
            warnings.append(
                f"no candidate of the last round ({len(done[-1].results)} of them) ended with a "
                "finite validation loss: every one diverged; the winner is the one with the "
                "lowest max_lr: lower the bounds or check the model"
            )
        return cls(
            winner=candidates[winner_index],
            winner_index=winner_index,
            candidates=tuple(candidates),
            rounds=tuple(done),
            plan=plan,
            iterations_spent=sum(res.iterations for results in rounds for res in results),
            warnings=tuple(warnings),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: winner, candidates, rounds, compute spent and budget."""
        return {
            "winner": self.winner.to_dict(),
            "winner_index": self.winner_index,
            "candidates": [c.to_dict() for c in self.candidates],
            "rounds": [r.to_dict() for r in self.rounds],
            "plan": self.plan.to_dict(),
            "iterations_spent": self.iterations_spent,
            "runs_spent": self.runs_spent,
            "budget_iterations": self.budget_iterations,
            "budget_runs": float(self.budget_runs),
            "warnings": list(self.warnings),
        }


# --------------------------------------------------------------------------- local runner


class TrainingSetup(Protocol):
    """What ``build(seed)`` returns: a :class:`~clr.workloads.WorkloadInstance` has it all."""

    @property
    def model(self) -> nn.Module: ...

    @property
    def train_loader(self) -> Iterable[Any]: ...

    @property
    def val_loader(self) -> Iterable[Any]: ...

    @property
    def loss_fn(self) -> Callable[[Any, Any], Tensor]: ...

    @property
    def metric_fn(self) -> Callable[[Any, Any], Tensor] | None: ...


OptimizerFactory: TypeAlias = "Callable[[Iterable[nn.Parameter], float], Optimizer]"
"""``factory(parameters, lr) -> Optimizer``; the default is SGD with momentum 0.9."""

OPTIMIZER_SPEC_KEYS = ("name", "momentum", "weight_decay", "nesterov", "betas", "eps")
"""The keys of :func:`verify_bounds`'s ``optimizer_spec``: :func:`clr.make_optimizer`'s."""


def _optimizer_spec(spec: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """``(name, hyperparameters)`` of ``spec``, checked by building it once."""
    if spec is None:
        return "sgd", {"momentum": 0.9}
    from torch import nn, zeros

    from clr.optim import make_optimizer

    if not isinstance(spec, Mapping):
        raise ValueError(f"optimizer_spec must be a mapping, got {spec!r}")
    unknown = sorted(str(k) for k in spec if k not in OPTIMIZER_SPEC_KEYS)
    if unknown:
        raise ValueError(
            f"optimizer_spec has unknown keys {unknown}; allowed: {list(OPTIMIZER_SPEC_KEYS)}"
        )
    if "name" not in spec:
        raise ValueError(
            f"optimizer_spec must name the optimizer ('name': 'sgd', 'adam' or 'adamw'), "
            f"got {dict(spec)!r}"
        )
    name = spec["name"]
    hyper = {k: v for k, v in spec.items() if k != "name"}
    if "betas" in hyper:
        hyper["betas"] = tuple(hyper["betas"])
    make_optimizer(name, [nn.Parameter(zeros(1))], lr=0.0, **hyper)  # raises when bad
    return name, hyper


def _sgd(params: Iterable[nn.Parameter], lr: float) -> Optimizer:
    from clr.optim import make_optimizer

    return make_optimizer("sgd", params, lr=lr, momentum=0.9)


def _factory(name: str, hyper: Mapping[str, Any]) -> OptimizerFactory:
    """The :data:`OptimizerFactory` that builds ``optimizer_spec``'s optimizer."""
    from clr.optim import make_optimizer

    def factory(params: Iterable[nn.Parameter], lr: float) -> Optimizer:
        return make_optimizer(name, params, lr=lr, **hyper)

    return factory


def _why_not_fused(probe: TrainingSetup, *, fuse: bool, custom: bool) -> str | None:
    """Why the candidates cannot train as one fused run, ``None`` when they can."""
    if not fuse:
        return "fuse=False"
    if custom:
        return "a custom optimizer factory cannot be fused (optimizer_spec can)"
    import torch

    from clr._batch import split_batch
    from clr.fused import fusable

    with torch.random.fork_rng(devices=[]):  # the probe's loader draws nothing for the runs
        batch = next(iter(probe.train_loader), None)
    if batch is None:
        return "the training loader yielded no batches"
    inputs, _ = split_batch(batch)
    probe.model.train()
    ok, reason = fusable(probe.model, inputs)
    return None if ok else reason


def _plural(n: int) -> str:
    return f"{n} candidate" if n == 1 else f"{n} candidates"


def _train_one(
    build: Callable[[int], TrainingSetup],
    seed: int,
    initial: Mapping[str, Tensor],
    candidate: Candidate,
    index: int,
    iterations: int,
    optimizer: OptimizerFactory,
) -> CandidateResult:
    from clr.schedules import create_scheduler
    from clr.train import Trainer, TrainProgress

    setup = build(seed)
    setup.model.load_state_dict(initial)
    opt = optimizer(setup.model.parameters(), candidate.base_lr)
    sched = create_scheduler(
        opt,
        "triangular",
        base_lr=candidate.base_lr,
        max_lr=candidate.max_lr,
        step_size_up=max(1, iterations // 2),
    )
    blew_up = False

    def watch(progress: TrainProgress) -> None:
        nonlocal blew_up
        blew_up = blew_up or not all(math.isfinite(v) for v in progress.losses)

    trainer = Trainer(setup.model, opt, setup.loss_fn, metric_fn=setup.metric_fn, scheduler=sched)
    result = trainer.run(
        setup.train_loader,
        val_loader=setup.val_loader,
        iterations=iterations,
        callback=watch,
        should_stop=lambda: blew_up,
        keep_traces=False,
    )
    loss = None if blew_up else _loss_or_none(result.val_loss)
    return CandidateResult(index, result.iterations, loss, _loss_or_none(result.val_accuracy))


def _train_fused(
    build: Callable[[int], TrainingSetup],
    seed: int,
    initial: Mapping[str, Tensor],
    pairs: Sequence[Candidate],
    indices: Sequence[int],
    iterations: int,
    optimizer: tuple[str, Mapping[str, Any]],
) -> tuple[list[CandidateResult], str]:
    """The candidates ``indices`` as one :class:`~clr.fused_train.FusedTrainer` run.

    Returns their results in ``indices``' order and the fused path taken.
    """
    from clr.fused_train import FusedTrainer
    from clr.policies import make_schedule

    setups = [build(seed) for _ in indices]
    for setup in setups:
        setup.model.load_state_dict(initial)
    schedules = [
        make_schedule(
            "triangular",
            base_lr=pairs[i].base_lr,
            max_lr=pairs[i].max_lr,
            step_size_up=max(1, iterations // 2),
        )
        for i in indices
    ]
    name, hyper = optimizer
    trainer = FusedTrainer(
        [s.model for s in setups],
        name,
        setups[0].loss_fn,
        metric_fn=setups[0].metric_fn,
        **hyper,
    )
    runs = trainer.run(
        [s.train_loader for s in setups],
        schedules,
        iterations=iterations,
        val_loader=setups[0].val_loader,
    )
    results = [
        CandidateResult(
            index,
            run.iterations,
            None if run.stop_reason == "diverged" else _loss_or_none(run.val_loss),
            _loss_or_none(run.val_accuracy),
        )
        for index, run in zip(indices, runs, strict=True)
    ]
    return results, trainer.fused.path


def verify_bounds(
    build: Callable[[int], TrainingSetup],
    suggestions: Suggestions | None,
    verdict: CurveVerdict,
    *,
    full_run_iterations: int,
    seed: int = 0,
    budget_runs: float = DEFAULT_BUDGET_RUNS,
    eta: int = 2,
    min_iterations: int = DEFAULT_MIN_ITERATIONS,
    max_candidates: int = 4,
    candidates: Sequence[Candidate] | None = None,
    optimizer: OptimizerFactory | None = None,
    optimizer_spec: Mapping[str, Any] | None = None,
    fuse: bool = True,
    callback: Callable[[int, CandidateResult], None] | None = None,
) -> Verification:
    """Train short CLR runs at candidate bounds in this process and keep the best.

    The candidates (:func:`candidates_for`, unless given) and the plan
    (:func:`plan_halving`) are fixed before anything trains, so the compute is
    declared up front: ``plan.total_iterations <= budget_runs *
    full_run_iterations``. Every run starts from the same initialisation: the
    weights of ``build(seed)``'s model, loaded into each fresh ``build(seed)``
    (which also gives each the same data order), and trains one triangular
    cycle (``step_size_up = iterations // 2``); its final validation loss ranks
    it. A run whose training loss turns NaN or infinite stops there and ranks
    last.

    Each round's candidates train as **one fused run**
    (:class:`~clr.fused_train.FusedTrainer`: the K models stacked, each member
    with its own loader and triangular schedule) when the model fuses
    (:func:`clr.fused.fusable`, asked once on ``build(seed)``'s model and first
    batch) and the optimizer is one the fused loop reproduces (the default, or
    ``optimizer_spec``). Otherwise, with a custom ``optimizer`` factory, or with
    ``fuse=False``, they train one after another with :class:`~clr.Trainer`.
    Both give the same validation losses to float tolerance (and so the same
    winner); :attr:`VerificationRound.fused` and
    :attr:`VerificationRound.execution` say which ran and, when unfused, why.
    A diverged member is masked in the fused run (its ``iterations`` end at the
    non-finite loss) and ranks last as an unfused one does. Loaders whose order
    comes from the global RNG (a shuffling ``DataLoader``) give the fused
    members other orders than one-by-one runs would get; the built-in
    workloads' loaders carry their own seed and give the same.

    Args:
        build: ``build(seed)`` returns a fresh model with its loaders, loss
            and metric (a :class:`~clr.workloads.WorkloadInstance`, e.g.
            ``lambda s: build_workload("digits_mlp", seed=s)``).
        suggestions: the range test's suggestions, ``None`` when it gave none.
        verdict: :func:`~clr.suggest.curve_verdict` of the same curve.
        full_run_iterations: iterations of the full training the bounds are for.
        seed: the seed every run is built with.
        budget_runs: compute cap in full runs (see :data:`DEFAULT_BUDGET_RUNS`).
        eta: halving factor.
        min_iterations: fewest iterations of a first-round run.
        max_candidates: passed to :func:`candidates_for`.
        candidates: compare these pairs instead of :func:`candidates_for`'s.
        optimizer: ``factory(parameters, lr)``; SGD with momentum 0.9 by
            default. A factory cannot be fused: its rounds train one by one.
        optimizer_spec: the optimizer as :func:`clr.make_optimizer`'s
            arguments (keys :data:`OPTIMIZER_SPEC_KEYS`, ``name`` required,
            e.g. ``{"name": "adam", "betas": (0.95, 0.999)}``), which both the
            fused and the unfused runs build; not with ``optimizer``.
        fuse: ``False`` trains every candidate on its own, even when the
            model fuses.
        callback: called with ``(round_index, result)`` for each candidate
            after its run (after the round's fused run, in the round's order).

    Returns:
        The :class:`Verification`: winner, every run's validation loss and
        accuracy, the compute spent, the budget and how each round ran.

    Raises:
        VerificationError: the budget is too small for the candidates (before
            anything trains).
        ValueError: bad arguments, naming them.
        OptimizerError: ``optimizer_spec`` names an unknown optimizer or an
            impossible hyperparameter.
    """
    pairs = (
        list(candidates)
        if candidates is not None
        else candidates_for(suggestions, verdict, max_candidates=max_candidates)
    )
    if not pairs:
        raise ValueError("candidates must not be empty")
    if optimizer is not None and optimizer_spec is not None:
        raise ValueError("pass optimizer or optimizer_spec, not both")
    if not isinstance(fuse, bool):
        raise ValueError(f"fuse must be a bool, got {fuse!r}")
    plan = plan_halving(
        len(pairs),
        full_run_iterations=full_run_iterations,
        budget_runs=budget_runs,
        eta=eta,
        min_iterations=min_iterations,
    )
    spec = _optimizer_spec(optimizer_spec)
    if optimizer is not None:
        factory = optimizer
    elif optimizer_spec is not None:
        factory = _factory(*spec)
    else:
        factory = _sgd
    informative = suggestions is not None and verdict.informative
    probe = build(seed)
    initial = {k: v.detach().clone() for k, v in probe.model.state_dict().items()}
    unfused = (
        _why_not_fused(probe, fuse=fuse, custom=optimizer is not None) if plan.rounds else None
    )
    del probe
    rounds: list[list[CandidateResult]] = []
    executions: list[tuple[bool, str]] = []
    alive = list(range(len(pairs)))
    for r, (_, iterations) in enumerate(plan.rounds):
        if unfused is None:
            results, path = _train_fused(build, seed, initial, pairs, alive, iterations, spec)
            executions.append((True, f"{_plural(len(alive))} fused ({path})"))
            if callback is not None:
                for res in results:
                    callback(r, res)
        else:
            results = []
            for index in alive:
                res = _train_one(build, seed, initial, pairs[index], index, iterations, factory)
                results.append(res)
                if callback is not None:
                    callback(r, res)
            executions.append((False, f"{_plural(len(alive))} one by one: {unfused}"))
        rounds.append(results)
        losses = {res.candidate: res.val_loss for res in results}
        alive = select_survivors(losses, plan.keep(r), candidates=pairs, informative=informative)
    done = Verification.from_rounds(pairs, plan, rounds, informative=informative)
    return replace(
        done,
        rounds=tuple(
            replace(rnd, fused=fused, execution=execution)
            for rnd, (fused, execution) in zip(done.rounds, executions, strict=True)
        ),
    )
