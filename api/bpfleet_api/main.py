"""The composition root: the gate in front, the API routes, the docs (for readers),
background loops, and the dashboard (``/ui``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CollectorRegistry
from sqlmodel import Session

from bpfleet_api import changes, db, etags, fleet, heartbeats, metrics, notify, security, ui
from bpfleet_api.deps import Reader, forget_nodes
from bpfleet_api.gate import Gate
from bpfleet_api.models import Role, utcnow
from bpfleet_api.routes import (
    agent,
    artifacts,
    checks,
    drafts,
    editor,
    gitsources,
    health,
    kernels,
    namespaces,
    nodes,
    overview,
    policies,
    programs,
    proposals,
    rollouts,
    session,
    tokens,
)
from bpfleet_api.routes._changes import start_rollout
from bpfleet_api.settings import get_settings

log = logging.getLogger(__name__)
SWEEP_SECONDS = 2.0
HEARTBEAT_FLUSH_SECONDS = 1.0


def _prepare_database() -> None:
    settings = get_settings()
    engine = db.get_engine()
    db.migrate(engine)
    with Session(engine) as session:
        if settings.admin_token is not None:
            security.ensure(session, "admin", Role.ADMIN, settings.admin_token.get_secret_value())
        if settings.bootstrap_token is not None:
            security.ensure(
                session, "bootstrap", Role.BOOTSTRAP, settings.bootstrap_token.get_secret_value()
            )
        session.commit()


def _overdue() -> list[int]:
    with Session(db.get_engine()) as session:
        return fleet.overdue_rollouts(session, utcnow(), grace_seconds=3.0)


async def _flush_heartbeats(buffer: heartbeats.HeartbeatBuffer) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_FLUSH_SECONDS)
        try:
            await run_in_threadpool(_flush, buffer)
        except Exception:
            log.exception("heartbeat flush failed; retrying")


def _flush(buffer: heartbeats.HeartbeatBuffer) -> None:
    with Session(db.get_engine()) as session:
        buffer.flush(session)


async def _sweep_rollouts() -> None:
    """Re-queue rollouts whose task chain was lost (a broker restart, say)."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        try:
            for rollout_id in await run_in_threadpool(_overdue):
                await run_in_threadpool(start_rollout, rollout_id)
        except Exception:
            log.exception("rollout sweep failed; retrying")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    await run_in_threadpool(_prepare_database)
    app.state.waiters.bind(asyncio.get_running_loop())
    background = [
        asyncio.create_task(
            notify.listen(get_settings().redis_url, app.state.waiters, forget_nodes)
        ),
        asyncio.create_task(_sweep_rollouts()),
        asyncio.create_task(_flush_heartbeats(app.state.heartbeats)),
    ]
    try:
        yield
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await run_in_threadpool(_flush, app.state.heartbeats)


def create_app() -> FastAPI:
    app = FastAPI(
        title="bpfleet",
        version="0.1.0",
        summary="Desired state for a fleet of eBPF nodes, rolled out in safe steps.",
        lifespan=lifespan,
        # Served below, for readers only (a bearer token, or a browser session's cookie).
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(Gate)
    app.state.waiters = notify.Waiters()
    app.state.heartbeats = heartbeats.HeartbeatBuffer()
    registry = CollectorRegistry()
    registry.register(metrics.FleetCollector(app.state.waiters))

    @app.exception_handler(changes.FleetError)
    async def _fleet_error(_: Request, error: changes.FleetError) -> JSONResponse:
        return JSONResponse(
            {"detail": error.message, "problems": error.problems}, status_code=error.status_code
        )

    @app.get("/metrics", tags=["metrics"], response_class=Response)
    def prometheus(_: Reader) -> Response:
        return Response(metrics.render(registry), media_type="text/plain; version=0.0.4")

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_: Reader) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def swagger(_: Reader) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="bpfleet API")

    @app.get("/redoc", include_in_schema=False)
    def redoc(_: Reader) -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="bpfleet API")

    app.include_router(nodes.tombstones)
    for module in (
        health,
        session,
        tokens,
        nodes,
        namespaces,
        artifacts,
        programs,
        rollouts,
        policies,
        editor,
        checks,
        agent,
        overview,
        kernels,
        gitsources,
        proposals,
        drafts,
    ):
        app.include_router(module.router)
    app.add_middleware(etags.ETagMiddleware)
    ui.mount(app, get_settings().ui_dir)
    return app


app = create_app()
