"""Request dependencies: settings, the unit-of-work session and the caller's team."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from sweep import services
from sweep.db import session_scope
from sweep.errors import Unauthorized
from sweep.models import Team
from sweep.settings import Settings

__all__ = [
    "CurrentTeamDep",
    "SessionDep",
    "SettingsDep",
    "get_current_team",
    "get_session",
    "get_settings",
]

_bearer = HTTPBearer(auto_error=False, description="An API token: `Authorization: Bearer clr_…`")


async def get_settings(request: Request) -> Settings:
    """The settings the app was built with.

    ``async``: it only reads app state, and a sync dependency would cost the request
    a hop to the thread pool and back (measured: about a tenth of a POST's time).
    """
    settings: Settings = request.app.state.settings
    return settings


def get_session(request: Request) -> Iterator[Session]:
    """One unit of work per request: commit on success, roll back on error."""
    factory: sessionmaker[Session] = request.app.state.session_factory
    with session_scope(factory) as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
# scope="function": the commit happens before the response is sent, not after it.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_current_team(
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Team:
    """The team the request's bearer token acts for (401 otherwise)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token: send `Authorization: Bearer <token>`")
    return services.authenticate(session, token=credentials.credentials)


CurrentTeamDep = Annotated[Team, Depends(get_current_team)]
