"""LangGraph's ``langgraph.prebuilt``: the tool-calling agent and its parts.

``create_react_agent`` builds a model-and-tools loop as a compiled graph; ``ToolNode`` runs a
model's tool calls; ``tools_condition`` routes to it. Needs langchain-core
(``pip install 'threadline[langchain]'``).
"""

from __future__ import annotations

from . import _deps  # noqa: F401  (a clear ImportError without langchain-core)
from .chat_agent_executor import create_react_agent
from .tool_node import InjectedState, InjectedStore, ToolNode, ToolRuntime, tools_condition
from .tool_validator import ValidationNode

__all__ = [
    "InjectedState",
    "InjectedStore",
    "ToolNode",
    "ToolRuntime",
    "ValidationNode",
    "create_react_agent",
    "tools_condition",
]
