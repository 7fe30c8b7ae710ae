"""threadline offers every public name of LangGraph's modules, at the same path.

With langgraph installed, each LangGraph module below is imported and its public names listed:
its ``__all__`` when it has one, otherwise the public names its own source defines at top level
(not the ones it imports from elsewhere, nor loggers and type variables). Every name must exist
at the same path under ``threadline``, unless :data:`OMITTED` says why not. docs/compat.md holds
the same list as a table; ``test_compat_doc_lists_every_omission`` keeps the two in step.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import logging
import pathlib
import typing

import pytest

MODULES = [
    "langgraph.graph",
    "langgraph.graph.message",
    "langgraph.graph.state",
    "langgraph.constants",
    "langgraph.config",
    "langgraph.runtime",
    "langgraph.managed",
    "langgraph.func",
    "langgraph.errors",
    "langgraph.types",
    "langgraph.cache.memory",
    "langgraph.checkpoint.memory",
    "langgraph.checkpoint.base",
    "langgraph.checkpoint.sqlite",
    "langgraph.checkpoint.sqlite.aio",
    "langgraph.checkpoint.postgres",
    "langgraph.checkpoint.postgres.aio",
    "langgraph.prebuilt",
    "langgraph.store.base",
    "langgraph.store.memory",
    "langgraph.store.postgres",
]

_STREAM_V2 = (
    "the typed stream parts of LangGraph's stream(version='v2') / invoke(version='v2');"
    " threadline streams the v1 shapes (tuples and dicts)"
)
_CHECKPOINT_FORMAT = (
    "part of LangGraph's checkpoint format (channel_versions, versions_seen, write indexes);"
    " threadline stores per-channel deltas and snapshots instead (docs/checkpointers.md)"
)
_SHALLOW = (
    "LangGraph's shallow savers keep only the latest checkpoint; use prune(keep_last=1) on any"
    " threadline saver"
)

#: Deliberate omissions: LangGraph module -> {name: why threadline does not offer it}.
OMITTED: dict[str, dict[str, str]] = {
    "langgraph.graph": {
        "MessageGraph": "deprecated in LangGraph 1.0; use StateGraph(MessagesState)",
    },
    "langgraph.graph.message": {
        "MessageGraph": "deprecated in LangGraph 1.0; use StateGraph(MessagesState)",
    },
    "langgraph.errors": {
        "GraphDrained": "RunControl drain requests (LangGraph server shutdown) do not exist",
        "NodeError": "add_node(error_handler=...) is not implemented",
        "TaskNotFound": "raised only by LangGraph's distributed executor",
        "UnknownInterruptError": "LangGraph's strict resume mode is not implemented",
    },
    "langgraph.types": {
        "CheckpointPayload": _STREAM_V2,
        "CheckpointStreamPart": _STREAM_V2,
        "CheckpointTask": _STREAM_V2,
        "CustomStreamPart": _STREAM_V2,
        "DebugPayload": _STREAM_V2,
        "DebugStreamPart": _STREAM_V2,
        "GraphOutput": _STREAM_V2,
        "MessagesStreamPart": _STREAM_V2,
        "StreamPart": _STREAM_V2,
        "TaskPayload": _STREAM_V2,
        "TaskResultPayload": _STREAM_V2,
        "TasksStreamPart": _STREAM_V2,
        "UpdatesStreamPart": _STREAM_V2,
        "ValuesStreamPart": _STREAM_V2,
        "TracePolicy": "LangSmith tracing of nodes is not implemented",
        "omit_payload": "LangSmith tracing of nodes is not implemented",
        "PregelExecutableTask": "LangGraph's internal Pregel task, not used by programs",
    },
    "langgraph.checkpoint.memory": {
        "PersistentDict": "LangGraph's pickle-file dict behind its memory saver; use SqliteSaver",
    },
    "langgraph.checkpoint.base": {
        "ChannelVersions": _CHECKPOINT_FORMAT,
        "DeltaChannelHistory": _CHECKPOINT_FORMAT,
        "EXCLUDED_METADATA_KEYS": _CHECKPOINT_FORMAT,
        "LATEST_VERSION": _CHECKPOINT_FORMAT,
        "WRITES_IDX_MAP": _CHECKPOINT_FORMAT,
        "copy_checkpoint": _CHECKPOINT_FORMAT,
        "create_checkpoint": _CHECKPOINT_FORMAT,
        "empty_checkpoint": _CHECKPOINT_FORMAT,
        "get_checkpoint_metadata": _CHECKPOINT_FORMAT,
        "get_serializable_checkpoint_metadata": _CHECKPOINT_FORMAT,
        "writes_sort_key": _CHECKPOINT_FORMAT,
    },
    "langgraph.checkpoint.postgres": {
        "BasePostgresSaver": "threadline's sync and async savers share one core, not a base class",
        "Conn": "a type alias of LangGraph's constructor argument (connection or pool)",
        "ShallowPostgresSaver": _SHALLOW,
    },
    "langgraph.prebuilt": {
        "ToolCallTransformer": "the tools channel of LangGraph's stream(version='v2')"
        " (stream_mode='tools'); threadline streams the v1 shapes",
    },
    "langgraph.checkpoint.postgres.aio": {
        "AsyncShallowPostgresSaver": _SHALLOW,
        "Conn": "a type alias of LangGraph's constructor argument (connection or pool)",
    },
}

# ---------------------------------------------------------------------- pending on other branches
# Names being built on another branch; empty once everything is merged.
PENDING: dict[str, dict[str, str]] = {}


def _excused(module: str) -> dict[str, str]:
    return {**OMITTED.get(module, {}), **PENDING.get(module, {})}


def public_names(module_name: str) -> list[str]:
    """The public names of a LangGraph module, as the module docstring defines them."""
    module = importlib.import_module(module_name)
    exported = getattr(module, "__all__", None)
    if exported is not None:
        return sorted(exported)
    names: set[str] = set()
    for node in ast.parse(inspect.getsource(module)).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return sorted(
        n
        for n in names
        if not n.startswith("_")
        and not isinstance(getattr(module, n, None), (logging.Logger, typing.TypeVar))
    )


def _threadline_path(module_name: str) -> str:
    return "threadline" + module_name.removeprefix("langgraph")


def _missing(module_name: str) -> list[str]:
    names = public_names(module_name)
    try:
        ours = importlib.import_module(_threadline_path(module_name))
    except ImportError:
        return names
    return [n for n in names if not hasattr(ours, n)]


@pytest.fixture(scope="module", autouse=True)
def _langgraph() -> None:
    pytest.importorskip("langgraph", reason="the surface test compares with langgraph 1.2")


@pytest.mark.parametrize("module_name", MODULES)
def test_every_public_name_exists(module_name: str) -> None:
    try:
        importlib.import_module(module_name)
    except ImportError as exc:
        pytest.skip(f"{module_name} is not installed here ({exc})")
    excused = _excused(module_name)
    missing = [n for n in _missing(module_name) if n not in excused]
    assert not missing, (
        f"{_threadline_path(module_name)} lacks {', '.join(missing)} (LangGraph's"
        f" {module_name} has them): add them, or list them in OMITTED with the reason"
    )


@pytest.mark.parametrize("module_name", MODULES)
def test_no_stale_omissions(module_name: str) -> None:
    """An omission threadline now offers, or LangGraph no longer has, is dropped from the list."""
    try:
        names = set(public_names(module_name))
    except ImportError:
        pytest.skip(f"{module_name} is not installed here")
    missing = set(_missing(module_name))
    for name in OMITTED.get(module_name, {}):
        assert name in names, f"OMITTED lists {module_name}.{name}, which LangGraph lacks"
        assert name in missing, f"OMITTED lists {module_name}.{name}, which threadline now has"


def test_compat_doc_lists_every_omission() -> None:
    doc = (pathlib.Path(__file__).parents[1] / "docs" / "compat.md").read_text()
    for module_name, names in OMITTED.items():
        for name in names:
            assert f"`{module_name}.{name}`" in doc, f"docs/compat.md lacks {module_name}.{name}"
