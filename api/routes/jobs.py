"""Routes of every kind of job, derived from the kind registry (:mod:`core.kinds`).

- ``/jobs``: every kind. ``GET /jobs`` (filters: kind, status, workload,
  created after, parent; cursor pages), ``GET /jobs/{id}``,
  ``POST /jobs/{id}/cancel``, ``GET /jobs/{id}/events`` (SSE) and
  ``GET /jobs/{id}/series/{name}`` (JSON or CSV, ``?after=``). Responses are
  discriminated on ``kind``.
- ``/<noun>`` per kind (:func:`kind_router`): ``POST`` creates one (202; a
  retried Idempotency-Key 200), ``GET`` lists them, ``GET /{id}`` reads one,
  ``POST /{id}/cancel``, ``GET /{id}/events``. Another kind's id under a kind's
  noun is a 404. A kind's own extras (a range test's bounds and plot) live in
  its own module.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Path, Query, Request, Response, status
from fastapi.responses import PlainTextResponse
from pydantic import ConfigDict, Discriminator, Tag
from sqlalchemy.orm import Session

from api.deps import CurrentTeamDep, SessionDep, SettingsDep
from api.routes._responses import AUTH, INVALID, NOT_FOUND, Responses, problem
from api.routes.events import add_event_route
from api.schemas.jobs import (
    IsoDateTime,
    JobRead,
    SeriesRead,
    job_list_model,
    job_read_model,
    job_read_union,
    series_read,
)
from api.schemas.text import (
    CURSOR_PATTERN,
    IDEMPOTENCY_KEY_PATTERN,
    NAME_PATTERN,
    string_schema,
    workload_enum,
)
from clr_sweep.contracts import JobFinish, SeriesUpload, SeriesUploadRead
from core import services
from core.db import read_only
from core.downsample import MIN_POINTS, downsample
from core.errors import InvalidInput
from core.kinds import JobKind, all_kinds, get_kind
from core.models import Job, JobStatus
from core.services import JobPage
from core.services.jobs import IDEMPOTENCY_KEY_MAX_LENGTH
from core.settings import Settings
from core.specs import JobSpec

__all__ = ["MAX_POINT_INDEX", "jobs_router", "kind_router", "read_job", "series_csv"]

MAX_POINT_INDEX = 2**31 - 1
"""Largest ``after`` accepted: a point index the database's integer columns can hold."""

MAX_SERIES_PAGE = 100_000
"""Most points ``GET /jobs/{id}/series/{name}`` returns at once (``?limit=``); a longer
series is read in pages: pass ``next_after`` as ``after``."""

MAX_DOWNSAMPLED_RANGE = 1_000_000
"""Most points read for one thinned answer (``?max_points=``): what is sent stays small."""

ACTIVE_CAP: Responses = {
    429: {
        **problem(
            429, "The team has its cap of queued and running jobs (CLR_MAX_ACTIVE_JOBS_PER_TEAM)"
        )[429],
        "headers": {
            "Retry-After": {
                "description": "Seconds to wait before submitting again",
                "schema": {"type": "integer"},
            }
        },
    },
}

CANCEL_RESPONSES = {
    **AUTH,
    **NOT_FOUND,
    **problem(409, "The job already finished; the detail names its status"),
    **INVALID,
}


def read_job(session: SessionDep, job: Job, settings: SettingsDep) -> JobRead:
    """A job as its kind's read schema; a queued one says where it stands and why it waits."""
    wait = services.explain_wait(session, job=job, settings=settings)
    read = job_read_model(get_kind(job.kind)).model_validate(job)
    return read.model_copy(
        update={"queue_position": wait.queue_position, "waiting_reason": wait.waiting_reason}
    )


def _as_read(job: Job) -> JobRead:
    return job_read_model(get_kind(job.kind)).model_validate(job)


def _page(session: Session, page: JobPage, settings: Settings) -> dict[str, Any]:
    """A page of jobs; the queued ones say where they stand and why they wait."""
    waits = services.explain_waits(session, jobs=page.items, settings=settings)
    items = [
        _as_read(job).model_copy(
            update={
                "queue_position": waits[job.id].queue_position,
                "waiting_reason": waits[job.id].waiting_reason,
            }
        )
        for job in page.items
    ]
    return {"items": items, "next_cursor": page.next_cursor}


def series_csv(series: SeriesRead) -> str:
    """``index,<field>...`` rows of a series read (an empty cell: no value)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["index", *series.fields])
    columns = [series.values.get(f) for f in series.fields]
    indices = series.index or range(series.start, series.next_after)
    for i, index in enumerate(indices):
        cells = ("" if c is None or c[i] is None else repr(c[i]) for c in columns)
        writer.writerow([index, *cells])
    return out.getvalue()


CursorQuery = Annotated[
    str | None,
    Query(
        max_length=512, pattern=CURSOR_PATTERN, description="The `next_cursor` of the previous page"
    ),
]
StatusQuery = Annotated[list[JobStatus] | None, Query(alias="status")]
WorkloadQuery = Annotated[str | None, Query(max_length=64, json_schema_extra=workload_enum)]
LimitQuery = Annotated[int, Query(ge=1, le=200)]
CreatedAfterQuery = Annotated[IsoDateTime | None, Query()]


def jobs_router() -> APIRouter:
    """``/jobs``: the routes of every kind (the schema covers the kinds registered now)."""
    router = APIRouter(prefix="/jobs", tags=["jobs"])
    kinds = tuple(all_kinds())
    read_union = job_read_union(kinds)
    page_model = job_list_model(read_union, "JobList")
    kind_names = [k.name for k in kinds]

    # the kinds registered now: a local value, so not in a (string) annotation
    kind_query = Annotated[
        str | None, Query(max_length=32, json_schema_extra=string_schema(enum=kind_names))
    ]

    def list_jobs(
        session: SessionDep,
        team: CurrentTeamDep,
        settings: SettingsDep,
        limit: LimitQuery = 50,
        cursor: CursorQuery = None,
        kind: str | None = None,
        status_: StatusQuery = None,
        workload: WorkloadQuery = None,
        created_after: CreatedAfterQuery = None,
        parent: Annotated[uuid.UUID | None, Query(description="Only this job's children")] = None,
    ) -> dict[str, Any]:
        """The team's jobs of every kind, newest first, a page at a time."""
        read_only(session)
        if kind is not None:
            get_kind(kind)  # an unknown kind is a 422 naming the field
        return _page(
            session,
            services.list_jobs(
                session,
                team=team,
                kind=kind,
                statuses=status_ or (),
                workload=workload,
                created_after=created_after,
                parent_id=parent,
                limit=limit,
                cursor=cursor,
            ),
            settings,
        )

    list_jobs.__annotations__["kind"] = kind_query
    router.add_api_route(
        "", list_jobs, methods=["GET"], response_model=page_model, responses={**AUTH, **INVALID}
    )

    @router.get("/{job_id}", response_model=read_union, responses={**AUTH, **NOT_FOUND, **INVALID})
    def get_job(
        job_id: uuid.UUID, session: SessionDep, team: CurrentTeamDep, settings: SettingsDep
    ) -> JobRead:
        """One of the team's jobs, of any kind."""
        return read_job(session, services.get_job(session, team=team, job_id=job_id), settings)

    @router.post(
        "/{job_id}/cancel",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=read_union,
        responses=CANCEL_RESPONSES,
    )
    def cancel_job(job_id: uuid.UUID, session: SessionDep, team: CurrentTeamDep) -> JobRead:
        """Cancel a queued job at once, or ask a running one to stop."""
        return _as_read(services.cancel_job(session, team=team, job_id=job_id))

    @router.get(
        "/{job_id}/series/{name}",
        response_model=SeriesRead,
        responses={
            200: {"content": {"text/csv": {}}, "description": "JSON, or CSV when asked for"},
            **AUTH,
            **NOT_FOUND,
            **INVALID,
        },
    )
    def read_series(
        job_id: uuid.UUID,
        name: Annotated[str, Path(max_length=64, pattern=NAME_PATTERN)],
        session: SessionDep,
        team: CurrentTeamDep,
        after: Annotated[int, Query(ge=0, le=MAX_POINT_INDEX)] = 0,
        limit: Annotated[
            int | None,
            Query(
                ge=1,
                le=MAX_DOWNSAMPLED_RANGE,
                description=f"Read at most this many points from `after` on (default and "
                f"maximum {MAX_SERIES_PAGE:,}; with `max_points`, {MAX_DOWNSAMPLED_RANGE:,})",
            ),
        ] = None,
        max_points: Annotated[
            int | None,
            Query(
                ge=MIN_POINTS,
                le=MAX_SERIES_PAGE,
                description="Thin the points read to at most this many for a chart: in "
                "equal buckets, each field's lowest and highest point (and the first and "
                "last) are kept; `index` gives each kept point's index",
            ),
        ] = None,
        format_: Annotated[Literal["json", "csv"] | None, Query(alias="format")] = None,
        accept: Annotated[str | None, Header()] = None,
    ) -> SeriesRead | Response:
        """A series' points from point ``after`` on (``limit`` at most: ``next_after`` below
        ``points`` means more follow), as JSON or (``?format=csv``) CSV; with
        ``max_points``, thinned for display keeping each field's extremes."""
        read_only(session)
        if limit is None:
            limit = MAX_SERIES_PAGE if max_points is None else MAX_DOWNSAMPLED_RANGE
        elif max_points is None and limit > MAX_SERIES_PAGE:
            reason = f"must be <= {MAX_SERIES_PAGE} without max_points, got {limit}"
            raise InvalidInput(f"limit {reason}", errors=[{"field": "limit", "reason": reason}])
        series = services.read_series(
            session, team=team, job_id=job_id, name=name, after=after, limit=limit
        )
        read = series_read(series)
        thinned = None if max_points is None else downsample(series.values, series.size, max_points)
        if thinned is not None:
            positions, values = thinned
            read = read.model_copy(
                update={"values": values, "index": [series.start + p for p in positions]}
            )
        if format_ == "csv" or (format_ is None and "text/csv" in (accept or "")):
            return PlainTextResponse(series_csv(read), media_type="text/csv")
        return read

    @router.post(
        "/{job_id}/series/{name}",
        response_model=SeriesUploadRead,
        responses={
            **AUTH,
            **NOT_FOUND,
            **problem(
                409,
                "The job is not one the team runs itself, was cancelled (stop sending) or "
                "finished, or the points leave a gap or differ from those stored (the detail "
                "names the index expected next)",
            ),
            **problem(400, "The body is not valid JSON"),
            **problem(413, "The body is over 64 KiB: send fewer points at a time"),
            **INVALID,
        },
    )
    def upload_series(
        job_id: uuid.UUID,
        name: Annotated[str, Path(max_length=64, pattern=NAME_PATTERN)],
        body: SeriesUpload,
        session: SessionDep,
        team: CurrentTeamDep,
    ) -> SeriesUploadRead:
        """Append points to a series of a job the team runs in its own loop (`"source":
        "client"`); also its heartbeat. A repeat of stored points changes nothing."""
        upload = services.upload_points(
            session, team=team, job_id=job_id, name=name, start=body.start, values=body.values
        )
        job = upload.job
        return SeriesUploadRead(
            job_id=job.id,
            name=upload.name,
            start=upload.start,
            stored=upload.stored,
            points=upload.points,
            duplicate=upload.duplicate,
            status=JobStatus(job.status),
            progress=job.progress,
            total=job.total,
        )

    @router.post(
        "/{job_id}/heartbeat",
        response_model=read_union,
        responses={
            **AUTH,
            **NOT_FOUND,
            **problem(
                409,
                "The job is not one the team runs itself, was cancelled (stop) or finished",
            ),
            **INVALID,
        },
    )
    def heartbeat(job_id: uuid.UUID, session: SessionDep, team: CurrentTeamDep) -> JobRead:
        """A job the team runs in its own loop is alive with nothing new to upload (every
        upload is a heartbeat too): the reaper fails one silent for the heartbeat timeout."""
        return _as_read(services.client_heartbeat(session, team=team, job_id=job_id))

    @router.post(
        "/{job_id}/finish",
        response_model=read_union,
        responses={
            **AUTH,
            **NOT_FOUND,
            **problem(
                409,
                "The job is not one the team runs itself, or already ended another way, or "
                "a range test has no curve point to suggest from",
            ),
            **problem(400, "The body is not valid JSON"),
            **problem(413, "The body is over 64 KiB"),
            **INVALID,
        },
    )
    def finish_job(
        job_id: uuid.UUID, body: JobFinish, session: SessionDep, team: CurrentTeamDep
    ) -> JobRead:
        """End a job the team runs in its own loop: `succeeded` (the service suggests,
        summarises and plots from the uploaded points), `failed` or `cancelled`."""
        job = services.finish_client_job(
            session,
            team=team,
            job_id=job_id,
            status=body.status,
            error=body.error,
            stop_reason=body.stop_reason,
            stop_detail=body.stop_detail,
            seconds=body.seconds,
            device=body.device,
        )
        return _as_read(job)

    add_event_route(router, "/{job_id}/events", kind=None, title="job of any kind")
    return router


def _create_body(kind: JobKind) -> Any:
    """The body of ``POST /<noun>``: the kind's spec, with its examples in the schema;
    for a kind a team may run in its own loop, either that or its client spec
    (``"source": "client"``)."""

    def schema_extra(schema: dict[str, Any]) -> None:
        if kind.examples:
            schema["examples"] = list(kind.examples)
        workload = schema.get("properties", {}).get("workload")
        if workload is not None:
            workload_enum(workload)

    name = "".join(p.capitalize() for p in kind.name.split("_")) + "Create"
    doc = f"The body of `POST /{kind.noun}`: a {kind.title} spec; omitted fields take defaults."
    namespace = {
        "__doc__": doc,
        "__module__": kind.spec.__module__,
        "model_config": ConfigDict(extra="forbid", json_schema_extra=schema_extra),
    }
    body: type[JobSpec] = type(name, (kind.spec,), namespace)
    client = kind.client_spec
    if client is None:
        return body
    client_doc = (
        f"The body of `POST /{kind.noun}` for a {kind.title} the team runs in its own loop "
        "and uploads: its configuration by name; no worker runs it."
    )
    client_body: type[JobSpec] = type(
        "Client" + name,
        (client,),
        {
            "__doc__": client_doc,
            "__module__": client.__module__,
            "model_config": ConfigDict(extra="forbid"),
        },
    )
    return Annotated[
        Annotated[body, Tag("service")] | Annotated[client_body, Tag("client")],
        Discriminator(_source),
    ]


def _source(value: Any) -> str:
    """Which spec a create body is: ``client`` when it says so, else ``service``."""
    source = value.get("source") if isinstance(value, dict) else getattr(value, "source", None)
    return "client" if source == "client" else "service"


def kind_router(kind: JobKind, *, body: type[JobSpec] | None = None) -> APIRouter:
    """``/<noun>``: create, list, read, cancel and follow the jobs of one kind.

    ``body`` replaces the derived request body (a subclass of the kind's spec).
    """
    router = APIRouter(prefix=f"/{kind.noun}", tags=[f"{kind.title}s"])
    read_model = job_read_model(kind)
    page_model = job_list_model(read_model, f"{read_model.__name__[:-4]}List")
    create_body: Any = body if body is not None else _create_body(kind)
    get_name = f"get_{kind.name}"

    def create(
        request: Request,
        response: Response,
        session: SessionDep,
        team: CurrentTeamDep,
        settings: SettingsDep,
        spec: Any,
        idempotency_key: str | None,
    ) -> JobRead:
        submission = services.submit_job(
            session,
            team=team,
            kind=kind.name,
            spec=spec,
            settings=settings,
            idempotency_key=idempotency_key,
        )
        response.status_code = (
            status.HTTP_202_ACCEPTED if submission.created else status.HTTP_200_OK
        )
        response.headers["Location"] = str(request.url_for(get_name, job_id=submission.job.id))
        return read_model.model_validate(submission.job)

    def create_route(
        body: create_body,
        request: Request,
        response: Response,
        session: SessionDep,
        team: CurrentTeamDep,
        settings: SettingsDep,
        idempotency_key: Annotated[
            str | None,
            Header(
                alias="Idempotency-Key",
                description="Any 1 to 255 visible ASCII characters (no spaces), such as a "
                "UUID; a retry with the same key and body gives the same job",
                # declared only: the service's check names the header in its own words
                json_schema_extra=string_schema(
                    pattern=IDEMPOTENCY_KEY_PATTERN,
                    minLength=1,
                    maxLength=IDEMPOTENCY_KEY_MAX_LENGTH,
                ),
            ),
        ] = None,
    ) -> JobRead:
        return create(request, response, session, team, settings, body, idempotency_key)

    create_route.__annotations__["body"] = create_body  # a local class: not a string
    _name(
        create_route,
        f"create_{kind.name}",
        f"Queue a {kind.title} (202); a retried Idempotency-Key gives the same job (200).",
    )
    router.add_api_route(
        "",
        create_route,
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=read_model,
        responses={
            200: {"model": read_model, "description": "A retry with the same Idempotency-Key"},
            **problem(400, "The body is not valid JSON"),
            **problem(413, "The body is over 64 KiB"),
            **AUTH,
            **INVALID,
            **problem(409, "A job the spec refers to is not ready (its detail says why)"),
            **ACTIVE_CAP,
        },
    )

    def list_route(
        session: SessionDep,
        team: CurrentTeamDep,
        settings: SettingsDep,
        limit: LimitQuery = 50,
        cursor: CursorQuery = None,
        status_: StatusQuery = None,
        workload: WorkloadQuery = None,
        created_after: CreatedAfterQuery = None,
    ) -> dict[str, Any]:
        read_only(session)
        return _page(
            session,
            services.list_jobs(
                session,
                team=team,
                kind=kind.name,
                statuses=status_ or (),
                workload=workload,
                created_after=created_after,
                limit=limit,
                cursor=cursor,
            ),
            settings,
        )

    _name(
        list_route,
        f"list_{kind.name}s",
        f"The team's {kind.title}s, newest first, a page at a time.",
    )
    router.add_api_route(
        "", list_route, methods=["GET"], response_model=page_model, responses={**AUTH, **INVALID}
    )

    def get_route(
        job_id: uuid.UUID, session: SessionDep, team: CurrentTeamDep, settings: SettingsDep
    ) -> JobRead:
        job = services.get_job(session, team=team, job_id=job_id, kind=kind.name)
        return read_job(session, job, settings)

    _name(
        get_route,
        get_name,
        f"One of the team's {kind.title}s; a queued one says where it stands and why it waits.",
    )
    router.add_api_route(
        "/{job_id}",
        get_route,
        methods=["GET"],
        response_model=read_model,
        responses={**AUTH, **NOT_FOUND, **INVALID},
    )

    def cancel_route(job_id: uuid.UUID, session: SessionDep, team: CurrentTeamDep) -> JobRead:
        job = services.cancel_job(session, team=team, job_id=job_id, kind=kind.name)
        return read_model.model_validate(job)

    _name(
        cancel_route,
        f"cancel_{kind.name}",
        "Cancel a queued job at once, or ask a running one to stop.",
    )
    router.add_api_route(
        "/{job_id}/cancel",
        cancel_route,
        methods=["POST"],
        status_code=status.HTTP_202_ACCEPTED,
        response_model=read_model,
        responses=CANCEL_RESPONSES,
    )
    add_event_route(router, "/{job_id}/events", kind=kind.name, title=kind.title)
    return router


def _name(route: Callable[..., Any], name: str, doc: str) -> None:
    route.__name__ = route.__qualname__ = name
    route.__doc__ = doc
