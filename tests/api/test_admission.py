"""Admission control and the busy pool: excess load is a fast 503 with ``Retry-After``."""

from __future__ import annotations

import anyio
import pytest
from sqlalchemy.orm import Session, sessionmaker

from api.admission import (
    POSTGRES_CONCURRENCY,
    SQLITE_CONCURRENCY,
    Admission,
    Overloaded,
    admission_limit,
)
from api.app import create_app
from core.db import session_scope
from core.services import create_token
from core.settings import Settings
from tests.api.conftest import TestClient
from tests.builders import make_team

POSTGRES = "postgresql+psycopg://u@127.0.0.1:1/db"


class TestAdmission:
    def test_a_full_line_is_refused_at_once(self) -> None:
        admission = Admission(1, max_queue=0, wait_s=60)

        async def main() -> None:
            async with admission.slot():
                with pytest.raises(Overloaded, match="1 requests in progress and 0 waiting"):
                    async with admission.slot():
                        pass  # pragma: no cover - refused before

        anyio.run(main)

    def test_a_wait_that_runs_out_is_refused(self) -> None:
        admission = Admission(1, max_queue=5, wait_s=0.01)

        async def main() -> None:
            async with admission.slot():
                with pytest.raises(Overloaded, match="no turn within 0.01 s") as caught:
                    async with admission.slot():
                        pass  # pragma: no cover - refused before
                assert caught.value.retry_after_s >= 1
                assert admission.waiting == 0
            assert admission.in_use == 0

        anyio.run(main)

    def test_a_waiter_gets_the_freed_slot(self) -> None:
        admission = Admission(1, max_queue=5, wait_s=60)
        order: list[str] = []

        async def second() -> None:
            async with admission.slot():
                order.append("second")

        async def main() -> None:
            async with anyio.create_task_group() as tasks:
                async with admission.slot():
                    tasks.start_soon(second)
                    await anyio.wait_all_tasks_blocked()
                    assert admission.waiting == 1
                    order.append("first")
            assert order == ["first", "second"]

        anyio.run(main)


class TestLimit:
    @pytest.mark.parametrize(
        ("url", "overrides", "expected"),
        [
            (POSTGRES, {}, POSTGRES_CONCURRENCY),
            ("sqlite:///x.db", {}, SQLITE_CONCURRENCY),
            (POSTGRES, {"api_max_concurrency": 30}, 30),
            # never more than the connection pool, nor near the thread pool (40)
            (POSTGRES, {"api_max_concurrency": 30, "db_pool_size": 5, "db_max_overflow": 3}, 8),
            (POSTGRES, {"api_max_concurrency": 1000}, 32),
        ],
    )
    def test_limit_stays_below_the_pools(
        self, url: str, overrides: dict[str, int], expected: int
    ) -> None:
        settings = Settings(_env_file=None, database_url=url, **overrides)  # type: ignore[arg-type]
        assert admission_limit(settings) == expected


def test_an_exhausted_pool_is_a_503_with_retry_after(
    postgresql_url: str, postgres_committed: sessionmaker[Session]
) -> None:
    with session_scope(postgres_committed) as session:
        secret = create_token(session, team=make_team(session), name="busy").secret
    settings = Settings(
        _env_file=None,
        database_url=postgresql_url,
        db_pool_size=1,
        db_max_overflow=0,
        db_pool_timeout_s=0.2,
    )
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as client:
        held = app.state.engine.connect()  # the pool's only connection
        try:
            response = client.get("/range-tests", headers={"Authorization": f"Bearer {secret}"})
        finally:
            held.close()
        after = client.get("/range-tests", headers={"Authorization": f"Bearer {secret}"})

    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"]
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"][0]["field"] == "database"
    assert after.status_code == 200
