"""Several processes send messages to one thread at once: every message is applied exactly once.

Each run takes the thread's writer lease before its first commit; a second run on the thread
waits for it (``on_busy="wait"``, the default). So four processes sending 30 messages each get
120 acknowledged invokes, and the thread's history is one chain in which each message and its
reply appear once, one run after the other (issue 8, item 8). Before leases, 6 of 120 (SQLite)
and 30 of 120 (PostgreSQL) succeeded and the rest raised CheckpointConflictError.
"""

from __future__ import annotations

import itertools
import operator
import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, TypedDict

import psycopg
import pytest
from backends import postgres_url_or_skip
from psycopg import sql

from threadline.checkpoint import from_url

PROCESSES = 4
MESSAGES = 30

SCRIPT = textwrap.dedent(
    """
    import operator, os, sys, time
    from typing import Annotated, TypedDict
    from threadline.checkpoint import from_url
    from threadline.graph import END, START, StateGraph

    url, thread_id, start_file, who, count = sys.argv[1:6]
    options = {"schema": sys.argv[6]} if len(sys.argv) > 6 else {}

    class State(TypedDict):
        log: Annotated[list[str], operator.add]

    def think(state):
        time.sleep(0.002)  # long enough for the others to arrive meanwhile
        return {"log": [state["log"][-1] + ":thought"]}

    def reply(state):
        return {"log": [state["log"][-2] + ":reply"]}

    builder = StateGraph(State)
    builder.add_node("think", think)
    builder.add_node("reply", reply)
    builder.add_edge(START, "think")
    builder.add_edge("think", "reply")
    builder.add_edge("reply", END)
    with from_url(url, **options) as saver:
        app = builder.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": thread_id}}
        while not os.path.exists(start_file):
            time.sleep(0.001)
        done = 0
        for i in range(int(count)):
            out = app.invoke({"log": [f"{who}-{i}"]}, config)
            assert out["log"][-3:] == [f"{who}-{i}", f"{who}-{i}:thought", f"{who}-{i}:reply"]
            done += 1
        print("DONE", done, flush=True)
    """
)


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def _race(tmp_path: Path, url: str, options: list[str]) -> None:
    thread_id = f"race-{uuid.uuid4().hex[:6]}"
    script = tmp_path / "racer.py"
    script.write_text(SCRIPT)
    extra = {"schema": options[0]} if options else {}
    with from_url(url, **extra) as saver:
        saver.setup()  # once, before the racers start
    start = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(script),
                url,
                thread_id,
                str(start),
                f"p{n}",
                str(MESSAGES),
                *options,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ},
        )
        for n in range(PROCESSES)
    ]
    start.touch()
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * PROCESSES, results
    assert all(out.split() == ["DONE", str(MESSAGES)] for out, _ in results), results

    with from_url(url, **extra) as saver:
        history = list(saver.list({"configurable": {"thread_id": thread_id}}))
        chain = list(reversed(history))
        for older, newer in itertools.pairwise(chain):
            assert newer.checkpoint.parent_id == older.checkpoint.id  # one chain, no fork
        log = history[0].checkpoint.values["log"]
    sent = {f"p{n}-{i}" for n in range(PROCESSES) for i in range(MESSAGES)}
    # Each message once, each followed at once by its own thought and reply: runs one after
    # the other, in some order.
    assert len(log) == 3 * len(sent)
    runs = [log[k : k + 3] for k in range(0, len(log), 3)]
    assert {r[0] for r in runs} == sent
    assert all(r == [r[0], f"{r[0]}:thought", f"{r[0]}:reply"] for r in runs), runs
    # per message: the input checkpoint, step 0 (the input applied) and 2 steps, nothing else
    assert len(history) == 4 * len(sent)


def test_four_processes_send_to_one_sqlite_thread(tmp_path: Path) -> None:
    _race(tmp_path, f"sqlite:///{tmp_path / 'race.db'}", [])


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    url = postgres_url_or_skip()
    schema = f"race_{uuid.uuid4().hex[:10]}"
    yield url, schema
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.postgres
def test_four_processes_send_to_one_postgres_thread(
    tmp_path: Path, pg_schema: tuple[str, str]
) -> None:
    url, schema = pg_schema
    _race(tmp_path, url, [schema])
