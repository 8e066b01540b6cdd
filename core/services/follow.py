"""Following a job while it runs: what changed since a client last looked.

Read-only: these functions never write, so a caller may run them in short,
read-only transactions (``BEGIN DEFERRED`` on SQLite) as often as it polls.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.models import Job, Team
from core.services.jobs import CurveSlice, get_job, read_curve

__all__ = ["JobUpdate", "poll_job"]


@dataclass(frozen=True)
class JobUpdate:
    """A job as it is now and the points of its current attempt a follower has not seen.

    ``curve`` is None when there are no new points; otherwise ``curve.attempt`` is
    ``job.attempt`` and ``curve.start`` is where the follower's points end (0 when
    the job restarted since it last looked).
    """

    job: Job
    curve: CurveSlice | None


def poll_job(
    session: Session, *, team: Team, job_id: uuid.UUID, attempt: int | None, after: int
) -> JobUpdate:
    """The job and the points after ``after`` that its follower has not seen.

    ``attempt`` is the attempt those ``after`` points belong to; when the job has
    started another attempt since (its curve starts again at 0), the new
    attempt's points are returned from 0. ``None`` means the job's current
    attempt. The curve is read only when the job's progress says it grew.

    Raises:
        JobNotFound: no such job for this team.
        InvalidInput: ``after`` is negative.
    """
    job = get_job(session, team=team, job_id=job_id)
    start = after if attempt is None or attempt == job.attempt else 0
    if job.progress <= start:
        return JobUpdate(job=job, curve=None)
    # The same session gives read_curve this very Job object (its identity map), so
    # the points read belong to the attempt of the job returned here.
    curve = read_curve(session, team=team, job_id=job_id, after=start)
    return JobUpdate(job=job, curve=curve if curve.lrs else None)
