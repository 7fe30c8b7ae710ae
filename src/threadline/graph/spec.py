"""The static description of a graph: nodes, edges, joins and branches, validated."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import GraphValidationError
from ..types import RetryPolicy

__all__ = ["END", "START", "Branch", "GraphSpec", "Join", "NodeSpec"]

START = "__start__"
END = "__end__"


@dataclass(frozen=True, slots=True)
class NodeSpec:
    """A node: the function to call and how to call it."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    takes_config: bool
    takes_writer: bool
    retry: RetryPolicy | tuple[RetryPolicy, ...] | None  # several: the first matching one
    destinations: tuple[str, ...] | None
    subgraph: Any = None  # a compiled graph used directly as the node
    config_by_name: bool = False  # a parameter named ``config`` gets it by keyword
    inject: tuple[tuple[str, str], ...] = ()  # (parameter, what) passed by keyword
    runnable: bool = False  # a LangChain Runnable: called as fn.invoke(state, config)
    input_schema: Any = None  # a StateSchema of the node's own input, when not the graph's
    defer: bool = False  # runs only once nothing else is left to run
    cache_policy: Any = None
    metadata: dict[str, Any] | None = None  # add_node(metadata=...): shown in drawings
    destination_labels: tuple[tuple[str, str], ...] = ()  # destinations={node: label}

    def config_args(self, config: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """How the function takes ``config`` after the state: ``(args, kwargs)`` to add."""
        if not self.takes_config:
            return (), {}
        if self.config_by_name:
            return (), {"config": config}
        return (config,), {}


@dataclass(frozen=True, slots=True)
class Branch:
    """A conditional edge: ``router(state)`` picks the next node(s)."""

    source: str
    router: Callable[..., Any]
    path_map: Mapping[Hashable, str] | None
    is_async: bool
    takes_config: bool

    def resolve(self, result: Any) -> list[Any]:
        """Router output -> list of node names and Sends."""
        items = list(result) if isinstance(result, (list, tuple)) else [result]
        out: list[Any] = []
        for item in items:
            if self.path_map is not None and not hasattr(item, "node"):
                if item not in self.path_map:
                    raise GraphValidationError(
                        f"conditional edge from {self.source!r} returned {item!r}, which is not"
                        f" in its path_map ({', '.join(map(repr, self.path_map))})"
                    )
                out.append(self.path_map[item])
            else:
                out.append(item)
        return out


@dataclass(frozen=True, slots=True)
class Join:
    """``add_edge([a, b], c)``: ``c`` runs once every source has finished."""

    sources: tuple[str, ...]
    target: str

    @property
    def key(self) -> str:
        return "+".join(self.sources) + ">" + self.target


@dataclass
class GraphSpec:
    nodes: dict[str, NodeSpec] = field(default_factory=dict)
    edges: dict[str, list[str]] = field(default_factory=dict)
    joins: list[Join] = field(default_factory=list)
    branches: dict[str, list[Branch]] = field(default_factory=dict)
    deferred: set[str] = field(default_factory=set)  # nodes added with defer=True
    # A graph saves its input checkpoint, then applies the input in step 0; an entrypoint's
    # input checkpoint holds the input and schedules the function (False), as in LangGraph.
    input_step: bool = True

    def validate(self, *, interrupt_nodes: Sequence[str] = ()) -> None:
        known = set(self.nodes)
        for source, targets in self.edges.items():
            if source != START and source not in known:
                raise GraphValidationError(
                    f"edge {source!r} -> {targets[0]!r}: unknown node {source!r}"
                )
            for target in targets:
                if target != END and target not in known:
                    raise GraphValidationError(
                        f"edge {source!r} -> {target!r}: unknown node {target!r}"
                    )
        for join in self.joins:
            for name in (*join.sources, join.target):
                if name not in known:
                    raise GraphValidationError(
                        f"edge {list(join.sources)!r} -> {join.target!r}: unknown node {name!r}"
                    )
        for source, branches in self.branches.items():
            if source != START and source not in known:
                raise GraphValidationError(f"conditional edge from unknown node {source!r}")
            for branch in branches:
                for target in (branch.path_map or {}).values():
                    if target != END and target not in known:
                        raise GraphValidationError(
                            f"conditional edge from {source!r}: path_map names unknown node"
                            f" {target!r}"
                        )
        for node in self.nodes.values():
            for target in node.destinations or ():
                if target != END and target not in known:
                    raise GraphValidationError(
                        f"node {node.name!r} declares destination {target!r}, which is not a node"
                    )
        for name in interrupt_nodes:
            if name != "*" and name not in known:
                raise GraphValidationError(f"interrupt_before/after names unknown node {name!r}")
        if not self.edges.get(START) and not self.branches.get(START):
            raise GraphValidationError(
                "graph has no entry point: add_edge(START, 'first_node') or set_entry_point()"
            )
        self._check_reachable()

    def _check_reachable(self) -> None:
        open_ended = any(
            b.path_map is None for branches in self.branches.values() for b in branches
        )
        if open_ended:
            return  # a router without path_map may go anywhere
        if any(node.subgraph is not None for node in self.nodes.values()):
            return  # a subgraph's node may route here with Command(graph=Command.PARENT)
        reached: set[str] = set()
        for targets in self.edges.values():
            reached.update(targets)
        for join in self.joins:
            reached.add(join.target)
        for branches in self.branches.values():
            for b in branches:
                reached.update((b.path_map or {}).values())
        for node in self.nodes.values():
            reached.update(node.destinations or ())
        for name in self.nodes:
            if name not in reached:
                raise GraphValidationError(
                    f"node {name!r} is not reachable: no edge leads to it. Add an edge to it, give"
                    " a conditional edge a path_map naming it, or declare it as a destination of a"
                    f" node that routes with Command (add_node(..., destinations=({name!r},)));"
                    " for a subgraph run inside a node that routes here with"
                    " Command(graph=Command.PARENT), declare it on that node"
                )

    def draw_mermaid(self) -> str:
        lines = ["graph TD"]
        lines.append(f"    {START}([start])")
        for name, node in self.nodes.items():
            shape = f"[[{name}]]" if node.subgraph is not None else f"[{name}]"
            lines.append(f"    {_mid(name)}{shape}")
        lines.append(f"    {END}([end])")
        for source, targets in self.edges.items():
            for target in targets:
                lines.append(f"    {_mid(source)} --> {_mid(target)}")
        for join in self.joins:
            for source in join.sources:
                lines.append(f"    {_mid(source)} --> {_mid(join.target)}")
        for source, branches in self.branches.items():
            for b in branches:
                if b.path_map is None:
                    labelled: list[tuple[str, str]] = [(n, "") for n in [*self.nodes, END]]
                else:
                    labelled = [(t, str(k)) for k, t in b.path_map.items()]
                for target, label in labelled:
                    arrow = f" -. {label} .-> " if label and label != target else " -.-> "
                    lines.append(f"    {_mid(source)}{arrow}{_mid(target)}")
        for node in self.nodes.values():
            for target in node.destinations or ():
                lines.append(f"    {_mid(node.name)} -.-> {_mid(target)}")
        return "\n".join(lines) + "\n"


def _mid(name: str) -> str:
    """A Mermaid-safe node id."""
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in name)


def callable_info(fn: Callable[..., Any]) -> tuple[bool, bool, bool]:
    """``(is_async, takes_config, takes_writer)`` of a node or router function."""
    target = fn
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects
    if not inspect.isfunction(fn) and not inspect.ismethod(fn) and call is not None:
        target = call
    is_async = inspect.iscoroutinefunction(target)
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return is_async, False, False
    names = {p.name for p in params}
    # A second positional parameter is the config only when it has no default: one with a
    # default (``lambda s, name=name: ...``) is the caller's own and must keep its value.
    # ``writer`` is passed by keyword, so ``def node(state, writer)`` takes no config.
    positional = [
        p
        for p in params
        if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        and (p.default is inspect.Parameter.empty or p.name == "config")
        and p.name not in ("writer", *INJECTABLE)
        and not _is_runtime_hint(p.annotation)
    ]
    takes_config = "config" in names or len(positional) >= 2
    return is_async, takes_config, "writer" in names


# What a node may ask for by parameter name, besides ``config`` and ``writer``.
INJECTABLE = ("store", "runtime", "previous")


def is_runnable(obj: Any) -> bool:
    """A LangChain ``Runnable`` (or anything with ``invoke`` and ``ainvoke``)."""
    return callable(getattr(obj, "invoke", None)) and callable(getattr(obj, "ainvoke", None))


def node_injections(fn: Callable[..., Any]) -> tuple[tuple[str, str], ...]:
    """The keyword arguments a node function asks threadline for, as ``(parameter, what)``.

    By name, as LangGraph passes them: ``store`` (``"store?"`` when it may be None),
    ``runtime``, ``previous``. A parameter of another name annotated ``Runtime[...]`` gets
    the runtime too.
    """
    target = fn
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects
    if not inspect.isfunction(fn) and not inspect.ismethod(fn) and call is not None:
        target = call
    try:
        params = list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return ()
    out: list[tuple[str, str]] = []
    for i, p in enumerate(params):
        if p.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            continue
        if p.name == "store":
            optional = p.default is None or _mentions_none(p.annotation)
            out.append((p.name, "store?" if optional else "store"))
        elif p.name in ("runtime", "previous"):
            out.append((p.name, p.name))
        elif i > 0 and p.name not in ("config", "writer") and _is_runtime_hint(p.annotation):
            out.append((p.name, "runtime"))
    return tuple(out)


def _is_runtime_hint(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return annotation == "Runtime" or annotation.startswith("Runtime[")
    origin = typing.get_origin(annotation) or annotation
    return getattr(origin, "__name__", None) == "Runtime" and "runtime" in getattr(
        origin, "__module__", ""
    )


def _mentions_none(annotation: Any) -> bool:
    if isinstance(annotation, str):
        return "None" in annotation or "Optional" in annotation
    return type(None) in typing.get_args(annotation)


def config_by_name(fn: Callable[..., Any]) -> bool:
    """Whether ``fn`` has a parameter named ``config`` that can be passed by keyword (so
    ``def node(state, writer, config)`` gets each where it asked for it)."""
    target = fn
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects
    if not inspect.isfunction(fn) and not inspect.ismethod(fn) and call is not None:
        target = call
    try:
        param = inspect.signature(target).parameters.get("config")
    except (TypeError, ValueError):
        return False
    return param is not None and param.kind in (
        inspect.Parameter.POSITIONAL_OR_KEYWORD,
        inspect.Parameter.KEYWORD_ONLY,
    )


def literal_destinations(fn: Callable[..., Any]) -> tuple[str, ...] | None:
    """Destinations declared by a ``-> Command[Literal["a", "b"]]`` or ``-> Literal[...]`` hint."""
    try:
        hints = typing.get_type_hints(fn)
    except Exception:
        return None
    ret = hints.get("return")
    if ret is None:
        return None
    args = typing.get_args(ret)
    if typing.get_origin(ret) is typing.Literal:
        return tuple(str(a) for a in args)
    for arg in args:
        if typing.get_origin(arg) is typing.Literal:
            return tuple(str(a) for a in typing.get_args(arg))
    return None
