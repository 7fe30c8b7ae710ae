"""LangGraph's ``langgraph.graph.state`` path: the builder and the compiled graph.

``START``, ``END``, ``Command``, ``Send`` and ``RetryPolicy`` can be imported from here too, as
programs written for LangGraph do.
"""

from ..runtime.compiled import CompiledStateGraph
from ..types import Command as Command
from ..types import RetryPolicy as RetryPolicy
from ..types import Send as Send
from .builder import StateGraph
from .spec import END as END
from .spec import START as START

__all__ = ["CompiledStateGraph", "StateGraph"]
