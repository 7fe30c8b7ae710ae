"""LangGraph's ``langgraph.constants``: the graph's entry and exit, and reserved tags and keys."""

from __future__ import annotations

from .graph.spec import END, START

__all__ = ["CONF", "CONFIG_KEY_CHECKPOINTER", "END", "START", "TAG_HIDDEN", "TAG_NOSTREAM", "TASKS"]

#: Tag of a chat model (or runnable) whose tokens ``stream_mode="messages"`` leaves out.
TAG_NOSTREAM = "nostream"
#: Tag that hides a run from tracing, as LangSmith reads it.
TAG_HIDDEN = "langsmith:hidden"
#: The key of a config that holds its run options (``thread_id``, ``checkpoint_id``, ...).
CONF = "configurable"
#: The reserved channel name LangGraph uses for pending ``Send`` packets; no state key may use it.
TASKS = "__pregel_tasks"
#: The ``configurable`` key LangGraph reads a checkpointer from (reserved; threadline takes the
#: checkpointer from ``compile(checkpointer=...)``).
CONFIG_KEY_CHECKPOINTER = "__pregel_checkpointer"
