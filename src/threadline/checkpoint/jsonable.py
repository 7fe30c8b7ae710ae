"""The one conversion of stored values to JSON data, for everything that shows values as JSON
(the Store's filters today; the server and the command line).

Stored values keep their exact types in the serializer's format; this is the view of them as
JSON: datetimes and dates in ISO 8601, UUIDs and Decimals as strings, bytes as base64, tuples and
sets as lists, Enums as their value, dataclasses, pydantic models and LangChain messages as dicts
of their fields. It never fails: anything else becomes its ``str()``.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import enum
import uuid
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ["to_jsonable"]

_PLAIN = (str, int, float, bool, type(None))


def to_jsonable(value: Any, _depth: int = 0) -> Any:
    """``value`` as JSON data (dicts with str keys, lists, str, int, float, bool, None)."""
    if isinstance(value, _PLAIN):
        return value
    if _depth > 200:
        raise ValueError("value is nested more than 200 levels deep")
    d = _depth + 1
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v, d) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v, d) for v in value]
    if isinstance(value, set | frozenset):
        items = [to_jsonable(v, d) for v in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, uuid.UUID | Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, enum.Enum):
        return to_jsonable(value.value, d)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name), d) for f in dataclasses.fields(value)}
    dump = getattr(value, "model_dump", None)  # pydantic v2 models, LangChain messages
    if callable(dump) and not isinstance(value, type):
        try:
            return to_jsonable(dump(), d)
        except Exception:
            pass
    return str(value)
