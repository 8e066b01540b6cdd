"""Verified bounds: a range test's candidate bound pairs proven by short trainings.

A range test submitted with ``verify`` runs its curve on a worker as usual; the
worker then plans the verification (:func:`plan_verification`: the candidates
:func:`clr.verify.candidates_for` picks from the suggestions and, when the curve
is uninformative, a coarse LR ladder; the successive-halving rounds
:func:`clr.verify.plan_halving` fits in the declared budget) and finishes its
part with ``wait=True``. The job stays ``running`` (``waiting``) while
:func:`advance`, the range-test kind's advance step, runs the plan with every
candidate as a child training job (role ``{"stage": "verify", "round": r,
"candidate": i}``), so the candidates of a round train in parallel on however
many workers exist:

- each candidate trains from the range test's initialisation (its seed) for the
  round's iterations, one triangular cycle between its bounds;
- when a round's trainings have all ended, the best by final validation loss
  (:func:`clr.verify.select_survivors`; a failed or diverged run sorts last) go
  on to the next, longer round;
- after the last round the best is the winner; the range test succeeds with
  the evidence in ``verification``: every candidate's validation losses per
  round, its jobs, the compute spent against the budget declared before the
  first candidate ran. ``GET /range-tests/{id}/bounds`` and a training's
  ``bounds_from`` then give the verified pair.

A range test whose verification cannot run (the budget is too small for the
first round) succeeds at once with ``verification.status = "failed"`` and the
reason; one whose every candidate failed succeeds with the curve's suggestions
and says so. Cancelling it cancels its candidates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from clr.exceptions import VerificationError
from clr.policies import recommend_step_size
from clr.verify import Candidate, plan_halving, select_survivors
from core.errors import DomainError
from core.models import Job, JobStatus
from core.specs import (
    DEFAULT_BOUNDS_CYCLES,
    STORED,
    CandidateDoc,
    RangeTestOutcome,
    RangeTestSpec,
    VerificationDoc,
    VerificationRoundDoc,
    VerifiedBoundsDoc,
)

if TYPE_CHECKING:
    from clr.suggest import CurveVerdict, Suggestions
    from core.services.parents import Family

__all__ = [
    "advance",
    "candidate_training",
    "full_run_iterations",
    "longest_candidate",
    "plan_verification",
]

logger = logging.getLogger(__name__)


def plan_verification(
    spec: RangeTestSpec,
    suggestions: Suggestions | None,
    verdict: CurveVerdict,
    *,
    iters_per_epoch: int | None,
) -> VerificationDoc:
    """The verification of a finished curve, declared before any candidate runs.

    The full run the budget counts in is ``spec.verify_iterations``, else the
    suggestion's ``stop_iteration``, else 4 cycles of the step size the paper
    recommends for the workload's epoch. A plan that cannot run (the budget is
    too small) comes back ``failed`` with the reason.
    """
    from clr.verify import candidates_for  # noqa: PLC0415 - only the worker plans

    full = spec.verify_iterations
    if full is None and suggestions is not None:
        full = suggestions.stop_iteration
    if full is None:
        full = full_run_iterations(spec, iters_per_epoch or 1)
    assert full is not None
    candidates = candidates_for(suggestions, verdict)
    doc = VerificationDoc(
        status="running",
        informative=bool(verdict.informative and suggestions is not None),
        full_run_iterations=full,
        budget_runs=spec.verify_budget,
        budget_iterations=math.floor(spec.verify_budget * full),
        candidates=[
            CandidateDoc(index=i, base_lr=c.base_lr, max_lr=c.max_lr, source=c.source)
            for i, c in enumerate(candidates)
        ],
    )
    try:
        plan = plan_halving(
            len(candidates), full_run_iterations=full, budget_runs=spec.verify_budget
        )
    except VerificationError as exc:
        return doc.model_copy(update={"status": "failed", "reason": str(exc)})
    if not plan.rounds:  # one candidate: nothing to compare, it wins untrained
        only = candidates[0]
        winner = VerifiedBoundsDoc(base_lr=only.base_lr, max_lr=only.max_lr, source=only.source)
        return doc.model_copy(
            update={
                "status": "succeeded",
                "reason": "only one candidate: nothing to compare, so nothing was trained",
                "winner": winner,
            }
        )
    rounds = [
        VerificationRoundDoc(round=r, size=size, iterations=iterations)
        for r, (size, iterations) in enumerate(plan.rounds)
    ]
    return doc.model_copy(update={"rounds": rounds})


def full_run_iterations(spec: RangeTestSpec, iters_per_epoch: int | None) -> int | None:
    """The full run a verification's budget counts in, as far as it is known before the
    curve: ``verify_iterations``, else 4 cycles of the recommended step size (what the
    suggestion's ``stop_iteration`` will be); None when the workload cannot tell its
    epoch length before it is built."""
    if spec.verify_iterations is not None:
        return spec.verify_iterations
    if iters_per_epoch is None:
        return None
    return DEFAULT_BOUNDS_CYCLES * 2 * recommend_step_size(iters_per_epoch)


def longest_candidate(spec: RangeTestSpec, iters_per_epoch: int | None) -> dict[str, Any] | None:
    """The training spec of the longest candidate run ``spec``'s verification can
    submit, known at submit: its last round has at least two candidates within the
    budget, so none trains longer than half the budget (nor than the full run).
    None without ``verify``, or when the full run is not known yet."""
    full = full_run_iterations(spec, iters_per_epoch) if spec.verify else None
    if full is None:
        return None
    longest = max(2, min(full, math.floor(spec.verify_budget * full) // 2))
    candidate = CandidateDoc(index=0, base_lr=1e-3, max_lr=1e-2, source="any")
    return candidate_training(spec, candidate, longest)


def candidate_training(
    spec: RangeTestSpec, candidate: CandidateDoc, iterations: int
) -> dict[str, Any]:
    """The training spec of one candidate's run: the range test's workload, optimizer
    and seed (so the same initialisation), one triangular cycle over ``iterations``."""
    body = spec.model_dump(
        mode="json", include={"workload", "params", "batch_size", "optimizer", "seed", "device"}
    )
    body.update(
        schedule={
            "policy": "triangular",
            "base_lr": candidate.base_lr,
            "max_lr": candidate.max_lr,
            "step_size_up": max(1, iterations // 2),
        },
        iterations=iterations,
        whole_cycles=False,
        snapshots=0,
    )
    return body


def _role(job: Job) -> tuple[int, int] | None:
    role = job.role or {}
    if role.get("stage") != "verify":
        return None
    return int(role["round"]), int(role["candidate"])


def _val(job: Job) -> tuple[float | None, float | None, str | None]:
    """A finished candidate's final validation loss and accuracy, or why it has none."""
    if job.status != JobStatus.SUCCEEDED or job.result is None:
        reason = job.error or f"the training was {JobStatus(job.status).value}"
        return None, None, reason
    loss = job.result.get("final_val_loss")
    accuracy = job.result.get("final_val_accuracy")
    if loss is None or not math.isfinite(float(loss)):
        return None, accuracy, "no finite validation loss"
    return float(loss), accuracy, None


def advance(family: Family) -> None:
    """The range-test kind's advance step: run the verification's next round, or end it."""
    parent = family.parent
    outcome = RangeTestOutcome.model_validate(parent.result)
    doc = outcome.verification
    if doc is None or doc.status != "running":
        family.finish(outcome)
        return
    spec = RangeTestSpec.model_validate(parent.spec, context={STORED: True})
    runs: dict[int, dict[int, Job]] = {}
    for child in family.children:
        where = _role(child)
        if where is not None:
            runs.setdefault(where[0], {})[where[1]] = child
    current = max(runs, default=None)
    if current is None:
        if family.cancelling:
            _end(family, outcome, doc, "cancelled", "cancelled before any candidate ran")
            return
        if _start_round(family, outcome, spec, doc, 0, list(range(len(doc.candidates)))):
            family.update(result=outcome.model_copy(update={"verification": doc}))
        return
    doc = _record(doc, runs)
    round_ = doc.rounds[current]
    finished = all(job.finished for job in runs[current].values())
    if family.cancelling:
        _end(family, outcome, doc, "cancelled", f"cancelled in round {current}")
        return
    if not finished:
        family.update(result=outcome.model_copy(update={"verification": doc}))
        return
    # a candidate without a validation loss (failed, diverged) goes no further: with
    # the same seed it would fail again, so training it on is compute for nothing
    losses = {
        i: loss for i in round_.candidates if (loss := doc.candidates[i].val_loss[-1]) is not None
    }
    if not losses:
        last = doc.candidates[round_.candidates[-1]].failed if round_.candidates else None
        _end(
            family,
            outcome,
            doc,
            "failed",
            f"no candidate of round {current} finished with a validation loss "
            f"(last: {last}); the bounds are the curve's suggestions",
        )
        return
    pairs = [Candidate(c.base_lr, c.max_lr, c.source) for c in doc.candidates]
    if current + 1 < len(doc.rounds) and len(losses) > 1:
        keep = min(doc.rounds[current + 1].size, len(losses))
        survivors = select_survivors(losses, keep, candidates=pairs, informative=doc.informative)
        if _start_round(family, outcome, spec, doc, current + 1, survivors):
            family.update(result=outcome.model_copy(update={"verification": doc}))
        return
    (best,) = select_survivors(losses, 1, candidates=pairs, informative=doc.informative)
    winner = doc.candidates[best]
    if current + 1 < len(doc.rounds):
        doc = doc.model_copy(
            update={
                "reason": f"the only candidate of round {current} with a validation loss: "
                "it wins without the later rounds"
            }
        )
    doc = doc.model_copy(
        update={
            "status": "succeeded",
            "winner": VerifiedBoundsDoc(
                base_lr=winner.base_lr,
                max_lr=winner.max_lr,
                source=winner.source,
                val_loss=winner.val_loss[-1],
                val_accuracy=winner.val_accuracy[-1],
            ),
        }
    )
    logger.info(
        "job.verified job_id=%s base_lr=%.3g max_lr=%.3g source=%s spent=%d budget=%d",
        parent.id,
        winner.base_lr,
        winner.max_lr,
        winner.source,
        doc.spent_iterations,
        doc.budget_iterations,
    )
    family.finish(outcome.model_copy(update={"verification": doc}))


def _start_round(
    family: Family,
    outcome: RangeTestOutcome,
    spec: RangeTestSpec,
    doc: VerificationDoc,
    index: int,
    members: list[int],
) -> bool:
    """Submit round ``index``'s candidates; False (the verification ended failed, the
    range test keeps its curve's suggestions) if the service refuses one of them,
    e.g. a training over the caps on a job's run time or memory."""
    round_ = doc.rounds[index]
    try:
        with family.session.begin_nested():
            for i in sorted(members):
                family.submit(
                    "training",
                    candidate_training(spec, doc.candidates[i], round_.iterations),
                    role={"stage": "verify", "round": index, "candidate": i},
                )
    except DomainError as exc:
        family.children = [c for c in family.children if c in family.session]
        _end(
            family,
            outcome,
            doc,
            "failed",
            f"the candidates of round {index} ({round_.iterations} iterations each) were "
            f"refused: {exc}; the bounds are the curve's suggestions",
        )
        return False
    round_.candidates = sorted(members)
    return True


def _record(doc: VerificationDoc, runs: Mapping[int, Mapping[int, Job]]) -> VerificationDoc:
    """``doc`` with every round's members, losses, jobs and compute as the children say."""
    candidates = [
        c.model_copy(update={"val_loss": [], "val_accuracy": [], "jobs": []})
        for c in doc.candidates
    ]
    rounds = [r.model_copy() for r in doc.rounds]
    spent = 0
    for index in sorted(runs):
        rounds[index].candidates = sorted(runs[index])
        for i, job in sorted(runs[index].items()):
            candidate = candidates[i]
            candidate.jobs.append(job.id)
            if not job.finished:
                continue
            loss, accuracy, failed = _val(job)
            candidate.val_loss.append(loss)
            candidate.val_accuracy.append(accuracy)
            candidate.failed = failed
            spent += job.progress if job.status != JobStatus.SUCCEEDED else rounds[index].iterations
    return doc.model_copy(
        update={"candidates": candidates, "rounds": rounds, "spent_iterations": spent}
    )


def _end(
    family: Family,
    outcome: RangeTestOutcome,
    doc: VerificationDoc,
    status: str,
    reason: str,
) -> None:
    ended = outcome.model_copy(
        update={"verification": doc.model_copy(update={"status": status, "reason": reason})}
    )
    if family.cancelling:
        family.update(result=ended)
    else:
        family.finish(ended)
