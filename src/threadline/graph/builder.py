"""``StateGraph``: the builder users call ``add_node`` and ``add_edge`` on."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..checkpoint.base import BaseCheckpointSaver
from ..errors import GraphValidationError
from ..types import RetryPolicy
from .schema import StateSchema
from .spec import (
    END,
    START,
    Branch,
    GraphSpec,
    Join,
    NodeSpec,
    callable_info,
    config_by_name,
    literal_destinations,
)

if TYPE_CHECKING:
    from ..runtime.compiled import CompiledStateGraph

__all__ = ["StateGraph"]


class StateGraph:
    """Builds a graph whose nodes read and update a shared state.

    Args:
        state_schema: a ``TypedDict``, dataclass or pydantic ``BaseModel``. Fields annotated
            ``Annotated[T, reducer]`` accumulate through the reducer; others keep the last write.
    """

    def __init__(self, state_schema: Any) -> None:
        self.schema = StateSchema(state_schema)
        self.spec = GraphSpec()

    # ------------------------------------------------------------------ nodes

    def add_node(
        self,
        node: str | Callable[..., Any],
        action: Callable[..., Any] | None = None,
        *,
        retry: RetryPolicy | None = None,
        retry_policy: RetryPolicy | None = None,
        destinations: Sequence[str] | Mapping[str, str] | None = None,
    ) -> StateGraph:
        """Add a node: ``add_node("name", fn)`` or ``add_node(fn)`` (named after the function).

        ``fn`` takes the state (and optionally ``config``) and returns a partial update, an
        instance of the schema, a ``Command`` or None. A compiled graph may be the node.
        ``destinations`` declares where a node that returns ``Command(goto=...)`` may go.
        """
        if isinstance(node, str):
            if action is None:
                raise GraphValidationError(f"add_node({node!r}) needs the node's function")
            name, fn = node, action
        else:
            if action is not None:
                raise GraphValidationError("add_node(fn, fn2): pass a name string first")
            fn = node
            name = getattr(fn, "name", None) or getattr(fn, "__name__", None) or ""
            if not name or name == "<lambda>":
                raise GraphValidationError(
                    "cannot name this node from its function; use add_node('name', fn)"
                )
        self._check_name(name)
        if name in self.spec.nodes:
            raise GraphValidationError(f"node {name!r} already exists; node names must be unique")
        subgraph = fn if _is_compiled_graph(fn) else None
        if subgraph is not None:
            is_async, takes_config, takes_writer = False, True, False
        else:
            if not callable(fn):
                raise GraphValidationError(f"node {name!r}: {fn!r} is not callable")
            is_async, takes_config, takes_writer = callable_info(fn)
        if isinstance(destinations, Mapping):
            declared: tuple[str, ...] | None = tuple(destinations)
        elif destinations is not None:
            declared = tuple(destinations)
        else:
            declared = None if subgraph is not None else literal_destinations(fn)
        self.spec.nodes[name] = NodeSpec(
            name=name,
            fn=fn,
            is_async=is_async,
            takes_config=takes_config,
            takes_writer=takes_writer,
            retry=retry or retry_policy,
            destinations=declared,
            subgraph=subgraph,
            config_by_name=subgraph is None and config_by_name(fn),
        )
        return self

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise GraphValidationError(f"node names must be non-empty strings, got {name!r}")
        if name in (START, END) or (name.startswith("__") and name.endswith("__")):
            raise GraphValidationError(
                f"{name!r} is a reserved name (names like __start__ and __end__ are the graph's"
                " own); rename the node"
            )
        for ch in ":|":
            if ch in name:
                raise GraphValidationError(
                    f"node name {name!r} contains {ch!r}, which is reserved for namespaces"
                )

    # ------------------------------------------------------------------ edges

    def add_edge(self, start: str | Sequence[str], end: str) -> StateGraph:
        """``add_edge(a, b)``: ``b`` runs after ``a``. ``add_edge([a, b], c)``: after both."""
        if isinstance(start, str):
            if start == END:
                raise GraphValidationError("END cannot be the start of an edge")
            if end == START:
                raise GraphValidationError("START cannot be the end of an edge")
            targets = self.spec.edges.setdefault(start, [])
            if end not in targets:
                targets.append(end)
            return self
        sources = tuple(start)
        if not sources:
            raise GraphValidationError("add_edge([], ...) needs at least one source node")
        if len(sources) == 1:
            return self.add_edge(sources[0], end)
        for s in sources:
            if s in (START, END):
                raise GraphValidationError(f"{s!r} cannot be a source of a join edge")
        self.spec.joins.append(Join(sources, end))
        return self

    def add_conditional_edges(
        self,
        source: str,
        path: Callable[..., Any],
        path_map: Mapping[Hashable, str] | Sequence[str] | None = None,
    ) -> StateGraph:
        """After ``source``, call ``path(state)`` to pick the next node(s).

        It returns a node name, ``END``, a list of them, or ``Send`` objects. ``path_map`` maps
        its return values to node names (a list maps each name to itself).
        """
        if not callable(path):
            raise GraphValidationError(f"conditional edge from {source!r}: router is not callable")
        mapping: Mapping[Hashable, str] | None
        if path_map is None:
            declared = literal_destinations(path)
            mapping = None if declared is None else {d: d for d in declared}
        elif isinstance(path_map, Mapping):
            mapping = dict(path_map)
        else:
            mapping = {name: name for name in path_map}
        is_async, takes_config, _ = callable_info(path)
        self.spec.branches.setdefault(source, []).append(
            Branch(source, path, mapping, is_async, takes_config)
        )
        return self

    def add_sequence(
        self, nodes: Sequence[Callable[..., Any] | tuple[str, Callable[..., Any]]]
    ) -> StateGraph:
        """Add nodes and chain them with edges, in order."""
        if not nodes:
            raise GraphValidationError("add_sequence() needs at least one node")
        names: list[str] = []
        for item in nodes:
            if isinstance(item, tuple):
                self.add_node(item[0], item[1])
                names.append(item[0])
            else:
                self.add_node(item)
                names.append(list(self.spec.nodes)[-1])
        for a, b in itertools.pairwise(names):
            self.add_edge(a, b)
        return self

    def set_entry_point(self, key: str) -> StateGraph:
        """Same as ``add_edge(START, key)``."""
        return self.add_edge(START, key)

    def set_conditional_entry_point(
        self, path: Callable[..., Any], path_map: Mapping[Hashable, str] | None = None
    ) -> StateGraph:
        """Same as ``add_conditional_edges(START, path, path_map)``."""
        return self.add_conditional_edges(START, path, path_map)

    def set_finish_point(self, key: str) -> StateGraph:
        """Same as ``add_edge(key, END)``."""
        return self.add_edge(key, END)

    # ------------------------------------------------------------------ compile

    def compile(
        self,
        checkpointer: BaseCheckpointSaver | bool | None = None,
        *,
        interrupt_before: Sequence[str] | str | None = None,
        interrupt_after: Sequence[str] | str | None = None,
        name: str | None = None,
        debug: bool = False,
    ) -> CompiledStateGraph:
        """Validate the graph and return it ready to run.

        ``checkpointer`` saves a checkpoint after every step (threads, history, resume). For a
        subgraph, ``True`` keeps its state across invocations within the parent's thread and
        ``False`` keeps no checkpoints; by default a subgraph saves in its parent's thread.
        ``interrupt_before`` / ``interrupt_after`` pause the run around the named nodes.
        """
        from ..runtime.compiled import CompiledStateGraph

        if checkpointer is not None and not isinstance(checkpointer, (BaseCheckpointSaver, bool)):
            raise GraphValidationError(
                f"checkpointer must be a threadline checkpointer, got {type(checkpointer).__name__}"
            )
        before = _as_list(interrupt_before)
        after = _as_list(interrupt_after)
        self.spec.validate(interrupt_nodes=[*before, *after])
        return CompiledStateGraph(
            schema=self.schema,
            spec=self.spec,
            checkpointer=checkpointer,
            interrupt_before=before,
            interrupt_after=after,
            name=name or "LangGraph",
        )


def _as_list(value: Sequence[str] | str | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _is_compiled_graph(obj: Any) -> bool:
    from ..runtime.compiled import CompiledStateGraph

    return isinstance(obj, CompiledStateGraph)
