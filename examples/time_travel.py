"""Time travel: rerun from an older checkpoint; the new run becomes a branch of the history."""

from __future__ import annotations

import operator
import random
from typing import Annotated, TypedDict

from threadline.checkpoint.memory import MemorySaver
from threadline.graph import END, START, StateGraph


class State(TypedDict):
    jokes: Annotated[list[str], operator.add]
    topic: str


def pick_topic(state: State) -> dict[str, object]:
    return {"topic": state.get("topic") or "ducks"}


def tell_joke(state: State) -> dict[str, object]:
    return {"jokes": [f"a joke about {state['topic']} #{random.randint(1, 999)}"]}


def main() -> None:
    builder = StateGraph(State)
    builder.add_sequence([pick_topic, tell_joke])
    builder.add_edge(START, "pick_topic")
    builder.add_edge("tell_joke", END)
    app = builder.compile(checkpointer=MemorySaver())
    config = {"configurable": {"thread_id": "jokes"}}
    first = app.invoke({"jokes": []}, config)
    print("first run:", first["jokes"])

    # The checkpoint taken right before tell_joke ran:
    before_joke = next(s for s in app.get_state_history(config) if s.next == ("tell_joke",))
    replay = app.invoke(None, before_joke.config)
    print("replayed from there:", replay["jokes"])

    latest = app.get_state(config)
    assert latest.parent_config is not None
    print("the new branch's parent is", before_joke.config["configurable"]["checkpoint_id"])
    print(
        "history now has", len(list(app.get_state_history(config))), "checkpoints (both branches)"
    )


if __name__ == "__main__":
    main()
