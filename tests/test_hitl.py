"""Human in the loop: interrupt_before/after, interrupt(), Command(resume=...), editing a
paused thread, and the errors of a wrong answer. Every test runs on every backend."""

from __future__ import annotations

import itertools
import operator
import uuid
from typing import Annotated, Any, TypedDict

import pytest
from counting import Calls, fresh_config

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.errors import ThreadlineError
from threadline.graph import END, START, StateGraph
from threadline.types import Command, Interrupt, interrupt


class State(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    draft: str
    topic: str


def _chain(names: list[str], calls: Calls) -> StateGraph:
    builder = StateGraph(State)
    for name in names:

        def node(state: State, _name: str = name) -> dict[str, Any]:
            calls.hit(_name)
            return {"log": [_name]}

        builder.add_node(name, node)
    builder.add_edge(START, names[0])
    for a, b in itertools.pairwise(names):
        builder.add_edge(a, b)
    builder.add_edge(names[-1], END)
    return builder


def _review_graph(calls: Calls) -> StateGraph:
    """write -> review (interrupts) -> publish."""

    def write(state: State) -> dict[str, Any]:
        calls.hit("write")
        return {"draft": f"about {state['topic']}", "log": ["write"]}

    def review(state: State) -> dict[str, Any]:
        calls.hit("review:before")
        decision = interrupt({"draft": state["draft"], "ask": "approve?"})
        calls.hit("review:after")
        if decision == "approve":
            return {"log": [f"approved {state['draft']}"]}
        return {"draft": decision, "log": ["edited"]}

    def publish(state: State) -> dict[str, Any]:
        calls.hit("publish")
        return {"log": [f"published {state['draft']}"]}

    builder = StateGraph(State)
    builder.add_sequence([write, review, publish])
    builder.add_edge(START, "write")
    builder.add_edge("publish", END)
    return builder


def _history(app: Any, config: dict[str, Any]) -> list[Any]:
    return list(app.get_state_history(config))


# ---------------------------------------------------------------------- interrupt_before/after


def test_interrupt_before_at_compile(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _chain(["a", "b", "c"], calls).compile(checkpointer=saver, interrupt_before=["b"])
    config = fresh_config()
    result = app.invoke({"log": []}, config)
    assert result == {"log": ["a"]}
    assert calls["b"] == 0
    state = app.get_state(config)
    assert state.next == ("b",)
    assert state.interrupts == ()
    assert app.invoke(None, config) == {"log": ["a", "b", "c"]}
    assert (calls["a"], calls["b"], calls["c"]) == (1, 1, 1)
    assert app.get_state(config).next == ()


def test_interrupt_after_at_compile(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _chain(["a", "b", "c"], calls).compile(checkpointer=saver, interrupt_after=["a"])
    config = fresh_config()
    assert app.invoke({"log": []}, config) == {"log": ["a"]}
    assert app.get_state(config).next == ("b",)
    assert calls["b"] == 0
    assert app.invoke(None, config) == {"log": ["a", "b", "c"]}
    assert (calls["a"], calls["b"], calls["c"]) == (1, 1, 1)


def test_continue_does_not_pause_again_at_the_same_place(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _chain(["a", "b", "c"], calls).compile(checkpointer=saver, interrupt_before=["b", "c"])
    config = fresh_config()
    app.invoke({"log": []}, config)
    assert app.get_state(config).next == ("b",)
    # Continuing runs b, then stops before c (the next place), not before b again.
    assert app.invoke(None, config) == {"log": ["a", "b"]}
    assert app.get_state(config).next == ("c",)
    assert app.invoke(None, config) == {"log": ["a", "b", "c"]}
    assert (calls["a"], calls["b"], calls["c"]) == (1, 1, 1)


def test_interrupt_before_a_node_that_runs_again_in_a_loop(saver: BaseCheckpointSaver) -> None:
    calls = Calls()

    def work(state: State) -> dict[str, Any]:
        calls.hit("work")
        return {"log": ["work"]}

    builder = StateGraph(State)
    builder.add_node("work", work)
    builder.add_edge(START, "work")
    builder.add_conditional_edges(
        "work", lambda s: "work" if len(s["log"]) < 2 else END, ["work", END]
    )
    app = builder.compile(checkpointer=saver, interrupt_before=["work"])
    config = fresh_config()
    app.invoke({"log": []}, config)
    assert calls["work"] == 0
    app.invoke(None, config)  # runs work once, then pauses before its second visit
    assert calls["work"] == 1
    assert app.get_state(config).next == ("work",)
    assert app.invoke(None, config) == {"log": ["work", "work"]}
    assert calls["work"] == 2


def test_interrupt_star_pauses_before_every_node(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _chain(["a", "b"], calls).compile(checkpointer=saver, interrupt_before="*")
    config = fresh_config()
    app.invoke({"log": []}, config)
    assert app.get_state(config).next == ("a",)
    app.invoke(None, config)
    assert app.get_state(config).next == ("b",)
    assert app.invoke(None, config) == {"log": ["a", "b"]}


def test_interrupt_before_and_after_per_invoke(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _chain(["a", "b", "c"], calls).compile(checkpointer=saver)
    config = fresh_config()
    assert app.invoke({"log": []}, config, interrupt_before=["b"]) == {"log": ["a"]}
    assert app.get_state(config).next == ("b",)
    assert app.invoke(None, config, interrupt_after=["b"]) == {"log": ["a", "b"]}
    assert app.get_state(config).next == ("c",)
    assert app.invoke(None, config) == {"log": ["a", "b", "c"]}
    # Per-call options do not stick to the compiled graph.
    assert app.invoke({"log": []}, fresh_config())["log"] == ["a", "b", "c"]


def test_per_call_interrupt_overrides_compile_time(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _chain(["a", "b"], calls).compile(checkpointer=saver, interrupt_before=["b"])
    config = fresh_config()
    assert app.invoke({"log": []}, config, interrupt_before=[]) == {"log": ["a", "b"]}


def test_interrupt_before_and_after_in_stream(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _chain(["a", "b", "c"], calls).compile(checkpointer=saver)
    config = fresh_config()
    chunks = list(app.stream({"log": []}, config, stream_mode="updates", interrupt_after=["a"]))
    assert chunks == [{"a": {"log": ["a"]}}, {"__interrupt__": ()}]  # as in LangGraph
    assert app.get_state(config).next == ("b",)
    chunks = list(app.stream(None, config, stream_mode="updates", interrupt_before=["c"]))
    assert chunks == [{"b": {"log": ["b"]}}, {"__interrupt__": ()}]
    assert app.get_state(config).next == ("c",)
    chunks = list(app.stream(None, config, stream_mode="values"))
    assert chunks[-1] == {"log": ["a", "b", "c"]}
    assert (calls["a"], calls["b"], calls["c"]) == (1, 1, 1)


# ---------------------------------------------------------------------- interrupt()


def test_interrupt_value_reaches_the_caller(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _review_graph(calls).compile(checkpointer=saver)
    config = fresh_config()
    result = app.invoke({"topic": "otters", "log": []}, config)
    (pending,) = result["__interrupt__"]
    assert isinstance(pending, Interrupt)
    assert pending.value == {"draft": "about otters", "ask": "approve?"}
    assert isinstance(pending.id, str) and pending.id
    assert result["log"] == ["write"]
    state = app.get_state(config)
    assert state.next == ("review",)
    assert state.interrupts == (pending,)
    (task,) = state.tasks
    assert task.name == "review"
    assert task.interrupts == (pending,)
    assert calls["review:after"] == 0 and calls["publish"] == 0


def test_interrupt_arrives_as_a_stream_event(saver: BaseCheckpointSaver) -> None:
    app = _review_graph(Calls()).compile(checkpointer=saver)
    config = fresh_config()
    chunks = list(app.stream({"topic": "otters", "log": []}, config, stream_mode="updates"))
    assert chunks[0] == {"write": {"draft": "about otters", "log": ["write"]}}
    last = chunks[-1]
    assert list(last) == ["__interrupt__"]
    (pending,) = last["__interrupt__"]
    assert pending.value["draft"] == "about otters"
    assert app.get_state(config).interrupts == (pending,)


def test_resume_reruns_the_node_and_interrupt_returns_the_answer(
    saver: BaseCheckpointSaver,
) -> None:
    calls = Calls()
    app = _review_graph(calls).compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({"topic": "otters", "log": []}, config)
    result = app.invoke(Command(resume="approve"), config)
    assert result == {
        "topic": "otters",
        "draft": "about otters",
        "log": ["write", "approved about otters", "published about otters"],
    }
    assert "__interrupt__" not in result
    # The node ran again from its start: the code before interrupt() ran twice.
    assert calls["review:before"] == 2
    assert calls["review:after"] == 1
    assert calls["write"] == 1 and calls["publish"] == 1
    state = app.get_state(config)
    assert state.next == () and state.interrupts == ()


def test_resume_with_an_edit(saver: BaseCheckpointSaver) -> None:
    app = _review_graph(Calls()).compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({"topic": "otters", "log": []}, config)
    result = app.invoke(Command(resume="Eleven facts"), config)
    assert result["draft"] == "Eleven facts"
    assert result["log"] == ["write", "edited", "published Eleven facts"]


def test_several_interrupts_in_one_node_are_answered_in_order(
    saver: BaseCheckpointSaver,
) -> None:
    calls = Calls()

    def form(state: State) -> dict[str, Any]:
        calls.hit("form")
        name = interrupt("name?")
        calls.hit("form:name")
        age = interrupt("age?")
        calls.hit("form:age")
        return {"log": [f"{name} is {age}"]}

    builder = StateGraph(State)
    builder.add_node("form", form)
    builder.add_edge(START, "form")
    app = builder.compile(checkpointer=saver)
    config = fresh_config()

    first = app.invoke({"log": []}, config)["__interrupt__"]
    assert [i.value for i in first] == ["name?"]
    second = app.invoke(Command(resume="Ada"), config)["__interrupt__"]
    assert [i.value for i in second] == ["age?"]
    assert second[0].id != first[0].id
    assert app.get_state(config).interrupts == tuple(second)
    result = app.invoke(Command(resume=36), config)
    assert result == {"log": ["Ada is 36"]}
    assert (calls["form"], calls["form:name"], calls["form:age"]) == (3, 2, 1)


def _two_askers(calls: Calls) -> StateGraph:
    def ask_a(state: State) -> dict[str, Any]:
        calls.hit("ask_a")
        return {"log": [f"a={interrupt('question a')}"]}

    def ask_b(state: State) -> dict[str, Any]:
        calls.hit("ask_b")
        return {"log": [f"b={interrupt('question b')}"]}

    def done(state: State) -> dict[str, Any]:
        calls.hit("done")
        return {"log": ["done"]}

    builder = StateGraph(State)
    builder.add_node("ask_a", ask_a)
    builder.add_node("ask_b", ask_b)
    builder.add_node("done", done)
    builder.add_edge(START, "ask_a")
    builder.add_edge(START, "ask_b")
    builder.add_edge(["ask_a", "ask_b"], "done")
    return builder


def test_parallel_interrupts_are_answered_together(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _two_askers(calls).compile(checkpointer=saver)
    config = fresh_config()
    result = app.invoke({"log": []}, config)
    pending = {i.value: i for i in result["__interrupt__"]}
    assert set(pending) == {"question a", "question b"}
    assert set(app.get_state(config).interrupts) == set(pending.values())
    assert set(app.get_state(config).next) == {"ask_a", "ask_b"}
    answer = {pending["question a"].id: "yes", pending["question b"].id: "no"}
    result = app.invoke(Command(resume=answer), config)
    assert result == {"log": ["a=yes", "b=no", "done"]}
    assert (calls["ask_a"], calls["ask_b"], calls["done"]) == (2, 2, 1)


def test_parallel_interrupts_answered_one_at_a_time(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _two_askers(calls).compile(checkpointer=saver)
    config = fresh_config()
    pending = {i.value: i for i in app.invoke({"log": []}, config)["__interrupt__"]}
    result = app.invoke(Command(resume={pending["question a"].id: "yes"}), config)
    # Still paused on b, with the same interrupt id; a's answer is kept.
    assert result["__interrupt__"] == [pending["question b"]]
    assert app.get_state(config).interrupts == (pending["question b"],)
    assert app.get_state(config).next == ("ask_b",)
    result = app.invoke(Command(resume="no"), config)  # the only one left: a bare answer works
    assert result == {"log": ["a=yes", "b=no", "done"]}
    assert calls["ask_a"] == 2  # not rerun once answered
    assert calls["done"] == 1


# ---------------------------------------------------------------------- editing a paused thread


def test_update_state_while_paused_keeps_the_question(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _review_graph(calls).compile(checkpointer=saver)
    config = fresh_config()
    pending = app.invoke({"topic": "otters", "log": []}, config)["__interrupt__"]
    app.update_state(config, {"draft": "A better draft"})
    state = app.get_state(config)
    assert state.values["draft"] == "A better draft"
    assert state.next == ("review",)
    assert list(state.interrupts) == pending
    result = app.invoke(Command(resume="approve"), config)
    assert result["log"] == [
        "write",
        "approved A better draft",
        "published A better draft",
    ]
    assert calls["write"] == 1


def test_update_state_while_paused_before_a_node(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _review_graph(calls).compile(checkpointer=saver, interrupt_before=["publish"])
    config = fresh_config()
    app.invoke({"topic": "otters", "log": []}, config)
    app.invoke(Command(resume="approve"), config)
    assert app.get_state(config).next == ("publish",)
    app.update_state(config, {"draft": "final text"})
    assert app.get_state(config).next == ("publish",)
    result = app.invoke(None, config)
    assert result["log"][-1] == "published final text"
    assert calls["publish"] == 1


def test_resume_and_update_at_once(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _review_graph(calls).compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({"topic": "otters", "log": []}, config)
    result = app.invoke(Command(resume="approve", update={"draft": "edited first"}), config)
    assert result["draft"] == "edited first"
    assert result["log"] == ["write", "approved edited first", "published edited first"]
    assert calls["review:before"] == 2


def test_resume_and_update_after_a_parallel_step(saver: BaseCheckpointSaver) -> None:
    """The step before the pause ran two nodes: the update still needs no as_node."""

    def review(state: State) -> dict[str, Any]:
        return {"log": [f"{interrupt('ok?')}:{state['draft']}"]}

    builder = StateGraph(State)
    builder.add_node("x", lambda s: {"log": ["x"]})
    builder.add_node("y", lambda s: {"log": ["y"]})
    builder.add_node("review", review)
    builder.add_edge(START, "x")
    builder.add_edge(START, "y")
    builder.add_edge(["x", "y"], "review")
    app = builder.compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({"log": [], "draft": "v1"}, config)
    assert app.get_state(config).next == ("review",)
    result = app.invoke(Command(resume="yes", update={"draft": "v2"}), config)
    assert result["log"] == ["x", "y", "yes:v2"]
    app2 = builder.compile(checkpointer=saver)
    config2 = fresh_config()
    app2.invoke({"log": [], "draft": "v1"}, config2)
    app2.update_state(config2, {"draft": "v3"})
    assert app2.invoke(Command(resume="ok"), config2)["log"] == ["x", "y", "ok:v3"]


# ---------------------------------------------------------------------- wrong answers


def _assert_unchanged(app: Any, config: dict[str, Any], before: tuple[int, Any, Any]) -> None:
    history, values, interrupts = before
    assert len(_history(app, config)) == history
    state = app.get_state(config)
    assert state.values == values
    assert state.interrupts == interrupts


def _snapshot(app: Any, config: dict[str, Any]) -> tuple[int, Any, Any]:
    state = app.get_state(config)
    return len(_history(app, config)), state.values, state.interrupts


def test_resume_a_thread_that_is_not_paused(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _chain(["a", "b"], calls).compile(checkpointer=saver)
    config = fresh_config()
    app.invoke({"log": []}, config)
    before = _snapshot(app, config)
    with pytest.raises(ThreadlineError, match="not paused"):
        app.invoke(Command(resume="hello"), config)
    with pytest.raises(ThreadlineError, match="not paused"):
        app.invoke(Command(resume="hello", update={"log": ["x"]}), config)
    _assert_unchanged(app, config, before)
    assert calls["a"] == 1


def test_resume_a_thread_paused_before_a_node_is_not_an_answer(
    saver: BaseCheckpointSaver,
) -> None:
    calls = Calls()
    app = _chain(["a", "b"], calls).compile(checkpointer=saver, interrupt_before=["b"])
    config = fresh_config()
    app.invoke({"log": []}, config)
    before = _snapshot(app, config)
    with pytest.raises(ThreadlineError, match="invoke\\(None, config\\)"):
        app.invoke(Command(resume="hello"), config)
    _assert_unchanged(app, config, before)
    assert app.invoke(None, config) == {"log": ["a", "b"]}


def test_resume_a_thread_that_does_not_exist(saver: BaseCheckpointSaver) -> None:
    app = _review_graph(Calls()).compile(checkpointer=saver)
    config = fresh_config()
    with pytest.raises(ThreadlineError, match="nothing to resume"):
        app.invoke(Command(resume="approve"), config)
    assert _history(app, config) == []


def test_answer_to_an_unknown_interrupt_id(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _review_graph(calls).compile(checkpointer=saver)
    config = fresh_config()
    (pending,) = app.invoke({"topic": "otters", "log": []}, config)["__interrupt__"]
    before = _snapshot(app, config)
    bogus = uuid.uuid4().hex
    with pytest.raises(ThreadlineError) as info:
        app.invoke(Command(resume={bogus: "approve"}), config)
    assert bogus in str(info.value) and pending.id in str(info.value)
    with pytest.raises(ThreadlineError, match=bogus):
        app.invoke(Command(resume={bogus: "x"}, update={"draft": "changed"}), config)
    _assert_unchanged(app, config, before)
    assert calls["review:before"] == 1
    # The right answer still works.
    result = app.invoke(Command(resume={pending.id: "approve"}), config)
    assert result["log"][-1] == "published about otters"


def test_bare_answer_to_several_interrupts(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _two_askers(calls).compile(checkpointer=saver)
    config = fresh_config()
    pending = app.invoke({"log": []}, config)["__interrupt__"]
    before = _snapshot(app, config)
    with pytest.raises(ThreadlineError) as info:
        app.invoke(Command(resume="yes"), config)
    message = str(info.value)
    assert "2 pending interrupts" in message
    assert all(i.id in message for i in pending)
    _assert_unchanged(app, config, before)
    assert (calls["ask_a"], calls["ask_b"]) == (1, 1)
    result = app.invoke(Command(resume={i.id: i.value[-1] for i in pending}), config)
    assert result["log"] == ["a=a", "b=b", "done"]


# ---------------------------------------------------------------------- async


async def test_async_interrupt_and_resume(asaver: BaseCheckpointSaver) -> None:
    calls = Calls()

    async def review(state: State) -> dict[str, Any]:
        calls.hit("review")
        decision = interrupt({"ask": "approve?"})
        return {"log": [f"review:{decision}"]}

    builder = StateGraph(State)
    builder.add_node("review", review)
    builder.add_node("publish", lambda s: {"log": ["publish"]})
    builder.add_edge(START, "review")
    builder.add_edge("review", "publish")
    app = builder.compile(checkpointer=asaver)
    config = fresh_config()
    result = await app.ainvoke({"log": []}, config)
    (pending,) = result["__interrupt__"]
    assert pending.value == {"ask": "approve?"}
    state = await app.aget_state(config)
    assert state.next == ("review",) and state.interrupts == (pending,)
    chunks = [c async for c in app.astream(Command(resume="ok"), config, stream_mode="updates")]
    assert chunks == [{"review": {"log": ["review:ok"]}}, {"publish": {"log": ["publish"]}}]
    assert calls["review"] == 2
    assert (await app.aget_state(config)).values["log"] == ["review:ok", "publish"]


async def test_async_interrupt_before_and_parallel_answers(asaver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _two_askers(calls).compile(checkpointer=asaver, interrupt_before=["done"])
    config = fresh_config()
    pending = (await app.ainvoke({"log": []}, config))["__interrupt__"]
    assert len(pending) == 2
    with pytest.raises(ThreadlineError, match="2 pending interrupts"):
        await app.ainvoke(Command(resume="x"), config)
    result = await app.ainvoke(Command(resume={i.id: "ok" for i in pending}), config)
    assert result == {"log": ["a=ok", "b=ok"]}
    assert (await app.aget_state(config)).next == ("done",)
    assert await app.ainvoke(None, config) == {"log": ["a=ok", "b=ok", "done"]}
    assert calls["done"] == 1


async def test_async_update_state_while_paused(asaver: BaseCheckpointSaver) -> None:
    calls = Calls()
    app = _review_graph(calls).compile(checkpointer=asaver)
    config = fresh_config()
    await app.ainvoke({"topic": "otters", "log": []}, config)
    await app.aupdate_state(config, {"draft": "async draft"})
    assert (await app.aget_state(config)).next == ("review",)
    result = await app.ainvoke(Command(resume="approve"), config)
    assert result["log"][-1] == "published async draft"
