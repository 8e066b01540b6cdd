"""Request dependencies: settings, the unit-of-work session and the caller's team.

A request that uses the database goes through three steps here, each chosen so
that overload degrades instead of stopping the API (see :mod:`api.admission`):

1. its bearer token's shape is checked with no database and no thread: a missing
   or malformed token is a 401 that costs nothing scarce;
2. it waits for a turn (:class:`~api.admission.Admission`), held until its unit
   of work has committed and its connection is back in the pool;
3. the token is looked up in a short transaction of its own, in one thread-pool
   step: an unknown token holds no connection while the request waits for a
   thread, and the ``last_used_at`` write commits at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from api.admission import Admission
from core import services
from core.db import end_session
from core.errors import Unauthorized
from core.models import Team
from core.services.teams import check_token_format
from core.settings import Settings

__all__ = [
    "AdmittedDep",
    "BearerTokenDep",
    "CurrentTeamDep",
    "SessionDep",
    "SettingsDep",
    "admit",
    "get_bearer_token",
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


SettingsDep = Annotated[Settings, Depends(get_settings)]


async def get_bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The request's bearer token, if it has the shape of one (401 otherwise, no database)."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("missing bearer token: send `Authorization: Bearer <token>`")
    check_token_format(credentials.credentials)
    return credentials.credentials


BearerTokenDep = Annotated[str, Depends(get_bearer_token)]


async def admit(request: Request) -> AsyncIterator[None]:
    """Hold one of the app's turns at the database (503 when none frees up in time)."""
    admission: Admission = request.app.state.admission
    async with admission.slot():
        yield


# scope="function": the turn is given back once the route is done, not after the
# response (a Server-Sent Events stream's lasts as long as the stream).
AdmittedDep = Annotated[None, Depends(admit, scope="function")]


async def get_session(
    request: Request, _token: BearerTokenDep, _admitted: AdmittedDep
) -> AsyncIterator[Session]:
    """One unit of work per request: commit on success, roll back on error.

    Only for requests with a well-formed token (every route that reads the database
    acts for a team), and only once admitted: a turn is taken before the session
    and given back after it ends.

    ``async``: making a session does no I/O (it takes a connection on first use,
    in the route's thread), so only the commit or rollback goes to the thread
    pool, and not even that when the session holds no transaction.
    """
    factory: sessionmaker[Session] = request.app.state.session_factory
    session = factory()
    try:
        yield session
    except BaseException:
        await _end(session, commit=False)
        raise
    await _end(session, commit=True)


async def _end(session: Session, *, commit: bool) -> None:
    if session.in_transaction() or session.new or session.dirty or session.deleted:
        await run_in_threadpool(end_session, session, commit=commit)
    else:
        session.close()  # no transaction, no connection: nothing to wait for


# scope="function": the commit happens before the response is sent, not after it.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def _authenticate(session: Session, token: str) -> Team:
    try:
        team = services.authenticate(session, token=token)
        # Its own transaction, ended in this same thread step: no connection (nor the
        # row lock of a last_used_at write) is held while the request waits for the
        # next thread; the route's work begins a new transaction.
        session.commit()
    except BaseException:
        session.rollback()
        raise
    return team


async def get_current_team(session: SessionDep, token: BearerTokenDep) -> Team:
    """The team the request's bearer token acts for (401 otherwise)."""
    return await run_in_threadpool(_authenticate, session, token)


CurrentTeamDep = Annotated[Team, Depends(get_current_team)]
