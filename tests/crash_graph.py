"""The long-running graph the crash tests kill and resume (run as a script by them).

    python tests/crash_graph.py URL THREAD_ID [SCHEMA]

Prints READY once the graph is built, then DONE when the run finished.
"""

from __future__ import annotations

import operator
import random
import sys
import time
from typing import Annotated, Any, TypedDict

from threadline.graph import END, START, StateGraph
from threadline.types import Send

STEPS = 1500


class State(TypedDict):
    n: int
    log: Annotated[list[str], operator.add]


def _pause() -> None:
    time.sleep(random.uniform(0.001, 0.006))  # leave room for a kill inside a step


def tick(state: State) -> dict[str, Any]:
    _pause()
    return {"n": state["n"] + 1, "log": [f"tick{state['n']}"]}


def route(state: State) -> Any:
    if state["n"] >= STEPS:
        return END
    if state["n"] % 5 == 0:  # every fifth step fans out to three parallel tasks
        return [Send("work", {"n": state["n"], "i": i}) for i in range(3)]
    return "tick"


def work(arg: dict[str, int]) -> dict[str, Any]:
    _pause()
    return {"log": [f"work{arg['n']}-{arg['i']}"]}


def build(checkpointer: Any) -> Any:
    builder = StateGraph(State)
    builder.add_node(tick)
    builder.add_node(work)
    builder.add_edge(START, "tick")
    builder.add_conditional_edges("tick", route, ["tick", "work", END])
    builder.add_edge("work", "tick")
    return builder.compile(checkpointer=checkpointer)


INPUT = {"n": 0, "log": []}
CONFIG_LIMIT = {"recursion_limit": 5000}


def main() -> None:
    from threadline.checkpoint import from_url

    url, thread_id = sys.argv[1], sys.argv[2]
    options = {"schema": sys.argv[3]} if len(sys.argv) > 3 else {}
    # A killed run's lease keeps the thread for lease_ttl: short, so each resume goes on soon.
    with from_url(url, lease_ttl=0.3, **options) as saver:
        app = build(saver)
        config = {**CONFIG_LIMIT, "configurable": {"thread_id": thread_id}}
        print("READY", flush=True)
        started = saver.head_id(thread_id) is not None
        app.invoke(None if started else INPUT, config)
        print("DONE", flush=True)


if __name__ == "__main__":
    main()
