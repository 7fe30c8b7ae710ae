"""Threads: their rows (create with a TTL, update, copy, prune, search, count, delete), their
state (at a checkpoint, updated as a node) and history."""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..checkpoint.jsonable import to_jsonable
from ..runtime.state import aread_history, aread_state
from . import runs as q
from .http import ApiError, body_of, server_of, uuid_of
from .query import Where, choice, json_object, order_by, page, selected
from .thread_events import record_state_update
from .threads import (
    THREAD_FIELDS,
    THREAD_SORTS,
    THREAD_STATUSES,
    copy_thread,
    delete_threads,
    insert_thread,
    prune_threads,
    set_ttl,
    ttl_json,
    ttl_of,
)
from .wire import now_iso, snapshot_json

__all__ = ["thread_routes"]

MAX_EXTRACT = 10
_PATH_PART = re.compile(r"([^.\[\]]+)|\[(-?\d+)\]")


async def _thread_row(request: Request, thread_id: str) -> dict[str, Any]:
    db = server_of(request).db
    rows = await db.execute(
        f"SELECT {q.THREAD_COLUMNS} FROM tl_threads WHERE thread_id = ?", (thread_id,)
    )
    if not rows:
        raise ApiError(404, f"thread {thread_id} not found")
    return q.thread_json(rows[0])


def _graph_of_metadata(request: Request, metadata: dict[str, Any]) -> str | None:
    """The served graph ``metadata["graph_id"]`` names (a graph name or its assistant id)."""
    value = metadata.get("graph_id")
    if value is None:
        return None
    graphs = server_of(request).graphs
    name = graphs.resolve(value) if isinstance(value, str) else None
    if name is None:
        raise ApiError(
            422, f"graph_id must be one of the served graphs {graphs.names()}, got {value!r}"
        )
    return str(name)


async def create_thread(request: Request) -> Response:
    body = await body_of(request)
    thread_id = uuid_of(body.get("thread_id") or str(uuid.uuid4()), "thread_id")
    metadata = json_object(body.get("metadata"), "metadata")
    if_exists = choice(body.get("if_exists"), ("raise", "do_nothing"), "if_exists", "raise")
    graph_id = _graph_of_metadata(request, metadata)
    server = server_of(request)
    ttl = ttl_of(body.get("ttl")) or server.thread_ttl  # the config's default, if any
    supersteps = body.get("supersteps")
    if supersteps is not None and graph_id is None:
        raise ApiError(422, "supersteps need the thread's graph: pass graph_id too")
    created = await insert_thread(server.db, thread_id, metadata, graph_id=graph_id, ttl=ttl)
    if not created:
        if if_exists == "raise":
            raise ApiError(409, f"thread {thread_id} already exists; pass if_exists='do_nothing'")
        return JSONResponse(await _thread_row(request, thread_id))
    if supersteps is not None:
        assert graph_id is not None
        await _apply_supersteps(request, thread_id, graph_id, supersteps)
    return JSONResponse(await _thread_row(request, thread_id))


async def _apply_supersteps(request: Request, thread_id: str, graph_id: str, steps: Any) -> None:
    """Each superstep's update applied as its node (one update per superstep)."""
    if not isinstance(steps, list):
        raise ApiError(422, 'supersteps must be a list of {"updates": [{"values", "as_node"}]}')
    graph = server_of(request).graphs.get(graph_id)
    config = {"configurable": {"thread_id": thread_id}}
    for step in steps:
        updates = step.get("updates") if isinstance(step, dict) else None
        if not isinstance(updates, list) or len(updates) != 1 or not isinstance(updates[0], dict):
            raise ApiError(422, "each superstep takes exactly one update here: {'updates': [u]}")
        update = updates[0]
        if update.get("command") is not None:
            raise ApiError(422, "supersteps with a command are not supported; send values")
        await graph.aupdate_state(config, update.get("values"), as_node=update.get("as_node"))
    await _state_changed(request, graph, thread_id)


async def _state_changed(request: Request, graph: Any, thread_id: str) -> None:
    """After a client changed the thread's state: its row's values, and a ``state_update``
    event for the thread stream, in one transaction."""
    snapshot = await graph.aget_state({"configurable": {"thread_id": thread_id}})
    async with server_of(request).db.transaction() as tx:
        await tx.execute(
            'UPDATE tl_threads SET "values" = ?, updated_at = ? WHERE thread_id = ?',
            (json.dumps(to_jsonable(snapshot.values)), now_iso(), thread_id),
        )
        await record_state_update(tx, thread_id, snapshot_json(snapshot))


async def get_thread(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    thread = await _thread_row(request, thread_id)
    include = [i for i in request.query_params.get("include", "").split(",") if i]
    for name in include:
        choice(name, ("ttl",), "each include field")
    if "ttl" in include:
        thread["ttl"] = await ttl_json(server_of(request).db, thread_id)
    return JSONResponse(thread)


async def update_thread(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    body = await body_of(request)
    patch = json_object(body.get("metadata"), "metadata")
    graph_id = _graph_of_metadata(request, patch)
    ttl = ttl_of(body.get("ttl"))
    thread = await _thread_row(request, thread_id)
    metadata = {**thread["metadata"], **patch}
    sets, args = "metadata = ?, updated_at = ?", [json.dumps(metadata), now_iso()]
    if graph_id is not None:
        sets += ", graph_id = ?"
        args.append(graph_id)
    async with server_of(request).db.transaction() as tx:
        await tx.execute(f"UPDATE tl_threads SET {sets} WHERE thread_id = ?", (*args, thread_id))
        if ttl is not None:
            await set_ttl(tx, thread_id, ttl)
    if "return=minimal" in request.headers.get("prefer", ""):
        return Response(status_code=204)
    return JSONResponse(await _thread_row(request, thread_id))


async def delete_thread(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    server = server_of(request)
    await _thread_row(request, thread_id)
    await delete_threads(server.db, server.checkpointer, [thread_id])
    return Response(status_code=204)


async def copy(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    server = server_of(request)
    target = str(uuid.uuid4())
    await copy_thread(server.db, server.checkpointer, thread_id, target, ttl=server.thread_ttl)
    return JSONResponse(await _thread_row(request, target))


async def prune(request: Request) -> Response:
    body = await body_of(request)
    ids = body.get("thread_ids")
    if not isinstance(ids, list) or not ids:
        raise ApiError(422, "thread_ids must be a non-empty list of thread ids")
    thread_ids = list(dict.fromkeys(uuid_of(i, "each thread id") for i in ids))
    strategy = choice(body.get("strategy"), ("delete", "keep_latest"), "strategy", "delete")
    server = server_of(request)
    pruned = await prune_threads(server.db, server.checkpointer, thread_ids, strategy)
    return JSONResponse({"pruned_count": pruned})


def _thread_filter(request: Request, body: dict[str, Any]) -> Where:
    where = Where(server_of(request).db.kind)
    if body.get("status") is not None:
        where.add("status = ?", choice(body["status"], THREAD_STATUSES, "status"))
    ids = body.get("ids")
    if ids is not None:
        if not isinstance(ids, list):
            raise ApiError(422, "ids must be a list of thread ids")
        where.any_of("thread_id", [uuid_of(i, "each id") for i in ids] or [""])
    where.contains("metadata", json_object(body.get("metadata"), "metadata"))
    where.contains('"values"', json_object(body.get("values"), "values"))
    return where


def _extracts(body: dict[str, Any]) -> dict[str, list[str | int]]:
    """``extract``'s aliases and their paths (``values.messages[-1]``) as key lists."""
    extract = json_object(body.get("extract"), "extract")
    if len(extract) > MAX_EXTRACT:
        raise ApiError(422, f"extract takes at most {MAX_EXTRACT} paths, got {len(extract)}")
    paths: dict[str, list[str | int]] = {}
    for alias, path in extract.items():
        if not isinstance(path, str) or not path:
            raise ApiError(422, f"extract path of {alias!r} must be a string like 'values.key[0]'")
        matches = list(_PATH_PART.finditer(path))
        parts: list[str | int] = [m.group(1) if m.group(1) else int(m.group(2)) for m in matches]
        rebuilt = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in parts)
        if not parts or rebuilt.lstrip(".") != path:
            raise ApiError(422, f"extract path {path!r} is not like 'values.messages[-1].content'")
        paths[alias] = parts
    return paths


def _extract(thread: dict[str, Any], parts: list[str | int]) -> Any:
    value: Any = thread
    for part in parts:
        try:
            value = value[part]
        except (KeyError, IndexError, TypeError):
            return None
    return value


async def search_threads(request: Request) -> Response:
    body = await body_of(request)
    where = _thread_filter(request, body)
    limit, offset = page(body)
    fields = selected(body, THREAD_FIELDS)
    paths = _extracts(body)
    order = order_by(body, THREAD_SORTS, "created_at", "thread_id")
    rows = await server_of(request).db.execute(
        f"SELECT {q.THREAD_COLUMNS} FROM tl_threads{where.sql()}{order} LIMIT ? OFFSET ?",
        (*where.args, limit, offset),
    )
    found = []
    for row in rows:
        thread = q.thread_json(row)
        shown = thread if fields is None else {k: thread[k] for k in fields}
        if paths:
            shown["extracted"] = {a: _extract(thread, p) for a, p in paths.items()}
        found.append(shown)
    return JSONResponse(found)


async def count_threads(request: Request) -> Response:
    body = await body_of(request)
    where = _thread_filter(request, body)
    rows = await server_of(request).db.execute(
        f"SELECT COUNT(*) FROM tl_threads{where.sql()}", where.args
    )
    return JSONResponse(int(rows[0][0]))


async def _thread_graph(request: Request, thread_id: str) -> Any:
    rows = await server_of(request).db.execute(
        "SELECT graph_id FROM tl_threads WHERE thread_id = ?", (thread_id,)
    )
    if not rows:
        raise ApiError(404, f"thread {thread_id} not found")
    graph_id = rows[0][0]
    graphs = server_of(request).graphs
    # A thread whose graph this server does not serve (any more) is read from storage alone.
    return graphs.get(graph_id) if graph_id in graphs.names() else None


def _empty_state(thread_id: str) -> dict[str, Any]:
    return {"values": {}, "next": [], "checkpoint": None, "metadata": {}, "created_at": None,
            "parent_checkpoint": None, "tasks": [], "interrupts": []}  # fmt: skip


_CHECKPOINT_KEYS = ("thread_id", "checkpoint_ns", "checkpoint_id", "checkpoint_map")


def _checkpoint(thread_id: str, value: Any, what: str = "checkpoint") -> dict[str, Any]:
    """A ``Checkpoint`` object of the request as a config's ``configurable``."""
    given = json_object(value, what)
    unknown = set(given) - set(_CHECKPOINT_KEYS)
    if unknown:
        raise ApiError(
            422, f"{what} takes the keys {list(_CHECKPOINT_KEYS)}, not {sorted(unknown)}"
        )
    if given.get("thread_id") not in (None, thread_id):
        raise ApiError(422, f"{what}.thread_id {given['thread_id']!r} is not thread {thread_id}")
    for key in ("checkpoint_ns", "checkpoint_id"):
        if given.get(key) is not None and not isinstance(given[key], str):
            raise ApiError(422, f"{what}.{key} must be a string")
    keep = {
        k: v for k, v in given.items() if v is not None and k in ("checkpoint_ns", "checkpoint_id")
    }
    return {"thread_id": thread_id, **keep}


class _FromStorage:
    """Reads a thread whose graph this server does not serve: the graph's calls, from storage
    alone (:mod:`threadline.runtime.state`)."""

    def __init__(self, saver: Any) -> None:
        self.saver = saver

    async def aget_state(self, config: Any) -> Any:
        return await aread_state(self.saver, config)

    def aget_state_history(self, config: Any, **options: Any) -> Any:
        return aread_history(self.saver, config, **options)


async def _thread_reader(request: Request, thread_id: str) -> Any:
    """The thread's graph, or a :class:`_FromStorage` reader when it has none served."""
    graph = await _thread_graph(request, thread_id)
    return _FromStorage(server_of(request).checkpointer) if graph is None else graph


async def _state_at(request: Request, thread_id: str, configurable: dict[str, Any]) -> Response:
    reader = await _thread_reader(request, thread_id)
    snapshot = await reader.aget_state({"configurable": configurable})
    never_ran = snapshot.created_at is None and not configurable.get("checkpoint_id")
    if isinstance(reader, _FromStorage) and never_ran:
        return JSONResponse(_empty_state(thread_id))
    if configurable.get("checkpoint_id") and snapshot.config is None:
        raise ApiError(404, f"thread {thread_id} has no checkpoint {configurable['checkpoint_id']}")
    return JSONResponse(snapshot_json(snapshot))


async def get_state(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    configurable: dict[str, Any] = {"thread_id": thread_id}
    if request.path_params.get("checkpoint_id"):
        configurable["checkpoint_id"] = request.path_params["checkpoint_id"]
    return await _state_at(request, thread_id, configurable)


async def post_state_at(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    body = await body_of(request)
    return await _state_at(request, thread_id, _checkpoint(thread_id, body.get("checkpoint")))


async def update_state(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    body = await body_of(request)
    configurable = _checkpoint(thread_id, body.get("checkpoint"))
    if body.get("checkpoint_id") is not None:
        if not isinstance(body["checkpoint_id"], str):
            raise ApiError(422, "checkpoint_id must be a string")
        configurable.setdefault("checkpoint_id", body["checkpoint_id"])
    as_node = body.get("as_node")
    if as_node is not None and not isinstance(as_node, str):
        raise ApiError(422, "as_node must be a node name (a string)")
    graph = await _thread_graph(request, thread_id)
    if graph is None:
        raise ApiError(
            409, f"thread {thread_id} has no graph yet: run it once, or create it with graph_id"
        )
    saved = await graph.aupdate_state(
        {"configurable": configurable}, body.get("values"), as_node=as_node
    )
    await _state_changed(request, graph, thread_id)
    return JSONResponse({"checkpoint": saved["configurable"]})


async def history(request: Request) -> Response:
    thread_id = uuid_of(request.path_params["thread_id"], "thread_id")
    body = await body_of(request) if request.method == "POST" else dict(request.query_params)
    limit, _ = page({"limit": body.get("limit")})
    configurable = _checkpoint(thread_id, body.get("checkpoint"))
    before = body.get("before")
    if isinstance(before, str):
        before = {"configurable": {"thread_id": thread_id, "checkpoint_id": before}}
    elif isinstance(before, dict):
        before = {
            "configurable": _checkpoint(thread_id, before.get("configurable", before), "before")
        }
    elif before is not None:
        raise ApiError(422, "before must be a checkpoint id or a checkpoint object")
    metadata = json_object(body.get("metadata"), "metadata")
    reader = await _thread_reader(request, thread_id)
    config = {"configurable": configurable}
    if "checkpoint_id" in configurable:  # as LangGraph's savers list it: that one checkpoint
        snapshot = await reader.aget_state(config)
        meta = snapshot.metadata or {}
        if snapshot.config is None or any(meta.get(k) != v for k, v in metadata.items()):
            return JSONResponse([])
        return JSONResponse([snapshot_json(snapshot)])
    listing = reader.aget_state_history(config, limit=limit, before=before, filter=metadata or None)
    return JSONResponse([snapshot_json(snapshot) async for snapshot in listing])


def thread_routes() -> list[Route]:
    """The ``/threads`` routes but runs."""
    t = "/threads/{thread_id}"
    return [
        Route("/threads", create_thread, methods=["POST"]),
        Route("/threads/search", search_threads, methods=["POST"]),
        Route("/threads/count", count_threads, methods=["POST"]),
        Route("/threads/prune", prune, methods=["POST"]),
        Route(t, get_thread),
        Route(t, update_thread, methods=["PATCH"]),
        Route(t, delete_thread, methods=["DELETE"]),
        Route(t + "/copy", copy, methods=["POST"]),
        Route(t + "/state", get_state),
        Route(t + "/state", update_state, methods=["POST"]),
        Route(t + "/state/checkpoint", post_state_at, methods=["POST"]),
        Route(t + "/state/{checkpoint_id}", get_state),
        Route(t + "/history", history, methods=["GET", "POST"]),
    ]
