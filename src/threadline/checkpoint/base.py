"""The checkpointer contract every backend implements.

Public methods are written once here. A backend implements a few storage primitives (the
``_read_*``/``_commit*`` methods and the thread operations), in sync form, async form or both;
everything about encoding, deltas, caching and decoding is shared.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import functools
import inspect
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

from typing_extensions import Self, TypedDict

from ..errors import (
    BaseCheckpointGoneError,
    CheckpointConflictError,
    CheckpointNotFoundError,
    CorruptCheckpointError,
    EmptyChannelError,
    InvalidArgumentError,
    MissingVersionError,
    ThreadlineError,
)
from .binding import (
    Rebind,
    StoredValue,
    checkpoint_places,
    checkpoint_places_of,
    thread_place,
    version_place,
    write_place,
)
from .encoding import (
    DEFAULT_SNAPSHOT_RATIO,
    ChainDecoder,
    ValueCache,
    decoded_estimate,
    encode_changes,
)
from .lease import (
    DEFAULT_LEASE_TIMEOUT,
    DEFAULT_LEASE_TTL,
    Lease,
    LeaseOp,
    LeaseRenewer,
    LeaseState,
    busy_error,
    check_lease_timeout,
    check_lease_ttl,
    check_on_busy,
    new_owner,
    wait_delay,
)
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
    VersionRef,
    VersionRow,
    WriteKeys,
    WriteRow,
    new_checkpoint_id,
    to_datetime,
)

__all__ = [
    "MAX_ID_BYTES",
    "BaseCheckpointSaver",
    "base_gone_error",
    "borrowed_base",
    "check_config",
    "conflict_error",
    "metadata_matches",
    "missing_head_error",
    "parse_config",
    "validate_filter",
    "validate_ns",
    "validate_thread_id",
    "versions_written",
]

SWEEP_INTERVAL = 60.0
READ_ATTEMPTS = 5
"""Reads of a checkpoint that a concurrent prune or delete can overtake before one is final."""
HISTORY_MEMO_BYTES = 8 * 1024 * 1024
"""Bound of the decoded values a history keeps to reuse (channels unchanged between steps)."""
HEAD_CACHE_SIZE = 10_000
"""Threads whose last head this process remembers (see :meth:`BaseCheckpointSaver.cached_head`)."""
_FILTER_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,127}$")


MAX_ID_BYTES = 1024
"""Longest thread id or checkpoint namespace accepted, in bytes of UTF-8 (1 KiB)."""


def _check_text(what: str, value: str, example: str) -> None:
    """The rules every backend applies to ids: valid UTF-8 text, no NUL, at most 1 KiB."""
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidArgumentError(
            f"{what} {value!r} is not valid text: it holds a lone surrogate (often the sign of"
            f" bytes decoded with errors='surrogateescape'); pass proper text, e.g. {example}"
        ) from None
    if "\x00" in value:
        raise InvalidArgumentError(
            f"{what} {value!r} holds a NUL character, which no database stores in text; remove"
            f" it, e.g. {example}"
        )
    if size > MAX_ID_BYTES:
        raise InvalidArgumentError(
            f"{what} is {size} bytes of UTF-8, more than the {MAX_ID_BYTES} allowed"
            f" ({value[:40]!r}...); use a shorter id, e.g. a hash of it: {example}"
        )


def validate_thread_id(thread_id: object) -> str:
    """``thread_id`` as the string stored: a non-empty ``str`` (at most :data:`MAX_ID_BYTES`
    of UTF-8, no NUL, no lone surrogate) or a :class:`uuid.UUID` (its canonical string).

    Anything else raises :class:`~threadline.errors.InvalidArgumentError` (a ``ValueError``)."""
    if isinstance(thread_id, uuid.UUID):
        return str(thread_id)
    if not isinstance(thread_id, str) or not thread_id:
        raise InvalidArgumentError(
            f"thread_id must be a non-empty string or a uuid.UUID, got {thread_id!r}"
            f" ({type(thread_id).__name__}); pass str(...) of your id, e.g."
            " {'configurable': {'thread_id': str(my_id)}}"
        )
    _check_text("thread_id", thread_id, "hashlib.sha256(my_id.encode()).hexdigest()")
    return thread_id


def validate_ns(ns: object) -> str:
    """A checkpoint namespace: a string ("" for the root graph), under the thread id's rules."""
    if ns is None:
        return ""
    if not isinstance(ns, str):
        raise InvalidArgumentError(
            f'checkpoint_ns must be a string ("" for the root graph), got {ns!r}'
            f" ({type(ns).__name__})"
        )
    if ns:
        _check_text("checkpoint_ns", ns, "'' for the root graph")
    return ns


def check_config(config: object, what: str = "config") -> Mapping[str, Any]:
    """``config`` if it is a mapping (None: empty), else a clear error instead of an
    AttributeError deep inside."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise InvalidArgumentError(
            f"{what} must be a dict like {{'configurable': {{'thread_id': '...'}}}}, got"
            f" {config!r} ({type(config).__name__})"
        )
    configurable = config.get("configurable")
    if configurable is not None and not isinstance(configurable, Mapping):
        raise InvalidArgumentError(
            f"{what}['configurable'] must be a dict like {{'thread_id': '...'}}, got"
            f" {configurable!r} ({type(configurable).__name__})"
        )
    return config


def parse_config(config: RunnableConfig | None) -> tuple[str, str, str | None]:
    """``(thread_id, checkpoint_ns, checkpoint_id)`` from a config dict, validated."""
    configurable = check_config(config).get("configurable") or {}
    if "thread_id" not in configurable:
        raise InvalidArgumentError(
            "config has no thread_id; pass {'configurable': {'thread_id': '...'}} to say which"
            " thread to use"
        )
    thread_id = validate_thread_id(configurable["thread_id"])
    ns = validate_ns(configurable.get("checkpoint_ns") or "")
    checkpoint_id = configurable.get("checkpoint_id") or None
    if checkpoint_id is not None and not isinstance(checkpoint_id, str):
        raise InvalidArgumentError(
            f"checkpoint_id must be a string, got {checkpoint_id!r}; pass the id a checkpoint's"
            " config holds"
        )
    return thread_id, ns, checkpoint_id


def _int_arg(name: str, value: object, minimum: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an int >= {minimum}" + (" or None" if optional else "")
        raise InvalidArgumentError(f"{name} must be {allowed}, got {value!r}")


def _thread_ids(thread_ids: object) -> list[str]:
    if isinstance(thread_ids, str | uuid.UUID) or not isinstance(thread_ids, Iterable):
        raise InvalidArgumentError(
            f"thread_ids must be a list of thread ids, got {thread_ids!r}; pass [{thread_ids!r}]"
            " for one thread"
        )
    return [validate_thread_id(t) for t in thread_ids]


def _checked_list_threads(
    self: Any, *, filter: Any = None, limit: Any = None, offset: Any = 0
) -> dict[str, Any]:
    _int_arg("limit", limit, 0, optional=True)
    _int_arg("offset", offset, 0)
    return {"filter": validate_filter(filter), "limit": limit, "offset": offset}


# Thread operations are implemented by each backend; their arguments are checked here, once,
# by wrapping each backend's method (see BaseCheckpointSaver.__init_subclass__), so every
# backend accepts and refuses exactly the same calls.
def _wrap_thread_ops(cls: type) -> None:
    def wrap(name: str, check: Callable[..., tuple[tuple[Any, ...], dict[str, Any]]]) -> None:
        fn = cls.__dict__.get(name)
        if fn is None or getattr(fn, "_checked", False):
            return
        if inspect.iscoroutinefunction(fn):

            async def acall(self: Any, *args: Any, **kwargs: Any) -> Any:
                args, kwargs = check(*args, **kwargs)
                return await fn(self, *args, **kwargs)

            wrapped: Any = functools.wraps(fn)(acall)
        else:

            def call(self: Any, *args: Any, **kwargs: Any) -> Any:
                args, kwargs = check(*args, **kwargs)
                return fn(self, *args, **kwargs)

            wrapped = functools.wraps(fn)(call)
        wrapped._checked = True
        setattr(cls, name, wrapped)

    def one_thread(thread_id: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (validate_thread_id(thread_id),), {}

    def two_threads(source: Any, target: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (validate_thread_id(source), validate_thread_id(target)), {}

    def listing(**kwargs: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        unknown = set(kwargs) - {"filter", "limit", "offset"}
        if unknown:
            raise InvalidArgumentError(
                f"list_threads() takes filter=, limit= and offset=, not {', '.join(unknown)}"
            )
        return (), _checked_list_threads(None, **kwargs)

    def pruning(thread_ids: Any, *, keep_last: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
        ids = _thread_ids(thread_ids)
        if isinstance(keep_last, bool) or not isinstance(keep_last, int) or keep_last < 1:
            raise InvalidArgumentError(
                f"keep_last must be an int of at least 1 (the head), got {keep_last!r}"
            )
        return (ids,), {"keep_last": keep_last}

    for prefix in ("", "a"):
        wrap(prefix + "delete_thread", one_thread)
        wrap(prefix + "copy_thread", two_threads)
        wrap(prefix + "list_threads", listing)
        wrap(prefix + "prune", pruning)


def validate_filter(filter: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check metadata filter keys: plain identifiers only, so nothing odd reaches a query."""
    if not filter:
        return {}
    if not isinstance(filter, Mapping):
        raise InvalidArgumentError(
            f"filter must be a mapping of metadata keys to values, got {filter!r}"
        )
    for key in filter:
        if not isinstance(key, str) or not _FILTER_KEY.match(key):
            raise InvalidArgumentError(
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


def missing_head_error(thread_id: str, ns: str, head: object) -> CorruptCheckpointError:
    """What every backend raises when a thread's head names a checkpoint it does not hold."""
    where = f" (namespace {ns!r})" if ns else ""
    return CorruptCheckpointError(
        f"the head of thread {thread_id!r}{where} points to checkpoint {head}, which is not"
        " stored; the rows were changed outside threadline. Restore the database from a"
        " backup, or delete_thread() the thread"
    )


def borrowed_base(
    row: CheckpointRow, versions: Sequence[VersionRow], expected_head: str | None
) -> str | None:
    """The checkpoint a commit must find still stored, in the commit's transaction, or None.

    A commit refers to versions it did not write: the refs it carries over unchanged and the
    bases of its deltas, all from its parent's refs. The parent keeps them alive (prune keeps
    what any remaining checkpoint reaches), so the parent must still exist when the commit
    lands. When the parent is the expected head the head's compare-and-swap proves it (heads
    are never pruned); otherwise (time travel, a fork within the thread, a step after
    ``update_state`` on an old checkpoint) the backend checks it, or locks it against a
    concurrent prune, and raises :func:`base_gone_error` when it is gone.
    """
    parent = row.parent_id
    if row.before is not None and parent == row.before.id:
        # The input checkpoint, committed with this row, carries its parent's refs unchanged.
        parent = row.before.parent_id
    if parent is None or parent == expected_head:
        return None
    if all(ref.writer == row.id for ref in row.refs.values()) and all(
        v.base is None for v in versions
    ):
        return None  # nothing borrowed: every value is a snapshot written by this commit
    return parent


def base_gone_error(thread_id: str, row: CheckpointRow) -> BaseCheckpointGoneError:
    """The error a backend raises when :func:`borrowed_base` is no longer stored."""
    return BaseCheckpointGoneError(
        f"checkpoint {row.parent_id} of thread {row.thread_id!r}, which checkpoint {row.id}"
        " builds on, was pruned or deleted while the step ran; nothing of this step was"
        " stored. Store it with every channel's value (draft.values) or run again from the"
        " thread's head",
        thread_id=thread_id,
        expected=row.parent_id,
        actual=None,
    )


def _standalone(draft: CheckpointDraft) -> CheckpointDraft | None:
    """``draft`` with every channel as a snapshot of its own, when it carries the values."""
    if draft.values is None:
        return None
    return dataclasses.replace(
        draft,
        changes={name: ChannelChange(value) for name, value in draft.values.items()},
        base_refs={},
        removed=frozenset(),
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
        lease_ttl: seconds a run's writer lease of its thread lasts unless renewed (runs renew
            it while they run): how long a crashed run keeps others off its thread.
        on_busy: what a run does when another run holds its thread's lease: ``"wait"`` for
            it (default, at most ``lease_timeout`` seconds) or ``"raise"``
            :class:`~threadline.errors.ThreadBusyError` at once. Per call:
            ``{"configurable": {"on_busy": ..., "lease_timeout": ...}}``.
        lease_timeout: seconds a run waits for a busy thread before raising.
    """

    #: Backends with only one flavour name the other one here for error messages.
    sync_twin: str | None = None
    async_twin: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _wrap_thread_ops(cls)

    def __init__(
        self,
        *,
        serde: Serializer | None = None,
        ttl: float | None = None,
        auto_sweep: bool = True,
        cache_bytes: int | None = 64 * 1024 * 1024,
        snapshot_ratio: float = DEFAULT_SNAPSHOT_RATIO,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        on_busy: str = "wait",
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
    ) -> None:
        if ttl is not None and ttl <= 0:
            raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
        self.lease_ttl = check_lease_ttl(lease_ttl)
        self.on_busy = check_on_busy(on_busy)
        self.lease_timeout = check_lease_timeout(lease_timeout)
        self._renewer: LeaseRenewer | None = None
        self.serde: Serializer = serde if serde is not None else MsgpackSerializer()
        self.ttl = ttl
        self.auto_sweep = auto_sweep
        self.snapshot_ratio = snapshot_ratio
        self._cache = ValueCache(cache_bytes)
        self._last_sweep = 0.0
        # (thread_id, ns) -> the head this process last committed, when it had no tasks.
        self._heads: dict[tuple[str, str], CheckpointRow] = {}
        # Threads another process writes too (a commit found their head moved): their cached
        # head is not offered until a read finds this process's last commit still the head.
        self._shared_heads: dict[tuple[str, str], None] = {}
        self._heads_lock = threading.Lock()
        self._heavy: dict[tuple[str, str], None] = {}  # threads whose commits encode off-loop

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
        lease: LeaseOp | None = None,
    ) -> int:
        """Atomically add the checkpoint and its versions and move the head from ``expected_head``.

        ``row.seq`` is a placeholder: assign the thread's next sequence number and return it.
        Raise :class:`CheckpointConflictError` (storing nothing) when the head is elsewhere,
        and :func:`base_gone_error` when :func:`borrowed_base` names a checkpoint no longer
        stored (checked atomically with the commit, so no prune can remove it meanwhile).
        With ``lease``, do what :class:`LeaseOp` says in the same transaction (setting
        ``lease.lease.epoch`` / ``expires_at`` when it takes or renews the lease).
        """
        raise self._no_sync()

    def _commit_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        rows: Sequence[WriteRow],
        expected_head: str | None,
        lease: Lease | None = None,
    ) -> None:
        """Add pending writes (ignoring ones already stored) if the head is ``expected_head``
        (and, with ``lease``, if its epoch is still the thread's)."""
        raise self._no_sync()

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
        """In one transaction: delete every checkpoint of the thread with a larger ``seq``
        than ``checkpoint_id``'s, with their pending writes and the versions they wrote (see
        :func:`versions_written`), and point each namespace's head at its newest remaining
        checkpoint (removing heads of namespaces left empty). Returns how many checkpoints
        went, or None (changing nothing) when ``(thread_id, ns)`` has no such checkpoint.
        With ``keep_writes``, also delete the checkpoint's own pending writes not in it.

        Raise :func:`conflict_error` when ``expected_head`` is given and is not the head of
        ``ns``; check ``lease`` ("hold", "release" or "check") as :meth:`_commit` does. Both
        in the same transaction, before anything is deleted, as is the target's lookup.
        """
        raise self._no_sync()

    def _lease_acquire(self, thread_id: str, owner: str, ttl: float) -> LeaseState:
        """Take the thread's lease if nobody else holds it (bumping its epoch)."""
        raise self._no_sync()

    def _lease_renew(self, thread_id: str, epoch: int, ttl: float, release: bool) -> float | None:
        """Extend (or, with ``release``, release) the lease of ``epoch``: its new expiry, or
        None when that epoch no longer holds it."""
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
        lease: LeaseOp | None = None,
    ) -> int:
        raise self._no_async()

    async def _acommit_writes(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        rows: Sequence[WriteRow],
        expected_head: str | None,
        lease: Lease | None = None,
    ) -> None:
        raise self._no_async()

    # Re-encryption (threadline.checkpoint.rekey) and copy_thread under encryption read and
    # rewrite stored values through these. ``after`` is the last page's last key.

    def _thread_page(self, after: str | None, limit: int) -> builtins.list[str]:
        """Thread ids in ascending order, after ``after``."""
        raise self._no_sync()

    def _stored_page(
        self, column: str, thread_id: str, after: tuple[Any, ...] | None, limit: int
    ) -> builtins.list[StoredValue]:
        """A page of the thread's values in ``column`` (see binding.COLUMNS), by key."""
        raise self._no_sync()

    def _replace_stored(self, thread_id: str, updates: Sequence[tuple[StoredValue, bytes]]) -> int:
        """In one transaction, replace each value that still holds what was read; the count."""
        raise self._no_sync()

    async def _athread_page(self, after: str | None, limit: int) -> builtins.list[str]:
        raise self._no_async()

    async def _astored_page(
        self, column: str, thread_id: str, after: tuple[Any, ...] | None, limit: int
    ) -> builtins.list[StoredValue]:
        raise self._no_async()

    async def _areplace_stored(
        self, thread_id: str, updates: Sequence[tuple[StoredValue, bytes]]
    ) -> int:
        raise self._no_async()

    def _rebinder(self, source: str, target: str) -> Rebind | None:
        """For copy_thread: a function re-encrypting a copied value for its new thread (None
        when nothing needs it: the serializer does not encrypt)."""
        if not self._binds:
            return None
        reseal = self.serde.reseal  # type: ignore[attr-defined]

        def rebind(value: StoredValue) -> bytes | None:
            new: bytes | None = reseal(value.data, value.place(source), new_aad=value.place(target))
            return new

        return rebind

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
        raise self._no_async()

    async def _alease_acquire(self, thread_id: str, owner: str, ttl: float) -> LeaseState:
        raise self._no_async()

    async def _alease_renew(
        self, thread_id: str, epoch: int, ttl: float, release: bool
    ) -> float | None:
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

    @property
    def _binds(self) -> bool:
        """Whether the serializer encrypts: then each value is bound to its place."""
        return getattr(self.serde, "encrypted", False) is True

    def _dumps(self, value: Any, key: str, place: bytes | None = None) -> tuple[bytes, int]:
        """Encode a value: its bytes, and its size before any compression. ``place``: the
        associated data an encrypting serializer binds the ciphertext to."""
        sized = getattr(self.serde, "dumps_sized", None)
        if place is not None and self._binds:
            if sized is not None:
                return sized(value, key, aad=place)  # type: ignore[no-any-return]
            data = self.serde.dumps(value, key, aad=place)  # type: ignore[call-arg]
            return data, len(data)
        if sized is not None:
            return sized(value, key)  # type: ignore[no-any-return]
        data = self.serde.dumps(value, key)
        return data, len(data)

    def _loads_at(self, data: bytes, place: bytes, where: str) -> Any:
        """Decode a value stored at ``place``; errors name ``where``."""
        try:
            if self._binds:
                return self.serde.loads(data, aad=place)  # type: ignore[call-arg]
            return self.serde.loads(data)
        except CorruptCheckpointError as exc:
            raise type(exc)(f"{exc} ({where})") from exc

    def _load_thread_metadata(self, thread_id: str, data: bytes | None) -> dict[str, Any]:
        """Decoded thread metadata (``{}`` when none is stored)."""
        if data is None:
            return {}
        meta: dict[str, Any] = self._loads_at(
            data, thread_place(thread_id), f"metadata of thread {thread_id!r}"
        )
        return meta

    def _load_version(self, thread_id: str, row: VersionRow, limit: int | None) -> tuple[Any, int]:
        """A version row's value within ``limit`` bytes, and the memory it holds (estimated)."""
        sized = getattr(self.serde, "loads_sized", None)
        if self._binds:
            place = version_place(thread_id, row.channel, row.writer, row.base)
            if sized is not None:
                return sized(row.data, limit, aad=place)  # type: ignore[no-any-return]
            value = self.serde.loads(row.data, aad=place)  # type: ignore[call-arg]
        elif sized is not None:
            return sized(row.data, limit)  # type: ignore[no-any-return]
        else:
            value = self.serde.loads(row.data)
        return value, decoded_estimate(len(row.data))

    def _prepare_commit(
        self,
        thread_id: str,
        ns: str,
        draft: CheckpointDraft,
        thread_metadata: dict[str, Any] | None,
        before: CheckpointDraft | None = None,
    ) -> tuple[CheckpointRow, list[VersionRow], bytes | None, float | None]:
        thread_id = validate_thread_id(thread_id)
        ns = validate_ns(ns)
        first = None
        if before is not None:
            if before.changes or before.removed:
                raise ValueError("a checkpoint committed before another must change no channel")
            first, _, _, _ = self._prepare_commit(thread_id, ns, before, None)
            if draft.parent_id != first.id:
                raise ValueError("the checkpoint committed before another must be its parent")
        checkpoint_id = draft.id or new_checkpoint_id()
        binds = self._binds

        def dump_version(value: Any, channel: str, base: str | None) -> tuple[bytes, int]:
            if binds:
                return self._dumps(
                    value, channel, version_place(thread_id, channel, checkpoint_id, base)
                )
            return self._dumps(value, channel)

        refs, versions = encode_changes(draft, checkpoint_id, dump_version, self.snapshot_ratio)
        now = time.time()
        meta = None
        if binds:  # the fields are bound to the rest of the row
            places = checkpoint_places(
                thread_id, ns, checkpoint_id, draft.parent_id, draft.step, draft.source, refs
            )
            metadata = self._dumps(draft.metadata, "metadata", places[0])[0]
            tasks = self._dumps(draft.tasks, "tasks", places[1])[0]
            if thread_metadata:
                meta = self._dumps(thread_metadata, "metadata", thread_place(thread_id))[0]
        else:
            metadata = self.serde.dumps(draft.metadata, "metadata")
            tasks = self.serde.dumps(draft.tasks, "tasks")
            if thread_metadata:
                meta = self.serde.dumps(thread_metadata, "metadata")
        row = CheckpointRow(
            thread_id=thread_id,
            ns=ns,
            id=checkpoint_id,
            parent_id=draft.parent_id,
            seq=-1,
            step=draft.step,
            source=draft.source,
            created_at=now,
            metadata=metadata,
            tasks=tasks,
            refs=refs,
            before=first,
        )
        expires_at = None if self.ttl is None else now + self.ttl
        return row, versions, meta, expires_at

    def _after_commit(
        self, row: CheckpointRow, seq: int, draft: CheckpointDraft, versions: list[VersionRow]
    ) -> Checkpoint:
        self._remember_head(row, seq, draft)
        # The values just written are the runtime's own: cache them so the next step and the
        # next run on this thread need not decode anything.
        for name, change in draft.changes.items():
            ref = row.refs.get(name)
            if ref is not None and ref.writer == row.id:
                # Charged as the decoded value: a few times its size before compression.
                size = decoded_estimate(ref.snapshot_bytes + ref.chain_bytes)
                self._cache.put((row.thread_id, name, row.id), change.value, size)
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
                self._heads[key] = dataclasses.replace(row, seq=seq, before=None)

    def _head_moved(self, thread_id: str, ns: str) -> None:
        """A commit found the head elsewhere: another process writes this thread too."""
        key = (thread_id, ns)
        with self._heads_lock:
            self._heads.pop(key, None)
            self._shared_heads.pop(key, None)
            if len(self._shared_heads) >= HEAD_CACHE_SIZE:
                del self._shared_heads[next(iter(self._shared_heads))]
            self._shared_heads[key] = None

    def _saw_head(self, row: CheckpointRow) -> None:
        """A read of the head: if it is still this process's last commit, nobody else wrote
        since, and the cached head is offered again."""
        key = (row.thread_id, row.ns)
        with self._heads_lock:
            if key in self._shared_heads:
                mine = self._heads.get(key)
                if mine is not None and mine.id == row.id:
                    del self._shared_heads[key]

    def _forget_thread(self, thread_id: str) -> None:
        with self._heads_lock:
            for key in [k for k in self._heads if k[0] == thread_id]:
                del self._heads[key]
            for key in [k for k in self._shared_heads if k[0] == thread_id]:
                del self._shared_heads[key]

    def _cached_row(self, thread_id: str, ns: str) -> CheckpointRow | None:
        key = (thread_id, ns)
        with self._heads_lock:
            return None if key in self._shared_heads else self._heads.get(key)

    def _own_row(self, thread_id: str, ns: str, checkpoint_id: str | None) -> CheckpointRow | None:
        if checkpoint_id is None:
            return self._cached_row(thread_id, ns)
        with self._heads_lock:
            row = self._heads.get((thread_id, ns))
        return row if row is not None and row.id == checkpoint_id else None

    def _decoder(self, row: CheckpointRow, shared: bool) -> ChainDecoder:
        memo = self._cache if shared else ValueCache(HISTORY_MEMO_BYTES)
        thread_id = row.thread_id
        return ChainDecoder(
            lambda version, limit: self._load_version(thread_id, version, limit),
            memo,
            where=_where(row),
            thread_id=thread_id,
        )

    def _checkpoint(self, row: CheckpointRow, values: dict[str, Any]) -> Checkpoint:
        where = _where(row)
        _check_row(row, where)
        places = checkpoint_places_of(row) if self._binds else (b"", b"")
        metadata = self._loads_at(row.metadata, places[0], f"metadata of {where}")
        tasks = self._loads_at(row.tasks, places[1], f"tasks of {where}")
        if type(metadata) is not dict or type(tasks) is not list:
            raise CorruptCheckpointError(
                f"the metadata or tasks of {where} decode as {type(metadata).__name__} and"
                f" {type(tasks).__name__}, not a dict and a list; {_ALTERED}"
            )
        return Checkpoint(
            thread_id=row.thread_id,
            ns=row.ns,
            id=row.id,
            parent_id=row.parent_id,
            seq=row.seq,
            step=row.step,
            source=row.source,
            created_at=to_datetime(row.created_at, where),
            metadata=metadata,
            tasks=tasks,
            refs=row.refs,
            values=values,
        )

    def _pending(self, row: CheckpointRow, writes: Iterable[WriteRow]) -> list[PendingWrite]:
        where = _where(row)
        writes = list(writes)
        for w in writes:
            if type(w.task_id) is not str or type(w.idx) is not int or type(w.channel) is not str:
                raise CorruptCheckpointError(
                    f"a pending write of {where} has task {_short(w.task_id)}, index"
                    f" {_short(w.idx)} and channel {_short(w.channel)}: not a str, an int and a"
                    f" str; {_ALTERED}"
                )
        binds = self._binds
        out = []
        for w in sorted(writes, key=lambda w: (w.task_id, w.idx)):
            place = b""
            if binds:
                place = write_place(row.thread_id, row.ns, row.id, w.task_id, w.idx, w.channel)
            out.append(
                PendingWrite(w.task_id, w.idx, w.channel, self._loads_at(w.data, place, where))
            )
        return out

    def _write_rows(
        self,
        thread_id: str,
        ns: str,
        checkpoint_id: str,
        task_id: str,
        writes: Sequence[tuple[str, Any]],
        first_idx: int,
    ) -> list[WriteRow]:
        binds = self._binds
        out = []
        for idx, (channel, value) in enumerate(writes, first_idx):
            place = None
            if binds:
                place = write_place(thread_id, ns, checkpoint_id, task_id, idx, channel)
            out.append(WriteRow(task_id, idx, channel, self._dumps(value, channel, place)[0]))
        return out

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
        for attempt in range(READ_ATTEMPTS):
            row = self._read_checkpoint(thread_id, ns, checkpoint_id)
            if row is None:
                if checkpoint_id is not None:
                    raise self._not_found(thread_id, ns, checkpoint_id)
                return None
            if checkpoint_id is None:
                self._saw_head(row)
            decoder = self._decoder(row, shared)
            missing = decoder.missing(row.refs)
            if missing:
                decoder.add_rows(self._read_versions(thread_id, missing))
            try:
                values = decoder.values(row.refs)
            except MissingVersionError:
                # Pruned or deleted between the two reads? Then read again; else it is corrupt.
                again = self._read_checkpoint(thread_id, ns, checkpoint_id)
                if _same(row, again) or attempt == READ_ATTEMPTS - 1:
                    raise
                continue
            checkpoint = self._checkpoint(row, values)
            skip = task_writes_only and not checkpoint.tasks
            writes = [] if skip else self._read_writes(thread_id, ns, row.id)
            return CheckpointTuple.of(checkpoint, self._pending(row, writes))
        raise AssertionError("unreachable")  # pragma: no cover

    def cached_head(
        self, thread_id: str, ns: str = "", checkpoint_id: str | None = None
    ) -> CheckpointTuple | None:
        """The head this process last saved to the thread, if it had no next tasks, without
        asking the database whether it is still the head (a shared-values load).

        Another process may have moved the head since: a commit expecting this one then fails
        its compare-and-swap, and the caller starts over from :meth:`load`. The runtime uses it
        for new input with ``durability="sync"``, whose first commit comes before any node runs.
        Not offered for a thread another process is seen writing, unless ``checkpoint_id``
        names the checkpoint wanted: then it is returned if it is the one this process last
        saved, whatever the head is now (the state a run left, read back without a query).
        """
        row = self._own_row(thread_id, ns, checkpoint_id)
        if row is None:
            return None
        decoder = self._decoder(row, True)
        missing = decoder.missing(row.refs)
        if missing:
            decoder.add_rows(self._read_versions(thread_id, missing))
        return CheckpointTuple.of(self._checkpoint(row, decoder.values(row.refs)), [])

    def child_id(self, thread_id: str, ns: str, checkpoint: Checkpoint) -> str | None:
        """The id of the checkpoint saved right after ``checkpoint`` as its child, or None.

        For an input checkpoint that is the step its input went to: they commit together
        (``put(before=)``), so nothing can come between them."""
        for batch in self._iter_checkpoints(thread_id, ns, checkpoint.seq + 2):
            return _committed_after(batch[0], checkpoint)
        return None

    def head_id(self, thread_id: str, ns: str = "") -> str | None:
        """The id of the checkpoint the thread's head points to, or None."""
        row = self._read_checkpoint(thread_id, ns, None)
        return None if row is None else row.id

    def locate(self, checkpoint_id: str) -> tuple[str, str] | None:
        """``(thread_id, ns)`` of the thread holding ``checkpoint_id``, or None."""
        return self._locate_checkpoint(checkpoint_id)

    def get(self, config: RunnableConfig) -> dict[str, Any] | None:
        """The checkpoint ``config`` names as LangGraph's dict (:meth:`Checkpoint.to_dict`:
        the state values are under ``"channel_values"``), or None."""
        found = self.get_tuple(config)
        return None if found is None else found.checkpoint.to_dict()

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
            selected = self._select(batch, wanted, None if limit is None else limit - count)
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
                try:
                    checkpoint.values = decoder.values(row.refs, where=_where(row))
                except MissingVersionError:
                    if self._read_checkpoint(thread_id, row.ns, row.id) is not None:
                        raise
                    continue  # pruned while the history was read: it is no longer listed
                found = writes.get((row.ns, row.id), [])
                yield CheckpointTuple.of(checkpoint, self._pending(row, found))
                count += 1
                if limit is not None and count >= limit:
                    return

    def list_first(
        self, config: RunnableConfig, *, filter: Mapping[str, Any] | None = None
    ) -> CheckpointTuple | None:
        """The newest checkpoint matching ``filter``, or None."""
        return next(iter(self.list(config, filter=filter, limit=1)), None)

    def _select(
        self, batch: builtins.list[CheckpointRow], wanted: dict[str, Any], need: int | None
    ) -> builtins.list[tuple[CheckpointRow, Checkpoint]]:
        """The rows of ``batch`` matching ``wanted``, at most ``need`` of them: a limited
        history decodes, and reads the versions of, only the checkpoints it returns."""
        out: builtins.list[tuple[CheckpointRow, Checkpoint]] = []
        for row in batch:
            if need is not None and len(out) >= need:
                break
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
        lease: LeaseOp | None = None,
        before: CheckpointDraft | None = None,
    ) -> Checkpoint:
        """Store a new checkpoint and move the head to it by compare-and-swap.

        Raises :class:`CheckpointConflictError` if the head is not ``expected_head``; then
        nothing was stored. The returned checkpoint has empty ``values`` (the caller has them).
        ``lease`` takes, checks (fencing) or releases the thread's writer lease in the same
        transaction: see :class:`~threadline.checkpoint.lease.LeaseOp`.
        ``before``: a checkpoint that changes no channel (an input checkpoint), stored in the
        same transaction as ``draft``'s parent.
        """
        row, versions, meta, expires_at = self._prepare_commit(
            thread_id, ns, draft, thread_metadata, before
        )
        try:
            seq = self._commit(row, versions, expected_head, meta, expires_at, lease)
        except BaseCheckpointGoneError:
            alone = _standalone(draft)
            if alone is None:
                raise
            return self.put(
                thread_id,
                ns,
                alone,
                expected_head=expected_head,
                thread_metadata=thread_metadata,
                lease=lease,
                before=before,
            )
        except CheckpointConflictError:
            self._head_moved(row.thread_id, row.ns)
            raise
        _after_lease_commit(lease)
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
        lease: Lease | None = None,
    ) -> None:
        """Save a task's writes against the checkpoint its step started from.

        Writes are numbered from ``first_idx``; a (task, index) already stored is kept as is.
        With ``lease``, they are stored only while its epoch holds the thread's lease.
        """
        thread_id, ns = validate_thread_id(thread_id), validate_ns(ns)
        rows = self._write_rows(thread_id, ns, checkpoint_id, task_id, writes, first_idx)
        self._commit_writes(thread_id, ns, checkpoint_id, rows, expected_head, _held(lease))

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

    def rewind(
        self,
        config: RunnableConfig,
        *,
        expected_head: str | None = None,
        lease: LeaseOp | None = None,
        keep_writes: Iterable[tuple[str, int]] | None = None,
    ) -> int:
        """Make the checkpoint ``config`` names the head again, as it was right after it was
        committed: every checkpoint committed after it (later steps, branches, subgraph
        checkpoints) is deleted, with its pending writes and the channel versions only it
        held. One transaction; returns how many checkpoints were deleted.

        ``keep_writes``: the ``(task_id, idx)`` of the checkpoint's own pending writes to keep
        (the ones it had when a run began from it, ``PendingWrite.task_id``/``idx``); the
        others are deleted too, such as a cancelled resume's answer. None keeps them all.

        ``expected_head``: rewind only if the head of the checkpoint's namespace is still
        this id, else raise :class:`CheckpointConflictError`. ``lease``:
        ``LeaseOp("hold" | "release", lease)`` (fenced; "release" also releases it) or
        ``LeaseOp("check", lease)`` (only while nobody holds the lease). An unknown
        checkpoint raises :class:`CheckpointNotFoundError`; nothing changes on any error.
        """
        thread_id, ns, checkpoint_id = _rewind_args(config, expected_head, lease)
        kept = None if keep_writes is None else _write_keys(keep_writes)
        expires_at = None if self.ttl is None else time.time() + self.ttl
        try:
            removed = self._rewind(
                thread_id, ns, checkpoint_id, expected_head, lease, expires_at, kept
            )
        finally:
            self._forget_thread(thread_id)
        if removed is None:
            raise self._rewind_not_found(thread_id, ns, checkpoint_id, self.locate(checkpoint_id))
        _after_lease_commit(lease)
        return removed

    def _rewind_not_found(
        self, thread_id: str, ns: str, checkpoint_id: str, found: tuple[str, str] | None
    ) -> CheckpointNotFoundError:
        error = self._not_found(thread_id, ns, checkpoint_id)
        if found is None or found == (thread_id, ns):
            return error
        where = f"thread {found[0]!r}" + (f", namespace {found[1]!r}" if found[1] else "")
        return CheckpointNotFoundError(
            f"cannot rewind thread {thread_id!r} to checkpoint {checkpoint_id!r}: it is a"
            f" checkpoint of {where}; nothing was changed. Pass that thread's config, or one"
            f" of thread {thread_id!r}'s checkpoints (get_state_history(config) lists them)"
        )

    # Writer leases (see threadline.checkpoint.lease).

    def new_lease(
        self, thread_id: str, *, owner: str | None = None, ttl: float | None = None
    ) -> Lease:
        """A handle for the thread's writer lease, not yet taken: pass it to :meth:`put` with
        ``LeaseOp("acquire", lease)`` to take it with the first commit (no extra round trip),
        or to :meth:`acquire_lease`."""
        return Lease(
            validate_thread_id(thread_id),
            owner or new_owner(),
            self.lease_ttl if ttl is None else check_lease_ttl(ttl),
        )

    def acquire_lease(
        self,
        thread_id: str | Lease,
        *,
        owner: str | None = None,
        ttl: float | None = None,
        on_busy: str | None = None,
        timeout: float | None = None,
    ) -> Lease:
        """Take the thread's writer lease, waiting while another holder has it.

        ``on_busy`` and ``timeout`` default to the saver's ``on_busy`` and ``lease_timeout``;
        raises :class:`~threadline.errors.ThreadBusyError` when the lease stays busy. Renew
        it with :meth:`renew_lease`, release it with :meth:`release_lease`.
        """
        lease = (
            thread_id
            if isinstance(thread_id, Lease)
            else self.new_lease(thread_id, owner=owner, ttl=ttl)
        )
        mode, deadline = self._busy_policy(on_busy, timeout)
        attempt = 0
        while True:
            state = self._lease_acquire(lease.thread_id, lease.owner, lease.ttl)
            if _took(lease, state):
                return lease
            delay = self._busy_delay(lease, state, mode, deadline, attempt, timeout)
            time.sleep(delay)
            attempt += 1

    def renew_lease(self, lease: Lease) -> bool:
        """Extend a held lease by its ``ttl``. False when it is no longer held (expired and
        taken over, or released): the holder must stop writing."""
        if not lease.held:
            return False
        assert lease.epoch is not None
        expires = self._lease_renew(lease.thread_id, lease.epoch, lease.ttl, False)
        return _renewed(lease, expires)

    def release_lease(self, lease: Lease) -> bool:
        """Release a held lease so the next writer need not wait for it to expire. False when
        it was no longer held."""
        if not lease.held:
            return False
        assert lease.epoch is not None
        expires = self._lease_renew(lease.thread_id, lease.epoch, lease.ttl, True)
        lease.released = True
        return expires is not None

    def blocking_lease_renewer(self) -> LeaseRenewer | None:
        """The renewer thread, if this saver can renew from a thread of its own (sync savers,
        the memory saver, the async PostgreSQL saver with a pool); None for one that can only
        renew on its event loop."""
        if type(self)._lease_renew is BaseCheckpointSaver._lease_renew:
            return None
        return self.lease_renewer()

    def lease_renewer(self) -> LeaseRenewer:
        """This saver's renewer thread (created on first use): renews the leases given to it
        every ``ttl / 3`` seconds, off the graph's threads and event loop."""
        if self._renewer is None:
            self._renewer = LeaseRenewer(self.renew_lease)
        return self._renewer

    def _busy_policy(self, on_busy: str | None, timeout: float | None) -> tuple[str, float]:
        mode = self.on_busy if on_busy is None else check_on_busy(on_busy)
        wait = self.lease_timeout if timeout is None else check_lease_timeout(timeout)
        return mode, time.monotonic() + wait

    @staticmethod
    def _busy_delay(
        lease: Lease,
        state: LeaseState,
        mode: str,
        deadline: float,
        attempt: int,
        timeout: float | None,
    ) -> float:
        """How long to sleep before asking again, or the error to raise now."""
        if mode == "raise":
            raise busy_error(lease.thread_id, state, None)
        if time.monotonic() >= deadline:
            raise busy_error(lease.thread_id, state, timeout)
        return wait_delay(attempt, state, deadline)

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
        for attempt in range(READ_ATTEMPTS):
            row = await self._aread_checkpoint(thread_id, ns, checkpoint_id)
            if row is None:
                if checkpoint_id is not None:
                    raise self._not_found(thread_id, ns, checkpoint_id)
                return None
            if checkpoint_id is None:
                self._saw_head(row)
            decoder = self._decoder(row, shared)
            missing = decoder.missing(row.refs)
            if missing:
                decoder.add_rows(await self._aread_versions(thread_id, missing))
            try:
                values = decoder.values(row.refs)
            except MissingVersionError:
                again = await self._aread_checkpoint(thread_id, ns, checkpoint_id)
                if _same(row, again) or attempt == READ_ATTEMPTS - 1:
                    raise
                continue
            checkpoint = self._checkpoint(row, values)
            skip = task_writes_only and not checkpoint.tasks
            writes = [] if skip else await self._aread_writes(thread_id, ns, row.id)
            return CheckpointTuple.of(checkpoint, self._pending(row, writes))
        raise AssertionError("unreachable")  # pragma: no cover

    async def acached_head(
        self, thread_id: str, ns: str = "", checkpoint_id: str | None = None
    ) -> CheckpointTuple | None:
        """Async :meth:`cached_head`."""
        row = self._own_row(thread_id, ns, checkpoint_id)
        if row is None:
            return None
        decoder = self._decoder(row, True)
        missing = decoder.missing(row.refs)
        if missing:
            decoder.add_rows(await self._aread_versions(thread_id, missing))
        return CheckpointTuple.of(self._checkpoint(row, decoder.values(row.refs)), [])

    async def achild_id(self, thread_id: str, ns: str, checkpoint: Checkpoint) -> str | None:
        """Async :meth:`child_id`."""
        async for batch in self._aiter_checkpoints(thread_id, ns, checkpoint.seq + 2):
            return _committed_after(batch[0], checkpoint)
        return None

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
        return None if found is None else found.checkpoint.to_dict()

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
            selected = self._select(batch, wanted, None if limit is None else limit - count)
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
                try:
                    checkpoint.values = decoder.values(row.refs, where=_where(row))
                except MissingVersionError:
                    if await self._aread_checkpoint(thread_id, row.ns, row.id) is not None:
                        raise
                    continue  # pruned while the history was read: it is no longer listed
                found = writes.get((row.ns, row.id), [])
                yield CheckpointTuple.of(checkpoint, self._pending(row, found))
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
        lease: LeaseOp | None = None,
        before: CheckpointDraft | None = None,
    ) -> Checkpoint:
        """Async :meth:`put`."""
        row, versions, meta, expires_at = await self._aprepare_commit(
            thread_id, ns, draft, thread_metadata, before
        )
        try:
            seq = await self._acommit(row, versions, expected_head, meta, expires_at, lease)
        except BaseCheckpointGoneError:
            alone = _standalone(draft)
            if alone is None:
                raise
            return await self.aput(
                thread_id,
                ns,
                alone,
                expected_head=expected_head,
                thread_metadata=thread_metadata,
                lease=lease,
            )
        except CheckpointConflictError:
            self._head_moved(row.thread_id, row.ns)
            raise
        _after_lease_commit(lease)
        if self._should_sweep():
            await self.asweep_expired()
        return self._after_commit(row, seq, draft, versions)

    async def _aprepare_commit(
        self,
        thread_id: str,
        ns: str,
        draft: CheckpointDraft,
        thread_metadata: dict[str, Any] | None,
        before: CheckpointDraft | None,
    ) -> tuple[CheckpointRow, builtins.list[VersionRow], bytes | None, float | None]:
        """:meth:`_prepare_commit` (serializing, compressing, encrypting), on a worker thread
        for a thread whose last commit took longer than :data:`OFFLOAD_ENCODING_SECONDS` to
        encode, so that a large state does not hold up everything else on the event loop."""
        key = (str(thread_id), str(ns))
        started = time.perf_counter()
        args = (thread_id, ns, draft, thread_metadata, before)
        if key in self._heavy:
            prepared = await asyncio.to_thread(self._prepare_commit, *args)
        else:
            prepared = self._prepare_commit(*args)
        if time.perf_counter() - started > OFFLOAD_ENCODING_SECONDS:
            if len(self._heavy) >= 4096:
                self._heavy.clear()
            self._heavy[key] = None
        else:
            self._heavy.pop(key, None)
        return prepared

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
        lease: Lease | None = None,
    ) -> None:
        """Async :meth:`put_writes`."""
        thread_id, ns = validate_thread_id(thread_id), validate_ns(ns)
        rows = self._write_rows(thread_id, ns, checkpoint_id, task_id, writes, first_idx)
        await self._acommit_writes(thread_id, ns, checkpoint_id, rows, expected_head, _held(lease))

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

    async def arewind(
        self,
        config: RunnableConfig,
        *,
        expected_head: str | None = None,
        lease: LeaseOp | None = None,
        keep_writes: Iterable[tuple[str, int]] | None = None,
    ) -> int:
        """Async :meth:`rewind`."""
        thread_id, ns, checkpoint_id = _rewind_args(config, expected_head, lease)
        kept = None if keep_writes is None else _write_keys(keep_writes)
        expires_at = None if self.ttl is None else time.time() + self.ttl
        try:
            removed = await self._arewind(
                thread_id, ns, checkpoint_id, expected_head, lease, expires_at, kept
            )
        finally:
            self._forget_thread(thread_id)
        if removed is None:
            found = await self.alocate(checkpoint_id)
            raise self._rewind_not_found(thread_id, ns, checkpoint_id, found)
        _after_lease_commit(lease)
        return removed

    async def aacquire_lease(
        self,
        thread_id: str | Lease,
        *,
        owner: str | None = None,
        ttl: float | None = None,
        on_busy: str | None = None,
        timeout: float | None = None,
    ) -> Lease:
        """Async :meth:`acquire_lease`."""
        lease = (
            thread_id
            if isinstance(thread_id, Lease)
            else self.new_lease(thread_id, owner=owner, ttl=ttl)
        )
        mode, deadline = self._busy_policy(on_busy, timeout)
        attempt = 0
        while True:
            state = await self._alease_acquire(lease.thread_id, lease.owner, lease.ttl)
            if _took(lease, state):
                return lease
            delay = self._busy_delay(lease, state, mode, deadline, attempt, timeout)
            await asyncio.sleep(delay)
            attempt += 1

    async def arenew_lease(self, lease: Lease) -> bool:
        """Async :meth:`renew_lease`."""
        if not lease.held:
            return False
        assert lease.epoch is not None
        expires = await self._alease_renew(lease.thread_id, lease.epoch, lease.ttl, False)
        return _renewed(lease, expires)

    async def arelease_lease(self, lease: Lease) -> bool:
        """Async :meth:`release_lease`."""
        if not lease.held:
            return False
        assert lease.epoch is not None
        expires = await self._alease_renew(lease.thread_id, lease.epoch, lease.ttl, True)
        lease.released = True
        return expires is not None

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


OFFLOAD_ENCODING_SECONDS = 0.002
"""A commit whose encoding took longer moves its thread's next commits' encoding off the loop."""


def _took(lease: Lease, state: LeaseState) -> bool:
    if not state.acquired:
        return False
    lease.epoch, lease.released = state.epoch, False
    lease.expires_at = state.expires_at or 0.0
    return True


def _renewed(lease: Lease, expires: float | None) -> bool:
    if expires is None:
        return False
    lease.expires_at = expires
    return True


def _after_lease_commit(op: LeaseOp | None) -> None:
    if op is not None and op.mode == "release":
        op.lease.released = True


def _held(lease: Lease | None) -> Lease | None:
    """The lease a write is fenced by: only one that was taken (a check-only writer's is not)."""
    return lease if lease is not None and lease.epoch is not None else None


def _write_keys(keys: Iterable[tuple[str, int]]) -> WriteKeys:
    """``keep_writes`` checked: pairs of a task id and a write index."""
    checked = set()
    for key in keys:
        if not (
            isinstance(key, tuple | list)
            and len(key) == 2
            and isinstance(key[0], str)
            and type(key[1]) is int
        ):
            raise InvalidArgumentError(
                f"keep_writes takes (task_id, idx) pairs, got {key!r}; e.g."
                " [(w.task_id, w.idx) for w in checkpoint_tuple.pending_writes]"
            )
        checked.add((key[0], key[1]))
    return frozenset(checked)


def _rewind_args(
    config: RunnableConfig, expected_head: object, lease: object
) -> tuple[str, str, str]:
    """``(thread_id, ns, checkpoint_id)`` of a rewind, its other arguments checked."""
    thread_id, ns, checkpoint_id = parse_config(config)
    if checkpoint_id is None:
        raise InvalidArgumentError(
            "rewind() needs the checkpoint to go back to: pass its config, e.g. a snapshot's"
            " config from get_state_history(), with {'configurable': {'checkpoint_id': ...}}"
        )
    if expected_head is not None and not isinstance(expected_head, str):
        raise InvalidArgumentError(
            f"expected_head must be a checkpoint id (a string) or None, got {expected_head!r}"
        )
    if lease is not None and (not isinstance(lease, LeaseOp) or lease.mode == "acquire"):
        raise InvalidArgumentError(
            f"rewind() takes lease=LeaseOp('hold' | 'release' | 'check', lease), got {lease!r};"
            " take the lease first with acquire_lease()"
        )
    return thread_id, ns, checkpoint_id


def versions_written(checkpoint_id: str, refs: Mapping[str, VersionRef]) -> set[tuple[str, str]]:
    """The ``(channel, writer)`` keys of the versions checkpoint ``checkpoint_id`` wrote.

    A checkpoint refers to versions of its own and of checkpoints committed before it (its
    parent's refs, and the bases of its deltas), never of later ones. So when a rewind deletes
    every checkpoint committed after some point, the versions those checkpoints wrote are
    exactly the ones nothing left refers to; a prune deletes them unless a remaining
    checkpoint still reaches them.
    """
    return {(name, checkpoint_id) for name, ref in refs.items() if ref.writer == checkpoint_id}


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


def _same(row: CheckpointRow, again: CheckpointRow | None) -> bool:
    """Whether a second read found the very checkpoint a first one did (nothing raced it)."""
    return again is not None and again.id == row.id and again.refs == row.refs


def _committed_after(row: CheckpointRow, checkpoint: Checkpoint) -> str | None:
    ok = row.seq == checkpoint.seq + 1 and row.parent_id == checkpoint.id
    return row.id if ok else None


def _where(row: CheckpointRow) -> str:
    return f"thread {row.thread_id!r}, checkpoint {row.id}"


_ALTERED = (
    "the row was changed outside threadline. Restore the database from a backup, or"
    " delete_thread() the thread"
)
_ROW_FIELDS: tuple[tuple[str, tuple[type, ...]], ...] = (
    ("ns", (str,)),
    ("id", (str,)),
    ("parent_id", (str, type(None))),
    ("seq", (int,)),
    ("step", (int,)),
    ("source", (str,)),
)


def _check_row(row: CheckpointRow, where: str) -> None:
    """Refuse a stored checkpoint whose fields have the wrong types (a hand-edited row)."""
    for name, types in _ROW_FIELDS:
        value = getattr(row, name)
        if type(value) not in types:
            raise CorruptCheckpointError(
                f"{where} has {name} {_short(value)}, not a {types[0].__name__}; {_ALTERED}"
            )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
