"""``StateGraph``: the builder users call ``add_node`` and ``add_edge`` on."""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import typing
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..cache.base import BaseCache
from ..checkpoint.base import BaseCheckpointSaver
from ..checkpoint.typewalk import register_schema_types
from ..errors import GraphValidationError
from ..types import CachePolicy, RetryPolicy
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
    is_runnable,
    literal_destinations,
    node_injections,
)

if TYPE_CHECKING:
    from ..runtime.compiled import CompiledStateGraph

__all__ = ["StateGraph"]


class StateGraph:
    """Builds a graph whose nodes read and update a shared state.

    Args:
        state_schema: a ``TypedDict``, dataclass or pydantic ``BaseModel``. Fields annotated
            ``Annotated[T, reducer]`` accumulate through the reducer; others keep the last write.
        context_schema: the type of ``invoke(..., context=...)``, which nodes read as
            ``runtime.context`` (a dict given for a dataclass or pydantic schema becomes one).
        input_schema: the keys ``invoke`` accepts (by default the state schema's).
        output_schema: the keys ``invoke`` returns (by default the state schema's).
    """

    def __init__(
        self,
        state_schema: Any,
        context_schema: Any = None,
        *,
        input_schema: Any = None,
        output_schema: Any = None,
        **deprecated: Any,
    ) -> None:
        unknown = set(deprecated) - {"input", "output", "config_schema"}
        if unknown:
            raise TypeError(f"StateGraph() got unexpected keyword argument(s) {sorted(unknown)}")
        # LangGraph's older names: input=, output=, config_schema=.
        input_schema = input_schema or deprecated.get("input")
        output_schema = output_schema or deprecated.get("output")
        self.context_schema = context_schema or deprecated.get("config_schema")
        self.schema = StateSchema(state_schema)
        self.spec = GraphSpec()
        if input_schema is not None and input_schema is not state_schema:
            self.schema.input_schema = self._merged(StateSchema(input_schema), "input_schema")
        if output_schema is not None and output_schema is not state_schema:
            self.schema.output_schema = self._merged(StateSchema(output_schema), "output_schema")

    def _merged(self, schema: StateSchema, what: str) -> StateSchema:
        if schema.managed and what != "node":
            raise GraphValidationError(
                f"{what} {schema.name} has managed keys ({', '.join(schema.managed)});"
                " RemainingSteps and IsLastStep belong in the state schema"
            )
        self.schema.merge(schema)
        return schema

    # ------------------------------------------------------------------ nodes

    def add_node(
        self,
        node: str | Callable[..., Any],
        action: Callable[..., Any] | None = None,
        *,
        defer: bool = False,
        metadata: dict[str, Any] | None = None,
        input_schema: Any = None,
        retry_policy: RetryPolicy | Sequence[RetryPolicy] | None = None,
        cache_policy: CachePolicy[Any] | None = None,
        destinations: Sequence[str] | Mapping[str, str] | None = None,
        retry: RetryPolicy | None = None,
        **deprecated: Any,
    ) -> StateGraph:
        """Add a node: ``add_node("name", fn)`` or ``add_node(fn)`` (named after the function).

        ``fn`` takes the state and returns a partial update, an instance of the schema, a
        ``Command`` or None. It may also take ``config`` (by name or as a second positional
        parameter), and by name ``writer``, ``store`` and ``runtime`` (see the README). A
        compiled graph or a LangChain ``Runnable`` may be the node. A first parameter
        annotated with another schema than the graph's (or ``input_schema=``) gives the node
        that schema's keys, which may be keys of no other schema (private state).
        ``defer=True`` runs the node only once nothing else is left to run.
        ``destinations`` declares where a node that returns ``Command(goto=...)`` may go.
        """
        if set(deprecated) - {"input"}:
            raise TypeError(f"add_node() got unexpected keyword argument(s) {sorted(deprecated)}")
        input_schema = input_schema or deprecated.get("input")
        if isinstance(node, str):
            if action is None:
                raise GraphValidationError(f"add_node({node!r}) needs the node's function")
            name, fn = node, action
        else:
            if action is not None:
                raise GraphValidationError("add_node(fn, fn2): pass a name string first")
            fn = node
            name = _node_name(fn)
            if not name or name == "<lambda>":
                raise GraphValidationError(
                    "cannot name this node from its function; use add_node('name', fn)"
                )
        self._check_name(name)
        if name in self.spec.nodes:
            raise GraphValidationError(f"node {name!r} already exists; node names must be unique")
        self.spec.nodes[name] = self._node_spec(
            name, fn, _one_policy(retry or retry_policy), destinations, input_schema
        )
        if cache_policy is not None:
            self.spec.nodes[name] = dataclasses.replace(
                self.spec.nodes[name], cache_policy=cache_policy
            )
        if metadata is not None or isinstance(destinations, Mapping):
            labels = tuple(destinations.items()) if isinstance(destinations, Mapping) else ()
            self.spec.nodes[name] = dataclasses.replace(
                self.spec.nodes[name], metadata=metadata, destination_labels=labels
            )
        if defer:
            self.spec.nodes[name] = dataclasses.replace(self.spec.nodes[name], defer=True)
            self.spec.deferred.add(name)
        return self

    def _node_spec(
        self,
        name: str,
        fn: Any,
        retry: RetryPolicy | tuple[RetryPolicy, ...] | None,
        destinations: Sequence[str] | Mapping[str, str] | None,
        input_schema: Any,
    ) -> NodeSpec:
        subgraph = fn if _is_compiled_graph(fn) else None
        runnable = subgraph is None and is_runnable(fn)
        if subgraph is not None or runnable:
            is_async, takes_config, takes_writer = False, True, False
        else:
            if not callable(fn):
                raise GraphValidationError(
                    f"node {name!r}: {fn!r} is neither callable nor a Runnable (with invoke())"
                )
            is_async, takes_config, takes_writer = callable_info(fn)
        if isinstance(destinations, Mapping):
            declared: tuple[str, ...] | None = tuple(destinations)
        elif destinations is not None:
            declared = tuple(destinations)
        else:
            declared = None if subgraph is not None or runnable else literal_destinations(fn)
        plain = subgraph is None and not runnable
        return NodeSpec(
            name=name,
            fn=fn,
            is_async=is_async,
            takes_config=takes_config,
            takes_writer=takes_writer,
            retry=retry,
            destinations=declared,
            subgraph=subgraph,
            config_by_name=plain and config_by_name(fn),
            inject=node_injections(fn) if plain else (),
            runnable=runnable,
            input_schema=self._node_input_schema(fn if plain else None, input_schema),
        )

    def _node_input_schema(self, fn: Any, declared: Any) -> StateSchema | None:
        """The node's own input schema: ``input_schema=``, or its first parameter's hint."""
        hint = declared if declared is not None else (None if fn is None else first_hint(fn))
        if hint is None or hint is self.schema.schema:
            return None
        try:
            schema = StateSchema(hint)
        except GraphValidationError:
            if declared is not None:
                raise
            return None  # an annotation that is no state schema (e.g. a plain dict)
        if schema.kind == "dict":
            return None
        self._merged(schema, "node")
        return schema

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
        store: Any = None,
        cache: BaseCache[Any] | None = None,
    ) -> CompiledStateGraph:
        """Validate the graph and return it ready to run.

        ``checkpointer`` saves a checkpoint after every step (threads, history, resume). For a
        subgraph, ``True`` keeps its state across invocations within the parent's thread and
        ``False`` keeps no checkpoints; by default a subgraph saves in its parent's thread.
        ``interrupt_before`` / ``interrupt_after`` pause the run around the named nodes.
        ``store`` is what nodes reach as ``runtime.store``, a ``store`` parameter or
        ``get_store()``; ``cache`` keeps the results of nodes added with a ``cache_policy``.
        """
        from ..runtime.compiled import CompiledStateGraph

        if checkpointer is not None and not isinstance(checkpointer, (BaseCheckpointSaver, bool)):
            raise GraphValidationError(
                f"checkpointer must be a threadline checkpointer, got {type(checkpointer).__name__}"
            )
        before = _as_list(interrupt_before)
        after = _as_list(interrupt_after)
        self.spec.validate(interrupt_nodes=[*before, *after])
        # Stored values load only as registered types: register what the schema names.
        register_schema_types(self.schema.schema, getattr(checkpointer, "serde", None))
        return CompiledStateGraph(
            schema=self.schema,
            spec=self.spec,
            checkpointer=checkpointer,
            interrupt_before=before,
            interrupt_after=after,
            name=name or "LangGraph",
            store=store,
            cache=cache,
            context_schema=self.context_schema,
            builder=self,
        )


def _as_list(value: Sequence[str] | str | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _node_name(fn: Any) -> str:
    get_name = getattr(fn, "get_name", None)
    if callable(get_name) and is_runnable(fn):
        return str(get_name())
    return getattr(fn, "name", None) or getattr(fn, "__name__", None) or ""


def _one_policy(
    policy: RetryPolicy | Sequence[RetryPolicy] | None,
) -> RetryPolicy | tuple[RetryPolicy, ...] | None:
    if policy is None or isinstance(policy, RetryPolicy):
        return policy
    policies = tuple(policy)
    if not all(isinstance(p, RetryPolicy) for p in policies):
        raise GraphValidationError("retry_policy must be a RetryPolicy or a list of them")
    return policies or None


def first_hint(fn: Any) -> Any:
    """The annotation of a function's first parameter, resolved, when it is a class."""
    target = fn if inspect.isfunction(fn) or inspect.ismethod(fn) else getattr(fn, "__call__", fn)  # noqa: B004
    try:
        params = list(inspect.signature(target).parameters)
        hints = typing.get_type_hints(target)
    except Exception:
        return None
    hint = hints.get(params[0]) if params else None
    return hint if isinstance(hint, type) else None


def _is_compiled_graph(obj: Any) -> bool:
    from ..runtime.compiled import CompiledStateGraph

    return isinstance(obj, CompiledStateGraph)
