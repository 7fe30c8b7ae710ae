"""Store behaviour that concerns one backend: durability, setup, URLs, encryption at rest."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from backends import _drop_postgres_schema, _postgres_schema, postgres_url_or_skip

from threadline.checkpoint.serde import MsgpackSerializer
from threadline.errors import SchemaMissingError
from threadline.store import from_url
from threadline.store.memory import InMemoryStore
from threadline.store.sqlite import SqliteStore
from threadline.store.sqlite.aio import AsyncSqliteStore

KEY = bytes(range(32))


def test_sqlite_store_is_durable_and_shares_a_file_with_the_saver(tmp_path: Path) -> None:
    from threadline.checkpoint.sqlite import SqliteSaver

    path = tmp_path / "app.db"
    with SqliteSaver.from_conn_string(path) as saver:
        saver.setup()
    with SqliteStore.from_conn_string(path) as store:
        store.put(("u", "1"), "k", {"v": 1})
    code = (
        "import sys; from threadline.store.sqlite import SqliteStore\n"
        "with SqliteStore.from_conn_string(sys.argv[1]) as s:\n"
        "    print(s.get(('u', '1'), 'k').value)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "{'v': 1}"
    tables = {r[0] for r in sqlite3.connect(path).execute("SELECT name FROM sqlite_master")}
    assert {"threadline_store", "threads", "checkpoints"} <= tables


def test_sqlite_auto_setup_false(tmp_path: Path) -> None:
    with SqliteStore.from_conn_string(tmp_path / "s.db", auto_setup=False) as store:
        with pytest.raises(SchemaMissingError, match="setup"):
            store.get(("a",), "k")
        store.setup()
        store.setup()  # idempotent
        assert store.get(("a",), "k") is None


def test_sqlite_writers_in_threads(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    stores = [SqliteStore.from_conn_string(path) for _ in range(4)]
    try:

        def work(n: int) -> None:
            for i in range(25):
                stores[n].put(("t", str(n)), f"k{i}", {"i": i})

        threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(stores[0].search(("t",), limit=1000)) == 100
    finally:
        for s in stores:
            s.close()


@pytest.mark.postgres
def test_postgres_setup_races_and_durability() -> None:
    from threadline.store.postgres import PostgresStore

    url = postgres_url_or_skip()
    schema = _postgres_schema()
    try:
        stores = [PostgresStore.from_conn_string(url, schema=schema) for _ in range(4)]
        errors: list[BaseException] = []

        def setup(s: PostgresStore) -> None:
            try:
                s.setup()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=setup, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        stores[0].put(("a",), "k", {"v": 1})
        assert stores[3].get(("a",), "k").value == {"v": 1}
        for s in stores:
            s.close()
        with PostgresStore.from_conn_string(url, schema=schema, auto_setup=False) as again:
            assert again.get(("a",), "k").value == {"v": 1}
    finally:
        _drop_postgres_schema(url, schema)


@pytest.mark.postgres
def test_postgres_auto_setup_false() -> None:
    from threadline.store.postgres import PostgresStore

    url = postgres_url_or_skip()
    schema = _postgres_schema()
    try:
        with (
            PostgresStore.from_conn_string(url, schema=schema, auto_setup=False) as store,
            pytest.raises(SchemaMissingError, match="setup"),
        ):
            store.get(("a",), "k")
    finally:
        _drop_postgres_schema(url, schema)


@pytest.mark.postgres
def test_postgres_store_synchronous_commit_is_opt_in() -> None:
    import psycopg

    from threadline.store.postgres import PostgresStore

    url = postgres_url_or_skip()
    schema = _postgres_schema()
    with psycopg.connect(url) as conn:
        server = conn.execute("SHOW synchronous_commit").fetchone()[0]  # type: ignore[index]
    try:
        for setting, want in ((None, server), ("off", "off")):
            with PostgresStore.from_conn_string(
                url, schema=schema, synchronous_commit=setting
            ) as store:
                store.put(("a",), "k", {"v": setting})
                assert store.get(("a",), "k").value == {"v": setting}  # type: ignore[union-attr]
                pool: Any = store._target
                with pool.connection() as conn:
                    assert conn.execute("SHOW synchronous_commit").fetchone()[0] == want
        with pytest.raises(ValueError, match="synchronous_commit"):
            PostgresStore.from_conn_string(url, schema=schema, synchronous_commit="fast")
    finally:
        _drop_postgres_schema(url, schema)


@pytest.mark.postgres
def test_postgres_stores_sharing_one_connection_across_threads() -> None:
    import psycopg

    from threadline.store.postgres import PostgresStore

    url = postgres_url_or_skip()
    schema = _postgres_schema()
    errors: list[BaseException] = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            stores = [PostgresStore(conn, schema=schema) for _ in range(2)]
            stores[0].setup()

            def work(n: int) -> None:
                try:
                    store = stores[n]
                    for i in range(100):
                        store.put((f"s{n}",), f"k{i}", {"n": n, "i": i})
                        item = store.get((f"s{n}",), f"k{i}")
                        assert item is not None and item.value == {"n": n, "i": i}
                        assert [x.key for x in store.search((f"s{n}",), limit=1)] == [f"k{i}"]
                except BaseException as exc:  # reported below
                    errors.append(exc)

            threads = [threading.Thread(target=work, args=(n,)) for n in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
    finally:
        _drop_postgres_schema(url, schema)
    assert not errors, errors


@pytest.mark.postgres
def test_bad_postgres_schema_name() -> None:
    from threadline.store.postgres import PostgresStore

    with pytest.raises(ValueError, match="identifier"):
        PostgresStore.from_conn_string(postgres_url_or_skip(), schema='x"; DROP')


def test_from_url(tmp_path: Path) -> None:
    assert isinstance(from_url("memory://"), InMemoryStore)
    with from_url(f"sqlite:///{tmp_path}/s.db") as store:  # type: ignore[attr-defined]
        assert isinstance(store, SqliteStore)
        store.put(("a",), "k", {"v": 1})
    assert isinstance(from_url(f"sqlite:///{tmp_path}/s.db", aio=True), AsyncSqliteStore)
    with pytest.raises(ValueError, match="store URL"):
        from_url("nope")
    with pytest.raises(ValueError, match="scheme"):
        from_url("redis://localhost")


@pytest.mark.postgres
def test_postgres_from_url() -> None:
    from threadline.store.postgres import PostgresStore
    from threadline.store.postgres.aio import AsyncPostgresStore

    url = postgres_url_or_skip()
    schema = _postgres_schema()
    try:
        with from_url(url, schema=schema) as store:  # type: ignore[attr-defined]
            assert isinstance(store, PostgresStore)
            store.put(("a",), "k", {"v": 1})

        async def read() -> object:
            async with from_url(url, aio=True, schema=schema) as astore:  # type: ignore[attr-defined]
                assert isinstance(astore, AsyncPostgresStore)
                item = await astore.aget(("a",), "k")
                return None if item is None else item.value

        assert asyncio.run(read()) == {"v": 1}
    finally:
        _drop_postgres_schema(url, schema)


def test_encrypted_values_are_not_kept_in_the_clear(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    serde = MsgpackSerializer(encryption_key=KEY)
    with SqliteStore.from_conn_string(path, serde=serde) as store:
        store.put(("a",), "k", {"secret": "hunter2", "n": 3})
        store.put(("a",), "j", {"secret": "other", "n": 1})
        # filters still work, judged on the decrypted values
        assert [i.key for i in store.search(("a",), filter={"n": {"$gt": 2}})] == ["k"]
    raw = path.read_bytes() + (
        (tmp_path / "s.db-wal").read_bytes() if os.path.exists(tmp_path / "s.db-wal") else b""
    )
    assert b"hunter2" not in raw
    rows = sqlite3.connect(path).execute("SELECT doc FROM threadline_store").fetchall()
    assert rows == [(None,), (None,)]
    with SqliteStore.from_conn_string(path) as plain, pytest.raises(Exception, match="encrypt"):
        plain.get(("a",), "k")
