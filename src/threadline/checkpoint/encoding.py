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

from ..errors import CorruptCheckpointError, MissingVersionError
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


MAX_CHAIN_LENGTH = 100_000
"""Most versions a read replays for one channel value (its snapshot and the deltas on it).

The snapshot rule keeps real chains far shorter (a chain of ``k`` deltas needs a snapshot of at
least ``k / (1 + snapshot_ratio)`` items); a longer one is a crafted or corrupt row, refused
before it costs unbounded time or memory."""


def chain_rows_cap(wanted: Iterable[tuple[str, str]]) -> int:
    """Most version rows a read of the ``(channel, writer)`` keys ``wanted`` needs: for each
    channel one chain of at most :data:`MAX_CHAIN_LENGTH` deltas and its snapshot, plus the
    keys. A backend stops walking chains there, so a crafted endless chain costs bounded work
    (the decoder then reports it)."""
    keys = list(wanted)
    return (MAX_CHAIN_LENGTH + 1) * len({channel for channel, _ in keys}) + len(keys)


class ChainDecoder:
    """Rebuilds channel values from version rows, decoding each row at most once.

    ``memo`` maps ``(thread_id, channel, writer)`` to a decoded value; pass the saver's shared
    :class:`ValueCache` to reuse values across calls, or a fresh one for values that share
    nothing with earlier reads. Only versions of ``thread_id`` are looked up or cached: a row
    that names another thread's version finds nothing, warm cache or cold.

    Cost: a value is built by copying its snapshot once and extending it by each delta, so it
    costs what it holds plus the deltas replayed; only the values asked for are kept in
    ``memo`` (never the intermediate versions of a chain, which made a long thread's history
    cost the square of its length). Each row is decoded once per decoder, and an older version
    of a chain already replayed is a slice of the value built, so a history replays each chain
    once however many of its versions it returns. A value built by a replay is referenced by
    the slices taken of it: a caller must not change the items it holds in place.
    """

    def __init__(
        self,
        loads: Loads,
        memo: ValueCache,
        *,
        where: str,
        thread_id: str = "",
        max_chain: int | None = None,
    ) -> None:
        self._loads = loads
        self._memo = memo
        self._rows: dict[tuple[str, str], VersionRow] = {}
        self._decoded: dict[tuple[str, str], tuple[Any, int]] = {}
        # (channel, writer) -> (a list built here, the length of that version's prefix of it):
        # every version of a chain replayed once is a prefix of the value replayed, so a
        # history (newest first) slices it instead of replaying the chain again.
        self._prefix: dict[tuple[str, str], tuple[list[Any], int]] = {}
        self._where = where
        self._thread = thread_id
        self._max_chain = MAX_CHAIN_LENGTH if max_chain is None else max_chain

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
        key = (self._thread, channel, writer)
        hit = self._memo.get(key, _MISS)
        if hit is not _MISS:
            return hit
        limit = recorded if recorded > 0 else None
        chain, base_value, size = self._walk(channel, writer)
        if base_value is _MISS:
            snapshot = chain.pop()  # _walk ends a chain without a cached base at a snapshot
            base_value, held = self._decode(snapshot, limit)
            size += held
        if chain:
            if not isinstance(base_value, list):
                raise CorruptCheckpointError(
                    f"channel {channel!r} version {chain[-1].writer} is a delta on a value that"
                    f" is not a list ({self._where})"
                )
            value = list(base_value)  # one copy, extended in place by each delta
            for row in reversed(chain):
                items, held = self._decode(row, limit)
                if not isinstance(items, list):
                    raise CorruptCheckpointError(
                        f"channel {channel!r} version {row.writer} is a delta whose items are not"
                        f" a list ({self._where})"
                    )
                value.extend(items)
                size += held
                self._prefix[(channel, row.writer)] = (value, len(value))
            base_value = value
        self._memo.put(key, base_value, size)
        return base_value

    def _walk(self, channel: str, writer: str) -> tuple[list[VersionRow], Any, int]:
        """Rows from ``writer`` back to a cached value (returned with its size) or to the
        snapshot (the last row; the value is then ``_MISS``), newest first.

        Refuses a cycle and a chain longer than ``max_chain``: both can only come from rows
        written outside threadline, and following them would never end.
        """
        chain: list[VersionRow] = []
        seen: set[str] = set()
        cursor: str | None = writer
        t = self._thread
        while cursor is not None:
            hit = self._memo.get((t, channel, cursor), _MISS)
            if hit is not _MISS:
                return chain, hit, self._memo.size_of((t, channel, cursor))
            prefix = self._prefix.get((channel, cursor))
            if prefix is not None:
                built, length = prefix
                return chain, built[:length], 8 * length  # charged like a list of references
            if cursor in seen:
                raise CorruptCheckpointError(
                    f"channel {channel!r} version {writer} has a delta chain that loops back to"
                    f" version {cursor} ({self._where}); the rows were altered outside threadline"
                )
            if len(chain) >= self._max_chain:
                raise CorruptCheckpointError(
                    f"channel {channel!r} version {writer} has a delta chain longer than"
                    f" {self._max_chain} versions ({self._where}); threadline never writes one,"
                    " so the rows were altered outside threadline"
                )
            row = self._rows.get((channel, cursor))
            if row is None:
                raise MissingVersionError(
                    f"channel {channel!r} version {cursor} is missing from storage ({self._where});"
                    " the thread's rows were deleted or pruned while in use"
                )
            if row.base is not None and type(row.base) is not str:
                raise CorruptCheckpointError(
                    f"channel {channel!r} version {cursor} has the base {row.base!r}, not an id"
                    f" ({self._where}); the row was changed outside threadline"
                )
            seen.add(cursor)
            chain.append(row)
            cursor = row.base
        return chain, _MISS, 0

    def _decode(self, row: VersionRow, limit: int | None) -> tuple[Any, int]:
        """The row's value and what it holds in memory (an estimate); once per decoder."""
        key = (row.channel, row.writer)
        found = self._decoded.get(key)
        if found is not None:
            return found
        try:
            decoded = self._loads(row, limit)
        except CorruptCheckpointError as exc:
            raise type(exc)(
                f"{exc} (channel {row.channel!r}, version {row.writer}, {self._where})"
            ) from exc
        self._decoded[key] = decoded
        return decoded


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
