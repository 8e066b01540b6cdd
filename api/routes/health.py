"""``/healthz`` (alive) and ``/readyz`` (database and broker reachable, migrated).

Both are ``async``: ``/healthz`` is answered by the event loop alone (no thread,
no database, no turn at :mod:`api.admission`), so it answers however busy the
API is. ``/readyz`` checks in one thread at a time and shares a result for
:data:`READINESS_TTL_S`, so a flood of unauthenticated probes costs one check;
a check that does not return within :data:`READINESS_TIMEOUT_S` (a frozen
database takes the connection and never answers) reads as that dependency not
answering, and no second check starts while it hangs.
Its answer says only which dependency is not ready; what went wrong goes to the
log (``api.not_ready``), with any password in a URL or an error masked.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from kombu.utils.url import maybe_sanitize_url
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from api.problems import problem_response
from api.routes._responses import problem
from api.schemas import Health, Readiness
from core.migrate import current_revision, head_revision
from core.redact import redact

__all__ = ["READINESS_TIMEOUT_S", "READINESS_TTL_S", "ReadinessProbe", "router"]

logger = logging.getLogger(__name__)

_NOT_MIGRATED = "database is not migrated: run `clr-sweep db upgrade` (or `make migrate`)"

READINESS_TTL_S = 1.0
"""How long one readiness check answers every probe."""

READINESS_TIMEOUT_S = 10.0
"""How long a probe waits for a check before it answers "not answering": longer
than the broker check's own timeouts (a frozen broker is "unreachable" within them)."""

router = APIRouter(tags=["health"])


@dataclass(frozen=True)
class _Verdict:
    revision: str | None = None
    dependency: str | None = None  # the one not ready; None when ready
    reason: str = ""
    detail: str = ""


class ReadinessProbe:
    """Checks the database (reachable, at the Alembic head) and the broker.

    One check runs at a time, in a daemon thread of its own (not the request
    thread pool: a check hung on a frozen database holds no thread a request
    needs); its verdict is shared for :data:`READINESS_TTL_S`. A probe waits for
    it at most ``timeout_s``: then the dependency being checked is "not answering",
    and later probes say so too, without starting another check, until it returns.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        broker_check: Callable[[], None] | None = None,
        broker_url: str = "",
        timeout_s: float = READINESS_TIMEOUT_S,
    ) -> None:
        self.engine = engine
        self.broker_check = broker_check
        self.broker_url = broker_url
        self.timeout_s = timeout_s
        self._lock: anyio.Lock | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last: tuple[float, _Verdict] | None = None
        self._running: Future[_Verdict] | None = None
        self._checking = "database"  # what the running check is looking at

    async def check(self) -> _Verdict:
        """The current verdict (a fresh one at most :data:`READINESS_TTL_S` old)."""
        loop = asyncio.get_running_loop()
        if self._lock is None or self._loop is not loop:
            self._lock, self._loop = anyio.Lock(), loop
        async with self._lock:
            if self._last is not None and time.monotonic() - self._last[0] < READINESS_TTL_S:
                return self._last[1]
            verdict = await self._wait_for_check()
            self._last = (time.monotonic(), verdict)
            return verdict

    async def _wait_for_check(self) -> _Verdict:
        running = self._running
        if running is None or running.done():
            running = self._running = self._start_check()
        done, _ = await asyncio.wait([asyncio.wrap_future(running)], timeout=self.timeout_s)
        if done:
            return done.pop().result()
        logger.warning(
            "api.not_ready dependency=%s: no answer within %g s", self._checking, self.timeout_s
        )
        return _Verdict(dependency=self._checking, reason="not answering")

    def _start_check(self) -> Future[_Verdict]:
        future: Future[_Verdict] = Future()

        def run() -> None:
            try:
                future.set_result(self._check_now())
            except BaseException as exc:  # the probe re-raises it
                future.set_exception(exc)

        threading.Thread(target=run, name="readiness-check", daemon=True).start()
        return future

    def _check_now(self) -> _Verdict:
        self._checking = "database"
        database = self.engine.url.render_as_string(hide_password=False)
        try:
            revision = current_revision(self.engine)
        except SQLAlchemyError as exc:
            self._log("database", exc, self.engine.url.render_as_string(), database)
            return _Verdict(dependency="database", reason="unreachable")
        head = head_revision()
        if revision != head:
            logger.warning(
                "api.not_ready dependency=database: at revision %s, not at head %s",
                revision or "none",
                head,
            )
            return _Verdict(dependency="database", reason="not migrated", detail=_NOT_MIGRATED)
        if self.broker_check is not None:
            self._checking = "broker"
            try:
                self.broker_check()
            except Exception as exc:  # any failure to reach it means "not ready", not a 500
                self._log("broker", exc, maybe_sanitize_url(self.broker_url), self.broker_url)
                return _Verdict(dependency="broker", reason="unreachable")
        return _Verdict(revision=revision)

    def _log(self, dependency: str, exc: BaseException, shown_url: str, secret_url: str) -> None:
        error = redact(f"{type(exc).__name__}: {exc}", secret_url)[:500]
        logger.warning("api.not_ready dependency=%s url=%s error=%s", dependency, shown_url, error)


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses=problem(503, "The database or the broker is unreachable, or not migrated"),
)
async def readyz(request: Request) -> Readiness | JSONResponse:
    """Ready when the database is reachable and migrated, and the broker reachable."""
    probe: ReadinessProbe = request.app.state.readiness
    verdict = await probe.check()
    if verdict.dependency is None:
        assert verdict.revision is not None
        return Readiness(status="ready", revision=verdict.revision)
    detail = verdict.detail or f"{verdict.dependency} {verdict.reason}"
    errors: list[Any] = [{"field": verdict.dependency, "reason": verdict.reason}]
    return problem_response(503, detail, title="Not ready", code="not-ready", errors=errors)
