"""LangGraph's module paths and names, and what they do in threadline.

``test_langgraph_surface.py`` checks that every name exists; this checks the behaviour of the
ones this project defines: constants, config accessors, managed-value markers, error classes,
the extra types, the async savers' ``await setup()``, and ``uuid.UUID`` thread ids.
"""

from __future__ import annotations

import operator
import os
import tempfile
import typing
import uuid
from typing import Annotated, Any

import pytest
from backends import postgres_url_or_skip
from typing_extensions import TypedDict

from threadline import constants, errors, managed, types
from threadline.checkpoint.base import (
    BaseCheckpointSaver,
    CheckpointMetadata,
    EmptyChannelError,
    get_checkpoint_id,
)
from threadline.checkpoint.memory import InMemorySaver, MemorySaver
from threadline.checkpoint.sqlite.aio import AsyncSqliteSaver
from threadline.config import get_config, get_store, get_stream_writer
from threadline.errors import (
    ErrorCode,
    GraphBubbleUp,
    GraphInterrupt,
    NodeInterrupt,
    ParentCommand,
    ThreadlineError,
    create_error_message,
)
from threadline.graph import END, START, StateGraph
from threadline.graph.schema import StateSchema
from threadline.graph.state import CompiledStateGraph
from threadline.graph.state import StateGraph as StateGraphFromState


class Count(TypedDict):
    n: Annotated[int, operator.add]


def _one_node(fn: Any, schema: Any = Count, saver: BaseCheckpointSaver | None = None) -> Any:
    builder = StateGraph(schema)
    builder.add_node("node", fn)
    builder.add_edge(START, "node")
    builder.add_edge("node", END)
    return builder.compile(checkpointer=saver)


# ---------------------------------------------------------------------- paths and constants


def test_paths_name_the_same_objects() -> None:
    assert StateGraphFromState is StateGraph
    assert isinstance(_one_node(lambda s: {"n": 1}), CompiledStateGraph)
    assert constants.START == START == "__start__" and constants.END == END == "__end__"
    assert MemorySaver is InMemorySaver


def test_constant_values_match_langgraph() -> None:
    assert constants.TAG_NOSTREAM == "nostream"
    assert constants.TAG_HIDDEN == "langsmith:hidden"
    assert constants.CONF == "configurable"
    lg = pytest.importorskip("langgraph.constants")
    for name in lg.__all__:
        assert getattr(constants, name) == getattr(lg, name), name


# ---------------------------------------------------------------------- config accessors


def test_config_accessors_inside_a_node() -> None:
    seen: dict[str, Any] = {}

    def node(state: Count) -> dict[str, int]:
        seen["config"] = get_config()
        get_stream_writer()({"progress": 1})
        with pytest.raises(ThreadlineError, match="store"):
            get_store()
        return {"n": 1}

    app = _one_node(node)
    chunks = list(app.stream({"n": 0}, {"configurable": {"user": "u1"}}, stream_mode="custom"))
    assert chunks == [{"progress": 1}]
    assert seen["config"]["configurable"]["user"] == "u1"


def test_config_accessors_outside_a_node_say_so() -> None:
    for fn in (get_config, get_stream_writer, get_store):
        with pytest.raises(ThreadlineError, match="inside a node"):
            fn()


# ---------------------------------------------------------------------- managed values


def test_managed_markers_are_not_reducers() -> None:
    class State(TypedDict):
        n: int
        remaining_steps: managed.RemainingSteps
        is_last_step: managed.IsLastStep

    schema = StateSchema(State)
    # Managed keys are computed by the runtime: no channel, no reducer.
    assert set(schema.channels) == {"n"}
    assert set(schema.managed) == {"remaining_steps", "is_last_step"}
    hints = typing.get_type_hints(State, include_extras=True)
    assert managed.managed_value_of(hints["remaining_steps"]) is managed.REMAINING_STEPS
    assert managed.managed_value_of(hints["is_last_step"]) is managed.IS_LAST_STEP
    assert managed.managed_value_of(hints["n"]) is None
    assert managed.managed_value_of(Annotated[int, operator.add]) is None


# ---------------------------------------------------------------------- errors


def test_error_hierarchy() -> None:
    for name in ("GraphInterrupt", "ParentCommand", "NodeInterrupt"):
        assert issubclass(getattr(errors, name), GraphBubbleUp), name
    for name in errors.__all__:
        obj = getattr(errors, name)
        if isinstance(obj, type) and issubclass(obj, BaseException):
            assert issubclass(obj, ThreadlineError), name
    assert issubclass(errors.GraphRecursionError, RecursionError)
    assert issubclass(errors.InvalidUpdateError, ValueError)
    assert issubclass(EmptyChannelError, LookupError)
    assert GraphInterrupt().interrupts == []
    assert isinstance(ParentCommand(types.Command(goto="x")).command, types.Command)
    cancelled = errors.NodeCancelledError("n")
    assert cancelled.node == "n" and "'n'" in str(cancelled)


def test_create_error_message_points_at_the_troubleshooting_page() -> None:
    text = create_error_message(message="too deep", error_code=ErrorCode.GRAPH_RECURSION_LIMIT)
    assert text.startswith("too deep\n")
    assert text.endswith("/errors/GRAPH_RECURSION_LIMIT")


def test_node_interrupt_pauses_the_run() -> None:
    def node(state: Count) -> dict[str, int]:
        if state["n"] == 0:
            raise NodeInterrupt("need n")
        return {"n": 1}

    saver = InMemorySaver()
    app = _one_node(node, saver=saver)
    config = {"configurable": {"thread_id": "t"}}
    out = app.invoke({"n": 0}, config)
    assert [i.value for i in out["__interrupt__"]] == ["need n"]
    assert app.get_state(config).next == ("node",)
    app.update_state(config, {"n": 5})
    assert app.invoke(None, config) == {"n": 6}


# ---------------------------------------------------------------------- types


def test_extra_types() -> None:
    assert types.PregelTask is types.StateTask
    update = types.StateUpdate({"n": 1}, as_node="node")
    assert update.task_id is None and update.as_node == "node"
    saver = InMemorySaver()
    for ok in (None, True, False, saver):
        assert types.ensure_valid_checkpointer(ok) is ok
    with pytest.raises(TypeError, match="invalid checkpointer"):
        types.ensure_valid_checkpointer("memory")
    assert "messages" in types.StreamMode.__args__
    assert types.StreamWriter is not None and types.Checkpointer is not None
    meta: CheckpointMetadata = {"source": "input", "step": -1}
    assert meta["step"] == -1
    assert get_checkpoint_id({"configurable": {"checkpoint_id": "abc"}}) == "abc"
    assert get_checkpoint_id({"configurable": {}}) is None


# ---------------------------------------------------------------------- async savers' setup()


async def test_async_sqlite_setup_is_awaitable() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "t.db")
        saver = AsyncSqliteSaver.from_conn_string(path, auto_setup=False)
        try:
            await saver.setup()  # LangGraph's spelling
            await saver.asetup()  # threadline's, kept: the same, idempotent
            app = _one_node(lambda s: {"n": 1}, saver=saver)
            config = {"configurable": {"thread_id": "t"}}
            assert await app.ainvoke({"n": 1}, config) == {"n": 2}
        finally:
            await saver.aclose()


async def test_async_postgres_setup_is_awaitable() -> None:
    from psycopg import sql

    from threadline.checkpoint.postgres.aio import AsyncPostgresSaver

    url = postgres_url_or_skip()
    schema = f"tl_test_{uuid.uuid4().hex[:16]}"
    try:
        async with AsyncPostgresSaver.from_conn_string(
            url, schema=schema, auto_setup=False
        ) as saver:
            await saver.setup()
            await saver.asetup()
            app = _one_node(lambda s: {"n": 1}, saver=saver)
            config = {"configurable": {"thread_id": "t"}}
            assert await app.ainvoke({"n": 1}, config) == {"n": 2}
    finally:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# ---------------------------------------------------------------------- uuid thread ids


def test_uuid_thread_ids_are_stored_as_their_string(saver: BaseCheckpointSaver) -> None:
    app = _one_node(lambda s: {"n": 1}, saver=saver)
    tid = uuid.uuid4()
    assert app.invoke({"n": 1}, {"configurable": {"thread_id": tid}}) == {"n": 2}
    by_string = {"configurable": {"thread_id": str(tid)}}
    snapshot = app.get_state(by_string)
    assert snapshot.values == {"n": 2}
    assert snapshot.config["configurable"]["thread_id"] == str(tid)
    assert app.get_state({"configurable": {"thread_id": tid}}).values == {"n": 2}
    assert len(list(app.get_state_history({"configurable": {"thread_id": tid}}))) >= 2
    assert str(tid) in [t.thread_id for t in saver.list_threads()]
    with pytest.raises(ValueError, match=r"str\(\.\.\.\)"):
        app.invoke({"n": 1}, {"configurable": {"thread_id": 42}})
