"""The graph bench/server.py serves: two trivial nodes over a TypedDict, in either library.

``langgraph dev`` can only load a graph built with ``langgraph``'s own classes and ``threadline
serve`` one built with ``threadline``'s, so the graph is written once here and built with the
library named by ``library`` (the import prefix). The benchmark writes a two-line module per
target (``graph = build("langgraph")``) into a temporary folder and points the server's
``langgraph.json`` at it.

Each run adds 2 to ``count`` and records the last node, so a thread's state stays the same size
however many runs the benchmark makes on it (the cost measured is the server's, not a growing
state's).
"""

from __future__ import annotations

import importlib
import operator
from typing import Annotated, Any, TypedDict

LIBRARIES = ("langgraph", "threadline")


class BenchState(TypedDict):
    count: Annotated[int, operator.add]
    last: str


def first(state: BenchState) -> dict[str, Any]:
    return {"count": 1, "last": "first"}


def second(state: BenchState) -> dict[str, Any]:
    return {"count": 1, "last": "second"}


def build(library: str) -> Any:
    """Compile the 2-node graph with ``library``'s StateGraph; no checkpointer (the server's)."""
    if library not in LIBRARIES:
        raise ValueError(f"library must be one of {LIBRARIES}, got {library!r}")
    graph_module = importlib.import_module(f"{library}.graph")
    builder = graph_module.StateGraph(BenchState)
    builder.add_node("first", first)
    builder.add_node("second", second)
    builder.add_edge(graph_module.START, "first")
    builder.add_edge("first", "second")
    builder.add_edge("second", graph_module.END)
    return builder.compile()
