"""Admission control: how many requests use the database at once, and the rest.

Why it exists: a request takes its database connection in one thread-pool step
(the route) and gives it back in a later one (the commit), so a request that
holds a connection may wait for a thread. With as many connections as threads,
a burst of requests could hold every connection while every thread waited for a
connection, until the pool timed out: the whole API stopped. So at most
:attr:`Admission.limit` requests are admitted at once, fewer than the threads
(40) and the connections: an admitted request always finds a thread and a
connection, and throughput holds at its peak however many clients come.

The others wait in line, first come first served, for at most ``wait_s``; when
``max_queue`` are already waiting, or the wait runs out, the request is refused
at once with a 503 and ``Retry-After`` (:class:`Overloaded`): latency grows with
load up to ``wait_s``, and past that the excess is answered fast instead of
timing out. Health checks and requests that are refused before they reach the
database (no token, a malformed one) never wait here (see :mod:`api.deps`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import ClassVar

import anyio
from sqlalchemy.engine import make_url

from core.settings import Settings

__all__ = [
    "OVERLOAD_RETRY_AFTER_S",
    "POSTGRES_CONCURRENCY",
    "SQLITE_CONCURRENCY",
    "THREAD_POOL_MARGIN",
    "Admission",
    "Overloaded",
    "admission_limit",
]

logger = logging.getLogger(__name__)

OVERLOAD_RETRY_AFTER_S = 1
"""``Retry-After`` of a 503 for overload: a turn frees up within milliseconds."""

POSTGRES_CONCURRENCY = 8
"""Default admitted requests on PostgreSQL: enough to keep the process (one event
loop, one GIL) busy while others wait on the database, well below the connection
pool (20). Measured with ``bench.overload`` on 2 cores: at 200 clients 8 kept good
throughput at 90 % of the peak, 16 at about half (the threads' GIL contention)."""

SQLITE_CONCURRENCY = 4
"""Default admitted requests on SQLite: its transactions run one at a time (``BEGIN
IMMEDIATE``), more would only wait on its lock, each holding a thread."""

THREADS = 40
"""anyio's default thread limiter, which runs FastAPI's sync routes and dependencies."""

THREAD_POOL_MARGIN = 8
"""Threads always left to the requests that are not admitted here (stream polls,
readiness, plot drawings: ``CLR_API_MAX_PLOT_RENDERS``), so admitted ones never
wait behind them."""


class Overloaded(Exception):
    """The server is at capacity: answered 503 with ``Retry-After`` (:mod:`api.problems`).

    ``reason`` names the limit reached; ``field`` is what the problem's ``errors``
    entry names (``server``, ``streams``).
    """

    status: ClassVar[int] = 503
    title: ClassVar[str] = "Server at capacity"
    code: ClassVar[str] = "overloaded"

    def __init__(
        self, reason: str, *, field: str = "server", retry_after_s: int = OVERLOAD_RETRY_AFTER_S
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.retry_after_s = retry_after_s


def admission_limit(settings: Settings) -> int:
    """Requests admitted at once: ``api_max_concurrency`` or the database's default,
    never more than its connection pool nor than the thread pool less a margin."""
    sqlite = make_url(settings.db_url).get_backend_name() == "sqlite"
    default = SQLITE_CONCURRENCY if sqlite else POSTGRES_CONCURRENCY
    limit = settings.api_max_concurrency or default
    if not sqlite:
        limit = min(limit, settings.db_pool_size + settings.db_max_overflow)
    return max(1, min(limit, THREADS - THREAD_POOL_MARGIN))


class Admission:
    """At most ``limit`` holders at once; a bounded, timed, first-come line for the rest.

    ``what`` names the holders and ``settings`` the setting that sizes ``limit``, in
    the words of the 503 (the requests at the database; the plots being drawn).
    """

    def __init__(
        self,
        limit: int,
        *,
        max_queue: int,
        wait_s: float,
        what: str = "requests in progress",
        settings: str = "CLR_API_MAX_CONCURRENCY",
    ) -> None:
        self.limit = limit
        self.what = what
        self.settings = settings
        self.max_queue = max_queue
        self.wait_s = wait_s
        self.waiting = 0
        self._semaphore: anyio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def in_use(self) -> int:
        """How many holders are admitted now."""
        return 0 if self._semaphore is None else self.limit - self._semaphore.value

    def _slots(self) -> anyio.Semaphore:
        # one per event loop: a test may run the same app on several
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._loop is not loop:
            self._semaphore, self._loop = anyio.Semaphore(self.limit), loop
        return self._semaphore

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of the ``limit`` slots for the block.

        Raises:
            Overloaded: the line is full, or no slot freed up within ``wait_s``.
        """
        slots = self._slots()
        try:
            slots.acquire_nowait()
        except anyio.WouldBlock:
            await self._wait_for(slots)
        try:
            yield
        finally:
            slots.release()

    async def _wait_for(self, slots: anyio.Semaphore) -> None:
        if self.waiting >= self.max_queue:
            raise Overloaded(
                f"the server is at capacity: {self.limit} {self.what} "
                f"and {self.waiting} waiting ({self.settings}, CLR_API_MAX_QUEUE)"
            )
        self.waiting += 1
        try:
            with anyio.move_on_after(self.wait_s):
                await slots.acquire()
                return
        finally:
            self.waiting -= 1
        raise Overloaded(
            f"the server is at capacity: no turn within {self.wait_s:g} s "
            f"with {self.limit} {self.what} ({self.settings}, CLR_API_QUEUE_TIMEOUT_S)"
        )
