"""Chat messages in state: ``add_messages``, ``MessagesState`` and ``REMOVE_ALL_MESSAGES``.

``add_messages`` merges by message id, as LangGraph's does: a message whose id is already in
the list replaces it in place, a removal deletes it, anything else is appended (with a fresh
uuid4 id when it has none). With langchain-core installed (``threadline[langchain]``) every
message becomes a langchain-core message, converted as LangGraph converts them; without it the
same rules apply to plain dict messages (``{"role": ..., "content": ...}``), and a removal is
``{"type": "remove", "id": ...}``.

An update that only appends returns ``left + new`` with ``left``'s items untouched, so the runtime
recognises it as an append and stores only the new messages (see docs/design-notes.md).
"""

from __future__ import annotations

import importlib
import threading
import uuid
from collections.abc import Callable
from types import ModuleType
from typing import TYPE_CHECKING, Annotated, Any, Literal

from typing_extensions import TypedDict

from .._copy import share_type
from ..errors import InvalidUpdateError
from .schema import PURE_REDUCERS

if TYPE_CHECKING:
    from langchain_core.messages import AnyMessage
else:
    try:
        from langchain_core.messages import AnyMessage
    except ImportError:  # without langchain-core, messages are dicts
        AnyMessage = dict[str, Any]

__all__ = ["REMOVE_ALL_MESSAGES", "AnyMessage", "MessagesState", "add_messages"]

#: The id of a removal that clears the list: ``RemoveMessage(id=REMOVE_ALL_MESSAGES)`` (or
#: ``{"type": "remove", "id": REMOVE_ALL_MESSAGES}``). Messages after it in the same update stay.
REMOVE_ALL_MESSAGES = "__remove_all__"

Format = Literal["langchain-openai"]
Reducer = Callable[[Any, Any], list[Any]]


def _load_langchain() -> ModuleType | None:
    try:
        module = importlib.import_module("langchain_core.messages")
    except ImportError:
        return None
    # Messages in state are shared with the nodes that read them, not copied: every update
    # goes through add_messages, which replaces messages and never mutates one it has stored.
    share_type(module.BaseMessage)
    return module


_LC = _load_langchain()


def _langchain() -> ModuleType | None:
    """``langchain_core.messages``, or None when langchain-core is not installed."""
    return _LC


def add_messages(left: Any = None, right: Any = None, *, format: Format | None = None) -> Any:
    """Merge the messages of ``right`` into ``left`` by id; return the new list.

    ``right`` (and ``left``) may be one message or a list of them: langchain-core messages,
    dicts with ``role``/``content`` (or ``type``), ``(role, content)`` tuples, or strings (a
    human message). Messages without an id get a uuid4 string. A message with an id already
    in ``left`` replaces that message where it stands; ``RemoveMessage(id=...)`` deletes one
    (an unknown id is an error) and ``RemoveMessage(id=REMOVE_ALL_MESSAGES)`` clears the list.
    ``left`` is never modified.

    ``format="langchain-openai"`` converts the merged messages to the OpenAI content format
    (needs langchain-core). Called with neither list, ``add_messages(format=...)`` returns the
    reducer with that format, for ``Annotated[list, add_messages(format="langchain-openai")]``.
    """
    if left is None and right is None:
        return _with_format(format)
    if left is None or right is None:
        raise ValueError(
            "add_messages needs both 'left' and 'right'; got only"
            f" {'left' if left is not None else 'right'!r}. Call add_messages(format=...) with"
            " neither to get a configured reducer"
        )
    return _merge(left, right, format)


PURE_REDUCERS.add(add_messages)


def _with_format(format: Format | None) -> Reducer:
    def reducer(left: Any, right: Any) -> list[Any]:
        return _merge(left, right, format)

    reducer.__name__ = reducer.__qualname__ = "add_messages"
    reducer.__doc__ = add_messages.__doc__
    PURE_REDUCERS.add(reducer)
    return reducer


def _merge(left: Any, right: Any, format: Format | None) -> list[Any]:
    if format is not None and format != "langchain-openai":
        raise ValueError(f"add_messages: unknown format={format!r}; expected 'langchain-openai'")
    lc = _langchain()
    ops: _Ops = _LangchainOps(lc) if lc is not None else _DictOps()
    if _is_own_result(left):
        old = left  # converted and given ids when this function returned it
    else:
        old = ops.coerce(left if isinstance(left, list) else [left])  # read, never modified
        # Stored messages carry ids already; one that does not gets a copy with an id, so
        # that a list other readers share is never changed.
        if ops.lacks_ids(old):
            old = [
                m if ops.id_of(m) is not None else ops.with_id(m, _new_id(), own=False) for m in old
            ]
    new = ops.coerce(right if isinstance(right, list) else [right])
    if new is right:
        new = list(new)  # ids are filled in below: not in the caller's list

    known_ids = False  # whether some message of `right` came with an id of its own
    clear_at = -1
    for i, m in enumerate(new):
        mid = ops.id_of(m)
        if mid is None:
            new[i] = ops.with_id(m, _new_id(), own=True)
            continue
        known_ids = True
        if mid == REMOVE_ALL_MESSAGES and ops.is_removal(m):
            clear_at = i
    if clear_at >= 0:
        merged = new[clear_at + 1 :]
    elif not known_ids:
        merged = old + new  # fresh ids cannot match: a pure append
    else:
        merged = _merge_by_id(ops, old, new)
    if format == "langchain-openai":
        merged = _openai_format(lc, merged)
    else:
        _remember(merged)
    return merged


# The lists add_messages returned last, with their lengths. The left side of the next merge is
# almost always one of them (the state's list from the previous update): checking it again
# (types, ids) would cost time in proportion to the conversation, on every update.
_RECENT: dict[int, tuple[list[Any], int]] = {}
_RECENT_MAX = 64


_RECENT_LOCK = threading.Lock()  # nodes of one step may merge at once, in threads


def _remember(result: list[Any]) -> None:
    with _RECENT_LOCK:
        if len(_RECENT) >= _RECENT_MAX:
            _RECENT.pop(next(iter(_RECENT)), None)  # the oldest
        _RECENT[id(result)] = (result, len(result))


def _is_own_result(left: Any) -> bool:
    entry = _RECENT.get(id(left))
    return entry is not None and entry[0] is left and entry[1] == len(left)


def _merge_by_id(ops: _Ops, old: list[Any], new: list[Any]) -> list[Any]:
    merged = list(old)
    position = {ops.id_of(m): i for i, m in enumerate(merged)}
    removed: set[Any] = set()
    for m in new:
        mid = ops.id_of(m)
        at = position.get(mid)
        if at is None:
            if ops.is_removal(m):
                raise InvalidUpdateError(
                    f"Attempting to delete a message with an ID that doesn't exist ({mid!r}):"
                    " remove only ids the messages list holds (state['messages'][i].id)"
                )
            position[mid] = len(merged)
            merged.append(m)
        elif ops.is_removal(m):
            removed.add(mid)
        else:
            removed.discard(mid)
            merged[at] = m
    if removed:
        merged = [m for m in merged if ops.id_of(m) not in removed]
    return merged


def _new_id() -> str:
    return str(uuid.uuid4())


def _openai_format(lc: ModuleType | None, messages: list[Any]) -> list[Any]:
    if lc is None:
        raise InvalidUpdateError(
            "add_messages(format='langchain-openai') needs langchain-core: pip install"
            " 'threadline[langchain]'"
        )
    converted: list[Any] = lc.convert_to_messages(lc.convert_to_openai_messages(messages))
    return converted


class _Ops:
    """How messages of one representation are read and built."""

    def coerce(self, messages: list[Any]) -> list[Any]:
        raise NotImplementedError

    def id_of(self, message: Any) -> Any:
        raise NotImplementedError

    def lacks_ids(self, messages: list[Any]) -> bool:
        return not all(self.id_of(m) is not None for m in messages)

    def with_id(self, message: Any, mid: str, *, own: bool) -> Any:
        """``message`` with id ``mid``; ``own``: the caller's new message, may be updated."""
        raise NotImplementedError

    def is_removal(self, message: Any) -> bool:
        raise NotImplementedError


class _LangchainOps(_Ops):
    def __init__(self, lc: ModuleType) -> None:
        self.lc = lc

    def coerce(self, messages: list[Any]) -> list[Any]:
        lc = self.lc
        base, chunk = lc.BaseMessage, lc.BaseMessageChunk
        if all(issubclass(t, base) and not issubclass(t, chunk) for t in set(map(type, messages))):
            return messages
        out: list[Any] = []
        for m in messages:
            if isinstance(m, dict) and m.get("type") == "remove" and "role" not in m:
                m = lc.RemoveMessage(id=m["id"])  # the dict form of a removal, as without lc
            out.append(m)
        return [lc.message_chunk_to_message(m) for m in lc.convert_to_messages(out)]

    def id_of(self, message: Any) -> Any:
        return message.id

    def lacks_ids(self, messages: list[Any]) -> bool:
        return None in {m.id for m in messages}  # one pass in C-speed comprehension

    def with_id(self, message: Any, mid: str, *, own: bool) -> Any:
        if own:
            message.id = mid  # as LangGraph does: the node's message object gets the id
            return message
        return message.model_copy(update={"id": mid})

    def is_removal(self, message: Any) -> bool:
        return isinstance(message, self.lc.RemoveMessage)


class _DictOps(_Ops):
    def coerce(self, messages: list[Any]) -> list[Any]:
        return [_as_dict(m) for m in messages]

    def id_of(self, message: Any) -> Any:
        return message.get("id")

    def with_id(self, message: Any, mid: str, *, own: bool) -> Any:
        return {**message, "id": mid}  # never change a dict the caller still holds

    def is_removal(self, message: Any) -> bool:
        return bool(message.get("type") == "remove")


def _as_dict(message: Any) -> dict[str, Any]:
    if isinstance(message, dict):
        if "role" in message or "type" in message:
            return message
        raise InvalidUpdateError(
            f"message dict {message!r} has neither 'role' nor 'type'; write"
            " {'role': 'user', 'content': ...}"
        )
    if isinstance(message, str):
        return {"role": "user", "content": message}
    if isinstance(message, (tuple, list)) and len(message) == 2:
        role, content = message
        return {"role": role, "content": content}
    raise InvalidUpdateError(
        f"cannot use {type(message).__name__} {message!r} as a message without langchain-core:"
        " use a dict {'role': ..., 'content': ...}, a (role, content) tuple or a string, or pip"
        " install 'threadline[langchain]'"
    )


class MessagesState(TypedDict):
    """A state holding one list of chat messages, merged by :func:`add_messages`."""

    messages: Annotated[list[AnyMessage], add_messages]
