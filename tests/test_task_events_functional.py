"""``@task`` calls in stream modes "tasks", "debug" and "checkpoints", and in ``get_state``, as
LangGraph shows them: each scenario runs on threadline and on LangGraph in the same test, and
both stream the same chunks in the same order (ids and times masked, see ``chunks.plain``).

What LangGraph does, and these tests pin: a call is a task of its own (input ``(args,
kwargs)``, trigger ``__pregel_push``, result ``{"__return__": value}``), its update comes right
before its result and the caller's after; a failed call ends with its error, a cache hit and a
call that asked a question send no end, a call replayed from its saved result on resume starts
again but sends no end and no update; retries are one task; calls never show in checkpoints.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, TypedDict

import pytest
from chunks import plain

import threadline.cache.memory
import threadline.checkpoint.memory
import threadline.func
import threadline.graph
import threadline.types

# "values" is left out: on a pause LangGraph sends the question as values at once, threadline
# at the step's end, and a resumed LangGraph run starts with the values (see the test below).
MODES: list[Any] = [["tasks", "updates"], "debug", ["checkpoints", "tasks", "updates"]]


def _library(name: str) -> SimpleNamespace:
    if name == "threadline":
        func, types, graph = threadline.func, threadline.types, threadline.graph
        memory, cache = threadline.checkpoint.memory, threadline.cache.memory
    else:
        func = pytest.importorskip("langgraph.func")
        types = pytest.importorskip("langgraph.types")
        graph = pytest.importorskip("langgraph.graph")
        memory = pytest.importorskip("langgraph.checkpoint.memory")
        cache = pytest.importorskip("langgraph.cache.memory")
    return SimpleNamespace(
        task=func.task, entrypoint=func.entrypoint, interrupt=types.interrupt,
        Command=types.Command, RetryPolicy=types.RetryPolicy, CachePolicy=types.CachePolicy,
        StateGraph=graph.StateGraph, START=graph.START, Saver=memory.InMemorySaver,
        Cache=cache.InMemoryCache,
    )  # fmt: skip


@dataclass
class Scenario:
    """A workflow and the inputs streamed to it, one run after another, on one thread."""

    app: Any
    inputs: list[Any]
    aio: bool = False
    threads: list[str] = field(default_factory=list)  # one per input; default: all on "t"


def _record(name: str, scenario: Callable[[SimpleNamespace], Scenario], mode: Any) -> list[Any]:
    """Every chunk of every run (masked), what each run raised, and the state after it."""
    s = scenario(_library(name))
    out: list[Any] = []
    for i, value in enumerate(s.inputs):
        thread = s.threads[i] if s.threads else "t"
        config = {"configurable": {"thread_id": thread}}
        try:
            if s.aio:
                chunks = asyncio.run(_alist(s.app.astream(value, config, stream_mode=mode)))
            else:
                chunks = s.app.stream(value, config, stream_mode=mode)
            out += [plain(c) for c in chunks]
        except Exception as exc:
            out.append(("raised", plain(exc)))
        if s.app.checkpointer is not None:
            out.append(("state", *_state(s.app, config)))
    return out


async def _alist(stream: Any) -> list[Any]:
    return [chunk async for chunk in stream]


def _state(app: Any, config: Any) -> tuple[Any, ...]:
    """``get_state``: next, the tasks (an error as whether there is one), the interrupts."""
    snap = app.get_state(config)
    tasks = [
        (t.name, t.path, t.error is not None, plain(t.interrupts), t.result) for t in snap.tasks
    ]
    return snap.next, tasks, plain(snap.interrupts)


def _same(scenario: Callable[[SimpleNamespace], Scenario], mode: Any) -> list[Any]:
    ours = _record("threadline", scenario, mode)
    assert ours == _record("langgraph", scenario, mode)
    return ours


# ---------------------------------------------------------------------- scenarios


def one_call(lib: SimpleNamespace) -> Scenario:
    @lib.task
    def double(x: int) -> int:
        return 2 * x

    @lib.entrypoint(checkpointer=lib.Saver())
    def main(x: int) -> int:
        return double(x).result() + 1

    return Scenario(main, [3, 4])


def parallel_calls(lib: SimpleNamespace) -> Scenario:
    """Two calls running at once; events make the order of their ends fixed."""
    both_called, first_read = threading.Event(), threading.Event()

    @lib.task
    def first(x: int) -> int:
        both_called.wait(5)
        return x + 1

    @lib.task
    def second(x: int, *, times: int) -> int:
        first_read.wait(5)
        return x * times

    @lib.entrypoint(checkpointer=lib.Saver())
    def main(x: int) -> list[int]:
        a, b = first(x), second(x, times=10)
        both_called.set()
        got = a.result()
        first_read.set()
        return [got, b.result()]

    return Scenario(main, [1])


def nested_calls(lib: SimpleNamespace) -> Scenario:
    @lib.task
    def inner(x: int) -> int:
        return x + 1

    @lib.task
    def outer(x: int) -> int:
        return inner(x).result() * 2

    @lib.entrypoint(checkpointer=lib.Saver())
    def main(x: int) -> int:
        return outer(x).result()

    return Scenario(main, [1])


def failing_call(lib: SimpleNamespace) -> Scenario:
    """A call that fails fails the entrypoint; one whose error the entrypoint catches not."""

    @lib.task
    def bad(x: int) -> int:
        raise ValueError(f"bad {x}")

    @lib.entrypoint(checkpointer=lib.Saver())
    def main(x: int) -> str:
        if x == 2:
            try:
                bad(x).result()
            except ValueError:
                return "caught"
        return str(bad(x).result())

    return Scenario(main, [1, 2], threads=["a", "b"])


def retried_call(lib: SimpleNamespace) -> Scenario:
    """Retries are one task: one start, one end (the last attempt's)."""
    attempts: list[int] = []
    policy = lib.RetryPolicy(
        max_attempts=3, initial_interval=0.001, jitter=False, retry_on=ValueError
    )

    @lib.task(retry_policy=policy)
    def flaky(x: int) -> int:
        attempts.append(x)
        if x == 1 and len(attempts) < 3:
            raise ValueError("not yet")
        if x == 2:
            raise ValueError("never")
        return x

    @lib.entrypoint(checkpointer=lib.Saver())
    def main(x: int) -> int:
        return flaky(x).result()

    return Scenario(main, [1, 2], threads=["a", "b"])


def cached_call(lib: SimpleNamespace) -> Scenario:
    """A cache hit starts, is marked cached in "updates", and sends no end."""

    @lib.task(cache_policy=lib.CachePolicy())
    def slow(x: int) -> int:
        return x * 2

    @lib.entrypoint(checkpointer=lib.Saver(), cache=lib.Cache())
    def main(x: int) -> int:
        return slow(x).result()

    return Scenario(main, [1, 1], threads=["a", "b"])


def question_in_a_call(lib: SimpleNamespace) -> Scenario:
    """A call that asks sends no end; resumed, it runs again and ends."""

    @lib.task
    def ask(x: int) -> str:
        return str(lib.interrupt(f"q{x}"))

    @lib.entrypoint(checkpointer=lib.Saver())
    def main(x: int) -> str:
        return ask(x).result()

    return Scenario(main, [1, lib.Command(resume="yes")])


def replayed_call(lib: SimpleNamespace) -> Scenario:
    """On resume a call saved before the question starts again, with no end nor update."""

    @lib.task
    def inc(x: int) -> int:
        return x + 1

    @lib.entrypoint(checkpointer=lib.Saver())
    def main(x: int) -> Any:
        y = inc(x).result()
        answer = lib.interrupt("ok?")
        return inc(y).result(), answer

    return Scenario(main, [1, lib.Command(resume="yes")])


def parallel_question(lib: SimpleNamespace) -> Scenario:
    """One of two calls asks; the other's end is saved and replayed on resume."""
    asked = threading.Event()

    @lib.task
    def inc(x: int) -> int:
        return x + 1

    @lib.task
    def ask(x: int) -> Any:
        return lib.interrupt(f"q{x}")

    @lib.entrypoint(checkpointer=lib.Saver())
    def main(x: int) -> Any:
        a = inc(x)
        done = a.result()
        return done, ask(x).result()

    del asked
    return Scenario(main, [1, lib.Command(resume="yes")])


def call_in_a_node(lib: SimpleNamespace) -> Scenario:
    class S(TypedDict):
        x: int

    @lib.task
    def inc(x: int) -> int:
        return x + 1

    def node(state: S) -> dict[str, Any]:
        return {"x": inc(state["x"]).result()}

    builder = lib.StateGraph(S)
    builder.add_node("node", node)
    builder.add_edge(lib.START, "node")
    return Scenario(builder.compile(checkpointer=lib.Saver()), [{"x": 1}])


def async_calls(lib: SimpleNamespace) -> Scenario:
    @lib.task
    async def inc(x: int) -> int:
        return x + 1

    @lib.task
    def sync_inc(x: int) -> int:
        return x + 100

    @lib.entrypoint(checkpointer=lib.Saver())
    async def main(x: int) -> Any:
        a, b = await asyncio.gather(inc(x), inc(x + 1))
        c = await sync_inc(x)
        answer = lib.interrupt("ok?")
        return a + b + c, answer

    return Scenario(main, [1, lib.Command(resume="yes")], aio=True)


def no_checkpointer(lib: SimpleNamespace) -> Scenario:
    @lib.task
    def inc(x: int) -> int:
        return x + 1

    @lib.entrypoint()
    def main(x: int) -> int:
        return inc(x).result()

    return Scenario(main, [1])


SCENARIOS = [
    one_call, parallel_calls, nested_calls, failing_call, retried_call, cached_call,
    question_in_a_call, replayed_call, parallel_question, call_in_a_node, async_calls,
    no_checkpointer,
]  # fmt: skip


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m if isinstance(m, str) else "+".join(m))
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_calls_stream_as_langgraph_streams_them(
    scenario: Callable[[SimpleNamespace], Scenario], mode: Any
) -> None:
    _same(scenario, mode)


# ---------------------------------------------------------------------- the shapes, spelled out


def test_a_call_is_a_task_between_its_callers_start_and_end() -> None:
    chunks = _same(one_call, ["tasks", "updates"])
    first_run = chunks[: chunks.index(next(c for c in chunks if c[0] == "state"))]
    assert first_run == [
        ("tasks", _start("main", 3, "__start__")),
        ("tasks", _start("double", ((3,), {}), "__pregel_push")),
        ("updates", {"double": 6}),
        ("tasks", _end("double", {"__return__": 6})),
        ("updates", {"main": 7}),
        ("tasks", _end("main", {"__end__": 7})),
    ]


def _start(name: str, value: Any, trigger: str) -> dict[str, Any]:
    return {"id": "<id>", "name": name, "input": value, "triggers": (trigger,)}


def _end(name: str, result: Any) -> dict[str, Any]:
    return {"id": "<id>", "name": name, "error": None, "result": result, "interrupts": []}


@pytest.mark.parametrize("scenario", [one_call, parallel_calls, nested_calls, call_in_a_node])
def test_values_come_after_the_tasks_results(
    scenario: Callable[[SimpleNamespace], Scenario],
) -> None:
    _same(scenario, ["tasks", "updates", "values", "custom"])


def test_a_calls_id_is_its_call_key_under_the_callers_task_id() -> None:
    """Not LangGraph's hash: ``<caller's task id>.<position>``, stable across a resume."""
    app = replayed_call(_library("threadline")).app
    config = {"configurable": {"thread_id": "ids"}}
    first = [c for c in app.stream(1, config, stream_mode="tasks") if "input" in c]
    again = [
        c for c in app.stream(threadline.types.Command(resume="y"), config, stream_mode="tasks")
    ]
    main_id = first[0]["id"]
    assert [c["id"] for c in first] == [main_id, f"{main_id}.0"]
    assert [c["id"] for c in again if "input" in c] == [main_id, f"{main_id}.0", f"{main_id}.1"]


def test_debug_carries_a_calls_step_and_the_runs_metadata() -> None:
    def metadata(name: str) -> list[Any]:
        app = one_call(_library(name)).app
        config = {"configurable": {"thread_id": "m"}, "metadata": {"user": "u1"}, "tags": ["t1"]}
        return [plain(c) for c in app.stream(3, config, stream_mode="debug")]

    ours = metadata("threadline")
    assert ours == metadata("langgraph")
    starts = [c for c in ours if c["type"] == "task"]
    assert [(c["step"], c["payload"]["name"], c["payload"]["metadata"]) for c in starts] == [
        (0, "main", {"user": "u1", "tags": ["t1"]}),
        (0, "double", {"user": "u1", "tags": ["t1"]}),
    ]
    assert [c["type"] for c in ours].count("checkpoint") == 2  # the input checkpoint once


def test_a_call_in_a_subgraph_streams_in_the_subgraphs_namespace() -> None:
    def stream(name: str, subgraphs: bool) -> list[Any]:
        lib = _library(name)

        class S(TypedDict):
            x: int

        @lib.task
        def inc(x: int) -> int:
            return x + 1

        def node(state: S) -> dict[str, Any]:
            return {"x": inc(state["x"]).result()}

        inner = lib.StateGraph(S)
        inner.add_node("inner", node)
        inner.add_edge(lib.START, "inner")
        outer = lib.StateGraph(S)
        outer.add_node("sub", inner.compile())
        outer.add_edge(lib.START, "sub")
        app = outer.compile(checkpointer=lib.Saver())
        config = {"configurable": {"thread_id": "s"}}
        return [
            plain(c) for c in app.stream({"x": 1}, config, stream_mode="tasks", subgraphs=subgraphs)
        ]

    for subgraphs in (True, False):
        assert stream("threadline", subgraphs) == stream("langgraph", subgraphs)
    names = [(ns, c["name"]) for ns, c in stream("threadline", True) if "input" in c]
    assert names == [((), "sub"), (("sub:<id>",), "inner"), (("sub:<id>",), "inc")]


def test_a_question_in_a_retried_call_is_asked_not_retried() -> None:
    """A retry policy that retries every exception does not retry ``interrupt()``."""

    def run(name: str) -> tuple[list[Any], int]:
        lib = _library(name)
        calls: list[int] = []
        policy = lib.RetryPolicy(max_attempts=3, initial_interval=0.001, retry_on=Exception)

        @lib.task(retry_policy=policy)
        def ask(x: int) -> Any:
            calls.append(x)
            return lib.interrupt("q")

        @lib.entrypoint(checkpointer=lib.Saver())
        def main(x: int) -> Any:
            return ask(x).result()

        config = {"configurable": {"thread_id": "r"}}
        return [plain(c) for c in main.stream(1, config, stream_mode="tasks")], len(calls)

    ours = run("threadline")
    assert ours == run("langgraph")
    assert ours[1] == 1
