"""The server demo: `threadline serve` on SQLite, driven by LangGraph's official SDK.

Run by `make demo`. It starts `threadline serve` on a free port with the graphs of
`examples/server/langgraph.json`, then, as any LangGraph client would: creates a thread, streams
a run until it pauses at an interrupt, resumes it with a `Command`, reads the thread's history,
and stops the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from langgraph_sdk import get_sync_client

HERE = Path(__file__).parent / "server"


def start_server(database: Path) -> tuple[subprocess.Popen[str], str]:
    """``threadline serve`` on port 0; the URL is the line it prints once listening."""
    command = [sys.executable, "-m", "threadline.server", "serve", "--port", "0"]
    command += ["--config", str(HERE / "langgraph.json"), "--database-url", f"sqlite:///{database}"]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        cwd=HERE,
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        if "http://" in line:
            return proc, line[line.index("http://") :].strip()
    raise SystemExit(f"threadline serve exited with {proc.wait()} before listening")


def stop_server(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def drive(url: str) -> dict[str, Any]:
    client = get_sync_client(url=url)
    thread = client.threads.create(metadata={"demo": "approval"})
    thread_id = thread["thread_id"]
    print(f"thread {thread_id}")
    for part in client.runs.stream(
        thread_id, "approval", input={"topic": "otters", "log": []}, stream_mode="updates"
    ):
        print(f"  {part.event}: {part.data}")
    state = client.threads.get_state(thread_id)
    print(f"paused before {state['next']}; thread is {client.threads.get(thread_id)['status']}")
    final = client.runs.wait(thread_id, "approval", command={"resume": "approve"})
    assert isinstance(final, dict)
    print(f"resumed: {final['log']}")
    history = client.threads.get_history(thread_id, limit=20)
    print(f"history: {len(history)} checkpoints, newest first:")
    for snapshot in history:
        print(f"  step {snapshot['metadata'].get('step')}: next={snapshot['next']}")
    return final


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_server(Path(tmp) / "threadline.db")
        print(f"threadline serve is listening on {url}")
        try:
            final = drive(url)
        finally:
            stop_server(proc)
        if final["log"][-1] != "published: Ten facts about otters.":
            raise SystemExit(f"unexpected result: {final}")
    print("server demo done")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
