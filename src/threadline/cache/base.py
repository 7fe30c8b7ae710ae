"""The cache contract (LangGraph's ``BaseCache``) and the default cache key."""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["BaseCache", "FullKey", "Namespace", "default_cache_key"]

ValueT = TypeVar("ValueT")
Namespace = tuple[str, ...]
FullKey = tuple[Namespace, str]


class BaseCache(ABC, Generic[ValueT]):
    """Stores values under ``(namespace, key)`` with an optional time to live (seconds).

    A node's cached result lives in namespace ``("__threadline_node__", node_name)``.
    """

    @abstractmethod
    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """The values found (and not expired) for ``keys``."""

    @abstractmethod
    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        """Async :meth:`get`."""

    @abstractmethod
    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Store each value with its ttl (None: never expires)."""

    @abstractmethod
    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        """Async :meth:`set`."""

    @abstractmethod
    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Delete the values of ``namespaces`` (all values when None)."""

    @abstractmethod
    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """Async :meth:`clear`."""


def _freeze(value: Any) -> Any:
    """Equal inputs give equal keys whatever their dict order."""
    if isinstance(value, Mapping):
        return ("__map__", sorted(((repr(k), _freeze(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return [_freeze(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return ("__set__", sorted(repr(v) for v in value))
    return value


def default_cache_key(*args: Any, **kwargs: Any) -> str:
    """A hash of the arguments' serialized form (their ``repr`` for unregistered types)."""
    from ..checkpoint.serde import MsgpackSerializer
    from ..errors import SerializationError

    frozen = _freeze([list(args), kwargs])
    try:
        data = MsgpackSerializer(compression=None).dumps(frozen, "cache key")
    except SerializationError:
        data = repr(frozen).encode()
    return hashlib.sha256(data).hexdigest()
