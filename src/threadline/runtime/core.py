"""The superstep algorithm, written once and free of I/O.

The core decides which tasks run, turns their results into state through the reducers, keeps
track of what changed since the last save (so appends become deltas), and queues save
operations. The sync and async drivers run the tasks and carry out the saves.
"""

from __future__ import annotations

import dataclasses
import itertools
import operator
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._copy import private_copy
from ..checkpoint.types import (
    ChannelChange,
    CheckpointDraft,
    CheckpointTuple,
    PendingWrite,
    RunnableConfig,
    make_config,
    new_checkpoint_id,
)
from ..errors import (
    ErrorCode,
    GraphRecursionError,
    InvalidUpdateError,
    ParentCommand,
    ReducerTypeError,
    ThreadlineError,
    create_error_message,
    invalid_resume_id,
)
from ..graph.schema import StateSchema, managed_value
from ..graph.spec import END, START, GraphSpec, NodeSpec
from ..types import Command, Interrupt, Overwrite, Send
from .context import NO_SCOPE, RunScope
from .stored_format import (  # the stored format's names, documented there
    CALL,
    DEFERRED,
    ERROR,
    INTERRUPT,
    JOINS,
    NODES,
    PAUSED,
    PAUSED_BEFORE,
    RESERVED,
    RESULT,
    RESUME,
)

MISSING: Any = object()


@dataclass
class Task:
    """One node invocation of a superstep, and what became of it."""

    id: str
    name: str
    arg: Any = MISSING  # the Send argument; MISSING for a node triggered by edges
    done: bool = False
    writes: list[tuple[str, Any]] = field(default_factory=list)
    routes: list[Any] = field(default_factory=list)
    error: BaseException | None = None
    interrupts: list[Interrupt] = field(default_factory=list)
    answers: list[Any] = field(default_factory=list)
    write_count: int = 0  # pending writes already stored for this task (next free idx)
    paused: bool = False  # a subgraph it ran paused without a question (interrupt_before/after)
    calls: dict[str, Any] = field(default_factory=dict)  # finished @task calls, by call key
    cached: bool = False  # its writes came from the cache (marked so in "updates")

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "name": self.name}
        if self.arg is not MISSING:
            out["arg"] = self.arg
        return out

    @classmethod
    def from_record(cls, data: Mapping[str, Any]) -> Task:
        return cls(id=data["id"], name=data["name"], arg=data.get("arg", MISSING))

    @property
    def pending_interrupt(self) -> Interrupt | None:
        if self.done or not self.interrupts:
            return None
        latest = self.interrupts[-1]
        return latest if len(self.answers) < len(self.interrupts) else None


@dataclass
class SaveCheckpoint:
    draft: CheckpointDraft
    thread_metadata: dict[str, Any] | None = None
    # The input checkpoint, committed with ``draft`` (step 0) in one transaction.
    before: CheckpointDraft | None = None


@dataclass
class SaveWrites:
    checkpoint_id: str
    task_id: str
    writes: list[tuple[str, Any]]
    first_idx: int


SaveOp = SaveCheckpoint | SaveWrites


def tasks_of(loaded: CheckpointTuple, *, with_writes: bool = True) -> tuple[list[Task], bool]:
    """The tasks a checkpoint says run next, with what their pending writes tell.

    Returns the tasks and whether the run was paused before them (``interrupt_before``).
    """
    tasks = [Task.from_record(r) for r in loaded.checkpoint.tasks]
    if not with_writes:
        return tasks, False
    by_id = {t.id: t for t in tasks}
    paused = False
    for w in loaded.pending_writes:
        if w.task_id == PAUSED:
            paused = True
            continue
        task = by_id.get(w.task_id)
        if task is None:
            owner, dot, key = w.task_id.partition(".")
            if dot and w.channel == CALL and owner in by_id:
                by_id[owner].calls[key] = w.value
            continue
        task.write_count = max(task.write_count, w.idx + 1)
        _apply_pending(task, w)
    return tasks, paused


def _error_write(task: Task) -> tuple[str, Any]:
    """The pending write that records ``task``'s error (read back by :func:`_apply_pending`)."""
    return (ERROR, {"type": type(task.error).__name__, "message": str(task.error)})


def _apply_pending(task: Task, w: PendingWrite) -> None:
    if w.channel == RESULT:
        task.done = True
        task.writes = [(k, v) for k, v in w.value["writes"]]
        task.routes = list(w.value["routes"])
        task.error = None
    elif w.channel == ERROR:
        task.error = TaskError(w.value.get("type", "Exception"), w.value.get("message", ""))
    elif w.channel == INTERRUPT:
        task.interrupts = list(w.value)
        task.error = None  # paused since (an ERROR written with it comes after it)
    elif w.channel == RESUME:
        task.answers = list(w.value)


class TaskError(Exception):
    """A stored task error, as ``get_state`` reports it."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


class RunCore:
    """Runs one invocation of a graph on one thread, step by step, without doing I/O."""

    def __init__(
        self,
        *,
        spec: GraphSpec,
        schema: StateSchema,
        config: RunnableConfig,
        thread_id: str | None,
        ns: str,
        interrupt_before: Sequence[str],
        interrupt_after: Sequence[str],
        recursion_limit: int,
        durability: str,
        checkpointing: bool,
        in_parent: bool = False,
        run_scope: RunScope = NO_SCOPE,
    ) -> None:
        self.spec = spec
        self.schema = schema
        self.config = config
        self.thread_id = thread_id
        self.ns = ns
        self.interrupt_before = set(interrupt_before)
        self.interrupt_after = set(interrupt_after)
        self.recursion_limit = recursion_limit
        self.durability = durability
        self.checkpointing = checkpointing
        self.in_parent = in_parent  # runs inside another graph's task: may route it
        self.run_scope = run_scope  # the run's context, store and cache, for every task
        self.values: dict[str, Any] = {}
        self.owned: set[str] = set()  # channels whose value this run built (safe to mutate)
        self.dirty: dict[str, list[Any] | None] = {}
        self.checkpoint_id: str | None = None  # the checkpoint the current tasks belong to
        self.saved_id: str | None = None  # the last checkpoint queued for saving
        self.step = -1
        self.start_step = 0
        self.tasks: list[Task] = []
        self.paused_here = False
        self.outbox: list[SaveOp] = []
        self.interrupted = False
        self.interrupts: list[Interrupt] = []
        self.finished_tasks: list[Task] = []
        self.ended: list[Task] = []  # the tasks of the current step in the order they ended
        self._ran_last: list[str] = []  # nodes of the step before (update_state's default)
        self._node_order = {name: i for i, name in enumerate(spec.nodes)}
        self._fill_empty()

    def _fill_empty(self) -> None:
        """Reducer keys never written read as the reducer's empty value (not stored)."""
        for key in self.schema.empty_keys:
            if key not in self.values:
                self.values[key] = self.schema.initial(key)
                self.owned.add(key)

    # ------------------------------------------------------------------ starting

    def load(self, loaded: CheckpointTuple | None, *, is_head: bool) -> None:
        """Take the state and tasks of the checkpoint the run starts from."""
        if loaded is None:
            return
        c = loaded.checkpoint
        self.values = dict(c.values)
        self._fill_empty()
        self.checkpoint_id = self.saved_id = c.id
        self.step = c.step
        # Pending writes belong to the head: replaying an older checkpoint reruns its tasks.
        self.tasks, self.paused_here = tasks_of(loaded, with_writes=is_head)

    def start_input(self, value: Any) -> None:
        """A new input: write it as the caller's update and schedule the entry nodes."""
        if isinstance(value, Command):
            updates = self._command_updates(value, who="the input Command")
            gotos = _as_targets(value.goto)
        else:
            updates = self._input_updates(value)
            gotos = []
        # As LangGraph: first the input checkpoint (the values before the input, and a
        # ``__start__`` task to apply it), then step 0 with the input applied. The input itself
        # is not stored twice: step 0's channel versions hold it. Both commit together.
        self.step = self.step + 1 if self.saved_id is not None else -1
        if not self.spec.input_step:
            self.start_step = self.step + 1
            self._apply([(START, list(updates.items()))])
            self._route_from_start(gotos, remaining=self.recursion_limit)
            self._checkpoint("input", [])
            return
        if self.checkpointing:
            self.tasks = [Task(id=uuid.uuid4().hex, name=START)]
            self._checkpoint("input", [])
        self.step += 1
        self.start_step = self.step + 1
        self._apply([(START, list(updates.items()))])
        # As LangGraph: a router at START sees the whole recursion limit left.
        self._route_from_start(gotos, remaining=self.recursion_limit)
        self._checkpoint("loop", [])
        if self.checkpointing and self.durability != "exit":
            step0 = self.outbox.pop()
            first = self.outbox.pop()
            assert isinstance(step0, SaveCheckpoint) and isinstance(first, SaveCheckpoint)
            step0.before = first.draft
            self.outbox.append(step0)

    def _route_from_start(self, gotos: list[Any], remaining: int | None = None) -> None:
        routes = [*self.spec.edges.get(START, []), *gotos]
        routes += self._route_branches(START, self.values, remaining)
        self.tasks = self._make_tasks([(START, routes)])
        self.paused_here = False

    def _input_updates(self, value: Any) -> dict[str, Any]:
        """The input's writes: the input schema's keys, validated by it (pydantic)."""
        inp = self.schema.input_schema
        if inp is self.schema or isinstance(value, Mapping) or value is None:
            updates = self.schema.updates_from(value, who="input")
        else:
            updates = inp.updates_from(value, who="input")
        if inp is not self.schema:
            updates = {k: v for k, v in updates.items() if k in inp.channels}
        return inp.validate_input(updates, self.values)

    def start_resume(self) -> None:
        if any(t.name == START for t in self.tasks):
            # Continuing from an input checkpoint (time travel to it): its input is not
            # stored apart from the step that applied it, so the graph starts over from START
            # on the values as they were before that input.
            self.step += 1
            self._route_from_start([])
            self._checkpoint("loop", [])
        # LangGraph counts a continued run's steps from two further on than a run with input:
        # its first task sees recursion_limit + 1 remaining, and it may take two more steps.
        self.start_step = self.step + 3

    def apply_resume(self, resume: Any) -> None:
        """Match ``Command(resume=...)`` answers to the pending interrupts."""
        pending = {t.pending_interrupt.id: t for t in self.tasks if t.pending_interrupt}
        if not pending:
            raise ThreadlineError(
                f"thread {self.thread_id!r} is not paused at an interrupt: nothing to resume."
                " Continue it with invoke(None, config), or start a new run with an input"
            )
        if isinstance(resume, Mapping) and resume and all(k in pending for k in resume):
            answers = dict(resume)
        elif (
            isinstance(resume, Mapping)
            and resume
            and any(isinstance(k, str) and len(k) == 32 for k in resume)
        ):
            unknown = [k for k in resume if k not in pending]
            raise ThreadlineError(
                f"thread {self.thread_id!r} has no pending interrupt with id"
                f" {', '.join(map(repr, unknown))}; pending: {', '.join(pending)}"
            )
        elif len(pending) == 1:
            answers = {next(iter(pending)): resume}
        else:
            raise ThreadlineError(
                f"thread {self.thread_id!r} has {len(pending)} pending interrupts"
                f" ({', '.join(pending)}); answer each with Command(resume={{id: answer, ...}})"
            )
        for interrupt_id, answer in answers.items():
            task = pending[interrupt_id]
            task.answers = [*task.answers, answer]
            self._queue_writes(task, [(RESUME, task.answers)])

    # ------------------------------------------------------------------ stepping

    def runnable(self) -> list[Task]:
        """The tasks to run now; empty when the run is over or paused."""
        if self.interrupted:
            return []
        todo = [t for t in self.tasks if not t.done]
        if not todo:
            return []
        if not self.paused_here and self._hits(self.interrupt_before, todo):
            self.paused_here = True
            self.interrupted = True
            if self.checkpoint_id is not None and self.checkpointing:
                names = sorted({t.name for t in todo})
                self.outbox.append(
                    SaveWrites(self.checkpoint_id, PAUSED, [(PAUSED_BEFORE, names)], 0)
                )
            return []
        if self.step + 1 - self.start_step >= self.recursion_limit:
            raise GraphRecursionError(  # LangGraph's wording, which programs print and match
                create_error_message(
                    message=f"Recursion limit of {self.recursion_limit} reached without hitting a"
                    f" stop condition (thread {self.thread_id!r}). You can increase the limit by"
                    " setting the `recursion_limit` config key, e.g. {'recursion_limit': 100,"
                    " 'configurable': ...}",
                    error_code=ErrorCode.GRAPH_RECURSION_LIMIT,
                )
            )
        for t in todo:
            self._check_view(t)
        for t in todo:
            t.error = None
        self.ended = []
        return todo

    def _check_view(self, task: Task) -> None:
        """A pydantic state missing required fields fails before its node runs, with pydantic's
        ``ValidationError``, as LangGraph fails building the node's input."""
        if task.arg is not MISSING:
            return
        own = self.spec.nodes[task.name].input_schema
        (own or self.schema).check_complete(self.values)

    @staticmethod
    def _hits(names: set[str], tasks: Sequence[Task]) -> bool:
        return bool(names) and ("*" in names or any(t.name in names for t in tasks))

    def task_input(self, task: Task) -> Any:
        if task.arg is not MISSING:
            return private_copy(task.arg)
        own = self.spec.nodes[task.name].input_schema
        if own is not None:
            return own.view(self.values, self._managed_values())
        if self.schema.managed:
            return self.schema.node_input({**self.values, **self._managed_values()})
        return self.schema.node_input(self.values)

    def _managed_values(self, remaining: int | None = None) -> dict[str, Any]:
        """``RemainingSteps`` / ``IsLastStep`` keys as the step about to run sees them, or
        with ``remaining`` given (a router outside a step)."""
        if not self.schema.managed:
            return {}
        if remaining is None:  # a run's first step has recursion_limit - 1 left
            remaining = self.recursion_limit - 2 - self.step + self.start_step
        return {k: managed_value(m, remaining) for k, m in self.schema.managed.items()}

    def node_result(self, task: Task, node: NodeSpec, returned: Any, node_input: Any) -> None:
        """Record a node's return value as the task's writes and explicit routes."""
        writes: dict[str, Any]
        gotos: list[Any] = []
        if isinstance(returned, list) and any(isinstance(r, Command) for r in returned):
            # Several Commands and updates from one node (a ToolNode whose tools returned
            # Commands): applied together, as LangGraph applies them.
            pairs: list[tuple[str, Any]] = []
            for part in returned:
                if isinstance(part, Command) and part.graph == Command.PARENT:
                    self.node_result(task, node, part, node_input)  # raises ParentCommand
                if isinstance(part, Command):
                    pairs += self._command_updates(part, who=f"node {task.name!r}").items()
                    gotos += _as_targets(part.goto)
                elif part is not None:
                    pairs += self.schema.updates_from(part, who=f"node {task.name!r}").items()
            task.writes = pairs
            task.routes = gotos
            return
        if isinstance(returned, Command):
            if returned.graph == Command.PARENT:
                if not self.in_parent:
                    raise InvalidUpdateError(
                        f"node {task.name!r} returned Command(graph=Command.PARENT), but its"
                        " graph is not running inside another graph's node; return"
                        " Command(goto=...) to route this graph"
                    )
                raise ParentCommand(dataclasses.replace(returned, graph=None))
            writes = self._command_updates(returned, who=f"node {task.name!r}")
            gotos = _as_targets(returned.goto)
        elif self.schema.kind in ("pydantic", "dataclass") and isinstance(
            returned, self.schema.schema
        ):
            # Compare with the state the node was given, as it was before the node ran: a
            # node may mutate its input and return it, so ``node_input`` is no baseline.
            prior: Mapping[str, Any]
            if task.arg is MISSING:
                prior = self.values
            elif isinstance(task.arg, self.schema.schema):
                prior = _fields_of(task.arg)
            else:
                prior = {}
            writes = self.schema.changed_fields(returned, prior)
        else:
            if node.subgraph is not None and self.schema.kind != "dict":
                # A subgraph's own keys stay in the subgraph.
                returned = {k: v for k, v in returned.items() if k in self.schema.channels}
            writes = self.schema.updates_from(returned, who=f"node {task.name!r}")
        task.writes = list(writes.items())
        task.routes = gotos

    def branch_view(self, task: Task) -> Any:
        """The state a router of ``task`` sees: the step's start plus the task's own writes."""
        view = dict(self.values)
        for key, value in task.writes:
            view[key] = self._reduce(key, view.get(key, MISSING), [value], shared_ok=False)
        if self.schema.managed:
            view.update(self._managed_values())
        return self.schema.node_input(view)

    def finish_task(self, task: Task, *, alone: bool) -> None:
        """A task ended (done, failed or interrupted): queue its pending writes if needed."""
        self.ended.append(task)
        if task.done:
            if not alone:
                value = {"writes": task.writes, "routes": task.routes}
                self._queue_writes(task, [(RESULT, value)])
        elif self._withdraw_answer(task):
            writes = [(RESUME, task.answers), (INTERRUPT, task.interrupts), _error_write(task)]
            self._queue_writes(task, writes)
        elif task.interrupts:
            self._queue_writes(task, [(INTERRUPT, task.interrupts)])
        elif task.error is not None:
            self._queue_writes(task, [_error_write(task)])

    @staticmethod
    def _withdraw_answer(task: Task) -> bool:
        """The task failed because an answer did not match its interrupt's response_schema:
        take the answer back (and the questions asked after it), so that the task is paused on
        that interrupt again, waiting for another answer. Its later writes record that."""
        rejected = invalid_resume_id(task.error)
        asked = [i.id for i in task.interrupts[: len(task.answers)]]
        if rejected is None or rejected not in asked:
            return False
        k = asked.index(rejected)
        task.answers = task.answers[:k]
        task.interrupts = task.interrupts[: k + 1]
        return True

    def record_call(self, task: Task, key: str, value: Any) -> None:
        """A ``@task`` called by ``task`` finished: keep its result, and queue it for saving
        (a pending write of its own id) so a rerun of ``task`` gets it back instead."""
        task.calls[key] = value
        if not self.checkpointing or self.checkpoint_id is None:
            return
        if self.durability == "exit" and self.checkpoint_id != self.saved_id:
            return  # _flush_exit writes it with the checkpoint
        self.outbox.append(_call_write(self.checkpoint_id, task, key, value))

    def finish_step(self) -> None:
        """All tasks of the step ended: apply their writes and queue the next checkpoint."""
        self.finished_tasks = []
        pending = [t for t in self.tasks if t.pending_interrupt is not None]
        if pending or any(t.paused and not t.done for t in self.tasks):
            self.interrupted = True
            self.interrupts = [t.pending_interrupt for t in pending if t.pending_interrupt]
            if self.durability == "exit":
                self._flush_exit()
            return
        failed = [t for t in self.tasks if t.error is not None]
        if failed:
            if self.durability == "exit":
                self._flush_exit()
            return
        finished = self.tasks
        self._apply([(t.name, t.writes) for t in finished])
        routes = []
        for t in finished:
            routes.append((t.name, [*self.spec.edges.get(t.name, []), *t.routes]))
        self._advance_joins(finished)
        joined = self._ready_joins()
        if joined:
            routes.append(("__join__", joined))
        self.step += 1
        self.finished_tasks = finished
        self.tasks = self._make_tasks(routes)
        self.paused_here = False
        self._checkpoint("loop", finished)
        if self._hits(self.interrupt_after, finished) and self.tasks:
            self.interrupted = True

    def step_complete(self) -> bool:
        """Every task of the current step finished (their results came from pending writes,
        e.g. after a crash right before the step's checkpoint): the step only needs applying."""
        return not self.interrupted and bool(self.tasks) and all(t.done for t in self.tasks)

    def failed_task(self) -> Task | None:
        return next((t for t in self.tasks if t.error is not None), None)

    def finish_run(self) -> None:
        """The run is over (completed or paused): make sure its last state gets saved."""
        if self.durability == "exit":
            self._flush_exit()

    def output(self) -> Any:
        return self._output_of(self.values)

    def _output_of(self, state: Mapping[str, Any]) -> Any:
        out = self.schema.output_schema
        if self.schema.kind == "dict" and out is self.schema:
            values = {k: v for k, v in state.items() if k not in RESERVED}
        else:
            values = {k: v for k, v in state.items() if k in out.fields}
        return out.output(values)

    def writes_output(self, tasks: Sequence[Task], *, every: bool = False) -> bool:
        """Whether ``tasks`` wrote a key the output shows (``every``: any key of the state),
        else a step shows no new state."""
        return bool(self._output_writes(tasks, every))

    def _output_writes(self, tasks: Sequence[Task], every: bool) -> dict[str, list[Any]]:
        out = self.schema.output_schema
        whole = every or (self.schema.kind == "dict" and out is self.schema)
        shown = None if whole else out.fields
        grouped: dict[str, list[Any]] = {}
        for t in tasks:
            for key, value in t.writes:
                if key in self.schema.channels and (shown is None or key in shown):
                    grouped.setdefault(key, []).append(value)
        return grouped

    def output_with(self, tasks: Sequence[Task], *, every: bool = False) -> Any:
        """The output as it would be with ``tasks``' writes applied, the state left as it is;
        None when they write nothing the output shows (a paused step's finished tasks).
        ``every``: every key of the state that has a value, not only the output's."""
        grouped = self._output_writes(tasks, every)
        if not grouped:
            return None
        state = dict(self.values)
        for key, updates in grouped.items():
            state[key] = self._reduce(key, self.values.get(key, MISSING), updates, shared_ok=False)
        if every:
            return {k: v for k, v in state.items() if k not in RESERVED}
        return self._output_of(state)

    # ------------------------------------------------------------------ update_state

    def apply_update(self, values: Any, as_node: str | None, *, source: str = "update") -> None:
        """Write ``values`` as if ``as_node`` had, and queue a checkpoint (``update_state``)."""
        if as_node is not None and as_node not in self.spec.nodes and as_node not in (START, END):
            raise InvalidUpdateError(
                f"as_node={as_node!r} is not a node of this graph;"
                f" nodes: {', '.join(self.spec.nodes)}"
            )
        updates = (
            self._command_updates(values, who="update_state")
            if isinstance(values, Command)
            else self.schema.updates_from(values, who="update_state")
        )
        keep_tasks = as_node is None and any(not t.done for t in self.tasks)
        # With pending tasks kept, the writer's name only labels the write: no need to pick
        # one of several nodes of the last step.
        writer = as_node or self._last_node(strict=not keep_tasks) or START
        self._apply([(writer, list(updates.items()))])
        self.step += 1
        if keep_tasks:
            # Same pending tasks (same ids, so interrupts and answers still match); finished
            # siblings keep their results, failed ones run again.
            for t in self.tasks:
                t.error = None
            self._checkpoint(source, [], carry=True)
            if self.paused_here and self.checkpointing and self.checkpoint_id is not None:
                # Paused before these tasks (interrupt_before): the new checkpoint keeps the
                # mark, so invoke(None, config) runs them instead of pausing again.
                names = sorted({t.name for t in self.tasks if not t.done})
                self.outbox.append(
                    SaveWrites(self.checkpoint_id, PAUSED, [(PAUSED_BEFORE, names)], 0)
                )
        else:
            routes = [*self.spec.edges.get(writer, [])]
            # As LangGraph, a router after update_state sees 2 steps remaining.
            routes += self._route_branches(writer, self.values, remaining=2)
            if isinstance(values, Command):
                routes += _as_targets(values.goto)
            self._advance_joins([Task(id="", name=writer)])
            joined = self._ready_joins()
            self.tasks = self._make_tasks([(writer, routes), ("__join__", joined)])
            self._checkpoint(source, [])

    def _last_node(self, *, strict: bool = True) -> str | None:
        names = self._ran_last
        if len(names) > 1:
            if not strict:
                return None
            raise InvalidUpdateError(
                f"the last step ran several nodes ({', '.join(names)}); say which"
                " one the update comes from with update_state(config, values, as_node=...)"
            )
        return names[0] if names else None

    def set_last_node(self, names: Sequence[str]) -> None:
        self._ran_last = sorted(set(names))

    # ------------------------------------------------------------------ internals

    def _command_updates(self, command: Command[Any], *, who: str) -> dict[str, Any]:
        update = command.update
        if update is None:
            return {}
        if isinstance(update, (list, tuple)):
            update = dict(update)
        return self.schema.updates_from(update, who=who)

    def _route_branches(
        self, source: str, values: Mapping[str, Any], remaining: int | None = None
    ) -> list[Any]:
        """Evaluate sync routers of ``source`` (used for START and update_state); managed
        keys read as :meth:`_managed_values` gives them."""
        out: list[Any] = []
        branches = self.spec.branches.get(source, [])
        if not branches:
            return out
        view = self.schema.node_input({**values, **self._managed_values(remaining)})
        for b in branches:
            if b.is_async:
                raise ThreadlineError(
                    f"the router of {source!r} is async; it cannot run here. Make it a plain"
                    " function"
                )
            result = b.router(view, self.config) if b.takes_config else b.router(view)
            out += b.resolve(result)
        return out

    def _apply(self, writes: Sequence[tuple[str, Sequence[tuple[str, Any]]]]) -> None:
        single_writer: dict[str, str] = {}
        grouped: dict[str, list[Any]] = {}
        writers: dict[str, list[str]] = {}
        for who, pairs in writes:
            for key, value in pairs:
                writers.setdefault(key, []).append(who)
                spec = self.schema.channels.get(key)
                if spec is None and key in self.schema.managed:
                    continue  # managed values are computed, never written
                if spec is None and self.schema.kind != "dict":
                    raise InvalidUpdateError(f"{who} wrote unknown state key {key!r}")
                if spec is None or spec.reducer is None:
                    other = single_writer.get(key)
                    if other is not None:
                        raise InvalidUpdateError(
                            f"state key {key!r} was written by both {other!r} and {who!r} in one"
                            " step, and it has no reducer to combine them. Give it one, e.g."
                            f" Annotated[list, operator.add], or let only one node write {key!r}"
                        )
                    single_writer[key] = who
                grouped.setdefault(key, []).append(value)
        for key, updates in grouped.items():
            old = self.values.get(key, MISSING)
            try:
                new = self._reduce(key, old, updates, shared_ok=True)
            except TypeError as exc:
                if isinstance(exc, ThreadlineError):
                    raise
                raise _reducer_error(key, old, updates, writers[key], exc) from exc
            self.values[key] = new
            self.owned.add(key)
            self._mark(key, old, new, updates)

    def _reduce(self, key: str, old: Any, updates: list[Any], *, shared_ok: bool) -> Any:
        spec = self.schema.channels.get(key)
        if spec is None or spec.reducer is None:
            last = updates[-1]
            return last.value if isinstance(last, Overwrite) else last
        for u in updates:  # a loop without calls: this runs for every write of every step
            if u.__class__ is Overwrite or (u.__class__ is dict and _OVERWRITE_KEY in u):
                return _apply_overwrite(key, old, updates, spec.reducer)
            if u.__class__ is dict and u.get("type") == _OVERWRITE_KEY:
                return _apply_overwrite(key, old, updates, spec.reducer)
        if old is MISSING:
            old = self._initial(key)
            if old is MISSING:
                old, updates = updates[0], updates[1:]
        elif not spec.pure and not (shared_ok and key in self.owned):
            old = private_copy(old)  # never let a reducer mutate a value others share
        for update in updates:
            old = spec.reducer(old, update)
        return old

    def _initial(self, key: str) -> Any:
        return self.schema.initial(key) if self.schema.has_initial(key) else MISSING

    def _mark(self, key: str, old: Any, new: Any, updates: list[Any]) -> None:
        appended: list[Any] | None = None
        if type(old) is list and type(new) is list:
            spec = self.schema.channels.get(key)
            if (
                spec is not None
                and spec.reducer is operator.add
                and all(type(u) is list for u in updates)
            ):
                appended = list(itertools.chain.from_iterable(updates))
            elif len(new) >= len(old) and all(map(operator.is_, old, new)):
                appended = new[len(old) :]
        if key in self.dirty:
            prior = self.dirty[key]
            self.dirty[key] = None if prior is None or appended is None else prior + appended
        else:
            self.dirty[key] = appended

    def _advance_joins(self, finished: Sequence[Task]) -> None:
        if not self.spec.joins:
            return
        progress: dict[str, list[str]] = dict(self.values.get(JOINS) or {})
        changed = False
        for join in self.spec.joins:
            for t in finished:
                if t.name in join.sources:
                    seen = progress.get(join.key, [])
                    if t.name not in seen:
                        progress[join.key] = sorted([*seen, t.name])
                        changed = True
        if changed:
            old = self.values.get(JOINS, MISSING)
            self.values[JOINS] = progress
            self._mark(JOINS, old, progress, [progress])

    def _ready_joins(self) -> list[str]:
        progress: dict[str, list[str]] = dict(self.values.get(JOINS) or {})
        ready = []
        for join in self.spec.joins:
            if set(progress.get(join.key, ())) >= set(join.sources):
                ready.append(join.target)
                progress.pop(join.key, None)
        if ready:
            old = self.values.get(JOINS, MISSING)
            self.values[JOINS] = progress
            self._mark(JOINS, old, progress, [progress])
        return ready

    def _make_tasks(self, routes: Sequence[tuple[str, Sequence[Any]]]) -> list[Task]:
        pulls: set[str] = set()
        pushes: list[Send] = []
        for source, targets in routes:
            for target in targets:
                if isinstance(target, Send):
                    self._check_target(source, target.node)
                    pushes.append(target)
                elif target == END or target is None:
                    continue
                else:
                    self._check_target(source, target)
                    pulls.add(target)
        ordered = sorted(pulls, key=lambda n: self._node_order[n])
        if self.spec.deferred:
            ordered = self._defer(ordered, has_pushes=bool(pushes))
        tasks = [Task(id=uuid.uuid4().hex, name=n) for n in ordered]
        tasks += [Task(id=uuid.uuid4().hex, name=s.node, arg=s.arg) for s in pushes]
        return tasks

    def _defer(self, ordered: list[str], *, has_pushes: bool) -> list[str]:
        """Deferred nodes wait (in a reserved channel) until nothing else is left to run."""
        waiting = set(self.values.get(DEFERRED) or ())
        now = [n for n in ordered if n not in self.spec.deferred]
        waiting.update(n for n in ordered if n in self.spec.deferred)
        if not now and not has_pushes:
            now, waiting = sorted(waiting, key=lambda n: self._node_order[n]), set()
        progress = sorted(waiting, key=lambda n: self._node_order[n])
        if progress != list(self.values.get(DEFERRED) or ()):
            old = self.values.get(DEFERRED, MISSING)
            self.values[DEFERRED] = progress
            self._mark(DEFERRED, old, progress, [progress])
        return now

    def _check_target(self, source: str, target: Any) -> None:
        if not isinstance(target, str) or target not in self.spec.nodes:
            raise InvalidUpdateError(
                f"{source!r} routed to {target!r}, which is not a node of this graph; nodes:"
                f" {', '.join(self.spec.nodes)}"
            )

    def _checkpoint(self, source: str, finished: Sequence[Task], *, carry: bool = False) -> None:
        """Queue a checkpoint of the current values and tasks."""
        checkpoint_id = new_checkpoint_id()
        carried: list[SaveWrites] = []
        if carry:
            for t in self.tasks:
                writes: list[tuple[str, Any]] = []
                if t.done:
                    writes.append((RESULT, {"writes": t.writes, "routes": t.routes}))
                if t.interrupts:
                    writes.append((INTERRUPT, t.interrupts))
                if t.answers:
                    writes.append((RESUME, t.answers))
                t.write_count = len(writes)
                if writes:
                    carried.append(SaveWrites(checkpoint_id, t.id, writes, 0))
                carried += [_call_write(checkpoint_id, t, k, v) for k, v in t.calls.items()]
        else:
            for t in self.tasks:
                t.write_count = 0
        self.checkpoint_id = checkpoint_id
        if not self.checkpointing:
            return
        if self.durability == "exit" and source in ("loop", "input"):
            # Saved once, when the run stops (_flush_exit), as LangGraph does: neither the
            # input checkpoint nor step 0 is saved on its own. update_state still saves.
            return
        self.outbox.append(SaveCheckpoint(self._draft(checkpoint_id, source, finished)))
        self.outbox.extend(carried)

    def _draft(self, checkpoint_id: str, source: str, finished: Sequence[Task]) -> CheckpointDraft:
        metadata: dict[str, Any] = {"source": source, "step": self.step, "parents": {}}
        if finished:
            metadata[NODES] = [t.name for t in finished]
        user_meta = self.config.get("metadata")
        if isinstance(user_meta, Mapping):
            metadata = {**user_meta, **metadata}
        changes = {k: ChannelChange(self.values[k], appended) for k, appended in self.dirty.items()}
        # base_refs are left to whoever saves it: the refs of the checkpoint saved before.
        draft = CheckpointDraft(
            step=self.step,
            source=source,
            metadata=metadata,
            tasks=[t.record() for t in self.tasks],
            changes=changes,
            parent_id=self.saved_id,
            id=checkpoint_id,
            values=dict(self.values),  # values are replaced, never mutated: a cheap snapshot
        )
        self.dirty = {}
        self.saved_id = checkpoint_id
        return draft

    def _flush_exit(self) -> None:
        """Durability "exit": save the state reached, once, with its tasks and their writes."""
        if not self.checkpointing or self.checkpoint_id == self.saved_id:
            return
        checkpoint_id = self.checkpoint_id or new_checkpoint_id()
        self.outbox.append(SaveCheckpoint(self._draft(checkpoint_id, "loop", self.finished_tasks)))
        for t in self.tasks:
            t.write_count = 0
            self.finish_task(t, alone=False)
            self.outbox += [_call_write(checkpoint_id, t, k, v) for k, v in t.calls.items()]

    def _queue_writes(self, task: Task, writes: list[tuple[str, Any]]) -> None:
        if not self.checkpointing or self.checkpoint_id is None:
            return
        if self.durability == "exit" and self.checkpoint_id != self.saved_id:
            return  # the checkpoint itself is not saved yet; _flush_exit writes these
        self.outbox.append(SaveWrites(self.checkpoint_id, task.id, writes, task.write_count))
        task.write_count += len(writes)

    def take_outbox(self) -> list[SaveOp]:
        ops, self.outbox = self.outbox, []
        return ops

    def current_config(self) -> RunnableConfig:
        assert self.thread_id is not None
        return make_config(self.thread_id, self.ns, self.checkpoint_id or "")


def _reducer_error(
    key: str, old: Any, updates: list[Any], writers: list[str], exc: TypeError
) -> ReducerTypeError:
    """Which update the reducer choked on: the first whose type differs from the value's."""
    i = next(
        (i for i, u in enumerate(updates) if old is not MISSING and type(u) is not type(old)), 0
    )
    who = writers[i] if i < len(writers) else writers[-1]
    current = "no value yet" if old is MISSING else type(old).__name__
    return ReducerTypeError(
        f"the reducer of state key {key!r} cannot combine its current value ({current}) with"
        f" the update from {who!r} ({type(updates[i]).__name__}): {exc}. Make {who!r} return a"
        f" value of the key's type for {key!r} (e.g. a list, [value], for a list with"
        " operator.add)"
    )


def _call_write(checkpoint_id: str, task: Task, key: str, value: Any) -> SaveWrites:
    return SaveWrites(checkpoint_id, f"{task.id}.{key}", [(CALL, value)], 0)


def _as_targets(goto: Any) -> list[Any]:
    if goto is None or goto == ():
        return []
    if isinstance(goto, (str, Send)):
        return [goto]
    return list(goto)


def _fields_of(instance: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(instance):
        return {f.name: getattr(instance, f.name) for f in dataclasses.fields(instance)}
    return dict(instance.__dict__)


_OVERWRITE_KEY = "__overwrite__"


def _overwrite_of(update: Any) -> Any:
    """The value an ``Overwrite`` (or its ``{"__overwrite__": v}`` form) carries, or MISSING."""
    if isinstance(update, Overwrite):
        return update.value
    if isinstance(update, dict):
        if len(update) == 1 and _OVERWRITE_KEY in update:
            return update[_OVERWRITE_KEY]
        if update.get("type") == _OVERWRITE_KEY and "value" in update and len(update) == 2:
            return update["value"]
    return MISSING


def _apply_overwrite(key: str, old: Any, updates: list[Any], reducer: Any) -> Any:
    """Updates of one step with an ``Overwrite``: it replaces the value; updates after it in
    the step are dropped, updates before it are replaced with it (as LangGraph does)."""
    value = old
    seen = False
    for update in updates:
        replacement = _overwrite_of(update)
        if replacement is not MISSING:
            if seen:
                raise InvalidUpdateError(
                    f"state key {key!r} received two Overwrite values in one step; only one"
                    " node may overwrite it per step"
                )
            value, seen = replacement, True
        elif not seen:
            value = update if value is MISSING else reducer(private_copy(value), update)
    return value
