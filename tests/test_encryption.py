"""Encryption at rest: ciphertexts bound to their place, key rotation, re-encryption.

The attacks copy raw stored bytes between rows, as someone with write access to the database
(but not the key) would: with SQL on SQLite and PostgreSQL, and on the memory saver's stored
rows. Every moved or replayed ciphertext must fail authentication with a DecryptionError that
names the thread and the checkpoint, on every backend.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from backends import Backend, postgres_url

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.checkpoint.memory import InMemorySaver
from threadline.checkpoint.rekey import arekey, rekey
from threadline.checkpoint.serde import MsgpackSerializer, key_id
from threadline.checkpoint.sqlite import SqliteSaver
from threadline.checkpoint.types import ChannelChange, Checkpoint, CheckpointDraft, VersionRef
from threadline.checkpoint.url import from_url
from threadline.errors import CorruptCheckpointError, DecryptionError

KEY_A = os.urandom(32)
KEY_B = os.urandom(32)


def draft(
    changes: dict[str, Any],
    *,
    parent: Checkpoint | None = None,
    step: int = 0,
    metadata: dict[str, Any] | None = None,
    tasks: list[Any] | None = None,
) -> CheckpointDraft:
    return CheckpointDraft(
        step=step,
        source="loop",
        metadata=metadata or {"step": step},
        tasks=tasks or [],
        changes={
            k: v if isinstance(v, ChannelChange) else ChannelChange(v) for k, v in changes.items()
        },
        parent_id=None if parent is None else parent.id,
        base_refs={} if parent is None else parent.refs,
    )


@dataclasses.dataclass
class Story:
    """What :func:`write_story` stored for one thread."""

    first: Checkpoint
    second: Checkpoint


def write_story(saver: BaseCheckpointSaver, thread_id: str, secret: str) -> Story:
    """Two checkpoints: ``approved`` False then True, ``msgs`` a snapshot then a delta, with
    metadata, tasks, pending writes against each, and thread metadata."""
    first = saver.put(
        thread_id,
        "",
        draft(
            {"approved": False, "msgs": [f"{secret}-0"]},
            metadata={"step": 0, "who": secret},
            tasks=[{"id": "t1", "name": "ask"}],
        ),
        expected_head=None,
        thread_metadata={"owner": secret},
    )
    saver.put_writes(
        thread_id, "", first.id, "t1", [("approved", f"{secret}-w0")], expected_head=first.id
    )
    second = saver.put(
        thread_id,
        "",
        draft(
            {
                "approved": True,
                "msgs": ChannelChange([f"{secret}-0", f"{secret}-1"], [f"{secret}-1"]),
            },
            parent=first,
            step=1,
            metadata={"step": 1, "who": secret},
            tasks=[{"id": "t1", "name": "ask"}],
        ),
        expected_head=first.id,
    )
    saver.put_writes(
        thread_id, "", second.id, "t1", [("approved", f"{secret}-w1")], expected_head=second.id
    )
    return Story(first, second)


def fresh_read(saver: BaseCheckpointSaver, thread_id: str, checkpoint_id: str | None = None) -> Any:
    """A cold read (no shared cache) of one checkpoint with its pending writes."""
    saver._cache.clear()
    found = saver.load(thread_id, "", checkpoint_id, shared=False)
    assert found is not None
    return found


# ---------------------------------------------------------------------- raw access per backend


class Raw:
    """Read and overwrite stored bytes behind the saver's back."""

    def version(self, tid: str, channel: str, writer: str) -> bytes: ...
    def set_version(self, tid: str, channel: str, writer: str, data: bytes) -> None: ...
    def set_base(self, tid: str, channel: str, writer: str, base: str | None) -> None: ...
    def field(self, tid: str, cid: str, field: str) -> bytes: ...
    def set_field(self, tid: str, cid: str, field: str, data: bytes) -> None: ...
    def write(self, tid: str, cid: str) -> bytes: ...
    def set_write(self, tid: str, cid: str, data: bytes) -> None: ...
    def thread_meta(self, tid: str) -> bytes: ...
    def set_thread_meta(self, tid: str, data: bytes) -> None: ...
    def set_refs(self, tid: str, cid: str, refs: dict[str, VersionRef]) -> None: ...


class RawMemory(Raw):
    def __init__(self, saver: InMemorySaver) -> None:
        self.s = saver

    def version(self, tid: str, channel: str, writer: str) -> bytes:
        return self.s._threads[tid].versions[(channel, writer)].data

    def set_version(self, tid: str, channel: str, writer: str, data: bytes) -> None:
        versions = self.s._threads[tid].versions
        versions[(channel, writer)] = dataclasses.replace(versions[(channel, writer)], data=data)

    def set_base(self, tid: str, channel: str, writer: str, base: str | None) -> None:
        versions = self.s._threads[tid].versions
        versions[(channel, writer)] = dataclasses.replace(versions[(channel, writer)], base=base)

    def field(self, tid: str, cid: str, field: str) -> bytes:
        data: bytes = getattr(self.s._threads[tid].checkpoints[cid], field)
        return data

    def set_field(self, tid: str, cid: str, field: str, data: bytes) -> None:
        rows = self.s._threads[tid].checkpoints
        rows[cid] = dataclasses.replace(rows[cid], **{field: data})

    def write(self, tid: str, cid: str) -> bytes:
        return self.s._threads[tid].writes[("", cid)][("t1", 0)].data

    def set_write(self, tid: str, cid: str, data: bytes) -> None:
        bucket = self.s._threads[tid].writes[("", cid)]
        bucket[("t1", 0)] = dataclasses.replace(bucket[("t1", 0)], data=data)

    def thread_meta(self, tid: str) -> bytes:
        meta = self.s._threads[tid].metadata
        assert meta is not None
        return meta

    def set_thread_meta(self, tid: str, data: bytes) -> None:
        self.s._threads[tid].metadata = data

    def set_refs(self, tid: str, cid: str, refs: dict[str, VersionRef]) -> None:
        rows = self.s._threads[tid].checkpoints
        rows[cid] = dataclasses.replace(rows[cid], refs=refs)


class RawSql(Raw):
    """Plain SQL through a connection of its own; ``execute(sql, params) -> rows``."""

    tables = {
        "threads": "threads",
        "checkpoints": "checkpoints",
        "versions": "versions",
        "writes": "writes",
    }
    p = "?"
    cid_col = "checkpoint_id"

    def __init__(
        self, execute: Callable[[str, tuple[Any, ...]], list[Any]], id_param: Callable[[str], Any]
    ):
        self.execute = execute
        self.idp = id_param

    def _one(self, sql: str, params: tuple[Any, ...]) -> bytes:
        rows = self.execute(sql.format(**self.tables, p=self.p, cid=self.cid_col), params)
        assert len(rows) == 1, (sql, params, rows)
        return bytes(rows[0][0])

    def _do(self, sql: str, params: tuple[Any, ...]) -> None:
        self.execute(sql.format(**self.tables, p=self.p, cid=self.cid_col), params)

    def version(self, tid: str, channel: str, writer: str) -> bytes:
        return self._one(
            "SELECT data FROM {versions} WHERE thread_id = {p} AND channel = {p} AND writer = {p}",
            (tid, channel, self.idp(writer)),
        )

    def set_version(self, tid: str, channel: str, writer: str, data: bytes) -> None:
        self._do(
            "UPDATE {versions} SET data = {p}"
            " WHERE thread_id = {p} AND channel = {p} AND writer = {p}",
            (data, tid, channel, self.idp(writer)),
        )

    def set_base(self, tid: str, channel: str, writer: str, base: str | None) -> None:
        self._do(
            "UPDATE {versions} SET base = {p}"
            " WHERE thread_id = {p} AND channel = {p} AND writer = {p}",
            (None if base is None else self.idp(base), tid, channel, self.idp(writer)),
        )

    def field(self, tid: str, cid: str, field: str) -> bytes:
        return self._one(
            f"SELECT {field} FROM {{checkpoints}} WHERE thread_id = {{p}} AND {{cid}} = {{p}}",
            (tid, self.idp(cid)),
        )

    def set_field(self, tid: str, cid: str, field: str, data: bytes) -> None:
        self._do(
            f"UPDATE {{checkpoints}} SET {field} = {{p}}"
            " WHERE thread_id = {p} AND {cid} = {p}",
            (data, tid, self.idp(cid)),
        )

    def write(self, tid: str, cid: str) -> bytes:
        return self._one(
            "SELECT data FROM {writes} WHERE thread_id = {p} AND checkpoint_id = {p}",
            (tid, self.idp(cid)),
        )

    def set_write(self, tid: str, cid: str, data: bytes) -> None:
        self._do(
            "UPDATE {writes} SET data = {p} WHERE thread_id = {p} AND checkpoint_id = {p}",
            (data, tid, self.idp(cid)),
        )

    def thread_meta(self, tid: str) -> bytes:
        return self._one("SELECT metadata FROM {threads} WHERE thread_id = {p}", (tid,))

    def set_thread_meta(self, tid: str, data: bytes) -> None:
        self._do("UPDATE {threads} SET metadata = {p} WHERE thread_id = {p}", (data, tid))


class RawSqlite(RawSql):
    def __init__(self, saver: SqliteSaver) -> None:
        def execute(sql: str, params: tuple[Any, ...]) -> list[Any]:
            with saver._lock:
                rows = saver.conn.execute(sql, params).fetchall()
                return rows

        super().__init__(execute, lambda i: uuid.UUID(i).bytes)

    def set_refs(self, tid: str, cid: str, refs: dict[str, VersionRef]) -> None:
        from threadline.checkpoint.sqlite._sql import encode_refs

        self._do(
            "UPDATE checkpoints SET refs = ? WHERE thread_id = ? AND checkpoint_id = ?",
            (encode_refs(refs, cid), tid, self.idp(cid)),
        )


class RawPostgres(RawSql):
    p = "%s"
    cid_col = "id"

    def __init__(self, saver: Any) -> None:
        import psycopg

        schema = saver.schema
        self.tables = {k: f'"{schema}".threadline_{k}' for k in RawSql.tables}

        def execute(sql: str, params: tuple[Any, ...]) -> list[Any]:
            with psycopg.connect(postgres_url(), autocommit=True) as conn:
                cur = conn.execute(sql, params)
                return cur.fetchall() if cur.description else []

        super().__init__(execute, lambda i: i)

    def set_refs(self, tid: str, cid: str, refs: dict[str, VersionRef]) -> None:
        from threadline.checkpoint.postgres._core import _pack_refs

        self._do(
            "UPDATE {checkpoints} SET refs = %s WHERE thread_id = %s AND id = %s",
            (_pack_refs(refs, cid), tid, cid),
        )


def raw_of(saver: BaseCheckpointSaver) -> Raw:
    if isinstance(saver, InMemorySaver):
        return RawMemory(saver)
    if isinstance(saver, SqliteSaver):
        return RawSqlite(saver)
    return RawPostgres(saver)


@pytest.fixture
def enc(
    make_saver: Callable[..., BaseCheckpointSaver],
) -> tuple[BaseCheckpointSaver, Raw, Story, Story]:
    saver = make_saver(serde=MsgpackSerializer(encryption_key=KEY_A))
    alice = write_story(saver, "alice", "ALICE")
    mallory = write_story(saver, "mallory", "MALLORY")
    return saver, raw_of(saver), alice, mallory


def refused(
    saver: BaseCheckpointSaver, read: Callable[[], Any], thread_id: str, checkpoint_id: str
) -> str:
    with pytest.raises(DecryptionError) as info:
        read()
    message = str(info.value)
    assert repr(thread_id) in message and checkpoint_id in message, message
    assert "does not authenticate" in message
    return message


# ---------------------------------------------------------------------- moved or replayed


def test_untouched_rows_read_back(enc: Any) -> None:
    saver = enc[0]
    found = fresh_read(saver, "mallory")
    assert found.checkpoint.values == {"approved": True, "msgs": ["MALLORY-0", "MALLORY-1"]}
    assert found.checkpoint.metadata == {"step": 1, "who": "MALLORY"}
    assert [w.value for w in found.pending_writes] == ["MALLORY-w1"]
    assert {t.thread_id: t.metadata for t in saver.list_threads()} == {
        "alice": {"owner": "ALICE"},
        "mallory": {"owner": "MALLORY"},
    }


def test_version_copied_from_another_thread_is_refused(enc: Any) -> None:
    saver, raw, alice, mallory = enc
    # Same channel, same step: only the thread differs. (Writers differ too, so move it
    # under mallory's writer id: the place differs by thread alone.)
    stolen = raw.version("alice", "approved", alice.second.id)
    raw.set_version("mallory", "approved", mallory.second.id, stolen)
    refused(saver, lambda: fresh_read(saver, "mallory"), "mallory", mallory.second.id)


def test_version_copied_from_another_channel_is_refused(enc: Any) -> None:
    saver, raw, _, mallory = enc
    other = raw.version("mallory", "msgs", mallory.first.id)
    raw.set_version("mallory", "approved", mallory.second.id, other)
    refused(saver, lambda: fresh_read(saver, "mallory"), "mallory", mallory.second.id)


def test_older_version_replayed_is_refused(enc: Any) -> None:
    saver, raw, _, mallory = enc
    old = raw.version("mallory", "approved", mallory.first.id)  # False, a step earlier
    raw.set_version("mallory", "approved", mallory.second.id, old)
    refused(saver, lambda: fresh_read(saver, "mallory"), "mallory", mallory.second.id)


def test_delta_moved_onto_another_base_is_refused(enc: Any) -> None:
    saver, raw, _, mallory = enc
    raw.set_base("mallory", "msgs", mallory.second.id, None)  # the delta read as a snapshot
    refused(saver, lambda: fresh_read(saver, "mallory"), "mallory", mallory.second.id)


def test_refs_pointed_at_an_older_version_are_refused(enc: Any) -> None:
    saver, raw, _, mallory = enc
    refs = dict(mallory.second.refs)
    refs["approved"] = mallory.first.refs["approved"]  # roll one channel back
    raw.set_refs("mallory", mallory.second.id, refs)
    refused(saver, lambda: fresh_read(saver, "mallory"), "mallory", mallory.second.id)


@pytest.mark.parametrize("field", ["metadata", "tasks"])
def test_checkpoint_fields_moved_or_replayed_are_refused(enc: Any, field: str) -> None:
    saver, raw, alice, mallory = enc
    original = raw.field("mallory", mallory.second.id, field)
    for source in (("alice", alice.second.id), ("mallory", mallory.first.id)):
        raw.set_field("mallory", mallory.second.id, field, raw.field(*source, field))
        refused(saver, lambda: fresh_read(saver, "mallory"), "mallory", mallory.second.id)
    raw.set_field("mallory", mallory.second.id, field, original)
    assert fresh_read(saver, "mallory").checkpoint.step == 1


def test_history_refuses_replayed_metadata(enc: Any) -> None:
    saver, raw, alice, mallory = enc
    raw.set_field(
        "mallory", mallory.first.id, "metadata", raw.field("alice", alice.first.id, "metadata")
    )
    cfg = {"configurable": {"thread_id": "mallory"}}
    refused(saver, lambda: list(saver.list(cfg)), "mallory", mallory.first.id)
    refused(
        saver, lambda: list(saver.list(cfg, filter={"who": "ALICE"})), "mallory", mallory.first.id
    )


def test_pending_writes_moved_or_replayed_are_refused(enc: Any) -> None:
    saver, raw, alice, mallory = enc
    for source in (("alice", alice.second.id), ("mallory", mallory.first.id)):
        raw.set_write("mallory", mallory.second.id, raw.write(*source))
        refused(saver, lambda: fresh_read(saver, "mallory"), "mallory", mallory.second.id)


def test_thread_metadata_moved_is_refused(enc: Any) -> None:
    saver, raw, _, _ = enc
    raw.set_thread_meta("mallory", raw.thread_meta("alice"))
    with pytest.raises(DecryptionError, match=r"metadata of thread 'mallory'"):
        saver.list_threads()
    with pytest.raises(DecryptionError, match=r"metadata of thread 'mallory'"):
        saver.list_threads(filter={"owner": "ALICE"})


def test_copy_thread_rebinds_and_copies_stay_bound(enc: Any) -> None:
    saver, raw, _, mallory = enc
    saver.copy_thread("mallory", "copy")
    found = fresh_read(saver, "copy")
    assert found.checkpoint.values == {"approved": True, "msgs": ["MALLORY-0", "MALLORY-1"]}
    assert [w.value for w in found.pending_writes] == ["MALLORY-w1"]
    assert {t.thread_id: t.metadata for t in saver.list_threads()}["copy"] == {"owner": "MALLORY"}
    # The copy's ciphertexts are its own: the source's bytes do not authenticate there.
    assert raw.version("copy", "approved", mallory.second.id) != raw.version(
        "mallory", "approved", mallory.second.id
    )
    raw.set_version(
        "copy", "approved", mallory.second.id, raw.version("mallory", "approved", mallory.second.id)
    )
    refused(saver, lambda: fresh_read(saver, "copy"), "copy", mallory.second.id)
    assert fresh_read(saver, "mallory").checkpoint.values["approved"] is True


# ---------------------------------------------------------------------- keys and rotation


def test_key_ids_and_key_collections() -> None:
    assert key_id(KEY_A) == key_id(base64.b64encode(KEY_A).decode()) == key_id(KEY_A.hex())
    assert len(key_id(KEY_A)) == 8 and key_id(KEY_A) != key_id(KEY_B)
    as_list = MsgpackSerializer(encryption_key=[KEY_A, KEY_B])
    as_map = MsgpackSerializer(encryption_key={"2025": KEY_A, "2026": KEY_B})
    assert as_list.key_ids == as_map.key_ids == [key_id(KEY_A), key_id(KEY_B)]
    data = as_list.dumps("x", aad=b"here")
    assert as_list.key_id_of(data) == key_id(KEY_B)  # the newest writes
    assert as_map.loads(data, aad=b"here") == "x"
    old = MsgpackSerializer(encryption_key=KEY_A).dumps("y")
    assert as_list.loads(old) == "y"  # older keys read
    with pytest.raises(DecryptionError, match=key_id(KEY_B)):
        MsgpackSerializer(encryption_key=KEY_A).loads(data, aad=b"here")
    with pytest.raises(ValueError, match="same id"):
        MsgpackSerializer(encryption_key=[KEY_A, KEY_A.hex()])
    with pytest.raises(ValueError, match="empty"):
        MsgpackSerializer(encryption_key=[])
    with pytest.raises(TypeError):
        MsgpackSerializer(encryption_key=42)  # type: ignore[arg-type]


def test_reseal_keeps_the_plaintext_and_binds_the_new_place() -> None:
    old = MsgpackSerializer(encryption_key=KEY_A)
    both = MsgpackSerializer(encryption_key=[KEY_A, KEY_B])
    value = {"text": "z" * 2000}  # compressed before encryption
    data = old.dumps(value, aad=b"p1")
    assert both.reseal(data, b"p1") is not None
    new = both.reseal(data, b"p1")
    assert new is not None and both.key_id_of(new) == key_id(KEY_B)
    assert both.loads(new, aad=b"p1") == value
    assert both.reseal(new, b"p1") is None  # already current
    moved = both.reseal(new, b"p1", new_aad=b"p2")
    assert moved is not None and both.loads(moved, aad=b"p2") == value
    with pytest.raises(DecryptionError):
        both.loads(moved, aad=b"p1")
    with pytest.raises(DecryptionError):
        both.reseal(data, b"elsewhere")  # an older key's value is authenticated on the way


def test_unbound_frames_of_older_releases_need_allow_plaintext() -> None:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    # The frame threadline wrote before binding: version 1, AAD = the header byte only.
    body = MsgpackSerializer(compression=None).dumps({"a": 1})[1:]
    head = bytes((0x21,))
    nonce = os.urandom(12)
    legacy = head + nonce + AESGCM(KEY_A).encrypt(nonce, body, head)
    with pytest.raises(CorruptCheckpointError, match=r"without being bound.*allow_plaintext"):
        MsgpackSerializer(encryption_key=KEY_A).loads(legacy)
    migrating = MsgpackSerializer(encryption_key=[KEY_A, KEY_B], allow_plaintext=True)
    assert migrating.loads(legacy) == {"a": 1}
    assert migrating.reseal(legacy, b"p") is None  # not migrated unless asked
    bound = migrating.reseal(legacy, b"p", migrate=True)
    assert bound is not None
    assert MsgpackSerializer(encryption_key=KEY_B).loads(bound, aad=b"p") == {"a": 1}


def _all_key_ids(saver: BaseCheckpointSaver, serde: MsgpackSerializer) -> set[str | None]:
    from threadline.checkpoint.binding import COLUMNS

    found: set[str | None] = set()
    for tid in saver._thread_page(None, 100):
        for column in COLUMNS:
            for value in saver._stored_page(column, tid, None, 10_000):
                found.add(serde.key_id_of(value.data))
    return found


def test_rotation_then_rekey_then_drop_the_old_key(
    make_saver: Callable[..., BaseCheckpointSaver], sync_backend: Backend
) -> None:
    saver = make_saver(serde=MsgpackSerializer(encryption_key=KEY_A))
    write_story(saver, "alice", "ALICE")
    write_story(saver, "bob", "BOB")
    both = MsgpackSerializer(encryption_key=[KEY_A, KEY_B])
    saver.serde = both  # the process restarts with the new key list
    assert fresh_read(saver, "alice").checkpoint.values["msgs"] == ["ALICE-0", "ALICE-1"]
    assert _all_key_ids(saver, both) == {key_id(KEY_A)}
    report = rekey(saver, batch_size=2)  # small pages: cursors are exercised
    assert report.threads == 2 and report.rewritten == 2 * (1 + 4 + 4 + 2) and report.done
    assert _all_key_ids(saver, both) == {key_id(KEY_B)}
    again = rekey(saver)
    assert again.rewritten == 0 and again.current == report.rewritten
    saver.serde = MsgpackSerializer(encryption_key=KEY_B)
    found = fresh_read(saver, "bob")
    assert found.checkpoint.values == {"approved": True, "msgs": ["BOB-0", "BOB-1"]}
    assert found.checkpoint.metadata == {"step": 1, "who": "BOB"}
    assert [w.value for w in found.pending_writes] == ["BOB-w1"]
    assert {t.metadata["owner"] for t in saver.list_threads()} == {"ALICE", "BOB"}
    saver.serde = MsgpackSerializer(encryption_key=KEY_A)
    with pytest.raises(DecryptionError, match="not among"):
        fresh_read(saver, "bob")


def test_rekey_migrates_plaintext_rows(make_saver: Callable[..., BaseCheckpointSaver]) -> None:
    saver = make_saver()
    write_story(saver, "alice", "ALICE")
    saver.serde = MsgpackSerializer(encryption_key=KEY_A)
    with pytest.raises(CorruptCheckpointError, match="not encrypted"):
        fresh_read(saver, "alice")
    saver.serde = MsgpackSerializer(encryption_key=KEY_A, allow_plaintext=True)
    left = rekey(saver)
    assert left.rewritten == 0 and left.unencrypted == 11 and not left.done
    done = rekey(saver, migrate=True)
    assert done.rewritten == 11 and done.done
    saver.serde = MsgpackSerializer(encryption_key=KEY_A)
    assert fresh_read(saver, "alice").checkpoint.values["approved"] is True
    assert saver.list_threads()[0].metadata == {"owner": "ALICE"}


def test_rekey_never_overwrites_a_concurrent_change(
    make_saver: Callable[..., BaseCheckpointSaver],
) -> None:
    saver = make_saver(serde=MsgpackSerializer(encryption_key=KEY_A))
    story = write_story(saver, "alice", "ALICE")
    saver.serde = MsgpackSerializer(encryption_key=[KEY_A, KEY_B])
    (read,) = saver._stored_page("threads.metadata", "alice", None, 10)
    # A commit rewrites the thread's metadata between rekey's read and its rewrite.
    saver.put(
        "alice",
        "",
        draft({"approved": 1}, parent=story.second, step=2),
        expected_head=story.second.id,
        thread_metadata={"owner": "NEW"},
    )
    stale = saver.serde.reseal(read.data, read.place("alice"))  # type: ignore[attr-defined]
    assert saver._replace_stored("alice", [(read, stale)]) == 0
    assert saver.list_threads()[0].metadata == {"owner": "NEW"}


def test_rekey_while_a_thread_commits(
    make_saver: Callable[..., BaseCheckpointSaver], sync_backend: Backend
) -> None:
    saver = make_saver(serde=MsgpackSerializer(encryption_key=KEY_A))
    head = saver.put("busy", "", draft({"log": []}), expected_head=None)
    saver.serde = MsgpackSerializer(encryption_key=[KEY_A, KEY_B])
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        nonlocal head
        try:
            for i in range(60):
                value = [
                    *saver.get({"configurable": {"thread_id": "busy"}})["channel_values"]["log"],
                    i,
                ]  # type: ignore[index]
                head = saver.put(
                    "busy",
                    "",
                    draft({"log": ChannelChange(value, [i])}, parent=head, step=i + 1),
                    expected_head=head.id,
                    thread_metadata={"n": i},
                )
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    t = threading.Thread(target=writer)
    t.start()
    while not stop.is_set():
        rekey(saver, batch_size=7)
    t.join()
    assert not errors
    rekey(saver)
    saver.serde = MsgpackSerializer(encryption_key=KEY_B)
    found = fresh_read(saver, "busy")
    assert found.checkpoint.values["log"] == list(range(60))
    assert saver.list_threads()[0].metadata == {"n": 59}
    assert len(list(saver.list({"configurable": {"thread_id": "busy"}}))) == 61


async def test_arekey_on_async_savers(amake_saver: Any) -> None:
    saver = await amake_saver(serde=MsgpackSerializer(encryption_key=KEY_A))
    first = await saver.aput(
        "t", "", draft({"x": [1]}), expected_head=None, thread_metadata={"o": 1}
    )
    await saver.aput_writes("t", "", first.id, "t1", [("x", 2)], expected_head=first.id)
    saver.serde = MsgpackSerializer(encryption_key=[KEY_A, KEY_B])
    report = await arekey(saver, batch_size=1)
    assert report.rewritten == 5 and report.done
    saver.serde = MsgpackSerializer(encryption_key=KEY_B)
    saver._cache.clear()
    found = await saver.aload("t", "", None, shared=False)
    assert found is not None and found.checkpoint.values == {"x": [1]}
    assert [w.value for w in found.pending_writes] == [2]
    assert (await saver.alist_threads())[0].metadata == {"o": 1}
    await saver.acopy_thread("t", "t2")
    saver._cache.clear()
    copied = await saver.aload("t2", "", None, shared=False)
    assert copied is not None and copied.checkpoint.values == {"x": [1]}


def test_rekey_refuses_a_serializer_without_keys(
    make_saver: Callable[..., BaseCheckpointSaver],
) -> None:
    with pytest.raises(ValueError, match="encryption_key"):
        rekey(make_saver())


def test_rekey_reports_a_tampered_row_and_stops(enc: Any) -> None:
    saver, raw, alice, mallory = enc
    raw.set_version(
        "mallory", "approved", mallory.second.id, raw.version("alice", "approved", alice.second.id)
    )
    saver.serde = MsgpackSerializer(encryption_key=[KEY_A, KEY_B])
    with pytest.raises(DecryptionError, match=r"versions.data of thread 'mallory'"):
        rekey(saver)


def test_rekey_command_line(tmp_path: Any) -> None:
    path = tmp_path / "c.db"
    url = f"sqlite:///{path}"
    with from_url(url, encryption_key=KEY_A) as saver:
        write_story(saver, "alice", "ALICE")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "THREADLINE_ENCRYPTION_KEYS": f"{base64.b64encode(KEY_A).decode()}, {KEY_B.hex()}",
    }
    cmd = [sys.executable, "-m", "threadline.checkpoint.rekey", "--url", url, "--batch-size", "3"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    report = json.loads(out.stdout)
    assert report["rewritten"] == 11 and report["done"] is True
    with from_url(url, encryption_key=KEY_B) as saver:
        assert fresh_read(saver, "alice").checkpoint.values["msgs"] == ["ALICE-0", "ALICE-1"]
    env.pop("THREADLINE_ENCRYPTION_KEYS")
    missing = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert missing.returncode != 0 and "no keys" in missing.stderr
    assert base64.b64encode(KEY_A).decode() not in missing.stderr


def test_from_url_takes_a_key_list(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'k.db'}"
    with from_url(url, encryption_key=KEY_A) as saver:
        write_story(saver, "alice", "ALICE")
    with from_url(url, encryption_key=[KEY_A, KEY_B]) as saver:
        assert fresh_read(saver, "alice").checkpoint.values["approved"] is True
        write_story(saver, "bob", "BOB")
        assert saver.serde.key_id_of(
            saver._stored_page("versions.data", "bob", None, 1)[0].data
        ) == key_id(KEY_B)  # type: ignore[attr-defined]
