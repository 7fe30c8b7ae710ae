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
from typing import Any, Literal, TypeVar

from .._copy import private_copy
from ..checkpoint.jsonable import to_jsonable
from ..checkpoint.serde import MsgpackSerializer
from . import _prepare, _query
from ._sqlstore import StoreOptions
from .base import (
    NOT_PROVIDED,
    BaseStore,
    GetOp,
    Item,
    ListNamespacesOp,
    NotProvided,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    trusted_item,
    validate_key,
    validate_labels,
    validate_put,
)

__all__ = ["InMemoryStore"]

_UNSET: Any = object()
_new_item = Item.__new__
_I = TypeVar("_I", bound=Item)
_UTC = dt.timezone.utc


@dataclass(slots=True)
class _Record:
    value: Any  # a private copy: never handed out, only copies of it
    updated: float
    created_at: dt.datetime
    updated_at: dt.datetime
    expires: float | None
    ttl_minutes: float | None
    vectors: list[tuple[str, list[float]]]
    flat: bool  # the value holds only immutable atoms: a shallow copy isolates it
    doc: Any = _UNSET  # the value's JSON form, for filters (computed on first use)

    def json(self) -> Any:
        if self.doc is _UNSET:
            self.doc = to_jsonable(self.value)
        return self.doc


class InMemoryStore(StoreOptions, BaseStore):
    """A :class:`~threadline.store.base.BaseStore` in memory; ``index``, ``ttl`` and ``serde``
    as for the SQL stores. Safe to share between threads."""

    supports_ttl = True

    def __init__(self, **options: Any) -> None:
        StoreOptions.__init__(self, **options)
        # namespace key -> item key -> record; and the same dicts by namespace (for get)
        self._spaces: dict[str, dict[str, _Record]] = {}
        self._by_ns: dict[tuple[str, ...], tuple[tuple[str, ...], dict[str, _Record]]] = {}
        self._lock = threading.Lock()
        self._flat_room = _flat_room(self.serde)

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        plan = _prepare.plan(ops, self._index)
        return self._apply(plan, _prepare.embed(plan, self._index))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        plan = _prepare.plan(ops, self._index)
        return self._apply(plan, await _prepare.aembed(plan, self._index))

    # ------------------------------------------------------------------ one-item shortcuts
    # ``get`` and ``put`` are most of a store's traffic; without an index (nothing to embed)
    # they skip building and planning a batch of one. Same checks, same results.

    def get(
        self, namespace: tuple[str, ...], key: str, *, refresh_ttl: bool | None = None
    ) -> Item | None:
        # A namespace holding items was checked when they were put: look it up first (the
        # entry holds the checked tuple), and check it only when it holds nothing.
        try:
            space = self._by_ns.get(namespace) if type(namespace) is tuple else None
        except TypeError:  # an unhashable label
            space = None
        if space is None:
            space = self._by_ns.get(validate_labels(namespace))  # e.g. a list
            if space is None:
                validate_key(key)
                return None
        ns, records = space
        r = records.get(key) if type(key) is str else None
        if r is None:
            validate_key(key)
            if type(key) is str:
                return None
            r = records.get(key)  # a str subclass
            if r is None:
                return None
        # No lock to read: dict reads are atomic, and an item replaced meanwhile is either
        # the old or the new one, as if the get ran first or last.
        if r.expires is not None:
            now = time.time()
            if r.expires <= now:
                return None
            if r.ttl_minutes is not None and self._refresh(refresh_ttl):
                with self._lock:
                    r.expires = now + r.ttl_minutes * 60
        item = _new_item(Item)
        item.value = r.value.copy() if r.flat else private_copy(r.value)
        item.key = key
        item.namespace = ns
        item.created_at = r.created_at
        item.updated_at = r.updated_at
        return item

    async def aget(
        self, namespace: tuple[str, ...], key: str, *, refresh_ttl: bool | None = None
    ) -> Item | None:
        return self.get(namespace, key, refresh_ttl=refresh_ttl)

    def put(
        self,
        namespace: tuple[str, ...],
        key: str,
        value: dict[str, Any],
        index: Literal[False] | list[str] | None = None,
        *,
        ttl: float | NotProvided | None = NOT_PROVIDED,
    ) -> None:
        if self._index is not None or value is None:
            return super().put(namespace, key, value, index, ttl=ttl)
        ns, key, checked, _, minutes = validate_put(namespace, key, value, index, self._ttl(ttl))
        self._write(ns, key, checked, minutes, None, time.time())
        return None

    async def aput(
        self,
        namespace: tuple[str, ...],
        key: str,
        value: dict[str, Any],
        index: Literal[False] | list[str] | None = None,
        *,
        ttl: float | NotProvided | None = NOT_PROVIDED,
    ) -> None:
        if self._index is not None or value is None:
            return await super().aput(namespace, key, value, index, ttl=ttl)
        return self.put(namespace, key, value, index, ttl=ttl)

    def sweep_ttl(self) -> int:
        """Delete expired items; returns how many."""
        now = time.time()
        n = 0
        with self._lock:
            for prefix, records in list(self._spaces.items()):
                for key in [k for k, r in records.items() if not _live(r, now)]:
                    del records[key]
                    n += 1
                if not records:
                    del self._spaces[prefix]
                    del self._by_ns[_query.ns_of(prefix)]
        return n

    async def asweep_ttl(self) -> int:
        """Async :meth:`sweep_ttl`."""
        return self.sweep_ttl()

    # ------------------------------------------------------------------ operations

    def _apply(self, plan: _prepare.Plan, vectors: tuple[Any, Any]) -> list[Result]:
        per_put, queries = vectors
        now = time.time()
        results: list[Result] = []
        # Values are checked before the lock is taken: that is the slow part.
        flat = {
            i: self._check(op.namespace, op.key, op.value)
            for i, op in enumerate(plan.ops)
            if isinstance(op, PutOp) and op.value is not None and not _prepare.is_skipped(op)
        }
        with self._lock:
            for i, op in enumerate(plan.ops):
                if _prepare.is_skipped(op):
                    results.append(None)
                elif isinstance(op, GetOp):
                    results.append(self._read(op.namespace, op.key, op.refresh_ttl, now))
                elif isinstance(op, PutOp):
                    vs = per_put.get((op.namespace, op.key))
                    self._write(op.namespace, op.key, op.value, op.ttl, vs, now, flat.get(i))
                    results.append(None)
                elif isinstance(op, SearchOp):
                    results.append(self._search(op, now, queries.get(i)))
                else:
                    results.append(self._list(op, now))
        return results

    def _check(self, namespace: tuple[str, ...], key: str, value: dict[str, Any]) -> bool:
        """Refuse what a database would refuse: a value the serializer cannot store. Returns
        whether the value is flat (see :func:`_flat`)."""
        if self._flat_room and _flat(value, self._flat_room):
            return True
        # Encoded (and dropped) so that the serializer's own error is raised.
        self.serde.dumps(value, key=f"{_query.ns_key(namespace)}/{key}")
        return False

    def _read(self, ns: tuple[str, ...], key: str, refresh: bool, now: float) -> Item | None:
        space = self._by_ns.get(ns)
        r = None if space is None else space[1].get(key)
        if r is None or (r.expires is not None and r.expires <= now):
            return None
        if refresh and r.ttl_minutes is not None:
            r.expires = now + r.ttl_minutes * 60
        return self._item(r, ns, key)

    @staticmethod
    def _item(r: _Record, ns: tuple[str, ...], key: str, cls: type[_I] = Item) -> _I:  # type: ignore[assignment]
        value = r.value.copy() if r.flat else private_copy(r.value)
        return trusted_item(cls, value, key, ns, r.created_at, r.updated_at)

    def _write(
        self,
        ns: tuple[str, ...],
        key: str,
        value: dict[str, Any] | None,
        ttl: float | None,
        vectors: Any,
        now: float,
        flat: bool | None = None,
    ) -> None:
        """Store (``value`` None: delete) one item. ``flat`` None: the value is not checked yet
        and the caller does not hold the lock; else it is checked (``flat`` tells what
        :meth:`_check` said) and the caller holds the lock."""
        prefix = _query.ns_key(ns)
        if value is None:
            records = self._spaces.get(prefix)
            if records is not None:
                records.pop(key, None)
                if not records:
                    del self._spaces[prefix]
                    del self._by_ns[ns]
            return
        locked = flat is not None
        if flat is None:
            flat = self._check(ns, key, value)
        at = dt.datetime.fromtimestamp(now, _UTC)
        record = _Record(
            value if flat else private_copy(value),  # flat: ``value`` is already a copy
            now,
            at,
            at,
            None if ttl is None else now + ttl * 60,
            ttl,
            list(vectors) if vectors else [],
            flat,
        )
        if locked:
            self._store(ns, prefix, key, record)
        else:
            with self._lock:
                self._store(ns, prefix, key, record)

    def _store(self, ns: tuple[str, ...], prefix: str, key: str, record: _Record) -> None:
        records = self._spaces.get(prefix)
        if records is None:
            records = self._spaces[prefix] = {}
            self._by_ns[ns] = (ns, records)
        old = records.get(key)
        if old is not None:
            record.created_at = old.created_at
        records[key] = record

    def _under(self, prefix: tuple[str, ...]) -> list[str]:
        bounds = _query.prefix_range(prefix)
        if bounds is None:
            return list(self._spaces)
        exact, low, high = bounds
        return [p for p in self._spaces if p == exact or low <= p < high]

    def _search(self, op: SearchOp, now: float, query: list[float] | None) -> list[SearchItem]:
        test = _query.compile_filter(op.filter) if op.filter else None
        found = []
        for p in self._under(op.namespace_prefix):
            for k, r in self._spaces[p].items():
                if r.expires is not None and r.expires <= now:
                    continue
                if test is not None and not test(r.doc if r.doc is not _UNSET else r.json()):
                    continue
                found.append(((p, k), r))
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
            if op.refresh_ttl and r.ttl_minutes is not None:
                r.expires = now + r.ttl_minutes * 60
            item = self._item(r, _query.ns_of(p), k, SearchItem)
            item.score = score
            out.append(item)
        return out

    def _list(self, op: ListNamespacesOp, now: float) -> list[Any]:
        spaces = [p for p, rs in self._spaces.items() if any(_live(r, now) for r in rs.values())]
        return _query.list_namespaces((_query.ns_of(p) for p in spaces), op)


def _live(r: _Record, now: float) -> bool:
    return r.expires is None or r.expires > now


def _flat_room(serde: Any) -> int:
    """How many encoded bytes a flat value may take for :func:`_flat` to vouch for it (0: never).

    Only the default serializer, whose limits it knows: a flat value within them is always
    stored (a dict of plain atoms packs natively, one container deep).
    """
    if type(serde) is not MsgpackSerializer:
        return 0
    return serde.max_decoded_bytes


def _flat(value: dict[str, Any], room: int) -> bool:
    """Whether ``value`` (a dict) holds only ASCII ``str`` keys and ASCII ``str``, 64-bit
    ``int``, ``float``, ``bool`` or None values, and encodes to at most ``room`` bytes: then
    the serializer certainly stores it, and a shallow copy shares nothing mutable.

    Anything else (nesting, other types, non-ASCII text, which may hold a lone surrogate) is
    left to the serializer. The size is a bound: msgpack spends at most 5 header bytes on a
    str and 9 bytes on a number, and ASCII is one byte a character.
    """
    size = 6  # the frame's version byte and the map's header
    for k, v in value.items():
        if type(k) is not str or not k.isascii():
            return False
        t = type(v)
        if t is str:
            if not v.isascii():
                return False
            size += len(v)
        elif t is int:
            if not -(2**63) <= v < 2**64:
                return False
        elif t is not float and t is not bool and v is not None:
            return False
        size += len(k) + 14
    return size <= room
