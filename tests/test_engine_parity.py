"""Engine behaviours compared with LangGraph 1.2: each test runs the same program on
``langgraph`` and ``threadline`` and compares what they give.

Pydantic input missing required fields, ``invoke``'s ``output_keys`` / ``print_mode`` /
``subgraphs``, resuming a failed run, several interrupts in one subgraph task, a reducer key
shared with a subgraph, and the order of a step's parallel tasks.
"""

from __future__ import annotations

import asyncio
import importlib
import operator
from types import ModuleType
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

LIBS = ("langgraph", "threadline")


def _mod(lib: str, name: str) -> ModuleType:
    if lib == "langgraph":
        return pytest.importorskip(f"langgraph.{name}")
    return importlib.import_module(f"threadline.{name}")


def _graph(lib: str) -> ModuleType:
    return _mod(lib, "graph")


def _types(lib: str) -> ModuleType:
    return _mod(lib, "types")


def _saver(lib: str) -> Any:
    return _mod(lib, "checkpoint.memory").InMemorySaver()


def _outcome(fn: Any) -> Any:
    """What ``fn()`` gives, or the exception's type name and message."""
    try:
        return ("ok", fn())
    except Exception as exc:  # compared between the libraries
        return ("raised", type(exc).__name__, str(exc))


def _both(program: Any) -> dict[str, Any]:
    return {lib: program(lib) for lib in LIBS}


def _same(program: Any) -> Any:
    got = _both(program)
    assert got["threadline"] == got["langgraph"]
    return got["langgraph"]


def _values(r: Any) -> Any:
    """A result with its interrupts reduced to their values (ids are each library's own)."""
    if isinstance(r, dict) and "__interrupt__" in r:
        r = {**r, "__interrupt__": sorted(repr(i.value) for i in r["__interrupt__"])}
    return r


def _as_dict(r: Any) -> Any:
    """A pydantic state as LangGraph returns it (a dict of the fields that have a value)."""
    if hasattr(r, "model_fields_set"):
        return {k: getattr(r, k) for k in r.model_fields_set}
    return r


class State(TypedDict):
    x: int
    log: Annotated[list[str], operator.add]


# ---------------------------------------------------------------- 1. pydantic, missing fields


def _pydantic_graph(lib: str, checkpointer: Any = None) -> Any:
    pydantic = pytest.importorskip("pydantic")

    class P(pydantic.BaseModel):
        a: int
        b: str
        c: int = 0

    def n(s: Any) -> dict[str, Any]:
        return {"c": s.a + 1}

    G = _graph(lib)
    g = G.StateGraph(P)
    g.add_node("n", n)
    g.add_edge(G.START, "n")
    g.add_edge("n", G.END)
    return g.compile(checkpointer=checkpointer)


@pytest.mark.parametrize("inp", [{"a": 1}, {}, {"b": "x"}], ids=repr)
def test_pydantic_input_missing_required_fields_raises_validation_error(inp: Any) -> None:
    pydantic = pytest.importorskip("pydantic")

    def program(lib: str) -> Any:
        outs = []
        for saver in (None, _saver(lib)):
            app = _pydantic_graph(lib, saver)
            config = {"configurable": {"thread_id": "new"}}
            with pytest.raises(pydantic.ValidationError) as info:
                app.invoke(inp, config)
            outs.append(str(info.value))
            with pytest.raises(pydantic.ValidationError) as info:
                list(app.stream(inp, config, stream_mode=["values", "updates"]))
            outs.append(str(info.value))
            with pytest.raises(pydantic.ValidationError) as info:
                asyncio.run(app.ainvoke(inp, config))
            outs.append(str(info.value))
        return outs

    _same(program)


def test_pydantic_complete_input_and_partial_input_on_a_thread_run() -> None:
    def program(lib: str) -> Any:
        app = _pydantic_graph(lib, _saver(lib))
        config = {"configurable": {"thread_id": "t"}}
        first = _as_dict(app.invoke({"a": 1, "b": "x"}, config))
        second = _as_dict(app.invoke({"a": 5}, config))  # the thread has b already
        return first, second

    _same(program)
