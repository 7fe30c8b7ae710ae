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

_ATOMS: frozenset[type] = frozenset(
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
    if (
        dataclasses.is_dataclass(value)
        and getattr(type(value), "__dataclass_params__").frozen  # noqa: B009
        and all(type(getattr(value, f.name)) in _ATOMS for f in dataclasses.fields(value))
    ):
        return value
    return copy.deepcopy(value)
