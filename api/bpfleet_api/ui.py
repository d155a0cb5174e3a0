"""The dashboard's files, served under ``/ui`` from the built ``ui/dist``.

Hashed assets are cached for good; every other path under ``/ui`` is the single page,
whose router shows the view the URL names (a reload or a shared link lands on the same
view). Each answer carries a Content-Security-Policy that lets the page load and call
nothing but this origin: air-gapped sites need nothing from outside. Holds no fleet
semantics: it serves files.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, status
from fastapi.responses import FileResponse, RedirectResponse
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

PREFIX = "/ui"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'; "
        "object-src 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
IMMUTABLE = "public, max-age=31536000, immutable"


class SecurityHeaders:
    """Adds ``SECURITY_HEADERS`` to every answer under ``/ui``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(PREFIX):
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, with_headers)


def router(dist: Path) -> APIRouter:
    """Routes for the built files in ``dist`` (the page answers 503 until it is built)."""
    routes = APIRouter(include_in_schema=False)
    root = dist.resolve()

    def page() -> FileResponse:
        index = root / "index.html"
        if not index.is_file():
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                f"the dashboard is not built here ({index} is missing): run `make ui`",
            )
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    @routes.get("/", response_class=RedirectResponse)
    def home() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/")

    @routes.get(PREFIX, response_class=RedirectResponse)
    def bare() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/")

    @routes.get(PREFIX + "/{path:path}")
    def files(path: str) -> FileResponse:
        if path.startswith("assets/"):
            asset = (root / path).resolve()
            if not asset.is_relative_to(root / "assets") or not asset.is_file():
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no asset {path}")
            return FileResponse(asset, headers={"Cache-Control": IMMUTABLE})
        top = (root / path).resolve()
        if path and "/" not in path and top.parent == root and top.is_file():
            return FileResponse(top)  # favicon and the like, beside index.html
        return page()

    return routes


def mount(app: FastAPI, dist: Path) -> None:
    app.include_router(router(dist))
    app.add_middleware(SecurityHeaders)
