"""Wake-ups between handlers and workers, in this replica and across replicas.

A change is announced under a key: ``events:<run id>`` (new stream events), ``run:<run id>``
(its status or outcome), ``queue`` (a run may be claimable), ``cancel:<run id>:<action>``.
Waiters in this process are woken directly; on PostgreSQL the key is also sent with
``NOTIFY`` so the other replicas wake too. Notifications are only wake-ups: every waiter
re-reads the database afterwards and also re-checks on a slow timer, so a notification lost
while a listener reconnects costs latency, never correctness.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["CHANNEL", "Notifier"]

CHANNEL = "threadline_runs"
log = logging.getLogger("threadline.server")


class Notifier:
    """Keyed wake-ups: :meth:`subscribe` to a key, :meth:`publish` to wake its subscribers."""

    def __init__(self) -> None:
        self.origin = uuid.uuid4().hex[:12]
        self._waiters: dict[str, set[asyncio.Event]] = {}
        self._handlers: dict[str, Callable[[str], None]] = {}
        self._listener: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def subscribe(self, *keys: str) -> Iterator[asyncio.Event]:
        """An event set whenever one of ``keys`` is published while the block runs.

        Subscribe *before* reading the state you wait on, so that a change between the read
        and the wait still wakes you.
        """
        event = asyncio.Event()
        for key in keys:
            self._waiters.setdefault(key, set()).add(event)
        try:
            yield event
        finally:
            for key in keys:
                waiters = self._waiters.get(key)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[key]

    def on(self, prefix: str, handler: Callable[[str], None]) -> None:
        """Call ``handler(rest)`` for every key ``prefix:rest`` published (here or elsewhere)."""
        self._handlers[prefix] = handler

    def wake(self, key: str) -> None:
        """Wake this process's subscribers of ``key`` (and its prefix handler)."""
        for event in self._waiters.get(key, ()):
            event.set()
        prefix, _, rest = key.partition(":")
        handler = self._handlers.get(prefix)
        if handler is not None and rest:
            handler(rest)

    def payload(self, key: str) -> str:
        """The ``NOTIFY`` payload announcing ``key`` from this process."""
        return f"{self.origin}|{key}"

    def received(self, payload: str) -> None:
        """A ``NOTIFY`` payload arrived: wake for it unless this process sent it."""
        origin, _, key = payload.partition("|")
        if origin != self.origin and key:
            self.wake(key)

    def listen(self, url: str) -> None:
        """Follow ``NOTIFY`` on PostgreSQL ``url`` until :meth:`close`, reconnecting on loss."""
        self._listener = asyncio.create_task(self._listen(url))

    async def _listen(self, url: str) -> None:
        import psycopg

        delay = 0.1
        while True:
            try:
                conn: Any = await psycopg.AsyncConnection.connect(url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    delay = 0.1
                    # Waiters that slept through the reconnect re-check now.
                    for key in list(self._waiters):
                        self.wake(key)
                    async for note in conn.notifies():
                        self.received(note.payload)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listening for run notifications failed (%s); reconnecting", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def close(self) -> None:
        """Stop listening."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
