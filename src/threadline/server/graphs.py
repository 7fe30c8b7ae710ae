"""``langgraph.json``: the graphs a server serves, loaded as LangGraph's server loads them.

A graph entry is ``"./file.py:attr"`` or ``"package.module:attr"``; the attribute is a compiled
graph, a ``StateGraph`` builder, or a factory function (no argument, or the run's config). Each
graph is an assistant whose id is the graph name's uuid5, as LangGraph derives it.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import inspect
import json
import os
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..graph.builder import StateGraph
from ..runtime.compiled import CompiledStateGraph

__all__ = ["GraphRegistry", "ServerConfig", "assistant_id_of", "load_config"]

NAMESPACE_GRAPH = uuid.UUID("6ba7b821-9dad-11d1-80b4-00c04fd430c8")  # LangGraph's namespace
_KNOWN_KEYS = {
    "graphs", "env", "dependencies", "python_version", "pip_config_file", "dockerfile_lines",
    "store", "checkpointer", "http", "auth", "ui", "node_version", "image_distro",
    "$schema", "base_image", "keep_pkg_tools", "api_version", "webhooks", "pip_installer",
}  # fmt: skip


def assistant_id_of(graph_id: str) -> str:
    """The assistant id of a configured graph: ``uuid5(NAMESPACE_GRAPH, graph_id)``."""
    return str(uuid.uuid5(NAMESPACE_GRAPH, graph_id))


@dataclass
class ServerConfig:
    """What ``langgraph.json`` says: the graphs (name -> spec) and the folder it lives in."""

    graphs: dict[str, str]
    root: Path
    env: dict[str, str] = field(default_factory=dict)


def load_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Read and check a ``langgraph.json``."""
    file = Path(path)
    if not file.is_file():
        raise SystemExit(f"threadline serve: no config file at {file}; pass --config PATH")
    try:
        data = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise SystemExit(f"threadline serve: {file} is not valid JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("graphs"), dict) or not data["graphs"]:
        raise SystemExit(f'threadline serve: {file} needs "graphs": {{"name": "./file.py:graph"}}')
    unknown = sorted(set(data) - _KNOWN_KEYS)
    if unknown:
        raise SystemExit(f"threadline serve: {file} has unknown keys {unknown}; remove them")
    env = data.get("env") or {}
    if isinstance(env, str):
        env = _read_env_file(file.parent / env)
    return ServerConfig(
        {str(k): str(v) for k, v in data["graphs"].items()}, file.parent.resolve(), env
    )


def _read_env_file(path: Path) -> dict[str, str]:
    if not path.is_file():
        raise SystemExit(f"threadline serve: env file {path} not found")
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            env[key.strip()] = value.strip().strip("'\"")
    return env


def _import_attr(spec: str, root: Path) -> Any:
    target, sep, attr = spec.rpartition(":")
    if not sep or not attr:
        raise SystemExit(f"threadline serve: graph {spec!r} must be 'path.py:attribute'")
    if target.endswith(".py") or "/" in target:
        file = (root / target).resolve()
        name = f"threadline_graph_{abs(hash(str(file)))}"
        module_spec = importlib.util.spec_from_file_location(name, file)
        if module_spec is None or module_spec.loader is None or not file.is_file():
            raise SystemExit(f"threadline serve: graph file {file} not found")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    try:
        return getattr(module, attr)
    except AttributeError:
        raise SystemExit(f"threadline serve: {target} has no attribute {attr!r}") from None


class GraphRegistry:
    """The served graphs, each compiled onto the server's checkpointer and store."""

    def __init__(self, config: ServerConfig, checkpointer: Any, store: Any) -> None:
        self.specs = config.graphs
        self._checkpointer = checkpointer
        self._store = store
        self._objects: dict[str, Any] = {}
        if str(config.root) not in sys.path:
            sys.path.insert(0, str(config.root))
        for name, spec in config.graphs.items():
            self._objects[name] = _import_attr(spec, config.root)

    def names(self) -> list[str]:
        return list(self.specs)

    def resolve(self, assistant_id: str) -> str | None:
        """The graph name of an assistant id or graph name, or None."""
        if assistant_id in self.specs:
            return assistant_id
        for name in self.specs:
            if assistant_id_of(name) == assistant_id:
                return name
        return None

    def get(self, graph_id: str, config: dict[str, Any] | None = None) -> CompiledStateGraph:
        """The graph ready to run on the server's database."""
        obj = self._objects[graph_id]
        if isinstance(obj, StateGraph):
            return obj.compile(checkpointer=self._checkpointer, store=self._store)
        if not isinstance(obj, CompiledStateGraph) and callable(obj):
            params = inspect.signature(obj).parameters
            obj = obj(config or {}) if params else obj()
            if isinstance(obj, StateGraph):
                return obj.compile(checkpointer=self._checkpointer, store=self._store)
        if not isinstance(obj, CompiledStateGraph):
            raise TypeError(f"graph {graph_id!r} is {type(obj).__name__}, not a graph")
        graph = copy.copy(obj)
        graph.checkpointer = self._checkpointer
        graph.store = self._store
        return graph
