"""``/ok``, ``/info``, ``/openapi.json`` and ``/docs``."""

from __future__ import annotations

from importlib.metadata import version

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .openapi import docs_html, document

__all__ = ["meta_routes"]


async def ok(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def info(request: Request) -> Response:
    return JSONResponse(
        {"version": version("threadline"), "flags": {"assistants": True, "crons": True}}
    )


async def openapi_json(request: Request) -> Response:
    # Built from the app's own routes on each call: cheap, and it cannot disagree with them.
    return JSONResponse(document(request.app.routes, version("threadline")))


async def docs(request: Request) -> Response:
    return HTMLResponse(docs_html(document(request.app.routes, version("threadline"))))


def meta_routes() -> list[Route]:
    """The health, version and API description routes."""
    return [
        Route("/ok", ok),
        Route("/info", info),
        Route("/openapi.json", openapi_json),
        Route("/docs", docs),
    ]
