"""The Store contract: every backend (memory, SQLite, PostgreSQL; sync and async) behaves alike."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from store_backends import STORE_BACKENDS, StoreBackend, StoreDriver, letter_embed

from threadline.checkpoint.serde import register_type
from threadline.errors import InvalidNamespaceError, SerializationError
from threadline.store.base import (
    GetOp,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchItem,
    SearchOp,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=[b.param() for b in STORE_BACKENDS])
def backend(request: pytest.FixtureRequest) -> StoreBackend:
    return request.param  # type: ignore[no-any-return]


@pytest.fixture
async def make(backend: StoreBackend) -> AsyncIterator[Callable[..., Any]]:
    """``await make(**options)``: a fresh store of the backend under test, as a driver."""
    import contextlib

    async with contextlib.AsyncExitStack() as stack:

        async def open_store(**options: Any) -> StoreDriver:
            store = await stack.enter_async_context(backend.factory(**options))
            return StoreDriver(store, backend.is_async)

        yield open_store


@pytest.fixture
async def store(make: Callable[..., Any]) -> StoreDriver:
    return await make()  # type: ignore[no-any-return]


INDEX = {"embed": letter_embed, "dims": 26, "fields": ["text"]}


# ---------------------------------------------------------------------- put / get / delete


async def test_put_then_get_round_trips_exact_types(store: StoreDriver) -> None:
    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    value = {"text": "likes tea", "when": when, "pair": (1, 2), "n": 3}
    await store.put(("users", "42"), "prefs", value)
    item = await store.get(("users", "42"), "prefs")
    assert isinstance(item, Item)
    assert item.value == value and isinstance(item.value["pair"], tuple)
    assert item.namespace == ("users", "42") and item.key == "prefs"
    assert item.created_at.tzinfo is not None and item.created_at == item.updated_at
    assert await store.get(("users", "42"), "other") is None
    assert await store.get(("users",), "prefs") is None


async def test_a_returned_value_is_a_copy(store: StoreDriver) -> None:
    await store.put(("ns",), "k", {"tags": ["a"]})
    item = await store.get(("ns",), "k")
    item.value["tags"].append("b")
    assert (await store.get(("ns",), "k")).value == {"tags": ["a"]}


async def test_put_replaces_and_keeps_created_at(store: StoreDriver) -> None:
    await store.put(("ns",), "k", {"v": 1})
    first = await store.get(("ns",), "k")
    await asyncio.sleep(0.01)
    await store.put(("ns",), "k", {"v": 2})
    second = await store.get(("ns",), "k")
    assert second.value == {"v": 2}
    assert second.created_at == first.created_at
    assert second.updated_at > first.updated_at


async def test_delete(store: StoreDriver) -> None:
    await store.put(("ns",), "k", {"v": 1})
    await store.delete(("ns",), "k")
    assert await store.get(("ns",), "k") is None
    await store.delete(("ns",), "never-there")  # no error
    assert await store.search(("ns",)) == []


@pytest.mark.parametrize(
    "namespace",
    [(), ("a.b",), ("",), ("a", 1), ("langgraph", "x"), "users", ("nul\x00",), ("\ud800",)],
)
async def test_bad_namespaces_are_refused(store: StoreDriver, namespace: Any) -> None:
    with pytest.raises(InvalidNamespaceError):
        await store.put(namespace, "k", {"v": 1})
    assert await store.list_namespaces() == []


@pytest.mark.parametrize("key", ["", 5, "a\x00b", "x" * 1000])
async def test_bad_keys_are_refused(store: StoreDriver, key: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        await store.put(("ns",), key, {"v": 1})


async def test_values_must_be_dicts_of_storable_types(store: StoreDriver) -> None:
    with pytest.raises(TypeError, match="must be a dict"):
        await store.put(("ns",), "k", ["not", "a", "dict"])

    class Local:  # defined in a function: not storable unless registered
        pass

    with pytest.raises(SerializationError, match="Local"):
        await store.put(("ns",), "k", {"obj": Local()})
    assert await store.get(("ns",), "k") is None


@dataclasses.dataclass
class Note:
    text: str


@dataclasses.dataclass
class Unregistered:
    text: str


register_type(Note)


async def test_registered_dataclasses_are_stored(store: StoreDriver) -> None:
    await store.put(("ns",), "k", {"note": Note("hi")})
    assert (await store.get(("ns",), "k")).value == {"note": Note("hi")}
    with pytest.raises(SerializationError, match="register_type"):
        await store.put(("ns",), "j", {"note": Unregistered("hi")})
    assert await store.get(("ns",), "j") is None


# ---------------------------------------------------------------------- search


async def _fill(store: StoreDriver) -> None:
    await store.put(("docs", "a"), "1", {"kind": "note", "n": 1, "title": "apple"})
    await asyncio.sleep(0.002)
    await store.put(("docs", "a", "deep"), "2", {"kind": "todo", "n": 5, "title": "banana"})
    await asyncio.sleep(0.002)
    await store.put(("docs", "b"), "3", {"kind": "note", "n": 10, "title": "cherry"})
    await asyncio.sleep(0.002)
    await store.put(("docs", "ab"), "4", {"kind": "note", "n": 2.5, "nested": {"x": "y"}})
    await asyncio.sleep(0.002)
    await store.put(("other",), "5", {"kind": "note", "flag": True, "none": None})


async def test_search_by_prefix_newest_first(store: StoreDriver) -> None:
    await _fill(store)
    found = await store.search(("docs", "a"))
    assert [i.key for i in found] == ["2", "1"]  # ("docs", "ab") is not under ("docs", "a")
    assert all(isinstance(i, SearchItem) and i.score is None for i in found)
    assert [i.key for i in await store.search(("docs",))] == ["4", "3", "2", "1"]
    assert [i.key for i in await store.search(())] == ["5", "4", "3", "2", "1"]
    assert [i.key for i in await store.search(("docs",), limit=2, offset=1)] == ["3", "2"]
    assert await store.search(("nothing",)) == []


@pytest.mark.parametrize(
    ("filter", "keys"),
    [
        ({"kind": "note"}, ["5", "4", "3", "1"]),
        ({"kind": "note", "n": 10}, ["3"]),
        ({"n": {"$gt": 2}}, ["4", "3", "2"]),
        ({"n": {"$gte": 2.5, "$lt": 10}}, ["4", "2"]),
        ({"n": {"$lte": 1}}, ["1"]),
        ({"kind": {"$ne": "note"}}, ["2"]),
        ({"title": {"$gt": "b"}}, ["3", "2"]),  # strings compare with strings
        ({"title": {"$gt": 1}}, []),  # never across types
        ({"n": {"$eq": 5}}, ["2"]),
        ({"nested": {"x": "y"}}, ["4"]),
        ({"flag": True}, ["5"]),
        ({"flag": 1}, []),  # True is not 1
        ({"n": True}, []),
        ({"none": None}, ["5"]),
        ({"missing": None}, []),
        ({"missing": {"$ne": 3}}, ["5", "4", "3", "2", "1"]),
        ({"n": "5"}, []),  # a string is not a number
    ],
)
async def test_filters(store: StoreDriver, filter: dict[str, Any], keys: list[str]) -> None:
    await _fill(store)
    assert [i.key for i in await store.search((), filter=filter)] == keys


async def test_filter_with_paging(store: StoreDriver) -> None:
    await _fill(store)
    found = await store.search((), filter={"kind": "note"}, limit=2, offset=1)
    assert [i.key for i in found] == ["4", "3"]


async def test_unsupported_filter_operator(store: StoreDriver) -> None:
    with pytest.raises(ValueError, match=r"\$regex"):
        await store.search((), filter={"a": {"$regex": "x"}})


@pytest.mark.parametrize(
    "key",
    [
        "a'); DROP TABLE threadline_store; --",
        '$."x"',
        "a.b",
        "x' OR '1'='1",
        'q"uote',
        "back\\slash",
        "%",
        "?",
    ],
)
async def test_filter_keys_and_values_cannot_inject(store: StoreDriver, key: str) -> None:
    await store.put(("ns",), "k", {key: "v'; DROP TABLE threadline_store; --", "n": 1})
    await store.put(("ns",), "other", {"n": 2})
    hostile = "v'; DROP TABLE threadline_store; --"
    assert [i.key for i in await store.search(("ns",), filter={key: hostile})] == ["k"]
    assert await store.search(("ns",), filter={key: "x' OR '1'='1"}) == []
    assert [i.key for i in await store.search(("ns",), filter={key: {"$ne": hostile}})] == ["other"]
    assert len(await store.search(("ns",))) == 2  # the table is intact


# ---------------------------------------------------------------------- namespaces


async def test_list_namespaces(store: StoreDriver) -> None:
    await _fill(store)
    assert await store.list_namespaces() == [
        ("docs", "a"),
        ("docs", "a", "deep"),
        ("docs", "ab"),
        ("docs", "b"),
        ("other",),
    ]
    assert await store.list_namespaces(prefix=("docs", "a")) == [
        ("docs", "a"),
        ("docs", "a", "deep"),
    ]
    assert await store.list_namespaces(suffix=("b",)) == [("docs", "b")]
    assert await store.list_namespaces(prefix=("docs", "*"), max_depth=2) == [
        ("docs", "a"),
        ("docs", "ab"),
        ("docs", "b"),
    ]
    assert await store.list_namespaces(max_depth=1) == [("docs",), ("other",)]
    assert await store.list_namespaces(limit=2, offset=1) == [("docs", "a", "deep"), ("docs", "ab")]
    assert await store.list_namespaces(prefix=("*", "a", "deep")) == [("docs", "a", "deep")]


async def test_batch_runs_in_order_and_the_last_put_wins(store: StoreDriver) -> None:
    results = await store.batch(
        [
            PutOp(("ns",), "k", {"v": 1}),
            PutOp(("ns",), "k", {"v": 2}),
            GetOp(("ns",), "k"),
            SearchOp(("ns",)),
            ListNamespacesOp((MatchCondition("prefix", ("ns",)),)),
            PutOp(("ns",), "j", {"v": 3}),
        ]
    )
    assert results[0] is None and results[1] is None
    assert results[2].value == {"v": 2}
    assert [i.value for i in results[3]] == [{"v": 2}]
    assert results[4] == [("ns",)]
    assert (await store.get(("ns",), "j")).value == {"v": 3}


# ---------------------------------------------------------------------- TTL


async def test_ttl_expires_items(store: StoreDriver) -> None:
    await store.put(("ns",), "short", {"v": 1}, ttl=0.5 / 60)  # half a second
    await store.put(("ns",), "forever", {"v": 2})
    assert (await store.get(("ns",), "short")).value == {"v": 1}
    await asyncio.sleep(0.7)
    assert await store.get(("ns",), "short") is None
    assert [i.key for i in await store.search(("ns",))] == ["forever"]
    assert await store.sweep_ttl() == 1
    assert await store.sweep_ttl() == 0
    assert (await store.get(("ns",), "forever")).value == {"v": 2}


async def test_reads_refresh_ttl(store: StoreDriver) -> None:
    await store.put(("ns",), "k", {"v": 1}, ttl=2 / 60)
    for _ in range(3):
        await asyncio.sleep(0.8)
        assert await store.get(("ns",), "k") is not None  # each read restarts the clock
    assert len(await store.search(("ns",))) == 1  # so does a search
    await asyncio.sleep(0.8)
    assert await store.get(("ns",), "k", refresh_ttl=False) is not None
    await asyncio.sleep(1.5)
    assert await store.get(("ns",), "k") is None


async def test_default_ttl_from_config(make: Callable[..., Any]) -> None:
    store = await make(ttl={"default_ttl": 0.3 / 60, "refresh_on_read": False})
    await store.put(("ns",), "k", {"v": 1})
    await store.put(("ns",), "kept", {"v": 1}, ttl=None)
    await asyncio.sleep(0.45)
    assert await store.get(("ns",), "k") is None
    assert await store.get(("ns",), "kept") is not None


@pytest.mark.parametrize("ttl", [0, -1, "5", True])
async def test_bad_ttl(store: StoreDriver, ttl: Any) -> None:
    with pytest.raises(ValueError, match="ttl"):
        await store.put(("ns",), "k", {"v": 1}, ttl=ttl)


# ---------------------------------------------------------------------- semantic search


async def test_semantic_search_ranks_by_similarity(make: Callable[..., Any]) -> None:
    store = await make(index=INDEX)
    await store.put(("m",), "tea", {"text": "tea tea tea", "kind": "drink"})
    await store.put(("m",), "coffee", {"text": "coffee", "kind": "drink"})
    await store.put(("m",), "zzz", {"text": "zzz", "kind": "sleep"})
    await store.put(("m",), "raw", {"text": "tea"}, index=False)  # not embedded
    found = await store.search(("m",), query="tee")
    assert [i.key for i in found][:3] == ["tea", "coffee", "zzz"]
    assert found[0].score is not None and found[0].score > found[1].score > found[2].score
    assert found[-1].key == "raw" and found[-1].score is None  # unscored items come last
    drinks = await store.search(("m",), query="zz", filter={"kind": "drink"})
    assert [i.key for i in drinks] == ["coffee", "tea"] or [i.key for i in drinks] == [
        "tea",
        "coffee",
    ]
    assert all(i.value["kind"] == "drink" for i in drinks)
    page = await store.search(("m",), query="tee", limit=1, offset=1)
    assert [i.key for i in page] == ["coffee"]


async def test_semantic_search_per_put_fields(make: Callable[..., Any]) -> None:
    store = await make(index=INDEX)
    await store.put(("m",), "a", {"text": "qqq", "title": "aaaa"}, index=["title"])
    await store.put(("m",), "b", {"text": "aaaa", "title": "qqq"})
    found = await store.search(("m",), query="aaaa")
    assert [round(i.score, 3) for i in found] == [1.0, 1.0]
    await store.put(("m",), "b", {"text": "zzz", "title": "aaaa"})  # re-embedded on update
    assert (await store.search(("m",), query="aaaa", limit=1))[0].key == "a"


async def test_embedding_dims_are_checked(make: Callable[..., Any]) -> None:
    store = await make(index={"embed": lambda texts: [[1.0, 0.0]] * len(texts), "dims": 3})
    with pytest.raises(ValueError, match="dims=3"):
        await store.put(("m",), "a", {"text": "x"})
    assert await store.get(("m",), "a") is None


async def test_async_embed_function(make: Callable[..., Any], backend: StoreBackend) -> None:
    async def embed(texts: Any) -> list[list[float]]:
        await asyncio.sleep(0)
        return letter_embed(texts)

    store = await make(index={"embed": embed, "dims": 26, "fields": ["text"]})
    if not backend.is_async:
        with pytest.raises(TypeError, match="async"):
            await store.put(("m",), "a", {"text": "x"})
        return
    await store.put(("m",), "a", {"text": "abc"})
    assert (await store.search(("m",), query="abc"))[0].score == pytest.approx(1.0, abs=1e-3)


async def test_search_without_index_ignores_query(store: StoreDriver) -> None:
    await store.put(("m",), "a", {"text": "x"})
    assert [i.key for i in await store.search(("m",), query="x")] == ["a"]


# ---------------------------------------------------------------------- shortcuts' edges


@pytest.mark.parametrize("namespace", [(["a"],), ("a", 1), ["ns"]])
async def test_get_checks_namespaces_it_has_not_seen(store: StoreDriver, namespace: Any) -> None:
    await store.put(("ns",), "k", {"v": 1})
    if isinstance(namespace, list):
        assert (await store.get(namespace, "k")).value == {"v": 1}  # a list is accepted
        return
    with pytest.raises(InvalidNamespaceError):
        await store.get(namespace, "k")


async def test_flat_and_odd_values_are_checked_and_isolated(store: StoreDriver) -> None:
    value = {"text": "thé ☕", "n": 2**70, "x": 1.5, "ok": True, "none": None}
    await store.put(("ns",), "k", value)
    got = (await store.get(("ns",), "k")).value
    assert got == value
    got["text"] = "changed"
    assert (await store.get(("ns",), "k")).value == value
    with pytest.raises(SerializationError):
        await store.put(("ns",), "bad", {"text": "\ud800"})
    assert await store.get(("ns",), "bad") is None
    with pytest.raises((TypeError, ValueError)):
        await store.get(("ns",), "")
