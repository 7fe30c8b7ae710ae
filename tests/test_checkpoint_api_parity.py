"""LangGraph checkpoint API parity: serde import paths, ``saver.get`` shapes, durability."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import enum
import importlib
import operator
from typing import Annotated, Any, TypedDict

import pytest

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.errors import CorruptCheckpointError, SerializationError


class State(TypedDict):
    x: int
    log: Annotated[list[str], operator.add]


def _add_one(state: State) -> dict[str, Any]:
    return {"x": state["x"] + 1, "log": ["a"]}


def _double(state: State) -> dict[str, Any]:
    return {"x": state["x"] * 2, "log": ["b"]}


def _graph(state_graph: Any, start: Any) -> Any:
    """START -> a -> b -> END over :class:`State`, with either library's StateGraph."""
    g = state_graph(State)
    g.add_node("a", _add_one)
    g.add_node("b", _double)
    g.add_edge(start, "a")
    g.add_edge("a", "b")
    return g


def _lib_graph(prefix: str) -> Any:
    mod = importlib.import_module(f"{prefix}.graph")
    return _graph(mod.StateGraph, mod.START)


# ---------------------------------------------------------------------- item 1: serde paths


@dataclasses.dataclass
class Point:
    x: int
    y: int


def test_serde_import_paths() -> None:
    from threadline.checkpoint.serde import MsgpackSerializer, Serializer
    from threadline.checkpoint.serde.base import CipherProtocol, SerializerProtocol
    from threadline.checkpoint.serde.encrypted import EncryptedSerializer
    from threadline.checkpoint.serde.jsonplus import JsonPlusSerializer

    serde = JsonPlusSerializer()
    assert isinstance(serde, MsgpackSerializer)
    assert isinstance(serde, Serializer)
    assert isinstance(serde, SerializerProtocol)
    assert issubclass(EncryptedSerializer, JsonPlusSerializer)
    assert CipherProtocol is not None


def test_jsonplus_typed_round_trip() -> None:
    from threadline.checkpoint.serde.jsonplus import JsonPlusSerializer

    serde = JsonPlusSerializer(allowed_msgpack_modules=[Point])
    for value in [None, b"raw", bytearray(b"ba"), {"a": (1, 2), "p": Point(1, 2)}, [1, "x"]]:
        tag, data = serde.dumps_typed(value)
        assert isinstance(tag, str) and isinstance(data, bytes)
        back = serde.loads_typed((tag, data))
        assert back == value and type(back) is type(value)
    assert serde.dumps_typed(None) == ("null", b"")
    assert serde.dumps_typed(b"x") == ("bytes", b"x")


def test_jsonplus_refuses_pickle() -> None:
    from threadline.checkpoint.serde.jsonplus import JsonPlusSerializer

    with pytest.raises(SerializationError, match="never pickles"):
        JsonPlusSerializer(pickle_fallback=True)
    serde = JsonPlusSerializer(pickle_fallback=False, allowed_msgpack_modules=None)
    with pytest.raises(SerializationError, match="unpickle"):
        serde.loads_typed(("pickle", b"\x80\x04N."))


def test_jsonplus_allowlist_tuple_registers_class() -> None:
    from threadline.checkpoint.serde.jsonplus import JsonPlusSerializer

    serde = JsonPlusSerializer(allowed_msgpack_modules=[(__name__, "Point")])
    assert serde.loads_typed(serde.dumps_typed(Point(3, 4))) == Point(3, 4)
    assert serde.with_msgpack_allowlist([Point]) is serde
    with pytest.raises(SerializationError, match="register_type"):
        JsonPlusSerializer(allowed_msgpack_modules=[object])


def test_jsonplus_langgraph_bytes_clear_error() -> None:
    lg = pytest.importorskip("langgraph.checkpoint.serde.jsonplus")
    from threadline.checkpoint.serde.jsonplus import JsonPlusSerializer

    theirs = lg.JsonPlusSerializer().dumps_typed({"a": 1})
    with pytest.raises(CorruptCheckpointError, match="LangGraph"):
        JsonPlusSerializer().loads_typed(theirs)


def test_encrypted_serializer_from_pycryptodome_aes(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("cryptography")
    from threadline.checkpoint.serde.encrypted import EncryptedSerializer

    serde = EncryptedSerializer.from_pycryptodome_aes(key=b"k" * 32)
    assert serde.encrypted
    tag, data = serde.dumps_typed({"secret": 1})
    assert b"secret" not in data
    assert serde.loads_typed((tag, data)) == {"secret": 1}
    monkeypatch.setenv("LANGGRAPH_AES_KEY", "e" * 32)
    assert EncryptedSerializer.from_pycryptodome_aes().encrypted
    with pytest.raises(SerializationError, match="32 bytes"):
        EncryptedSerializer.from_pycryptodome_aes(key=b"k" * 16)
    with pytest.raises(SerializationError, match="not supported"):
        EncryptedSerializer(object())


def test_saver_accepts_jsonplus(make_saver: Any) -> None:
    from threadline.checkpoint.serde.jsonplus import JsonPlusSerializer
    from threadline.graph import START, StateGraph

    saver: BaseCheckpointSaver = make_saver(serde=JsonPlusSerializer())
    graph = _graph(StateGraph, START).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "jsonplus"}}
    assert graph.invoke({"x": 1, "log": []}, cfg)["x"] == 4


# ---------------------------------------------------------------------- item 2: get() shapes

CHECKPOINT_KEYS = {
    "v",
    "id",
    "ts",
    "channel_values",
    "channel_versions",
    "versions_seen",
    "updated_channels",
}


def _langgraph_reference() -> tuple[dict[str, Any], Any]:
    pytest.importorskip("langgraph")
    from langgraph.checkpoint.memory import InMemorySaver

    saver = InMemorySaver()
    graph = _lib_graph("langgraph").compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "ref"}}
    graph.invoke({"x": 1, "log": []}, cfg)
    found = saver.get(cfg)
    assert found is not None
    return dict(found), saver.get_tuple(cfg)


def _run_threadline(saver: BaseCheckpointSaver, thread_id: str) -> dict[str, Any]:
    from threadline.graph import START, StateGraph

    graph = _graph(StateGraph, START).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": thread_id}}
    graph.invoke({"x": 1, "log": []}, cfg)
    return cfg


def test_get_returns_langgraph_checkpoint_dict(make_saver: Any) -> None:
    theirs, _ = _langgraph_reference()
    saver: BaseCheckpointSaver = make_saver()
    cfg = _run_threadline(saver, "get-shape")
    ours = saver.get(cfg)
    assert type(ours) is dict
    assert set(ours) == set(theirs) == CHECKPOINT_KEYS
    assert ours["channel_values"] == theirs["channel_values"] == {"x": 4, "log": ["a", "b"]}
    assert ours["v"] == theirs["v"]
    head = saver.get_tuple(cfg)
    assert head is not None
    assert ours["id"] == head.config["configurable"]["checkpoint_id"]
    assert isinstance(ours["ts"], str) and type(ours["ts"]) is type(theirs["ts"])
    assert set(ours["updated_channels"]) == set(theirs["updated_channels"])
    for channel in ("x", "log"):
        assert isinstance(ours["channel_versions"][channel], str)
    assert saver.get({"configurable": {"thread_id": "nobody"}}) is None


def test_get_tuple_shapes_match_langgraph(make_saver: Any) -> None:
    _, theirs = _langgraph_reference()
    saver: BaseCheckpointSaver = make_saver()
    cfg = _run_threadline(saver, "tuple-shape")
    ours = saver.get_tuple(cfg)
    assert ours is not None
    assert set(ours.config["configurable"]) == set(theirs.config["configurable"])
    assert ours.checkpoint["channel_values"] == theirs.checkpoint["channel_values"]
    assert ours.checkpoint["id"] == ours.config["configurable"]["checkpoint_id"]
    assert set(dict(ours.checkpoint)) == set(theirs.checkpoint)
    assert ours.checkpoint.get("missing", 1) == 1
    for key in ("source", "step", "parents"):
        assert ours.metadata[key] == theirs.metadata[key]
    assert ours.parent_config is not None and theirs.parent_config is not None
    assert set(ours.parent_config["configurable"]) == set(theirs.parent_config["configurable"])
    assert [t.metadata["step"] for t in saver.list(cfg)] == [2, 1, 0, -1]


async def test_aget_returns_langgraph_checkpoint_dict(amake_saver: Any) -> None:
    saver: BaseCheckpointSaver = await amake_saver()
    from threadline.graph import START, StateGraph

    graph = _graph(StateGraph, START).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "aget-shape"}}
    await graph.ainvoke({"x": 1, "log": []}, cfg)
    ours = await saver.aget(cfg)
    assert ours is not None and set(ours) == CHECKPOINT_KEYS
    assert ours["channel_values"] == {"x": 4, "log": ["a", "b"]}


# ---------------------------------------------------------------------- item 3: durability


def _exit_run(prefix: str, saver: Any, mode: str, thread_id: str) -> list[Any]:
    """Run a -> b -> c with durability="exit" (c completes, fails, or interrupts and is
    resumed; then a second input on the same thread) and describe the thread's history."""
    graph_mod = importlib.import_module(f"{prefix}.graph")
    types_mod = importlib.import_module(f"{prefix}.types")

    def last(state: State) -> dict[str, Any]:
        if mode == "error" and state["x"] < 10:
            raise ValueError("boom")
        if mode == "interrupt":
            return {"log": [types_mod.interrupt("q")]}
        return {"log": ["c"]}

    g = _graph(graph_mod.StateGraph, graph_mod.START)
    g.add_node("c", last)
    g.add_edge("b", "c")
    app = g.compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": thread_id}}

    def shape() -> list[Any]:
        history = list(app.get_state_history(cfg))
        ids = [s.config["configurable"]["checkpoint_id"] for s in history]
        return [
            (
                s.metadata["step"],
                s.metadata["source"],
                s.next,
                s.values,
                None
                if s.parent_config is None
                else ids.index(s.parent_config["configurable"]["checkpoint_id"]),
            )
            for s in history
        ]

    shapes = []
    with contextlib.suppress(ValueError):
        app.invoke({"x": 1, "log": []}, cfg, durability="exit")
    shapes.append(shape())
    if mode == "interrupt":
        app.invoke(types_mod.Command(resume="r"), cfg, durability="exit")
        shapes.append(shape())
    elif mode == "ok":
        app.invoke({"x": 1}, cfg, durability="exit")
        shapes.append(shape())
    return shapes


@pytest.mark.parametrize("mode", ["ok", "error", "interrupt"])
def test_exit_durability_history_matches_langgraph(make_saver: Any, mode: str) -> None:
    pytest.importorskip("langgraph")
    from langgraph.checkpoint.memory import InMemorySaver

    theirs = _exit_run("langgraph", InMemorySaver(), mode, "exit")
    ours = _exit_run("threadline", make_saver(), mode, f"exit-{mode}")
    assert ours == theirs
    assert len(ours[0]) == 1  # only the state the run stopped at


async def test_exit_durability_async_saves_once(amake_saver: Any) -> None:
    from threadline.graph import START, StateGraph

    saver: BaseCheckpointSaver = await amake_saver()
    app = _graph(StateGraph, START).compile(checkpointer=saver)
    cfg = {"configurable": {"thread_id": "aexit"}}
    await app.ainvoke({"x": 1, "log": []}, cfg, durability="exit")
    history = [s async for s in app.aget_state_history(cfg)]
    assert [(s.metadata["step"], s.next) for s in history] == [(2, ())]
    assert history[0].values == {"x": 4, "log": ["a", "b"]}


# ---------------------------------------------------------------------- item 4: tuple shapes


def _fan_out_interrupt(prefix: str, saver: Any) -> tuple[Any, dict[str, Any]]:
    """START -> a and START -> b in one step; b pauses at interrupt(), so a's write and b's
    interrupt are pending writes of the step's checkpoint."""
    graph_mod = importlib.import_module(f"{prefix}.graph")
    types_mod = importlib.import_module(f"{prefix}.types")

    def a(state: State) -> dict[str, Any]:
        return {"log": ["a"]}

    def b(state: State) -> dict[str, Any]:
        return {"log": [types_mod.interrupt("q")]}

    g = graph_mod.StateGraph(State)
    g.add_node("a", a)
    g.add_node("b", b)
    g.add_edge(graph_mod.START, "a")
    g.add_edge(graph_mod.START, "b")
    return g.compile(checkpointer=saver), {"configurable": {"thread_id": f"fan-{prefix}"}}


def _langgraph_fan_out() -> Any:
    pytest.importorskip("langgraph")
    from langgraph.checkpoint.memory import InMemorySaver

    saver = InMemorySaver()
    app, cfg = _fan_out_interrupt("langgraph", saver)
    app.invoke({"x": 1, "log": []}, cfg)
    return saver.get_tuple(cfg)


def _check_tuple_like_langgraph(ours: Any, theirs: Any) -> None:
    assert isinstance(ours, tuple) and isinstance(theirs, tuple)
    assert len(ours) == len(theirs) == 5
    assert type(ours)._fields == type(theirs)._fields
    config, checkpoint, metadata, parent_config, pending_writes = ours
    assert config == ours.config == ours[0] == ours[-5]
    assert checkpoint is ours.checkpoint is ours[1]
    assert metadata is ours.metadata and metadata == ours[2]
    assert parent_config == ours.parent_config == ours[3]
    assert pending_writes is ours.pending_writes is ours[4] is ours[-1]
    assert ours[:2] == (config, checkpoint)
    assert ours._asdict().keys() == theirs._asdict().keys()
    assert set(config["configurable"]) == set(theirs.config["configurable"])
    # pending writes are (task_id, channel, value) triples, as LangGraph's
    assert len(pending_writes) == len(theirs.pending_writes) == 2
    for write in pending_writes:
        assert isinstance(write, tuple) and len(write) == 3
        task_id, channel, value = write
        assert (task_id, channel, value) == (write.task_id, write.channel, write.value)
        assert write == (task_id, channel, value) and write[1] == channel
        assert isinstance(write.idx, int)
    ours_interrupts = [w for w in pending_writes if w[1] == "__interrupt__"]
    theirs_interrupts = [w for w in theirs.pending_writes if w[1] == "__interrupt__"]
    assert len(ours_interrupts) == len(theirs_interrupts) == 1
    assert [i.value for i in ours_interrupts[0][2]] == [i.value for i in theirs_interrupts[0][2]]


def test_checkpoint_tuple_unpacks_like_langgraph(make_saver: Any) -> None:
    theirs = _langgraph_fan_out()
    saver: BaseCheckpointSaver = make_saver()
    app, cfg = _fan_out_interrupt("threadline", saver)
    app.invoke({"x": 1, "log": []}, cfg)
    ours = saver.get_tuple(cfg)
    _check_tuple_like_langgraph(ours, theirs)
    listed = list(saver.list(cfg))
    _check_tuple_like_langgraph(listed[0], theirs)
    for cfg_, ckpt, meta, parent, writes in saver.list(cfg):
        assert ckpt["id"] == cfg_["configurable"]["checkpoint_id"]
        assert isinstance(meta["step"], int) and isinstance(writes, list)
        assert (
            parent is None
            or parent["configurable"]["thread_id"] == cfg["configurable"]["thread_id"]
        )


async def test_checkpoint_tuple_unpacks_like_langgraph_async(amake_saver: Any) -> None:
    theirs = _langgraph_fan_out()
    saver: BaseCheckpointSaver = await amake_saver()
    app, cfg = _fan_out_interrupt("threadline", saver)
    await app.ainvoke({"x": 1, "log": []}, cfg)
    ours = await saver.aget_tuple(cfg)
    _check_tuple_like_langgraph(ours, theirs)
    listed = [t async for t in saver.alist(cfg)]
    _check_tuple_like_langgraph(listed[0], theirs)
    for cfg_, ckpt, _meta, _parent, _writes in listed:
        assert ckpt["id"] == cfg_["configurable"]["checkpoint_id"]


def test_pending_write_keeps_its_index() -> None:
    from threadline.checkpoint.types import PendingWrite

    w = PendingWrite("t", 1, "ch", {"v": 1})
    assert tuple(w) == ("t", "ch", {"v": 1})
    assert (w.task_id, w.idx, w.channel, w.value) == ("t", 1, "ch", {"v": 1})
    assert w != PendingWrite("t", 2, "ch", {"v": 1})
    assert w == PendingWrite("t", 1, "ch", {"v": 1}) == ("t", "ch", {"v": 1})
    assert "idx=1" in repr(w)
    import copy
    import pickle

    for clone in (copy.copy(w), copy.deepcopy(w), pickle.loads(pickle.dumps(w))):
        assert clone == w and clone.idx == 1 and type(clone) is PendingWrite
    with pytest.raises(AttributeError):
        w.idx = 3  # type: ignore[misc]


# ---------------------------------------------------------------------- item 5: "json" values


class Colour(enum.Enum):
    RED = "red"


def _lc2(id_: list[str], args: Any = None, kwargs: Any = None, method: Any = None) -> Any:
    out: dict[str, Any] = {"lc": 2, "type": "constructor", "id": id_}
    if method is not None:
        out["method"] = method
    if args is not None:
        out["args"] = args
    if kwargs is not None:
        out["kwargs"] = kwargs
    return out


_UUID_HEX = "12345678123456781234567812345678"


def _json_cases() -> dict[str, Any]:
    """Values as LangGraph's JsonPlusSerializer wrote them in its ``"json"`` format."""
    human = {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain", "schema", "messages", "HumanMessage"],
        "kwargs": {"content": "hi", "type": "human", "id": "1"},
    }
    ai = {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain", "schema", "messages", "AIMessage"],
        "kwargs": {"content": "yo", "type": "ai", "id": "2", "tool_calls": []},
    }
    hour = _lc2(["datetime", "timedelta"], [0, 3600, 0])
    return {
        "plain": {"a": 1, "b": [1, 2.5, None, True], "c": "x"},
        "list": [1, "two", {"three": 3}],
        "scalar": 7,
        "date": _lc2(["datetime", "date"], [2024, 1, 2]),
        "datetime-args": _lc2(["datetime", "datetime"], [2024, 1, 2, 3, 4, 5]),
        "time": _lc2(["datetime", "time"], [1, 2, 3, 4, None]),
        "timedelta": _lc2(["datetime", "timedelta"], [1, 2, 3]),
        "timezone": _lc2(["datetime", "timezone"], [hour]),
        "uuid": _lc2(["uuid", "UUID"], [_UUID_HEX]),
        "decimal": _lc2(["decimal", "Decimal"], ["1.5"]),
        "set": _lc2(["builtins", "set"], [[1, 2]]),
        "frozenset": _lc2(["builtins", "frozenset"], [[1, 2]]),
        "deque": _lc2(["collections", "deque"], [[1, 2]]),
        "ipv4": _lc2(["ipaddress", "IPv4Address"], ["1.2.3.4"]),
        "ipv6net": _lc2(["ipaddress", "IPv6Network"], ["::1/128"]),
        "path": _lc2(["pathlib", "Path"], ["a", "b"]),
        "zoneinfo": _lc2(["zoneinfo", "ZoneInfo"], ["Europe/Paris"]),
        "regex": _lc2(["re", "compile"], ["a+", 0]),
        "human-lc1": human,
        "ai-lc1": ai,
        "human-lc2": _lc2(
            ["langchain_core", "messages", "human", "HumanMessage"],
            kwargs={"content": "hi", "id": "3"},
        ),
        "dataclass": _lc2([__name__, "Point"], kwargs={"x": 1, "y": 2}),
        "enum": _lc2([__name__, "Colour"], ["red"]),
        "unknown-class": _lc2(["os", "system"], ["echo no"]),
        "secret": {"lc": 1, "type": "secret", "id": ["OPENAI_API_KEY"]},
        "nested": {
            "ids": [_lc2(["uuid", "UUID"], [_UUID_HEX])],
            "messages": [human, ai],
            "when": {"at": _lc2(["datetime", "date"], [2020, 5, 6])},
        },
    }


def test_loads_typed_reads_langgraph_json() -> None:
    import json

    lg = pytest.importorskip("langgraph.checkpoint.serde.jsonplus")
    from threadline.checkpoint.serde.jsonplus import JsonPlusSerializer

    theirs = lg.JsonPlusSerializer(allowed_json_modules=[(__name__, "Point"), (__name__, "Colour")])
    ours = JsonPlusSerializer(allowed_msgpack_modules=[Point, Colour])
    for name, value in _json_cases().items():
        pair = ("json", json.dumps(value).encode())
        want = theirs.loads_typed(pair)
        got = ours.loads_typed(pair)
        assert got == want and type(got) is type(want), name
        if name == "regex":
            assert (got.pattern, got.flags) == (want.pattern, want.flags)


def test_loads_typed_json_safely() -> None:
    import json

    from threadline.checkpoint.serde.jsonplus import JsonPlusSerializer
    from threadline.types import Send

    serde = JsonPlusSerializer()

    def load(value: Any) -> Any:
        return serde.loads_typed(("json", json.dumps(value).encode()))

    # Not registered here: the dict stays a dict, as in LangGraph without an allowlist.
    raw = _lc2([__name__, "Unregistered"], kwargs={"x": 1})
    assert load(raw) == raw
    # LangGraph's own types read as threadline's.
    send = load(_lc2(["langgraph", "types", "Send"], kwargs={"node": "n", "arg": {"a": 1}}))
    assert type(send) is Send and (send.node, send.arg) == ("n", {"a": 1})
    # LangGraph wrote datetimes with method="fromisoformat" (which it now ignores, and loads
    # None): threadline reads the datetime.
    at = load(_lc2(["datetime", "datetime"], ["2024-01-02T03:04:05+00:00"], method="fromisoformat"))
    assert at == datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)
    for bad in (
        {"lc": 1, "type": "constructor", "id": ["os", "system"], "kwargs": {}},
        {"lc": 1, "type": "not_implemented", "id": ["foo", "Bar"], "repr": "Bar()"},
        _lc2(["uuid", "UUID"], ["not a uuid"]),
    ):
        with pytest.raises(CorruptCheckpointError):
            load(bad)
    with pytest.raises(CorruptCheckpointError, match="JSON"):
        serde.loads_typed(("json", b"{not json"))
    deep: Any = 1
    for _ in range(300):
        deep = [deep]
    with pytest.raises(CorruptCheckpointError, match="deep"):
        load(deep)
    with pytest.raises(SerializationError, match="unpickle"):
        serde.loads_typed(("pickle", b"\x80\x04N."))


def test_dumps_typed_tags_match_langgraph() -> None:
    lg = pytest.importorskip("langgraph.checkpoint.serde.jsonplus")
    from threadline.checkpoint.serde.jsonplus import JsonPlusSerializer

    theirs, ours = lg.JsonPlusSerializer(), JsonPlusSerializer()
    for value in (None, b"raw", bytearray(b"ba"), {"a": [1, 2]}, "text", 3):
        tag, data = ours.dumps_typed(value)
        assert tag == theirs.dumps_typed(value)[0]
        if tag != "msgpack":  # the same bytes: each library reads the other's pair
            assert (tag, data) == theirs.dumps_typed(value)
            assert theirs.loads_typed((tag, data)) == value
            assert type(ours.loads_typed(theirs.dumps_typed(value))) is type(value)


def test_loads_typed_json_langchain_core_ids() -> None:
    import json

    pytest.importorskip("langchain_core")
    from langchain_core.messages import AIMessage

    from threadline.checkpoint.serde.jsonplus import JsonPlusSerializer

    value = {
        "lc": 1,
        "type": "constructor",
        "id": ["langchain_core", "messages", "AIMessage"],
        "kwargs": {"content": "yo", "id": "9"},
    }
    got = JsonPlusSerializer().loads_typed(("json", json.dumps(value).encode()))
    assert got == AIMessage("yo", id="9")
