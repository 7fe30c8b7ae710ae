"""Reads of long threads cost what they return, and crafted delta chains end in a clear error.

A long thread has long delta chains (a snapshot of ``n`` items allows about ``3n`` deltas at
the default ratio). Rebuilding a value replays its chain once; a history (newest first)
slices the value it built for older versions of the same chain. Memory is measured with
tracemalloc, never time.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
from backends import Backend, Driver
from rowhacks import forget_process_state, set_base
from test_checkpoint_contract import MakeDriver, cfg, draft

from threadline.checkpoint import encoding
from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.checkpoint.types import ChannelChange, Checkpoint
from threadline.errors import CorruptCheckpointError

T = "long"


async def long_thread(
    cp: Driver, n: int, thread_id: str = T, *, first: int = 0
) -> list[Checkpoint]:
    """``n`` checkpoints, each appending one short item to "items" (mostly deltas). A
    ``first`` item of that many bytes makes the first snapshot big enough that every later
    version is a delta on it."""
    head: Checkpoint | None = None
    value: list[str] = []
    saved = []
    for i in range(n):
        new = ["x" * first if i == 0 and first else f"message {i:05d}"]
        value = value + new
        head = await cp.put(
            thread_id,
            "",
            draft({"items": ChannelChange(value, appended=new)}, parent=head, step=i),
            expected_head=None if head is None else head.id,
        )
        saved.append(head)
    return saved


def test_get_state_and_a_limited_history_of_a_long_thread_use_bounded_memory(
    make_saver: Callable[..., BaseCheckpointSaver], sync_backend: Backend
) -> None:
    import asyncio

    saver = make_saver()
    cp = Driver(saver, sync_backend)
    n = 3000
    asyncio.run(long_thread(cp, n))
    forget_process_state(saver)
    tracemalloc.start()
    try:
        head = saver.get_tuple(cfg(T))
        history = list(saver.list(cfg(T), limit=10))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert head is not None and len(head.checkpoint.values["items"]) == n
    assert [len(t.checkpoint.values["items"]) for t in history] == list(range(n, n - 10, -1))
    # What is returned: 11 lists of ~3,000 references and the 3,000 items once (~0.5 MB);
    # plus the chain's rows, each decoded once. Replaying with every intermediate version
    # kept (the old reader) needed ~70 MB here, and grew with the square of the length.
    assert peak < 8 * 1024 * 1024, peak


def test_a_full_history_is_rebuilt_from_each_chain_once(
    make_saver: Callable[..., BaseCheckpointSaver], sync_backend: Backend
) -> None:
    import asyncio

    saver = make_saver()
    n = 1500
    asyncio.run(long_thread(Driver(saver, sync_backend), n))
    forget_process_state(saver)
    lengths = [len(t.checkpoint.values["items"]) for t in saver.list(cfg(T))]
    assert lengths == list(range(n, 0, -1))
    values = [t.checkpoint.values["items"] for t in saver.list(cfg(T), limit=3)]
    assert values[1] == values[0][:-1] and values[2] == values[0][:-2]


class CraftedChains:
    """Delta chains threadline never writes, on every backend (``cp`` sync or async)."""

    @pytest.fixture
    async def cp(self, make_cp: MakeDriver) -> Driver:
        return await make_cp()

    async def _assert_refused(self, cp: Driver, head: Checkpoint, what: str) -> None:
        forget_process_state(cp.saver)
        for read in (lambda: cp.get_tuple(cfg(T)), lambda: cp.list(cfg(T))):
            with pytest.raises(CorruptCheckpointError, match=what) as caught:
                await read()
            message = str(caught.value)
            assert repr(T) in message and head.id in message and "'items'" in message

    @pytest.mark.timeout(60)
    async def test_a_version_based_on_itself(self, cp: Driver) -> None:
        saved = await long_thread(cp, 3)
        head = saved[-1]
        await set_base(cp.saver, cp.backend, T, "items", head.id, head.id)
        await self._assert_refused(cp, head, "loops back")

    @pytest.mark.timeout(60)
    async def test_a_two_cycle(self, cp: Driver) -> None:
        saved = await long_thread(cp, 4)
        head, older = saved[-1], saved[-2]
        await set_base(cp.saver, cp.backend, T, "items", older.id, head.id)
        await self._assert_refused(cp, head, "loops back")

    @pytest.mark.timeout(60)
    async def test_a_longer_cycle_through_the_snapshot(self, cp: Driver) -> None:
        saved = await long_thread(cp, 6, first=1000)
        head = saved[-1]
        await set_base(cp.saver, cp.backend, T, "items", saved[0].id, head.id)
        await self._assert_refused(cp, head, "loops back")

    @pytest.mark.timeout(60)
    async def test_a_chain_longer_than_the_limit(
        self, cp: Driver, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        saved = await long_thread(cp, 12, first=1000)  # one snapshot, then 11 deltas on it
        monkeypatch.setattr(encoding, "MAX_CHAIN_LENGTH", 5)
        await self._assert_refused(cp, saved[-1], "longer than 5 versions")


class TestSyncCraftedChains(CraftedChains):
    @pytest.fixture
    def make_cp(
        self, make_saver: Callable[..., BaseCheckpointSaver], sync_backend: Backend
    ) -> MakeDriver:
        async def make(**options: Any) -> Driver:
            return Driver(make_saver(**options), sync_backend)

        return make


class TestAsyncCraftedChains(CraftedChains):
    @pytest.fixture
    def make_cp(self, amake_saver: Any, async_backend: Backend) -> MakeDriver:
        async def make(**options: Any) -> Driver:
            return Driver(await amake_saver(**options), async_backend)

        return make
