"""Wake-ups between handlers and workers: in the process, and across replicas by NOTIFY."""

from __future__ import annotations

import asyncio
import socket

import pytest

from threadline.server.cli import listening_socket, run_loop
from threadline.server.db import Database, open_database
from threadline.server.notify import Notifier


async def test_subscribers_of_a_key_wake_and_others_do_not() -> None:
    notifier = Notifier()
    with notifier.subscribe("run:a", "events:a") as a, notifier.subscribe("run:b") as b:
        notifier.wake("events:a")
        assert a.is_set() and not b.is_set()
    notifier.wake("run:a")  # nobody subscribed any more: nothing to do, nothing kept
    with notifier.subscribe("run:a") as again:
        assert not again.is_set()


async def test_prefix_handlers_get_the_rest_of_the_key() -> None:
    notifier = Notifier()
    seen: list[str] = []
    notifier.on("cancel", seen.append)
    notifier.wake("cancel:r1:rollback")
    notifier.wake("queue")
    assert seen == ["r1:rollback"]


async def test_a_payload_from_this_process_is_not_woken_twice() -> None:
    notifier, other = Notifier(), Notifier()
    with notifier.subscribe("queue") as queued:
        notifier.received(notifier.payload("queue"))
        assert not queued.is_set()
        notifier.received(other.payload("queue"))
        assert queued.is_set()


async def test_sqlite_announces_after_commit_and_not_after_rollback(tmp_path: object) -> None:
    db = await open_database(f"sqlite:///{tmp_path}/t.db")
    try:
        with db.notifier.subscribe("run:x") as changed:
            with pytest.raises(RuntimeError):
                async with db.transaction() as tx:
                    tx.publish("run:x")
                    raise RuntimeError("roll back")
            assert not changed.is_set()
            async with db.transaction() as tx:
                tx.publish("run:x")
            assert changed.is_set()
    finally:
        await db.close()


async def test_postgres_replicas_hear_each_others_commits(postgres_database: str) -> None:
    a, b = await open_database(postgres_database), await open_database(postgres_database)
    try:
        await asyncio.sleep(0.3)  # both LISTEN connections are up
        with (
            b.notifier.subscribe("run:x") as heard,
            b.notifier.subscribe("run:later") as later,
            a.notifier.subscribe("run:x") as own,
        ):
            with pytest.raises(RuntimeError):
                async with a.transaction() as tx:
                    tx.publish("run:x")
                    raise RuntimeError("roll back")
            # Notifications arrive in commit order: once a later one is heard, a rolled-back
            # one would have been heard before it.
            await a.publish("run:later")
            await asyncio.wait_for(later.wait(), 5)
            assert not heard.is_set()
            async with a.transaction() as tx:
                tx.publish("run:x")
            assert own.is_set()  # this replica's own waiters, directly
            await asyncio.wait_for(heard.wait(), 5)
            heard.clear()
            await a.change("UPDATE tl_runs SET cancel = NULL WHERE run_id = ?", ("none",), "run:x")
            await asyncio.wait_for(heard.wait(), 5)
    finally:
        await a.close()
        await b.close()


async def _wakes_after_commit_only(db: Database) -> None:
    with db.notifier.subscribe("run:w") as woken:
        with pytest.raises(RuntimeError):
            async with db.transaction() as tx:
                tx.wake("run:w")
                raise RuntimeError("roll back")
        assert not woken.is_set()
        async with db.transaction() as tx:
            tx.wake("run:w")
            assert not woken.is_set()
        assert woken.is_set()


async def test_a_wake_in_a_sqlite_transaction_wakes_once_it_commits(tmp_path: object) -> None:
    db = await open_database(f"sqlite:///{tmp_path}/t.db")
    try:
        await _wakes_after_commit_only(db)
    finally:
        await db.close()


async def test_a_wake_in_a_postgres_transaction_wakes_this_replica_only(
    postgres_database: str,
) -> None:
    # For keys the transaction announced itself (tl_create_run_v1's pg_notify): the other
    # replicas are not told again; this replica's waiters wake after the commit only.
    a, b = await open_database(postgres_database), await open_database(postgres_database)
    try:
        await asyncio.sleep(0.3)  # both LISTEN connections are up
        with b.notifier.subscribe("run:w") as heard, b.notifier.subscribe("run:later") as later:
            await _wakes_after_commit_only(a)
            # Notifications arrive in commit order: a later one heard, run:w would have been.
            await a.publish("run:later")
            await asyncio.wait_for(later.wait(), 5)
            assert not heard.is_set()
    finally:
        await a.close()
        await b.close()


async def test_the_listening_socket_turns_nagle_off_on_its_connections() -> None:
    sock = listening_socket("127.0.0.1", 0)
    accepted: list[socket.socket] = []

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer.get_extra_info("socket"))

    server = await asyncio.start_server(connected, sock=sock)
    try:
        _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
        for _ in range(100):
            if accepted:
                break
            await asyncio.sleep(0.01)
        assert accepted[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        writer.close()
    finally:
        server.close()
        await server.wait_closed()


def test_serve_runs_on_uvloop_when_it_is_installed() -> None:
    uvloop = pytest.importorskip("uvloop")
    seen: list[type] = []

    async def main() -> None:
        seen.append(type(asyncio.get_running_loop()))

    run_loop(main())
    assert seen == [uvloop.Loop]
