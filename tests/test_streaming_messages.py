"""stream_mode="messages": tokens of LangChain chat models called inside nodes (by invoke or
stream, sync or async), whole messages nodes write, nostream tags, subgraphs."""

from __future__ import annotations

import operator
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import pytest

pytest.importorskip("langchain_core")

from counting import fresh_config
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.graph import END, START, StateGraph


class State(TypedDict, total=False):
    messages: Annotated[list[Any], operator.add]


def _model(*answers: str) -> GenericFakeChatModel:
    def forever() -> Iterator[AIMessage]:
        while True:
            for a in answers:
                yield AIMessage(content=a)

    return GenericFakeChatModel(messages=forever())


def _graph(*nodes: tuple[str, Any], checkpointer: Any = None) -> Any:
    b = StateGraph(State)
    previous = START
    for name, fn in nodes:
        b.add_node(name, fn)
        b.add_edge(previous, name)
        previous = name
    b.add_edge(previous, END)
    return b.compile(checkpointer=checkpointer)


def _tokens(items: list[Any]) -> list[tuple[str, str, str]]:
    return [(type(m).__name__, m.content, meta["langgraph_node"]) for m, meta in items]


def test_tokens_of_invoke_and_stream_and_whole_node_messages() -> None:
    model = _model("hello big world", "second one", "third")

    def invoked(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    def streamed(state: State) -> dict[str, Any]:
        out: Any = None
        for chunk in model.stream(state["messages"]):
            out = chunk if out is None else out + chunk
        return {"messages": [out]}

    def plain(state: State) -> dict[str, Any]:
        return {"messages": [AIMessage(content="plain", id="p1")]}

    def quiet(state: State) -> dict[str, Any]:
        return {"messages": [model.with_config(tags=["nostream"]).invoke(state["messages"])]}

    app = _graph(("invoked", invoked), ("streamed", streamed), ("plain", plain), ("quiet", quiet))
    items = list(app.stream({"messages": [HumanMessage("hi", id="h1")]}, stream_mode="messages"))
    assert _tokens(items) == [
        ("AIMessageChunk", "hello", "invoked"),
        ("AIMessageChunk", " ", "invoked"),
        ("AIMessageChunk", "big", "invoked"),
        ("AIMessageChunk", " ", "invoked"),
        ("AIMessageChunk", "world", "invoked"),
        ("AIMessageChunk", "second", "streamed"),
        ("AIMessageChunk", " ", "streamed"),
        ("AIMessageChunk", "one", "streamed"),
        # written to state without being streamed: whole, once
        ("AIMessage", "plain", "plain"),
        ("AIMessage", "third", "quiet"),
    ]
    _, meta = items[0]
    assert meta["langgraph_triggers"] == ("branch:to:invoked",)
    assert meta["langgraph_path"] == ("__pregel_pull", "invoked")
    assert meta["langgraph_checkpoint_ns"].startswith("invoked:")
    assert meta["checkpoint_ns"] == meta["langgraph_checkpoint_ns"]
    assert meta["ls_provider"] == "genericfakechatmodel" and meta["ls_model_type"] == "chat"
    # Steps as LangGraph counts them: step 0 applies the input, the first node runs in step 1.
    assert sorted({meta["langgraph_step"] for _, meta in items}) == [1, 2, 3, 4]
    plain_meta = items[8][1]
    assert plain_meta["ls_integration"] == "langgraph" and "ls_provider" not in plain_meta
    # One message id per model run, the same on every chunk.
    assert len({m.id for m, meta in items if meta["langgraph_node"] == "invoked"}) == 1
    # The input message is not news: it is never yielded.
    assert all(m.id != "h1" for m, _ in items)


def test_langsmith_nostream_tag_and_user_tags() -> None:
    model = _model("a b")

    def quiet(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"], {"tags": ["langsmith:nostream"]})]}

    def tagged(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"], {"tags": ["mine"]})]}

    app = _graph(("quiet", quiet), ("tagged", tagged))
    items = list(app.stream({"messages": [HumanMessage("hi")]}, stream_mode="messages"))
    assert _tokens(items) == [
        ("AIMessage", "a b", "quiet"),
        ("AIMessageChunk", "a", "tagged"),
        ("AIMessageChunk", " ", "tagged"),
        ("AIMessageChunk", "b", "tagged"),
    ]
    assert items[1][1]["tags"] == ["mine"]
    assert "tags" not in items[0][1]


async def test_async_nodes_and_sync_nodes_in_astream() -> None:
    model = FakeListChatModel(responses=["abc", "de"])

    async def first(state: State) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    def second(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    app = _graph(("first", first), ("second", second))
    items = [
        item
        async for item in app.astream({"messages": [HumanMessage("hi")]}, stream_mode="messages")
    ]
    assert [(m.content, meta["langgraph_node"]) for m, meta in items] == [
        ("a", "first"),
        ("b", "first"),
        ("c", "first"),
        ("d", "second"),
        ("e", "second"),
    ]
    assert all(isinstance(m, AIMessageChunk) for m, _ in items)


def test_parallel_nodes_each_tagged_with_their_node() -> None:
    model = _model("x y")

    def node(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    b = StateGraph(State)
    b.add_node("left", node)
    b.add_node("right", node)
    b.add_edge(START, "left")
    b.add_edge(START, "right")
    app = b.compile()
    items = list(app.stream({"messages": [HumanMessage("hi")]}, stream_mode="messages"))
    by_node: dict[str, str] = {}
    for m, meta in items:
        by_node[meta["langgraph_node"]] = by_node.get(meta["langgraph_node"], "") + m.content
    assert by_node == {"left": "x y", "right": "x y"}


def _sub_app(model: Any) -> Any:
    def inner(state: State) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"])]}

    sub = _graph(("inner", inner))

    def outer(state: State) -> dict[str, Any]:
        return {"messages": [AIMessage(content="outer")]}

    b = StateGraph(State)
    b.add_node("sub", sub)
    b.add_node("outer", outer)
    b.add_edge(START, "sub")
    b.add_edge("sub", "outer")
    return b.compile()


def test_subgraph_tokens_with_subgraphs_true() -> None:
    app = _sub_app(_model("p q"))
    items = list(
        app.stream({"messages": [HumanMessage("hi")]}, stream_mode="messages", subgraphs=True)
    )
    (ns,) = {ns for ns, _ in items if ns}
    assert len(ns) == 1 and ns[0].startswith("sub:")
    inner = [(m.content, meta) for item_ns, (m, meta) in items if item_ns]
    assert [c for c, _ in inner] == ["p", " ", "q"]
    meta = inner[0][1]
    assert meta["langgraph_node"] == "inner"
    assert meta["langgraph_checkpoint_ns"].startswith(ns[0] + "|inner:")
    assert meta["checkpoint_ns"] == ns[0]
    # The subgraph's answer was streamed: the parent does not yield it again.
    assert [(ns, m.content) for ns, (m, _) in items if not ns] == [((), "outer")]


def test_subgraph_tokens_hidden_without_subgraphs() -> None:
    app = _sub_app(_model("p q"))
    items = list(app.stream({"messages": [HumanMessage("hi")]}, stream_mode="messages"))
    # As LangGraph: no tokens from inside the subgraph, but the message its node wrote.
    assert [(type(m).__name__, m.content, meta["langgraph_node"]) for m, meta in items] == [
        ("AIMessage", "p q", "sub"),
        ("AIMessage", "outer", "outer"),
    ]


def test_graph_invoked_inside_a_node() -> None:
    model = _model("r s")
    sub = _graph(("inner", lambda s: {"messages": [model.invoke(s["messages"])]}))

    def caller(state: State) -> dict[str, Any]:
        out = sub.invoke({"messages": state["messages"]})
        return {"messages": out["messages"][-1:]}

    app = _graph(("caller", caller))
    items = list(
        app.stream({"messages": [HumanMessage("hi")]}, stream_mode="messages", subgraphs=True)
    )
    assert ["".join(m.content for ns, (m, _) in items if ns)] == ["r s"]
    assert not [m for ns, (m, _) in items if not ns]  # already streamed from inside


def test_with_other_modes_and_a_checkpointer(saver: BaseCheckpointSaver) -> None:
    model = _model("u v")
    app = _graph(
        ("talk", lambda s: {"messages": [model.invoke(s["messages"])]}), checkpointer=saver
    )
    config = fresh_config()
    items = list(
        app.stream({"messages": [HumanMessage("hi")]}, config, stream_mode=["messages", "updates"])
    )
    modes = [mode for mode, _ in items]
    assert modes == ["messages", "messages", "messages", "updates"]
    message, meta = items[0][1]
    assert (
        isinstance(message, BaseMessage)
        and meta["thread_id"] == config["configurable"]["thread_id"]
    )
    # Without the mode, nodes run with no handler and no LangChain config of ours.
    assert [c for c in app.stream({"messages": [HumanMessage("again")]}, config)] == [
        {"talk": {"messages": [app.get_state(config).values["messages"][-1]]}}
    ]


def test_model_given_the_node_config_explicitly() -> None:
    model = _model("w z")

    def node(state: State, config: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [model.invoke(state["messages"], config)]}

    app = _graph(("node", node))
    items = list(app.stream({"messages": [HumanMessage("hi")]}, stream_mode="messages"))
    assert "".join(m.content for m, _ in items) == "w z"


async def test_async_subgraph_tokens() -> None:
    model = _model("m n")

    async def inner(state: State) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    sub = _graph(("inner", inner))
    app = _graph(("sub", sub))
    items = [
        item
        async for item in app.astream(
            {"messages": [HumanMessage("hi")]}, stream_mode="messages", subgraphs=True
        )
    ]
    assert [(len(ns), m.content) for ns, (m, _) in items] == [(1, "m"), (1, " "), (1, "n")]
    hidden = [
        (type(m).__name__, m.content)
        async for m, _ in app.astream({"messages": [HumanMessage("hi")]}, stream_mode="messages")
    ]
    assert hidden == [("AIMessage", "m n")]
