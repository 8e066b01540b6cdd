"""The synchronous :class:`Client` of the clr-sweep service.

Example::

    from clr_sweep import Client

    with Client() as client:  # CLR_URL / CLR_TOKEN, or the file `clr-sweep login` wrote
        job = client.submit_range_test({"workload": "digits_mlp", "num_iter": 100})
        job = client.wait(job.id, progress=lambda j: print(j.status, j.progress, j.total))
        bounds = client.bounds(job.id)
        print(bounds.base_lr, bounds.max_lr)
        curve = client.curve(job.id)  # numpy arrays: curve.lrs, curve.losses, ...
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping
from contextlib import closing
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
from clr_sweep._http import IDEMPOTENCY_KEY, RetryPolicy, SyncTransport
from clr_sweep.config import resolve
from clr_sweep.contracts import (
    JobRead,
    RangeTestRead,
    RangeTestSpec,
    SweepRead,
    SweepSpec,
    TrainingRead,
    TrainingSpec,
)
from clr_sweep.errors import Conflict, ConnectError, ProtocolError, ServiceUnavailable, Timeout
from clr_sweep.events import END, STATUS, Event, SSEDecoder

if TYPE_CHECKING:
    from clr_sweep.uploads import RangeTestUploader, TrainingLogger

__all__ = ["Client", "JobId", "Progress"]

JobId = uuid.UUID | str | JobRead
"""A job's id: a UUID, its text, or a job read before (its ``id``)."""

Progress = Callable[[_models.AnyJobRead], object]
"""Called with the job whenever :meth:`Client.wait` learns something new about it."""


class Client:
    """A synchronous client of the clr-sweep service's API.

    Args:
        url: the service (default: ``CLR_URL``, the config file, ``http://127.0.0.1:8000``).
        token: the API token (default: ``CLR_TOKEN``, the config file's for its URL).
        timeout: seconds to wait for each answer (None: no limit).
        retries: retries of a request that failed in a way worth retrying (0: none).
        backoff: the first wait between retries, doubled each time (with jitter).
        transport: an ``httpx`` transport to send through instead of the network.

    Every error is a :class:`~clr_sweep.errors.ClientError` (see :mod:`clr_sweep.errors`).
    A client holds a connection pool: use it as a context manager, or :meth:`close` it.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float | None = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url, self.token = resolve(url, token)
        self.timeout = timeout
        self.policy = RetryPolicy(retries=retries, backoff=backoff)
        self._http = SyncTransport(
            self.url,
            self.token,
            timeout=timeout,
            policy=self.policy,
            user_agent=user_agent(),
            transport=transport,
        )
        self._sleep: Callable[[float], None] = time.sleep

    def __repr__(self) -> str:
        return f"Client(url={self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- the raw escape hatch -------------------------------------------------------

    def request(
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
        """Send any request to the API, with the client's auth, retries and errors.

        Args:
            idempotency_key: sent as ``Idempotency-Key`` (True: a fresh one), which
                makes a POST safe to retry after a dropped connection.

        Returns:
            The answer, read (``.json()``, ``.content``); only 2xx and 3xx return.
        """
        all_headers = dict(headers or {})
        if idempotency_key:
            key = new_idempotency_key() if idempotency_key is True else str(idempotency_key)
            all_headers[IDEMPOTENCY_KEY] = key
        return self._http.request(
            method.upper(), path, params=params, json=json, content=content, headers=all_headers
        )

    def _json(self, method: str, path: str, **kw: Any) -> Any:
        response = self._http.request(method, path, **kw)
        try:
            return response.json()
        except ValueError as exc:
            raise ProtocolError(
                f"{method} {response.request.url} answered {response.status_code} without JSON"
            ) from exc

    # -- submit ---------------------------------------------------------------------

    def _submit(self, noun: str, spec: Any, idempotency_key: str | None) -> Any:
        key = idempotency_key or new_idempotency_key()
        body = dump_spec(spec)
        return self._json("POST", f"/{noun}", json=body, headers={IDEMPOTENCY_KEY: key})

    def submit_range_test(
        self, spec: RangeTestSpec | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> RangeTestRead:
        """Queue a range test (``POST /range-tests``); the job as created.

        Args:
            spec: a ``RangeTestSpec`` or a dict of its fields (unset ones take the
                server's defaults).
            idempotency_key: the submit's key (default: a fresh one); a repeat with
                the same key and spec gives the job the first one created.
        """
        return _models.parse_range_test(self._submit("range-tests", spec, idempotency_key))

    def submit_training(
        self, spec: TrainingSpec | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> TrainingRead:
        """Queue a training (``POST /trainings``); see :meth:`submit_range_test`."""
        return _models.parse_training(self._submit("trainings", spec, idempotency_key))

    def submit_sweep(
        self, spec: SweepSpec | Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> SweepRead:
        """Queue a sweep (``POST /sweeps``); see :meth:`submit_range_test`."""
        return _models.parse_sweep(self._submit("sweeps", spec, idempotency_key))

    # -- read -----------------------------------------------------------------------

    def get(self, job_id: JobId) -> _models.AnyJobRead:
        """A job of any kind (``GET /jobs/{id}``)."""
        return _models.parse_job(self._json("GET", f"/jobs/{job_id_text(job_id)}"))

    def list_page(
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
        """One page of the team's jobs, newest first (``GET /jobs``); pass its
        ``next_cursor`` as ``cursor`` for the next."""
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
        return _models.parse_job_list(self._json("GET", "/jobs", params=query))

    def list(
        self,
        *,
        kind: str | None = None,
        status: str | Iterable[str] | None = None,
        workload: str | None = None,
        parent: JobId | None = None,
        created_after: datetime | str | None = None,
        limit: int | None = None,
        page_size: int = 50,
    ) -> Iterator[_models.AnyJobRead]:
        """The team's jobs, newest first, fetched a page at a time as they are iterated.

        Args:
            kind: ``range_test``, ``training`` or ``sweep`` (default: every kind).
            status: one status or several.
            parent: only this job's children (a sweep's trainings).
            limit: stop after this many jobs (default: all of them).
            page_size: jobs per request (1 to 200).
        """
        if limit is not None and limit <= 0:
            return
        cursor: str | None = None
        count = 0
        while True:
            page = self.list_page(
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

    def cancel(self, job_id: JobId) -> _models.AnyJobRead:
        """Cancel a queued job at once, or ask a running one to stop (``POST
        /jobs/{id}/cancel``); the job.

        Raises:
            Conflict: the job already finished (the detail names its status).
        """
        job_text = job_id_text(job_id)
        try:
            data = self._json(
                "POST", f"/jobs/{job_text}/cancel", headers={IDEMPOTENCY_KEY: new_idempotency_key()}
            )
        except Conflict as exc:
            # a retried cancel whose first try went through finds the job cancelled
            if exc.attempts > 1:
                job = self.get(job_text)
                if as_status(job) == "cancelled":
                    return job
            raise
        return _models.parse_job(data)

    # -- follow ---------------------------------------------------------------------

    def _stream(
        self, job_id: str, last_event_id: str | None, *, retries: int | None
    ) -> Generator[Event | None, None, None]:
        """The stream's events, and None for each comment (ping); reconnects after a
        break from the last event id, at most ``retries`` times in a row."""
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
                with self._http.stream(
                    "GET", events_path(job_id), headers=headers, timeout=timeout, policy=policy
                ) as response:
                    check_event_stream(response)
                    for line in response.iter_lines():
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
            # the server closed the stream before `end`, or it broke: resume it
            last_event_id = decoder.last_event_id
            self._sleep(policy.delay(broken))
            broken += 1

    def events(
        self, job_id: JobId, *, last_event_id: str | None = None
    ) -> Generator[Event, None, None]:
        """Follow a job as Server-Sent Events (``GET /jobs/{id}/events``) until it ends.

        A broken stream is resumed where it stopped (``Last-Event-ID``), so no point
        is missed or repeated; pass an event's ``last_event_id`` to resume later.
        The last event is ``end``.
        """
        with closing(self._stream(job_id_text(job_id), last_event_id, retries=None)) as stream:
            for event in stream:
                if event is not None:
                    yield event

    def wait(
        self,
        job_id: JobId,
        *,
        progress: Progress | None = None,
        on_event: Callable[[Event], object] | None = None,
        poll: float = 1.0,
        timeout: float | None = None,
    ) -> _models.AnyJobRead:
        """Wait until the job finished (succeeded, failed or cancelled); the final job.

        Follows the job's event stream, and polls ``GET /jobs/{id}`` every ``poll``
        seconds when the stream cannot be had (the server refuses more streams,
        a proxy cuts them).

        Args:
            progress: called with the job each time it changed (status, progress).
            on_event: called with each event of the stream (the points as they come).
            timeout: give up after this many seconds.

        Raises:
            Timeout: the job has not finished within ``timeout``.
        """
        job_text = job_id_text(job_id)
        deadline = None if timeout is None else time.monotonic() + timeout
        job: _models.AnyJobRead | None = None
        try:
            with closing(self._stream(job_text, None, retries=2)) as stream:
                for event in stream:
                    check_deadline(deadline, job_text, timeout, job)
                    if event is None:
                        continue
                    if on_event is not None:
                        on_event(event)
                    if event.event == STATUS:
                        job = event.job
                        if as_status(job) == "queued":  # where it stands and what it waits for
                            job = self.get(job_text)
                    elif event.event == END:
                        break
                    elif job is not None:
                        job = _models.advance(job, event.series)
                    else:
                        continue
                    if progress is not None:
                        progress(job)
        except (ProtocolError, Timeout, ConnectError, ServiceUnavailable):
            check_deadline(deadline, job_text, timeout, job)
            return self._poll(job_text, progress, poll, deadline, timeout)
        if job is None or as_status(job) not in FINAL_STATUSES:
            job = self.get(job_text)
        if as_status(job) not in FINAL_STATUSES:  # the stream ended early: the job was gone
            return self._poll(job_text, progress, poll, deadline, timeout)
        return job

    def _poll(
        self,
        job_id: str,
        progress: Progress | None,
        poll: float,
        deadline: float | None,
        timeout: float | None,
    ) -> _models.AnyJobRead:
        last: object = None
        while True:
            job = self.get(job_id)
            seen = _models.job_state(job)
            if progress is not None and seen != last:
                progress(job)
            last = seen
            if as_status(job) in FINAL_STATUSES:
                return job
            check_deadline(deadline, job_id, timeout, job)
            self._sleep(poll)

    # -- results --------------------------------------------------------------------

    def bounds(self, job_id: JobId, method: str | None = None) -> _models.BoundsRead:
        """A succeeded range test's suggested bounds (``GET /range-tests/{id}/bounds``),
        ``method``'s (default: the default method's) first.

        Raises:
            Conflict: the range test has not succeeded (yet).
        """
        params = {} if method is None else {"method": method}
        data = self._json("GET", f"/range-tests/{job_id_text(job_id)}/bounds", params=params)
        return _models.parse_bounds(data)

    def find_bounds(
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
        """The bounds of the team's latest successful range test of a configuration
        (``GET /bounds``): the workload, its params, the optimizer (a name, a dict or an
        ``OptimizerSpec``) and the metric; more configuration keys pass as query keys.

        Raises:
            NotFound: no successful range test of this configuration yet.
        """
        query = bounds_query(
            workload=workload,
            params=params,
            optimizer=optimizer,
            metric=metric,
            method=method,
            batch_size=batch_size,
            configuration=configuration,
        )
        return _models.parse_bounds(self._json("GET", "/bounds", params=query))

    def series(self, job_id: JobId, name: str) -> dict[str, Any]:
        """A job's series (``GET /jobs/{id}/series/{name}``), every page, as numpy arrays
        by field (NaN where a point has no value)."""
        return self._series_pages(job_id_text(job_id), name).arrays()

    def _series_pages(self, job_id: str, name: str) -> SeriesPages:
        pages = SeriesPages()
        while not pages.done:
            pages.add(self._json("GET", f"/jobs/{job_id}/series/{name}", params=pages.params()))
        return pages

    def curve(self, job_id: JobId) -> Curve:
        """A range test's curve so far as numpy arrays (``lrs``, ``losses``,
        ``smoothed_losses``, ``accuracies``)."""
        job_text = job_id_text(job_id)
        return Curve.from_series(job_text, self._series_pages(job_text, "curve"))

    def plot(self, job_id: JobId, fmt: PlotFormat = "png", *, kind: str | None = None) -> bytes:
        """The job's plot as PNG or SVG bytes (``GET /<kind>/{id}/plot.<fmt>``).

        Args:
            kind: the job's kind, when known (else it is read first).

        Raises:
            Conflict: nothing to draw yet.
        """
        if fmt not in ("png", "svg"):
            raise ValueError(f"fmt must be 'png' or 'svg', got {fmt!r}")
        job_text = job_id_text(job_id)
        if kind is None:
            kind = str(_models.job_field(self.get(job_text), "kind"))
        noun = KIND_NOUNS.get(kind)
        if noun is None:
            raise ValueError(f"no plot for jobs of kind {kind!r}")
        return check_plot(self._http.request("GET", f"/{noun}/{job_text}/plot.{fmt}"), fmt)

    def download_model(
        self, job_id: JobId, path: str | os.PathLike[str], *, snapshot: int | None = None
    ) -> Path:
        """Save a succeeded training's weights (``GET /trainings/{id}/model``) to ``path``
        (a folder: under the server's file name); the file written.

        The file appears whole or not at all, checked against the server's size and
        SHA-256. ``snapshot``: the snapshot ensemble's k-th member instead.

        Raises:
            Conflict: the training has not succeeded.
        """
        job_text = job_id_text(job_id)
        params = {} if snapshot is None else {"snapshot": snapshot}
        target = Path(path)
        for attempt in range(self.policy.retries + 1):
            try:
                with self._http.stream(
                    "GET", f"/trainings/{job_text}/model", params=params
                ) as response:
                    if target.is_dir():
                        name = download_name(job_text, response.headers.get("Content-Disposition"))
                        target = target / name
                    return _save(response.iter_bytes(), response.headers, target)
            except ProtocolError:
                if attempt >= self.policy.retries:
                    raise
                self._sleep(self.policy.delay(attempt))
        raise AssertionError("unreachable")

    # -- the team's own loop ----------------------------------------------------------

    def range_test_uploader(self, **configuration: Any) -> RangeTestUploader:
        """Create a client range test and return its uploader, a ``clr.RangeTest`` callback
        (:func:`clr_sweep.uploads.range_test_uploader`, with this client)."""
        from clr_sweep.uploads import range_test_uploader

        return range_test_uploader(self, **configuration)

    def training_logger(self, **configuration: Any) -> TrainingLogger:
        """Create a client training and return its logger, a ``clr.Trainer`` callback
        (:func:`clr_sweep.uploads.training_logger`, with this client)."""
        from clr_sweep.uploads import training_logger

        return training_logger(self, **configuration)

    def resume_upload(
        self, job_id: str | uuid.UUID, **options: Any
    ) -> RangeTestUploader | TrainingLogger:
        """Attach to a running client job whose process died: its uploader or logger,
        continuing from the points the service has (:func:`clr_sweep.uploads.resume`)."""
        from clr_sweep.uploads import resume

        return resume(self, job_id, **options)

    # -- the service ----------------------------------------------------------------

    def workloads(self) -> _models.WorkloadList:
        """Every workload the service can run, with its params' JSON schema."""
        return _models.parse_workloads(self._json("GET", "/workloads"))

    def health(self) -> _models.Health:
        """Whether the API process is alive (``GET /healthz``)."""
        return _models.parse_health(self._json("GET", "/healthz"))

    def ready(self) -> _models.Readiness:
        """Whether the service can take jobs: its database and broker reachable
        (``GET /readyz``; a 503 raises ServiceUnavailable after the retries)."""
        return _models.parse_readiness(self._json("GET", "/readyz"))


def _save(chunks: Iterator[bytes], headers: Mapping[str, str], target: Path) -> Path:
    digest = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                out.write(chunk)
                digest.update(chunk)
                size += len(chunk)
        check_download(digest, size, headers)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
