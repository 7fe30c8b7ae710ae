"""Crash safety: SIGKILL a real process at random points of a long run, many times, and resume.

Each time a new process resumes with ``invoke(None, config)``. At the end the state equals an
uninterrupted run's, the history is one unbroken chain (a committed step never ran again, no
branch appeared), and every checkpoint decodes (none is half-written).
Kills per backend: ``THREADLINE_CRASH_KILLS`` (default 100).
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import crash_graph
import psycopg
import pytest
from backends import postgres_url_or_skip
from psycopg import sql

from threadline.checkpoint import from_url
from threadline.checkpoint.memory import MemorySaver

KILLS = int(os.environ.get("THREADLINE_CRASH_KILLS", "100"))
ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tests" / "crash_graph.py"

pytestmark = pytest.mark.slow


def _expected() -> dict[str, object]:
    app = crash_graph.build(MemorySaver())
    config = {**crash_graph.CONFIG_LIMIT, "configurable": {"thread_id": "reference"}}
    return dict(app.invoke(crash_graph.INPUT, config))


def _start(args: list[str]) -> subprocess.Popen[str]:
    # This checkout's code, not whatever the virtualenv's editable install points at.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _wait_ready(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "READY" not in line:
        proc.wait(timeout=30)
        raise AssertionError(f"crash_graph did not start: {line!r} {proc.stderr.read()}")  # type: ignore[union-attr]


def _kill_and_resume(args: list[str], kills: int, rng: random.Random) -> int:
    """Kill ``kills`` processes at random moments, then let one finish. Returns kills done."""
    done = 0
    while done < kills:
        proc = _start(args)
        _wait_ready(proc)
        time.sleep(rng.uniform(0.0, 0.05))
        if proc.poll() is not None:  # it finished before the kill: the run is complete
            out, err = proc.communicate()
            assert proc.returncode == 0, err
            return done
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        done += 1
    proc = _start(args)
    _wait_ready(proc)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "DONE" in out, err
    return done


def _check(url: str, thread_id: str, options: dict[str, str]) -> None:
    expected = _expected()
    with from_url(url, **options) as saver:
        app = crash_graph.build(saver)
        config = {"configurable": {"thread_id": thread_id}}
        state = app.get_state(config)
        assert dict(state.values) == expected
        assert state.next == ()
        history = list(app.get_state_history(config))  # decodes every checkpoint
        assert history[-1].metadata["source"] == "input"
        # One unbroken chain, oldest to newest: every parent is the one before, no branch.
        chain = list(reversed(history))
        for older, newer in itertools.pairwise(chain):
            assert newer.parent_config is not None
            parent = newer.parent_config["configurable"]["checkpoint_id"]
            assert parent == older.config["configurable"]["checkpoint_id"]
            assert newer.metadata["step"] == older.metadata["step"] + 1
        # Each committed step appears once: the log has no duplicate entries.
        log = list(state.values["log"])
        assert len(log) == len(set(log))


def test_sigkill_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    rng = random.Random(1234)
    kills = _kill_and_resume([url, "crash"], KILLS, rng)
    assert kills > KILLS // 2, "most kills should land before the run completes"
    _check(url, "crash", {})


@pytest.fixture
def pg_schema() -> Iterator[tuple[str, str]]:
    url = postgres_url_or_skip()
    schema = f"crash_{uuid.uuid4().hex[:10]}"
    yield url, schema
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.mark.postgres
def test_sigkill_postgres(pg_schema: tuple[str, str]) -> None:
    url, schema = pg_schema
    rng = random.Random(4321)
    kills = _kill_and_resume([url, "crash", schema], KILLS, rng)
    assert kills > KILLS // 2, "most kills should land before the run completes"
    _check(url, "crash", {"schema": schema})
