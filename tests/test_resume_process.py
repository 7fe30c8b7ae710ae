"""A pause outlives its process: one subprocess runs until it pauses (or is killed with
SIGKILL), then a new subprocess resumes the same thread from a durable checkpointer (a SQLite
file, or PostgreSQL) and finishes it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backends import postgres_url_or_skip

ROOT = Path(__file__).resolve().parent.parent

# The graphs both processes import. Each node execution appends a line to $TL_LOG, so the
# test can count executions across processes; $TL_BLOCK names a node (or Send item) that
# prints BLOCKED and sleeps, for the test to kill the process there.
FLOWS = textwrap.dedent(
    """
    from __future__ import annotations

    import operator
    import os
    import sys
    import time
    from typing import Annotated, Any, Literal, TypedDict

    from threadline.graph import END, START, StateGraph
    from threadline.types import Command, Send, interrupt


    class State(TypedDict, total=False):
        topic: str
        draft: str
        log: Annotated[list[str], operator.add]
        items: list[str]
        results: Annotated[list[str], operator.add]


    def ran(name: str) -> None:
        with open(os.environ["TL_LOG"], "a") as f:
            f.write(name + "\\n")
        if os.environ.get("TL_BLOCK") == name:
            time.sleep(float(os.environ.get("TL_BLOCK_DELAY") or 0))
            print("BLOCKED", flush=True)
            time.sleep(120)


    def write(state: State) -> dict[str, Any]:
        ran("write")
        return {"draft": f"about {state['topic']}", "log": ["write"]}


    def review(state: State) -> dict[str, Any]:
        ran("review")
        decision = interrupt({"draft": state["draft"]})
        ran("review:answered")
        if decision == "approve":
            return {"log": ["approved"]}
        return {"draft": decision, "log": ["edited"]}


    def second_opinion(state: State) -> dict[str, Any]:
        ran("second_opinion")
        return {"log": [f"second:{interrupt('and you?')}"]}


    def publish(state: State) -> dict[str, Any]:
        ran("publish")
        return {"log": [f"published {state['draft']}"]}


    def approval(saver: Any) -> Any:
        builder = StateGraph(State)
        builder.add_sequence([write, review, second_opinion, publish])
        builder.add_edge(START, "write")
        builder.add_edge("publish", END)
        return builder.compile(checkpointer=saver)


    def plan(state: State) -> Command[Literal["work"]]:
        ran("plan")
        return Command(goto=[Send("work", item) for item in state["items"]])


    def work(item: str) -> dict[str, Any]:
        ran(f"work:{item}")
        return {"results": [item.upper()]}


    def gather(state: State) -> dict[str, Any]:
        ran("gather")
        return {"log": [",".join(state["results"])]}


    def sends(saver: Any) -> Any:
        builder = StateGraph(State)
        builder.add_node(plan)
        builder.add_node("work", work)
        builder.add_node(gather)
        builder.add_edge(START, "plan")
        builder.add_edge("work", "gather")
        return builder.compile(checkpointer=saver)


    def inner_a(state: State) -> dict[str, Any]:
        ran("inner_a")
        return {"log": ["inner_a"]}


    def inner_b(state: State) -> dict[str, Any]:
        ran("inner_b")
        return {"log": ["inner_b"]}


    def inner_ask(state: State) -> dict[str, Any]:
        ran("inner_ask")
        return {"log": [f"asked:{interrupt('inner?')}"]}


    def before(state: State) -> dict[str, Any]:
        ran("before")
        return {"log": ["before"]}


    def subgraph(saver: Any) -> Any:
        inner = StateGraph(State)
        inner.add_sequence([inner_a, inner_b, inner_ask])
        inner.add_edge(START, "inner_a")
        outer = StateGraph(State)
        outer.add_node(before)
        outer.add_node("sub", inner.compile())
        outer.add_edge(START, "before")
        outer.add_edge("before", "sub")
        outer.add_edge("sub", END)
        return outer.compile(checkpointer=saver)


    GRAPHS = {"approval": approval, "sends": sends, "subgraph": subgraph}
    """
)

# python driver.py GRAPH ACTION [JSON_ARG]; ACTION: start (JSON_ARG = input), resume
# (JSON_ARG = answer; {"ids": [...]} answers every pending interrupt by id) or continue.
DRIVER = textwrap.dedent(
    """
    import asyncio
    import json
    import os
    import sys
    import time

    from threadline.checkpoint import from_url
    from threadline.types import Command

    import flows

    graph, action = sys.argv[1], sys.argv[2]
    arg = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    options = {"schema": os.environ["TL_SCHEMA"]} if os.environ.get("TL_SCHEMA") else {}
    config = {"configurable": {"thread_id": os.environ["TL_THREAD"]}}
    aio = os.environ.get("TL_AIO") == "1"


    def command(app, state):
        if action == "start":
            return arg
        if action == "continue":
            return None
        if arg == "BY_ID":
            return Command(resume={i.id: i.value for i in state.interrupts})
        return Command(resume=arg)


    def report(result, state):
        print("RESULT " + json.dumps({
            "values": {k: v for k, v in result.items() if k != "__interrupt__"},
            "interrupts": [i.value for i in result.get("__interrupt__", [])],
            "next": list(state.next),
            "pid": os.getpid(),
        }, default=repr), flush=True)


    def run_sync():
        with from_url(os.environ["TL_URL"], **options) as saver:
            app = flows.GRAPHS[graph](saver)
            result = app.invoke(command(app, app.get_state(config)), config)
            report(result, app.get_state(config))


    async def run_async():
        async with from_url(os.environ["TL_URL"], aio=True, **options) as saver:
            app = flows.GRAPHS[graph](saver)
            result = await app.ainvoke(command(app, await app.aget_state(config)), config)
            report(result, await app.aget_state(config))


    asyncio.run(run_async()) if aio else run_sync()
    if os.environ.get("TL_SLEEP_AFTER"):
        print("PAUSED", flush=True)
        time.sleep(120)
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

    def popen(self, graph: str, action: str, arg: Any = None, **env: str) -> subprocess.Popen[str]:
        args = [sys.executable, str(self.dir / "driver.py"), graph, action]
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

    def run(self, graph: str, action: str, arg: Any = None, **env: str) -> dict[str, Any]:
        proc = self.popen(graph, action, arg, **env)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, f"driver failed ({proc.returncode}):\n{out}\n{err}"
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert len(lines) == 1, out
        result: dict[str, Any] = json.loads(lines[0][len("RESULT ") :])
        assert result["pid"] != os.getpid()
        return result

    def run_until(self, marker: str, graph: str, action: str, arg: Any = None, **env: str) -> str:
        """Start the driver, wait for ``marker`` on its stdout, then SIGKILL it."""
        proc = self.popen(graph, action, arg, **env)
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
        return "".join(seen)


def _postgres_schema_dropper(url: str, schema: str) -> None:
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
    schema = f"tl_resume_{uuid.uuid4().hex[:12]}"
    try:
        yield Flows(tmp_path, url, schema)
    finally:
        _postgres_schema_dropper(url, schema)


# ---------------------------------------------------------------------- pause, exit, resume


@pytest.mark.parametrize("resume_aio", [False, True], ids=["sync", "async"])
def test_resume_in_a_new_process(flows: Flows, resume_aio: bool) -> None:
    first = flows.run("approval", "start", {"topic": "otters", "log": []})
    assert first["interrupts"] == [{"draft": "about otters"}]
    assert first["next"] == ["review"]
    assert first["values"]["log"] == ["write"]

    aio = {"TL_AIO": "1"} if resume_aio else {}
    second = flows.run("approval", "resume", "Eleven facts", **aio)
    assert second["interrupts"] == ["and you?"]
    assert second["next"] == ["second_opinion"]
    assert second["pid"] != first["pid"]

    third = flows.run("approval", "resume", "fine", **aio)
    assert third["interrupts"] == []
    assert third["next"] == []
    assert third["values"] == {
        "topic": "otters",
        "draft": "Eleven facts",
        "log": ["write", "edited", "second:fine", "published Eleven facts"],
        "results": [],  # a reducer key never written reads as its empty value
    }
    runs = flows.executions()
    assert runs["write"] == 1
    assert (runs["review"], runs["review:answered"]) == (2, 1)
    assert (runs["second_opinion"], runs["publish"]) == (2, 1)


def test_resume_after_sigkill_of_the_paused_process(flows: Flows) -> None:
    out = flows.run_until(
        "PAUSED", "approval", "start", {"topic": "owls", "log": []}, TL_SLEEP_AFTER="1"
    )
    assert '"interrupts": [{"draft": "about owls"}]' in out
    result = flows.run("approval", "resume", "approve")
    assert result["interrupts"] == ["and you?"]
    out = flows.run_until("PAUSED", "approval", "resume", "ok", TL_SLEEP_AFTER="1")
    assert '"next": []' in out
    final = flows.run("approval", "continue")  # nothing left to do: the state is final
    assert final["values"]["log"] == ["write", "approved", "second:ok", "published about owls"]
    runs = flows.executions()
    assert (runs["write"], runs["review:answered"], runs["publish"]) == (1, 1, 1)


def test_sigkill_inside_the_resumed_node(flows: Flows) -> None:
    flows.run("approval", "start", {"topic": "cats", "log": []})
    # Killed while the answered node runs again: the answer is stored with the pause, so the
    # next process answers it the same way without being asked.
    flows.run_until("BLOCKED", "approval", "resume", "approve", TL_BLOCK="review:answered")
    result = flows.run("approval", "continue")
    assert result["interrupts"] == ["and you?"]
    assert result["values"]["log"] == ["write", "approved"]
    final = flows.run("approval", "resume", "sure")
    assert final["values"]["log"][-1] == "published about cats"
    assert flows.executions()["write"] == 1


# ---------------------------------------------------------------------- Sends across a crash


def test_sigkill_during_a_send_step_runs_each_send_once(flows: Flows) -> None:
    items = ["a", "b", "c", "d"]
    # c blocks (after giving its siblings time to finish and be saved) and is killed.
    flows.run_until(
        "BLOCKED", "sends", "start", {"items": items}, TL_BLOCK="work:c", TL_BLOCK_DELAY="1.5"
    )
    before = flows.executions()
    assert [before[f"work:{i}"] for i in items] == [1, 1, 1, 1]

    result = flows.run("sends", "continue")
    assert result["values"]["results"] == ["A", "B", "C", "D"]
    assert result["values"]["log"] == ["A,B,C,D"]
    runs = flows.executions()
    assert runs["plan"] == 1
    # Finished before the kill (stored as pending writes): not rerun. c was killed: reruns.
    assert [runs[f"work:{i}"] for i in items] == [1, 1, 2, 1]
    assert runs["gather"] == 1


def test_sigkill_before_the_send_step_loses_no_send(flows: Flows) -> None:
    flows.run_until("BLOCKED", "sends", "start", {"items": ["x", "y"]}, TL_BLOCK="plan")
    # Killed inside plan: nothing after the input checkpoint was saved; plan reruns.
    result = flows.run("sends", "continue")
    assert result["values"]["results"] == ["X", "Y"]
    runs = flows.executions()
    assert (runs["plan"], runs["work:x"], runs["work:y"], runs["gather"]) == (2, 1, 1, 1)


# ---------------------------------------------------------------------- subgraphs across a crash


def test_subgraph_pause_and_crash_resume_across_processes(flows: Flows) -> None:
    # Killed inside the subgraph's second node: its first node's step was saved.
    flows.run_until("BLOCKED", "subgraph", "start", {"log": []}, TL_BLOCK="inner_b")
    paused = flows.run("subgraph", "continue")
    assert paused["interrupts"] == ["inner?"]
    assert paused["next"] == ["sub"]
    final = flows.run("subgraph", "resume", "yes", TL_AIO="1")
    assert final["values"]["log"] == ["before", "inner_a", "inner_b", "asked:yes"]
    runs = flows.executions()
    assert (runs["before"], runs["inner_a"], runs["inner_b"], runs["inner_ask"]) == (1, 1, 2, 2)
