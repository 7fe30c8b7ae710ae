"""Arguments are checked once, in the base class: every backend accepts and refuses the same
thread ids, namespaces, configs and thread-operation arguments, with the same clear error
(issue 8, items 14 and 15). Reducer type mismatches name the key, the node and both types."""

from __future__ import annotations

import operator
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypedDict

import pytest
from backends import Backend, Driver

from threadline.checkpoint.base import MAX_ID_BYTES, BaseCheckpointSaver
from threadline.checkpoint.memory import MemorySaver
from threadline.checkpoint.types import ChannelChange, CheckpointDraft
from threadline.errors import InvalidArgumentError, ReducerTypeError
from threadline.graph import START, StateGraph


def draft(value: Any = 1) -> CheckpointDraft:
    return CheckpointDraft(
        step=0,
        source="input",
        metadata={},
        tasks=[],
        changes={"a": ChannelChange(value)},
        parent_id=None,
    )


def cfg(thread_id: Any, ns: Any = "") -> dict[str, Any]:
    return {"configurable": {"thread_id": thread_id, "checkpoint_ns": ns}}


BAD_IDS = [
    pytest.param("a\x00b", "NUL", id="nul"),
    pytest.param("a\udc80b", "lone surrogate", id="surrogate"),
    pytest.param("x" * (MAX_ID_BYTES + 1), f"more than the {MAX_ID_BYTES}", id="too-long"),
    pytest.param("é" * (MAX_ID_BYTES // 2 + 1), "bytes of UTF-8", id="too-long-utf8"),
    pytest.param(42, r"pass str\(\.\.\.\)", id="int"),
    pytest.param(b"bytes", r"pass str\(\.\.\.\)", id="bytes"),
    pytest.param("", "non-empty", id="empty"),
]


class ValidationContract:
    @pytest.fixture
    def d(self) -> Driver:
        raise NotImplementedError

    @pytest.mark.parametrize(("thread_id", "message"), BAD_IDS)
    async def test_a_bad_thread_id_is_refused_the_same_way(
        self, d: Driver, thread_id: Any, message: str
    ) -> None:
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda: d.put(thread_id, "", draft(), expected_head=None),
            lambda: d.get_tuple(cfg(thread_id)),
            lambda: d.delete_thread(thread_id),
            lambda: d.copy_thread("src", thread_id),
            lambda: d.copy_thread(thread_id, "dst"),
            lambda: d.prune([thread_id], keep_last=1),
            lambda: d.acquire_lease(thread_id),
        ]
        for call in calls:
            with pytest.raises(InvalidArgumentError, match=message):
                await call()
        assert await d.list_threads() == []  # nothing stored, nothing raw from a driver

    async def test_the_longest_id_is_accepted(self, d: Driver) -> None:
        longest = "é" * (MAX_ID_BYTES // 2)
        await d.put(longest, longest, draft(7), expected_head=None)
        assert (await d.get(cfg(longest, longest)))["channel_values"] == {"a": 7}

    @pytest.mark.parametrize(("ns", "message"), BAD_IDS[:4])
    async def test_a_bad_namespace_is_refused(self, d: Driver, ns: str, message: str) -> None:
        with pytest.raises(InvalidArgumentError, match=message):
            await d.put("t", ns, draft(), expected_head=None)
        with pytest.raises(InvalidArgumentError, match=message):
            await d.get_tuple(cfg("t", ns))

    async def test_a_uuid_thread_id_is_stored_as_its_string(self, d: Driver) -> None:
        tid = uuid.uuid4()
        saved = await d.put(tid, "", draft(3), expected_head=None)
        assert saved.thread_id == str(tid)
        assert (await d.get(cfg(tid)))["channel_values"] == {"a": 3}
        assert (await d.get(cfg(str(tid))))["channel_values"] == {"a": 3}
        assert [t.thread_id for t in await d.list_threads()] == [str(tid)]
        await d.copy_thread(tid, uuid.UUID(int=1))
        await d.delete_thread(tid)
        assert [t.thread_id for t in await d.list_threads()] == [str(uuid.UUID(int=1))]

    @pytest.mark.parametrize("config", ["thread-1", ["x"], {"configurable": "t"}, 3])
    async def test_a_config_that_is_not_a_dict_is_a_clear_error(
        self, d: Driver, config: Any
    ) -> None:
        with pytest.raises(InvalidArgumentError, match="must be a dict"):
            await d.get_tuple(config)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"limit": "x"}, "limit must be an int >= 0 or None"),
            ({"limit": -1}, "limit must be an int >= 0 or None"),
            ({"limit": True}, "limit must be an int >= 0 or None"),
            ({"offset": -1}, "offset must be an int >= 0"),
            ({"offset": "1"}, "offset must be an int >= 0"),
            ({"filter": "x"}, "filter must be a mapping"),
            ({"filter": {"a b": 1}}, "invalid metadata filter key"),
        ],
    )
    async def test_bad_list_threads_arguments(
        self, d: Driver, kwargs: dict[str, Any], message: str
    ) -> None:
        await d.put("t", "", draft(), expected_head=None)
        with pytest.raises(InvalidArgumentError, match=message):
            await d.list_threads(**kwargs)

    async def test_list_threads_limit_zero_and_offsets(self, d: Driver) -> None:
        for name in ("a", "b", "c"):
            await d.put(name, "", draft(), expected_head=None)
        assert await d.list_threads(limit=0) == []
        assert len(await d.list_threads(offset=1)) == 2
        assert len(await d.list_threads(limit=1, offset=2)) == 1
        assert await d.list_threads(offset=5) == []

    @pytest.mark.parametrize(
        ("args", "kwargs", "message"),
        [
            (("abc",), {"keep_last": 1}, r"list of thread ids.*\['abc'\]"),
            ((uuid.UUID(int=5),), {"keep_last": 1}, "list of thread ids"),
            ((3,), {"keep_last": 1}, "list of thread ids"),
            ((["t"],), {"keep_last": 0}, "keep_last must be an int of at least 1"),
            ((["t"],), {"keep_last": "2"}, "keep_last must be an int of at least 1"),
            ((["t"],), {"keep_last": True}, "keep_last must be an int of at least 1"),
        ],
    )
    async def test_bad_prune_arguments(
        self, d: Driver, args: tuple[Any, ...], kwargs: dict[str, Any], message: str
    ) -> None:
        await d.put("t", "", draft(), expected_head=None)
        with pytest.raises(InvalidArgumentError, match=message):
            await d.prune(*args, **kwargs)
        assert (await d.get(cfg("t")))["channel_values"] == {"a": 1}


class TestSync(ValidationContract):
    @pytest.fixture
    def d(self, saver: BaseCheckpointSaver, sync_backend: Backend) -> Driver:
        return Driver(saver, sync_backend)


class TestAsync(ValidationContract):
    @pytest.fixture
    def d(self, asaver: BaseCheckpointSaver, async_backend: Backend) -> Driver:
        return Driver(asaver, async_backend)


# ---------------------------------------------------------------------- the graph's API


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def _graph(saver: BaseCheckpointSaver | None, returned: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node("writer", lambda s: {"log": returned})
    builder.add_edge(START, "writer")
    return builder.compile(checkpointer=saver)


@pytest.mark.parametrize("config", ["thread-1", ["x"], {"configurable": "t"}])
def test_invoke_with_a_config_that_is_not_a_dict(config: Any) -> None:
    app = _graph(MemorySaver(), ["x"])
    with pytest.raises(InvalidArgumentError, match="must be a dict"):
        app.invoke({"log": []}, config)
    with pytest.raises(InvalidArgumentError, match="must be a dict"):
        app.get_state(config)


def test_invoke_with_a_uuid_thread_id(saver: BaseCheckpointSaver) -> None:
    app = _graph(saver, ["reply"])
    tid = uuid.uuid4()
    app.invoke({"log": ["hi"]}, {"configurable": {"thread_id": tid}})
    state = app.get_state({"configurable": {"thread_id": str(tid)}})
    assert state.values == {"log": ["hi", "reply"]}
    assert state.config["configurable"]["thread_id"] == str(tid)


def test_a_reducer_type_mismatch_names_key_node_and_types(saver: BaseCheckpointSaver) -> None:
    app = _graph(saver, "not a list")
    with pytest.raises(ReducerTypeError) as info:
        app.invoke({"log": ["hi"]}, {"configurable": {"thread_id": "t"}})
    message = str(info.value)
    for part in ("'log'", "'writer'", "list", "str"):
        assert part in message, message
    assert isinstance(info.value, TypeError)  # what it used to be, still catchable as such
