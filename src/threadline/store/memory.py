"""``InMemoryStore``: the Store in this process's memory, for tests and single-process apps.

A stored value is never shared with the caller (the store keeps a private copy and hands out
copies, so mutating what ``get`` returned changes nothing stored), and a value of a type the
serializer cannot store fails at ``put`` here as it would on a database.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from .._copy import private_copy
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

_UNSET: Any = object()


@dataclass
class _Record:
    value: Any  # a private copy: never handed out, only copies of it
    created: float
    updated: float
    created_at: dt.datetime
    updated_at: dt.datetime
    expires: float | None
    ttl_minutes: float | None
    vectors: list[tuple[str, list[float]]]
    doc: Any = _UNSET  # the value's JSON form, for filters (computed on first use)

    def json(self) -> Any:
        if self.doc is _UNSET:
            self.doc = to_jsonable(self.value)
        return self.doc

    def live(self, now: float) -> bool:
        return self.expires is None or self.expires > now


class InMemoryStore(StoreOptions, BaseStore):
    """A :class:`~threadline.store.base.BaseStore` in memory; ``index``, ``ttl`` and ``serde``
    as for the SQL stores. Safe to share between threads."""

    supports_ttl = True

    def __init__(self, **options: Any) -> None:
        StoreOptions.__init__(self, **options)
        # namespace key -> item key -> record
        self._spaces: dict[str, dict[str, _Record]] = {}
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
        n = 0
        with self._lock:
            for prefix, records in list(self._spaces.items()):
                for key in [k for k, r in records.items() if not r.live(now)]:
                    del records[key]
                    n += 1
                if not records:
                    del self._spaces[prefix]
        return n

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

    @staticmethod
    def _touch(r: _Record, now: float, refresh: bool) -> None:
        if refresh and r.ttl_minutes is not None:
            r.expires = now + r.ttl_minutes * 60

    def _get(self, op: GetOp, now: float) -> Item | None:
        r = self._spaces.get(_query.ns_key(op.namespace), {}).get(op.key)
        if r is None or not r.live(now):
            return None
        self._touch(r, now, op.refresh_ttl)
        return Item(
            value=private_copy(r.value),
            key=op.key,
            namespace=op.namespace,
            created_at=r.created_at,
            updated_at=r.updated_at,
        )

    def _put(self, op: PutOp, now: float, vectors: Any) -> None:
        prefix = _query.ns_key(op.namespace)
        if op.value is None:
            records = self._spaces.get(prefix)
            if records is not None:
                records.pop(op.key, None)
                if not records:
                    del self._spaces[prefix]
            return
        # Encoded (and dropped) so that what a database would refuse is refused here too.
        self.serde.dumps(op.value, key=f"{prefix}/{op.key}")
        records = self._spaces.setdefault(prefix, {})
        old = records.get(op.key)
        at = dt.datetime.fromtimestamp(now, dt.timezone.utc)
        records[op.key] = _Record(
            value=private_copy(op.value),
            created=old.created if old is not None else now,
            updated=now,
            created_at=old.created_at if old is not None else at,
            updated_at=at,
            expires=None if op.ttl is None else now + op.ttl * 60,
            ttl_minutes=op.ttl,
            vectors=list(vectors or []),
        )

    def _under(self, prefix: tuple[str, ...]) -> list[str]:
        bounds = _query.prefix_range(prefix)
        if bounds is None:
            return list(self._spaces)
        exact, low, high = bounds
        return [p for p in self._spaces if p == exact or low <= p < high]

    def _search(self, op: SearchOp, now: float, query: list[float] | None) -> list[SearchItem]:
        found = [
            ((p, k), r)
            for p in self._under(op.namespace_prefix)
            for k, r in self._spaces[p].items()
            if r.live(now) and (not op.filter or _query.matches(r.json(), op.filter))
        ]
        page: list[tuple[Any, float | None]]
        if query is None:
            found.sort(key=lambda kr: (-kr[1].updated, kr[0]))
            page = [(ident, None) for ident, _ in found[op.offset : op.offset + op.limit]]
        else:
            scored = [(ident, v) for ident, r in found for _, v in r.vectors]
            unscored = sorted(
                ((ident, r) for ident, r in found if not r.vectors),
                key=lambda kr: (-kr[1].updated, kr[0]),
            )
            page = _query.rank(query, scored, [i for i, _ in unscored], op.offset, op.limit)
        out = []
        for (p, k), score in page:
            r = self._spaces[p][k]
            self._touch(r, now, op.refresh_ttl)
            value = private_copy(r.value)
            out.append(SearchItem(_query.ns_of(p), k, value, r.created_at, r.updated_at, score))
        return out

    def _list(self, op: ListNamespacesOp, now: float) -> list[Any]:
        spaces = [p for p, rs in self._spaces.items() if any(r.live(now) for r in rs.values())]
        return _query.list_namespaces((_query.ns_of(p) for p in spaces), op)
