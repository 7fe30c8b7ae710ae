"""LangGraph's ``langgraph.config``: what a running node can reach without parameters.

``get_config()``, ``get_stream_writer()`` and ``get_store()`` work inside a node (or a task) while
a graph runs, in sync and async code; outside one they raise :class:`ThreadlineError`.
"""

from __future__ import annotations

from typing import Any

from .checkpoint.types import RunnableConfig
from .errors import ThreadlineError
from .runtime.context import current_task, get_config, get_stream_writer
from .types import StreamWriter

__all__ = ["RunnableConfig", "StreamWriter", "get_config", "get_store", "get_stream_writer"]

_NOT_WIRED: Any = object()


def get_store() -> Any:
    """The store the running graph was compiled with (``compile(store=...)``), or None.

    Raises :class:`ThreadlineError` outside a running node.
    """
    task = current_task("get_store()")
    # The task context carries the graph's store once the runtime passes one; a context
    # without the attribute comes from a runtime that has no store support.
    store = getattr(task, "store", _NOT_WIRED)
    if store is _NOT_WIRED:
        raise ThreadlineError(
            f"get_store() in node {task.node!r}: this threadline build does not pass a store to"
            " nodes yet; use a store object your node can reach directly"
        )
    return store
