"""Typed builders of domain rows for tests: each adds, flushes and returns.

Defaults make a valid row; keyword overrides set any column. Times default to
:data:`T0` so tests can reason about them with explicit ``now=`` values.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from core.kinds import CURVE, get_kind
from core.models import Job, JobStatus, Team, Worker
from core.queues import worker_queues
from core.series import SeriesPoints
from core.specs import (
    RangeTestOutcome,
    RangeTestSpec,
    RangeTestSummary,
    SuggestionDoc,
    SuggestionsDoc,
)

T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
"""The tests' reference time."""


def spec_data(**overrides: Any) -> dict[str, Any]:
    """A small valid range-test spec as a request would give it."""
    data: dict[str, Any] = {"workload": "digits_mlp", "params": {"width": 16}, "num_iter": 100}
    data.update(overrides)
    return data


def make_team(session: Session, **overrides: Any) -> Team:
    """A team with a unique name."""
    values: dict[str, Any] = {
        "name": f"team-{uuid.uuid4().hex[:12]}",
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(overrides)
    team = Team(**values)
    session.add(team)
    session.flush()
    return team


def make_job(session: Session, *, team: Team | None = None, **overrides: Any) -> Job:
    """A queued job of ``team`` (a new team by default): a range test unless ``kind``
    names another registered kind.

    ``spec`` may be overridden with a spec dict of the kind (default: :func:`spec_data`
    for a range test, the spec's defaults otherwise); ``config_key``, ``workload`` and
    ``total`` follow it unless overridden too.
    """
    if team is None:
        team = make_team(session)
    kind = overrides.pop("kind", RangeTestSpec.kind)
    default = spec_data() if kind == RangeTestSpec.kind else {}
    spec = get_kind(kind).spec.model_validate(overrides.pop("spec", default))
    values: dict[str, Any] = {
        "team_id": team.id,
        "kind": kind,
        "status": JobStatus.QUEUED,
        "spec": spec.model_dump(mode="json"),
        "config_key": spec.config_key(),
        "workload": spec.workload_name(),
        "attempt": 0,
        "max_attempts": 3,
        "cancel_requested": False,
        "progress": 0,
        "total": spec.total_steps(),
        "queued_at": T0,
        "enqueued_at": T0,
        "created_at": T0,
        "updated_at": T0,
    }
    values.update(overrides)
    job = Job(**values)
    session.add(job)
    session.flush()
    return job


def make_points(start: int, size: int, *, accuracies: bool = True) -> SeriesPoints:
    """``size`` curve points from index ``start``; values encode their index."""
    idx = range(start, start + size)
    return SeriesPoints.of(
        CURVE,
        start,
        {
            "lr": [1e-5 * 1.01**i for i in idx],
            "loss": [2.0 + i / 1000 for i in idx],
            "smoothed_loss": [2.0 + i / 2000 for i in idx],
            "accuracy": [i / 100_000 for i in idx] if accuracies else None,
        },
    )


def curve(points: SeriesPoints) -> dict[str, Any]:
    """``report_progress`` arguments that store a range test's curve points: the
    points, and the progress a range test reports with them (the steps run)."""
    return {"points": [points], "progress": points.start + points.size}


def make_outcome(*, base_lr: float = 0.01, max_lr: float = 0.1) -> RangeTestOutcome:
    """A successful range test's result with bounds ``base_lr``..``max_lr``."""
    default = SuggestionDoc(
        method="max_fraction",
        base_lr=base_lr,
        max_lr=max_lr,
        rationale="the loss falls fastest below max_lr",
        step_size=112,
        stop_iteration=896,
        cycles=4,
    )
    return RangeTestOutcome(
        summary=RangeTestSummary(
            stop_reason="diverged",
            stop_detail="smoothed loss above 5x the best",
            steps_run=80,
            seconds=0.5,
            device="cpu",
            start_lr=1e-5,
            end_lr=10.0,
            num_iter=100,
            sweep="exp",
            smoothing=0.95,
            diverge_th=5.0,
        ),
        suggestions=SuggestionsDoc(
            default_method="max_fraction",
            default=default,
            items=[default],
            confidence=0.9,
            noise=0.05,
            step_size=112,
            stop_iteration=896,
            cycles=4,
        ),
    )


def make_worker(session: Session, **overrides: Any) -> Worker:
    """A live CPU worker, idle since :data:`T0` minus an hour, last heard at :data:`T0`."""
    values: dict[str, Any] = {
        "name": f"cpu1.{uuid.uuid4().hex[:6]}@host",
        "hostname": "host",
        "pid": 4242,
        "device_kind": "cpu",
        "queues": worker_queues("cpu"),
        "current_job_id": None,
        "idle_since": T0 - timedelta(hours=1),
        "started_at": T0 - timedelta(hours=1),
        "heartbeat_at": T0,
    }
    values.update(overrides)
    worker = Worker(**values)
    session.add(worker)
    session.flush()
    return worker
