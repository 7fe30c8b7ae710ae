"""Restart PostgreSQL while a run is between steps.

The run either finishes once the server is back, or fails with a clear error and then resumes
cleanly with invoke(None, config). Runs alone (marker ``serial``): a restart drops every
connection on the server.
"""

from __future__ import annotations

import operator
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Annotated, Any, TypedDict

import psycopg
import pytest
from backends import postgres_url_or_skip
from psycopg import sql

from threadline.checkpoint.postgres import PostgresSaver
from threadline.graph import END, START, StateGraph

pytestmark = [pytest.mark.serial, pytest.mark.postgres]


def restart_postgres() -> None:
    version = os.listdir("/etc/postgresql")[0]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        capture_output=True,
        timeout=120,
    )


def wait_for_postgres(url: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class State(TypedDict):
    log: Annotated[list[str], operator.add]


@pytest.fixture
def pg() -> Iterator[tuple[str, str]]:
    url = postgres_url_or_skip()
    if not os.path.isdir("/etc/postgresql"):
        pytest.skip("no local PostgreSQL cluster to restart")
    schema = f"restart_{uuid.uuid4().hex[:8]}"
    yield url, schema
    wait_for_postgres(url)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.parametrize("pooled", [True, False], ids=["pool", "connection"])
def test_restart_between_steps(pg: tuple[str, str], pooled: bool) -> None:
    url, schema = pg
    calls: dict[str, int] = {}

    def node(name: str, restart: bool = False) -> Any:
        def fn(state: State) -> dict[str, Any]:
            calls[name] = calls.get(name, 0) + 1
            if restart and calls[name] == 1:
                restart_postgres()  # the previous step is committed; the next commit is not
                wait_for_postgres(url)
            return {"log": [name]}

        return fn

    builder = StateGraph(State)
    builder.add_node("a", node("a"))
    builder.add_node("b", node("b", restart=True))
    builder.add_node("c", node("c"))
    builder.add_edge(START, "a")
    builder.add_edge("a", "b")
    builder.add_edge("b", "c")
    builder.add_edge("c", END)
    config = {"configurable": {"thread_id": "restart"}}

    options: dict[str, Any] = {"schema": schema}
    if pooled:
        options["pool_max_size"] = 2
    with PostgresSaver.from_conn_string(url, **options) as saver:
        app = builder.compile(checkpointer=saver)
        try:
            result = app.invoke({"log": []}, config)
        except Exception as exc:  # a clear error, then a clean resume
            assert str(exc), "the error must say what happened"
            result = app.invoke(None, config)
        assert result["log"] == ["a", "b", "c"]
        assert calls["a"] == 1  # the committed step before the restart never ran again
        history = list(app.get_state_history(config))
        # the input checkpoint (-1), step 0 (the input applied), then a, b and c
        assert [h.metadata["step"] for h in history] == [3, 2, 1, 0, -1]
