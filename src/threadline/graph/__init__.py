"""Build graphs: ``StateGraph``, ``START``, ``END``, and chat state (``MessagesState``).

``MessagesState`` and ``add_messages`` live in :mod:`threadline.graph.message`; they are loaded
on first use, so that importing the graph API does not import langchain-core.
"""

from typing import TYPE_CHECKING, Any

from .builder import StateGraph
from .spec import END, START

if TYPE_CHECKING:
    from .message import MessagesState, add_messages

__all__ = ["END", "START", "MessagesState", "StateGraph", "add_messages"]

_LAZY = {"MessagesState", "add_messages"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from . import message

        return getattr(message, name)
    raise AttributeError(f"module 'threadline.graph' has no attribute {name!r}")
