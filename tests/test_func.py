"""The functional API: ``@entrypoint`` and ``@task``, sync and async, on every backend.

Finished task results are checkpointed: a resumed entrypoint (after an interrupt or a failure)
never calls a task that completed again. The SIGKILL version is in ``test_func_crash.py``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypedDict

import pytest
from counting import Calls, fresh_config

from threadline.cache.memory import InMemoryCache
from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.checkpoint.memory import MemorySaver
from threadline.errors import NodeTimeoutError, ThreadlineError
from threadline.func import entrypoint, task
from threadline.graph import START, StateGraph
from threadline.runtime import Runtime, get_runtime
from threadline.runtime.context import get_stream_writer
from threadline.types import CachePolicy, Command, RetryPolicy, TimeoutPolicy, interrupt


def _review_flow(saver: BaseCheckpointSaver | None, calls: Calls) -> Any:
    @task
    def draft(topic: str) -> str:
        calls.hit("draft")
        return f"essay on {topic}"

    @task
    def review(essay: str) -> str:
        calls.hit("review:before")
        verdict = interrupt({"essay": essay})
        calls.hit("review:after")
        return f"{essay} [{verdict}]"

    @task
    def publish(text: str) -> str:
        calls.hit("publish")
        return text.upper()

    @entrypoint(checkpointer=saver)
    def essay(topic: str) -> str:
        text = draft(topic).result()
        reviewed = review(text).result()
        return publish(reviewed).result()

    return essay


# ---------------------------------------------------------------------- basics


def test_invoke_without_checkpointer_runs_tasks_and_returns_the_value() -> None:
    @task
    def add_one(n: int) -> int:
        return n + 1

    @entrypoint()
    def add_all(numbers: list[int]) -> list[int]:
        futures = [add_one(n) for n in numbers]
        return [f.result() for f in futures]

    assert add_all.invoke([1, 2, 3]) == [2, 3, 4]
    assert list(add_all.stream([5])) == [{"add_one": 6}, {"add_all": [6]}]
    assert list(add_all.stream([5], stream_mode="values")) == [[6]]


def test_a_task_called_outside_a_run_is_an_error() -> None:
    @task
    def lonely() -> int:
        return 1

    with pytest.raises(ThreadlineError, match="outside a running entrypoint"):
        lonely()


def test_bad_entrypoint_functions_are_refused() -> None:
    def no_input() -> int:
        return 1

    def gen(x: int) -> Any:
        yield x

    with pytest.raises(ValueError, match="at least one parameter"):
        entrypoint()(no_input)
    with pytest.raises(NotImplementedError, match="generator"):
        entrypoint()(gen)


def test_sync_tasks_run_in_parallel() -> None:
    barrier = threading.Barrier(3, timeout=10)  # breaks (raises) unless all three meet

    @task
    def meet(i: int) -> int:
        barrier.wait()
        return i

    @entrypoint()
    def fan_out(n: int) -> list[int]:
        futures = [meet(i) for i in range(n)]
        return [f.result() for f in futures]

    assert fan_out.invoke(3) == [0, 1, 2]


def test_sync_futures_are_concurrent_futures() -> None:
    @task
    def square(n: int) -> int:
        return n * n

    @entrypoint()
    def flow(n: int) -> list[int]:
        futures = [square(i) for i in range(n)]
        done = concurrent.futures.as_completed(futures, timeout=10)
        return sorted(f.result() for f in done)

    assert flow.invoke(4) == [0, 1, 4, 9]


def test_tasks_run_on_threads_owned_by_the_run() -> None:
    names: list[str] = []

    @task
    def where() -> str:
        return threading.current_thread().name

    @entrypoint()
    def flow(n: int) -> list[str]:
        return [where().result() for _ in range(n)]

    names = flow.invoke(2)
    assert all(name.startswith("threadline-task") for name in names)
    assert not [t for t in threading.enumerate() if t.name.startswith("threadline-task")]


@dataclass
class Ctx:
    user: str


def _runtime_flow(saver: BaseCheckpointSaver) -> Any:
    @task
    def greet(n: int) -> str:
        rt = get_runtime(Ctx)
        return f"{rt.context.user}:{n}:{rt.previous}"

    @entrypoint(checkpointer=saver, context_schema=Ctx)
    def flow(n: int, runtime: Runtime[Ctx]) -> list[Any]:
        rt = get_runtime(Ctx)
        assert rt.context is runtime.context
        return [
            type(runtime.context).__name__,
            rt.context.user,
            runtime.previous,
            greet(n).result(),
        ]

    return flow


def test_runtime_context_in_entrypoints_and_tasks(saver: BaseCheckpointSaver) -> None:
    """invoke(context=...) reaches the entrypoint's runtime parameter and get_runtime(), in
    the entrypoint and in its tasks; a dict becomes the context_schema; previous is there too."""
    flow = _runtime_flow(saver)
    config = fresh_config()
    first = flow.invoke(1, config, context={"user": "ann"})
    assert first == ["Ctx", "ann", None, "ann:1:None"]
    second = flow.invoke(2, config, context=Ctx(user="bob"))
    assert second == ["Ctx", "bob", first, f"bob:2:{first}"]


def test_an_entrypoint_run_in_a_node_inherits_the_runs_context() -> None:
    @entrypoint()
    def inner(x: int, runtime: Runtime[Any]) -> list[Any]:
        return [x, runtime.context, get_runtime().context]

    class S(TypedDict):
        out: Any

    def node(state: S) -> dict[str, Any]:
        return {"out": inner.invoke(1)}

    builder = StateGraph(S, context_schema=dict)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    out = builder.compile().invoke({"out": None}, context={"u": 1})
    assert out == {"out": [1, {"u": 1}, {"u": 1}]}


async def test_runtime_context_in_async_entrypoints_and_tasks(asaver: BaseCheckpointSaver) -> None:
    @task
    async def greet(n: int) -> str:
        rt = get_runtime(Ctx)
        return f"{rt.context.user}:{n}:{rt.previous}"

    @entrypoint(checkpointer=asaver, context_schema=Ctx)
    async def flow(n: int, runtime: Runtime[Ctx]) -> list[Any]:
        return [runtime.context.user, runtime.previous, await greet(n)]

    config = fresh_config()
    first = await flow.ainvoke(1, config, context={"user": "ann"})
    assert first == ["ann", None, "ann:1:None"]
    chunks = [c async for c in flow.astream(2, config, context=Ctx(user="bob"))]
    assert chunks == [{"greet": f"bob:2:{first}"}, {"flow": ["bob", first, f"bob:2:{first}"]}]


def test_injected_parameters_and_custom_stream() -> None:
    seen: dict[str, Any] = {}

    @entrypoint(checkpointer=MemorySaver(), store="the-store")
    def flow(x: int, *, previous: Any, config: Any, writer: Any, store: Any, runtime: Any) -> int:
        writer({"progress": x})
        seen.update(
            previous=previous,
            thread=config["configurable"]["thread_id"],
            store=store,
            context=runtime.context,
            runtime_previous=runtime.previous,
        )
        return x * 10

    config = fresh_config()
    chunks = list(flow.stream(4, config, stream_mode=["custom", "updates"], context={"u": 1}))
    assert chunks == [("custom", {"progress": 4}), ("updates", {"flow": 40})]
    assert seen == {
        "previous": None,
        "thread": config["configurable"]["thread_id"],
        "store": "the-store",
        "context": {"u": 1},
        "runtime_previous": None,
    }
    flow.invoke(5, config)
    assert seen["previous"] == 40 and seen["runtime_previous"] == 40


def test_task_name_and_nested_tasks() -> None:
    @task(name="inner_step")
    def inner(x: int) -> int:
        return x + 1

    @task
    def outer(x: int) -> int:
        return inner(x).result() * 2

    @entrypoint()
    def flow(x: int) -> int:
        return outer(x).result()

    assert list(flow.stream(1)) == [{"inner_step": 2}, {"outer": 4}, {"flow": 4}]


def test_a_task_failure_reaches_the_entrypoint_which_may_catch_it() -> None:
    @task
    def bad() -> None:
        raise KeyError("missing")

    @entrypoint(checkpointer=MemorySaver())
    def flow(x: int) -> str:
        try:
            bad().result()
        except KeyError:
            return "caught"
        return "no"

    assert flow.invoke(1, fresh_config()) == "caught"


# ---------------------------------------------------------------------- state across runs


def test_previous_final_history_and_update_state(saver: BaseCheckpointSaver) -> None:
    @task
    def double(n: int) -> int:
        return 2 * n

    @entrypoint(checkpointer=saver)
    def flow(n: int, *, previous: Any = None) -> Any:
        return entrypoint.final(value=previous, save=double(n).result())

    config = fresh_config()
    assert flow.invoke(3, config) is None
    assert flow.invoke(1, config) == 6
    assert flow.get_state(config).values == 6  # what the run returned (it saved 2)
    history = list(flow.get_state_history(config))
    # LangGraph's shape: per run, the input checkpoint and the step that ran the function.
    assert [(s.metadata["source"], s.metadata["step"]) for s in history] == [  # type: ignore[index]
        ("loop", 2),
        ("input", 1),
        ("loop", 0),
        ("input", -1),
    ]
    assert [s.next for s in history] == [(), ("flow",), (), ("flow",)]
    flow.update_state(config, 100)
    assert flow.get_state(config).values == 100
    assert flow.invoke(7, config) == 100


def test_values_and_checkpoints_stream(saver: BaseCheckpointSaver) -> None:
    @entrypoint(checkpointer=saver)
    def echo(x: str) -> str:
        return x + "!"

    config = fresh_config()
    assert list(echo.stream("a", config, stream_mode="values")) == ["a!"]
    snaps = list(echo.stream("b", config, stream_mode="checkpoints"))
    assert [s["next"] for s in snaps] == [["echo"], []]
    assert snaps[-1]["values"] == "b!"


# ---------------------------------------------------------------------- interrupts


def test_interrupt_in_a_task_resumes_without_rerunning_finished_tasks(
    saver: BaseCheckpointSaver,
) -> None:
    calls = Calls()
    essay = _review_flow(saver, calls)
    config = fresh_config()
    first = list(essay.stream("cats", config))
    assert first[0] == {"draft": "essay on cats"}
    assert first[-1]["__interrupt__"][0].value == {"essay": "essay on cats"}
    state = essay.get_state(config)
    assert state.next == ("essay",) and state.interrupts[0].value == {"essay": "essay on cats"}

    second = list(essay.stream(Command(resume="ok"), config))
    assert second == [
        {"review": "essay on cats [ok]"},
        {"publish": "ESSAY ON CATS [OK]"},
        {"essay": "ESSAY ON CATS [OK]"},
    ]
    assert (calls["draft"], calls["review:before"], calls["review:after"]) == (1, 2, 1)
    assert calls["publish"] == 1
    assert essay.get_state(config).values == "ESSAY ON CATS [OK]"


def test_invoke_returns_the_interrupt_then_the_value(saver: BaseCheckpointSaver) -> None:
    @entrypoint(checkpointer=saver)
    def ask(x: int) -> list[Any]:
        return [interrupt("first?"), interrupt("second?")]

    config = fresh_config()
    paused = ask.invoke(1, config)
    assert [i.value for i in paused["__interrupt__"]] == ["first?"]
    assert ask.invoke(Command(resume="a"), config)["__interrupt__"][0].value == "second?"
    assert ask.invoke(Command(resume="b"), config) == ["a", "b"]
    # A new run that pauses shows the pause in "values", not the previous run's return value.
    chunks = list(ask.stream(2, config, stream_mode="values"))
    assert [i.value for i in chunks[-1]["__interrupt__"]] == ["first?"]
    assert len(chunks) == 1


def test_interrupts_of_tasks_and_of_the_body_keep_their_own_answers(
    saver: BaseCheckpointSaver,
) -> None:
    calls = Calls()

    @task
    def confirm(item: str) -> str:
        calls.hit(item)
        return f"{item}:{interrupt(f'confirm {item}?')}"

    @entrypoint(checkpointer=saver)
    def flow(items: list[str]) -> Any:
        confirmed = [confirm(i).result() for i in items]
        return {"confirmed": confirmed, "note": interrupt("any note?")}

    config = fresh_config()
    flow.invoke(["a", "b"], config)
    flow.invoke(Command(resume="yes"), config)
    out = flow.invoke(Command(resume="no"), config)
    assert out["__interrupt__"][0].value == "any note?"
    assert flow.invoke(Command(resume="fine"), config) == {
        "confirmed": ["a:yes", "b:no"],
        "note": "fine",
    }
    assert (calls["a"], calls["b"]) == (2, 2)  # each asked once, answered once


def test_resume_after_a_failure_reruns_only_the_failed_task(saver: BaseCheckpointSaver) -> None:
    calls = Calls()
    fail = {"now": True}

    @task
    def slow() -> str:
        calls.hit("slow")
        return "slow done"

    @task
    def flaky() -> str:
        calls.hit("flaky")
        if fail["now"]:
            raise ValueError("flaky failed")
        return "flaky done"

    @entrypoint(checkpointer=saver)
    def flow(x: int) -> list[str]:
        return [slow().result(), flaky().result()]

    config = fresh_config()
    with pytest.raises(ValueError, match="flaky failed"):
        flow.invoke(1, config)
    fail["now"] = False
    assert flow.invoke(None, config) == ["slow done", "flaky done"]
    assert (calls["slow"], calls["flaky"]) == (1, 2)


@pytest.mark.parametrize("durability", ["async", "exit"])
def test_other_durabilities_keep_task_results_across_an_interrupt(
    saver: BaseCheckpointSaver, durability: str
) -> None:
    calls = Calls()
    essay = _review_flow(saver, calls)
    config = fresh_config()
    essay.invoke("dogs", config, durability=durability)
    out = essay.invoke(Command(resume="fine"), config, durability=durability)
    assert out == "ESSAY ON DOGS [FINE]"
    assert calls["draft"] == 1


def test_tasks_inside_graph_nodes_are_durable(saver: BaseCheckpointSaver) -> None:
    calls = Calls()

    @task
    def fetch(x: int) -> int:
        calls.hit("fetch")
        return x * 3

    class State(TypedDict):
        x: int

    def node(state: State) -> dict[str, int]:
        value = fetch(state["x"]).result()
        return {"x": value + interrupt("add what?")}

    builder = StateGraph(State)
    builder.add_node(node)
    builder.add_edge(START, "node")
    graph = builder.compile(checkpointer=saver)
    config = fresh_config()
    graph.invoke({"x": 2}, config)
    assert graph.invoke(Command(resume=1), config) == {"x": 7}
    assert calls["fetch"] == 1


def test_tasks_of_parallel_nodes_save_concurrently(saver: BaseCheckpointSaver) -> None:
    calls = Calls()

    @task
    def work(name: str, i: int) -> str:
        calls.hit(f"{name}{i}")
        get_stream_writer()(f"{name}{i}")
        return f"{name}{i}"

    class State(TypedDict, total=False):
        a: list[str]
        b: list[str]

    def node_a(state: State) -> dict[str, Any]:
        return {"a": [f.result() for f in [work("a", i) for i in range(4)]]}

    def node_b(state: State) -> dict[str, Any]:
        done = [f.result() for f in [work("b", i) for i in range(4)]]
        return {"b": [*done, interrupt("more?")]}

    builder = StateGraph(State)
    builder.add_node(node_a)
    builder.add_node(node_b)
    builder.add_edge(START, "node_a")
    builder.add_edge(START, "node_b")
    graph = builder.compile(checkpointer=saver)
    config = fresh_config()
    # "custom" runs the step's nodes on worker threads while the driver saves their results.
    custom = list(graph.stream({}, config, stream_mode="custom"))
    assert sorted(custom) == sorted([f"a{i}" for i in range(4)] + [f"b{i}" for i in range(4)])
    assert graph.invoke(Command(resume="no"), config) == {
        "a": ["a0", "a1", "a2", "a3"],
        "b": ["b0", "b1", "b2", "b3", "no"],
    }
    assert all(calls[f"{n}{i}"] == 1 for n in "ab" for i in range(4))


def test_a_graph_and_an_entrypoint_inside_an_entrypoint(saver: BaseCheckpointSaver) -> None:
    class State(TypedDict):
        foo: int

    builder = StateGraph(State)
    builder.add_node("double", lambda s: {"foo": s["foo"] * 2})
    builder.add_edge(START, "double")
    graph = builder.compile()

    @entrypoint()
    def multiply(pair: dict[str, int]) -> int:
        return pair["a"] * pair["b"]

    @entrypoint(checkpointer=saver)
    def main(x: int) -> dict[str, int]:
        doubled = graph.invoke({"foo": x})["foo"]
        return {"double": doubled, "product": multiply.invoke({"a": x, "b": 7})}

    assert main.invoke(6, fresh_config()) == {"double": 12, "product": 42}


# ---------------------------------------------------------------------- retry and cache


def test_task_retry_policies() -> None:
    attempts = Calls()

    @task(retry_policy=RetryPolicy(retry_on=ValueError, initial_interval=0, jitter=False))
    def twice() -> str:
        attempts.hit("twice")
        if attempts["twice"] < 2:
            raise ValueError("once more")
        return "ok"

    @task(
        retry_policy=[
            RetryPolicy(retry_on=KeyError, max_attempts=1),
            RetryPolicy(retry_on=LookupError, max_attempts=2, initial_interval=0),
        ]
    )
    def never() -> str:
        attempts.hit("never")
        raise KeyError("always")

    @entrypoint()
    def flow(x: int) -> str:
        first = twice().result()
        try:
            never().result()
        except KeyError:
            return first + ", gave up"
        return first

    assert flow.invoke(1) == "ok, gave up"
    assert attempts["twice"] == 2
    assert attempts["never"] == 1  # the first matching policy decides: one attempt


def test_entrypoint_retry_policy() -> None:
    attempts = Calls()

    @entrypoint(retry_policy=RetryPolicy(retry_on=ConnectionError, initial_interval=0))
    def flow(x: int) -> int:
        attempts.hit("flow")
        if attempts["flow"] < 3:
            raise ConnectionError("down")
        return x

    assert flow.invoke(5) == 5 and attempts["flow"] == 3


def test_task_cache_policy() -> None:
    calls = Calls()
    cache = InMemoryCache()

    @task(cache_policy=CachePolicy())
    def square(n: int) -> int:
        calls.hit(str(n))
        return n * n

    @entrypoint(cache=cache)
    def flow(numbers: list[int]) -> list[int]:
        return [square(n).result() for n in numbers]

    assert flow.invoke([2, 3]) == [4, 9]
    assert list(flow.stream([3, 4])) == [
        {"square": 9, "__metadata__": {"cached": True}},
        {"square": 16},
        {"flow": [9, 16]},
    ]
    assert flow.invoke([3, 2, 4]) == [9, 4, 16]
    assert (calls["2"], calls["3"], calls["4"]) == (1, 1, 1)
    square.clear_cache(cache)
    assert flow.invoke([2]) == [4] and calls["2"] == 2


def test_entrypoint_cache_policy() -> None:
    calls = Calls()

    @entrypoint(cache=InMemoryCache(), cache_policy=CachePolicy(key_func=str))
    def slow(x: int) -> int:
        calls.hit("slow")
        return x + 1

    assert slow.invoke(1) == 2 and slow.invoke(1) == 2 and slow.invoke(2) == 3
    assert calls["slow"] == 2
    assert list(slow.stream(1)) == [{"slow": 2, "__metadata__": {"cached": True}}]


def test_task_in_a_graph_node_uses_the_graphs_cache() -> None:
    calls = Calls()

    @task(cache_policy=CachePolicy())
    def square(n: int) -> int:
        calls.hit(str(n))
        return n * n

    class S(TypedDict):
        n: int
        out: int

    def node(state: S) -> dict[str, int]:
        return {"out": square(state["n"]).result()}

    builder = StateGraph(S)
    builder.add_node("node", node)
    builder.add_edge(START, "node")
    app = builder.compile(cache=InMemoryCache())
    assert app.invoke({"n": 3}) == app.invoke({"n": 3}) == {"n": 3, "out": 9}
    assert calls["3"] == 1


# ---------------------------------------------------------------------- async


async def test_async_tasks_run_concurrently_and_are_durable(asaver: BaseCheckpointSaver) -> None:
    calls = Calls()
    started = asyncio.Event()

    @task
    async def first() -> str:
        calls.hit("first")
        await asyncio.wait_for(started.wait(), 10)  # only returns once `second` runs too
        return "1"

    @task
    async def second() -> str:
        calls.hit("second")
        started.set()
        return "2"

    @task
    def blocking(x: str) -> str:
        calls.hit("blocking")
        return x + "b"

    @entrypoint(checkpointer=asaver)
    async def flow(x: int) -> str:
        a, b = await asyncio.gather(first(), second())
        c = await blocking(a + b)
        answer = interrupt("go on?")
        return f"{c}-{answer}"

    config = fresh_config()
    paused = await flow.ainvoke(1, config)
    assert paused["__interrupt__"][0].value == "go on?"
    chunks = [c async for c in flow.astream(Command(resume="yes"), config)]
    assert chunks == [{"flow": "12b-yes"}]
    assert (calls["first"], calls["second"], calls["blocking"]) == (1, 1, 1)
    assert (await flow.aget_state(config)).values == "12b-yes"
    assert len([s async for s in flow.aget_state_history(config)]) == 2


async def test_sync_entrypoint_under_ainvoke(asaver: BaseCheckpointSaver) -> None:
    calls = Calls()
    essay = _review_flow(asaver, calls)
    config = fresh_config()
    first = [c async for c in essay.astream("owls", config)]
    assert first[0] == {"draft": "essay on owls"}
    assert await essay.ainvoke(Command(resume="ok"), config) == "ESSAY ON OWLS [OK]"
    assert calls["draft"] == 1 and calls["review:before"] == 2


async def test_astart_takes_the_functions_input(asaver: BaseCheckpointSaver) -> None:
    """What the server runs: the input is the function's, as for ainvoke (not a state update)."""
    calls = Calls()
    essay = _review_flow(asaver, calls)
    config = fresh_config()
    handle = essay.astart("owls", config, stream_mode="updates")
    updates = [e.data async for e in handle.events()]
    assert updates[0] == {"draft": "essay on owls"} and "__interrupt__" in updates[-1]
    handle = essay.astart(Command(resume="ok"), config)
    await handle.wait()
    assert (await handle.state()).values == "ESSAY ON OWLS [OK]"


async def test_async_gather_returned_unawaited_and_result_before_ready() -> None:
    @task
    async def inc(n: int) -> int:
        await asyncio.sleep(0)
        return n + 1

    @entrypoint()
    async def all_of(numbers: list[int]) -> Any:
        return asyncio.gather(*[inc(n) for n in numbers])

    assert await all_of.ainvoke([1, 2]) == [2, 3]

    @entrypoint()
    async def too_soon(n: int) -> int:
        return inc(n).result()

    with pytest.raises(ThreadlineError, match="await the future"):
        await too_soon.ainvoke(1)


async def test_async_task_from_sync_code_is_an_error() -> None:
    @task
    async def nope() -> int:
        return 1

    @entrypoint()
    def flow(x: int) -> int:
        return nope().result()

    with pytest.raises(ThreadlineError, match="is async"):
        flow.invoke(1)


async def test_async_update_state_and_cache(asaver: BaseCheckpointSaver) -> None:
    calls = Calls()
    cache = InMemoryCache()

    @task(cache_policy=CachePolicy())
    async def cube(n: int) -> int:
        calls.hit("cube")
        return n**3

    @entrypoint(checkpointer=asaver, cache=cache)
    async def flow(n: int, previous: Any = None) -> Any:
        return [previous, await cube(n)]

    config = fresh_config()
    assert await flow.ainvoke(2, config) == [None, 8]
    await flow.aupdate_state(config, "edited")
    assert await flow.ainvoke(2, config) == ["edited", 8]
    assert calls["cube"] == 1


# ---------------------------------------------------------------------- timeouts


async def test_async_task_timeout_is_retried_then_raised() -> None:
    attempts = Calls()

    @task(timeout=0.05, retry_policy=RetryPolicy(initial_interval=0, max_attempts=2))
    async def slow_once() -> str:
        attempts.hit("slow_once")
        if attempts["slow_once"] == 1:
            await asyncio.sleep(30)
        return "done"

    @task(timeout=timedelta(milliseconds=20))
    async def stuck() -> None:
        await asyncio.sleep(30)

    @entrypoint()
    async def flow(x: int) -> str:
        first = await slow_once()
        try:
            await stuck()
        except NodeTimeoutError:
            return first + ", stuck timed out"
        return first

    assert await flow.ainvoke(1) == "done, stuck timed out"
    assert attempts["slow_once"] == 2

    @entrypoint(timeout=0.02)
    async def whole(x: int) -> None:
        await asyncio.sleep(30)

    with pytest.raises(NodeTimeoutError, match="entrypoint 'whole'"):
        await whole.ainvoke(1)


async def test_timeout_policy_run_timeout() -> None:
    @task(timeout=TimeoutPolicy(run_timeout=0.02))
    async def stuck() -> None:
        await asyncio.sleep(30)

    @entrypoint(timeout=TimeoutPolicy(run_timeout=timedelta(seconds=30)))
    async def flow(x: int) -> str:
        try:
            await stuck()
        except NodeTimeoutError:
            return "stuck timed out"
        return "finished"

    assert await flow.ainvoke(1) == "stuck timed out"

    async def idle() -> None:
        pass

    with pytest.raises(ValueError, match="idle_timeout is not supported"):
        task(timeout=TimeoutPolicy(idle_timeout=1))(idle)
    assert task(timeout=TimeoutPolicy())(idle).timeout is None


def test_timeouts_need_async_functions() -> None:
    def sync_task() -> int:
        return 1

    def sync_flow(x: int) -> int:
        return x

    with pytest.raises(ValueError, match="only for async"):
        task(timeout=1)(sync_task)
    with pytest.raises(ValueError, match="only for async"):
        entrypoint(timeout=1)(sync_flow)


# ---------------------------------------------------------------------- answers matched by id


def test_a_node_interrupt_after_its_subgraph_was_answered_asks_its_own_question(
    saver: BaseCheckpointSaver,
) -> None:
    """Answers are matched by interrupt id: the answer given to a subgraph run inside a node
    is not taken as the answer to the node's own next interrupt() (it used to be, by
    position)."""

    class State(TypedDict, total=False):
        log: list[str]

    def inner_ask(state: State) -> dict[str, Any]:
        return {"log": [f"inner:{interrupt('inner?')}"]}

    inner = StateGraph(State)
    inner.add_node(inner_ask)
    inner.add_edge(START, "inner_ask")
    sub = inner.compile()

    def outer(state: State) -> dict[str, Any]:
        got = sub.invoke({"log": []})
        return {"log": [*got["log"], f"outer:{interrupt('outer?')}"]}

    builder = StateGraph(State)
    builder.add_node(outer)
    builder.add_edge(START, "outer")
    graph = builder.compile(checkpointer=saver)
    config = fresh_config()
    assert graph.invoke({"log": []}, config)["__interrupt__"][0].value == "inner?"
    paused = graph.invoke(Command(resume="a"), config)
    assert [i.value for i in paused["__interrupt__"]] == ["outer?"]
    assert graph.invoke(Command(resume="b"), config)["log"] == ["inner:a", "outer:b"]
