"""Runs compiled graphs: supersteps, tasks, interrupts, streaming, retries."""

from .compiled import CompiledStateGraph
from .context import get_config, get_store, get_stream_writer
from .runtime_context import (
    BaseUser,
    ExecutionInfo,
    RunControl,
    Runtime,
    ServerInfo,
    get_runtime,
)

__all__ = [
    "BaseUser",
    "CompiledStateGraph",
    "ExecutionInfo",
    "RunControl",
    "Runtime",
    "ServerInfo",
    "get_config",
    "get_runtime",
    "get_store",
    "get_stream_writer",
]
