"""Runs compiled graphs: supersteps, tasks, interrupts, streaming, retries."""

from .compiled import CompiledStateGraph
from .context import get_config, get_stream_writer

__all__ = ["CompiledStateGraph", "get_config", "get_stream_writer"]
