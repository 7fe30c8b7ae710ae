"""``/ok`` and ``/info``."""

from __future__ import annotations

from importlib.metadata import version

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["meta_routes"]


async def ok(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def info(request: Request) -> Response:
    return JSONResponse(
        {"version": version("threadline"), "flags": {"assistants": True, "crons": False}}
    )


def meta_routes() -> list[Route]:
    """The health and version routes."""
    return [Route("/ok", ok), Route("/info", info)]
