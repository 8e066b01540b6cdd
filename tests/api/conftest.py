"""API tests: the real app on the migrated test databases, one rolled-back session.

The app's ``get_session`` is overridden with the test's ``session`` (which may
commit: the commits land in a savepoint of the outer transaction rolled back
after the test), keeping the real dependency's commit-or-rollback behaviour.
Messages go to a real in-process list sender handed to ``create_app``.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import StarletteDeprecationWarning

from api.app import create_app
from api.deps import get_session, get_settings
from api.routes.events import StreamTiming, get_stream_timing
from core.db import session_scope
from core.models import Team
from core.services import create_token
from core.settings import Settings
from tests.builders import make_team

with warnings.catch_warnings():
    # Starlette's test client prefers the httpx2 fork; the project depends on httpx,
    # which the client still supports (it only warns, once, on import).
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

if TYPE_CHECKING:
    from tests.api.sse import Live

Sent = list[tuple[uuid.UUID, str]]


class JobsOf:
    """The two reads ``cli.follow.follow`` makes of a ``clr_sweep.Client`` (a job by id,
    and a raw request), answered by the in-process app: the command's progress bar and
    tables on the real API's documents without a server process."""

    def __init__(self, client: TestClient) -> None:
        self.client = client

    def get(self, job_id: str) -> Any:
        response = self.client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        assert response.is_success, response.text
        return response


@dataclass
class Caller:
    """A team and the headers that authenticate as it."""

    team: Team
    token: str
    token_id: uuid.UUID

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture
def api_settings(engine: Engine, tmp_path: Path) -> Settings:
    """Settings on the test database of the current dialect."""
    url = engine.url.render_as_string(hide_password=False)
    return Settings(_env_file=None, data_dir=tmp_path, database_url=url)


@pytest.fixture
def messages() -> Sent:
    """What the app's sender received: ``(job_id, kind)`` in send order."""
    return []


@pytest.fixture
def test_app(session: Session, api_settings: Settings, messages: Sent) -> FastAPI:
    """The app, not started, its sessions being the test's rolled-back one."""

    def send(job_id: uuid.UUID, kind: str, _device: str) -> None:
        messages.append((job_id, kind))

    app = create_app(api_settings, job_sender=send)

    def test_session() -> Iterator[Session]:
        # What the test set up is committed (into the outer transaction) first, as a
        # real request would find it; a failing request then rolls back only its own work.
        session.commit()
        session.expunge_all()
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        session.commit()

    app.dependency_overrides[get_session] = test_session
    app.dependency_overrides[get_settings] = lambda: api_settings
    return app


@pytest.fixture
def client(test_app: FastAPI) -> Iterator[TestClient]:
    """A client of :func:`test_app`, started."""
    with TestClient(test_app) as test_client:
        yield test_client


def make_caller(session: Session) -> Caller:
    """A new team with a fresh token."""
    team = make_team(session)
    issued = create_token(session, team=team, name="tests")
    session.flush()
    return Caller(team=team, token=issued.secret, token_id=issued.token.id)


@pytest.fixture
def caller(session: Session) -> Caller:
    """The team the tests act as."""
    return make_caller(session)


@pytest.fixture
def live(committed: sessionmaker[Session], api_settings: Settings) -> Iterator[Live]:
    """The app on really committed rows (event streams read in sessions of their own),
    authenticated as a new team; streams poll every 10 ms instead of 250 ms."""
    from tests.api.sse import Live  # it imports this module's TestClient

    with session_scope(committed) as session:
        team = make_team(session)
        token = create_token(session, team=team, name="tests").secret
        team_id = team.id
    app = create_app(api_settings)
    app.dependency_overrides[get_stream_timing] = lambda: StreamTiming(poll_interval_s=0.01)
    with TestClient(app) as client:
        yield Live(app=app, client=client, db=committed, team_id=team_id, token=token)
