"""Private copies of state values that share immutable leaves.

``copy.deepcopy`` is slow and copies strings and numbers it never needs to. This copies
containers and leaves immutable atoms shared, which is what isolation of state needs.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime
import decimal
import enum
import uuid
from typing import Any

# Exact types shared rather than copied: immutable atoms, plus the subclasses of the bases
# registered with share_type(), learned the first time one is met.
_ATOMS: set[type] = set(
    {
        str,
        bytes,
        int,
        float,
        bool,
        complex,
        type(None),
        decimal.Decimal,
        uuid.UUID,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
        range,
    }
)


_SHARED_BASES: tuple[type, ...] = ()


def share_type(base: type) -> None:
    """Share instances of ``base`` (and its subclasses) instead of copying them.

    For values the library itself never mutates and replaces instead (chat messages, which
    ``add_messages`` replaces by id): copying each of them on every read would make a step cost
    grow with the length of the conversation.
    """
    global _SHARED_BASES
    if base not in _SHARED_BASES:
        _SHARED_BASES = (*_SHARED_BASES, base)


def private_copy(value: Any) -> Any:
    """Return a copy of ``value`` that shares nothing mutable with it."""
    t = type(value)
    if t in _ATOMS:
        return value
    if t is list:
        return [v if type(v) in _ATOMS else private_copy(v) for v in value]
    if t is dict:
        return {k: (v if type(v) in _ATOMS else private_copy(v)) for k, v in value.items()}
    if t is tuple:
        if all(type(v) in _ATOMS for v in value):
            return value
        return tuple(private_copy(v) for v in value)
    if t is frozenset:
        return value
    if t is set:
        return set(value)
    if isinstance(value, enum.Enum):
        return value
    if _SHARED_BASES and isinstance(value, _SHARED_BASES):
        _ATOMS.add(t)
        return value
    if (
        dataclasses.is_dataclass(value)
        and getattr(type(value), "__dataclass_params__").frozen  # noqa: B009
        and all(type(getattr(value, f.name)) in _ATOMS for f in dataclasses.fields(value))
    ):
        return value
    return copy.deepcopy(value)
