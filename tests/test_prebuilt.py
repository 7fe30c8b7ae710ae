"""threadline.prebuilt: ToolNode, tools_condition, create_react_agent and ValidationNode, with
langchain-core's fake chat models (given a ``bind_tools`` that records what the model was shown,
as LangGraph's own tests do)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Annotated, Any

import pytest

pytest.importorskip("langchain_core")

from langchain_core.language_models.fake_chat_models import (
    FakeMessagesListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import (
    AIMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.tools import InjectedToolCallId, tool
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import BaseModel
from store_backends import STORE_BACKENDS, StoreBackend
from typing_extensions import TypedDict

from threadline.checkpoint.memory import InMemorySaver
from threadline.graph import END, START, MessagesState, StateGraph
from threadline.prebuilt import (
    InjectedState,
    InjectedStore,
    ToolNode,
    ToolRuntime,
    ValidationNode,
    create_react_agent,
    tools_condition,
)
from threadline.prebuilt.chat_agent_executor import AgentState, AgentStatePydantic
from threadline.store.memory import InMemoryStore
from threadline.types import Command

ROOT = Path(__file__).resolve().parent.parent


class FakeChat(FakeMessagesListChatModel):
    """Answers from a list; ``bind_tools`` records the tool schemas the model would see."""

    bound: list[Any] = []
    seen: list[Any] = []

    def bind_tools(self, tools: Any, **kwargs: Any) -> FakeChat:
        self.bound.extend(convert_to_openai_tool(t) for t in tools)
        return self

    def _generate(self, messages: Any, *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


class FakeStreamingChat(GenericFakeChatModel):
    def bind_tools(self, tools: Any, **kwargs: Any) -> FakeStreamingChat:
        return self


def call(name: str, id: str, **args: Any) -> dict[str, Any]:
    return {"name": name, "args": args, "id": id, "type": "tool_call"}


def ask(*calls: dict[str, Any]) -> AIMessage:
    return AIMessage("", tool_calls=list(calls))


@tool
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool
def fail(x: int) -> str:
    """Always fails."""
    raise ValueError(f"bad {x}")


# ---------------------------------------------------------------------- ToolNode: input forms


def test_tool_node_dict_input_answers_in_call_order() -> None:
    node = ToolNode([add])
    out = node.invoke({"messages": [ask(call("add", "1", a=1, b=2), call("add", "2", a=5, b=5))]})
    msgs = out["messages"]
    assert [(m.tool_call_id, m.name, m.content) for m in msgs] == [
        ("1", "add", "3"),
        ("2", "add", "10"),
    ]
    assert all(isinstance(m, ToolMessage) for m in msgs)


def test_tool_node_list_and_tool_call_inputs() -> None:
    node = ToolNode([add])
    as_list = node.invoke([HumanMessage("hi"), ask(call("add", "1", a=1, b=1))])
    assert isinstance(as_list, list) and as_list[0].content == "2"
    direct = node.invoke([call("add", "7", a=2, b=2)])
    assert direct["messages"][0].tool_call_id == "7" and direct["messages"][0].content == "4"
    with_ctx = node.invoke(
        {"__type": "tool_call_with_context", "tool_call": call("add", "8", a=3, b=3), "state": {}}
    )
    assert with_ctx["messages"][0].content == "6"
    with pytest.raises(ValueError, match="No message found"):
        node.invoke({"messages": []})
    with pytest.raises(ValueError, match="No AIMessage"):
        node.invoke({"messages": [HumanMessage("hi")]})


def test_tool_node_runs_sync_tools_in_parallel() -> None:
    # Each call waits for the other: they can only both finish if they run at the same time.
    barrier = threading.Barrier(2, timeout=10)

    @tool
    def meet(x: int) -> int:
        """Waits for the other call."""
        barrier.wait()
        return x

    out = ToolNode([meet]).invoke(
        {"messages": [ask(call("meet", "a", x=1), call("meet", "b", x=2))]}
    )
    assert [m.content for m in out["messages"]] == ["1", "2"]


async def test_tool_node_runs_async_tools_concurrently() -> None:
    arrived: list[int] = []
    both = asyncio.Event()

    @tool
    async def meet(x: int) -> int:
        """Waits for the other call."""
        arrived.append(x)
        if len(arrived) == 2:
            both.set()
        await asyncio.wait_for(both.wait(), 10)
        return x

    msg = ask(call("meet", "a", x=1), call("meet", "b", x=2))
    out = await ToolNode([meet]).ainvoke({"messages": [msg]})
    assert [m.content for m in out["messages"]] == ["1", "2"]


def test_tool_node_content_of_non_string_results() -> None:
    @tool
    def data() -> dict[str, Any]:
        """Returns a dict."""
        return {"a": [1, 2]}

    out = ToolNode([data]).invoke([call("data", "1")])
    assert out["messages"][0].content == '{"a": [1, 2]}'


# ---------------------------------------------------------------------- ToolNode: errors


def test_default_error_handling_reports_bad_arguments_and_raises_tool_errors() -> None:
    node = ToolNode([add, fail])
    out = node.invoke([call("add", "1", a="x", b=2)])
    msg = out["messages"][0]
    assert msg.status == "error"
    assert msg.content.startswith("Error invoking tool 'add' with kwargs {'a': 'x', 'b': 2}")
    assert "a: Input should be a valid integer" in msg.content
    assert msg.content.endswith("Please fix the error and try again.")
    with pytest.raises(ValueError, match="bad 1"):
        node.invoke([call("fail", "2", x=1)])


def test_unknown_tool_is_an_error_message() -> None:
    out = ToolNode([add]).invoke([call("nope", "1")])
    msg = out["messages"][0]
    assert msg.status == "error" and msg.name == "nope"
    assert msg.content == "Error: nope is not a valid tool, try one of [add]."


@pytest.mark.parametrize(
    ("flag", "content"),
    [
        (True, "Error: ValueError('bad 1')\n Please fix your mistakes."),
        ("tool broke", "tool broke"),
        (lambda e: f"handled {e}", "handled bad 1"),
        (ValueError, "Error: ValueError('bad 1')\n Please fix your mistakes."),
        ((KeyError, ValueError), "Error: ValueError('bad 1')\n Please fix your mistakes."),
    ],
    ids=["true", "str", "callable", "type", "tuple"],
)
def test_handled_tool_errors(flag: Any, content: str) -> None:
    msg = ToolNode([fail], handle_tool_errors=flag).invoke([call("fail", "1", x=1)])["messages"][0]
    assert (msg.content, msg.status, msg.tool_call_id, msg.name) == (content, "error", "1", "fail")


def test_unhandled_tool_errors_raise() -> None:
    def only_keys(e: KeyError) -> str:
        return "keys"

    for flag in (False, KeyError, (KeyError, TypeError), only_keys):
        with pytest.raises(ValueError, match="bad 1"):
            ToolNode([fail], handle_tool_errors=flag).invoke([call("fail", "1", x=1)])

    def values(e: ValueError | TypeError) -> str:
        return f"v:{e}"

    out = ToolNode([fail], handle_tool_errors=values).invoke([call("fail", "1", x=1)])
    assert out["messages"][0].content == "v:bad 1"


# ---------------------------------------------------------------------- ToolNode: Command


class CounterState(MessagesState):
    count: int


@tool
def bump(n: int, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command[Any]:
    """Adds n to the counter."""
    return Command(
        update={"count": n, "messages": [ToolMessage(f"set {n}", tool_call_id=tool_call_id)]}
    )


@tool
def hop(tool_call_id: Annotated[str, InjectedToolCallId]) -> Command[Any]:
    """Goes to the end node."""
    return Command(
        update={"messages": [ToolMessage("hopping", tool_call_id=tool_call_id)]}, goto="landing"
    )


def _command_graph() -> Any:
    builder = StateGraph(CounterState)
    builder.add_node("tools", ToolNode([bump, hop, add]), destinations=("landing",))
    builder.add_node("landing", lambda s: {"count": s["count"] + 100})
    builder.add_edge(START, "tools")
    return builder.compile()


def test_tools_returning_commands_update_state_and_route() -> None:
    graph = _command_graph()
    msg = ask(call("bump", "1", n=5), call("add", "2", a=1, b=1), call("hop", "3"))
    out = graph.invoke({"messages": [msg], "count": 0})
    assert out["count"] == 105  # bump wrote 5, hop went to landing
    tools = [m for m in out["messages"] if isinstance(m, ToolMessage)]
    assert [(m.tool_call_id, m.content, m.name) for m in tools] == [
        ("1", "set 5", "bump"),
        ("2", "2", "add"),
        ("3", "hopping", "hop"),
    ]


async def test_tools_returning_commands_async() -> None:
    out = await _command_graph().ainvoke({"messages": [ask(call("bump", "1", n=2))], "count": 0})
    assert out["count"] == 2


def test_command_without_its_tool_message_is_rejected() -> None:
    @tool
    def silent() -> Command[Any]:
        """Forgets to answer."""
        return Command(update={"count": 1})

    with pytest.raises(ValueError, match="Expected to have a matching ToolMessage"):
        ToolNode([silent], handle_tool_errors=False).invoke(
            {"messages": [ask(call("silent", "1"))]}
        )


# ---------------------------------------------------------------------- ToolNode: injection


class NoteState(MessagesState):
    user: str


@tool
def whole_state(x: int, state: Annotated[dict, InjectedState]) -> str:
    """Reads the whole state."""
    return f"{x}:{state['user']}:{len(state['messages'])}"


@tool
def one_key(x: int, user: Annotated[str, InjectedState("user")]) -> str:
    """Reads one state key."""
    return f"{x}:{user}"


@tool
def remember(text: str, store: Annotated[Any, InjectedStore()]) -> str:
    """Saves a note."""
    store.put(("notes",), text, {"text": text})
    return "saved"


@tool
def with_runtime(x: int, runtime: ToolRuntime) -> str:
    """Reads the runtime."""
    return f"{x}:{runtime.tool_call_id}:{runtime.context}:{runtime.state['user']}"


@tool
def call_id(x: int, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
    """Reads its call id."""
    return f"{x}:{tool_call_id}"


INJECTING = [whole_state, one_key, remember, with_runtime, call_id]


def test_injected_arguments_are_hidden_from_the_model() -> None:
    model = FakeChat(responses=[AIMessage("hi")])
    model.bound.clear()
    create_react_agent(model, INJECTING)
    params = {
        t["function"]["name"]: set(t["function"]["parameters"]["properties"]) for t in model.bound
    }
    assert params == {
        "whole_state": {"x"},
        "one_key": {"x"},
        "remember": {"text"},
        "with_runtime": {"x"},
        "call_id": {"x"},
    }


def test_injected_state_store_runtime_in_a_graph() -> None:
    store = InMemoryStore()
    builder = StateGraph(NoteState)
    builder.add_node("tools", ToolNode(INJECTING))
    builder.add_edge(START, "tools")
    graph = builder.compile(store=store)
    msg = ask(
        call("whole_state", "1", x=1),
        call("one_key", "2", x=2),
        call("remember", "3", text="milk"),
        call("with_runtime", "4", x=4),
        call("call_id", "5", x=5),
    )
    out = graph.invoke({"messages": [msg], "user": "ann"}, context={"k": 1})
    contents = [m.content for m in out["messages"] if isinstance(m, ToolMessage)]
    assert contents == ["1:ann:1", "2:ann", "saved", "4:4:{'k': 1}:ann", "5:5"]
    assert store.get(("notes",), "milk").value == {"text": "milk"}


def test_injected_state_from_a_message_list_and_missing_store() -> None:
    @tool
    def count(state: Annotated[dict, InjectedState]) -> int:
        """Counts messages."""
        return len(state["messages"])

    out = ToolNode([count]).invoke([HumanMessage("a"), ask(call("count", "1"))])
    assert out[0].content == "2"
    with pytest.raises(ValueError, match="compile your graph with a store"):
        ToolNode([remember], handle_tool_errors=False).invoke([call("remember", "1", text="x")])


# ---------------------------------------------------------------------- tools_condition


def test_tools_condition() -> None:
    assert tools_condition({"messages": [ask(call("add", "1"))]}) == "tools"
    assert tools_condition({"messages": [AIMessage("done")]}) == END
    assert tools_condition([ask(call("add", "1"))]) == "tools"
    assert tools_condition({"chat": [AIMessage("x")]}, messages_key="chat") == END
    with pytest.raises(ValueError, match="No messages found"):
        tools_condition({"messages": []})


def test_tool_node_and_tools_condition_in_a_hand_built_loop() -> None:
    model = FakeChat(responses=[ask(call("add", "1", a=2, b=3)), AIMessage("5")])
    builder = StateGraph(MessagesState)
    builder.add_node("model", lambda s: {"messages": [model.invoke(s["messages"])]})
    builder.add_node("tools", ToolNode([add]))
    builder.add_edge(START, "model")
    builder.add_conditional_edges("model", tools_condition)
    builder.add_edge("tools", "model")
    out = builder.compile().invoke({"messages": [HumanMessage("2+3?")]})
    assert [type(m).__name__ for m in out["messages"]] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
    ]
    assert out["messages"][-1].content == "5"


# ---------------------------------------------------------------------- create_react_agent


def _turns() -> list[AIMessage]:
    return [ask(call("add", "c1", a=1, b=2), call("add", "c2", a=3, b=4)), AIMessage("3 and 7")]


def _kinds(messages: list[Any]) -> list[str]:
    return [type(m).__name__ for m in messages]


def test_agent_loop_on_every_checkpointer(saver: Any) -> None:
    agent = create_react_agent(FakeChat(responses=_turns()), [add], checkpointer=saver)
    config = {"configurable": {"thread_id": "agent-sync"}}
    chunks = list(agent.stream({"messages": [HumanMessage("sums")]}, config, stream_mode="updates"))
    # v2: one tools task per call, each with its own update.
    assert [next(iter(c)) for c in chunks] == ["agent", "tools", "tools", "agent"]
    assert [c["tools"]["messages"][0].content for c in chunks if "tools" in c] == ["3", "7"]
    messages = agent.get_state(config).values["messages"]
    assert _kinds(messages) == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "ToolMessage",
        "AIMessage",
    ]
    assert messages[-1].content == "3 and 7"
    # A second turn on the same thread sees the first.
    agent2 = create_react_agent(FakeChat(responses=[AIMessage("again")]), [add], checkpointer=saver)
    out = agent2.invoke({"messages": [HumanMessage("more")]}, config)
    assert _kinds(out["messages"])[-2:] == ["HumanMessage", "AIMessage"]
    assert len(out["messages"]) == 7


async def test_agent_loop_async_on_every_checkpointer(asaver: Any) -> None:
    agent = create_react_agent(FakeChat(responses=_turns()), [add], checkpointer=asaver)
    config = {"configurable": {"thread_id": "agent-async"}}
    chunks = [c async for c in agent.astream({"messages": [HumanMessage("s")]}, config)]
    assert [next(iter(c)) for c in chunks] == ["agent", "tools", "tools", "agent"]
    state = await agent.aget_state(config)
    assert state.values["messages"][-1].content == "3 and 7"
    assert state.next == ()


async def test_agent_async_tools_on_every_checkpointer(asaver: Any) -> None:
    @tool
    async def aadd(a: int, b: int) -> int:
        """Adds, asynchronously."""
        await asyncio.sleep(0)
        return a + b

    turns = [ask(call("aadd", "c1", a=1, b=2), call("aadd", "c2", a=3, b=4)), AIMessage("done")]
    agent = create_react_agent(FakeChat(responses=turns), [aadd], checkpointer=asaver)
    config = {"configurable": {"thread_id": "agent-async-tools"}}
    out = await agent.ainvoke({"messages": [HumanMessage("s")]}, config)
    assert [m.content for m in out["messages"] if isinstance(m, ToolMessage)] == ["3", "7"]
    history = [s async for s in agent.aget_state_history(config)]
    assert len(history) > 3  # a checkpoint per step, the tools step included


def test_agent_v1_runs_all_calls_in_one_tools_step() -> None:
    agent = create_react_agent(FakeChat(responses=_turns()), [add], version="v1")
    chunks = list(agent.stream({"messages": [HumanMessage("s")]}, stream_mode="updates"))
    assert [next(iter(c)) for c in chunks] == ["agent", "tools", "agent"]
    assert [m.content for m in chunks[1]["tools"]["messages"]] == ["3", "7"]


def test_agent_without_tools_and_bad_arguments() -> None:
    agent = create_react_agent(FakeChat(responses=[AIMessage("hello")]), [])
    assert agent.invoke({"messages": [HumanMessage("hi")]})["messages"][-1].content == "hello"
    with pytest.raises(ValueError, match="Invalid version"):
        create_react_agent(FakeChat(responses=[]), [], version="v3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="unexpected keyword"):
        create_react_agent(FakeChat(responses=[]), [], bogus=1)

    class NoSteps(TypedDict):
        messages: list[Any]

    with pytest.raises(ValueError, match="remaining_steps"):
        create_react_agent(FakeChat(responses=[]), [], state_schema=NoSteps)


@pytest.mark.parametrize(
    "prompt",
    [
        "be brief",
        SystemMessage("be brief"),
        lambda state: [SystemMessage("be brief"), *state["messages"]],
    ],
    ids=["str", "system-message", "callable"],
)
def test_agent_prompt_forms(prompt: Any) -> None:
    model = FakeChat(responses=[AIMessage("ok")])
    model.seen.clear()
    create_react_agent(model, [add], prompt=prompt).invoke({"messages": [HumanMessage("hi")]})
    shown = model.seen[-1]
    assert isinstance(shown[0], SystemMessage) and shown[0].content == "be brief"
    assert shown[1].content == "hi"


def test_agent_prompt_runnable() -> None:
    from langchain_core.runnables import RunnableLambda

    model = FakeChat(responses=[AIMessage("ok")])
    model.seen.clear()
    prompt = RunnableLambda(lambda s: [HumanMessage("rewritten")])
    create_react_agent(model, [], prompt=prompt).invoke({"messages": [HumanMessage("hi")]})
    assert [m.content for m in model.seen[-1]] == ["rewritten"]


def test_agent_stops_when_steps_run_out() -> None:
    model = FakeChat(responses=[ask(call("add", f"c{i}", a=i, b=i)) for i in range(10)])
    agent = create_react_agent(model, [add])
    out = agent.invoke({"messages": [HumanMessage("loop")]}, {"recursion_limit": 4})
    assert out["messages"][-1].content == "Sorry, need more steps to process this request."
    assert not out["messages"][-1].tool_calls


def test_agent_pydantic_state() -> None:
    agent = create_react_agent(FakeChat(responses=_turns()), [add], state_schema=AgentStatePydantic)
    out = agent.invoke({"messages": [HumanMessage("s")]})
    messages = out["messages"] if isinstance(out, dict) else out.messages
    assert messages[-1].content == "3 and 7"


def test_agent_custom_state_schema_reaches_tools() -> None:
    class State(AgentState):
        user: str

    model = FakeChat(responses=[ask(call("one_key", "1", x=1)), AIMessage("done")])
    agent = create_react_agent(model, [one_key], state_schema=State)
    out = agent.invoke({"messages": [HumanMessage("s")], "user": "bo"})
    assert out["messages"][2].content == "1:bo"


class Weather(BaseModel):
    city: str
    sunny: bool


def test_agent_response_format() -> None:
    final = ask(call("Weather", "w", city="sf", sunny=True))
    model = FakeChat(responses=[AIMessage("it is sunny"), final])
    agent = create_react_agent(model, [add], response_format=Weather)
    out = agent.invoke({"messages": [HumanMessage("weather?")]})
    assert out["structured_response"] == Weather(city="sf", sunny=True)
    assert out["messages"][-1].content == "it is sunny"


def test_agent_response_format_with_its_own_prompt() -> None:
    model = FakeChat(
        responses=[AIMessage("it is sunny"), ask(call("Weather", "w", city="x", sunny=False))]
    )
    model.seen.clear()
    agent = create_react_agent(model, [add], response_format=("be structured", Weather))
    out = agent.invoke({"messages": [HumanMessage("weather?")]})
    assert out["structured_response"].city == "x"
    assert model.seen[-1][0].content == "be structured"


def test_agent_pre_and_post_model_hooks() -> None:
    model = FakeChat(responses=_turns())
    model.seen.clear()
    hooks: list[str] = []

    def pre(state: Any) -> dict[str, Any]:
        hooks.append("pre")
        return {"llm_input_messages": [SystemMessage("trimmed"), *state["messages"][-3:]]}

    def post(state: Any) -> dict[str, Any]:
        hooks.append("post")
        return {}

    agent = create_react_agent(model, [add], pre_model_hook=pre, post_model_hook=post)
    out = agent.invoke({"messages": [HumanMessage("s")]})
    assert out["messages"][-1].content == "3 and 7"
    assert hooks == ["pre", "post", "pre", "post"]
    assert all(shown[0].content == "trimmed" for shown in model.seen)


def test_agent_dynamic_model() -> None:
    chosen: list[int] = []
    models = [FakeChat(responses=[AIMessage("from a")]), FakeChat(responses=[AIMessage("from b")])]

    def pick(state: Any, runtime: Any) -> Any:
        i = runtime.context["model"]
        chosen.append(i)
        return models[i]

    agent = create_react_agent(pick, [add])
    out = agent.invoke({"messages": [HumanMessage("hi")]}, context={"model": 1})
    assert out["messages"][-1].content == "from b" and chosen == [1]


async def test_agent_async_dynamic_model() -> None:
    async def pick(state: Any, runtime: Any) -> Any:
        return FakeChat(responses=[AIMessage("async pick")])

    agent = create_react_agent(pick, [add])
    out = await agent.ainvoke({"messages": [HumanMessage("hi")]})
    assert out["messages"][-1].content == "async pick"
    with pytest.raises(RuntimeError, match="Async model callable"):
        agent.invoke({"messages": [HumanMessage("hi")]})


def test_agent_return_direct() -> None:
    @tool(return_direct=True)
    def final(x: int) -> str:
        """Answers directly."""
        return f"final {x}"

    model = FakeChat(responses=[ask(call("final", "1", x=9)), AIMessage("never")])
    out = create_react_agent(model, [final]).invoke({"messages": [HumanMessage("hi")]})
    assert out["messages"][-1].content == "final 9"


def test_agent_interrupt_before_tools_and_resume(saver: Any) -> None:
    agent = create_react_agent(
        FakeChat(responses=_turns()), [add], checkpointer=saver, interrupt_before=["tools"]
    )
    config = {"configurable": {"thread_id": "agent-hitl"}}
    agent.invoke({"messages": [HumanMessage("s")]}, config)
    assert agent.get_state(config).next == ("tools", "tools")
    out = agent.invoke(None, config)
    assert out["messages"][-1].content == "3 and 7"


def test_agent_streams_model_tokens_in_messages_mode() -> None:
    model = FakeStreamingChat(messages=iter([AIMessage("hello there")]))
    agent = create_react_agent(model, [add])
    parts = list(agent.stream({"messages": [HumanMessage("hi")]}, stream_mode="messages"))
    text = "".join(chunk.content for chunk, meta in parts if meta["langgraph_node"] == "agent")
    assert text == "hello there"
    assert len(parts) > 1  # token by token


def test_agent_streams_tool_messages_in_messages_mode() -> None:
    agent = create_react_agent(FakeChat(responses=_turns()), [add])
    parts = list(agent.stream({"messages": [HumanMessage("s")]}, stream_mode="messages"))
    tools = [m.content for m, meta in parts if meta["langgraph_node"] == "tools"]
    assert sorted(tools) == ["3", "7"]


@pytest.mark.parametrize("backend", [b.param() for b in STORE_BACKENDS])
async def test_agent_memory_in_the_store_on_every_store(backend: StoreBackend) -> None:
    @tool
    def save(text: str, store: Annotated[Any, InjectedStore()]) -> str:
        """Saves a memory."""
        store.put(("memories",), text, {"text": text})
        return "saved"

    @tool
    async def asave(text: str, store: Annotated[Any, InjectedStore()]) -> str:
        """Saves a memory."""
        await store.aput(("memories",), text, {"text": text})
        return "saved"

    async with backend.factory() as store:
        model = FakeChat(responses=[ask(call("save", "1", text="likes tea")), AIMessage("noted")])
        if backend.is_async:
            save_tool = asave.model_copy(update={"name": "save"})
            agent = create_react_agent(
                model, [save_tool], store=store, checkpointer=InMemorySaver()
            )
            await agent.ainvoke(
                {"messages": [HumanMessage("x")]}, {"configurable": {"thread_id": "a"}}
            )
            found = await store.asearch(("memories",))
        else:
            agent = create_react_agent(model, [save], store=store, checkpointer=InMemorySaver())
            await asyncio.to_thread(
                agent.invoke,
                {"messages": [HumanMessage("x")]},
                {"configurable": {"thread_id": "a"}},
            )
            found = store.search(("memories",))
        assert [i.value for i in found] == [{"text": "likes tea"}]


# ---------------------------------------------------------------------- ValidationNode


def test_validation_node() -> None:
    node = ValidationNode([Weather])
    out = node.invoke(
        {
            "messages": [
                ask(call("Weather", "1", city="sf", sunny=True), call("Weather", "2", city=1))
            ]
        }
    )
    ok, bad = out["messages"]
    assert ok.content == '{"city":"sf","sunny":true}' and not ok.additional_kwargs
    assert bad.additional_kwargs == {"is_error": True}
    assert bad.content.endswith("Respond after fixing all validation errors.")


# ---------------------------------------------------------------------- without langchain-core


def test_import_without_langchain_core_says_which_extra() -> None:
    code = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "langchain_core" or name.startswith("langchain_core."):
                    raise ImportError(f"No module named {name!r} (blocked)")
                return None

        sys.meta_path.insert(0, Block())
        import threadline.graph  # the graph API works without langchain-core
        try:
            import threadline.prebuilt
        except ImportError as exc:
            print("ERR", exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src")},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stdout and "pip install 'threadline[langchain]'" in out.stdout


def test_docs_agents_examples_run(tmp_path: Path) -> None:
    import re

    doc = (ROOT / "docs" / "agents.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", doc, re.S))
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT / "src")},
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-2:] == ["The weather in sf is sunny.", "likes tea"]


def test_interrupt_inside_a_tool_resumes_without_rerunning_its_sibling(saver: Any) -> None:
    from threadline.types import interrupt

    calls: list[str] = []

    @tool
    def approve(x: int) -> str:
        """Asks a human."""
        calls.append("approve")
        return f"approved {x}: {interrupt({'ok?': x})}"

    @tool
    def count(x: int) -> int:
        """Counts its calls."""
        calls.append("count")
        return x

    model = FakeChat(
        responses=[ask(call("approve", "a", x=1), call("count", "b", x=2)), AIMessage("fin")]
    )
    agent = create_react_agent(model, [approve, count], checkpointer=saver)
    config = {"configurable": {"thread_id": "tool-hitl"}}
    first = agent.invoke({"messages": [HumanMessage("go")]}, config)
    assert [i.value for i in first["__interrupt__"]] == [{"ok?": 1}]
    out = agent.invoke(Command(resume="yes"), config)
    assert calls == ["approve", "count", "approve"] or calls == ["count", "approve", "approve"]
    contents = [m.content for m in out["messages"] if isinstance(m, ToolMessage)]
    assert contents == ["approved 1: yes", "2"] or contents == ["2", "approved 1: yes"]
    assert out["messages"][-1].content == "fin"


def test_handoff_tool_routes_the_parent_graph() -> None:
    @tool
    def to_b(tool_call_id: Annotated[str, InjectedToolCallId]) -> Command[Any]:
        """Hands the conversation to agent b."""
        return Command(
            goto="b",
            graph=Command.PARENT,
            update={"messages": [ToolMessage("handing off", tool_call_id=tool_call_id)]},
        )

    a = create_react_agent(FakeChat(responses=[ask(call("to_b", "h1"))]), [to_b], name="a")
    b = create_react_agent(FakeChat(responses=[AIMessage("b here")]), [], name="b")
    parent = StateGraph(MessagesState)
    parent.add_node("a", a, destinations=("b",))
    parent.add_node("b", b)
    parent.add_edge(START, "a")
    out = parent.compile().invoke({"messages": [HumanMessage("hi")]})
    assert [(type(m).__name__, m.content, m.name) for m in out["messages"]] == [
        ("HumanMessage", "hi", None),
        ("ToolMessage", "handing off", "to_b"),
        ("AIMessage", "b here", "b"),
    ]


def test_tool_node_added_without_a_name_is_named_tools() -> None:
    builder = StateGraph(MessagesState)
    builder.add_node(ToolNode([add]))
    builder.add_edge(START, "tools")
    out = builder.compile().invoke({"messages": [ask(call("add", "1", a=1, b=2))]})
    assert out["messages"][-1].content == "3"
