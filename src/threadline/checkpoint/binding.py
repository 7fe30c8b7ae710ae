"""The places encrypted values are bound to: AES-GCM associated data, one function per kind.

With encryption on, every stored value is authenticated together with a description of where
it belongs, so a ciphertext copied into another row (another thread, namespace, channel,
checkpoint, task or field) or replayed from an older version fails authentication. A place is
the msgpack array ``[kind, ...fields]``: unambiguous whatever the strings hold.

=========  ==========================================================================
kind       fields
=========  ==========================================================================
``"v"``    channel version: thread, channel, writer (the checkpoint id whose step wrote
           it, which fixes the namespace), base version id or nil (snapshot)
``"c"``    checkpoint field: thread, namespace, checkpoint id, parent id, step, source,
           and the channel references ``[[channel, writer, snapshot_bytes, chain_bytes],
           ...]`` sorted by channel; preceded by the field name (``"metadata"`` /
           ``"tasks"``) packed on its own
``"w"``    pending write: thread, namespace, checkpoint id, task id, index, channel
``"t"``    thread metadata: thread
=========  ==========================================================================

Binding a checkpoint's fields to its references means a row whose plaintext ``refs`` were
edited (say, to point a channel at an older version) no longer authenticates. What is not
bound: a checkpoint's ``seq`` and ``created_at`` (assigned by the database at commit) and
which version of a thread's metadata is current (thread metadata is rewritten in place).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from .types import CheckpointRow, VersionRef

__all__ = [
    "COLUMNS",
    "Rebind",
    "StoredValue",
    "checkpoint_place",
    "checkpoint_places",
    "checkpoint_places_of",
    "thread_place",
    "version_place",
    "write_place",
]

COLUMNS = (
    "threads.metadata",
    "checkpoints.metadata",
    "checkpoints.tasks",
    "versions.data",
    "writes.data",
)
"""Every stored column that holds serialized values; every other column is plaintext."""


def _pack(fields: list[object]) -> bytes:
    # A packer with a small buffer: packb's default 256 KiB buffer, allocated per call, cost
    # ~15 us a place in a busy process (mmap'd and unmapped each time) against 0.4 us.
    # surrogatepass: the memory saver accepts any str as a thread id; a place is never decoded.
    packer = msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass", buf_size=512)
    packed: bytes = packer.pack(fields)
    return packed


def _pack_str(text: str) -> bytes:
    packed: bytes = msgpack.packb(text)  # once, at import
    return packed


def version_place(thread_id: str, channel: str, writer: str, base: str | None) -> bytes:
    return _pack(["v", thread_id, channel, writer, base])


_FIELDS = {"metadata": _pack_str("metadata"), "tasks": _pack_str("tasks")}


def checkpoint_places(
    thread_id: str,
    ns: str,
    checkpoint_id: str,
    parent_id: str | None,
    step: int,
    source: str,
    refs: Mapping[str, VersionRef],
) -> tuple[bytes, bytes]:
    """The places of a checkpoint's metadata and of its tasks."""
    common = _pack(["c", thread_id, ns, checkpoint_id, parent_id, step, source, _refs(refs)])
    return _FIELDS["metadata"] + common, _FIELDS["tasks"] + common


def checkpoint_places_of(row: CheckpointRow) -> tuple[bytes, bytes]:
    return checkpoint_places(
        row.thread_id, row.ns, row.id, row.parent_id, row.step, row.source, row.refs
    )


def checkpoint_place(field: str, row: CheckpointRow) -> bytes:
    """The place of a checkpoint's ``field`` (``"metadata"`` or ``"tasks"``)."""
    places = checkpoint_places_of(row)
    return places[0] if field == "metadata" else places[1]


def write_place(
    thread_id: str, ns: str, checkpoint_id: str, task_id: str, idx: int, channel: str
) -> bytes:
    return _pack(["w", thread_id, ns, checkpoint_id, task_id, idx, channel])


def thread_place(thread_id: str) -> bytes:
    return _pack(["t", thread_id])


def _refs(refs: Mapping[str, VersionRef]) -> list[list[object]]:
    return [
        [name, ref.writer, ref.snapshot_bytes, ref.chain_bytes]
        for name, ref in sorted(refs.items())
    ]


@dataclass(frozen=True, slots=True)
class StoredValue:
    """One stored value of a thread, as re-encryption reads and rewrites it.

    ``column`` is one of :data:`COLUMNS`; ``key`` locates the row within the thread (in the
    backend's own form) and serves as the page cursor; ``fields`` are what the place is made
    of besides the thread id: a :class:`CheckpointRow` for checkpoint fields, ``(channel,
    writer, base)`` for versions, ``(ns, checkpoint_id, task_id, idx, channel)`` for writes.
    """

    column: str
    key: tuple[Any, ...]
    data: bytes
    fields: Any = ()

    def place(self, thread_id: str) -> bytes:
        """The associated data of this value were it stored in thread ``thread_id``."""
        column = self.column
        if column == "versions.data":
            return version_place(thread_id, *self.fields)
        if column == "writes.data":
            return write_place(thread_id, *self.fields)
        if column == "threads.metadata":
            return thread_place(thread_id)
        row: CheckpointRow = self.fields
        if row.thread_id != thread_id:
            row = CheckpointRow(
                thread_id, row.ns, row.id, row.parent_id, row.seq, row.step, row.source,
                row.created_at, row.metadata, row.tasks, row.refs,
            )  # fmt: skip
        return checkpoint_place(column.partition(".")[2], row)


Rebind = Callable[[StoredValue], "bytes | None"]
"""Re-encrypts a value copied to another thread (None: keep the bytes as they are)."""
