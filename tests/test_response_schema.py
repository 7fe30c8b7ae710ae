"""``interrupt(value, response_schema=...)``: the JSON Schema an interrupt shows, the answer
validated on resume, and an answer the schema rejects, which raises and is not kept (the thread
stays paused on the same interrupt, to be answered again).

The programs in the first half run on threadline and on LangGraph 1.2 (when installed) and must
observe the same; the second half covers what only threadline has to keep: every backend,
async runs, a restart of the process, stored rows written before the field existed, and
pydantic being optional.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import operator
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Annotated, Any

import msgpack
import pytest
from counting import Calls, fresh_config
from pydantic import BaseModel, ValidationError
from typing_extensions import TypedDict

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.checkpoint.serde import MsgpackSerializer
from threadline.errors import is_invalid_resume
from threadline.graph import START, StateGraph
from threadline.types import Command, Interrupt, RetryPolicy, interrupt

ROOT = Path(__file__).resolve().parent.parent
LIBRARIES = ["threadline", "langgraph"]


class Decision(BaseModel):
    approved: bool
    note: str = ""


class Pick(TypedDict):
    choice: str
    count: int


@dataclasses.dataclass
class Size:
    width: int
    height: int = 1


class State(TypedDict, total=False):
    answer: str
    log: Annotated[list[str], operator.add]


def _lib(name: str) -> SimpleNamespace:
    """The modules a program uses, from ``threadline`` or ``langgraph``."""
    if name == "langgraph":
        pytest.importorskip("langgraph", reason="compares with langgraph 1.2")
    mod = {m: importlib.import_module(f"{name}.{m}") for m in ("graph", "types", "errors", "func")}
    memory = importlib.import_module(f"{name}.checkpoint.memory")
    return SimpleNamespace(
        StateGraph=mod["graph"].StateGraph, START=mod["graph"].START,
        interrupt=mod["types"].interrupt, Command=mod["types"].Command,
        Interrupt=mod["types"].Interrupt, RetryPolicy=mod["types"].RetryPolicy,
        is_invalid_resume=mod["errors"].is_invalid_resume,
        entrypoint=mod["func"].entrypoint, task=mod["func"].task, Saver=memory.InMemorySaver,
    )  # fmt: skip


def _both(program: Any) -> Any:
    """``program(lib)`` on both libraries: what threadline observes must be LangGraph's."""
    ours = program(_lib("threadline"))
    theirs = program(_lib("langgraph"))
    assert ours == theirs
    return ours


def _asking(lib: SimpleNamespace, schema: Any, calls: list[str] | None = None) -> Any:
    """START -> ask, which asks once with ``schema`` and stores the repr of the answer."""

    def ask(state: State) -> dict[str, Any]:
        if calls is not None:
            calls.append("ask")
        answer = lib.interrupt({"ask": "size?"}, response_schema=schema)
        return {"answer": repr(answer)}

    builder = lib.StateGraph(State)
    builder.add_node("ask", ask)
    builder.add_edge(lib.START, "ask")
    return builder.compile(checkpointer=lib.Saver())


def _failure(lib: SimpleNamespace, run: Any) -> tuple[str, bool]:
    try:
        run()
    except Exception as exc:
        return type(exc).__name__, lib.is_invalid_resume(exc)
    return "no error", False


# ---------------------------------------------------------------------- as LangGraph does


SCHEMAS = {  # kind: (schema, answer, the answer as interrupt() returns it, by repr)
    "model": (Decision, {"approved": "yes"}, "Decision(approved=True, note='')"),
    "typeddict": (Pick, {"choice": "b", "count": "2"}, "{'choice': 'b', 'count': 2}"),
    "dataclass": (Size, {"width": 3}, "Size(width=3, height=1)"),
    "int": (int, "7", "7"),
    "list": (list[str], ("a", "b"), "['a', 'b']"),
}


@pytest.mark.parametrize("kind", SCHEMAS)
def test_the_interrupt_shows_json_schema_and_returns_the_validated_answer(kind: str) -> None:
    schema, answer, validated = SCHEMAS[kind]

    def program(lib: SimpleNamespace) -> Any:
        app = _asking(lib, schema)
        config = fresh_config()
        (asked,) = app.invoke({}, config)["__interrupt__"]
        shown = app.get_state(config).interrupts[0].response_schema
        done = app.invoke(lib.Command(resume=answer), config)
        return asked.response_schema, shown, done["answer"]

    shown, again, returned = _both(program)
    assert isinstance(shown, dict) and shown == again and returned == validated


def test_a_dict_schema_is_shown_as_it_is_and_answers_are_not_checked() -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}

    def program(lib: SimpleNamespace) -> Any:
        app = _asking(lib, schema)
        config = fresh_config()
        (asked,) = app.invoke({}, config)["__interrupt__"]
        done = app.invoke(lib.Command(resume="not an object"), config)
        return asked.response_schema, done["answer"]

    assert _both(program) == (schema, "'not an object'")


def test_interrupt_repr_and_fields_are_langgraphs() -> None:
    def program(lib: SimpleNamespace) -> Any:
        plain = lib.Interrupt(value="v", id="i1")
        typed = lib.Interrupt(value="v", id="i1", response_schema={"type": "string"})
        app = _asking(lib, None)
        (asked,) = app.invoke({}, fresh_config())["__interrupt__"]
        return repr(plain), repr(typed), plain == typed, asked.response_schema

    assert _both(program) == (
        "Interrupt(value='v', id='i1', response_schema=None)",
        "Interrupt(value='v', id='i1', response_schema={'type': 'string'})",
        False,
        None,
    )


def test_an_invalid_answer_raises_and_the_same_interrupt_is_answered_again() -> None:
    def program(lib: SimpleNamespace) -> Any:
        calls: list[str] = []
        app = _asking(lib, Decision, calls)
        config = fresh_config()
        (asked,) = app.invoke({}, config)["__interrupt__"]
        failed = _failure(lib, lambda: app.invoke(lib.Command(resume={"approved": "?"}), config))
        paused = app.get_state(config)
        still = [
            (i.id == asked.id, i.response_schema == asked.response_schema)
            for i in paused.interrupts
        ]
        erred = [t.error is not None for t in paused.tasks]
        by_id = lib.Command(resume={asked.id: {"approved": "perhaps"}})
        failed_by_id = _failure(lib, lambda: app.invoke(by_id, config))
        done = app.invoke(lib.Command(resume={asked.id: {"approved": True}}), config)
        return failed, paused.next, still, erred, failed_by_id, done["answer"], len(calls)

    assert _both(program) == (
        ("ValidationError", True),
        ("ask",),
        [(True, True)],
        [True],
        ("ValidationError", True),
        "Decision(approved=True, note='')",
        4,  # asked, rejected twice, answered
    )


def test_a_rejected_answer_in_parallel_keeps_the_siblings_answer() -> None:
    def program(lib: SimpleNamespace) -> Any:
        calls: list[str] = []

        def node(name: str, schema: Any) -> Any:
            def fn(state: State) -> dict[str, Any]:
                calls.append(name)
                return {"log": [f"{name}={lib.interrupt(name, response_schema=schema)!r}"]}

            return fn

        builder = lib.StateGraph(State)
        builder.add_node("a", node("a", Pick))
        builder.add_node("b", node("b", int))
        builder.add_edge(lib.START, "a")
        builder.add_edge(lib.START, "b")
        app = builder.compile(checkpointer=lib.Saver())
        config = fresh_config()
        ia, ib = app.invoke({}, config)["__interrupt__"]
        resume = lib.Command(resume={ia.id: {"choice": "x"}, ib.id: "5"})
        failed = _failure(lib, lambda: app.invoke(resume, config))
        paused = app.get_state(config)
        pending = [i.value for i in paused.interrupts]
        done = app.invoke(lib.Command(resume={ia.id: {"choice": "x", "count": 1}}), config)
        return failed, paused.next, pending, sorted(done["log"]), sorted(calls)

    failed, next_, pending, log, calls = _both(program)
    assert failed == ("ValidationError", True) and next_ == ("a",) and pending == ["a"]
    assert log == ["a={'choice': 'x', 'count': 1}", "b=5"]
    assert calls == ["a", "a", "a", "b", "b"]  # b's answer was kept: b did not run again


def test_a_rejected_second_answer_keeps_the_first() -> None:
    def program(lib: SimpleNamespace) -> Any:
        calls: list[str] = []

        def two(state: State) -> dict[str, Any]:
            calls.append("two")
            first = lib.interrupt("first", response_schema=int)
            second = lib.interrupt("second", response_schema=Size)
            return {"answer": f"{first!r} {second!r}"}

        builder = lib.StateGraph(State)
        builder.add_node("two", two)
        builder.add_edge(lib.START, "two")
        app = builder.compile(checkpointer=lib.Saver())
        config = fresh_config()
        app.invoke({}, config)
        asked = app.invoke(lib.Command(resume="1"), config)["__interrupt__"]
        failed = _failure(lib, lambda: app.invoke(lib.Command(resume={"width": "w"}), config))
        pending = [i.value for i in app.get_state(config).interrupts]
        done = app.invoke(lib.Command(resume={"width": 2}), config)
        return [i.value for i in asked], failed, pending, done["answer"], len(calls)

    assert _both(program) == (
        ["second"],
        ("ValidationError", True),
        ["second"],
        "1 Size(width=2, height=1)",
        4,
    )


def test_a_rejected_answer_inside_a_subgraph() -> None:
    def program(lib: SimpleNamespace) -> Any:
        inner = _asking(lib, Decision)
        builder = lib.StateGraph(State)
        builder.add_node("inner", inner)
        builder.add_edge(lib.START, "inner")
        app = builder.compile(checkpointer=lib.Saver())
        config = fresh_config()
        (asked,) = app.invoke({}, config)["__interrupt__"]
        failed = _failure(lib, lambda: app.invoke(lib.Command(resume={"note": 1}), config))
        pending = [i.id == asked.id for i in app.get_state(config).interrupts]
        done = app.invoke(lib.Command(resume={"approved": False}), config)
        return asked.response_schema["title"], failed, pending, done["answer"]

    assert _both(program) == (
        "Decision",
        ("ValidationError", True),
        [True],
        "Decision(approved=False, note='')",
    )


def test_a_rejected_answer_in_a_task_of_an_entrypoint() -> None:
    def program(lib: SimpleNamespace) -> Any:
        calls: list[str] = []

        @lib.task
        def confirm(n: int) -> Any:
            calls.append("confirm")
            return lib.interrupt(f"take {n}?", response_schema=Decision)

        @lib.entrypoint(checkpointer=lib.Saver())
        def flow(n: int) -> str:
            calls.append("flow")
            return repr(confirm(n).result())

        config = fresh_config()
        (asked,) = flow.invoke(2, config)["__interrupt__"]
        failed = _failure(lib, lambda: flow.invoke(lib.Command(resume={"approved": []}), config))
        done = flow.invoke(lib.Command(resume={"approved": "true"}), config)
        return asked.value, failed, done, len(calls)

    assert _both(program) == (
        "take 2?",
        ("ValidationError", True),
        "Decision(approved=True, note='')",
        6,  # each of the three runs runs the entrypoint and its task
    )


def test_stream_updates_carry_the_schema() -> None:
    def program(lib: SimpleNamespace) -> Any:
        app = _asking(lib, int)
        chunks = list(app.stream({}, fresh_config(), stream_mode="updates"))
        return [[i.response_schema for i in c["__interrupt__"]] for c in chunks]

    assert _both(program) == [[{"type": "integer"}]]


# ---------------------------------------------------------------------- ToolNode


def _tool_program(lib_name: str, resume: Any, *, agent: bool) -> Any:
    """A ToolNode (or a react agent) whose tool asks for a Decision: what the run returns, or
    raises, on resume."""
    pytest.importorskip("langchain_core")
    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
    from langchain_core.messages import AIMessage
    from langchain_core.tools import tool

    class Model(FakeMessagesListChatModel):
        def bind_tools(self, tools: Any, **kwargs: Any) -> Model:
            return self

    lib = _lib(lib_name)
    prebuilt = importlib.import_module(f"{lib_name}.prebuilt")
    graph_mod = importlib.import_module(f"{lib_name}.graph")

    @tool
    def transfer(amount: int) -> str:
        """Moves money after a person approves."""
        decision = lib.interrupt({"amount": amount}, response_schema=Decision)
        return f"approved={decision.approved}"

    calls = [{"name": "transfer", "args": {"amount": 5}, "id": "c1", "type": "tool_call"}]
    asking = AIMessage("", tool_calls=calls)
    if agent:
        model = Model(responses=[asking, AIMessage("done")])
        app = prebuilt.create_react_agent(model, [transfer], checkpointer=lib.Saver())
        start: Any = {"messages": [("user", "pay 5")]}
    else:
        builder = lib.StateGraph(graph_mod.MessagesState)
        builder.add_node("tools", prebuilt.ToolNode([transfer], handle_tool_errors=True))
        builder.add_edge(lib.START, "tools")
        app = builder.compile(checkpointer=lib.Saver())
        start = {"messages": [asking]}
    config = fresh_config()
    (asked,) = app.invoke(start, config)["__interrupt__"]
    try:
        out = app.invoke(lib.Command(resume=resume), config)
    except Exception as exc:
        still = [i.id == asked.id for i in app.get_state(config).interrupts]
        return type(exc).__name__, lib.is_invalid_resume(exc), still
    return [(m.type, getattr(m, "status", None), m.content) for m in out["messages"][-2:]]


@pytest.mark.filterwarnings("ignore:create_react_agent has been moved")
@pytest.mark.parametrize("agent", [False, True], ids=["tool_node", "react_agent"])
@pytest.mark.parametrize(
    ("resume", "expected"),
    [
        ({"approved": "no way"}, ("ValidationError", True, [True])),
        ({"approved": True}, "approved=True"),
    ],
    ids=["rejected", "valid"],
)
def test_tool_node_lets_a_rejected_answer_through(resume: Any, expected: Any, agent: bool) -> None:
    # handle_tool_errors=True turns every other error into a message to the model; an answer
    # the interrupt's schema rejects is for the person to fix, so it fails the run instead,
    # and the tool's interrupt waits for another answer.
    ours = _tool_program("threadline", resume, agent=agent)
    assert ours == _tool_program("langgraph", resume, agent=agent)
    if isinstance(expected, tuple):
        assert ours == expected
    else:
        answered = ("tool", "success", expected)
        last_two = [answered, ("ai", None, "done")] if agent else [("ai", None, ""), answered]
        assert ours == last_two


def test_tool_node_still_reports_bad_tool_arguments_to_the_model() -> None:
    pytest.importorskip("langchain_core")
    from langchain_core.tools import tool

    from threadline.prebuilt import ToolNode

    @tool
    def size(width: int) -> str:
        """Asks for a size."""
        return repr(interrupt("size?", response_schema=Size))

    call = {"name": "size", "args": {"width": "wide"}, "id": "c1", "type": "tool_call"}
    (msg,) = ToolNode([size]).invoke([call])["messages"]
    assert msg.status == "error" and "width" in msg.content


# ---------------------------------------------------------------------- threadline: backends


def _approval_app(saver: BaseCheckpointSaver, calls: Calls, **node: Any) -> Any:
    def review(state: State) -> dict[str, Any]:
        calls.hit("review")
        decision = interrupt({"draft": "d"}, response_schema=Decision)
        return {"answer": "yes" if decision.approved else "no", "log": ["review"]}

    builder = StateGraph(State)
    builder.add_node("review", review, **node)
    builder.add_edge(START, "review")
    return builder.compile(checkpointer=saver)


def test_a_rejected_answer_is_not_kept_on_any_backend(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _approval_app(saver, calls)
    config = fresh_config()
    (asked,) = app.invoke({}, config)["__interrupt__"]
    assert asked.response_schema["required"] == ["approved"]
    head = app.get_state(config).config
    with pytest.raises(ValidationError) as failed:
        app.invoke(Command(resume={"approved": "?"}), config)
    assert is_invalid_resume(failed.value)
    assert "answer again with Command(resume=...)" in failed.value.__notes__[-1]
    state = app.get_state(config)
    assert state.config == head  # no checkpoint was added
    assert state.next == ("review",) and state.interrupts == (asked,)
    (task,) = state.tasks
    assert task.interrupts == (asked,) and "ValidationError" in str(task.error)
    # Continuing without an answer asks again (the rejected answer is gone).
    assert app.invoke(None, config)["__interrupt__"] == [asked]
    assert app.get_state(config).tasks[0].error is None
    assert app.invoke(Command(resume={asked.id: {"approved": True}}), config)["answer"] == "yes"
    assert calls["review"] == 4
    assert app.get_state(config).next == ()


def test_a_rejected_answer_is_not_retried(saver: BaseCheckpointSaver) -> None:
    # The same answer fails the same way; LangGraph's retry would swallow the error (and pause
    # again), threadline reports it.
    calls = Calls()
    retry = RetryPolicy(retry_on=Exception, max_attempts=3, initial_interval=0.01)
    app = _approval_app(saver, calls, retry_policy=retry)
    config = fresh_config()
    app.invoke({}, config)
    with pytest.raises(ValidationError):
        app.invoke(Command(resume={"approved": "?"}), config)
    assert calls["review"] == 2
    assert app.invoke(Command(resume={"approved": False}), config)["answer"] == "no"


def test_a_rejected_answer_with_durability_exit(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _approval_app(saver, calls)
    config = fresh_config()
    app.invoke({}, config, durability="exit")
    with pytest.raises(ValidationError):
        app.invoke(Command(resume={"approved": "?"}), config, durability="exit")
    assert len(app.get_state(config).interrupts) == 1
    done = app.invoke(Command(resume={"approved": True}), config, durability="exit")
    assert done["answer"] == "yes"


async def test_async_a_rejected_answer_is_not_kept(asaver: BaseCheckpointSaver) -> None:
    calls = Calls()

    async def review(state: State) -> dict[str, Any]:
        calls.hit("review")
        await asyncio.sleep(0)
        pick = interrupt("pick", response_schema=Pick)
        return {"answer": f"{pick['choice']}x{pick['count']}"}

    builder = StateGraph(State)
    builder.add_node("review", review)
    builder.add_edge(START, "review")
    app = builder.compile(checkpointer=asaver)
    config = fresh_config()
    (asked,) = (await app.ainvoke({}, config))["__interrupt__"]
    with pytest.raises(ValidationError) as failed:
        await app.ainvoke(Command(resume={asked.id: {"choice": "a"}}), config)
    assert is_invalid_resume(failed.value)
    state = await app.aget_state(config)
    assert state.interrupts == (asked,)
    done = await app.ainvoke(Command(resume={"choice": "a", "count": "3"}), config)
    assert done["answer"] == "ax3" and calls["review"] == 3


# ---------------------------------------------------------------------- stored, restarted

PROGRAM = textwrap.dedent(
    """
    import sys
    from typing import TypedDict

    from pydantic import BaseModel, ValidationError

    from threadline.checkpoint.sqlite import SqliteSaver
    from threadline.graph import START, StateGraph
    from threadline.types import Command, interrupt


    class Decision(BaseModel):
        approved: bool


    class State(TypedDict, total=False):
        answer: str


    def review(state):
        return {"answer": repr(interrupt("ok?", response_schema=Decision))}


    builder = StateGraph(State)
    builder.add_node("review", review)
    builder.add_edge(START, "review")
    config = {"configurable": {"thread_id": "t"}}
    step, path = sys.argv[1], sys.argv[2]
    with SqliteSaver.from_conn_string(path) as saver:
        app = builder.compile(checkpointer=saver)
        if step == "ask":
            app.invoke({}, config)
        elif step == "reject":
            try:
                app.invoke(Command(resume={"approved": "?"}), config)
            except ValidationError:
                print("rejected")
        elif step == "answer":
            print(app.invoke(Command(resume={"approved": True}), config)["answer"])
        state = app.get_state(config)
        print([(i.value, i.response_schema) for i in state.interrupts])
    """
)


def test_the_schema_and_the_pause_survive_a_restart(tmp_path: Path) -> None:
    script = tmp_path / "program.py"
    script.write_text(PROGRAM)
    db = str(tmp_path / "t.db")

    def run(step: str) -> list[str]:
        out = subprocess.run(
            [sys.executable, str(script), step, db],
            capture_output=True, text=True, check=True, timeout=60,
            env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""},
        )  # fmt: skip
        return out.stdout.splitlines()

    shown = (
        "[('ok?', {'properties': {'approved': {'title': 'Approved', 'type': 'boolean'}},"
        " 'required': ['approved'], 'title': 'Decision', 'type': 'object'})]"
    )
    assert run("ask") == [shown]
    assert run("show") == [shown]
    assert run("reject") == ["rejected", shown]
    assert run("show") == [shown]
    assert run("answer") == ["Decision(approved=True)", "[]"]


def test_interrupts_stored_before_the_field_existed_still_load() -> None:
    serde = MsgpackSerializer()
    # As threadline stored an Interrupt before it had response_schema: a dataclass (code 13).
    fields = {"value": "v", "id": "i"}
    old = msgpack.ExtType(13, msgpack.packb(["threadline.types:Interrupt", fields]))
    loaded = serde.loads(b"\x01" + msgpack.packb([old]))
    assert loaded == [Interrupt(value="v", id="i")] and loaded[0].response_schema is None
    new = Interrupt(value="v", id="i", response_schema={"type": "integer"})
    assert serde.loads(serde.dumps([new])) == [new]


# ---------------------------------------------------------------------- without pydantic

NO_PYDANTIC = textwrap.dedent(
    """
    import sys
    sys.modules["pydantic"] = None  # as if it were not installed: importing it fails
    from typing import TypedDict

    from threadline.checkpoint.memory import InMemorySaver
    from threadline.graph import START, StateGraph
    from threadline.types import Command, interrupt


    class Pick(TypedDict):
        choice: str


    class State(TypedDict, total=False):
        answer: str


    def build(schema):
        def ask(state):
            return {"answer": interrupt("pick", response_schema=schema)}

        builder = StateGraph(State)
        builder.add_node("ask", ask)
        builder.add_edge(START, "ask")
        return builder.compile(checkpointer=InMemorySaver())


    config = {"configurable": {"thread_id": "t"}}
    app = build({"type": "string"})
    print(app.invoke({}, config)["__interrupt__"][0].response_schema)
    print(app.invoke(Command(resume="b"), config)["answer"])
    try:
        build(Pick).invoke({}, config)
    except ImportError as exc:
        print(exc)
    """
)


def test_a_class_schema_without_pydantic_says_to_install_it(tmp_path: Path) -> None:
    script = tmp_path / "no_pydantic.py"
    script.write_text(NO_PYDANTIC)
    out = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True, text=True, check=True, timeout=60,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": ""},
    )  # fmt: skip
    shown, answer, error = out.stdout.splitlines()
    assert (shown, answer) == ("{'type': 'string'}", "b")
    assert error.startswith("interrupt(response_schema=Pick) needs pydantic")
    assert "pip install 'threadline[pydantic]'" in error
