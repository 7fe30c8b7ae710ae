"""Build graphs: ``StateGraph``, ``START`` and ``END``."""

from .builder import StateGraph
from .spec import END, START

__all__ = ["END", "START", "StateGraph"]
