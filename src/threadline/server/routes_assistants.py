"""Assistants: each graph of the config is one, its id the graph name's uuid5."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .graphs import assistant_id_of
from .http import ApiError, body_of, server_of

__all__ = ["assistant_routes", "graph_of"]


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


def graph_of(request: Request, assistant_id: Any) -> str:
    if not isinstance(assistant_id, str) or not assistant_id:
        raise ApiError(422, "assistant_id is required: a graph name or an assistant id")
    name = server_of(request).graphs.resolve(assistant_id)
    if name is None:
        raise ApiError(404, f"assistant {assistant_id!r} not found")
    return str(name)


async def search_assistants(request: Request) -> Response:
    body = await body_of(request)
    names = server_of(request).graphs.names()
    found = [_assistant(n) for n in names if body.get("graph_id") in (None, n)]
    metadata = body.get("metadata") or {}
    found = [a for a in found if all(a["metadata"].get(k) == v for k, v in metadata.items())]
    offset, limit = int(body.get("offset") or 0), int(body.get("limit") or 10)
    return JSONResponse(found[offset : offset + limit])


async def count_assistants(request: Request) -> Response:
    body = await body_of(request)
    names = server_of(request).graphs.names()
    return JSONResponse(len([n for n in names if body.get("graph_id") in (None, n)]))


async def get_assistant(request: Request) -> Response:
    return JSONResponse(_assistant(graph_of(request, request.path_params["assistant_id"])))


async def get_assistant_graph(request: Request) -> Response:
    name = graph_of(request, request.path_params["assistant_id"])
    graph = server_of(request).graphs.get(name).get_graph()
    names = ["__start__", *graph.nodes, "__end__"]
    nodes = [{"id": n, "type": "runnable", "data": n} for n in names]
    edges = [
        {"source": s, "target": t, **({"conditional": True} if c else {})}
        for s, t, c in graph.edges
    ]
    return JSONResponse({"nodes": nodes, "edges": edges})


async def get_assistant_schemas(request: Request) -> Response:
    name = graph_of(request, request.path_params["assistant_id"])
    return JSONResponse(
        {"graph_id": name, "input_schema": None, "output_schema": None, "state_schema": None,
         "config_schema": None, "context_schema": None}
    )  # fmt: skip


def assistant_routes() -> list[Route]:
    """The ``/assistants`` routes."""
    a = "/assistants/{assistant_id}"
    return [
        Route("/assistants/search", search_assistants, methods=["POST"]),
        Route("/assistants/count", count_assistants, methods=["POST"]),
        Route(a, get_assistant),
        Route(a + "/graph", get_assistant_graph),
        Route(a + "/schemas", get_assistant_schemas),
    ]
