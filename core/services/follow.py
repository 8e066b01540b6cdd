"""Following a job while it runs: what changed since a client last looked.

Read-only: these functions never write, so a caller may run them in short,
read-only transactions (``BEGIN DEFERRED`` on SQLite) as often as it polls.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy.orm import Session

from core.kinds import get_kind
from core.models import Job, Team
from core.repositories import JobRepository
from core.services.jobs import SeriesSlice, get_job, series_of

__all__ = ["MAX_POINTS_PER_POLL", "JobUpdate", "poll_job"]

MAX_POINTS_PER_POLL = 10_000
"""Most points of one series a poll reads: a follower far behind (a new stream of a
long training) catches up over several polls instead of reading everything at once."""


@dataclass(frozen=True)
class JobUpdate:
    """A job as it is now and the series points a follower has not seen.

    ``series`` holds one slice per series that has new (or changed) points, in
    the kind's order; a slice's ``start`` is where the follower's points of that
    series stay valid: below what it has when the job started another attempt
    since (0 for a kind that starts over; the checkpoint for one that resumes),
    so the follower drops its points from ``start`` on and appends these.
    """

    job: Job
    series: list[SeriesSlice]


def poll_job(
    session: Session,
    *,
    team: Team,
    job_id: uuid.UUID,
    attempt: int | None,
    seen: Mapping[str, int],
    kind: str | None = None,
) -> JobUpdate:
    """The job and the series points after those a follower has (``seen``).

    ``seen`` maps series names to how many points the follower has, read
    during ``attempt`` (None: the job's current attempt). When the job started
    another attempt since, a series' points stay valid up to the first point
    a later attempt wrote (or the series' length, if shorter); the rest are
    sent again. A series is read only when its stored count says it changed, and
    at most :data:`MAX_POINTS_PER_POLL` of its points at a time.

    Raises:
        JobNotFound: no such job (of ``kind``) for this team.
        InvalidInput: a count is negative.
    """
    job = get_job(session, team=team, job_id=job_id, kind=kind)
    repo = JobRepository(session)
    counts = job.series_points or {}
    out: list[SeriesSlice] = []
    for spec in get_kind(job.kind).series_of(job.spec):
        have = seen.get(spec.name, 0)
        stored = int(counts.get(spec.name, 0))
        if attempt is not None and attempt != job.attempt:
            valid = min(have, stored)
            first_new = repo.first_point_after_attempt(job.id, spec.name, attempt)
            if first_new is not None:
                valid = min(valid, first_new)
        else:
            valid = have
        if stored <= valid and valid == have:
            continue
        # The same session gives series_of this very Job object (its identity map),
        # so the points read belong to the attempt of the job returned here.
        out.append(series_of(session, job, spec.name, after=valid, limit=MAX_POINTS_PER_POLL))
    return JobUpdate(job=job, series=out)
