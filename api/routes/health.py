"""``/healthz`` (alive) and ``/readyz`` (database and broker reachable, migrated)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from api.problems import problem_response
from api.routes._responses import problem
from api.schemas import Health, Readiness
from sweep.migrate import current_revision, head_revision

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz() -> Health:
    """The process is alive."""
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Readiness,
    responses=problem(503, "The database or the broker is unreachable, or not migrated"),
)
def readyz(request: Request) -> Readiness | JSONResponse:
    """Ready when the database is reachable and migrated, and the broker reachable."""
    engine: Engine = request.app.state.read_engine
    try:
        revision = current_revision(engine)
    except SQLAlchemyError as exc:
        reason = f"unreachable: {type(exc).__name__}"
        return _not_ready(f"database {reason}", reason)
    head = head_revision()
    if revision != head:
        reason = f"at revision {revision or 'none'}, not at head {head}"
        return _not_ready(
            "database is not migrated: run `clr-sweep db upgrade` (or `make migrate`)", reason
        )
    broker_check: Callable[[], None] | None = request.app.state.broker_check
    if broker_check is not None:
        try:
            broker_check()
        except Exception as exc:  # any failure to reach it means "not ready", not a 500
            reason = f"unreachable: {type(exc).__name__}: {exc}"[:300]
            return _not_ready(f"broker {reason}", reason, field="broker")
    return Readiness(status="ready", revision=revision)


def _not_ready(detail: str, reason: str, *, field: str = "database") -> JSONResponse:
    errors: list[Any] = [{"field": field, "reason": reason}]
    return problem_response(503, detail, title="Not ready", code="not-ready", errors=errors)
