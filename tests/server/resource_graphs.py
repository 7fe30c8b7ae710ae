"""Graphs for the assistants tests: subgraphs two levels deep, and typed schemas."""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Annotated, Any, TypedDict

from pydantic import BaseModel

from threadline.config import get_config
from threadline.graph import END, START, StateGraph
from threadline.runtime import get_runtime


class Inner(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


def leaf(state: Inner) -> dict[str, Any]:
    return {"log": ["leaf"]}


deepest = StateGraph(Inner)
deepest.add_node("leaf", leaf)
deepest.add_edge(START, "leaf")
deepest.add_edge("leaf", END)

middle = StateGraph(Inner)
middle.add_node("deep", deepest.compile())
middle.add_edge(START, "deep")
middle.add_edge("deep", END)

outer = StateGraph(Inner)
outer.add_node("middle", middle.compile())
outer.add_node("last", lambda state: {"log": ["last"]})
outer.add_edge(START, "middle")
outer.add_edge("middle", "last")
outer.add_edge("last", END)
nested_graph = outer.compile()


class Question(BaseModel):
    question: str


class Answer(BaseModel):
    answer: str = ""


class Session(BaseModel):
    question: str
    answer: str = ""
    turns: Annotated[list[str], operator.add] = []


@dataclass
class Settings:
    model: str
    temperature: float = 0.0


def respond(state: Session) -> dict[str, Any]:
    return {"answer": f"re: {state.question}", "turns": [state.question]}


typed = StateGraph(Session, Settings, input_schema=Question, output_schema=Answer)
typed.add_node("respond", respond)
typed.add_edge(START, "respond")
typed.add_edge("respond", END)
typed_graph = typed.compile()


class Probe(TypedDict, total=False):
    seen: dict[str, Any]


def look(state: Probe) -> dict[str, Any]:
    configurable = get_config()["configurable"]
    return {
        "seen": {
            "who": configurable.get("who"),
            "mood": configurable.get("mood"),
            "context": get_runtime().context,
            "assistant_id": configurable.get("assistant_id"),
        }
    }


probe = StateGraph(Probe)
probe.add_node("look", look)
probe.add_edge(START, "look")
probe.add_edge("look", END)
probe_graph = probe.compile()
