"""LangGraph's ``langgraph.config``: what a running node can reach without parameters.

``get_config()``, ``get_stream_writer()`` and ``get_store()`` work inside a node (or a task) while
a graph runs, in sync and async code; outside one they raise :class:`ThreadlineError`.
"""

from __future__ import annotations

from .checkpoint.types import RunnableConfig
from .runtime.context import get_config, get_store, get_stream_writer
from .types import StreamWriter

__all__ = ["RunnableConfig", "StreamWriter", "get_config", "get_store", "get_stream_writer"]
