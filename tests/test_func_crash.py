"""Functional API across a crash: an entrypoint's process is SIGKILLed while a task runs, a new
process continues the thread (SQLite file or PostgreSQL) with ``invoke(None, config)``, and
every task that had finished before the kill is not called again."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backends import postgres_url_or_skip

ROOT = Path(__file__).resolve().parent.parent

# Each task execution appends "start:NAME" and "end:NAME" lines to $TL_LOG (so the test counts
# executions across processes); $TL_BLOCK names a task that prints BLOCKED and sleeps (after
# $TL_BLOCK_DELAY seconds), for the test to kill the process there.
FLOWS = textwrap.dedent(
    """
    from __future__ import annotations

    import asyncio
    import os
    import random
    import time
    from typing import Any

    from threadline.func import entrypoint, task
    from threadline.types import interrupt


    def mark(what: str) -> None:
        with open(os.environ["TL_LOG"], "a") as f:
            f.write(what + "\\n")


    def block(name: str) -> None:
        if os.environ.get("TL_BLOCK") == name:
            time.sleep(float(os.environ.get("TL_BLOCK_DELAY") or 0))
            print("BLOCKED", flush=True)
            time.sleep(120)


    @task
    def step(name: str, value: int) -> int:
        mark(f"start:{name}")
        block(name)
        mark(f"end:{name}")
        return value + 1


    @task
    async def astep(name: str, value: int) -> int:
        mark(f"start:{name}")
        if os.environ.get("TL_BLOCK") == name:
            print("BLOCKED", flush=True)
            await asyncio.sleep(120)
        mark(f"end:{name}")
        return value + 1


    @task
    def tick(i: int) -> int:
        mark(f"start:tick{i}")
        time.sleep(random.uniform(0.001, 0.004))
        mark(f"end:tick{i}")
        return i


    def chain(saver: Any) -> Any:
        @entrypoint(checkpointer=saver)
        def chain(n: int) -> list[int]:
            out, value = [], n
            for i in range(5):
                value = step(f"s{i}", value).result()
                out.append(value)
            return out

        return chain


    def fan(saver: Any) -> Any:
        @entrypoint(checkpointer=saver)
        def fan(n: int) -> list[int]:
            futures = [step(f"p{i}", n * 10 + i) for i in range(4)]
            first = [f.result() for f in futures]
            return first + [step("after", sum(first)).result()]

        return fan


    def achain(saver: Any) -> Any:
        @entrypoint(checkpointer=saver)
        async def achain(n: int) -> list[int]:
            out, value = [], n
            for i in range(4):
                value = await astep(f"a{i}", value)
                out.append(value)
            return out

        return achain


    def ask(saver: Any) -> Any:
        @entrypoint(checkpointer=saver)
        def ask(n: int) -> dict[str, Any]:
            drafted = step("draft", n).result()
            answer = interrupt({"draft": drafted})
            return {"final": step("publish", drafted).result(), "answer": answer}

        return ask


    LONG = 150


    def long(saver: Any) -> Any:
        @entrypoint(checkpointer=saver)
        def long(n: int) -> int:
            return sum(tick(i).result() for i in range(LONG))

        return long


    FLOWS = {"chain": chain, "fan": fan, "achain": achain, "ask": ask, "long": long}
    """
)

# python driver.py FLOW ACTION [JSON_ARG]; ACTION: start (JSON_ARG = input), resume (JSON_ARG =
# answer), continue, or auto (start unless the thread exists, then continue; sync only).
DRIVER = textwrap.dedent(
    """
    import asyncio
    import json
    import os
    import sys

    from threadline.checkpoint import from_url
    from threadline.types import Command

    import flows

    name, action = sys.argv[1], sys.argv[2]
    arg = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    options = {"schema": os.environ["TL_SCHEMA"]} if os.environ.get("TL_SCHEMA") else {}
    config = {"configurable": {"thread_id": os.environ["TL_THREAD"]}}
    value = {"start": arg, "auto": arg, "continue": None, "resume": Command(resume=arg)}[action]


    def report(result):
        if isinstance(result, dict) and "__interrupt__" in result:
            result = {"__interrupt__": [i.value for i in result["__interrupt__"]]}
        print("RESULT " + json.dumps(result), flush=True)


    def run_sync():
        global value
        with from_url(os.environ["TL_URL"], **options) as saver:
            app = flows.FLOWS[name](saver)
            if action == "auto":  # start the thread unless an earlier process did
                value = None if app.get_state(config).created_at else arg
            print("READY", flush=True)
            report(app.invoke(value, config))


    async def run_async():
        async with from_url(os.environ["TL_URL"], aio=True, **options) as saver:
            print("READY", flush=True)
            report(await flows.FLOWS[name](saver).ainvoke(value, config))


    asyncio.run(run_async()) if os.environ.get("TL_AIO") == "1" else run_sync()
    """
)


class Flows:
    """Runs the driver in fresh subprocesses against one durable store and one thread."""

    def __init__(self, tmp_path: Path, url: str, schema: str | None) -> None:
        self.dir = tmp_path
        (tmp_path / "flows.py").write_text(FLOWS)
        (tmp_path / "driver.py").write_text(DRIVER)
        self.log = tmp_path / "executions.log"
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "src")]),
            "TL_URL": url,
            "TL_SCHEMA": schema or "",
            "TL_LOG": str(self.log),
            "TL_THREAD": f"thread-{uuid.uuid4().hex[:8]}",
        }

    def executions(self) -> Counter[str]:
        if not self.log.exists():
            return Counter()
        return Counter(self.log.read_text().split())

    def popen(self, flow: str, action: str, arg: Any = None, **env: str) -> subprocess.Popen[str]:
        args = [sys.executable, str(self.dir / "driver.py"), flow, action]
        if arg is not None:
            args.append(json.dumps(arg))
        return subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**self.env, **env},
            cwd=self.dir,
        )

    def run(self, flow: str, action: str, arg: Any = None, **env: str) -> Any:
        proc = self.popen(flow, action, arg, **env)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{out}\n{err}"
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert len(lines) == 1, out
        return json.loads(lines[0][len("RESULT ") :])

    def run_until(self, marker: str, flow: str, action: str, arg: Any = None, **env: str) -> None:
        """Start the driver, wait for ``marker`` on its stdout, then SIGKILL it."""
        proc = self.popen(flow, action, arg, **env)
        assert proc.stdout is not None
        seen = []
        try:
            for line in proc.stdout:
                seen.append(line)
                if line.strip() == marker:
                    break
            else:
                proc.wait(timeout=30)
                raise AssertionError(
                    f"no {marker} from the driver:\n{''.join(seen)}\n{proc.stderr.read()}"  # type: ignore[union-attr]
                )
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stdout.close()
            if proc.stderr is not None:
                proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL


def _drop_schema(url: str, schema: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
def flows(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Flows]:
    if request.param == "sqlite":
        yield Flows(tmp_path, f"sqlite:///{tmp_path / 'checkpoints.db'}", None)
        return
    url = postgres_url_or_skip()
    schema = f"tl_func_{uuid.uuid4().hex[:12]}"
    try:
        yield Flows(tmp_path, url, schema)
    finally:
        _drop_schema(url, schema)


@pytest.mark.parametrize("aio", [False, True], ids=["sync", "async"])
def test_sigkill_mid_chain_reruns_only_the_killed_task(flows: Flows, aio: bool) -> None:
    env = {"TL_AIO": "1"} if aio else {}
    flows.run_until("BLOCKED", "chain", "start", 0, TL_BLOCK="s2", **env)
    before = flows.executions()
    assert [before[f"end:s{i}"] for i in range(5)] == [1, 1, 0, 0, 0]

    assert flows.run("chain", "continue", **env) == [1, 2, 3, 4, 5]
    runs = flows.executions()
    assert [runs[f"start:s{i}"] for i in range(5)] == [1, 1, 2, 1, 1]
    assert [runs[f"end:s{i}"] for i in range(5)] == [1, 1, 1, 1, 1]


def test_sigkill_of_an_async_entrypoint(flows: Flows) -> None:
    flows.run_until("BLOCKED", "achain", "start", 10, TL_BLOCK="a2", TL_AIO="1")
    assert flows.run("achain", "continue", TL_AIO="1") == [11, 12, 13, 14]
    runs = flows.executions()
    assert [runs[f"start:a{i}"] for i in range(4)] == [1, 1, 2, 1]
    assert [runs[f"end:a{i}"] for i in range(4)] == [1, 1, 1, 1]


def test_sigkill_during_parallel_tasks_keeps_the_finished_ones(flows: Flows) -> None:
    # p2 blocks after giving its siblings time to finish and be saved, and is killed.
    flows.run_until("BLOCKED", "fan", "start", 1, TL_BLOCK="p2", TL_BLOCK_DELAY="1.5")
    before = flows.executions()
    assert [before[f"end:p{i}"] for i in range(4)] == [1, 1, 0, 1]

    assert flows.run("fan", "continue") == [11, 12, 13, 14, 51]
    runs = flows.executions()
    assert [runs[f"start:p{i}"] for i in range(4)] == [1, 1, 2, 1]
    assert runs["end:after"] == 1


def test_sigkill_after_the_interrupt_then_resume_elsewhere(flows: Flows) -> None:
    assert flows.run("ask", "start", 1) == {"__interrupt__": [{"draft": 2}]}
    # Killed while resumed and publishing: the answer and "draft" are saved already.
    flows.run_until("BLOCKED", "ask", "resume", "yes", TL_BLOCK="publish")
    assert flows.run("ask", "continue", TL_AIO="1") == {"final": 3, "answer": "yes"}
    runs = flows.executions()
    assert (runs["end:draft"], runs["start:publish"], runs["end:publish"]) == (1, 2, 1)


@pytest.mark.slow
def test_random_sigkills_lose_at_most_the_running_task(flows: Flows) -> None:
    rng = random.Random(7)
    kills = 0
    while kills < 15:
        proc = flows.popen("long", "auto", 0)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        time.sleep(rng.uniform(0.05, 0.3))
        if proc.poll() is not None:
            break  # finished before the kill
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()
        kills += 1
    assert kills > 0  # the run takes far longer than the first kill's delay
    assert flows.run("long", "auto", 0) == sum(range(150))
    runs = flows.executions()
    assert all(runs[f"end:tick{i}"] >= 1 for i in range(150))
    # Each kill costs at most the task it interrupted (and one whose result was not yet saved).
    assert sum(runs[f"start:tick{i}"] for i in range(150)) <= 150 + 2 * kills
