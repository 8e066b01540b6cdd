"""All SQL about teams and their API tokens."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from core.models import ApiToken, Team

__all__ = ["TeamRepository", "TokenRepository"]


class TeamRepository:
    """Reads and writes ``teams`` in the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, team: Team) -> Team:
        """Insert a team and flush (a taken name raises IntegrityError here)."""
        self.session.add(team)
        self.session.flush()
        return team

    def get(self, team_id: uuid.UUID) -> Team | None:
        """A team by id."""
        return self.session.get(Team, team_id)

    def get_by_name(self, name: str) -> Team | None:
        """A team by its unique name."""
        return self.session.scalars(select(Team).where(Team.name == name)).one_or_none()


class TokenRepository:
    """Reads and writes ``api_tokens`` in the caller's transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, token: ApiToken) -> ApiToken:
        """Insert a token and flush."""
        self.session.add(token)
        self.session.flush()
        return token

    def get_with_team_by_hash(self, token_hash: str) -> tuple[ApiToken, Team] | None:
        """The token with this hash and its team, revoked or not."""
        stmt = (
            select(ApiToken, Team)
            .join(Team, Team.id == ApiToken.team_id)
            .where(ApiToken.token_hash == token_hash)
        )
        row = self.session.execute(stmt).one_or_none()
        return None if row is None else (row[0], row[1])

    def get_for_team(self, team_id: uuid.UUID, token_id: uuid.UUID) -> ApiToken | None:
        """A token by id, only if it belongs to ``team_id``."""
        stmt = select(ApiToken).where(ApiToken.id == token_id, ApiToken.team_id == team_id)
        return self.session.scalars(stmt).one_or_none()

    def list_for_team(self, team_id: uuid.UUID) -> list[ApiToken]:
        """The team's tokens, oldest first."""
        stmt = (
            select(ApiToken)
            .where(ApiToken.team_id == team_id)
            .order_by(ApiToken.created_at, ApiToken.id)
        )
        return list(self.session.scalars(stmt))

    def touch(self, token_id: uuid.UUID, *, now: datetime, unless_after: datetime) -> None:
        """Set ``last_used_at = now`` unless it is already later than ``unless_after``.

        Throttled so that authenticating a busy client is not a write per request.
        Never waits for a row lock: a row another transaction has locked (a
        concurrent request touching it, a revocation) is left as it is (``FOR UPDATE
        SKIP LOCKED`` on PostgreSQL; SQLite locks the whole database up front).
        """
        unlocked = (
            select(ApiToken.id)
            .where(
                ApiToken.id == token_id,
                or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= unless_after),
            )
            .with_for_update(skip_locked=True)
        )
        stmt = (
            update(ApiToken)
            .where(ApiToken.id.in_(unlocked))
            .values(last_used_at=now)
            .execution_options(synchronize_session=False)
        )
        self.session.execute(stmt)

    def revoke(self, token_id: uuid.UUID, *, team_id: uuid.UUID, now: datetime) -> ApiToken | None:
        """Revoke the team's token (a second revoke keeps the first time); None if absent."""
        stmt = (
            update(ApiToken)
            .where(
                ApiToken.id == token_id,
                ApiToken.team_id == team_id,
                ApiToken.revoked_at.is_(None),
            )
            .values(revoked_at=now)
        )
        self.session.execute(stmt)
        token = self.session.get(ApiToken, token_id, populate_existing=True)
        return token if token is not None and token.team_id == team_id else None
