"""The checkpointer contract every backend implements.

Public methods are written once here. A backend implements a few storage primitives (the
``_read_*``/``_commit*`` methods and the thread operations), in sync form, async form or both;
everything about encoding, deltas, caching and decoding is shared.
"""

from __future__ import annotations

import builtins
import dataclasses
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

from typing_extensions import Self, TypedDict

from ..errors import (
    CheckpointConflictError,
    CheckpointNotFoundError,
    EmptyChannelError,
    ThreadlineError,
)
from .encoding import DEFAULT_SNAPSHOT_RATIO, ChainDecoder, ValueCache, encode_changes
from .serde import MsgpackSerializer, Serializer
from .types import (
    ChannelChange,
    Checkpoint,
    CheckpointDraft,
    CheckpointRow,
    CheckpointTuple,
    PendingWrite,
    RunnableConfig,
    ThreadInfo,
    VersionRow,
    WriteRow,
    new_checkpoint_id,
    to_datetime,
)

__all__ = [
    "BaseCheckpointSaver",
    "conflict_error",
    "metadata_matches",
    "parse_config",
    "validate_filter",
    "validate_thread_id",
]

SWEEP_INTERVAL = 60.0
HEAD_CACHE_SIZE = 10_000
"""Threads whose last head this process remembers (see :meth:`BaseCheckpointSaver.cached_head`)."""
_FILTER_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")


def validate_thread_id(thread_id: object) -> str:
    """Return ``thread_id`` if it is a non-empty string (a ``uuid.UUID`` becomes its canonical
    string, as LangGraph's docs pass them), else raise a ``ValueError`` saying how."""
    if isinstance(thread_id, uuid.UUID):
        return str(thread_id)
    if not isinstance(thread_id, str) or not thread_id:
        raise ValueError(
            f"thread_id must be a non-empty string, got {thread_id!r} ({type(thread_id).__name__});"
            f" pass str(...) of your id, e.g. {{'configurable': {{'thread_id': str(my_id)}}}}"
        )
    return thread_id


def parse_config(config: RunnableConfig | None) -> tuple[str, str, str | None]:
    """``(thread_id, checkpoint_ns, checkpoint_id)`` from a config dict, validated."""
    configurable = (config or {}).get("configurable") or {}
    if "thread_id" not in configurable:
        raise ValueError(
            "config has no thread_id; pass {'configurable': {'thread_id': '...'}} to say which"
            " thread to use"
        )
    thread_id = validate_thread_id(configurable["thread_id"])
    ns = configurable.get("checkpoint_ns") or ""
    checkpoint_id = configurable.get("checkpoint_id") or None
    if not isinstance(ns, str):
        raise ValueError(f"checkpoint_ns must be a string, got {ns!r}")
    if checkpoint_id is not None and not isinstance(checkpoint_id, str):
        raise ValueError(f"checkpoint_id must be a string, got {checkpoint_id!r}")
    return thread_id, ns, checkpoint_id


def validate_filter(filter: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check metadata filter keys: plain identifiers only, so nothing odd reaches a query."""
    if not filter:
        return {}
    if not isinstance(filter, Mapping):
        raise ValueError(f"filter must be a mapping of metadata keys to values, got {filter!r}")
    for key in filter:
        if not isinstance(key, str) or not _FILTER_KEY.match(key):
            raise ValueError(
                f"invalid metadata filter key {key!r}: keys are identifiers of letters, digits,"
                " '_', '.' and '-' (at most 128 characters)"
            )
    return dict(filter)


def conflict_error(
    thread_id: str, expected: str | None, actual: str | None
) -> CheckpointConflictError:
    """The error every backend raises when a compare-and-swap of the head fails."""
    return CheckpointConflictError(
        f"thread {thread_id!r} moved on: its head is {actual!r}, not {expected!r} as this writer"
        " expected. Another run committed first; nothing of this step was stored. Reload the"
        " thread with get_state() and run again if still needed.",
        thread_id=thread_id,
        expected=expected,
        actual=actual,
    )


def metadata_matches(metadata: Mapping[str, Any], filter: Mapping[str, Any]) -> bool:
    return all(k in metadata and metadata[k] == v for k, v in filter.items())


class _Unsupported(ThreadlineError, NotImplementedError):
    pass


class BaseCheckpointSaver:
    """Stores threads, checkpoints, channel versions and pending writes.

    Args:
        serde: the serializer (default: :class:`MsgpackSerializer`).
        ttl: seconds after its last update when a thread expires; ``None`` keeps threads.
        auto_sweep: call :meth:`sweep_expired` at most once a minute after commits.
        cache_bytes: bound of the process-local cache of decoded channel versions.
        snapshot_ratio: write a snapshot instead of a delta once the deltas since the last
            snapshot exceed this many times its size.
    """

    #: Backends with only one flavour name the other one here for error messages.
    sync_twin: str | None = None
    async_twin: str | None = None

    def __init__(
        self,
        *,
        serde: Serializer | None = None,
        ttl: float | None = None,
        auto_sweep: bool = True,
        cache_bytes: int | None = 64 * 1024 * 1024,
        snapshot_ratio: float = DEFAULT_SNAPSHOT_RATIO,
    ) -> None:
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
        self.serde: Serializer = serde if serde is not None else MsgpackSerializer()
        self.ttl = ttl
        self.auto_sweep = auto_sweep
        self.snapshot_ratio = snapshot_ratio
        self._cache = ValueCache(cache_bytes)
        self._last_sweep = 0.0
        # (thread_id, ns) -> the head this process last committed, when it had no tasks.
        self._heads: dict[tuple[str, str], CheckpointRow] = {}
        self._heads_lock = threading.Lock()

    # ------------------------------------------------------------------ storage primitives
    # Sync backends override the first group, async backends the second.

    def _read_checkpoint(
        self, thread_id: str, ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        """The checkpoint ``checkpoint_id``, or the head of ``(thread_id, ns)`` when None."""
        raise self._no_sync()

    def _read_versions(self, thread_id: str, wanted: set[tuple[str, str]]) -> list[VersionRow]:
        """Rows of the ``(channel, writer)`` versions and of every base they build on."""
        raise self._no_sync()

    def _read_writes(self, thread_id: str, ns: str, checkpoint_id: str) -> list[WriteRow]:
        raise self._no_sync()

    def _locate_checkpoint(self, checkpoint_id: str) -> tuple[str, str] | None:
        """``(thread_id, ns)`` of the checkpoint with this id in any thread, or None."""
        raise self._no_sync()

    def _read_writes_many(
        self, thread_id: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], builtins.list[WriteRow]]:
        """Pending writes of many ``(ns, checkpoint_id)`` at once (SQL backends: one query)."""
        return {key: self._read_writes(thread_id, *key) for key in keys}

    def _iter_checkpoints(
        self, thread_id: str, ns: str | None, before_seq: int | None
    ) -> Iterator[list[CheckpointRow]]:
        """Checkpoints newest first (by ``seq``), in batches; all namespaces when ``ns`` is None."""
        raise self._no_sync()

    def _commit(
        self,
        row: CheckpointRow,
        versions: Sequence[VersionRow],
        expected_head: str | None,
        thread_metadata: bytes | None,
        expires_at: float | None,
    ) -> int:
        """Atomically add the checkpoint and its versions and move the head from ``expected_head``.

        ``row.seq`` is a placeholder: assign the thread's next sequence number and return it.
        Raise :class:`CheckpointConflictError` (storing nothing) when the head is elsewhere.
        """
        raise self._no_sync()

    def _commit_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        rows: Sequence[WriteRow],
        expected_head: str | None,
    ) -> None:
        """Add pending writes (ignoring ones already stored) if the head is ``expected_head``."""
        raise self._no_sync()

    async def _aread_checkpoint(
        self, thread_id: str, ns: str, checkpoint_id: str | None
    ) -> CheckpointRow | None:
        raise self._no_async()

    async def _aread_versions(
        self, thread_id: str, wanted: set[tuple[str, str]]
    ) -> list[VersionRow]:
        raise self._no_async()

    async def _aread_writes(self, thread_id: str, ns: str, checkpoint_id: str) -> list[WriteRow]:
        raise self._no_async()

    async def _alocate_checkpoint(self, checkpoint_id: str) -> tuple[str, str] | None:
        raise self._no_async()

    async def _aread_writes_many(
        self, thread_id: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], builtins.list[WriteRow]]:
        return {key: await self._aread_writes(thread_id, *key) for key in keys}

    def _aiter_checkpoints(
        self, thread_id: str, ns: str | None, before_seq: int | None
    ) -> AsyncIterator[list[CheckpointRow]]:
        raise self._no_async()

    async def _acommit(
        self,
        row: CheckpointRow,
        versions: Sequence[VersionRow],
        expected_head: str | None,
        thread_metadata: bytes | None,
        expires_at: float | None,
    ) -> int:
        raise self._no_async()

    async def _acommit_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        rows: Sequence[WriteRow],
        expected_head: str | None,
    ) -> None:
        raise self._no_async()

    def _no_sync(self) -> _Unsupported:
        twin = f"; use {self.sync_twin} for invoke/stream" if self.sync_twin else ""
        return _Unsupported(
            f"{type(self).__name__} is asynchronous: call ainvoke/astream or the a* methods{twin}"
        )

    def _no_async(self) -> _Unsupported:
        twin = f"; use {self.async_twin} for ainvoke/astream" if self.async_twin else ""
        return _Unsupported(
            f"{type(self).__name__} is synchronous: call invoke/stream or the sync methods{twin}"
        )

    # ------------------------------------------------------------------ shared, sans-IO

    def _dumps(self, value: Any, key: str) -> tuple[bytes, int]:
        """Encode a channel version: its bytes, and its size before any compression."""
        sized = getattr(self.serde, "dumps_sized", None)
        if sized is not None:
            return sized(value, key)  # type: ignore[no-any-return]
        data = self.serde.dumps(value, key)
        return data, len(data)

    def _prepare_commit(
        self,
        thread_id: str,
        ns: str,
        draft: CheckpointDraft,
        thread_metadata: dict[str, Any] | None,
    ) -> tuple[CheckpointRow, list[VersionRow], bytes | None, float | None]:
        validate_thread_id(thread_id)
        checkpoint_id = draft.id or new_checkpoint_id()
        refs, versions = encode_changes(draft, checkpoint_id, self._dumps, self.snapshot_ratio)
        now = time.time()
        row = CheckpointRow(
            thread_id=thread_id,
            ns=ns,
            id=checkpoint_id,
            parent_id=draft.parent_id,
            seq=-1,
            step=draft.step,
            source=draft.source,
            created_at=now,
            metadata=self.serde.dumps(draft.metadata, "metadata"),
            tasks=self.serde.dumps(draft.tasks, "tasks"),
            refs=refs,
        )
        meta = None if not thread_metadata else self.serde.dumps(thread_metadata, "metadata")
        expires_at = None if self.ttl is None else now + self.ttl
        return row, versions, meta, expires_at

    def _after_commit(
        self, row: CheckpointRow, seq: int, draft: CheckpointDraft, versions: list[VersionRow]
    ) -> Checkpoint:
        self._remember_head(row, seq, draft)
        # The values just written are the runtime's own: cache them so the next step and the
        # next run on this thread need not decode anything.
        sizes = {v.channel: len(v.data) for v in versions}
        for name, change in draft.changes.items():
            ref = row.refs.get(name)
            if ref is not None and ref.writer == row.id:
                self._cache.put((name, row.id), change.value, ref.snapshot_bytes + ref.chain_bytes)
            elif ref is not None and name in sizes:
                self._cache.put((name, row.id), change.value, sizes[name])
        return Checkpoint(
            thread_id=row.thread_id,
            ns=row.ns,
            id=row.id,
            parent_id=row.parent_id,
            seq=seq,
            step=row.step,
            source=row.source,
            created_at=to_datetime(row.created_at),
            metadata=draft.metadata,
            tasks=draft.tasks,
            refs=row.refs,
            values={},
        )

    def _remember_head(self, row: CheckpointRow, seq: int, draft: CheckpointDraft) -> None:
        # Only a head without tasks: nobody saves pending writes against it, so the row alone
        # says everything a run starting from it needs.
        key = (row.thread_id, row.ns)
        with self._heads_lock:
            self._heads.pop(key, None)
            if not draft.tasks:
                if len(self._heads) >= HEAD_CACHE_SIZE:
                    del self._heads[next(iter(self._heads))]  # the least recently saved
                self._heads[key] = dataclasses.replace(row, seq=seq)

    def _forget_head(self, thread_id: str, ns: str) -> None:
        with self._heads_lock:
            self._heads.pop((thread_id, ns), None)

    def _cached_row(self, thread_id: str, ns: str) -> CheckpointRow | None:
        with self._heads_lock:
            return self._heads.get((thread_id, ns))

    def _decoder(self, row: CheckpointRow, shared: bool) -> ChainDecoder:
        memo = self._cache if shared else ValueCache(None)
        return ChainDecoder(
            self.serde.loads, memo, where=f"thread {row.thread_id!r}, checkpoint {row.id}"
        )

    def _checkpoint(self, row: CheckpointRow, values: dict[str, Any]) -> Checkpoint:
        where = f"thread {row.thread_id!r}, checkpoint {row.id}"
        return Checkpoint(
            thread_id=row.thread_id,
            ns=row.ns,
            id=row.id,
            parent_id=row.parent_id,
            seq=row.seq,
            step=row.step,
            source=row.source,
            created_at=to_datetime(row.created_at),
            metadata=self._loads(row.metadata, where),
            tasks=self._loads(row.tasks, where),
            refs=row.refs,
            values=values,
        )

    def _loads(self, data: bytes, where: str) -> Any:
        from ..errors import CorruptCheckpointError

        try:
            return self.serde.loads(data)
        except CorruptCheckpointError as exc:
            raise CorruptCheckpointError(f"{exc} ({where})") from exc

    def _pending(self, row: CheckpointRow, writes: Iterable[WriteRow]) -> list[PendingWrite]:
        where = f"thread {row.thread_id!r}, checkpoint {row.id}"
        return [
            PendingWrite(w.task_id, w.idx, w.channel, self._loads(w.data, where))
            for w in sorted(writes, key=lambda w: (w.task_id, w.idx))
        ]

    def _write_rows(
        self, task_id: str, writes: Sequence[tuple[str, Any]], first_idx: int
    ) -> list[WriteRow]:
        return [
            WriteRow(task_id, idx, channel, self.serde.dumps(value, channel))
            for idx, (channel, value) in enumerate(writes, first_idx)
        ]

    def _should_sweep(self) -> bool:
        if self.ttl is None or not self.auto_sweep:
            return False
        now = time.monotonic()
        if now - self._last_sweep < SWEEP_INTERVAL:
            return False
        self._last_sweep = now
        return True

    @staticmethod
    def _not_found(thread_id: str, ns: str, checkpoint_id: str) -> CheckpointNotFoundError:
        where = f" in namespace {ns!r}" if ns else ""
        return CheckpointNotFoundError(
            f"thread {thread_id!r} has no checkpoint {checkpoint_id!r}{where}; list the thread's"
            " checkpoints with get_state_history(config) and pass one of their ids"
        )

    # ------------------------------------------------------------------ public, sync

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (the thread's head if it names none), or None."""
        thread_id, ns, checkpoint_id = parse_config(config)
        return self.load(thread_id, ns, checkpoint_id, shared=False)

    def load(
        self,
        thread_id: str,
        ns: str = "",
        checkpoint_id: str | None = None,
        *,
        shared: bool,
        task_writes_only: bool = False,
    ) -> CheckpointTuple | None:
        """Like :meth:`get_tuple`. With ``shared=True`` values may be shared with the cache and
        must not be mutated (the runtime's fast path). With ``task_writes_only=True`` a
        checkpoint without tasks is returned without its pending writes (saves a query when
        only the tasks' writes matter, as for the runtime)."""
        row = self._read_checkpoint(thread_id, ns, checkpoint_id)
        if row is None:
            if checkpoint_id is not None:
                raise self._not_found(thread_id, ns, checkpoint_id)
            return None
        decoder = self._decoder(row, shared)
        missing = decoder.missing(row.refs)
        if missing:
            decoder.add_rows(self._read_versions(thread_id, missing))
        checkpoint = self._checkpoint(row, decoder.values(row.refs))
        skip = task_writes_only and not checkpoint.tasks
        writes = [] if skip else self._read_writes(thread_id, ns, row.id)
        return CheckpointTuple(checkpoint, self._pending(row, writes))

    def cached_head(self, thread_id: str, ns: str = "") -> CheckpointTuple | None:
        """The head this process last saved to the thread, if it had no next tasks, without
        asking the database whether it is still the head (a shared-values load).

        Another process may have moved the head since: a commit expecting this one then fails
        its compare-and-swap, and the caller starts over from :meth:`load`. The runtime uses it
        for new input with ``durability="sync"``, whose first commit comes before any node runs.
        """
        row = self._cached_row(thread_id, ns)
        if row is None:
            return None
        decoder = self._decoder(row, True)
        missing = decoder.missing(row.refs)
        if missing:
            decoder.add_rows(self._read_versions(thread_id, missing))
        return CheckpointTuple(self._checkpoint(row, decoder.values(row.refs)), [])

    def head_id(self, thread_id: str, ns: str = "") -> str | None:
        """The id of the checkpoint the thread's head points to, or None."""
        row = self._read_checkpoint(thread_id, ns, None)
        return None if row is None else row.id

    def locate(self, checkpoint_id: str) -> tuple[str, str] | None:
        """``(thread_id, ns)`` of the thread holding ``checkpoint_id``, or None."""
        return self._locate_checkpoint(checkpoint_id)

    def get(self, config: RunnableConfig) -> dict[str, Any] | None:
        """The channel values of the checkpoint ``config`` names, or None."""
        found = self.get_tuple(config)
        return None if found is None else found.checkpoint.values

    def list(
        self,
        config: RunnableConfig,
        *,
        filter: Mapping[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """The thread's checkpoints, newest first, filtered by metadata equality.

        ``before`` names a checkpoint: only older ones are listed. Values are rebuilt
        incrementally as rows stream in; nothing loads the whole thread at once.
        """
        thread_id, ns, _ = parse_config(config)
        wanted = validate_filter(filter)
        before_seq = self._before_seq(thread_id, ns, before)
        if limit is not None and limit <= 0:
            return
        decoder: ChainDecoder | None = None
        count = 0
        for batch in self._iter_checkpoints(thread_id, ns, before_seq):
            selected = self._select(batch, wanted)
            if not selected:
                continue
            if decoder is None:
                decoder = self._decoder(selected[0][0], shared=False)
            missing: set[tuple[str, str]] = set()
            for row, _ in selected:
                missing |= decoder.missing(row.refs)
            if missing:
                decoder.add_rows(self._read_versions(thread_id, missing))
            keys = [(row.ns, row.id) for row, c in selected if c.tasks]
            writes = self._read_writes_many(thread_id, keys) if keys else {}
            for row, checkpoint in selected:
                checkpoint.values = decoder.values(row.refs, where=_where(row))
                found = writes.get((row.ns, row.id), [])
                yield CheckpointTuple(checkpoint, self._pending(row, found))
                count += 1
                if limit is not None and count >= limit:
                    return

    def list_first(
        self, config: RunnableConfig, *, filter: Mapping[str, Any] | None = None
    ) -> CheckpointTuple | None:
        """The newest checkpoint matching ``filter``, or None."""
        return next(iter(self.list(config, filter=filter, limit=1)), None)

    def _select(
        self, batch: builtins.list[CheckpointRow], wanted: dict[str, Any]
    ) -> builtins.list[tuple[CheckpointRow, Checkpoint]]:
        out = []
        for row in batch:
            checkpoint = self._checkpoint(row, {})
            if metadata_matches(checkpoint.metadata, wanted):
                out.append((row, checkpoint))
        return out

    def _before_seq(self, thread_id: str, ns: str, before: RunnableConfig | None) -> int | None:
        if before is None:
            return None
        before_id = parse_config(before)[2]
        if before_id is None:
            return None
        row = self._read_checkpoint(thread_id, ns, before_id)
        if row is None:
            raise self._not_found(thread_id, ns, before_id)
        return row.seq

    def put(
        self,
        thread_id: str,
        ns: str,
        draft: CheckpointDraft,
        *,
        expected_head: str | None,
        thread_metadata: dict[str, Any] | None = None,
    ) -> Checkpoint:
        """Store a new checkpoint and move the head to it by compare-and-swap.

        Raises :class:`CheckpointConflictError` if the head is not ``expected_head``; then
        nothing was stored. The returned checkpoint has empty ``values`` (the caller has them).
        """
        row, versions, meta, expires_at = self._prepare_commit(
            thread_id, ns, draft, thread_metadata
        )
        try:
            seq = self._commit(row, versions, expected_head, meta, expires_at)
        except CheckpointConflictError:
            self._forget_head(thread_id, ns)
            raise
        if self._should_sweep():
            self.sweep_expired()
        return self._after_commit(row, seq, draft, versions)

    def put_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        task_id: str,
        writes: Sequence[tuple[str, Any]],
        *,
        expected_head: str | None,
        first_idx: int = 0,
    ) -> None:
        """Save a task's writes against the checkpoint its step started from.

        Writes are numbered from ``first_idx``; a (task, index) already stored is kept as is.
        """
        validate_thread_id(thread_id)
        rows = self._write_rows(task_id, writes, first_idx)
        self._commit_writes(thread_id, ns, checkpoint_id, rows, expected_head)

    def fork(
        self, source: RunnableConfig, thread_id: str, *, metadata: dict[str, Any] | None = None
    ) -> Checkpoint:
        """Copy one checkpoint (values, next tasks, pending writes) into a new, empty thread."""
        src = self.load(*parse_config(source), shared=True)
        if src is None:
            raise CheckpointNotFoundError(
                f"cannot fork {source!r}: the thread has no checkpoint to copy"
            )
        draft, pending = _fork_plan(src, metadata)
        saved = self.put(thread_id, src.checkpoint.ns, draft, expected_head=None)
        for task_id, writes in pending.items():
            self.put_writes(thread_id, saved.ns, saved.id, task_id, writes, expected_head=saved.id)
        saved.values = src.checkpoint.values
        return saved

    # Thread operations: backends implement these directly.

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread and everything stored for it. Deleting a missing thread is a no-op."""
        raise self._no_sync()

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy a whole thread (every checkpoint, version and write) to a new, empty thread id."""
        raise self._no_sync()

    def list_threads(
        self,
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> builtins.list[ThreadInfo]:
        """Threads, most recently updated first, filtered by thread metadata equality."""
        raise self._no_sync()

    def prune(self, thread_ids: Sequence[str], *, keep_last: int) -> int:
        """Keep the latest ``keep_last`` checkpoints of each thread and all they need.

        Returns the number of checkpoints removed.
        """
        raise self._no_sync()

    def sweep_expired(self) -> int:
        """Delete threads whose ``ttl`` ran out. Returns how many were deleted."""
        raise self._no_sync()

    def setup(self) -> None:
        """Create or migrate the storage schema (no-op for backends without one)."""

    def close(self) -> None:
        """Release what the saver opened."""

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ public, async

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async :meth:`get_tuple`."""
        thread_id, ns, checkpoint_id = parse_config(config)
        return await self.aload(thread_id, ns, checkpoint_id, shared=False)

    async def aload(
        self,
        thread_id: str,
        ns: str = "",
        checkpoint_id: str | None = None,
        *,
        shared: bool,
        task_writes_only: bool = False,
    ) -> CheckpointTuple | None:
        """Async :meth:`load`."""
        row = await self._aread_checkpoint(thread_id, ns, checkpoint_id)
        if row is None:
            if checkpoint_id is not None:
                raise self._not_found(thread_id, ns, checkpoint_id)
            return None
        decoder = self._decoder(row, shared)
        missing = decoder.missing(row.refs)
        if missing:
            decoder.add_rows(await self._aread_versions(thread_id, missing))
        checkpoint = self._checkpoint(row, decoder.values(row.refs))
        skip = task_writes_only and not checkpoint.tasks
        writes = [] if skip else await self._aread_writes(thread_id, ns, row.id)
        return CheckpointTuple(checkpoint, self._pending(row, writes))

    async def acached_head(self, thread_id: str, ns: str = "") -> CheckpointTuple | None:
        """Async :meth:`cached_head`."""
        row = self._cached_row(thread_id, ns)
        if row is None:
            return None
        decoder = self._decoder(row, True)
        missing = decoder.missing(row.refs)
        if missing:
            decoder.add_rows(await self._aread_versions(thread_id, missing))
        return CheckpointTuple(self._checkpoint(row, decoder.values(row.refs)), [])

    async def ahead_id(self, thread_id: str, ns: str = "") -> str | None:
        """Async :meth:`head_id`."""
        row = await self._aread_checkpoint(thread_id, ns, None)
        return None if row is None else row.id

    async def alocate(self, checkpoint_id: str) -> tuple[str, str] | None:
        """Async :meth:`locate`."""
        return await self._alocate_checkpoint(checkpoint_id)

    async def aget(self, config: RunnableConfig) -> dict[str, Any] | None:
        """Async :meth:`get`."""
        found = await self.aget_tuple(config)
        return None if found is None else found.checkpoint.values

    async def alist(
        self,
        config: RunnableConfig,
        *,
        filter: Mapping[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async :meth:`list`."""
        thread_id, ns, _ = parse_config(config)
        wanted = validate_filter(filter)
        before_seq = await self._abefore_seq(thread_id, ns, before)
        if limit is not None and limit <= 0:
            return
        decoder: ChainDecoder | None = None
        count = 0
        async for batch in self._aiter_checkpoints(thread_id, ns, before_seq):
            selected = self._select(batch, wanted)
            if not selected:
                continue
            if decoder is None:
                decoder = self._decoder(selected[0][0], shared=False)
            missing: set[tuple[str, str]] = set()
            for row, _ in selected:
                missing |= decoder.missing(row.refs)
            if missing:
                decoder.add_rows(await self._aread_versions(thread_id, missing))
            keys = [(row.ns, row.id) for row, c in selected if c.tasks]
            writes = await self._aread_writes_many(thread_id, keys) if keys else {}
            for row, checkpoint in selected:
                checkpoint.values = decoder.values(row.refs, where=_where(row))
                found = writes.get((row.ns, row.id), [])
                yield CheckpointTuple(checkpoint, self._pending(row, found))
                count += 1
                if limit is not None and count >= limit:
                    return

    async def alist_first(
        self, config: RunnableConfig, *, filter: Mapping[str, Any] | None = None
    ) -> CheckpointTuple | None:
        """Async :meth:`list_first`."""
        async for found in self.alist(config, filter=filter, limit=1):
            return found
        return None

    async def _abefore_seq(
        self, thread_id: str, ns: str, before: RunnableConfig | None
    ) -> int | None:
        if before is None:
            return None
        before_id = parse_config(before)[2]
        if before_id is None:
            return None
        row = await self._aread_checkpoint(thread_id, ns, before_id)
        if row is None:
            raise self._not_found(thread_id, ns, before_id)
        return row.seq

    async def aput(
        self,
        thread_id: str,
        ns: str,
        draft: CheckpointDraft,
        *,
        expected_head: str | None,
        thread_metadata: dict[str, Any] | None = None,
    ) -> Checkpoint:
        """Async :meth:`put`."""
        row, versions, meta, expires_at = self._prepare_commit(
            thread_id, ns, draft, thread_metadata
        )
        try:
            seq = await self._acommit(row, versions, expected_head, meta, expires_at)
        except CheckpointConflictError:
            self._forget_head(thread_id, ns)
            raise
        if self._should_sweep():
            await self.asweep_expired()
        return self._after_commit(row, seq, draft, versions)

    async def aput_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        task_id: str,
        writes: Sequence[tuple[str, Any]],
        *,
        expected_head: str | None,
        first_idx: int = 0,
    ) -> None:
        """Async :meth:`put_writes`."""
        validate_thread_id(thread_id)
        rows = self._write_rows(task_id, writes, first_idx)
        await self._acommit_writes(thread_id, ns, checkpoint_id, rows, expected_head)

    async def afork(
        self, source: RunnableConfig, thread_id: str, *, metadata: dict[str, Any] | None = None
    ) -> Checkpoint:
        """Async :meth:`fork`."""
        src = await self.aload(*parse_config(source), shared=True)
        if src is None:
            raise CheckpointNotFoundError(
                f"cannot fork {source!r}: the thread has no checkpoint to copy"
            )
        draft, pending = _fork_plan(src, metadata)
        saved = await self.aput(thread_id, src.checkpoint.ns, draft, expected_head=None)
        for task_id, writes in pending.items():
            await self.aput_writes(
                thread_id, saved.ns, saved.id, task_id, writes, expected_head=saved.id
            )
        saved.values = src.checkpoint.values
        return saved

    async def adelete_thread(self, thread_id: str) -> None:
        """Async :meth:`delete_thread`."""
        raise self._no_async()

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Async :meth:`copy_thread`."""
        raise self._no_async()

    async def alist_threads(
        self,
        *,
        filter: Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> builtins.list[ThreadInfo]:
        """Async :meth:`list_threads`."""
        raise self._no_async()

    async def aprune(self, thread_ids: Sequence[str], *, keep_last: int) -> int:
        """Async :meth:`prune`."""
        raise self._no_async()

    async def asweep_expired(self) -> int:
        """Async :meth:`sweep_expired`."""
        raise self._no_async()

    async def asetup(self) -> None:
        """Async :meth:`setup`."""

    async def aclose(self) -> None:
        """Async :meth:`close`."""


def _fork_plan(
    src: CheckpointTuple, metadata: dict[str, Any] | None
) -> tuple[CheckpointDraft, dict[str, list[tuple[str, Any]]]]:
    """What forking ``src`` writes: a checkpoint of full snapshots, and its pending writes."""
    c = src.checkpoint
    meta = {
        **c.metadata,
        **(metadata or {}),
        "source": "fork",
        "forked_from": {"thread_id": c.thread_id, "checkpoint_ns": c.ns, "checkpoint_id": c.id},
    }
    draft = CheckpointDraft(
        step=c.step,
        source="fork",
        metadata=meta,
        tasks=c.tasks,
        changes={name: ChannelChange(value) for name, value in c.values.items()},
        parent_id=None,
        base_refs={},
    )
    pending: dict[str, list[tuple[str, Any]]] = {}
    for w in src.pending_writes:
        pending.setdefault(w.task_id, []).append((w.channel, w.value))
    return draft, pending


def _where(row: CheckpointRow) -> str:
    return f"thread {row.thread_id!r}, checkpoint {row.id}"


# ---------------------------------------------------------------------- LangGraph's other names

__all__ += ["CheckpointMetadata", "EmptyChannelError", "get_checkpoint_id"]


class CheckpointMetadata(TypedDict, total=False):
    """The metadata of a checkpoint (``StateSnapshot.metadata``); callers may add their own keys
    through ``config["metadata"]``."""

    source: Literal["input", "loop", "update", "fork"]
    step: int
    parents: dict[str, str]
    run_id: str


def get_checkpoint_id(config: RunnableConfig) -> str | None:
    """The ``checkpoint_id`` a config names, or None."""
    value = config.get("configurable", {}).get("checkpoint_id")
    return None if value is None else str(value)
