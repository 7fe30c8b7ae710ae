"""LangGraph's ``langgraph.prebuilt.tool_node``: run a model's tool calls as a graph node.

:class:`ToolNode` runs every tool call of the last AI message (sync tools on a thread pool owned by
the call, async tools concurrently) and returns one ``ToolMessage`` per call, in call order. Tool
arguments annotated :class:`InjectedState`, :class:`InjectedStore` or typed :class:`ToolRuntime`
are filled in by the node and hidden from the model's tool schema (langchain-core leaves injected
arguments out of ``tool_call_schema``, which ``bind_tools`` uses).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import json
import types
import typing
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from copy import deepcopy
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Literal, Union, cast

from langchain_core.messages import AIMessage, RemoveMessage, ToolMessage, convert_to_messages
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool, InjectedToolArg
from langchain_core.tools import tool as create_tool
from langchain_core.tools.base import (
    _DirectlyInjectedToolArg,
    _is_injected_arg_type,
    get_all_basemodel_annotations,
)
from pydantic import ValidationError
from typing_extensions import TypedDict, TypeVar

from ..errors import GraphBubbleUp, is_invalid_resume
from ..graph.message import REMOVE_ALL_MESSAGES
from ..runtime.context import running_task
from ..runtime.runtime_context import Runtime
from ..types import Command, Send
from . import _deps  # noqa: F401  (a clear ImportError without langchain-core)

__all__ = [
    "INVALID_TOOL_NAME_ERROR_TEMPLATE",
    "TOOL_CALL_ERROR_TEMPLATE",
    "InjectedState",
    "InjectedStore",
    "ToolCallWithContext",
    "ToolInvocationError",
    "ToolNode",
    "ToolRuntime",
    "msg_content_output",
    "tools_condition",
]

StateT = TypeVar("StateT", default=dict[str, Any])
ContextT = TypeVar("ContextT", default=None)

# LangGraph's message texts, word for word: models (and programs) see these.
INVALID_TOOL_NAME_ERROR_TEMPLATE = (
    "Error: {requested_tool} is not a valid tool, try one of [{available_tools}]."
)
TOOL_CALL_ERROR_TEMPLATE = "Error: {error}\n Please fix your mistakes."
TOOL_INVOCATION_ERROR_TEMPLATE = (
    "Error invoking tool '{tool_name}' with kwargs {tool_kwargs} with error:\n"
    " {error}\n"
    " Please fix the error and try again."
)
# The content block types a ToolMessage may carry as they are (others are JSON-encoded).
_BLOCK_TYPES = ("text", "image_url", "image", "json", "search_result", "custom_tool_call_output")

InputType = Literal["list", "dict", "tool_calls"]
ErrorHandling = Union[  # noqa: UP007 - a runtime alias: X | Y of these fails on Python 3.10
    bool, str, Callable[..., str], type[Exception], tuple[type[Exception], ...]
]


class ToolCallWithContext(TypedDict):
    """One tool call and the state it was made in: what ``create_react_agent(version="v2")``
    sends to the tools node (``Send("tools", ...)``), one per call."""

    __type: Literal["tool_call_with_context"]
    tool_call: Any
    state: Any


def msg_content_output(output: Any) -> str | list[dict[str, Any]]:
    """A tool's output as ``ToolMessage`` content: strings and content blocks as they are,
    anything else JSON-encoded (or ``str()`` when it is not JSON)."""
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(
        isinstance(x, dict) and x.get("type") in _BLOCK_TYPES for x in output
    ):
        return output
    try:
        return json.dumps(output, ensure_ascii=False)
    except Exception:
        return str(output)


class ToolInvocationError(Exception):
    """The model called a tool with arguments its schema rejects (raised inside ToolNode only)."""

    def __init__(
        self, tool_name: str, source: ValidationError, tool_kwargs: dict[str, Any], hidden: set[str]
    ) -> None:
        lines = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'Unknown error')}"
            for e in source.errors()
            if e.get("loc") and e["loc"][0] not in hidden
        ]
        self.message = TOOL_INVOCATION_ERROR_TEMPLATE.format(
            tool_name=tool_name, tool_kwargs=tool_kwargs, error="\n".join(lines)
        )
        self.tool_name = tool_name
        self.tool_kwargs = tool_kwargs
        self.source = source
        super().__init__(self.message)


def _default_handle_tool_errors(e: Exception) -> str:
    """LangGraph's default: bad arguments go back to the model, a failing tool raises."""
    if isinstance(e, ToolInvocationError):
        return e.message
    raise e


def _handled_types(flag: Any) -> tuple[type[BaseException], ...]:
    if isinstance(flag, type) and issubclass(flag, Exception):
        return (flag,)
    if isinstance(flag, tuple):
        return flag
    if callable(flag) and not isinstance(flag, type):
        return _types_of_handler(flag)
    return (Exception,)


def _types_of_handler(handler: Callable[..., str]) -> tuple[type[BaseException], ...]:
    """The exception types a handler's first parameter is annotated with (all: unannotated)."""
    params = list(inspect.signature(handler).parameters.values())
    if not params:
        return (Exception,)
    first = params[1] if params[0].name in ("self", "cls") and len(params) == 2 else params[0]
    hints = typing.get_type_hints(handler)
    if first.name not in hints:
        return (Exception,)
    hint = hints[first.name]
    options = (
        typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)
    )
    if all(isinstance(t, type) and issubclass(t, Exception) for t in options):
        return tuple(options)
    raise ValueError(
        f"the error handler {handler!r} annotates its error as {hint!r}: annotate it with an"
        " Exception type or a union of them, e.g. `def handler(e: ValueError) -> str`"
    )


def _error_content(e: Exception, flag: Any) -> str:
    if isinstance(flag, (bool, tuple)) or (isinstance(flag, type) and issubclass(flag, Exception)):
        return TOOL_CALL_ERROR_TEMPLATE.format(error=repr(e))
    if isinstance(flag, str):
        return flag
    if callable(flag):
        return cast(str, flag(e))
    raise ValueError(
        f"handle_tool_errors={flag!r}: expected a bool, a str, a callable or exception types"
    )


@dataclass
class ToolRuntime(_DirectlyInjectedToolArg, Generic[ContextT, StateT]):
    """What a tool gets in a parameter typed ``ToolRuntime`` (or named ``runtime``): the graph
    state, the tool call id, the config, the run's context, store and stream writer, and the
    node's tools. Hidden from the model's tool schema."""

    state: StateT
    context: ContextT
    config: RunnableConfig
    stream_writer: Callable[[Any], None]
    tool_call_id: str | None
    store: Any
    tools: list[BaseTool] = field(default_factory=list)
    execution_info: Any = None
    server_info: Any = None


class InjectedState(InjectedToolArg):
    """Annotate a tool argument ``Annotated[dict, InjectedState]`` to get the graph state, or
    ``Annotated[T, InjectedState("key")]`` for one key. Hidden from the model's tool schema."""

    def __init__(self, field: str | None = None) -> None:
        self.field = field


class InjectedStore(InjectedToolArg):
    """Annotate a tool argument ``Annotated[BaseStore, InjectedStore()]`` to get the graph's store
    (``compile(store=...)``). Hidden from the model's tool schema."""


@dataclass
class _Injections:
    """Which arguments of one tool the node fills in."""

    state: dict[str, str | None] = field(default_factory=dict)  # argument -> state key (None: all)
    optional_state: set[str] = field(default_factory=set)
    store: str | None = None
    runtime: str | None = None
    hidden: set[str] = field(default_factory=set)  # every injected argument

    def __bool__(self) -> bool:
        return bool(self.state or self.store or self.runtime)


def _marker(hint: Any, kind: type) -> Any:
    """The ``kind`` marker in an annotation (an instance, or True for the bare class), or None."""
    if isinstance(hint, kind):
        return hint
    if isinstance(hint, type) and issubclass(hint, kind):
        return True
    origin = typing.get_origin(hint)
    if origin is not None and isinstance(origin, type) and issubclass(origin, kind):
        return True
    if origin in (typing.Annotated, Union, types.UnionType):
        found = [m for m in (_marker(a, kind) for a in typing.get_args(hint)) if m is not None]
        if len(found) > 1:
            raise ValueError(f"a tool argument is annotated with {kind.__name__} more than once")
        return found[0] if found else None
    return None


def _injections_of(tool: BaseTool) -> _Injections:
    schema = tool.get_input_schema()
    hints: dict[str, Any] = {}
    func = getattr(tool, "func", None) or getattr(tool, "coroutine", None)
    if func is not None:
        with contextlib.suppress(Exception):  # unresolvable annotations: the schema's suffice
            hints.update(typing.get_type_hints(func, include_extras=True))
    hints.update(get_all_basemodel_annotations(schema))
    out = _Injections()
    fields = getattr(schema, "model_fields", {})
    for name, hint in hints.items():
        if name == "return":
            continue
        if _is_injected_arg_type(hint):
            out.hidden.add(name)
        if name == "runtime" or _marker(hint, ToolRuntime) is not None:
            out.runtime = name
        state = _marker(hint, InjectedState)
        if state is not None:
            key = state.field if isinstance(state, InjectedState) else None
            out.state[name] = key
            info = fields.get(name)
            if key and info is not None and not info.is_required():
                out.optional_state.add(name)
        if _marker(hint, InjectedStore) is not None:
            out.store = name
    return out


class ToolNode(Runnable[Any, Any]):
    """A node that runs the tool calls of the last ``AIMessage``.

    Input: a state dict (or object) with ``messages_key``, a list of messages, a list of tool
    calls, or a :class:`ToolCallWithContext` (what ``create_react_agent`` sends). Output:
    ``{messages_key: [ToolMessage, ...]}`` (a list for list input), or, when a tool returned a
    ``Command``, a list of Commands and updates the graph applies together.

    ``handle_tool_errors``: by default (as LangGraph) arguments the tool's schema rejects become
    an error ``ToolMessage`` and other tool errors raise; ``True`` turns every error into an
    error message, ``False`` raises every one; a str is the message, a callable makes it from the
    exception, exception types (or a callable's annotation) choose which errors are caught.
    """

    def __init__(
        self,
        tools: Sequence[BaseTool | Callable[..., Any]],
        *,
        name: str = "tools",
        tags: list[str] | None = None,
        handle_tool_errors: ErrorHandling = _default_handle_tool_errors,
        messages_key: str = "messages",
    ) -> None:
        self.name = name
        self.tags = tags
        self._handle_tool_errors = handle_tool_errors
        self._messages_key = messages_key
        self._tools_by_name: dict[str, BaseTool] = {}
        self._injections: dict[str, _Injections] = {}
        for t in tools:
            tool_ = t if isinstance(t, BaseTool) else create_tool(t)
            self._tools_by_name[tool_.name] = tool_
            self._injections[tool_.name] = _injections_of(tool_)

    @property
    def tools_by_name(self) -> dict[str, BaseTool]:
        """The node's tools by name."""
        return self._tools_by_name

    # ------------------------------------------------------------------ running

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        calls, kind = self._parse_input(input)
        runtimes = self._runtimes(input, calls, config)
        if len(calls) <= 1:
            outputs = [self._run_one(c, kind, r) for c, r in zip(calls, runtimes)]
        else:
            # The pool belongs to this call; each thread runs in a copy of the caller's
            # context, so interrupt(), get_store() and the stream writer work in tools.
            with ThreadPoolExecutor(max_workers=len(calls)) as pool:
                futures = [
                    pool.submit(contextvars.copy_context().run, self._run_one, c, kind, r)
                    for c, r in zip(calls, runtimes)
                ]
                outputs = [f.result() for f in futures]
        return self._combine(outputs, kind)

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        calls, kind = self._parse_input(input)
        runtimes = self._runtimes(input, calls, config)
        outputs = await asyncio.gather(
            *(self._arun_one(c, kind, r) for c, r in zip(calls, runtimes))
        )
        return self._combine(list(outputs), kind)

    def _runtimes(
        self, input: Any, calls: list[Any], config: RunnableConfig | None
    ) -> list[ToolRuntime]:
        ctx = running_task()
        runtime: Runtime[Any] = ctx.runtime() if ctx is not None else Runtime()
        base: RunnableConfig = cast(RunnableConfig, dict(config or {}))
        state = self._state_of(input)
        tools = list(self._tools_by_name.values())
        return [
            ToolRuntime(
                state=state,
                context=runtime.context,
                config=base,
                stream_writer=runtime.stream_writer,
                tool_call_id=call.get("id"),
                store=runtime.store,
                tools=tools,
                execution_info=runtime.execution_info,
                server_info=runtime.server_info,
            )
            for call in calls
        ]

    def _parse_input(self, input: Any) -> tuple[list[Any], InputType]:
        if isinstance(input, list):
            if input and isinstance(input[-1], dict) and input[-1].get("type") == "tool_call":
                return list(input), "tool_calls"
            messages = input
            kind: InputType = "list"
        elif isinstance(input, dict) and input.get("__type") == "tool_call_with_context":
            return [input["tool_call"]], "tool_calls"
        elif isinstance(input, dict) and input.get(self._messages_key):
            messages, kind = input[self._messages_key], "dict"
        elif getattr(input, self._messages_key, None):
            messages, kind = getattr(input, self._messages_key), "dict"
        else:
            raise ValueError("No message found in input")
        for message in reversed(messages):
            if isinstance(message, AIMessage):
                return list(message.tool_calls), kind
        raise ValueError("No AIMessage found in input")

    @staticmethod
    def _state_of(input: Any) -> Any:
        if isinstance(input, dict) and input.get("__type") == "tool_call_with_context":
            return input["state"]
        bare_calls = isinstance(input, list) and input and isinstance(input[-1], dict)
        if bare_calls and input[-1].get("type") == "tool_call":
            return {}  # bare tool calls carry no state
        return input

    def _run_one(self, call: Any, kind: InputType, runtime: ToolRuntime) -> Any:
        tool = self._tools_by_name.get(call["name"])
        if tool is None:
            return self._unknown_tool(call)
        try:
            try:
                response = tool.invoke(self._with_injections(call, runtime), runtime.config)
            except ValidationError as exc:
                if is_invalid_resume(exc):  # an interrupt() in the tool, not its arguments
                    raise
                raise self._invocation_error(call, exc) from exc
            return self._normalize(response, call, kind)
        except Exception as exc:
            return self._on_error(exc, call)

    async def _arun_one(self, call: Any, kind: InputType, runtime: ToolRuntime) -> Any:
        tool = self._tools_by_name.get(call["name"])
        if tool is None:
            return self._unknown_tool(call)
        try:
            try:
                response = await tool.ainvoke(self._with_injections(call, runtime), runtime.config)
            except ValidationError as exc:
                if is_invalid_resume(exc):  # an interrupt() in the tool, not its arguments
                    raise
                raise self._invocation_error(call, exc) from exc
            return self._normalize(response, call, kind)
        except Exception as exc:
            return self._on_error(exc, call)

    def _invocation_error(self, call: Any, exc: ValidationError) -> ToolInvocationError:
        """Arguments the tool's schema rejects (not an answer an interrupt in it rejects)."""
        hidden = self._injections[call["name"]].hidden
        return ToolInvocationError(call["name"], exc, call["args"], hidden)

    def _unknown_tool(self, call: Any) -> ToolMessage:
        content = INVALID_TOOL_NAME_ERROR_TEMPLATE.format(
            requested_tool=call["name"], available_tools=", ".join(self._tools_by_name)
        )
        return ToolMessage(content, name=call["name"], tool_call_id=call["id"], status="error")

    def _on_error(self, exc: Exception, call: Any) -> ToolMessage:
        # Interrupts and Commands to a parent graph are control flow, never tool errors; nor is
        # an answer its interrupt's response_schema rejects (the model cannot fix it): the run
        # fails, and the interrupt can be answered again.
        if isinstance(exc, GraphBubbleUp) or is_invalid_resume(exc):
            raise exc
        flag = self._handle_tool_errors
        if not flag or not isinstance(exc, _handled_types(flag)):
            raise exc
        return ToolMessage(
            content=_error_content(exc, flag),
            name=call["name"],
            tool_call_id=call["id"],
            status="error",
        )

    # ------------------------------------------------------------------ injection

    def _with_injections(self, call: Any, runtime: ToolRuntime) -> dict[str, Any]:
        wanted = self._injections[call["name"]]
        out = {**call, "type": "tool_call"}
        if not wanted:
            return out
        args = {k: v for k, v in call["args"].items() if k not in wanted.hidden}
        if wanted.state:
            args.update(self._state_args(call, wanted, runtime.state))
        if wanted.store:
            if runtime.store is None:
                raise ValueError(
                    "Cannot inject store into tools with InjectedStore annotations - "
                    "please compile your graph with a store."
                )
            args[wanted.store] = runtime.store
        if wanted.runtime:
            args[wanted.runtime] = runtime
        out["args"] = args
        return out

    def _state_args(self, call: Any, wanted: _Injections, state: Any) -> dict[str, Any]:
        if isinstance(state, list):
            keys = list(wanted.state.values())
            if keys[0] is None or keys == [self._messages_key]:
                state = {self._messages_key: state}
            else:
                raise ValueError(
                    f"Invalid input to ToolNode. Tool {call['name']} requires graph state dict"
                    f" as input. State should contain fields {', '.join(k for k in keys if k)}."
                )
        out: dict[str, Any] = {}
        for arg, key in wanted.state.items():
            if key is None:
                out[arg] = state
            elif isinstance(state, dict):
                if key in state:
                    out[arg] = state[key]
                elif arg not in wanted.optional_state:
                    raise KeyError(key)
            elif hasattr(state, key):
                out[arg] = getattr(state, key)
            elif arg not in wanted.optional_state:
                raise AttributeError(key)
        return out

    # ------------------------------------------------------------------ results

    def _normalize(self, response: Any, call: Any, kind: InputType) -> Any:
        if isinstance(response, Command):
            return self._check_command(response, call, kind)
        if isinstance(response, ToolMessage):
            response.content = msg_content_output(response.content)  # type: ignore[assignment]
            return response
        if isinstance(response, list) and all(
            isinstance(r, (Command, ToolMessage)) for r in response
        ):
            return self._check_list(response, call, kind)
        raise TypeError(f"Tool {call['name']} returned unexpected type: {type(response)}")

    def _check_list(self, response: list[Any], call: Any, kind: InputType) -> list[Any]:
        answers = 0
        for item in response:
            if isinstance(item, ToolMessage):
                answers += item.tool_call_id == call["id"]
            elif isinstance(item.update, dict):
                answers += sum(
                    isinstance(m, ToolMessage) and m.tool_call_id == call["id"]
                    for m in item.update.get(self._messages_key, [])
                )
        if answers != 1:
            raise ValueError(
                f"Tool {call['name']} returned a list with {answers} messages bound to"
                f" tool_call_id {call['id']!r}; expected exactly one terminating ToolMessage."
            )
        out: list[Any] = []
        for item in response:
            if isinstance(item, Command):
                out.append(self._check_command(item, call, kind, need_answer=False))
            else:
                item.content = msg_content_output(item.content)
                out.append(item)
        return out

    def _check_command(
        self, command: Command[Any], call: Any, kind: InputType, *, need_answer: bool = True
    ) -> Command[Any]:
        """A tool's Command must answer its call with a ToolMessage (unless it goes to the
        parent graph), and its update must suit the node's input form."""
        if isinstance(command.update, dict):
            if kind not in ("dict", "tool_calls"):
                raise ValueError(
                    "Tools can provide a dict in Command.update only when using dict with"
                    f" '{self._messages_key}' key as ToolNode input, got: {command.update} for"
                    f" tool '{call['name']}'"
                )
            command = deepcopy(command)
            update = cast(dict[str, Any], command.update)
            messages = convert_to_messages(update.get(self._messages_key, []))
            if self._messages_key in update:
                update[self._messages_key] = messages
        elif isinstance(command.update, list):
            if kind != "list":
                raise ValueError(
                    "Tools can provide a list of messages in Command.update only when using list"
                    f" of messages as ToolNode input, got: {command.update} for tool"
                    f" '{call['name']}'"
                )
            command = deepcopy(command)
            messages = convert_to_messages(command.update)
            command = replace(command, update=messages)
        else:
            return command
        removes_all = len(messages) == 1 and isinstance(messages[0], RemoveMessage)
        if removes_all and messages[0].id == REMOVE_ALL_MESSAGES:
            return command
        answered = False
        for m in messages:
            if isinstance(m, ToolMessage) and m.tool_call_id == call["id"]:
                m.name = call["name"]
                answered = True
        if need_answer and command.graph is None and not answered:
            raise ValueError(
                "Expected to have a matching ToolMessage in Command.update for tool"
                f" '{call['name']}', got: {messages}. Every tool call (LLM requesting to call a"
                " tool) in the message history MUST have a corresponding ToolMessage. You can"
                " fix it by modifying the tool to return `Command(update={'messages':"
                " [ToolMessage('Success', tool_call_id=tool_call_id), ...]}, ...)`."
            )
        return command

    def _combine(self, outputs: list[Any], kind: InputType) -> Any:
        flat: list[Any] = []
        for o in outputs:
            flat.extend(o) if isinstance(o, list) else flat.append(o)
        if not any(isinstance(o, Command) for o in flat):
            return flat if kind == "list" else {self._messages_key: flat}
        combined: list[Any] = []
        parent: Command[Any] | None = None
        for o in flat:
            if not isinstance(o, Command):
                combined.append([o] if kind == "list" else {self._messages_key: [o]})
            elif (
                o.graph == Command.PARENT
                and isinstance(o.goto, list)
                and all(isinstance(s, Send) for s in o.goto)
            ):
                # Sends to the parent graph from several tools travel as one Command.
                goto = [*(cast(list[Send], parent.goto) if parent else []), *o.goto]
                parent = Command(graph=Command.PARENT, goto=goto)
            else:
                combined.append(o)
        if parent is not None:
            combined.append(parent)
        return combined


def tools_condition(state: Any, messages_key: str = "messages") -> Literal["tools", "__end__"]:
    """Route to ``"tools"`` when the last message has tool calls, else to END (``"__end__"``)."""
    if isinstance(state, list):
        last = state[-1]
    elif isinstance(state, dict) and state.get(messages_key):
        last = state[messages_key][-1]
    elif getattr(state, messages_key, None):
        last = getattr(state, messages_key)[-1]
    else:
        raise ValueError(f"No messages found in input state to tool_edge: {state}")
    if getattr(last, "tool_calls", None):
        return "tools"
    return "__end__"
