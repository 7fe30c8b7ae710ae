"""Real ``threadline serve`` processes for the server tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from langgraph_sdk import get_sync_client

HERE = Path(__file__).parent
SRC = HERE.parent.parent / "src"


@dataclass
class Replica:
    """One ``threadline serve`` process and the URL it listens on."""

    proc: subprocess.Popen[str]
    url: str

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()


def start_replica(
    database_url: str, *, env: dict[str, str] | None = None, args: list[str] | None = None
) -> Replica:
    """Start ``threadline serve`` on a free port and wait until it listens.

    ``args`` come after the defaults (``--lease 2 --shutdown-grace 1``), so they override them.
    """
    command = [sys.executable, "-m", "threadline.server", "serve", "--port", "0"]
    command += ["--config", str(HERE / "langgraph.json"), "--database-url", database_url]
    command += ["--lease", "2", "--shutdown-grace", "1", *(args or [])]
    full_env = {**os.environ, "PYTHONPATH": str(SRC), **(env or {})}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=full_env, cwd=HERE)
    assert proc.stdout is not None
    for line in proc.stdout:
        if "listening on http://" in line:
            return Replica(proc, line[line.index("http://") :].strip())
    raise RuntimeError(f"threadline serve exited with {proc.wait()} before listening")


@contextlib.contextmanager
def replicas(
    database_url: str,
    count: int,
    env: dict[str, str] | None = None,
    args: list[str] | None = None,
) -> Iterator[list[Replica]]:
    """``count`` replicas over one database, stopped afterwards."""
    started: list[Replica] = []
    try:
        for _ in range(count):
            started.append(start_replica(database_url, env=env, args=args))
        yield started
    finally:
        for replica in started:
            replica.stop()


@contextlib.contextmanager
def fresh_postgres_database(admin_url: str) -> Iterator[str]:
    """A new, empty PostgreSQL database for one test module, dropped afterwards."""
    name = f"tl_server_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = admin_url.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def clients(urls: list[str]) -> tuple[Any, Any]:
    """A client of the first replica and one of the last (the same on SQLite)."""
    return get_sync_client(url=urls[0]), get_sync_client(url=urls[-1])
