"""``langgraph.json`` as ``threadline serve`` reads it: what it uses, ignores and refuses."""

from __future__ import annotations

import contextlib
import json
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from backends import postgres_url_or_skip
from langgraph_sdk import get_sync_client
from servers import HERE, SRC, fresh_postgres_database, start_replica

from threadline.server.graphs import ThreadTTL, load_config

GRAPH = f"{HERE / 'served_graphs.py'}:echo_graph"


def write(tmp_path: Path, **extra: object) -> Path:
    path = tmp_path / "langgraph.json"
    path.write_text(json.dumps({"graphs": {"echo": GRAPH}, **extra}))
    return path


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"auth": {"path": "./auth.py:auth"}}, "authentication is not supported"),
        ({"http": {"app": "./app.py:app"}}, "custom routes"),
        ({"checkpointer": {"path": "./saver.py:saver"}}, "checkpointer.path: a custom"),
        ({"checkpointer": {"serde": {"pickle_fallback": True}}}, "checkpointer.serde"),
        ({"checkpointer": {"backend": "mongo"}}, "checkpointer.backend 'mongo'"),
        ({"checkpointer": {"colour": 1}}, "checkpointer has unknown keys ['colour']"),
        ({"checkpointer": []}, '"checkpointer" must be an object'),
        ({"checkpointer": {"ttl": 60}}, "checkpointer.ttl must be an object"),
        ({"checkpointer": {"ttl": {"forever": 1}}}, "checkpointer.ttl has unknown keys"),
        ({"checkpointer": {"ttl": {"strategy": "forget"}}}, "strategy must be one of"),
        ({"checkpointer": {"ttl": {"default_ttl": -1}}}, "default_ttl must be a number"),
        ({"checkpointer": {"ttl": {"default_ttl": "1d"}}}, "default_ttl must be a number"),
        ({"checkpointer": {"ttl": {"sweep_interval_minutes": 0}}}, "sweep_interval_minutes"),
        ({"checkpointer": {"ttl": {"sweep_limit": 0.5}}}, "sweep_limit must be a whole number"),
        ({"colour": "blue"}, "unknown keys ['colour']"),
        ({"store": {"index": {"dims": 4}}}, 'needs "embed"'),
        ({"store": {"ttl": {"forever": True}}}, "store.ttl has unknown keys ['forever']"),
        ({"store": []}, '"store" must be an object'),
    ],
)
def test_settings_the_server_cannot_honour_are_refused(
    tmp_path: Path, extra: dict[str, object], message: str
) -> None:
    with pytest.raises(SystemExit, match=re.escape(message)):
        load_config(write(tmp_path, **extra))


def test_the_checkpointer_ttl_section_is_read(tmp_path: Path) -> None:
    ttl = {"strategy": "keep_latest", "default_ttl": 43200, "sweep_interval_minutes": 60}
    config = load_config(write(tmp_path, checkpointer={"backend": "default", "ttl": ttl}))
    assert config.thread_ttl == ThreadTTL("keep_latest", 43200.0, 60.0, None)
    assert config.thread_ttl.default() == ("keep_latest", 43200.0)
    only_sweep = load_config(write(tmp_path, checkpointer={"ttl": {"sweep_limit": 500}}))
    assert only_sweep.thread_ttl == ThreadTTL("delete", None, None, 500)
    assert only_sweep.thread_ttl.default() is None
    assert load_config(write(tmp_path)).thread_ttl is None


def test_a_default_thread_ttl_and_its_sweep_interval_from_the_config(tmp_path: Path) -> None:
    # The CLI's sweep interval is an hour: only the config's makes expired threads go soon.
    ttl = {"strategy": "delete", "default_ttl": 0.02, "sweep_interval_minutes": 0.005}
    path = write(tmp_path, checkpointer={"ttl": ttl})
    args = ["--config", str(path), "--sweep-interval", "3600"]
    replica = start_replica(f"sqlite:///{tmp_path / 'db.sqlite'}", args=args)
    try:
        client = get_sync_client(url=replica.url)
        doomed = client.threads.create()["thread_id"]
        given = client.threads.get(doomed, include=["ttl"])["ttl"]
        assert given["strategy"] == "delete" and given["ttl"] == 0.02
        kept = client.threads.create(ttl=60)["thread_id"]  # its own TTL wins
        assert client.threads.get(kept, include=["ttl"])["ttl"]["ttl"] == 60
        copied = client.threads.copy(kept)["thread_id"]  # a copy is a new thread: the default
        assert client.threads.get(copied, include=["ttl"])["ttl"]["ttl"] == 0.02
        deadline = time.monotonic() + 15
        while {t["thread_id"] for t in client.threads.search(limit=10)} != {kept}:
            assert time.monotonic() < deadline, "the default TTL's threads were never swept"
            time.sleep(0.1)
    finally:
        replica.stop()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_threads_that_runs_create_get_the_default_ttl(tmp_path: Path, backend: str) -> None:
    path = write(tmp_path, checkpointer={"ttl": {"strategy": "delete", "default_ttl": 90}})
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path / 'db.sqlite'}"
        else:
            url = stack.enter_context(fresh_postgres_database(postgres_url_or_skip()))
        replica = start_replica(url, args=["--config", str(path)])
        stack.callback(replica.stop)
        client = get_sync_client(url=replica.url)
        created = str(uuid.uuid4())
        client.runs.wait(created, "echo", input={"messages": ["hi"]}, if_not_exists="create")
        assert client.threads.get(created, include=["ttl"])["ttl"]["ttl"] == 90
        kept = client.runs.create(None, "echo", input={"messages": ["hi"]}, on_completion="keep")
        client.runs.join(kept["thread_id"], kept["run_id"])
        assert client.threads.get(kept["thread_id"], include=["ttl"])["ttl"]["ttl"] == 90
        # A thread that exists keeps what it has: a run on it gives it nothing.
        own = client.threads.create(ttl=600)["thread_id"]
        client.runs.wait(own, "echo", input={"messages": ["hi"]}, if_not_exists="create")
        assert client.threads.get(own, include=["ttl"])["ttl"]["ttl"] == 600


def test_image_build_settings_are_accepted_and_ignored(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, dependencies=["."], python_version="3.11", env={"A": "1"}))
    assert config.graphs == {"echo": GRAPH} and config.env == {"A": "1"}


def test_a_refused_config_stops_the_command_with_the_reason(tmp_path: Path) -> None:
    path = write(tmp_path, auth={"path": "./auth.py:auth"})
    out = subprocess.run(
        [sys.executable, "-m", "threadline.server", "serve", "--config", str(path), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert out.returncode != 0
    assert "authentication is not supported" in out.stderr


def test_the_store_section_gives_semantic_search_and_a_default_ttl(tmp_path: Path) -> None:
    index = {"embed": f"{HERE / 'served_embed.py'}:embed", "dims": 4, "fields": ["text"]}
    path = write(tmp_path, store={"index": index, "ttl": {"default_ttl": 60}})
    replica = start_replica(f"sqlite:///{tmp_path / 'db.sqlite'}", args=["--config", str(path)])
    try:
        client = get_sync_client(url=replica.url)
        for key, text in [("a", "dogs and dogs"), ("b", "tea, more tea"), ("c", "cats")]:
            client.store.put_item(["notes"], key, {"text": text})
        found = client.store.search_items(["notes"], query="a cup of tea", limit=3)["items"]
        assert found[0]["key"] == "b"
        assert found[0]["score"] > found[-1]["score"]
    finally:
        replica.stop()


def test_expired_store_items_are_swept_at_the_store_ttl_sweep_interval(tmp_path: Path) -> None:
    # The CLI's sweep interval is an hour: only the store's own makes expired items go soon.
    ttl = {"default_ttl": 0.01, "sweep_interval_minutes": 0.005}
    path = write(tmp_path, store={"ttl": ttl})
    database = tmp_path / "db.sqlite"
    args = ["--config", str(path), "--sweep-interval", "3600"]
    replica = start_replica(f"sqlite:///{database}", args=args)
    try:
        client = get_sync_client(url=replica.url)
        client.store.put_item(["notes"], "brief", {"text": "gone soon"})
        client.store.put_item(["notes"], "kept", {"text": "stays"}, ttl=60)
        with sqlite3.connect(database) as conn:
            deadline = time.monotonic() + 15
            while True:
                keys = {k for (k,) in conn.execute("SELECT key FROM threadline_store")}
                if keys == {"kept"}:
                    break
                assert time.monotonic() < deadline, f"expired items were never swept: {keys}"
                time.sleep(0.1)
    finally:
        replica.stop()


def test_a_thread_whose_graph_is_no_longer_served_is_read_from_storage(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    replica = start_replica(database)
    try:
        client = get_sync_client(url=replica.url)
        thread_id = client.threads.create()["thread_id"]
        client.runs.wait(thread_id, "echo", input={"messages": ["hi"]})
        before = client.threads.get_state(thread_id)
    finally:
        replica.stop()
    other = tmp_path / "other.json"  # another graph, without "echo"
    approval = f"{HERE / 'served_graphs.py'}:approval_graph"
    other.write_text(json.dumps({"graphs": {"approval": approval}}))
    replica = start_replica(database, args=["--config", str(other)])
    try:
        client = get_sync_client(url=replica.url)
        state = client.threads.get_state(thread_id)
        assert state["values"]["messages"] == ["hi", "reply to hi"]
        assert state["checkpoint"] == before["checkpoint"] and state["next"] == []
        history = client.threads.get_history(thread_id, limit=10)
        assert history[0]["checkpoint"] == before["checkpoint"] and len(history) >= 2
    finally:
        replica.stop()


PG = "postgresql://postgres@127.0.0.1:1/none"  # never reached: the settings are refused first


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--pool-size", "0"], {}, "--pool-size, THREADLINE_POOL_SIZE) must be 1 or more, got 0"),
        ([], {"THREADLINE_POOL_SIZE": "ten"}, "must be a whole number of 1 or more, got 'ten'"),
        (["--no-prepare"], {}, "give the LISTEN URL (--listen-url, THREADLINE_LISTEN_URL) a URL"),
        ([], {"THREADLINE_PREPARE": "0"}, "where LISTEN cannot work"),
        ([], {"THREADLINE_PREPARE": "maybe"}, "THREADLINE_PREPARE must be 1 or 0"),
        (["--listen-url", "redis://x"], {}, "must be a postgresql://... URL"),
        (["--database-url", "sqlite:///x.db", "--listen-url", PG], {}, "this one is SQLite"),
        (["--database-url", "sqlite:///x.db", "--no-prepare"], {}, "this database is SQLite"),
    ],
)
def test_connection_settings_that_cannot_work_stop_the_command_at_start(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    command = [sys.executable, "-m", "threadline.server", "serve", "--port", "0"]
    command += ["--config", str(write(tmp_path)), "--database-url", PG, *args]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin", **env},
        cwd=tmp_path,
        check=False,
    )
    assert out.returncode != 0
    assert message in out.stderr
    assert "Traceback" not in out.stderr
