"""The HTTP API: the routes the official ``langgraph_sdk`` client calls.

Handlers never run graphs: they read and write the server's tables and follow run events.
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

from ..checkpoint.jsonable import to_jsonable
from . import runs as q
from .graphs import assistant_id_of
from .sse import HEARTBEAT, frame
from .wire import now_iso, snapshot_json

__all__ = ["ApiError", "routes"]

HEARTBEAT_SECONDS = 5.0


class ApiError(Exception):
    """An error answered as ``{"detail": ...}`` with an HTTP status."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def _server(request: Request) -> Any:
    return request.app.state.server


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if len(raw) > 10 * 1024 * 1024:
        raise ApiError(413, "request body is larger than 10 MiB")
    if not raw:
        return {}
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(422, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "request body must be a JSON object")
    return data


def _uuid(value: str, what: str) -> str:
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise ApiError(422, f"{what} must be a UUID, got {value!r}") from None


# --- meta --------------------------------------------------------------------------------


async def ok(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def info(request: Request) -> Response:
    from importlib.metadata import version

    return JSONResponse(
        {"version": version("threadline"), "flags": {"assistants": True, "crons": False}}
    )


# --- assistants --------------------------------------------------------------------------


def _assistant(name: str) -> dict[str, Any]:
    created = "1970-01-01T00:00:00+00:00"
    return {
        "assistant_id": assistant_id_of(name),
        "graph_id": name,
        "name": name,
        "description": None,
        "config": {},
        "context": {},
        "metadata": {"created_by": "system"},
        "version": 1,
        "created_at": created,
        "updated_at": created,
    }


def _graph_of(request: Request, assistant_id: Any) -> str:
    if not isinstance(assistant_id, str) or not assistant_id:
        raise ApiError(422, "assistant_id is required: a graph name or an assistant id")
    name = _server(request).graphs.resolve(assistant_id)
    if name is None:
        raise ApiError(404, f"assistant {assistant_id!r} not found")
    return str(name)


async def search_assistants(request: Request) -> Response:
    body = await _body(request)
    names = _server(request).graphs.names()
    found = [_assistant(n) for n in names if body.get("graph_id") in (None, n)]
    metadata = body.get("metadata") or {}
    found = [a for a in found if all(a["metadata"].get(k) == v for k, v in metadata.items())]
    offset, limit = int(body.get("offset") or 0), int(body.get("limit") or 10)
    return JSONResponse(found[offset : offset + limit])


async def count_assistants(request: Request) -> Response:
    body = await _body(request)
    names = _server(request).graphs.names()
    return JSONResponse(len([n for n in names if body.get("graph_id") in (None, n)]))


async def get_assistant(request: Request) -> Response:
    return JSONResponse(_assistant(_graph_of(request, request.path_params["assistant_id"])))


async def get_assistant_graph(request: Request) -> Response:
    name = _graph_of(request, request.path_params["assistant_id"])
    graph = _server(request).graphs.get(name).get_graph()
    names = ["__start__", *graph.nodes, "__end__"]
    nodes = [{"id": n, "type": "runnable", "data": n} for n in names]
    edges = [
        {"source": s, "target": t, **({"conditional": True} if c else {})}
        for s, t, c in graph.edges
    ]
    return JSONResponse({"nodes": nodes, "edges": edges})


async def get_assistant_schemas(request: Request) -> Response:
    name = _graph_of(request, request.path_params["assistant_id"])
    return JSONResponse(
        {"graph_id": name, "input_schema": None, "output_schema": None, "state_schema": None,
         "config_schema": None, "context_schema": None}
    )  # fmt: skip


# --- threads -----------------------------------------------------------------------------


async def _thread_row(request: Request, thread_id: str) -> dict[str, Any]:
    db = _server(request).db
    rows = await db.execute(
        f"SELECT {q.THREAD_COLUMNS} FROM tl_threads WHERE thread_id = ?", (thread_id,)
    )
    if not rows:
        raise ApiError(404, f"thread {thread_id} not found")
    return q.thread_json(rows[0])


async def create_thread(request: Request) -> Response:
    body = await _body(request)
    thread_id = _uuid(body.get("thread_id") or str(uuid.uuid4()), "thread_id")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ApiError(422, "metadata must be a JSON object")
    if_exists = body.get("if_exists") or "raise"
    if if_exists not in ("raise", "do_nothing"):
        raise ApiError(422, f"if_exists must be 'raise' or 'do_nothing', got {if_exists!r}")
    thread, created = await q.ensure_thread(_server(request).db, thread_id, metadata)
    if not created and if_exists == "raise":
        raise ApiError(409, f"thread {thread_id} already exists; pass if_exists='do_nothing'")
    return JSONResponse(thread)


async def get_thread(request: Request) -> Response:
    thread_id = _uuid(request.path_params["thread_id"], "thread_id")
    return JSONResponse(await _thread_row(request, thread_id))


async def update_thread(request: Request) -> Response:
    thread_id = _uuid(request.path_params["thread_id"], "thread_id")
    body = await _body(request)
    thread = await _thread_row(request, thread_id)
    metadata = {**thread["metadata"], **(body.get("metadata") or {})}
    await _server(request).db.execute(
        "UPDATE tl_threads SET metadata = ?, updated_at = ? WHERE thread_id = ?",
        (json.dumps(metadata), now_iso(), thread_id),
    )
    return JSONResponse(await _thread_row(request, thread_id))


async def delete_thread(request: Request) -> Response:
    thread_id = _uuid(request.path_params["thread_id"], "thread_id")
    server = _server(request)
    await _thread_row(request, thread_id)
    async with server.db.transaction() as tx:
        await tx.execute(
            "DELETE FROM tl_run_events WHERE run_id IN"
            " (SELECT run_id FROM tl_runs WHERE thread_id = ?)",
            (thread_id,),
        )
        await tx.execute("DELETE FROM tl_runs WHERE thread_id = ?", (thread_id,))
        await tx.execute("DELETE FROM tl_threads WHERE thread_id = ?", (thread_id,))
    await server.checkpointer.adelete_thread(thread_id)
    return Response(status_code=204)


def _thread_filter(body: dict[str, Any]) -> tuple[str, list[Any]]:
    where, args = [], []
    if body.get("status"):
        where.append("status = ?")
        args.append(body["status"])
    if body.get("ids"):
        ids = [str(i) for i in body["ids"]]
        where.append(f"thread_id IN ({', '.join('?' * len(ids))})")
        args += ids
    return (" WHERE " + " AND ".join(where)) if where else "", args


async def search_threads(request: Request) -> Response:
    body = await _body(request)
    where, args = _thread_filter(body)
    rows = await _server(request).db.execute(
        f"SELECT {q.THREAD_COLUMNS} FROM tl_threads{where} ORDER BY created_at DESC", args
    )
    threads = [q.thread_json(r) for r in rows]
    for key in ("metadata", "values"):
        wanted = body.get(key) or {}
        threads = [t for t in threads if all((t[key] or {}).get(k) == v for k, v in wanted.items())]
    offset, limit = int(body.get("offset") or 0), int(body.get("limit") or 10)
    return JSONResponse(threads[offset : offset + limit])


async def count_threads(request: Request) -> Response:
    body = await _body(request)
    where, args = _thread_filter(body)
    rows = await _server(request).db.execute(f"SELECT thread_id FROM tl_threads{where}", args)
    return JSONResponse(len(rows))


async def _thread_graph(request: Request, thread_id: str) -> Any:
    rows = await _server(request).db.execute(
        "SELECT graph_id FROM tl_threads WHERE thread_id = ?", (thread_id,)
    )
    if not rows:
        raise ApiError(404, f"thread {thread_id} not found")
    graph_id = rows[0][0]
    return None if graph_id is None else _server(request).graphs.get(graph_id)


def _empty_state(thread_id: str) -> dict[str, Any]:
    return {"values": {}, "next": [], "checkpoint": None, "metadata": {}, "created_at": None,
            "parent_checkpoint": None, "tasks": [], "interrupts": []}  # fmt: skip


async def get_state(request: Request) -> Response:
    thread_id = _uuid(request.path_params["thread_id"], "thread_id")
    graph = await _thread_graph(request, thread_id)
    if graph is None:
        return JSONResponse(_empty_state(thread_id))
    configurable = {"thread_id": thread_id}
    if request.path_params.get("checkpoint_id"):
        configurable["checkpoint_id"] = request.path_params["checkpoint_id"]
    snapshot = await graph.aget_state({"configurable": configurable})
    return JSONResponse(snapshot_json(snapshot))


async def post_state_at(request: Request) -> Response:
    thread_id = _uuid(request.path_params["thread_id"], "thread_id")
    body = await _body(request)
    graph = await _thread_graph(request, thread_id)
    if graph is None:
        return JSONResponse(_empty_state(thread_id))
    configurable = {"thread_id": thread_id, **(body.get("checkpoint") or {})}
    snapshot = await graph.aget_state({"configurable": configurable})
    return JSONResponse(snapshot_json(snapshot))


async def update_state(request: Request) -> Response:
    thread_id = _uuid(request.path_params["thread_id"], "thread_id")
    body = await _body(request)
    graph = await _thread_graph(request, thread_id)
    if graph is None:
        raise ApiError(409, f"thread {thread_id} has no graph yet: run it once first")
    configurable: dict[str, Any] = {"thread_id": thread_id}
    if body.get("checkpoint_id"):
        configurable["checkpoint_id"] = body["checkpoint_id"]
    configurable.update(body.get("checkpoint") or {})
    saved = await graph.aupdate_state(
        {"configurable": configurable}, body.get("values"), as_node=body.get("as_node")
    )
    snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    await _server(request).db.execute(
        'UPDATE tl_threads SET "values" = ?, updated_at = ? WHERE thread_id = ?',
        (json.dumps(to_jsonable(snapshot.values)), now_iso(), thread_id),
    )
    return JSONResponse({"checkpoint": saved["configurable"]})


async def history(request: Request) -> Response:
    thread_id = _uuid(request.path_params["thread_id"], "thread_id")
    if request.method == "POST":
        body = await _body(request)
    else:
        body = dict(request.query_params)
    graph = await _thread_graph(request, thread_id)
    if graph is None:
        return JSONResponse([])
    configurable = {"thread_id": thread_id, **(body.get("checkpoint") or {})}
    before = body.get("before")
    if isinstance(before, str):
        before = {"configurable": {"thread_id": thread_id, "checkpoint_id": before}}
    elif isinstance(before, dict) and "configurable" not in before:
        before = {"configurable": {"thread_id": thread_id, **before}}
    found = []
    async for snapshot in graph.aget_state_history(
        {"configurable": configurable},
        limit=int(body.get("limit") or 10),
        before=before,
        filter=body.get("metadata") or None,
    ):
        found.append(snapshot_json(snapshot))
    return JSONResponse(found)


# --- runs --------------------------------------------------------------------------------

_RUN_KEYS = (
    "input", "command", "config", "context", "stream_mode", "stream_subgraphs",
    "interrupt_before", "interrupt_after", "checkpoint_id", "durability", "on_completion",
    "stream_resumable", "on_disconnect", "after_seconds", "checkpoint", "webhook",
)  # fmt: skip


async def _create(request: Request, thread_id: str | None) -> tuple[dict[str, Any], bool]:
    body = await _body(request)
    server = _server(request)
    graph_id = _graph_of(request, body.get("assistant_id"))
    strategy = body.get("multitask_strategy") or "enqueue"
    if strategy not in q.MULTITASK_STRATEGIES:
        raise ApiError(422, f"multitask_strategy must be one of {q.MULTITASK_STRATEGIES}")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ApiError(422, "metadata must be a JSON object")
    stateless = thread_id is None
    if stateless:
        thread_id = str(uuid.uuid4())
        await q.ensure_thread(server.db, thread_id, {})
    else:
        assert thread_id is not None
        rows = await server.db.execute("SELECT 1 FROM tl_threads WHERE thread_id = ?", (thread_id,))
        if not rows:
            if body.get("if_not_exists") != "create":
                raise ApiError(404, f"thread {thread_id} not found; pass if_not_exists='create'")
            await q.ensure_thread(server.db, thread_id, {})
    kwargs = {k: body[k] for k in _RUN_KEYS if body.get(k) is not None}
    try:
        run, cancelled = await q.create_run(
            server.db,
            thread_id=thread_id,
            assistant_id=assistant_id_of(graph_id),
            graph_id=graph_id,
            kwargs=kwargs,
            metadata=metadata,
            strategy=strategy,
        )
    except q.RunConflict as exc:
        raise ApiError(409, str(exc)) from None
    for other in cancelled:
        server.worker.cancel_local(other, strategy)
    server.worker.wake.set()
    return run, stateless


def _locations(run: dict[str, Any], stateless: bool, suffix: str) -> dict[str, str]:
    base = f"/threads/{run['thread_id']}/runs/{run['run_id']}"
    return {"Content-Location": base, "Location": base + suffix}


async def _run_row(request: Request, run_id: str) -> tuple[Any, ...] | None:
    rows = await _server(request).db.execute(
        f"SELECT {q.RUN_COLUMNS} FROM tl_runs WHERE run_id = ?", (run_id,)
    )
    return rows[0] if rows else None


async def _wait_done(request: Request, run_id: str) -> Any:
    server = _server(request)
    while True:
        changed = server.worker.changed
        row = await _run_row(request, run_id)
        if row is None:
            return None
        if row[4] in q.TERMINAL:
            return json.loads(row[11]) if row[11] else None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(changed.wait(), 0.05 if server.db.kind == "postgres" else 0.5)


async def create_background(request: Request) -> Response:
    thread_id = _uuid(request.path_params["thread_id"], "thread_id")
    run, stateless = await _create(request, thread_id)
    return JSONResponse(run, headers=_locations(run, stateless, ""))


async def create_stateless(request: Request) -> Response:
    run, stateless = await _create(request, None)
    return JSONResponse(run, headers=_locations(run, stateless, ""))


async def wait_run(request: Request) -> Response:
    thread_id = request.path_params.get("thread_id")
    run, stateless = await _create(
        request, None if thread_id is None else _uuid(thread_id, "thread_id")
    )
    result = await _wait_done(request, run["run_id"])
    return JSONResponse(result, headers=_locations(run, stateless, "/join"))


async def stream_run(request: Request) -> Response:
    thread_id = request.path_params.get("thread_id")
    run, stateless = await _create(
        request, None if thread_id is None else _uuid(thread_id, "thread_id")
    )
    return StreamingResponse(
        _follow(request, run["run_id"], -1),
        media_type="text/event-stream",
        headers=_locations(run, stateless, "/stream"),
    )


async def _follow(request: Request, run_id: str, after: int) -> AsyncIterator[bytes]:
    server = _server(request)
    idle = 0.0
    while True:
        changed = server.worker.changed
        events = await q.read_events(server.db, run_id, after)
        for seq, event, data in events:
            after = seq
            yield frame(event, data, seq)
        if events:
            idle = 0.0
            continue
        row = await _run_row(request, run_id)
        if row is None or row[4] in q.TERMINAL:
            if not await q.read_events(server.db, run_id, after):
                return
            continue
        timeout = 0.05 if server.db.kind == "postgres" else 0.5
        try:
            await asyncio.wait_for(changed.wait(), timeout)
        except asyncio.TimeoutError:
            idle += timeout
            if idle >= HEARTBEAT_SECONDS:
                idle = 0.0
                yield HEARTBEAT


async def join_stream(request: Request) -> Response:
    run_id = _uuid(request.path_params["run_id"], "run_id")
    if await _run_row(request, run_id) is None:
        raise ApiError(404, f"run {run_id} not found")
    last = request.headers.get("last-event-id")
    after = int(last) if last and last.lstrip("-").isdigit() else -1
    return StreamingResponse(_follow(request, run_id, after), media_type="text/event-stream")


async def join_run(request: Request) -> Response:
    run_id = _uuid(request.path_params["run_id"], "run_id")
    if await _run_row(request, run_id) is None:
        raise ApiError(404, f"run {run_id} not found")
    return JSONResponse(await _wait_done(request, run_id))


async def get_run(request: Request) -> Response:
    run_id = _uuid(request.path_params["run_id"], "run_id")
    row = await _run_row(request, run_id)
    if row is None or row[1] != request.path_params["thread_id"]:
        raise ApiError(404, f"run {run_id} not found")
    return JSONResponse(q.run_json(row))


async def list_runs(request: Request) -> Response:
    thread_id = _uuid(request.path_params["thread_id"], "thread_id")
    limit = int(request.query_params.get("limit", 10))
    offset = int(request.query_params.get("offset", 0))
    status = request.query_params.get("status")
    sql = f"SELECT {q.RUN_COLUMNS} FROM tl_runs WHERE thread_id = ?"
    args: list[Any] = [thread_id]
    if status:
        sql += " AND status = ?"
        args.append(status)
    rows = await _server(request).db.execute(
        sql + " ORDER BY enqueued DESC LIMIT ? OFFSET ?", (*args, limit, offset)
    )
    return JSONResponse([q.run_json(r) for r in rows])


async def delete_run(request: Request) -> Response:
    run_id = _uuid(request.path_params["run_id"], "run_id")
    row = await _run_row(request, run_id)
    if row is None:
        raise ApiError(404, f"run {run_id} not found")
    if row[4] in ("pending", "running"):
        raise ApiError(409, f"run {run_id} is {row[4]}; cancel it first")
    db = _server(request).db
    await db.execute("DELETE FROM tl_run_events WHERE run_id = ?", (run_id,))
    await db.execute("DELETE FROM tl_runs WHERE run_id = ?", (run_id,))
    return Response(status_code=204)


async def cancel_run(request: Request) -> Response:
    run_id = _uuid(request.path_params["run_id"], "run_id")
    action = request.query_params.get("action", "interrupt")
    if action not in ("interrupt", "rollback"):
        raise ApiError(422, "action must be 'interrupt' or 'rollback'")
    server = _server(request)
    row = await _run_row(request, run_id)
    if row is None:
        raise ApiError(404, f"run {run_id} not found")
    now = now_iso()
    await server.db.execute(
        "UPDATE tl_runs SET cancel = ?, updated_at = ? WHERE run_id = ?", (action, now, run_id)
    )
    pending = await server.db.execute(
        "UPDATE tl_runs SET status = 'interrupted' WHERE run_id = ? AND status = 'pending'"
        " RETURNING run_id",
        (run_id,),
    )
    if pending and action == "rollback":
        await server.db.execute("DELETE FROM tl_runs WHERE run_id = ?", (run_id,))
    server.worker.cancel_local(run_id, action)
    server.worker.notify()
    if request.query_params.get("wait") in ("1", "true", "True"):
        await _wait_done(request, run_id)
    return Response(status_code=202 if not pending else 204)


def routes() -> list[Route]:
    """Every route of the API (the Store's come from :mod:`threadline.server.routes_store`)."""
    t, r = "/threads/{thread_id}", "/threads/{thread_id}/runs/{run_id}"
    return [
        Route("/ok", ok),
        Route("/info", info),
        Route("/assistants/search", search_assistants, methods=["POST"]),
        Route("/assistants/count", count_assistants, methods=["POST"]),
        Route("/assistants/{assistant_id}", get_assistant),
        Route("/assistants/{assistant_id}/graph", get_assistant_graph),
        Route("/assistants/{assistant_id}/schemas", get_assistant_schemas),
        Route("/threads", create_thread, methods=["POST"]),
        Route("/threads/search", search_threads, methods=["POST"]),
        Route("/threads/count", count_threads, methods=["POST"]),
        Route(t, get_thread),
        Route(t, update_thread, methods=["PATCH"]),
        Route(t, delete_thread, methods=["DELETE"]),
        Route(t + "/state", get_state),
        Route(t + "/state", update_state, methods=["POST"]),
        Route(t + "/state/checkpoint", post_state_at, methods=["POST"]),
        Route(t + "/state/{checkpoint_id}", get_state),
        Route(t + "/history", history, methods=["GET", "POST"]),
        Route(t + "/runs", create_background, methods=["POST"]),
        Route(t + "/runs", list_runs),
        Route(t + "/runs/wait", wait_run, methods=["POST"]),
        Route(t + "/runs/stream", stream_run, methods=["POST"]),
        Route(r, get_run),
        Route(r, delete_run, methods=["DELETE"]),
        Route(r + "/join", join_run),
        Route(r + "/stream", join_stream),
        Route(r + "/cancel", cancel_run, methods=["POST"]),
        Route("/runs", create_stateless, methods=["POST"]),
        Route("/runs/wait", wait_run, methods=["POST"]),
        Route("/runs/stream", stream_run, methods=["POST"]),
    ]
