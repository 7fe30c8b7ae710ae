"""threadline.checkpoint.from_url: one entry point for every backend and option."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import psycopg
import pytest
from backends import postgres_url_or_skip

from threadline.checkpoint import from_url
from threadline.checkpoint.memory import InMemorySaver
from threadline.checkpoint.postgres import PostgresSaver
from threadline.checkpoint.postgres.aio import AsyncPostgresSaver
from threadline.checkpoint.serde import MsgpackSerializer
from threadline.checkpoint.sqlite import SqliteSaver
from threadline.checkpoint.sqlite.aio import AsyncSqliteSaver
from threadline.checkpoint.types import ChannelChange, CheckpointDraft
from threadline.errors import CorruptCheckpointError

KEY = bytes(range(32))


def draft(value: object) -> CheckpointDraft:
    return CheckpointDraft(
        step=0,
        source="input",
        metadata={},
        tasks=[],
        changes={"x": ChannelChange(value)},
        parent_id=None,
    )


def test_memory_url() -> None:
    with from_url("memory://", ttl=60) as saver:
        assert isinstance(saver, InMemorySaver)
        assert saver.ttl == 60


def test_sqlite_url_relative_and_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with from_url("sqlite:///rel.db") as saver:
        assert isinstance(saver, SqliteSaver)
        saver.put("t", "", draft(1), expected_head=None)
    assert (tmp_path / "rel.db").exists()
    absolute = tmp_path / "sub" / "abs.db"
    absolute.parent.mkdir()
    with from_url(f"sqlite:///{absolute}") as saver:
        saver.put("t", "", draft(2), expected_head=None)
    assert absolute.exists()


async def test_sqlite_url_async(tmp_path: Path) -> None:
    saver = from_url(f"sqlite:///{tmp_path / 'a.db'}", aio=True)
    assert isinstance(saver, AsyncSqliteSaver)
    async with saver:
        await saver.aput("t", "", draft(3), expected_head=None)
        found = await saver.aget_tuple({"configurable": {"thread_id": "t"}})
        assert found is not None and found.checkpoint.values == {"x": 3}


def test_encryption_and_compression_options(tmp_path: Path) -> None:
    path = tmp_path / "enc.db"
    secret = "a very recognisable secret " * 100
    with from_url(f"sqlite:///{path}", encryption_key=KEY, compression="zstd") as saver:
        assert isinstance(saver.serde, MsgpackSerializer)
        saver.put("t", "", draft(secret), expected_head=None)
        found = saver.get_tuple({"configurable": {"thread_id": "t"}})
        assert found is not None and found.checkpoint.values["x"] == secret
    raw = path.read_bytes() + (
        Path(f"{path}-wal").read_bytes() if Path(f"{path}-wal").exists() else b""
    )
    assert b"recognisable" not in raw
    # Without the key, the rows are refused rather than misread.
    with from_url(f"sqlite:///{path}") as saver, pytest.raises(CorruptCheckpointError):
        saver.get_tuple({"configurable": {"thread_id": "t"}})
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize(
    "url",
    ["checkpoints.db", "", "mysql://root@localhost/db", "sqlite://", "sqlite:///"],
)
def test_bad_urls_say_what_is_accepted(url: str) -> None:
    with pytest.raises(ValueError, match="sqlite:///"):
        from_url(url)


@pytest.mark.postgres
def test_postgres_url_with_pool_and_schema() -> None:
    url = postgres_url_or_skip()
    schema = f"tl_url_{uuid.uuid4().hex[:8]}"
    try:
        with from_url(url, schema=schema, pool_min_size=1, pool_max_size=3, ttl=30) as saver:
            assert isinstance(saver, PostgresSaver)
            assert saver.ttl == 30
            saver.put("t", "", draft({"a": 1}), expected_head=None)
            found = saver.get_tuple({"configurable": {"thread_id": "t"}})
            assert found is not None and found.checkpoint.values == {"x": {"a": 1}}
        with psycopg.connect(url) as conn:
            tables = conn.execute(
                "SELECT count(*) FROM information_schema.tables WHERE table_schema = %s", (schema,)
            ).fetchone()
        assert tables is not None and tables[0] > 0
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.mark.postgres
async def test_postgres_url_async() -> None:
    url = postgres_url_or_skip()
    schema = f"tl_url_{uuid.uuid4().hex[:8]}"
    try:
        saver = from_url(url, aio=True, schema=schema)
        assert isinstance(saver, AsyncPostgresSaver)
        async with saver:
            await saver.aput("t", "", draft(5), expected_head=None)
            assert (await saver.aget({"configurable": {"thread_id": "t"}}))["channel_values"] == {
                "x": 5
            }
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
