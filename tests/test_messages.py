"""``add_messages`` and ``MessagesState``: LangGraph's merge rules, and storage as appends.

The langchain-core rules run here (langchain-core is a dev dependency); the dict rules, which
apply when langchain-core is not installed, run in a subprocess that cannot import it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from typing import Any

import pytest

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.errors import InvalidUpdateError
from threadline.graph import END, START, MessagesState, StateGraph, add_messages
from threadline.graph.message import REMOVE_ALL_MESSAGES

lc = pytest.importorskip("langchain_core.messages", reason="needs langchain-core (the extra)")
AIMessage, HumanMessage, RemoveMessage = lc.AIMessage, lc.HumanMessage, lc.RemoveMessage
SystemMessage, ToolMessage, AIMessageChunk = lc.SystemMessage, lc.ToolMessage, lc.AIMessageChunk


def _is_uuid4(value: Any) -> bool:
    return isinstance(value, str) and uuid.UUID(value).version == 4


# ---------------------------------------------------------------------- merge rules


def test_new_messages_get_uuid4_ids_and_are_appended() -> None:
    left = [HumanMessage("hi", id="1")]
    reply = AIMessage("hello")
    merged = add_messages(left, [reply])
    assert [m.content for m in merged] == ["hi", "hello"]
    assert merged[0] is left[0] and merged[1] is reply  # the messages themselves, not copies
    assert _is_uuid4(reply.id)  # as LangGraph: the node's message object gets its id
    assert left == [HumanMessage("hi", id="1")]  # the old list is not changed


def test_an_existing_id_replaces_the_message_where_it_stands() -> None:
    left = [HumanMessage("a", id="1"), AIMessage("b", id="2"), HumanMessage("c", id="3")]
    merged = add_messages(left, [AIMessage("B", id="2"), HumanMessage("d", id="4")])
    assert [(m.id, m.content) for m in merged] == [("1", "a"), ("2", "B"), ("3", "c"), ("4", "d")]
    assert [m.content for m in left] == ["a", "b", "c"]


def test_remove_message_deletes_and_unknown_id_is_an_error() -> None:
    left = [HumanMessage("a", id="1"), AIMessage("b", id="2")]
    assert [m.id for m in add_messages(left, [RemoveMessage(id="1")])] == ["2"]
    # Removed, then written again in the same update: it stays (at its old place).
    again = add_messages(left, [RemoveMessage(id="1"), HumanMessage("a2", id="1")])
    assert [(m.id, m.content) for m in again] == [("1", "a2"), ("2", "b")]
    with pytest.raises(InvalidUpdateError, match="doesn't exist") as info:
        add_messages(left, [RemoveMessage(id="nope")])
    assert isinstance(info.value, ValueError)  # what LangGraph raises, so except ValueError works


def test_remove_all_clears_and_keeps_what_follows() -> None:
    left = [HumanMessage("a", id="1"), AIMessage("b", id="2")]
    merged = add_messages(left, [RemoveMessage(id=REMOVE_ALL_MESSAGES), HumanMessage("new")])
    assert [m.content for m in merged] == ["new"]
    assert add_messages(left, RemoveMessage(id=REMOVE_ALL_MESSAGES)) == []


def test_message_like_inputs_are_converted_as_langgraph_does() -> None:
    merged = add_messages(
        [],
        [
            "plain text",
            ("ai", "a tuple"),
            {"role": "system", "content": "a dict"},
            {"type": "human", "content": "typed dict"},
            {"role": "tool", "content": "result", "tool_call_id": "c1"},
            AIMessageChunk(content="a chunk", id="k"),
        ],
    )
    kinds = [type(m) for m in merged]
    assert kinds == [HumanMessage, AIMessage, SystemMessage, HumanMessage, ToolMessage, AIMessage]
    assert merged[5].id == "k" and merged[5].content == "a chunk"
    assert all(_is_uuid4(m.id) for m in merged[:5])


def test_single_messages_on_either_side() -> None:
    merged = add_messages(HumanMessage("a", id="1"), AIMessage("b", id="2"))
    assert [m.id for m in merged] == ["1", "2"]
    assert [m.content for m in add_messages([], "just text")] == ["just text"]


def test_a_stored_message_without_id_gets_one_in_a_copy() -> None:
    stored = HumanMessage("old")
    merged = add_messages([stored], [AIMessage("new")])
    assert stored.id is None  # a list others share is never changed
    assert merged[0] is not stored and merged[0].content == "old" and _is_uuid4(merged[0].id)


def test_a_returned_list_changed_afterwards_is_checked_again() -> None:
    merged = add_messages([], ["a"])
    merged.append(HumanMessage("added by hand"))  # no id, and not converted by add_messages
    merged.append(("ai", "a tuple by hand"))
    again = add_messages(merged, ["c"])
    assert [type(m) for m in again] == [HumanMessage, HumanMessage, AIMessage, HumanMessage]
    assert all(_is_uuid4(m.id) for m in again)


def test_dict_removal_works_with_langchain_core_too() -> None:
    left = [HumanMessage("a", id="1"), AIMessage("b", id="2")]
    assert [m.id for m in add_messages(left, {"type": "remove", "id": "2"})] == ["1"]


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="both 'left' and 'right'"):
        add_messages([HumanMessage("a")], None)
    with pytest.raises(ValueError, match="unknown format"):
        add_messages([], [], format="xml")  # type: ignore[arg-type]


def test_openai_format() -> None:
    reducer = add_messages(format="langchain-openai")
    assert callable(reducer)
    blocks = [{"type": "text", "text": "hi"}]
    merged = reducer([], [{"role": "user", "content": blocks}, AIMessage(blocks, id="5")])
    # OpenAI's format: one text block becomes a string (and, as in LangGraph, ids are dropped).
    assert [(type(m), m.content) for m in merged] == [(HumanMessage, "hi"), (AIMessage, "hi")]


def test_same_result_as_langgraph() -> None:
    lg_message = pytest.importorskip("langgraph.graph.message")
    cases: list[tuple[Any, Any]] = [
        ([HumanMessage("a", id="1")], [AIMessage("b", id="2"), HumanMessage("A", id="1")]),
        ([HumanMessage("a", id="1"), AIMessage("b", id="2")], [RemoveMessage(id="2")]),
        ([HumanMessage("a", id="1")], [RemoveMessage(id=REMOVE_ALL_MESSAGES), ("ai", "x")]),
        ([HumanMessage("a", id="1")], [{"role": "user", "content": "u"}, ("ai", "t"), "s"]),
        ([HumanMessage("a", id="1")], AIMessageChunk(content="c", id="9")),
    ]

    def shape(messages: list[Any]) -> list[tuple[str, Any, Any]]:
        # Generated ids differ by construction: compare whether there is one, not its value.
        return [(type(m).__name__, m.content, m.id if len(m.id) < 30 else "uuid") for m in messages]

    for left, right in cases:
        ours = add_messages(left, right)
        theirs = lg_message.add_messages(left, right)
        assert shape(ours) == shape(theirs), (left, right)


# ---------------------------------------------------------------------- without langchain-core

_NO_LANGCHAIN = textwrap.dedent(
    """
    import json, sys, uuid

    class Block:  # langchain-core is not installed, as far as this process can tell
        def find_spec(self, name, path=None, target=None):
            if name == "langchain_core" or name.startswith("langchain_core."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            return None

    sys.meta_path.insert(0, Block())
    from threadline.errors import InvalidUpdateError
    from threadline.graph import END, START, MessagesState, StateGraph, add_messages
    from threadline.graph.message import REMOVE_ALL_MESSAGES

    out = {}
    left = [{"role": "user", "content": "a", "id": "1"}]
    reply = {"role": "assistant", "content": "b"}
    merged = add_messages(left, [reply, ("assistant", "t"), "s"])
    out["appended"] = [(m["role"], m["content"]) for m in merged]
    out["uuid4"] = all(uuid.UUID(m["id"]).version == 4 for m in merged[1:])
    out["same_first"] = merged[0] is left[0]
    out["caller_dict_untouched"] = "id" not in reply
    replaced = add_messages(merged, {"role": "user", "content": "A", "id": "1"})
    out["replaced"] = [m["content"] for m in replaced]
    out["removed"] = [m["content"] for m in add_messages(replaced, {"type": "remove", "id": "1"})]
    try:
        add_messages(left, {"type": "remove", "id": "nope"})
    except InvalidUpdateError as exc:
        out["unknown"] = str(exc)
    cleared = add_messages(merged, [{"type": "remove", "id": REMOVE_ALL_MESSAGES}, "x"])
    out["cleared"] = [m["content"] for m in cleared]

    def bot(state):
        return {"messages": [("assistant", "echo " + state["messages"][-1]["content"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("bot", bot)
    builder.add_edge(START, "bot")
    builder.add_edge("bot", END)
    result = builder.compile().invoke({"messages": "hi"})
    out["graph"] = [(m["role"], m["content"]) for m in result["messages"]]
    out["langchain_loaded"] = "langchain_core" in sys.modules
    print(json.dumps(out))
    """
)


def test_dict_messages_without_langchain_core() -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", _NO_LANGCHAIN], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.splitlines()[-1])
    assert out["langchain_loaded"] is False
    assert out["appended"] == [
        ["user", "a"],
        ["assistant", "b"],
        ["assistant", "t"],
        ["user", "s"],
    ]
    assert out["uuid4"] and out["same_first"] and out["caller_dict_untouched"]
    assert out["replaced"] == ["A", "b", "t", "s"]
    assert out["removed"] == ["b", "t", "s"]
    assert "doesn't exist" in out["unknown"]
    assert out["cleared"] == ["x"]
    assert out["graph"] == [["user", "hi"], ["assistant", "echo hi"]]


# ---------------------------------------------------------------------- in a graph, stored


def _chat(saver: BaseCheckpointSaver | None) -> Any:
    def bot(state: MessagesState) -> dict[str, Any]:
        last = state["messages"][-1]
        return {"messages": [AIMessage(f"echo {last.content}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("bot", bot)
    builder.add_edge(START, "bot")
    builder.add_edge("bot", END)
    return builder.compile(checkpointer=saver)


def test_messages_state_in_a_graph() -> None:
    out = _chat(None).invoke({"messages": [("user", "hi")]})
    assert [type(m) for m in out["messages"]] == [HumanMessage, AIMessage]
    assert out["messages"][1].content == "echo hi"
    assert all(_is_uuid4(m.id) for m in out["messages"])


def test_parallel_nodes_append_in_one_step(saver: BaseCheckpointSaver) -> None:
    builder = StateGraph(MessagesState)
    for name in ("left", "right"):
        builder.add_node(name, lambda s, name=name: {"messages": [AIMessage(name, name=name)]})
        builder.add_edge(START, name)
        builder.add_edge(name, END)
    app = builder.compile(checkpointer=saver)
    config = {"configurable": {"thread_id": "fan"}}
    app.invoke({"messages": "a" * 300}, config)
    out = app.invoke({"messages": "b" * 300}, config)
    assert sorted(m.content for m in out["messages"][-2:]) == ["left", "right"]
    assert len(out["messages"]) == 6
    tup = saver.get_tuple(config)
    assert tup is not None
    ref = tup.checkpoint.refs["messages"]
    assert ref.writer == tup.checkpoint.id and ref.chain_bytes > 0  # both appends: one delta


def test_a_node_reading_messages_gets_the_stored_ones_not_copies() -> None:
    seen: list[Any] = []

    def bot(state: MessagesState) -> dict[str, Any]:
        seen.append(state["messages"])
        return {"messages": [AIMessage("x")]}

    builder = StateGraph(MessagesState)
    builder.add_node("bot", bot)
    builder.add_node("again", bot)
    builder.add_edge(START, "bot")
    builder.add_edge("bot", "again")
    builder.add_edge("again", END)
    builder.compile().invoke({"messages": "hi"})
    first, second = seen
    assert first is not second  # each node has its own list...
    assert second[0] is first[0]  # ...of the same (never mutated) message objects


def test_messages_are_stored_as_appends(saver: BaseCheckpointSaver) -> None:
    app = _chat(saver)
    config = {"configurable": {"thread_id": "chat"}}
    for turn in range(12):
        app.invoke({"messages": [HumanMessage(f"turn {turn} " + "x" * 200)]}, config)
    history = list(app.get_state_history(config))
    assert len(history[0].values["messages"]) == 24
    writes = []
    for snap in history:
        tup = saver.get_tuple(snap.config)
        assert tup is not None
        ref = tup.checkpoint.refs.get("messages")
        if ref is None:  # the thread's first input checkpoint: nothing stored yet
            assert snap.metadata["step"] == -1
            continue
        if ref.writer == tup.checkpoint.id:  # this checkpoint wrote the channel
            writes.append(ref.chain_bytes > 0)
    # The first write is a snapshot; every later append is a delta until a snapshot is due.
    assert sum(writes) >= len(writes) * 3 // 4, writes

    # Replacing a message by id is not an append: it is stored as a snapshot, and read back.
    first = history[0].values["messages"][0]
    app.update_state(config, {"messages": [HumanMessage("edited", id=first.id)]})
    tup = saver.get_tuple(config)
    assert tup is not None
    ref = tup.checkpoint.refs["messages"]
    assert ref.writer == tup.checkpoint.id and ref.chain_bytes == 0
    messages = app.get_state(config).values["messages"]
    assert messages[0].content == "edited" and len(messages) == 24


async def test_messages_are_stored_as_appends_async(asaver: BaseCheckpointSaver) -> None:
    app = _chat(asaver)
    config = {"configurable": {"thread_id": "chat"}}
    for turn in range(8):
        await app.ainvoke({"messages": f"turn {turn} " + "y" * 200}, config)
    deltas = 0
    async for snap in app.aget_state_history(config):
        tup = await asaver.aget_tuple(snap.config)
        assert tup is not None
        ref = tup.checkpoint.refs.get("messages")
        if ref is None:  # the thread's first input checkpoint: nothing stored yet
            assert snap.metadata["step"] == -1
            continue
        deltas += ref.writer == tup.checkpoint.id and ref.chain_bytes > 0
    assert deltas >= 10
    state = await app.aget_state(config)
    assert [m.content for m in state.values["messages"][-2:]] == [
        "turn 7 " + "y" * 200,
        "echo turn 7 " + "y" * 200,
    ]
