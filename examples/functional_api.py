"""Functional API: an @entrypoint workflow whose @task calls run in parallel, pause for a
person, and are not repeated when the workflow resumes."""

from __future__ import annotations

import time

from threadline.checkpoint.memory import MemorySaver
from threadline.func import entrypoint, task
from threadline.types import Command, interrupt

CALLS: list[str] = []


@task
def research(topic: str) -> str:
    CALLS.append(topic)
    time.sleep(0.05)  # a slow call: the three run at the same time
    return f"notes on {topic}"


@task
def review(notes: list[str]) -> str:
    return str(interrupt({"notes": notes, "ask": "which one?"}))


@entrypoint(checkpointer=MemorySaver())
def report(topics: list[str], previous: list[str] | None = None) -> entrypoint.final[str, list]:
    futures = [research(t) for t in topics]
    notes = [f.result() for f in futures]
    choice = review(notes).result()
    history = [*(previous or []), choice]
    return entrypoint.final(value=f"report on {choice}", save=history)


def main() -> None:
    config = {"configurable": {"thread_id": "report-1"}}
    for chunk in report.stream(["otters", "owls", "bats"], config):
        print(chunk)
    print("researched:", CALLS)
    for chunk in report.stream(Command(resume="owls"), config):
        print(chunk)
    print("researched (none again):", CALLS)
    assert sorted(CALLS) == ["bats", "otters", "owls"]  # each researched once
    assert report.get_state(config).values == "report on owls"


if __name__ == "__main__":
    main()
