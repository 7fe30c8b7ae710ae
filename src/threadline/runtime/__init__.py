"""Runs compiled graphs: supersteps, tasks, interrupts, streaming, retries."""

from .compiled import CompiledStateGraph
from .context import get_config, get_store, get_stream_writer
from .runtime_context import ExecutionInfo, Runtime, get_runtime

__all__ = [
    "CompiledStateGraph",
    "ExecutionInfo",
    "Runtime",
    "get_config",
    "get_runtime",
    "get_store",
    "get_stream_writer",
]
