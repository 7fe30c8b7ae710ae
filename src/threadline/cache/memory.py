"""``InMemoryCache``: node results kept in this process, copied in and out."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from .base import BaseCache, FullKey, Namespace

__all__ = ["InMemoryCache"]


class InMemoryCache(BaseCache[Any]):
    """A dict of ``namespace -> key -> (value, expiry)``, safe to share between threads.

    Values are deep-copied when stored and when read, so a node that mutates a result it
    got from the cache changes nothing stored.
    """

    def __init__(self) -> None:
        self._data: dict[Namespace, dict[str, tuple[Any, float | None]]] = {}
        self._lock = threading.Lock()

    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        now = time.time()
        found: dict[FullKey, Any] = {}
        with self._lock:
            for ns, key in keys:
                entries = self._data.get(tuple(ns))
                entry = None if entries is None else entries.get(key)
                if entry is None:
                    continue
                value, expiry = entry
                if expiry is not None and now >= expiry:
                    del entries[key]  # type: ignore[union-attr]
                    continue
                found[(tuple(ns), key)] = copy.deepcopy(value)
        return found

    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, Any]:
        return self.get(keys)

    def set(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        now = time.time()
        with self._lock:
            for (ns, key), (value, ttl) in pairs.items():
                expiry = None if ttl is None else now + ttl
                self._data.setdefault(tuple(ns), {})[key] = (copy.deepcopy(value), expiry)

    async def aset(self, pairs: Mapping[FullKey, tuple[Any, int | None]]) -> None:
        self.set(pairs)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        with self._lock:
            if namespaces is None:
                self._data.clear()
            else:
                for ns in namespaces:
                    self._data.pop(tuple(ns), None)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        self.clear(namespaces)
