"""All SQL about the worker registry."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core.models import Worker

__all__ = ["WorkerRepository"]


class WorkerRepository:
    """Reads and writes ``workers`` in the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, worker: Worker) -> Worker:
        """Insert a worker's row and flush."""
        self.session.add(worker)
        self.session.flush()
        return worker

    def get(self, worker_id: uuid.UUID) -> Worker | None:
        """A worker by id."""
        return self.session.get(Worker, worker_id)

    def beat(
        self,
        worker_id: uuid.UUID,
        *,
        current_job_id: uuid.UUID | None,
        idle_since: datetime | None,
        now: datetime,
    ) -> bool:
        """Record a worker's heartbeat and what it holds; False if it has no row."""
        stmt = (
            update(Worker)
            .where(Worker.id == worker_id)
            .values(current_job_id=current_job_id, idle_since=idle_since, heartbeat_at=now)
            .returning(Worker.id)
        )
        return self.session.execute(stmt).first() is not None

    def delete(self, worker_id: uuid.UUID) -> bool:
        """Remove a worker's row (a clean shutdown); False if it had none."""
        stmt = delete(Worker).where(Worker.id == worker_id).returning(Worker.id)
        return self.session.execute(stmt).first() is not None

    def heard_since(self, cutoff: datetime) -> list[Worker]:
        """Workers whose last heartbeat is at or after ``cutoff`` (the live ones), by name."""
        stmt = (
            select(Worker)
            .where(Worker.heartbeat_at >= cutoff)
            .order_by(Worker.name, Worker.id)
            .execution_options(populate_existing=True)
        )
        return list(self.session.scalars(stmt))

    def all(self) -> list[Worker]:
        """Every registered worker, live or not, by name."""
        return list(self.session.scalars(select(Worker).order_by(Worker.name, Worker.id)))

    def prune(self, silent_since: datetime) -> int:
        """Delete workers whose last heartbeat is before ``silent_since``; how many."""
        stmt = delete(Worker).where(Worker.heartbeat_at < silent_since).returning(Worker.id)
        return len(self.session.execute(stmt).all())
