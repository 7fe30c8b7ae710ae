"""Checkpoints and threads, on every sync backend (the ``saver`` fixture): history, durability,
thread ids, continuing, snapshots, time travel, update_state, forks, failures, retries, and the
errors that replace silent fallbacks."""

from __future__ import annotations

import itertools
import operator
import time
import uuid
from collections import Counter
from typing import Annotated, Any, TypedDict

import pytest
from counting import made_by

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.errors import (
    CheckpointNotFoundError,
    EmptyInputError,
    InvalidUpdateError,
    NoCheckpointerError,
    ThreadlineError,
)
from threadline.graph import END, START, StateGraph
from threadline.types import RetryPolicy, StateSnapshot, StateTask


class State(TypedDict, total=False):
    messages: Annotated[list, operator.add]
    data: dict
    fix: bool
    count: int


def _thread(name: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    configurable: dict[str, Any] = {"thread_id": name}
    if checkpoint_id is not None:
        configurable["checkpoint_id"] = checkpoint_id
    return {"configurable": configurable}


def _cid(config: dict[str, Any]) -> str:
    return str(config["configurable"]["checkpoint_id"])


def _chain(names: list[str], calls: Counter[str] | None = None) -> StateGraph:
    """START -> names[0] -> ... -> END; each node appends its name and call number."""
    calls = Counter() if calls is None else calls

    def make(name: str) -> Any:
        def node(state: State) -> dict[str, Any]:
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


# ---------------------------------------------------------------------- history


def test_checkpoint_after_input_and_every_step(saver: BaseCheckpointSaver) -> None:
    app = _chain(["a", "b", "c"]).compile(checkpointer=saver)
    config = _thread("t")
    app.invoke({"messages": ["in"]}, config)
    history = list(app.get_state_history(config))
    assert len(history) == 5  # as LangGraph: the input, then step 0 with it applied, ...
    oldest_first = list(reversed(history))
    assert [(s.metadata["source"], s.metadata["step"]) for s in oldest_first] == [
        ("input", -1),
        ("loop", 0),
        ("loop", 1),
        ("loop", 2),
        ("loop", 3),
    ]
    assert [s.values.get("messages") for s in oldest_first] == [
        [],  # a reducer key never written reads as its empty value, as in LangGraph
        ["in"],
        ["in", "a1"],
        ["in", "a1", "b1"],
        ["in", "a1", "b1", "c1"],
    ]
    assert [s.next for s in oldest_first] == [("__start__",), ("a",), ("b",), ("c",), ()]
    (start,) = oldest_first[0].tasks
    assert start.name == "__start__" and start.path == ("__pregel_pull", "__start__")
    for parent, child in itertools.pairwise(oldest_first):
        assert child.parent_config == parent.config
    assert oldest_first[0].parent_config is None


@pytest.mark.parametrize("how", ["config", "kwarg"])
def test_durability_modes_reach_the_same_state(saver: BaseCheckpointSaver, how: str) -> None:
    results = {}
    counts = {}
    for mode in ("sync", "async", "exit"):
        app = _chain(["a", "b", "c"]).compile(checkpointer=saver)
        config = _thread(f"d-{mode}")
        if how == "config":
            result = app.invoke({"messages": ["in"]}, {**config, "durability": mode})
        else:
            result = app.invoke({"messages": ["in"]}, config, durability=mode)
        snap = app.get_state(config)
        assert snap.values == result
        assert snap.next == ()
        results[mode] = result
        counts[mode] = len(list(app.get_state_history(config)))
    assert results["sync"] == results["async"] == results["exit"]
    assert results["sync"]["messages"] == ["in", "a1", "b1", "c1"]
    assert counts["sync"] == counts["async"] == 5
    assert counts["exit"] < counts["sync"]


def test_exit_durability_thread_continues(saver: BaseCheckpointSaver) -> None:
    app = _chain(["a", "b"]).compile(checkpointer=saver)
    config = _thread("exit")
    app.invoke({"messages": ["1"]}, config, durability="exit")
    app.invoke({"messages": ["2"]}, config, durability="exit")
    assert app.get_state(config).values["messages"] == ["1", "a1", "b1", "2", "a2", "b2"]


def test_unknown_durability(saver: BaseCheckpointSaver) -> None:
    app = _chain(["a"]).compile(checkpointer=saver)
    with pytest.raises(ValueError, match="durability"):
        app.invoke({"messages": []}, _thread("t"), durability="never")


# ---------------------------------------------------------------------- thread ids


@pytest.mark.parametrize("bad", [42, "", None])
def test_thread_id_must_be_non_empty_string(saver: BaseCheckpointSaver, bad: Any) -> None:
    calls: Counter[str] = Counter()
    app = _chain(["a"], calls).compile(checkpointer=saver)
    config = {"configurable": {"thread_id": bad}}
    with pytest.raises(ValueError, match=r"str\(\.\.\.\)"):
        app.invoke({"messages": []}, config)
    with pytest.raises(ValueError, match=r"str\(\.\.\.\)"):
        list(app.stream({"messages": []}, config))
    with pytest.raises(ValueError, match=r"str\(\.\.\.\)"):
        app.get_state(config)
    with pytest.raises(ValueError, match=r"str\(\.\.\.\)"):
        app.update_state(config, {"messages": ["x"]})
    assert calls == Counter()
    assert saver.list_threads() == []


def test_config_without_thread_id(saver: BaseCheckpointSaver) -> None:
    app = _chain(["a"]).compile(checkpointer=saver)
    with pytest.raises(ValueError, match="thread_id"):
        app.invoke({"messages": []})
    with pytest.raises(ValueError, match="thread_id"):
        app.invoke({"messages": []}, {"configurable": {}})
    assert saver.list_threads() == []


# ---------------------------------------------------------------------- continuing


def test_invoke_none_after_completed_run_does_not_rerun(saver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    app = _chain(["a", "b"], calls).compile(checkpointer=saver)
    config = _thread("t")
    first = app.invoke({"messages": ["in"]}, config)
    head = app.get_state(config).config
    again = app.invoke(None, config)
    assert again == first == {"messages": ["in", "a1", "b1"]}
    assert calls == Counter({"a": 1, "b": 1})
    assert app.get_state(config).config == head  # nothing new was saved


def test_new_input_on_finished_thread_starts_new_run(saver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    app = _chain(["a", "b"], calls).compile(checkpointer=saver)
    config = _thread("t")
    app.invoke({"messages": ["one"], "data": {"run": 1}}, config)
    result = app.invoke({"messages": ["two"]}, config)
    assert result == {"messages": ["one", "a1", "b1", "two", "a2", "b2"], "data": {"run": 1}}
    assert calls == Counter({"a": 2, "b": 2})
    history = list(app.get_state_history(config))
    assert len(history) == 8
    sources = [s.metadata["source"] for s in reversed(history)]
    assert sources == ["input", "loop", "loop", "loop", "input", "loop", "loop", "loop"]
    steps = [s.metadata["step"] for s in reversed(history)]
    assert steps == list(range(-1, 7))
    # The second input checkpoint holds the first run's final values.
    assert history[3].values == history[4].values and history[3].next == ("__start__",)


def test_invoke_none_on_thread_that_never_ran(saver: BaseCheckpointSaver) -> None:
    app = _chain(["a"]).compile(checkpointer=saver)
    with pytest.raises(EmptyInputError, match="'never'"):
        app.invoke(None, _thread("never"))
    assert saver.list_threads() == []


def test_input_keys_not_in_schema(saver: BaseCheckpointSaver) -> None:
    app = _chain(["a"]).compile(checkpointer=saver)
    with pytest.raises(InvalidUpdateError, match=r"'nope'.*known keys"):
        app.invoke({"messages": [], "nope": 1, "also_nope": 2}, _thread("t"))
    with pytest.raises(InvalidUpdateError, match="'also_nope'"):
        app.invoke({"messages": [], "nope": 1, "also_nope": 2}, _thread("t"))
    assert saver.list_threads() == []


# ---------------------------------------------------------------------- snapshots


def test_get_state_snapshot_fields(saver: BaseCheckpointSaver) -> None:
    app = _chain(["a", "b"]).compile(checkpointer=saver)
    config = _thread("snap")
    app.invoke({"messages": ["in"]}, config)
    snap = app.get_state(config)
    assert isinstance(snap, StateSnapshot)
    assert snap.values == {"messages": ["in", "a1", "b1"]}
    assert snap.next == ()
    configurable = snap.config["configurable"]
    assert configurable["thread_id"] == "snap"
    assert configurable["checkpoint_ns"] == ""
    assert isinstance(configurable["checkpoint_id"], str) and configurable["checkpoint_id"]
    assert snap.metadata is not None
    assert snap.metadata["source"] == "loop"
    assert snap.metadata["step"] == 2
    assert isinstance(snap.created_at, str) and snap.created_at[:2] == "20"
    assert snap.parent_config is not None
    assert snap.parent_config["configurable"]["thread_id"] == "snap"
    assert snap.tasks == ()
    assert snap.interrupts == ()

    parent = app.get_state(snap.parent_config)
    assert parent.values == {"messages": ["in", "a1"]}
    assert parent.next == ("b",)
    assert len(parent.tasks) == 1
    task = parent.tasks[0]
    assert isinstance(task, StateTask)
    assert task.name == "b"
    assert task.error is None


def test_get_state_of_a_checkpoint_id(saver: BaseCheckpointSaver) -> None:
    app = _chain(["a", "b", "c"]).compile(checkpointer=saver)
    config = _thread("t")
    app.invoke({"messages": []}, config)
    for snap in app.get_state_history(config):
        again = app.get_state(snap.config)
        assert again.config == snap.config
        assert again.values == snap.values
        assert again.next == snap.next
        assert again.metadata == snap.metadata


def test_get_state_of_unknown_checkpoint(saver: BaseCheckpointSaver) -> None:
    app = _chain(["a"]).compile(checkpointer=saver)
    app.invoke({"messages": []}, _thread("t"))
    missing = str(uuid.uuid4())
    with pytest.raises(CheckpointNotFoundError, match=missing):
        app.get_state(_thread("t", missing))
    with pytest.raises(CheckpointNotFoundError):
        app.invoke(None, _thread("t", missing))
    with pytest.raises(CheckpointNotFoundError):
        app.update_state(_thread("t", missing), {"messages": ["x"]})
    with pytest.raises(CheckpointNotFoundError):
        app.invoke(None, _thread("elsewhere", missing))


def test_get_state_history_order_filter_before_limit(saver: BaseCheckpointSaver) -> None:
    app = _chain(["a", "b", "c"]).compile(checkpointer=saver)
    config = _thread("h")
    app.invoke({"messages": []}, config)
    history = list(app.get_state_history(config))
    assert [s.metadata["step"] for s in history] == [3, 2, 1, 0, -1]  # newest first
    ids = [_cid(s.config) for s in history]
    assert ids == sorted(ids, reverse=True)

    inputs = list(app.get_state_history(config, filter={"source": "input"}))
    assert [s.metadata["step"] for s in inputs] == [-1]
    step1 = list(app.get_state_history(config, filter={"source": "loop", "step": 1}))
    assert [_cid(s.config) for s in step1] == [ids[2]]
    assert list(app.get_state_history(config, filter={"source": "update"})) == []

    older = list(app.get_state_history(config, before=history[1].config))
    assert [_cid(s.config) for s in older] == ids[2:]
    assert [_cid(s.config) for s in app.get_state_history(config, limit=2)] == ids[:2]
    both = app.get_state_history(config, before=history[0].config, limit=1)
    assert [_cid(s.config) for s in both] == [ids[1]]


# ---------------------------------------------------------------------- time travel


def test_time_travel_replays_from_an_older_checkpoint(saver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    app = _chain(["a", "b", "c"], calls).compile(checkpointer=saver)
    config = _thread("tt")
    app.invoke({"messages": []}, config)
    old_history = list(app.get_state_history(config))
    old_head = old_history[0]
    after_a = next(s for s in old_history if s.metadata["step"] == 1)

    result = app.invoke(None, after_a.config)
    assert result == {"messages": ["a1", "b2", "c2"]}
    assert calls == Counter({"a": 1, "b": 2, "c": 2})

    head = app.get_state(config)
    assert head.values == result
    assert head.config != old_head.config
    assert head.next == ()

    history = list(app.get_state_history(config))
    assert len(history) == len(old_history) + 2
    by_id = {_cid(s.config): s for s in history}
    assert _cid(old_head.config) in by_id  # the old branch stays
    assert by_id[_cid(old_head.config)].values == {"messages": ["a1", "b1", "c1"]}
    # The new branch: after b (step 2) whose parent is the checkpoint travelled to.
    new_b = by_id[_cid(head.parent_config)]  # type: ignore[arg-type]
    assert new_b.values == {"messages": ["a1", "b2"]}
    assert new_b.parent_config is not None
    assert _cid(new_b.parent_config) == _cid(after_a.config)

    # The thread continues from the new branch's end.
    app.invoke({"messages": ["more"]}, config)
    assert app.get_state(config).values["messages"] == ["a1", "b2", "c2", "more", "a2", "b3", "c3"]


def test_time_travel_to_the_input_checkpoint(saver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    app = _chain(["a", "b"], calls).compile(checkpointer=saver)
    config = _thread("tt")
    app.invoke({"messages": ["in"]}, config)
    first = list(app.get_state_history(config))[-1]
    assert first.metadata["source"] == "input"
    assert app.invoke(None, first.config) == {"messages": ["in", "a2", "b2"]}


# ---------------------------------------------------------------------- update_state


def test_update_state_applies_reducers_and_continues(saver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    app = _chain(["a", "b", "c"], calls).compile(checkpointer=saver)
    config = _thread("u")
    app.invoke({"messages": ["in"], "data": {"v": 1}}, config)
    before = app.get_state(config)

    new_config = app.update_state(config, {"messages": ["patched"], "data": {"v": 2}}, "a")
    assert new_config["configurable"]["thread_id"] == "u"
    assert _cid(new_config) != _cid(before.config)
    snap = app.get_state(config)
    assert snap.config == new_config
    assert snap.values == {"messages": ["in", "a1", "b1", "c1", "patched"], "data": {"v": 2}}
    assert snap.metadata is not None and snap.metadata["source"] == "update"
    assert snap.metadata["step"] == before.metadata["step"] + 1  # type: ignore[index]
    assert snap.parent_config == before.config
    assert snap.next == ("b",)  # as if "a" had just written this

    result = app.invoke(None, new_config)
    assert result["messages"] == ["in", "a1", "b1", "c1", "patched", "b2", "c2"]
    assert calls == Counter({"a": 1, "b": 2, "c": 2})


def test_update_state_as_last_node_has_nothing_next(saver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    app = _chain(["a", "b"], calls).compile(checkpointer=saver)
    config = _thread("u")
    app.invoke({"messages": []}, config)
    app.update_state(config, {"data": {"edited": True}})
    snap = app.get_state(config)
    assert snap.next == ()
    assert snap.values == {"messages": ["a1", "b1"], "data": {"edited": True}}
    assert app.invoke(None, config) == snap.values
    assert calls == Counter({"a": 1, "b": 1})


def test_update_state_mid_run_keeps_the_pending_node(saver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    app = _chain(["a", "b", "c"], calls).compile(checkpointer=saver, interrupt_before=["b"])
    config = _thread("u")
    app.invoke({"messages": []}, config)
    assert app.get_state(config).next == ("b",)
    app.update_state(config, {"messages": ["human"]})
    assert app.get_state(config).next == ("b",)
    assert app.invoke(None, config)["messages"] == ["a1", "human", "b1", "c1"]


def test_update_state_rejects_unknown_node_and_keys(saver: BaseCheckpointSaver) -> None:
    app = _chain(["a"]).compile(checkpointer=saver)
    config = _thread("u")
    app.invoke({"messages": []}, config)
    head = app.get_state(config).config
    with pytest.raises(InvalidUpdateError, match="'ghost'"):
        app.update_state(config, {"messages": ["x"]}, as_node="ghost")
    with pytest.raises(InvalidUpdateError, match="'nope'"):
        app.update_state(config, {"nope": 1})
    assert app.get_state(config).config == head


# ---------------------------------------------------------------------- branching and forks


def test_branch_into_a_new_thread(saver: BaseCheckpointSaver) -> None:
    def step1(state: State) -> dict[str, Any]:
        return {"messages": ["step1"]}

    def step2(state: State) -> dict[str, Any]:
        return {"messages": ["step2"]}

    def step3(state: State) -> dict[str, Any]:
        return {"messages": ["step3"]}

    builder = StateGraph(State)
    builder.add_sequence([step1, step2, step3])
    builder.add_edge(START, "step1")
    app = builder.compile(checkpointer=saver)

    main = _thread("main")
    app.invoke({"messages": [], "data": {"branch": "main"}}, main)
    history = list(app.get_state_history(main))
    after_step1 = next(s for s in history if made_by(history, s) == ["step1"])
    assert after_step1.values["messages"] == ["step1"]
    that = _cid(after_step1.config)

    feature = {"configurable": {"thread_id": "feature", "checkpoint_id": that}}
    app.update_state(feature, {"data": {"branch": "feature"}})
    result = app.invoke(None, feature)
    assert result == {"messages": ["step1", "step2", "step3"], "data": {"branch": "feature"}}

    assert app.get_state(main).values == {
        "messages": ["step1", "step2", "step3"],
        "data": {"branch": "main"},
    }
    assert app.get_state(_thread("feature")).values == result

    feature_history = list(app.get_state_history(_thread("feature")))
    first = feature_history[-1]
    assert first.metadata is not None
    assert first.metadata["source"] == "fork"
    forked_from = first.metadata["forked_from"]
    assert forked_from["thread_id"] == "main"
    assert forked_from["checkpoint_id"] == that
    assert first.values == after_step1.values
    # main's history is untouched.
    assert len(list(app.get_state_history(main))) == 5


def test_fork_copies_a_checkpoint_into_a_new_thread(saver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    app = _chain(["a", "b", "c"], calls).compile(checkpointer=saver)
    app.invoke({"messages": []}, _thread("src"))
    after_a = next(s for s in app.get_state_history(_thread("src")) if s.metadata["step"] == 1)

    new_config = app.fork(after_a.config, "copy")
    assert new_config["configurable"]["thread_id"] == "copy"
    snap = app.get_state(new_config)
    assert snap.values == after_a.values
    assert snap.next == ("b",)
    assert snap.metadata is not None and snap.metadata["source"] == "fork"
    assert snap.metadata["forked_from"]["checkpoint_id"] == _cid(after_a.config)

    assert app.invoke(None, _thread("copy")) == {"messages": ["a1", "b2", "c2"]}
    assert app.get_state(_thread("src")).values == {"messages": ["a1", "b1", "c1"]}

    with pytest.raises(ValueError, match=r"str\(\.\.\.\)"):
        app.fork(after_a.config, "")


# ---------------------------------------------------------------------- failures


class Boom(Exception):
    pass


def test_node_exception_reaches_caller_with_a_note(saver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()

    def boom(state: State) -> dict[str, Any]:
        calls["boom"] += 1
        if not state.get("fix"):
            raise Boom("no fix yet")
        return {"messages": ["boom ok"]}

    builder = _chain(["a", "b"], calls)
    builder.add_node("boom", boom)
    builder.add_edge("b", "boom")
    app = builder.compile(checkpointer=saver)
    config = _thread("fail")

    with pytest.raises(Boom, match="no fix yet") as info:
        app.invoke({"messages": ["in"]}, config)
    assert type(info.value) is Boom
    snap = app.get_state(config)
    notes = getattr(info.value, "__notes__", [])
    assert len(notes) == 1
    assert "'fail'" in notes[0]
    assert _cid(snap.config) in notes[0]
    assert "'boom'" in notes[0]

    # Everything up to the last completed step is saved.
    assert snap.values == {"messages": ["in", "a1", "b1"]}
    assert snap.next == ("boom",)
    assert len(list(app.get_state_history(config))) == 4
    (task,) = snap.tasks
    assert task.name == "boom"
    assert task.error is not None
    assert "Boom" in str(task.error) and "no fix yet" in str(task.error)

    # Resuming without a fix fails again, from the same checkpoint.
    with pytest.raises(Boom):
        app.invoke(None, config)
    assert calls == Counter({"a": 1, "b": 1, "boom": 2})

    # Fix the input, then resume: only the failed node runs.
    app.update_state(config, {"fix": True})
    fixed = app.get_state(config)
    assert fixed.next == ("boom",)
    assert all(t.error is None for t in fixed.tasks)
    result = app.invoke(None, config)
    assert result == {"messages": ["in", "a1", "b1", "boom ok"], "fix": True}
    assert calls == Counter({"a": 1, "b": 1, "boom": 3})
    assert app.get_state(config).next == ()


@pytest.mark.parametrize("durability", ["sync", "async", "exit"])
def test_failure_under_every_durability_mode_resumes(
    saver: BaseCheckpointSaver, durability: str
) -> None:
    calls: Counter[str] = Counter()

    def boom(state: State) -> dict[str, Any]:
        calls["boom"] += 1
        if not state.get("fix"):
            raise Boom("no fix yet")
        return {"messages": ["boom ok"]}

    builder = _chain(["a", "b"], calls)
    builder.add_node("boom", boom)
    builder.add_edge("b", "boom")
    app = builder.compile(checkpointer=saver)
    config = _thread(f"fail-{durability}")
    with pytest.raises(Boom):
        app.invoke({"messages": []}, config, durability=durability)
    snap = app.get_state(config)
    assert snap.values == {"messages": ["a1", "b1"]}
    assert snap.next == ("boom",)
    assert [t.name for t in snap.tasks if t.error is not None] == ["boom"]
    app.update_state(config, {"fix": True})
    result = app.invoke(None, config, durability=durability)
    assert result == {"messages": ["a1", "b1", "boom ok"], "fix": True}
    assert calls == Counter({"a": 1, "b": 1, "boom": 2})


def test_join_across_steps_survives_a_failure(saver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    failures = [Boom("slow branch failed once")]

    def node(name: str) -> Any:
        def run(state: State) -> dict[str, Any]:
            calls[name] += 1
            if name == "slow2" and failures:
                raise failures.pop()
            return {"messages": [name]}

        return run

    builder = StateGraph(State)
    for name in ("fast", "slow1", "slow2", "join"):
        builder.add_node(name, node(name))
    builder.add_edge(START, "fast")  # finishes in step 0
    builder.add_edge(START, "slow1")
    builder.add_edge("slow1", "slow2")  # finishes in step 1 (after a failure and a resume)
    builder.add_edge(["fast", "slow2"], "join")
    app = builder.compile(checkpointer=saver)
    config = _thread("join")
    with pytest.raises(Boom):
        app.invoke({"messages": []}, config)
    assert app.get_state(config).next == ("slow2",)
    result = app.invoke(None, config)
    assert result == {"messages": ["fast", "slow1", "slow2", "join"]}
    assert calls == Counter({"fast": 1, "slow1": 1, "slow2": 2, "join": 1})
    # A second run on the thread waits for both sources again.
    calls.clear()
    app.invoke({"messages": []}, config)
    assert calls == Counter({"fast": 1, "slow1": 1, "slow2": 1, "join": 1})


def _parallel_with_failure(calls: Counter[str]) -> StateGraph:
    def ok(state: State) -> dict[str, Any]:
        calls["ok"] += 1
        return {"messages": ["ok"]}

    def flaky(state: State) -> dict[str, Any]:
        calls["flaky"] += 1
        if not state.get("fix"):
            raise Boom("flaky needs a fix")
        return {"messages": ["flaky"]}

    def after(state: State) -> dict[str, Any]:
        calls["after"] += 1
        return {"messages": ["after"]}

    builder = StateGraph(State)
    builder.add_node("ok", ok)
    builder.add_node("flaky", flaky)
    builder.add_node("after", after)
    builder.add_edge(START, "ok")
    builder.add_edge(START, "flaky")
    builder.add_edge(["ok", "flaky"], "after")
    return builder


def test_finished_siblings_keep_their_writes_and_are_not_rerun(
    saver: BaseCheckpointSaver,
) -> None:
    calls: Counter[str] = Counter()
    app = _parallel_with_failure(calls).compile(checkpointer=saver)
    config = _thread("par")
    with pytest.raises(Boom):
        app.invoke({"messages": []}, config)
    assert calls == Counter({"ok": 1, "flaky": 1})

    snap = app.get_state(config)
    assert snap.next == ("flaky",)
    by_name = {t.name: t for t in snap.tasks}
    assert set(by_name) == {"ok", "flaky"}
    assert by_name["ok"].error is None
    assert by_name["ok"].result == {"messages": ["ok"]}
    assert by_name["flaky"].error is not None
    assert "flaky needs a fix" in str(by_name["flaky"].error)

    with pytest.raises(Boom):
        app.invoke(None, config)
    assert calls == Counter({"ok": 1, "flaky": 2})

    app.update_state(config, {"fix": True})
    result = app.invoke(None, config)
    assert calls == Counter({"ok": 1, "flaky": 3, "after": 1})
    assert result["messages"] == ["ok", "flaky", "after"]


def test_resume_after_transient_failure_without_update(saver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    failures = [Boom("once")]

    def ok(state: State) -> dict[str, Any]:
        calls["ok"] += 1
        return {"messages": ["ok"]}

    def flaky(state: State) -> dict[str, Any]:
        calls["flaky"] += 1
        if failures:
            raise failures.pop()
        return {"messages": ["flaky"]}

    builder = StateGraph(State)
    builder.add_node("ok", ok)
    builder.add_node("flaky", flaky)
    builder.add_edge(START, "ok")
    builder.add_edge(START, "flaky")
    app = builder.compile(checkpointer=saver)
    config = _thread("transient")
    with pytest.raises(Boom):
        app.invoke({"messages": []}, config)
    assert app.invoke(None, config) == {"messages": ["ok", "flaky"]}
    assert calls == Counter({"ok": 1, "flaky": 2})


# ---------------------------------------------------------------------- retries


def _retrying(failures: list[Exception], policy: RetryPolicy, calls: Counter[str]) -> StateGraph:
    def node(state: State) -> dict[str, Any]:
        calls["node"] += 1
        if failures:
            raise failures.pop(0)
        return {"messages": ["done"]}

    builder = StateGraph(State)
    builder.add_node("node", node, retry=policy)
    builder.add_edge(START, "node")
    return builder


def test_retry_succeeds_after_two_failures(saver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    policy = RetryPolicy(max_attempts=3, initial_interval=0, jitter=False)
    failures: list[Exception] = [ConnectionError("1"), TimeoutError("2")]
    app = _retrying(failures, policy, calls).compile(checkpointer=saver)
    assert app.invoke({"messages": []}, _thread("r")) == {"messages": ["done"]}
    assert calls["node"] == 3
    assert app.get_state(_thread("r")).next == ()


def test_retry_gives_up_after_max_attempts(saver: BaseCheckpointSaver) -> None:
    calls: Counter[str] = Counter()
    policy = RetryPolicy(max_attempts=3, initial_interval=0, jitter=False)
    failures: list[Exception] = [ConnectionError(str(i)) for i in range(1, 5)]
    app = _retrying(failures, policy, calls).compile(checkpointer=saver)
    with pytest.raises(ConnectionError) as info:
        app.invoke({"messages": []}, _thread("r"))
    assert info.value.args == ("3",)  # the last attempt's exception
    assert calls["node"] == 3
    assert app.get_state(_thread("r")).next == ("node",)


@pytest.mark.parametrize(
    "retry_on",
    [ConnectionError, (ConnectionError, OSError), lambda exc: isinstance(exc, ConnectionError)],
    ids=["type", "tuple", "callable"],
)
def test_retry_on_filters_exceptions(retry_on: Any) -> None:
    policy = RetryPolicy(max_attempts=5, initial_interval=0, jitter=False, retry_on=retry_on)
    calls: Counter[str] = Counter()
    app = _retrying([ConnectionError("a"), ConnectionError("b")], policy, calls).compile()
    assert app.invoke({"messages": []}) == {"messages": ["done"]}
    assert calls["node"] == 3

    calls.clear()
    app = _retrying([KeyError("not retried"), ConnectionError("x")], policy, calls).compile()
    with pytest.raises(KeyError, match="not retried"):
        app.invoke({"messages": []})
    assert calls["node"] == 1


def test_default_retry_on_skips_programming_errors() -> None:
    policy = RetryPolicy(max_attempts=3, initial_interval=0, jitter=False)
    calls: Counter[str] = Counter()
    app = _retrying([ValueError("bug")], policy, calls).compile()
    with pytest.raises(ValueError, match="bug"):
        app.invoke({"messages": []})
    assert calls["node"] == 1


def test_retry_waits_between_attempts() -> None:
    stamps: list[float] = []

    def node(state: State) -> dict[str, Any]:
        stamps.append(time.monotonic())
        if len(stamps) < 3:
            raise ConnectionError("again")
        return {"messages": ["done"]}

    policy = RetryPolicy(
        max_attempts=3, initial_interval=0.02, backoff_factor=2, max_interval=1, jitter=False
    )
    builder = StateGraph(State)
    builder.add_node("node", node, retry_policy=policy)
    builder.add_edge(START, "node")
    assert builder.compile().invoke({"messages": []}) == {"messages": ["done"]}
    # Lower bounds only (sleeping never ends early); no upper bound is asserted.
    assert stamps[1] - stamps[0] >= 0.02
    assert stamps[2] - stamps[1] >= 0.04


def test_retry_policy_delays_and_validation() -> None:
    policy = RetryPolicy(initial_interval=1, backoff_factor=2, max_interval=3, jitter=False)
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [1, 2, 3, 3]
    jittery = RetryPolicy(initial_interval=1, backoff_factor=2, max_interval=10, jitter=True)
    for _ in range(20):
        assert 2 <= jittery.delay(2) < 3
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="backoff_factor"):
        RetryPolicy(backoff_factor=0.5)


# ---------------------------------------------------------------------- no silent fallbacks


def test_persistence_without_checkpointer_is_an_error() -> None:
    app = _chain(["a"]).compile()
    config = _thread("t")
    for call in (
        lambda: app.get_state(config),
        lambda: list(app.get_state_history(config)),
        lambda: app.update_state(config, {"messages": ["x"]}),
        lambda: app.fork(config, "other"),
    ):
        with pytest.raises(NoCheckpointerError, match=r"compile\(.*checkpointer="):
            call()
    assert issubclass(NoCheckpointerError, ThreadlineError)


def test_a_thread_id_without_checkpointer_runs_and_keeps_nothing() -> None:
    """As LangGraph: a config's thread_id is only configuration when nothing stores threads
    (published programs pass one out of habit)."""
    app = _chain(["a"]).compile()
    config = _thread("t")
    assert len(app.invoke({"messages": []}, config)["messages"]) == 1
    assert len(app.invoke({"messages": []}, config)["messages"]) == 1  # nothing carried over
    assert list(app.stream({"messages": []}, config))


def test_invoke_none_without_checkpointer() -> None:
    with pytest.raises(EmptyInputError):
        _chain(["a"]).compile().invoke(None)
