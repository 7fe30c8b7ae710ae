"""State schemas written with ``typing_extensions``: TypedDict, Required, NotRequired, ReadOnly.

LangGraph's documentation declares states with ``typing_extensions.TypedDict``; on Python
3.10/3.11 ``typing.is_typeddict`` does not recognise those classes, so the schema module must.
"""

from __future__ import annotations

import operator
import typing
from typing import Annotated, Any

import pytest
import typing_extensions
from typing_extensions import NotRequired, ReadOnly, Required

from threadline.errors import InvalidUpdateError
from threadline.graph import END, START, StateGraph
from threadline.graph.schema import StateSchema


class ExtState(typing_extensions.TypedDict):
    log: Annotated[list[str], operator.add]
    last: str


class Qualified(typing_extensions.TypedDict, total=False):
    log: Required[Annotated[list[str], operator.add]]
    note: NotRequired[str]
    frozen: ReadOnly[Annotated[list[str], operator.add]]


class Child(ExtState):
    extra: NotRequired[int]


class StdQualified(typing.TypedDict):
    log: typing.Required[Annotated[list[str], operator.add]]
    note: typing.NotRequired[str]


def _run(schema: Any, update: dict[str, Any], inputs: dict[str, Any]) -> dict[str, Any]:
    builder = StateGraph(schema)
    builder.add_node("step", lambda state: update)
    builder.add_edge(START, "step")
    builder.add_edge("step", END)
    result: dict[str, Any] = builder.compile().invoke(inputs)
    return result


def test_typing_extensions_typeddict_is_a_state() -> None:
    assert StateSchema(ExtState).kind == "typeddict"
    out = _run(ExtState, {"log": ["b"], "last": "b"}, {"log": ["a"], "last": "a"})
    assert out == {"log": ["a", "b"], "last": "b"}


def test_required_and_notrequired_keep_the_reducer_inside() -> None:
    schema = StateSchema(Qualified)
    assert set(schema.channels) == {"log", "note", "frozen"}
    assert schema.channels["log"].reducer is operator.add
    assert schema.channels["frozen"].reducer is operator.add
    assert schema.channels["note"].reducer is None
    out = _run(Qualified, {"log": ["b"], "note": "n"}, {"log": ["a"]})
    # frozen, never written, reads as its reducer's empty value
    assert out == {"log": ["a", "b"], "note": "n", "frozen": []}


def test_standard_library_qualifiers_too() -> None:
    schema = StateSchema(StdQualified)
    assert schema.channels["log"].reducer is operator.add
    assert _run(StdQualified, {"log": ["y"]}, {"log": ["x"]}) == {"log": ["x", "y"]}


def test_inherited_typing_extensions_typeddict() -> None:
    schema = StateSchema(Child)
    assert set(schema.channels) == {"log", "last", "extra"}
    assert schema.channels["log"].reducer is operator.add
    out = _run(Child, {"log": ["b"], "extra": 1}, {"log": ["a"], "last": "a"})
    assert out == {"log": ["a", "b"], "last": "a", "extra": 1}


def test_unknown_key_is_still_refused() -> None:
    with pytest.raises(InvalidUpdateError, match="not in the state schema"):
        _run(ExtState, {"nope": 1}, {"log": [], "last": ""})
