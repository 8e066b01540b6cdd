"""What :class:`~clr_sweep.Client` and :class:`~clr_sweep.AsyncClient` share: request
building, answer parsing and the numpy views; no I/O."""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from clr_sweep import _models
from clr_sweep.errors import ProtocolError, Timeout

__all__ = [
    "FINAL_STATUSES",
    "STREAM_READ_TIMEOUT_S",
    "STREAM_RETRY_AFTER_MAX_S",
    "KIND_NOUNS",
    "Curve",
    "PlotFormat",
    "SeriesPages",
    "as_status",
    "bounds_query",
    "check_deadline",
    "check_download",
    "check_event_stream",
    "check_plot",
    "download_name",
    "dump_spec",
    "empty_streams_error",
    "events_path",
    "job_id_text",
    "list_query",
    "new_idempotency_key",
    "user_agent",
]

FINAL_STATUSES = frozenset({"succeeded", "failed", "cancelled"})
KIND_NOUNS = {"range_test": "range-tests", "training": "trainings", "sweep": "sweeps"}
"""The path of each job kind's own routes (plots, models, bounds)."""

PlotFormat = Literal["png", "svg"]
STREAM_READ_TIMEOUT_S = 45.0
"""Longest silence on an event stream before it counts as broken (the server pings every 15 s)."""
STREAM_RETRY_AFTER_MAX_S = 5.0
"""Longest ``Retry-After`` :meth:`~clr_sweep.Client.wait` honours before it polls instead."""
SERIES_PAGE = 100_000
"""Points asked for per page of a series (the API's largest page)."""

FloatArray = npt.NDArray[np.float64]


def check_event_stream(response: Any) -> None:
    """Refuse an answer to ``GET /jobs/{id}/events`` that is not an event stream (a
    proxy's page, a server of something else): it would never bring an event.

    Raises:
        ProtocolError: its content type is not ``text/event-stream``.
    """
    content_type = str(response.headers.get("content-type", ""))
    if not content_type.lower().startswith("text/event-stream"):
        raise ProtocolError(
            f"GET {response.request.url} answered {response.status_code} "
            f"with {content_type or 'no content type'}, not an event stream"
        )


def empty_streams_error(job_id: str, times: int) -> ProtocolError:
    """A job's event stream that keeps ending before its first event."""
    return ProtocolError(
        f"the event stream of job {job_id} ended {times} times in a row without an event"
    )


def check_plot(response: Any, fmt: str) -> bytes:
    """A plot's bytes, once the answer is one (``image/png``, ``image/svg+xml``).

    Raises:
        ProtocolError: the answer is not an image (a proxy's page, a JSON document).
    """
    content_type = str(response.headers.get("content-type", "")).lower()
    expected = "image/png" if fmt == "png" else "image/svg+xml"
    if not content_type.startswith(expected):
        raise ProtocolError(
            f"GET {response.request.url} answered {response.status_code} "
            f"with {content_type or 'no content type'}, not {expected}"
        )
    return bytes(response.content)


def user_agent() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"clr-sweep-client/{version('clr-sweep')}"
    except PackageNotFoundError:
        return "clr-sweep-client"


def new_idempotency_key() -> str:
    """A fresh key for one submit (reused by its retries)."""
    return str(uuid.uuid4())


def job_id_text(job_id: uuid.UUID | str | Any) -> str:
    """A job id as it goes in a path; a parsed job (anything with ``.id``/``["id"]``) too.

    Raises:
        ValueError: ``job_id`` is not a UUID.
    """
    if isinstance(job_id, Mapping):
        job_id = job_id["id"]
    elif not isinstance(job_id, uuid.UUID | str) and hasattr(job_id, "id"):
        job_id = job_id.id
    try:
        return str(uuid.UUID(str(job_id)))
    except ValueError:
        raise ValueError(f"job_id must be a job's UUID, got {str(job_id)[:64]!r}") from None


def dump_spec(spec: Any) -> dict[str, Any]:
    """A spec as the request body: a dict as it is; a model without the fields left unset
    (so the server's defaults apply)."""
    if isinstance(spec, Mapping):
        return dict(spec)
    dump = getattr(spec, "model_dump", None)
    if dump is None:
        raise TypeError(f"a spec must be a contract model or a dict, got {type(spec).__name__}")
    body: dict[str, Any] = dump(mode="json", exclude_unset=True)
    return body


def events_path(job_id: str) -> str:
    return f"/jobs/{job_id}/events"


def _query_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float) or value is None:
        return json.dumps(value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def list_query(
    *,
    kind: str | None,
    status: str | Iterable[str] | None,
    workload: str | None,
    parent: Any,
    created_after: datetime | str | None,
    page_size: int,
) -> list[tuple[str, str]]:
    """The query of ``GET /jobs`` (without the cursor)."""
    query: list[tuple[str, str]] = [("limit", str(page_size))]
    if kind is not None:
        query.append(("kind", kind))
    if status is not None:
        statuses = [status] if isinstance(status, str) else list(status)
        query.extend(("status", str(getattr(s, "value", s))) for s in statuses)
    if workload is not None:
        query.append(("workload", workload))
    if parent is not None:
        query.append(("parent", job_id_text(parent)))
    if created_after is not None:
        text = created_after.isoformat() if isinstance(created_after, datetime) else created_after
        query.append(("created_after", text))
    return query


def bounds_query(
    *,
    workload: str | None,
    params: Mapping[str, Any] | None,
    optimizer: str | Mapping[str, Any] | Any | None,
    metric: str | None,
    method: str | None,
    batch_size: int | None,
    configuration: Mapping[str, Any],
) -> list[tuple[str, str]]:
    """The query of ``GET /bounds``: the JSON forms of params and optimizer, the rest as is."""
    query: list[tuple[str, str]] = []
    if workload is not None:
        query.append(("workload", workload))
    if params is not None:
        query.append(("params", _query_value(dict(params))))
    if optimizer is not None:
        if hasattr(optimizer, "model_dump"):
            optimizer = optimizer.model_dump(mode="json", exclude_unset=True)
        query.append(("optimizer", _query_value(optimizer)))
    for key, value in (("metric", metric), ("method", method), ("batch_size", batch_size)):
        if value is not None:
            query.append((key, _query_value(value)))
    query.extend((key, _query_value(value)) for key, value in configuration.items())
    return query


@dataclass(frozen=True)
class Curve:
    """A range test's curve as numpy arrays, one value per step.

    ``accuracies`` is None when the test did not measure accuracy.
    """

    job_id: uuid.UUID
    attempt: int
    status: str
    lrs: FloatArray
    losses: FloatArray
    smoothed_losses: FloatArray
    accuracies: FloatArray | None

    def __len__(self) -> int:
        return int(self.lrs.shape[0])

    @classmethod
    def from_series(cls, job_id: str, pages: SeriesPages) -> Curve:
        arrays = pages.arrays()
        accuracies = arrays.get("accuracy")
        if accuracies is not None and bool(np.all(np.isnan(accuracies))):
            accuracies = None
        empty = np.zeros(0, dtype=np.float64)
        return cls(
            job_id=uuid.UUID(job_id),
            attempt=pages.attempt,
            status=pages.status,
            lrs=arrays.get("lr", empty),
            losses=arrays.get("loss", empty),
            smoothed_losses=arrays.get("smoothed_loss", empty),
            accuracies=accuracies,
        )


class SeriesPages:
    """Collects the pages of one series (``GET /jobs/{id}/series/{name}``) into arrays.

    A page of another attempt than the first means the job started over: the
    pages so far are dropped and reading starts again from point 0.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.attempt = 0
        self.status = ""
        self.fields: list[str] = []
        self._columns: dict[str, list[float]] = {}
        self.after = 0
        self.done = False

    def params(self) -> dict[str, int]:
        return {"after": self.after, "limit": SERIES_PAGE}

    def add(self, page: Mapping[str, Any]) -> None:
        """Take one page (the decoded JSON); :attr:`done` once the last was read.

        Raises:
            ProtocolError: the page is not one of the API's series pages.
        """
        try:
            self._add(page)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ProtocolError(
                f"the service's series page does not fit this client ({type(exc).__name__}: "
                f"{str(exc)[:200]}); is the client older than the service?"
            ) from None

    def _add(self, page: Mapping[str, Any]) -> None:
        if self.after and page["attempt"] != self.attempt:
            self._reset()
            return
        self.attempt = int(page["attempt"])
        self.status = str(page["status"])
        if not self.fields:
            self.fields = list(page["fields"])
        start, next_after = int(page["start"]), int(page["next_after"])
        size = next_after - start
        if start != self.after:
            raise ProtocolError(f"series page starts at {start}, expected {self.after}")
        values: Mapping[str, Any] = page["values"]
        for name in self.fields:
            column = values.get(name)
            data = [math.nan] * size if column is None else [_float(v) for v in column]
            self._columns.setdefault(name, []).extend(data)
        self.after = next_after
        self.done = size == 0 or next_after >= int(page["points"])

    def arrays(self) -> dict[str, FloatArray]:
        return {
            name: np.asarray(self._columns.get(name, []), dtype=np.float64) for name in self.fields
        }


def _float(value: Any) -> float:
    return math.nan if value is None else float(value)


_FILENAME = re.compile(r'filename="?([^";]+)"?')


def download_name(job_id: str, disposition: str | None) -> str:
    """The file name a model download is saved under in a folder (the server's, made safe)."""
    match = _FILENAME.search(disposition or "")
    name = Path(match.group(1)).name if match else ""
    if not name or name.startswith(".") or any(ord(c) < 32 for c in name):
        name = f"{job_id}.pt"
    return name


def check_download(digest: hashlib._Hash, size: int, headers: Mapping[str, str]) -> None:
    """Raise if the bytes received are not what the server said it sent.

    Raises:
        ProtocolError: the size or the SHA-256 (the ETag) differ.
    """
    declared = headers.get("Content-Length")
    if declared is not None and declared.isdigit() and int(declared) != size:
        raise ProtocolError(f"the download stopped at {size} of {declared} bytes")
    etag = headers.get("ETag", "").strip('W/"')
    if re.fullmatch(r"[0-9a-f]{64}", etag) and etag != digest.hexdigest():
        raise ProtocolError("the downloaded model does not match its SHA-256 (ETag)")


def as_status(job: _models.AnyJobRead) -> str:
    status = _models.job_field(job, "status")
    return str(getattr(status, "value", status))


def check_deadline(
    deadline: float | None, job_id: str, timeout: float | None, job: Any = None
) -> None:
    """Raise :class:`Timeout` once ``deadline`` passed, naming the job and its last status."""
    if deadline is not None and time.monotonic() > deadline:
        status = "" if job is None else f" (still {as_status(job)})"
        raise Timeout(
            f"job {job_id} has not finished within {timeout:g} s{status}", timeout=timeout
        )
