"""The compiled graph: run it, stream it, inspect and edit its threads."""

from __future__ import annotations

import asyncio
import concurrent.futures
import queue
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..checkpoint.base import BaseCheckpointSaver, check_config, parse_config, validate_thread_id
from ..checkpoint.lease import LeaseOp
from ..checkpoint.types import CheckpointDraft, CheckpointTuple, RunnableConfig, make_config
from ..errors import (
    CheckpointConflictError,
    EmptyInputError,
    GraphInterrupt,
    NoCheckpointerError,
    ThreadBusyError,
    is_invalid_resume,
)
from ..graph.drawing import draw
from ..graph.schema import StateSchema
from ..graph.spec import GraphSpec
from ..types import Command, Interrupt, StateSnapshot, StateTask
from .context import NO_SCOPE, ParentLink, RunScope, running_task
from .core import MISSING, RunCore, SaveCheckpoint, Task, tasks_of
from .execute import arun_task, run_task
from .handle import RunHandle
from .introspect import GraphNode, json_schema, nodes_of
from .leasing import RunLease, idempotency_key, input_landed
from .persist import AsyncPersister, Persister
from .procedures import Opened, Procedure, adrive, drive, open_thread
from .runnable import RunnableMethods
from .runtime_context import coerce_context
from .stored_format import NODES, RESERVED, shown_metadata
from .stream_modes import parse_stream_mode
from .task_events import checkpoint_task, debug_event, task_result, task_start

__all__ = ["CompiledStateGraph"]

DEFAULT_RECURSION_LIMIT = 10007  # LangGraph 1.2's default (LANGGRAPH_DEFAULT_RECURSION_LIMIT)
_POOL_PREFIX = "threadline"
_POOL = concurrent.futures.ThreadPoolExecutor(max_workers=32, thread_name_prefix=_POOL_PREFIX)


# Config keys that name a run's place in storage: a child gets its own, never its parent's.
_RUN_KEYS = frozenset({"thread_id", "checkpoint_ns", "checkpoint_id", "task_id"})


def _recast_ns(ns: str) -> str:
    """``parent:task|node:task:1`` -> ``parent|node:1``: a namespace without task ids."""
    parts = []
    for part in ns.split("|"):
        pieces = part.split(":")
        parts.append(pieces[0] if len(pieces) < 3 else f"{pieces[0]}:{pieces[2]}")
    return "|".join(parts)


def _nested_pool(size: int) -> concurrent.futures.ThreadPoolExecutor:
    return concurrent.futures.ThreadPoolExecutor(size, thread_name_prefix=f"{_POOL_PREFIX}-nested")


@dataclass
class _Child:
    """This run is a subgraph of a running task."""

    link: ParentLink | None
    resume: dict[str, Any] | None
    ns: str | None
    persistent: bool = False  # checkpointer=True: new input continues the child's own history


@dataclass
class _Options:
    modes: tuple[str, ...]
    single: bool  # stream_mode was one string: yield chunks, not (mode, chunk) pairs
    interrupt_before: list[str]
    interrupt_after: list[str]
    durability: str
    subgraphs: bool
    context: Any = None  # invoke(..., context=...): the run's Runtime.context


class CompiledStateGraph(RunnableMethods):
    """A validated graph, ready to run. Made by ``StateGraph.compile()``."""

    def __init__(
        self,
        *,
        schema: StateSchema,
        spec: GraphSpec,
        checkpointer: BaseCheckpointSaver | bool | None,
        interrupt_before: Sequence[str],
        interrupt_after: Sequence[str],
        name: str,
        store: Any = None,
        cache: Any = None,
        context_schema: Any = None,
        builder: Any = None,
    ) -> None:
        self.builder = builder  # the StateGraph compiled into this graph (as in LangGraph)
        self.schema = schema
        self.spec = spec
        self.checkpointer = checkpointer
        self.interrupt_before = list(interrupt_before)
        self.interrupt_after = list(interrupt_after)
        self.name = name
        self.store = store
        self.cache = cache
        self.context_schema = context_schema

    def get_graph(self, config: RunnableConfig | None = None, *, xray: int | bool = False) -> Any:
        """The graph's structure, to draw (``.draw_mermaid()``); see :mod:`..graph.drawing`."""
        return draw(self.spec, xray)

    @property
    def nodes(self) -> Mapping[str, GraphNode]:
        """``{name: node}``, ``__start__`` first; ``node.bound.invoke(state)`` runs one alone."""
        return nodes_of(self.spec)

    @property
    def input_schema(self) -> Any:
        """The type ``invoke`` takes: the graph's ``input_schema`` (by default its state's)."""
        return self.schema.input_schema.schema

    @property
    def output_schema(self) -> Any:
        """The type ``invoke`` returns: the graph's ``output_schema`` (by default its state's)."""
        return self.schema.output_schema.schema

    def get_input_jsonschema(self, config: RunnableConfig | None = None) -> dict[str, Any]:
        """The JSON schema of the input, as LangGraph gives it (needs pydantic)."""
        return json_schema(self.schema, "input")

    def get_output_jsonschema(self, config: RunnableConfig | None = None) -> dict[str, Any]:
        """The JSON schema of the output, as LangGraph gives it (needs pydantic)."""
        return json_schema(self.schema, "output")

    # How a run shows its results; the functional API's entrypoint shows them its own way.
    _input_values = True  # stream_mode="values" yields the state once the input is applied

    def _update_of(self, task: Task) -> dict[str, Any]:
        """A finished task's chunk for ``stream_mode="updates"`` (a cache hit is marked, as
        LangGraph marks it)."""
        if task.cached:
            return {task.name: dict(task.writes) or None, "__metadata__": {"cached": True}}
        return {task.name: dict(task.writes) or None}

    def _task_start(self, task: Task, node_input: Any, config: RunnableConfig) -> dict[str, Any]:
        """A task's chunk for ``stream_mode="tasks"`` as it starts."""
        return task_start(task.id, task.name, node_input, _triggers(task), config)

    def _task_result(self, task: Task) -> dict[str, Any]:
        """A task's chunk for ``stream_mode="tasks"`` once it ended."""
        return task_result(
            task.id,
            task.name,
            writes=task.writes if task.done else None,
            error=task.error,
            interrupts=() if task.done else task.interrupts[len(task.answers) :],
        )

    @property
    def _every_key(self) -> bool:
        """Whether ``"values"`` chunks show every key of the state (a dict-like state)."""
        return self.schema.kind in ("typeddict", "dict")

    def _stream_values(self, core: RunCore) -> Any:
        """The state a ``"values"`` chunk shows: every key that has a value (input-only and
        private keys too, as LangGraph streams them), not only the output schema's."""
        if not self._every_key:
            return core.output()
        return {k: v for k, v in core.values.items() if k not in RESERVED}

    def _shows_step(self, core: RunCore) -> bool:
        """Whether the step just applied shows in ``stream_mode="values"``: when its tasks
        wrote a key it shows (see ``_stream_values``)."""
        return core.writes_output(core.finished_tasks, every=self._every_key)

    def _interrupt_values(self, core: RunCore, asked: tuple[Interrupt, ...]) -> Any:
        """The chunk for ``stream_mode="values"`` when a task asks: the state with the
        question under ``__interrupt__``."""
        out = self._stream_values(core)
        if isinstance(out, dict):
            out["__interrupt__"] = asked
            return out
        return {"__interrupt__": asked}

    def _result(self, core: RunCore) -> Any:
        """What ``invoke`` returns once the run stopped."""
        out = core.output()
        if core.interrupts and isinstance(out, dict):
            out["__interrupt__"] = list(core.interrupts)
        return out

    # ------------------------------------------------------------------ running

    def invoke(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        stream_mode: str | Sequence[str] = "values",
        interrupt_before: Sequence[str] | None = None,
        interrupt_after: Sequence[str] | None = None,
        durability: str | None = None,
    ) -> Any:
        """Run the graph to the end (or to a pause) and return the final state.

        ``input`` is the state update to start with, ``None`` to continue the thread, or a
        ``Command`` (e.g. ``Command(resume=answer)``).

        Another ``stream_mode`` than ``"values"`` (the default) returns the list of chunks
        :meth:`stream` would yield with it, as LangGraph's ``invoke`` does.
        """
        chunks = stream_mode != "values"
        modes = stream_mode if chunks else ()
        opts = self._options(modes, config, interrupt_before, interrupt_after, durability, False)
        opts.context = context
        run = self._run(input, config, opts)
        if chunks:
            return list(run)
        for _ in run:
            pass
        return run.result

    async def ainvoke(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        stream_mode: str | Sequence[str] = "values",
        interrupt_before: Sequence[str] | None = None,
        interrupt_after: Sequence[str] | None = None,
        durability: str | None = None,
    ) -> Any:
        """Async :meth:`invoke`."""
        chunks = stream_mode != "values"
        modes = stream_mode if chunks else ()
        opts = self._options(modes, config, interrupt_before, interrupt_after, durability, False)
        opts.context = context
        run = self._arun(input, config, opts)
        if chunks:
            return [chunk async for chunk in run]
        async for _ in run:
            pass
        return run.result

    def stream(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        stream_mode: str | Sequence[str] = "updates",
        interrupt_before: Sequence[str] | None = None,
        interrupt_after: Sequence[str] | None = None,
        durability: str | None = None,
        subgraphs: bool = False,
    ) -> Iterator[Any]:
        """Run the graph, yielding after every step.

        Modes: ``"updates"`` (the default: ``{node: update}``), ``"values"`` (the full state),
        ``"checkpoints"`` (each checkpoint saved), ``"tasks"`` (each task's start and end),
        ``"debug"`` (both, wrapped), ``"custom"`` (what nodes write with their stream writer),
        ``"messages"`` (chat model tokens); see :mod:`~threadline.runtime.task_events`.
        Several modes at once yield ``(mode, chunk)`` pairs; ``subgraphs=True`` prefixes the
        namespace.
        """
        opts = self._options(
            stream_mode, config, interrupt_before, interrupt_after, durability, subgraphs
        )
        opts.context = context
        yield from self._run(input, config, opts)

    async def astream(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        context: Any = None,
        stream_mode: str | Sequence[str] = "updates",
        interrupt_before: Sequence[str] | None = None,
        interrupt_after: Sequence[str] | None = None,
        durability: str | None = None,
        subgraphs: bool = False,
    ) -> AsyncIterator[Any]:
        """Async :meth:`stream`."""
        opts = self._options(
            stream_mode, config, interrupt_before, interrupt_after, durability, subgraphs
        )
        opts.context = context
        async for chunk in self._arun(input, config, opts):
            yield chunk

    def astart(
        self,
        input: Any,
        config: RunnableConfig | None = None,
        *,
        stream_mode: str | Sequence[str] = "updates",
        context: Any = None,
        interrupt_before: Sequence[str] | None = None,
        interrupt_after: Sequence[str] | None = None,
        durability: str | None = None,
        subgraphs: bool = True,
        max_buffered: int = 1000,
    ) -> RunHandle:
        """Start a run in the background on the running event loop: a :class:`RunHandle` with
        its events typed and numbered (subgraphs' too, unless ``subgraphs=False``) and a way
        to stop it. The options are :meth:`astream`'s."""
        modes = [stream_mode] if isinstance(stream_mode, str) else list(stream_mode)
        opts = self._options(
            modes, config, interrupt_before, interrupt_after, durability, subgraphs
        )
        opts.context = context
        return RunHandle(self._arun(input, config, opts), subgraphs, max_buffered)

    def _options(
        self,
        stream_mode: str | Sequence[str],
        config: RunnableConfig | None,
        interrupt_before: Sequence[str] | None,
        interrupt_after: Sequence[str] | None,
        durability: str | None,
        subgraphs: bool,
    ) -> _Options:
        check_config(config)
        modes, single = parse_stream_mode(stream_mode)
        durability = durability or (config or {}).get("durability") or "sync"
        if durability not in ("sync", "async", "exit"):
            raise ValueError(f"durability must be 'sync', 'async' or 'exit', got {durability!r}")
        before = self.interrupt_before if interrupt_before is None else list(interrupt_before)
        after = self.interrupt_after if interrupt_after is None else list(interrupt_after)
        self.spec.validate(interrupt_nodes=[*before, *after])
        return _Options(modes, single, before, after, durability, subgraphs)

    def _core(
        self,
        config: RunnableConfig | None,
        opts: _Options,
        saver: BaseCheckpointSaver | None = None,
    ) -> tuple[RunCore, RunnableConfig]:
        config = dict(config or {})
        thread_id: str | None = None
        ns = ""
        if saver is not None:
            thread_id, ns, _ = parse_config(config)
        # Without a checkpointer a thread_id is only configuration (as in LangGraph).
        key = idempotency_key(config)
        if key is not None:  # stored with the run's checkpoints: a retry finds its input
            config["metadata"] = {**(config.get("metadata") or {}), "idempotency_key": key}
        limit = config.get("recursion_limit", DEFAULT_RECURSION_LIMIT)
        if not isinstance(limit, int) or limit < 1:
            raise ValueError(f"recursion_limit must be a positive int, got {limit!r}")
        core = RunCore(
            spec=self.spec,
            schema=self.schema,
            config=config,
            thread_id=thread_id,
            ns=ns,
            interrupt_before=opts.interrupt_before,
            interrupt_after=opts.interrupt_after,
            recursion_limit=limit,
            durability=opts.durability,
            checkpointing=saver is not None,
            in_parent=running_task() is not None,
            run_scope=self._run_scope(opts),
        )
        return core, config

    def _run_scope(self, opts: _Options) -> RunScope:
        """The run's context and store; a graph run inside a node inherits what it lacks."""
        parent = running_task()
        inherited = parent.run_scope if parent is not None else NO_SCOPE
        context = coerce_context(self.context_schema, opts.context)
        if context is None and self.store is None and self.cache is None:
            return inherited
        return RunScope(
            context=inherited.context if context is None else context,
            store=inherited.store if self.store is None else self.store,
            cache=inherited.cache if self.cache is None else self.cache,
        )

    def _child_setup(
        self, config: RunnableConfig | None, opts: _Options
    ) -> tuple[RunnableConfig | None, _Options, _Child | None, BaseCheckpointSaver | None]:
        """Where a run keeps its checkpoints: its own saver, or, inside a running task, its
        parent's, as a child run.

        A child inherits the parent's checkpointer and thread (its own saver, if it has one,
        is not used, as in LangGraph), in the namespace ``node:task_id``, so a rerun of the
        parent task finds the child where it stopped. ``checkpointer=True`` keeps one history
        per node instead (namespace ``node``): the subgraph's state lasts across invocations.
        ``checkpointer=False`` keeps none. A child always forwards its events to the parent.
        """
        task = running_task()
        own = self.checkpointer if isinstance(self.checkpointer, BaseCheckpointSaver) else None
        if task is None or task.parent is None:
            if self.checkpointer is True:
                raise NoCheckpointerError(
                    f"graph {self.name!r} was compiled with checkpointer=True, which only a"
                    " subgraph may use (it then keeps its state in its parent's thread); pass a"
                    " checkpointer to compile() to run it on its own"
                )
            return config, opts, None, own
        link = task.parent
        ns = task.child_ns()
        persistent = self.checkpointer is True
        if persistent:
            ns = _recast_ns(ns)
        child_opts = _Options(
            modes=link.modes if link.subgraphs else (),
            single=False,
            interrupt_before=opts.interrupt_before,
            interrupt_after=opts.interrupt_after,
            durability=link.durability,
            subgraphs=link.subgraphs,
        )
        base = dict(config or {})
        user = {
            k: v for k, v in (base.pop("configurable", None) or {}).items() if k not in _RUN_KEYS
        }
        if self.checkpointer is False or link.saver is None or link.thread_id is None:
            if user:
                base["configurable"] = user
            return base, child_opts, _Child(link, None, ns, persistent=False), None
        base["configurable"] = {**user, "thread_id": link.thread_id, "checkpoint_ns": ns}
        child = _Child(link, task.child_resume(), ns, persistent=persistent)
        return base, child_opts, child, link.saver

    def _run(self, input: Any, config: RunnableConfig | None, opts: _Options) -> _SyncRun:
        config, opts, child, saver = self._child_setup(config, opts)
        core, config = self._core(config, opts, saver)
        return _SyncRun(self, core, input, config, opts, saver, child)

    def _arun(self, input: Any, config: RunnableConfig | None, opts: _Options) -> _AsyncRun:
        config, opts, child, saver = self._child_setup(config, opts)
        core, config = self._core(config, opts, saver)
        return _AsyncRun(self, core, input, config, opts, saver, child)

    # ------------------------------------------------------------------ threads

    def _saver(self, what: str) -> BaseCheckpointSaver:
        if not isinstance(self.checkpointer, BaseCheckpointSaver):
            raise self._no_checkpointer(what)
        return self.checkpointer

    @staticmethod
    def _no_checkpointer(what: str) -> NoCheckpointerError:
        return NoCheckpointerError(
            f"{what} needs a checkpointer, and this graph was compiled without one. Pass one to"
            " compile(), e.g. builder.compile(checkpointer=MemorySaver())"
        )

    def get_state(self, config: RunnableConfig, *, subgraphs: bool = False) -> StateSnapshot:
        """The thread's state at its head (or at the checkpoint ``config`` names)."""
        saver = self._saver("get_state()")
        thread_id, ns, checkpoint_id = parse_config(config)
        # Cached values are shared; _snapshot hands out private (copy-on-read) ones.
        found = saver.load(thread_id, ns, checkpoint_id, shared=True, task_writes_only=True)
        snapshot = self._snapshot(found, thread_id, ns)
        if subgraphs and found is not None:
            snapshot = drive(self._subgraph_states(snapshot, found), saver)
        return snapshot

    async def aget_state(self, config: RunnableConfig, *, subgraphs: bool = False) -> StateSnapshot:
        """Async :meth:`get_state`."""
        saver = self._saver("aget_state()")
        thread_id, ns, checkpoint_id = parse_config(config)
        found = await saver.aload(thread_id, ns, checkpoint_id, shared=True, task_writes_only=True)
        snapshot = self._snapshot(found, thread_id, ns)
        if subgraphs and found is not None:
            snapshot = await adrive(self._subgraph_states(snapshot, found), saver)
        return snapshot

    def get_state_history(
        self,
        config: RunnableConfig,
        *,
        filter: Mapping[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[StateSnapshot]:
        """Every checkpoint of the thread, newest first (``filter`` matches metadata)."""
        saver = self._saver("get_state_history()")
        thread_id, ns, _ = parse_config(config)
        config = make_config(thread_id, ns, "")
        for found in saver.list(config, filter=filter, before=before, limit=limit):
            yield self._snapshot(found, thread_id, ns)

    async def aget_state_history(
        self,
        config: RunnableConfig,
        *,
        filter: Mapping[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[StateSnapshot]:
        """Async :meth:`get_state_history`."""
        saver = self._saver("aget_state_history()")
        thread_id, ns, _ = parse_config(config)
        config = make_config(thread_id, ns, "")
        async for found in saver.alist(config, filter=filter, before=before, limit=limit):
            yield self._snapshot(found, thread_id, ns)

    def update_state(
        self, config: RunnableConfig, values: Any, as_node: str | None = None
    ) -> RunnableConfig:
        """Write ``values`` through the reducers as if ``as_node`` had, as a new checkpoint.

        Returns the new checkpoint's config; ``invoke(None, config)`` continues from it.
        """
        saver = self._saver("update_state()")
        core, _ = self._core(config, self._options((), config, None, None, "sync", False), saver)
        return drive(self._update(core, config, values, as_node), saver)

    async def aupdate_state(
        self, config: RunnableConfig, values: Any, as_node: str | None = None
    ) -> RunnableConfig:
        """Async :meth:`update_state`."""
        saver = self._saver("aupdate_state()")
        core, _ = self._core(config, self._options((), config, None, None, "sync", False), saver)
        return await adrive(self._update(core, config, values, as_node), saver)

    def _update(
        self, core: RunCore, config: RunnableConfig, values: Any, as_node: str | None
    ) -> Procedure[RunnableConfig]:
        thread_id, ns, checkpoint_id = parse_config(config)
        # A writer like any run: under the thread's lease, so it waits for a running run
        # instead of breaking it (inside a run's own task it writes under that run's lease).
        task = running_task()
        parent = None if task is None or task.parent is None else task.parent
        lease: RunLease | None = None
        held = parent.lease if parent is not None and parent.thread_id == thread_id else None
        if held is None:
            lease = RunLease(self._saver("update_state()"), thread_id, config)
            yield from lease.acquire()
            held = lease.lease
        try:
            opened: Opened = yield from open_thread(thread_id, ns, checkpoint_id)
            core.load(opened.loaded, is_head=opened.is_head)
            if opened.loaded is not None:
                core.set_last_node(opened.loaded.checkpoint.metadata.get(NODES) or [])
            core.apply_update(values, as_node)
            head = opened.head
            refs = {} if opened.loaded is None else opened.loaded.checkpoint.refs
            for op in core.take_outbox():
                if isinstance(op, SaveCheckpoint):
                    op.draft.base_refs = refs
                    saved = yield (
                        "put",
                        (thread_id, ns, op.draft),
                        {"expected_head": head, "lease": LeaseOp("hold", held)},
                    )
                    head, refs = saved.id, saved.refs
                else:
                    yield (
                        "put_writes",
                        (thread_id, ns, op.checkpoint_id, op.task_id, op.writes),
                        {"expected_head": head, "first_idx": op.first_idx, "lease": held},
                    )
        finally:
            if lease is not None:
                yield ("release_lease", (lease.lease,), {})
        return core.current_config()

    def fork(self, config: RunnableConfig, thread_id: str) -> RunnableConfig:
        """Copy the checkpoint ``config`` names into a new thread; returns the new config."""
        saver = self._saver("fork()")
        validate_thread_id(thread_id)
        saved = saver.fork(config, thread_id)
        return make_config(thread_id, saved.ns, saved.id)

    async def afork(self, config: RunnableConfig, thread_id: str) -> RunnableConfig:
        """Async :meth:`fork`."""
        saver = self._saver("afork()")
        validate_thread_id(thread_id)
        saved = await saver.afork(config, thread_id)
        return make_config(thread_id, saved.ns, saved.id)

    # ------------------------------------------------------------------ snapshots

    def _snapshot(self, found: CheckpointTuple | None, thread_id: str, ns: str) -> StateSnapshot:
        return _snapshot_of(self.schema, found, thread_id, ns)

    def _subgraph_states(
        self, snapshot: StateSnapshot, found: CheckpointTuple
    ) -> Procedure[StateSnapshot]:
        """Fill ``task.state`` of pending tasks that run a subgraph with its own snapshot.

        A subgraph added as a node is shown in its own state schema; a graph invoked inside a
        node function (which this graph cannot see) is shown with its values as a dict.
        """
        c = found.checkpoint
        tasks = []
        for task in snapshot.tasks:
            if task.result is not None:
                tasks.append(task)
                continue
            node = self.spec.nodes.get(task.name)
            graph = node.subgraph if node is not None and node.subgraph is not None else None
            own = task.name if graph is not None and graph.checkpointer is True else None
            part = own or f"{task.name}:{task.id}"  # checkpointer=True: one history per node
            child_ns = f"{c.ns}|{part}" if c.ns else part
            child_found = yield (
                "load",
                (c.thread_id, child_ns, None),
                {"shared": True, "task_writes_only": True},
            )
            if child_found is None:
                tasks.append(task)
                continue
            if graph is None:
                child = _snapshot_of(_ANY_STATE, child_found, c.thread_id, child_ns)
            else:
                child = graph._snapshot(child_found, c.thread_id, child_ns)
                child = yield from graph._subgraph_states(child, child_found)
            tasks.append(task._replace(state=child))
        return snapshot._replace(tasks=tuple(tasks))


def _snapshot_of(
    schema: StateSchema, found: CheckpointTuple | None, thread_id: str, ns: str
) -> StateSnapshot:
    if found is None:  # as LangGraph: no checkpoint, no values (not even reducers' empty ones)
        return StateSnapshot(
            values={},
            next=(),
            config=make_config(thread_id, ns, ""),
            metadata=None,
            created_at=None,
            parent_config=None,
            tasks=(),
            interrupts=(),
        )
    tasks, _ = tasks_of(found)
    # Finished tasks are not "next", unless all finished and the step awaits applying.
    pending = [t for t in tasks if not t.done] or tasks
    interrupts = tuple(t.pending_interrupt for t in pending if t.pending_interrupt)
    c = found.checkpoint
    return StateSnapshot(
        values=_values_out(schema, c.values),
        next=tuple(t.name for t in pending),
        config=found.config,
        metadata=shown_metadata(c.metadata),
        created_at=c.created_at.isoformat(),
        parent_config=found.parent_config,
        tasks=tuple(_state_task(t) for t in tasks),
        interrupts=interrupts,
    )


def _values_out(schema: StateSchema, values: Mapping[str, Any]) -> Any:
    keep = {k: v for k, v in values.items() if k not in RESERVED}
    if schema.kind != "dict":
        # Every channel, private ones included, as LangGraph shows them (a model state
        # shows its own fields only).
        keep = {k: v for k, v in keep.items() if k in schema.channels}
    for key in schema.empty_keys:
        if key not in keep:
            keep[key] = schema.initial(key)
    try:
        return schema.output(keep)
    except Exception:
        return keep  # a dataclass state without its required fields yet


_ANY_STATE = StateSchema(dict)  # for a graph we only know from storage


def _state_task(task: Task) -> StateTask:
    path = ("__pregel_pull", task.name) if task.arg is MISSING else ("__pregel_push", task.name)
    return StateTask(
        id=task.id,
        name=task.name,
        path=path,
        error=task.error,
        interrupts=tuple(task.interrupts[len(task.answers) :]) if not task.done else (),
        state=None,
        result=dict(task.writes) if task.done else None,
    )


def _triggers(task: Task) -> tuple[str, ...]:
    """What made a task run, as LangGraph names it: its node's edges, or a ``Send``."""
    return (f"branch:to:{task.name}",) if task.arg is MISSING else ("__pregel_push",)


# ---------------------------------------------------------------------- drivers


class _RunBase:
    """What the sync and async drivers share: start-up decisions and events."""

    def __init__(
        self,
        graph: CompiledStateGraph,
        core: RunCore,
        input: Any,
        config: RunnableConfig,
        opts: _Options,
        saver: BaseCheckpointSaver | None,
        child: _Child | None,
    ) -> None:
        self.graph = graph
        self.core = core
        self.input = input
        self.config = config
        self.opts = opts
        self.saver = saver
        self.child = child
        self.result: Any = None
        self.events: queue.SimpleQueue[tuple[tuple[str, ...], str, Any]] = queue.SimpleQueue()
        # Events carry the namespace LangGraph gives them (``node:task_id`` per level), with
        # or without a checkpointer.
        ns = child.ns if child is not None and child.ns else core.ns
        self.ns: tuple[str, ...] = tuple(ns.split("|")) if ns else ()
        keeps = saver is not None and core.thread_id is not None
        self.lease: RunLease | None = None
        if saver is not None and core.thread_id is not None and child is None:
            self.lease = RunLease(saver, core.thread_id, config)
        self.link: ParentLink | None = ParentLink(
            saver=saver if keeps else None,
            thread_id=core.thread_id if keeps else None,
            ns=ns,
            durability=opts.durability,
            modes=opts.modes,
            subgraphs=opts.subgraphs,
            emit=self.emit_from,
            sink=self if keeps else None,
            lease=self._writer_lease() if keeps else None,
        )
        self.wants_tasks = "tasks" in opts.modes or "debug" in opts.modes
        if self.wants_tasks:
            self.link.task_event = self.task_chunk
        # Mode "updates": the tasks whose update, and the questions, that went out already
        # (see task_ended): the step's end, and the run's, do not send them again.
        self.announced: set[str] = set()
        self.asked: set[str] = set()
        # stream_mode="messages": one stream per top-level run, shared by the subgraphs that
        # forward their events; a subgraph that does not hides its model calls from it.
        self.messages: Any = None
        self.lc_mask = False
        inherited = child.link.messages if child is not None and child.link is not None else None
        if "messages" in opts.modes:
            if inherited is not None:
                self.messages = inherited
            else:
                from .messages import MessagesStream

                self.messages = MessagesStream(
                    lambda ns, payload: self.emit_from("messages", payload, ns)
                )
        elif inherited is not None:
            self.lc_mask = True
        self.link.messages = self.messages
        self.persister: Any = None  # set once the run started: @task results saved through it
        self.started_from: CheckpointTuple | None = None  # what begin() loaded
        self.save_lock = threading.Lock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.live = any(m in opts.modes for m in _LIVE_MODES)  # events while tasks run
        self.plain = self.messages is None and not self.lc_mask  # no LangChain config to set

    def emit(self, mode: str, chunk: Any) -> None:
        self.emit_from(mode, chunk, self.ns)

    def committed_config(self) -> RunnableConfig | None:
        """The config of the newest checkpoint this run committed, None if it committed none."""
        persister = self.persister
        if persister is None or not persister.stored:
            return None
        return make_config(persister.thread_id, persister.ns, persister.head)

    def emit_from(self, mode: str, chunk: Any, ns: tuple[str, ...]) -> None:
        """Queue an event of this run or, with ``subgraphs=True``, of a child run."""
        if self.child is not None and self.child.link is not None:
            if self.child.link.subgraphs:
                self.child.link.emit(mode, chunk, ns)
            return
        if mode in self.opts.modes:
            self.events.put((ns, mode, chunk))

    def drain(self) -> Iterator[Any]:
        while True:
            try:
                ns, mode, chunk = self.events.get_nowait()
            except queue.Empty:
                return
            yield self._shape(ns, mode, chunk)

    def _shape(self, ns: tuple[str, ...], mode: str, chunk: Any) -> Any:
        if self.opts.single:
            return (ns, chunk) if self.opts.subgraphs else chunk
        return (ns, mode, chunk) if self.opts.subgraphs else (mode, chunk)

    def begin(self, opened: Opened | None) -> None:
        """Decide how the run starts: new input, continue, or resume."""
        core = self.core
        loaded = None if opened is None else opened.loaded
        self.started_from = loaded
        core.load(loaded, is_head=True if opened is None else opened.is_head)
        inp = self.input
        if self.child is not None and loaded is not None and not self._new_invocation(loaded):
            # A rerun of the parent task: go on where the child stopped (or return its result).
            pending = {t.pending_interrupt.id for t in core.tasks if t.pending_interrupt}
            resume = self.child.resume
            inp = Command(resume=resume) if resume and set(resume) <= pending else None
        if isinstance(inp, Command) and inp.resume is not None:
            if loaded is None:
                raise EmptyInputError(
                    f"thread {core.thread_id!r} has no checkpoint: there is nothing to resume"
                )
            self.emit_start_checkpoint(loaded)
            if inp.update is not None:
                core.set_last_node(loaded.checkpoint.metadata.get(NODES) or [])
                core.apply_update(Command(update=inp.update), None)
            core.apply_resume(inp.resume)
            self.emit_start_values()
            core.start_resume()
            self.emit_restored()
        elif inp is None:
            if loaded is None:
                where = f"thread {core.thread_id!r}" if core.thread_id else "this graph"
                raise EmptyInputError(
                    f"invoke(None) continues a thread, but {where} has no checkpoint yet; start it"
                    " with an input, e.g. invoke({'messages': [...]}, config)"
                )
            self.emit_start_checkpoint(loaded)
            self.emit_start_values()
            core.start_resume()
            self.emit_restored()
        else:
            wants = self._wants_checkpoints()
            before = _values_out(self.graph.schema, core.values) if wants else MISSING
            core.start_input(inp)
            self.emit_checkpoints(inputs=before)  # the input checkpoint first, as LangGraph
            if "values" in self.opts.modes and self.graph._input_values:
                self.emit("values", self.graph._stream_values(core))
        self.emit_checkpoints()

    def _new_invocation(self, loaded: CheckpointTuple) -> bool:
        """A ``checkpointer=True`` child keeps its history across invocations: new input goes
        on from its head, unless the parent task is answering the child's pending interrupt
        or the child's run was cut short (its head still has tasks to run)."""
        if self.child is None or not self.child.persistent:
            return False
        if self.child.resume is not None or self.input is None:
            return False
        return not any(not t.done for t in self.core.tasks)

    def emit_checkpoints(self, *, inputs: Any = MISSING) -> None:
        """Queue a "checkpoints" (and "debug") event per checkpoint queued for saving.
        ``inputs``: the values before the input (None is a value: an entrypoint's on a new
        thread); then only the input checkpoint's event, which comes first."""
        if not self._wants_checkpoints():
            return
        for op in self.core.outbox:
            if not isinstance(op, SaveCheckpoint):
                continue
            if inputs is not MISSING:
                if op.before is not None:
                    self._checkpoint_event(op.before, inputs)
            else:
                self._checkpoint_event(op.draft, self.core.output())

    def _wants_checkpoints(self) -> bool:
        modes = self.opts.modes
        return ("checkpoints" in modes or "debug" in modes) and self.core.thread_id is not None

    def _checkpoint_event(self, d: CheckpointDraft, values: Any) -> None:
        assert self.core.thread_id is not None
        thread_id, ns = self.core.thread_id, self.core.ns
        parent = None if d.parent_id is None else make_config(thread_id, ns, d.parent_id)
        tasks = [_state_task(Task.from_record(t)) for t in d.tasks]
        self._emit_checkpoint(
            make_config(thread_id, ns, d.id or ""), parent, values, d.metadata, tasks
        )

    def emit_start_checkpoint(self, loaded: CheckpointTuple) -> None:
        """A run that goes on from a saved checkpoint (resume, continue, replay) reports it
        first, with its tasks' questions, as LangGraph does."""
        if not self._wants_checkpoints():
            return
        assert self.core.thread_id is not None
        snapshot = _snapshot_of(self.graph.schema, loaded, self.core.thread_id, self.core.ns)
        meta = dict(snapshot.metadata or {})
        self._emit_checkpoint(
            snapshot.config, snapshot.parent_config, snapshot.values, meta, snapshot.tasks
        )

    def _emit_checkpoint(
        self,
        config: RunnableConfig,
        parent: RunnableConfig | None,
        values: Any,
        metadata: dict[str, Any],
        tasks: Sequence[StateTask],
    ) -> None:
        payload = {
            "config": config,
            "parent_config": parent,
            "values": values,
            "metadata": metadata,
            "next": [t.name for t in tasks],
            "tasks": [checkpoint_task(t, self._subgraph_config(t.name, t.id)) for t in tasks],
        }
        self.emit("checkpoints", payload)
        step = metadata.get("step")
        self.emit("debug", debug_event("checkpoint", step if isinstance(step, int) else 0, payload))

    def _subgraph_config(self, name: str, task_id: str) -> RunnableConfig | None:
        """Where the subgraph a task runs saves (LangGraph's ``state`` of a task), or None."""
        node = self.graph.spec.nodes.get(name)
        if node is None or node.subgraph is None or self.core.thread_id is None:
            return None
        part = name if node.subgraph.checkpointer is True else f"{name}:{task_id}"
        ns = f"{self.core.ns}|{part}" if self.core.ns else part
        return {"configurable": {"thread_id": self.core.thread_id, "checkpoint_ns": ns}}

    def emit_start_values(self) -> None:
        """A run that goes on from a checkpoint (resume, continue) first shows its state in
        ``stream_mode="values"`` (a resume's ``update`` applied), as LangGraph does."""
        if "values" in self.opts.modes:
            self.emit("values", self.graph._stream_values(self.core))

    def emit_restored(self) -> None:
        """The tasks of the step a run goes on with that had finished before (their writes
        were saved): their updates come first, marked cached, as LangGraph marks them."""
        if "updates" not in self.opts.modes:
            return
        for t in self.core.tasks:
            if t.done:
                chunk = self.graph._update_of(t)
                chunk.setdefault("__metadata__", {"cached": True})
                self.emit("updates", chunk)
                self.announced.add(t.id)  # not again at the step's end

    def step_events(self) -> None:
        core = self.core
        if not core.finished_tasks and (core.interrupted or core.failed_task() is not None):
            # A step that paused (a task asked a question) or failed, its writes not applied:
            # the updates of its tasks that finished and, per question, the question with the
            # state as it was before the step, in the order the tasks ended, as LangGraph.
            for t in core.ended:
                self.update_event(t)
        else:
            for t in core.finished_tasks:
                self.update_event(t)
            if "values" in self.opts.modes and self.graph._shows_step(core):
                self.emit("values", self.graph._stream_values(core))
        self.announced.clear()
        self.emit_checkpoints()

    def task_config(self, task: Task) -> RunnableConfig:
        configurable = dict(self.config.get("configurable") or {})
        configurable["checkpoint_id"] = self.core.checkpoint_id
        configurable["task_id"] = task.id
        config = {**self.config, "configurable": configurable}
        if self.messages is not None:
            config = self.messages.task_config(config, self.task_meta(task))
        elif self.lc_mask:
            from .messages import without_handlers

            config = without_handlers(config)
        return config

    def task_meta(self, task: Task) -> dict[str, Any]:
        """Where a task runs, as LangGraph tells a task's model calls."""
        from .messages import task_metadata

        pull = task.arg is MISSING
        return task_metadata(
            task.name,
            self.core.step + 1,
            _triggers(task),
            ("__pregel_pull" if pull else "__pregel_push", task.name),
            "|".join((*self.ns, f"{task.name}:{task.id}")),
        )

    def task_call(self, task: Task) -> tuple[Any, ...]:
        """``run_task`` and its arguments, run under the task's LangChain config if needed."""
        config = self.task_config(task)
        call = (run_task, self.core, task, config, self.emit, self.link)
        if self.plain:
            return call
        if self.messages is not None:
            self.messages.saw_input(self.core.values if task.arg is MISSING else task.arg)
        return (_with_lc_config, config, *call)

    def atask_call(self, task: Task) -> Coroutine[Any, Any, None]:
        """Async :meth:`task_call`: the coroutine that runs the task."""
        config = self.task_config(task)
        coro = arun_task(self.core, task, config, self.emit, self.link)
        if self.plain:
            return coro
        if self.messages is not None:
            self.messages.saw_input(self.core.values if task.arg is MISSING else task.arg)
        return _awith_lc_config(config, coro)

    def after_task(self, task: Task) -> None:
        if self.messages is not None and task.done:  # stream_mode="messages" only
            self.messages.node_output(task.writes, self.task_meta(task))

    def task_event(self, kind: str, task: Task) -> None:
        """A task starts (``kind`` "task") or ended ("task_result"): modes tasks and debug."""
        if not self.wants_tasks:
            return
        if kind == "task":
            payload = self.graph._task_start(task, self.core.task_input(task), self.config)
        else:
            payload = self.graph._task_result(task)
        self.task_chunk(kind, payload)

    def task_chunk(self, kind: str, payload: dict[str, Any]) -> None:
        """A task's chunk for modes tasks and debug (also a ``@task`` call's, from any
        thread: the queue is thread-safe, and the step does not move while calls run)."""
        self.emit("tasks", payload)
        if "debug" in self.opts.modes:
            self.emit("debug", debug_event(kind, self.core.step + 1, payload))

    def task_ended(self, task: Task) -> None:
        """A task of this run ended. Streaming tasks/debug, its update (or its question) goes
        out now, right before its result, as LangGraph sends them; else at the step's end."""
        if self.wants_tasks:
            self.update_event(task)
            self.task_event("task_result", task)

    def update_event(self, task: Task) -> None:
        """What ``task`` wrote (mode "updates"), or the question it asks (mode "updates", and
        in mode "values" the state as it was before the step with the question under
        ``__interrupt__``, as LangGraph sends them), unless already sent."""
        modes = self.opts.modes
        asked = task.pending_interrupt
        if task.done:
            if "updates" in modes and task.id not in self.announced:
                self.emit("updates", self.graph._update_of(task))
                self.announced.add(task.id)
        elif asked is not None and task.error is None and asked.id not in self.asked:
            self.asked.add(asked.id)
            if "updates" in modes:
                self.emit("updates", {"__interrupt__": (asked,)})
            if "values" in modes:
                self.emit("values", self.graph._interrupt_values(self.core, (asked,)))

    def end_events(self) -> None:
        """A paused run ends with the state its finished tasks would make (their writes are
        saved, not applied yet), then with the questions not sent with their tasks or, paused
        by interrupt_before/after, an empty question."""
        core = self.core
        if not core.interrupted or self.child is not None:
            return  # a subgraph's pause ends its parent's step: the parent reports it
        done = [t for t in core.tasks if t.done] if not core.finished_tasks else []
        if done and "values" in self.opts.modes:
            values = core.output_with(done, every=self.graph._every_key)
            if values is not None:
                self.emit("values", values)
        left = tuple(i for i in core.interrupts if i.id not in self.asked)
        if left:
            self.emit("updates", {"__interrupt__": left})
        elif not core.interrupts:
            self.emit("updates", {"__interrupt__": ()})  # paused by interrupt_before/after

    def raise_failure(self) -> None:
        task = self.core.failed_task()
        if task is None or task.error is None:
            return
        exc = task.error
        where = (
            f"thread {self.core.thread_id!r}, checkpoint {self.core.checkpoint_id}"
            if self.core.thread_id
            else "no checkpointer, nothing saved"
        )
        if is_invalid_resume(exc):
            note = (
                f"threadline: node {task.name!r} got an answer that does not match its"
                f" interrupt's response_schema ({where}). The answer was not kept: the thread"
                " is still paused there; answer again with Command(resume=...)."
            )
        else:
            note = (
                f"threadline: node {task.name!r} failed ({where}). Fix the cause (update_state"
                " can fix the input), then resume with invoke(None, config)."
            )
        if hasattr(exc, "add_note"):
            exc.add_note(note)
        else:  # Python 3.10
            exc.__notes__ = [*getattr(exc, "__notes__", []), note]  # type: ignore[attr-defined]
        raise exc

    def finish(self) -> None:
        core = self.core
        if self.child is not None and (core.interrupts or core.interrupted):
            # Paused by interrupt() or by interrupt_before/after: the parent task pauses too.
            raise GraphInterrupt(list(core.interrupts))
        self.result = self.graph._result(core)

    def persister_args(self, opened: Opened | None) -> tuple[Any, ...]:
        core = self.core
        loaded = None if opened is None else opened.loaded
        meta = self.config.get("metadata")
        return (
            self.saver,
            core.thread_id,
            core.ns,
            None if opened is None else opened.head,
            {} if loaded is None else loaded.checkpoint.refs,
            dict(meta) if isinstance(meta, Mapping) else None,
            self._writer_lease(),
            self.lease is not None,
        )

    def _writer_lease(self) -> Any:
        """The lease this run writes under: its own, or its parent run's."""
        if self.lease is not None:
            return self.lease.lease
        link = None if self.child is None else self.child.link
        return None if link is None else link.lease

    def lease_first(self) -> Procedure[None]:
        """Before the run opens its thread: take the lease with a round trip of its own, unless
        its first commit (the input checkpoint, before any node runs) can take it. Then, for
        input sent with an idempotency key, skip the input if it already landed."""
        if self.lease is None:
            return
        key = idempotency_key(self.config)
        if not self.optimistic() or key is not None:
            yield from self.lease.acquire()
        thread_id = self.core.thread_id
        if key is not None and thread_id is not None:
            landed = yield from input_landed(thread_id, self.core.ns, key)
            if landed:
                self.input = None  # continue the thread from where that run got

    def retry_start(self, exc: CheckpointConflictError, opened: Opened | None) -> Procedure[bool]:
        """After the first commit failed: whether to start over from a fresh read.

        A busy thread: wait for the lease (or raise, per ``on_busy``), then start over. A
        moved head: start over if the run started from a cached head, or now holds the lease
        (which it took in that commit: the thread cannot move again under it).
        """
        lease = self.lease
        if isinstance(exc, ThreadBusyError) and lease is not None and not lease.lease.held:
            yield from lease.acquire()
            return True
        if type(exc) is not CheckpointConflictError:
            return False
        held = lease is not None and lease.lease.held and not self._retried
        self._retried = self._retried or held
        return held or (opened is not None and opened.cached)

    def open(self, optimistic: bool) -> Procedure[Opened | None]:
        core = self.core
        if core.thread_id is None:
            return None
        _, _, checkpoint_id = parse_config(self.config)
        opened: Opened = yield from open_thread(
            core.thread_id,
            core.ns,
            checkpoint_id,
            optimistic=optimistic,
            replay=self.input is None,
        )
        return opened

    def optimistic(self) -> bool:
        """Whether to start from the head this process last saved without reading it back.

        Only for new input with sync durability: the input checkpoint is then saved, by
        compare-and-swap, before any node runs, so a stale head costs a restart, nothing else.
        """
        return (
            self.child is None
            and self.opts.durability == "sync"
            and self.input is not None
            and not isinstance(self.input, Command)
        )

    _retried = False

    def restart(self) -> None:
        """Forget everything begun: the cached head this run started from was stale."""
        self.core, self.config = self.graph._core(self.config, self.opts, self.saver)
        self.events = queue.SimpleQueue()


class _SyncRun(_RunBase):
    def __iter__(self) -> Iterator[Any]:
        try:
            persister = self._start()
        except BaseException:
            if self.lease is not None:
                self.lease.end()
            raise
        try:
            yield from self.drain()
            while True:
                todo = self.core.runnable()
                self._save(persister)
                if not todo and not self.core.step_complete():
                    break
                yield from self._execute(todo, persister)
                self.core.finish_step()
                self.step_events()
                self._save(persister)
                yield from self.drain()
                self.raise_failure()
            self.core.finish_run()
            self._save(persister)
            self.end_events()
            yield from self.drain()
        finally:
            try:
                if persister is not None:
                    persister.close()
            finally:
                if self.lease is not None:
                    self.lease.end()
        self.finish()

    def _start(self) -> Persister | None:
        """Open the thread, begin the run and save its first checkpoint."""
        saver = self.saver
        if saver is None:
            self.begin(None)
            self._save(None)
            return None
        drive(self.lease_first(), saver)
        optimistic = self.optimistic()
        while True:
            opened = drive(self.open(optimistic), saver)
            self.begin(opened)
            persister = Persister(
                *self.persister_args(opened), background=self.opts.durability == "async"
            )
            try:
                self._save(persister)
                if self.lease is not None:
                    self.lease.started()
                self.persister = persister
                return persister
            except CheckpointConflictError as exc:
                persister.close()
                if not drive(self.retry_start(exc, opened), saver):
                    raise
                self.restart()
                optimistic = False
            except BaseException:
                persister.close()
                raise

    def _save(self, persister: Persister | None) -> None:
        with self.save_lock:  # @task calls save from their threads too
            ops = self.core.take_outbox()
            if persister is not None:
                persister.submit(ops)

    def save_call(self, task: Task, key: str, value: Any) -> None:
        """A ``@task`` call of ``task`` finished (on any thread): save its result now."""
        self.core.record_call(task, key, value)
        self._save(self.persister)

    def _execute(self, todo: list[Task], persister: Persister | None) -> Iterator[Any]:
        if not todo:
            return
        alone = len(todo) == 1 and len(self.core.tasks) == 1
        if alone and not self.live:
            task = todo[0]
            if self.plain:
                run_task(self.core, task, self.task_config(task), self.emit, self.link)
            else:
                fn, *args = self.task_call(task)
                fn(*args)
            self.after_task(task)
            self.core.finish_task(task, alone=True)
            self._save(persister)
            return
        # A step of a run nested in one of our workers (a subgraph called by a parallel task)
        # gets workers of its own: queueing behind its parent on the shared pool can deadlock.
        nested = threading.current_thread().name.startswith(_POOL_PREFIX)
        pool = _nested_pool(len(todo)) if nested else _POOL
        futures = {}
        for task in todo:
            self.task_event("task", task)
            futures[pool.submit(_in_context, *self.task_call(task))] = task
        pending = set(futures)
        try:
            while pending:
                done, pending = concurrent.futures.wait(
                    pending, timeout=0.05, return_when=concurrent.futures.FIRST_COMPLETED
                )
                for f in done:
                    f.result()
                    task = futures[f]
                    self.after_task(task)
                    self.core.finish_task(task, alone=alone)
                    self.task_ended(task)
                    self._save(persister)
                yield from self.drain()
        finally:
            if pool is not _POOL:
                pool.shutdown(wait=False)


def _in_context(fn: Any, *args: Any) -> Any:
    import contextvars

    return contextvars.copy_context().run(fn, *args)


# Modes whose events arrive while tasks run: the driver then polls instead of waiting.
_LIVE_MODES = ("custom", "tasks", "debug", "messages")


def _with_lc_config(config: RunnableConfig, fn: Any, *args: Any) -> Any:
    """Run ``fn`` with ``config`` as LangChain's current config (see runtime/messages.py)."""
    from .messages import enter_config, leave_config

    token = enter_config(config)
    try:
        return fn(*args)
    finally:
        leave_config(token)


async def _awith_lc_config(config: RunnableConfig, coro: Coroutine[Any, Any, None]) -> None:
    from .messages import enter_config, leave_config

    token = enter_config(config)
    try:
        await coro
    finally:
        leave_config(token)


class _AsyncRun(_RunBase):
    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def left_state(self) -> StateSnapshot | None:
        """The snapshot of the newest checkpoint this run committed, None if it committed none.

        Read from the saver's own record of its last commit when that is it (a run that ended
        without tasks), else by id: never as "the head", which a later run may have moved and
        which would tell the saver nobody else writes the thread."""
        persister = self.persister
        if persister is None or not persister.stored or self.saver is None:
            return None
        thread_id, ns, checkpoint_id = persister.thread_id, persister.ns, persister.head
        found = await self.saver.acached_head(thread_id, ns, checkpoint_id=checkpoint_id)
        if found is None:
            found = await self.saver.aload(
                thread_id, ns, checkpoint_id, shared=True, task_writes_only=True
            )
        return _snapshot_of(self.graph.schema, found, thread_id, ns)

    async def _iterate(self) -> AsyncIterator[Any]:
        try:
            persister = await self._start()
        except BaseException:
            if self.lease is not None:
                await self.lease.aend()
            raise
        try:
            for chunk in self.drain():
                yield chunk
            while True:
                todo = self.core.runnable()
                await self._save(persister)
                if not todo and not self.core.step_complete():
                    break
                async for chunk in self._execute(todo, persister):
                    yield chunk
                self.core.finish_step()
                self.step_events()
                await self._save(persister)
                for chunk in self.drain():
                    yield chunk
                self.raise_failure()
            self.core.finish_run()
            await self._save(persister)
            self.end_events()
            for chunk in self.drain():
                yield chunk
        finally:
            try:
                if persister is not None:
                    await persister.close()
            finally:
                if self.lease is not None:
                    await self.lease.aend()
        self.finish()

    async def _start(self) -> AsyncPersister | None:
        """Open the thread, begin the run and save its first checkpoint."""
        saver = self.saver
        if saver is None:
            self.begin(None)
            await self._save(None)
            return None
        await adrive(self.lease_first(), saver)
        optimistic = self.optimistic()
        while True:
            opened = await adrive(self.open(optimistic), saver)
            self.begin(opened)
            persister = AsyncPersister(
                *self.persister_args(opened), background=self.opts.durability == "async"
            )
            try:
                await self._save(persister)
                if self.lease is not None:
                    self.lease.astarted()
                self.persister, self.loop = persister, asyncio.get_running_loop()
                return persister
            except CheckpointConflictError as exc:
                await persister.close()
                if not await adrive(self.retry_start(exc, opened), saver):
                    raise
                self.restart()
                optimistic = False
            except BaseException:
                await persister.close()
                raise

    async def _save(self, persister: AsyncPersister | None) -> None:
        ops = self.core.take_outbox()
        if persister is not None:
            await persister.submit(ops)

    async def asave_call(self, task: Task, key: str, value: Any) -> None:
        """A ``@task`` call of ``task`` finished: save its result now."""
        self.core.record_call(task, key, value)
        await self._save(self.persister)

    def save_call(self, task: Task, key: str, value: Any) -> None:
        """:meth:`asave_call` from a worker thread (a sync node run by ``ainvoke``)."""
        assert self.loop is not None  # set when the run started, before any node ran
        asyncio.run_coroutine_threadsafe(self.asave_call(task, key, value), self.loop).result()

    async def _execute(
        self, todo: list[Task], persister: AsyncPersister | None
    ) -> AsyncIterator[Any]:
        if not todo:
            return
        alone = len(todo) == 1 and len(self.core.tasks) == 1
        if alone and not self.live:  # one task: await it here, no task object or polling
            task = todo[0]
            await self.atask_call(task)
            self.after_task(task)
            self.core.finish_task(task, alone=True)
            await self._save(persister)
            return
        running: dict[asyncio.Task[None], Task] = {}
        for task in todo:
            self.task_event("task", task)
            running[asyncio.ensure_future(self.atask_call(task))] = task
        pending: set[asyncio.Task[None]] = set(running)
        try:
            while pending:
                done, pending = await asyncio.wait(
                    pending, timeout=0.05, return_when=asyncio.FIRST_COMPLETED
                )
                for f in done:
                    f.result()
                    task = running[f]
                    self.after_task(task)
                    self.core.finish_task(task, alone=alone)
                    self.task_ended(task)
                    await self._save(persister)
                for chunk in self.drain():
                    yield chunk
        except BaseException:  # a task routed the parent graph, or the run was cancelled
            for f in pending:
                f.cancel()
            raise
