"""In-process checkpointer. Stores encoded bytes, exactly as a database would."""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from ..errors import ThreadlineError, ThreadNotFoundError
from .base import (
    BaseCheckpointSaver,
    conflict_error,
    metadata_matches,
    validate_filter,
    validate_thread_id,
)
from .types import CheckpointRow, ThreadInfo, VersionRow, WriteRow, to_datetime

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
                return None if head is None else thread.checkpoints[head]
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
                while cursor is not None and (channel, cursor) not in out:
                    row = thread.versions.get((channel, cursor))
                    if row is None:
                        break
                    out[(channel, cursor)] = row
                    cursor = row.base
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
    ) -> int:
        with self._lock:
            thread = self._threads.get(row.thread_id)
            head = None if thread is None else thread.heads.get(row.ns)
            if head != expected_head:
                raise conflict_error(row.thread_id, expected_head, head)
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
    ) -> None:
        with self._lock:
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
    ) -> int:
        return self._commit(row, versions, expected_head, thread_metadata, expires_at)

    async def _acommit_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        rows: Sequence[WriteRow],
        expected_head: str | None,
    ) -> None:
        self._commit_writes(thread_id, ns, checkpoint_id, rows, expected_head)

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
            meta = {} if t.metadata is None else self.serde.loads(t.metadata)
            if not metadata_matches(meta, wanted):
                continue
            out.append(
                ThreadInfo(
                    thread_id=thread_id,
                    head_id=t.heads.get(""),
                    metadata=meta,
                    created_at=to_datetime(t.created_at),
                    updated_at=to_datetime(t.updated_at),
                    expires_at=None if t.expires_at is None else to_datetime(t.expires_at),
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


def _no_thread(thread_id: str) -> ThreadlineError:
    return ThreadNotFoundError(f"thread {thread_id!r} does not exist")


MemorySaver = InMemorySaver
