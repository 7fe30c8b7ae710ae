"""compile() registers the types a state schema names, so stored values read back without
a register_type() call, in this process and in a fresh one."""

from __future__ import annotations

import dataclasses
import enum
import operator
import os
import subprocess
import sys
import textwrap
from typing import Annotated, Any, Optional, TypedDict, Union

import pydantic
import pytest
from typing_extensions import NotRequired, Required

from threadline.checkpoint.memory import InMemorySaver
from threadline.checkpoint.serde import MsgpackSerializer, TypeRegistry, default_registry
from threadline.checkpoint.typewalk import annotation_types, register_annotation_types
from threadline.errors import SerializationError
from threadline.graph import END, START, StateGraph

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


@dataclasses.dataclass
class Tag:
    label: str
    mood: Mood = Mood.HAPPY


class Address(pydantic.BaseModel):
    city: str
    tags: list[Tag] = []


@dataclasses.dataclass(frozen=True)
class Point:
    x: int


class Profile(TypedDict, total=False):
    home: Address
    seen: NotRequired[set[Point]]


class Unnamed(pydantic.BaseModel):  # referenced by no schema
    a: int = 1


class State(TypedDict):
    messages: Annotated[list[Any], operator.add]
    profile: Required[Optional[Profile]]  # noqa: UP045 - the typing form, on purpose
    tags: dict[str, tuple[Tag, ...]]
    anything: Any


def test_walker_finds_types_through_every_typing_form() -> None:
    found = annotation_types(State)
    assert set(found) == {Tag, Mood, Address, Point}
    union = Union[int, Annotated[list[Optional[Point]], "meta"]]  # noqa: UP007, UP045
    assert annotation_types(union) == [Point]
    assert annotation_types(Any) == []


def test_walker_handles_recursive_and_unresolved_annotations() -> None:
    @dataclasses.dataclass
    class Tree:
        children: list[Tree]
        missing: Unknown  # type: ignore[name-defined]  # noqa: F821

    assert annotation_types(Tree) == [Tree]


def test_register_annotation_types_into_a_registry() -> None:
    reg = TypeRegistry()
    assert set(register_annotation_types(list[Address], reg)) == {Address, Tag, Mood}
    assert Address in reg and Point not in reg


def build(saver: InMemorySaver, value: Any) -> Any:
    def node(state: State) -> dict[str, Any]:
        return {"anything": value}

    g = StateGraph(State)
    g.add_node("node", node)
    g.add_edge(START, "node")
    g.add_edge("node", END)
    return g.compile(checkpointer=saver)


def test_compile_registers_the_schema_types() -> None:
    saver = InMemorySaver(serde=MsgpackSerializer(registry=TypeRegistry()))
    app = build(saver, None)
    assert Address in saver.serde.registry and Tag in default_registry  # type: ignore[attr-defined]
    state = {
        "messages": [],
        "profile": {"home": Address(city="x", tags=[Tag("t")]), "seen": {Point(1)}},
        "tags": {"a": (Tag("b", Mood.SAD),)},
    }
    config = {"configurable": {"thread_id": "t"}}
    app.invoke(state, config)
    saver._cache.clear()  # a cold read decodes the stored bytes
    got = app.get_state(config).values
    assert got["profile"] == state["profile"] and got["tags"] == state["tags"]


def test_a_value_of_an_unnamed_type_fails_at_save_naming_key_and_type() -> None:
    saver = InMemorySaver()
    app = build(saver, [Unnamed()])
    with pytest.raises(SerializationError) as info:
        app.invoke(
            {"messages": [], "profile": None, "tags": {}}, {"configurable": {"thread_id": "u"}}
        )
    message = str(info.value)
    assert "anything" in message and "Unnamed" in message and "register_type" in message


def test_a_fresh_process_that_builds_the_graph_reads_its_values(tmp_path: Any) -> None:
    module = tmp_path / "app_mod.py"
    module.write_text(
        textwrap.dedent(
            """
            import dataclasses, sys
            from typing import Optional, TypedDict
            from threadline.checkpoint.sqlite import SqliteSaver
            from threadline.graph import END, START, StateGraph

            @dataclasses.dataclass
            class Item:
                name: str

            class S(TypedDict, total=False):
                item: Optional[Item]
                items: list[Item]

            def node(state):
                return {"items": [Item("b")]}

            def app(saver):
                g = StateGraph(S)
                g.add_node("n", node)
                g.add_edge(START, "n")
                g.add_edge("n", END)
                return g.compile(checkpointer=saver)

            if __name__ == "__main__":
                with SqliteSaver.from_conn_string(sys.argv[2]) as saver:
                    config = {"configurable": {"thread_id": "t"}}
                    if sys.argv[1] == "write":
                        app(saver).invoke({"item": Item("a")}, config)
                    else:
                        print(app(saver).get_state(config).values)
            """
        )
    )
    db = str(tmp_path / "t.db")
    env = {**os.environ, "PYTHONPATH": SRC}
    for step in ("write", "read"):
        result = subprocess.run(
            [sys.executable, str(module), step, db],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "{'item': Item(name='a'), 'items': [Item(name='b')]}"
