"""``stream_mode="messages"``: LangChain chat model tokens and the messages nodes write.

Only imported when a run asks for that mode, and only useful with langchain-core installed
(without it there are no chat models, and the mode yields nothing). A run that streams
messages gives each task a config whose ``callbacks`` hold one :class:`MessagesStream`'s
handler and whose ``metadata`` says where the task runs (``langgraph_node``,
``langgraph_step``, ...). The config is also made the task's current LangChain config
(``var_child_runnable_config``), so a model called inside the node without a config finds it.
LangChain then streams even ``model.invoke()`` token by token, because the handler is a
streaming one (it has ``tap_output_iter``).

What is yielded, as LangGraph yields it: ``(chunk, metadata)`` for each token; the final
message of a model run that was not streamed; and, when a task finishes, each message in its
writes that was neither streamed nor already in the node's input (deduplicated by id). A model
run tagged ``nostream`` (or ``langsmith:nostream``) streams no tokens; the message it returned
still arrives whole if the node writes it.
"""

from __future__ import annotations

import contextvars
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from ..checkpoint.types import RunnableConfig

try:  # langchain-core is optional
    from langchain_core.callbacks import BaseCallbackHandler, BaseCallbackManager
    from langchain_core.messages import BaseMessage
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, LLMResult
    from langchain_core.runnables.config import var_child_runnable_config
except ImportError:  # pragma: no cover - exercised only without the extra
    HAVE_LANGCHAIN = False
else:
    HAVE_LANGCHAIN = True

__all__ = ["HAVE_LANGCHAIN", "NOSTREAM_TAGS", "MessagesStream", "task_metadata"]

NOSTREAM_TAGS = frozenset({"nostream", "langsmith:nostream"})
T = TypeVar("T")

Emit = Callable[[tuple[str, ...], Any], None]
"""Yield one messages event: its namespace and the ``(message, metadata)`` pair."""


def task_metadata(
    node: str, step: int, triggers: Sequence[str], path: tuple[Any, ...], task_ns: str
) -> dict[str, Any]:
    """The metadata LangGraph gives a task's runs (and so its model calls)."""
    return {
        "langgraph_step": step,
        "langgraph_node": node,
        "langgraph_triggers": tuple(triggers),
        "langgraph_path": path,
        "langgraph_checkpoint_ns": task_ns,
    }


def _outer_ns(metadata: Mapping[str, Any]) -> str:
    return str(metadata.get("langgraph_checkpoint_ns") or "").split("|")[0]


def graph_ns(metadata: Mapping[str, Any]) -> tuple[str, ...]:
    """The namespace of the graph a task runs in: its own namespace minus the task's part."""
    task_ns = str(metadata.get("langgraph_checkpoint_ns") or "")
    return tuple(task_ns.split("|"))[:-1] if task_ns else ()


if HAVE_LANGCHAIN:

    class _Handler(BaseCallbackHandler):
        """Turns a chat model's callbacks into messages events."""

        run_inline = True  # called where the model runs: events keep their order

        def __init__(self, stream: MessagesStream) -> None:
            self.stream = stream
            self.runs: dict[uuid.UUID, dict[str, Any]] = {}

        # Having these two makes LangChain treat this handler as a streaming one: then
        # BaseChatModel.invoke streams tokens too.
        def tap_output_iter(self, run_id: uuid.UUID, output: Iterator[T]) -> Iterator[T]:
            return output

        def tap_output_aiter(self, run_id: uuid.UUID, output: AsyncIterator[T]) -> AsyncIterator[T]:
            return output

        def on_chat_model_start(
            self,
            serialized: dict[str, Any],
            messages: list[list[BaseMessage]],
            *,
            run_id: uuid.UUID,
            parent_run_id: uuid.UUID | None = None,
            tags: list[str] | None = None,
            metadata: dict[str, Any] | None = None,
            **kwargs: Any,
        ) -> Any:
            if not metadata or "langgraph_node" not in metadata:
                return  # not called by a node of a run we stream
            if tags and NOSTREAM_TAGS.intersection(tags):
                return
            meta = dict(metadata)
            user_tags = [t for t in tags or () if not t.startswith("seq:step")]
            if user_tags:
                meta["tags"] = user_tags
            self.runs[run_id] = meta

        def on_llm_new_token(
            self,
            token: Any,
            *,
            chunk: Any = None,
            run_id: uuid.UUID,
            parent_run_id: uuid.UUID | None = None,
            tags: list[str] | None = None,
            **kwargs: Any,
        ) -> Any:
            meta = self.runs.get(run_id)
            if meta is not None and isinstance(chunk, ChatGenerationChunk):
                self.stream.emit_message(chunk.message, meta)

        def on_llm_end(
            self,
            response: LLMResult,
            *,
            run_id: uuid.UUID,
            parent_run_id: uuid.UUID | None = None,
            **kwargs: Any,
        ) -> Any:
            meta = self.runs.pop(run_id, None)
            if meta is None or not response.generations or not response.generations[0]:
                return
            generation = response.generations[0][0]
            if isinstance(generation, ChatGeneration):
                # Streamed: its chunks carried its id, so this is a duplicate and dropped.
                self.stream.emit_message(generation.message, meta, dedupe=True)

        def on_llm_error(self, error: BaseException, *, run_id: uuid.UUID, **kwargs: Any) -> Any:
            self.runs.pop(run_id, None)


class MessagesStream:
    """The messages stream of one run (and of the subgraphs it forwards events from)."""

    def __init__(self, emit: Emit) -> None:
        self._emit = emit
        self.seen: set[str] = set()  # ids of messages emitted or given to nodes as input
        self.handler: Any = _Handler(self) if HAVE_LANGCHAIN else None

    # ------------------------------------------------------------------ events

    def emit_message(self, message: Any, meta: dict[str, Any], *, dedupe: bool = False) -> None:
        if dedupe and message.id in self.seen:
            return
        if message.id is None:
            message.id = str(uuid.uuid4())
        self.seen.add(message.id)
        self._emit(graph_ns(meta), (message, meta))

    def saw_input(self, state: Any) -> None:
        """Messages a node is given are not news when it returns them."""
        for message in _messages_in(_values_of(state)):
            if message.id is not None:
                self.seen.add(message.id)

    def node_output(self, writes: Sequence[tuple[str, Any]], meta: dict[str, Any]) -> None:
        """Emit the messages a finished task wrote that nobody has seen yet."""
        found = list(_messages_in(value for _, value in writes))
        if found:
            meta = {"ls_integration": "langgraph", **meta}
            outer = _outer_ns(meta)
            if outer != meta["langgraph_checkpoint_ns"]:  # in a subgraph
                meta["checkpoint_ns"] = outer
            for message in found:
                self.emit_message(message, meta, dedupe=True)

    # ------------------------------------------------------------------ task configs

    def task_config(self, config: RunnableConfig, meta: dict[str, Any]) -> RunnableConfig:
        """``config`` with this stream's handler among its callbacks and ``meta`` merged."""
        out = dict(config)
        # LangChain adds the config's checkpoint_ns to a model run's metadata; in LangGraph
        # that is the namespace of the outermost task, at any depth.
        extra: dict[str, Any] = {"checkpoint_ns": _outer_ns(meta)}
        thread_id = (config.get("configurable") or {}).get("thread_id")
        if thread_id is not None:
            extra["thread_id"] = thread_id
        out["metadata"] = {**(config.get("metadata") or {}), **meta, **extra}
        if self.handler is not None:
            out["callbacks"] = _with_handler(config.get("callbacks"), self.handler)
        return out


def without_handlers(config: RunnableConfig) -> RunnableConfig:
    """``config`` without any messages stream's handler (a child that forwards nothing)."""
    callbacks = config.get("callbacks")
    if not isinstance(callbacks, list) or not any(isinstance(h, _Handler) for h in callbacks):
        return config
    return {**config, "callbacks": [h for h in callbacks if not isinstance(h, _Handler)]}


def _with_handler(callbacks: Any, handler: Any) -> Any:
    if callbacks is None:
        return [handler]
    if isinstance(callbacks, list):
        return [*(h for h in callbacks if not isinstance(h, _Handler)), handler]
    if HAVE_LANGCHAIN and isinstance(callbacks, BaseCallbackManager):
        manager = callbacks.copy()
        manager.add_handler(handler, inherit=True)
        return manager
    return callbacks


def enter_config(config: RunnableConfig | None) -> contextvars.Token[Any] | None:
    """Make ``config`` LangChain's current config in this context (None: clear it)."""
    if not HAVE_LANGCHAIN:
        return None
    return var_child_runnable_config.set(config)  # type: ignore[arg-type]


def leave_config(token: contextvars.Token[Any] | None) -> None:
    if token is not None:
        var_child_runnable_config.reset(token)


def current_has_handler() -> bool:
    """Whether LangChain's current config carries a messages handler (a parent streams)."""
    if not HAVE_LANGCHAIN:
        return False
    current = var_child_runnable_config.get()
    callbacks = (current or {}).get("callbacks")
    return isinstance(callbacks, list) and any(isinstance(h, _Handler) for h in callbacks)


def _values_of(state: Any) -> list[Any]:
    if isinstance(state, Mapping):
        return list(state.values())
    fields = getattr(type(state), "model_fields", None)
    if fields is not None:
        return [getattr(state, k, None) for k in fields]
    return list(getattr(state, "__dict__", {}).values())


def _messages_in(values: Any) -> Iterator[Any]:
    if not HAVE_LANGCHAIN:
        return
    for value in values:
        if isinstance(value, BaseMessage):
            yield value
        elif isinstance(value, (list, tuple)):
            for item in value:
                if isinstance(item, BaseMessage):
                    yield item
