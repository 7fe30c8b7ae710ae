"""In-process checkpointer. Stores encoded bytes, exactly as a database would."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ThreadlineError, ThreadNotFoundError
from . import encoding
from .base import (
    BaseCheckpointSaver,
    base_gone_error,
    borrowed_base,
    conflict_error,
    metadata_matches,
    missing_head_error,
    validate_filter,
    validate_thread_id,
    versions_written,
)
from .binding import COLUMNS, StoredValue
from .lease import Lease, LeaseOp, LeaseRow, LeaseState, busy_error, lease_lost, take
from .types import CheckpointRow, ThreadInfo, VersionRow, WriteKeys, WriteRow, to_datetime

__all__ = ["InMemorySaver", "MemorySaver"]

_BATCH = 100


@dataclass
class _Thread:
    created_at: float
    updated_at: float
    expires_at: float | None = None
    metadata: bytes | None = None
    seq: int = 0
    heads: dict[str, str] = field(default_factory=dict)
    checkpoints: dict[str, CheckpointRow] = field(default_factory=dict)
    # Per namespace: checkpoint ids in commit order, and their seqs (for bisect).
    order: dict[str, list[str]] = field(default_factory=dict)
    order_seq: dict[str, list[int]] = field(default_factory=dict)
    versions: dict[tuple[str, str], VersionRow] = field(default_factory=dict)
    writes: dict[tuple[str, str], dict[tuple[str, int], WriteRow]] = field(default_factory=dict)


class InMemorySaver(BaseCheckpointSaver):
    """Keeps everything in this process's memory; lost when it exits. For tests and demos.

    Values are stored serialized, so isolation and serializability are the same as on disk.
    """

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._threads: dict[str, _Thread] = {}
        # Leases outlive their thread's deletion: epochs must only grow (see lease.py).
        self._leases: dict[str, LeaseRow] = {}
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ primitives

    def _read_checkpoint(
        self, thread_id: str, ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        with self._lock:
            thread = self._threads.get(thread_id)
            if thread is None:
                return None
            if checkpoint_id is None:
                head = thread.heads.get(ns)
                if head is None:
                    return None
                row = thread.checkpoints.get(head)
                if row is None:
                    raise missing_head_error(thread_id, ns, head)
                return row
            row = thread.checkpoints.get(checkpoint_id)
            return row if row is not None and row.ns == ns else None

    def _read_versions(self, thread_id: str, wanted: set[tuple[str, str]]) -> list[VersionRow]:
        with self._lock:
            thread = self._threads.get(thread_id)
            if thread is None:
                return []
            out: dict[tuple[str, str], VersionRow] = {}
            for channel, writer in wanted:
                cursor: str | None = writer
                steps = 0  # a crafted endless chain stops here; the reader refuses it
                limit = encoding.MAX_CHAIN_LENGTH
                while cursor is not None and (channel, cursor) not in out and steps <= limit:
                    row = thread.versions.get((channel, cursor))
                    if row is None:
                        break
                    out[(channel, cursor)] = row
                    cursor = row.base
                    steps += 1
            return list(out.values())

    def _read_writes(self, thread_id: str, ns: str, checkpoint_id: str) -> list[WriteRow]:
        with self._lock:
            thread = self._threads.get(thread_id)
            if thread is None:
                return []
            return list(thread.writes.get((ns, checkpoint_id), {}).values())

    def _locate_checkpoint(self, checkpoint_id: str) -> tuple[str, str] | None:
        with self._lock:
            for thread_id, thread in self._threads.items():
                row = thread.checkpoints.get(checkpoint_id)
                if row is not None:
                    return thread_id, row.ns
        return None

    async def _alocate_checkpoint(self, checkpoint_id: str) -> tuple[str, str] | None:
        return self._locate_checkpoint(checkpoint_id)

    def _iter_checkpoints(
        self, thread_id: str, ns: str | None, before_seq: int | None
    ) -> Iterator[list[CheckpointRow]]:
        with self._lock:
            thread = self._threads.get(thread_id)
            if thread is None:
                return
            if ns is None:
                rows = sorted(thread.checkpoints.values(), key=lambda r: r.seq, reverse=True)
                if before_seq is not None:
                    rows = [r for r in rows if r.seq < before_seq]
            else:
                ids = thread.order.get(ns, [])
                end = len(ids)
                if before_seq is not None:
                    end = bisect.bisect_left(thread.order_seq[ns], before_seq)
                rows = [thread.checkpoints[i] for i in reversed(ids[:end])]
        for start in range(0, len(rows), _BATCH):
            yield rows[start : start + _BATCH]

    def _commit(
        self,
        row: CheckpointRow,
        versions: Sequence[VersionRow],
        expected_head: str | None,
        thread_metadata: bytes | None,
        expires_at: float | None,
        lease: LeaseOp | None = None,
    ) -> int:
        with self._lock:
            now = time.time()
            self._check_lease(row.thread_id, lease, now)
            thread = self._threads.get(row.thread_id)
            head = None if thread is None else thread.heads.get(row.ns)
            if head != expected_head:
                raise conflict_error(row.thread_id, expected_head, head)
            base = borrowed_base(row, versions, expected_head)
            if base is not None and (thread is None or base not in thread.checkpoints):
                raise base_gone_error(row.thread_id, row)
            self._renew_in_commit(row.thread_id, lease, now)
            if thread is None:
                thread = self._threads[row.thread_id] = _Thread(row.created_at, row.created_at)
            for one in (row.before, row):
                if one is None:
                    continue
                thread.seq += 1
                thread.checkpoints[one.id] = replace(one, seq=thread.seq, before=None)
                thread.order.setdefault(one.ns, []).append(one.id)
                thread.order_seq.setdefault(one.ns, []).append(thread.seq)
            for v in versions:
                thread.versions[(v.channel, v.writer)] = v
            thread.heads[row.ns] = row.id
            thread.updated_at = row.created_at
            thread.expires_at = expires_at
            if thread_metadata is not None:
                thread.metadata = thread_metadata
            return thread.seq

    def _commit_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        rows: Sequence[WriteRow],
        expected_head: str | None,
        lease: Lease | None = None,
    ) -> None:
        with self._lock:
            if lease is not None:
                self._check_lease(thread_id, LeaseOp("hold", lease), time.time())
            thread = self._threads.get(thread_id)
            head = None if thread is None else thread.heads.get(ns)
            if thread is None or head != expected_head:
                raise conflict_error(thread_id, expected_head, head)
            row = thread.checkpoints.get(checkpoint_id)
            if row is None or row.ns != ns:  # a checkpoint of another namespace is not found
                raise self._not_found(thread_id, ns, checkpoint_id)
            bucket = thread.writes.setdefault((ns, checkpoint_id), {})
            for w in rows:
                bucket.setdefault((w.task_id, w.idx), w)

    def _rewind(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        expected_head: str | None,
        lease: LeaseOp | None,
        expires_at: float | None,
        keep_writes: WriteKeys | None,
    ) -> int | None:
        with self._lock:
            now = time.time()
            self._check_lease(thread_id, lease, now)
            thread = self._threads.get(thread_id)
            target = None if thread is None else thread.checkpoints.get(checkpoint_id)
            if thread is None or target is None or target.ns != ns:
                return None
            head = thread.heads.get(ns)
            if expected_head is not None and head != expected_head:
                raise conflict_error(thread_id, expected_head, head)
            self._renew_in_commit(thread_id, lease, now)
            if keep_writes is not None:
                own = thread.writes.get((ns, checkpoint_id), {})
                for write in [k for k in own if k not in keep_writes]:
                    del own[write]
            doomed = [r for r in thread.checkpoints.values() if r.seq > target.seq]
            for row in doomed:
                del thread.checkpoints[row.id]
                thread.writes.pop((row.ns, row.id), None)
                for key in versions_written(row.id, row.refs):
                    thread.versions.pop(key, None)
            for name in {ns} | {r.ns for r in doomed}:
                keep = bisect.bisect_right(thread.order_seq[name], target.seq)
                del thread.order[name][keep:], thread.order_seq[name][keep:]
                if thread.order[name]:
                    thread.heads[name] = thread.order[name][-1]
                else:
                    del thread.order[name], thread.order_seq[name]
                    thread.heads.pop(name, None)
            thread.updated_at, thread.expires_at = now, expires_at
            return len(doomed)

    async def _arewind(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        expected_head: str | None,
        lease: LeaseOp | None,
        expires_at: float | None,
        keep_writes: WriteKeys | None,
    ) -> int | None:
        return self._rewind(
            thread_id, ns, checkpoint_id, expected_head, lease, expires_at, keep_writes
        )

    def _check_lease(self, thread_id: str, op: LeaseOp | None, now: float) -> None:
        """The lease part of a commit, before its compare-and-swap (under the lock)."""
        if op is None:
            return
        current = self._leases.get(thread_id)
        if op.mode == "acquire":
            row, state = take(current, op.lease.owner, op.lease.ttl, now)
            if not state.acquired:
                raise busy_error(thread_id, state, None)
            self._leases[thread_id] = row
            op.lease.epoch, op.lease.expires_at, op.lease.released = (
                row.epoch,
                row.expires_at,
                False,
            )
        elif op.mode == "check":
            if current is not None and current.busy_for("", now):
                raise busy_error(
                    thread_id,
                    LeaseState(False, current.epoch, current.owner, current.expires_at),
                    None,
                )
        elif current is None or current.owner is None or current.epoch != op.lease.epoch:
            raise lease_lost(thread_id, op.lease.epoch)

    def _renew_in_commit(self, thread_id: str, op: LeaseOp | None, now: float) -> None:
        if op is None or op.mode not in ("hold", "release"):
            return
        row = self._leases[thread_id]
        if op.mode == "release":
            row.owner, row.expires_at = None, 0.0
        else:
            row.expires_at = op.lease.expires_at = now + op.lease.ttl

    def _lease_acquire(self, thread_id: str, owner: str, ttl: float) -> LeaseState:
        with self._lock:
            row, state = take(self._leases.get(thread_id), owner, ttl, time.time())
            self._leases[thread_id] = row
            return state

    def _lease_renew(self, thread_id: str, epoch: int, ttl: float, release: bool) -> float | None:
        with self._lock:
            row = self._leases.get(thread_id)
            if row is None or row.owner is None or row.epoch != epoch:
                return None
            if release:
                row.owner, row.expires_at = None, 0.0
            else:
                row.expires_at = time.time() + ttl
            return row.expires_at

    async def _alease_acquire(self, thread_id: str, owner: str, ttl: float) -> LeaseState:
        return self._lease_acquire(thread_id, owner, ttl)

    async def _alease_renew(
        self, thread_id: str, epoch: int, ttl: float, release: bool
    ) -> float | None:
        return self._lease_renew(thread_id, epoch, ttl, release)

    # Async primitives run the sync ones: nothing here blocks.

    async def _aread_checkpoint(
        self, thread_id: str, ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        return self._read_checkpoint(thread_id, ns, checkpoint_id)

    async def _aread_versions(
        self, thread_id: str, wanted: set[tuple[str, str]]
    ) -> list[VersionRow]:
        return self._read_versions(thread_id, wanted)

    async def _aread_writes(self, thread_id: str, ns: str, checkpoint_id: str) -> list[WriteRow]:
        return self._read_writes(thread_id, ns, checkpoint_id)

    async def _aiter_checkpoints(
        self, thread_id: str, ns: str | None, before_seq: int | None
    ) -> AsyncIterator[list[CheckpointRow]]:
        for batch in self._iter_checkpoints(thread_id, ns, before_seq):
            yield batch

    async def _acommit(
        self,
        row: CheckpointRow,
        versions: Sequence[VersionRow],
        expected_head: str | None,
        thread_metadata: bytes | None,
        expires_at: float | None,
        lease: LeaseOp | None = None,
    ) -> int:
        return self._commit(row, versions, expected_head, thread_metadata, expires_at, lease)

    async def _acommit_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        rows: Sequence[WriteRow],
        expected_head: str | None,
        lease: Lease | None = None,
    ) -> None:
        self._commit_writes(thread_id, ns, checkpoint_id, rows, expected_head, lease)

    # ------------------------------------------------------------------ thread operations

    def delete_thread(self, thread_id: str) -> None:
        with self._lock:
            self._threads.pop(thread_id, None)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        validate_thread_id(target_thread_id)
        with self._lock:
            src = self._threads.get(source_thread_id)
            if src is None:
                raise _no_thread(source_thread_id)
            if target_thread_id in self._threads:
                raise ThreadlineError(
                    f"cannot copy into thread {target_thread_id!r}: it already exists; pick a new"
                    " thread id or delete_thread() it first"
                )
            dst = _Thread(time.time(), time.time(), src.expires_at, src.metadata, src.seq)
            dst.heads = dict(src.heads)
            dst.checkpoints = {
                k: replace(r, thread_id=target_thread_id) for k, r in src.checkpoints.items()
            }
            dst.order = {k: list(v) for k, v in src.order.items()}
            dst.order_seq = {k: list(v) for k, v in src.order_seq.items()}
            dst.versions = dict(src.versions)
            dst.writes = {k: dict(v) for k, v in src.writes.items()}
            rebind = self._rebinder(source_thread_id, target_thread_id)
            if rebind is not None:  # encrypted values are bound to their thread
                for column in COLUMNS:
                    updates = []
                    for value in _stored(dst, column):
                        new = rebind(value)
                        if new is not None:
                            updates.append((value, new))
                    _replace(dst, updates)
            self._threads[target_thread_id] = dst

    def list_threads(
        self,
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ThreadInfo]:
        wanted = validate_filter(filter)
        with self._lock:
            items = sorted(self._threads.items(), key=lambda kv: kv[1].updated_at, reverse=True)
        out: list[ThreadInfo] = []
        for thread_id, t in items:
            where = f"thread {thread_id!r}"
            meta = self._load_thread_metadata(thread_id, t.metadata)
            if not metadata_matches(meta, wanted):
                continue
            out.append(
                ThreadInfo(
                    thread_id=thread_id,
                    head_id=t.heads.get(""),
                    metadata=meta,
                    created_at=to_datetime(t.created_at, where),
                    updated_at=to_datetime(t.updated_at, where),
                    expires_at=None if t.expires_at is None else to_datetime(t.expires_at, where),
                )
            )
        end = None if limit is None else offset + limit
        return out[offset:end]

    def prune(self, thread_ids: Sequence[str], *, keep_last: int) -> int:
        if keep_last < 1:
            raise ValueError(f"keep_last must be at least 1 (the head), got {keep_last!r}")
        removed = 0
        with self._lock:
            for thread_id in thread_ids:
                t = self._threads.get(thread_id)
                if t is None:
                    continue
                for ns, ids in t.order.items():
                    drop, keep = ids[:-keep_last], ids[-keep_last:]
                    for cid in drop:
                        del t.checkpoints[cid]
                        t.writes.pop((ns, cid), None)
                    t.order[ns] = keep
                    t.order_seq[ns] = t.order_seq[ns][-keep_last:]
                    removed += len(drop)
                t.versions = _reachable(t.versions, t.checkpoints.values())
        return removed

    def sweep_expired(self) -> int:
        now = time.time()
        with self._lock:
            dead = [
                k
                for k, t in self._threads.items()
                if t.expires_at is not None and t.expires_at <= now
            ]
            for k in dead:
                del self._threads[k]
        return len(dead)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self.copy_thread(source_thread_id, target_thread_id)

    async def alist_threads(
        self,
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[ThreadInfo]:
        return self.list_threads(filter=filter, limit=limit, offset=offset)

    async def aprune(self, thread_ids: Sequence[str], *, keep_last: int) -> int:
        return self.prune(thread_ids, keep_last=keep_last)

    async def asweep_expired(self) -> int:
        return self.sweep_expired()

    # ------------------------------------------------------------------ re-encryption

    def _thread_page(self, after: str | None, limit: int) -> list[str]:
        with self._lock:
            ids = sorted(t for t in self._threads if after is None or t > after)
        return ids[:limit]

    def _stored_page(
        self, column: str, thread_id: str, after: tuple[Any, ...] | None, limit: int
    ) -> list[StoredValue]:
        with self._lock:
            thread = self._threads.get(thread_id)
            values = [] if thread is None else _stored(thread, column)
        values.sort(key=lambda v: v.key)
        if after is not None:
            values = [v for v in values if v.key > after]
        return values[:limit]

    def _replace_stored(self, thread_id: str, updates: Sequence[tuple[StoredValue, bytes]]) -> int:
        with self._lock:
            thread = self._threads.get(thread_id)
            return 0 if thread is None else _replace(thread, updates)

    async def _athread_page(self, after: str | None, limit: int) -> list[str]:
        return self._thread_page(after, limit)

    async def _astored_page(
        self, column: str, thread_id: str, after: tuple[Any, ...] | None, limit: int
    ) -> list[StoredValue]:
        return self._stored_page(column, thread_id, after, limit)

    async def _areplace_stored(
        self, thread_id: str, updates: Sequence[tuple[StoredValue, bytes]]
    ) -> int:
        return self._replace_stored(thread_id, updates)

    def stored_bytes(self) -> int:
        """Bytes of encoded data held (versions, metadata, tasks, writes): for benchmarks."""
        with self._lock:
            total = 0
            for t in self._threads.values():
                total += sum(len(v.data) for v in t.versions.values())
                total += sum(len(r.metadata) + len(r.tasks) for r in t.checkpoints.values())
                total += sum(len(w.data) for b in t.writes.values() for w in b.values())
            return total


def _reachable(
    versions: dict[tuple[str, str], VersionRow], rows: Any
) -> dict[tuple[str, str], VersionRow]:
    keep: dict[tuple[str, str], VersionRow] = {}
    for row in rows:
        for channel, ref in row.refs.items():
            cursor: str | None = ref.writer
            while cursor is not None and (channel, cursor) not in keep:
                v = versions[(channel, cursor)]
                keep[(channel, cursor)] = v
                cursor = v.base
    return keep


def _stored(thread: _Thread, column: str) -> list[StoredValue]:
    """Every value of ``thread`` in ``column`` (see binding.COLUMNS)."""
    if column == "threads.metadata":
        meta = thread.metadata
        return [] if meta is None else [StoredValue(column, (), meta)]
    if column == "versions.data":
        return [
            StoredValue(column, key, v.data, (v.channel, v.writer, v.base))
            for key, v in thread.versions.items()
        ]
    if column == "writes.data":
        return [
            StoredValue(column, (ns, cid, w.task_id, w.idx), w.data, (ns, cid, *key, w.channel))
            for (ns, cid), bucket in thread.writes.items()
            for key, w in bucket.items()
        ]
    field = column.partition(".")[2]
    return [
        StoredValue(column, (row.seq,), getattr(row, field), row)
        for row in thread.checkpoints.values()
    ]


def _replace(thread: _Thread, updates: Sequence[tuple[StoredValue, bytes]]) -> int:
    """Replace each value that still holds what was read (call under the saver's lock)."""
    done = 0
    for value, new in updates:
        column = value.column
        if column == "threads.metadata":
            if thread.metadata != value.data:
                continue
            thread.metadata = new
        elif column == "versions.data":
            version = thread.versions.get(value.key)
            if version is None or version.data != value.data:
                continue
            thread.versions[value.key] = replace(version, data=new)
        elif column == "writes.data":
            ns, cid, task_id, idx = value.key
            bucket = thread.writes.get((ns, cid), {})
            write = bucket.get((task_id, idx))
            if write is None or write.data != value.data:
                continue
            bucket[(task_id, idx)] = replace(write, data=new)
        else:
            field = column.partition(".")[2]
            row = thread.checkpoints.get(value.fields.id)
            if row is None or getattr(row, field) != value.data:
                continue
            if field == "metadata":
                thread.checkpoints[row.id] = replace(row, metadata=new)
            else:
                thread.checkpoints[row.id] = replace(row, tasks=new)
        done += 1
    return done


def _no_thread(thread_id: str) -> ThreadlineError:
    return ThreadNotFoundError(f"thread {thread_id!r} does not exist")


MemorySaver = InMemorySaver
