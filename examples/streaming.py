"""Streaming: values, updates, checkpoints, or several modes at once."""

from __future__ import annotations

import operator
from typing import Annotated, TypedDict

from threadline.checkpoint.memory import MemorySaver
from threadline.graph import END, START, StateGraph


class State(TypedDict):
    words: Annotated[list[str], operator.add]


def hello(state: State) -> dict[str, object]:
    return {"words": ["hello"]}


def world(state: State) -> dict[str, object]:
    return {"words": ["world"]}


def main() -> None:
    builder = StateGraph(State)
    builder.add_sequence([hello, world])
    builder.add_edge(START, "hello")
    builder.add_edge("world", END)
    app = builder.compile(checkpointer=MemorySaver())

    print("updates (the default):")
    for chunk in app.stream({"words": []}, {"configurable": {"thread_id": "s1"}}):
        print("  ", chunk)
    print("values:")
    for chunk in app.stream(
        {"words": []}, {"configurable": {"thread_id": "s2"}}, stream_mode="values"
    ):
        print("  ", chunk)
    print("updates + checkpoints:")
    config = {"configurable": {"thread_id": "s3"}}
    for mode, chunk in app.stream({"words": []}, config, stream_mode=["updates", "checkpoints"]):
        if mode == "checkpoints":
            print("   checkpoint", chunk["metadata"]["step"], "next:", chunk["next"])
        else:
            print("  ", mode, chunk)


if __name__ == "__main__":
    main()
