"""LangGraph's ``create_react_agent``: a chat model calling tools in a loop, as a compiled graph.

The graph: ``agent`` (the model) -> ``tools`` (a :class:`ToolNode`) -> ``agent`` ... until the
model answers without tool calls. With ``version="v2"`` (the default) each tool call is its own
task (``Send("tools", ...)``): the calls run in parallel, each checkpointed on its own, so a
crash or an interrupt in one does not run the finished ones again. ``version="v1"`` runs all
calls of a message in one ``tools`` task. Optional nodes, as in LangGraph: ``pre_model_hook``,
``post_model_hook``, ``generate_structured_response`` (``response_format``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal, Union, cast

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AnyMessage, BaseMessage, SystemMessage, ToolMessage
from langchain_core.runnables import (
    Runnable,
    RunnableBinding,
    RunnableConfig,
    RunnableLambda,
    RunnableSequence,
)
from langchain_core.tools import BaseTool
from pydantic import BaseModel
from typing_extensions import TypedDict

from ..constants import END
from ..errors import ErrorCode, create_error_message
from ..graph.message import add_messages
from ..graph.state import StateGraph
from ..managed import RemainingSteps
from ..runtime.context import running_task
from ..runtime.runtime_context import Runtime
from ..types import Send
from . import _deps  # noqa: F401  (a clear ImportError without langchain-core)
from .tool_node import ToolCallWithContext, ToolNode

__all__ = [
    "AgentState",
    "AgentStatePydantic",
    "AgentStateWithStructuredResponse",
    "AgentStateWithStructuredResponsePydantic",
    "create_react_agent",
]

# Runtime aliases (X | Y of these fails on Python 3.10).
StructuredResponse = Union[dict[str, Any], BaseModel]  # noqa: UP007
StructuredResponseSchema = Union[dict[str, Any], type[BaseModel]]  # noqa: UP007
Prompt = Union[SystemMessage, str, Callable[[Any], Any], Runnable[Any, Any]]  # noqa: UP007

#: What the agent answers when ``recursion_limit`` leaves no room for another tool round.
NEED_MORE_STEPS = "Sorry, need more steps to process this request."


class AgentState(TypedDict):
    """The agent's state: the conversation and the steps ``recursion_limit`` still allows."""

    messages: Annotated[Sequence[BaseMessage], add_messages]
    remaining_steps: RemainingSteps


class AgentStatePydantic(BaseModel):
    """:class:`AgentState` as a pydantic model."""

    messages: Annotated[Sequence[BaseMessage], add_messages]
    remaining_steps: RemainingSteps = 25


class AgentStateWithStructuredResponse(AgentState):
    """:class:`AgentState` plus the ``response_format`` answer."""

    structured_response: StructuredResponse


class AgentStateWithStructuredResponsePydantic(AgentStatePydantic):
    """:class:`AgentStatePydantic` plus the ``response_format`` answer."""

    structured_response: StructuredResponse


def _get(state: Any, key: str, default: Any = None) -> Any:
    if isinstance(state, dict):
        return state.get(key, default)
    return getattr(state, key, default)


def _prompt_runnable(prompt: Prompt | None) -> Runnable[Any, Any]:
    """The runnable that turns the state into the model's input (LangGraph's "Prompt")."""
    if prompt is None:
        return RunnableLambda(lambda state: _get(state, "messages"), name="Prompt")
    if isinstance(prompt, str):
        prompt = SystemMessage(content=prompt)
    if isinstance(prompt, SystemMessage):
        system = prompt
        return RunnableLambda(lambda state: [system, *_get(state, "messages")], name="Prompt")
    if isinstance(prompt, Runnable):
        return prompt
    if inspect.iscoroutinefunction(prompt):

        def no_sync(state: Any) -> Any:
            raise RuntimeError("the agent's prompt is async: run the agent with ainvoke/astream")

        return RunnableLambda(no_sync, afunc=prompt, name="Prompt")
    if callable(prompt):
        return RunnableLambda(prompt, name="Prompt")
    raise ValueError(f"Got unexpected type for `prompt`: {type(prompt)}")


def _needs_binding(model: Any, tools: Sequence[BaseTool], builtin: int) -> bool:
    """Whether ``bind_tools`` must be called; a model bound already must hold the same tools."""
    if isinstance(model, RunnableSequence):
        model = next(
            (s for s in model.steps if isinstance(s, (RunnableBinding, BaseChatModel))), model
        )
    if not isinstance(model, RunnableBinding) or "tools" not in model.kwargs:
        return True
    bound = model.kwargs["tools"]
    if len(tools) != len(bound) - builtin:
        raise ValueError(
            "Number of tools in the model.bind_tools() and tools passed to create_react_agent"
            f" must match Got {len(tools)} tools, expected {len(bound) - builtin}"
        )
    names = set()
    for b in bound:
        if b.get("type") == "function":
            names.add(b["function"]["name"])
        elif b.get("name"):
            names.add(b["name"])
    if missing := {t.name for t in tools} - names:
        raise ValueError(f"Missing tools '{missing}' in the model.bind_tools()")
    return False


def _chat_model(model: Any) -> BaseChatModel:
    """The chat model inside a prompt | model sequence or a binding (for structured output)."""
    if isinstance(model, RunnableSequence):
        model = next(
            (s for s in model.steps if isinstance(s, (RunnableBinding, BaseChatModel))), model
        )
    if isinstance(model, RunnableBinding):
        model = model.bound
    if not isinstance(model, BaseChatModel):
        raise TypeError(
            f"Expected `model` to be a ChatModel or RunnableBinding (e.g. model.bind_tools(...)),"
            f" got {type(model)}"
        )
    return model


def _check_history(messages: Sequence[BaseMessage]) -> None:
    """Every tool call needs its ToolMessage before the model is called again."""
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
    open_calls = [
        c
        for m in messages
        if isinstance(m, AIMessage)
        for c in m.tool_calls
        if c["id"] not in answered
    ]
    if open_calls:
        raise ValueError(
            create_error_message(
                message="Found AIMessages with tool_calls that do not have a corresponding"
                f" ToolMessage. Here are the first few of those tool calls: {open_calls[:3]}.\n\n"
                "Every tool call (LLM requesting to call a tool) in the message history MUST"
                " have a corresponding ToolMessage (result of a tool invocation to return to the"
                " LLM) - this is required by most LLM providers.",
                error_code=ErrorCode.INVALID_CHAT_HISTORY,
            )
        )


def _runtime() -> Runtime[Any]:
    ctx = running_task()
    return ctx.runtime() if ctx is not None else Runtime()


class _Node(Runnable[Any, Any]):
    """A node with a sync and an async body (threadline calls ``invoke`` or ``ainvoke``)."""

    def __init__(self, name: str, sync: Callable[..., Any], async_: Callable[..., Any]) -> None:
        self.name = name
        self._sync = sync
        self._async = async_

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self._sync(input, config or {})

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return await self._async(input, config or {})


def create_react_agent(
    model: Any,
    tools: Sequence[BaseTool | Callable[..., Any] | dict[str, Any]] | ToolNode,
    *,
    prompt: Prompt | None = None,
    response_format: StructuredResponseSchema | tuple[str, StructuredResponseSchema] | None = None,
    pre_model_hook: Any = None,
    post_model_hook: Any = None,
    state_schema: Any = None,
    context_schema: type[Any] | None = None,
    checkpointer: Any = None,
    store: Any = None,
    interrupt_before: list[str] | None = None,
    interrupt_after: list[str] | None = None,
    debug: bool = False,
    version: Literal["v1", "v2"] = "v2",
    name: str | None = None,
    **deprecated_kwargs: Any,
) -> Any:
    """A compiled graph that calls ``model`` and the ``tools`` it asks for until it answers.

    ``model``: a chat model (``bind_tools`` is called when tools are given and it is not bound
    yet), or a function ``(state, runtime) -> model`` (sync or async) choosing one per call.
    ``prompt``: a str or ``SystemMessage`` put before the messages, a function of the state
    returning the model input, or a Runnable. ``response_format``: a schema (or
    ``(system_prompt, schema)``) for a final ``with_structured_output`` call whose result lands
    in ``structured_response``. ``pre_model_hook`` runs before every model call (it may return
    ``llm_input_messages`` to show the model instead of ``messages``); ``post_model_hook`` after
    it. ``state_schema`` must have ``messages`` and ``remaining_steps``.
    """
    if "config_schema" in deprecated_kwargs:
        context_schema = context_schema or deprecated_kwargs.pop("config_schema")
    if deprecated_kwargs:
        raise TypeError(
            f"create_react_agent() got unexpected keyword arguments: {deprecated_kwargs}"
        )
    if version not in ("v1", "v2"):
        raise ValueError(f"Invalid version {version}. Supported versions are 'v1' and 'v2'.")
    if state_schema is not None:
        required = {"messages", "remaining_steps"}
        if response_format is not None:
            required.add("structured_response")
        import typing

        if missing_keys := required - set(typing.get_type_hints(state_schema)):
            raise ValueError(f"Missing required key(s) {missing_keys} in state_schema")
    else:
        state_schema = (
            AgentStateWithStructuredResponse if response_format is not None else AgentState
        )
    is_pydantic = isinstance(state_schema, type) and issubclass(state_schema, BaseModel)

    builtin: list[dict[str, Any]] = []
    if isinstance(tools, ToolNode):
        tool_node = tools
    else:
        builtin = [t for t in tools if isinstance(t, dict)]
        tool_node = ToolNode([t for t in tools if not isinstance(t, dict)])
    tool_list = list(tool_node.tools_by_name.values())
    return_direct = {t.name for t in tool_list if t.return_direct}

    dynamic = not isinstance(model, (str, Runnable)) and callable(model)
    dynamic_async = dynamic and inspect.iscoroutinefunction(model)
    static_model: Runnable[Any, Any] | None = None
    if not dynamic:
        if isinstance(model, str):
            try:
                from langchain.chat_models import init_chat_model  # type: ignore[import-not-found]
            except ImportError as exc:
                raise ImportError(
                    "Please install langchain (`pip install langchain`) to use"
                    " '<provider>:<model>' string syntax for `model` parameter."
                ) from exc
            model = init_chat_model(model)
        if (tool_list or builtin) and _needs_binding(model, tool_list, len(builtin)):
            model = model.bind_tools([*tool_list, *builtin])
        static_model = _prompt_runnable(prompt) | model

    def resolve(state: Any, runtime: Runtime[Any]) -> Runnable[Any, Any]:
        if dynamic_async:
            raise RuntimeError(
                "Async model callable provided but agent invoked synchronously. Use"
                " agent.ainvoke() or agent.astream(), or provide a sync model callable."
            )
        if dynamic:
            return cast(Runnable[Any, Any], _prompt_runnable(prompt) | model(state, runtime))
        return cast(Runnable[Any, Any], static_model)

    async def aresolve(state: Any, runtime: Runtime[Any]) -> Runnable[Any, Any]:
        if dynamic_async:
            return cast(Runnable[Any, Any], _prompt_runnable(prompt) | await model(state, runtime))
        if dynamic:
            return cast(Runnable[Any, Any], _prompt_runnable(prompt) | model(state, runtime))
        return cast(Runnable[Any, Any], static_model)

    def model_input(state: Any) -> Any:
        messages = None
        if pre_model_hook is not None:
            messages = _get(state, "llm_input_messages")
        messages = messages or _get(state, "messages")
        if messages is None:
            expected = (
                "'llm_input_messages' or 'messages' key" if pre_model_hook else "'messages' key"
            )
            raise ValueError(f"Expected input to call_model to have {expected}, but got {state}")
        _check_history(messages)
        if is_pydantic:
            state.messages = messages
        else:
            state = {**state, "messages": messages}
        return state

    def answer(state: Any, response: BaseMessage) -> dict[str, Any]:
        response.name = name
        calls = response.tool_calls if isinstance(response, AIMessage) else []
        all_direct = bool(calls) and all(c["name"] in return_direct for c in calls)
        left = _get(state, "remaining_steps")
        if left is not None and ((left < 1 and all_direct) or (left < 2 and calls)):
            return {"messages": [AIMessage(id=response.id, content=NEED_MORE_STEPS)]}
        return {"messages": [response]}

    def call_model(state: Any, config: RunnableConfig) -> Any:
        runnable = resolve(state, _runtime())
        return answer(state, runnable.invoke(model_input(state), config))

    async def acall_model(state: Any, config: RunnableConfig) -> Any:
        runnable = await aresolve(state, _runtime())
        return answer(state, await runnable.ainvoke(model_input(state), config))

    def structured_input(state: Any) -> tuple[Any, list[Any]]:
        messages = list(_get(state, "messages"))
        schema: Any = response_format
        if isinstance(response_format, tuple):
            system, schema = response_format
            messages = [SystemMessage(content=system), *messages]
        return schema, messages

    def structured(state: Any, config: RunnableConfig) -> Any:
        schema, messages = structured_input(state)
        bound = _chat_model(resolve(state, _runtime())).with_structured_output(schema)
        return {"structured_response": bound.invoke(messages, config)}

    async def astructured(state: Any, config: RunnableConfig) -> Any:
        schema, messages = structured_input(state)
        bound = _chat_model(await aresolve(state, _runtime())).with_structured_output(schema)
        return {"structured_response": await bound.ainvoke(messages, config)}

    input_schema: Any = state_schema
    if pre_model_hook is not None:
        input_schema = _with_llm_input(state_schema, is_pydantic)

    workflow = StateGraph(state_schema, context_schema=context_schema)
    workflow.add_node(
        "agent", cast(Any, _Node("agent", call_model, acall_model)), input_schema=input_schema
    )
    entry = "agent"
    if pre_model_hook is not None:
        workflow.add_node("pre_model_hook", pre_model_hook)
        workflow.add_edge("pre_model_hook", "agent")
        entry = "pre_model_hook"
    workflow.set_entry_point(entry)
    if post_model_hook is not None:
        workflow.add_node("post_model_hook", post_model_hook)
        workflow.add_edge("agent", "post_model_hook")
    if response_format is not None:
        workflow.add_node(
            "generate_structured_response",
            cast(Any, _Node("generate_structured_response", structured, astructured)),
        )

    def compile_() -> Any:
        return workflow.compile(
            checkpointer=checkpointer,
            store=store,
            interrupt_before=interrupt_before,
            interrupt_after=interrupt_after,
            debug=debug,
            name=name,
        )

    if not tool_list:
        if response_format is not None:
            source = "post_model_hook" if post_model_hook is not None else "agent"
            workflow.add_edge(source, "generate_structured_response")
        return compile_()

    def sends(calls: Sequence[Any], state: Any) -> list[Send]:
        # The Send's argument is checkpointed with the step: a plain dict, not the node's
        # state view.
        if isinstance(state, dict):
            state = {k: state[k] for k in state}
        return [
            Send(
                "tools",
                ToolCallWithContext(__type="tool_call_with_context", tool_call=call, state=state),
            )
            for call in calls
        ]

    def after_answer() -> str:
        if response_format is not None:
            return "generate_structured_response"
        return END

    def should_continue(state: Any) -> Any:
        last = _get(state, "messages")[-1]
        if not isinstance(last, AIMessage) or not last.tool_calls:
            return "post_model_hook" if post_model_hook is not None else after_answer()
        if version == "v1":
            return "tools"
        if post_model_hook is not None:
            return "post_model_hook"
        return sends(last.tool_calls, state)

    workflow.add_node("tools", cast(Any, tool_node))
    agent_paths: list[str] = []
    hook_paths: list[str] = [entry, "tools"]
    if post_model_hook is not None:
        agent_paths.append("post_model_hook")
        hook_paths.append(after_answer())
    else:
        agent_paths += ["tools", after_answer()]

    if post_model_hook is not None:

        def after_hook(state: Any) -> Any:
            messages = _get(state, "messages")
            answered = {m.tool_call_id for m in messages if isinstance(m, ToolMessage)}
            last_ai = next(m for m in reversed(messages) if isinstance(m, AIMessage))
            pending = [c for c in last_ai.tool_calls if c["id"] not in answered]
            if pending:
                return sends(pending, state)
            if isinstance(messages[-1], ToolMessage):
                return entry
            return after_answer()

        workflow.add_conditional_edges("post_model_hook", after_hook, path_map=hook_paths)
    workflow.add_conditional_edges("agent", should_continue, path_map=agent_paths)

    if return_direct:

        def after_tools(state: Any) -> str:
            m: Any = None
            for m in reversed(_get(state, "messages")):
                if not isinstance(m, ToolMessage):
                    break
                if m.name in return_direct:
                    return END
            if isinstance(m, AIMessage) and any(c["name"] in return_direct for c in m.tool_calls):
                return END
            return entry

        workflow.add_conditional_edges("tools", after_tools, path_map=[entry, END])
    else:
        workflow.add_edge("tools", entry)
    return compile_()


def _with_llm_input(state_schema: Any, is_pydantic: bool) -> Any:
    """The agent node's input schema with a pre-model hook: the state plus
    ``llm_input_messages`` (messages shown to the model instead of ``messages``)."""
    if is_pydantic:
        from pydantic import create_model

        return create_model(
            "CallModelInputSchema",
            llm_input_messages=(list[AnyMessage], ...),
            __base__=state_schema,
        )

    class CallModelInputSchema(state_schema):  # type: ignore[misc]
        llm_input_messages: list[AnyMessage]

    return CallModelInputSchema
