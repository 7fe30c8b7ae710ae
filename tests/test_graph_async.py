"""The async driver: async nodes and routers, ainvoke / astream, and the a* thread methods on
every async backend (the ``asaver`` fixture)."""

from __future__ import annotations

import asyncio
import itertools
import operator
import threading
from collections import Counter
from typing import Annotated, Any, TypedDict

import pydantic
import pytest
from counting import made_by

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.errors import (
    CheckpointNotFoundError,
    EmptyInputError,
    GraphRecursionError,
    InvalidUpdateError,
    NoCheckpointerError,
)
from threadline.graph import END, START, StateGraph
from threadline.types import RetryPolicy


class State(TypedDict, total=False):
    messages: Annotated[list, operator.add]
    data: dict
    fix: bool
    last: str


def _thread(name: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    configurable: dict[str, Any] = {"thread_id": name}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _cid(config: dict[str, Any]) -> str:
    return str(config["configurable"]["checkpoint_id"])


def _achain(names: list[str], calls: Counter[str] | None = None) -> StateGraph:
    """START -> names[0] -> ... -> END with async nodes appending name + call number."""
    calls = Counter() if calls is None else calls

    def make(name: str) -> Any:
        async def node(state: State) -> dict[str, Any]:
            await asyncio.sleep(0)
            calls[name] += 1
            return {"messages": [f"{name}{calls[name]}"]}

        return node

    builder = StateGraph(State)
    for name in names:
        builder.add_node(name, make(name))
    builder.add_edge(START, names[0])
    for x, y in itertools.pairwise(names):
        builder.add_edge(x, y)
    builder.add_edge(names[-1], END)
    return builder


async def _history(app: Any, config: dict[str, Any], **kwargs: Any) -> list[Any]:
    return [s async for s in app.aget_state_history(config, **kwargs)]


# ---------------------------------------------------------------------- nodes


async def test_async_and_sync_nodes_with_and_without_config() -> None:
    async def first(state: State, config: dict[str, Any]) -> dict[str, Any]:
        return {"messages": [f"first for {config['configurable']['user']}"]}

    def second(state: State) -> dict[str, Any]:
        return {"messages": ["second (sync)"]}

    async def third(state: State) -> None:
        return None

    builder = StateGraph(State)
    builder.add_sequence([first, second, third])
    builder.add_edge(START, "first")
    result = await builder.compile().ainvoke({"messages": []}, {"configurable": {"user": "ada"}})
    assert result == {"messages": ["first for ada", "second (sync)"]}


async def test_async_nodes_of_one_step_run_concurrently() -> None:
    a_started, b_started = asyncio.Event(), asyncio.Event()

    async def a(state: State) -> dict[str, Any]:
        a_started.set()  # each waits for the other: they finish only if they run together
        await asyncio.wait_for(b_started.wait(), timeout=5)
        return {"messages": ["a"]}

    async def b(state: State) -> dict[str, Any]:
        b_started.set()
        await asyncio.wait_for(a_started.wait(), timeout=5)
        return {"messages": ["b"]}

    builder = StateGraph(State)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    assert await builder.compile().ainvoke({"messages": []}) == {"messages": ["a", "b"]}


async def test_sync_nodes_run_in_parallel_threads_under_ainvoke() -> None:
    barrier = threading.Barrier(2, timeout=5)

    def a(state: State) -> dict[str, Any]:
        barrier.wait()
        return {"messages": ["a"], "last": str(state.get("last"))}

    def b(state: State) -> dict[str, Any]:
        barrier.wait()
        return {"messages": ["b"]}

    builder = StateGraph(State)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    result = await builder.compile().ainvoke({"messages": []})
    assert result == {"messages": ["a", "b"], "last": "None"}


async def test_async_parallel_conflict_names_key_and_nodes() -> None:
    async def a(state: State) -> dict[str, Any]:
        return {"last": "a"}

    async def b(state: State) -> dict[str, Any]:
        return {"last": "b"}

    builder = StateGraph(State)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    with pytest.raises(InvalidUpdateError) as info:
        await builder.compile().ainvoke({"messages": []})
    assert "'last'" in str(info.value)
    assert "'a'" in str(info.value) and "'b'" in str(info.value)


async def test_async_router() -> None:
    async def route(state: State) -> str:
        await asyncio.sleep(0)
        return "right" if state["last"] == "r" else END

    builder = StateGraph(State)

    async def start(state: State) -> dict[str, Any]:
        return {"messages": ["start"]}

    async def right(state: State) -> dict[str, Any]:
        return {"messages": ["right"]}

    builder.add_node("start", start)
    builder.add_node("right", right)
    builder.add_edge(START, "start")
    builder.add_conditional_edges("start", route, ["right", END])
    app = builder.compile()
    assert (await app.ainvoke({"messages": [], "last": "r"}))["messages"] == ["start", "right"]
    assert (await app.ainvoke({"messages": [], "last": "x"}))["messages"] == ["start"]


class Chat(pydantic.BaseModel):
    messages: Annotated[list, operator.add] = []
    turn_count: int = 0


async def test_ainvoke_pydantic_turn_count(asaver: BaseCheckpointSaver) -> None:
    async def respond(state: Chat) -> dict[str, Any]:
        return {"messages": ["reply"], "turn_count": state.turn_count + 1}

    builder = StateGraph(Chat)
    builder.add_node("respond", respond)
    builder.add_edge(START, "respond")
    app = builder.compile(checkpointer=asaver)
    config = _thread("chat")
    first = await app.ainvoke(Chat(messages=["hi"]), config)
    assert isinstance(first, Chat) and first.turn_count == 1
    second = await app.ainvoke(Chat(messages=["again"]), config)
    assert second.turn_count == 2
    assert second.messages == ["hi", "reply", "again", "reply"]


async def test_async_recursion_limit() -> None:
    calls: Counter[str] = Counter()

    async def spin(state: State) -> dict[str, Any]:
        calls["spin"] += 1
        return {"messages": ["x"]}

    builder = StateGraph(State)
    builder.add_node("spin", spin)
    builder.add_edge(START, "spin")
    builder.add_edge("spin", "spin")
    with pytest.raises(GraphRecursionError):
        await builder.compile().ainvoke({"messages": []}, {"recursion_limit": 7})
    assert calls["spin"] == 7
    ok = await _achain(["a", "b", "c"]).compile().ainvoke({"messages": []}, {"recursion_limit": 3})
    assert ok["messages"] == ["a1", "b1", "c1"]


async def test_async_mutation_isolation(asaver: BaseCheckpointSaver) -> None:
    async def a(state: State) -> dict[str, Any]:
        state["data"]["inner"].append("a")
        state["messages"].append("mutated")
        return {"last": "a"}

    async def b(state: State) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"messages": [f"b saw {state['data']}"]}

    builder = StateGraph(State)
    builder.add_node("a", a)
    builder.add_node("b", b)
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    app = builder.compile(checkpointer=asaver)
    config = _thread("iso")
    result = await app.ainvoke({"messages": [], "data": {"inner": []}}, config)
    assert result == {"messages": ["b saw {'inner': []}"], "data": {"inner": []}, "last": "a"}
    history = await _history(app, config)
    # The input checkpoint: before the input (a reducer key reads as its empty value).
    assert history[-1].values == {"messages": []}
    for snap in history[:-1]:
        assert snap.values["data"] == {"inner": []}
        assert "mutated" not in snap.values["messages"]


# ---------------------------------------------------------------------- astream


async def test_astream_modes_exact_sequence(asaver: BaseCheckpointSaver) -> None:
    app = _achain(["a", "b"]).compile(checkpointer=asaver)
    config = _thread("s")
    chunks = [
        c
        async for c in app.astream(
            {"messages": ["in"]}, config, stream_mode=["values", "updates", "checkpoints"]
        )
    ]
    assert [(m, c) for m, c in chunks if m != "checkpoints"] == [
        ("values", {"messages": ["in"]}),
        ("updates", {"a": {"messages": ["a1"]}}),
        ("values", {"messages": ["in", "a1"]}),
        ("updates", {"b": {"messages": ["b1"]}}),
        ("values", {"messages": ["in", "a1", "b1"]}),
    ]
    assert [m for m, _ in chunks] == [
        "checkpoints",
        "values",
        "checkpoints",
        "updates",
        "values",
        "checkpoints",
        "updates",
        "values",
        "checkpoints",
    ]
    history = list(reversed(await _history(app, config)))
    checkpoints = [c for m, c in chunks if m == "checkpoints"]
    assert [c["config"] for c in checkpoints] == [s.config for s in history]
    assert [c["metadata"]["source"] for c in checkpoints] == ["input", "loop", "loop", "loop"]
    assert [c["next"] for c in checkpoints] == [["__start__"], ["a"], ["b"], []]
    assert [c["values"] for c in checkpoints[:2]] == [{"messages": []}, {"messages": ["in"]}]

    values = [c async for c in app.astream({"messages": ["2"]}, config, stream_mode="values")]
    assert values[-1]["messages"] == ["in", "a1", "b1", "2", "a2", "b2"]
    updates = [c async for c in app.astream({"messages": []}, config)]  # "updates" by default
    assert updates == [{"a": {"messages": ["a3"]}}, {"b": {"messages": ["b3"]}}]


# ---------------------------------------------------------------------- threads


async def test_async_history_and_snapshot(asaver: BaseCheckpointSaver) -> None:
    app = _achain(["a", "b", "c"]).compile(checkpointer=asaver)
    config = _thread("h")
    await app.ainvoke({"messages": ["in"]}, config)
    history = await _history(app, config)
    assert [(s.metadata["source"], s.metadata["step"]) for s in history] == [
        ("loop", 3),
        ("loop", 2),
        ("loop", 1),
        ("loop", 0),
        ("input", -1),
    ]
    snap = await app.aget_state(config)
    assert snap.config == history[0].config
    assert snap.values == {"messages": ["in", "a1", "b1", "c1"]}
    assert snap.next == ()
    assert snap.parent_config == history[1].config
    older = await app.aget_state(history[2].config)
    assert older.values == {"messages": ["in", "a1"]}
    assert older.next == ("b",)
    assert [s.metadata["step"] for s in await _history(app, config, limit=2)] == [3, 2]
    assert [
        s.metadata["step"] for s in await _history(app, config, filter={"source": "input"})
    ] == [-1]
    before = await _history(app, config, before=history[1].config)
    assert [s.config for s in before] == [s.config for s in history[2:]]


@pytest.mark.parametrize("mode", ["sync", "async", "exit"])
async def test_async_durability(asaver: BaseCheckpointSaver, mode: str) -> None:
    app = _achain(["a", "b", "c"]).compile(checkpointer=asaver)
    via_kwarg = await app.ainvoke({"messages": []}, _thread("k"), durability=mode)
    app = _achain(["a", "b", "c"]).compile(checkpointer=asaver)
    via_config = await app.ainvoke({"messages": []}, {**_thread("c"), "durability": mode})
    assert via_kwarg == via_config == {"messages": ["a1", "b1", "c1"]}
    for name in ("k", "c"):
        snap = await app.aget_state(_thread(name))
        assert snap.values == via_kwarg
        assert snap.next == ()
        count = len(await _history(app, _thread(name)))
        if mode == "exit":
            assert count < 5
        else:
            assert count == 5


async def test_async_continue_and_new_input(asaver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    app = _achain(["a", "b"], calls).compile(checkpointer=asaver)
    config = _thread("t")
    with pytest.raises(EmptyInputError):
        await app.ainvoke(None, config)
    await app.ainvoke({"messages": ["1"]}, config)
    assert await app.ainvoke(None, config) == {"messages": ["1", "a1", "b1"]}
    assert calls == Counter({"a": 1, "b": 1})
    assert await app.ainvoke({"messages": ["2"]}, config) == {
        "messages": ["1", "a1", "b1", "2", "a2", "b2"]
    }


@pytest.mark.parametrize("bad", [42, "", None])
async def test_async_thread_id_validation(asaver: BaseCheckpointSaver, bad: Any) -> None:
    app = _achain(["a"]).compile(checkpointer=asaver)
    config = {"configurable": {"thread_id": bad}}
    with pytest.raises(ValueError, match=r"str\(\.\.\.\)"):
        await app.ainvoke({"messages": []}, config)
    with pytest.raises(ValueError, match=r"str\(\.\.\.\)"):
        await app.aget_state(config)
    with pytest.raises(ValueError, match=r"str\(\.\.\.\)"):
        await app.aupdate_state(config, {"messages": []})
    assert await asaver.alist_threads() == []


async def test_async_time_travel(asaver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    app = _achain(["a", "b", "c"], calls).compile(checkpointer=asaver)
    config = _thread("tt")
    await app.ainvoke({"messages": []}, config)
    old = await _history(app, config)
    after_a = next(s for s in old if s.metadata["step"] == 1)
    assert await app.ainvoke(None, after_a.config) == {"messages": ["a1", "b2", "c2"]}
    head = await app.aget_state(config)
    assert head.values == {"messages": ["a1", "b2", "c2"]}
    new_history = await _history(app, config)
    assert len(new_history) == 7
    assert old[0].config in [s.config for s in new_history]
    parent = await app.aget_state(head.parent_config)  # type: ignore[arg-type]
    assert parent.parent_config == after_a.config


async def test_async_update_state_and_continue(asaver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    app = _achain(["a", "b", "c"], calls).compile(checkpointer=asaver)
    config = _thread("u")
    await app.ainvoke({"messages": []}, config)
    new_config = await app.aupdate_state(config, {"messages": ["patch"]}, as_node="a")
    snap = await app.aget_state(config)
    assert snap.config == new_config
    assert snap.metadata is not None and snap.metadata["source"] == "update"
    assert snap.next == ("b",)
    assert snap.values == {"messages": ["a1", "b1", "c1", "patch"]}
    result = await app.ainvoke(None, new_config)
    assert result == {"messages": ["a1", "b1", "c1", "patch", "b2", "c2"]}


async def test_async_branch_into_a_new_thread(asaver: BaseCheckpointSaver) -> None:
    async def step1(state: State) -> dict[str, Any]:
        return {"messages": ["step1"]}

    async def step2(state: State) -> dict[str, Any]:
        return {"messages": ["step2"]}

    async def step3(state: State) -> dict[str, Any]:
        return {"messages": ["step3"]}

    builder = StateGraph(State)
    builder.add_sequence([step1, step2, step3])
    builder.add_edge(START, "step1")
    app = builder.compile(checkpointer=asaver)
    main = _thread("main")
    await app.ainvoke({"messages": [], "data": {"branch": "main"}}, main)
    history = await _history(app, main)
    after_step1 = next(s for s in history if made_by(history, s) == ["step1"])
    feature = _thread("feature", _cid(after_step1.config))
    await app.aupdate_state(feature, {"data": {"branch": "feature"}})
    result = await app.ainvoke(None, feature)
    assert result == {"messages": ["step1", "step2", "step3"], "data": {"branch": "feature"}}
    assert (await app.aget_state(main)).values["data"] == {"branch": "main"}
    first = (await _history(app, _thread("feature")))[-1]
    assert first.metadata is not None and first.metadata["source"] == "fork"
    assert first.metadata["forked_from"]["checkpoint_id"] == _cid(after_step1.config)


async def test_async_fork(asaver: BaseCheckpointSaver) -> None:
    app = _achain(["a", "b"]).compile(checkpointer=asaver)
    await app.ainvoke({"messages": []}, _thread("src"))
    after_a = next(s for s in await _history(app, _thread("src")) if s.metadata["step"] == 1)
    new_config = await app.afork(after_a.config, "copy")
    snap = await app.aget_state(new_config)
    assert snap.values == {"messages": ["a1"]}
    assert snap.next == ("b",)
    assert snap.metadata is not None and snap.metadata["source"] == "fork"
    assert await app.ainvoke(None, _thread("copy")) == {"messages": ["a1", "b2"]}


async def test_async_unknown_checkpoint(asaver: BaseCheckpointSaver) -> None:
    app = _achain(["a"]).compile(checkpointer=asaver)
    await app.ainvoke({"messages": []}, _thread("t"))
    missing = "01a1fc8d-0000-7000-8000-000000000000"
    with pytest.raises(CheckpointNotFoundError):
        await app.aget_state(_thread("t", missing))
    with pytest.raises(CheckpointNotFoundError):
        await app.ainvoke(None, _thread("t", missing))


# ---------------------------------------------------------------------- failures and retries


class Boom(Exception):
    pass


async def test_async_failure_keeps_finished_siblings(asaver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()

    async def ok(state: State) -> dict[str, Any]:
        calls["ok"] += 1
        return {"messages": ["ok"]}

    async def flaky(state: State) -> dict[str, Any]:
        calls["flaky"] += 1
        await asyncio.sleep(0.01)  # finishes after ok
        if not state.get("fix"):
            raise Boom("needs a fix")
        return {"messages": ["flaky"]}

    builder = StateGraph(State)
    builder.add_node("ok", ok)
    builder.add_node("flaky", flaky)
    builder.add_edge(START, "ok")
    builder.add_edge(START, "flaky")
    app = builder.compile(checkpointer=asaver)
    config = _thread("fail")
    with pytest.raises(Boom) as info:
        await app.ainvoke({"messages": []}, config)
    snap = await app.aget_state(config)
    (note,) = info.value.__notes__
    assert "'fail'" in note and _cid(snap.config) in note
    assert snap.next == ("flaky",)
    errors = {t.name: t.error for t in snap.tasks}
    assert errors["ok"] is None
    assert "needs a fix" in str(errors["flaky"])

    await app.aupdate_state(config, {"fix": True})
    assert await app.ainvoke(None, config) == {"messages": ["ok", "flaky"], "fix": True}
    assert calls == Counter({"ok": 1, "flaky": 2})


async def test_async_retry(asaver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    failures: list[Exception] = [ConnectionError("1"), ConnectionError("2")]

    async def node(state: State) -> dict[str, Any]:
        calls["node"] += 1
        if failures:
            raise failures.pop(0)
        return {"messages": ["done"]}

    builder = StateGraph(State)
    builder.add_node(
        "node", node, retry=RetryPolicy(max_attempts=3, initial_interval=0.001, jitter=False)
    )
    builder.add_edge(START, "node")
    app = builder.compile(checkpointer=asaver)
    assert await app.ainvoke({"messages": []}, _thread("r")) == {"messages": ["done"]}
    assert calls["node"] == 3

    failures.extend(ConnectionError(str(i)) for i in range(3))
    with pytest.raises(ConnectionError):
        await app.ainvoke({"messages": []}, _thread("r2"))
    assert calls["node"] == 6


async def test_async_no_checkpointer_errors() -> None:
    app = _achain(["a"]).compile()
    config = _thread("t")
    with pytest.raises(NoCheckpointerError, match="checkpointer="):
        await app.aget_state(config)
    with pytest.raises(NoCheckpointerError, match="checkpointer="):
        await _history(app, config)
    with pytest.raises(NoCheckpointerError, match="checkpointer="):
        await app.aupdate_state(config, {"messages": []})
    with pytest.raises(NoCheckpointerError, match="checkpointer="):
        await app.afork(config, "x")
    assert await app.ainvoke({"messages": []}, config)  # a thread_id alone is only config
