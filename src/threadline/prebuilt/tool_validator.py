"""LangGraph's ``ValidationNode``: check a model's tool calls against schemas without running them.

Each tool call of the last ``AIMessage`` is validated with its schema; the answer is a
``ToolMessage`` holding the validated arguments as JSON, or the error (with
``additional_kwargs={"is_error": True}``) so the model can try again.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

from langchain_core.messages import AIMessage, ToolMessage
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langchain_core.utils.pydantic import is_basemodel_subclass
from pydantic import BaseModel, ValidationError

from . import _deps  # noqa: F401  (a clear ImportError without langchain-core)

__all__ = ["ValidationNode"]


def _default_format_error(error: BaseException, call: Any, schema: type[BaseModel]) -> str:
    return f"{error!r}\n\nRespond after fixing all validation errors."


class ValidationNode(Runnable[Any, Any]):
    """Validates the last AI message's tool calls; schemas are pydantic models, tools with a
    pydantic ``args_schema``, or functions (their signature becomes the schema)."""

    def __init__(
        self,
        schemas: Sequence[BaseTool | type[BaseModel] | Callable[..., Any]],
        *,
        format_error: Callable[[BaseException, Any, type[BaseModel]], str] | None = None,
        name: str = "validation",
        tags: list[str] | None = None,
    ) -> None:
        from langchain_core.tools.base import create_schema_from_function

        self.name = name
        self.tags = tags
        self._format_error = format_error or _default_format_error
        self.schemas_by_name: dict[str, type[BaseModel]] = {}
        for schema in schemas:
            if isinstance(schema, BaseTool):
                args = schema.args_schema
                if not isinstance(args, type) or not is_basemodel_subclass(args):
                    raise ValueError(
                        f"Validation node only works with tools that have a pydantic BaseModel"
                        f" args_schema. Got {schema.name} with args_schema: {args}."
                    )
                self.schemas_by_name[schema.name] = cast(type[BaseModel], args)
            elif isinstance(schema, type) and issubclass(schema, BaseModel):
                self.schemas_by_name[schema.__name__] = schema
            elif callable(schema):
                model = create_schema_from_function("Validation", schema)
                self.schemas_by_name[schema.__name__] = cast(type[BaseModel], model)
            else:
                raise ValueError(
                    "Unsupported input to ValidationNode. Expected BaseModel, tool or function."
                    f" Got: {type(schema)}."
                )

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        if isinstance(input, list):
            messages, as_list = input, True
        elif isinstance(input, dict) and input.get("messages"):
            messages, as_list = input["messages"], False
        else:
            raise ValueError("No message found in input")
        last = messages[-1]
        if not isinstance(last, AIMessage):
            raise ValueError("Last message is not an AIMessage")
        out = [self._check(call) for call in last.tool_calls]
        return out if as_list else {"messages": out}

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        return self.invoke(input, config)

    def _check(self, call: Any) -> ToolMessage:
        schema = self.schemas_by_name[call["name"]]
        try:
            content = schema.model_validate(call["args"]).model_dump_json()
        except ValidationError as exc:
            return ToolMessage(
                content=self._format_error(exc, call, schema),
                name=call["name"],
                tool_call_id=call["id"],
                additional_kwargs={"is_error": True},
            )
        return ToolMessage(content=content, name=call["name"], tool_call_id=call["id"])
