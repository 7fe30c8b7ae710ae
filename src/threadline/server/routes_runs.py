"""Runs on a thread and stateless: create, wait, stream, join, cancel.

Handlers never run graphs: they insert runs and follow the events workers store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from . import runs as q
from .http import ApiError, body_of, server_of, uuid_of
from .routes_assistants import run_assistant
from .sse import HEARTBEAT, frame
from .wire import now_iso

__all__ = ["run_routes"]

HEARTBEAT_SECONDS = 5.0

_RUN_KEYS = (
    "input", "command", "config", "context", "stream_mode", "stream_subgraphs",
    "interrupt_before", "interrupt_after", "checkpoint_id", "durability", "on_completion",
    "stream_resumable", "on_disconnect", "after_seconds", "checkpoint", "webhook",
)  # fmt: skip


async def _create(
    request: Request, thread_id: str | None, run_id: str | None = None, *, live: bool = True
) -> tuple[dict[str, Any], bool]:
    body = await body_of(request)
    server = server_of(request)
    assistant = await run_assistant(request, body.get("assistant_id"))
    strategy = body.get("multitask_strategy") or "enqueue"
    if strategy not in q.MULTITASK_STRATEGIES:
        raise ApiError(422, f"multitask_strategy must be one of {q.MULTITASK_STRATEGIES}")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ApiError(422, "metadata must be a JSON object")
    stateless = thread_id is None
    kwargs = assistant.run_kwargs({k: body[k] for k in _RUN_KEYS if body.get(k) is not None})
    try:
        run, _cancelled = await q.create_run(
            server.db,
            thread_id=thread_id or str(uuid.uuid4()),
            assistant_id=assistant.assistant_id,
            graph_id=assistant.graph_id,
            kwargs=kwargs,
            metadata=metadata,
            strategy=strategy,
            create_thread=stateless or body.get("if_not_exists") == "create",
            run_id=run_id,
            live_events=live,
        )
    except q.RunConflict as exc:
        raise ApiError(409, str(exc)) from None
    except q.ThreadMissing as exc:
        raise ApiError(404, str(exc)) from None
    return run, stateless


def _locations(run: dict[str, Any], stateless: bool, suffix: str) -> dict[str, str]:
    base = f"/threads/{run['thread_id']}/runs/{run['run_id']}"
    return {"Content-Location": base, "Location": base + suffix}


async def _run_row(request: Request, run_id: str) -> tuple[Any, ...] | None:
    rows = await server_of(request).db.execute(
        f"SELECT {q.RUN_COLUMNS} FROM tl_runs WHERE run_id = ?", (run_id,)
    )
    return rows[0] if rows else None


RECHECK_SECONDS = 1.0
"""How long a waiter sleeps without an announcement before re-reading the run anyway."""


async def _wait_done(request: Request, run_id: str) -> Any:
    with server_of(request).db.notifier.subscribe(f"run:{run_id}") as changed:
        return await _outcome(request, run_id, changed)


async def _outcome(
    request: Request, run_id: str, changed: asyncio.Event, *, queued: bool = False
) -> Any:
    """The run's result once it ends; ``changed`` is set by the run's announcements.

    ``queued``: the caller has just created the run (subscribed first), so the first read can
    wait for an announcement.
    """
    while True:
        if queued:
            queued = False
        else:
            changed.clear()
            row = await _run_row(request, run_id)
            if row is None:
                return None
            if row[4] in q.TERMINAL:
                return json.loads(row[11]) if row[11] else None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), RECHECK_SECONDS)


async def create_background(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    run, stateless = await _create(request, thread_id)
    return JSONResponse(run, headers=_locations(run, stateless, ""))


async def create_stateless(request: Request) -> Response:
    run, stateless = await _create(request, None)
    return JSONResponse(run, headers=_locations(run, stateless, ""))


async def wait_run(request: Request) -> Response:
    thread_id = request.path_params.get("thread_id")
    run_id = str(uuid.uuid4())
    # Subscribed before the run exists, so its outcome cannot slip past between the two.
    with server_of(request).db.notifier.subscribe(f"run:{run_id}") as changed:
        run, stateless = await _create(
            request, None if thread_id is None else uuid_of(thread_id, "thread_id"), run_id,
            live=False,
        )  # fmt: skip
        result = await _outcome(request, run_id, changed, queued=True)
    return JSONResponse(result, headers=_locations(run, stateless, "/join"))


async def stream_run(request: Request) -> Response:
    thread_id = request.path_params.get("thread_id")
    run, stateless = await _create(
        request, None if thread_id is None else uuid_of(thread_id, "thread_id")
    )
    return StreamingResponse(
        _follow(request, run["run_id"], -1),
        media_type="text/event-stream",
        headers=_locations(run, stateless, "/stream"),
    )


async def _follow(request: Request, run_id: str, after: int) -> AsyncIterator[bytes]:
    server = server_of(request)
    idle = 0.0
    with server.db.notifier.subscribe(f"events:{run_id}", f"run:{run_id}") as changed:
        while True:
            changed.clear()
            events = await q.read_events(server.db, run_id, after)
            for seq, event, data in events:
                after = seq
                yield frame(event, data, seq)
            if events:
                idle = 0.0
                continue
            row = await _run_row(request, run_id)
            if row is None or row[4] in q.TERMINAL:
                # Events are stored before the outcome: one more read catches the last ones.
                if not await q.read_events(server.db, run_id, after):
                    return
                continue
            try:
                await asyncio.wait_for(changed.wait(), RECHECK_SECONDS)
            except asyncio.TimeoutError:
                idle += RECHECK_SECONDS
                if idle >= HEARTBEAT_SECONDS:
                    idle = 0.0
                    yield HEARTBEAT


async def join_stream(request: Request) -> Response:
    run_id = uuid_of(request.path_params["run_id"], "run_id")
    if await _run_row(request, run_id) is None:
        raise ApiError(404, f"run {run_id} not found")
    last = request.headers.get("last-event-id")
    after = int(last) if last and last.lstrip("-").isdigit() else -1
    return StreamingResponse(_follow(request, run_id, after), media_type="text/event-stream")


async def join_run(request: Request) -> Response:
    run_id = uuid_of(request.path_params["run_id"], "run_id")
    if await _run_row(request, run_id) is None:
        raise ApiError(404, f"run {run_id} not found")
    return JSONResponse(await _wait_done(request, run_id))


async def get_run(request: Request) -> Response:
    run_id = uuid_of(request.path_params["run_id"], "run_id")
    row = await _run_row(request, run_id)
    if row is None or row[1] != request.path_params["thread_id"]:
        raise ApiError(404, f"run {run_id} not found")
    return JSONResponse(q.run_json(row))


async def list_runs(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    limit = int(request.query_params.get("limit", 10))
    offset = int(request.query_params.get("offset", 0))
    status = request.query_params.get("status")
    sql = f"SELECT {q.RUN_COLUMNS} FROM tl_runs WHERE thread_id = ?"
    args: list[Any] = [thread_id]
    if status:
        sql += " AND status = ?"
        args.append(status)
    rows = await server_of(request).db.execute(
        sql + " ORDER BY enqueued DESC LIMIT ? OFFSET ?", (*args, limit, offset)
    )
    return JSONResponse([q.run_json(r) for r in rows])


async def delete_run(request: Request) -> Response:
    run_id = uuid_of(request.path_params["run_id"], "run_id")
    row = await _run_row(request, run_id)
    if row is None:
        raise ApiError(404, f"run {run_id} not found")
    if row[4] in ("pending", "running"):
        raise ApiError(409, f"run {run_id} is {row[4]}; cancel it first")
    db = server_of(request).db
    await db.execute("DELETE FROM tl_run_events WHERE run_id = ?", (run_id,))
    await db.execute("DELETE FROM tl_runs WHERE run_id = ?", (run_id,))
    return Response(status_code=204)


async def cancel_run(request: Request) -> Response:
    run_id = uuid_of(request.path_params["run_id"], "run_id")
    action = request.query_params.get("action", "interrupt")
    if action not in ("interrupt", "rollback"):
        raise ApiError(422, "action must be 'interrupt' or 'rollback'")
    server = server_of(request)
    row = await _run_row(request, run_id)
    if row is None:
        raise ApiError(404, f"run {run_id} not found")
    now = now_iso()
    async with server.db.transaction() as tx:
        await tx.execute(
            "UPDATE tl_runs SET cancel = ?, updated_at = ? WHERE run_id = ?", (action, now, run_id)
        )
        pending = await tx.execute(
            "UPDATE tl_runs SET status = 'interrupted' WHERE run_id = ? AND status = 'pending'"
            " RETURNING run_id",
            (run_id,),
        )
        if pending and action == "rollback":
            await tx.execute("DELETE FROM tl_runs WHERE run_id = ?", (run_id,))
        tx.publish(f"cancel:{run_id}:{action}")
        tx.publish(f"run:{run_id}")
    if request.query_params.get("wait") in ("1", "true", "True"):
        await _wait_done(request, run_id)
    return Response(status_code=202 if not pending else 204)


def run_routes() -> list[Route]:
    """The runs routes, on a thread and stateless."""
    t, r = "/threads/{thread_id}/runs", "/threads/{thread_id}/runs/{run_id}"
    return [
        Route(t, create_background, methods=["POST"]),
        Route(t, list_runs),
        Route(t + "/wait", wait_run, methods=["POST"]),
        Route(t + "/stream", stream_run, methods=["POST"]),
        Route(r, get_run),
        Route(r, delete_run, methods=["DELETE"]),
        Route(r + "/join", join_run),
        Route(r + "/stream", join_stream),
        Route(r + "/cancel", cancel_run, methods=["POST"]),
        Route("/runs", create_stateless, methods=["POST"]),
        Route("/runs/wait", wait_run, methods=["POST"]),
        Route("/runs/stream", stream_run, methods=["POST"]),
    ]
