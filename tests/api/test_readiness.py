"""``/readyz`` says which dependency is not ready, and nothing more; details go to the log.

The broker here is real: Celery's sender on a Redis URL (with a password) whose
port nobody listens on, so the check fails as it would in production.
"""

from __future__ import annotations

import logging
import socket
import threading
from typing import Any

import anyio
import pytest
from sqlalchemy.pool import NullPool

from api.app import create_app
from api.routes.health import READINESS_TTL_S, ReadinessProbe
from cli.service import free_port
from core.db import create_db_engine
from core.settings import Settings
from tests.api.conftest import TestClient
from worker.celery_app import create_celery
from worker.sender import CelerySender

PASSWORD = "s3cret-broker-pw"


def test_an_unreachable_broker_is_named_without_its_address_or_error(
    api_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    settings = api_settings.model_copy(
        update={"broker_url": f"redis://:{PASSWORD}@127.0.0.1:{port}/0"}
    )
    sender = CelerySender(create_celery(settings))
    app = create_app(settings, broker_check=sender.ping)

    with caplog.at_level(logging.WARNING), TestClient(app) as client:
        response = client.get("/readyz")

    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["detail"] == "broker unreachable"
    assert response.json()["errors"] == [{"field": "broker", "reason": "unreachable"}]
    for secret in (str(port), "127.0.0.1", PASSWORD, "Error"):
        assert secret not in response.text
    logged = [r.getMessage() for r in caplog.records if "api.not_ready" in r.getMessage()]
    assert len(logged) == 1
    assert "dependency=broker" in logged[0]
    assert f"127.0.0.1:{port}" in logged[0]  # the operator's details are in the log
    assert PASSWORD not in caplog.text


CHECK_BOUND_S = 30.0
"""A generous liveness bound: a probe answers within it, whatever the database does."""


def test_a_database_that_never_answers_is_not_ready_not_a_hung_probe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A server that takes connections and never answers, as a frozen (SIGSTOPped)
    # PostgreSQL does: the kernel completes the handshake, nothing replies. The
    # check's thread hung on it and held the probe's lock, so every /readyz after
    # it waited forever instead of saying "not ready".
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    engine = create_db_engine(
        f"postgresql+psycopg://clr@127.0.0.1:{silent.getsockname()[1]}/clr", poolclass=NullPool
    )
    probe = ReadinessProbe(engine, timeout_s=0.5)
    verdicts: list[Any] = []

    def probe_twice() -> None:
        async def main() -> None:
            verdicts.append(await probe.check())
            await anyio.sleep(READINESS_TTL_S)  # past the shared verdict: a new probe
            verdicts.append(await probe.check())

        anyio.run(main)

    runner = threading.Thread(target=probe_twice, daemon=True)
    try:
        with caplog.at_level(logging.WARNING):
            runner.start()
            runner.join(CHECK_BOUND_S)
            answered = not runner.is_alive()
            # the hung check is still waiting: the second probe did not start another
            in_flight = [t for t in threading.enumerate() if t.name == "readiness-check"]
    finally:
        silent.close()  # the hung connection fails, and its thread ends
        engine.dispose()

    assert answered, "/readyz hung on a database that never answers"
    assert [(v.dependency, v.reason) for v in verdicts] == [("database", "not answering")] * 2
    assert len(in_flight) == 1
    assert "api.not_ready dependency=database" in caplog.text
