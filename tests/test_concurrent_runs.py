"""Two processes run the same graph on the same thread at once: no update is lost silently.

Each step commits by compare-and-swap on the thread's head, so exactly one process commits
each step; the other stops with CheckpointConflictError naming the thread, and nothing of its
step is stored. The thread's history stays one chain with every message once.
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
from threadline.graph import START, StateGraph

SCRIPT = textwrap.dedent(
    """
    import operator, sys, time
    from typing import Annotated, TypedDict
    from threadline.checkpoint import from_url
    from threadline.errors import CheckpointConflictError
    from threadline.graph import END, START, StateGraph

    url, thread_id, start_file, who = sys.argv[1:5]
    options = {"schema": sys.argv[5]} if len(sys.argv) > 5 else {}

    class State(TypedDict):
        log: Annotated[list[str], operator.add]

    def rendezvous():
        # Both processes inside the first step: both started from the same head.
        here = __import__("pathlib").Path(start_file + "." + who)
        here.touch()
        other = "p2" if who == "p1" else "p1"
        deadline = time.monotonic() + 60
        while not __import__("os").path.exists(start_file + "." + other):
            if time.monotonic() > deadline:
                raise TimeoutError("the other process never started")
            time.sleep(0.001)

    def step(name):
        def node(state):
            if name == "a":
                rendezvous()
            time.sleep(0.02)
            return {"log": [f"{who}:{name}"]}
        return node

    builder = StateGraph(State)
    for name in ("a", "b", "c", "d"):
        builder.add_node(name, step(name))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", "d")
    builder.add_edge("d", END)
    with from_url(url, **options) as saver:
        app = builder.compile(checkpointer=saver)
        config = {"configurable": {"thread_id": thread_id}}
        while not __import__("os").path.exists(start_file):
            time.sleep(0.001)
        try:
            app.invoke(None, config)
        except CheckpointConflictError as exc:
            assert thread_id in str(exc), str(exc)
            print("CONFLICT", flush=True)
            sys.exit(3)
        print("DONE", flush=True)
    """
)


class State(TypedDict):
    log: Annotated[list[str], operator.add]


def _race(tmp_path: Path, url: str, options: list[str]) -> None:
    thread_id = f"race-{uuid.uuid4().hex[:6]}"
    script = tmp_path / "racer.py"
    script.write_text(SCRIPT)
    # Start the thread (input checkpoint only) so both processes continue the same head.
    extra = {"schema": options[0]} if options else {}
    with from_url(url, **extra) as saver:
        builder = StateGraph(State)
        builder.add_node("a", lambda s: {})
        builder.add_edge(START, "a")
        app = builder.compile(checkpointer=saver, interrupt_before=["a"])
        app.invoke({"log": []}, {"configurable": {"thread_id": thread_id}})

    start = tmp_path / "go"
    env = {**os.environ}
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), url, thread_id, str(start), who, *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for who in ("p1", "p2")
    ]
    start.touch()
    results = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], results  # one finished, the other was told it lost

    with from_url(url, **extra) as saver:
        history = list(saver.list({"configurable": {"thread_id": thread_id}}))
        chain = list(reversed(history))
        for older, newer in itertools.pairwise(chain):
            assert newer.checkpoint.parent_id == older.checkpoint.id  # one chain, no fork
        log = history[0].checkpoint.values["log"]
    # Steps a-d each once; the winner of each step may differ, but no step is lost or doubled.
    assert [entry.split(":")[1] for entry in log] == ["a", "b", "c", "d"], log
    assert len(history) == 6  # input, step 0 + 4 steps


def test_two_processes_on_one_sqlite_thread(tmp_path: Path) -> None:
    _race(tmp_path, f"sqlite:///{tmp_path / 'race.db'}", [])


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    url = postgres_url_or_skip()
    schema = f"race_{uuid.uuid4().hex[:10]}"
    yield url, schema
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.postgres
def test_two_processes_on_one_postgres_thread(tmp_path: Path, pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    _race(tmp_path, url, [schema])
