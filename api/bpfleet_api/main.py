"""The composition root: the gate in front, the API routes, the docs (for readers),
background loops, and the dashboard (``/ui``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import anyio.to_thread
from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.types import ASGIApp

from bpfleet_api import (
    changes,
    db,
    documents,
    etags,
    fastpath,
    fleet,
    heap,
    heartbeats,
    ingest,
    metrics,
    notify,
    security,
    ui,
)
from bpfleet_api.deps import Reader, forget_nodes, node_tokens
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
from bpfleet_api.settings import ApiSettings, get_settings

log = logging.getLogger(__name__)
SWEEP_SECONDS = 2.0
HEARTBEAT_FLUSH_SECONDS = 1.0


def prepare_database(engine: Engine, settings: ApiSettings) -> None:
    """Migrate, and make the configured tokens valid: one process at a time (several
    starting at once would each insert the same new token)."""

    def configured_tokens(session: Session) -> None:
        if settings.admin_token is not None:
            security.ensure(session, "admin", Role.ADMIN, settings.admin_token.get_secret_value())
        if settings.bootstrap_token is not None:
            security.ensure(
                session, "bootstrap", Role.BOOTSTRAP, settings.bootstrap_token.get_secret_value()
            )

    db.migrate(engine, then=configured_tokens)


def _overdue() -> list[int]:
    with Session(db.get_engine()) as session:
        return fleet.overdue_rollouts(session, utcnow(), grace_seconds=3.0)


def _flush(buffer: heartbeats.HeartbeatBuffer) -> None:
    with Session(db.get_engine()) as session:
        buffer.flush(session)


async def _flush_heartbeats(buffer: heartbeats.HeartbeatBuffer) -> None:
    while True:
        await asyncio.sleep(HEARTBEAT_FLUSH_SECONDS)
        try:
            await run_in_threadpool(_flush, buffer)
        except Exception as error:
            log.warning("heartbeat flush failed (%s); the beats are kept for the next", error)


async def _sweep_rollouts(lease: notify.LeaderLease) -> None:
    """Re-queue rollouts whose task chain was lost (a broker restart, say): in the one
    API process that holds the leader lease."""
    while True:
        await asyncio.sleep(SWEEP_SECONDS)
        try:
            if not await lease.held():
                continue
            for rollout_id in await run_in_threadpool(_overdue):
                await run_in_threadpool(start_rollout, rollout_id)
        except Exception:
            log.exception("rollout sweep failed; retrying")


def _refresh(plane: documents.AgentPlane) -> list[str]:
    with Session(db.get_engine()) as session:
        node_tokens().refill(lambda: security.agent_tokens(session))
        return plane.refresh(session)


async def _follow_fleet(app: FastAPI) -> None:
    """Keep this process's view of the fleet true: revisions moved behind its back (a
    lost wake-up, a restored database) wake their long-polls; the fleet's size sets the
    heartbeat interval and readiness windows; every agent token is trusted from one
    query (rather than one per agent and process when its cache entry expires)."""
    plane: documents.AgentPlane = app.state.plane
    while True:
        try:
            moved = await run_in_threadpool(_refresh, plane)
            heartbeats.observe_fleet(plane.node_count)
            app.state.waiters.wake(moved)
        except Exception as error:
            log.warning("could not compare node revisions with the database: %s", error)
        await asyncio.sleep(documents.REFRESH_SECONDS)


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = get_settings()
    # Few threads for database work, so they cannot starve the loop (heartbeats).
    anyio.to_thread.current_default_thread_limiter().total_tokens = settings.worker_threads
    await run_in_threadpool(prepare_database, db.get_engine(), settings)
    plane: documents.AgentPlane = app.state.plane
    waiters: notify.Waiters = app.state.waiters

    async def prepare(batch: list[str]) -> None:
        """Woken nodes: read back in one statement (their next long-poll may come to this
        process even if their current one is in another)."""
        plane.forget(batch)  # if reading fails, each long-poll reads its own
        await run_in_threadpool(documents.load_nodes, plane, batch)

    waiters.bind(asyncio.get_running_loop(), prepare)
    lease = notify.LeaderLease(settings.redis_url)
    background = [
        asyncio.create_task(notify.listen(settings.redis_url, waiters, forget_nodes)),
        asyncio.create_task(waiters.pace()),
        asyncio.create_task(_follow_fleet(app)),
        asyncio.create_task(_sweep_rollouts(lease)),
        asyncio.create_task(_flush_heartbeats(app.state.heartbeats)),
        asyncio.create_task(metrics.measure_loop_lag()),
        asyncio.create_task(heap.collect_when_quiet(lambda: not waiters.pacing)),
    ]
    heap.settle()
    try:
        yield
    finally:
        for task in background:
            task.cancel()
        await asyncio.gather(*background, return_exceptions=True)
        await lease.release()
        with contextlib.suppress(Exception):
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
    settings = get_settings()
    app.state.waiters = notify.Waiters(settings.wakes_per_second)
    app.state.heartbeats = heartbeats.HeartbeatBuffer()
    app.state.plane = documents.AgentPlane()
    app.state.reports = ingest.ReportBatcher(settings.events_kept_per_program)
    app.state.files = fastpath.ArtifactFiles()
    registry = metrics.registry(app.state.waiters)

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
        # The agents' routes first: they are most of the traffic, and routes match in order.
        agent,
        artifacts,
        health,
        session,
        tokens,
        nodes,
        namespaces,
        programs,
        rollouts,
        policies,
        editor,
        checks,
        overview,
        kernels,
        gitsources,
        proposals,
        drafts,
    ):
        app.include_router(module.router)
    app.add_middleware(etags.ETagMiddleware)
    app.add_middleware(metrics.LatencyMiddleware)
    ui.mount(app, settings.ui_dir)
    return app


def serve(app: FastAPI) -> ASGIApp:
    """The app as served: the agents' fast path in front of everything, the framework's
    own outer layers included (they cost the hottest calls as much as the call itself)."""
    return fastpath.AgentFastPath(
        app,
        buffer=app.state.heartbeats,
        files=app.state.files,
        reports=app.state.reports,
        plane=app.state.plane,
        waiters=app.state.waiters,
    )


app = serve(create_app())
