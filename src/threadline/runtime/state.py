"""A thread's state read from storage alone, without the graph object that wrote it.

For readers that serve threads whose graph they do not hold (a server whose config no longer
has that graph, an operations tool). Values come back as a dict of the stored channels (the
reserved ones left out, see :mod:`~threadline.runtime.stored_format`); ``next``, ``tasks`` and
``interrupts`` are read from the stored task records and pending writes, as ``get_state`` reads
them. A graph's own ``get_state`` is the better view when the graph is at hand: it shows a
model state as its model and fills in the reducers' empty values.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from ..checkpoint.base import parse_config
from ..checkpoint.types import RunnableConfig, make_config
from ..types import StateSnapshot
from .compiled import _ANY_STATE, _snapshot_of

__all__ = ["aread_history", "aread_state", "read_history", "read_state"]


def read_state(saver: Any, config: RunnableConfig) -> StateSnapshot:
    """The state of ``config``'s thread at its head (or at the checkpoint it names)."""
    thread_id, ns, checkpoint_id = parse_config(config)
    found = saver.load(thread_id, ns, checkpoint_id, shared=True, task_writes_only=True)
    return _snapshot_of(_ANY_STATE, found, thread_id, ns)


async def aread_state(saver: Any, config: RunnableConfig) -> StateSnapshot:
    """Async :func:`read_state`."""
    thread_id, ns, checkpoint_id = parse_config(config)
    found = await saver.aload(thread_id, ns, checkpoint_id, shared=True, task_writes_only=True)
    return _snapshot_of(_ANY_STATE, found, thread_id, ns)


def read_history(
    saver: Any,
    config: RunnableConfig,
    *,
    filter: Mapping[str, Any] | None = None,
    before: RunnableConfig | None = None,
    limit: int | None = None,
) -> Iterator[StateSnapshot]:
    """Every checkpoint of the thread, newest first, as :func:`read_state` shows them."""
    thread_id, ns, _ = parse_config(config)
    listed = saver.list(make_config(thread_id, ns, ""), filter=filter, before=before, limit=limit)
    for found in listed:
        yield _snapshot_of(_ANY_STATE, found, thread_id, ns)


async def aread_history(
    saver: Any,
    config: RunnableConfig,
    *,
    filter: Mapping[str, Any] | None = None,
    before: RunnableConfig | None = None,
    limit: int | None = None,
) -> AsyncIterator[StateSnapshot]:
    """Async :func:`read_history`."""
    thread_id, ns, _ = parse_config(config)
    listed = saver.alist(make_config(thread_id, ns, ""), filter=filter, before=before, limit=limit)
    async for found in listed:
        yield _snapshot_of(_ANY_STATE, found, thread_id, ns)
