"""Verified bounds end to end: a real worker runs the range test, then its candidates
as child trainings, and the range test ends with the pair that trains best.

The model is ``synthetic_mlp`` at a size whose right LRs are known (measured in
``tests/unit/clr/test_verify.py``): one triangular cycle with ``max_lr`` 0.1 to
0.4 trains it to 0.9 accuracy and more, 1e-3 and below barely move it, and 1
and 10 blow up.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.orm import Session, sessionmaker

from core.db import session_scope
from core.models import JobStatus
from core.repositories import JobRepository
from core.services import get_bounds, submit_job
from core.settings import Settings
from core.specs import RangeTestOutcome
from tests.builders import make_team
from tests.worker.conftest import WaitFor, finished

pytestmark = pytest.mark.worker

SYNTH = {
    "n_samples": 512,
    "n_features": 16,
    "n_classes": 4,
    "width": 32,
    "depth": 1,
    "batch_size": 32,
}


def verified_test(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "workload": "synthetic_mlp",
        "params": SYNTH,
        "optimizer": {"name": "sgd", "momentum": 0.9},
        "device": "cpu",
        "num_iter": 60,
        "verify": True,
        "verify_iterations": 200,
    }
    data.update(overrides)
    return data


@pytest.mark.usefixtures("sender")
def test_a_verified_range_test_ends_with_the_lr_that_trains_the_model(
    db: sessionmaker[Session], worker_settings: Settings, wait_for: WaitFor
) -> None:
    with session_scope(db) as session:
        team = make_team(session)
        job = submit_job(
            session, team=team, kind="range_test", spec=verified_test(), settings=worker_settings
        ).job
    done = wait_for(job.id, finished)
    assert done.status == JobStatus.SUCCEEDED, done.error
    doc = RangeTestOutcome.model_validate(done.result).verification
    assert doc is not None
    assert doc.status == "succeeded", doc.reason
    assert doc.winner is not None
    # among the LRs known to train it, neither too low to move it nor where it blows up
    assert 0.03 <= doc.winner.max_lr < 1.0, doc.model_dump()
    assert doc.winner.val_accuracy is not None
    assert doc.winner.val_accuracy >= 0.8, doc.model_dump()
    assert 0 < doc.spent_iterations <= doc.budget_iterations
    with session_scope(db) as session:
        children = JobRepository(session).children(job.id)
        assert len(children) == sum(r.size for r in doc.rounds)
        assert {c.kind for c in children} == {"training"}
        assert all(c.status == JobStatus.SUCCEEDED for c in children)
        bounds = get_bounds(session, team=team, job_id=job.id)
    assert bounds.suggestions.default_method == "verified"
    assert bounds.suggestions.default.max_lr == doc.winner.max_lr
