"""The compiled graph's invoke options and inspection attributes, compared with LangGraph 1.2.

``invoke(..., stream_mode=...)``, a tuple ``stream_mode``, the input and output JSON schemas,
pydantic input errors, ``graph.nodes`` and ``graph.builder``: each test runs the same program
on ``langgraph`` and ``threadline`` and compares what they give.
"""

from __future__ import annotations

import asyncio
import dataclasses
import operator
from types import ModuleType
from typing import Annotated, Any

import pytest
from typing_extensions import TypedDict

import threadline.checkpoint.memory
import threadline.graph
import threadline.types


def _lib(name: str) -> ModuleType:
    if name == "threadline":
        return threadline.graph
    return pytest.importorskip("langgraph.graph")


class State(TypedDict):
    x: int
    log: Annotated[list[str], operator.add]


def _chain(lib: ModuleType, schema: Any = State, **kw: Any) -> Any:
    """START -> a -> b -> END on ``schema``."""

    def a(s: Any) -> dict[str, Any]:
        return {"x": _get(s, "x") + 1, "log": ["a"]}

    def b(s: Any) -> dict[str, Any]:
        return {"x": _get(s, "x") * 2, "log": ["b"]}

    g = lib.StateGraph(schema, **kw)
    g.add_node("a", a)
    g.add_node("b", b)
    g.add_edge(lib.START, "a")
    g.add_edge("a", "b")
    g.add_edge("b", lib.END)
    return g


def _get(s: Any, key: str) -> Any:
    return s[key] if isinstance(s, dict) else getattr(s, key)


INPUT = {"x": 1, "log": []}
MODES: list[Any] = [
    "values",
    "updates",
    ["values"],
    ["updates"],
    ["values", "updates"],
    ["updates", "values"],
    ("values", "updates"),
    ("updates",),
    ("values",),
    "custom",
    ["custom"],
]


# ---------------------------------------------------------------- 1. invoke(stream_mode=...)


@pytest.mark.parametrize("mode", MODES, ids=repr)
def test_invoke_with_stream_mode_returns_what_langgraph_returns(mode: Any) -> None:
    got = {
        name: _chain(_lib(name)).compile().invoke(INPUT, stream_mode=mode)
        for name in ("langgraph", "threadline")
    }
    assert got["threadline"] == got["langgraph"]


@pytest.mark.parametrize("mode", ["values", "updates", ["values", "updates"]], ids=repr)
def test_ainvoke_with_stream_mode_returns_what_langgraph_returns(mode: Any) -> None:
    got = {
        name: asyncio.run(_chain(_lib(name)).compile().ainvoke(INPUT, stream_mode=mode))
        for name in ("langgraph", "threadline")
    }
    assert got["threadline"] == got["langgraph"]


def test_invoke_updates_around_an_interrupt_matches_langgraph() -> None:
    got = {}
    for name in ("langgraph", "threadline"):
        lib = _lib(name)
        types = threadline.types if name == "threadline" else pytest.importorskip("langgraph.types")
        memory = (
            threadline.checkpoint.memory
            if name == "threadline"
            else pytest.importorskip("langgraph.checkpoint.memory")
        )

        def ask(s: Any, types: Any = types) -> dict[str, Any]:
            return {"log": [types.interrupt("ok?")]}

        g = lib.StateGraph(State)
        g.add_node("ask", ask)
        g.add_edge(lib.START, "ask")
        app = g.compile(checkpointer=memory.InMemorySaver())
        config: Any = {"configurable": {"thread_id": "t"}}
        first = app.invoke(INPUT, config, stream_mode="updates")
        resumed = app.invoke(types.Command(resume="yes"), config, stream_mode=["updates"])
        got[name] = (
            [
                {k: (v if k != "__interrupt__" else [i.value for i in v]) for k, v in c.items()}
                for c in first
            ],
            resumed,
        )
    assert got["threadline"] == got["langgraph"]


def test_invoke_with_a_bad_stream_mode_says_how_to_fix_it() -> None:
    app = _chain(threadline.graph).compile()
    with pytest.raises(ValueError, match="unknown stream_mode 'bogus'; choose from values"):
        app.invoke(INPUT, stream_mode="bogus")
    with pytest.raises(TypeError, match="stream_mode must be a mode name"):
        app.invoke(INPUT, stream_mode=5)


# ---------------------------------------------------------------- 2. a tuple stream_mode


@pytest.mark.parametrize("mode", [("values", "updates"), ("updates",), ["values", "updates"]])
def test_stream_with_a_tuple_or_list_of_modes_matches_langgraph(mode: Any) -> None:
    got = {
        name: list(_chain(_lib(name)).compile().stream(INPUT, stream_mode=mode))
        for name in ("langgraph", "threadline")
    }
    assert got["threadline"] == got["langgraph"]


def test_astream_with_a_tuple_of_modes_matches_langgraph() -> None:
    async def collect(app: Any) -> list[Any]:
        return [c async for c in app.astream(INPUT, stream_mode=("values", "updates"))]

    got = {
        name: asyncio.run(collect(_chain(_lib(name)).compile()))
        for name in ("langgraph", "threadline")
    }
    assert got["threadline"] == got["langgraph"]


@pytest.mark.parametrize("mode", ["values", "updates", ["values", "updates"]], ids=repr)
def test_entrypoint_invoke_with_stream_mode_matches_langgraph(mode: Any) -> None:
    got = {}
    for name in ("langgraph", "threadline"):
        func: Any = (
            pytest.importorskip("langgraph.func")
            if name == "langgraph"
            else pytest.importorskip("threadline.func")
        )

        @func.task
        def add_one(x: int) -> int:
            return x + 1

        @func.entrypoint()
        def double(x: int) -> int:
            return int(add_one(x).result()) * 2

        got[name] = double.invoke(3, stream_mode=mode)
    assert got["threadline"] == got["langgraph"]


# ---------------------------------------------------------------- 3. JSON schemas


class Documented(TypedDict):
    """A typed dict state."""

    x: int
    log: Annotated[list[str], operator.add]
    maybe: str | None


class OnlyIn(TypedDict):
    x: int


class OnlyOut(TypedDict):
    log: Annotated[list[str], operator.add]


@dataclasses.dataclass
class DataState:
    x: int
    log: list[str] = dataclasses.field(default_factory=list)


def _pydantic_state() -> Any:
    pydantic = pytest.importorskip("pydantic")

    class Model(pydantic.BaseModel):  # type: ignore[name-defined,misc]
        x: int
        name: str = "n"
        log: list[str] = []
        opt: int | None = None

    return Model


def _schema_cases() -> list[tuple[Any, dict[str, Any]]]:
    return [
        (Documented, {}),
        (DataState, {}),
        (_pydantic_state(), {}),
        (dict, {}),
        (State, {"input_schema": OnlyIn, "output_schema": OnlyOut}),
    ]


@pytest.mark.parametrize("case", range(5))
def test_input_and_output_jsonschema_match_langgraph(case: int) -> None:
    pytest.importorskip("pydantic")
    schema, kw = _schema_cases()[case]
    got = {}
    for name in ("langgraph", "threadline"):
        lib = _lib(name)
        g = lib.StateGraph(schema, **kw)
        g.add_node("a", lambda s: {})
        g.add_edge(lib.START, "a")
        app = g.compile()
        got[name] = (app.get_input_jsonschema(), app.get_output_jsonschema())
    assert got["threadline"] == got["langgraph"]
    assert got["threadline"][0]["type"] == "object"


def test_input_and_output_schema_are_the_declared_types() -> None:
    g = _chain(threadline.graph, State, input_schema=OnlyIn, output_schema=OnlyOut)
    app = g.compile()
    assert (app.input_schema, app.output_schema) == (OnlyIn, OnlyOut)
    plain = _chain(threadline.graph).compile()
    assert (plain.input_schema, plain.output_schema) == (State, State)


# ---------------------------------------------------------------- 5. graph.nodes, graph.builder


def test_nodes_and_builder_match_langgraph() -> None:
    got = {}
    for name in ("langgraph", "threadline"):
        builder = _chain(_lib(name))
        app = builder.compile()
        nodes = app.nodes
        got[name] = (
            list(nodes),
            "a" in nodes,
            nodes["a"].bound.invoke({"x": 5, "log": []}),
            nodes["b"].invoke({"x": 5, "log": []}),
            asyncio.run(nodes["a"].ainvoke({"x": 1, "log": []})),
            nodes["a"].metadata,
            app.builder is builder,
        )
    assert got["threadline"] == got["langgraph"]


def test_a_node_that_takes_config_gets_it_when_invoked_alone() -> None:
    def node(state: State, config: Any) -> dict[str, Any]:
        return {"x": config["configurable"]["k"]}

    g = threadline.graph.StateGraph(State)
    g.add_node("n", node)
    g.add_edge(threadline.graph.START, "n")
    app = g.compile()
    assert app.nodes["n"].invoke({"x": 0}, {"configurable": {"k": 7}}) == {"x": 7}


# ---------------------------------------------------------------- 4. pydantic input errors


@pytest.mark.parametrize("bad", [{"x": "many"}, {"x": 1, "log": "not a list"}])
def test_bad_input_to_a_pydantic_state_raises_pydantic_validation_error(bad: Any) -> None:
    pydantic = pytest.importorskip("pydantic")
    model = _pydantic_state()
    errors = {}
    for name in ("langgraph", "threadline"):
        app = _chain(_lib(name), model).compile()
        with pytest.raises(pydantic.ValidationError) as caught:
            app.invoke(bad)
        errors[name] = [(e["loc"], e["type"]) for e in caught.value.errors()]
    assert errors["threadline"] == errors["langgraph"]


def test_pydantic_input_error_is_also_invalid_update_and_says_how_to_fix() -> None:
    pydantic = pytest.importorskip("pydantic")
    from threadline.errors import InvalidUpdateError

    app = _chain(threadline.graph, _pydantic_state()).compile()
    with pytest.raises(InvalidUpdateError, match=r"field 'x'.*Fix the input") as caught:
        asyncio.run(app.ainvoke({"x": "many"}))
    assert isinstance(caught.value, pydantic.ValidationError)
    assert caught.value.errors()[0]["type"] == "int_parsing"
