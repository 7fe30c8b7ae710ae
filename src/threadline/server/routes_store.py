"""The Store over HTTP: ``/store/items`` (put, get, delete, search) and ``/store/namespaces``.

Every replica opens the same store on the server's database, so an item put through one is read
through any other. Input is checked here, before the store sees it, so that every mistake gets a
422 that says how to fix it in the API's JSON terms (lists, objects) rather than Python's.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..checkpoint.jsonable import to_jsonable
from ..errors import ThreadlineError
from ..store.base import NOT_PROVIDED, Item, NotProvided
from .http import ApiError, body_of, server_of

__all__ = ["MAX_FILTER_DEPTH", "MAX_PAGE", "MAX_TTL", "store_routes"]

#: The largest ``limit`` a search or a namespace listing accepts.
MAX_PAGE = 1000
#: The deepest ``filter`` (a value nested deeper cannot be stored, so could not match).
MAX_FILTER_DEPTH = 100
#: The longest ``ttl``, in minutes (100 years): for longer, store the item without a ttl.
MAX_TTL = 100 * 365 * 24 * 60

T = TypeVar("T")


def _labels(value: Any, what: str, *, empty: bool) -> tuple[str, ...]:
    example = f'e.g. {what}: ["users", "42"]'
    if not isinstance(value, list):
        raise ApiError(422, f"{what} must be a list of strings, {example}; got {value!r}")
    if not value and not empty:
        raise ApiError(422, f"{what} needs at least one label, {example}")
    for label in value:
        if not isinstance(label, str) or not label:
            raise ApiError(
                422, f"{what} labels must be non-empty strings, {example}; got {label!r}"
            )
        if "." in label:
            raise ApiError(
                422,
                f"{what} label {label!r} contains '.'; use another character ('.' joins labels)",
            )
    return tuple(value)


def _key(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ApiError(422, f'key must be a non-empty string, e.g. key: "note-1"; got {value!r}')
    return value


def _int(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ApiError(422, f"{name} must be an integer from {low} to {high}, got {value!r}")
    return value


def _bool(value: Any, name: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise ApiError(422, f"{name} must be true, false or null, got {value!r}")


def _finite(value: Any, what: str) -> None:
    """Refuse NaN and infinities: they are not JSON, and stored they could not be answered."""
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        raise ApiError(422, f"{what} contains NaN or Infinity, which JSON does not allow") from None
    except RecursionError:
        raise ApiError(422, f"{what} is nested too deeply; flatten it") from None


def _depth(value: Any) -> int:
    """How deeply ``value``'s objects and lists nest, counted without recursing."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        children = (
            node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        )
        for child in children:
            if isinstance(child, dict | list):
                if level + 1 > MAX_FILTER_DEPTH:
                    return level + 1  # deep enough to refuse: stop counting
                stack.append((child, level + 1))
        deepest = max(deepest, level)
    return deepest


async def _call(awaitable: Awaitable[T]) -> T:
    """Await a store call; the store's own checks (label length, reserved roots...) give 422.

    The library's errors go on to the app's handler, which answers their status and ``code``.
    """
    try:
        return await awaitable
    except ThreadlineError:
        raise
    except (ValueError, TypeError) as exc:
        raise ApiError(422, str(exc)) from None
    except RecursionError:
        raise ApiError(422, "the request is nested too deeply for the store; flatten it") from None


def item_json(item: Item) -> dict[str, Any]:
    """An item (or a search hit, with its ``score``) as the API shows it."""
    data = item.dict()
    data["value"] = to_jsonable(item.value)
    return data


async def put_item(request: Request) -> Response:
    body = await body_of(request)
    namespace = _labels(body.get("namespace"), "namespace", empty=False)
    key = _key(body.get("key"))
    value = body.get("value")
    if not isinstance(value, dict):
        raise ApiError(
            422, f'value must be a JSON object, e.g. value: {{"text": "..."}}; got {value!r}'
        )
    _finite(value, "value")
    index = body.get("index")
    paths = isinstance(index, list) and all(isinstance(p, str) for p in index)
    if index is not None and index is not False and not paths:
        raise ApiError(
            422,
            f'index must be false, null or a list of field paths like ["text"], got {index!r}',
        )
    ttl: float | NotProvided | None = NOT_PROVIDED
    if "ttl" in body and body["ttl"] is not None:
        ttl = body["ttl"]
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL:
            raise ApiError(
                422,
                f"ttl is in minutes and must be a number > 0 and <= {MAX_TTL} (or null for"
                f" no expiry), got {ttl!r}",
            )
    store = server_of(request).store
    await _call(store.aput(namespace, key, value, index, ttl=ttl))
    return Response(status_code=204)


async def get_item(request: Request) -> Response:
    params = request.query_params
    if "namespace" not in params:
        raise ApiError(422, "the namespace query parameter is required, e.g. ?namespace=users.42")
    raw = params["namespace"]
    # The SDK joins labels with '.': "users.42" is ("users", "42"), "" the root namespace.
    namespace = _labels(raw.split(".") if raw else [], "namespace", empty=True)
    key = _key(params.get("key"))
    refresh: bool | None = None
    if "refresh_ttl" in params:
        flag = params["refresh_ttl"].lower()
        if flag not in ("true", "false"):
            raise ApiError(422, f"refresh_ttl must be true or false, got {params['refresh_ttl']!r}")
        refresh = flag == "true"
    item = await _call(server_of(request).store.aget(namespace, key, refresh_ttl=refresh))
    if item is None:
        raise ApiError(404, f"no item {key!r} in namespace {list(namespace)}")
    return JSONResponse(item_json(item))


async def delete_item(request: Request) -> Response:
    body = await body_of(request)
    namespace = _labels(body.get("namespace"), "namespace", empty=False)
    key = _key(body.get("key"))
    await _call(server_of(request).store.adelete(namespace, key))
    return Response(status_code=204)


async def search_items(request: Request) -> Response:
    body = await body_of(request)
    prefix = _labels(body.get("namespace_prefix", []), "namespace_prefix", empty=True)
    filter = body.get("filter")
    if filter is not None and not isinstance(filter, dict):
        raise ApiError(
            422, f'filter must be a JSON object, e.g. {{"score": {{"$gt": 3}}}}; got {filter!r}'
        )
    if filter is not None and _depth(filter) > MAX_FILTER_DEPTH:
        raise ApiError(422, f"filter nests more than {MAX_FILTER_DEPTH} levels; flatten it")
    _finite(filter, "filter")
    query = body.get("query")
    if query is not None and not isinstance(query, str):
        raise ApiError(422, f"query must be a string (or null), got {query!r}")
    limit = _int(body, "limit", 10, 1, MAX_PAGE)
    offset = _int(body, "offset", 0, 0, 2**31 - 1)
    refresh = _bool(body.get("refresh_ttl"), "refresh_ttl")
    found = await _call(
        server_of(request).store.asearch(
            prefix, query=query, filter=filter, limit=limit, offset=offset, refresh_ttl=refresh
        )
    )
    return JSONResponse({"items": [item_json(item) for item in found]})


async def list_namespaces(request: Request) -> Response:
    body = await body_of(request)
    # '*' in a pattern matches any one label, as in BaseStore.list_namespaces.
    prefix = _labels(body["prefix"], "prefix", empty=True) if body.get("prefix") else None
    suffix = _labels(body["suffix"], "suffix", empty=True) if body.get("suffix") else None
    max_depth = body.get("max_depth")
    if max_depth is not None and (
        isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1
    ):
        raise ApiError(422, f"max_depth must be an integer >= 1 (or null), got {max_depth!r}")
    limit = _int(body, "limit", 100, 1, MAX_PAGE)
    offset = _int(body, "offset", 0, 0, 2**31 - 1)
    found = await _call(
        server_of(request).store.alist_namespaces(
            prefix=prefix, suffix=suffix, max_depth=max_depth, limit=limit, offset=offset
        )
    )
    return JSONResponse({"namespaces": [list(ns) for ns in found]})


def store_routes() -> list[Route]:
    """The ``/store`` routes."""
    return [
        Route("/store/items", put_item, methods=["PUT"]),
        Route("/store/items", get_item, methods=["GET"]),
        Route("/store/items", delete_item, methods=["DELETE"]),
        Route("/store/items/search", search_items, methods=["POST"]),
        Route("/store/namespaces", list_namespaces, methods=["POST"]),
    ]
