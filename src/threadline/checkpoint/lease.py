"""Writer leases: at most one writer per thread, and fencing of writers that lost theirs.

A thread's lease is one row per thread: ``(owner, epoch, expires_at)``. Taking it when it is
free (no owner, or expired, or already this owner's) bumps the epoch; a commit that carries a
lease (:class:`LeaseOp`) checks the epoch in the same transaction as the head's
compare-and-swap, so a writer whose lease expired and was taken over cannot commit any more
(fencing), however long it was frozen. Epochs only grow: a released lease keeps its row.

The checkpoint layer knows nothing of runs or servers: :class:`Lease` is a handle anyone can
hold (the graph runtime holds one per run; a server can hold one per claimed run and renew it
from its own heartbeat).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from ..errors import LeaseLostError, ThreadBusyError

__all__ = [
    "DEFAULT_LEASE_TIMEOUT",
    "DEFAULT_LEASE_TTL",
    "ON_BUSY",
    "Lease",
    "LeaseOp",
    "LeaseRenewer",
    "LeaseRow",
    "LeaseState",
    "busy_error",
    "check_lease_timeout",
    "check_lease_ttl",
    "check_on_busy",
    "lease_lost",
    "new_owner",
    "take",
    "wait_delay",
]

DEFAULT_LEASE_TTL = 10.0
"""Seconds a lease lasts unless renewed: how long a crashed holder blocks its thread."""
DEFAULT_LEASE_TIMEOUT = 60.0
"""Seconds a run waits for a busy thread (``on_busy="wait"``) before raising."""
ON_BUSY = ("wait", "raise")

LeaseMode = Literal["acquire", "hold", "release", "check"]


def new_owner() -> str:
    """A lease owner unique to this call: host, process and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


@dataclass(slots=True)
class Lease:
    """A thread's writer lease as its holder sees it.

    ``epoch`` is None until the lease is taken (a commit with ``LeaseOp("acquire")`` takes it
    and sets it); ``expires_at`` is the Unix time it runs out unless renewed. Commits update
    both, so a holder can pass the same object to every ``put``.
    """

    thread_id: str
    owner: str
    ttl: float = DEFAULT_LEASE_TTL
    epoch: int | None = None
    expires_at: float = 0.0
    released: bool = False

    @property
    def held(self) -> bool:
        return self.epoch is not None and not self.released


@dataclass(frozen=True, slots=True)
class LeaseState:
    """What a backend found or did when asked to take a lease."""

    acquired: bool
    epoch: int | None
    owner: str | None
    expires_at: float | None


@dataclass(frozen=True, slots=True)
class LeaseOp:
    """What a commit does with a lease, in the same transaction as its compare-and-swap.

    - ``"acquire"``: take ``lease`` if free (kept even when the compare-and-swap then fails, so
      the caller can read the head and try again without racing); else nothing is stored and
      :class:`~threadline.errors.ThreadBusyError` is raised.
    - ``"hold"``: commit only if ``lease.epoch`` is still the thread's epoch (fencing), and
      renew it; else :class:`~threadline.errors.LeaseLostError`.
    - ``"release"``: as ``"hold"``, and release the lease when the commit lands.
    - ``"check"``: a one-off writer (``update_state``): commit only if nobody holds the lease.
    """

    mode: LeaseMode
    lease: Lease


def busy_error(thread_id: str, state: LeaseState | None, waited: float | None) -> ThreadBusyError:
    holder = None if state is None else state.owner
    expires = None if state is None else state.expires_at
    who = f"another writer ({holder})" if holder else "another writer"
    until = "" if expires is None else f" until {time.strftime('%H:%M:%S', time.gmtime(expires))}Z"
    what = f"after waiting {waited:.1f} s" if waited is not None else "not waited for"
    return ThreadBusyError(
        f"thread {thread_id!r} is busy: {who} holds its writer lease{until}, {what}; nothing"
        " was stored. Run again later, wait longer ({'configurable': {'lease_timeout': SECONDS}}"
        " or the saver's lease_timeout=), or wait by default with on_busy='wait'",
        thread_id=thread_id,
        holder=holder,
        expires_at=expires,
    )


def lease_lost(thread_id: str, epoch: int | None) -> LeaseLostError:
    return LeaseLostError(
        f"this writer's lease of thread {thread_id!r} (epoch {epoch}) is no longer held: it"
        " expired and another writer took it over, or it was released; nothing of this commit"
        " was stored. Reload the thread with get_state() before writing again, and raise the"
        " saver's lease_ttl= if a step can take longer than it.",
        thread_id=thread_id,
        epoch=epoch,
    )


def wait_delay(attempt: int, state: LeaseState | None, deadline: float) -> float:
    """How long to sleep before asking for a busy lease again: a short, growing poll (a
    holder usually finishes soon), never past the lease's expiry nor the caller's deadline."""
    delay: float = min(0.002 * 2.0**attempt, 0.05)
    now = time.time()
    if state is not None and state.expires_at is not None:
        delay = min(delay, max(state.expires_at - now, 0.0) + 0.001)
    return max(0.0, min(delay, deadline - time.monotonic()))


class LeaseRenewer:
    """Renews held leases from a daemon thread of its own, every ``ttl / 3`` seconds.

    It never runs on the graph's threads or event loop, so a node that blocks for a long time
    (or a stuck event loop) does not let its run's lease expire. ``renew`` is a blocking call
    (a saver's :meth:`renew_lease`); renewal failures are left for the holder's next commit to
    report (fenced by the epoch).

    Adding a lease wakes the thread only when it would otherwise sleep past the lease's first
    renewal, and the thread outlives an idle moment: a run that takes and releases a lease in
    a few milliseconds costs no thread hand-off (on a loaded machine, each costs a scheduler
    slice). It exits after :data:`IDLE_EXIT` seconds without leases.
    """

    IDLE_EXIT = 5.0
    IDLE_POLL = 1.0

    def __init__(self, renew: Callable[[Lease], bool]) -> None:
        self._renew = renew
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._items: dict[int, Lease] = {}
        self._wakes_at = 0.0  # when the thread's current sleep ends (time.time())

    def add(self, lease: Lease) -> None:
        due = time.time() + lease.ttl / 3
        with self._lock:
            self._items[id(lease)] = lease
            if self._thread is None:
                self._wakes_at = 0.0
                self._thread = threading.Thread(
                    target=self._loop, name="threadline-lease-renewer", daemon=True
                )
                self._thread.start()
                return
            late = self._wakes_at > due
        if late:
            self._wake.set()

    def discard(self, lease: Lease) -> None:
        with self._lock:
            self._items.pop(id(lease), None)

    def _loop(self) -> None:
        idle_since: float | None = None
        while True:
            now = time.time()
            with self._lock:
                leases = list(self._items.values())
                if not leases:
                    idle_since = now if idle_since is None else idle_since
                    if now - idle_since >= self.IDLE_EXIT:
                        self._thread = None
                        return
                else:
                    idle_since = None
            next_at = now + self.IDLE_POLL
            for lease in leases:
                if not lease.held:
                    self.discard(lease)
                    continue
                if lease.expires_at - now <= lease.ttl * 2 / 3:
                    try:
                        if not self._renew(lease):
                            self.discard(lease)
                    except Exception:
                        pass
                next_at = min(next_at, max(lease.expires_at - lease.ttl * 2 / 3, now + 0.01))
            with self._lock:  # leases added meanwhile count too (add() saw the old time)
                for lease in self._items.values():
                    next_at = min(next_at, max(lease.expires_at - lease.ttl * 2 / 3, now + 0.01))
                self._wakes_at = next_at
                self._wake.clear()
            self._wake.wait(max(0.01, next_at - time.time()))


def check_lease_ttl(ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl < 1e9:
        raise ValueError(f"lease_ttl must be a positive number of seconds, got {ttl!r}")
    return float(ttl)


def check_on_busy(on_busy: object) -> str:
    if on_busy not in ON_BUSY:
        raise ValueError(f"on_busy must be 'wait' or 'raise', got {on_busy!r}")
    return str(on_busy)


def check_lease_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout < 0:
        raise ValueError(f"lease_timeout must be a number of seconds >= 0, got {timeout!r}")
    return float(timeout)


@dataclass(slots=True)
class LeaseRow:
    """A lease as stored (the in-memory backend's row; SQL backends have a table)."""

    owner: str | None
    epoch: int
    expires_at: float

    def busy_for(self, owner: str, now: float) -> bool:
        return self.owner is not None and self.owner != owner and self.expires_at > now


def take(row: LeaseRow | None, owner: str, ttl: float, now: float) -> tuple[LeaseRow, LeaseState]:
    """The in-memory rule of taking a lease: what the SQL statements do too."""
    if row is not None and row.busy_for(owner, now):
        return row, LeaseState(False, row.epoch, row.owner, row.expires_at)
    new = LeaseRow(owner, 1 if row is None else row.epoch + 1, now + ttl)
    return new, LeaseState(True, new.epoch, owner, new.expires_at)
