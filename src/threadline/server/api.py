"""The HTTP API: the routes the official ``langgraph_sdk`` client calls, one module per resource."""

from __future__ import annotations

from starlette.routing import Route

from .http import ApiError
from .routes_assistants import assistant_routes
from .routes_crons import cron_routes
from .routes_meta import meta_routes
from .routes_runs import run_routes
from .routes_store import store_routes
from .routes_threads import thread_routes

__all__ = ["ApiError", "routes"]


def routes() -> list[Route]:
    """Every route of the API."""
    return [
        *meta_routes(),
        *assistant_routes(),
        *thread_routes(),
        *run_routes(),
        *cron_routes(),
        *store_routes(),
    ]
