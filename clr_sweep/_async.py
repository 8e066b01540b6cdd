"""The asynchronous :class:`AsyncClient`: :class:`~clr_sweep.Client`'s verbs as coroutines.

Example::

    import asyncio
    from clr_sweep import AsyncClient

    async def main() -> None:
        async with AsyncClient() as client:
            job = await client.submit_range_test({"workload": "digits_mlp"})
            job = await client.wait(job.id)
            print((await client.bounds(job.id)).max_lr)

    asyncio.run(main())
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import aclosing
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from clr_sweep import _models
from clr_sweep._base import (
    FINAL_STATUSES,
    KIND_NOUNS,
    STREAM_READ_TIMEOUT_S,
    STREAM_RETRY_AFTER_MAX_S,
    Curve,
    PlotFormat,
    SeriesPages,
    as_status,
    bounds_query,
    check_deadline,
    check_download,
    check_event_stream,
    check_plot,
    download_name,
    dump_spec,
    empty_streams_error,
    events_path,
    job_id_text,
    list_query,
    new_idempotency_key,
    user_agent,
)
from clr_sweep._http import IDEMPOTENCY_KEY, AsyncTransport, RetryPolicy
from clr_sweep.client import JobId
from clr_sweep.config import resolve
from clr_sweep.contracts import (
    RangeTestRead,
    RangeTestSpec,
    SweepRead,
    SweepSpec,
    TrainingRead,
    TrainingSpec,
)
from clr_sweep.errors import Conflict, ConnectError, ProtocolError, ServiceUnavailable, Timeout
from clr_sweep.events import END, STATUS, Event, SSEDecoder

__all__ = ["AsyncClient", "AsyncProgress"]

AsyncProgress = Callable[[_models.AnyJobRead], object]
"""Called with the job whenever :meth:`AsyncClient.wait` learns something new; a
coroutine function is awaited."""


async def _call(callback: Callable[[Any], object], value: Any) -> None:
    result = callback(value)
    if isinstance(result, Awaitable):
        await result


class AsyncClient:
    """An asynchronous client of the clr-sweep service's API (asyncio).

    The same arguments, verbs and errors as :class:`~clr_sweep.Client`; each verb
    is a coroutine, and :meth:`list` and :meth:`events` are async iterators.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | None = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.url, self.token = resolve(url, token)
        self.timeout = timeout
        self.policy = RetryPolicy(retries=retries, backoff=backoff)
        self._http = AsyncTransport(
            self.url,
            self.token,
            timeout=timeout,
            policy=self.policy,
            user_agent=user_agent(),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"AsyncClient(url={self.url!r})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connection pool."""
        await self._http.close()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Any = None,
        json: Any = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        idempotency_key: str | bool | None = None,
    ) -> httpx.Response:
        """Send any request to the API (see :meth:`clr_sweep.Client.request`)."""
        all_headers = dict(headers or {})
        if idempotency_key:
            key = new_idempotency_key() if idempotency_key is True else str(idempotency_key)
            all_headers[IDEMPOTENCY_KEY] = key
        return await self._http.request(
            method.upper(), path, params=params, json=json, content=content, headers=all_headers
        )

    async def _json(self, method: str, path: str, **kw: Any) -> Any:
        response = await self._http.request(method, path, **kw)
        try:
            return response.json()
        except ValueError as exc:
            raise ProtocolError(
                f"{method} {response.request.url} answered {response.status_code} without JSON"
            ) from exc

    async def _submit(self, noun: str, spec: Any, idempotency_key: str | None) -> Any:
        key = idempotency_key or new_idempotency_key()
        body = dump_spec(spec)
        return await self._json("POST", f"/{noun}", json=body, headers={IDEMPOTENCY_KEY: key})

    async def submit_range_test(
        self, spec: RangeTestSpec | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> RangeTestRead:
        """Queue a range test (``POST /range-tests``); the job as created."""
        return _models.parse_range_test(await self._submit("range-tests", spec, idempotency_key))

    async def submit_training(
        self, spec: TrainingSpec | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> TrainingRead:
        """Queue a training (``POST /trainings``); the job as created."""
        return _models.parse_training(await self._submit("trainings", spec, idempotency_key))

    async def submit_sweep(
        self, spec: SweepSpec | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> SweepRead:
        """Queue a sweep (``POST /sweeps``); the job as created."""
        return _models.parse_sweep(await self._submit("sweeps", spec, idempotency_key))

    async def get(self, job_id: JobId) -> _models.AnyJobRead:
        """A job of any kind (``GET /jobs/{id}``)."""
        return _models.parse_job(await self._json("GET", f"/jobs/{job_id_text(job_id)}"))

    async def list_page(
        self,
        *,
        kind: str | None = None,
        status: str | Iterable[str] | None = None,
        workload: str | None = None,
        parent: JobId | None = None,
        created_after: datetime | str | None = None,
        page_size: int = 50,
        cursor: str | None = None,
    ) -> _models.JobList:
        """One page of the team's jobs, newest first (``GET /jobs``)."""
        query = list_query(
            kind=kind,
            status=status,
            workload=workload,
            parent=parent,
            created_after=created_after,
            page_size=page_size,
        )
        if cursor is not None:
            query.append(("cursor", cursor))
        return _models.parse_job_list(await self._json("GET", "/jobs", params=query))

    async def list(
        self,
        *,
        kind: str | None = None,
        status: str | Iterable[str] | None = None,
        workload: str | None = None,
        parent: JobId | None = None,
        created_after: datetime | str | None = None,
        limit: int | None = None,
        page_size: int = 50,
    ) -> AsyncIterator[_models.AnyJobRead]:
        """The team's jobs, newest first, a page at a time (see :meth:`clr_sweep.Client.list`)."""
        if limit is not None and limit <= 0:
            return
        cursor: str | None = None
        count = 0
        while True:
            page = await self.list_page(
                kind=kind,
                status=status,
                workload=workload,
                parent=parent,
                created_after=created_after,
                page_size=page_size if limit is None else min(page_size, limit - count),
                cursor=cursor,
            )
            for job in _models.job_list_items(page):
                yield job
                count += 1
                if limit is not None and count >= limit:
                    return
            cursor = _models.job_list_cursor(page)
            if cursor is None:
                return

    async def cancel(self, job_id: JobId) -> _models.AnyJobRead:
        """Cancel a queued job, or ask a running one to stop; the job.

        Raises:
            Conflict: the job already finished.
        """
        job_text = job_id_text(job_id)
        try:
            data = await self._json(
                "POST", f"/jobs/{job_text}/cancel", headers={IDEMPOTENCY_KEY: new_idempotency_key()}
            )
        except Conflict as exc:
            if exc.attempts > 1:
                job = await self.get(job_text)
                if as_status(job) == "cancelled":
                    return job
            raise
        return _models.parse_job(data)

    async def _stream(
        self, job_id: str, last_event_id: str | None, *, retries: int | None
    ) -> AsyncGenerator[Event | None, None]:
        policy = self.policy
        if retries is not None:  # wait's: give up on the stream soon, and poll instead
            policy = RetryPolicy(
                retries=retries,
                backoff=self.policy.backoff,
                retry_after_max=STREAM_RETRY_AFTER_MAX_S,
            )
        timeout = httpx.Timeout(self.timeout, read=STREAM_READ_TIMEOUT_S)
        broken = 0
        while True:
            headers = {"Accept": "text/event-stream"}
            if last_event_id:
                headers["Last-Event-ID"] = last_event_id
            decoder = SSEDecoder(last_event_id)
            events = 0
            try:
                async with self._http.stream(
                    "GET", events_path(job_id), headers=headers, timeout=timeout, policy=policy
                ) as response:
                    check_event_stream(response)
                    async for line in response.aiter_lines():
                        event = decoder.feed(line)
                        if event is None:
                            if line.startswith(":"):
                                yield None
                            continue
                        broken = 0
                        events += 1
                        last_event_id = event.last_event_id
                        yield event
                        if event.event == END:
                            return
            except (ProtocolError, Timeout):
                if broken >= policy.retries:
                    raise
            else:  # the server ended it before `end`: resume, unless it never brings one
                if events == 0 and broken >= policy.retries:
                    raise empty_streams_error(job_id, broken + 1)
            last_event_id = decoder.last_event_id
            await asyncio.sleep(policy.delay(broken))
            broken += 1

    async def events(
        self, job_id: JobId, *, last_event_id: str | None = None
    ) -> AsyncGenerator[Event, None]:
        """Follow a job as Server-Sent Events until it ends, resuming a broken stream."""
        stream = self._stream(job_id_text(job_id), last_event_id, retries=None)
        async with aclosing(stream):
            async for event in stream:
                if event is not None:
                    yield event

    async def wait(
        self,
        job_id: JobId,
        *,
        progress: AsyncProgress | None = None,
        on_event: Callable[[Event], object] | None = None,
        poll: float = 1.0,
        timeout: float | None = None,
    ) -> _models.AnyJobRead:
        """Wait until the job finished; the final job (see :meth:`clr_sweep.Client.wait`).

        ``progress`` and ``on_event`` may be plain functions or coroutine functions.
        """
        job_text = job_id_text(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        job: _models.AnyJobRead | None = None
        try:
            async with aclosing(self._stream(job_text, None, retries=2)) as stream:
                async for event in stream:
                    check_deadline(deadline, job_text, timeout, job)
                    if event is None:
                        continue
                    if on_event is not None:
                        await _call(on_event, event)
                    if event.event == STATUS:
                        job = event.job
                        if as_status(job) == "queued":  # where it stands and what it waits for
                            job = await self.get(job_text)
                    elif event.event == END:
                        break
                    elif job is not None:
                        job = _models.advance(job, event.series)
                    else:
                        continue
                    if progress is not None:
                        await _call(progress, job)
        except (ProtocolError, Timeout, ConnectError, ServiceUnavailable):
            check_deadline(deadline, job_text, timeout, job)
            return await self._poll(job_text, progress, poll, deadline, timeout)
        if job is None or as_status(job) not in FINAL_STATUSES:
            job = await self.get(job_text)
        if as_status(job) not in FINAL_STATUSES:
            return await self._poll(job_text, progress, poll, deadline, timeout)
        return job

    async def _poll(
        self,
        job_id: str,
        progress: AsyncProgress | None,
        poll: float,
        deadline: float | None,
        timeout: float | None,
    ) -> _models.AnyJobRead:
        last: object = None
        while True:
            job = await self.get(job_id)
            seen = _models.job_state(job)
            if progress is not None and seen != last:
                await _call(progress, job)
            last = seen
            if as_status(job) in FINAL_STATUSES:
                return job
            check_deadline(deadline, job_id, timeout, job)
            await asyncio.sleep(poll)

    async def bounds(self, job_id: JobId, method: str | None = None) -> _models.BoundsRead:
        """A succeeded range test's suggested bounds (``GET /range-tests/{id}/bounds``)."""
        params = {} if method is None else {"method": method}
        data = await self._json("GET", f"/range-tests/{job_id_text(job_id)}/bounds", params=params)
        return _models.parse_bounds(data)

    async def find_bounds(
        self,
        *,
        workload: str | None = None,
        params: Mapping[str, Any] | None = None,
        optimizer: str | Mapping[str, Any] | Any | None = None,
        metric: str | None = None,
        method: str | None = None,
        batch_size: int | None = None,
        **configuration: Any,
    ) -> _models.BoundsRead:
        """The bounds of the team's latest successful range test of a configuration."""
        query = bounds_query(
            workload=workload,
            params=params,
            optimizer=optimizer,
            metric=metric,
            method=method,
            batch_size=batch_size,
            configuration=configuration,
        )
        return _models.parse_bounds(await self._json("GET", "/bounds", params=query))

    async def _series_pages(self, job_id: str, name: str) -> SeriesPages:
        pages = SeriesPages()
        while not pages.done:
            path = f"/jobs/{job_id}/series/{name}"
            pages.add(await self._json("GET", path, params=pages.params()))
        return pages

    async def series(self, job_id: JobId, name: str) -> dict[str, Any]:
        """A job's series, every page, as numpy arrays by field."""
        return (await self._series_pages(job_id_text(job_id), name)).arrays()

    async def curve(self, job_id: JobId) -> Curve:
        """A range test's curve so far as numpy arrays."""
        job_text = job_id_text(job_id)
        return Curve.from_series(job_text, await self._series_pages(job_text, "curve"))

    async def plot(
        self, job_id: JobId, fmt: PlotFormat = "png", *, kind: str | None = None
    ) -> bytes:
        """The job's plot as PNG or SVG bytes."""
        if fmt not in ("png", "svg"):
            raise ValueError(f"fmt must be 'png' or 'svg', got {fmt!r}")
        job_text = job_id_text(job_id)
        if kind is None:
            kind = str(_models.job_field(await self.get(job_text), "kind"))
        noun = KIND_NOUNS.get(kind)
        if noun is None:
            raise ValueError(f"no plot for jobs of kind {kind!r}")
        return check_plot(await self._http.request("GET", f"/{noun}/{job_text}/plot.{fmt}"), fmt)

    async def download_model(
        self, job_id: JobId, path: str | os.PathLike[str], *, snapshot: int | None = None
    ) -> Path:
        """Save a succeeded training's weights to ``path`` (a folder: under the server's
        file name); the file written, whole or not at all."""
        job_text = job_id_text(job_id)
        params = {} if snapshot is None else {"snapshot": snapshot}
        target = Path(path)
        for attempt in range(self.policy.retries + 1):
            try:
                async with self._http.stream(
                    "GET", f"/trainings/{job_text}/model", params=params
                ) as response:
                    if target.is_dir():
                        name = download_name(job_text, response.headers.get("Content-Disposition"))
                        target = target / name
                    return await _save(response, target)
            except ProtocolError:
                if attempt >= self.policy.retries:
                    raise
                await asyncio.sleep(self.policy.delay(attempt))
        raise AssertionError("unreachable")

    async def workloads(self) -> _models.WorkloadList:
        """Every workload the service can run."""
        return _models.parse_workloads(await self._json("GET", "/workloads"))

    async def health(self) -> _models.Health:
        """Whether the API process is alive (``GET /healthz``)."""
        return _models.parse_health(await self._json("GET", "/healthz"))

    async def ready(self) -> _models.Readiness:
        """Whether the service can take jobs (``GET /readyz``)."""
        return _models.parse_readiness(await self._json("GET", "/readyz"))


async def _save(response: httpx.Response, target: Path) -> Path:
    digest = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            async for chunk in response.aiter_bytes():
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        check_download(digest, size, response.headers)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
