"""One rendering path for every error: ``application/problem+json`` (RFC 9457).

:class:`core.errors.DomainError`, :class:`starlette.exceptions.HTTPException`
and :class:`fastapi.exceptions.RequestValidationError` all become
``{"type", "title", "status", "detail", "errors": [{"field", "reason"}]}``. Request
bodies are capped at :data:`MAX_BODY_BYTES` by :class:`BodySizeLimitMiddleware`,
which counts the bytes actually received, not only the ``Content-Length`` header.
A database that cannot be reached (down, restarting, the connection dropped) gives
a 503 naming ``database``, with ``Retry-After``: a transient outage, not a bug.
So does a connection pool that stays exhausted past its timeout, and a server at
capacity (:class:`api.admission.Overloaded`) gives a 503 with ``Retry-After`` too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.admission import Overloaded
from clr_sweep.contracts import FieldErrorDoc, Problem
from core.errors import DomainError, FieldError

__all__ = [
    "DATABASE_RETRY_AFTER_S",
    "MAX_BODY_BYTES",
    "PROBLEM_JSON",
    "BodySizeLimitMiddleware",
    "FieldErrorDoc",
    "Problem",
    "allowed_methods",
    "install_problem_handlers",
    "overloaded_response",
    "problem_response",
    "validation_field",
]

PROBLEM_JSON = "application/problem+json"
MAX_BODY_BYTES = 64 * 1024
"""The largest request body accepted (64 KiB); a range-test spec is far smaller."""

_SOURCES = ("body", "query", "path", "header", "cookie")

DATABASE_RETRY_AFTER_S = 5
"""``Retry-After`` of the 503 while the database is unreachable (a restart takes seconds)."""

logger = logging.getLogger(__name__)


def problem_response(
    status: int,
    detail: str,
    *,
    title: str | None = None,
    code: str | None = None,
    errors: Sequence[FieldError] = (),
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """A problem+json response; ``code`` becomes the ``type`` URN's last part."""
    phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
    body: dict[str, Any] = {
        "type": f"urn:clr-sweep:problem:{code or phrase.lower().replace(' ', '-')}",
        "title": title or phrase,
        "status": status,
        "detail": detail,
    }
    if errors:
        body["errors"] = [{"field": e["field"], "reason": e["reason"]} for e in errors]
    all_headers = dict(headers or {})
    if status == 401:
        all_headers.setdefault("WWW-Authenticate", "Bearer")
    return JSONResponse(body, status_code=status, headers=all_headers, media_type=PROBLEM_JSON)


BODY_TAGS = frozenset({"service", "client"})
"""Tags of request bodies that are one of several specs (``POST /range-tests`` takes the
service's spec or a client's, by ``source``): pydantic puts them in the location."""


def validation_field(loc: Sequence[str | int]) -> str:
    """Pydantic's ``loc`` as a dotted field name without its source (``params.width``).

    Query, path and header parameters are named alone (``status``, ``Idempotency-Key``).
    """
    parts = list(loc)
    if parts and parts[0] in _SOURCES:
        source = parts.pop(0)
        if not parts:
            return str(source)
        if source != "body":
            return str(parts[0])  # a parameter's name; list indexes mean nothing to a caller
        if len(parts) > 1 and parts[0] in BODY_TAGS:
            parts.pop(0)
    return ".".join(str(p) for p in parts) or "body"


def _reason(error: Mapping[str, Any]) -> str:
    cause = error.get("ctx", {}).get("error")
    if error.get("type") == "value_error" and cause is not None:
        return str(cause)  # without pydantic's "Value error, " prefix
    return str(error.get("msg", "invalid"))


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DomainError)
    return problem_response(
        exc.status,
        exc.detail,
        title=exc.title,
        code=exc.code,
        errors=exc.errors,
        headers=exc.headers,
    )


_METHODS = ("DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT")


def allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app answers at the request's path (sorted).

    Starlette's 405 names only the methods of the first route that matched the
    path, while one path may have several routes (``GET`` and ``POST /range-tests``).
    """
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL
            for route in request.app.router.routes
        )
    ]


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        headers["Allow"] = ", ".join(allowed_methods(request))
    return problem_response(exc.status_code, str(exc.detail), headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = list(exc.errors())
    if any(e.get("type") == "json_invalid" for e in raw):
        reason = "not valid JSON: " + "; ".join(
            str(e.get("ctx", {}).get("error", e.get("msg"))) for e in raw
        )
        return problem_response(
            400,
            f"the request body is {reason}",
            title="Malformed JSON",
            code="malformed-json",
            errors=[{"field": "body", "reason": reason}],
        )
    errors: list[FieldError] = [
        {"field": validation_field(e.get("loc", ())), "reason": _reason(e)} for e in raw
    ]
    detail = "; ".join(f"{e['field']}: {e['reason']}" for e in errors)
    return problem_response(422, detail, title="Invalid input", code="invalid-input", errors=errors)


def _database_unavailable(exc: Exception) -> bool:
    """Whether ``exc`` says the database could not be reached, not that a query was wrong."""
    if isinstance(exc, DBAPIError):
        return isinstance(exc, OperationalError) or exc.connection_invalidated
    return isinstance(exc, psycopg.OperationalError)


async def _database_error(_request: Request, exc: Exception) -> JSONResponse:
    if not _database_unavailable(exc):
        raise exc  # any other database error is a bug: Starlette answers 500
    # the class only: the driver's message may name hosts and users
    cause = type(getattr(exc, "orig", None) or exc).__name__
    logger.warning("api.database_unavailable error=%s", cause)
    reason = f"unavailable ({cause})"
    return problem_response(
        503,
        f"the database is {reason}; retry in {DATABASE_RETRY_AFTER_S} s",
        title="Database unavailable",
        code="database-unavailable",
        errors=[{"field": "database", "reason": reason}],
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


async def _pool_exhausted(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, PoolTimeout)
    logger.warning("api.database_busy: no pooled connection freed up in time")
    reason = "busy: every pooled connection is in use"
    return problem_response(
        503,
        f"the database is {reason}; retry in {DATABASE_RETRY_AFTER_S} s",
        title="Database busy",
        code="database-busy",
        errors=[{"field": "database", "reason": reason}],
        headers={"Retry-After": str(DATABASE_RETRY_AFTER_S)},
    )


async def _overloaded(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, Overloaded)
    return overloaded_response(exc)


def overloaded_response(exc: Overloaded) -> JSONResponse:
    """The 503 (or 429) of :class:`~api.admission.Overloaded`, with its ``Retry-After``."""
    return problem_response(
        exc.status,
        f"{exc.reason}; retry in {exc.retry_after_s} s",
        title=exc.title,
        code=exc.code,
        errors=[{"field": exc.field, "reason": exc.reason}],
        headers={"Retry-After": str(exc.retry_after_s)},
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Render every expected error of ``app`` as problem+json."""
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(Overloaded, _overloaded)
    app.add_exception_handler(PoolTimeout, _pool_exhausted)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(psycopg.OperationalError, _database_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)


class BodySizeLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` with a 413 problem naming ``body``.

    A declared ``Content-Length`` over the limit is refused before reading; otherwise
    the body is read (at most ``max_bytes + 1`` bytes are held) and replayed to the
    app, so a missing or false ``Content-Length`` cannot slip a larger body through.
    """

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        reason = f"must be at most {self.max_bytes} bytes"
        response = problem_response(
            413,
            f"the request body {reason}",
            title="Request body too large",
            code="body-too-large",
            errors=[{"field": "body", "reason": reason}],
        )
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await self._refuse(scope, receive, send)
                    return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)
                return
            body = message.get("body", b"")
            size += len(body)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([whole], then=receive), send)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
