"""Teams, API tokens and authentication.

A token is ``clr_`` followed by 43 URL-safe characters (32 random bytes). Only
its SHA-256 is stored, plus its first 8 characters for display; the secret is
shown once, when the token is created. A high-entropy random secret needs no
salt or slow hash: nobody can guess one from its SHA-256.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from core.clock import as_utc, utc_now
from core.errors import InvalidInput, TeamNameTaken, TeamNotFound, TokenNotFound, Unauthorized
from core.models import TOKEN_PREFIX_LENGTH, ApiToken, Team
from core.repositories import TeamRepository, TokenRepository

__all__ = [
    "LAST_USED_RESOLUTION",
    "TOKEN_SCHEME",
    "IssuedToken",
    "authenticate",
    "check_token_format",
    "create_team",
    "create_token",
    "get_team",
    "hash_token",
    "list_tokens",
    "revoke_token",
]

logger = logging.getLogger(__name__)

TOKEN_SCHEME = "clr_"
"""Every token starts with this, so a leaked one is easy to recognise."""

LAST_USED_RESOLUTION = timedelta(minutes=1)
"""``last_used_at`` is written at most this often per token."""

_NAME_MAX = 100

_TOKEN_SHAPE = re.compile(re.escape(TOKEN_SCHEME) + r"[A-Za-z0-9_-]{43}")
"""What :func:`create_token` issues: the scheme and 32 random bytes, URL-safe base64."""


@dataclass(frozen=True)
class IssuedToken:
    """A new token's row and its secret: the only time the secret is available."""

    token: ApiToken
    secret: str


def _now(now: datetime | None) -> datetime:
    return utc_now() if now is None else as_utc(now)


def hash_token(secret: str) -> str:
    """SHA-256 hex digest of a token's secret (what the database keeps)."""
    return hashlib.sha256(secret.encode()).hexdigest()


def _clean_name(name: str, field: str) -> str:
    cleaned = name.strip()
    if not 1 <= len(cleaned) <= _NAME_MAX or not cleaned.isprintable():
        reason = f"must be 1 to {_NAME_MAX} printable characters, got {name!r}"
        raise InvalidInput(f"{field} {reason}", errors=[{"field": field, "reason": reason}])
    return cleaned


def create_team(session: Session, *, name: str, now: datetime | None = None) -> Team:
    """Create a team.

    Raises:
        InvalidInput: the name is empty, too long or not printable.
        TeamNameTaken: another team has that name.
    """
    name = _clean_name(name, "name")
    now = _now(now)
    repo = TeamRepository(session)
    if repo.get_by_name(name) is not None:
        raise TeamNameTaken(f"a team named {name!r} already exists")
    team = Team(name=name, created_at=now, updated_at=now)
    try:
        with session.begin_nested():
            repo.add(team)
    except IntegrityError:
        raise TeamNameTaken(f"a team named {name!r} already exists") from None
    logger.info("team.created team_id=%s name=%s", team.id, name)
    return team


def get_team(session: Session, *, name: str) -> Team:
    """A team by name.

    Raises:
        TeamNotFound: no team has that name.
    """
    team = TeamRepository(session).get_by_name(name)
    if team is None:
        raise TeamNotFound(f"no team named {name!r}")
    return team


def create_token(
    session: Session, *, team: Team, name: str, now: datetime | None = None
) -> IssuedToken:
    """Issue a token for ``team``; the returned secret is never stored.

    Raises:
        InvalidInput: the name is empty, too long or not printable.
    """
    name = _clean_name(name, "name")
    secret = TOKEN_SCHEME + secrets.token_urlsafe(32)
    token = ApiToken(
        team_id=team.id,
        name=name,
        token_hash=hash_token(secret),
        prefix=secret[:TOKEN_PREFIX_LENGTH],
        created_at=_now(now),
    )
    TokenRepository(session).add(token)
    logger.info("token.created token_id=%s team_id=%s prefix=%s", token.id, team.id, token.prefix)
    return IssuedToken(token=token, secret=secret)


def list_tokens(session: Session, *, team: Team) -> list[ApiToken]:
    """The team's tokens (revoked ones included), oldest first."""
    return TokenRepository(session).list_for_team(team.id)


def revoke_token(
    session: Session, *, team: Team, token_id: uuid.UUID, now: datetime | None = None
) -> ApiToken:
    """Revoke one of the team's tokens; revoking twice keeps the first time.

    Raises:
        TokenNotFound: no such token for this team.
    """
    token = TokenRepository(session).revoke(token_id, team_id=team.id, now=_now(now))
    if token is None:
        raise TokenNotFound(f"token {token_id} not found")
    logger.info("token.revoked token_id=%s team_id=%s", token_id, team.id)
    return token


def check_token_format(token: str) -> None:
    """Refuse a string that cannot be a token, without the database.

    Raises:
        Unauthorized: ``token`` is not ``clr_`` and 43 URL-safe characters.
    """
    if not token.startswith(TOKEN_SCHEME):
        logger.info("auth.refused reason=malformed")
        raise Unauthorized(f"not a clr-sweep token (they start with {TOKEN_SCHEME!r})")
    if _TOKEN_SHAPE.fullmatch(token) is None:
        logger.info("auth.refused reason=malformed")
        raise Unauthorized(
            f"malformed token: a clr-sweep token is {TOKEN_SCHEME!r} and 43 characters "
            "from A-Z, a-z, 0-9, '-' and '_'"
        )


def authenticate(session: Session, *, token: str, now: datetime | None = None) -> Team:
    """The team a bearer token acts for.

    Raises:
        Unauthorized: the token is malformed, unknown or revoked.
    """
    check_token_format(token)
    repo = TokenRepository(session)
    found = repo.get_with_team_by_hash(hash_token(token))
    if found is None:
        logger.info("auth.refused reason=unknown prefix=%s", token[:TOKEN_PREFIX_LENGTH])
        raise Unauthorized("unknown token")
    api_token, team = found
    if api_token.revoked_at is not None:
        logger.info("auth.refused reason=revoked token_id=%s", api_token.id)
        raise Unauthorized(f"token {api_token.prefix}… was revoked")
    now = _now(now)
    cutoff = now - LAST_USED_RESOLUTION
    last_used = api_token.last_used_at
    if last_used is None or as_utc(last_used) <= cutoff:
        # the row is loaded: a fresh last_used_at costs no round trip (the guarded
        # UPDATE still settles two requests racing on a stale one). Best effort: a
        # row another transaction holds is skipped, never waited for.
        repo.touch(api_token.id, now=now, unless_after=cutoff)
    return team
