"""The functional API (LangGraph's ``langgraph.func``): ``@entrypoint`` and ``@task``."""

from ._entrypoint import Entrypoint, entrypoint
from ._task import task

__all__ = ["Entrypoint", "entrypoint", "task"]
