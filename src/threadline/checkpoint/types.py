"""Data types of the storage model (DESIGN.md, "Storage model").

The checkpoint layer knows nothing of graphs: a checkpoint holds channel versions, opaque task
descriptions and metadata. Rows hold encoded bytes; the saver base class decodes them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

from ..errors import CorruptCheckpointError

__all__ = [
    "ChannelChange",
    "Checkpoint",
    "CheckpointDraft",
    "CheckpointRow",
    "CheckpointTuple",
    "PendingWrite",
    "RunnableConfig",
    "ThreadInfo",
    "VersionRef",
    "VersionRow",
    "WriteKeys",
    "WriteRow",
    "new_checkpoint_id",
]

RunnableConfig = dict[str, Any]
WriteKeys = frozenset[tuple[str, int]]
"""Pending writes named by their ``(task_id, idx)``."""
"""The config dict: ``{"configurable": {"thread_id": ..., "checkpoint_id": ...}, ...}``."""


_last_ms = 0
_counter = 0


def new_checkpoint_id() -> str:
    """A time-ordered UUID (version 7 layout): ids sort by creation within one process."""
    global _last_ms, _counter
    ms = time.time_ns() // 1_000_000
    if ms <= _last_ms:
        # Same or earlier millisecond (clock step back): bump a counter so ids stay increasing.
        _counter += 1
        ms = _last_ms
    else:
        _counter = 0
    _last_ms = ms
    rand = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= (_counter & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand
    return str(uuid.UUID(int=value))


@dataclass(frozen=True, slots=True)
class VersionRef:
    """Where a channel's value at one checkpoint is stored, with its delta-chain statistics.

    ``writer`` is the id of the checkpoint whose step wrote this version. ``chain_bytes`` is the
    size of the deltas written since the chain's snapshot (0 when this version is the snapshot).
    """

    writer: str
    snapshot_bytes: int
    chain_bytes: int

    def to_list(self) -> list[Any]:
        return [self.writer, self.snapshot_bytes, self.chain_bytes]

    @classmethod
    def from_list(cls, data: list[Any]) -> VersionRef:
        return cls(str(data[0]), int(data[1]), int(data[2]))


@dataclass(frozen=True, slots=True)
class VersionRow:
    """One immutable channel version: a snapshot (``base is None``) or a delta on ``base``.

    A delta's data is the encoded list of items appended to the base value.
    """

    channel: str
    writer: str
    base: str | None
    data: bytes


@dataclass(frozen=True, slots=True)
class CheckpointRow:
    """A checkpoint as a backend stores it. ``metadata`` and ``tasks`` are encoded bytes."""

    thread_id: str
    ns: str
    id: str
    parent_id: str | None
    seq: int
    step: int
    source: str
    created_at: float
    metadata: bytes
    tasks: bytes
    refs: Mapping[str, VersionRef]
    # A checkpoint without versions of its own (LangGraph's input checkpoint) committed in
    # the same transaction just before this one, as its parent: it takes the sequence number
    # before this row's. Set only on rows being committed.
    before: CheckpointRow | None = None


@dataclass(frozen=True, slots=True)
class WriteRow:
    """A pending write of one task, saved as the task finishes."""

    task_id: str
    idx: int
    channel: str
    data: bytes


@dataclass(frozen=True, slots=True)
class ChannelChange:
    """A channel's new value for a checkpoint being saved.

    ``appended`` is set when the new value equals the previous value (a list) followed by these
    items; the saver may then store just them as a delta.
    """

    value: Any
    appended: list[Any] | None = None


@dataclass(slots=True)
class CheckpointDraft:
    """What the runtime hands the saver to store as a new checkpoint."""

    step: int
    source: str
    metadata: dict[str, Any]
    tasks: list[Any]
    changes: dict[str, ChannelChange]
    parent_id: str | None
    base_refs: Mapping[str, VersionRef] = field(default_factory=dict)
    removed: frozenset[str] = frozenset()
    id: str | None = None  # pre-assigned by the runtime; a fresh one when None
    # Every channel's value at this checkpoint, when the writer has them (the runtime does):
    # lets the saver store them as snapshots if the checkpoint that ``base_refs`` come from
    # (``parent_id``) was pruned while the step ran. ``base_refs`` must be that checkpoint's.
    values: Mapping[str, Any] | None = None


class PendingWrite(tuple[str, str, Any]):
    """A decoded pending write: ``task_id`` wrote ``value`` to ``channel``.

    As in LangGraph it is the triple ``(task_id, channel, value)`` (unpack it, index it,
    compare it with a tuple); ``idx``, the write's position among its task's writes, is an
    attribute besides (``PendingWrite(task_id, idx, channel, value)`` makes one). Two
    ``PendingWrite`` objects are equal when their ``idx`` is equal too. Immutable.
    """

    idx: int  # an instance attribute (a tuple subclass cannot have slots)

    def __new__(cls, task_id: str, idx: int, channel: str, value: Any) -> PendingWrite:
        self = tuple.__new__(cls, (task_id, channel, value))
        self.__dict__["idx"] = idx
        return self

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"PendingWrite is immutable: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"PendingWrite is immutable: cannot delete {name!r}")

    @property
    def task_id(self) -> str:
        return self[0]

    @property
    def channel(self) -> str:
        return self[1]

    @property
    def value(self) -> Any:
        return self[2]

    def __eq__(self, other: object) -> bool:
        if isinstance(other, PendingWrite) and other.idx != self.idx:
            return False
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    __hash__ = tuple.__hash__

    def __getnewargs__(self) -> tuple[str, int, str, Any]:
        return (self[0], self.idx, self[1], self[2])

    def __repr__(self) -> str:
        return (
            f"PendingWrite(task_id={self[0]!r}, idx={self.idx!r}, channel={self[1]!r},"
            f" value={self[2]!r})"
        )


LANGGRAPH_CHECKPOINT_VERSION = 4
"""The ``v`` of :meth:`Checkpoint.to_dict`: LangGraph's checkpoint format version it mirrors."""
_CHECKPOINT_KEYS = (
    "v",
    "id",
    "ts",
    "channel_values",
    "channel_versions",
    "versions_seen",
    "updated_channels",
)


@dataclass(slots=True)
class Checkpoint:
    """A decoded checkpoint: its place in the thread's tree, its metadata and its values."""

    thread_id: str
    ns: str
    id: str
    parent_id: str | None
    seq: int
    step: int
    source: str
    created_at: datetime
    metadata: dict[str, Any]
    tasks: list[Any]
    refs: Mapping[str, VersionRef]
    values: dict[str, Any]

    # LangGraph's checkpoint is a dict: ``checkpoint["channel_values"]``, ``["id"]``, ...
    # These read the same keys off this object (see :meth:`to_dict`).

    def to_dict(self) -> dict[str, Any]:
        """The checkpoint in LangGraph's shape (what ``saver.get(config)`` returns).

        ``channel_values`` is the state values (the same dict as :attr:`values`);
        ``channel_versions`` maps each channel to the id of the checkpoint that wrote its value
        (so it changes exactly when the value does); ``updated_channels`` lists the channels
        this checkpoint's step wrote; ``versions_seen`` is always empty: threadline does not
        track which versions each node has seen.
        """
        return {key: self[key] for key in _CHECKPOINT_KEYS}

    def keys(self) -> tuple[str, ...]:
        return _CHECKPOINT_KEYS

    def __contains__(self, key: object) -> bool:
        return key in _CHECKPOINT_KEYS

    def __getitem__(self, key: str) -> Any:
        if key == "channel_values":
            return self.values
        if key == "id":
            return self.id
        if key == "ts":
            return self.created_at.isoformat()
        if key == "v":
            return LANGGRAPH_CHECKPOINT_VERSION
        if key == "channel_versions":
            return {channel: ref.writer for channel, ref in self.refs.items()}
        if key == "versions_seen":
            return {}
        if key == "updated_channels":
            return sorted(ch for ch, ref in self.refs.items() if ref.writer == self.id)
        raise KeyError(key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in _CHECKPOINT_KEYS else default


class CheckpointTuple(NamedTuple):
    """A checkpoint with the pending writes saved against it.

    LangGraph's named tuple, field for field: ``config, checkpoint, metadata, parent_config,
    pending_writes = saver.get_tuple(config)`` unpacks it, and ``[0]``..``[4]`` index it.
    ``checkpoint`` is threadline's :class:`Checkpoint` (read as LangGraph's dict too:
    ``checkpoint["channel_values"]``), ``metadata`` is its metadata and ``pending_writes`` are
    :class:`PendingWrite` triples ``(task_id, channel, value)``. :meth:`of` makes one from a
    checkpoint and its writes.
    """

    config: RunnableConfig
    checkpoint: Checkpoint
    metadata: dict[str, Any]
    parent_config: RunnableConfig | None
    pending_writes: list[PendingWrite]

    @classmethod
    def of(cls, checkpoint: Checkpoint, pending_writes: list[PendingWrite]) -> CheckpointTuple:
        """The tuple of ``checkpoint``: its config and its parent's come from its ids."""
        c = checkpoint
        parent = None if c.parent_id is None else make_config(c.thread_id, c.ns, c.parent_id)
        return cls(
            make_config(c.thread_id, c.ns, c.id), checkpoint, c.metadata, parent, pending_writes
        )


@dataclass(frozen=True, slots=True)
class ThreadInfo:
    """A thread as ``list_threads`` reports it."""

    thread_id: str
    head_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None


def make_config(thread_id: str, ns: str, checkpoint_id: str) -> RunnableConfig:
    return {
        "configurable": {
            "thread_id": thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": checkpoint_id,
        }
    }


def to_datetime(ts: float, where: str = "a stored row") -> datetime:
    """A stored timestamp as a UTC datetime; :class:`CorruptCheckpointError` if it is none."""
    if type(ts) is float or type(ts) is int:
        try:
            return datetime.fromtimestamp(ts, tz=timezone.utc)
        except (OverflowError, OSError, ValueError):
            pass
    raise CorruptCheckpointError(
        f"{where} holds the timestamp {_short(ts)}, which is not a time; the row was changed"
        " outside threadline. Restore the database from a backup, or delete_thread() the thread"
    )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
