"""What a served graph looks like from outside: JSON schemas, subgraphs and its drawing.

Schemas come from the graph's own state classes through pydantic's ``TypeAdapter``, which
reads TypedDicts, dataclasses and pydantic models alike. A ``typing.TypedDict`` (which pydantic
refuses before Python 3.12) is rebuilt from its annotations with its required keys kept.
"""

from __future__ import annotations

import inspect
from typing import Any

import typing_extensions
from pydantic import TypeAdapter

from ..graph.drawing import DrawableGraph
from ..graph.schema import StateSchema
from ..runtime.compiled import CompiledStateGraph

__all__ = ["graph_json", "graph_schemas", "subgraphs_of", "type_jsonschema"]


def type_jsonschema(tp: Any) -> dict[str, Any] | None:
    """The JSON schema of a type (None when it has none pydantic can describe)."""
    if tp is None or tp is inspect.Parameter.empty:
        return None
    try:
        if typing_extensions.is_typeddict(tp):
            hints = typing_extensions.get_type_hints(tp, include_extras=True)
            return _object_schema(tp.__name__, hints, set(tp.__required_keys__))
        return TypeAdapter(tp).json_schema()
    except Exception:  # a type pydantic cannot describe: the caller says "any"
        return None


def _object_schema(title: str, fields: dict[str, Any], required: set[str]) -> dict[str, Any]:
    """An object schema of ``fields``; a field pydantic cannot describe accepts anything."""
    properties: dict[str, Any] = {}
    defs: dict[str, Any] = {}
    for name, annotation in fields.items():
        try:
            schema = TypeAdapter(annotation).json_schema()
        except Exception:
            schema = {}
        defs.update(schema.pop("$defs", {}))  # refs point at "#/$defs/...": hoist them
        properties[name] = {"title": name.replace("_", " ").title(), **schema}
    result: dict[str, Any] = {"title": title, "type": "object", "properties": properties}
    if required & set(fields):
        result["required"] = [k for k in fields if k in required]
    if defs:
        result["$defs"] = defs
    return result


def _state_jsonschema(state: StateSchema, title: str | None = None) -> dict[str, Any]:
    """The schema of a state: its class's schema, plus keys merged in from other schemas."""
    cls = state.schema
    name = str(title or getattr(cls, "__name__", None) or "State")
    own: dict[str, Any] | None = None
    if state.kind in ("dataclass", "pydantic"):
        own = type_jsonschema(cls)
    if own is None:
        required = (
            set(getattr(cls, "__required_keys__", ())) if state.kind == "typeddict" else set()
        )
        return _object_schema(name, state.annotations, required)
    extra = {k: v for k, v in state.annotations.items() if k not in own.get("properties", {})}
    if extra:
        more = _object_schema(name, extra, set())
        own.setdefault("properties", {}).update(more["properties"])
        own.setdefault("$defs", {}).update(more.get("$defs", {}))
    return own


def _entrypoint_schemas(graph: Any) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """A functional-API entrypoint: its input is the function's first parameter, its output
    what it returns."""
    func = graph.func
    try:
        hints = typing_extensions.get_type_hints(func, include_extras=True)
    except Exception:
        hints = {}
    first = next(iter(inspect.signature(func).parameters))
    return type_jsonschema(hints.get(first)), type_jsonschema(hints.get("return"))


def graph_schemas(graph_id: str, graph: CompiledStateGraph) -> dict[str, Any]:
    """The API's ``GraphSchema`` of a compiled graph.

    ``config_schema`` is None: threadline graphs declare no config schema (``context_schema``
    is what a run's ``context`` must match).
    """
    context = type_jsonschema(graph.context_schema)
    if hasattr(graph, "func"):  # an entrypoint has no state class of its own
        inputs, output = _entrypoint_schemas(graph)
        state = None
    else:
        schema = graph.schema
        state = _state_jsonschema(schema)
        inputs = state if schema.input_schema is schema else _state_jsonschema(schema.input_schema)
        output = (
            state if schema.output_schema is schema else _state_jsonschema(schema.output_schema)
        )
    return {"graph_id": graph_id, "input_schema": inputs, "output_schema": output,
            "state_schema": state, "config_schema": None, "context_schema": context}  # fmt: skip


def _children(graph: CompiledStateGraph) -> list[tuple[str, CompiledStateGraph]]:
    """The subgraphs used directly as nodes, by node name."""
    return [
        (name, node.subgraph)
        for name, node in graph.spec.nodes.items()
        if isinstance(node.subgraph, CompiledStateGraph)
    ]


def subgraphs_of(
    graph_id: str, graph: CompiledStateGraph, namespace: str | None, recurse: bool
) -> dict[str, Any]:
    """The API's ``Subgraphs``: namespace (node names joined by ``|``) -> its schemas.

    Without ``namespace``: the graph's own subgraphs (every level with ``recurse``). With it:
    that subgraph (``{}`` if there is none), and those below it with ``recurse``.
    """
    found: dict[str, Any] = {}

    def collect(g: CompiledStateGraph, prefix: str) -> None:
        for name, child in _children(g):
            ns = f"{prefix}|{name}" if prefix else name
            found[ns] = graph_schemas(graph_id, child)
            if recurse:
                collect(child, ns)

    if namespace is None:
        collect(graph, "")
        return found
    target: CompiledStateGraph | None = graph
    for part in namespace.split("|"):  # "node" or "node:task_id" at each level
        target = dict(_children(target)).get(part.split(":")[0]) if target else None
    if target is None:
        return {}
    found[namespace] = graph_schemas(graph_id, target)
    if recurse:
        collect(target, namespace)
    return found


def graph_json(graph: CompiledStateGraph, xray: int) -> dict[str, Any]:
    """The drawing of a graph: nodes and edges; ``xray`` levels of subgraphs drawn inside
    their nodes (node ids ``parent:child``)."""
    nodes: list[dict[str, Any]] = []
    edges: list[dict[str, Any]] = []
    _draw(graph, "", xray, nodes, edges)
    return {"nodes": nodes, "edges": edges}


def _draw(
    graph: CompiledStateGraph,
    prefix: str,
    xray: int,
    nodes: list[dict[str, Any]],
    edges: list[dict[str, Any]],
) -> None:
    drawable = DrawableGraph(graph.spec)
    expanded = dict(_children(graph)) if xray > 0 else {}
    for name in ["__start__", *drawable.nodes, "__end__"]:
        if name in expanded:
            _draw(expanded[name], f"{prefix}{name}:", xray - 1, nodes, edges)
        else:
            nodes.append({"id": prefix + name, "type": "runnable", "data": prefix + name})

    def end(node: str, side: str) -> str:
        return f"{prefix}{node}:{side}" if node in expanded else prefix + node

    for source, target, conditional in drawable.edges:
        edge: dict[str, Any] = {
            "source": end(source, "__end__"),
            "target": end(target, "__start__"),
        }
        if conditional:
            edge["conditional"] = True
        edges.append(edge)
