"""The Store endpoints of ``threadline serve`` through the official ``langgraph_sdk`` client, on
SQLite (one replica) and PostgreSQL (two replicas: what one writes the other reads)."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any

import httpx
import pytest
from langgraph_sdk import get_client
from langgraph_sdk.errors import NotFoundError, UnprocessableEntityError
from servers import clients


def root() -> str:
    """A namespace root of its own for each test: the modules' servers share one database."""
    return f"t{uuid.uuid4().hex[:10]}"


def test_put_on_one_replica_get_update_delete_on_the_other(urls: list[str]) -> None:
    a, b = clients(urls)
    ns = [root(), "users", "42"]
    assert a.store.put_item(ns, "note-1", {"text": "hello", "n": 1}) is None
    got = b.store.get_item(ns, "note-1")
    assert got["namespace"] == ns and got["key"] == "note-1"
    assert got["value"] == {"text": "hello", "n": 1}
    created = dt.datetime.fromisoformat(got["created_at"])
    assert created.tzinfo is not None
    assert abs((dt.datetime.now(dt.timezone.utc) - created).total_seconds()) < 60
    assert set(got) == {"namespace", "key", "value", "created_at", "updated_at"}

    b.store.put_item(ns, "note-1", {"text": "bye"})
    again = a.store.get_item(ns, "note-1")
    assert again["value"] == {"text": "bye"}
    assert again["created_at"] == got["created_at"]
    assert dt.datetime.fromisoformat(again["updated_at"]) >= created

    b.store.delete_item(ns, "note-1")
    with pytest.raises(NotFoundError) as missing:
        a.store.get_item(ns, "note-1")
    assert "note-1" in missing.value.response.json()["detail"]
    b.store.delete_item(ns, "note-1")  # deleting what is gone is not an error
    with pytest.raises(NotFoundError):
        a.store.get_item([root()], "never-put")


def test_search_filters_with_operators_and_pages(urls: list[str]) -> None:
    a, b = clients(urls)
    r = root()
    for i in range(1, 7):
        kind = "even" if i % 2 == 0 else "odd"
        a.store.put_item(
            [r, "docs", f"u{i % 2}"], f"k{i}", {"score": i, "kind": kind, "m": {"d": i}}
        )
        time.sleep(0.002)  # distinct updated_at: unranked searches list the newest first
    a.store.put_item([r + "x", "docs"], "elsewhere", {"score": 100})

    def keys(**kwargs: Any) -> list[str]:
        found = b.store.search_items([r], limit=100, **kwargs)["items"]
        return [item["key"] for item in found]

    assert keys() == ["k6", "k5", "k4", "k3", "k2", "k1"]
    assert sorted(keys(filter={"score": {"$gt": 3}})) == ["k4", "k5", "k6"]
    assert sorted(keys(filter={"score": {"$gte": 2, "$lt": 4}})) == ["k2", "k3"]
    assert sorted(keys(filter={"score": {"$lte": 1}})) == ["k1"]
    assert sorted(keys(filter={"score": {"$ne": 3}, "kind": "odd"})) == ["k1", "k5"]
    assert sorted(keys(filter={"kind": {"$eq": "even"}})) == ["k2", "k4", "k6"]
    assert sorted(keys(filter={"m": {"d": 2}})) == ["k2"]
    assert keys(filter={"score": {"$gt": 99}}) == []

    found = b.store.search_items([r, "docs", "u1"])["items"]
    assert sorted(i["key"] for i in found) == ["k1", "k3", "k5"]
    hit = found[0]
    assert hit["namespace"] == [r, "docs", "u1"] and "score" in hit and hit["score"] is None
    assert set(hit) == {"namespace", "key", "value", "created_at", "updated_at", "score"}

    pages = [b.store.search_items([r], limit=4, offset=o)["items"] for o in (0, 4, 8)]
    assert [len(p) for p in pages] == [4, 2, 0]
    assert [i["key"] for p in pages for i in p] == ["k6", "k5", "k4", "k3", "k2", "k1"]
    # A query without a semantic index is accepted; it ranks nothing but still filters.
    assert b.store.search_items([r], query="anything", filter={"kind": "odd"}, limit=10)["items"]


def test_list_namespaces_prefix_suffix_max_depth_and_paging(urls: list[str]) -> None:
    a, b = clients(urls)
    r = root()
    for ns in (
        [r, "users", "1", "memories"],
        [r, "users", "2", "memories"],
        [r, "users", "2", "prefs"],
        [r, "teams", "a"],
    ):
        a.store.put_item(ns, "k", {"v": 1})

    def names(**kwargs: Any) -> list[list[str]]:
        return list(b.store.list_namespaces(**kwargs)["namespaces"])

    assert names(prefix=[r]) == [
        [r, "teams", "a"],
        [r, "users", "1", "memories"],
        [r, "users", "2", "memories"],
        [r, "users", "2", "prefs"],
    ]
    assert names(prefix=[r, "users"], suffix=["memories"]) == [
        [r, "users", "1", "memories"],
        [r, "users", "2", "memories"],
    ]
    assert names(prefix=[r, "users", "*", "prefs"]) == [[r, "users", "2", "prefs"]]
    assert names(prefix=[r], max_depth=2) == [[r, "teams"], [r, "users"]]
    assert names(prefix=[r], max_depth=3) == [
        [r, "teams", "a"],
        [r, "users", "1"],
        [r, "users", "2"],
    ]
    assert names(prefix=[r], limit=2, offset=1) == [
        [r, "users", "1", "memories"],
        [r, "users", "2", "memories"],
    ]
    assert names(prefix=[r], offset=10) == []


def test_ttl_is_accepted_and_expires_items(urls: list[str]) -> None:
    a, b = clients(urls)
    ns = [root(), "session"]
    a.store.put_item(ns, "long", {"v": 1}, ttl=60)
    assert b.store.get_item(ns, "long", refresh_ttl=True)["value"] == {"v": 1}
    assert b.store.get_item(ns, "long", refresh_ttl=False)["value"] == {"v": 1}
    assert len(b.store.search_items(ns, refresh_ttl=False)["items"]) == 1
    # 0.01 minutes is 0.6 s: read after that, the item is gone even before any sweep.
    a.store.put_item(ns, "short", {"v": 2}, ttl=0.01)  # type: ignore[arg-type]
    time.sleep(1.2)
    with pytest.raises(NotFoundError):
        b.store.get_item(ns, "short")
    assert [i["key"] for i in b.store.search_items(ns)["items"]] == ["long"]


async def test_the_async_client_works_too(urls: list[str]) -> None:
    a, b = get_client(url=urls[0]), get_client(url=urls[-1])
    ns = [root(), "async"]
    await a.store.put_item(ns, "x", {"text": "async", "score": 5}, index=False)
    assert (await b.store.get_item(ns, "x"))["value"] == {"text": "async", "score": 5}
    found = await b.store.search_items(ns[:1], filter={"score": {"$gte": 5}})
    assert [i["key"] for i in found["items"]] == ["x"]
    assert (await a.store.list_namespaces(prefix=ns[:1]))["namespaces"] == [ns]
    await b.store.delete_item(ns, "x")
    with pytest.raises(NotFoundError):
        await a.store.get_item(ns, "x")


BAD_REQUESTS: list[tuple[str, str, dict[str, Any], str]] = [
    ("PUT", "/store/items", {"namespace": ["a.b"], "key": "k", "value": {}}, "'.'"),
    ("PUT", "/store/items", {"namespace": [], "key": "k", "value": {}}, "at least one label"),
    ("PUT", "/store/items", {"namespace": "a", "key": "k", "value": {}}, "list of strings"),
    ("PUT", "/store/items", {"namespace": ["a", 3], "key": "k", "value": {}}, "non-empty strings"),
    ("PUT", "/store/items", {"namespace": ["a", ""], "key": "k", "value": {}}, "non-empty strings"),
    ("PUT", "/store/items", {"namespace": ["a"], "value": {}}, "key"),
    ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": [1]}, "JSON object"),
    ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": "x"}, "JSON object"),
    ("PUT", "/store/items", {"namespace": ["a"], "key": "k"}, "JSON object"),
    ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": {}, "ttl": -1}, "ttl"),
    ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": {}, "ttl": "x"}, "ttl"),
    ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": {}, "ttl": 1e308}, "ttl"),
    ("PUT", "/store/items", {"namespace": ["a"], "key": "k", "value": {}, "index": "t"}, "index"),
    ("PUT", "/store/items", {"namespace": ["langgraph"], "key": "k", "value": {}}, "reserved"),
    ("PUT", "/store/items", {"namespace": ["a" * 300], "key": "k", "value": {}}, "longer"),
    ("DELETE", "/store/items", {"namespace": ["a.b"], "key": "k"}, "'.'"),
    ("DELETE", "/store/items", {"namespace": ["a"]}, "key"),
    ("POST", "/store/items/search", {"namespace_prefix": "a"}, "list of strings"),
    ("POST", "/store/items/search", {"limit": 0}, "limit"),
    ("POST", "/store/items/search", {"limit": 5000}, "limit"),
    ("POST", "/store/items/search", {"limit": "10"}, "limit"),
    ("POST", "/store/items/search", {"offset": -1}, "offset"),
    ("POST", "/store/items/search", {"filter": [1]}, "filter"),
    ("POST", "/store/items/search", {"filter": {"a": {"$regex": "x"}}}, "$regex"),
    ("POST", "/store/items/search", {"query": 3}, "query"),
    ("POST", "/store/items/search", {"refresh_ttl": "yes"}, "refresh_ttl"),
    ("POST", "/store/namespaces", {"max_depth": 0}, "max_depth"),
    ("POST", "/store/namespaces", {"prefix": "a"}, "list of strings"),
    ("POST", "/store/namespaces", {"limit": True}, "limit"),
    ("POST", "/store/namespaces", {"offset": 1.5}, "offset"),
]


@pytest.mark.parametrize(("method", "path", "body", "hint"), BAD_REQUESTS)
def test_bad_input_gets_422_saying_what_to_fix(
    urls: list[str], method: str, path: str, body: dict[str, Any], hint: str
) -> None:
    answer = httpx.request(method, urls[0] + path, json=body)
    assert answer.status_code == 422, answer.text
    assert hint in answer.json()["detail"]


def test_bad_queries_and_bodies_get_4xx_and_the_server_stays_healthy(urls: list[str]) -> None:
    a, b = clients(urls)
    base = urls[0] + "/store/items"
    for params, hint in (
        ({"key": "k"}, "namespace"),
        ({"namespace": "a"}, "key"),
        ({"namespace": "a..b", "key": "k"}, "non-empty"),
        ({"namespace": "a", "key": "k", "refresh_ttl": "maybe"}, "refresh_ttl"),
    ):
        answer = httpx.get(base, params=params)
        assert answer.status_code == 422 and hint in answer.json()["detail"], answer.text
    not_json = httpx.put(base, content=b"{nope")
    assert not_json.status_code == 422 and "JSON" in not_json.json()["detail"]
    nan = httpx.put(
        base,
        content=b'{"namespace": ["a"], "key": "k", "value": {"x": NaN}}',
        headers={"content-type": "application/json"},
    )
    assert nan.status_code == 422 and "NaN" in nan.json()["detail"]
    deep = b'{"namespace": ["a"], "key": "k", "value": ' + b'{"a":' * 5000 + b"1" + b"}" * 5001
    too_deep = httpx.put(base, content=deep)
    assert too_deep.status_code == 422 and "nested" in too_deep.json()["detail"]
    nested = {"a": 1}
    for _ in range(150):
        nested = {"a": nested}
    stored_too_deep = httpx.put(base, json={"namespace": ["a"], "key": "k", "value": nested})
    assert stored_too_deep.status_code == 422 and "nested" in stored_too_deep.json()["detail"]
    assert stored_too_deep.json()["code"] == "serialization_failed"
    reserved = httpx.put(base, json={"namespace": ["langgraph"], "key": "k", "value": {}})
    assert reserved.json()["code"] == "invalid_namespace"
    assert httpx.post(urls[0] + "/store/items/search", content=b"[1]").status_code == 422
    for depth in (101, 960):  # the deepest filter a value could match, and one near the parser's
        deep_filter = b'{"filter": ' + b'{"a":' * depth + b"1" + b"}" * (depth + 1)
        answer = httpx.post(urls[0] + "/store/items/search", content=deep_filter)
        assert answer.status_code == 422 and "flatten" in answer.json()["detail"], answer.text
    fine = b'{"filter": ' + b'{"a":' * 100 + b"1" + b"}" * 101
    assert httpx.post(urls[0] + "/store/items/search", content=fine).json() == {"items": []}
    not_allowed = httpx.patch(base, json={})
    assert not_allowed.status_code == 405 and not_allowed.json()["detail"]
    assert "PUT" in not_allowed.headers["allow"]
    unknown = httpx.get(urls[0] + "/store/nothing-here")
    assert unknown.status_code == 404 and unknown.json()["detail"]
    with pytest.raises(UnprocessableEntityError):
        a.store.search_items(["a"], limit=0)
    with pytest.raises(ValueError):  # the SDK itself refuses '.' before sending
        a.store.put_item(["a.b"], "k", {})

    assert httpx.get(urls[-1] + "/ok").status_code == 200
    ns = [root()]
    a.store.put_item(ns, "after", {"ok": True})
    assert b.store.get_item(ns, "after")["value"] == {"ok": True}
