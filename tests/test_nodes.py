"""What a node may be and take: LangChain Runnables, the parameters threadline passes by name,
cached nodes (``CachePolicy``) and ``Overwrite`` writes."""

from __future__ import annotations

import itertools
import operator
from typing import Annotated, Any, TypedDict

import pytest
from counting import fresh_config, made_by

from threadline.cache.memory import InMemoryCache
from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.errors import GraphValidationError, InvalidUpdateError
from threadline.graph import END, START, StateGraph
from threadline.runtime import Runtime
from threadline.types import CachePolicy, Overwrite

lc = pytest.importorskip("langchain_core.runnables")


class State(TypedDict, total=False):
    log: Annotated[list[str], operator.add]
    text: str


def _chain(*nodes: tuple[str, Any], **compile_args: Any) -> Any:
    builder = StateGraph(State)
    for name, fn in nodes:
        builder.add_node(name, fn)
    builder.add_edge(START, nodes[0][0])
    for (a, _), (b, _) in itertools.pairwise(nodes):
        builder.add_edge(a, b)
    builder.add_edge(nodes[-1][0], END)
    return builder.compile(**compile_args)


# ---------------------------------------------------------------------- Runnables


def test_an_lcel_chain_is_a_node() -> None:
    upper = lc.RunnableLambda(lambda s: s["text"].upper())
    wrap = lc.RunnableLambda(lambda t: {"text": t, "log": [f"chain:{t}"]})
    app = _chain(("chain", upper | wrap))
    assert app.invoke({"text": "hi"}) == {"text": "HI", "log": ["chain:HI"]}


def test_a_runnable_gets_the_config_and_is_named_after_itself(saver: BaseCheckpointSaver) -> None:
    def tag(state: State, config: Any) -> dict[str, Any]:
        return {"log": [config["configurable"]["thread_id"]]}

    runnable = lc.RunnableLambda(tag, name="tagger")
    builder = StateGraph(State)
    builder.add_node(runnable)
    builder.add_edge(START, "tagger")
    config = fresh_config()
    out = builder.compile(checkpointer=saver).invoke({}, config)
    assert out == {"log": [config["configurable"]["thread_id"]]}


async def test_async_runnables_are_awaited(asaver: BaseCheckpointSaver) -> None:
    async def shout(state: State) -> dict[str, Any]:
        return {"log": ["async runnable"]}

    sync_one = lc.RunnableLambda(lambda s: {"log": ["sync runnable"]})
    app = _chain(("a", lc.RunnableLambda(shout)), ("b", sync_one), checkpointer=asaver)
    out = await app.ainvoke({}, fresh_config())
    assert out == {"log": ["async runnable", "sync runnable"]}


def test_any_object_with_invoke_and_ainvoke_is_a_node() -> None:
    class Doubler:
        def invoke(self, state: Any, config: Any = None) -> dict[str, Any]:
            return {"text": state["text"] * 2}

        async def ainvoke(self, state: Any, config: Any = None) -> dict[str, Any]:
            return self.invoke(state, config)

    assert _chain(("double", Doubler())).invoke({"text": "ab"}) == {"text": "abab", "log": []}


def test_neither_callable_nor_runnable_is_refused() -> None:
    with pytest.raises(GraphValidationError, match="neither callable nor a Runnable"):
        StateGraph(State).add_node("x", 42)  # type: ignore[arg-type]


# ---------------------------------------------------------------------- parameters


def test_parameters_are_passed_by_name_in_every_form() -> None:
    seen: dict[str, Any] = {}

    def state_only(state: State) -> None:
        seen["state_only"] = sorted(state)

    def positional_config(state: State, cfg: Any) -> None:
        seen["positional_config"] = "configurable" in cfg or "recursion_limit" in cfg or cfg == {}

    def state_runtime(state: State, runtime: Runtime[str]) -> None:
        seen["state_runtime"] = runtime.context

    def keywords(state: State, *, writer: Any, config: Any, runtime: Any) -> None:
        seen["keywords"] = (callable(writer), isinstance(config, dict), runtime.context)

    def previous(state: State, previous: Any = "unset") -> None:
        seen["previous"] = previous

    builder = StateGraph(State, context_schema=str)
    builder.add_sequence([state_only, positional_config, state_runtime, keywords, previous])
    builder.add_edge(START, "state_only")
    builder.compile().invoke({"text": "t"}, context="ctx")
    assert seen == {
        "state_only": ["log", "text"],
        "positional_config": True,
        "state_runtime": "ctx",
        "keywords": (True, True, "ctx"),
        "previous": None,
    }


def test_a_callable_object_takes_the_runtime() -> None:
    class Node:
        def __call__(self, state: State, runtime: Runtime[str]) -> dict[str, Any]:
            return {"log": [runtime.context]}

    builder = StateGraph(State)
    builder.add_node("obj", Node())
    builder.add_edge(START, "obj")
    assert builder.compile().invoke({}, context="from ctx") == {"log": ["from ctx"]}


# ---------------------------------------------------------------------- cache


def _cached_graph(calls: list[str], policy: CachePolicy[Any], **compile_args: Any) -> Any:
    def expensive(state: State) -> dict[str, Any]:
        calls.append(state["text"])
        return {"log": [f"computed {state['text']}"]}

    builder = StateGraph(State)
    builder.add_node("expensive", expensive, cache_policy=policy)
    builder.add_edge(START, "expensive")
    return builder.compile(**compile_args)


def test_a_cached_node_reuses_its_result_for_the_same_input() -> None:
    calls: list[str] = []
    app = _cached_graph(calls, CachePolicy(), cache=InMemoryCache())
    assert app.invoke({"text": "a"}) == {"text": "a", "log": ["computed a"]}
    assert app.invoke({"text": "a"}) == {"text": "a", "log": ["computed a"]}
    assert app.invoke({"text": "b"}) == {"text": "b", "log": ["computed b"]}
    assert calls == ["a", "b"]


def test_a_cache_hit_is_marked_in_updates() -> None:
    calls: list[str] = []
    app = _cached_graph(calls, CachePolicy(), cache=InMemoryCache())
    computed = {"expensive": {"log": ["computed a"]}}
    assert list(app.stream({"text": "a"})) == [computed]
    assert list(app.stream({"text": "a"})) == [{**computed, "__metadata__": {"cached": True}}]
    values = list(app.stream({"text": "a"}, stream_mode="values"))
    assert values[-1] == {"text": "a", "log": ["computed a"]} and calls == ["a"]


def test_key_func_names_the_entry_and_ttl_zero_never_reuses() -> None:
    calls: list[str] = []
    by_length = CachePolicy(key_func=lambda s: str(len(s["text"])))
    app = _cached_graph(calls, by_length, cache=InMemoryCache())
    app.invoke({"text": "aa"})
    assert app.invoke({"text": "bb"})["log"] == ["computed aa"]  # same key: same result
    assert calls == ["aa"]

    expired: list[str] = []
    app = _cached_graph(expired, CachePolicy(ttl=0), cache=InMemoryCache())
    app.invoke({"text": "a"})
    app.invoke({"text": "a"})
    assert expired == ["a", "a"]


def test_without_a_cache_the_policy_does_nothing_and_clear_forgets() -> None:
    calls: list[str] = []
    _cached_graph(calls, CachePolicy()).invoke({"text": "a"})
    _cached_graph(calls, CachePolicy()).invoke({"text": "a"})
    assert calls == ["a", "a"]

    cache = InMemoryCache()
    again: list[str] = []
    app = _cached_graph(again, CachePolicy(), cache=cache)
    app.invoke({"text": "a"})
    cache.clear()
    app.invoke({"text": "a"})
    assert again == ["a", "a"]


def test_a_cached_result_is_saved_like_a_computed_one(saver: BaseCheckpointSaver) -> None:
    calls: list[str] = []
    app = _cached_graph(calls, CachePolicy(), checkpointer=saver, cache=InMemoryCache())
    first, second = fresh_config(), fresh_config()
    app.invoke({"text": "a"}, first)
    app.invoke({"text": "a"}, second)
    assert calls == ["a"]
    assert app.get_state(second).values == {"text": "a", "log": ["computed a"]}
    history = list(app.get_state_history(second))
    assert made_by(history, history[0]) == ["expensive"]


async def test_async_cached_node(asaver: BaseCheckpointSaver) -> None:
    calls: list[str] = []

    async def expensive(state: State) -> dict[str, Any]:
        calls.append(state["text"])
        return {"log": ["done"]}

    builder = StateGraph(State)
    builder.add_node("expensive", expensive, cache_policy=CachePolicy(ttl=60))
    builder.add_edge(START, "expensive")
    app = builder.compile(checkpointer=asaver, cache=InMemoryCache())
    await app.ainvoke({"text": "x"}, fresh_config())
    out = await app.ainvoke({"text": "x"}, fresh_config())
    assert out["log"] == ["done"] and calls == ["x"]


# ---------------------------------------------------------------------- Overwrite


def _overwriting(saver: BaseCheckpointSaver | None = None) -> Any:
    builder = StateGraph(State)
    builder.add_node("add", lambda s: {"log": ["a"]})
    builder.add_node("reset", lambda s: {"log": Overwrite(["fresh"])})
    builder.add_node("more", lambda s: {"log": ["b"]})
    builder.add_edge(START, "add")
    builder.add_edge("add", "reset")
    builder.add_edge("reset", "more")
    return builder.compile(checkpointer=saver)


def test_overwrite_bypasses_the_reducer(saver: BaseCheckpointSaver) -> None:
    app = _overwriting(saver)
    config = fresh_config()
    assert app.invoke({"log": ["start"]}, config)["log"] == ["fresh", "b"]
    assert app.get_state(config).values["log"] == ["fresh", "b"]
    # The stored versions replay to the same lists at every checkpoint.
    logs = [s.values["log"] for s in app.get_state_history(config)]
    assert logs[:3] == [["fresh", "b"], ["fresh"], ["start", "a"]]
    assert logs[3] == ["start"]
    # The next run appends on top of the overwritten value, then overwrites again.
    assert app.invoke({"log": ["again"]}, config)["log"] == ["fresh", "b"]
    logs = [s.values["log"] for s in app.get_state_history(config)]
    assert logs[2] == ["fresh", "b", "again", "a"]


def test_overwrite_dict_form_and_two_overwrites_in_one_step() -> None:
    builder = StateGraph(State)
    builder.add_node("a", lambda s: {"log": {"__overwrite__": ["x"]}})
    builder.add_edge(START, "a")
    assert builder.compile().invoke({"log": ["old"]}) == {"log": ["x"]}

    builder = StateGraph(State)
    builder.add_node("a", lambda s: {"log": Overwrite(["a"])})
    builder.add_node("b", lambda s: {"log": Overwrite(["b"])})
    builder.add_edge(START, "a")
    builder.add_edge(START, "b")
    with pytest.raises(InvalidUpdateError, match="two Overwrite values in one step"):
        builder.compile().invoke({})


def test_overwrite_of_a_plain_key_writes_the_value() -> None:
    builder = StateGraph(State)
    builder.add_node("a", lambda s: {"text": Overwrite("plain")})
    builder.add_edge(START, "a")
    assert builder.compile().invoke({"text": "x"})["text"] == "plain"


# ---------------------------------------------------------------------- retry policies


def test_several_retry_policies_the_first_matching_one_applies() -> None:
    from threadline.types import RetryPolicy

    failures = [ConnectionError("net"), ConnectionError("net"), KeyError("k"), KeyError("k")]
    attempts: list[str] = []

    def flaky(state: State) -> dict[str, Any]:
        if failures:
            error = failures.pop(0)
            attempts.append(type(error).__name__)
            raise error
        return {"log": ["ok"]}

    # Attempts count per task, whichever policy let the last one happen.
    policies = [
        RetryPolicy(retry_on=ConnectionError, max_attempts=5, initial_interval=0, jitter=False),
        RetryPolicy(retry_on=KeyError, max_attempts=5, initial_interval=0, jitter=False),
    ]
    builder = StateGraph(State)
    builder.add_node("flaky", flaky, retry_policy=policies)
    builder.add_edge(START, "flaky")
    assert builder.compile().invoke({})["log"] == ["ok"]
    assert attempts == ["ConnectionError", "ConnectionError", "KeyError", "KeyError"]

    failures[:] = [ValueError("no policy retries this")]
    with pytest.raises(ValueError, match="no policy"):
        builder.compile().invoke({})
