"""Runtime context and store: ``StateGraph(context_schema=)``, ``invoke(context=)``, a node's
``runtime`` and ``store`` parameters, ``get_runtime()`` and ``get_store()``."""

from __future__ import annotations

import dataclasses
import operator
from typing import Annotated, Any, TypedDict

import pydantic
import pytest
from counting import fresh_config

from threadline.checkpoint.base import BaseCheckpointSaver
from threadline.errors import ThreadlineError
from threadline.graph import END, START, StateGraph
from threadline.runtime import Runtime, get_runtime, get_store
from threadline.types import Command, interrupt


class State(TypedDict, total=False):
    log: Annotated[list[str], operator.add]


@dataclasses.dataclass
class Ctx:
    user: str
    greeting: str = "hello"


class CtxModel(pydantic.BaseModel):
    user: str
    limit: int = 3


class DictStore:
    """A tiny store with the shape nodes use: ``get``/``put`` by namespace and key."""

    def __init__(self) -> None:
        self.data: dict[tuple[tuple[str, ...], str], Any] = {}

    def put(self, namespace: tuple[str, ...], key: str, value: Any) -> None:
        self.data[(namespace, key)] = value

    def get(self, namespace: tuple[str, ...], key: str) -> Any:
        return self.data.get((namespace, key))


def _one_node(fn: Any, **graph: Any) -> StateGraph:
    builder = StateGraph(State, **graph)
    builder.add_node("node", fn)
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    return builder


def test_runtime_parameter_by_name_gets_the_context() -> None:
    def node(state: State, runtime: Runtime[Ctx]) -> dict[str, Any]:
        return {"log": [f"{runtime.context.greeting} {runtime.context.user}"]}

    app = _one_node(node, context_schema=Ctx).compile()
    assert app.invoke({}, context=Ctx(user="ada")) == {"log": ["hello ada"]}


def test_a_dict_context_becomes_the_dataclass_or_model() -> None:
    seen: list[Any] = []

    def node(state: State, runtime: Runtime[Any]) -> None:
        seen.append(runtime.context)

    _one_node(node, context_schema=Ctx).compile().invoke({}, context={"user": "bo"})
    _one_node(node, context_schema=CtxModel).compile().invoke({}, context={"user": "cy"})
    assert seen == [Ctx(user="bo"), CtxModel(user="cy", limit=3)]


def test_a_typeddict_context_stays_a_dict_and_no_context_is_none() -> None:
    class TDCtx(TypedDict):
        value: str

    seen: list[Any] = []

    def node(state: State, runtime: Runtime[TDCtx]) -> None:
        seen.append(runtime.context)

    app = _one_node(node, context_schema=TDCtx).compile()
    app.invoke({}, context={"value": "a"})
    app.invoke({})
    assert seen == [{"value": "a"}, None]


def test_runtime_by_annotation_under_another_name_and_beside_config() -> None:
    seen: list[Any] = []

    def node(state: State, rt: Runtime[Ctx], config: Any) -> None:
        seen.append((rt.context.user, config["configurable"]["thread_id"]))

    from threadline.checkpoint.memory import MemorySaver

    app = _one_node(node, context_schema=Ctx).compile(checkpointer=MemorySaver())
    app.invoke({}, {"configurable": {"thread_id": "t1"}}, context=Ctx(user="di"))
    assert seen == [("di", "t1")]


def test_get_runtime_inside_a_node_and_its_fields() -> None:
    seen: list[Runtime[Any]] = []

    def node(state: State) -> None:
        seen.append(get_runtime(Ctx))

    from threadline.checkpoint.memory import MemorySaver

    app = _one_node(node).compile(checkpointer=MemorySaver())
    config = fresh_config()
    app.invoke({}, config, context=Ctx(user="ed"))
    (runtime,) = seen
    assert runtime.context == Ctx(user="ed")
    assert runtime.store is None and runtime.previous is None
    info = runtime.execution_info
    assert info is not None
    assert info.thread_id == config["configurable"]["thread_id"]
    assert info.task_id and info.checkpoint_id and info.node_attempt == 1
    assert runtime.override(context="other").context == "other"


def test_get_runtime_outside_a_node_is_a_clear_error() -> None:
    with pytest.raises(ThreadlineError, match=r"get_runtime\(\) can only be called inside a node"):
        get_runtime()


def test_runtime_stream_writer_writes_to_the_custom_stream() -> None:
    def node(state: State, runtime: Runtime[None]) -> None:
        runtime.stream_writer({"progress": 1})

    chunks = list(_one_node(node).compile().stream({}, stream_mode="custom"))
    assert chunks == [{"progress": 1}]


def test_node_attempt_counts_retries() -> None:
    from threadline.types import RetryPolicy

    attempts: list[int] = []

    def flaky(state: State, runtime: Runtime[None]) -> None:
        assert runtime.execution_info is not None
        attempts.append(runtime.execution_info.node_attempt)
        if len(attempts) < 3:
            raise ConnectionError("try again")

    builder = StateGraph(State)
    builder.add_node("flaky", flaky, retry_policy=RetryPolicy(initial_interval=0, jitter=False))
    builder.add_edge(START, "flaky")
    builder.compile().invoke({})
    assert attempts == [1, 2, 3]


def test_subgraphs_inherit_the_context_and_the_store() -> None:
    seen: list[Any] = []

    def inner(state: State, runtime: Runtime[Ctx]) -> dict[str, Any]:
        seen.append((runtime.context.user, runtime.store))
        return {"log": ["inner"]}

    child = _one_node(inner).compile()

    def calls_child(state: State) -> Any:
        return child.invoke(state)

    store = DictStore()
    builder = StateGraph(State, context_schema=Ctx)
    builder.add_node("as_node", child)
    builder.add_node("calls_child", calls_child)
    builder.add_edge(START, "as_node")
    builder.add_edge("as_node", "calls_child")
    out = builder.compile(store=store).invoke({}, context={"user": "fay"})
    assert out["log"] == ["inner", "inner", "inner"]
    assert seen == [("fay", store), ("fay", store)]


def test_context_is_per_run_and_never_stored(saver: BaseCheckpointSaver) -> None:
    """A resumed run sees the context it is given, not the one the thread started with."""

    def ask(state: State, runtime: Runtime[Ctx]) -> dict[str, Any]:
        answer = interrupt(f"ok, {runtime.context.user}?")
        return {"log": [f"{runtime.context.user}:{answer}"]}

    app = _one_node(ask, context_schema=Ctx).compile(checkpointer=saver)
    config = fresh_config()
    first = app.invoke({}, config, context=Ctx(user="gil"))
    assert first["__interrupt__"][0].value == "ok, gil?"
    done = app.invoke(Command(resume="yes"), config, context=Ctx(user="hal"))
    assert done["log"] == ["hal:yes"]
    assert app.get_state(config).values == {"log": ["hal:yes"]}


async def test_async_nodes_get_the_runtime_and_get_runtime(asaver: BaseCheckpointSaver) -> None:
    async def node(state: State, runtime: Runtime[Ctx]) -> dict[str, Any]:
        return {"log": [runtime.context.user, get_runtime().context.user]}

    def sync_node(state: State, runtime: Runtime[Ctx]) -> dict[str, Any]:
        return {"log": [f"sync {runtime.context.user}"]}

    builder = StateGraph(State, context_schema=Ctx)
    builder.add_node("node", node)
    builder.add_node("sync_node", sync_node)
    builder.add_edge(START, "node")
    builder.add_edge("node", "sync_node")
    app = builder.compile(checkpointer=asaver)
    out = await app.ainvoke({}, fresh_config(), context={"user": "ivy"})
    assert out == {"log": ["ivy", "ivy", "sync ivy"]}
    chunks = [c async for c in app.astream({}, fresh_config(), context=Ctx(user="jo"))]
    assert chunks == [{"node": {"log": ["jo", "jo"]}}, {"sync_node": {"log": ["sync jo"]}}]


# ---------------------------------------------------------------------- store


def test_store_reaches_nodes_by_parameter_runtime_and_get_store() -> None:
    store = DictStore()
    store.put(("users",), "ada", {"name": "Ada"})

    def by_param(state: State, store: Any) -> dict[str, Any]:
        return {"log": [store.get(("users",), "ada")["name"]]}

    def by_runtime(state: State, runtime: Runtime[None]) -> dict[str, Any]:
        runtime.store.put(("seen",), "runtime", True)
        return {"log": ["runtime"]}

    def by_function(state: State) -> dict[str, Any]:
        get_store().put(("seen",), "get_store", True)
        return {"log": ["get_store"]}

    builder = StateGraph(State)
    builder.add_sequence([by_param, by_runtime, by_function])
    builder.add_edge(START, "by_param")
    out = builder.compile(store=store).invoke({})
    assert out == {"log": ["Ada", "runtime", "get_store"]}
    assert store.get(("seen",), "runtime") and store.get(("seen",), "get_store")


def test_asking_for_a_store_without_one_is_a_clear_error() -> None:
    def needs_store(state: State, store: Any) -> None:
        return None

    with pytest.raises(ThreadlineError, match="compiled without a store"):
        _one_node(needs_store).compile().invoke({})

    def uses_get_store(state: State) -> None:
        get_store()

    with pytest.raises(ThreadlineError, match="compiled without a store"):
        _one_node(uses_get_store).compile().invoke({})


def test_an_optional_store_parameter_gets_none() -> None:
    seen: list[Any] = []

    def optional(state: State, store: DictStore | None = None) -> None:
        seen.append(store)

    def runtime_store(state: State, runtime: Runtime[None]) -> None:
        seen.append(runtime.store)

    builder = StateGraph(State)
    builder.add_sequence([optional, runtime_store])
    builder.add_edge(START, "optional")
    builder.compile().invoke({})
    assert seen == [None, None]


async def test_async_store_parameter(asaver: BaseCheckpointSaver) -> None:
    store = DictStore()

    async def remember(state: State, *, store: Any) -> dict[str, Any]:
        store.put(("mem",), "k", len(state.get("log", [])))
        return {"log": ["remembered"]}

    app = _one_node(remember).compile(checkpointer=asaver, store=store)
    config = fresh_config()
    await app.ainvoke({}, config)
    await app.ainvoke({}, config)
    assert store.get(("mem",), "k") == 1


def test_runtime_merge_override_and_drain_requests() -> None:
    from threadline.runtime import RunControl, ServerInfo

    store = DictStore()
    base: Runtime[str] = Runtime(context="parent", store=store)
    merged = base.merge(Runtime(context="child"))
    assert (merged.context, merged.store) == ("child", store)
    control = RunControl()
    runtime = merged.override(
        control=control, server_info=ServerInfo(assistant_id="a", graph_id="g")
    )
    assert not runtime.drain_requested and runtime.drain_reason is None
    control.request_drain("deploy")
    assert runtime.drain_requested and runtime.drain_reason == "deploy"
    assert runtime.server_info is not None and runtime.server_info.graph_id == "g"
    with pytest.raises(RuntimeError, match="execution_info"):
        base.patch_execution_info(node_attempt=2)
