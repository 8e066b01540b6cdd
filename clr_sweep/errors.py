"""The client's exceptions: every failure of a request is a :class:`ClientError`.

::

    ClientError                   anything that kept a request from its answer
    ├── ConnectError              no server answered at the URL (refused, unknown host)
    ├── Timeout                   the server took longer than the client's timeout
    ├── ProtocolError             the answer was not what the API sends (not JSON, cut short)
    └── ProblemError              the API answered with an error (problem+json fields)
        ├── Invalid               400, 413, 422: the request is wrong; ``errors`` names the fields
        ├── Unauthorized          401, 403: no token, a wrong one, or not this team's
        ├── NotFound              404: no such job (for this team), or nothing found
        ├── Conflict              409: not possible in the job's state (it already finished)
        └── ServiceUnavailable    503, 429: still refused after every retry

The retried answers (502, 503, 504, 429, a dropped connection) surface only once
the retries ran out.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

__all__ = [
    "ClientError",
    "Conflict",
    "ConnectError",
    "FieldError",
    "Invalid",
    "NotFound",
    "ProblemError",
    "ProtocolError",
    "ServiceUnavailable",
    "Timeout",
    "Unauthorized",
    "problem_error",
]


class ClientError(Exception):
    """A request to the service did not get the answer it asked for."""


class ConnectError(ClientError):
    """No server answered at ``url``."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(
            f"cannot reach the clr-sweep service at {url} ({reason}); is it running? Start "
            "one with `clr-sweep serve`, or run the command with `--embedded`"
        )


class Timeout(ClientError):
    """Something took longer than allowed: the server's answer (the client's ``timeout``),
    or a job (``Client.wait(timeout=...)``)."""

    def __init__(self, message: str, *, url: str | None = None, timeout: float | None = None):
        self.url = url
        self.timeout = timeout
        super().__init__(message)


class ProtocolError(ClientError):
    """The server's answer was not what the API sends (a proxy's page, a cut stream)."""


@dataclass(frozen=True)
class FieldError:
    """One rejected input and why (``field`` is dotted: ``params.width``)."""

    field: str
    reason: str


class ProblemError(ClientError):
    """The API answered with an error: the fields of its ``application/problem+json``.

    Attributes:
        status: the HTTP status.
        type: the problem's URN (``urn:clr-sweep:problem:invalid-input``).
        title: a short summary of the kind of problem.
        detail: what went wrong, in words (names the field and the value).
        instance: the problem's instance URI, when the server gave one.
        errors: every rejected input as a :class:`FieldError`.
        retry_after: seconds the server asked to wait (``Retry-After``), when given.
        attempts: how many times the request was sent (more than 1: it was retried).
    """

    def __init__(
        self,
        status: int,
        *,
        type: str = "about:blank",  # the problem+json member's name
        title: str = "",
        detail: str = "",
        instance: str | None = None,
        errors: list[FieldError] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.title = title or _phrase(status)
        self.detail = detail
        self.instance = instance
        self.errors = list(errors or [])
        self.retry_after = retry_after
        self.attempts = 1
        super().__init__(self._message())

    def _message(self) -> str:
        text = f"HTTP {self.status} {self.title}"
        if self.detail:
            text += f": {self.detail}"
        missing = [e for e in self.errors if e.reason not in self.detail]
        if missing:
            text += " (" + "; ".join(f"{e.field}: {e.reason}" for e in missing) + ")"
        return text

    @property
    def fields(self) -> list[str]:
        """The names of the rejected inputs."""
        return [e.field for e in self.errors]


class Invalid(ProblemError):
    """400, 413 or 422: the request is not valid; :attr:`errors` names the fields."""


class Unauthorized(ProblemError):
    """401 or 403: no token, an unknown or revoked one, or another team's job."""


class NotFound(ProblemError):
    """404: no such job for this team, or nothing matches."""


class Conflict(ProblemError):
    """409: not possible in the job's current state (the detail names it)."""


class ServiceUnavailable(ProblemError):
    """503 or 429: the service refused the request, and kept refusing it through every retry."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: Invalid,
    401: Unauthorized,
    403: Unauthorized,
    404: NotFound,
    409: Conflict,
    413: Invalid,
    422: Invalid,
    429: ServiceUnavailable,
    503: ServiceUnavailable,
}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def problem_error(
    status: int, body: Any, *, text: str = "", retry_after: float | None = None
) -> ProblemError:
    """The exception for an error answer: ``body`` is its decoded JSON (or None), ``text``
    its raw text, used as the detail when the body is not a problem document."""
    cls = _BY_STATUS.get(status, ProblemError)
    if not isinstance(body, dict):
        return cls(status, detail=text.strip()[:500], retry_after=retry_after)
    errors = [
        FieldError(field=str(e.get("field", "")), reason=str(e.get("reason", "")))
        for e in body.get("errors") or []
        if isinstance(e, dict)
    ]
    detail = body.get("detail")
    if not isinstance(detail, str):  # FastAPI's own {"detail": [...]} shapes
        detail = "" if detail is None else str(detail)
    instance = body.get("instance")
    return cls(
        status,
        type=_text(body.get("type")) or "about:blank",
        title=_text(body.get("title")),
        detail=detail,
        instance=instance if isinstance(instance, str) else None,
        errors=errors,
        retry_after=retry_after,
    )
