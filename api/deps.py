"""Request dependencies: settings, the unit-of-work session and the caller's team."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from sweep import services
from sweep.db import end_session
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


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One unit of work per request: commit on success, roll back on error.

    ``async``: making a session does no I/O (it takes a connection on first use,
    in the route's thread), so only the commit or rollback goes to the thread
    pool; a sync generator would cost the request one more hop there and back.
    """
    factory: sessionmaker[Session] = request.app.state.session_factory
    session = factory()
    try:
        yield session
    except BaseException:
        await run_in_threadpool(end_session, session, commit=False)
        raise
    await run_in_threadpool(end_session, session, commit=True)


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
