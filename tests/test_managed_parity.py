"""``RemainingSteps`` / ``IsLastStep`` and the recursion limit, compared with LangGraph 1.2.

Routers at START, routers after ``update_state(as_node=...)``, nodes of a run with input and of
a continued run (``invoke(None)``, ``Command(resume=...)``) see the managed values LangGraph gives
them, a continued run stops at the same step, and a state's metadata shows the same keys.
"""

from __future__ import annotations

import importlib
from typing import Any, TypedDict

import pytest

LIBS = ["langgraph", "threadline"]


def _modules(lib: str) -> tuple[Any, Any, Any, Any, Any]:
    if lib == "langgraph":
        pytest.importorskip("langgraph.graph")
    graph = importlib.import_module(f"{lib}.graph")
    memory = importlib.import_module(f"{lib}.checkpoint.memory")
    managed = importlib.import_module(f"{lib}.managed")
    types = importlib.import_module(f"{lib}.types")
    errors = importlib.import_module(f"{lib}.errors")
    return graph, memory, managed, types, errors


def _counting_loop(lib: str, until: int, seen: list[Any], *, ask_at: int | None = None) -> Any:
    """START -router-> a -router-> a ... until ``n`` reaches ``until``; every node and router
    records the managed values it saw; ``a`` asks a question when ``n == ask_at``."""
    graph, memory, managed, types, _ = _modules(lib)

    S = TypedDict(  # noqa: UP013 (the class form's annotations would be unresolvable)
        "S", {"n": int, "remaining": managed.RemainingSteps, "last": managed.IsLastStep}
    )

    def route(s: Any) -> str:
        seen.append(("router", s["remaining"], s["last"]))
        return "a" if s["n"] < until else graph.END

    def a(s: Any) -> dict[str, Any]:
        seen.append(("a", s["remaining"], s["last"]))
        if s["n"] == ask_at:
            types.interrupt("go on?")
        return {"n": s["n"] + 1}

    g = graph.StateGraph(S)
    g.add_node("a", a)
    g.add_conditional_edges(graph.START, route)
    g.add_conditional_edges("a", route)
    return g.compile(checkpointer=memory.InMemorySaver())


def _managed_trace(lib: str) -> list[Any]:
    seen: list[Any] = []
    out: list[Any] = []
    for until, limit in ((2, 7), (5, 9), (1, 3)):
        app = _counting_loop(lib, until, seen)
        cfg = {"configurable": {"thread_id": f"t{until}"}, "recursion_limit": limit}
        app.invoke({"n": 0}, cfg)
        out.append(("input", list(seen)))
        seen.clear()
        app.update_state(cfg, {"n": 0}, as_node="a")
        out.append(("update_state", list(seen)))
        seen.clear()
        app.invoke(None, cfg)
        out.append(("continued", list(seen)))
        seen.clear()
    return out


def test_managed_values_match_langgraph() -> None:
    expected = _managed_trace("langgraph")
    assert _managed_trace("threadline") == expected
    # What the cases above pin: a START router sees the whole limit, an update's router 2.
    assert expected[0][1][0] == ("router", 7, False)
    assert expected[1][1] == [("router", 2, False)]


def _resumed_trace(lib: str) -> list[Any]:
    seen: list[Any] = []
    app = _counting_loop(lib, 3, seen, ask_at=1)
    types = _modules(lib)[3]
    cfg = {"configurable": {"thread_id": "r"}, "recursion_limit": 6}
    app.invoke({"n": 0}, cfg)
    first = list(seen)
    seen.clear()
    app.invoke(types.Command(resume="yes"), cfg)
    return [first, list(seen)]


def test_managed_values_after_a_resume_match_langgraph() -> None:
    expected = _resumed_trace("langgraph")
    assert _resumed_trace("threadline") == expected
    assert expected[1][0] == ("a", 7, False)  # a continued run counts from limit + 1


def _steps_before_the_limit(lib: str) -> list[Any]:
    graph, memory, managed, _, errors = _modules(lib)

    S = TypedDict("S", {"n": int, "remaining": managed.RemainingSteps})  # noqa: UP013

    seen: list[int] = []

    def a(s: Any) -> dict[str, Any]:
        seen.append(s["remaining"])
        return {"n": s["n"] + 1}

    g = graph.StateGraph(S)
    g.add_node("a", a)
    g.add_edge(graph.START, "a")
    g.add_edge("a", "a")
    app = g.compile(checkpointer=memory.InMemorySaver(), interrupt_before=["a"])
    cfg = {"configurable": {"thread_id": "loop"}, "recursion_limit": 4}
    app.invoke({"n": 0}, cfg)
    out: list[Any] = []
    looping = g.compile(checkpointer=app.checkpointer)
    for inp in (None, None, {"n": 0}):
        with pytest.raises(errors.GraphRecursionError):
            looping.invoke(inp, cfg)
        out.append((list(seen), looping.get_state(cfg).values["n"]))
        seen.clear()
    return out


def test_a_continued_run_stops_at_the_step_langgraph_does() -> None:
    expected = _steps_before_the_limit("langgraph")
    assert _steps_before_the_limit("threadline") == expected
    assert len(expected[0][0]) == 6 and len(expected[2][0]) == 4  # limit 4: +2 when continued


def _metadata_keys(lib: str) -> list[list[str]]:
    seen: list[Any] = []
    app = _counting_loop(lib, 2, seen)
    cfg = {"configurable": {"thread_id": "m"}}
    app.invoke({"n": 0}, cfg)
    return [sorted(s.metadata) for s in app.get_state_history(cfg)]


def test_state_metadata_shows_langgraph_keys() -> None:
    expected = _metadata_keys("langgraph")
    assert _metadata_keys("threadline") == expected
    assert all("nodes" not in keys for keys in expected)
