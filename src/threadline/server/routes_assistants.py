"""Assistants: create, update (a new version), delete, get, search, count, versions, the
latest version, and what the graph looks like (drawing, schemas, subgraphs).

Only assistants of graphs this server serves are visible. The system assistants (one per
graph of the config) are read-only.
"""

from __future__ import annotations

import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .assistants import (
    ASSISTANT_FIELDS,
    COLUMNS,
    VERSION_COLUMNS,
    Assistant,
    assistant_for_run,
    insert_assistant,
    insert_version,
    load_assistant,
    lock_assistant,
    make_current,
    new_assistant,
    next_version,
    version_of,
)
from .http import ApiError, body_of, server_of, uuid_of
from .query import Where, choice, json_object, order_by, page, selected
from .schemas import graph_json, graph_schemas, subgraphs_of
from .threads import delete_threads

__all__ = ["assistant_routes", "graph_of", "run_assistant"]

ASSISTANT_SORTS = ("assistant_id", "graph_id", "name", "created_at", "updated_at")


def graph_of(request: Request, assistant_id: Any) -> str:
    """The graph name of a graph name or a system assistant id (404 if none)."""
    if not isinstance(assistant_id, str) or not assistant_id:
        raise ApiError(422, "assistant_id is required: a graph name or an assistant id")
    name = server_of(request).graphs.resolve(assistant_id)
    if name is None:
        raise ApiError(404, f"assistant {assistant_id!r} not found")
    return str(name)


async def run_assistant(request: Request, assistant_id: Any) -> Assistant:
    """The assistant a run names (an assistant id or a graph name): 422 if none is named, 404
    if there is no such assistant. Merge its config with :meth:`Assistant.run_kwargs`."""
    if not isinstance(assistant_id, str) or not assistant_id:
        raise ApiError(422, "assistant_id is required: a graph name or an assistant id")
    found = await assistant_for_run(server_of(request).db, assistant_id, _served(request))
    if found is None:
        raise ApiError(404, f"assistant {assistant_id!r} not found; assistants.search() lists them")
    return found


def _served(request: Request) -> list[str]:
    return list(server_of(request).graphs.names())


def _graph_id(request: Request, value: Any) -> str:
    served = _served(request)
    if not isinstance(value, str) or value not in served:
        raise ApiError(422, f"graph_id must be one of the served graphs {served}, got {value!r}")
    return value


async def _assistant(request: Request) -> Assistant:
    value = request.path_params["assistant_id"]
    found = await load_assistant(server_of(request).db, value, _served(request))
    if found is None:
        raise ApiError(404, f"assistant {value!r} not found; assistants.search() lists them")
    return found


def _writable(assistant: Assistant, doing: str) -> None:
    if assistant.system:
        raise ApiError(
            409,
            f"assistant {assistant.assistant_id} is the system assistant of graph"
            f" {assistant.graph_id!r} (made from the config) and cannot be {doing}; create one"
            " of your own with"
            f" assistants.create(graph_id={assistant.graph_id!r}, ...)",
        )


def _text(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ApiError(422, f"{key} must be a string, got {type(value).__name__}")
    return value


def _fields(request: Request, body: dict[str, Any], base: Assistant | None) -> dict[str, Any]:
    """The assistant fields a create or update body sets (an update keeps the rest)."""
    fields: dict[str, Any] = {}
    if base is None or body.get("graph_id") is not None:
        fields["graph_id"] = _graph_id(request, body.get("graph_id"))
    for key in ("config", "context"):
        if base is None or body.get(key) is not None:
            fields[key] = json_object(body.get(key), key)
    metadata = json_object(body.get("metadata"), "metadata")
    fields["metadata"] = metadata if base is None else {**base.metadata, **metadata}
    for key in ("name", "description"):
        value = _text(body, key)
        if value is not None:
            fields[key] = value
    configurable = fields.get("config", {}).get("configurable")
    if configurable is not None and not isinstance(configurable, dict):
        raise ApiError(422, "config.configurable must be a JSON object")
    return fields


async def create_assistant(request: Request) -> Response:
    body = await body_of(request)
    fields = _fields(request, body, None)
    if_exists = choice(body.get("if_exists"), ("raise", "do_nothing"), "if_exists", "raise")
    assistant_id = uuid_of(body.get("assistant_id") or str(uuid.uuid4()), "assistant_id")
    assistant = new_assistant(
        assistant_id=assistant_id,
        graph_id=fields["graph_id"],
        name=fields.get("name") or "Untitled",
        description=fields.get("description"),
        config=fields["config"],
        context=fields["context"],
        metadata=fields["metadata"],
    )
    db = server_of(request).db
    async with db.transaction() as tx:
        created = await insert_assistant(tx, assistant)
    if not created:
        existing = await load_assistant(db, assistant_id)
        if if_exists == "raise" or existing is None:
            raise ApiError(
                409, f"assistant {assistant_id} already exists; pass if_exists='do_nothing'"
            )
        return JSONResponse(existing.json())
    return JSONResponse(assistant.json())


async def update_assistant(request: Request) -> Response:
    body = await body_of(request)
    current = await _assistant(request)
    _writable(current, "updated")
    fields = _fields(request, body, current)
    async with server_of(request).db.transaction() as tx:
        locked = await lock_assistant(tx, current.assistant_id)
        if locked is None:
            raise ApiError(404, f"assistant {current.assistant_id} was deleted meanwhile")
        values = {**locked.json(), **fields}
        values["version"] = await next_version(tx, locked.assistant_id)
        updated = new_assistant(**{k: values[k] for k in ASSISTANT_FIELDS[:-1]})
        await insert_version(tx, updated)
        await make_current(tx, updated)
    return JSONResponse(updated.json())


async def delete_assistant(request: Request) -> Response:
    assistant = await _assistant(request)
    _writable(assistant, "deleted")
    server = server_of(request)
    flag = request.query_params.get("delete_threads", "false").lower()
    if flag not in ("true", "false", "1", "0"):
        raise ApiError(422, f"delete_threads must be true or false, got {flag!r}")
    aid = assistant.assistant_id
    async with server.db.transaction() as tx:
        await tx.execute("DELETE FROM tl_assistant_versions WHERE assistant_id = ?", (aid,))
        await tx.execute("DELETE FROM tl_assistants WHERE assistant_id = ?", (aid,))
    if flag in ("true", "1"):
        where = Where(server.db.kind)
        where.contains("metadata", {"assistant_id": aid})
        rows = await server.db.execute(
            f"SELECT thread_id FROM tl_threads{where.sql()} UNION"
            " SELECT thread_id FROM tl_runs WHERE assistant_id = ?",
            (*where.args, aid),
        )
        await delete_threads(server.db, server.checkpointer, [str(r[0]) for r in rows])
    return Response(status_code=204)


async def get_assistant(request: Request) -> Response:
    return JSONResponse((await _assistant(request)).json())


def _search_where(request: Request, body: dict[str, Any]) -> Where:
    served = _served(request)
    where = Where(server_of(request).db.kind)
    graph_id = body.get("graph_id")
    if graph_id is not None:
        where.add("graph_id = ?", _graph_id(request, graph_id))
    else:
        where.any_of("graph_id", served)
    name = _text(body, "name")
    if name:  # a case-insensitive substring, as LangGraph's server matches names
        escaped = name.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.add("LOWER(name) LIKE ? ESCAPE '\\'", f"%{escaped}%")
    where.contains("metadata", json_object(body.get("metadata"), "metadata"))
    return where


async def search_assistants(request: Request) -> Response:
    body = await body_of(request)
    where = _search_where(request, body)
    limit, offset = page(body)
    fields = selected(body, ASSISTANT_FIELDS)
    order = order_by(body, ASSISTANT_SORTS, "created_at", "assistant_id")
    rows = await server_of(request).db.execute(
        f"SELECT {COLUMNS} FROM tl_assistants{where.sql()}{order} LIMIT ? OFFSET ?",
        (*where.args, limit + 1, offset),
    )
    found = [Assistant.of_row(r).json(fields) for r in rows[:limit]]
    headers = {"X-Pagination-Next": str(offset + limit)} if len(rows) > limit else {}
    return JSONResponse(found, headers=headers)


async def count_assistants(request: Request) -> Response:
    body = await body_of(request)
    where = _search_where(request, body)
    rows = await server_of(request).db.execute(
        f"SELECT COUNT(*) FROM tl_assistants{where.sql()}", where.args
    )
    return JSONResponse(int(rows[0][0]))


async def get_versions(request: Request) -> Response:
    body = await body_of(request)
    assistant = await _assistant(request)
    limit, offset = page(body)
    where = Where(server_of(request).db.kind)
    where.add("assistant_id = ?", assistant.assistant_id)
    where.contains("metadata", json_object(body.get("metadata"), "metadata"))
    rows = await server_of(request).db.execute(
        f"SELECT {VERSION_COLUMNS} FROM tl_assistant_versions{where.sql()}"
        " ORDER BY version DESC LIMIT ? OFFSET ?",
        (*where.args, limit, offset),
    )
    versions = [Assistant.of_row(r).json() for r in rows]
    for v in versions:
        del v["updated_at"]  # a version is made once: it has a creation time only
    return JSONResponse(versions)


async def set_latest(request: Request) -> Response:
    body = await body_of(request)
    current = await _assistant(request)
    _writable(current, "changed")
    version = body.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ApiError(422, f"version must be a version number (1 or more), got {version!r}")
    async with server_of(request).db.transaction() as tx:
        if await lock_assistant(tx, current.assistant_id) is None:
            raise ApiError(404, f"assistant {current.assistant_id} was deleted meanwhile")
        chosen = await version_of(tx, current.assistant_id, version)
        if chosen is None:
            raise ApiError(
                404,
                f"assistant {current.assistant_id} has no version {version};"
                " assistants.get_versions() lists them",
            )
        latest = new_assistant(
            **{k: getattr(chosen, k) for k in ASSISTANT_FIELDS[:-2]},
            created_at=current.created_at,
        )
        await make_current(tx, latest)
    return JSONResponse(latest.json())


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise ApiError(422, f"{name} must be true or false, got {raw!r}")
    return raw in ("true", "1")


def _xray(request: Request) -> int:
    raw = request.query_params.get("xray", "false").lower()
    if raw in ("true", "false"):
        return 1_000 if raw == "true" else 0
    if not raw.isdigit():
        raise ApiError(422, f"xray must be true, false or a depth (0 or more), got {raw!r}")
    return int(raw)


def _compiled(request: Request, assistant: Assistant) -> Any:
    return server_of(request).graphs.get(assistant.graph_id, assistant.config)


async def get_assistant_graph(request: Request) -> Response:
    assistant = await _assistant(request)
    return JSONResponse(graph_json(_compiled(request, assistant), _xray(request)))


async def get_assistant_schemas(request: Request) -> Response:
    assistant = await _assistant(request)
    return JSONResponse(graph_schemas(assistant.graph_id, _compiled(request, assistant)))


async def get_assistant_subgraphs(request: Request) -> Response:
    assistant = await _assistant(request)
    recurse = _flag(request, "recurse")
    namespace = request.path_params.get("namespace")
    graph = _compiled(request, assistant)
    return JSONResponse(subgraphs_of(assistant.graph_id, graph, namespace, recurse))


def assistant_routes() -> list[Route]:
    """The ``/assistants`` routes."""
    a = "/assistants/{assistant_id}"
    return [
        Route("/assistants", create_assistant, methods=["POST"]),
        Route("/assistants/search", search_assistants, methods=["POST"]),
        Route("/assistants/count", count_assistants, methods=["POST"]),
        Route(a, get_assistant),
        Route(a, update_assistant, methods=["PATCH"]),
        Route(a, delete_assistant, methods=["DELETE"]),
        Route(a + "/versions", get_versions, methods=["POST"]),
        Route(a + "/latest", set_latest, methods=["POST"]),
        Route(a + "/graph", get_assistant_graph),
        Route(a + "/schemas", get_assistant_schemas),
        Route(a + "/subgraphs", get_assistant_subgraphs),
        Route(a + "/subgraphs/{namespace}", get_assistant_subgraphs),
    ]
