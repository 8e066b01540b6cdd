"""Teams and their API tokens: who may see and submit which jobs."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.clock import utc_now
from core.models.base import Base, TimestampMixin

__all__ = ["TOKEN_PREFIX_LENGTH", "ApiToken", "Team"]

TOKEN_PREFIX_LENGTH = 8
"""Characters of a token kept in clear for display (``clr_AbCd``)."""


class Team(TimestampMixin, Base):
    """A group of people sharing jobs; every job and token belongs to one."""

    __tablename__ = "teams"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(String(100), unique=True)


class ApiToken(Base):
    """A bearer token of a team. Only the SHA-256 of the secret is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    team_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("teams.id", ondelete="CASCADE"), index=True
    )
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(TOKEN_PREFIX_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    team: Mapped[Team] = relationship(lazy="raise")

    @property
    def revoked(self) -> bool:
        """Whether the token was revoked (it then authenticates nothing)."""
        return self.revoked_at is not None
