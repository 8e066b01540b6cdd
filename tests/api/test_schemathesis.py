"""Schemathesis over the app's own OpenAPI document: no input gives a 5xx.

Every operation is called in-process (ASGI) with generated valid and invalid
inputs, as a team with a real token, on both test databases, with jobs of the
team in place (queued, running with a curve, succeeded with bounds). Half of
the generated ``job_id`` values are swapped for one of those jobs, so that the
handlers behind the 404 are reached too. Every response must pass Schemathesis'
checks: no server error; status code, content type, headers and body as the
document declares them; invalid input rejected; auth enforced.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, settings
from sqlalchemy.orm import Session

from api.app import create_app
from core.services import claim_job, finish_job, report_progress
from core.settings import Settings
from tests.api.conftest import Caller
from tests.builders import curve, make_job, make_outcome, make_points

MAX_EXAMPLES = 25
"""Generated cases per operation and dialect (the run stays within seconds)."""


@dataclass
class Jobs:
    """The caller's jobs, one in each state the handlers tell apart."""

    ids: list[uuid.UUID]


@pytest.fixture
def jobs(session: Session, caller: Caller) -> Jobs:
    queued = make_job(session, team=caller.team)
    running = make_job(session, team=caller.team)
    done = make_job(session, team=caller.team)
    for job in (running, done):
        claimed = claim_job(session, job_id=job.id, worker="gpu0", device="cpu")
        assert claimed is not None
        report_progress(session, job_id=job.id, attempt=claimed.attempt, **curve(make_points(0, 5)))
    finished = finish_job(session, job_id=done.id, attempt=1, result=make_outcome())
    assert finished is not None
    return Jobs(ids=[queued.id, running.id, done.id])


@pytest.fixture
def app(test_app: FastAPI) -> FastAPI:
    """The app on the test's rolled-back session, as ``client`` builds it but not started."""
    return test_app


# The document of an app that is never started (its in-memory database stays unopened);
# each test sends the cases to its own app on the test database.
schema = schemathesis.openapi.from_dict(
    create_app(Settings(_env_file=None, database_url="sqlite://")).openapi(),
    config=schemathesis.Config.from_dict(
        {
            # Unknown query parameters are ignored, as HTTP APIs do (only /bounds, whose
            # parameters are open-ended, refuses them, and its own tests say so): no
            # extra parameter counts as invalid input. Which operations drew such a
            # case used to depend on what ran before (GET /jobs, after other modules).
            "generation": {"max-examples": MAX_EXAMPLES, "allow-extra-parameters": False},
            "checks": {
                # The document declares what a value alone decides (workload and method
                # enums, patterns, ranges); a schema-valid value may still be refused
                # with a 422 naming it where the answer depends on more: params another
                # workload takes, a cursor no page returned, a method this curve lacks,
                # an Idempotency-Key used with another body, a job over a size cap.
                "positive_data_acceptance": {
                    "expected-statuses": ["2XX", "401", "404", "409", "422"]
                },
            },
            "operations": [
                {
                    # Each plot is drawn anew (about a second): a few, of the fuzzing phase.
                    "include-path-regex": r"/plot\.",
                    "generation": {"max-examples": 5},
                    "phases": {"coverage": {"enabled": False}},
                },
            ],
        }
    ),
).exclude(
    # An event stream does not end by itself; its own tests read it.
    path_regex=r"/events$",
)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


@schema.parametrize()
@settings(
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
def test_api_conforms_to_its_schema(
    case: schemathesis.Case, app: FastAPI, caller: Caller, jobs: Jobs
) -> None:
    # In-process (ASGI) calls to this test's app, the checks' own probes (auth removed,
    # ...) included; Schemathesis ends the app's lifespan when the test ends.
    case.operation.app = case.operation.schema.app = app
    path = case.path_parameters or {}
    generated = path.get("job_id")
    if isinstance(generated, str) and _is_uuid(generated):
        # Deterministic in the generated id: half of the ids become one of the team's jobs
        # (a malformed id stays, as the invalid input it is).
        pick = zlib.crc32(generated.encode()) % (2 * len(jobs.ids))
        if pick < len(jobs.ids):
            case.path_parameters = {**path, "job_id": str(jobs.ids[pick])}
    case.call_and_validate(headers=caller.headers)
