"""``/readyz`` says which dependency is not ready, and nothing more; details go to the log.

The broker here is real: Celery's sender on a Redis URL (with a password) whose
port nobody listens on, so the check fails as it would in production.
"""

from __future__ import annotations

import logging

import pytest

from api.app import create_app
from cli.service import free_port
from sweep.settings import Settings
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
