"""Sweeps: the paper's table for a team's own model (the spec, its expansion, the table).

A sweep compares learning-rate policies at the same budget over several seeds,
as Smith's table does (Smith, "Cyclical Learning Rates for Training Neural
Networks", https://arxiv.org/abs/1506.01186, Table 1: CIFAR-10 ``triangular2``
reached the fixed policy's 81.4 % in 25k iterations instead of 70k, 0.36x).
Per *grid point* (one batch size, optimizer and weight decay; one point without
a ``grid``) it runs a range test, takes its bounds (the verified winner when
the range test verified them), and trains every policy with every seed for the
same number of iterations. The table says, per grid point and policy, the final
and best validation accuracy (mean and standard deviation over seeds) and how
many iterations each policy needed to reach the fixed policy's final mean
accuracy, and its ratio to the fixed policy's own.

Everything here is pure and torch-free (the API imports it): :class:`SweepSpec`
validates a request, :func:`grid_points`, :func:`range_test_spec`,
:func:`choose_bounds` and :func:`training_specs` expand it into the children's
specs, :func:`build_table` and :func:`build_result` turn the children's
outcomes into :class:`SweepResult` (complete or partial), and
:func:`render_sweep_plot` draws the comparison.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import statistics
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from clr.exceptions import InvalidWorkloadParams
from clr.policies import POLICIES, recommend_step_size
from clr.workloads import get_workload
from clr_sweep import contracts
from clr_sweep.contracts import (
    MAX_GRID_POINTS,
    MAX_SEEDS,
    MAX_TRAININGS,
    ChildFailure,
    GridPointResult,
    OptimizerSpec,
    PolicyCurve,
    RangeTestOptions,
    Spread,
    SweepBounds,
    SweepGrid,
    SweepRead,
    SweepResult,
    SweepTableRow,
)
from clr_sweep.contracts._validation import canonical_json, located
from core.errors import DomainError
from core.kinds import RANGE_TEST, JobKind, register_kind
from core.models import Job, JobStatus
from core.specs import STORED, JobEstimate, RangeTestOutcome, WorkloadSpec
from core.training import EPOCHS, MAX_ITERATIONS, TRAINING, TrainingOutcome

if TYPE_CHECKING:
    from core.services.parents import Family

__all__ = [
    "MAX_GRID_POINTS",
    "SWEEP",
    "MAX_SEEDS",
    "MAX_TRAININGS",
    "ChildFailure",
    "ChildRun",
    "GridPoint",
    "GridPointResult",
    "NoBounds",
    "PolicyCurve",
    "RangeTestOptions",
    "Spread",
    "SweepBounds",
    "SweepGrid",
    "SweepResult",
    "SweepSpec",
    "SweepTable",
    "SweepTableRow",
    "advance",
    "build_result",
    "build_table",
    "choose_bounds",
    "grid_points",
    "range_test_spec",
    "render_sweep_plot",
    "sweep_plot_panels",
    "training_specs",
]

_REACHED_TOLERANCE = 1e-9
"""An accuracy this close below the target counts as reaching it (a mean of equal
values may differ from them in the last bit)."""

FINISHED = frozenset({"succeeded", "failed", "cancelled"})


def _located(field: str, reason: str) -> ValidationError:
    """A pydantic error located at ``field`` (dotted), for a validator to raise."""
    return located("SweepSpec", field, reason)


# --------------------------------------------------------------------------- the spec


class SweepSpec(contracts.SweepSpec, WorkloadSpec):
    """A sweep (:class:`clr_sweep.contracts.SweepSpec`) checked against its workload:
    the grid's batch sizes are the workload's, and a step size can be recommended
    (4 epochs, :func:`choose_bounds`) when none is given."""

    @model_validator(mode="after")
    def _sweep_workload(self) -> SweepSpec:
        self._check_grid_batch_sizes()
        if self.step_size is None:
            for point in grid_points(self):
                if _iters_per_epoch(self, point) is None:
                    raise _located(
                        "step_size",
                        f"workload {self.workload!r} cannot tell its epoch length before it is "
                        "built, so no step size can be recommended; give step_size or iterations",
                    )
        return self

    def _check_grid_batch_sizes(self) -> None:
        grid = self.grid
        if grid is None or grid.batch_size is None:
            return
        param = next(
            (p for p in get_workload(self.workload).params if p.name == "batch_size"), None
        )
        if param is None:
            raise _located(
                "grid.batch_size", f"workload {self.workload!r} has no batch_size parameter"
            )
        for i, size in enumerate(grid.batch_size):
            try:
                param.validate(size)
            except InvalidWorkloadParams as exc:
                raise _located(f"grid.batch_size.{i}", exc.errors[0]["reason"]) from None

    def total_steps(self) -> int:
        """Progress counts finished children: one range test and the trainings per point."""
        return len(grid_points(self)) * self.children_per_point()

    def config_key(self) -> str:
        """A sweep has no shared configuration lookup: its key covers the spec."""
        payload = {"kind": self.kind, **self.model_dump(mode="json")}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def workload_name(self) -> str | None:
        return self.workload

    def estimate(self) -> JobEstimate | None:
        """None: a sweep runs on no worker, and its children's budget is only known
        once their range test has recommended a step size. Each child is estimated
        (and refused when over the caps) at its own submit, and a refused child is
        one of the sweep's failures."""
        return None


# --------------------------------------------------------------------------- expansion


class GridPoint(BaseModel):
    """One configuration of a sweep: its index, batch size, optimizer and a label."""

    model_config = ConfigDict(frozen=True)

    index: int
    label: str
    batch_size: int | None
    optimizer: OptimizerSpec
    weight_decay: float


def _label(batch_size: int | None, optimizer: OptimizerSpec) -> str:
    parts = [] if batch_size is None else [f"bs={batch_size}"]
    parts += [optimizer.name, f"wd={optimizer.weight_decay:g}"]
    return " ".join(parts)


def grid_points(spec: SweepSpec) -> list[GridPoint]:
    """The sweep's configurations: the grid's cartesian product (batch size, then
    optimizer, then weight decay, each in the order given), or the spec's own
    configuration as the single point."""
    grid = spec.grid or SweepGrid()
    sizes: Sequence[int | None] = grid.batch_size or [spec.batch_size]
    optimizers = grid.optimizer or [spec.optimizer]
    decays: Sequence[float | None] = grid.weight_decay or [None]
    points = []
    for index, (size, optimizer, decay) in enumerate(itertools.product(sizes, optimizers, decays)):
        if decay is not None:
            optimizer = optimizer.model_copy(update={"weight_decay": decay})
        points.append(
            GridPoint(
                index=index,
                label=_label(size, optimizer),
                batch_size=size,
                optimizer=optimizer,
                weight_decay=optimizer.weight_decay,
            )
        )
    return points


def _point_params(spec: SweepSpec, point: GridPoint) -> dict[str, Any]:
    params = dict(spec.params)
    if point.batch_size is not None:
        params["batch_size"] = point.batch_size
    return params


def _iters_per_epoch(spec: SweepSpec, point: GridPoint) -> int | None:
    workload = get_workload(spec.workload)
    return workload.iters_per_epoch(workload.validate_params(_point_params(spec, point)))


def _workload_body(spec: SweepSpec, point: GridPoint, seed: int) -> dict[str, Any]:
    return {
        "workload": spec.workload,
        "params": _point_params(spec, point),
        "optimizer": point.optimizer.model_dump(mode="json"),
        "seed": seed,
        "device": spec.device,
    }


def range_test_spec(spec: SweepSpec, point: GridPoint) -> dict[str, Any]:
    """The body of ``point``'s range test: the point's configuration, the sweep's
    range-test seed (``spec.seed``), :class:`RangeTestOptions`, ``verify`` and
    ``verify_budget``; and, when the sweep's budget is known before the range
    test recommends a step size (``iterations``, or ``step_size`` with
    ``cycles``), ``verify_iterations``: the verification's budget is counted in
    the trainings the sweep will run."""
    body = {
        **_workload_body(spec, point, spec.seed),
        **spec.range_test.model_dump(mode="json"),
        "verify": spec.verify,
        "verify_budget": spec.verify_budget,
    }
    if spec.iterations is not None:
        body["verify_iterations"] = spec.iterations
    elif spec.step_size is not None:
        body["verify_iterations"] = spec.budget_cycles() * 2 * spec.step_size
    return body


class NoBounds(ValueError):
    """A grid point's range test gave nothing to train with (the message says why)."""


def _budget(spec: SweepSpec, recommended: int) -> tuple[int, int]:
    """``(step_size, iterations)`` of the budget, given the recommended step size."""
    if spec.iterations is None:
        step = spec.step_size or recommended
        return step, spec.budget_cycles() * 2 * step
    if spec.step_size is not None or not spec.whole_cycles:
        return spec.step_size or recommended, spec.iterations
    half = spec.iterations // 2  # even: checked at submit
    divisors = [d for d in range(1, math.isqrt(half) + 1) if half % d == 0]
    candidates = {*divisors, *(half // d for d in divisors)}
    step = min(candidates, key=lambda s: (abs(math.log(s / recommended)), s))
    return step, spec.iterations


def choose_bounds(
    spec: SweepSpec,
    point: GridPoint,
    outcome: RangeTestOutcome | Mapping[str, Any],
    *,
    range_test: uuid.UUID | None = None,
    verified: tuple[float, float] | None = None,
) -> SweepBounds:
    """A grid point's bounds, step size, fixed LR and budget from its range test.

    - ``base_lr``/``max_lr``: the verified winner (``verified``) when there is
      one, else the range test's default suggestion (as a training's
      ``bounds_from`` takes it).
    - ``step_size``: the spec's, else the range test's recommendation
      (``suggestions.step_size``: 4 epochs, the paper's 2 to 10), else 4 epochs
      of the point's own batch size; with ``iterations`` and whole cycles, the
      divisor of ``iterations / 2`` nearest it.
    - ``fixed_lr``: the spec's, else the ``steepest`` rule's ``max_lr`` (the LR
      at which the loss falls fastest: fastai's single-LR advice) clipped into
      ``[base_lr, max_lr]`` (so the fixed policy trains inside the range the
      other policies use; the paper's fixed CIFAR-10 LR, 0.001, is its
      ``base_lr``), else the bounds' geometric mean ``sqrt(base_lr * max_lr)``
      when that rule gave nothing.

    Raises:
        NoBounds: the range test found no bounds and none were verified, or the
            budget would be over :data:`~core.training.MAX_ITERATIONS`.
    """
    parsed = RangeTestOutcome.model_validate(outcome)
    suggestions = parsed.suggestions
    if verified is not None:
        base_lr, max_lr = verified
        method = "verified"
    elif suggestions is not None:
        base_lr, max_lr = suggestions.default.base_lr, suggestions.default.max_lr
        method = suggestions.default_method
    else:
        raise NoBounds(f"the range test found no bounds: {parsed.no_bounds_reason}")
    per_epoch = _iters_per_epoch(spec, point)
    recommended = (suggestions.step_size if suggestions is not None else None) or (
        recommend_step_size(per_epoch) if per_epoch is not None else spec.step_size
    )
    if recommended is None:
        raise NoBounds("no step size: the workload cannot tell its epoch length; give step_size")
    step_size, iterations = _budget(spec, recommended)
    if iterations > MAX_ITERATIONS:
        raise NoBounds(
            f"{spec.budget_cycles()} cycles of 2 * {step_size} iterations are {iterations}, over "
            f"{MAX_ITERATIONS} (the most a training may run); give step_size or iterations"
        )
    if spec.fixed_lr is not None:
        fixed_lr, fixed_from = spec.fixed_lr, "given"
    else:
        steepest = next(
            (s for s in (suggestions.items if suggestions else ()) if s.method == "steepest"), None
        )
        if steepest is not None:
            fixed_lr, fixed_from = min(max(steepest.max_lr, base_lr), max_lr), "steepest"
        else:
            fixed_lr, fixed_from = math.sqrt(base_lr * max_lr), "geometric_mean"
    return SweepBounds(
        base_lr=base_lr,
        max_lr=max_lr,
        step_size=step_size,
        fixed_lr=fixed_lr,
        iterations=iterations,
        cycles=iterations / (2 * step_size),
        method=method,
        fixed_lr_from=fixed_from,
        range_test=range_test,
        verified=verified is not None,
    )


def schedule_for(policy: str, bounds: SweepBounds) -> dict[str, Any]:
    """How ``policy`` uses a grid point's bounds, at the budget ``bounds.iterations``.

    Every policy runs the same iterations between the same bounds, so the table
    compares schedules and nothing else:

    - ``fixed``: ``lr = fixed_lr``.
    - ``step``: from ``max_lr``, decays twice, at 1/3 and 2/3 of the budget
      (``step_size = ceil(iterations / 3)``), by ``gamma = sqrt(base_lr /
      max_lr)``: the last third runs at ``base_lr``.
    - ``exp``: from ``max_lr``, ``gamma = (base_lr / max_lr) ** (1 / iterations)``:
      it ends at ``base_lr``.
    - ``triangular``, ``triangular2``: ``base_lr``, ``max_lr``,
      ``step_size_up = step_size``.
    - ``exp_range``: the same, with ``gamma = 0.5 ** (1 / (2 * step_size))``: the
      amplitude halves every cycle, like ``triangular2`` but smoothly.
    - ``one_cycle``: ``max_lr``, ``total_steps = iterations``, starting from
      ``base_lr`` (``div_factor = max_lr / base_lr``).
    - ``cosine_restarts`` (SGDR): ``max_lr``, restarts every cycle
      (``T_0 = 2 * step_size``), annealing to ``eta_min = base_lr``.
    """
    base, top, step = bounds.base_lr, bounds.max_lr, bounds.step_size
    ratio = min(1.0, base / top) if base > 0 else 1.0
    if policy == "fixed":
        return {"policy": policy, "lr": bounds.fixed_lr}
    if policy == "step":
        return {
            "policy": policy,
            "lr": top,
            "step_size": max(1, math.ceil(bounds.iterations / 3)),
            "gamma": math.sqrt(ratio) if ratio > 0 else 1.0,
        }
    if policy == "exp":
        gamma = ratio ** (1 / bounds.iterations) if ratio > 0 else 1.0
        return {"policy": policy, "lr": top, "gamma": gamma}
    if policy in ("triangular", "triangular2"):
        return {"policy": policy, "base_lr": base, "max_lr": top, "step_size_up": step}
    if policy == "exp_range":
        return {
            "policy": policy,
            "base_lr": base,
            "max_lr": top,
            "step_size_up": step,
            "gamma": 0.5 ** (1 / (2 * step)),
        }
    if policy == "one_cycle":
        schedule: dict[str, Any] = {
            "policy": policy,
            "max_lr": top,
            "total_steps": bounds.iterations,
        }
        if 0 < base < top:
            schedule["div_factor"] = min(top / base, 1e6)
        return schedule
    if policy == "cosine_restarts":
        return {"policy": policy, "max_lr": top, "T_0": 2 * step, "eta_min": min(base, top)}
    raise ValueError(f"policy must be one of {list(POLICIES)}, got {policy!r}")


def training_specs(
    spec: SweepSpec, point: GridPoint, bounds: SweepBounds
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(role, body)`` of every training of ``point``: policy by policy (in the
    spec's order), seed by seed, each for ``bounds.iterations`` iterations with
    the schedule :func:`schedule_for` gives. The role is ``{"grid", "policy",
    "seed"}``; the body a :class:`~core.training.TrainingSpec` request."""
    out = []
    for policy in spec.policies:
        schedule = schedule_for(policy, bounds)
        for seed in spec.seeds:
            body = {
                **_workload_body(spec, point, seed),
                "schedule": schedule,
                "iterations": bounds.iterations,
                "whole_cycles": spec.whole_cycles,
            }
            out.append(({"grid": point.index, "policy": policy, "seed": seed}, body))
    return out


# --------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class ChildRun:
    """One child of a sweep as the table reads it.

    Attributes:
        job_id: the child job.
        role: what it is to the sweep (``{"grid", "policy", "seed"}`` for a
            training, ``{"grid", "stage": "range_test"}`` for a range test).
        status: its status (``queued``, ``running``, ``succeeded``, ...).
        result: its result document (a :class:`~core.training.TrainingOutcome`
            for a succeeded training).
        error: why it failed, when it did.
        iteration, val_accuracy: its ``epochs`` series so far (one value per
            epoch record; ``None`` where an epoch has no validation accuracy).
    """

    job_id: uuid.UUID
    role: Mapping[str, Any]
    status: str
    result: Mapping[str, Any] | None = None
    error: str | None = None
    iteration: Sequence[int] = ()
    val_accuracy: Sequence[float | None] = ()

    @property
    def grid(self) -> int | None:
        """The grid point's index, if the role has one."""
        value = self.role.get("grid")
        return value if isinstance(value, int) else None

    @property
    def policy(self) -> str | None:
        """The policy a training runs (None for other children)."""
        value = self.role.get("policy")
        return value if isinstance(value, str) else None

    def outcome(self) -> TrainingOutcome | None:
        """The training's outcome, once it succeeded."""
        return self._outcome

    @cached_property
    def _outcome(self) -> TrainingOutcome | None:
        # validated once: the table reads it several times per run
        if self.status != "succeeded" or self.result is None:
            return None
        return TrainingOutcome.model_validate(self.result)

    def first_reaching(self, target: float) -> int | None:
        """The first epoch record's iteration at which validation accuracy reached
        ``target`` (None if none did)."""
        for at, accuracy in zip(self.iteration, self.val_accuracy, strict=False):
            if accuracy is not None and accuracy >= target - _REACHED_TOLERANCE:
                return int(at)
        return None


def _stdev(values: Sequence[float]) -> float:
    """The sample standard deviation in floats (:func:`statistics.stdev` computes in
    exact fractions: a tenth of a sweep's advance step went there)."""
    mean = math.fsum(values) / len(values)
    return math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (len(values) - 1))


def _spread(values: Sequence[float]) -> Spread | None:
    if not values:
        return None
    std = _stdev(values) if len(values) > 1 else None
    return Spread(mean=statistics.fmean(values), std=std, n=len(values))


class SweepTable(BaseModel):
    """The table rows (grid point by grid point, policies in the spec's order) and
    the curves (the policies with any validation accuracy so far)."""

    rows: list[SweepTableRow]
    curves: list[PolicyCurve]


def _curve(grid: int, policy: str, runs: Sequence[ChildRun]) -> PolicyCurve | None:
    by_iteration: dict[int, list[float]] = {}
    for run in runs:
        if run.status in ("failed", "cancelled"):
            continue
        for at, accuracy in zip(run.iteration, run.val_accuracy, strict=False):
            if accuracy is not None and math.isfinite(accuracy):
                by_iteration.setdefault(int(at), []).append(float(accuracy))
    if not by_iteration:
        return None
    axis = sorted(by_iteration)
    values = [by_iteration[x] for x in axis]
    ends = next((o.cycle_ends for r in runs if (o := r.outcome()) is not None), [])
    return PolicyCurve(
        grid=grid,
        policy=policy,
        iteration=axis,
        mean=[statistics.fmean(v) for v in values],
        std=[_stdev(v) if len(v) > 1 else 0.0 for v in values],
        n=[len(v) for v in values],
        cycle_ends=list(ends),
    )


def build_table(spec: SweepSpec, runs: Sequence[ChildRun]) -> SweepTable:
    """The table and curves from the sweep's trainings so far (other children are
    ignored): complete once every training has finished, partial before.

    The fixed policy's final mean accuracy at a grid point is the target every
    policy's ``iterations_to_fixed`` is measured against; it is known once a
    fixed training there has succeeded (and moves as more do).
    """
    rows: list[SweepTableRow] = []
    curves: list[PolicyCurve] = []
    for point in grid_points(spec):
        at_point = [r for r in runs if r.grid == point.index and r.policy is not None]
        by_policy = {p: [r for r in at_point if r.policy == p] for p in spec.policies}
        fixed_finals = [
            o.final_val_accuracy
            for r in by_policy.get("fixed", [])
            if (o := r.outcome()) is not None and o.final_val_accuracy is not None
        ]
        target = statistics.fmean(fixed_finals) if fixed_finals else None
        point_rows = []
        for policy, policy_runs in by_policy.items():
            outcomes = [(r, o) for r in policy_runs if (o := r.outcome()) is not None]
            reached: list[float] = []
            if target is not None:
                firsts = (r.first_reaching(target) for r, _ in outcomes)
                reached = [float(at) for at in firsts if at is not None]
            counts: dict[str, int] = {}
            for run in policy_runs:
                counts[run.status] = counts.get(run.status, 0) + 1
            point_rows.append(
                SweepTableRow(
                    grid=point.index,
                    label=point.label,
                    policy=policy,
                    seeds=len(spec.seeds),
                    counts=counts,
                    succeeded=len(outcomes),
                    failed=counts.get("failed", 0) + counts.get("cancelled", 0),
                    final_val_accuracy=_spread(
                        [
                            o.final_val_accuracy
                            for _, o in outcomes
                            if o.final_val_accuracy is not None
                        ]
                    ),
                    best_val_accuracy=_spread(
                        [
                            o.best_val_accuracy
                            for _, o in outcomes
                            if o.best_val_accuracy is not None
                        ]
                    ),
                    fixed_accuracy=target,
                    iterations_to_fixed=_spread(reached),
                    reached_fixed=len(reached),
                )
            )
            curve = _curve(point.index, policy, policy_runs)
            if curve is not None:
                curves.append(curve)
        fixed_row = next((r for r in point_rows if r.policy == "fixed"), None)
        base = fixed_row.iterations_to_fixed if fixed_row is not None else None
        for row in point_rows:
            if base is not None and base.mean > 0 and row.iterations_to_fixed is not None:
                row.ratio_to_fixed = row.iterations_to_fixed.mean / base.mean
        rows += point_rows
    return SweepTable(rows=rows, curves=curves)


def build_result(
    spec: SweepSpec,
    runs: Sequence[ChildRun],
    *,
    bounds: Mapping[int, SweepBounds] | None = None,
    no_bounds: Mapping[int, str] | None = None,
    complete: bool = False,
) -> SweepResult:
    """The sweep's result from its children so far.

    Args:
        spec: the sweep.
        runs: its children (range tests and trainings), any status.
        bounds: the bounds of each grid point that has some, by index.
        no_bounds: why a grid point has none, by index.
        complete: the sweep has finished.
    """
    bounds = bounds or {}
    no_bounds = no_bounds or {}
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.status] = counts.get(run.status, 0) + 1
    failures = [
        ChildFailure(
            job_id=r.job_id, role=dict(r.role), reason=r.error or f"the job was {r.status}"
        )
        for r in runs
        if r.status in ("failed", "cancelled")
    ]
    points = []
    for point in grid_points(spec):
        test = next(
            (
                r
                for r in reversed(runs)
                if r.grid == point.index and r.role.get("stage") == "range_test"
            ),
            None,
        )
        reason = no_bounds.get(point.index)
        if reason is not None and (test is None or test.status == "succeeded"):
            failures.append(
                ChildFailure(
                    job_id=None if test is None else test.job_id,
                    role={"grid": point.index, "stage": "range_test"},
                    reason=reason,
                )
            )
        points.append(
            GridPointResult(
                index=point.index,
                label=point.label,
                batch_size=point.batch_size,
                optimizer=point.optimizer.model_dump(mode="json"),
                weight_decay=point.weight_decay,
                range_test=None if test is None else test.job_id,
                range_test_status=None if test is None else test.status,
                bounds=bounds.get(point.index),
                no_bounds_reason=reason,
            )
        )
    table = build_table(spec, runs)
    return SweepResult(
        complete=complete,
        children=spec.total_steps(),
        counts=counts,
        points=points,
        table=table.rows,
        curves=table.curves,
        failures=failures,
    )


# --------------------------------------------------------------------------- the plot


def sweep_plot_panels(result: SweepResult) -> list[dict[str, Any]]:
    """:func:`clr.plots.plot_sweep`'s panels: one per grid point with curves."""
    panels = []
    for point in result.points:
        curves = [c for c in result.curves if c.grid == point.index]
        if not curves:
            continue
        target = next((r.fixed_accuracy for r in result.table if r.grid == point.index), None)
        title = point.label
        if point.bounds is not None:
            b = point.bounds
            title += f"  [{b.base_lr:.3g}, {b.max_lr:.3g}], step {b.step_size}"
        panels.append(
            {
                "title": title,
                "target": target,
                "curves": [
                    {
                        "label": c.policy,
                        "iteration": c.iteration,
                        "mean": c.mean,
                        "std": c.std,
                        "cycle_ends": c.cycle_ends,
                    }
                    for c in curves
                ],
            }
        )
    return panels


def render_sweep_plot(
    result: SweepResult, *, format: str = "png", title: str | None = None
) -> bytes:
    """The comparison plot (:func:`clr.plots.plot_sweep`) as PNG or SVG bytes.

    Raises:
        ValueError: no policy has a validation accuracy yet, or a bad ``format``.
    """
    from clr.plots import plot_sweep, render

    figure = plot_sweep(sweep_plot_panels(result), title=title)
    return render(figure, format)


# --------------------------------------------------------------------------- the parent


def _child_runs(family: Family) -> list[ChildRun]:
    """The children as the table reads them; the trainings' ``epochs`` series in one query."""
    trainings = [
        c
        for c in family.children
        if c.kind == TRAINING.name and int((c.series_points or {}).get(EPOCHS.name, 0))
    ]
    epochs = family.series_of(trainings, EPOCHS.name)
    runs = []
    for child in family.children:
        iteration: list[int] = []
        accuracy: list[float | None] = []
        series = epochs.get(child.id)
        if series is not None:
            iteration = [int(at) for at in series.column("iteration") or ()]
            values = series.column("val_accuracy")
            accuracy = [None] * len(iteration) if values is None else list(values)
        runs.append(
            ChildRun(
                job_id=child.id,
                role=dict(child.role or {}),
                status=JobStatus(child.status).value,
                result=child.result,
                error=child.error,
                iteration=iteration,
                val_accuracy=accuracy,
            )
        )
    return runs


def _verified(outcome: RangeTestOutcome) -> tuple[float, float] | None:
    """The bounds a range test's verification proved, if it proved any."""
    verification = outcome.verification
    if verification is None or verification.winner is None:
        return None
    return verification.winner.base_lr, verification.winner.max_lr


def _not_verified(outcome: RangeTestOutcome) -> str:
    """Why a range test asked to verify its bounds proved none."""
    verification = outcome.verification
    if verification is None:
        return "the range test did not verify its bounds"
    return verification.reason or f"its verification {verification.status}"


def _submit_all(
    family: Family, kind: str, children: Sequence[tuple[dict[str, Any], dict[str, Any]]]
) -> str | None:
    """Create ``children`` (``(role, body)`` each) all or none; why none, if one was refused.

    A refused child (its spec, or its size against the service's caps) is
    refused again on every later call, so its grid point fails the same way
    each time: nothing is half-created, and no later call creates it twice.
    At the sweep's submit (its range tests) the refusal refuses the sweep
    itself, naming the reason, and nothing is created.
    """
    before = list(family.children)
    try:
        with family.session.begin_nested():
            for role, body in children:
                family.submit(kind, body, role=role)
    except DomainError as exc:
        if family.at_submit:
            raise  # the sweep's own request is refused with the child's reason
        family.children[:] = before
        return exc.detail
    return None


@dataclass
class _Plan:
    """What one call of :func:`advance` found and did, grid point by grid point."""

    bounds: dict[int, SweepBounds]
    no_bounds: dict[int, str]
    planned: int


def _plan(family: Family, spec: SweepSpec) -> _Plan:
    """Each grid point moved on as far as its children allow: its range test created
    (first call), its trainings created once the range test gave bounds."""
    tests: dict[int, Job] = {}
    trained: set[int] = set()
    for child in family.children:
        run = ChildRun(job_id=child.id, role=child.role or {}, status=str(child.status))
        if run.grid is None:
            continue
        if run.role.get("stage") == "range_test":
            tests[run.grid] = child
        elif run.policy is not None:
            trained.add(run.grid)
    per_point = len(spec.policies) * len(spec.seeds)
    plan = _Plan(bounds={}, no_bounds={}, planned=0)
    for point in grid_points(spec):
        test = tests.get(point.index)
        if test is None:
            if family.cancelling:
                continue
            refused = _submit_all(
                family,
                RANGE_TEST.name,
                [({"grid": point.index, "stage": "range_test"}, range_test_spec(spec, point))],
            )
            if refused is not None:
                plan.no_bounds[point.index] = f"its range test was refused: {refused}"
                continue
            plan.planned += 1 + per_point
            continue
        plan.planned += 1
        if not test.finished:
            plan.planned += per_point
            continue
        if test.status != JobStatus.SUCCEEDED:
            plan.no_bounds[point.index] = f"its range test {JobStatus(test.status).value}"
            continue
        outcome = RangeTestOutcome.model_validate(test.result)
        try:
            bounds = choose_bounds(
                spec, point, outcome, range_test=test.id, verified=_verified(outcome)
            )
        except NoBounds as exc:
            plan.no_bounds[point.index] = str(exc)
            continue
        if spec.verify and not bounds.verified:
            bounds = bounds.model_copy(update={"not_verified": _not_verified(outcome)})
        plan.bounds[point.index] = bounds
        if point.index in trained:
            plan.planned += per_point
        elif not family.cancelling:
            refused = _submit_all(family, TRAINING.name, training_specs(spec, point, bounds))
            if refused is None:
                plan.planned += per_point
            else:
                plan.no_bounds[point.index] = f"its trainings were refused: {refused}"
    return plan


def _role_text(role: Mapping[str, Any], labels: Mapping[int, str]) -> str:
    grid = role.get("grid")
    where = labels.get(grid, f"grid point {grid}") if isinstance(grid, int) else "the sweep"
    if role.get("stage") == "range_test":
        return f"{where}: range test"
    return f"{where}: {role.get('policy')} seed {role.get('seed')}"


MAX_REASONS = 5
"""Failures a failed sweep's reason names (its result lists them all)."""


def _failure_reason(result: SweepResult) -> str:
    labels = {p.index: p.label for p in result.points}
    named = [f"{_role_text(f.role, labels)}: {f.reason}" for f in result.failures[:MAX_REASONS]]
    more = len(result.failures) - len(named)
    text = "no training succeeded"
    if named:
        text += ": " + "; ".join(named)
    if more > 0:
        text += f"; and {more} more (the result's failures list them all)"
    return text


def advance(family: Family) -> None:
    """Move a sweep on (its kind's advance step; :mod:`core.services.parents`).

    Called at submit, after each child's end and on every reconciler pass, it
    decides everything from the children there are, so any number of calls
    creates each child once: a grid point's range test at the first call; its
    trainings (every policy x seed, :func:`training_specs`) once that range
    test has succeeded with bounds (:func:`choose_bounds`, the verified winner
    when the range test proved one); nothing for a grid point whose range test
    failed, was cancelled or found no bounds (the point is one of the result's
    failures). Each call rewrites the partial result (:func:`build_result`)
    and the progress (finished children of those planned). Once every planned
    child has finished the sweep succeeds if any training did, with the table
    of what succeeded and the failures of what did not, and fails otherwise,
    naming what failed. While it is being cancelled it only writes the
    partial result (the caller marks it cancelled).
    """
    spec = SweepSpec.model_validate(family.parent.spec, context={STORED: True})
    plan = _plan(family, spec)
    children = family.children
    complete = all(c.finished for c in children) and not family.cancelling
    result = build_result(
        spec,
        _child_runs(family),
        bounds=plan.bounds,
        no_bounds=plan.no_bounds,
        complete=complete,
    )
    done = sum(1 for c in children if c.finished)
    family.update(result=result, progress=done, total=max(plan.planned, done))
    if not complete:
        return
    if any(row.succeeded for row in result.table):
        family.finish(result)
    else:
        family.fail(_failure_reason(result), result=result)


SWEEP = register_kind(
    JobKind(
        name=SweepSpec.kind,
        noun="sweeps",
        title="sweep",
        spec=SweepSpec,
        result=SweepResult,
        read=SweepRead,
        runner=None,
        advance="core.sweeps:advance",
        examples=(
            {
                "workload": "digits_mlp",
                "params": {"width": 64},
                "optimizer": {"name": "sgd", "momentum": 0.9},
                "seeds": [0, 1, 2],
                "policies": ["fixed", "triangular", "triangular2", "one_cycle"],
                "cycles": 4,
            },
            {
                "workload": "digits_mlp",
                "policies": ["fixed", "triangular2"],
                "seeds": [0, 1],
                "grid": {"batch_size": [32, 64], "weight_decay": [0, 0.0005]},
            },
        ),
    )
)
"""The sweep: a parent job no worker runs; its range tests and trainings do the work."""
