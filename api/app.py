"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute

from api.admission import Admission, admission_limit
from api.problems import BodySizeLimitMiddleware, install_problem_handlers
from api.routes import bounds, dashboard, docs, health, range_tests, sweeps, trainings, workloads
from api.routes.events import StreamSlots
from api.routes.health import ReadinessProbe
from api.routes.jobs import jobs_router, kind_router
from core.db import JobSender, make_engine, make_session_factory, set_job_sender
from core.kinds import all_kinds
from core.migrate import is_at_head
from core.settings import Settings, get_settings

__all__ = ["NOT_MIGRATED", "create_app"]

logger = logging.getLogger(__name__)

NOT_MIGRATED = "database is not migrated: run `clr-sweep db upgrade` (or `make migrate`)"


def create_app(
    settings: Settings | None = None,
    *,
    job_sender: JobSender | None = None,
    broker_check: Callable[[], None] | None = None,
) -> FastAPI:
    """The API app for ``settings`` (the environment's by default).

    On startup it refuses to run on a database that is not at the Alembic head,
    and installs ``job_sender`` (if given) as the process's after-commit sender,
    restoring the previous one on shutdown. ``/readyz`` calls ``broker_check``
    (if given), which raises when the broker cannot be reached.
    """
    settings = settings if settings is not None else get_settings()
    # No pre-ping (a round trip per request): after a database restart the first
    # request on a dead connection gets a 503 (Retry-After) and SQLAlchemy, seeing
    # the disconnect, replaces the whole pool; workers keep pre-pinging.
    engine = make_engine(settings, pool_pre_ping=False)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            if not is_at_head(app.state.read_engine):
                raise RuntimeError(NOT_MIGRATED)
            previous = set_job_sender(job_sender) if job_sender is not None else None
            logger.info(
                "api.started database=%s admitted=%d queue=%d",
                engine.url.render_as_string(),
                app.state.admission.limit,
                app.state.admission.max_queue,
            )
            try:
                yield
            finally:
                if job_sender is not None:
                    set_job_sender(previous)
        finally:
            engine.dispose()

    app = FastAPI(
        title="clr-sweep",
        summary="LR range tests and cyclical learning-rate bounds as a service.",
        version="0.1.0",
        docs_url=None,  # /docs and /redoc: api.routes.docs, from vendored assets
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.broker_check = broker_check
    app.state.engine = engine
    # Checks read only: no write lock (SQLite's BEGIN IMMEDIATE) for a health probe.
    app.state.read_engine = engine.execution_options(sqlite_begin="DEFERRED")
    app.state.session_factory = make_session_factory(engine)
    app.state.admission = Admission(
        admission_limit(settings),
        max_queue=settings.api_max_queue,
        wait_s=settings.api_queue_timeout_s,
    )
    # Drawing a plot holds no turn above (the unit of work has ended) but a thread
    # and the GIL for a second or so: a line of its own, or a team asking for plots
    # fills the thread pool and every admitted request waits behind the drawings.
    app.state.plot_renders = Admission(
        settings.api_max_plot_renders,
        max_queue=settings.api_max_queue,
        wait_s=settings.api_queue_timeout_s,
        what="plots being drawn",
        settings="CLR_API_MAX_PLOT_RENDERS",
    )
    app.state.readiness = ReadinessProbe(
        app.state.read_engine, broker_check=broker_check, broker_url=settings.broker
    )
    app.state.streams = StreamSlots(
        settings.api_max_streams, per_team=settings.api_max_streams_per_team
    )
    install_problem_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware)
    # every kind's routes, derived from the registry, then the kinds' own extras
    routers = [jobs_router(), *(kind_router(kind) for kind in all_kinds())]
    routers += [
        m.router
        for m in (range_tests, trainings, sweeps, bounds, workloads, health, docs, dashboard)
    ]
    for router in routers:
        for route in router.routes:
            # a route's one-line docstring is its OpenAPI summary
            if isinstance(route, APIRoute) and route.description and not route.summary:
                route.summary = route.description.strip().splitlines()[0]
        app.include_router(router)
    return app
