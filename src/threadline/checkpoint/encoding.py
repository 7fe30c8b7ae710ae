"""Sans-IO encoding of channel versions: deltas, snapshots and reconstruction.

Rule (DESIGN.md): a changed channel is written as a delta (the items appended this step) while
the bytes of deltas since the chain's snapshot stay within ``snapshot_ratio`` times the size of
that snapshot; otherwise as a full snapshot. Snapshots then grow geometrically, by a factor of
``1 + snapshot_ratio``, so storage stays within ``1 + (1 + r) / r`` times what was ever added
and a read replays at most ``r`` snapshots' worth of deltas. The default ``r = 3`` bounds
storage by 2.33x the payload (about 1.5-2x typically) while keeping cold reads short; ``r = 1``
(the first design) could reach 3x.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from ..errors import CorruptCheckpointError
from .types import CheckpointDraft, VersionRef, VersionRow

DEFAULT_SNAPSHOT_RATIO = 3.0

Dumps = Callable[[Any, str, "str | None"], tuple[bytes, int]]
"""Encode a value of a channel, as a delta on a base version (or a snapshot: None): its stored
bytes and its size before compression."""
Loads = Callable[[VersionRow, "int | None"], tuple[Any, int]]
"""Decode a version row within a size bound (None: the serializer's own): its value, and an
estimate of the memory it holds."""
CacheKey = tuple[str, str, str]
"""``(thread_id, channel, writer)``: a version is cached for the thread that holds it."""


def decoded_estimate(encoded_bytes: int) -> int:
    """What a decoded value of ``encoded_bytes`` (before compression) holds in memory, roughly:
    Python objects take a few times their MessagePack size (a str ~50 bytes more, a dict
    entry ~100)."""
    return 3 * encoded_bytes + 64


def encode_changes(
    draft: CheckpointDraft,
    checkpoint_id: str,
    dumps: Dumps,
    snapshot_ratio: float = DEFAULT_SNAPSHOT_RATIO,
) -> tuple[dict[str, VersionRef], list[VersionRow]]:
    """Encode a draft's changed channels. Returns the new checkpoint's refs and the rows to add.

    The rule weighs sizes before compression: a long list compresses far better than the
    items appended to it, and weighing compressed sizes would make snapshots come ever sooner.
    """
    refs = dict(draft.base_refs)
    for name in draft.removed:
        refs.pop(name, None)
    rows: list[VersionRow] = []
    for name, change in draft.changes.items():
        base = draft.base_refs.get(name)
        if change.appended is not None and base is not None:
            if not change.appended:
                continue  # appended nothing: the value is unchanged
            data, size = dumps(change.appended, name, base.writer)
            chain = base.chain_bytes + size
            if chain <= base.snapshot_bytes * snapshot_ratio:
                rows.append(VersionRow(name, checkpoint_id, base.writer, data))
                refs[name] = VersionRef(checkpoint_id, base.snapshot_bytes, chain)
                continue
        data, size = dumps(change.value, name, None)
        rows.append(VersionRow(name, checkpoint_id, None, data))
        refs[name] = VersionRef(checkpoint_id, size, 0)
    return refs, rows


class ChainDecoder:
    """Rebuilds channel values from version rows, decoding each row at most once.

    ``memo`` maps ``(thread_id, channel, writer)`` to a decoded value; pass the saver's shared
    :class:`ValueCache` to reuse values across calls, or a fresh one for values that share
    nothing with earlier reads. Only versions of ``thread_id`` are looked up or cached: a row
    that names another thread's version finds nothing, warm cache or cold.
    """

    def __init__(
        self,
        loads: Loads,
        memo: ValueCache,
        *,
        where: str,
        thread_id: str = "",
    ) -> None:
        self._loads = loads
        self._memo = memo
        self._rows: dict[tuple[str, str], VersionRow] = {}
        self._where = where
        self._thread = thread_id

    def missing(self, refs: Mapping[str, VersionRef]) -> set[tuple[str, str]]:
        """The versions among ``refs`` that are neither decoded nor held as rows."""
        t = self._thread
        return {
            (name, ref.writer)
            for name, ref in refs.items()
            if (t, name, ref.writer) not in self._memo and (name, ref.writer) not in self._rows
        }

    def add_rows(self, rows: Iterable[VersionRow]) -> None:
        for row in rows:
            self._rows[(row.channel, row.writer)] = row

    def values(self, refs: Mapping[str, VersionRef], *, where: str | None = None) -> dict[str, Any]:
        """Values of ``refs``; ``where`` names the checkpoint they belong to in errors."""
        if where is not None:
            self._where = where
        return {
            name: self.value(name, ref.writer, max(ref.snapshot_bytes, ref.chain_bytes))
            for name, ref in refs.items()
        }

    def value(self, channel: str, writer: str, recorded: int = 0) -> Any:
        """The value of one version. ``recorded`` is the larger of the sizes its ref recorded
        at write time (snapshot, deltas since): no row of its chain decodes to more."""
        t = self._thread
        hit = self._memo.get((t, channel, writer), _MISS)
        if hit is not _MISS:
            return hit
        # Walk back to the nearest decoded version or the snapshot, then replay forward.
        chain: list[VersionRow] = []
        base_value: Any = _MISS
        size = 0
        cursor: str | None = writer
        while cursor is not None:
            hit = self._memo.get((t, channel, cursor), _MISS)
            if hit is not _MISS:
                base_value = hit
                size = self._memo.size_of((t, channel, cursor))
                break
            row = self._rows.get((channel, cursor))
            if row is None:
                raise CorruptCheckpointError(
                    f"channel {channel!r} version {cursor} is missing from storage ({self._where});"
                    " the thread's rows were deleted or pruned while in use"
                )
            if row.base is not None and type(row.base) is not str:
                raise CorruptCheckpointError(
                    f"channel {channel!r} version {cursor} has the base {row.base!r}, not an id"
                    f" ({self._where}); the row was changed outside threadline"
                )
            chain.append(row)
            cursor = row.base
        limit = recorded if recorded > 0 else None
        for row in reversed(chain):
            decoded, held = self._decode(row, limit)
            size += held
            if row.base is None:
                base_value = decoded
            else:
                if not isinstance(base_value, list) or not isinstance(decoded, list):
                    raise CorruptCheckpointError(
                        f"channel {channel!r} version {row.writer} is a delta on a value that is"
                        f" not a list ({self._where})"
                    )
                base_value = base_value + decoded
            self._memo.put((t, channel, row.writer), base_value, size)
        return base_value

    def _decode(self, row: VersionRow, limit: int | None) -> tuple[Any, int]:
        """The row's value and what it holds in memory (an estimate)."""
        try:
            return self._loads(row, limit)
        except CorruptCheckpointError as exc:
            raise type(exc)(
                f"{exc} (channel {row.channel!r}, version {row.writer}, {self._where})"
            ) from exc


_MISS: Any = object()


class ValueCache:
    """Decoded channel versions by ``(thread_id, channel, writer)``, least recently used
    evicted first.

    Versions are immutable, so any process may cache them; entries are charged an estimate of
    the memory their decoded values hold (:func:`decoded_estimate`), and ``max_bytes`` bounds
    the sum. Values in it are shared: callers must not mutate them.
    """

    def __init__(self, max_bytes: int | None = 64 * 1024 * 1024) -> None:
        self._entries: OrderedDict[CacheKey, tuple[Any, int]] = OrderedDict()
        self._max_bytes = max_bytes
        self._bytes = 0
        self._lock = threading.Lock()  # savers are shared by threads (sync nodes run on a pool)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: CacheKey, default: Any = None) -> Any:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return default
            if self._max_bytes is not None:
                self._entries.move_to_end(key)
            return entry[0]

    def size_of(self, key: CacheKey) -> int:
        entry = self._entries.get(key)
        return 0 if entry is None else entry[1]

    def put(self, key: CacheKey, value: Any, nbytes: int) -> None:
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[key] = (value, nbytes)
            self._bytes += nbytes
            if self._max_bytes is not None:
                while self._bytes > self._max_bytes and len(self._entries) > 1:
                    _, (_, size) = self._entries.popitem(last=False)
                    self._bytes -= size

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
