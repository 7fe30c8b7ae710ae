"""The ASGI application: opens the database, the checkpointer, the store and the worker."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..checkpoint import from_url as saver_from_url
from ..errors import ThreadlineError
from ..store import from_url as store_from_url
from .api import ApiError, routes
from .db import Database, open_database
from .graphs import GraphRegistry, ServerConfig
from .threads import upkeep
from .worker import Worker

__all__ = ["Server", "create_app"]

log = logging.getLogger("threadline.server")


@dataclass
class Server:
    """What every handler shares: the database, the graphs and this replica's worker."""

    db: Database
    checkpointer: Any
    store: Any
    graphs: GraphRegistry
    worker: Worker


def _status_of(exc: BaseException) -> int:
    status = getattr(exc, "http_status", None)
    if isinstance(status, int):
        return status
    if isinstance(exc, LookupError):
        return 404
    if isinstance(exc, (ValueError, TypeError)):
        return 422
    return 500


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status)


async def _library_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"detail": str(exc)}, status_code=_status_of(exc))


def create_app(
    config: ServerConfig,
    database_url: str,
    *,
    workers: int = 4,
    lease: float = 10.0,
    grace: float = 10.0,
) -> Starlette:
    """The server for ``config``'s graphs on ``database_url``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        db = await open_database(database_url)
        checkpointer: Any = saver_from_url(database_url, aio=True)
        await checkpointer.__aenter__()
        await checkpointer.setup()
        store: Any = store_from_url(database_url, aio=True)
        await store.__aenter__()
        await store.setup()
        graphs = GraphRegistry(config, checkpointer, store)
        worker = Worker(db, graphs, workers=workers, lease=lease)
        app.state.server = Server(db, checkpointer, store, graphs, worker)
        app.state.store = store
        app.state.graphs = graphs
        worker.start()
        try:
            async with upkeep(app.state.server):  # system assistants, the TTL sweep
                yield
        finally:
            await worker.stop(grace)
            await store.aclose()
            await checkpointer.aclose()
            await db.close()

    return Starlette(
        routes=routes(),
        lifespan=lifespan,
        exception_handlers={ApiError: _api_error, ThreadlineError: _library_error},
    )
