"""``get_graph()``: a compiled graph's structure as nodes and edges, for drawing.

With langchain-core installed (LangGraph always has it) the drawing is a
``langchain_core.runnables.graph.Graph``, as LangGraph's is, so ``draw_mermaid()``,
``draw_ascii()``, ``draw_mermaid_png()`` and ``to_json()`` give LangGraph's output. Without it,
:class:`DrawableGraph` offers the node list, the edges and a plain Mermaid drawing.

Which edges are drawn, as LangGraph draws them: every plain edge and join; a conditional
edge to each node its path map (or ``Literal`` return hint) names, labelled with the map's key
where that differs from the node's name (a router that declares nothing is drawn only from
START, to ``__end__``); a node's declared ``Command`` destinations; and an edge to ``__end__``
from every node that an edge reaches and that has no way out. Edges are sorted by source
and target, the plain ones into ``__end__`` last.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from .spec import END, START, GraphSpec

__all__ = ["DrawableGraph", "DrawnEdge", "draw", "drawn_edges"]


@dataclass(frozen=True, slots=True)
class DrawnEdge:
    source: str
    target: str
    label: str | None
    conditional: bool


def drawn_edges(spec: GraphSpec) -> list[DrawnEdge]:
    """The edges a drawing of ``spec`` shows, in LangGraph's order."""
    found: list[DrawnEdge] = []
    for source, targets in spec.edges.items():
        found += [DrawnEdge(source, t, None, False) for t in targets]
    for join in spec.joins:
        found += [DrawnEdge(s, join.target, None, False) for s in join.sources]
    for source, branches in spec.branches.items():
        for b in branches:
            if b.path_map is None:  # declares nothing: drawn to the end from START only
                if source == START:
                    found.append(DrawnEdge(source, END, None, True))
                continue
            for key, target in b.path_map.items():
                label = None if str(key) == target else str(key)
                found.append(DrawnEdge(source, target, label, True))
    for node in spec.nodes.values():
        labels = dict(node.destination_labels)
        for target in node.destinations or ():
            label = labels.get(target)
            found.append(DrawnEdge(node.name, target, None if label == target else label, True))
    leaving = {e.source for e in found}
    reached = {e.target for e in found}
    found += [
        DrawnEdge(name, END, None, False)
        for name, node in spec.nodes.items()
        if name in reached and name not in leaving and node.destinations is None
    ]
    unique = list(dict.fromkeys(found))
    last = [e for e in unique if e.target == END and not e.conditional]
    rest = [e for e in unique if not (e.target == END and not e.conditional)]
    return sorted(rest, key=lambda e: (e.source, e.target)) + sorted(last, key=lambda e: e.source)


class DrawableGraph:
    """The drawing without langchain-core: node names, edges and a plain Mermaid chart."""

    def __init__(self, spec: GraphSpec) -> None:
        self.spec = spec
        self.nodes = list(spec.nodes)

    @property
    def edges(self) -> list[tuple[str, str, bool]]:
        """Every edge as ``(source, target, conditional)``."""
        return [(e.source, e.target, e.conditional) for e in drawn_edges(self.spec)]

    def draw_mermaid(self) -> str:
        """A Mermaid flowchart of the graph."""
        return self.spec.draw_mermaid()


def draw(spec: GraphSpec, xray: int | bool = False) -> Any:
    """The drawing ``get_graph(xray=...)`` returns (see the module docstring).

    ``xray`` draws subgraphs used as nodes inside their node (ids ``node:child``): ``True``
    at every depth, an int that many levels down.
    """
    try:
        graph_mod = importlib.import_module("langchain_core.runnables.graph")
        runnables = importlib.import_module("langchain_core.runnables")
    except ImportError:
        return DrawableGraph(spec)
    return _lc_graph(spec, xray, graph_mod.Graph, runnables.RunnableLambda)


def _lc_graph(spec: GraphSpec, xray: int | bool, graph_cls: Any, lam: Any) -> Any:
    graph = graph_cls()

    def data(name: str) -> Any:
        return lam(_identity, name=name)

    depth = (1 if xray is True else int(xray)) if xray else 0
    expand: dict[str, Any] = {}
    for name, node in spec.nodes.items():
        sub = getattr(node.subgraph, "spec", None)
        if depth and isinstance(sub, GraphSpec):
            drawn = _lc_graph(sub, True if xray is True else depth - 1, graph_cls, lam)
            drawn.trim_first_node()
            drawn.trim_last_node()
            if drawn.first_node() is not None and drawn.last_node() is not None:
                expand[name] = drawn
    graph.add_node(data(START), START)
    for name, node in spec.nodes.items():
        if name not in expand:
            graph.add_node(data(name), name, metadata=node.metadata)
    graph.add_node(None, END)
    ends: dict[str, tuple[str, str]] = {}  # expanded node -> (first id, last id) inside it
    for name, drawn in expand.items():
        first, last = graph.extend(drawn, prefix=name)
        ends[name] = (first.id, last.id)
    inner = list(graph.edges)
    graph.edges = []
    for e in drawn_edges(spec):
        source = ends[e.source][1] if e.source in ends else e.source
        target = ends[e.target][0] if e.target in ends else e.target
        graph.add_edge(graph.nodes[source], graph.nodes[target], e.label, e.conditional)
    graph.edges += inner
    return graph


def _identity(value: Any) -> Any:
    return value
