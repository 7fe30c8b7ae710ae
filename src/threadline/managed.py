"""LangGraph's ``langgraph.managed``: state keys whose value the runtime provides.

Declare them in the state schema; nodes read them, nobody writes them::

    class State(TypedDict):
        messages: Annotated[list, add_messages]
        remaining_steps: RemainingSteps   # steps left before recursion_limit
        is_last_step: IsLastStep          # True in the step that recursion_limit allows last

Each is ``Annotated[type, marker]``; :func:`managed_value_of` tells the runtime which marker an
annotation carries.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass
from typing import Annotated, Any

import typing_extensions

__all__ = ["IsLastStep", "ManagedValue", "RemainingSteps", "managed_value_of"]


@dataclass(frozen=True)
class ManagedValue:
    """The marker of a state key whose value the runtime computes each step (not callable, so
    it is never mistaken for a reducer)."""

    name: str


IS_LAST_STEP = ManagedValue("is_last_step")
REMAINING_STEPS = ManagedValue("remaining_steps")

#: ``True`` when the step running is the last one ``recursion_limit`` allows.
IsLastStep = Annotated[bool, IS_LAST_STEP]
#: How many more steps ``recursion_limit`` allows, counting the one running.
RemainingSteps = Annotated[int, REMAINING_STEPS]


def managed_value_of(annotation: Any) -> ManagedValue | None:
    """The :class:`ManagedValue` marker of a state key's annotation, or None."""
    while typing_extensions.get_origin(annotation) in _QUALIFIERS:
        annotation = typing_extensions.get_args(annotation)[0]
    if typing.get_origin(annotation) is Annotated:
        for meta in annotation.__metadata__:
            if isinstance(meta, ManagedValue):
                return meta
    return None


# ReadOnly came in typing_extensions 4.9; older versions simply have no such qualifier.
_QUALIFIERS = {
    q
    for q in (getattr(typing_extensions, n, None) for n in ("Required", "NotRequired", "ReadOnly"))
    if q is not None
}
