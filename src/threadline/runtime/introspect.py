"""What a compiled graph shows of itself, as LangGraph's does: the JSON schemas of its input
and output (``get_input_jsonschema()``) and its nodes (``graph.nodes``).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from dataclasses import MISSING, dataclass
from typing import Any, Literal

from ..checkpoint.types import RunnableConfig
from ..graph.schema import StateSchema
from ..graph.spec import START, GraphSpec, NodeSpec

__all__ = ["GraphNode", "json_schema", "nodes_of"]


def json_schema(schema: StateSchema, which: Literal["input", "output"]) -> dict[str, Any]:
    """The JSON schema of the graph's input or output schema, as pydantic writes it.

    A pydantic or TypedDict state keeps its own title (and docstring as ``description``); a
    dataclass or ``dict`` state is titled ``LangGraphInput`` / ``LangGraphOutput``, as in
    LangGraph. Needs pydantic (``pip install pydantic``).
    """
    try:
        pydantic: Any = importlib.import_module("pydantic")
    except ImportError as exc:
        raise ImportError(
            f"get_{which}_jsonschema() needs pydantic to describe the state schema;"
            " install it with `pip install pydantic`"
        ) from exc
    part = schema.input_schema if which == "input" else schema.output_schema
    title = f"LangGraph{which.capitalize()}"
    if part.kind == "dict":
        return {"additionalProperties": True, "default": None, "title": title, "type": "object"}
    if part.kind == "pydantic":
        out: dict[str, Any] = part.schema.model_json_schema()
        return out
    out = pydantic.TypeAdapter(part.schema).json_schema()
    if part.kind == "dataclass":
        out.pop("description", None)
        out["title"] = title
        _factory_defaults(part.schema, out.get("properties") or {})
    return out


def _factory_defaults(cls: Any, properties: dict[str, Any]) -> None:
    """A dataclass field's ``default_factory`` shows as its value (``[]``), as in LangGraph."""
    for f in dataclasses.fields(cls):
        prop = properties.get(f.name)
        if prop is not None and "default" not in prop and f.default_factory is not MISSING:
            prop["default"] = f.default_factory()


class _NodeRunnable:
    """A node's function as a runnable: ``invoke(state, config)`` calls it on its own."""

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.func = spec.fn

    def _runnable(self) -> Any:
        """A subgraph or LangChain Runnable used as the node: it runs itself."""
        return self.spec.subgraph if self.spec.subgraph is not None else self.spec.fn

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        if self.spec.runnable or self.spec.subgraph is not None:
            return self._runnable().invoke(input, config, **kwargs)
        if self.spec.is_async:
            raise TypeError(f"node {self.name!r} is async; call `await ainvoke(...)` instead")
        args, kw = self.spec.config_args(config or {})
        return self.spec.fn(input, *args, **kw)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        if self.spec.runnable or self.spec.subgraph is not None:
            return await self._runnable().ainvoke(input, config, **kwargs)
        args, kw = self.spec.config_args(config or {})
        if self.spec.is_async:
            return await self.spec.fn(input, *args, **kw)
        return self.spec.fn(input, *args, **kw)

    def __repr__(self) -> str:
        return f"{self.name}({getattr(self.func, '__qualname__', self.func)!r})"


class _Passthrough:
    """``__start__``'s runnable: it hands the input on."""

    name = START

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return input

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return input


@dataclass(frozen=True)
class GraphNode:
    """One entry of ``graph.nodes``: the node's runnable (``bound``) and what it was added
    with. ``invoke`` / ``ainvoke`` run the node's function alone, outside any run."""

    name: str
    bound: Any
    metadata: dict[str, Any] | None = None
    retry_policy: Any = None
    cache_policy: Any = None

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self.bound.invoke(input, config, **kwargs)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self.bound.ainvoke(input, config, **kwargs)


def nodes_of(spec: GraphSpec) -> Mapping[str, GraphNode]:
    """``graph.nodes``: ``__start__`` first, then the nodes in the order they were added."""
    nodes = {START: GraphNode(START, _Passthrough())}
    for name, node in spec.nodes.items():
        nodes[name] = GraphNode(
            name,
            _NodeRunnable(node),
            metadata=node.metadata,
            retry_policy=node.retry,
            cache_policy=node.cache_policy,
        )
    return nodes
