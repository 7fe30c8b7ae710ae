"""A create_react_agent on a durable checkpointer outlives a SIGKILL between a tool call and its
result: a new process resumes the thread, and no tool that had finished is called again.

The agent runs in fresh subprocesses (SQLite file, or PostgreSQL). Every tool call appends a line
to a log file (its side effect), so the test counts calls across processes. Turn 1 completes in
one process. In turn 2 the model asks for two tools at once (version="v2": one task each);
``charge`` finishes (its result is saved as the step's pending write) while ``lookup`` blocks
and the process is killed. A new process continues the thread: ``lookup`` runs again (it never
returned), ``charge`` does not, and the conversation has one answer per tool call.
"""

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

import pytest
from backends import postgres_url_or_skip

pytest.importorskip("langchain_core")

ROOT = Path(__file__).resolve().parent.parent

AGENT = textwrap.dedent(
    """
    import asyncio
    import json
    import os
    import sys
    import time

    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
    from langchain_core.outputs import ChatGeneration, ChatResult
    from langchain_core.tools import tool

    from threadline.checkpoint import from_url
    from threadline.prebuilt import create_react_agent


    class Scripted(FakeMessagesListChatModel):
        # Answers from the conversation, not from a call counter: a new process gives the
        # same answer to the same conversation.
        def bind_tools(self, tools, **kwargs):
            return self

        def _generate(self, messages, stop=None, run_manager=None, **kwargs):
            turn = sum(isinstance(m, HumanMessage) for m in messages)
            if isinstance(messages[-1], ToolMessage):
                done = [m.content for m in messages if isinstance(m, ToolMessage)]
                reply = AIMessage(f"turn {turn} done: {', '.join(done)}", id=f"final-{turn}")
            elif turn == 1:
                reply = AIMessage("", id="ask-1", tool_calls=[
                    {"name": "charge", "args": {"amount": 5}, "id": "t1-charge"},
                ])
            else:
                reply = AIMessage("", id=f"ask-{turn}", tool_calls=[
                    {"name": "charge", "args": {"amount": 7}, "id": f"t{turn}-charge"},
                    {"name": "lookup", "args": {"q": "fee"}, "id": f"t{turn}-lookup"},
                ])
            return ChatResult(generations=[ChatGeneration(message=reply)])


    def record(line):
        with open(os.environ["TL_LOG"], "a") as f:
            f.write(line + "\\n")


    @tool
    def charge(amount: int) -> str:
        \"\"\"Charges the card (a side effect that must happen once).\"\"\"
        record(f"charge:{amount}")
        return f"charged {amount}"


    @tool
    def lookup(q: str) -> str:
        \"\"\"Looks something up.\"\"\"
        record(f"lookup:{q}")
        if os.environ.get("TL_BLOCK") == "lookup":
            time.sleep(1.5)  # charge finishes and its result is saved meanwhile
            print("BLOCKED", flush=True)
            time.sleep(120)
        return f"found {q}"


    say = None if sys.argv[1] == "continue" else sys.argv[1]
    config = {"configurable": {"thread_id": os.environ["TL_THREAD"]}}
    options = {"schema": os.environ["TL_SCHEMA"]} if os.environ.get("TL_SCHEMA") else {}
    inp = None if say is None else {"messages": [HumanMessage(say, id=f"human-{say}")]}


    def report(values):
        msgs = values["messages"]
        print("RESULT " + json.dumps([[type(m).__name__, m.content] for m in msgs]), flush=True)


    if os.environ.get("TL_AIO") == "1":
        async def main():
            async with from_url(os.environ["TL_URL"], aio=True, **options) as saver:
                agent = create_react_agent(Scripted(responses=[]), [charge, lookup],
                                           checkpointer=saver)
                report(await agent.ainvoke(inp, config))
        asyncio.run(main())
    else:
        with from_url(os.environ["TL_URL"], **options) as saver:
            agent = create_react_agent(Scripted(responses=[]), [charge, lookup],
                                       checkpointer=saver)
            report(agent.invoke(inp, config))
    """
)


class Agent:
    def __init__(self, tmp_path: Path, url: str, schema: str | None, aio: bool) -> None:
        self.script = tmp_path / "agent.py"
        self.script.write_text(AGENT)
        self.log = tmp_path / "calls.log"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "TL_URL": url,
            "TL_SCHEMA": schema or "",
            "TL_LOG": str(self.log),
            "TL_THREAD": f"agent-{uuid.uuid4().hex[:8]}",
            "TL_AIO": "1" if aio else "0",
        }

    def calls(self) -> Counter[str]:
        return Counter(self.log.read_text().split()) if self.log.exists() else Counter()

    def popen(self, say: str, **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, str(self.script), say],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**self.env, **env},
        )

    def run(self, say: str) -> list[list[str]]:
        proc = self.popen(say)
        out, err = proc.communicate(timeout=90)
        assert proc.returncode == 0, f"agent failed ({proc.returncode}):\n{out}\n{err}"
        lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
        assert len(lines) == 1, out
        result: list[list[str]] = json.loads(lines[0][len("RESULT ") :])
        return result

    def kill_when_blocked(self, say: str) -> None:
        proc = self.popen(say, TL_BLOCK="lookup")
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                if line.strip() == "BLOCKED":
                    break
            else:
                proc.wait(timeout=30)
                raise AssertionError(f"the agent never blocked:\n{proc.stderr.read()}")  # type: ignore[union-attr]
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
        pytest.param(("sqlite", False), id="sqlite"),
        pytest.param(("sqlite", True), id="aiosqlite"),
        pytest.param(("postgres", False), id="postgres", marks=pytest.mark.postgres),
        pytest.param(("postgres", True), id="postgres-async", marks=pytest.mark.postgres),
    ]
)
def agent(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Agent]:
    kind, aio = request.param
    if kind == "sqlite":
        yield Agent(tmp_path, f"sqlite:///{tmp_path / 'agent.db'}", None, aio)
        return
    url = postgres_url_or_skip()
    schema = f"tl_agent_{uuid.uuid4().hex[:12]}"
    try:
        yield Agent(tmp_path, url, schema, aio)
    finally:
        _drop_schema(url, schema)


def test_agent_killed_between_tool_call_and_result_resumes_without_calling_twice(
    agent: Agent,
) -> None:
    first = agent.run("pay 5")
    assert first[-1] == ["AIMessage", "turn 1 done: charged 5"]
    assert agent.calls() == Counter({"charge:5": 1})

    agent.kill_when_blocked("pay 7")
    assert agent.calls() == Counter({"charge:5": 1, "charge:7": 1, "lookup:fee": 1})

    final = agent.run("continue")
    # lookup never returned before the kill: it runs again; charge had finished: it does not.
    assert agent.calls() == Counter({"charge:5": 1, "charge:7": 1, "lookup:fee": 2})
    assert [kind for kind, _ in final] == [
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "AIMessage",
        "HumanMessage",
        "AIMessage",
        "ToolMessage",
        "ToolMessage",
        "AIMessage",
    ]
    assert final[-1] == ["AIMessage", "turn 2 done: charged 5, charged 7, found fee"]
    tool_results = [content for kind, content in final if kind == "ToolMessage"]
    assert tool_results == ["charged 5", "charged 7", "found fee"]
