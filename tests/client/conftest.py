"""Client tests: :class:`clr_sweep.Client` against the real service, two ways.

The services themselves (``postgres_server``, ``embedded_server``) live in the
shared plugin :mod:`tests.services`, so the dashboard tests use the same ones;
here each client test is run against each service in turn.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from clr_sweep import Client
from tests.services import TINY_RANGE_TEST, TINY_TRAINING, WAIT_S, Server

__all__ = ["TINY_RANGE_TEST", "TINY_TRAINING", "WAIT_S", "Server"]


@pytest.fixture(params=["postgres", "embedded"])
def server(request: pytest.FixtureRequest) -> Server:
    """Each service in turn."""
    found: Server = request.getfixturevalue(f"{request.param}_server")
    return found


@pytest.fixture
def client(server: Server) -> Iterator[Client]:
    """A client of :func:`server` (on PostgreSQL: as a new team)."""
    with server.client() as client:
        yield client
