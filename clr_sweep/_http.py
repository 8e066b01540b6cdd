"""The transport under :class:`~clr_sweep.Client` and :class:`~clr_sweep.AsyncClient`:
retries with backoff, and every failure turned into a :mod:`clr_sweep.errors` exception.

What is retried, and when it is safe to:

- a connection that could not be made (refused, reset before sending): always,
  nothing reached the server;
- a 503 or (with ``Retry-After``) a 429: always, the server refused the request
  before doing anything;
- a connection dropped or timed out after the request was sent, and a 502 or 504
  (a proxy that lost the server's answer): only when the request may be repeated,
  that is a GET (HEAD, PUT, DELETE, OPTIONS) or a request that carries an
  ``Idempotency-Key`` (every submit does: the API answers a repeat with the job
  the first one created).

The wait before a retry is the answer's ``Retry-After`` (capped at
:attr:`RetryPolicy.retry_after_max`), else an exponential backoff with jitter.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx

from clr_sweep.errors import (
    ClientError,
    ConnectError,
    ProtocolError,
    Timeout,
    problem_error,
)

__all__ = [
    "IDEMPOTENCY_KEY",
    "RETRY_STATUSES",
    "AsyncTransport",
    "RetryPolicy",
    "SyncTransport",
    "retry_after_seconds",
]

IDEMPOTENCY_KEY = "Idempotency-Key"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
_REPEATABLE_METHODS = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_SENT = (
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
)


def retry_after_seconds(response: httpx.Response) -> float | None:
    """The answer's ``Retry-After`` in seconds (a number or an HTTP date); None when absent."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def repeatable(request: httpx.Request) -> bool:
    """Whether sending ``request`` twice does what sending it once does."""
    return request.method in _REPEATABLE_METHODS or IDEMPOTENCY_KEY in request.headers


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry.

    Attributes:
        retries: retries after the first try (0: none).
        backoff: the first wait (seconds); each next one doubles, up to ``backoff_max``,
            with jitter (between half and all of it).
        backoff_max: the longest backoff wait.
        retry_after_max: the longest ``Retry-After`` honoured (a longer one is cut to it).
    """

    retries: int = 5
    backoff: float = 0.5
    backoff_max: float = 8.0
    retry_after_max: float = 30.0

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be at least 0, got {self.retries}")
        if self.backoff < 0 or self.backoff_max < 0 or self.retry_after_max < 0:
            raise ValueError("backoff, backoff_max and retry_after_max must be at least 0")

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``retry`` (0: the first)."""
        if retry_after is not None:
            return min(retry_after, self.retry_after_max)
        full = min(self.backoff_max, self.backoff * 2.0 ** min(retry, 32))
        return full / 2 + random.uniform(0.0, full / 2)  # jitter: tries spread apart

    def retry_response(self, request: httpx.Request, response: httpx.Response) -> bool:
        """Whether ``response`` is worth another try of ``request``."""
        status = response.status_code
        if status == 503:
            return True
        if status == 429:
            return retry_after_seconds(response) is not None
        if status in (502, 504):
            return repeatable(request)
        return False

    def retry_error(self, request: httpx.Request, exc: httpx.TransportError) -> bool:
        """Whether ``exc`` (no answer) is worth another try of ``request``."""
        if isinstance(exc, _NOT_SENT):
            return True
        if isinstance(exc, _SENT):
            return repeatable(request)
        return False


def _convert(
    exc: httpx.TransportError, request: httpx.Request, timeout: float | None
) -> ClientError:
    url = str(request.url)
    root = f"{request.url.scheme}://{request.url.netloc.decode('ascii', 'replace')}"
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        reason = str(exc) or type(exc).__name__
        return ConnectError(root, reason)
    if isinstance(exc, httpx.TimeoutException):
        within = "" if timeout is None else f" within {timeout:g} s"
        return Timeout(
            f"{request.method} {url} got no answer{within} ({type(exc).__name__})",
            url=url,
            timeout=timeout,
        )
    if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError | httpx.WriteError):
        reason = str(exc) or type(exc).__name__
        return ProtocolError(f"{request.method} {url}: the connection broke ({reason})")
    return ClientError(f"{request.method} {url}: {type(exc).__name__}: {exc}")


def _timeout_seconds(timeout: httpx.Timeout) -> float | None:
    return timeout.read


def raise_for_problem(response: httpx.Response, *, attempts: int = 1) -> None:
    """Raise the :mod:`~clr_sweep.errors` exception of an error answer (already read)."""
    if response.status_code < 400:
        return
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    error = problem_error(
        response.status_code,
        body,
        text=response.text,
        retry_after=retry_after_seconds(response),
    )
    error.attempts = attempts
    if response.status_code == 401 and "Authorization" not in response.request.headers:
        error.args = (
            f"{error}; no token was sent: pass token=, set CLR_TOKEN, or run `clr-sweep login URL`",
        )
    raise error


def _headers(token: str | None, user_agent: str) -> dict[str, str]:
    headers = {"User-Agent": user_agent, "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers


class SyncTransport:
    """An ``httpx.Client`` sending each request through the :class:`RetryPolicy`."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float | None,
        policy: RetryPolicy,
        user_agent: str,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.policy = policy
        self.timeout = httpx.Timeout(timeout)
        self.http = httpx.Client(
            base_url=base_url,
            headers=_headers(token, user_agent),
            timeout=self.timeout,
            transport=transport,
        )
        self.sleep = time.sleep

    def close(self) -> None:
        self.http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """The answer, read; an error answer raises (after the retries)."""
        with self.stream(
            method,
            path,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout,
            content=content,
        ) as response:
            try:
                response.read()
            except httpx.TransportError as exc:
                raise _convert(exc, response.request, _timeout_seconds(self.timeout)) from exc
            return response

    @contextmanager
    def stream(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        content: bytes | None = None,
        policy: RetryPolicy | None = None,
    ) -> Iterator[httpx.Response]:
        """The answer with its body not read yet; an error answer raises (after the retries,
        by ``policy``, default the transport's)."""
        request = self.http.build_request(
            method,
            path,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout or self.timeout,
            content=content,
        )
        policy = policy or self.policy
        retry = 0
        while True:
            wait: float | None = None
            try:
                response = self.http.send(request, stream=True)
            except httpx.TransportError as exc:
                if retry >= policy.retries or not policy.retry_error(request, exc):
                    raise _convert(exc, request, _timeout_seconds(self.timeout)) from exc
                wait = policy.delay(retry)
            else:
                if retry < policy.retries and policy.retry_response(request, response):
                    wait = policy.delay(retry, retry_after_seconds(response))
                    response.close()
                else:
                    try:
                        if response.status_code >= 400:
                            response.read()
                            raise_for_problem(response, attempts=retry + 1)
                        yield response
                    except httpx.TransportError as exc:
                        raise _convert(exc, request, _timeout_seconds(self.timeout)) from exc
                    finally:
                        response.close()
                    return
            self.sleep(wait)
            retry += 1


class AsyncTransport:
    """An ``httpx.AsyncClient`` sending each request through the :class:`RetryPolicy`."""

    def __init__(
        self,
        base_url: str,
        token: str | None,
        *,
        timeout: float | None,
        policy: RetryPolicy,
        user_agent: str,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = base_url
        self.policy = policy
        self.timeout = httpx.Timeout(timeout)
        self.http = httpx.AsyncClient(
            base_url=base_url,
            headers=_headers(token, user_agent),
            timeout=self.timeout,
            transport=transport,
        )

    async def close(self) -> None:
        await self.http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """The answer, read; an error answer raises (after the retries)."""
        async with self.stream(
            method,
            path,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout,
            content=content,
        ) as response:
            try:
                await response.aread()
            except httpx.TransportError as exc:
                raise _convert(exc, response.request, _timeout_seconds(self.timeout)) from exc
            return response

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        timeout: httpx.Timeout | None = None,
        content: bytes | None = None,
        policy: RetryPolicy | None = None,
    ) -> AsyncIterator[httpx.Response]:
        """The answer with its body not read yet; an error answer raises (after the retries,
        by ``policy``, default the transport's)."""
        request = self.http.build_request(
            method,
            path,
            params=params,
            json=json,
            headers=headers,
            timeout=timeout or self.timeout,
            content=content,
        )
        policy = policy or self.policy
        retry = 0
        while True:
            wait: float | None = None
            try:
                response = await self.http.send(request, stream=True)
            except httpx.TransportError as exc:
                if retry >= policy.retries or not policy.retry_error(request, exc):
                    raise _convert(exc, request, _timeout_seconds(self.timeout)) from exc
                wait = policy.delay(retry)
            else:
                if retry < policy.retries and policy.retry_response(request, response):
                    wait = policy.delay(retry, retry_after_seconds(response))
                    await response.aclose()
                else:
                    try:
                        if response.status_code >= 400:
                            await response.aread()
                            raise_for_problem(response, attempts=retry + 1)
                        yield response
                    except httpx.TransportError as exc:
                        raise _convert(exc, request, _timeout_seconds(self.timeout)) from exc
                    finally:
                        await response.aclose()
                    return
            await asyncio.sleep(wait)
            retry += 1
