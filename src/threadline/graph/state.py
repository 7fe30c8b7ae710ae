"""LangGraph's ``langgraph.graph.state`` path: the builder and the compiled graph."""

from ..runtime.compiled import CompiledStateGraph
from .builder import StateGraph

__all__ = ["CompiledStateGraph", "StateGraph"]
