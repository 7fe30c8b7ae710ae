"""The ASGI application: opens the database, the checkpointer, the store and the worker."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..checkpoint import from_url as saver_from_url
from ..errors import ThreadlineError
from ..store import from_url as store_from_url
from .api import ApiError, routes
from .assistants import ensure_system_assistants
from .connections import DEFAULT_POOL_SIZE, Connections
from .db import Database, open_database
from .graphs import GraphRegistry, ServerConfig, ThreadTTL, store_options
from .maintenance import Job, Maintenance
from .scheduler import Scheduler
from .threads import sweep_expired
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
    thread_ttl: tuple[str, float] | None = None
    """``(strategy, minutes)`` given to threads created without a TTL (``checkpointer.ttl``)."""


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


async def _http_error(request: Request, exc: Exception) -> Response:
    # Starlette's own 404/405 as {"detail": ...} too, as every other error is answered.
    assert isinstance(exc, HTTPException)
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


async def _library_error(request: Request, exc: Exception) -> Response:
    code = getattr(exc, "code", "threadline_error")
    return JSONResponse({"detail": str(exc), "code": code}, status_code=_status_of(exc))


def create_app(
    config: ServerConfig,
    database_url: str,
    *,
    workers: int = 10,
    lease: float = 10.0,
    grace: float = 10.0,
    sweep_interval: float = 60.0,
    listen_url: str | None = None,
    pool_size: int = DEFAULT_POOL_SIZE,
    prepare: bool = True,
) -> Starlette:
    """The server for ``config``'s graphs on ``database_url``.

    ``sweep_interval``: seconds between sweeps of expired data, taken in turn by the replicas
    (see :mod:`~threadline.server.maintenance`), never inside a run's commit; the config's
    the config's ``checkpointer.ttl.sweep_interval_minutes`` and
    ``store.ttl.sweep_interval_minutes`` set the thread and store sweeps' own.
    ``listen_url``, ``pool_size``, ``prepare``: how every connection the server opens is made
    (see :class:`~threadline.server.connections.Connections`; a ``ValueError`` here, before
    anything connects, says which setting to fix).
    """
    connections = Connections(database_url, listen_url, pool_size, prepare)
    backend = connections.backend_options()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Sync nodes run on the loop's default executor: the server owns it, sizes it to its
        # workers (each run may fan out) and shuts it down, instead of a process-wide pool.
        nodes = concurrent.futures.ThreadPoolExecutor(
            max(8, 4 * workers), thread_name_prefix="threadline-node"
        )
        asyncio.get_running_loop().set_default_executor(nodes)
        db = await open_database(connections)
        checkpointer: Any = saver_from_url(database_url, aio=True, auto_sweep=False, **backend)
        await checkpointer.__aenter__()
        await checkpointer.setup()
        store: Any = store_from_url(database_url, aio=True, **backend, **store_options(config))
        await store.__aenter__()
        await store.setup()
        graphs = GraphRegistry(config, checkpointer, store)
        worker = Worker(db, graphs, workers=workers, lease=lease)
        ttl = config.thread_ttl or ThreadTTL()
        app.state.server = Server(db, checkpointer, store, graphs, worker, ttl.default())
        await ensure_system_assistants(db, graphs.names())
        thread_sweep = sweep_interval if ttl.sweep_minutes is None else ttl.sweep_minutes * 60
        store_minutes = (config.store.get("ttl") or {}).get("sweep_interval_minutes")
        store_sweep = sweep_interval if store_minutes is None else float(store_minutes) * 60
        jobs = [
            Job("store-ttl", store_sweep, store.asweep_ttl),
            Job(
                "thread-ttl",
                thread_sweep,
                lambda: sweep_expired(db, checkpointer, limit=ttl.sweep_limit),
            ),
        ]
        maintenance = Maintenance(db, worker.owner, jobs)
        # Any replica fires crons: firing only queues runs, for whichever worker is free.
        scheduler = Scheduler(db, graphs.names(), ttl.default())
        worker.start()
        maintenance.start()
        scheduler.start()
        try:
            yield
        finally:
            await scheduler.stop()
            await maintenance.stop()
            await worker.stop(grace)
            await store.aclose()
            await checkpointer.aclose()
            await db.close()
            nodes.shutdown(wait=False, cancel_futures=True)

    return Starlette(
        routes=routes(),
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error,
            ThreadlineError: _library_error,
            HTTPException: _http_error,
        },
    )
