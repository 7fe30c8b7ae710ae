"""What the four SQL stores share: batches planned, embedded and run as one procedure.

A backend supplies only how a procedure reaches its connection: :meth:`SqlStore._run` (sync)
or :meth:`SqlStore._arun` (async), each given the procedure and whether to run it in one
transaction (it writes more than one statement).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
import time
from collections.abc import Iterable
from typing import Any, Literal

from ..checkpoint.serde import MsgpackSerializer, Serializer
from . import _prepare, _sql
from .base import (
    NOT_PROVIDED,
    BaseStore,
    GetOp,
    IndexConfig,
    Item,
    NotProvided,
    Op,
    PutOp,
    Result,
    TTLConfig,
    validate_key,
    validate_labels,
    validate_put,
)

__all__ = ["SqlStore"]

_NO_PUTS: dict[Any, Any] = {}
_NO_QUERIES: dict[int, list[float]] = {}


def _check_ttl_config(ttl: TTLConfig | None) -> TTLConfig | None:
    if ttl is None:
        return None
    if not isinstance(ttl, dict):
        raise TypeError(f"ttl must be a dict (a TTLConfig), got {type(ttl).__name__}")
    unknown = set(ttl) - {"refresh_on_read", "default_ttl", "sweep_interval_minutes"}
    if unknown:
        raise ValueError(
            f"unknown ttl settings {sorted(unknown)}; known: refresh_on_read, default_ttl,"
            " sweep_interval_minutes"
        )
    default = ttl.get("default_ttl")
    if default is not None and (not isinstance(default, int | float) or default <= 0):
        raise ValueError(f"ttl['default_ttl'] is in minutes and must be > 0, got {default!r}")
    return ttl


class StoreOptions:
    """The options every store takes: ``index``, ``ttl``, ``serde``."""

    def __init__(
        self,
        *,
        index: IndexConfig | None = None,
        ttl: TTLConfig | None = None,
        serde: Serializer | None = None,
    ) -> None:
        self.index_config = index
        self._index = _prepare.Index.make(index)
        self.ttl_config = _check_ttl_config(ttl)
        self.serde: Serializer = serde if serde is not None else MsgpackSerializer()
        # An encrypting serializer's values must not also be stored as plain JSON.
        self._store_docs = not getattr(self.serde, "encrypted", False)

    def _sweep_interval(self, minutes: float | None) -> float:
        if minutes is None:
            minutes = (self.ttl_config or {}).get("sweep_interval_minutes") or 5
        if not isinstance(minutes, int | float) or minutes <= 0:
            raise ValueError(f"sweep interval must be > 0 minutes, got {minutes!r}")
        return float(minutes) * 60


class SqlStore(StoreOptions, BaseStore):
    """Base of the SQLite and PostgreSQL stores (see :mod:`threadline.store`)."""

    supports_ttl = True
    _flavor: _sql.Flavor

    def __init__(self, **options: Any) -> None:
        StoreOptions.__init__(self, **options)
        self._sweeper: Any = None
        self._sweeper_stop: Any = None

    # ------------------------------------------------------------------ driver hooks

    def _run(self, proc: _sql.Proc, write: bool) -> Any:
        raise NotImplementedError(f"{type(self).__name__} is async: use the a* methods")

    async def _arun(self, proc: _sql.Proc, write: bool) -> Any:
        raise NotImplementedError(f"{type(self).__name__} is sync: use the methods without a")

    # ------------------------------------------------------------------ batches

    def _context(self, plan: _prepare.Plan, vectors: tuple[Any, Any]) -> _sql.Context:
        per_put, queries = vectors
        return _sql.Context(
            flavor=self._flavor,
            serde=self.serde,
            store_docs=self._store_docs,
            now=time.time(),
            default_fields=None if self._index is None else self._index.fields,
            put_vectors={
                k: [(name, _sql.pack_vector(v)) for name, v in vs] for k, vs in per_put.items()
            },
            query_vectors=queries,
        )

    def _needs_tx(self, plan: _prepare.Plan) -> bool:
        """Whether the batch writes more than one statement, and so needs a transaction.

        A lone put without vectors is one upsert, atomic on its own: one round trip.
        """
        puts = [op for op in plan.ops if isinstance(op, PutOp)]
        if not puts:
            return False
        return len(puts) > 1 or puts[0].value is None or self._index is not None

    def _read_context(self) -> _sql.Context:
        """The context of a batch that embeds nothing (a get, a put without an index)."""
        return _sql.Context(
            self._flavor, self.serde, self._store_docs, time.time(), None, _NO_PUTS, _NO_QUERIES
        )

    # A get and a put without an index are most of a store's traffic: they skip building and
    # planning a batch of one (same checks, same statement, same result).

    def _put_op(
        self, namespace: Any, key: Any, value: Any, index: Any, ttl: float | NotProvided | None
    ) -> PutOp | None:
        """The checked :class:`PutOp` of a ``put`` that is one upsert, else None (a delete,
        or vectors to write: a batch in a transaction)."""
        if self._index is not None or value is None:
            return None
        return PutOp(*validate_put(namespace, key, value, index, self._ttl(ttl)))

    def put(
        self,
        namespace: tuple[str, ...],
        key: str,
        value: dict[str, Any],
        index: Literal[False] | list[str] | None = None,
        *,
        ttl: float | NotProvided | None = NOT_PROVIDED,
    ) -> None:
        op = self._put_op(namespace, key, value, index, ttl)
        if op is None:
            return super().put(namespace, key, value, index, ttl=ttl)
        self._run(_sql.put(self._read_context(), op), False)
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
        op = self._put_op(namespace, key, value, index, ttl)
        if op is None:
            return await super().aput(namespace, key, value, index, ttl=ttl)
        await self._arun(_sql.put(self._read_context(), op), False)
        return None

    def get(
        self, namespace: tuple[str, ...], key: str, *, refresh_ttl: bool | None = None
    ) -> Item | None:
        op = GetOp(validate_labels(namespace), validate_key(key), self._refresh(refresh_ttl))
        item: Item | None = self._run(_sql.get(self._read_context(), op), False)
        return item

    async def aget(
        self, namespace: tuple[str, ...], key: str, *, refresh_ttl: bool | None = None
    ) -> Item | None:
        op = GetOp(validate_labels(namespace), validate_key(key), self._refresh(refresh_ttl))
        item: Item | None = await self._arun(_sql.get(self._read_context(), op), False)
        return item

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        plan = _prepare.plan(ops, self._index)
        ctx = self._context(plan, _prepare.embed(plan, self._index))
        results: list[Result] = self._run(_sql.run_ops(ctx, plan.ops), self._needs_tx(plan))
        return results

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        plan = _prepare.plan(ops, self._index)
        ctx = self._context(plan, await _prepare.aembed(plan, self._index))
        results: list[Result] = await self._arun(_sql.run_ops(ctx, plan.ops), self._needs_tx(plan))
        return results

    # ------------------------------------------------------------------ TTL

    def sweep_ttl(self) -> int:
        """Delete expired items, in batches that never hold locks for long; returns how many."""
        total = 0
        while True:
            n: int = self._run(_sql.sweep(self._flavor, time.time()), True)
            total += n
            if n < _sql.SWEEP_BATCH:
                return total

    async def asweep_ttl(self) -> int:
        """Async :meth:`sweep_ttl`."""
        total = 0
        while True:
            n: int = await self._arun(_sql.sweep(self._flavor, time.time()), True)
            total += n
            if n < _sql.SWEEP_BATCH:
                return total

    def start_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> concurrent.futures.Future[None]:
        """Sweep expired items every ``sweep_interval_minutes`` (default: the ttl config's, or
        5) in a background thread until :meth:`stop_ttl_sweeper`."""
        interval = self._sweep_interval(sweep_interval_minutes)
        if self._sweeper is not None and not self._sweeper.done():
            return self._sweeper  # type: ignore[no-any-return]
        stop = threading.Event()
        future: concurrent.futures.Future[None] = concurrent.futures.Future()

        def loop() -> None:
            try:
                while not stop.wait(interval):
                    self.sweep_ttl()
                future.set_result(None)
            except BaseException as exc:  # reported through the future
                future.set_exception(exc)

        threading.Thread(target=loop, name="threadline-store-sweeper", daemon=True).start()
        self._sweeper, self._sweeper_stop = future, stop
        return future

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        """Stop the background sweeper; True once it has stopped (within ``timeout``)."""
        if self._sweeper is None:
            return True
        self._sweeper_stop.set()
        try:
            self._sweeper.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            return False
        except Exception:
            pass
        self._sweeper = None
        return True

    async def astart_ttl_sweeper(self, sweep_interval_minutes: float | None = None) -> Any:
        """Async :meth:`start_ttl_sweeper`: an asyncio task on the running loop."""
        interval = self._sweep_interval(sweep_interval_minutes)

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                await self.asweep_ttl()

        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(loop())
        return self._sweeper

    async def astop_ttl_sweeper(self) -> bool:
        """Async :meth:`stop_ttl_sweeper`."""
        if self._sweeper is None:
            return True
        self._sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._sweeper
        self._sweeper = None
        return True
