"""Threads: their rows, state (at a checkpoint, updated as a node) and history."""

from __future__ import annotations

import json
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..checkpoint.jsonable import to_jsonable
from . import runs as q
from .http import ApiError, body_of, server_of, uuid_of
from .wire import now_iso, snapshot_json

__all__ = ["thread_routes"]


async def _thread_row(request: Request, thread_id: str) -> dict[str, Any]:
    db = server_of(request).db
    rows = await db.execute(
        f"SELECT {q.THREAD_COLUMNS} FROM tl_threads WHERE thread_id = ?", (thread_id,)
    )
    if not rows:
        raise ApiError(404, f"thread {thread_id} not found")
    return q.thread_json(rows[0])


async def create_thread(request: Request) -> Response:
    body = await body_of(request)
    thread_id = uuid_of(body.get("thread_id") or str(uuid.uuid4()), "thread_id")
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ApiError(422, "metadata must be a JSON object")
    if_exists = body.get("if_exists") or "raise"
    if if_exists not in ("raise", "do_nothing"):
        raise ApiError(422, f"if_exists must be 'raise' or 'do_nothing', got {if_exists!r}")
    thread, created = await q.ensure_thread(server_of(request).db, thread_id, metadata)
    if not created and if_exists == "raise":
        raise ApiError(409, f"thread {thread_id} already exists; pass if_exists='do_nothing'")
    return JSONResponse(thread)


async def get_thread(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    return JSONResponse(await _thread_row(request, thread_id))


async def update_thread(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    body = await body_of(request)
    thread = await _thread_row(request, thread_id)
    metadata = {**thread["metadata"], **(body.get("metadata") or {})}
    await server_of(request).db.execute(
        "UPDATE tl_threads SET metadata = ?, updated_at = ? WHERE thread_id = ?",
        (json.dumps(metadata), now_iso(), thread_id),
    )
    return JSONResponse(await _thread_row(request, thread_id))


async def delete_thread(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    server = server_of(request)
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
    body = await body_of(request)
    where, args = _thread_filter(body)
    rows = await server_of(request).db.execute(
        f"SELECT {q.THREAD_COLUMNS} FROM tl_threads{where} ORDER BY created_at DESC", args
    )
    threads = [q.thread_json(r) for r in rows]
    for key in ("metadata", "values"):
        wanted = body.get(key) or {}
        threads = [t for t in threads if all((t[key] or {}).get(k) == v for k, v in wanted.items())]
    offset, limit = int(body.get("offset") or 0), int(body.get("limit") or 10)
    return JSONResponse(threads[offset : offset + limit])


async def count_threads(request: Request) -> Response:
    body = await body_of(request)
    where, args = _thread_filter(body)
    rows = await server_of(request).db.execute(f"SELECT thread_id FROM tl_threads{where}", args)
    return JSONResponse(len(rows))


async def _thread_graph(request: Request, thread_id: str) -> Any:
    rows = await server_of(request).db.execute(
        "SELECT graph_id FROM tl_threads WHERE thread_id = ?", (thread_id,)
    )
    if not rows:
        raise ApiError(404, f"thread {thread_id} not found")
    graph_id = rows[0][0]
    return None if graph_id is None else server_of(request).graphs.get(graph_id)


def _empty_state(thread_id: str) -> dict[str, Any]:
    return {"values": {}, "next": [], "checkpoint": None, "metadata": {}, "created_at": None,
            "parent_checkpoint": None, "tasks": [], "interrupts": []}  # fmt: skip


async def get_state(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    graph = await _thread_graph(request, thread_id)
    if graph is None:
        return JSONResponse(_empty_state(thread_id))
    configurable = {"thread_id": thread_id}
    if request.path_params.get("checkpoint_id"):
        configurable["checkpoint_id"] = request.path_params["checkpoint_id"]
    snapshot = await graph.aget_state({"configurable": configurable})
    return JSONResponse(snapshot_json(snapshot))


async def post_state_at(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    body = await body_of(request)
    graph = await _thread_graph(request, thread_id)
    if graph is None:
        return JSONResponse(_empty_state(thread_id))
    configurable = {"thread_id": thread_id, **(body.get("checkpoint") or {})}
    snapshot = await graph.aget_state({"configurable": configurable})
    return JSONResponse(snapshot_json(snapshot))


async def update_state(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    body = await body_of(request)
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
    await server_of(request).db.execute(
        'UPDATE tl_threads SET "values" = ?, updated_at = ? WHERE thread_id = ?',
        (json.dumps(to_jsonable(snapshot.values)), now_iso(), thread_id),
    )
    return JSONResponse({"checkpoint": saved["configurable"]})


async def history(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    if request.method == "POST":
        body = await body_of(request)
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


def thread_routes() -> list[Route]:
    """The ``/threads`` routes but runs."""
    t = "/threads/{thread_id}"
    return [
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
    ]
