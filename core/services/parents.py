"""Parent jobs: jobs whose work is done by children they create (a sweep's range
tests and trainings, a range test's verification candidates).

A parent is ``running`` with ``waiting`` set while its children run; no worker
holds it, so heartbeats and time limits do not apply. Its kind's ``advance``
step (:class:`~core.kinds.JobKind`) moves it on, given a :class:`Family`: it
reads its children, creates the next ones, writes its partial result and
finally finishes or fails the parent. :func:`advance_parent` calls it

- at submit, for a kind no worker runs (in the submit's transaction, so the
  first children are created with the parent or not at all);
- when a worker's part of a job ends with ``finish_job(..., wait=True)`` (in that
  transaction);
- after any child ends (finishes, fails, is cancelled), in a transaction of its
  own right after that commit (:func:`advance_after_commit`), so a child's end
  never waits on its parent's lock;
- on every reconciler pass for every waiting parent, which moves on a parent
  whose process died between a child's end and its own advance;
- when the parent is cancelled.

Each call locks the parent's row first (``FOR UPDATE``) and reads the children
afresh, so concurrent calls take turns and ``advance`` sees a consistent family;
it must be idempotent (decide from the children what to create, never from a
count of calls). Cancelling a parent cancels its unfinished children (queued
ones at once, running ones cooperatively, waiting ones in turn); once none is
active, ``advance`` runs once more with :attr:`Family.cancelling` set to write
its partial result, and the parent becomes ``cancelled``.
"""

from __future__ import annotations

import importlib
import logging
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, SessionTransaction, sessionmaker

from core.clock import utc_now
from core.errors import DomainError
from core.kinds import JobKind, get_kind
from core.models import Job, JobStatus, Team
from core.redact import redact
from core.repositories import JobRepository
from core.settings import Settings, get_settings
from core.specs import JobResult, JobSpec

if TYPE_CHECKING:
    from core.services.jobs import SeriesSlice

__all__ = [
    "Advance",
    "Family",
    "advance_after_commit",
    "advance_parent",
    "cancel_children",
    "child_counts",
]

logger = logging.getLogger(__name__)

Advance = Callable[["Family"], None]
"""A kind's advance step (see the module docstring)."""

_AFTER_COMMIT_KEY = "clr.advance_parents"
MAX_ADVANCE_ERROR = 2000


@dataclass
class Family:
    """A parent job and its children, as its kind's ``advance`` step sees them.

    Attributes:
        session: the transaction (the parent's row is locked in it).
        parent: the parent job (``running``, ``waiting``).
        team: its team.
        settings: the service's settings (caps a child's submit checks).
        children: its direct children, oldest first (read afresh for this call).
        cancelling: the parent was asked to cancel and none of its children is
            active any more: write the partial result; submit nothing.
        now: this call's time.
        at_submit: this call is the parent's submit: a child the service refuses
            (a :class:`~core.errors.DomainError` from :meth:`submit`) should
            propagate, so the request is refused with its reason and nothing is
            created.
    """

    session: Session
    parent: Job
    team: Team
    settings: Settings
    children: list[Job]
    cancelling: bool = False
    now: datetime = field(default_factory=utc_now)
    at_submit: bool = False
    ended: bool = False

    @property
    def spec(self) -> dict[str, Any]:
        """The parent's stored spec."""
        return dict(self.parent.spec)

    def counts(self) -> dict[str, int]:
        """The children by status (every status present, zeros included)."""
        return child_counts(self.children)

    def series(self, job: Job, name: str, *, after: int = 0) -> SeriesSlice:
        """One of a child's (or the parent's own) series from index ``after`` on."""
        from core.services.jobs import series_of  # noqa: PLC0415 - jobs imports this module

        return series_of(self.session, job, name, after=after)

    def series_of(self, jobs: list[Job], name: str) -> dict[uuid.UUID, SeriesSlice]:
        """The whole series ``name`` of each of ``jobs`` (children of kinds that have
        it), in one query."""
        from core.services.jobs import series_of_jobs  # noqa: PLC0415 - jobs imports this module

        return series_of_jobs(self.session, jobs, name)

    def submit(
        self, kind: str, spec: JobSpec | Mapping[str, Any], *, role: Mapping[str, Any]
    ) -> Job:
        """Create a child job (queued; its message leaves after the commit).

        A child counts against the caps on a job's size, not against the team's
        cap of active jobs (its parent did, once).

        Raises:
            RuntimeError: the parent is being cancelled or has ended.
            DomainError: the child's spec is refused (like a submit would be).
        """
        if self.cancelling or self.ended:
            raise RuntimeError(f"job {self.parent.id} cannot create children: it is ending")
        from core.services.jobs import submit_job  # noqa: PLC0415 - jobs imports this module

        job = submit_job(
            self.session,
            team=self.team,
            kind=kind,
            spec=spec,
            settings=self.settings,
            parent=self.parent,
            role=dict(role),
            now=self.now,
        ).job
        self.children.append(job)
        return job

    def update(
        self,
        *,
        result: JobResult | Mapping[str, Any] | None = None,
        progress: int | None = None,
        total: int | None = None,
    ) -> None:
        """Store a partial result and the parent's progress while it waits."""
        values: dict[str, Any] = {}
        if result is not None:
            values["result"] = self._result_json(result)
        if progress is not None:
            values["progress"] = max(0, progress)
        if total is not None:
            values["total"] = max(0, total)
        if values and not self.ended:
            JobRepository(self.session).update_waiting(self.parent.id, values, now=self.now)

    def finish(self, result: JobResult | Mapping[str, Any]) -> None:
        """The parent succeeded with ``result``."""
        self._settle(JobStatus.SUCCEEDED, result=result)

    def fail(self, reason: str, *, result: JobResult | Mapping[str, Any] | None = None) -> None:
        """The parent failed with ``reason`` (and what it had, in ``result``)."""
        self._settle(JobStatus.FAILED, result=result, error=reason)

    def _result_json(self, result: JobResult | Mapping[str, Any]) -> dict[str, Any]:
        result_cls = get_kind(self.parent.kind).result
        doc = result if isinstance(result, result_cls) else result_cls.model_validate(result)
        return doc.to_json_dict()

    def _settle(
        self,
        status: JobStatus,
        *,
        result: JobResult | Mapping[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        if self.ended:
            return
        doc = None if result is None else self._result_json(result)
        settled = JobRepository(self.session).settle(
            self.parent.id, status=status, now=self.now, result=doc, error=error
        )
        self.ended = True
        if settled is not None:
            logger.info(
                "job.%s job_id=%s kind=%s by=parent%s",
                status.value,
                self.parent.id,
                self.parent.kind,
                f" reason={error[:200]}" if error else "",
            )
            if settled.parent_id is not None:
                advance_after_commit(self.session, settled.parent_id)


def child_counts(children: list[Job]) -> dict[str, int]:
    """How many of ``children`` are in each status (every status, zeros included)."""
    counts = Counter(JobStatus(c.status).value for c in children)
    return {s.value: counts.get(s.value, 0) for s in JobStatus}


def _load(kind: JobKind) -> Advance:
    assert kind.advance is not None
    module_name, _, function = kind.advance.partition(":")
    advance: Advance = getattr(importlib.import_module(module_name), function)
    return advance


def cancel_children(session: Session, parent: Job, *, now: datetime) -> int:
    """Ask every unfinished child of ``parent`` to stop; how many were asked.

    A queued child is cancelled at once; a running one gets ``cancel_requested``
    (its worker stops at its next report); a waiting one (a parent itself) is
    cancelled in turn by its own advance, right after this commits.
    """
    repo = JobRepository(session)
    asked = 0
    for child in repo.children(parent.id):
        if child.finished:
            continue
        if repo.cancel_queued(child.id, team_id=child.team_id, now=now) is not None:
            asked += 1
            continue
        if child.cancel_requested:
            continue
        running = repo.request_cancel_running(child.id, team_id=child.team_id, now=now)
        if running is not None:
            asked += 1
            if running.waiting:
                advance_after_commit(session, running.id)
    if asked:
        logger.info("job.children_cancelled job_id=%s children=%d", parent.id, asked)
    return asked


def advance_parent(
    session: Session,
    *,
    parent_id: uuid.UUID,
    settings: Settings | None = None,
    now: datetime | None = None,
    at_submit: bool = False,
) -> Job | None:
    """Move a waiting parent on (see the module docstring); the parent, or None.

    Nothing happens to a job that is not waiting. A bug in the kind's advance
    step (any exception but a database failure) fails the parent with the
    reason, after undoing what that call had done; a database failure
    propagates (the next reconciler pass tries again). ``at_submit``: this is
    the parent's submit, where a refusal of the step (a
    :class:`~core.errors.DomainError`, such as a child over a job cap)
    propagates too, refusing the submit.
    """
    now = utc_now() if now is None else now
    repo = JobRepository(session)
    parent = repo.lock(parent_id)
    if parent is None or parent.status != JobStatus.RUNNING or not parent.waiting:
        return parent
    kind = get_kind(parent.kind)
    if kind.advance is None:
        logger.warning(
            "job.advance_skipped job_id=%s kind=%s: no advance step", parent.id, kind.name
        )
        return parent
    team = session.get(Team, parent.team_id)
    assert team is not None  # a job's team is never deleted (RESTRICT)
    settings = get_settings() if settings is None else settings
    cancelling = parent.cancel_requested
    if cancelling:
        cancel_children(session, parent, now=now)
    children = repo.children(parent.id)
    if cancelling and any(not c.finished for c in children):
        return parent  # the last child to end brings the parent back here
    family = Family(
        session=session,
        parent=parent,
        team=team,
        settings=settings,
        children=children,
        cancelling=cancelling,
        now=now,
        at_submit=at_submit,
    )
    try:
        with session.begin_nested():
            _load(kind)(family)
    except SQLAlchemyError:
        raise
    except DomainError as exc:
        if at_submit:
            raise  # the submit is refused with the child's reason; nothing is created
        logger.exception("job.advance_refused job_id=%s kind=%s", parent.id, kind.name)
        cancel_children(session, parent, now=now)
        family.ended = False
        family.fail(f"the {kind.title} could not go on: {_describe(exc)}")
        return parent
    except Exception as exc:  # a bug in the step: the parent fails, saying where
        logger.exception("job.advance_crashed job_id=%s kind=%s", parent.id, kind.name)
        cancel_children(session, parent, now=now)
        family.ended = False
        family.fail(f"the {kind.title}'s advance step failed: {_describe(exc)}")
        return parent
    if cancelling and not family.ended:
        family._settle(JobStatus.CANCELLED)  # noqa: SLF001 - the generic end of a cancel
    session.flush()
    return parent


# --------------------------------------------------------------------------- after commit


def advance_after_commit(session: Session, parent_id: uuid.UUID) -> None:
    """Advance ``parent_id`` in a transaction of its own once ``session`` commits.

    What a rolled-back transaction asked for is dropped (an extra advance would
    be harmless anyway: the reconciler advances every waiting parent).
    """
    session.info.setdefault(_AFTER_COMMIT_KEY, set()).add(parent_id)


def _advance_pending(session: Session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released: wait for the real commit
    pending: set[uuid.UUID] | None = session.info.pop(_AFTER_COMMIT_KEY, None)
    if not pending:
        return
    bind = session.get_bind()
    factory = sessionmaker(bind=bind, expire_on_commit=False)
    for parent_id in sorted(pending):
        try:
            with factory.begin() as fresh:
                advance_parent(fresh, parent_id=parent_id)
        except Exception:  # the reconciler's next pass tries again
            logger.exception("job.advance_failed job_id=%s", parent_id)


def _drop_on_rollback(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_AFTER_COMMIT_KEY, None)


event.listen(Session, "after_commit", _advance_pending)
event.listen(Session, "after_transaction_end", _drop_on_rollback)


def _describe(exc: BaseException) -> str:
    """``Type: message (at file:line in function)``, the innermost frame, redacted."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name})"
    text = f"{type(exc).__name__}: {exc}" + (where if frames else "")
    return redact(text)[:MAX_ADVANCE_ERROR]
