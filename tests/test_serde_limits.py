"""The serializer against hostile input: nesting depth, class references, decompression bombs.

Stored rows are untrusted (docs/security.md). Cases whose failure mode is a crash of the
interpreter (SIGSEGV on a deep C stack) run in a subprocess, so a regression fails the test
instead of killing pytest.
"""

from __future__ import annotations

import dataclasses
import operator
import os
import subprocess
import sys
import textwrap
import zlib
from typing import Annotated, Any, TypedDict

import msgpack
import pytest

from threadline.checkpoint import serde
from threadline.checkpoint.serde import MsgpackSerializer, TypeRegistry, register_type
from threadline.checkpoint.sqlite import SqliteSaver
from threadline.errors import CorruptCheckpointError, SerializationError
from threadline.graph import END, START, StateGraph

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


@dataclasses.dataclass
class Node:
    child: Any = None


register_type(Node)


def nest(kind: str, depth: int) -> Any:
    value: Any = 1
    for i in range(depth):
        if kind == "list":
            value = [value]
        elif kind == "dict":
            value = {"k": value}
        elif kind == "tuple":
            value = (value,)
        elif kind == "frozenset":
            value = frozenset([value])
        elif kind == "dataclass":
            value = Node(value)
        elif kind == "mixed":  # one level each: a list, a tuple, a dict, a frozenset...
            value = ([value], (value,), {"k": value}, Node(value))[i % 4]
        else:
            raise AssertionError(kind)
    return value


def crafted_ext_chain(code: int, depth: int) -> bytes:
    """A frame of ``depth`` nested extension payloads of ``code`` (tuple, set...): tiny."""
    body = msgpack.packb(1)
    for _ in range(depth):
        body = msgpack.packb(msgpack.ExtType(code, msgpack.packb([msgpack.ExtType(code, body)])))
    return b"\x01" + body


def crafted_list_chain(depth: int, open_byte: bytes = b"\x91") -> bytes:
    """A frame of lists (or maps, with ``b"\\x81\\xa1k"``) nested ``depth`` deep."""
    return b"\x01" + open_byte * depth + b"\x01"


KINDS = ["list", "dict", "tuple", "frozenset", "dataclass", "mixed"]


# --------------------------------------------------------------------------- depth on write


@pytest.mark.parametrize("kind", KINDS)
def test_values_at_the_depth_limit_round_trip(kind: str) -> None:
    s = MsgpackSerializer()
    value = nest(kind, 95)
    assert s.loads(s.dumps(value, "topic")) == value


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("depth", [101, 300, 600, 1000])
def test_too_deep_values_are_refused_at_save_naming_the_key(kind: str, depth: int) -> None:
    with pytest.raises(SerializationError, match=r"cannot serialize topic: .*max_depth=100"):
        MsgpackSerializer().dumps(nest(kind, depth), "topic")


def test_depth_limit_is_configurable() -> None:
    shallow = MsgpackSerializer(max_depth=5)
    with pytest.raises(SerializationError, match="max_depth=5"):
        shallow.dumps(nest("list", 6), "k")
    deep = MsgpackSerializer(max_depth=200)
    value = nest("tuple", 180)
    data = deep.dumps(value)
    assert deep.loads(data) == value
    with pytest.raises(CorruptCheckpointError, match="max_depth=100"):
        MsgpackSerializer().loads(data)  # a reader with a lower limit refuses it, cleanly
    with pytest.raises(ValueError, match="max_depth"):
        MsgpackSerializer(max_depth=0)


def test_deep_data_of_a_registered_type_is_refused() -> None:
    class Box:
        def __init__(self, data: Any) -> None:
            self.data = data

    reg = TypeRegistry()
    reg.register(Box, name="t.Box", encode=lambda b: b.data, decode=Box)
    s = MsgpackSerializer(registry=reg)
    assert s.loads(s.dumps(Box(nest("list", 50)))).data == nest("list", 50)
    with pytest.raises(SerializationError, match="max_depth"):
        s.dumps(Box(nest("list", 200)), "box")


def test_wide_values_are_not_too_deep() -> None:
    s = MsgpackSerializer()
    value = [{"role": "user", "content": "x" * 50, "tags": ("a", "b")} for _ in range(5000)]
    assert s.loads(s.dumps(value)) == value


# --------------------------------------------------------------------------- depth on read


def run_reader(script: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_crafted_deep_rows_raise_corrupt_and_never_crash() -> None:
    """1.4 KB of nested tuples used to overflow the C stack (SIGSEGV): in a subprocess."""
    frames = {
        **{f"ext{code}-{d}": crafted_ext_chain(code, d) for code in (1, 2, 3) for d in (120, 700)},
        "list-600": crafted_list_chain(600),
        "list-1000": crafted_list_chain(1000),
        "map-900": crafted_list_chain(900, b"\x81\xa1k"),
        "list-5000": crafted_list_chain(5000),
    }
    assert len(frames["ext1-120"]) < 1500
    script = f"""
        import threading
        from threadline.checkpoint.serde import MsgpackSerializer
        from threadline.errors import CorruptCheckpointError
        frames = {frames!r}
        def read_all():
            for name, data in frames.items():
                try:
                    MsgpackSerializer().loads(data)
                    print(name, "DECODED")
                except CorruptCheckpointError as exc:
                    print(name, "corrupt", "max_depth" in str(exc) or str(exc)[:80])
        read_all()
        t = threading.Thread(target=read_all)  # sync nodes run on a pool: smaller stacks
        t.start(); t.join()
        print("alive")
    """
    result = run_reader(script)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    lines = result.stdout.splitlines()
    assert lines[-1] == "alive"
    assert len(lines) == 2 * len(frames) + 1
    assert all(line.split()[1:] == ["corrupt", "True"] for line in lines[:-1]), lines


def test_deep_extension_payloads_past_the_inline_depth_decode() -> None:
    # Levels past _INLINE_EXT_DEPTH decode on a heap-allocated unpacker: same values.
    s = MsgpackSerializer()
    for kind in ("tuple", "frozenset", "dataclass", "mixed"):
        value = nest(kind, serde._INLINE_EXT_DEPTH * 10)
        assert s.loads(s.dumps(value)) == value
    payload = msgpack.packb([1]) + b"\x00"  # one byte too many, deep down
    for _ in range(serde._INLINE_EXT_DEPTH + 1):
        payload = msgpack.packb([msgpack.ExtType(1, payload)])
    with pytest.raises(CorruptCheckpointError, match="extra bytes"):
        s.loads(b"\x01" + msgpack.packb(msgpack.ExtType(1, payload)))


# --------------------------------------------------------------------------- class references


def test_class_references_never_import_modules() -> None:
    """A row naming ``this`` or ``unittest.__main__`` used to run them in the reader."""
    script = """
        import sys, msgpack
        from threadline.checkpoint.serde import MsgpackSerializer
        from threadline.errors import CorruptCheckpointError
        for module in ("this", "unittest.__main__", "antigravity", "idlelib.idle"):
            for code in (12, 13, 14):
                payload = msgpack.packb([module + ":X", {}], use_bin_type=True)
                frame = b"\\x01" + msgpack.packb(msgpack.ExtType(code, payload))
                try:
                    MsgpackSerializer().loads(frame)
                    print("DECODED")
                except CorruptCheckpointError as exc:
                    assert "not registered" in str(exc), exc
            assert module not in sys.modules, module
        print("clean")
    """
    result = run_reader(script)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "clean"


@pytest.mark.parametrize(
    "exc",
    [SystemExit(3), KeyboardInterrupt(), RecursionError("deep"), MemoryError(), GeneratorExit()],
    ids=lambda e: type(e).__name__,
)
def test_no_base_exception_escapes_a_decoder(exc: BaseException) -> None:
    class Gadget:
        pass

    def decode(data: Any) -> Any:
        raise exc

    reg = TypeRegistry()
    reg.register(Gadget, name="t.Gadget", encode=lambda g: 1, decode=decode)
    s = MsgpackSerializer(registry=reg)
    data = s.dumps([Gadget()])
    with pytest.raises(CorruptCheckpointError, match=type(exc).__name__):
        s.loads(data)


def test_unregistered_classes_are_refused_at_save_with_how_to_register() -> None:
    @dataclasses.dataclass
    class Loose:
        a: int

    with pytest.raises(SerializationError) as info:
        MsgpackSerializer().dumps({"x": [Loose(1)]}, "topic")
    message = str(info.value)
    assert "topic['x'][0]" in message and "Loose" in message
    assert "register_type(Loose" in message and "state schema" in message


def test_values_stored_by_class_reference_still_load_once_registered() -> None:
    # Rows written before this release name unregistered classes by "module:qualname".
    old = b"\x01" + msgpack.packb(
        msgpack.ExtType(13, msgpack.packb([f"{__name__}:Node", {"child": 2}]))
    )
    assert MsgpackSerializer().loads(old) == Node(2)
    with pytest.raises(CorruptCheckpointError, match="not registered"):
        MsgpackSerializer(registry=TypeRegistry()).loads(old)


def test_langchain_messages_are_built_in() -> None:
    messages = pytest.importorskip("langchain_core.messages")
    from langchain_core.messages import (
        AIMessage,
        AIMessageChunk,
        HumanMessage,
        RemoveMessage,
        SystemMessage,
        ToolMessage,
    )

    s = MsgpackSerializer(registry=TypeRegistry())  # nothing registered
    call = {"name": "f", "args": {"x": 1}, "id": "c1", "type": "tool_call"}
    values = [
        HumanMessage("hi", id="1"),
        AIMessage("", tool_calls=[call], id="2"),
        AIMessageChunk(content="par", id="3"),
        ToolMessage("42", tool_call_id="c1"),
        SystemMessage("be brief"),
        RemoveMessage(id="1"),
        messages.FunctionMessage("x", name="f"),
        messages.ChatMessage("x", role="critic"),
        messages.HumanMessageChunk(content="h"),
    ]
    out = s.loads(s.dumps(values))
    assert out == values and [type(m) for m in out] == [type(m) for m in values]


# --------------------------------------------------------------------------- bombs


def zlib_frame(body: bytes) -> bytes:
    return bytes((serde.FORMAT_VERSION | serde._FLAG_ZLIB,)) + zlib.compress(body, 9)


def test_zlib_bomb_is_refused_without_inflating_it() -> None:
    bomb = zlib_frame(b"\x00" * (200 << 20))  # 200 MiB of zeros in ~200 KB
    assert len(bomb) < 1 << 20
    with pytest.raises(CorruptCheckpointError, match="more than the 67108864 bytes"):
        MsgpackSerializer().loads(bomb)
    small = MsgpackSerializer(max_decoded_bytes=1000)
    with pytest.raises(CorruptCheckpointError, match="more than the 1000 bytes"):
        small.loads(zlib_frame(msgpack.packb("x" * 2000)))
    assert small.loads(zlib_frame(msgpack.packb("x" * 900))) == "x" * 900
    with pytest.raises(CorruptCheckpointError, match="truncated"):
        MsgpackSerializer().loads(zlib_frame(msgpack.packb("y" * 900))[:-5])


def test_zstd_bomb_is_refused_by_its_recorded_size() -> None:
    zstandard = pytest.importorskip("zstandard")
    header = bytes((serde.FORMAT_VERSION | serde._FLAG_ZSTD,))
    declared = zstandard.ZstdCompressor(level=3).compress(b"\x00" * (100 << 20))
    with pytest.raises(CorruptCheckpointError, match="104857600 bytes, more than"):
        MsgpackSerializer().loads(header + declared)
    stream = zstandard.ZstdCompressor(write_content_size=False).compress(msgpack.packb("z" * 999))
    with pytest.raises(CorruptCheckpointError, match="does not record its size"):
        MsgpackSerializer().loads(header + stream)
    good = MsgpackSerializer(compression="zstd")
    assert good.loads(good.dumps("z" * 5000)) == "z" * 5000


def test_uncompressed_values_are_bounded_too() -> None:
    small = MsgpackSerializer(max_decoded_bytes=100)
    with pytest.raises(SerializationError, match="max_decoded_bytes=100"):
        small.dumps("x" * 200, "big")
    data = MsgpackSerializer(compression=None).dumps("x" * 200)
    with pytest.raises(CorruptCheckpointError, match="more than the 100 bytes"):
        small.loads(data)


def test_loads_sized_honours_a_recorded_size() -> None:
    s = MsgpackSerializer()
    data = s.dumps("x" * 5000)
    value, held = s.loads_sized(data)
    assert value == "x" * 5000 and held >= 5000
    with pytest.raises(CorruptCheckpointError, match="more than the 100 bytes"):
        s.loads_sized(data, max_bytes=100)


@pytest.mark.parametrize("data", [None, "text", 12, [1], b""], ids=repr)
def test_non_bytes_rows_raise_corrupt(data: Any) -> None:
    with pytest.raises(CorruptCheckpointError):
        MsgpackSerializer().loads(data)


# --------------------------------------------------------------------------- through a graph


class ChatState(TypedDict, total=False):
    messages: Annotated[list[str], operator.add]
    topic: Any


def test_graph_refuses_a_deep_value_and_stores_nothing(tmp_path: Any) -> None:
    g = StateGraph(ChatState)
    g.add_node("echo", lambda state: {"messages": ["echo"]})
    g.add_edge(START, "echo")
    g.add_edge("echo", END)
    config = {"configurable": {"thread_id": "t"}}
    with SqliteSaver.from_conn_string(str(tmp_path / "t.db")) as saver:
        app = g.compile(checkpointer=saver)
        app.invoke({"messages": ["hi"]}, config)
        before = app.get_state(config)
        with pytest.raises(SerializationError, match=r"topic.*max_depth=100"):
            app.invoke({"topic": nest("tuple", 250), "messages": ["more"]}, config)
        after = app.get_state(config)
        assert after.config == before.config and after.values == before.values


def test_graph_readers_survive_a_crafted_deep_row(tmp_path: Any) -> None:
    """The reproduction of issue 8 item 1: every later reader of the thread died (SIGSEGV)."""
    db = str(tmp_path / "t.db")
    row = crafted_ext_chain(1, 700)  # 6 KB; 1.4 KB already crashed
    script = f"""
        import sqlite3
        from typing import Any, TypedDict
        from threadline.checkpoint.sqlite import SqliteSaver
        from threadline.errors import CorruptCheckpointError
        from threadline.graph import END, START, StateGraph

        class State(TypedDict, total=False):
            topic: Any

        g = StateGraph(State)
        g.add_node("n", lambda state: {{}})
        g.add_edge(START, "n")
        g.add_edge("n", END)
        config = {{"configurable": {{"thread_id": "t"}}}}
        with SqliteSaver.from_conn_string({db!r}) as saver:
            # bigger than the crafted row: the size recorded at write time admits it
            g.compile(checkpointer=saver).invoke({{"topic": "harmless" * 2000}}, config)
        con = sqlite3.connect({db!r})
        con.execute("UPDATE versions SET data = ? WHERE channel = 'topic'", ({row!r},))
        con.commit()
        con.close()
        with SqliteSaver.from_conn_string({db!r}) as saver:
            app = g.compile(checkpointer=saver)
            for read in (app.get_state, lambda c: list(app.get_state_history(c)),
                         lambda c: app.invoke({{"topic": "next"}}, c)):
                try:
                    read(config)
                    print("READ")
                except CorruptCheckpointError as exc:
                    print("corrupt", "'t'" in str(exc) and "max_depth" in str(exc))
    """
    result = run_reader(script)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.split("\n")[:3] == ["corrupt True"] * 3, result.stdout
