"""The worker registry: each running worker process announces itself here."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from core.models.base import Base, JSONType

__all__ = ["Worker"]


class Worker(Base):
    """One worker process (a Celery worker's parent), as it last reported itself.

    The process writes its row when it starts and then every heartbeat interval,
    and deletes it on a clean shutdown; a row whose ``heartbeat_at`` is older than
    the heartbeat timeout is a worker gone offline (killed, or its host lost), and
    the reconciler prunes it once it is very old.

    ``current_job_id`` is the job whose message it holds (None: idle), and
    ``idle_since`` when it was last seen to become idle, holding no message and
    having fetched none since (None while busy). Both describe the moment
    ``heartbeat_at``: from them the reconciler tells a message still waiting in a
    queue (every consumer busy) from one lost (a consumer idle long enough to
    have fetched it).
    """

    __tablename__ = "workers"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(255))
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int]
    device_kind: Mapped[str] = mapped_column(String(16))
    queues: Mapped[list[str]] = mapped_column(JSONType)
    current_job_id: Mapped[uuid.UUID | None]
    idle_since: Mapped[datetime | None]
    started_at: Mapped[datetime]
    heartbeat_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint("device_kind IN ('cpu', 'cuda')", name="device_kind"),
        CheckConstraint("pid >= 0", name="pid"),
        # the live workers (heartbeat after a cutoff) and the prune of old rows
        Index("ix_workers_heartbeat_at", "heartbeat_at"),
    )
