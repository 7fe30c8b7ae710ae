"""Reading LangGraph's ``"json"`` values (``loads_typed(("json", data))``), safely.

LangGraph's ``JsonPlusSerializer`` wrote JSON before it moved to msgpack, and still reads it:
plain JSON, LangChain ``lc: 1`` envelopes (messages) and ``lc: 2`` constructor envelopes
(``{"lc": 2, "type": "constructor", "id": [module..., name], "args": [...], "kwargs": {...}}``).
Here a constructor envelope builds an object only when its id names one of a fixed set of
standard-library types, LangGraph's ``Send``/``Interrupt``/``Command`` (read as threadline's),
langchain-core messages or a class registered with the serializer's registry; any other id
stays the dict it is (as LangGraph leaves ids outside its allowlist). Nothing is imported
because a value names it, and nothing is unpickled.
"""

from __future__ import annotations

import collections
import datetime as dt
import decimal
import ipaddress
import json
import pathlib
import re
import uuid
import zoneinfo
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...errors import CorruptCheckpointError

if TYPE_CHECKING:
    from . import MsgpackSerializer

_STDLIB: dict[tuple[str, ...], Callable[..., Any]] = {
    ("datetime", "datetime"): dt.datetime,
    ("datetime", "date"): dt.date,
    ("datetime", "time"): dt.time,
    ("datetime", "timedelta"): dt.timedelta,
    ("datetime", "timezone"): dt.timezone,
    ("uuid", "UUID"): uuid.UUID,
    ("decimal", "Decimal"): decimal.Decimal,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("collections", "deque"): collections.deque,
    ("ipaddress", "IPv4Address"): ipaddress.IPv4Address,
    ("ipaddress", "IPv4Interface"): ipaddress.IPv4Interface,
    ("ipaddress", "IPv4Network"): ipaddress.IPv4Network,
    ("ipaddress", "IPv6Address"): ipaddress.IPv6Address,
    ("ipaddress", "IPv6Interface"): ipaddress.IPv6Interface,
    ("ipaddress", "IPv6Network"): ipaddress.IPv6Network,
    ("pathlib", "Path"): pathlib.Path,
    ("pathlib", "PosixPath"): pathlib.Path,
    ("pathlib", "WindowsPath"): pathlib.PureWindowsPath,
    ("pathlib._local", "Path"): pathlib.Path,
    ("pathlib._local", "PosixPath"): pathlib.Path,
    ("pathlib._local", "WindowsPath"): pathlib.PureWindowsPath,
    ("zoneinfo", "ZoneInfo"): zoneinfo.ZoneInfo,
    ("re", "compile"): re.compile,
}
# The one method LangGraph's encoder named that is kept: it wrote datetimes as
# ``method="fromisoformat", args=[iso]`` (LangGraph 1.x ignores the method and loads None).
_ISO = frozenset({dt.datetime, dt.date, dt.time})
_LANGGRAPH_TYPES = {"Send", "Interrupt", "Command"}
_LC_MESSAGES = {
    f"{name}{chunk}": f"langchain_core.messages.{module}:{name}{chunk}"
    for module, name in (
        ("ai", "AIMessage"),
        ("human", "HumanMessage"),
        ("system", "SystemMessage"),
        ("tool", "ToolMessage"),
        ("function", "FunctionMessage"),
        ("chat", "ChatMessage"),
    )
    for chunk in ("", "Chunk")
}
_LC_MESSAGES["RemoveMessage"] = "langchain_core.messages.modifier:RemoveMessage"


def loads_json(serde: MsgpackSerializer, payload: bytes, max_depth: int) -> Any:
    """The value of a LangGraph ``("json", payload)`` pair."""
    reader = _Reader(serde)
    try:
        value = json.loads(payload, object_hook=reader.revive)
    except RecursionError:
        raise CorruptCheckpointError(_too_deep(max_depth)) from None
    except (ValueError, TypeError) as exc:  # JSONDecodeError, UnicodeDecodeError
        raise CorruptCheckpointError(f"a ('json', ...) value is not valid JSON: {exc}") from None
    if _depth(value, max_depth) > max_depth:
        raise CorruptCheckpointError(_too_deep(max_depth))
    return value


def _too_deep(limit: int) -> str:
    return f"a ('json', ...) value nests more than {limit} levels deep (max_depth)"


def _depth(value: Any, limit: int, level: int = 1) -> int:
    if level > limit:
        return level
    if isinstance(value, dict):
        items: Any = value.values()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return level - 1
    deepest = level
    for item in items:
        deepest = max(deepest, _depth(item, limit, level + 1))
        if deepest > limit:
            break
    return deepest


class _Reader:
    def __init__(self, serde: MsgpackSerializer) -> None:
        self._serde = serde

    def revive(self, value: dict[str, Any]) -> Any:
        lc = value.get("lc")
        if lc == 2 and value.get("type") == "constructor" and isinstance(value.get("id"), list):
            return self._constructor(value)
        if lc == 1 and isinstance(value.get("id"), list):
            return self._langchain(value)
        return value

    def _langchain(self, value: dict[str, Any]) -> Any:
        kind, id_ = value.get("type"), value["id"]
        if kind == "secret":
            return None  # as LangGraph's reviver: secrets are not read back from the env
        if kind == "constructor" and id_ and isinstance(kwargs := value.get("kwargs", {}), dict):
            ref = _LC_MESSAGES.get(str(id_[-1]))
            prefix = [str(part) for part in id_[:-1]]
            known = prefix[:1] == ["langchain_core"] or prefix[:2] == ["langchain", "schema"]
            if ref is not None and known:
                return _build(self._serde._resolve_class(ref, "model"), id_, (), kwargs)
        raise CorruptCheckpointError(
            f"a ('json', ...) value holds a LangChain {kind!r} object {_dotted(id_)}, which"
            " threadline does not read: only langchain-core messages are read back"
        )

    def _constructor(self, value: dict[str, Any]) -> Any:
        id_ = value["id"]
        key = tuple(str(part) for part in id_)
        args = value.get("args") or ()
        kwargs = value.get("kwargs") or {}
        if not isinstance(args, list | tuple) or not isinstance(kwargs, dict):
            raise CorruptCheckpointError(
                f"a ('json', ...) value's constructor {_dotted(id_)} has malformed arguments"
            )
        target = self._target(key)
        if target is None:
            return value  # not a type threadline reads: the dict as it is, as in LangGraph
        if target in _ISO and value.get("method") == "fromisoformat" and len(args) == 1:
            return _build(getattr(target, "fromisoformat"), id_, args, {})  # noqa: B009
        return _build(target, id_, args, kwargs)

    def _target(self, key: tuple[str, ...]) -> Callable[..., Any] | None:
        found = _STDLIB.get(key)
        if found is not None:
            return found
        if len(key) < 2:
            return None
        module, name = ".".join(key[:-1]), key[-1]
        if module == "langgraph.types" and name in _LANGGRAPH_TYPES:
            from ... import types

            target: Callable[..., Any] = getattr(types, name)
            return target
        if module.startswith("langchain_core.messages") and name in _LC_MESSAGES:
            return self._serde._resolve_class(_LC_MESSAGES[name], "model")
        entry = self._serde.registry._by_ref.get(f"{module}:{name}")
        return None if entry is None else entry.cls


def _build(target: Callable[..., Any], id_: Any, args: Any, kwargs: dict[str, Any]) -> Any:
    if kwargs and not all(isinstance(k, str) for k in kwargs):
        raise CorruptCheckpointError(f"malformed keyword arguments for {_dotted(id_)}")
    try:
        return target(*args, **kwargs)
    except Exception as exc:
        raise CorruptCheckpointError(
            f"a ('json', ...) value's {_dotted(id_)} does not rebuild from its stored"
            f" arguments ({type(exc).__name__}: {exc})"
        ) from None


def _dotted(id_: Any) -> str:
    text = ".".join(str(part) for part in id_) if isinstance(id_, list) else repr(id_)
    return repr(text if len(text) <= 200 else text[:200] + "...")
