"""``InMemoryStore``: the Store in this process's memory, for tests and single-process apps.

Values are kept as the serializer's bytes, as the durable stores keep them: a stored value is
never shared with the caller (mutating what ``get`` returned changes nothing stored), and a
value of a type the serializer cannot store fails at ``put`` here as it would on a database.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..checkpoint.jsonable import to_jsonable
from . import _prepare, _query
from ._sqlstore import StoreOptions
from .base import (
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
)

__all__ = ["InMemoryStore"]


@dataclass
class _Record:
    data: bytes
    doc: Any  # the value's JSON form, for filters
    created: float
    updated: float
    expires: float | None
    ttl_minutes: float | None
    vectors: list[tuple[str, list[float]]]


class InMemoryStore(StoreOptions, BaseStore):
    """A :class:`~threadline.store.base.BaseStore` in memory; ``index``, ``ttl`` and ``serde``
    as for the SQL stores. Safe to share between threads."""

    supports_ttl = True

    def __init__(self, **options: Any) -> None:
        StoreOptions.__init__(self, **options)
        self._items: dict[tuple[str, str], _Record] = {}
        self._lock = threading.Lock()

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        plan = _prepare.plan(ops, self._index)
        return self._apply(plan, _prepare.embed(plan, self._index))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        plan = _prepare.plan(ops, self._index)
        return self._apply(plan, await _prepare.aembed(plan, self._index))

    def sweep_ttl(self) -> int:
        """Delete expired items; returns how many."""
        now = time.time()
        with self._lock:
            dead = [k for k, r in self._items.items() if r.expires is not None and r.expires <= now]
            for k in dead:
                del self._items[k]
        return len(dead)

    async def asweep_ttl(self) -> int:
        """Async :meth:`sweep_ttl`."""
        return self.sweep_ttl()

    # ------------------------------------------------------------------ operations

    def _apply(self, plan: _prepare.Plan, vectors: tuple[Any, Any]) -> list[Result]:
        per_put, queries = vectors
        now = time.time()
        results: list[Result] = []
        with self._lock:
            for i, op in enumerate(plan.ops):
                if _prepare.is_skipped(op):
                    results.append(None)
                elif isinstance(op, GetOp):
                    results.append(self._get(op, now))
                elif isinstance(op, PutOp):
                    self._put(op, now, per_put.get((op.namespace, op.key)))
                    results.append(None)
                elif isinstance(op, SearchOp):
                    results.append(self._search(op, now, queries.get(i)))
                else:
                    results.append(self._list(op, now))
        return results

    def _live(self, now: float) -> Iterable[tuple[tuple[str, str], _Record]]:
        return ((k, r) for k, r in self._items.items() if r.expires is None or r.expires > now)

    def _touch(self, r: _Record, now: float, refresh: bool) -> None:
        if refresh and r.ttl_minutes is not None:
            r.expires = now + r.ttl_minutes * 60

    def _item(self, k: tuple[str, str], r: _Record, score: float | None = None) -> SearchItem:
        return SearchItem(
            _query.ns_of(k[0]),
            k[1],
            self.serde.loads(r.data),
            dt.datetime.fromtimestamp(r.created, dt.timezone.utc),
            dt.datetime.fromtimestamp(r.updated, dt.timezone.utc),
            score,
        )

    def _get(self, op: GetOp, now: float) -> Item | None:
        k = (_query.ns_key(op.namespace), op.key)
        r = self._items.get(k)
        if r is None or (r.expires is not None and r.expires <= now):
            return None
        self._touch(r, now, op.refresh_ttl)
        s = self._item(k, r)
        return Item(
            value=s.value,
            key=s.key,
            namespace=s.namespace,
            created_at=s.created_at,
            updated_at=s.updated_at,
        )

    def _put(self, op: PutOp, now: float, vectors: Any) -> None:
        k = (_query.ns_key(op.namespace), op.key)
        if op.value is None:
            self._items.pop(k, None)
            return
        data = self.serde.dumps(op.value, key=f"{k[0]}/{k[1]}")
        old = self._items.get(k)
        self._items[k] = _Record(
            data=data,
            doc=to_jsonable(op.value),
            created=old.created if old is not None else now,
            updated=now,
            expires=None if op.ttl is None else now + op.ttl * 60,
            ttl_minutes=op.ttl,
            vectors=list(vectors or []),
        )

    def _search(self, op: SearchOp, now: float, query: list[float] | None) -> list[SearchItem]:
        bounds = _query.prefix_range(op.namespace_prefix)
        found = [
            (k, r)
            for k, r in self._live(now)
            if (bounds is None or k[0] == bounds[0] or bounds[1] <= k[0] < bounds[2])
            and _query.matches(r.doc, op.filter)
        ]
        found.sort(key=lambda kr: (-kr[1].updated, kr[0]))
        page: list[tuple[Any, float | None]]
        if query is None:
            page = [(k, None) for k, _ in found[op.offset : op.offset + op.limit]]
        else:
            scored = [(k, v) for k, r in found for _, v in r.vectors]
            unscored = [k for k, r in found if not r.vectors]
            page = _query.rank(query, scored, unscored, op.offset, op.limit)
        out = []
        for k, score in page:
            r = self._items[k]
            self._touch(r, now, op.refresh_ttl)
            out.append(self._item(k, r, score))
        return out

    def _list(self, op: ListNamespacesOp, now: float) -> list[Any]:
        spaces = {k[0] for k, _ in self._live(now)}
        return _query.list_namespaces((_query.ns_of(p) for p in spaces), op)
