"""Result documents: what a finished (or running) job's ``result`` holds, per kind.

A range test's :class:`RangeTestOutcome` (its summary, every rule's suggested
bounds, the verification's evidence), a training's :class:`TrainingOutcome` and
a sweep's :class:`SweepResult` (the paper's table). The API shows a range
test's result as :class:`RangeTestResultView` (the bounds have their own route).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "DEFAULT_BOUNDS_CYCLES",
    "VERIFIED_METHOD",
    "BoundsBrief",
    "CandidateDoc",
    "ChildFailure",
    "FusedRun",
    "EpochRecord",
    "GridPointResult",
    "JobResult",
    "PolicyCurve",
    "RangeTestOutcome",
    "RangeTestResultView",
    "RangeTestSummary",
    "SeedBandDoc",
    "SeedSpreadDoc",
    "Spread",
    "SuggestionDoc",
    "SuggestionsDoc",
    "SweepBounds",
    "SweepResult",
    "SweepTableRow",
    "TrainingOutcome",
    "VerificationDoc",
    "VerificationRoundDoc",
    "VerifiedBoundsDoc",
]

VERIFIED_METHOD = "verified"
"""The method name of a verified winner among a range test's suggestions."""

DEFAULT_BOUNDS_CYCLES = 4
"""Cycles of a full training run (the paper's advice)."""


class JobResult(BaseModel):
    """Base of every kind's result document (stored in ``jobs.result``)."""

    def to_json_dict(self) -> dict[str, Any]:
        """Strict-JSON form: non-finite floats become ``null``."""
        loaded: dict[str, Any] = json.loads(self.model_dump_json())
        return loaded


# --------------------------------------------------------------------------- range tests


class SuggestionDoc(BaseModel):
    """One rule's bounds (``clr.Suggestion.to_dict()``)."""

    model_config = ConfigDict(extra="allow")

    method: str
    base_lr: float
    max_lr: float
    rationale: str
    evidence: dict[str, Any] = Field(default_factory=dict)
    step_size: int | None = None
    stop_iteration: int | None = None
    cycles: int | None = None


class SuggestionsDoc(BaseModel):
    """Every rule's bounds for one curve (``clr.Suggestions.to_dict()``)."""

    model_config = ConfigDict(extra="allow")

    default_method: str
    default: SuggestionDoc
    items: list[SuggestionDoc]
    confidence: float
    noise: float
    warnings: list[str] = Field(default_factory=list)
    step_size: int | None = None
    stop_iteration: int | None = None
    cycles: int | None = None
    failed: dict[str, str] = Field(default_factory=dict)


class RangeTestSummary(BaseModel):
    """How a range test went (``clr.RangeTestResult.to_dict()`` without the curve)."""

    model_config = ConfigDict(extra="allow")

    stop_reason: str
    stop_detail: str
    steps_run: int
    seconds: float
    device: str
    skipped_steps: int = 0
    start_lr: float
    end_lr: float
    num_iter: int
    sweep: str
    smoothing: float
    diverge_th: float


class CandidateDoc(BaseModel):
    """One bound pair a verification tried, and how it did in each round it ran."""

    index: int
    base_lr: float
    max_lr: float
    source: str = Field(description="where it came from: a method's name, or 'ladder:1e-2'")
    val_loss: list[float | None] = Field(
        default_factory=list, description="its validation loss after each round it ran"
    )
    val_accuracy: list[float | None] = Field(default_factory=list)
    jobs: list[uuid.UUID] = Field(default_factory=list, description="its training per round")
    failed: str | None = Field(default=None, description="why its last run failed, if it did")


class VerificationRoundDoc(BaseModel):
    """One round of successive halving: which candidates ran, for how long."""

    round: int
    size: int = Field(description="candidates the plan gives this round")
    iterations: int = Field(description="training iterations of each candidate this round")
    candidates: list[int] = Field(
        default_factory=list,
        description="indexes into the verification's candidates (empty until it starts)",
    )


class VerifiedBoundsDoc(BaseModel):
    """The bound pair that trained best."""

    base_lr: float
    max_lr: float
    source: str
    val_loss: float | None = None
    val_accuracy: float | None = None


class VerificationDoc(BaseModel):
    """Bounds proven by training (:mod:`core.verification`): the plan, the evidence and
    the winner.

    ``status`` is ``running`` while candidates train, then ``succeeded`` (a
    winner), ``failed`` (no candidate finished: ``reason``) or ``cancelled``.
    ``budget_iterations`` is declared before any candidate runs;
    ``spent_iterations`` never exceeds it.
    """

    status: Literal["running", "succeeded", "failed", "cancelled"]
    informative: bool = Field(description="whether the curve itself located the bounds")
    full_run_iterations: int
    budget_runs: float
    budget_iterations: int
    spent_iterations: int = 0
    candidates: list[CandidateDoc] = Field(default_factory=list)
    rounds: list[VerificationRoundDoc] = Field(default_factory=list)
    winner: VerifiedBoundsDoc | None = None
    reason: str | None = None

    @property
    def spent_runs(self) -> float:
        """Compute spent, in full training runs."""
        return self.spent_iterations / max(1, self.full_run_iterations)


class SeedSpreadDoc(BaseModel):
    """One rule's bounds across the seeds it gave bounds for (``clr.MethodSpread``).

    Attributes:
        method: the rule.
        seeds: the seeds it gave bounds for.
        base_lrs, max_lrs: its bounds on each of those seeds.
        base_lr, max_lr: their geometric means.
        ratio: ``max / min`` of ``max_lrs`` (1.0 when the seeds agree exactly).
    """

    model_config = ConfigDict(extra="forbid")

    method: str
    seeds: list[int]
    base_lrs: list[float]
    max_lrs: list[float]
    base_lr: float
    max_lr: float
    ratio: float


class SeedBandDoc(BaseModel):
    """A range test run under several seeds (``seeds``): how it ran and the bounds
    across the seeds (``clr.SeedBand`` and ``clr.SeedSuggestions``).

    The ``curve`` series is the first seed's and the ``band`` series the
    smoothed loss across seeds per LR. The range test's own ``suggestions`` are
    the first seed's curve read with every seed's default ``max_lr``, so their
    confidence uses the seeds' agreement.

    Attributes:
        seeds: the seeds, the first one the stored curve's.
        fused: the seeds ran as one fused run (``clr.FusedRangeTest``); False:
            one after another (``reason`` says why).
        path: how the fused members ran: ``stacked`` (batched matrix products
            over stacked weights) or ``vmap``; None when not fused.
        reason: one sentence: how the seeds ran, or why not fused.
        steps_run: each seed's points, in ``seeds``' order.
        stop_reasons: why each seed's sweep ended (``completed``, ``diverged``, ...).
        end_lr: the first LR at which fewer than half of the seeds still run
            (the band proper ends there); None when at least half reach the end.
        default: the default rule's bounds across seeds: the geometric mean of
            the seeds' ``base_lr`` and of their ``max_lr``; None when no seed's
            curve gave bounds.
        base_lr_band, max_lr_band: ``[low, high]``: the lowest and highest
            seed's bound; ``default`` lies within both.
        seed_spread: ``max / min`` of the seeds' default ``max_lr``.
        confidence: the median over the seeds of their confidence given every
            seed's ``max_lr``, in [0, 1].
        spreads: each rule's bounds across the seeds it gave bounds for.
        warnings: sentences for a person about the seeds as a whole.
        failed: the seeds whose curve gave no bounds (the seed, as text: why).
        no_bounds_reason: why there are no bounds across seeds (no seed gave any).
    """

    model_config = ConfigDict(extra="forbid")

    seeds: list[int]
    fused: bool
    path: Literal["stacked", "vmap"] | None = None
    reason: str
    steps_run: list[int]
    stop_reasons: list[str]
    end_lr: float | None = None
    default: SuggestionDoc | None = None
    base_lr_band: tuple[float, float] | None = None
    max_lr_band: tuple[float, float] | None = None
    seed_spread: float | None = None
    confidence: float | None = None
    spreads: list[SeedSpreadDoc] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    failed: dict[str, str] = Field(default_factory=dict)
    no_bounds_reason: str | None = None


class _ToDict(Protocol):
    def to_dict(self) -> dict[str, Any]: ...


class RangeTestOutcome(JobResult):
    """A finished range test: its summary and either bounds or why there are none
    (under several seeds, ``seed_band`` too: the summary and bounds are then the
    first seed's curve's)."""

    model_config = ConfigDict(extra="forbid")

    summary: RangeTestSummary
    suggestions: SuggestionsDoc | None = None
    no_bounds_reason: str | None = None
    verification: VerificationDoc | None = None
    seed_band: SeedBandDoc | None = Field(
        default=None,
        description="A range test under several seeds: the band across them and its bounds",
    )

    @model_validator(mode="after")
    def _bounds_or_reason(self) -> RangeTestOutcome:
        if (self.suggestions is None) == (self.no_bounds_reason is None):
            raise ValueError("give either suggestions or no_bounds_reason, not both or neither")
        return self

    def bounds(self) -> SuggestionsDoc | None:
        """The suggestions to use: with a verified winner, it comes first as method
        ``verified`` and is the default; the curve's own suggestions follow. None
        when there are no bounds at all."""
        verification = self.verification
        winner = None if verification is None else verification.winner
        if winner is None or verification is None:
            return self.suggestions
        plan = self.suggestions.default if self.suggestions is not None else None
        spent = verification.spent_runs
        loss = "?" if winner.val_loss is None else f"{winner.val_loss:.4g}"
        verified = SuggestionDoc(
            method=VERIFIED_METHOD,
            base_lr=winner.base_lr,
            max_lr=winner.max_lr,
            rationale=(
                f"proven by training: of {len(verification.candidates)} candidate pairs, "
                f"{winner.source}'s trained to the lowest validation loss ({loss}) in "
                f"{len(verification.rounds)} round(s) of successive halving, spending "
                f"{spent:.2f} of {verification.budget_runs:g} full runs"
            ),
            evidence={"source": winner.source, "val_loss": winner.val_loss},
            step_size=None if plan is None else plan.step_size,
            stop_iteration=None if plan is None else plan.stop_iteration,
            cycles=None if plan is None else plan.cycles,
        )
        if self.suggestions is None:
            reason = self.no_bounds_reason or "the curve gave no bounds"
            return SuggestionsDoc(
                default_method=VERIFIED_METHOD,
                default=verified,
                items=[verified],
                confidence=0.0,
                noise=0.0,
                warnings=[
                    f"the curve alone gave no bounds ({reason}); these were found by "
                    "training a coarse LR ladder"
                ],
                step_size=verification.full_run_iterations // (2 * DEFAULT_BOUNDS_CYCLES),
                stop_iteration=verification.full_run_iterations,
                cycles=DEFAULT_BOUNDS_CYCLES,
            )
        doc = self.suggestions
        return doc.model_copy(
            update={
                "default_method": VERIFIED_METHOD,
                "default": verified,
                "items": [verified, *doc.items],
            }
        )

    @classmethod
    def from_clr(
        cls,
        result: _ToDict,
        suggestions: _ToDict | None,
        *,
        no_bounds_reason: str | None = None,
    ) -> RangeTestOutcome:
        """Build from ``clr`` objects (a ``clr.RangeTestResult`` and ``clr.Suggestions``:
        anything with their ``to_dict()``); the curve itself is stored as chunks, not here."""
        summary = {
            k: v
            for k, v in result.to_dict().items()
            if k not in ("lrs", "losses", "smoothed_losses", "accuracies")
        }
        return cls(
            summary=RangeTestSummary.model_validate(summary),
            suggestions=None
            if suggestions is None
            else SuggestionsDoc.model_validate(suggestions.to_dict()),
            no_bounds_reason=no_bounds_reason,
        )


class BoundsBrief(BaseModel):
    """The default suggestion in a line, for lists; every method's is at
    ``/range-tests/{id}/bounds``."""

    method: str
    base_lr: float
    max_lr: float
    confidence: float


class RangeTestResultView(BaseModel):
    """How a finished range test went; ``bounds`` is the default suggestion in brief,
    every method's with its evidence is at ``/range-tests/{id}/bounds``."""

    model_config = ConfigDict(from_attributes=True)

    summary: RangeTestSummary
    no_bounds_reason: str | None = None
    verification: VerificationDoc | None = None
    seed_band: SeedBandDoc | None = None
    bounds: BoundsBrief | None = None

    @model_validator(mode="before")
    @classmethod
    def _brief(cls, data: Any) -> Any:
        """From a stored outcome (which has ``suggestions``), the default's brief."""
        if not isinstance(data, dict) or "bounds" in data:
            return data
        suggestions = data.get("suggestions")
        if not isinstance(suggestions, dict) or not isinstance(suggestions.get("default"), dict):
            return data
        default = suggestions["default"]
        brief = {
            "method": default.get("method"),
            "base_lr": default.get("base_lr"),
            "max_lr": default.get("max_lr"),
            "confidence": suggestions.get("confidence"),
        }
        return {**data, "bounds": brief}


# --------------------------------------------------------------------------- trainings


class EpochRecord(BaseModel):
    """One epoch's losses and accuracies (the ``epochs`` series' point)."""

    epoch: int
    iteration: int
    train_loss: float
    train_accuracy: float | None = None
    val_loss: float | None = None
    val_accuracy: float | None = None


class FusedRun(BaseModel):
    """How a training of a parent (a sweep, a verified range test) ran: fused with
    siblings that share its model configuration, or on its own, and why.

    Attributes:
        fused: it ran in one fused loop with other trainings (``members`` > 1), or
            resumed one's checkpoint alone.
        members: trainings in that loop, this one included (1 on its own).
        path: how the members ran: ``stacked`` (batched matrix products over
            stacked weights) or ``vmap`` (``torch.func``); None when not fused.
        jobs: the other members' job ids.
        member_bytes: one member's memory (weights, gradients, optimizer state,
            one batch's activations): measured on CUDA, computed on a CPU.
        capacity: members the device's free memory could hold at once.
        reason: one sentence: how it ran, or why it did not fuse.
    """

    model_config = ConfigDict(extra="forbid")

    fused: bool
    members: int = 1
    path: Literal["stacked", "vmap"] | None = None
    jobs: list[uuid.UUID] = Field(default_factory=list)
    member_bytes: int | None = None
    capacity: int | None = None
    reason: str


class TrainingOutcome(JobResult):
    """A finished training: how it went, its final and best metrics and its artifacts."""

    model_config = ConfigDict(extra="forbid")

    stop_reason: str
    iterations: int
    epochs: int
    cycles: int
    cycle_ends: list[int]
    seconds: float
    device: str
    policy: str
    schedule: dict[str, Any]
    final_train_loss: float | None
    final_val_loss: float | None
    final_val_accuracy: float | None
    best_val_accuracy: float | None
    best_val_iteration: int | None
    ensemble_val_loss: float | None = None
    ensemble_val_accuracy: float | None = None
    ensemble_size: int = 0
    resumed_from: int | None = Field(
        default=None, description="The iteration the last attempt resumed from, if it did"
    )
    artifacts: list[dict[str, Any]] = Field(default_factory=list)
    fusion: FusedRun | None = Field(
        default=None,
        description="A parent's training: fused with its siblings or not, and why",
    )


# --------------------------------------------------------------------------- sweeps


class SweepBounds(BaseModel):
    """What a grid point's trainings use, and where it came from.

    Attributes:
        base_lr, max_lr: the CLR bounds.
        step_size: iterations per half cycle.
        fixed_lr: the fixed policy's LR.
        iterations: every training's budget.
        cycles: that budget in cycles of ``2 * step_size`` (fractional when
            ``whole_cycles`` is false).
        method: the suggestion rule the bounds are from (``verified`` when they
            are the verification's winner).
        fixed_lr_from: how ``fixed_lr`` was chosen (``given``, ``steepest`` or
            ``geometric_mean``).
        range_test: the range test job.
        verified: the bounds were proven by short trainings.
        not_verified: why not, when the sweep asked for verified bounds (the
            verification's reason: its budget too small for a first round, no
            candidate finished, ...); the bounds are then the suggestion's.
    """

    model_config = ConfigDict(extra="forbid")

    base_lr: float
    max_lr: float
    step_size: int
    fixed_lr: float
    iterations: int
    cycles: float
    method: str
    fixed_lr_from: str
    range_test: uuid.UUID | None = None
    verified: bool = False
    not_verified: str | None = None


class Spread(BaseModel):
    """A mean over seeds with its sample standard deviation (None for one seed)."""

    mean: float
    std: float | None
    n: int


class SweepTableRow(BaseModel):
    """One policy at one grid point: the paper's table row.

    Attributes:
        grid, label, policy: which row.
        seeds: the trainings the row has when all are created.
        counts: its trainings by status.
        succeeded, failed: trainings that succeeded and that failed (or were
            cancelled).
        final_val_accuracy, best_val_accuracy: over the succeeded seeds.
        fixed_accuracy: the target: the fixed policy's final mean accuracy at this
            grid point (None while it is unknown or ``fixed`` is not compared).
        iterations_to_fixed: over the succeeded seeds that reached the target,
            the first epoch-end iteration at which each did (fixed's own row uses
            its own mean, which its weaker seeds may never reach).
        reached_fixed: how many succeeded seeds reached it.
        ratio_to_fixed: ``iterations_to_fixed.mean`` over the fixed row's (the
            paper's 0.36x for triangular2 on CIFAR-10).
    """

    grid: int
    label: str
    policy: str
    seeds: int
    counts: dict[str, int]
    succeeded: int
    failed: int
    final_val_accuracy: Spread | None = None
    best_val_accuracy: Spread | None = None
    fixed_accuracy: float | None = None
    iterations_to_fixed: Spread | None = None
    reached_fixed: int = 0
    ratio_to_fixed: float | None = None


class PolicyCurve(BaseModel):
    """Validation accuracy against iteration for one policy at one grid point:
    the mean over the seeds that have a value at each epoch end, their sample
    standard deviation (0 where one seed has) and how many they are; plus the
    policy's cycle ends."""

    grid: int
    policy: str
    iteration: list[int]
    mean: list[float]
    std: list[float]
    n: list[int]
    cycle_ends: list[int] = Field(default_factory=list)


class ChildFailure(BaseModel):
    """A child that did not give what the sweep needed, and why."""

    job_id: uuid.UUID | None
    role: dict[str, Any]
    reason: str


class GridPointResult(BaseModel):
    """One grid point: its configuration, its range test and the bounds it gave."""

    index: int
    label: str
    batch_size: int | None
    optimizer: dict[str, Any]
    weight_decay: float
    range_test: uuid.UUID | None = None
    range_test_status: str | None = None
    bounds: SweepBounds | None = None
    no_bounds_reason: str | None = None


class SweepResult(JobResult):
    """A sweep's result: complete once it has finished, partial while it runs.

    Attributes:
        complete: every child has finished (the table will not change any more).
        children: children the sweep creates when every grid point has bounds.
        counts: the children created so far by status (range tests included).
        points: the grid points with their range tests and bounds.
        table: the paper's table (:class:`SweepTableRow` per grid point and policy).
        curves: validation accuracy against iteration per grid point and policy.
        failures: the children that failed or were cancelled, and the grid
            points whose range test gave no bounds.
    """

    model_config = ConfigDict(extra="forbid")

    complete: bool = False
    children: int
    counts: dict[str, int]
    points: list[GridPointResult]
    table: list[SweepTableRow]
    curves: list[PolicyCurve]
    failures: list[ChildFailure]
